/* fp4 (src/codec/codec_fp4.c): a blob written by hand from the layout in docs/codecs.md,
 * ties to the even code, every value against a nearest-level reference computed here in
 * double, the error (x - decoded) and decode_add, NaN and Inf confined to their block,
 * tiny (subnormal-scale) blocks, and the size. */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec/codec.h"
#include "starling.h"

#define COUNT_OF(x) (sizeof(x) / sizeof((x)[0]))

static const double levels[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static int same_float(float a, float b) { return bits_of(a) == bits_of(b) || (a != a && b != b); }

static uint64_t rng_state = 0x0123456789abcdefull;

static double rng_uniform(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545f4914f6cdd1dull) >> 11) / 9007199254740992.0;
}

static double rng_normal(void)
{
    double u = rng_uniform(), v = rng_uniform();
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}

static starling__codec parse_ok(const char *spec)
{
    starling__codec c;
    char why[128];
    if (starling__codec_parse(spec, &c, why, sizeof why) != STARLING_OK)
        fail_msg("'%s' refused: %s", spec, why);
    return c;
}

/* block = 8, scale = 6/6 = 1. Codes (sign << 3 | level): 6 -> 7, -3 -> 8|5, 0.25 (tie
 * 0 / 0.5) -> 0, 0.75 (tie 0.5 / 1) -> 2, 1.25 (tie 1 / 1.5) -> 2, -1.75 (tie 1.5 / 2)
 * -> 8|4, 5 (tie 4 / 6) -> 6, 0.1 -> 0; two per byte, the first in the low nibble. */
static void test_golden(void **state)
{
    static const float x[8] = {6.0f, -3.0f, 0.25f, 0.75f, 1.25f, -1.75f, 5.0f, 0.1f};
    static const uint8_t want[8] = {0x00, 0x00, 0x80, 0x3f, 0xd7, 0x20, 0xc2, 0x06};
    static const float dec[8] = {6.0f, -3.0f, 0.0f, 1.0f, 1.0f, -2.0f, 4.0f, 0.0f};
    starling__codec c = parse_ok("fp4:block=8");
    uint8_t blob[9];
    float err[8], out[8];
    (void)state;
    assert_int_equal(starling__dense_size(&c, 8), sizeof want);
    blob[8] = 0x5a;
    starling__dense_encode(&c, x, 8, 0, blob, err);
    assert_memory_equal(blob, want, sizeof want);
    assert_int_equal(blob[8], 0x5a);
    starling__dense_decode(&c, blob, 8, out);
    for (int i = 0; i < 8; i++) {
        assert_true(same_float(out[i], dec[i]));
        assert_true(same_float(err[i], x[i] - dec[i]));
    }
}

/* The level nearest to v >= 0 in double, ties to the even index; *tie says v is within
 * rounding of a midpoint (the encoder multiplies by 1/scale in f32, which may land on
 * either side there). */
static int nearest_level(double v, int *tie)
{
    int best = 0;
    *tie = 0;
    for (int j = 1; j < 8; j++) {
        double mid = (levels[j - 1] + levels[j]) / 2;
        if (fabs(v - mid) <= 1e-6 * (mid + 1))
            *tie = 1;
        if (v > mid || (v == mid && j % 2 == 0))
            best = j;
    }
    return best;
}

static void check_vector(const char *spec, const float *x, size_t n)
{
    starling__codec c = parse_ok(spec);
    size_t size = starling__dense_size(&c, n), nblocks = (n + c.block - 1) / c.block;
    uint8_t *blob = malloc(size + 1);
    float *dec = malloc((n + 1) * sizeof *dec), *err = malloc((n + 1) * sizeof *err);
    float *acc = malloc((n + 1) * sizeof *acc), *alias = malloc((n + 1) * sizeof *alias);

    assert_true(blob && dec && err && acc && alias);
    assert_int_equal(size, 4 * nblocks + (n + 1) / 2);
    starling__dense_encode(&c, x, n, 0, blob, err);
    starling__dense_decode(&c, blob, n, dec);
    memcpy(alias, x, n * sizeof *x);
    starling__dense_encode(&c, alias, n, 0, blob, alias); /* err over x, in place */
    for (size_t i = 0; i < n; i++) {
        size_t b = i / c.block, start = b * c.block,
               end = start + c.block < n ? start + c.block : n;
        double amax = 0, scale;
        int tie, lv;
        for (size_t j = start; j < end; j++)
            amax = fmax(amax, fabs(x[j]));
        {
            uint32_t u = (uint32_t)blob[4 * b] | (uint32_t)blob[4 * b + 1] << 8 |
                         (uint32_t)blob[4 * b + 2] << 16 | (uint32_t)blob[4 * b + 3] << 24;
            float f;
            memcpy(&f, &u, sizeof f);
            assert_true(same_float(f, (float)amax / 6.0f)); /* scale = max |x| / 6, in f32 */
            scale = f;
        }
        assert_true(same_float(err[i], x[i] - dec[i]));
        assert_true(same_float(alias[i], err[i]));
        if (scale == 0.0) {
            assert_true(dec[i] == 0.0f);
            continue;
        }
        lv = nearest_level(fabs(x[i]) / scale, &tie);
        if (!same_float(dec[i], (float)(levels[lv] * scale) * (signbit(x[i]) ? -1.0f : 1.0f)) &&
            !tie)
            fail_msg("%s n=%zu: [%zu] x=%.9g decoded %.9g, expected level %d of scale %.9g", spec,
                     n, i, x[i], dec[i], lv, scale);
        assert_true(fabs(x[i] - dec[i]) <= scale * 1.0000001 + 1e-45);
        if (dec[i] != 0.0f)
            assert_int_equal(signbit(dec[i]) != 0, signbit(x[i]) != 0);
    }
    for (size_t i = 0; i < n; i++)
        acc[i] = 1.0f;
    starling__dense_decode_add(&c, blob, n, acc, acc);
    for (size_t i = 0; i < n; i++)
        assert_true(same_float(acc[i], 1.0f + dec[i]));
    free(blob), free(dec), free(err), free(acc), free(alias);
}

static void test_nearest(void **state)
{
    static const char *const specs[] = {"fp4", "fp4:block=8", "fp4:block=65536"};
    static const size_t sizes[] = {0, 1, 7, 33, 1000, 4099};
    (void)state;
    for (size_t s = 0; s < COUNT_OF(specs); s++) {
        for (size_t z = 0; z < COUNT_OF(sizes); z++) {
            size_t n = sizes[z];
            float *x = malloc((n + 1) * sizeof *x);
            for (int kind = 0; kind < 5; kind++) {
                for (size_t i = 0; i < n; i++) {
                    double g = rng_normal();
                    if (kind == 0)
                        x[i] = (float)g;
                    else if (kind == 1) /* heavy tails */
                        x[i] = (float)(g * g * g);
                    else if (kind == 2) /* tiny: a subnormal scale, the double path */
                        x[i] = (float)(g * 1e-40);
                    else if (kind == 3) /* huge */
                        x[i] = (float)(fmax(-4.0, fmin(4.0, g)) * 8e37);
                    else /* exact levels and midpoints of scale 1 (block max 6) */
                        x[i] = (float)((i % 8 == 0 ? 6.0 : (double)(i % 13) * 0.25) *
                                       (i & 1 ? -1 : 1));
                }
                check_vector(specs[s], x, n);
            }
            free(x);
        }
    }
}

static void test_nonfinite(void **state)
{
    starling__codec c = parse_ok("fp4:block=8");
    float x[24], out[24];
    uint8_t blob[64];
    (void)state;
    for (int i = 0; i < 24; i++)
        x[i] = (float)i - 11.5f;
    x[9] = INFINITY;
    x[20] = NAN;
    starling__dense_encode(&c, x, 24, 0, blob, NULL);
    starling__dense_decode(&c, blob, 24, out);
    for (int i = 0; i < 24; i++)
        assert_int_equal(isnan(out[i]) != 0, i >= 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_nearest),
        cmocka_unit_test(test_nonfinite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
