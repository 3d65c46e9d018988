/* Streaming DiLoCo: the parameters in P fragments, each synchronised once per round at
 * its own offset, asynchronously, its result applied tau inner steps later
 * (docs/training.md, "Streaming DiLoCo"). */
#include <math.h>
#include <string.h>

#include "platform/clock.h"
#include "train/trainer_internal.h"
#include "util/log.h"

/* Applies fragment p's averaged pseudo-gradient: outer Nesterov step on its slice of the
 * global parameters, then the mixing local = alpha local + (1 - alpha) global. With an
 * aggregator, a sync where more than f members sent NaN or Inf (STARLING_E_CORRUPT, the
 * same on every member) is skipped like a dropped one: the global slice stays, and the
 * local progress enters the fragment's next sync. */
static int stream_complete(starling_trainer *t, stream_frag *f)
{
    int rc = f->issue_rc;
    float a = (float)t->cfg.alpha, b = 1.0f - (float)t->cfg.alpha;
    float *g = t->global + f->off, *l = t->m->params + f->off;
    if (f->req) {
        rc = starling_request_wait(f->req);
        starling_request_free(f->req);
        f->req = NULL;
    }
    f->in_flight = 0;
    if (rc == STARLING_E_CORRUPT && t->agg) {
        SLOG_WARN("trainer: fragment sync of step %llu skipped: %s",
                  (unsigned long long)f->issue_step, starling_comm_errmsg(t->comm));
        return STARLING_OK;
    }
    if (rc != STARLING_OK)
        return rc;
    starling__attack_learn(&t->byz, t->delta + f->off, t->red + f->off, f->off, f->len);
    starling__outer_nesterov_step(g, t->red + f->off, t->outer_mom + f->off, f->len,
                                  (float)t->cfg.outer_lr, (float)t->cfg.outer_momentum);
    for (size_t i = 0; i < f->len; i++)
        l[i] = a * l[i] + b * g[i];
    t->synced = 1;
    return STARLING_OK;
}

/* A failed fragment sync: every sync still in flight failed with it (they were issued
 * later on the same broken epoch) and is dropped; their progress stays in the local
 * parameters and enters those fragments' next sync. Then the usual recovery. */
static int stream_fault(starling_trainer *t, int rc)
{
    if (!trainer_is_fault(rc))
        return rc;
    for (size_t p = 0; p < t->nfrags; p++) {
        starling_request_free(t->frags[p].req);
        t->frags[p].req = NULL;
        t->frags[p].in_flight = 0;
    }
    return starling__trainer_recover(t, rc);
}

/* Starts fragment f's sync: its pseudo-gradient all-reduced asynchronously (AVG), or,
 * with an aggregator, the robust all-reduce of what this member contributes, run to the
 * end here: there is no asynchronous robust collective, so the robust sync costs its
 * communication and aggregation at the issue step instead of overlapping the next tau
 * inner steps. Its result is still applied tau steps later, so the algorithm (what the
 * members compute, and when it enters the parameters) is the same either way. A failure
 * is reported at completion in both cases. */
static void stream_issue(starling_trainer *t, stream_frag *f)
{
    float *delta = t->delta + f->off, *red = t->red + f->off;
    const float *send;
    starling__outer_pseudo_grad(delta, t->global + f->off, t->m->params + f->off, f->len);
    /* The send buffer (delta's slice, or the attacker's) is not written again before the
     * fragment's next issue, so it outlives the asynchronous call. */
    send = starling__attack_contribution(&t->byz, delta, f->off, f->len, t->step,
                                         starling_comm_rank(t->comm));
    f->in_flight = 1;
    f->issue_step = t->step;
    f->req = NULL;
    if (t->agg) {
        f->issue_rc =
            starling_robust_allreduce(t->comm, send, red, f->len, t->agg, t->cfg.byz_f, f->opts);
        return;
    }
    f->issue_rc = starling_allreduce_async(t->comm, send, red, f->len, STARLING_F32, STARLING_AVG,
                                           f->opts, &f->req);
    if (f->issue_rc != STARLING_OK)
        f->req = NULL;
}

/* Completes, in issue order, the syncs due (all of them when `all`). */
static int stream_complete_due(starling_trainer *t, int all, int *recovered)
{
    for (;;) {
        stream_frag *first = NULL;
        int rc;
        for (size_t p = 0; p < t->nfrags; p++) {
            stream_frag *f = &t->frags[p];
            if (f->in_flight && (all || f->issue_step + t->cfg.tau <= t->step) &&
                (!first || f->issue_step < first->issue_step))
                first = f;
        }
        if (!first)
            return STARLING_OK;
        rc = stream_complete(t, first);
        if (rc != STARLING_OK) {
            if ((rc = stream_fault(t, rc)) != STARLING_OK)
                return rc;
            *recovered = 1;
        }
    }
}

int starling__trainer_step_streaming(starling_trainer *t)
{
    uint64_t h = t->cfg.inner_steps;
    int rc, recovered = 0;
    if (!t->started) {
        if ((rc = starling__trainer_first_sync(t)) != STARLING_OK)
            return rc;
        /* A newcomer (or a fresh start) begins from the global parameters. */
        memcpy(t->m->params, t->global, t->n * sizeof(float));
        memset(t->opt_state, 0, t->opt_floats * sizeof(float));
        t->opt.step = 0;
        recovered = 1;
    }
    if ((rc = stream_complete_due(t, 0, &recovered)) != STARLING_OK)
        return rc;
    /* With tau <= H / P nothing is in flight here: the round start is a clean sync point. */
    if (!recovered && t->step % h == 0) {
        if ((rc = starling__trainer_topology_and_sync(t)) != STARLING_OK)
            return rc;
        starling__trainer_maybe_checkpoint(t, t->last_ckpt_step);
        t->last_ckpt_step = t->step;
    }
    for (size_t p = 0; p < t->nfrags; p++) {
        stream_frag *f = &t->frags[p];
        if (t->step % h == f->offset_step && !f->in_flight) {
            stream_issue(t, f);
            if (t->cfg.tau == 0 && (rc = stream_complete_due(t, 0, &recovered)) != STARLING_OK)
                return rc;
        }
    }
    if ((rc = starling__trainer_inner_step(t)) != STARLING_OK)
        return rc;
    t->step++;
    starling_state_set_step(t->comm, t->step);
    if (t->step >= t->cfg.steps) {
        /* The end: finish every sync in flight, so all members hold the same state. */
        if ((rc = stream_complete_due(t, 1, &recovered)) != STARLING_OK)
            return rc;
        starling__trainer_maybe_checkpoint(t, t->last_ckpt_step);
    }
    return STARLING_OK;
}
