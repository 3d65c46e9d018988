/* Ring links: the acceptor thread authenticates incoming data connections and parks
 * them; the engine connects its own outgoing streams and adopts the parked ones that
 * belong to the current epoch and come from its left neighbour.
 *
 * Why a separate acceptor thread: every member connects to its right neighbour while
 * its left neighbour connects to it. If the engine did both in turn with blocking
 * handshakes, the ring of "connect first" would deadlock; and a slow or hostile client
 * must never stall the engine's heartbeats. Each handshake runs on its own thread
 * (auth/hspool.h), so a silent client does not hold up the real neighbour either. */
#include <poll.h>
#include <pthread.h>
#include <string.h>

#include "auth/hspool.h"
#include "core/internal.h"
#include "platform/clock.h"
#include "util/alloc.h"
#include "util/log.h"

static void park(starling_comm *c, int fd, const starling__msg_hello *h, const starling__seal *seal)
{
    pthread_mutex_lock(&c->mu);
    if (c->npend == STARLING_PENDING_LINKS) {
        /* Full: the oldest parked link is the least likely to be wanted. */
        starling__sock_close(c->pend[0].fd);
        starling__seal_wipe(&c->pend[0].seal);
        memmove(c->pend, c->pend + 1, sizeof c->pend[0] * (STARLING_PENDING_LINKS - 1));
        c->npend--;
    }
    c->pend[c->npend].fd = fd;
    c->pend[c->npend].peer_id = h->peer_id;
    c->pend[c->npend].epoch = h->epoch;
    c->pend[c->npend].stream = h->stream;
    c->pend[c->npend].nstreams = h->nstreams;
    c->pend[c->npend].seal = *seal;
    c->npend++;
    pthread_mutex_unlock(&c->mu);
    starling__wake_signal(&c->wake);
}

/* On the handshake's own thread, for an authenticated connection. A link probe is
 * answered right here: it holds one of the pool's slots until it ends (bounded). */
static void on_handshake(void *user, int fd, const starling__msg_hello *h,
                         const starling__seal *seal)
{
    starling_comm *c = user;
    if (h->role == ROLE_PROBE) {
        starling__seal probe = *seal;
        starling__probe_serve(c, fd, h, &probe);
        starling__seal_wipe(&probe);
        return;
    }
    if (h->role != ROLE_DATA) {
        SLOG_WARN("%s: refused data connection: not a data-link hello", c->name);
        starling__sock_close(fd);
        return;
    }
    park(c, fd, h, seal);
}

void *starling__acceptor_main(void *arg)
{
    starling_comm *c = arg;
    starling__hspool pool;
    int hs_ms = c->cfg.timeout_ms < 2000 ? c->cfg.timeout_ms : 2000;

    if (starling__hspool_init(&pool, &c->key, 32, hs_ms, c->name, on_handshake, c) != STARLING_OK) {
        SLOG_ERROR("%s: cannot start the handshake pool; no ring links can be accepted",
                   c->name);
        return NULL;
    }
    for (;;) {
        struct pollfd p[2] = {{c->listen_fd, POLLIN, 0}, {c->acc_wake.rfd, POLLIN, 0}};
        int fd, stop;

        pthread_mutex_lock(&c->mu);
        stop = c->stop;
        pthread_mutex_unlock(&c->mu);
        if (stop)
            break;
        if (poll(p, 2, 500) <= 0 || !(p[0].revents & POLLIN))
            continue;
        if (starling__tcp_accept(c->listen_fd, &fd) != STARLING_OK)
            continue;
        starling__hspool_submit(&pool, fd);
    }
    starling__hspool_destroy(&pool); /* handshakes in flight end by their deadline */
    return NULL;
}

void starling__links_close(starling_comm *c)
{
    engine *e = &c->eng;
    for (int s = 0; s < STARLING_MAX_STREAMS; s++) {
        if (s < e->nright)
            starling__sock_close(e->right[s]);
        if (s < e->nleft && e->left[s] >= 0)
            starling__sock_close(e->left[s]);
        e->right[s] = e->left[s] = -1;
        starling__seal_wipe(&e->rseal[s]);
        starling__seal_wipe(&e->lseal[s]);
    }
    e->nright = e->nleft = 0;
}

/* One outgoing stream: connect and handshake, on its own thread when a link has several,
 * so that S streams cost one connect and handshake of time (3 round trips), not S. */
typedef struct stream_open {
    starling_comm *c;
    const starling__member *right;
    uint64_t epoch;
    int s;
    int64_t deadline;
    int fd, rc;
    char why[128];
} stream_open;

static void *open_stream(void *arg)
{
    stream_open *o = arg;
    starling_comm *c = o->c;
    starling__msg_hello h;
    memset(&h, 0, sizeof h);
    h.role = ROLE_DATA;
    h.peer_id = c->id;
    h.epoch = o->epoch;
    h.stream = (uint8_t)o->s;
    h.nstreams = (uint8_t)c->cfg.streams;
    o->why[0] = '\0';
    o->rc = starling__tcp_connect(o->right->host, o->right->port, (int)c->cfg.socket_buffer,
                                  starling__ms_until(o->deadline), &o->fd, o->why, sizeof o->why);
    if (o->rc == STARLING_OK) {
        o->rc = starling__handshake_client(o->fd, &c->key, &h, &c->eng.rseal[o->s], o->deadline,
                                           o->why, sizeof o->why);
        if (o->rc != STARLING_OK)
            starling__sock_close(o->fd);
    }
    return NULL;
}

int starling__links_setup(starling_comm *c, const starling__msg_topo *t)
{
    engine *e = &c->eng;
    const int ns = c->cfg.streams;
    int64_t deadline = starling__now_ms() + c->cfg.timeout_ms;
    stream_open o[STARLING_MAX_STREAMS];
    pthread_t thr[STARLING_MAX_STREAMS];
    int started[STARLING_MAX_STREAMS] = {0}, bad = -1;

    starling__links_close(c);
    if (t->n < 2)
        return STARLING_OK;
    for (int s = 0; s < ns; s++) {
        o[s].c = c;
        o[s].right = &t->members[(t->rank + 1) % t->n];
        o[s].epoch = t->epoch;
        o[s].s = s;
        o[s].deadline = deadline;
        o[s].fd = -1;
        /* Stream 0 on this thread; the others on their own (inline if none can start). */
        started[s] = s > 0 && pthread_create(&thr[s], NULL, open_stream, &o[s]) == 0;
        if (!started[s] && s > 0)
            open_stream(&o[s]);
    }
    open_stream(&o[0]);
    for (int s = 1; s < ns; s++)
        if (started[s])
            pthread_join(thr[s], NULL);
    for (int s = 0; s < ns && bad < 0; s++)
        if (o[s].rc != STARLING_OK)
            bad = s;
    if (bad >= 0) {
        starling__comm_log_failure(c, o[bad].rc, "cannot open ring link to %s:%d: %s",
                                   o[bad].right->host, o[bad].right->port,
                                   o[bad].why[0] ? o[bad].why : starling_strerror(o[bad].rc));
        for (int s = 0; s < ns; s++)
            if (o[s].rc == STARLING_OK)
                starling__sock_close(o[s].fd);
        for (int s = 0; s < ns; s++)
            starling__seal_wipe(&e->rseal[s]);
        starling__links_close(c);
        return o[bad].rc;
    }
    for (int s = 0; s < ns; s++) {
        /* Several streams: each keeps little unsent, so that the next piece goes to a
         * stream that is moving, not behind pieces queued in a slow one. */
        if (ns > 1)
            starling__sock_set_unsent_max(o[s].fd, STARLING_UNSENT_MAX);
        e->right[s] = o[s].fd;
    }
    e->nright = ns;
    for (int s = 0; s < STARLING_MAX_STREAMS; s++)
        e->left[s] = -1;
    e->nleft = 0;
    return STARLING_OK;
}

int starling__links_adopt(starling_comm *c)
{
    engine *e = &c->eng;
    uint64_t left_id;
    int have = 0;
    if (e->n < 2)
        return 1;
    left_id = e->members[(e->rank + e->n - 1) % e->n].id;
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->npend;) {
        pending_link *p = &c->pend[i];
        int keep = 0;
        if (p->epoch == e->epoch && p->peer_id == left_id && e->left[p->stream] < 0 &&
            (e->nleft == 0 || e->nleft == p->nstreams)) {
            e->left[p->stream] = p->fd;
            e->lseal[p->stream] = p->seal;
            e->nleft = p->nstreams;
        } else if (p->epoch > e->epoch) {
            keep = 1; /* for an epoch this member has not reached yet */
        } else {
            starling__sock_close(p->fd);
        }
        if (!keep)
            starling__seal_wipe(&p->seal);
        if (keep) {
            i++;
        } else {
            c->pend[i] = c->pend[--c->npend];
        }
    }
    pthread_mutex_unlock(&c->mu);
    for (int s = 0; s < e->nleft; s++)
        have += e->left[s] >= 0;
    return e->nleft > 0 && have == e->nleft;
}
