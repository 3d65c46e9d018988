/* f16/bf16 <-> f32 conversions against hand-picked edge values, every 16-bit pattern,
 * and a slow reference built from frexp/ldexp over random floats. */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/kernels.h"

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static int f16_is_nan(uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x03ffu) != 0; }
static int bf16_is_nan(uint16_t h) { return (h & 0x7f80u) == 0x7f80u && (h & 0x007fu) != 0; }

/* Round a non-negative double holding an exact binary value to the nearest integer, ties
 * to even, without relying on the FPU rounding mode. */
static double round_half_even(double q)
{
    double lower = floor(q);
    double rest = q - lower;
    if (rest > 0.5 || (rest == 0.5 && fmod(lower, 2.0) != 0.0))
        return lower + 1.0;
    return lower;
}

/* Slow f32 -> f16 reference for non-NaN input, written from the definition of the format
 * (value = 2^(E-15) * (1 + m/1024), subnormals m * 2^-24) rather than from bit tricks. */
static uint16_t ref_f32_to_f16(float f)
{
    uint16_t sign = signbit(f) ? 0x8000u : 0u;
    double a = fabs((double)f);
    if (isinf(a)) /* frexp leaves the exponent unspecified */
        return (uint16_t)(sign | 0x7c00u);
    if (a < ldexp(1.0, -14)) {
        double units = round_half_even(ldexp(a, 24)); /* 1024 lands on the smallest normal */
        return (uint16_t)(sign | (uint16_t)units);
    }
    int e;
    double m = frexp(a, &e); /* a = m * 2^e, m in [0.5, 1) */
    double significand = round_half_even(ldexp(m, 11)); /* in [1024, 2048] */
    int biased = e - 1 + 15;
    if (significand == 2048.0) {
        significand = 1024.0;
        biased++;
    }
    if (biased >= 31)
        return (uint16_t)(sign | 0x7c00u);
    return (uint16_t)(sign | (uint16_t)(biased << 10) | (uint16_t)(significand - 1024.0));
}

/* f16 -> double from the definition, for every non-NaN pattern. */
static double ref_f16_to_double(uint16_t h)
{
    int exponent = (h >> 10) & 0x1f;
    int mantissa = h & 0x3ff;
    double v;
    if (exponent == 0)
        v = ldexp(mantissa, -24);
    else if (exponent == 31)
        v = INFINITY;
    else
        v = ldexp(1024 + mantissa, exponent - 25);
    return (h & 0x8000u) ? -v : v;
}

static void test_f16_ties_to_even(void **state)
{
    (void)state;
    /* 1 + 2^-11 is halfway between 1 (0x3c00, even) and 1 + 2^-10 (0x3c01). */
    assert_int_equal(starling__f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
    /* 1 + 3*2^-11 is halfway between 0x3c01 (odd) and 0x3c02 (even). */
    assert_int_equal(starling__f32_to_f16(1.0f + 0x3p-11f), 0x3c02);
    assert_int_equal(starling__f32_to_f16(-(1.0f + 0x1p-11f)), 0xbc00);
    assert_int_equal(starling__f32_to_f16(-(1.0f + 0x3p-11f)), 0xbc02);
    /* Just off the tie goes the nearest way. */
    assert_int_equal(starling__f32_to_f16(nextafterf(1.0f + 0x1p-11f, 2.0f)), 0x3c01);
    assert_int_equal(starling__f32_to_f16(nextafterf(1.0f + 0x3p-11f, 0.0f)), 0x3c01);
    /* Subnormal ties: k + 1/2 units of 2^-24. */
    assert_int_equal(starling__f32_to_f16(0x1p-25f), 0x0000);
    assert_int_equal(starling__f32_to_f16(0x3p-25f), 0x0002);
    assert_int_equal(starling__f32_to_f16(0x5p-25f), 0x0002);
    assert_int_equal(starling__f32_to_f16(-0x7p-25f), 0x8004);
    assert_int_equal(starling__f32_to_f16(nextafterf(0x1p-25f, 1.0f)), 0x0001);
    /* Tie at the top of a binade carries into the exponent: 2 - 2^-11 -> 2.0. */
    assert_int_equal(starling__f32_to_f16(2.0f - 0x1p-11f), 0x4000);
}

static void test_bf16_ties_to_even(void **state)
{
    (void)state;
    assert_int_equal(starling__f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
    assert_int_equal(starling__f32_to_bf16(1.0f + 0x3p-8f), 0x3f82);
    assert_int_equal(starling__f32_to_bf16(-(1.0f + 0x3p-8f)), 0xbf82);
    assert_int_equal(starling__f32_to_bf16(nextafterf(1.0f + 0x1p-8f, 2.0f)), 0x3f81);
    /* f32 subnormals round like normals: halfway between bf16 0x0000 and 0x0001. */
    assert_int_equal(starling__f32_to_bf16(float_of(0x00008000u)), 0x0000);
    assert_int_equal(starling__f32_to_bf16(float_of(0x00018000u)), 0x0002);
    assert_int_equal(starling__f32_to_bf16(float_of(0x00008001u)), 0x0001);
}

static void test_f16_range_limits(void **state)
{
    (void)state;
    assert_int_equal(starling__f32_to_f16(65504.0f), 0x7bff);
    assert_true(starling__f16_to_f32(0x7bff) == 65504.0f);
    /* 65520 is halfway between 65504 (odd mantissa) and 65536 (inf): ties to inf. */
    assert_int_equal(starling__f32_to_f16(nextafterf(65520.0f, 0.0f)), 0x7bff);
    assert_int_equal(starling__f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(starling__f32_to_f16(-65520.0f), 0xfc00);
    assert_int_equal(starling__f32_to_f16(1e10f), 0x7c00);
    assert_int_equal(starling__f32_to_f16(FLT_MAX), 0x7c00);
    assert_int_equal(starling__f32_to_f16(-FLT_MAX), 0xfc00);
    assert_int_equal(starling__f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(starling__f32_to_f16(-INFINITY), 0xfc00);
    assert_true(isinf(starling__f16_to_f32(0x7c00)) && starling__f16_to_f32(0x7c00) > 0);
    assert_true(isinf(starling__f16_to_f32(0xfc00)) && starling__f16_to_f32(0xfc00) < 0);
    assert_int_equal(starling__f32_to_f16(0.0f), 0x0000);
    assert_int_equal(starling__f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(bits_of(starling__f16_to_f32(0x8000)), 0x80000000u);
}

static void test_bf16_range_limits(void **state)
{
    (void)state;
    /* Largest finite bf16 is 0x7f7f; FLT_MAX lies above its halfway point, so inf. */
    assert_int_equal(starling__f32_to_bf16(float_of(0x7f7f0000u)), 0x7f7f);
    assert_int_equal(starling__f32_to_bf16(float_of(0x7f7f7fffu)), 0x7f7f);
    assert_int_equal(starling__f32_to_bf16(float_of(0x7f7f8000u)), 0x7f80);
    assert_int_equal(starling__f32_to_bf16(FLT_MAX), 0x7f80);
    assert_int_equal(starling__f32_to_bf16(-FLT_MAX), 0xff80);
    assert_int_equal(starling__f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(starling__f32_to_bf16(-INFINITY), 0xff80);
    assert_int_equal(starling__f32_to_bf16(-0.0f), 0x8000);
    assert_true(starling__bf16_to_f32(0x3f80) == 1.0f);
    assert_int_equal(bits_of(starling__bf16_to_f32(0xff80)), 0xff800000u);
}

static void test_f16_subnormals(void **state)
{
    (void)state;
    /* Smallest subnormal, 2^-24, both ways. */
    assert_int_equal(starling__f32_to_f16(0x1p-24f), 0x0001);
    assert_true(starling__f16_to_f32(0x0001) == 0x1p-24f);
    assert_true(starling__f16_to_f32(0x8001) == -0x1p-24f);
    /* Largest subnormal and smallest normal. */
    assert_true(starling__f16_to_f32(0x03ff) == 0x3ffp-24f);
    assert_int_equal(starling__f32_to_f16(0x3ffp-24f), 0x03ff);
    assert_true(starling__f16_to_f32(0x0400) == 0x1p-14f);
    assert_int_equal(starling__f32_to_f16(0x1p-14f), 0x0400);
    /* Halfway between the largest subnormal (odd) and the smallest normal: to normal. */
    assert_int_equal(starling__f32_to_f16(0x7ffp-25f), 0x0400);
    assert_int_equal(starling__f32_to_f16(nextafterf(0x7ffp-25f, 0.0f)), 0x03ff);
    /* Far below the smallest subnormal, including f32 subnormals: signed zero. */
    assert_int_equal(starling__f32_to_f16(0x1p-30f), 0x0000);
    assert_int_equal(starling__f32_to_f16(-0x1p-30f), 0x8000);
    assert_int_equal(starling__f32_to_f16(float_of(0x00000001u)), 0x0000);
    assert_int_equal(starling__f32_to_f16(float_of(0x80400000u)), 0x8000);
}

static void test_nan(void **state)
{
    (void)state;
    /* Quiet NaN keeps its sign and the top of its payload. */
    uint16_t h = starling__f32_to_f16(float_of(0x7fc12345u));
    assert_true(f16_is_nan(h));
    assert_int_equal(h & 0x8000u, 0);
    assert_int_equal(h & 0x0200u, 0x0200u);
    assert_int_equal(h & 0x03ffu, (0x7fc12345u >> 13) & 0x03ffu);
    h = starling__f32_to_f16(float_of(0xffc00000u));
    assert_int_equal(h, 0xfe00);
    /* A signalling NaN whose payload sits only in bits a plain shift drops must not
     * become inf. */
    assert_int_equal(starling__f32_to_f16(float_of(0x7f800001u)), 0x7e00);
    assert_int_equal(starling__f32_to_f16(float_of(0xff800001u)), 0xfe00);
    assert_int_equal(starling__f32_to_bf16(float_of(0x7f800001u)), 0x7fc0);
    assert_int_equal(starling__f32_to_bf16(float_of(0xff800001u)), 0xffc0);
    /* bf16 keeps the whole top payload; rounding must not carry out of a NaN. */
    assert_int_equal(starling__f32_to_bf16(float_of(0x7fffffffu)), 0x7fff);
    assert_int_equal(starling__f32_to_bf16(float_of(0x7fc1ffffu)), 0x7fc1);
    assert_true(isnan(starling__f16_to_f32(0x7c01)));
    assert_true(isnan(starling__bf16_to_f32(0x7f81)));
    /* Widening quiets a signalling NaN and keeps sign and payload. */
    assert_int_equal(bits_of(starling__f16_to_f32(0xfc01)), 0xffc02000u);
    assert_int_equal(bits_of(starling__bf16_to_f32(0xff81)), 0xffc10000u);
    assert_int_equal(bits_of(starling__f16_to_f32(0x7e00)), 0x7fc00000u);
}

/* Every f16 pattern: widening matches the format's definition, and narrowing gives the
 * pattern back (NaNs: still NaN, same sign, quiet). */
static void test_f16_all_patterns(void **state)
{
    (void)state;
    for (uint32_t i = 0; i <= 0xffffu; i++) {
        uint16_t h = (uint16_t)i;
        float f = starling__f16_to_f32(h);
        uint16_t back = starling__f32_to_f16(f);
        if (f16_is_nan(h)) {
            assert_true(isnan(f));
            assert_true(f16_is_nan(back));
            assert_int_equal(back, h | 0x0200u);
        } else {
            if ((double)f != ref_f16_to_double(h))
                fail_msg("f16 0x%04x widened to %a", (unsigned)h, (double)f);
            assert_int_equal(back, h);
        }
    }
}

static void test_bf16_all_patterns(void **state)
{
    (void)state;
    for (uint32_t i = 0; i <= 0xffffu; i++) {
        uint16_t h = (uint16_t)i;
        float f = starling__bf16_to_f32(h);
        uint16_t back = starling__f32_to_bf16(f);
        if (bf16_is_nan(h)) {
            assert_true(isnan(f));
            assert_int_equal(back, h | 0x0040u);
        } else {
            assert_int_equal(bits_of(f), (uint32_t)h << 16);
            assert_int_equal(back, h);
        }
    }
}

/* xorshift64*: a fixed seed, so a failure reproduces. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

static void check_against_reference(float f)
{
    uint16_t got = starling__f32_to_f16(f);
    uint16_t want = ref_f32_to_f16(f);
    if (got != want)
        fail_msg("f32 %a (0x%08x): got f16 0x%04x, want 0x%04x", (double)f,
                 (unsigned)bits_of(f), (unsigned)got, (unsigned)want);
}

static void test_f16_random_against_reference(void **state)
{
    (void)state;
    uint64_t seed = 0x5eed5eedf00dull;
    for (int i = 0; i < 2000000; i++) {
        uint64_t r = rng_next(&seed);
        /* Half over all finite f32 patterns, half with exponents near the f16 range
         * (2^-26 .. 2^17) where every rounding case lives. */
        uint32_t bits = (uint32_t)(r >> 32);
        if (i & 1) {
            uint32_t exponent = 101u + (uint32_t)(r % 43u);
            bits = (bits & 0x807fffffu) | (exponent << 23);
        }
        float f = float_of(bits);
        if (isnan(f))
            continue;
        check_against_reference(f);
    }
    check_against_reference(INFINITY);
    check_against_reference(-INFINITY);
    /* Exact ties: a random f16 grid point plus half a unit in the last place. */
    for (int i = 0; i < 200000; i++) {
        uint16_t h = (uint16_t)(rng_next(&seed) % 0x7bffu); /* h + 1 still finite */
        float lo = starling__f16_to_f32(h);
        float hi = starling__f16_to_f32((uint16_t)(h + 1));
        check_against_reference(lo + (hi - lo) / 2);
        check_against_reference(-(lo + (hi - lo) / 2));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_ties_to_even),
        cmocka_unit_test(test_bf16_ties_to_even),
        cmocka_unit_test(test_f16_range_limits),
        cmocka_unit_test(test_bf16_range_limits),
        cmocka_unit_test(test_f16_subnormals),
        cmocka_unit_test(test_nan),
        cmocka_unit_test(test_f16_all_patterns),
        cmocka_unit_test(test_bf16_all_patterns),
        cmocka_unit_test(test_f16_random_against_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
