/* Quantized top-k ("topk:FRAC:bits=B[:block=N]", src/codec/codec_squant.c): a blob
 * written by hand from the layout in docs/codecs.md, the same indices as plain top-k,
 * the per-value error bound, signs, the residual (x - decoded at the selected indices),
 * NaN and Inf confined to their block, sizes, refusal of malformed blobs with nothing
 * written, and the public encode/decode with and without zstd.
 *
 * The bound tested, per selected value of a block with magnitudes in [lo, hi]:
 *   | |x| - |decoded| | <= scale * (1/2 + 2^-10) + 2^-22 * hi + 2^-141
 * scale/2 is the quantization bound; the other terms cover the f32 rounding of
 * lo + q * scale and of (hi - lo) / qmax, and a subnormal scale. */
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

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static int same_float(float a, float b) { return bits_of(a) == bits_of(b) || (a != a && b != b); }

static float le_f32(const uint8_t *p)
{
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

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

static size_t ef_l(size_t n, size_t k)
{
    size_t l = 0;
    if (n > k)
        while (((n / k) >> (l + 1)) != 0)
            l++;
    return l;
}

static size_t ef_bytes(size_t n, size_t k)
{
    size_t l = ef_l(n, k);
    return (k * l + 7) / 8 + (k + (n >> l) + 1 + 7) / 8;
}

static int bit_at(const uint8_t *p, size_t pos) { return (p[pos / 8] >> (pos % 8)) & 1; }

/* The k indices of a blob, read from the documented Elias-Fano layout. */
static void ef_indices(const uint8_t *blob, size_t n, size_t k, size_t *idx)
{
    size_t l = ef_l(n, k), low_bytes = (k * l + 7) / 8, found = 0;
    for (size_t pos = 0; found < k; pos++) {
        if (bit_at(blob + low_bytes, pos)) {
            size_t low = 0;
            for (size_t b = 0; b < l; b++)
                low |= (size_t)bit_at(blob, found * l + b) << b;
            idx[found] = ((pos - found) << l) | low;
            found++;
        }
    }
}

/* ---------------------------------------------------------------- the layout, by hand */

/* n = 8, topk:0.5 (k = 4), bits 2, one block of 8. Top four |x|: indices 1 3 5 6, values
 * -3 2 1 4. Elias-Fano: l = 1, low bits 1 1 1 0 (0x07), upper bits at (i>>1)+j: 0 2 4 6
 * (0x55 0x00). Block: lo = 1, hi = 4, scale = 3 (qmax 1). q: |-3| -> floor(2/3+.5) = 1,
 * 2 -> 0, 1 -> 0, 4 -> 1; codes (sign << 1 | q): 3 0 0 1, packed LSB first: 0x43. */
static void test_golden(void **state)
{
    static const float x[8] = {0.5f, -3.0f, 0.1f, 2.0f, -0.2f, 1.0f, 4.0f, 0.0f};
    static const uint8_t want[12] = {0x07, 0x55, 0x00, 0x00, 0x00, 0x80,
                                     0x3f, 0x00, 0x00, 0x40, 0x40, 0x43};
    static const float dec[8] = {0, -4.0f, 0, 1.0f, 0, 1.0f, 4.0f, 0};
    starling__codec c = parse_ok("topk:0.5:bits=2:block=8");
    uint8_t blob[13];
    float resid[8], out[8];
    (void)state;

    assert_int_equal(starling__sparse_size(&c, 8), sizeof want);
    blob[12] = 0xaa;
    assert_int_equal(starling__sparse_encode(&c, x, 8, 0, blob, resid), STARLING_OK);
    assert_memory_equal(blob, want, sizeof want);
    assert_int_equal(blob[12], 0xaa);
    for (int i = 0; i < 8; i++)
        assert_true(same_float(resid[i], dec[i] != 0 ? x[i] - dec[i] : x[i]));
    memset(out, 0, sizeof out);
    assert_int_equal(starling__sparse_accumulate(&c, blob, sizeof want, 8, 0, out), STARLING_OK);
    for (int i = 0; i < 8; i++)
        assert_true(same_float(out[i], dec[i]));
}

/* ---------------------------------------------------------------- properties */

static void check_one(const char *spec, const char *plain, const float *x, size_t n)
{
    starling__codec c = parse_ok(spec), p = parse_ok(plain);
    size_t k = starling__sparse_k(&c, n), size = starling__sparse_size(&c, n);
    size_t psize = starling__sparse_size(&p, n);
    uint8_t *blob = malloc(size + 1), *pblob = malloc(psize + 1);
    float *resid = malloc((n + 1) * sizeof *resid), *alias = malloc((n + 1) * sizeof *alias);
    float *got = calloc(n + 1, sizeof *got), *ref = calloc(n + 1, sizeof *ref);
    size_t *idx = malloc((k + 1) * sizeof *idx), nblocks, j = 0;

    assert_true(blob && pblob && resid && alias && got && ref && idx);
    assert_int_equal(k, starling__sparse_k(&p, n));
    nblocks = k ? (k + c.block - 1) / c.block : 0;
    assert_int_equal(size, k ? ef_bytes(n, k) + 8 * nblocks + (k * c.bits + 7) / 8 : 0);
    assert_int_equal(starling__sparse_encode(&c, x, n, 0, blob, resid), STARLING_OK);
    assert_int_equal(starling__sparse_encode(&p, x, n, 0, pblob, NULL), STARLING_OK);
    if (k == 0)
        goto done;
    /* The same indices as the f32 form. */
    assert_memory_equal(blob, pblob, ef_bytes(n, k));
    assert_int_equal(starling__sparse_accumulate(&c, blob, size, n, 0, got), STARLING_OK);
    assert_int_equal(starling__sparse_accumulate(&p, pblob, psize, n, 0, ref), STARLING_OK);
    /* resid computed in place over x gives the same bits. */
    memcpy(alias, x, n * sizeof *x);
    assert_int_equal(starling__sparse_encode(&c, alias, n, 0, blob, alias), STARLING_OK);
    ef_indices(blob, n, k, idx);
    for (size_t i = 0; i < n; i++) {
        int chosen = j < k && idx[j] == i;
        j += chosen;
        assert_true(same_float(alias[i], resid[i]));
        if (!chosen) {
            assert_true(same_float(resid[i], x[i]));
            assert_true(bits_of(got[i]) == 0);
        }
    }
    /* Per selected value: the bound of its block, the sign, and resid = x - decoded. */
    for (j = 0; j < k; j++) {
        size_t i = idx[j];
        const uint8_t *hdr = blob + ef_bytes(n, k) + 8 * (j / c.block);
        float lo, scale, hi, tol;
        lo = le_f32(hdr);
        scale = le_f32(hdr + 4);
        hi = lo + scale * (float)((1u << (c.bits - 1)) - 1);
        tol = scale * (0.5f + 0x1p-10f) + 0x1p-22f * hi + 0x1p-141f;
        if (!(fabsf(fabsf(x[i]) - fabsf(got[i])) <= tol))
            fail_msg("%s n=%zu: [%zu] x=%.9g decoded %.9g, block lo %.9g scale %.9g", spec, n, i,
                     x[i], got[i], lo, scale);
        assert_int_equal(signbit(x[i]) != 0, signbit(got[i]) != 0);
        assert_true(same_float(resid[i], x[i] - got[i]));
    }
done:
    free(blob), free(pblob), free(resid), free(alias), free(got), free(ref), free(idx);
}

static void test_bound_and_indices(void **state)
{
    static const char *const specs[][2] = {
        {"topk:0.02:bits=2", "topk:0.02"},       {"topk:0.02:bits=4", "topk:0.02"},
        {"topk:0.02:bits=8", "topk:0.02"},       {"topk:0.3:bits=2:block=8", "topk:0.3"},
        {"topk:1:bits=4:block=65536", "topk:1"}, {"topk:0.001:bits=2:block=16", "topk:0.001"},
    };
    static const size_t sizes[] = {0, 1, 7, 100, 1000, 20011};
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
                    else if (kind == 1) /* heavy tails: a few values dominate a block */
                        x[i] = (float)(g * g * g * g * g);
                    else if (kind == 2) /* huge: up to 3.2e38, near FLT_MAX */
                        x[i] = (float)(fmax(-4.0, fmin(4.0, g)) * 8e37);
                    else if (kind == 3) /* tiny: subnormal scales */
                        x[i] = (float)(g * 1e-40);
                    else /* few distinct values: constant blocks */
                        x[i] = (i & 1) ? -2.0f : 2.0f;
                }
                check_one(specs[s][0], specs[s][1], x, n);
            }
            free(x);
        }
    }
}

/* A NaN or Inf makes its whole block NaN (codes 0) and leaves the other blocks alone. */
static void test_nonfinite(void **state)
{
    starling__codec c = parse_ok("topk:0.5:bits=4:block=8");
    enum { N = 64 };
    float x[N], out[N];
    uint8_t blob[256];
    size_t size = starling__sparse_size(&c, N);
    (void)state;
    assert_true(size <= sizeof blob);
    for (int i = 0; i < N; i++)
        x[i] = (float)(i + 1) * (i % 3 ? 1.0f : -1.0f);
    x[63] = INFINITY; /* selected, in the last block (of 8 selected values) */
    x[62] = NAN;
    assert_int_equal(starling__sparse_encode(&c, x, N, 0, blob, NULL), STARLING_OK);
    memset(out, 0, sizeof out);
    assert_int_equal(starling__sparse_accumulate(&c, blob, size, N, 0, out), STARLING_OK);
    /* k = 32: indices 32..63, blocks of 8 in index order; the last is 56..63 */
    for (int i = 0; i < 32; i++)
        assert_true(out[i] == 0.0f);
    for (int i = 32; i < 56; i++) {
        assert_false(isnan(out[i]));
        assert_true(fabsf(out[i] - x[i]) <= 1.0f);
    }
    for (int i = 56; i < 64; i++)
        assert_true(isnan(out[i]));
}

/* A blob of the wrong length, or with a bit set in the codes' padding, is refused with
 * the output untouched. Any header bytes decode (as in the dense codecs). */
static void test_refusals(void **state)
{
    starling__codec c = parse_ok("topk:0.03:bits=2:block=8"); /* n = 100: k = 3, 6 code bits */
    float x[100], out[100];
    uint8_t blob[128];
    size_t size = starling__sparse_size(&c, 100);
    (void)state;
    for (int i = 0; i < 100; i++)
        x[i] = (float)i;
    assert_int_equal(starling__sparse_encode(&c, x, 100, 0, blob, NULL), STARLING_OK);
    for (int i = 0; i < 100; i++)
        out[i] = 7.0f;
    assert_int_equal(starling__sparse_accumulate(&c, blob, size - 1, 100, 0, out),
                     STARLING_E_PROTOCOL);
    assert_int_equal(starling__sparse_accumulate(&c, blob, size + 1, 100, 0, out),
                     STARLING_E_PROTOCOL);
    blob[size - 1] |= 0x80; /* the two padding bits after the third code */
    assert_int_equal(starling__sparse_accumulate(&c, blob, size, 100, 0, out), STARLING_E_PROTOCOL);
    for (int i = 0; i < 100; i++)
        assert_true(out[i] == 7.0f);
    blob[size - 1] &= 0x3f;
    memset(blob + size - 9, 0xff, 8); /* lo and scale NaN: decodes, to NaN */
    assert_int_equal(starling__sparse_accumulate(&c, blob, size, 100, 0, out), STARLING_OK);
    assert_true(isnan(out[99]));
}

/* The public API, with and without the zstd stage, gives the internal decoding. */
static void test_public(void **state)
{
    static const char *const specs[] = {"topk:0.05:bits=2", "topk:0.05:bits=4+zstd:1",
                                        "topk:0.05:bits=8+ef"};
    enum { N = 5000 };
    float *x = malloc(N * sizeof *x), *a = malloc(N * sizeof *a), *b = calloc(N, sizeof *b);
    (void)state;
    for (size_t i = 0; i < N; i++)
        x[i] = (float)rng_normal();
    for (size_t s = 0; s < COUNT_OF(specs); s++) {
        starling_codec *codec;
        starling__codec c = parse_ok(specs[s]);
        size_t cap, len, size = starling__sparse_size(&c, N);
        uint8_t *buf, *blob = malloc(size);
        assert_int_equal(starling_codec_create(&codec, specs[s], NULL, 0), STARLING_OK);
        cap = starling_codec_max_encoded(codec, N);
        buf = malloc(cap);
        assert_int_equal(starling_codec_encode(codec, x, N, 0, buf, cap, &len), STARLING_OK);
        assert_int_equal(starling_codec_decode(codec, buf, len, N, 0, a), STARLING_OK);
        assert_int_equal(starling__sparse_encode(&c, x, N, 0, blob, NULL), STARLING_OK);
        memset(b, 0, N * sizeof *b);
        assert_int_equal(starling__sparse_accumulate(&c, blob, size, N, 0, b), STARLING_OK);
        assert_memory_equal(a, b, N * sizeof *a);
        assert_int_equal(starling_codec_decode(codec, buf, len - 1, N, 0, a), STARLING_E_PROTOCOL);
        free(buf), free(blob);
        starling_codec_destroy(codec);
    }
    free(x), free(a), free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),    cmocka_unit_test(test_bound_and_indices),
        cmocka_unit_test(test_nonfinite), cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_public),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
