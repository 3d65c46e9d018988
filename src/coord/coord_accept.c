/* The acceptor thread: accept, then hand the socket to the handshake pool.
 *
 * Handshakes are blocking (auth/handshake.h), so they run on the pool's threads and not in
 * the main loop: a slow or hostile client delays neither other newcomers nor the
 * heartbeats and failure resolution of the peers already admitted. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "coord/coord_internal.h"
#include "platform/clock.h"
#include "util/log.h"

/* Waits up to `ms` for the stop signal only (back-off after an accept error such as
 * EMFILE, which would otherwise leave the listening socket readable forever). */
static void backoff(starling_coord *c, int ms)
{
    struct pollfd pfd = {c->accept_wake.rfd, POLLIN, 0};
    if (poll(&pfd, 1, ms) > 0)
        starling__wake_drain(&c->accept_wake);
}

static void push(starling_coord *c, int fd, uint64_t peer_id, const starling__seal *seal)
{
    int full;
    pthread_mutex_lock(&c->qlock);
    full = c->qlen >= STARLING_COORD_ACCEPT_QUEUE;
    if (!full) {
        c->queue[c->qlen].fd = fd;
        c->queue[c->qlen].peer_id = peer_id;
        c->queue[c->qlen].seal = *seal;
        c->qlen++;
    }
    pthread_mutex_unlock(&c->qlock);
    if (full) {
        SLOG_WARN("refused connection: %d connections waiting to register",
                  STARLING_COORD_ACCEPT_QUEUE);
        starling__sock_close(fd);
        return;
    }
    starling__wake_signal(&c->wake);
}

/* On the handshake's own thread, for an authenticated connection. */
static void on_handshake(void *user, int fd, const starling__msg_hello *hello,
                         const starling__seal *seal)
{
    starling_coord *c = user;
    if (hello->role != ROLE_CONTROL) {
        SLOG_WARN("refused connection: role %u is not a control connection", (unsigned)hello->role);
        starling__sock_close(fd);
        return;
    }
    push(c, fd, hello->peer_id, seal);
}

static void accept_one(starling_coord *c)
{
    int fd = -1, r;

    r = starling__tcp_accept(c->lfd, &fd);
    if (r == STARLING_E_TIMEOUT)
        return;
    if (r) {
        SLOG_WARN("accept failed: %s", strerror(errno));
        backoff(c, 100);
        return;
    }
    starling__hspool_submit(&c->hs, fd);
}

static void *acceptor_main(void *arg)
{
    starling_coord *c = arg;
    while (!starling__coord_stopped(c)) {
        struct pollfd pfd[2] = {{c->lfd, POLLIN, 0}, {c->accept_wake.rfd, POLLIN, 0}};
        int r = poll(pfd, 2, 200);
        if (r < 0) {
            if (errno != EINTR) {
                SLOG_WARN("acceptor: poll failed: %s", strerror(errno));
                backoff(c, 100);
            }
            continue;
        }
        if (pfd[1].revents)
            starling__wake_drain(&c->accept_wake);
        if (starling__coord_stopped(c))
            break;
        if (pfd[0].revents & (POLLIN | POLLERR))
            accept_one(c);
    }
    return NULL;
}

int starling__coord_acceptor_start(starling_coord *c)
{
    int budget =
        c->timeout_ms < STARLING_COORD_HANDSHAKE_MS ? c->timeout_ms : STARLING_COORD_HANDSHAKE_MS;
    if (starling__hspool_init(&c->hs, &c->key, STARLING_COORD_HANDSHAKES, budget, "coordinator",
                              on_handshake, c) != STARLING_OK)
        return STARLING_E_OS;
    if (pthread_create(&c->acceptor, NULL, acceptor_main, c) != 0) {
        starling__hspool_destroy(&c->hs);
        return STARLING_E_OS;
    }
    return STARLING_OK;
}

void starling__coord_acceptor_join(starling_coord *c)
{
    starling__wake_signal(&c->accept_wake);
    pthread_join(c->acceptor, NULL);
    starling__hspool_destroy(&c->hs); /* handshakes in flight end by their deadline */
}

int starling__coord_take_accepted(starling_coord *c, starling__coord_pending *out, int max)
{
    int n;
    pthread_mutex_lock(&c->qlock);
    n = c->qlen < max ? c->qlen : max;
    memcpy(out, c->queue, (size_t)n * sizeof *out);
    memmove(c->queue, c->queue + n, (size_t)(c->qlen - n) * sizeof *out);
    c->qlen -= n;
    for (int i = c->qlen; i < c->qlen + n; i++) /* no key left behind in the vacated slots */
        starling__seal_wipe(&c->queue[i].seal);
    pthread_mutex_unlock(&c->qlock);
    return n;
}
