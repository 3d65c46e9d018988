/* starling_robust_allreduce: an all-gather of every member's vector, then the same
 * aggregation of the same gathered bytes on every member (docs/aggregation.md).
 *
 * The all-gather is the ring's (codecs allowed), so its failures are the ring's uniform
 * failures. Bit parity follows from determinism: every member holds the same n x count
 * bytes after the gather and the aggregation is a pure function of them and of a salt
 * (call_salt) that every member computes alike. */
#include <stdio.h>

#include "agg/agg.h"
#include "core/internal.h"
#include "util/alloc.h"
#include "util/log.h"

/* The salt of the bucketing permutation ("bucket:S+" aggregators; ignored otherwise):
 * it must be equal on every member of the call and should change from call to call, so
 * that a faulty vector does not keep the same bucket-mates. From what every member of the
 * call shares: the epoch (all members hold it), the call's tag (all members pass the same
 * one, or none) and the shared step (starling_state_set_step, which members advance
 * alike; starling_sync_state makes it equal). Not from the gathered bytes: a faulty member
 * could then pick its permutation by trying vectors. Two calls in one epoch with the same
 * tag and step get the same permutation: the trainer's calls differ in step or tag; a
 * counter of calls per epoch would lift this limit, but it would have to live in the
 * communicator (docs/aggregation.md). */
static uint64_t call_salt(const starling_comm *c, const starling_callopts *opts)
{
    return starling__agg_salt(starling_comm_epoch(c), opts ? opts->tag : 0,
                              starling_state_step(c));
}

int starling_robust_allreduce(starling_comm *c, const float *sendbuf, float *recvbuf,
                              size_t count, const starling_aggregator *agg, int f,
                              const starling_callopts *opts)
{
    float *all;
    size_t n;
    int rc;

    if (!c)
        return STARLING_E_INVALID;
    if (!agg || (count && (!sendbuf || !recvbuf))) {
        snprintf(c->errmsg, sizeof c->errmsg, "NULL %s", !agg ? "aggregator" : "buffer");
        return STARLING_E_INVALID;
    }
    if (starling_comm_size(c) < 1) {
        snprintf(c->errmsg, sizeof c->errmsg,
                 "not a member yet: call starling_update_topology first");
        return STARLING_E_STATE;
    }
    n = (size_t)starling_comm_size(c);
    /* Every member sees the same (n, f), so every member refuses alike, before sending. */
    rc = starling__aggregator_check(agg, n, count ? count : 1, f, c->errmsg, sizeof c->errmsg);
    if (rc != STARLING_OK)
        return rc;
    if (count > ((size_t)1 << 40) / sizeof(float) / n) {
        snprintf(c->errmsg, sizeof c->errmsg, "count %zu too large", count);
        return STARLING_E_LIMIT;
    }
    all = starling__alloc_aligned(n * count * sizeof(float) + 1);
    if (!all) {
        snprintf(c->errmsg, sizeof c->errmsg, "out of memory for %zu x %zu floats", n, count);
        return STARLING_E_NOMEM;
    }
    rc = starling_allgather(c, sendbuf, all, count, STARLING_F32, opts);
    if (rc == STARLING_OK && count)
        rc = starling__aggregate_salted(agg, all, n, count, f, call_salt(c, opts), recvbuf,
                                        c->errmsg, sizeof c->errmsg);
    starling__free(all);
    return rc;
}
