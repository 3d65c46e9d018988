/* Failure resolution: when a member of the current epoch dies or reports a failed
 * collective, every live member is asked how far it got (QUERY -> STATUS), and one
 * decision is sent to all of them: the collectives up to commit_seq commit, the later ones
 * abort. commit_seq is the smallest done_seq reported, because a collective may only
 * commit where every survivor already holds its result; so all survivors agree.
 * Members that do not answer within timeout_ms are declared dead.
 *
 * One exception lowers it further: a member that reports FAIL{seq S, MISMATCH} may have
 * finished S's data phase (done_seq = S: a broadcast whose members disagree on the root
 * moves data without noticing, the DONE barrier does), yet S must not commit. That is
 * safe because under a mismatch no member can pass the barrier and commit S on its own.
 * Other failures (a lost peer, a timeout) do not cap: there a member may already have
 * committed S after its barrier, and commit_seq = min done_seq agrees with it. */
#include <inttypes.h>
#include <stdint.h>
#include <string.h>

#include "coord/coord_internal.h"
#include "platform/clock.h"
#include "util/log.h"

static int decision_index(const starling_coord *c, uint64_t epoch)
{
    for (int i = 0; i < c->ndecisions; i++)
        if (c->decisions[i].epoch == epoch)
            return i;
    return -1;
}

const starling__coord_decision *starling__coord_decision_find(const starling_coord *c,
                                                              uint64_t epoch)
{
    int i = decision_index(c, epoch);
    return i < 0 ? NULL : &c->decisions[i];
}

static void remember(starling_coord *c, uint64_t epoch, uint64_t commit_seq, int32_t code)
{
    int i = decision_index(c, epoch);
    starling__coord_decision *d = i < 0 ? NULL : &c->decisions[i];
    if (!d) {
        d = &c->decisions[c->decision_next];
        c->decision_next = (c->decision_next + 1) % STARLING_COORD_DECISIONS;
        if (c->ndecisions < STARLING_COORD_DECISIONS)
            c->ndecisions++;
    }
    d->epoch = epoch;
    d->commit_seq = commit_seq;
    d->code = code;
}

void starling__coord_send_decision(starling_coord *c, starling__coord_conn *p, uint64_t epoch)
{
    const starling__coord_decision *d = starling__coord_decision_find(c, epoch);
    starling__coord_send_epoch(c, p, MSG_DECIDE, epoch, d ? d->commit_seq : 0,
                               d ? d->code : STARLING_E_PEER_LOST);
}

void starling__coord_resolve_start(starling_coord *c, int32_t code)
{
    uint32_t live = 0;
    c->broken = 1;
    c->res_active = 1;
    c->res_deadline_ms = starling__now_ms() + c->timeout_ms;
    c->res_code = code;
    c->res_commit_cap = UINT64_MAX;
    for (uint32_t i = 0; i < c->nmembers; i++) {
        starling__coord_member *m = &c->members[i];
        starling__coord_conn *q;
        m->replied = 0;
        m->done_seq = 0;
        if (m->dead)
            continue;
        live++;
        /* A member of an adopted epoch that has not re-registered yet is queried when it
         * does (coord_members.c), or declared dead at the deadline. */
        q = starling__coord_find(c, m->id);
        if (q)
            starling__coord_send_epoch(c, q, MSG_QUERY, c->epoch, 0, 0);
    }
    SLOG_INFO("epoch %" PRIu64 " broken (%s): querying %u live members", c->epoch,
              code ? starling_strerror(code) : "a member was lost", (unsigned)live);
}

void starling__coord_on_fail(starling_coord *c, starling__coord_conn *p,
                             const starling__msg_epoch *m)
{
    int idx = starling__coord_member_index(c, p->peer_id);
    int member = idx >= 0 && !c->members[idx].dead;

    if (c->epoch == 0 || m->epoch != c->epoch || !member) {
        /* Not (or no longer) its epoch: only a known outcome is worth an answer. */
        if (starling__coord_decision_find(c, m->epoch))
            starling__coord_send_decision(c, p, m->epoch);
        else
            SLOG_DEBUG("ignoring a failure report for epoch %" PRIu64 " from %s", m->epoch,
                       p->name);
        return;
    }
    SLOG_INFO("peer %s reports a failure in epoch %" PRIu64 " at seq %" PRIu64 ": %s", p->name,
              m->epoch, m->a, starling_strerror(m->code));
    if (!c->res_active && starling__coord_decision_find(c, m->epoch)) {
        starling__coord_send_decision(c, p, m->epoch);
        return;
    }
    if (!c->res_active)
        starling__coord_resolve_start(c, m->code);
    else if (!c->res_code)
        c->res_code = m->code;
    if (m->code == STARLING_E_MISMATCH) {
        uint64_t cap = m->a ? m->a - 1 : 0;
        if (cap < c->res_commit_cap)
            c->res_commit_cap = cap;
    }
}

void starling__coord_on_status(starling_coord *c, starling__coord_conn *p,
                               const starling__msg_epoch *m)
{
    int idx = starling__coord_member_index(c, p->peer_id);
    if (!c->res_active || m->epoch != c->epoch || idx < 0 || c->members[idx].dead ||
        c->members[idx].replied) {
        SLOG_DEBUG("ignoring a status for epoch %" PRIu64 " from %s", m->epoch, p->name);
        return;
    }
    c->members[idx].replied = 1;
    c->members[idx].done_seq = m->a;
    SLOG_DEBUG("peer %s in epoch %" PRIu64 ": done %" PRIu64 ", current %" PRIu64, p->name,
               m->epoch, m->a, m->b);
}

void starling__coord_resolve_check(starling_coord *c, int64_t now_ms)
{
    uint64_t commit = UINT64_MAX;
    int32_t code;
    int all = 1, any = 0;

    if (!c->res_active)
        return;
    for (uint32_t i = 0; i < c->nmembers; i++)
        if (!c->members[i].dead && !c->members[i].replied)
            all = 0;
    if (!all && now_ms < c->res_deadline_ms)
        return;
    for (uint32_t i = 0; !all && i < c->nmembers; i++) {
        starling__coord_member *m = &c->members[i];
        starling__coord_conn *q;
        if (m->dead || m->replied)
            continue;
        q = starling__coord_find(c, m->id);
        if (q) {
            starling__coord_lost(c, q, "no status before the deadline");
        } else {
            SLOG_INFO("peer ?/%016" PRIx64 " lost: no status before the deadline", m->id);
            starling__coord_member_lost(c, (int)i);
        }
    }
    /* Only survivors bound the commit point: a dead member's progress does not matter. */
    for (uint32_t i = 0; i < c->nmembers; i++) {
        if (c->members[i].dead || !c->members[i].replied)
            continue;
        any = 1;
        if (c->members[i].done_seq < commit)
            commit = c->members[i].done_seq;
    }
    if (!any)
        commit = 0;
    if (commit > c->res_commit_cap)
        commit = c->res_commit_cap;
    if (c->had_death || c->res_code == 0 || c->res_code == STARLING_E_PROTOCOL)
        code = STARLING_E_PEER_LOST;
    else
        code = c->res_code;
    c->res_active = 0;
    c->dirty = 1;
    remember(c, c->epoch, commit, code);
    for (uint32_t i = 0; i < c->nmembers; i++) {
        starling__coord_conn *q;
        if (c->members[i].dead || !c->members[i].replied)
            continue;
        q = starling__coord_find(c, c->members[i].id);
        if (q)
            starling__coord_send_epoch(c, q, MSG_DECIDE, c->epoch, commit, code);
    }
    for (int i = 0; i < c->nconns; i++) {
        starling__coord_conn *q = c->conns[i];
        if (!q->closing && q->decide_epoch == c->epoch) {
            starling__coord_send_epoch(c, q, MSG_DECIDE, c->epoch, commit, code);
            q->decide_epoch = 0;
        }
    }
    SLOG_INFO("epoch %" PRIu64 " resolved: ops up to seq %" PRIu64 " commit, later abort (%s)",
              c->epoch, commit, starling_strerror(code));
}
