/* Membership: registration (and re-registration after a coordinator restart), epochs and
 * the formation of the next epoch's ring.
 *
 * A member is identified by its peer_id; its liveness in the current epoch is the
 * member's `dead` flag, never the mere presence of a connection: a member of an adopted
 * epoch may not have re-registered yet (alive, not connected, until adopt_deadline_ms). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord/coord_internal.h"
#include "util/log.h"

int starling__coord_member_index(const starling_coord *c, uint64_t peer_id)
{
    for (uint32_t i = 0; i < c->nmembers; i++)
        if (c->members[i].id == peer_id)
            return (int)i;
    return -1;
}

void starling__coord_member_lost(starling_coord *c, int idx)
{
    c->members[idx].dead = 1;
    c->had_death = 1;
    c->dirty = 1;
    if (!c->broken)
        starling__coord_resolve_start(c, 0);
}

static int count_registered(const starling_coord *c)
{
    int n = 0;
    for (int i = 0; i < c->nconns; i++)
        n += c->conns[i]->registered && !c->conns[i]->closing;
    return n;
}

int starling__coord_cmp_id(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* A re-registering peer's view of its epoch: nonzero ids, no duplicates, itself among
 * them. Checked on a sorted copy. */
static int member_list_ok(starling_coord *c, const starling__msg_register *reg)
{
    int self = 0;
    memcpy(c->ids, reg->members, reg->nmembers * sizeof *c->ids);
    qsort(c->ids, reg->nmembers, sizeof *c->ids, starling__coord_cmp_id);
    for (uint32_t i = 0; i < reg->nmembers; i++) {
        if (c->ids[i] == 0 || (i && c->ids[i] == c->ids[i - 1]))
            return 0;
        self |= c->ids[i] == reg->peer_id;
    }
    return self;
}

/* The coordinator restarted (or is behind): take the peers' word for the current epoch.
 * Its members get timeout_ms to re-register; connected peers that claimed an older epoch
 * and are not members are stale, and learn that their epoch is over. */
static void adopt(starling_coord *c, starling__coord_conn *p, const starling__msg_register *reg,
                  int64_t now)
{
    if (c->res_active)
        SLOG_INFO("abandoning the resolution of epoch %" PRIu64 ": peers are in epoch %" PRIu64,
                  c->epoch, reg->epoch);
    c->res_active = 0;
    c->epoch = reg->epoch;
    if ((uint32_t)(c->epoch >> 32) > c->term)
        c->term = (uint32_t)(c->epoch >> 32); /* ours form after it */
    c->nmembers = reg->nmembers;
    for (uint32_t i = 0; i < reg->nmembers; i++) {
        memset(&c->members[i], 0, sizeof c->members[i]);
        c->members[i].id = reg->members[i];
    }
    c->broken = 0;
    c->had_death = 0;
    c->adopt_deadline_ms = now + c->timeout_ms;
    c->dirty = 1;
    SLOG_INFO("adopted epoch %" PRIu64 " (%u members) from re-registering peer %s", c->epoch,
              (unsigned)c->nmembers, p->name);
    for (int i = 0; i < c->nconns; i++) {
        starling__coord_conn *q = c->conns[i];
        if (q == p || !q->registered || q->closing)
            continue;
        if (q->decide_epoch && q->decide_epoch != c->epoch) {
            starling__coord_send_decision(c, q, q->decide_epoch);
            q->decide_epoch = 0;
        }
        if (starling__coord_member_index(c, q->peer_id) < 0 && q->epoch && q->epoch < c->epoch) {
            starling__coord_send_decision(c, q, q->epoch);
            q->epoch = 0;
        }
    }
}

/* Where a registering peer stands, from the epoch it claims:
 *  - newer than ours (or we have none, after a restart): adopt it;
 *  - ours, and it is a live member: it is back (a resolution in progress queries it);
 *  - older, or ours but we count it dead or not a member: it is stale. It continues as a
 *    newcomer and is told (DECIDE) that its epoch is over, with that epoch's decision if we
 *    remember it, or when the resolution in progress ends;
 *  - none (a newcomer) while we count it a live member: it lost its place in the epoch. */
static void place(starling_coord *c, starling__coord_conn *p, const starling__msg_register *reg,
                  int64_t now)
{
    int idx = starling__coord_member_index(c, p->peer_id);
    char label[96];

    if (reg->epoch && (c->epoch == 0 || reg->epoch > c->epoch)) {
        adopt(c, p, reg, now);
        return;
    }
    if (reg->epoch && reg->epoch == c->epoch && idx >= 0 && !c->members[idx].dead) {
        /* Back in its epoch. A resolution in progress wants its status too. */
        if (c->res_active && !c->members[idx].replied)
            starling__coord_send_epoch(c, p, MSG_QUERY, c->epoch, 0, 0);
        return;
    }
    starling__coord_label(p, label);
    if (idx >= 0 && !c->members[idx].dead) {
        /* Still a member to us, but it says otherwise: it lost its place in the epoch. */
        SLOG_INFO("peer %s lost: re-registered in epoch %" PRIu64 ", not %" PRIu64, label,
                  reg->epoch, c->epoch);
        starling__coord_member_lost(c, idx);
    }
    if (reg->epoch == 0)
        return;
    SLOG_INFO("peer %s is stale (epoch %" PRIu64 ", current %" PRIu64 "): joins as a newcomer",
              label, reg->epoch, c->epoch);
    p->epoch = 0;
    if (reg->epoch == c->epoch && c->res_active)
        p->decide_epoch = reg->epoch; /* told when the resolution ends */
    else
        starling__coord_send_decision(c, p, reg->epoch);
}

void starling__coord_on_register(starling_coord *c, starling__coord_conn *p,
                                 const starling__msg_register *reg, int64_t now_ms)
{
    starling__coord_conn *old = starling__coord_find(c, reg->peer_id);
    uint8_t frame[STARLING_FRAME_HDR + 16];
    starling__msg_welcome w;
    char label[96];

    if (c->standby) {
        char reason[STARLING_REASON_MAX];
        snprintf(reason, sizeof reason, "standby: the active coordinator %s:%d is alive",
                 c->active_host, c->active_port);
        starling__coord_reject(c, p, STARLING_E_BUSY, reason);
        return;
    }
    if (reg->epoch == 0 && starling__coord_no_quorum(c, now_ms)) {
        starling__coord_reject(c, p, STARLING_E_BUSY,
                               "coordinator without quorum: try another coordinator");
        return;
    }
    if (reg->epoch && !member_list_ok(c, reg)) {
        SLOG_WARN("peer %016" PRIx64 " sent a malformed frame: bad member list in register",
                  p->hello_id);
        starling__coord_lost(c, p, "malformed frame");
        return;
    }
    if (old) {
        /* The same peer on a new connection (its old one broke on its side): not a death. */
        starling__coord_label(old, label);
        SLOG_INFO("peer %s reconnected: replacing its old connection", label);
        starling__fconn_close(&old->fc);
        old->closing = 1;
        old->waiting = 0;
    } else if (count_registered(c) >= STARLING_MAX_PEERS) {
        SLOG_WARN("refused peer %016" PRIx64 ": already %d peers registered", p->hello_id,
                  STARLING_MAX_PEERS);
        starling__coord_reject(c, p, STARLING_E_LIMIT, "too many peers registered");
        return;
    }
    p->registered = 1;
    p->peer_id = reg->peer_id;
    memcpy(p->name, reg->name, sizeof p->name);
    memcpy(p->host, reg->host, sizeof p->host);
    p->port = reg->port;
    p->min_peers = reg->min_peers;
    p->epoch = reg->epoch;
    c->dirty = 1;

    w.coord_id = c->coord_id;
    w.timeout_ms = (uint32_t)c->timeout_ms;
    starling__coord_send(c, p, frame, starling__welcome_encode(frame, sizeof frame, &w));
    starling__coord_label(p, label);
    if (p->port == 0)
        SLOG_INFO("peer %s registered (%s, accepts no inbound connections: opens its ring "
                  "links itself; epoch %" PRIu64 ", min_peers %u)",
                  label, p->host, reg->epoch, (unsigned)p->min_peers);
    else
        SLOG_INFO("peer %s registered (data plane %s:%u, epoch %" PRIu64 ", min_peers %u)",
                  label, p->host, (unsigned)p->port, reg->epoch, (unsigned)p->min_peers);
    place(c, p, reg, now_ms);
}

void starling__coord_adopt_check(starling_coord *c, int64_t now_ms)
{
    if (!c->adopt_deadline_ms || now_ms < c->adopt_deadline_ms)
        return;
    c->adopt_deadline_ms = 0;
    for (uint32_t i = 0; i < c->nmembers; i++) {
        if (c->members[i].dead || starling__coord_find(c, c->members[i].id))
            continue;
        SLOG_INFO("peer ?/%016" PRIx64 " lost: did not re-register within %d ms", c->members[i].id,
                  c->timeout_ms);
        starling__coord_member_lost(c, (int)i);
    }
}

static void log_epoch(starling_coord *c, starling__coord_conn **who, uint32_t n)
{
    char names[480];
    size_t len = 0;
    names[0] = '\0';
    for (uint32_t i = 0; i < n && len < sizeof names; i++) {
        int w = snprintf(names + len, sizeof names - len, " %s", who[i]->name);
        if (w < 0)
            break;
        len += (size_t)w;
    }
    if (len >= sizeof names)
        memcpy(names + sizeof names - 5, " ...", 5);
    SLOG_INFO("epoch %" PRIu64 ": %u members:%s", c->epoch, (unsigned)n, names);
}

/* Sends the epoch made of c->ids[0..n) (ring order) to each of its members. */
static void form(starling_coord *c, uint32_t n)
{
    starling__coord_conn **who = c->who;
    int same = !c->broken && n == c->nmembers;
    for (uint32_t i = 0; same && i < n; i++)
        same = c->ids[i] == c->members[i].id;
    if (!same) {
        if (!starling__coord_may_form(c, n))
            return;
        c->epoch = starling__coord_next_epoch(c);
        c->nmembers = n;
        for (uint32_t i = 0; i < n; i++) {
            memset(&c->members[i], 0, sizeof c->members[i]);
            c->members[i].id = c->ids[i];
        }
        c->broken = 0;
        c->had_death = 0;
        c->adopt_deadline_ms = 0;
        starling__coord_formed(c);
    }
    c->topo->epoch = c->epoch;
    c->topo->n = n;
    c->topo->probe_bytes = c->probe_now;
    for (uint32_t i = 0; i < n; i++) {
        who[i] = starling__coord_find(c, c->ids[i]);
        c->topo->members[i].id = who[i]->peer_id;
        memcpy(c->topo->members[i].host, who[i]->host, sizeof c->topo->members[i].host);
        c->topo->members[i].port = who[i]->port;
    }
    for (uint32_t i = 0; i < n; i++) {
        c->topo->rank = i;
        who[i]->waiting = 0;
        who[i]->epoch = c->epoch;
        who[i]->decide_epoch = 0;
        starling__coord_send(
            c, who[i], c->buf,
            starling__topo_encode(c->buf, STARLING_FRAME_HDR + STARLING_CTRL_MAX, c->topo));
    }
    log_epoch(c, who, n);
}

void starling__coord_check_formation(starling_coord *c)
{
    uint32_t n = 0, need, first_joiner;

    if (c->res_active)
        return;
    if (c->epoch == 0) {
        need = (uint32_t)c->min_peers;
        for (int i = 0; i < c->nconns; i++) {
            starling__coord_conn *q = c->conns[i];
            if (q->waiting && !q->closing) {
                c->ids[n++] = q->peer_id;
                if (q->min_peers > need)
                    need = q->min_peers;
            }
        }
        if (n == 0)
            return;
        qsort(c->ids, n, sizeof *c->ids, starling__coord_cmp_id);
        n = starling__coord_fit_closed(c, n);
        if (n < need)
            return;
        starling__coord_order(c, n);
        starling__coord_spread_closed(c, n);
        form(c, n);
        return;
    }
    /* Every live member must be here; dead ones are left out of the next ring. */
    for (uint32_t i = 0; i < c->nmembers; i++) {
        starling__coord_conn *q;
        if (c->members[i].dead)
            continue;
        q = starling__coord_find(c, c->members[i].id);
        if (!q || !q->waiting)
            return;
        c->ids[n++] = q->peer_id;
    }
    first_joiner = n;
    for (int i = 0; i < c->nconns; i++) {
        starling__coord_conn *q = c->conns[i];
        int idx;
        if (!q->waiting || q->closing)
            continue;
        idx = starling__coord_member_index(c, q->peer_id);
        if (idx < 0 || c->members[idx].dead)
            c->ids[n++] = q->peer_id;
    }
    if (n == 0)
        return;
    qsort(c->ids + first_joiner, n - first_joiner, sizeof *c->ids, starling__coord_cmp_id);
    n = starling__coord_fit_closed(c, n);
    if (n == 0)
        return;
    starling__coord_order(c, n);
    starling__coord_spread_closed(c, n);
    form(c, n);
}
