/* Reduction kernels against a plain scalar reference, for every dtype x op, plus the
 * edge cases: aliasing, integer wraparound, NaN in min/max, the AVG division, and the
 * dtype/op name tables. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/kernels.h"

#define MAX_COUNT 4097

static const size_t sizes[] = {0, 1, 7, 1000, 4097};
static const starling_dtype all_dtypes[] = {STARLING_F32, STARLING_F64, STARLING_F16,
                                            STARLING_BF16, STARLING_I32, STARLING_I64,
                                            STARLING_U8};
static const starling_op all_ops[] = {STARLING_SUM, STARLING_AVG, STARLING_MIN, STARLING_MAX};

#define COUNT_OF(x) (sizeof(x) / sizeof((x)[0]))

/* ---------------------------------------------------------------- reference */

/* NaN-propagating min/max as documented in reduce.c: a NaN input gives NaN
 * (a's when both are); ties keep a. */
static double ref_min_max(double x, double y, starling_op op)
{
    if (isnan(x))
        return x;
    if (isnan(y))
        return y;
    if (op == STARLING_MIN)
        return y < x ? y : x;
    return y > x ? y : x;
}

static float ref_float(float x, float y, starling_op op)
{
    if (op == STARLING_SUM || op == STARLING_AVG)
        return x + y;
    return (float)ref_min_max(x, y, op);
}

static double ref_double(double x, double y, starling_op op)
{
    if (op == STARLING_SUM || op == STARLING_AVG)
        return x + y;
    return ref_min_max(x, y, op);
}

static int64_t ref_int(int64_t x, int64_t y, starling_op op)
{
    if (op == STARLING_MIN)
        return y < x ? y : x;
    if (op == STARLING_MAX)
        return y > x ? y : x;
    return x + y; /* callers wrap */
}

/* One element at a time, with no blocking, no macros and no vectorization tricks. */
static void ref_reduce(void *dst, const void *a, const void *b, size_t n,
                       starling_dtype dtype, starling_op op)
{
    for (size_t i = 0; i < n; i++) {
        switch (dtype) {
        case STARLING_F32:
            ((float *)dst)[i] = ref_float(((const float *)a)[i], ((const float *)b)[i], op);
            break;
        case STARLING_F64:
            ((double *)dst)[i] =
                ref_double(((const double *)a)[i], ((const double *)b)[i], op);
            break;
        case STARLING_F16: {
            float x = starling__f16_to_f32(((const uint16_t *)a)[i]);
            float y = starling__f16_to_f32(((const uint16_t *)b)[i]);
            ((uint16_t *)dst)[i] = starling__f32_to_f16(ref_float(x, y, op));
            break;
        }
        case STARLING_BF16: {
            float x = starling__bf16_to_f32(((const uint16_t *)a)[i]);
            float y = starling__bf16_to_f32(((const uint16_t *)b)[i]);
            ((uint16_t *)dst)[i] = starling__f32_to_bf16(ref_float(x, y, op));
            break;
        }
        case STARLING_I32: {
            int64_t r = ref_int(((const int32_t *)a)[i], ((const int32_t *)b)[i], op);
            if (r > INT32_MAX)
                r -= INT64_C(1) << 32;
            if (r < INT32_MIN)
                r += INT64_C(1) << 32;
            ((int32_t *)dst)[i] = (int32_t)r;
            break;
        }
        case STARLING_I64: {
            int64_t x = ((const int64_t *)a)[i], y = ((const int64_t *)b)[i];
            int64_t r;
            if (op == STARLING_SUM || op == STARLING_AVG) {
                uint64_t u = (uint64_t)x + (uint64_t)y;
                memcpy(&r, &u, sizeof r);
            } else {
                r = ref_int(x, y, op);
            }
            ((int64_t *)dst)[i] = r;
            break;
        }
        case STARLING_U8:
            ((uint8_t *)dst)[i] =
                (uint8_t)(ref_int(((const uint8_t *)a)[i], ((const uint8_t *)b)[i], op) % 256);
            break;
        default:
            fail_msg("unknown dtype %d", (int)dtype);
        }
    }
}

/* ---------------------------------------------------------------- inputs */

/* xorshift64*: fixed seeds, so a failure reproduces. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

/* Random elements, no NaN (a sum of two NaNs may legitimately keep either payload, so
 * NaN gets its own tests). Small values repeat often so that min/max see ties; random
 * bit patterns reach huge, tiny, subnormal and infinite values. */
static void fill_random(void *buf, size_t n, starling_dtype dtype, uint64_t *seed)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t r = rng_next(seed);
        int small = (int)(r % 9) - 4;
        int use_small = (r >> 8) % 4 == 0;
        switch (dtype) {
        case STARLING_F32: {
            float f = (float)small / 4;
            if (!use_small) {
                uint32_t u = (uint32_t)(r >> 32);
                memcpy(&f, &u, sizeof f);
                if (isnan(f))
                    f = 1.0f;
            }
            ((float *)buf)[i] = f;
            break;
        }
        case STARLING_F64: {
            double d = (double)small / 4;
            if (!use_small) {
                memcpy(&d, &r, sizeof d);
                if (isnan(d))
                    d = -2.0;
            }
            ((double *)buf)[i] = d;
            break;
        }
        case STARLING_F16:
        case STARLING_BF16: {
            uint16_t h = (uint16_t)(r >> 40);
            float v = dtype == STARLING_F16 ? starling__f16_to_f32(h) : starling__bf16_to_f32(h);
            if (isnan(v) || use_small)
                h = dtype == STARLING_F16 ? starling__f32_to_f16((float)small / 4)
                                          : starling__f32_to_bf16((float)small / 4);
            ((uint16_t *)buf)[i] = h;
            break;
        }
        case STARLING_I32: {
            uint32_t u = (uint32_t)(r >> 32);
            int32_t v;
            memcpy(&v, &u, sizeof v);
            ((int32_t *)buf)[i] = use_small ? small : v;
            break;
        }
        case STARLING_I64: {
            int64_t v;
            memcpy(&v, &r, sizeof v);
            ((int64_t *)buf)[i] = use_small ? small : v;
            break;
        }
        case STARLING_U8:
            ((uint8_t *)buf)[i] = use_small ? (uint8_t)(small + 4) : (uint8_t)(r >> 56);
            break;
        default:
            fail_msg("unknown dtype %d", (int)dtype);
        }
    }
}

/* Element buffers for MAX_COUNT of the widest dtype plus one guard element, aligned
 * for any dtype. */
typedef union {
    double d[MAX_COUNT + 1];
    int64_t i[MAX_COUNT + 1];
} elem_buf;

static elem_buf buf_a, buf_b, buf_dst, buf_want;

static void expect_same_bytes(const void *got, const void *want, size_t n,
                              starling_dtype dtype, starling_op op, const char *what)
{
    size_t size = starling_dtype_size(dtype);
    const unsigned char *g = got, *w = want;
    for (size_t i = 0; i < n; i++) {
        if (memcmp(g + i * size, w + i * size, size) != 0)
            fail_msg("%s: %s %s n=%zu: element %zu differs", what, starling_dtype_name(dtype),
                     starling_op_name(op), n, i);
    }
}

/* ---------------------------------------------------------------- against reference */

/* state: the dtype under test (one cmocka test per dtype). */
static void test_against_reference(void **state)
{
    starling_dtype dtype = *(const starling_dtype *)*state;
    size_t size = starling_dtype_size(dtype);
    uint64_t seed = 0x9e3779b97f4a7c15ull + (uint64_t)dtype;

    for (size_t o = 0; o < COUNT_OF(all_ops); o++) {
        starling_op op = all_ops[o];
        for (size_t s = 0; s < COUNT_OF(sizes); s++) {
            size_t n = sizes[s];
            fill_random(&buf_a, n, dtype, &seed);
            fill_random(&buf_b, n, dtype, &seed);
            ref_reduce(&buf_want, &buf_a, &buf_b, n, dtype, op);

            memset(&buf_dst, 0xa5, sizeof buf_dst);
            starling__reduce(&buf_dst, &buf_a, &buf_b, n, dtype, op);
            expect_same_bytes(&buf_dst, &buf_want, n, dtype, op, "separate dst");
            /* Nothing written past n. */
            const unsigned char *after = (const unsigned char *)&buf_dst + n * size;
            for (size_t k = 0; k < size; k++)
                assert_int_equal(after[k], 0xa5);

            /* In place, dst == a and dst == b: what the collectives do. */
            memcpy(&buf_dst, &buf_a, n * size);
            starling__reduce(&buf_dst, &buf_dst, &buf_b, n, dtype, op);
            expect_same_bytes(&buf_dst, &buf_want, n, dtype, op, "dst == a");
            memcpy(&buf_dst, &buf_b, n * size);
            starling__reduce(&buf_dst, &buf_a, &buf_dst, n, dtype, op);
            expect_same_bytes(&buf_dst, &buf_want, n, dtype, op, "dst == b");

            /* Start one element in, so blocks straddle a different alignment. */
            if (n > 1) {
                unsigned char *a1 = (unsigned char *)&buf_a + size;
                unsigned char *b1 = (unsigned char *)&buf_b + size;
                unsigned char *w1 = (unsigned char *)&buf_want + size;
                starling__reduce(a1, a1, b1, n - 1, dtype, op);
                expect_same_bytes(a1, w1, n - 1, dtype, op, "offset by one, in place");
            }
        }
    }
}

static void test_zero_count_touches_nothing(void **state)
{
    (void)state;
    for (size_t d = 0; d < COUNT_OF(all_dtypes); d++) {
        for (size_t o = 0; o < COUNT_OF(all_ops); o++) {
            starling__reduce(NULL, NULL, NULL, 0, all_dtypes[d], all_ops[o]);
            starling__reduce_finish(NULL, 0, all_dtypes[d], all_ops[o], 4);
        }
    }
}

/* ---------------------------------------------------------------- integers */

static void test_integer_sums_wrap(void **state)
{
    (void)state;
    enum { N = 1000 }; /* through the blocked path, not only the scalar tail */
    static int32_t a32[N], b32[N], d32[N];
    static int64_t a64[N], b64[N], d64[N];
    static uint8_t a8[N], b8[N], d8[N];
    for (int i = 0; i < N; i++) {
        a32[i] = (i & 1) ? INT32_MAX : INT32_MIN;
        b32[i] = (i & 1) ? 1 : -1;
        a64[i] = (i & 1) ? INT64_MAX : INT64_MIN;
        b64[i] = (i & 1) ? 2 : -2;
        a8[i] = 200;
        b8[i] = (uint8_t)(100 + (i & 1) * 55);
    }
    starling__reduce(d32, a32, b32, N, STARLING_I32, STARLING_SUM);
    starling__reduce(d64, a64, b64, N, STARLING_I64, STARLING_AVG);
    starling__reduce(d8, a8, b8, N, STARLING_U8, STARLING_SUM);
    for (int i = 0; i < N; i++) {
        assert_int_equal(d32[i], (i & 1) ? INT32_MIN : INT32_MAX);
        assert_true(d64[i] == ((i & 1) ? INT64_MIN + 1 : INT64_MAX - 1));
        assert_int_equal(d8[i], (i & 1) ? 99 : 44);
    }
}

static void test_integer_min_max(void **state)
{
    (void)state;
    int32_t a32[3] = {INT32_MIN, -1, 5}, b32[3] = {INT32_MAX, 0, 5}, d32[3];
    int64_t a64[2] = {INT64_MIN, -3}, b64[2] = {INT64_MAX, -4}, d64[2];
    uint8_t a8[3] = {0, 255, 128}, b8[3] = {255, 0, 127}, d8[3];

    starling__reduce(d32, a32, b32, 3, STARLING_I32, STARLING_MIN);
    assert_int_equal(d32[0], INT32_MIN);
    assert_int_equal(d32[1], -1);
    assert_int_equal(d32[2], 5);
    starling__reduce(d32, a32, b32, 3, STARLING_I32, STARLING_MAX);
    assert_int_equal(d32[0], INT32_MAX);
    assert_int_equal(d32[1], 0);
    starling__reduce(d64, a64, b64, 2, STARLING_I64, STARLING_MIN);
    assert_true(d64[0] == INT64_MIN && d64[1] == -4);
    starling__reduce(d64, a64, b64, 2, STARLING_I64, STARLING_MAX);
    assert_true(d64[0] == INT64_MAX && d64[1] == -3);
    /* u8 is unsigned: 255 is the largest, 128 > 127. */
    starling__reduce(d8, a8, b8, 3, STARLING_U8, STARLING_MIN);
    assert_int_equal(d8[0], 0);
    assert_int_equal(d8[1], 0);
    assert_int_equal(d8[2], 127);
    starling__reduce(d8, a8, b8, 3, STARLING_U8, STARLING_MAX);
    assert_int_equal(d8[0], 255);
    assert_int_equal(d8[1], 255);
    assert_int_equal(d8[2], 128);
}

/* ---------------------------------------------------------------- NaN in min/max */

static void put_float(void *buf, size_t i, starling_dtype dtype, double v)
{
    switch (dtype) {
    case STARLING_F32:
        ((float *)buf)[i] = (float)v;
        break;
    case STARLING_F64:
        ((double *)buf)[i] = v;
        break;
    case STARLING_F16:
        ((uint16_t *)buf)[i] = starling__f32_to_f16((float)v);
        break;
    default:
        ((uint16_t *)buf)[i] = starling__f32_to_bf16((float)v);
        break;
    }
}

static double get_float(const void *buf, size_t i, starling_dtype dtype)
{
    switch (dtype) {
    case STARLING_F32:
        return ((const float *)buf)[i];
    case STARLING_F64:
        return ((const double *)buf)[i];
    case STARLING_F16:
        return starling__f16_to_f32(((const uint16_t *)buf)[i]);
    default:
        return starling__bf16_to_f32(((const uint16_t *)buf)[i]);
    }
}

static void test_float_min_max_propagate_nan(void **state)
{
    (void)state;
    static const starling_dtype float_dtypes[] = {STARLING_F32, STARLING_F64, STARLING_F16,
                                                  STARLING_BF16};
    /* Cycle through: NaN in a, NaN in b, both, neither, NaN against inf. */
    const double patterns[][2] = {{NAN, 1.0}, {2.0, NAN}, {NAN, NAN}, {3.0, -4.0},
                                  {NAN, INFINITY}, {-INFINITY, NAN}};
    enum { N = 200, P = (int)COUNT_OF(patterns) };

    for (size_t d = 0; d < COUNT_OF(float_dtypes); d++) {
        starling_dtype dtype = float_dtypes[d];
        for (int mx = 0; mx < 2; mx++) {
            starling_op op = mx ? STARLING_MAX : STARLING_MIN;
            for (size_t i = 0; i < N; i++) {
                put_float(&buf_a, i, dtype, patterns[i % P][0]);
                put_float(&buf_b, i, dtype, patterns[i % P][1]);
            }
            starling__reduce(&buf_dst, &buf_a, &buf_b, N, dtype, op);
            for (size_t i = 0; i < N; i++) {
                double x = patterns[i % P][0], y = patterns[i % P][1];
                double got = get_float(&buf_dst, i, dtype);
                if (isnan(x) || isnan(y)) {
                    if (!isnan(got))
                        fail_msg("%s %s element %zu: %g, want NaN", starling_dtype_name(dtype),
                                 starling_op_name(op), i, got);
                } else {
                    assert_true(got == (mx ? fmax(x, y) : fmin(x, y)));
                }
            }
        }
    }
}

/* A signalling NaN in f16/bf16 comes out as the same NaN made quiet, through every op
 * (the kernels may skip quieting on the way in; the narrowing must still do it). */
static void test_half_nan_comes_out_quiet(void **state)
{
    (void)state;
    static const struct {
        starling_dtype dtype;
        uint16_t snan, qnan, other_qnan, one;
    } cases[] = {{STARLING_BF16, 0xff81, 0xffc1, 0x7fc5, 0x3f80},
                 {STARLING_F16, 0xfc01, 0xfe01, 0x7e05, 0x3c00}};
    enum { N = 70 }; /* one block and a tail */
    uint16_t a[N], b[N], d[N];
    for (size_t c = 0; c < COUNT_OF(cases); c++) {
        for (size_t o = 0; o < COUNT_OF(all_ops); o++) {
            for (size_t i = 0; i < N; i++) {
                /* NaN in a, NaN in b, NaN in both (a's wins for min/max). */
                a[i] = i % 3 == 1 ? cases[c].one : cases[c].snan;
                b[i] = i % 3 == 0 ? cases[c].one : i % 3 == 1 ? cases[c].snan : cases[c].other_qnan;
            }
            starling__reduce(d, a, b, N, cases[c].dtype, all_ops[o]);
            for (size_t i = 0; i < N; i++) {
                int both = i % 3 == 2;
                if (both && (all_ops[o] == STARLING_SUM || all_ops[o] == STARLING_AVG))
                    continue; /* NaN + NaN: either payload is IEEE-conforming */
                if (d[i] != cases[c].qnan)
                    fail_msg("%s %s element %zu: 0x%04x, want 0x%04x",
                             starling_dtype_name(cases[c].dtype), starling_op_name(all_ops[o]),
                             i, (unsigned)d[i], (unsigned)cases[c].qnan);
            }
            starling__reduce_finish(d, N, cases[c].dtype, all_ops[o], 2);
            for (size_t i = 0; i < N; i += 3)
                assert_int_equal(d[i], cases[c].qnan);
        }
    }
}

static void test_float_ties_keep_a(void **state)
{
    (void)state;
    float a[2] = {0.0f, -0.0f}, b[2] = {-0.0f, 0.0f}, d[2];
    starling__reduce(d, a, b, 2, STARLING_F32, STARLING_MIN);
    assert_false(signbit(d[0]));
    assert_true(signbit(d[1]));
    starling__reduce(d, a, b, 2, STARLING_F32, STARLING_MAX);
    assert_false(signbit(d[0]));
    assert_true(signbit(d[1]));
}

/* ---------------------------------------------------------------- reduce_finish */

static void test_finish_avg_floats(void **state)
{
    (void)state;
    float f32[4] = {3.0f, 1.0f, -7.0f, 0.3f};
    starling__reduce_finish(f32, 4, STARLING_F32, STARLING_AVG, 2);
    assert_true(f32[0] == 1.5f && f32[1] == 0.5f && f32[2] == -3.5f && f32[3] == 0.3f / 2);

    double f64[2] = {1.0, -9.0};
    starling__reduce_finish(f64, 2, STARLING_F64, STARLING_AVG, 3);
    assert_true(f64[0] == 1.0 / 3.0 && f64[1] == -3.0);

    /* Halves divide in f32 and round once. */
    uint16_t f16[2] = {starling__f32_to_f16(3.0f), starling__f32_to_f16(1.0f)};
    starling__reduce_finish(f16, 2, STARLING_F16, STARLING_AVG, 3);
    assert_int_equal(f16[0], starling__f32_to_f16(1.0f));
    assert_int_equal(f16[1], starling__f32_to_f16(1.0f / 3.0f));
    assert_int_equal(f16[1], 0x3555);
    uint16_t bf16[2] = {starling__f32_to_bf16(3.0f), starling__f32_to_bf16(1.0f)};
    starling__reduce_finish(bf16, 2, STARLING_BF16, STARLING_AVG, 2);
    assert_int_equal(bf16[0], 0x3fc0); /* 1.5 */
    assert_int_equal(bf16[1], 0x3f00); /* 0.5 */
}

static void test_finish_avg_integers_truncate(void **state)
{
    (void)state;
    int32_t i32[5] = {7, -7, INT32_MIN, INT32_MAX, 1};
    starling__reduce_finish(i32, 5, STARLING_I32, STARLING_AVG, 2);
    assert_int_equal(i32[0], 3);
    assert_int_equal(i32[1], -3); /* towards zero, not floor */
    assert_int_equal(i32[2], INT32_MIN / 2);
    assert_int_equal(i32[3], INT32_MAX / 2);
    assert_int_equal(i32[4], 0);

    int64_t i64[2] = {INT64_MIN, -10};
    starling__reduce_finish(i64, 2, STARLING_I64, STARLING_AVG, 3);
    assert_true(i64[0] == INT64_MIN / 3 && i64[1] == -3);

    uint8_t u8[3] = {255, 7, 0};
    starling__reduce_finish(u8, 3, STARLING_U8, STARLING_AVG, 4);
    assert_int_equal(u8[0], 63);
    assert_int_equal(u8[1], 1);
    assert_int_equal(u8[2], 0);
}

/* Every dtype, long enough for the blocked path, against x / n done plainly. */
static void test_finish_avg_against_reference(void **state)
{
    (void)state;
    uint64_t seed = 42;
    const int members = 7;
    for (size_t d = 0; d < COUNT_OF(all_dtypes); d++) {
        starling_dtype dtype = all_dtypes[d];
        size_t n = MAX_COUNT;
        fill_random(&buf_dst, n, dtype, &seed);
        memcpy(&buf_want, &buf_dst, sizeof buf_want);
        for (size_t i = 0; i < n; i++) {
            switch (dtype) {
            case STARLING_F32:
                ((float *)&buf_want)[i] /= (float)members;
                break;
            case STARLING_F64:
                ((double *)&buf_want)[i] /= members;
                break;
            case STARLING_F16: {
                uint16_t *h = (uint16_t *)&buf_want + i;
                *h = starling__f32_to_f16(starling__f16_to_f32(*h) / (float)members);
                break;
            }
            case STARLING_BF16: {
                uint16_t *h = (uint16_t *)&buf_want + i;
                *h = starling__f32_to_bf16(starling__bf16_to_f32(*h) / (float)members);
                break;
            }
            case STARLING_I32:
                ((int32_t *)&buf_want)[i] /= members;
                break;
            case STARLING_I64:
                ((int64_t *)&buf_want)[i] /= members;
                break;
            default:
                ((uint8_t *)&buf_want)[i] /= members;
                break;
            }
        }
        starling__reduce_finish(&buf_dst, n, dtype, STARLING_AVG, members);
        expect_same_bytes(&buf_dst, &buf_want, n, dtype, STARLING_AVG, "finish");
    }
}

static void test_finish_other_ops_untouched(void **state)
{
    (void)state;
    float f[3] = {1.0f, 2.0f, 3.0f};
    int32_t i[3] = {4, 5, 6};
    for (size_t o = 0; o < COUNT_OF(all_ops); o++) {
        if (all_ops[o] == STARLING_AVG)
            continue;
        starling__reduce_finish(f, 3, STARLING_F32, all_ops[o], 3);
        starling__reduce_finish(i, 3, STARLING_I32, all_ops[o], 3);
    }
    /* One member: the sum is already the average. */
    starling__reduce_finish(f, 3, STARLING_F32, STARLING_AVG, 1);
    starling__reduce_finish(i, 3, STARLING_I32, STARLING_AVG, 1);
    assert_true(f[0] == 1.0f && f[1] == 2.0f && f[2] == 3.0f);
    assert_int_equal(i[0], 4);
    assert_int_equal(i[2], 6);
}

/* AVG end to end: three members, summed pairwise, divided once. */
static void test_avg_end_to_end(void **state)
{
    (void)state;
    float m0[3] = {1.0f, -2.0f, 0.5f}, m1[3] = {2.0f, -2.0f, 0.5f}, m2[3] = {6.0f, 1.0f, 2.0f};
    int32_t k0[2] = {1, -5}, k1[2] = {1, 0}, k2[2] = {2, 0};
    starling__reduce(m0, m0, m1, 3, STARLING_F32, STARLING_AVG);
    starling__reduce(m0, m0, m2, 3, STARLING_F32, STARLING_AVG);
    starling__reduce_finish(m0, 3, STARLING_F32, STARLING_AVG, 3);
    assert_true(m0[0] == 3.0f && m0[1] == -1.0f && m0[2] == 1.0f);
    starling__reduce(k0, k0, k1, 2, STARLING_I32, STARLING_AVG);
    starling__reduce(k0, k0, k2, 2, STARLING_I32, STARLING_AVG);
    starling__reduce_finish(k0, 2, STARLING_I32, STARLING_AVG, 3);
    assert_int_equal(k0[0], 1); /* 4 / 3 */
    assert_int_equal(k0[1], -1); /* -5 / 3 */
}

/* ---------------------------------------------------------------- op_supported, names */

static void test_op_supported(void **state)
{
    (void)state;
    for (size_t d = 0; d < COUNT_OF(all_dtypes); d++)
        for (size_t o = 0; o < COUNT_OF(all_ops); o++)
            assert_true(starling__op_supported(all_dtypes[d], all_ops[o]));
    assert_false(starling__op_supported(STARLING_DTYPE_COUNT, STARLING_SUM));
    assert_false(starling__op_supported((starling_dtype)-1, STARLING_SUM));
    assert_false(starling__op_supported(STARLING_F32, STARLING_OP_COUNT));
    assert_false(starling__op_supported(STARLING_F32, (starling_op)-1));

    /* An unsupported pair is a no-op. */
    float a[2] = {1.0f, 2.0f}, d[2] = {7.0f, 8.0f};
    starling__reduce(d, a, a, 2, STARLING_DTYPE_COUNT, STARLING_SUM);
    starling__reduce(d, a, a, 2, STARLING_F32, STARLING_OP_COUNT);
    starling__reduce_finish(d, 2, (starling_dtype)-1, STARLING_AVG, 2);
    assert_true(d[0] == 7.0f && d[1] == 8.0f);
}

static void test_dtype_names_and_sizes(void **state)
{
    (void)state;
    static const struct {
        starling_dtype dtype;
        const char *name;
        size_t size;
    } table[] = {{STARLING_F32, "f32", 4}, {STARLING_F64, "f64", 8}, {STARLING_F16, "f16", 2},
                 {STARLING_BF16, "bf16", 2}, {STARLING_I32, "i32", 4}, {STARLING_I64, "i64", 8},
                 {STARLING_U8, "u8", 1}};
    assert_int_equal(COUNT_OF(table), STARLING_DTYPE_COUNT);
    for (size_t i = 0; i < COUNT_OF(table); i++) {
        assert_string_equal(starling_dtype_name(table[i].dtype), table[i].name);
        assert_int_equal(starling_dtype_from_name(table[i].name), table[i].dtype);
        assert_int_equal(starling_dtype_size(table[i].dtype), table[i].size);
    }
    assert_null(starling_dtype_name(STARLING_DTYPE_COUNT));
    assert_null(starling_dtype_name((starling_dtype)-1));
    assert_int_equal(starling_dtype_size(STARLING_DTYPE_COUNT), 0);
    assert_int_equal(starling_dtype_size((starling_dtype)-1), 0);
    static const char *const unknown[] = {"", "f8", "F32", "f32 ", "float", "bf1", "u8x"};
    for (size_t i = 0; i < COUNT_OF(unknown); i++)
        assert_int_equal(starling_dtype_from_name(unknown[i]), -1);
    assert_int_equal(starling_dtype_from_name(NULL), -1);
}

static void test_op_names(void **state)
{
    (void)state;
    static const char *const names[] = {"sum", "avg", "min", "max"};
    for (size_t o = 0; o < COUNT_OF(all_ops); o++) {
        assert_string_equal(starling_op_name(all_ops[o]), names[o]);
        assert_int_equal(starling_op_from_name(names[o]), all_ops[o]);
    }
    assert_null(starling_op_name(STARLING_OP_COUNT));
    assert_null(starling_op_name((starling_op)-1));
    static const char *const unknown[] = {"", "SUM", "mean", "prod", "su", "sums"};
    for (size_t i = 0; i < COUNT_OF(unknown); i++)
        assert_int_equal(starling_op_from_name(unknown[i]), -1);
    assert_int_equal(starling_op_from_name(NULL), -1);
}

#define REFERENCE_TEST(dt)                                                                 \
    {"test_against_reference/" #dt, test_against_reference, NULL, NULL,                    \
     (void *)&all_dtypes[dt]}

int main(void)
{
    const struct CMUnitTest tests[] = {
        REFERENCE_TEST(STARLING_F32),
        REFERENCE_TEST(STARLING_F64),
        REFERENCE_TEST(STARLING_F16),
        REFERENCE_TEST(STARLING_BF16),
        REFERENCE_TEST(STARLING_I32),
        REFERENCE_TEST(STARLING_I64),
        REFERENCE_TEST(STARLING_U8),
        cmocka_unit_test(test_zero_count_touches_nothing),
        cmocka_unit_test(test_integer_sums_wrap),
        cmocka_unit_test(test_integer_min_max),
        cmocka_unit_test(test_float_min_max_propagate_nan),
        cmocka_unit_test(test_half_nan_comes_out_quiet),
        cmocka_unit_test(test_float_ties_keep_a),
        cmocka_unit_test(test_finish_avg_floats),
        cmocka_unit_test(test_finish_avg_integers_truncate),
        cmocka_unit_test(test_finish_avg_against_reference),
        cmocka_unit_test(test_finish_other_ops_untouched),
        cmocka_unit_test(test_avg_end_to_end),
        cmocka_unit_test(test_op_supported),
        cmocka_unit_test(test_dtype_names_and_sizes),
        cmocka_unit_test(test_op_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
