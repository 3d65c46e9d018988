/* Robust aggregators (src/agg, docs/aggregation.md): hand-computed small cases for every
 * rule with the arithmetic written out, then properties on seeded random inputs:
 * permutation invariance, output inside the honest range, boundedness against rows at
 * 1e30, NaN/Inf rows dropped and counted against f, requirement and spec refusals, and
 * failed allocations at every point. Bucketing ("bucket:S+"): hand-computed cases, its
 * permutation (fixed by seed and salt, varying with them), what stays invariant under a
 * reordering of the rows and what does not, and the same properties as the rules. */
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
#include "data/prng.h"
#include "starling.h"
#include "util/alloc.h"

#define COUNT_OF(x) (sizeof(x) / sizeof((x)[0]))

/* ---------------------------------------------------------------- helpers */

static starling_aggregator *make(const char *spec)
{
    starling_aggregator *a = NULL;
    char err[256];
    int rc = starling_aggregator_create(&a, spec, err, sizeof err);
    if (rc != STARLING_OK)
        fail_msg("spec '%s' refused: %s", spec, err);
    return a;
}

/* Runs `spec` and returns the code; the message goes to err. */
static int run(const char *spec, const float *v, size_t n, size_t d, int f, float *out, char *err,
               size_t errlen)
{
    starling_aggregator *a = make(spec);
    int rc = starling_aggregate(a, v, n, d, f, out, err, errlen);
    starling_aggregator_destroy(a);
    return rc;
}

static void run_ok(const char *spec, const float *v, size_t n, size_t d, int f, float *out)
{
    char err[256];
    int rc = run(spec, v, n, d, f, out, err, sizeof err);
    if (rc != STARLING_OK)
        fail_msg("%s n=%zu d=%zu f=%d: %d %s", spec, n, d, f, rc, err);
}

static void expect_near(const char *what, const float *got, const double *want, size_t d,
                        double tol)
{
    size_t j;
    for (j = 0; j < d; j++)
        if (!(fabs((double)got[j] - want[j]) <= tol))
            fail_msg("%s: out[%zu] = %.9g, want %.9g (tol %g)", what, j, (double)got[j], want[j],
                     tol);
}

static uint64_t rng_state;
static double urand(void) /* [0, 1) */
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) * (1.0 / 9007199254740992.0);
}

/* Honest rows: a shared centre in [-0.5, 0.5] plus noise in [-0.5, 0.5], so every value
 * lies in [-1, 1] and the rows share a direction (as gradients of one model do). */
static void honest_rows(float *v, size_t n, size_t d, uint64_t seed)
{
    size_t i, j;
    float *c = malloc(d * sizeof *c);
    rng_state = seed;
    for (j = 0; j < d; j++)
        c[j] = (float)(urand() - 0.5);
    for (i = 0; i < n; i++)
        for (j = 0; j < d; j++)
            v[i * d + j] = c[j] + (float)(urand() - 0.5);
    free(c);
}

static const char *const ALL_SPECS[] = {"mean",
                                        "median",
                                        "trimmed_mean",
                                        "krum",
                                        "multikrum",
                                        "multikrum:m=3",
                                        "geomed",
                                        "cclip",
                                        "flag",
                                        "flag:r=2,iters=8",
                                        "nnm+mean",
                                        "nnm+median",
                                        "nnm+trimmed_mean",
                                        "nnm+krum",
                                        "nnm+multikrum",
                                        "nnm+geomed",
                                        "nnm+cclip",
                                        "nnm+flag"};

/* Robust ones: not the plain mean, nor nnm+mean (mixing shrinks an outlier by n - f at
 * most, so a mean of mixed rows is still pulled to ~1e29; NNM is meant to precede a
 * robust rule). */
static const char *const ROBUST_SPECS[] = {
    "median",           "trimmed_mean", "krum",          "multikrum",        "multikrum:m=3",
    "geomed",           "cclip",        "flag",          "flag:r=2,iters=8", "nnm+median",
    "nnm+trimmed_mean", "nnm+krum",     "nnm+multikrum", "nnm+geomed",       "nnm+cclip",
    "nnm+flag"};

/* Bucketing before robust rules; with n = 10, f = 2 and S = 2 the rules see 5 bucket
 * means, of which at most 2 are spoiled (5 > 2f). Not permutation invariant (the buckets
 * depend on where each row sits), so kept out of ALL_SPECS. */
static const char *const BUCKET_SPECS[] = {"bucket:2+median", "bucket:2:seed=9+trimmed_mean",
                                           "bucket:2+geomed", "bucket:2+cclip",
                                           "bucket:2+nnm+median", "bucket:3+mean"};
/* The robust ones among them (every one but the mean). */
#define BUCKET_ROBUST 5

/* ---------------------------------------------------------------- hand-computed cases */

/* n = 5, d = 2, rows (1,10) (2,20) (3,30) (4,40) (100,-50).
 *   mean:   x (1+2+3+4+100)/5 = 110/5 = 22;  y (10+20+30+40-50)/5 = 50/5 = 10
 *   median: x sorted 1 2 [3] 4 100 -> 3;      y sorted -50 10 [20] 30 40 -> 20
 *   median of the first 4 rows (even n): x (2+3)/2 = 2.5; y (20+30)/2 = 25 */
static const float FIVE[] = {1, 10, 2, 20, 3, 30, 4, 40, 100, -50};

static void test_mean_hand(void **state)
{
    float out[2];
    const double want[2] = {22, 10};
    (void)state;
    run_ok("mean", FIVE, 5, 2, 0, out);
    expect_near("mean", out, want, 2, 0);
    run_ok("mean", FIVE, 5, 2, 1, out); /* f only matters for non-finite rows */
    expect_near("mean f=1", out, want, 2, 0);
}

static void test_median_hand(void **state)
{
    float out[2];
    const double want[2] = {3, 20}, want4[2] = {2.5, 25};
    (void)state;
    run_ok("median", FIVE, 5, 2, 1, out);
    expect_near("median", out, want, 2, 0);
    run_ok("median", FIVE, 4, 2, 1, out);
    expect_near("median even n", out, want4, 2, 0);
}

/* Signed zeros: the sort is by a total order with -0 < +0, so {-0, +0, +0} has median +0
 * in every order (a float comparison would keep the input order of -0 and +0 and give -0
 * for some orders). */
static void test_median_signed_zero(void **state)
{
    const float orders[3][3] = {{-0.0f, 0.0f, 0.0f}, {0.0f, -0.0f, 0.0f}, {0.0f, 0.0f, -0.0f}};
    float out[1];
    int k;
    (void)state;
    for (k = 0; k < 3; k++) {
        run_ok("median", orders[k], 3, 1, 1, out);
        assert_true(out[0] == 0.0f && !signbit(out[0]));
        run_ok("trimmed_mean", orders[k], 3, 1, 1, out);
        assert_true(out[0] == 0.0f && !signbit(out[0]));
    }
}

/* n = 5, d = 2, f = 1, x = 1 2 4 8 16, y = 5 -5 0 3 -1
 *   x: drop 1 and 16 -> (2+4+8)/3 = 14/3
 *   y: sorted -5 -1 0 3 5, drop -5 and 5 -> (-1+0+3)/3 = 2/3
 * f = 2: only the middle value: x 4, y 0. */
static void test_trimmed_hand(void **state)
{
    const float v[] = {1, 5, 2, -5, 4, 0, 8, 3, 16, -1};
    float out[2];
    const double want[2] = {(float)(14.0 / 3), (float)(2.0 / 3)}, want2[2] = {4, 0};
    (void)state;
    run_ok("trimmed_mean", v, 5, 2, 1, out);
    expect_near("trimmed f=1", out, want, 2, 0);
    run_ok("trimmed_mean", v, 5, 2, 2, out);
    expect_near("trimmed f=2", out, want2, 2, 0);
}

/* n = 5, d = 2 (y = 0), f = 1, x = 0 1 3 7 50. Krum sums the n - f - 2 = 2 smallest
 * squared distances to the others:
 *   x=0:  1, 9, 49, 2500         -> 1 + 9    = 10
 *   x=1:  1, 4, 36, 2401         -> 1 + 4    = 5     best
 *   x=3:  9, 4, 16, 2209         -> 4 + 9    = 13
 *   x=7:  49, 36, 16, 1849       -> 16 + 36  = 52
 *   x=50: 2500, 2401, 2209, 1849 -> 1849 + 2209 = 4058
 * krum -> row x=1. multikrum m=3: rows 1, 0, 3 -> (1+0+3)/3 = 4/3;
 * multikrum default m = n - f = 4: adds x=7 -> (1+0+3+7)/4 = 11/4 = 2.75. */
static const float LINE[] = {0, 0, 1, 0, 3, 0, 7, 0, 50, 0};

static void test_krum_hand(void **state)
{
    float out[2];
    const double want[2] = {1, 0}, want3[2] = {(float)(4.0 / 3), 0}, want4[2] = {2.75, 0};
    (void)state;
    run_ok("krum", LINE, 5, 2, 1, out);
    expect_near("krum", out, want, 2, 0);
    run_ok("multikrum:m=3", LINE, 5, 2, 1, out);
    expect_near("multikrum m=3", out, want3, 2, 0);
    run_ok("multikrum", LINE, 5, 2, 1, out);
    expect_near("multikrum default", out, want4, 2, 0);
    run_ok("multikrum:m=1", LINE, 5, 2, 1, out);
    expect_near("multikrum m=1 is krum", out, want, 2, 0);
}

/* d = 1, f = 1, x = -1 1 -3 3 100. Scores (2 nearest): -1: 4 + 4 = 8; 1: 4 + 4 = 8;
 * -3: 4 + 16 = 20; 3: 20; 100: big. Rows 0 and 1 tie: the lower index wins. */
static void test_krum_tie(void **state)
{
    const float a[] = {-1, 1, -3, 3, 100}, b[] = {1, -1, -3, 3, 100};
    float out[1];
    (void)state;
    run_ok("krum", a, 5, 1, 1, out);
    assert_true(out[0] == -1.0f);
    run_ok("krum", b, 5, 1, 1, out);
    assert_true(out[0] == 1.0f);
}

/* Equilateral triangle (0,0) (2,0) (1,sqrt 3), n = 3, f = 1: the geometric median is the
 * Fermat point, which for an equilateral triangle is the centroid
 * ((0+2+1)/3, (0+0+sqrt 3)/3) = (1, 0.57735027). Start: coordinate median (1, 0). */
static void test_geomed_hand(void **state)
{
    const float v[] = {0, 0, 2, 0, 1, 1.7320508f};
    float out[2];
    const double want[2] = {1, 1.7320508 / 3};
    (void)state;
    run_ok("geomed:iters=1000,tol=1e-12", v, 3, 2, 1, out);
    expect_near("geomed", out, want, 2, 1e-5);
    /* One step only from (1, 0): distances 1, 1, 1.7320508; weights 1, 1, 0.57735;
     * y = 0.57735 * 1.7320508 / (2.57735) = 1 / 2.57735 = 0.38800. */
    run_ok("geomed:iters=1", v, 3, 2, 1, out);
    {
        const double w1[2] = {1, 1.0 / (2.0 + 1.0 / 1.7320508)};
        expect_near("geomed one step", out, w1, 2, 1e-6);
    }
}

/* d = 1, n = 3, f = 1, x = 0 0.5 10, tau = 1. Centre starts at the median 0.5.
 *  iter 1: distances 0.5 0 9.5; clip factors 1 1 1/9.5;
 *          v = 0.5 + ((0-0.5) + 0 + 9.5/9.5) / 3 = 0.5 + 0.5/3 = 2/3
 *  iter 2: distances 2/3 1/6 28/3; factors 1 1 3/28;
 *          v = 2/3 + ((-2/3) + (-1/6) + 1) / 3 = 2/3 + 1/18 = 13/18 */
static void test_cclip_hand(void **state)
{
    const float v[] = {0, 0.5f, 10};
    float out[1];
    const double one[1] = {2.0 / 3}, two[1] = {13.0 / 18};
    (void)state;
    run_ok("cclip:tau=1,iters=1", v, 3, 1, 1, out);
    expect_near("cclip 1 iter", out, one, 1, 1e-7);
    run_ok("cclip:tau=1,iters=2", v, 3, 1, 1, out);
    expect_near("cclip 2 iters", out, two, 1, 1e-7);
}

/* n = 5, f = 1, r = 1: rows (1,0) (2,0) (3,0) (4,0) (0,100). Unit directions: four e1, one
 * e2, so the top direction of sum w_i xh_i xh_i^T is e1 (eigenvalue 4 against 1);
 * residuals 0 0 0 0 1; the n - f = 4 best rows are 0..3. Norms 1 2 3 4 100, median 3, so
 * row 3 is clipped to norm 3. Projections on e1: 1 2 3 3 -> mean 9/4 = 2.25; y = 0. */
static void test_flag_hand(void **state)
{
    const float v[] = {1, 0, 2, 0, 3, 0, 4, 0, 0, 100};
    float out[2];
    const double want[2] = {2.25, 0};
    (void)state;
    run_ok("flag", v, 5, 2, 1, out);
    expect_near("flag", out, want, 2, 1e-6);
}

/* nnm+mean on x = 0 1 3 7 50 (d = 1), f = 1: each row is replaced by the mean of its
 * n - f = 4 nearest (itself included):
 *   0, 1, 3, 7 all pick {0, 1, 3, 7} -> 11/4 = 2.75;  50 picks {50, 7, 3, 1} -> 61/4 = 15.25
 *   mean: (4 * 2.75 + 15.25) / 5 = 26.25 / 5 = 5.25;  nnm+median: 2.75 */
static void test_nnm_hand(void **state)
{
    const float v[] = {0, 1, 3, 7, 50};
    float out[1];
    const double mean[1] = {5.25}, med[1] = {2.75};
    (void)state;
    run_ok("nnm+mean", v, 5, 1, 1, out);
    expect_near("nnm+mean", out, mean, 1, 0);
    run_ok("nnm+median", v, 5, 1, 1, out);
    expect_near("nnm+median", out, med, 1, 0);
}

/* Sizes of the property tests (and of the bucketing ones on random rows). */
#define PN 10
#define PD 37
#define PF 2

/* ---------------------------------------------------------------- bucketing */

/* The documented permutation: Fisher-Yates from the top over the (finite) rows, PRNG
 * stream derive(seed, salt), as data/prng.h. perm[k] = the row at shuffled position k. */
static void bucket_perm(size_t *perm, size_t n, uint64_t seed, uint64_t salt)
{
    starling__prng r;
    starling__prng_seed(&r, starling__prng_derive(seed, salt));
    for (size_t i = 0; i < n; i++)
        perm[i] = i;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)starling__prng_below(&r, (uint64_t)i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* One bucket (S >= n) is the mean of all rows whatever the order; S = 1 leaves the rows
 * as they are, so an order-free rule gives its own bytes.
 *   bucket:5+mean on FIVE:   one bucket of 5 = mean (22, 10)
 *   bucket:9+median:         one bucket of 5 (S > n), its mean is the output: (22, 10)
 *   bucket:1+median:         5 buckets of 1 = the rows; median (3, 20) */
static void test_bucket_trivial(void **state)
{
    float out[2];
    const double mean[2] = {22, 10}, med[2] = {3, 20};
    (void)state;
    run_ok("bucket:5+mean", FIVE, 5, 2, 0, out);
    expect_near("bucket:5+mean", out, mean, 2, 0);
    run_ok("bucket:9:seed=4+median", FIVE, 5, 2, 0, out);
    expect_near("bucket:9+median", out, mean, 2, 0);
    run_ok("bucket:1+median", FIVE, 5, 2, 2, out);
    expect_near("bucket:1+median", out, med, 2, 0);
}

/* Rows 3, 6, 9, 12 (d = 1) in buckets of 3: one bucket of three rows and one of the row
 * left alone (the last in shuffled order); the median of two bucket means is their
 * average. By the lone row a:
 *   a = 3:  ((6 + 9 + 12)/3 + 3)/2 = (9 + 3)/2 = 6
 *   a = 6:  ((3 + 9 + 12)/3 + 6)/2 = (8 + 6)/2 = 7
 *   a = 9:  ((3 + 6 + 12)/3 + 9)/2 = (7 + 9)/2 = 8
 *   a = 12: ((3 + 6 + 9)/3 + 12)/2 = (6 + 12)/2 = 9
 * So the output names the lone row: it must be the one the documented permutation puts
 * last, for every seed and salt, and over seeds (or salts) all four must come up. */
static void test_bucket_hand(void **state)
{
    const float v[4] = {3, 6, 9, 12};
    starling_aggregator *a;
    int seen_seed[4] = {0}, seen_salt[4] = {0};
    char spec[64], err[256];
    float out[1];
    size_t perm[4];
    (void)state;
    for (uint64_t seed = 0; seed < 40; seed++) {
        snprintf(spec, sizeof spec, "bucket:3:seed=%llu+median", (unsigned long long)seed);
        a = make(spec);
        for (uint64_t salt = 0; salt < 40; salt += 13) {
            double want;
            assert_int_equal(starling__aggregate_salted(a, v, 4, 1, 0, salt, out, err, sizeof err),
                             STARLING_OK);
            bucket_perm(perm, 4, seed, salt);
            want = (double)(6 + perm[3]);
            if ((double)out[0] != want)
                fail_msg("seed %llu salt %llu: got %g, want %g (row %zu alone)",
                         (unsigned long long)seed, (unsigned long long)salt, (double)out[0], want,
                         perm[3]);
            if (salt == 0)
                seen_seed[perm[3]] = 1;
            if (seed == 0)
                seen_salt[perm[3]] = 1;
        }
        /* starling_aggregate is salt 0. */
        assert_int_equal(starling_aggregate(a, v, 4, 1, 0, out, err, sizeof err), STARLING_OK);
        bucket_perm(perm, 4, seed, 0);
        assert_true((double)out[0] == (double)(6 + perm[3]));
        starling_aggregator_destroy(a);
    }
    assert_true(seen_seed[0] && seen_seed[1] && seen_seed[2] && seen_seed[3]);
    a = make("bucket:3+median");
    for (uint64_t salt = 0; salt < 40; salt++) {
        assert_int_equal(starling__aggregate_salted(a, v, 4, 1, 0, salt, out, err, sizeof err),
                         STARLING_OK);
        seen_salt[(size_t)out[0] - 6] = 1;
    }
    starling_aggregator_destroy(a);
    assert_true(seen_salt[0] && seen_salt[1] && seen_salt[2] && seen_salt[3]);
}

/* What holds under a reordering of the rows with bucketing: not the output for a fixed
 * seed (the same shuffle puts other rows together; shown on the case above), but the set
 * of outputs over seeds, since every shuffle is equally likely from any order: for rows
 * 3, 6, 9, 12 and 12, 9, 6, 3, seeds 0..39 reach the same four values {6, 7, 8, 9}. And
 * with S = 1 an order-free rule stays bit-exact. */
static void test_bucket_permutation(void **state)
{
    const float v[4] = {3, 6, 9, 12}, w[4] = {12, 9, 6, 3};
    int seen_v[4] = {0}, seen_w[4] = {0}, differ = 0;
    float a[PD], b[PD], x[PN * PD], p[PN * PD];
    char spec[64];
    (void)state;
    for (uint64_t seed = 0; seed < 40; seed++) {
        float ov[1], ow[1];
        snprintf(spec, sizeof spec, "bucket:3:seed=%llu+median", (unsigned long long)seed);
        run_ok(spec, v, 4, 1, 0, ov);
        run_ok(spec, w, 4, 1, 0, ow);
        seen_v[(size_t)ov[0] - 6] = 1;
        seen_w[(size_t)ow[0] - 6] = 1;
        differ += ov[0] != ow[0];
    }
    assert_memory_equal(seen_v, seen_w, sizeof seen_v);
    assert_true(seen_v[0] && seen_v[1] && seen_v[2] && seen_v[3]);
    assert_true(differ > 0); /* a fixed seed is not order-free */
    honest_rows(x, PN, PD, 700);
    for (size_t i = 0; i < PN; i++) /* reversed */
        memcpy(p + i * PD, x + (PN - 1 - i) * PD, PD * sizeof(float));
    run_ok("bucket:1+median", x, PN, PD, PF, a);
    run_ok("bucket:1+median", p, PN, PD, PF, b);
    assert_memory_equal(a, b, sizeof a);
    run_ok("median", x, PN, PD, PF, b);
    assert_memory_equal(a, b, sizeof a);
}

/* ---------------------------------------------------------------- properties */

/* Bit-exact by construction: sorted columns (median, trimmed mean), a copied row (krum),
 * rows summed in score order (multikrum), nnm's neighbours summed in distance order (no
 * ties on random data). The others sum in row order: equal to rounding. */
static int order_free(const char *spec)
{
    static const char *const exact[] = {"median",           "trimmed_mean",  "krum",
                                        "multikrum",        "multikrum:m=3", "nnm+median",
                                        "nnm+trimmed_mean", "nnm+krum",      "nnm+multikrum"};
    size_t i;
    for (i = 0; i < COUNT_OF(exact); i++)
        if (strcmp(spec, exact[i]) == 0)
            return 1;
    return 0;
}

static void test_permutation_invariance(void **state)
{
    float v[PN * PD], p[PN * PD], a[PD], b[PD];
    size_t perm[PN], i, s, j;
    int trial;
    (void)state;
    for (trial = 0; trial < 5; trial++) {
        honest_rows(v, PN, PD, 100 + (uint64_t)trial);
        for (i = 0; i < PN; i++)
            perm[i] = i;
        for (i = PN - 1; i > 0; i--) {
            size_t k = (size_t)(urand() * (double)(i + 1)), t = perm[i];
            perm[i] = perm[k], perm[k] = t;
        }
        for (i = 0; i < PN; i++)
            memcpy(p + i * PD, v + perm[i] * PD, PD * sizeof(float));
        for (s = 0; s < COUNT_OF(ALL_SPECS); s++) {
            run_ok(ALL_SPECS[s], v, PN, PD, PF, a);
            run_ok(ALL_SPECS[s], p, PN, PD, PF, b);
            if (order_free(ALL_SPECS[s])) {
                if (memcmp(a, b, sizeof a) != 0)
                    fail_msg("%s: not bit-exact under permutation (trial %d)", ALL_SPECS[s], trial);
            } else {
                for (j = 0; j < PD; j++)
                    if (!(fabs((double)a[j] - (double)b[j]) <= 1e-4))
                        fail_msg("%s: out[%zu] %.9g vs %.9g permuted", ALL_SPECS[s], j,
                                 (double)a[j], (double)b[j]);
            }
        }
    }
}

/* Byzantine rows anywhere, with arbitrary values: median and trimmed mean stay inside the
 * honest rows' range per coordinate (n > 2f). */
static void test_honest_range(void **state)
{
    static const char *const specs[] = {"median",          "trimmed_mean",
                                        "nnm+median",      "nnm+trimmed_mean",
                                        "bucket:2+median", "bucket:2+trimmed_mean",
                                        "bucket:2+nnm+median"};
    float v[PN * PD], out[PD];
    size_t s, i, j;
    int trial;
    (void)state;
    for (trial = 0; trial < 10; trial++) {
        int byz[PN] = {0};
        honest_rows(v, PN, PD, 200 + (uint64_t)trial);
        for (i = 0; i < PF; i++) {
            size_t r;
            do
                r = (size_t)(urand() * PN);
            while (byz[r]);
            byz[r] = 1;
            for (j = 0; j < PD; j++)
                v[r * PD + j] = (float)((urand() - 0.5) * 1e6);
        }
        for (s = 0; s < COUNT_OF(specs); s++) {
            run_ok(specs[s], v, PN, PD, PF, out);
            for (j = 0; j < PD; j++) {
                float lo = INFINITY, hi = -INFINITY;
                for (i = 0; i < PN; i++)
                    if (!byz[i]) {
                        lo = fminf(lo, v[i * PD + j]);
                        hi = fmaxf(hi, v[i * PD + j]);
                    }
                if (!(out[j] >= lo && out[j] <= hi))
                    fail_msg("%s trial %d: out[%zu] = %g outside honest [%g, %g]", specs[s], trial,
                             j, (double)out[j], (double)lo, (double)hi);
            }
        }
    }
}

static double norm2(const float *x, size_t d)
{
    double s = 0;
    size_t j;
    for (j = 0; j < d; j++)
        s += (double)x[j] * x[j];
    return sqrt(s);
}

/* f rows pushed to +1e30, -1e30 or alternating signs, at the front, back or middle: every
 * robust rule's output stays near the honest rows: |out| <= max honest norm + 1 (the
 * slack covers cclip's iters * tau * f / n and geomed's pull of about 1/sqrt(d) per
 * outlier), and is finite. The plain mean, for contrast, is pulled to ~2e29. */
static void test_bounded_by_honest(void **state)
{
    float v[PN * PD], out[PD];
    size_t s, i, j;
    int kind, place;
    (void)state;
    for (kind = 0; kind < 3; kind++)
        for (place = 0; place < 3; place++) {
            double hmax = 0;
            size_t first = place == 0 ? 0 : place == 1 ? PN - PF : PN / 2;
            honest_rows(v, PN, PD, 300 + (uint64_t)(kind * 3 + place));
            for (i = first; i < first + PF; i++)
                for (j = 0; j < PD; j++)
                    v[i * PD + j] = kind == 0   ? 1e30f
                                    : kind == 1 ? -1e30f
                                                : (j % 2 ? 1e30f : -1e30f);
            for (i = 0; i < PN; i++)
                if (i < first || i >= first + PF) {
                    double nn = norm2(v + i * PD, PD);
                    hmax = nn > hmax ? nn : hmax;
                }
            for (s = 0; s < COUNT_OF(ROBUST_SPECS); s++) {
                double nn;
                run_ok(ROBUST_SPECS[s], v, PN, PD, PF, out);
                nn = norm2(out, PD);
                if (!(nn <= hmax + 1.0))
                    fail_msg("%s kind %d place %d: |out| = %g, honest max %g", ROBUST_SPECS[s],
                             kind, place, nn, hmax);
            }
            for (s = 0; s < BUCKET_ROBUST; s++) {
                double nn;
                run_ok(BUCKET_SPECS[s], v, PN, PD, PF, out);
                nn = norm2(out, PD);
                if (!(nn <= hmax + 1.0))
                    fail_msg("%s kind %d place %d: |out| = %g, honest max %g", BUCKET_SPECS[s],
                             kind, place, nn, hmax);
            }
            run_ok("mean", v, PN, PD, PF, out);
            assert_true(fabs((double)out[0]) > 1e28);
        }
}

/* Rows holding NaN, +Inf or -Inf are dropped and count against f: the result equals the
 * rule run on the finite rows alone with f reduced by their number, bit for bit. */
static void test_nonfinite_rows(void **state)
{
    float v[PN * PD], clean[PN * PD], a[PD], b[PD];
    size_t s, i, j, kept = 0;
    char err[256];
    int rc;
    (void)state;
    honest_rows(v, PN, PD, 400);
    v[3 * PD + 5] = NAN;
    v[7 * PD + 0] = INFINITY;
    for (i = 0; i < PN; i++)
        if (i != 3 && i != 7)
            memcpy(clean + kept++ * PD, v + i * PD, PD * sizeof(float));
    for (s = 0; s < COUNT_OF(ALL_SPECS); s++) {
        run_ok(ALL_SPECS[s], v, PN, PD, PF, a);
        for (j = 0; j < PD; j++)
            if (!isfinite(a[j]))
                fail_msg("%s: out[%zu] not finite", ALL_SPECS[s], j);
        run_ok(ALL_SPECS[s], clean, kept, PD, 0, b);
        if (memcmp(a, b, sizeof a) != 0)
            fail_msg("%s: NaN/Inf rows not simply dropped", ALL_SPECS[s]);
    }
    /* Bucketing shuffles the finite rows only: the same buckets as for the clean rows. */
    for (s = 0; s < COUNT_OF(BUCKET_SPECS); s++) {
        run_ok(BUCKET_SPECS[s], v, PN, PD, PF, a);
        run_ok(BUCKET_SPECS[s], clean, kept, PD, 0, b);
        if (memcmp(a, b, sizeof a) != 0)
            fail_msg("%s: NaN/Inf rows not simply dropped", BUCKET_SPECS[s]);
    }
    /* A third bad row: more than f = 2. */
    v[9 * PD + 36] = -INFINITY;
    for (s = 0; s < COUNT_OF(ALL_SPECS); s++) {
        rc = run(ALL_SPECS[s], v, PN, PD, PF, a, err, sizeof err);
        assert_int_equal(rc, STARLING_E_CORRUPT);
        assert_non_null(strstr(err, "3 of 10 vectors hold NaN or Inf"));
    }
    /* f = 0 with one NaN row: refused, not averaged in. */
    rc = run("mean", v, 4, PD, 0, a, err, sizeof err);
    assert_int_equal(rc, STARLING_E_CORRUPT);
}

typedef struct req_case {
    const char *spec;
    size_t n, d;
    int f;
    const char *msg;
} req_case;

static void test_requirements(void **state)
{
    static const req_case cases[] = {
        {"median", 4, 3, 2, "median needs n > 2f (got n=4, f=2)"},
        {"trimmed_mean", 2, 3, 1, "n > 2f"},
        {"geomed", 4, 3, 2, "n > 2f"},
        {"cclip", 4, 3, 2, "n > 2f"},
        {"flag", 4, 3, 2, "n > 2f"},
        {"nnm+mean", 4, 3, 2, "nnm needs n > 2f"},
        {"krum", 6, 3, 2, "krum needs n > 2f + 2 (got n=6, f=2)"},
        {"multikrum", 4, 3, 1, "multikrum needs n > 2f + 2"},
        {"multikrum:m=9", 10, 3, 2, "m=9 must be at most n - f = 8"},
        {"flag:r=7", 10, 3, 2, "r=7 must be at most n - 2f = 6"},
        {"mean", 2, 3, 2, "mean needs n > f"},
        {"median", 5, 3, -1, "f must be >= 0"},
        {"mean", 0, 3, 0, "at least one vector"},
        {"mean", 3, 0, 0, "at least one vector"},
        /* Bucketing: the rule's requirement on the bucket count ceil(n/S). */
        {"bucket:2+median", 8, 3, 2,
         "bucket:2:seed=0+median needs n > 2f (got n=4, f=2), counting buckets: n=8 vectors "
         "in buckets of 2 make 4"},
        {"bucket:3+krum", 10, 3, 1, "krum needs n > 2f + 2 (got n=4, f=1), counting buckets"},
        {"bucket:2+nnm+mean", 6, 3, 2, "nnm needs n > 2f (got n=3, f=2)"},
        {"bucket:2+multikrum:m=6", 14, 3, 2, "m=6 must be at most n - f = 5"},
        {"bucket:20+mean", 10, 3, 1, "mean needs n > f (got n=1, f=1)"},
    };
    float v[48] = {0}, out[3]; /* up to 16 rows of 3 */
    char err[256];
    size_t c;
    (void)state;
    for (c = 0; c < COUNT_OF(cases); c++) {
        int rc = run(cases[c].spec, v, cases[c].n, cases[c].d, cases[c].f, out, err, sizeof err);
        if (rc != STARLING_E_INVALID || !strstr(err, cases[c].msg))
            fail_msg("%s n=%zu f=%d: rc %d, message '%s', want '%s'", cases[c].spec, cases[c].n,
                     cases[c].f, rc, err, cases[c].msg);
    }
    /* NULLs, and the boundary cases that are allowed. */
    {
        starling_aggregator *a = make("median");
        assert_int_equal(starling_aggregate(NULL, v, 3, 3, 0, out, err, sizeof err),
                         STARLING_E_INVALID);
        assert_int_equal(starling_aggregate(a, NULL, 3, 3, 0, out, err, sizeof err),
                         STARLING_E_INVALID);
        assert_int_equal(starling_aggregate(a, v, 3, 3, 0, NULL, NULL, 0), STARLING_E_INVALID);
        assert_int_equal(starling_aggregate(a, v, 3, 3, 1, out, NULL, 0), STARLING_OK);
        assert_int_equal(starling_aggregate(a, v, 1, 3, 0, out, err, sizeof err), STARLING_OK);
        starling_aggregator_destroy(a);
    }
    run_ok("krum", v, 5, 3, 1, out);
    run_ok("multikrum:m=8", v, 10, 3, 2, out);
    run_ok("bucket:2+median", v, 10, 3, 2, out); /* 5 buckets > 2f */
    run_ok("bucket:3+median", v, 10, 3, 1, out); /* 4 buckets (3, 3, 3, 1) > 2f */
    run_ok("bucket:2+multikrum:m=5", v, 16, 3, 2, out); /* 8 buckets: 8 > 6, m <= 6 */
    run_ok("flag:r=6", v, 10, 3, 2, out); /* all-zero rows: output zero */
    assert_true(out[0] == 0.0f && out[2] == 0.0f);
}

static void test_spec_accept(void **state)
{
    static const char *const cases[][2] = {
        {"mean", "mean"},
        {"median", "median"},
        {"trimmed_mean", "trimmed_mean"},
        {"krum", "krum"},
        {"multikrum", "multikrum"},
        {"multikrum:m=3", "multikrum:m=3"},
        {"geomed", "geomed:iters=100,tol=1e-06"},
        {"geomed:tol=1e-8,iters=5", "geomed:iters=5,tol=1e-08"},
        {"geomed:tol=0.5", "geomed:iters=100,tol=0.5"},
        {"cclip", "cclip:tau=1,iters=3"},
        {"cclip:iters=10,tau=2.5", "cclip:tau=2.5,iters=10"},
        {"cclip:tau=1e+2", "cclip:tau=100,iters=3"},
        {"flag", "flag:r=1,iters=5"},
        {"flag:r=3", "flag:r=3,iters=5"},
        {"nnm+krum", "nnm+krum"},
        {"nnm+geomed:iters=7", "nnm+geomed:iters=7,tol=1e-06"},
        {"bucket:2+median", "bucket:2:seed=0+median"},
        {"bucket:1:seed=0+mean", "bucket:1:seed=0+mean"},
        {"bucket:3:seed=17+nnm+cclip:tau=0.5", "bucket:3:seed=17+nnm+cclip:tau=0.5,iters=3"},
        {"bucket:1000000:seed=999999999+multikrum:m=2",
         "bucket:1000000:seed=999999999+multikrum:m=2"},
    };
    size_t c;
    (void)state;
    for (c = 0; c < COUNT_OF(cases); c++) {
        starling_aggregator *a = make(cases[c][0]), *b;
        assert_string_equal(starling_aggregator_spec(a), cases[c][1]);
        b = make(starling_aggregator_spec(a)); /* the canonical form parses to itself */
        assert_string_equal(starling_aggregator_spec(b), cases[c][1]);
        starling_aggregator_destroy(a);
        starling_aggregator_destroy(b);
    }
    starling_aggregator_destroy(NULL);
    assert_null(starling_aggregator_spec(NULL));
}

static void test_spec_refuse(void **state)
{
    static const char *const cases[][2] = {
        {"", "empty aggregator spec"},
        {"avg", "unknown aggregator 'avg'"},
        {"MEDIAN", "unknown aggregator"},
        {"nnm", "nnm needs an aggregator"},
        {"nnm+", "unknown aggregator ''"},
        {"krum+nnm", "unexpected '+nnm'"},
        {"median:k=1", "unknown parameter 'k' for median"},
        {"krum:m=2", "unknown parameter 'm' for krum"},
        {"geomed:tau=1", "unknown parameter 'tau' for geomed"},
        {"geomed:iters", "not key=value"},
        {"geomed:iters=5,", "empty parameter"},
        {"geomed:iters=0", "iters must be an integer in 1..100000"},
        {"geomed:iters=-3", "iters must be"},
        {"geomed:tol=0", "positive"},
        {"geomed:tol=-1", "positive"},
        {"geomed:tol=nan", "positive"},
        {"geomed:tol=inf", "positive"},
        {"geomed:tol=1e999", "positive finite"},
        {"geomed:tol=2", "below 1"},
        {"cclip:tau=1,tau=2", "given twice"},
        {"cclip:tau=0x10", "positive"},
        {"multikrum:m=0", "multikrum m must be an integer in 1..1000000"},
        {"flag:r=x", "flag r must be"},
        {"flag:r=1:iters=2", "flag r must be"},
        {"bucket", "bucket needs a size"},
        {"bucket+median", "bucket needs a size"},
        {"bucket:0+median", "bucket size must be an integer in 1..1000000, got '0'"},
        {"bucket:1000001+median", "bucket size must be an integer in 1..1000000"},
        {"bucket:x+median", "bucket size must be"},
        {"bucket:+median", "bucket size must be"},
        {"bucket:2", "bucket:2 needs an aggregator after it"},
        {"bucket:2:seed=3", "needs an aggregator after it"},
        {"bucket:2+", "unknown aggregator ''"},
        {"bucket:2:seed=-1+median", "bucket seed must be an integer in 0..999999999"},
        {"bucket:2:seed=1000000000+median", "bucket seed must be"},
        {"bucket:2:seed=x+median", "bucket seed must be"},
        {"bucket:2:seed=+median", "bucket seed must be"},
        {"bucket:2:seed=1:seed=2+median", "bucket seed must be"},
        {"bucket:2:s=1+median", "unknown parameter 's' for bucket (expected: seed)"},
        {"nnm+bucket:2+median", "bucket:S must come first"},
        {"bucket:2+bucket:2+median", "bucket:S must come first"},
        {"median+bucket:2", "unexpected '+bucket:2'"},
    };
    char err[256];
    size_t c;
    (void)state;
    for (c = 0; c < COUNT_OF(cases); c++) {
        starling_aggregator *a = (starling_aggregator *)&err; /* must be reset to NULL */
        int rc = starling_aggregator_create(&a, cases[c][0], err, sizeof err);
        if (rc != STARLING_E_INVALID || a != NULL || !strstr(err, cases[c][1]))
            fail_msg("'%s': rc %d, message '%s', want '%s'", cases[c][0], rc, err, cases[c][1]);
    }
    {
        starling_aggregator *a = NULL;
        assert_int_equal(starling_aggregator_create(&a, NULL, err, sizeof err), STARLING_E_INVALID);
        assert_non_null(strstr(err, "NULL"));
        assert_int_equal(starling_aggregator_create(NULL, "mean", err, sizeof err),
                         STARLING_E_INVALID);
        assert_int_equal(starling_aggregator_create(&a, "bogus", NULL, 0), STARLING_E_INVALID);
    }
}

/* Every allocation, failed in turn: the call returns STARLING_E_NOMEM (with a message) or
 * succeeds, never crashes or leaks (the ASan and valgrind runs check the leaks). */
static void test_nomem(void **state)
{
    float v[PN * PD], out[PD];
    char err[256];
    size_t s;
    long k;
    (void)state;
    honest_rows(v, PN, PD, 500);
    for (s = 0; s < COUNT_OF(ALL_SPECS); s++) {
        starling_aggregator *a = make(ALL_SPECS[s]);
        for (k = 1; k <= 8; k++) {
            int rc;
            starling__alloc_fail_after(k);
            rc = starling_aggregate(a, v, PN, PD, PF, out, err, sizeof err);
            starling__alloc_fail_after(0);
            if (rc != STARLING_OK && (rc != STARLING_E_NOMEM || !strstr(err, "out of memory")))
                fail_msg("%s fail_after %ld: rc %d '%s'", ALL_SPECS[s], k, rc, err);
        }
        starling_aggregator_destroy(a);
        if (s < COUNT_OF(BUCKET_SPECS)) {
            a = make(BUCKET_SPECS[s]);
            for (k = 1; k <= 8; k++) {
                int rc;
                starling__alloc_fail_after(k);
                rc = starling_aggregate(a, v, PN, PD, PF, out, err, sizeof err);
                starling__alloc_fail_after(0);
                if (rc != STARLING_OK && (rc != STARLING_E_NOMEM || !strstr(err, "out of memory")))
                    fail_msg("%s fail_after %ld: rc %d '%s'", BUCKET_SPECS[s], k, rc, err);
            }
            starling_aggregator_destroy(a);
        }
        {
            starling_aggregator *b = NULL;
            starling__alloc_fail_after(1);
            assert_int_equal(starling_aggregator_create(&b, "median", err, sizeof err),
                             STARLING_E_NOMEM);
            starling__alloc_fail_after(0);
            assert_null(b);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mean_hand),
        cmocka_unit_test(test_median_hand),
        cmocka_unit_test(test_median_signed_zero),
        cmocka_unit_test(test_trimmed_hand),
        cmocka_unit_test(test_krum_hand),
        cmocka_unit_test(test_krum_tie),
        cmocka_unit_test(test_geomed_hand),
        cmocka_unit_test(test_cclip_hand),
        cmocka_unit_test(test_flag_hand),
        cmocka_unit_test(test_nnm_hand),
        cmocka_unit_test(test_bucket_trivial),
        cmocka_unit_test(test_bucket_hand),
        cmocka_unit_test(test_bucket_permutation),
        cmocka_unit_test(test_permutation_invariance),
        cmocka_unit_test(test_honest_range),
        cmocka_unit_test(test_bounded_by_honest),
        cmocka_unit_test(test_nonfinite_rows),
        cmocka_unit_test(test_requirements),
        cmocka_unit_test(test_spec_accept),
        cmocka_unit_test(test_spec_refuse),
        cmocka_unit_test(test_nomem),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
