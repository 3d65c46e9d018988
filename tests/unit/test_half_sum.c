/* The f16/bf16 all-reduce's numerics, as starling.h states them: the ring rounds the
 * partial sum to the dtype at every hop, so an n-member sum is rounded n - 1 times (not
 * once), each time with relative error at most u (u = 2^-11 + 2^-23 for f16, 2^-8 + 2^-23
 * for bf16: the dtype's unit roundoff, plus the f32 rounding in between) and an absolute
 * error of at most half the dtype's smallest subnormal. So for every element
 *   |result - exact| <= ((1 + u)^(n-1) - 1) * sum_i |x_i| + (n - 1) * eta.
 * Checked here on real groups (5 members, random values of mixed signs and magnitudes),
 * with the exact sum in double; plus the documented intermediate overflow of f16. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "group_harness.h"
#include "kernels/kernels.h"

#define N 5
#define COUNT 20011

typedef struct half_case {
    starling_dtype dtype;
    double u, eta;
    /* filled by the peers */
    int bad[MAXP], one_rounding_differs[MAXP];
} half_case;

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

/* Member m's element i: a value of mixed sign and magnitude, representable in the dtype. */
static uint16_t value(starling_dtype dt, int m, size_t i)
{
    uint64_t r = mix((uint64_t)m << 40 ^ i);
    double mag = ldexp(1.0 + (double)(r & 0xffff) / 65536.0, (int)((r >> 16) % 24) - 12);
    float v = (float)((r >> 40) & 1 ? -mag : mag);
    return dt == STARLING_F16 ? starling__f32_to_f16(v) : starling__f32_to_bf16(v);
}

static double as_double(starling_dtype dt, uint16_t h)
{
    return dt == STARLING_F16 ? starling__f16_to_f32(h) : starling__bf16_to_f32(h);
}

static void body_bound(peer_arg *pa, starling_comm *c)
{
    half_case *hc = pa->user;
    starling_dtype dt = hc->dtype;
    uint16_t *x = malloc(COUNT * sizeof *x);
    int rc;
    CHECK(pa, x != NULL, "no memory");
    if (!x)
        return;
    for (size_t i = 0; i < COUNT; i++)
        x[i] = value(dt, pa->idx, i);
    rc = starling_allreduce(c, x, x, COUNT, dt, STARLING_SUM, NULL);
    CHECK(pa, rc == STARLING_OK, "allreduce: %s", starling_strerror(rc));
    for (size_t i = 0; rc == STARLING_OK && i < COUNT; i++) {
        double exact = 0, abs_sum = 0, got = as_double(dt, x[i]), once;
        for (int m = 0; m < N; m++) {
            double v = as_double(dt, value(dt, m, i));
            exact += v; /* exact: 5 values with 11 or 8 significant bits fit a double */
            abs_sum += fabs(v);
        }
        if (fabs(got - exact) > (pow(1 + hc->u, N - 1) - 1) * abs_sum + (N - 1) * hc->eta)
            hc->bad[pa->idx]++;
        once = as_double(dt, dt == STARLING_F16 ? starling__f32_to_f16((float)exact)
                                                : starling__f32_to_bf16((float)exact));
        hc->one_rounding_differs[pa->idx] += got != once;
    }
    free(x);
}

static void check_bound(starling_dtype dt, double u, double eta)
{
    static half_case hc;
    memset(&hc, 0, sizeof hc);
    hc.dtype = dt;
    hc.u = u;
    hc.eta = eta;
    run_group_with(N, body_bound, &hc, NULL);
    for (int m = 0; m < N; m++) {
        assert_int_equal(hc.bad[m], 0);
        /* The reason the bound is n - 1 roundings and not one: many elements differ from
         * the once-rounded exact sum (21-35 % when this was measured). */
        assert_true(hc.one_rounding_differs[m] > COUNT / 20);
    }
}

static void test_f16_bound(void **s)
{
    (void)s;
    check_bound(STARLING_F16, ldexp(1, -11) + ldexp(1, -23), ldexp(1, -25));
}

static void test_bf16_bound(void **s)
{
    (void)s;
    check_bound(STARLING_BF16, ldexp(1, -8) + ldexp(1, -23), ldexp(1, -134));
}

/* 65504 + 16 - 16 over three members: the exact sum, 65504, is the largest f16, but the
 * partial sum 65520 rounds to +inf and stays there, as starling.h says it may. */
static void body_overflow(peer_arg *pa, starling_comm *c)
{
    static const float v[3] = {65504.0f, 16.0f, -16.0f};
    int r = starling_comm_rank(c), rc;
    uint16_t x = starling__f32_to_f16(v[0]);
    /* Ring order decides which partial sums are formed: give the values by rank, so the
     * largest value and +16 meet first whatever the ring's direction. */
    if (r == 1)
        x = starling__f32_to_f16(v[1]);
    if (r == 2)
        x = starling__f32_to_f16(v[2]);
    rc = starling_allreduce(c, &x, &x, 1, STARLING_F16, STARLING_SUM, NULL);
    CHECK(pa, rc == STARLING_OK, "allreduce: %s", starling_strerror(rc));
    CHECK(pa, isinf(starling__f16_to_f32(x)) || starling__f16_to_f32(x) == 65504.0f, "got %g",
          (double)starling__f16_to_f32(x));
    snprintf(pa->hash, sizeof pa->hash, "%g", (double)starling__f16_to_f32(x));
}

static void test_f16_partial_overflow(void **s)
{
    peer_arg pa[3];
    (void)s;
    run_group(3, body_overflow, pa);
    /* Every member holds the same bits, whichever they are; +inf is possible (it is what
     * was measured when issue 16 was filed) and documented, a finite wrong value is not. */
    assert_string_equal(pa[0].hash, pa[1].hash);
    assert_string_equal(pa[0].hash, pa[2].hash);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_bound),
        cmocka_unit_test(test_bf16_bound),
        cmocka_unit_test(test_f16_partial_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
