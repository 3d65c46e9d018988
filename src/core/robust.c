/* starling_robust_allreduce: an all-gather of every member's vector, then the same
 * aggregation of the same gathered bytes on every member (docs/aggregation.md).
 *
 * The all-gather is the ring's (codecs allowed), so its failures are the ring's uniform
 * failures. Bit parity follows from determinism: every member holds the same n x count
 * bytes after the gather and starling_aggregate is a pure function of them. */
#include <stdio.h>

#include "agg/agg.h"
#include "core/internal.h"
#include "util/alloc.h"
#include "util/log.h"

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
        rc = starling_aggregate(agg, all, n, count, f, recvbuf, c->errmsg, sizeof c->errmsg);
    starling__free(all);
    return rc;
}
