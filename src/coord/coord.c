/* The coordinator handle and its main loop: one poll() over the wake pipe and every
 * peer's control connection, plus timers (heartbeats, silence, deadlines). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "coord/coord_internal.h"
#include "platform/clock.h"
#include "util/alloc.h"
#include "util/config.h"
#include "util/flag.h"
#include "util/log.h"
#include "util/why.h"

/* The stop flag is set from any thread or a signal handler (util/flag.h). */
#define FLAG_LOAD STARLING_FLAG_LOAD
#define FLAG_STORE STARLING_FLAG_STORE
#define FLAG_XCHG STARLING_FLAG_XCHG

int starling__coord_stopped(starling_coord *c) { return FLAG_LOAD(&c->stop); }

static void coord_free(starling_coord *c)
{
    if (c->conns) {
        for (int i = 0; i < c->nconns; i++) {
            if (!c->conns[i]->closing)
                starling__fconn_close(&c->conns[i]->fc);
            starling__free(c->conns[i]);
        }
    }
    for (int i = 0; i < c->qlen; i++)
        starling__sock_close(c->queue[i].fd);
    starling__sock_close(c->lfd);
    starling__wake_close(&c->wake);
    starling__wake_close(&c->accept_wake);
    starling__key_wipe(&c->key);
    starling__coord_failover_free(c);
    starling__free(c->conns);
    starling__free(c->pfds);
    starling__free(c->polled);
    starling__free(c->members);
    starling__free(c->buf);
    starling__free(c->reg);
    starling__free(c->topo);
    starling__free(c->ids);
    starling__free(c->who);
    starling__free(c->links);
    starling__free(c->links_msg);
    starling__free(c);
}

int starling_coord_create(starling_coord **out, const char *host_port, const char *run,
                          const void *secret, size_t secret_len, const starling_config *cfg)
{
    struct starling_config defaults;
    char host[STARLING_HOST_MAX], why[160];
    starling_coord *c;
    int port, r;

    if (!out)
        return STARLING_E_INVALID;
    *out = NULL;
    starling__last_error_clear();
    if (!host_port || !run || !secret || secret_len == 0)
        return starling__last_error_set("starling_coord_create: the address, the run name and "
                                        "a non-empty secret are required");
    if (!cfg) {
        starling__config_defaults(&defaults);
        cfg = &defaults;
    }
    if (cfg->timeout_ms < 100 || cfg->timeout_ms > 600000 || cfg->min_peers < 1 ||
        cfg->min_peers > STARLING_MAX_PEERS)
        return starling__last_error_set("starling_coord_create: timeout or min_peers out of "
                                        "range");
    if (starling__addr_parse(host_port, host, &port))
        return starling__last_error_set("coordinator address '%s': expected HOST:PORT or "
                                        "[IPV6]:PORT (port 0..65535)", host_port);

    c = starling__calloc(1, sizeof *c);
    if (!c)
        return STARLING_E_NOMEM;
    c->lfd = -1;
    c->wake.rfd = c->wake.wfd = -1;
    c->accept_wake.rfd = c->accept_wake.wfd = -1;
    if (pthread_mutex_init(&c->qlock, NULL) != 0) {
        starling__free(c);
        return STARLING_E_OS;
    }
    {
        /* The config's bound on min_peers is the wire's bound on members. */
        typedef char members_max_agree[STARLING__MEMBERS_MAX == STARLING_MAX_PEERS ? 1 : -1];
        (void)sizeof(members_max_agree);
    }
    r = starling__key_derive(&c->key, run, secret, secret_len);
    if (r)
        goto fail;
    c->key.security = (uint8_t)cfg->security;
    c->conns = starling__calloc(STARLING_COORD_MAX_CONNS, sizeof *c->conns);
    c->pfds = starling__calloc(STARLING_COORD_MAX_CONNS + 2, sizeof *c->pfds);
    c->polled = starling__calloc(STARLING_COORD_MAX_CONNS, sizeof *c->polled);
    c->members = starling__calloc(STARLING_MAX_PEERS, sizeof *c->members);
    c->buf = starling__malloc(STARLING_FRAME_HDR + STARLING_CTRL_MAX);
    c->reg = starling__malloc(sizeof *c->reg);
    c->topo = starling__malloc(sizeof *c->topo);
    c->ids = starling__calloc(STARLING_MAX_PEERS, sizeof *c->ids);
    c->who = starling__calloc(STARLING_MAX_PEERS, sizeof *c->who);
    c->links_msg = starling__malloc(sizeof *c->links_msg);
    if (!c->conns || !c->pfds || !c->polled || !c->members || !c->buf || !c->reg || !c->topo ||
        !c->ids || !c->who || !c->links_msg) {
        r = STARLING_E_NOMEM;
        goto fail;
    }
    r = starling__coord_failover_init(c, cfg->standby_of);
    if (r) {
        if (r == STARLING_E_INVALID)
            starling__last_error_set("standby of '%s': expected HOST:PORT or [IPV6]:PORT with "
                                     "a port 1..65535",
                                     cfg->standby_of);
        goto fail;
    }
    if (starling__wake_init(&c->wake) || starling__wake_init(&c->accept_wake)) {
        r = STARLING_E_OS;
        goto fail;
    }
    r = starling__tcp_listen(host, port, 0, &c->lfd, &c->port, why, sizeof why);
    if (r) {
        SLOG_WARN("coordinator: %s", why);
        starling__last_error_set("%s", why);
        goto fail;
    }
    c->coord_id = starling__random_id();
    c->timeout_ms = cfg->timeout_ms;
    c->min_peers = cfg->min_peers;
    c->order = (int)cfg->ring_order;
    c->probe_bytes = (uint32_t)cfg->probe_bytes;
    SLOG_INFO("coordinator %016" PRIx64 " for run '%s' listening on %s:%d%s%s", c->coord_id, run,
              host, c->port, c->standby ? ", standby of " : "", c->standby ? cfg->standby_of : "");
    *out = c;
    return STARLING_OK;
fail:
    pthread_mutex_destroy(&c->qlock);
    coord_free(c);
    return r;
}

void starling_coord_stop(starling_coord *c)
{
    if (!c)
        return;
    FLAG_STORE(&c->stop, 1);
    starling__wake_signal(&c->wake);
    starling__wake_signal(&c->accept_wake);
}

int starling_coord_port(const starling_coord *c) { return c ? c->port : STARLING_E_INVALID; }

void starling_coord_destroy(starling_coord *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->qlock);
    coord_free(c);
}

/* ---------------------------------------------------------------- main loop */

static void take_accepted(starling_coord *c, int64_t now)
{
    starling__coord_pending got[STARLING_COORD_ACCEPT_QUEUE];
    int n = starling__coord_take_accepted(c, got, STARLING_COORD_ACCEPT_QUEUE);
    for (int i = 0; i < n; i++) {
        starling__coord_conn *p = NULL;
        if (c->nconns < STARLING_COORD_MAX_CONNS)
            p = starling__calloc(1, sizeof *p);
        if (!p) {
            SLOG_WARN("refused connection of peer %016" PRIx64 ": %s", got[i].peer_id,
                      c->nconns < STARLING_COORD_MAX_CONNS ? "out of memory"
                                                           : "too many connections");
            starling__sock_close(got[i].fd);
            starling__seal_wipe(&got[i].seal);
            continue;
        }
        starling__fconn_init(&p->fc, got[i].fd, now, &got[i].seal);
        starling__seal_wipe(&got[i].seal);
        p->hello_id = got[i].peer_id;
        c->conns[c->nconns++] = p;
        SLOG_DEBUG("connection from peer %016" PRIx64 " authenticated", p->hello_id);
    }
}

/* Heartbeats out, silence in. The peers' failure detector needs our heartbeats; ours
 * needs theirs (any frame counts: fconn stamps last_rx_ms on every read). */
static void timers(starling_coord *c, int64_t now)
{
    int beat = now >= c->next_heartbeat_ms;
    if (beat)
        c->next_heartbeat_ms = now + c->timeout_ms / 4;
    for (int i = 0; i < c->nconns; i++) {
        starling__coord_conn *p = c->conns[i];
        if (p->closing)
            continue;
        if (now - p->fc.last_rx_ms > c->timeout_ms) {
            char why[64];
            snprintf(why, sizeof why, "silent for %" PRId64 " ms", now - p->fc.last_rx_ms);
            starling__coord_lost(
                c, p, p->registered || p->watcher ? why : "no register before the timeout");
            continue;
        }
        if (beat && p->registered)
            starling__coord_send_epoch(c, p, MSG_HEARTBEAT, 0, 0, 0);
    }
    starling__coord_failover_tick(c, now, beat);
    starling__coord_adopt_check(c, now);
    starling__coord_resolve_check(c, now);
}

/* Send failures, resolution and formation feed each other (a failed TOPO kills a member,
 * which breaks the new epoch, which sends QUERYs...): run them until nothing changes. */
static void progress(starling_coord *c, int64_t now)
{
    for (int rounds = 0; rounds < 4 * STARLING_COORD_MAX_CONNS; rounds++) {
        if (c->reap) {
            c->reap = 0;
            for (int i = 0; i < c->nconns; i++)
                if (c->conns[i]->send_failed && !c->conns[i]->closing)
                    starling__coord_lost(c, c->conns[i], c->conns[i]->send_why);
        }
        starling__coord_resolve_check(c, now);
        if (c->dirty) {
            c->dirty = 0;
            starling__coord_check_formation(c);
        }
        for (int i = 0; i < c->nconns; i++) {
            starling__coord_conn *p = c->conns[i];
            if (!p->closing && !p->send_failed && p->fc.out_off < p->fc.out_len) {
                int r = starling__fconn_flush(&p->fc);
                if (r) {
                    p->send_failed = 1;
                    p->send_why = r == STARLING_E_CLOSED ? "connection closed" : "send failed";
                    c->reap = 1;
                }
            }
        }
        if (!c->reap && !c->dirty)
            return;
    }
}

static void sweep(starling_coord *c)
{
    int j = 0;
    for (int i = 0; i < c->nconns; i++) {
        if (c->conns[i]->closing)
            starling__free(c->conns[i]);
        else
            c->conns[j++] = c->conns[i];
    }
    c->nconns = j;
}

static int poll_timeout(const starling_coord *c, int64_t now)
{
    int64_t t = c->timeout_ms / 8, d;
    d = c->next_heartbeat_ms - now;
    if (d < t)
        t = d;
    if (c->res_active && c->res_deadline_ms - now < t)
        t = c->res_deadline_ms - now;
    if (c->adopt_deadline_ms && c->adopt_deadline_ms - now < t)
        t = c->adopt_deadline_ms - now;
    if (c->standby && !c->watch_up && c->next_watch_ms - now < t)
        t = c->next_watch_ms - now;
    return t < 0 ? 0 : (int)t;
}

/* For starling_coord_peers, read from other threads. */
static void publish_peers(starling_coord *c)
{
    int n = 0;
    for (int i = 0; i < c->nconns; i++)
        n += c->conns[i]->registered && !c->conns[i]->closing && !c->conns[i]->watcher;
    FLAG_STORE(&c->npeers, n);
}

static void loop_once(starling_coord *c)
{
    int64_t now = starling__now_ms();
    int n = 0, r;

    c->pfds[0].fd = c->wake.rfd;
    c->pfds[0].events = POLLIN;
    for (int i = 0; i < c->nconns; i++) {
        c->polled[n] = c->conns[i];
        c->pfds[n + 1].fd = c->conns[i]->fc.fd;
        c->pfds[n + 1].events = starling__fconn_events(&c->conns[i]->fc);
        c->pfds[n + 1].revents = 0;
        n++;
    }
    if (c->watch_up) {
        c->pfds[n + 1].fd = c->watch.fd;
        c->pfds[n + 1].events = starling__fconn_events(&c->watch);
        c->pfds[n + 1].revents = 0;
    }
    r = poll(c->pfds, (nfds_t)n + 1 + c->watch_up, poll_timeout(c, now));
    if (r < 0 && errno != EINTR) {
        SLOG_WARN("coordinator: poll failed: %s", strerror(errno));
        starling__sleep_ms(10);
        return;
    }
    now = starling__now_ms();
    if (r > 0) {
        for (int i = 0; i < n; i++) {
            starling__coord_conn *p = c->polled[i];
            short ev = c->pfds[i + 1].revents;
            if (p->closing || !ev)
                continue;
            if (ev & POLLOUT) {
                int fr = starling__fconn_flush(&p->fc);
                if (fr) {
                    starling__coord_lost(
                        c, p, fr == STARLING_E_CLOSED ? "connection closed" : "send failed");
                    continue;
                }
            }
            if (ev & (POLLIN | POLLERR | POLLHUP | POLLNVAL))
                starling__coord_on_readable(c, p, now);
        }
        if (c->watch_up && c->pfds[n + 1].revents)
            starling__coord_watch_io(c, c->pfds[n + 1].revents, now);
        if (c->pfds[0].revents) {
            starling__wake_drain(&c->wake);
            take_accepted(c, now);
        }
    }
    timers(c, now);
    progress(c, now);
    sweep(c);
    publish_peers(c);
}

int starling_coord_peers(const starling_coord *c)
{
    return c ? FLAG_LOAD(&((starling_coord *)c)->npeers) : STARLING_E_INVALID;
}

int starling_coord_run(starling_coord *c)
{
    int r;
    if (!c)
        return STARLING_E_INVALID;
    if (FLAG_XCHG(&c->running, 1))
        return STARLING_E_STATE;
    r = starling__coord_acceptor_start(c);
    if (r) {
        FLAG_STORE(&c->running, 0);
        return r;
    }
    c->next_heartbeat_ms = starling__now_ms() + c->timeout_ms / 4;
    while (!starling__coord_stopped(c))
        loop_once(c);
    starling__coord_acceptor_join(c);
    SLOG_INFO("coordinator %016" PRIx64 " stopped", c->coord_id);
    FLAG_STORE(&c->running, 0);
    return STARLING_OK;
}
