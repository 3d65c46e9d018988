/* DiLoCo rounds: H inner steps on the member's working copy, then the round's
 * pseudo-gradient all-reduced and the outer step on the global parameters
 * (docs/training.md, "DiLoCo").
 *
 * Deadline rounds (round_deadline, docs/training.md "Deadline rounds"): a member that has
 * not done its H inner steps when the round's deadline passes stops there and sends the
 * pseudo-gradient of the steps it did; the all-reduce averages it like any other, and
 * every member starts the next round from the same global parameters at the same shared
 * step. The deadline is a fixed time from the round's start (the previous all-reduce's
 * completion, nearly the same instant on every member), or with "auto" F times the
 * fastest member's time for H inner steps in the last round, which one more 8-byte MIN
 * all-reduce per round shares. A member does at least one inner step per round. Which
 * steps a member does depends on its clock, so a run is no longer reproducible step for
 * step; the members' states stay bit-identical, since all apply the same result. */
#include <math.h>
#include <string.h>

#include "platform/clock.h"
#include "train/trainer_internal.h"
#include "util/log.h"

/* ---------------------------------------------------------------- deadline rounds */

/* The auto deadline's all-reduce: this member's time for H inner steps (its rate in this
 * round), the fastest of them is kept for the next round. */
static int share_round_time(starling_trainer *t, int contributor)
{
    double mine = INFINITY, fastest = INFINITY;
    int rc;
    if (contributor && t->round_steps > 0)
        mine = t->round_inner_s / (double)t->round_steps * (double)t->cfg.inner_steps;
    rc = starling_allreduce(t->comm, &mine, &fastest, 1, STARLING_F64, STARLING_MIN, t->opts_count);
    if (rc == STARLING_OK)
        t->fastest_round_s = isfinite(fastest) ? fastest : 0.0;
    return rc;
}

/* Whether the round closes now, before another inner step. */
static int round_due(const starling_trainer *t)
{
    double limit =
        t->cfg.deadline_s > 0.0 ? t->cfg.deadline_s : t->cfg.deadline_factor * t->fastest_round_s;
    if (limit <= 0.0 || t->round_steps == 0)
        return 0;
    return (double)(starling__now_ns() - t->round_start_ns) / 1e9 >= limit;
}

/* ---------------------------------------------------------------- rounds */

/* The round's synchronisation: Delta = theta_global - theta_local all-reduced (AVG, the
 * run's codec), outer Nesterov step on the global parameters, local := global. The
 * global parameters do not change until the all-reduce commits, so after a recovery the
 * same pseudo-gradient is simply sent again. `contributor` is 0 for a member that
 * joined during the recovery of this very round: it sends zeros and is not counted.
 * `counted` starts at 1 for such a member, which enters straight after its state sync. */
static int diloco_round_end(starling_trainer *t, int contributor, int counted)
{
    uint64_t prev = starling_state_step(t->comm);
    int32_t k = 0;
    int rc;
    if (contributor)
        starling__outer_pseudo_grad(t->delta, t->global, t->m->params, t->n);
    else
        memset(t->delta, 0, t->n * sizeof(float));
    /* Marks the shared state "inside the round's all-reduce", with the round's end step,
     * so a member admitted by a recovery of this all-reduce knows to take part in it. */
    t->phase[0] = 1;
    starling_state_set_step(t->comm, t->step);
    for (;;) {
        if (counted) {
            int32_t mine = contributor ? 1 : 0;
            rc = starling_allreduce(t->comm, &mine, &k, 1, STARLING_I32, STARLING_SUM,
                                    t->opts_count);
            if (rc == STARLING_OK && k < 1)
                rc = STARLING_E_STATE; /* nobody holds a pseudo-gradient: cannot happen */
        } else {
            rc = STARLING_OK;
        }
        if (rc == STARLING_OK && t->cfg.deadline_factor > 0.0)
            rc = share_round_time(t, contributor);
        if (rc == STARLING_OK)
            rc = starling__trainer_sync_reduce(
                t, contributor ? starling__trainer_contribution(t, t->delta) : t->delta);
        if (rc == STARLING_OK || (rc == STARLING_E_CORRUPT && t->agg))
            break;
        if (!trainer_is_fault(rc) || (rc = starling__trainer_recover(t, rc)) != STARLING_OK)
            return rc;
        counted = 1; /* the membership may have grown: count who holds a pseudo-gradient */
    }
    if (rc == STARLING_E_CORRUPT) {
        /* The round's outer step is skipped on every member; the inner progress is lost. */
        SLOG_WARN("trainer: outer step at %llu skipped: %s", (unsigned long long)t->step,
                  starling_comm_errmsg(t->comm));
    } else if (contributor) {
        starling__trainer_contribution_learn(t, t->delta);
    }
    /* With an aggregator a newcomer's zeros are one more vector for the rule (robust
     * rules do not divide by the member count), so no rescaling. */
    if (!t->agg && counted && k != starling_comm_size(t->comm)) {
        /* AVG divided by every member; the newcomers' zeros must not dilute the mean. */
        float s = (float)starling_comm_size(t->comm) / (float)k;
        for (size_t i = 0; i < t->n; i++)
            t->red[i] *= s;
    }
    if (rc == STARLING_OK)
        starling__outer_nesterov_step(t->global, t->red, t->outer_mom, t->n, (float)t->cfg.outer_lr,
                                      (float)t->cfg.outer_momentum);
    memcpy(t->m->params, t->global, t->n * sizeof(float));
    t->phase[0] = 0;
    starling_state_set_step(t->comm, t->step);
    t->synced = 1;
    starling__trainer_maybe_checkpoint(t, prev);
    return STARLING_OK;
}

static void diloco_round_start(starling_trainer *t)
{
    memcpy(t->m->params, t->global, t->n * sizeof(float));
    memset(t->opt_state, 0, t->opt_floats * sizeof(float));
    t->opt.step = 0;
    t->round_start_ns = starling__now_ns();
    t->round_steps = 0;
    t->round_inner_s = 0.0;
}

int starling__trainer_step_diloco(starling_trainer *t)
{
    uint64_t h = t->cfg.inner_steps;
    int64_t t0;
    int rc;
    if (!t->started) {
        if ((rc = starling__trainer_first_sync(t)) != STARLING_OK)
            return rc;
        if (t->phase[0]) {
            /* Admitted by a recovery of a round's all-reduce: take part with nothing. */
            rc = diloco_round_end(t, 0, 1);
            t->loss = 0.0;
            return rc;
        }
        diloco_round_start(t);
    } else if (t->step % h == 0) {
        if ((rc = starling__trainer_topology_and_sync(t)) != STARLING_OK)
            return rc;
        diloco_round_start(t);
    }
    if (round_due(t)) {
        /* The deadline passed: the rest of this member's round is skipped. */
        uint64_t end = (t->step / h + 1) * h;
        t->step = end < t->cfg.steps ? end : t->cfg.steps;
        t->rounds_cut++;
        return diloco_round_end(t, 1, 0);
    }
    t0 = starling__now_ns();
    if ((rc = starling__trainer_inner_step(t)) != STARLING_OK)
        return rc;
    t->round_inner_s += (double)(starling__now_ns() - t0) / 1e9;
    t->round_steps++;
    t->step++;
    t->synced = 0;
    if (t->step % h == 0 || t->step >= t->cfg.steps)
        return diloco_round_end(t, 1, 0);
    return STARLING_OK;
}
