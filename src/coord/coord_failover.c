/* Coordinator failover: a standby that watches the active coordinator and takes over when
 * it goes silent, and the rules that keep the two from both deciding epochs
 * (docs/architecture.md, "Coordinator failover").
 *
 * The active sends its standby a STATE (its epoch, and the epoch it is about to form)
 * every timeout/4; the standby echoes each one in a WATCH. Epoch numbers carry a term in
 * their high 32 bits, and a promoted standby takes a term above every one it heard, so
 * two coordinators never number two different epochs alike. On top of that, a new epoch
 * is formed only when one of these holds:
 *   - the active is in contact with its standby (it heard an echo of a STATE sent less
 *     than timeout/2 ago) and the standby has acknowledged the proposed epoch;
 *   - the active is out of contact and a majority of its current epoch's members, each
 *     heard within timeout/2, is in the new epoch;
 *   - a promoted standby (which waited a whole timeout of silence) has in the new epoch a
 *     majority of the last epochs it heard of, and of the epoch it adopted.
 * A peer registers with one coordinator at a time, so no two coordinators hold a majority
 * of the same epoch at once. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord/coord_internal.h"
#include "platform/addr.h"
#include "platform/clock.h"
#include "util/alloc.h"
#include "util/log.h"

#define TERM(e) ((uint32_t)((e) >> 32))

int starling__coord_failover_init(starling_coord *c, const char *standby_of)
{
    c->watch.fd = -1;
    c->prop_ids = starling__calloc(STARLING_MAX_PEERS, sizeof *c->prop_ids);
    c->sort_a = starling__calloc(STARLING_MAX_PEERS, sizeof *c->sort_a);
    c->sort_b = starling__calloc(STARLING_MAX_PEERS, sizeof *c->sort_b);
    c->known = starling__calloc(1, sizeof *c->known);
    c->state = starling__calloc(1, sizeof *c->state);
    if (!c->prop_ids || !c->sort_a || !c->sort_b || !c->known || !c->state)
        return STARLING_E_NOMEM;
    if (standby_of && standby_of[0]) {
        if (starling__addr_parse(standby_of, c->active_host, &c->active_port) ||
            c->active_port == 0)
            return STARLING_E_INVALID;
        c->standby = 1;
        c->heard_ms = starling__now_ms();
    }
    return STARLING_OK;
}

void starling__coord_failover_free(starling_coord *c)
{
    if (c->watch_up)
        starling__fconn_close(&c->watch);
    starling__free(c->prop_ids);
    starling__free(c->sort_a);
    starling__free(c->sort_b);
    starling__free(c->known);
    starling__free(c->state);
}

uint64_t starling__coord_next_epoch(const starling_coord *c)
{
    if (TERM(c->epoch) != c->term)
        return ((uint64_t)c->term << 32) + 1;
    return c->epoch + 1;
}

static uint64_t ids_sig(uint64_t epoch, const uint64_t *ids, uint32_t n)
{
    uint64_t h = 1469598103934665603ull ^ epoch;
    for (uint32_t i = 0; i < n; i++) {
        h ^= ids[i];
        h *= 1099511628211ull;
        h ^= h >> 29;
    }
    return h ? h : 1;
}

static int in_contact(const starling_coord *c, int64_t now)
{
    return c->watcher && c->acked_seq && now - c->acked_stamp_ms < c->timeout_ms / 2;
}

/* Queues a STATE to the standby; returns its seq (0: no standby). */
static uint64_t send_state(starling_coord *c, int64_t now)
{
    starling__msg_state *s = c->state;
    if (!c->watcher)
        return 0;
    s->seq = ++c->state_seq;
    s->stamp = (uint64_t)now;
    s->epoch = c->nmembers ? c->epoch : 0;
    s->n = s->epoch ? c->nmembers : 0;
    for (uint32_t i = 0; i < s->n; i++)
        s->ids[i] = c->members[i].id;
    /* 0 unless proposing; a proposal overtaken by an adopted epoch is no longer one. */
    s->next_epoch = c->prop_epoch > s->epoch ? c->prop_epoch : 0;
    s->nnext = s->next_epoch ? c->nprop : 0;
    memcpy(s->next_ids, c->prop_ids, s->nnext * sizeof *s->next_ids);
    starling__coord_send(c, c->watcher, c->buf,
                         starling__state_encode(c->buf, STARLING_FRAME_HDR + STARLING_CTRL_MAX, s));
    return s->seq;
}

/* A sorted copy of ids[0..n) into dst (scratch of STARLING_MAX_PEERS). */
static void sorted(uint64_t *dst, const uint64_t *ids, uint32_t n)
{
    memcpy(dst, ids, n * sizeof *dst);
    qsort(dst, n, sizeof *dst, starling__coord_cmp_id);
}

static int has(const uint64_t *sorted_ids, uint32_t n, uint64_t id)
{
    return bsearch(&id, sorted_ids, n, sizeof id, starling__coord_cmp_id) != NULL;
}

/* The current epoch's member ids, sorted, into c->sort_a. */
static void sorted_members(starling_coord *c)
{
    for (uint32_t i = 0; i < c->nmembers; i++)
        c->sort_a[i] = c->members[i].id;
    qsort(c->sort_a, c->nmembers, sizeof *c->sort_a, starling__coord_cmp_id);
}

/* How many of ids[0..n) are members of the current epoch with a connection heard from
 * within timeout/2 (a member silent longer may already have gone to the standby). One
 * pass over the connections, with the two lists sorted: this runs on every timer tick. */
static uint32_t fresh_members(starling_coord *c, const uint64_t *ids, uint32_t n, int64_t now)
{
    uint32_t k = 0;
    sorted_members(c);
    sorted(c->sort_b, ids, n);
    for (int i = 0; i < c->nconns; i++) {
        const starling__coord_conn *q = c->conns[i];
        if (q->registered && !q->closing && now - q->fc.last_rx_ms < c->timeout_ms / 2 &&
            has(c->sort_a, c->nmembers, q->peer_id) && has(c->sort_b, n, q->peer_id))
            k++;
    }
    return k;
}

/* Whether a majority of ids[0..n) is in the candidate, sorted in c->sort_b (an empty
 * list: yes). */
static int majority_in(const starling_coord *c, uint32_t ncand, const uint64_t *ids, uint32_t n)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++)
        k += has(c->sort_b, ncand, ids[i]);
    return n == 0 || 2 * k > n;
}

/* A promoted standby's first epoch needs a majority of every epoch it knows of: the
 * active's last one, the one it proposed, and the one adopted from re-registering peers. */
static int fence_holds(starling_coord *c, uint32_t n)
{
    const starling__msg_state *s = c->known;
    sorted(c->sort_b, c->ids, n);
    for (uint32_t i = 0; i < c->nmembers; i++)
        c->sort_a[i] = c->members[i].id;
    return majority_in(c, n, s->ids, s->n) && majority_in(c, n, s->next_ids, s->nnext) &&
           majority_in(c, n, c->sort_a, c->epoch ? c->nmembers : 0);
}

int starling__coord_may_form(starling_coord *c, uint32_t n)
{
    int64_t now = starling__now_ms();
    uint64_t next, sig;

    if (c->fenced) {
        if (!fence_holds(c, n)) {
            SLOG_DEBUG("promoted standby: no majority of the last epochs it knows of yet");
            return 0;
        }
        return 1;
    }
    if (!c->replicated)
        return 1;
    next = starling__coord_next_epoch(c);
    sig = ids_sig(next, c->ids, n);
    if (c->prop_sig == sig && c->prop_seq && c->acked_seq >= c->prop_seq)
        return 1;
    if (in_contact(c, now)) {
        if (c->prop_sig != sig) {
            c->prop_sig = sig;
            c->prop_epoch = next;
            c->nprop = n;
            memcpy(c->prop_ids, c->ids, n * sizeof *c->prop_ids);
            c->prop_seq = send_state(c, now);
        }
        return 0; /* formed when the standby's echo arrives (on_watch) */
    }
    if (c->epoch == 0 || c->nmembers == 0)
        return 1;
    if (2 * fresh_members(c, c->ids, n, now) > c->nmembers)
        return 1;
    SLOG_DEBUG("epoch %" PRIu64 " not formed: out of contact with the standby and without a "
               "majority of epoch %" PRIu64,
               next, c->epoch);
    return 0;
}

void starling__coord_formed(starling_coord *c)
{
    if (c->fenced)
        SLOG_INFO("promoted standby formed its first epoch %" PRIu64, c->epoch);
    c->fenced = 0;
    c->prop_sig = c->prop_seq = c->prop_epoch = 0;
    c->nprop = 0;
    send_state(c, starling__now_ms());
}

int starling__coord_no_quorum(starling_coord *c, int64_t now)
{
    return c->quorum_lost_ms && now - c->quorum_lost_ms > c->timeout_ms;
}

static void watch_close(starling_coord *c, const char *why);
static void watch_connect(starling_coord *c, int64_t now);

/* Active side: is there neither contact nor a majority of the current epoch? */
static void quorum_check(starling_coord *c, int64_t now)
{
    int lost;
    if (!c->replicated || c->standby || c->fenced || !c->epoch || !c->nmembers) {
        c->quorum_lost_ms = 0;
        return;
    }
    for (uint32_t i = 0; i < c->nmembers; i++)
        c->ids[i] = c->members[i].id;
    lost = !in_contact(c, now) && 2 * fresh_members(c, c->ids, c->nmembers, now) <= c->nmembers;
    if (!lost) {
        if (c->quorum_lost_ms)
            SLOG_INFO("quorum back: in contact with the standby or a majority of epoch %" PRIu64,
                      c->epoch);
        c->quorum_lost_ms = 0;
        watch_close(c, "quorum back");
        return;
    }
    if (!c->quorum_lost_ms) {
        c->quorum_lost_ms = now;
        return;
    }
    if (!starling__coord_no_quorum(c, now))
        return;
    /* Peers waiting here for an epoch that cannot form go to their other coordinators. */
    for (int i = 0; i < c->nconns; i++) {
        starling__coord_conn *q = c->conns[i];
        if (q->registered && q->waiting && !q->closing) {
            SLOG_WARN("no quorum (no standby, no majority of epoch %" PRIu64 "): sending peer "
                      "%s to its other coordinators",
                      c->epoch, q->name);
            starling__coord_reject(c, q, STARLING_E_BUSY,
                                   "coordinator without quorum: try another coordinator");
        }
    }
    /* Has the standby it lost taken over? If it answers as an active, become its standby. */
    if (c->standby_port && !c->watch_up && now >= c->next_watch_ms) {
        snprintf(c->active_host, sizeof c->active_host, "%s", c->standby_host);
        c->active_port = c->standby_port;
        watch_connect(c, now);
    }
}

/* An active without quorum heard its former standby answer as an active: it is deposed,
 * and becomes the standby of the one that took over (which now needs its echoes). */
static void demote(starling_coord *c, int64_t now)
{
    SLOG_WARN("deposed: the coordinator %s:%d took over (epoch %" PRIu64 "); this one is now its "
              "standby",
              c->active_host, c->active_port, c->state->epoch);
    for (int i = 0; i < c->nconns; i++) {
        starling__coord_conn *q = c->conns[i];
        if (q->registered && !q->closing)
            starling__coord_reject(c, q, STARLING_E_BUSY, "deposed coordinator: try another");
    }
    c->standby = 1;
    c->replicated = 0;
    c->quorum_lost_ms = 0;
    c->prop_sig = c->prop_seq = c->prop_epoch = 0;
    c->nprop = 0;
    c->heard_ms = now;
}

void starling__coord_on_watch(starling_coord *c, starling__coord_conn *p,
                              const starling__msg_epoch *m, int64_t now)
{
    if (!p->watcher) {
        if (c->standby) {
            starling__coord_reject(c, p, STARLING_E_BUSY,
                                   "this coordinator is itself a standby: watch the active one");
            return;
        }
        if (c->watcher) {
            SLOG_INFO("a new standby replaces the one watching");
            starling__coord_lost(c, c->watcher, "replaced by a new standby");
        }
        if (m->epoch != 0 || m->a > 65535) {
            starling__coord_lost(c, p, "a standby's first watch is not {0, its port}");
            return;
        }
        p->watcher = 1;
        c->watcher = p;
        c->replicated = 1;
        c->standby_port = 0;
        if (m->a && starling__sock_peer_host(p->fc.fd, c->standby_host) == STARLING_OK)
            c->standby_port = (int)m->a;
        c->state_seq = c->acked_seq = 0;
        c->prop_sig = c->prop_seq = 0; /* propose again on this connection */
        SLOG_INFO("standby coordinator %016" PRIx64 " is watching", p->hello_id);
        send_state(c, now);
        c->dirty = 1;
        return;
    }
    if (m->epoch > c->state_seq || (int64_t)m->a > now) {
        starling__coord_lost(c, p, "standby echoed a state never sent");
        return;
    }
    if (m->epoch > c->acked_seq) {
        c->acked_seq = m->epoch;
        c->acked_stamp_ms = (int64_t)m->a;
        if (c->prop_seq && c->acked_seq >= c->prop_seq)
            c->dirty = 1;
    }
}

/* ---------------------------------------------------------------- standby side */

static void watch_close(starling_coord *c, const char *why)
{
    if (!c->watch_up)
        return;
    SLOG_INFO("%s: watch of the coordinator %s:%d closed (%s)",
              c->standby ? "standby" : "without quorum", c->active_host, c->active_port, why);
    starling__fconn_close(&c->watch);
    c->watch_up = 0;
}

static void watch_send(starling_coord *c, uint64_t seq, uint64_t stamp)
{
    uint8_t frame[STARLING_FRAME_HDR + 32];
    starling__msg_epoch m;
    int n;
    memset(&m, 0, sizeof m);
    m.epoch = seq;
    m.a = stamp;
    n = starling__epoch_encode(frame, sizeof frame, MSG_WATCH, &m);
    if (n < 0 || starling__fconn_queue(&c->watch, frame, (size_t)n) ||
        starling__fconn_flush(&c->watch))
        watch_close(c, "send failed");
}

static void watch_connect(starling_coord *c, int64_t now)
{
    int64_t deadline = now + (c->timeout_ms / 2 > 100 ? c->timeout_ms / 2 : 100);
    starling__msg_hello h;
    starling__seal seal;
    char why[128] = "";
    int fd, rc;

    c->next_watch_ms = now + c->timeout_ms / 4;
    rc = starling__tcp_connect(c->active_host, c->active_port, 0, starling__ms_until(deadline), &fd,
                               why, sizeof why);
    if (rc) {
        SLOG_DEBUG("standby: cannot reach the active coordinator: %s", why);
        return;
    }
    memset(&h, 0, sizeof h);
    h.role = ROLE_CONTROL;
    h.peer_id = c->coord_id;
    rc = starling__handshake_client(fd, &c->key, &h, &seal, deadline, why, sizeof why);
    if (rc) {
        SLOG_WARN("standby: handshake with the active coordinator failed: %s %s",
                  starling_strerror(rc), why);
        starling__sock_close(fd);
        return;
    }
    starling__fconn_init(&c->watch, fd, starling__now_ms(), &seal);
    starling__seal_wipe(&seal);
    c->watch_up = 1;
    SLOG_INFO("%s: watching the %s coordinator %s:%d", c->standby ? "standby" : "without quorum",
              c->standby ? "active" : "promoted", c->active_host, c->active_port);
    watch_send(c, 0, (uint64_t)c->port); /* the first WATCH says where we listen */
}

static void promote(starling_coord *c, int64_t now)
{
    uint32_t t = c->term;
    watch_close(c, "promoting");
    if (TERM(c->known->epoch) > t)
        t = TERM(c->known->epoch);
    if (TERM(c->known->next_epoch) > t)
        t = TERM(c->known->next_epoch);
    c->term = t + 1;
    c->standby = 0;
    c->fenced = c->known->n || c->known->nnext;
    c->dirty = 1;
    SLOG_WARN("standby promoted to active coordinator (term %u): the active %s:%d was silent for "
              "%" PRId64 " ms; last epoch heard %" PRIu64 " (%u members)",
              (unsigned)c->term, c->active_host, c->active_port, now - c->heard_ms, c->known->epoch,
              (unsigned)c->known->n);
}

void starling__coord_watch_io(starling_coord *c, short revents, int64_t now)
{
    int r;
    if (!c->watch_up)
        return;
    if (revents & POLLOUT && starling__fconn_flush(&c->watch)) {
        watch_close(c, "send failed");
        return;
    }
    if (!(revents & (POLLIN | POLLERR | POLLHUP | POLLNVAL)))
        return;
    r = starling__fconn_read(&c->watch, now);
    while (c->watch_up) {
        starling__frame_hdr h;
        const uint8_t *p;
        starling__msg_state *tmp;
        int k = starling__fconn_next(&c->watch, &h, &p);
        if (k == 0)
            break;
        if (k < 0 || h.type != MSG_STATE || starling__state_decode(p, h.len, c->state)) {
            if (k > 0 && h.type == MSG_REJECT) {
                starling__msg_reject rj;
                if (starling__reject_decode(p, h.len, &rj) == STARLING_OK)
                    SLOG_WARN("standby: the coordinator at %s:%d refused the watch: %s",
                              c->active_host, c->active_port, rj.reason);
            }
            watch_close(c, "malformed frame");
            return;
        }
        if (!c->standby)
            demote(c, now);
        tmp = c->known;
        c->known = c->state;
        c->state = tmp;
        c->heard_ms = now;
        watch_send(c, c->known->seq, c->known->stamp);
    }
    if (r)
        watch_close(c, r == STARLING_E_CLOSED ? "connection closed" : "receive failed");
}

void starling__coord_failover_tick(starling_coord *c, int64_t now, int beat)
{
    if (c->watch_up && now - c->watch.last_rx_ms > c->timeout_ms)
        watch_close(c, "silent");
    if (c->standby) {
        /* Only a standby that has heard the active takes over: one started first, or cut
         * off from the start, could otherwise run beside an active it never knew. */
        if (c->known->seq && now - c->heard_ms > c->timeout_ms) {
            promote(c, now);
            return;
        }
        if (!c->known->seq && !c->warned_unheard && now - c->heard_ms > c->timeout_ms) {
            c->warned_unheard = 1;
            SLOG_WARN("standby: has not heard the active coordinator %s:%d yet; it takes over "
                      "only after it has",
                      c->active_host, c->active_port);
        }
        if (!c->watch_up && now >= c->next_watch_ms)
            watch_connect(c, now);
        return;
    }
    if (c->watcher && beat)
        send_state(c, now);
    /* A proposal waiting for an echo is decided again when contact runs out. */
    if (c->prop_seq && c->acked_seq < c->prop_seq)
        c->dirty = 1;
    quorum_check(c, now);
}
