/* The engine thread: one per communicator. It owns every socket of the communicator
 * except the listening one, runs the jobs the application queued (collectives and
 * topology updates) one at a time in queue order, heartbeats the coordinator, and
 * carries out failure resolution:
 *
 *   a member that sees a collective fail locally (link closed, garbage, mismatch,
 *   deadline) reports FAIL to the coordinator and stops. The coordinator, which also
 *   learns of deaths by itself, QUERYs every live member; each answers with the highest
 *   op whose data phase it finished (done_seq) and stops touching the ring. The
 *   coordinator DECIDEs commit_seq = the smallest done_seq. Ops up to it commit (every
 *   member holds the full result), later ones abort everywhere. Because a member only
 *   commits on its own after the DONE barrier proved that all finished their data phase,
 *   both ways of committing agree. After a DECIDE the epoch is broken: the application
 *   calls starling_update_topology() for a new one. */
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>

#include "core/internal.h"
#include "core/ring.h"
#include "platform/clock.h"
#include "util/alloc.h"
#include "util/log.h"

static void publish(starling_comm *c)
{
    uint64_t *ids = starling__malloc(sizeof *ids * (size_t)(c->eng.n > 0 ? c->eng.n : 1));
    for (int i = 0; ids && i < c->eng.n; i++)
        ids[i] = c->eng.members[i].id;
    pthread_mutex_lock(&c->mu);
    c->pub_epoch = c->eng.epoch;
    c->pub_rank = c->eng.rank;
    c->pub_size = c->eng.n;
    starling__free(c->pub_ids);
    c->pub_ids = ids; /* NULL when out of memory: starling_comm_link then finds nothing */
    pthread_mutex_unlock(&c->mu);
}

static void finish_job(starling_comm *c, int result, const char *msg)
{
    engine *e = &c->eng;
    if (e->op) {
        pthread_mutex_lock(&c->mu);
        c->bytes_sent += starling__ring_bytes(c);
        pthread_mutex_unlock(&c->mu);
    }
    starling__ring_free(c);
    starling__request_complete(e->cur, result, msg);
    e->cur = NULL;
    e->fail_sent = 0;
    e->topo_sent = 0;
    e->topo_applied = 0;
}

/* The epoch can carry no more collectives: close the ring so no stale byte of it is
 * ever read as part of a later op. */
static void break_epoch(starling_comm *c, int code)
{
    engine *e = &c->eng;
    if (!e->broken) {
        e->broken = 1;
        e->broken_code = code;
    }
    starling__links_close(c);
}

/* How long a member waits for the coordinator's decision on a failed op before it gives
 * up on its own: 3 timeouts, or 5 with a standby to fail over to (its promotion and the
 * dead member's re-registration deadline take about 2). */
static int64_t decision_deadline(const starling_comm *c)
{
    return starling__now_ms() + (c->ncoords > 1 ? 5 : 3) * (int64_t)c->cfg.timeout_ms;
}

static void report_failure(starling_comm *c, int code)
{
    engine *e = &c->eng;
    starling__msg_epoch m;
    if (code == STARLING_E_PROTOCOL || code == STARLING_E_CLOSED)
        code = STARLING_E_PEER_LOST;
    e->fail_sent = 1;
    e->fail_code = code;
    e->fail_deadline_ms = decision_deadline(c);
    memset(&m, 0, sizeof m);
    m.epoch = e->epoch;
    m.a = e->seq;
    m.code = code;
    starling__ctrl_send(c, MSG_FAIL, &m);
    SLOG_INFO("%s: collective %llu of epoch %llu failed here (%s); asking the coordinator",
              c->name, (unsigned long long)e->seq, (unsigned long long)e->epoch,
              starling_strerror(code));
}

/* The request for the next epoch, after the member's link measurements if it has any:
 * the coordinator orders the ring with them (docs/architecture.md). */
static int send_topo_req(starling_comm *c)
{
    engine *e = &c->eng;
    starling__msg_epoch m;
    int rc;
    if (!e->ctrl_up)
        return STARLING_E_CLOSED;
    if (e->cur->links_frame &&
        (rc = starling__fconn_queue(&e->ctrl, e->cur->links_frame, e->cur->links_len)))
        return rc;
    memset(&m, 0, sizeof m);
    m.epoch = e->epoch;
    return starling__ctrl_send(c, MSG_TOPO_REQ, &m);
}

/* A topology update succeeded: what the application needs to measure links, if asked. */
static void finish_topo(starling_comm *c, uint32_t probe_bytes)
{
    engine *e = &c->eng;
    struct starling_request *r = e->cur;
    r->probe_bytes = probe_bytes;
    r->epoch = e->epoch;
    r->rank = e->rank;
    r->n = e->n;
    r->members = starling__malloc(sizeof *r->members * (size_t)(e->n > 0 ? e->n : 1));
    if (!r->members) {
        finish_job(c, STARLING_E_NOMEM, "out of memory for the member list");
        return;
    }
    memcpy(r->members, e->members, sizeof *r->members * (size_t)e->n);
    finish_job(c, STARLING_OK, NULL);
}

static void start_job(starling_comm *c)
{
    engine *e = &c->eng;
    struct starling_request *r = e->cur;
    int rc;

    if (r->job == JOB_TOPO) {
        e->topo_sent = send_topo_req(c) == STARLING_OK;
        return;
    }
    if (e->epoch == 0) {
        finish_job(c, STARLING_E_STATE, "not a member yet: call starling_update_topology first");
        return;
    }
    if (e->broken) {
        finish_job(c, e->broken_code,
                   "the epoch was aborted: call starling_update_topology and retry");
        return;
    }
    e->seq++;
    rc = starling__ring_start(c, r);
    if (rc != STARLING_OK)
        report_failure(c, rc);
}

static void on_decide(starling_comm *c, const starling__msg_epoch *d)
{
    engine *e = &c->eng;
    int code = d->code ? d->code : STARLING_E_PEER_LOST;
    if (d->epoch != e->epoch)
        return;
    SLOG_INFO("%s: epoch %llu decided: ops up to %llu commit (%s)", c->name,
              (unsigned long long)e->epoch, (unsigned long long)d->a, starling_strerror(code));
    e->frozen = 0;
    if (e->cur && e->cur->job == JOB_COLL && e->op) {
        if (e->seq <= d->a && starling__ring_data_done(c)) {
            starling__ring_commit(c);
            break_epoch(c, code);
            finish_job(c, STARLING_OK, NULL);
        } else {
            char msg[160];
            snprintf(msg, sizeof msg, "collective aborted in epoch %llu: %s",
                     (unsigned long long)e->epoch, starling_strerror(code));
            break_epoch(c, code);
            finish_job(c, code, msg);
        }
    } else if (e->cur && e->cur->job == JOB_COLL) {
        break_epoch(c, code);
        finish_job(c, code, "collective aborted");
    } else if (e->cur && e->cur->job == JOB_TOPO && e->topo_applied) {
        break_epoch(c, code);
        finish_job(c, code, "the new epoch lost a member while its links were being set up");
    } else {
        break_epoch(c, code);
    }
}

static void on_query(starling_comm *c, const starling__msg_epoch *q)
{
    engine *e = &c->eng;
    starling__msg_epoch s;
    memset(&s, 0, sizeof s);
    s.epoch = q->epoch;
    if (q->epoch == e->epoch) {
        s.a = e->done_seq;
        s.b = e->seq;
        if (!e->frozen && !e->fail_sent)
            e->fail_deadline_ms = decision_deadline(c);
        e->frozen = 1; /* from now on only the coordinator's decision moves this op */
    }
    starling__ctrl_send(c, MSG_STATUS, &s);
}

static void ctrl_lost(starling_comm *c, const char *why);

static void on_topo(starling_comm *c, const starling__msg_topo *t)
{
    engine *e = &c->eng;
    starling__member *m;
    int rc;
    if (!e->cur || e->cur->job != JOB_TOPO)
        return;
    if (t->epoch < e->epoch) {
        /* A coordinator behind the one that formed our epoch (deposed, or restarted with
         * no memory): not ours to follow. */
        ctrl_lost(c, "the coordinator sent an epoch older than ours");
        return;
    }
    if (t->epoch == e->epoch && !e->broken) {
        finish_topo(c, t->probe_bytes);
        return;
    }
    m = starling__malloc(sizeof *m * t->n);
    if (!m) {
        finish_job(c, STARLING_E_NOMEM, "out of memory for the member list");
        return;
    }
    memcpy(m, t->members, sizeof *m * t->n);
    starling__free(e->members);
    e->members = m;
    e->epoch = t->epoch;
    e->rank = (int)t->rank;
    e->n = (int)t->n;
    e->seq = e->done_seq = 0;
    e->broken = e->frozen = e->fail_sent = 0;
    /* Residuals belong to a membership: a dead member's share is gone and a newcomer has
     * none, so every member starts the new epoch from zero (docs/codecs.md). */
    starling__ef_reset_all(e);
    publish(c);
    SLOG_INFO("%s: epoch %llu, rank %d of %d", c->name, (unsigned long long)t->epoch, e->rank,
              e->n);
    rc = starling__links_setup(c, t);
    if (rc != STARLING_OK) {
        report_failure(c, STARLING_E_PEER_LOST);
        break_epoch(c, STARLING_E_PEER_LOST);
        finish_job(c, STARLING_E_PEER_LOST, "could not open the ring link to the right neighbour");
        return;
    }
    e->topo_applied = 1;
    e->probe_bytes = t->probe_bytes;
    /* Otherwise the job completes once the left neighbour's streams have arrived. */
}

static int handle_ctrl_frame(starling_comm *c, const starling__frame_hdr *h, const uint8_t *p)
{
    starling__msg_epoch m;
    switch (h->type) {
    case MSG_HEARTBEAT: return starling__epoch_decode(h->type, p, h->len, &m);
    case MSG_QUERY:
        if (starling__epoch_decode(h->type, p, h->len, &m))
            return STARLING_E_PROTOCOL;
        on_query(c, &m);
        return STARLING_OK;
    case MSG_DECIDE:
        if (starling__epoch_decode(h->type, p, h->len, &m))
            return STARLING_E_PROTOCOL;
        on_decide(c, &m);
        return STARLING_OK;
    case MSG_TOPO: {
        starling__msg_topo *t = starling__malloc(sizeof *t);
        int rc;
        if (!t)
            return STARLING_E_NOMEM;
        rc = starling__topo_decode(p, h->len, t);
        if (rc == STARLING_OK && t->members[t->rank].id != c->id)
            rc = STARLING_E_PROTOCOL;
        if (rc == STARLING_OK)
            on_topo(c, t);
        starling__free(t);
        return rc;
    }
    case MSG_REJECT: {
        /* The coordinator sends us away (a standby, or one without quorum): next one. */
        starling__msg_reject rj;
        char why[STARLING_REASON_MAX + 32];
        if (starling__reject_decode(p, h->len, &rj))
            return STARLING_E_PROTOCOL;
        snprintf(why, sizeof why, "refused: %s", rj.reason);
        ctrl_lost(c, why);
        return STARLING_OK;
    }
    default: return STARLING_E_PROTOCOL;
    }
}

static void ctrl_lost(starling_comm *c, const char *why)
{
    engine *e = &c->eng;
    SLOG_WARN("%s: coordinator %s:%d lost (%s); reconnecting", c->name, c->coord_host[c->coord_cur],
              c->coord_port[c->coord_cur], why);
    starling__fconn_close(&e->ctrl);
    e->ctrl_up = 0;
    e->next_reconnect_ms = starling__now_ms();
    /* With several coordinators, the next one first: this one just failed us. */
    c->coord_cur = (c->coord_cur + 1) % c->ncoords;
}

/* Re-registration: an attempt runs on a dialing thread (ctrl.c), the engine goes on. */
static void ctrl_reconnect(starling_comm *c)
{
    engine *e = &c->eng;
    int64_t now = starling__now_ms();
    int i = c->coord_cur;
    /* The next address at once; a full round of them every 250 ms. */
    e->next_reconnect_ms = now + (c->ncoords > 1 && (i + 1) % c->ncoords ? 0 : 250);
    if (starling__ctrl_dial_start(c) != STARLING_OK)
        SLOG_WARN("%s: cannot start a re-registration attempt", c->name);
}

/* A dialing thread finished: if it registered, tell the coordinator again what the old
 * one was told. */
static void ctrl_dialed(starling_comm *c)
{
    engine *e = &c->eng;
    if (!starling__ctrl_dial_poll(c))
        return;
    if (e->cur && e->cur->job == JOB_TOPO)
        e->topo_sent = send_topo_req(c) == STARLING_OK;
    if (e->fail_sent) {
        starling__msg_epoch m;
        memset(&m, 0, sizeof m);
        m.epoch = e->epoch;
        m.a = e->seq;
        m.code = e->fail_code;
        starling__ctrl_send(c, MSG_FAIL, &m);
    }
}

static void ctrl_io(starling_comm *c, short revents)
{
    engine *e = &c->eng;
    starling__frame_hdr h;
    const uint8_t *p;
    int rc;
    if (revents & (POLLIN | POLLHUP | POLLERR)) {
        rc = starling__fconn_read(&e->ctrl, starling__now_ms());
        while (rc == STARLING_OK && e->ctrl_up) {
            int got = starling__fconn_next(&e->ctrl, &h, &p);
            if (got <= 0) {
                rc = got;
                break;
            }
            rc = handle_ctrl_frame(c, &h, p);
        }
        if (rc != STARLING_OK && e->ctrl_up) {
            ctrl_lost(c, rc == STARLING_E_CLOSED ? "closed"
                         : rc == STARLING_E_AUTH
                             ? "a frame failed authentication (tampered or forged)"
                             : "malformed frame");
            return;
        }
    }
    if (e->ctrl_up && starling__fconn_flush(&e->ctrl) != STARLING_OK)
        ctrl_lost(c, "send failed");
}

static void timers(starling_comm *c, int64_t now)
{
    engine *e = &c->eng;
    if (e->ctrl_up && now >= e->next_hb_ms) {
        starling__msg_epoch m;
        memset(&m, 0, sizeof m);
        starling__ctrl_send(c, MSG_HEARTBEAT, &m);
        e->next_hb_ms = now + c->cfg.timeout_ms / 4;
    }
    if (e->ctrl_up && now - e->ctrl.last_rx_ms > c->cfg.timeout_ms)
        ctrl_lost(c, "silent past the timeout");
    if (e->dial.active)
        ctrl_dialed(c);
    if (!e->ctrl_up && !e->dial.active && now >= e->next_reconnect_ms)
        ctrl_reconnect(c);
    if (!e->cur)
        return;
    if ((e->fail_sent || e->frozen) && now >= e->fail_deadline_ms) {
        /* The coordinator could not be reached to decide: the only case in which
         * members may end an op differently. Documented in docs/architecture.md. */
        break_epoch(c, STARLING_E_TIMEOUT);
        e->frozen = 0;
        finish_job(c, STARLING_E_TIMEOUT, "no decision from the coordinator in time");
    } else if (!e->fail_sent && !e->frozen && now >= e->cur_deadline_ms) {
        if (e->cur->job == JOB_TOPO) {
            finish_job(c, STARLING_E_TIMEOUT, "topology update did not complete in time");
        } else {
            report_failure(c, STARLING_E_TIMEOUT);
        }
    }
}

static int64_t next_wake(const starling_comm *c, int64_t now)
{
    const engine *e = &c->eng;
    int64_t t = now + 1000;
    if (e->ctrl_up && e->next_hb_ms < t)
        t = e->next_hb_ms;
    if (e->ctrl_up && e->ctrl.last_rx_ms + c->cfg.timeout_ms + 1 < t)
        t = e->ctrl.last_rx_ms + c->cfg.timeout_ms + 1;
    if (!e->ctrl_up && !e->dial.active && e->next_reconnect_ms < t)
        t = e->next_reconnect_ms; /* a dialing thread wakes the engine when done */
    if (e->cur) {
        int64_t d = (e->fail_sent || e->frozen) ? e->fail_deadline_ms : e->cur_deadline_ms;
        if (d < t)
            t = d;
    }
    return t < now ? now : t;
}

/* A collective that waits only on shared-memory links (neighbours on this host) spins
 * a little before it sleeps in poll, yielding the CPU at each turn: the next piece is
 * usually microseconds away, and a sleep and a wake-up cost tens of them on a loaded
 * host. 1 if a link moved (progress again), 0 to poll. */
static int spin_on_rings(const starling_comm *c, const struct pollfd *ring, int n)
{
    int64_t end = starling__now_ns() + STARLING_SPIN_NS;
    int moved;
    if (!starling__ring_shm_wait(c, ring, n, &moved))
        return 0;
    while (!moved && starling__now_ns() < end) {
        sched_yield();
        starling__ring_shm_wait(c, ring, n, &moved);
    }
    return moved;
}

void *starling__engine_main(void *arg)
{
    starling_comm *c = arg;
    engine *e = &c->eng;
    struct pollfd fds[2 + 2 * STARLING_MAX_STREAMS];

    for (;;) {
        int nfds = 0, nring = 0, stop, ctrl_at = -1, spun = 0;
        int64_t now;

        pthread_mutex_lock(&c->mu);
        stop = c->stop;
        if (!stop && !e->cur && c->qhead) {
            e->cur = c->qhead;
            c->qhead = e->cur->next;
            if (!c->qhead)
                c->qtail = NULL;
            e->cur_deadline_ms = starling__now_ms() + c->cfg.op_timeout_ms;
        }
        pthread_mutex_unlock(&c->mu);
        if (stop)
            break;
        if (e->cur && !e->op && e->cur->job == JOB_COLL && !e->fail_sent)
            start_job(c);
        else if (e->cur && e->cur->job == JOB_TOPO && !e->topo_sent && e->ctrl_up)
            start_job(c);
        if (e->cur && e->cur->job == JOB_TOPO && e->topo_applied && starling__links_adopt(c)) {
            finish_topo(c, e->probe_bytes);
            continue;
        }
        fds[nfds].fd = c->wake.rfd;
        fds[nfds++].events = POLLIN;
        if (e->ctrl_up) {
            ctrl_at = nfds;
            fds[nfds].fd = e->ctrl.fd;
            fds[nfds++].events = starling__fconn_events(&e->ctrl);
        }
        if (e->cur && e->op && !e->frozen && !e->fail_sent) {
            int rc = starling__ring_progress(c, fds + nfds, &nring);
            if (rc == 1) {
                starling__ring_commit(c);
                finish_job(c, STARLING_OK, NULL);
                continue;
            }
            if (rc < 0) {
                report_failure(c, rc);
                nring = 0;
            }
            spun = nring && spin_on_rings(c, fds + nfds, nring);
            nfds += nring;
        }
        now = starling__now_ms();
        /* After a spin that saw a link move: only look (the control link, the timers). */
        if (poll(fds, (nfds_t)nfds, spun ? 0 : starling__ms_until(next_wake(c, now))) < 0)
            continue;
        if (fds[0].revents)
            starling__wake_drain(&c->wake);
        if (ctrl_at >= 0 && fds[ctrl_at].revents)
            ctrl_io(c, fds[ctrl_at].revents);
        else if (e->ctrl_up && starling__fconn_flush(&e->ctrl) != STARLING_OK)
            ctrl_lost(c, "send failed");
        timers(c, starling__now_ms());
    }
    /* Closing: fail what is left, in order. */
    starling__ctrl_dial_join(c);
    if (e->cur)
        finish_job(c, STARLING_E_CLOSED, "communicator closed");
    for (;;) {
        struct starling_request *r;
        pthread_mutex_lock(&c->mu);
        r = c->qhead;
        if (r) {
            c->qhead = r->next;
            if (!c->qhead)
                c->qtail = NULL;
        }
        pthread_mutex_unlock(&c->mu);
        if (!r)
            break;
        starling__request_complete(r, STARLING_E_CLOSED, "communicator closed");
    }
    return NULL;
}
