/* starling_robust_allreduce in a whole group (group_harness.h): with f members sending
 * garbage, every honest member ends with the same bytes, equal to the aggregator applied
 * to the gathered vectors, and bounded by the honest inputs; requirements are refused
 * alike on every member before anything is sent. Bucketing: the permutation's salt is
 * (epoch, tag, shared step), the same on every member and changing with the step. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agg/agg.h"
#include "group_harness.h"
#include "starling.h"

#define COUNT 3001

/* Honest member r: values near (i % 7) with a small spread by rank. Byzantine members
 * (rank >= n - byz): 1e30, or NaN for the last one. */
static float value(int rank, int n, int byz, size_t i)
{
    if (rank >= n - byz)
        return rank == n - 1 && byz > 1 ? NAN : 1e30f;
    return (float)(i % 7) + 0.01f * (float)rank;
}

typedef struct robust_case {
    const char *spec;
    const char *codec; /* NULL: none */
    int byz, f;
} robust_case;

static void body_robust(peer_arg *pa, starling_comm *c)
{
    const robust_case *rc_ = pa->user;
    int rank = starling_comm_rank(c), n = starling_comm_size(c), rc;
    float *x = malloc(COUNT * sizeof *x), *out = malloc(COUNT * sizeof *out);
    float *all = malloc((size_t)n * COUNT * sizeof *all), *ref = malloc(COUNT * sizeof *ref);
    starling_aggregator *agg;
    starling_callopts *opts = NULL;
    starling_codec *codec = NULL;
    char err[200];
    uint64_t h;
    int64_t hs[MAXP], hsig;

    assert_int_equal(starling_aggregator_create(&agg, rc_->spec, err, sizeof err), STARLING_OK);
    if (rc_->codec) {
        assert_int_equal(starling_codec_create(&codec, rc_->codec, err, sizeof err), STARLING_OK);
        starling_callopts_create(&opts);
        starling_callopts_set_codec(opts, codec);
    }
    for (size_t i = 0; i < COUNT; i++)
        x[i] = value(rank, n, rc_->byz, i);
    rc = starling_robust_allreduce(c, x, out, COUNT, agg, rc_->f, opts);
    CHECK(pa, rc == STARLING_OK, "%s: %s (%s)", rc_->spec, starling_strerror(rc),
          starling_comm_errmsg(c));
    /* The reference: the same gathered bytes through the same aggregator, with the call's
     * salt (epoch, tag 0, shared step 0; it only matters for bucketing). */
    if (!pa->fail) {
        rc = starling_allgather(c, x, all, COUNT, STARLING_F32, opts);
        CHECK(pa, rc == STARLING_OK, "reference all-gather: %s", starling_strerror(rc));
        rc = starling__aggregate_salted(agg, all, (size_t)n, COUNT, rc_->f,
                                        starling__agg_salt(starling_comm_epoch(c), 0, 0), ref,
                                        err, sizeof err);
        CHECK(pa, rc == STARLING_OK, "reference aggregate: %s", err);
        CHECK(pa, memcmp(out, ref, COUNT * sizeof *out) == 0,
              "%s: not the aggregate of the gathered vectors", rc_->spec);
    }
    /* Bounded by the honest inputs (with a codec: within its rounding of them). */
    for (size_t i = 0; i < COUNT && !pa->fail; i++) {
        float lo = (float)(i % 7) - 0.1f, hi = (float)(i % 7) + 0.01f * (float)n + 0.1f;
        CHECK(pa, out[i] >= lo && out[i] <= hi, "%s: out[%zu] = %g outside [%g, %g]", rc_->spec,
              i, out[i], lo, hi);
    }
    h = 0;
    for (size_t i = 0; i < COUNT; i++) {
        uint32_t b;
        memcpy(&b, &out[i], 4);
        h = h * 1000003u + b;
    }
    memcpy(&hsig, &h, sizeof hsig);
    rc = starling_allgather(c, &hsig, hs, 1, STARLING_I64, NULL);
    CHECK(pa, rc == STARLING_OK, "parity all-gather: %s", starling_strerror(rc));
    for (int r = 0; r < n && rc == STARLING_OK; r++)
        CHECK(pa, hs[r] == hsig, "%s: rank %d holds other bytes", rc_->spec, r);
    starling_aggregator_destroy(agg);
    starling_codec_destroy(codec);
    starling_callopts_destroy(opts);
    free(x);
    free(out);
    free(all);
    free(ref);
}

static void test_median_5(void **s)
{
    robust_case k = {"median", NULL, 2, 2};
    (void)s;
    run_group_with(5, body_robust, &k, NULL);
}

static void test_krum_bf16_6(void **s)
{
    robust_case k = {"krum", "bf16", 1, 1};
    (void)s;
    run_group_with(6, body_robust, &k, NULL);
}

static void test_nnm_trimmed_7(void **s)
{
    robust_case k = {"nnm+trimmed_mean", "int8", 2, 2};
    (void)s;
    run_group_with(7, body_robust, &k, NULL);
}

/* 5 members, one at 1e30, buckets of 2: 3 bucket means, at most one spoiled. */
static void test_bucket_median_5(void **s)
{
    robust_case k = {"bucket:2+median", NULL, 1, 1};
    (void)s;
    run_group_with(5, body_robust, &k, NULL);
}

/* bucket:4+median over 5 members contributing their rank r (one float): a bucket of 4 and
 * one member a alone; the median of the two means is ((10 - a)/4 + a)/2 = (10 + 3a)/8, so
 * the output names a. Over calls at shared steps 0..11 the lone member changes (the salt
 * mixes the step in); every call equals the salted reference, every member holds the same
 * value, and the same step in the same epoch gives the same permutation again. */
#define SALT_STEPS 12
static void body_bucket_salt(peer_arg *pa, starling_comm *c)
{
    float x = (float)starling_comm_rank(c), out, all[MAXP], ref, got[MAXP], first = 0;
    int n = starling_comm_size(c), changed = 0, rc;
    starling_aggregator *agg;
    char err[256];
    assert_int_equal(starling_aggregator_create(&agg, "bucket:4+median", NULL, 0), STARLING_OK);
    for (uint64_t step = 0; step <= SALT_STEPS && !pa->fail; step++) {
        uint64_t at = step < SALT_STEPS ? step : 0; /* the last call repeats step 0 */
        starling_state_set_step(c, at);
        rc = starling_robust_allreduce(c, &x, &out, 1, agg, 0, NULL);
        CHECK(pa, rc == STARLING_OK, "step %llu: %s", (unsigned long long)at,
              starling_strerror(rc));
        rc = starling_allgather(c, &x, all, 1, STARLING_F32, NULL);
        CHECK(pa, rc == STARLING_OK, "reference all-gather: %s", starling_strerror(rc));
        rc = starling__aggregate_salted(agg, all, (size_t)n, 1, 0,
                                        starling__agg_salt(starling_comm_epoch(c), 0, at), &ref,
                                        err, sizeof err);
        CHECK(pa, rc == STARLING_OK && ref == out, "step %llu: %g, reference %g (%.120s)",
              (unsigned long long)at, (double)out, (double)ref, err);
        CHECK(pa, out == 1.25f || out == 1.625f || out == 2.0f || out == 2.375f || out == 2.75f,
              "step %llu: %g is no (10 + 3a)/8", (unsigned long long)at, (double)out);
        rc = starling_allgather(c, &out, got, 1, STARLING_F32, NULL);
        for (int r = 0; r < n && rc == STARLING_OK; r++)
            CHECK(pa, got[r] == out, "step %llu: rank %d holds %g, this one %g",
                  (unsigned long long)at, r, (double)got[r], (double)out);
        if (step == 0)
            first = out;
        else if (step < SALT_STEPS)
            changed |= out != first;
        else
            CHECK(pa, out == first, "step 0 again: %g, first time %g", (double)out, (double)first);
    }
    CHECK(pa, changed, "the same lone member at %d steps: the salt does not vary", SALT_STEPS);
    starling_aggregator_destroy(agg);
}

static void test_bucket_salt(void **s)
{
    (void)s;
    run_group(5, body_bucket_salt, NULL);
}

/* n <= 2f: refused on every member, with the rule's message, before any byte moves; the
 * epoch is not broken by it (a later collective works). */
static void body_refused(peer_arg *pa, starling_comm *c)
{
    float x[4] = {1, 2, 3, 4}, out[4], one = 1.0f, sum = 0.0f;
    starling_aggregator *agg;
    int rc;
    assert_int_equal(starling_aggregator_create(&agg, "median", NULL, 0), STARLING_OK);
    rc = starling_robust_allreduce(c, x, out, 4, agg, 2, NULL);
    CHECK(pa, rc == STARLING_E_INVALID, "n=4, f=2: %s", starling_strerror(rc));
    CHECK(pa, strstr(starling_comm_errmsg(c), "n > 2f") != NULL, "message: %s",
          starling_comm_errmsg(c));
    rc = starling_robust_allreduce(c, x, out, 4, agg, -1, NULL);
    CHECK(pa, rc == STARLING_E_INVALID, "f=-1: %s", starling_strerror(rc));
    starling_aggregator_destroy(agg);
    /* Bucketing: the requirement on ceil(4/2) = 2 buckets, f = 1. */
    assert_int_equal(starling_aggregator_create(&agg, "bucket:2+median", NULL, 0), STARLING_OK);
    rc = starling_robust_allreduce(c, x, out, 4, agg, 1, NULL);
    CHECK(pa, rc == STARLING_E_INVALID, "bucket:2, n=4, f=1: %s", starling_strerror(rc));
    CHECK(pa, strstr(starling_comm_errmsg(c), "counting buckets") != NULL, "message: %s",
          starling_comm_errmsg(c));
    rc = starling_allreduce(c, &one, &sum, 1, STARLING_F32, STARLING_SUM, NULL);
    CHECK(pa, rc == STARLING_OK && sum == 4.0f, "a later all-reduce: %s, %g",
          starling_strerror(rc), sum);
    starling_aggregator_destroy(agg);
}

static void test_refused(void **s)
{
    (void)s;
    run_group(4, body_refused, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_median_5),
        cmocka_unit_test(test_krum_bf16_6),
        cmocka_unit_test(test_nnm_trimmed_7),
        cmocka_unit_test(test_bucket_median_5),
        cmocka_unit_test(test_bucket_salt),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
