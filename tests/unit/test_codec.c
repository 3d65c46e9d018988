/* Codecs (src/codec, docs/codecs.md): the spec grammar, the casts against the kernels'
 * conversions, stochastic rounding's mean, the int8/int4 error bound on many kinds of
 * data, top-k against a sort, random-k's determinism, Elias-Fano against an independent
 * decoder written here from the documented layout, refusal of malformed blobs and zstd
 * frames, and the public API.
 *
 * The int8/int4 tolerance tested, per element of a block with range [lo, hi]:
 *   |x - decode| <= scale * (1/2 + 2^-10) + 2^-22 * max(|lo|, |hi|) + 2^-141
 * scale/2 is the quantization bound; the other terms cover the f32 rounding of x - lo,
 * of 1/scale and of lo + q * scale (each a few ulps of the block's magnitude), and the
 * rounding of a subnormal scale. */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec/codec.h"
#include "kernels/kernels.h"
#include "starling.h"
#include "util/alloc.h"

#define COUNT_OF(x) (sizeof(x) / sizeof((x)[0]))

/* ---------------------------------------------------------------- helpers */

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

/* Bitwise equal, or both NaN. */
static int same_float(float a, float b) { return bits_of(a) == bits_of(b) || (a != a && b != b); }

static uint64_t rng_state = 0x1234567887654321ull;

static uint64_t rng_next(void)
{
    /* xorshift64*: the tests' own generator, independent of the library's */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static double rng_uniform(void) { return (double)(rng_next() >> 11) * (1.0 / 9007199254740992.0); }

static double rng_normal(void)
{
    double u = rng_uniform(), v = rng_uniform();
    if (u < 1e-300)
        u = 1e-300;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static float *alloc_floats(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    assert_non_null(p);
    return p;
}

static uint8_t *alloc_bytes(size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

static float load_le_f32(const uint8_t *p)
{
    return float_of((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                    (uint32_t)p[3] << 24);
}

static uint16_t load_le_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static starling__codec parse_ok(const char *spec)
{
    starling__codec c;
    char why[256];
    int rc = starling__codec_parse(spec, &c, why, sizeof why);
    if (rc != STARLING_OK)
        fail_msg("spec '%s' refused: %s", spec, why);
    return c;
}

/* ---------------------------------------------------------------- spec grammar */

static void test_spec_accept(void **state)
{
    static const struct {
        const char *in, *canonical;
    } table[] = {
        {"none", "none"},
        {"none+zstd", "none+zstd:3"},
        {"none+zstd:19", "none+zstd:19"},
        {"f16", "f16"},
        {"f16:stochastic", "f16:stochastic"},
        {"bf16", "bf16"},
        {"bf16:stochastic+ef", "bf16:stochastic+ef"},
        {"int8", "int8:block=256"},
        {"int8:block=256", "int8:block=256"},
        {"int8:block=8", "int8:block=8"},
        {"int8:block=65536", "int8:block=65536"},
        {"int8:block=0064", "int8:block=64"},
        {"int4", "int4:block=64"},
        {"int4:block=8", "int4:block=8"},
        {"fp4", "fp4:block=32"},
        {"fp4:block=8+ef", "fp4:block=8+ef"},
        {"fp4:block=65536+zstd", "fp4:block=65536+zstd:3"},
        {"int8+ef", "int8:block=256+ef"},
        {"int8+ef+zstd", "int8:block=256+ef+zstd:3"},
        {"int8+zstd:5+ef", "int8:block=256+ef+zstd:5"},
        {"int8:block=256+ef+zstd:3", "int8:block=256+ef+zstd:3"},
        {"topk:0.01", "topk:0.01"},
        {"topk:1e-3", "topk:0.001"},
        {"topk:1E-3", "topk:0.001"},
        {"topk:0.001e+1", "topk:0.01"},
        {"topk:0.001e+1+ef", "topk:0.01+ef"},
        {"topk:.5", "topk:0.5"},
        {"topk:1", "topk:1"},
        {"topk:1.0", "topk:1"},
        {"topk:0.123456789012", "topk:0.123456789"},
        {"topk:1e-300", "topk:1e-300"},
        {"topk:0.02:bits=2", "topk:0.02:bits=2:block=128"},
        {"topk:0.02:bits=4+ef", "topk:0.02:bits=4:block=128+ef"},
        {"topk:0.02:block=64:bits=8", "topk:0.02:bits=8:block=64"},
        {"topk:1e+0:bits=2+zstd", "topk:1:bits=2:block=128+zstd:3"},
        {"topk:1e-2:bits=2:block=65536+ef", "topk:0.01:bits=2:block=65536+ef"},
        {"randk:0.25+ef+zstd:1", "randk:0.25+ef+zstd:1"},
        {"randk:1e-2", "randk:0.01"},
    };
    (void)state;
    for (size_t i = 0; i < COUNT_OF(table); i++) {
        starling__codec a = parse_ok(table[i].in), b;
        char out[STARLING_CODEC_SPEC_MAX], again[STARLING_CODEC_SPEC_MAX];
        starling__codec_format(&a, out, sizeof out);
        if (strcmp(out, table[i].canonical) != 0)
            fail_msg("'%s' formats as '%s', expected '%s'", table[i].in, out, table[i].canonical);
        /* parse(format(c)) == c, field by field and formatted again */
        b = parse_ok(out);
        assert_int_equal(a.kind, b.kind);
        assert_int_equal(a.stochastic, b.stochastic);
        assert_int_equal(a.block, b.block);
        assert_true(a.frac == b.frac);
        assert_int_equal(a.ef, b.ef);
        assert_int_equal(a.zstd_level, b.zstd_level);
        starling__codec_format(&b, again, sizeof again);
        assert_string_equal(out, again);
    }
    /* the dense/sparse predicates */
    {
        starling__codec c = parse_ok("int4");
        assert_true(starling__codec_is_dense(&c));
        assert_false(starling__codec_is_sparse(&c));
        c = parse_ok("none");
        assert_false(starling__codec_is_dense(&c));
        assert_false(starling__codec_is_sparse(&c));
        c = parse_ok("randk:0.5");
        assert_true(starling__codec_is_sparse(&c));
        c = parse_ok("bf16:stochastic");
        assert_true(starling__codec_is_dense(&c));
        assert_int_equal(c.stochastic, 1);
        c = parse_ok("int8+ef+zstd:7");
        assert_int_equal(c.block, 256);
        assert_int_equal(c.ef, 1);
        assert_int_equal(c.zstd_level, 7);
    }
}

static void test_spec_refuse(void **state)
{
    /* Each refusal's message must name the problem: it contains `needle`. */
    static const struct {
        const char *in, *needle;
    } table[] = {
        {"", "empty"},
        {"int9", "unknown codec 'int9' (expected none, f16, bf16, int8, int4, fp4, topk, randk)"},
        {"INT8", "unknown codec 'INT8'"},
        {"int8x", "unknown codec 'int8x'"},
        {"int8 ", "unknown codec 'int8 '"},
        {" int8", "unknown codec ' int8'"},
        {"+zstd", "unknown codec ''"},
        {"topk:2", "topk fraction must be in (0, 1], got '2'"},
        {"topk:0", "got '0'"},
        {"topk:0.0", "got '0.0'"},
        {"randk:1.5", "randk fraction must be in (0, 1], got '1.5'"},
        {"topk", "topk needs a fraction"},
        {"topk+ef", "topk needs a fraction"},
        {"topk:", "got ''"},
        {"topk:abc", "got 'abc'"},
        {"topk:nan", "got 'nan'"},
        {"topk:inf", "got 'inf'"},
        {"topk:-0.1", "got '-0.1'"},
        {"topk:+0.1", "got ''"},
        {"topk:0x1p-3", "got '0x1p-3'"},
        {"topk:1e", "got '1e'"},
        {"topk:0.1.2", "got '0.1.2'"},
        {"topk:0.01x", "got '0.01x'"},
        {"topk:1e-999", "got '1e-999'"},
        {"topk:0.01:0.02", "unknown option '0.02' for topk"},
        {"topk:0.01:bits=3", "topk bits must be 2, 4 or 8, got '3'"},
        {"topk:0.01:bits=", "got ''"},
        {"topk:0.01:bits=16", "got '16'"},
        {"topk:0.01:block=64", "topk block=N needs bits=2, 4 or 8"},
        {"topk:0.01:bits=2:bits=4", "topk option 'bits' given twice"},
        {"topk:0.01:bits=2:block=8:block=8", "topk option 'block' given twice"},
        {"topk:0.01:bits=2:block=12", "topk block must be a multiple of 8 in 8..65536"},
        {"topk:0.01:bits=2:block=0", "got '0'"},
        {"topk:0.01:bits=2:", "unknown option '' for topk"},
        {"randk:0.01:bits=2", "extra ':bits=2'"},
        {"int8:block=0", "int8 block must be a multiple of 8 in 8..65536, got '0'"},
        {"int8:block=12", "got '12'"},
        {"int8:block=65544", "got '65544'"},
        {"int8:block=", "got ''"},
        {"int8:block=-8", "got '-8'"},
        {"int8:block=8k", "got '8k'"},
        {"int8:block=99999999999", "got '99999999999'"},
        {"int4:block=4", "int4 block must be"},
        {"fp4:block=12", "fp4 block must be a multiple of 8 in 8..65536, got '12'"},
        {"fp4:stochastic", "unknown option 'stochastic' for fp4"},
        {"FP4", "unknown codec 'FP4'"},
        {"int8:blocks=8", "unknown option 'blocks=8' for int8"},
        {"int8:", "unknown option '' for int8"},
        {"int8:block=256:block=256", "extra ':block=256'"},
        {"f16:rne", "unknown option 'rne' for f16"},
        {"bf16:stochastic:stochastic", "extra ':stochastic'"},
        {"none:x", "none takes no option"},
        {"none+ef", "'+ef' needs a lossy codec"},
        {"int8+zstd:0", "zstd level must be 1..19, got '0'"},
        {"int8+zstd:20", "got '20'"},
        {"int8+zstd:", "got ''"},
        {"int8+zstd:x", "got 'x'"},
        {"int8+zstd:3:4", "extra ':4'"},
        {"int8+ef:1", "'+ef' takes no option"},
        {"int8+foo", "unknown suffix '+foo'"},
        {"int8+EF", "unknown suffix '+EF'"},
        {"int8+", "empty suffix"},
        {"int8++ef", "empty suffix"},
        {"int8+ef+ef", "'+ef' given twice"},
        {"int8+zstd+zstd:4", "'+zstd' given twice"},
        {"int8+ef+zstd+ef", "'+ef' given twice"},
    };
    (void)state;
    for (size_t i = 0; i < COUNT_OF(table); i++) {
        starling__codec c, before;
        char why[256];
        memset(&c, 0xa5, sizeof c);
        before = c;
        why[0] = 'X';
        if (starling__codec_parse(table[i].in, &c, why, sizeof why) != STARLING_E_INVALID)
            fail_msg("spec '%s' accepted", table[i].in);
        if (!strstr(why, table[i].needle))
            fail_msg("spec '%s': message '%s' lacks '%s'", table[i].in, why, table[i].needle);
        assert_memory_equal(&c, &before, sizeof c); /* *out untouched */
    }
    /* NULL spec, NULL or short message buffers */
    {
        starling__codec c;
        char why[12], whole[64];
        assert_int_equal(starling__codec_parse(NULL, &c, whole, sizeof whole), STARLING_E_INVALID);
        assert_non_null(strstr(whole, "NULL"));
        assert_int_equal(starling__codec_parse("int9", &c, NULL, 0), STARLING_E_INVALID);
        memset(why, 'X', sizeof why);
        assert_int_equal(starling__codec_parse("int9", &c, why, sizeof why), STARLING_E_INVALID);
        assert_int_equal(strlen(why), sizeof why - 1); /* truncated, terminated */
    }
}

/* ---------------------------------------------------------------- casts */

/* Inputs that cover the cast edge cases, then random bit patterns (all classes). */
static size_t cast_inputs(float *x, size_t n)
{
    static const uint32_t edges[] = {
        0x00000000u, 0x80000000u, 0x3f800000u, 0xbf800000u, 0x7f800000u, 0xff800000u,
        0x7fc00000u, 0xffc00000u, 0x7f800001u, 0x7fbfffffu, 0x00000001u, 0x807fffffu,
        0x7f7fffffu, 0xff7fffffu, 0x7f7f8000u, 0x7f7f7fffu, 0x3f808000u, 0x3f818000u,
        0x477fe000u, 0x477fefffu, 0x477ff000u, 0x47800000u, 0x38800000u, 0x387fffffu,
        0x33800000u, 0x33000000u, 0x33000001u, 0xb3800001u, 0x3f801000u, 0x3f803000u,
    };
    size_t i;
    for (i = 0; i < COUNT_OF(edges) && i < n; i++)
        x[i] = float_of(edges[i]);
    for (; i < n; i++) {
        uint32_t u = (uint32_t)rng_next();
        /* half the time near the f16 range so the f16 paths see normals and subnormals */
        if (i & 1)
            u = (u & 0x8fffffffu) | 0x30000000u;
        x[i] = float_of(u);
    }
    return n;
}

static void check_cast_rne(const char *spec, int bf16)
{
    const size_t n = 100003; /* not a multiple of any chunk: tails run too */
    starling__codec c = parse_ok(spec);
    float *x = alloc_floats(n), *dec = alloc_floats(n), *err = alloc_floats(n);
    float *alias = alloc_floats(n), *base = alloc_floats(n), *sum = alloc_floats(n);
    uint8_t *out = alloc_bytes(2 * n);

    cast_inputs(x, n);
    assert_int_equal(starling__dense_size(&c, n), 2 * n);
    starling__dense_encode(&c, x, n, 7, out, err);
    starling__dense_decode(&c, out, n, dec);
    for (size_t i = 0; i < n; i++) {
        uint16_t h = load_le_u16(out + 2 * i);
        uint16_t want = bf16 ? starling__f32_to_bf16(x[i]) : starling__f32_to_f16(x[i]);
        float back = bf16 ? starling__bf16_to_f32(h) : starling__f16_to_f32(h);
        if (h != want)
            fail_msg("%s: x=%08x encodes %04x, expected %04x", spec, bits_of(x[i]), h, want);
        if (!same_float(dec[i], back))
            fail_msg("%s: %04x decodes to %08x, expected %08x", spec, h, bits_of(dec[i]),
                     bits_of(back));
        if (!same_float(err[i], x[i] - back))
            fail_msg("%s: err[%zu] wrong", spec, i);
    }
    /* err may alias x */
    memcpy(alias, x, n * sizeof *x);
    starling__dense_encode(&c, alias, n, 7, out, alias);
    for (size_t i = 0; i < n; i++)
        assert_true(same_float(alias[i], err[i]));
    /* decode_add == base + decode, also in place */
    for (size_t i = 0; i < n; i++)
        base[i] = (float)rng_normal();
    starling__dense_decode_add(&c, out, n, base, sum);
    for (size_t i = 0; i < n; i++)
        assert_true(same_float(sum[i], base[i] + dec[i]));
    starling__dense_decode_add(&c, out, n, base, base);
    assert_memory_equal(base, sum, n * sizeof *sum);
    free(x), free(dec), free(err), free(alias), free(base), free(sum), free(out);
}

static void test_cast_bf16_rne(void **state)
{
    (void)state;
    check_cast_rne("bf16", 1);
}

static void test_cast_f16_rne(void **state)
{
    (void)state;
    check_cast_rne("f16", 0);
}

/* Every f32 value whose top half is each bf16 pattern, with each of a few low halves. */
static void test_cast_bf16_all_patterns(void **state)
{
    const size_t n = 65536 * 4;
    static const uint16_t lows[4] = {0x0000, 0x7fff, 0x8000, 0x8001};
    starling__codec c = parse_ok("bf16");
    float *x = alloc_floats(n);
    uint8_t *out = alloc_bytes(2 * n);
    (void)state;
    for (size_t i = 0; i < n; i++)
        x[i] = float_of((uint32_t)(i / 4) << 16 | lows[i % 4]);
    starling__dense_encode(&c, x, n, 0, out, NULL);
    for (size_t i = 0; i < n; i++)
        if (load_le_u16(out + 2 * i) != starling__f32_to_bf16(x[i]))
            fail_msg("bf16 of %08x", bits_of(x[i]));
    free(x), free(out);
}

/* The mean of many stochastic roundings of v is v; each one is a neighbour of v. */
static void check_stochastic_mean(const char *spec, float v, float lower, float upper)
{
    const size_t n = 200000;
    starling__codec c = parse_ok(spec);
    float *x = alloc_floats(n), *dec = alloc_floats(n);
    uint8_t *out = alloc_bytes(2 * n);
    double sum = 0.0, gap = fabs((double)upper - (double)lower), tol;
    size_t ups = 0, pairs = 0;
    double p, pair_rate;

    for (size_t i = 0; i < n; i++)
        x[i] = v;
    starling__dense_encode(&c, x, n, 42, out, NULL);
    starling__dense_decode(&c, out, n, dec);
    for (size_t i = 0; i < n; i++) {
        if (dec[i] != lower && dec[i] != upper)
            fail_msg("%s of %a gave %a, not a neighbour", spec, (double)v, (double)dec[i]);
        ups += dec[i] == upper;
        pairs += i > 0 && dec[i] == upper && dec[i - 1] == upper;
        sum += dec[i];
    }
    /* Neighbours round independently: both up about p^2 of the time (random bits shared
     * between elements would make it p). */
    p = (double)ups / (double)n;
    pair_rate = (double)pairs / (double)(n - 1);
    if (fabs(pair_rate - p * p) > 0.01)
        fail_msg("%s of %a: neighbours both rounded up %g of the time, expected %g", spec,
                 (double)v, pair_rate, p * p);
    /* A Bernoulli mean: sd <= gap / (2 sqrt(n)); allow 6 sd. Rounding to nearest would
     * be off by at least a tenth of the gap for the values used here. */
    tol = 6.0 * gap / (2.0 * sqrt((double)n));
    if (fabs(sum / (double)n - (double)v) > tol)
        fail_msg("%s of %a: mean %a (rounded up %zu of %zu), off by more than %g", spec, (double)v,
                 sum / (double)n, ups, n, tol);
    assert_true(tol < 0.1 * fabs((double)v - (double)lower));
    assert_true(tol < 0.1 * fabs((double)v - (double)upper));
    free(x), free(dec), free(out);
}

static void test_cast_stochastic_unbiased(void **state)
{
    (void)state;
    /* bf16: ulp at 1 is 2^-7 */
    check_stochastic_mean("bf16:stochastic", 1.0f + 0.3f * 0x1p-7f, 1.0f, 1.0f + 0x1p-7f);
    check_stochastic_mean("bf16:stochastic", -(3.0f + 0.7f * 0x1p-6f), -3.0f, -(3.0f + 0x1p-6f));
    /* bf16 in the f32 subnormal range: the bits are linear there too */
    check_stochastic_mean("bf16:stochastic", float_of(0x00012345u), float_of(0x00010000u),
                          float_of(0x00020000u));
    /* f16 normal (ulp at 1 is 2^-10) and subnormal (unit 2^-24) */
    check_stochastic_mean("f16:stochastic", 1.0f + 0.25f * 0x1p-10f, 1.0f, 1.0f + 0x1p-10f);
    check_stochastic_mean("f16:stochastic", -1000.6f, -1000.5f, -1001.0f);
    check_stochastic_mean("f16:stochastic", 2.3f * 0x1p-24f, 2.0f * 0x1p-24f, 3.0f * 0x1p-24f);
    check_stochastic_mean("f16:stochastic", 0.2f * 0x1p-24f, 0.0f, 0x1p-24f);
    check_stochastic_mean("f16:stochastic", 0x1p-14f - 0.4f * 0x1p-24f, 0x1p-14f - 0x1p-24f,
                          0x1p-14f);
}

static void test_cast_stochastic_deterministic(void **state)
{
    const size_t n = 4099;
    static const char *const specs[] = {"bf16:stochastic", "f16:stochastic"};
    float *x = alloc_floats(n), *err = alloc_floats(n), *dec = alloc_floats(n);
    uint8_t *a = alloc_bytes(2 * n), *b = alloc_bytes(2 * n);
    (void)state;
    for (size_t i = 0; i < n; i++)
        x[i] = (float)rng_normal();
    for (size_t s = 0; s < COUNT_OF(specs); s++) {
        starling__codec c = parse_ok(specs[s]);
        starling__dense_encode(&c, x, n, 1234, a, err);
        starling__dense_encode(&c, x, n, 1234, b, NULL);
        assert_memory_equal(a, b, 2 * n);
        starling__dense_encode(&c, x, n, 1235, b, NULL);
        assert_memory_not_equal(a, b, 2 * n);
        /* err is x minus what decode gives */
        starling__dense_decode(&c, a, n, dec);
        for (size_t i = 0; i < n; i++)
            assert_true(same_float(err[i], x[i] - dec[i]));
        /* element i's bits depend on (seed, i) only: a suffix encodes the same. */
        starling__dense_encode(&c, x, 100, 1234, b, NULL);
        assert_memory_equal(a, b, 200);
    }
    free(x), free(err), free(dec), free(a), free(b);
}

static void test_cast_stochastic_specials(void **state)
{
    static const float in[] = {INFINITY, -INFINITY, NAN,  -NAN,  65504.0f, 65536.0f,
                               1e30f,    -1e30f,    0.0f, -0.0f, FLT_MAX};
    const size_t n = COUNT_OF(in);
    float dec[COUNT_OF(in)];
    uint8_t out[2 * COUNT_OF(in)];
    starling__codec f16 = parse_ok("f16:stochastic"), bf16 = parse_ok("bf16:stochastic");
    (void)state;
    for (uint64_t seed = 0; seed < 50; seed++) {
        starling__dense_encode(&f16, in, n, seed, out, NULL);
        starling__dense_decode(&f16, out, n, dec);
        assert_true(dec[0] == INFINITY && dec[1] == -INFINITY);
        assert_true(isnan(dec[2]) && isnan(dec[3]));
        assert_true(dec[4] == 65504.0f); /* exact values never move */
        assert_true(dec[5] == INFINITY && dec[6] == INFINITY && dec[7] == -INFINITY);
        assert_true(bits_of(dec[8]) == 0 && bits_of(dec[9]) == 0x80000000u);
        starling__dense_encode(&bf16, in, n, seed, out, NULL);
        starling__dense_decode(&bf16, out, n, dec);
        assert_true(dec[0] == INFINITY && dec[1] == -INFINITY);
        assert_true(isnan(dec[2]) && isnan(dec[3]));
        assert_true(dec[4] == 65280.0f || dec[4] == 65536.0f); /* bf16 neighbours */
        assert_true(dec[5] == 65536.0f);
        assert_true(bits_of(dec[8]) == 0 && bits_of(dec[9]) == 0x80000000u);
        /* FLT_MAX lies between the largest bf16 and inf: either */
        assert_true(dec[10] == INFINITY || dec[10] == float_of(0x7f7f0000u));
    }
}

/* ---------------------------------------------------------------- int8 / int4 */

enum {
    DATA_NORMAL,
    DATA_SKEWED,
    DATA_NEGATIVE,
    DATA_CONSTANT,
    DATA_HUGE,
    DATA_TINY_RANGE,
    DATA_SUBNORMAL,
    DATA_MIXED_SCALES,
    DATA_KINDS
};

static void fill_data(float *x, size_t n, int kind)
{
    for (size_t i = 0; i < n; i++) {
        double g = rng_normal();
        switch (kind) {
        case DATA_NORMAL: x[i] = (float)g; break;
        case DATA_SKEWED: x[i] = (float)exp(2.0 * g); break; /* lognormal */
        case DATA_NEGATIVE: x[i] = (float)(-5.0 - fabs(g)); break;
        case DATA_CONSTANT: x[i] = -3.25f; break;
        case DATA_HUGE: x[i] = (float)(1e30 * g); break;
        case DATA_TINY_RANGE: x[i] = 1000.0f + (float)(i % 3) * 0x1p-13f; break;
        case DATA_SUBNORMAL: x[i] = float_of((uint32_t)(rng_next() & 0x7fffu)); break;
        default: x[i] = (float)(g * pow(10.0, (double)(int)(i / 97 % 60) - 30.0)); break;
        }
    }
}

/* Checks an int8/int4 encoding of x against its documented layout and error bound. */
static void check_affine(const starling__codec *c, const float *x, size_t n, const uint8_t *out,
                         const float *dec, const char *what)
{
    unsigned bits = c->kind == CODEC_INT8 ? 8 : 4;
    float qmax = (float)((1u << bits) - 1);
    size_t nblocks = (n + c->block - 1) / c->block;
    size_t size = 8 * nblocks + (bits == 8 ? n : (n + 1) / 2);

    assert_int_equal(starling__dense_size(c, n), size);
    for (size_t b = 0; b < nblocks; b++) {
        size_t start = b * c->block, end = start + c->block < n ? start + c->block : n;
        float lo = load_le_f32(out + 8 * b), scale = load_le_f32(out + 8 * b + 4);
        float mn = x[start], mx = x[start];
        double tol;
        for (size_t i = start; i < end; i++) {
            mn = x[i] < mn ? x[i] : mn;
            mx = x[i] > mx ? x[i] : mx;
        }
        if (lo != mn)
            fail_msg("%s block %zu: lo %a, min %a", what, b, (double)lo, (double)mn);
        if (mx - mn <= FLT_MAX && (mx - mn) / qmax >= FLT_MIN && scale != (mx - mn) / qmax)
            fail_msg("%s block %zu: scale %a", what, b, (double)scale);
        tol = (double)scale * (0.5 + 0x1p-10) + 0x1p-22 * fmax(fabs((double)mn), fabs((double)mx)) +
              0x1p-141;
        for (size_t i = start; i < end; i++) {
            unsigned q = bits == 8 ? out[8 * nblocks + i]
                                   : (out[8 * nblocks + i / 2] >> (4 * (i & 1))) & 15u;
            double e = fabs((double)x[i] - (double)dec[i]);
            /* decode is lo + q * scale in f32, exactly */
            if (!same_float(dec[i], lo + (float)q * scale))
                fail_msg("%s: element %zu decodes to %a, not lo + q*scale", what, i,
                         (double)dec[i]);
            if (!(e <= tol))
                fail_msg("%s: element %zu (block %zu) x=%a decoded %a error %g > %g (scale %a)",
                         what, i, b, (double)x[i], (double)dec[i], e, tol, (double)scale);
        }
    }
    if (bits == 4 && (n & 1))
        assert_int_equal(out[size - 1] >> 4, 0); /* the unused high nibble */
}

static void check_affine_all(const char *spec)
{
    static const size_t sizes[] = {0, 1, 7, 8, 63, 64, 65, 256, 257, 1000, 3 * 256 + 5, 70001};
    starling__codec c = parse_ok(spec);
    for (int kind = 0; kind < DATA_KINDS; kind++) {
        for (size_t s = 0; s < COUNT_OF(sizes); s++) {
            size_t n = sizes[s];
            size_t bytes = starling__dense_size(&c, n);
            float *x = alloc_floats(n), *dec = alloc_floats(n), *err = alloc_floats(n);
            float *base = alloc_floats(n), *sum = alloc_floats(n);
            uint8_t *out = alloc_bytes(bytes + 1);
            char what[96];

            snprintf(what, sizeof what, "%s, data %d, n %zu", spec, kind, n);
            fill_data(x, n, kind);
            out[bytes] = 0x5a; /* nothing written past dense_size */
            starling__dense_encode(&c, x, n, 0, out, err);
            assert_int_equal(out[bytes], 0x5a);
            starling__dense_decode(&c, out, n, dec);
            check_affine(&c, x, n, out, dec, what);
            for (size_t i = 0; i < n; i++) {
                if (!same_float(err[i], x[i] - dec[i]))
                    fail_msg("%s: err[%zu]", what, i);
                base[i] = (float)rng_normal();
            }
            starling__dense_decode_add(&c, out, n, base, sum);
            for (size_t i = 0; i < n; i++)
                if (!same_float(sum[i], base[i] + dec[i]))
                    fail_msg("%s: decode_add[%zu]", what, i);
            starling__dense_decode_add(&c, out, n, base, base);
            if (n)
                assert_memory_equal(base, sum, n * sizeof *sum);
            /* err may alias x */
            starling__dense_encode(&c, x, n, 0, out, x);
            for (size_t i = 0; i < n; i++)
                if (!same_float(x[i], err[i]))
                    fail_msg("%s: aliased err[%zu]", what, i);
            free(x), free(dec), free(err), free(base), free(sum), free(out);
        }
    }
}

static void test_int8_error_bound(void **state)
{
    (void)state;
    check_affine_all("int8");
    check_affine_all("int8:block=8");
    check_affine_all("int8:block=72");
    check_affine_all("int8:block=65536");
}

static void test_int4_error_bound(void **state)
{
    (void)state;
    check_affine_all("int4");
    check_affine_all("int4:block=8");
    check_affine_all("int4:block=264");
}

/* Codes are rounded, not truncated: with range [0, 255] (scale 1), 0.6 -> 1, 0.4 -> 0. */
static void test_int8_rounds_to_nearest(void **state)
{
    float x[8] = {0.0f, 255.0f, 0.6f, 0.4f, 100.5f, 254.6f, 1.49f, 2.51f};
    uint8_t out[16];
    starling__codec c = parse_ok("int8:block=8");
    (void)state;
    starling__dense_encode(&c, x, 8, 0, out, NULL);
    assert_true(load_le_f32(out) == 0.0f && load_le_f32(out + 4) == 1.0f);
    assert_int_equal(out[8 + 0], 0);
    assert_int_equal(out[8 + 1], 255);
    assert_int_equal(out[8 + 2], 1);
    assert_int_equal(out[8 + 3], 0);
    assert_int_equal(out[8 + 4], 101); /* half up */
    assert_int_equal(out[8 + 5], 255);
    assert_int_equal(out[8 + 6], 1);
    assert_int_equal(out[8 + 7], 3);
}

/* A NaN or inf makes its block decode to NaN (lo = scale = NaN, codes 0); other blocks
 * are unaffected. */
static void test_affine_nonfinite(void **state)
{
    static const char *const specs[] = {"int8:block=8", "int4:block=8"};
    static const float bad[] = {NAN, INFINITY, -INFINITY};
    (void)state;
    for (size_t s = 0; s < COUNT_OF(specs); s++) {
        for (size_t v = 0; v < COUNT_OF(bad); v++) {
            starling__codec c = parse_ok(specs[s]);
            float x[24], dec[24], err[24];
            uint8_t out[64];
            size_t nb = 3, codes = 8 * nb;
            for (int i = 0; i < 24; i++)
                x[i] = (float)i - 10.0f;
            x[13] = bad[v];
            starling__dense_encode(&c, x, 24, 0, out, err);
            starling__dense_decode(&c, out, 24, dec);
            assert_true(isnan(load_le_f32(out + 8)) && isnan(load_le_f32(out + 12)));
            for (int i = 0; i < 24; i++) {
                if (i >= 8 && i < 16) {
                    assert_true(isnan(dec[i]));
                    assert_true(isnan(err[i]));
                } else {
                    assert_true(fabsf(dec[i] - x[i]) <=
                                0.5f * load_le_f32(out + 8 * (i / 8) + 4) + 1e-5f);
                }
            }
            for (size_t i = 8; i < 16; i++) /* codes 0 */
                assert_int_equal(c.kind == CODEC_INT8 ? out[codes + i] : out[codes + i / 2], 0);
        }
    }
}

/* Values of both signs near FLT_MAX: the range overflows f32, the slow path is taken.
 * The bound holds while lo + q * scale stays finite (docs/codecs.md). */
static void test_affine_wide_range(void **state)
{
    float x[16], dec[16];
    uint8_t out[32];
    starling__codec c = parse_ok("int8:block=16");
    float scale;
    (void)state;
    for (int i = 0; i < 16; i++)
        x[i] = (float)(-3e38 + 1e38 * i / 4.0);
    x[15] = -x[0];
    starling__dense_encode(&c, x, 16, 0, out, NULL);
    starling__dense_decode(&c, out, 16, dec);
    scale = load_le_f32(out + 4);
    assert_true(load_le_f32(out) == x[0]);
    assert_true(isfinite(scale) && scale > 0.0f);
    for (int i = 0; i < 16; i++)
        if (isfinite(dec[i]))
            assert_true(fabs((double)dec[i] - x[i]) <=
                        0.5 * scale * (1 + 0x1p-10) + 0x1p-22 * 3e38);
}

/* Every byte pattern decodes without failure (no UB: run under the sanitizers). */
static void test_dense_decode_any_bytes(void **state)
{
    static const char *const specs[] = {"int8:block=8", "int4:block=8", "f16", "bf16"};
    uint8_t in[512];
    float out[200];
    (void)state;
    for (size_t s = 0; s < COUNT_OF(specs); s++) {
        starling__codec c = parse_ok(specs[s]);
        for (int round = 0; round < 50; round++) {
            for (size_t i = 0; i < sizeof in; i++)
                in[i] = (uint8_t)rng_next();
            assert_true(starling__dense_size(&c, 200) <= sizeof in);
            starling__dense_decode(&c, in, 200, out);
        }
    }
}

/* ---------------------------------------------------------------- Elias-Fano, test side */

/* An independent reading of the documented layout: low parts (l bits each, LSB first),
 * then the upper unary vector; returns the number of indices found. */
static size_t ef_layout_l(size_t n, size_t k)
{
    size_t l = 0;
    if (n > k)
        while (((n / k) >> (l + 1)) != 0)
            l++;
    return l;
}

static size_t ef_size(size_t n, size_t k)
{
    size_t l = ef_layout_l(n, k);
    return (k * l + 7) / 8 + (k + (n >> l) + 1 + 7) / 8;
}

static int test_bit(const uint8_t *p, size_t pos) { return (p[pos / 8] >> (pos % 8)) & 1; }

static size_t ef_decode_ref(const uint8_t *blob, size_t n, size_t k, size_t *idx)
{
    size_t l = ef_layout_l(n, k), low_bytes = (k * l + 7) / 8;
    size_t upper_bits = k + (n >> l) + 1, found = 0;
    for (size_t pos = 0; pos < upper_bits && found < k; pos++) {
        if (test_bit(blob + low_bytes, pos)) {
            size_t low = 0;
            for (size_t b = 0; b < l; b++)
                low |= (size_t)test_bit(blob, found * l + b) << b;
            idx[found] = ((pos - found) << l) | low;
            found++;
        }
    }
    return found;
}

/* Writes any index list (even a malformed one) in the layout; the blob is zeroed first. */
static void ef_encode_ref(uint8_t *blob, size_t n, size_t k, const size_t *idx)
{
    size_t l = ef_layout_l(n, k), low_bytes = (k * l + 7) / 8;
    memset(blob, 0, ef_size(n, k));
    for (size_t i = 0; i < k; i++) {
        size_t up = (idx[i] >> l) + i;
        for (size_t b = 0; b < l; b++)
            if ((idx[i] >> b) & 1)
                blob[(i * l + b) / 8] |= (uint8_t)(1u << ((i * l + b) % 8));
        if (up / 8 < ef_size(n, k) - low_bytes)
            blob[low_bytes + up / 8] |= (uint8_t)(1u << (up % 8));
    }
}

/* ---------------------------------------------------------------- top-k */

static double spec_frac(const char *spec) { return parse_ok(spec).frac; }

static const float *sort_keys_x;

static uint32_t ref_key(float f)
{
    uint32_t m = bits_of(f) & 0x7fffffffu;
    return m > 0x7f800000u ? 0xffffffffu : m;
}

/* Descending |x| (NaN first), then ascending index. */
static int cmp_rank(const void *a, const void *b)
{
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    uint32_t ki = ref_key(sort_keys_x[i]), kj = ref_key(sort_keys_x[j]);
    if (ki != kj)
        return ki > kj ? -1 : 1;
    return (i > j) - (i < j);
}

static int cmp_size(const void *a, const void *b)
{
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    return (i > j) - (i < j);
}

/* Runs topk on x and checks the chosen set against a full sort. */
static void check_topk(const char *spec, const float *x, size_t n)
{
    starling__codec c = parse_ok(spec);
    size_t k = starling__sparse_k(&c, n), size = starling__sparse_size(&c, n);
    size_t *order = malloc((n + 1) * sizeof *order), *got = malloc((k + 1) * sizeof *got);
    uint8_t *blob = alloc_bytes(size + 1);
    float *resid = alloc_floats(n), *acc = alloc_floats(n);
    size_t vals;

    assert_non_null(order);
    assert_non_null(got);
    assert_int_equal(size, k ? ef_size(n, k) + 4 * k : 0);
    blob[size] = 0x77;
    assert_int_equal(starling__sparse_encode(&c, x, n, 0, blob, resid), STARLING_OK);
    assert_int_equal(blob[size], 0x77);
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    sort_keys_x = x;
    qsort(order, n, sizeof *order, cmp_rank);
    qsort(order, k, sizeof *order, cmp_size);
    if (k == 0)
        goto done;
    assert_int_equal(ef_decode_ref(blob, n, k, got), k);
    vals = ef_size(n, k);
    for (size_t i = 0; i < k; i++) {
        if (got[i] != order[i])
            fail_msg("%s n=%zu k=%zu: index %zu is %zu, expected %zu", spec, n, k, i, got[i],
                     order[i]);
        assert_true(same_float(load_le_f32(blob + vals + 4 * i), x[got[i]]));
    }
    /* resid: x with the chosen set to 0 */
    for (size_t i = 0, j = 0; i < n; i++) {
        int chosen = j < k && order[j] == i;
        j += chosen;
        assert_true(chosen ? bits_of(resid[i]) == 0 : same_float(resid[i], x[i]));
    }
    /* accumulate adds the values at their indices */
    for (size_t i = 0; i < n; i++)
        acc[i] = 1.0f;
    assert_int_equal(starling__sparse_accumulate(&c, blob, size, n, 0, acc), STARLING_OK);
    for (size_t i = 0, j = 0; i < n; i++) {
        int chosen = j < k && order[j] == i;
        j += chosen;
        assert_true(same_float(acc[i], chosen ? 1.0f + x[i] : 1.0f));
    }
done:
    free(order), free(got), free(blob), free(resid), free(acc);
}

static void test_topk_exact(void **state)
{
    static const char *const specs[] = {"topk:0.001", "topk:0.01", "topk:0.1",
                                        "topk:0.5",   "topk:0.9",  "topk:1"};
    static const size_t sizes[] = {0, 1, 2, 3, 17, 1000, 4097, 100000};
    (void)state;
    for (size_t s = 0; s < COUNT_OF(specs); s++) {
        for (size_t z = 0; z < COUNT_OF(sizes); z++) {
            size_t n = sizes[z];
            float *x = alloc_floats(n);
            for (int kind = 0; kind < 4; kind++) {
                for (size_t i = 0; i < n; i++) {
                    double g = rng_normal();
                    if (kind == 0)
                        x[i] = (float)g;
                    else if (kind == 1) /* many ties: few distinct magnitudes, both signs */
                        x[i] = (float)((int)(g * 3.0)) * 0.5f;
                    else if (kind == 2) /* all equal magnitude: the lowest indices win */
                        x[i] = (i & 1) ? -1.0f : 1.0f;
                    else /* all zero */
                        x[i] = (i % 3) ? 0.0f : -0.0f;
                }
                check_topk(specs[s], x, n);
            }
            free(x);
        }
    }
}

/* NaN ranks above inf, inf above everything else; among NaNs the lower index wins. */
static void test_topk_nan_first(void **state)
{
    float x[1000];
    starling__codec c = parse_ok("topk:0.005"); /* k = 5 */
    size_t idx[5];
    uint8_t blob[256];
    (void)state;
    for (int i = 0; i < 1000; i++)
        x[i] = (float)i;
    x[900] = NAN;
    x[10] = -NAN;
    x[500] = NAN;
    x[20] = INFINITY;
    x[30] = -INFINITY;
    x[40] = float_of(0x7f800123u); /* NaN with another payload */
    assert_int_equal(starling__sparse_k(&c, 1000), 5);
    check_topk("topk:0.005", x, 1000);
    assert_int_equal(starling__sparse_encode(&c, x, 1000, 0, blob, NULL), STARLING_OK);
    ef_decode_ref(blob, 1000, 5, idx);
    /* four NaNs, then the lower-indexed infinity */
    assert_int_equal(idx[0], 10);
    assert_int_equal(idx[1], 20);
    assert_int_equal(idx[2], 40);
    assert_int_equal(idx[3], 500);
    assert_int_equal(idx[4], 900);
}

static void test_sparse_k(void **state)
{
    starling__codec c = parse_ok("topk:0.01");
    (void)state;
    assert_int_equal(starling__sparse_k(&c, 0), 0);
    assert_int_equal(starling__sparse_k(&c, 1), 1);
    assert_int_equal(starling__sparse_k(&c, 99), 1);
    assert_int_equal(starling__sparse_k(&c, 100), 1);
    assert_int_equal(starling__sparse_k(&c, 101), 2);
    assert_int_equal(starling__sparse_k(&c, 16777216), 167773);
    c = parse_ok("topk:1");
    assert_int_equal(starling__sparse_k(&c, 12345), 12345);
    c = parse_ok("randk:0.5");
    assert_int_equal(starling__sparse_k(&c, 3), 2);
    assert_int_equal(starling__sparse_size(&c, 3), 8);
    assert_int_equal(starling__sparse_size(&c, 0), 0);
    c = parse_ok("topk:1e-300");
    assert_int_equal(starling__sparse_k(&c, 1000000), 1);
    (void)spec_frac;
}

/* Elias-Fano round trip through the library for many (n, k): the chosen set is planted
 * as the largest magnitudes. */
static void test_elias_fano_round_trip(void **state)
{
    static const size_t sizes[] = {1,  2,  3,   5,   7,   8,   9,    15,   16,   17,   31,   63,
                                   64, 65, 100, 127, 128, 129, 1000, 1023, 1024, 1025, 4097, 65537};
    static const char *const specs[] = {"topk:1e-9", "topk:0.001", "topk:0.01",
                                        "topk:0.1",  "topk:0.3",   "topk:0.5",
                                        "topk:0.9",  "topk:0.999", "topk:1"};
    (void)state;
    for (size_t z = 0; z < COUNT_OF(sizes); z++) {
        size_t n = sizes[z];
        float *x = alloc_floats(n), *acc = alloc_floats(n);
        size_t *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got);
        assert_non_null(want);
        assert_non_null(got);
        for (size_t s = 0; s < COUNT_OF(specs); s++) {
            starling__codec c = parse_ok(specs[s]);
            size_t k = starling__sparse_k(&c, n), m = 0, size = starling__sparse_size(&c, n);
            uint8_t *blob = alloc_bytes(size);
            /* choose k of n: a random subset, or the first or last k */
            for (size_t i = 0; i < n; i++)
                x[i] = (float)rng_uniform();
            for (size_t left = k, i = 0; i < n; i++) {
                int take;
                if (s % 3 == 0)
                    take = i < k;
                else if (s % 3 == 1)
                    take = i >= n - k;
                else
                    take = rng_uniform() * (double)(n - i) < (double)left;
                if (take) {
                    x[i] = 2.0f + (float)i;
                    want[m++] = i;
                    left--;
                }
            }
            assert_int_equal(m, k);
            assert_int_equal(size, ef_size(n, k) + 4 * k);
            assert_int_equal(starling__sparse_encode(&c, x, n, 0, blob, NULL), STARLING_OK);
            assert_int_equal(ef_decode_ref(blob, n, k, got), k);
            assert_memory_equal(got, want, k * sizeof *got);
            memset(acc, 0, n * sizeof *acc);
            assert_int_equal(starling__sparse_accumulate(&c, blob, size, n, 0, acc), STARLING_OK);
            for (size_t i = 0; i < k; i++)
                assert_true(acc[want[i]] == x[want[i]]);
            free(blob);
        }
        free(x), free(acc), free(want), free(got);
    }
}

/* Malformed blobs are refused with nothing written. */
static void check_refused(const starling__codec *c, const uint8_t *blob, size_t len, size_t n,
                          const char *what)
{
    float out[300], before[300];
    assert_true(n <= 300);
    for (size_t i = 0; i < n; i++)
        out[i] = before[i] = (float)i * 0.5f;
    if (starling__sparse_accumulate(c, blob, len, n, 0, out) != STARLING_E_PROTOCOL)
        fail_msg("%s: accepted", what);
    assert_memory_equal(out, before, n * sizeof *out);
}

static void test_sparse_refuses_malformed(void **state)
{
    const size_t n = 300;
    starling__codec c = parse_ok("topk:0.02"); /* k = 6 */
    size_t k = starling__sparse_k(&c, n), size = starling__sparse_size(&c, n);
    size_t idx[6] = {3, 50, 51, 120, 200, 299};
    uint8_t blob[128], bad[128];
    float x[300], out[300];
    size_t flips_accepted = 0;
    (void)state;

    assert_int_equal(k, 6);
    assert_true(size <= sizeof blob);
    for (size_t i = 0; i < n; i++)
        x[i] = 0.0f;
    for (size_t i = 0; i < k; i++)
        x[idx[i]] = 1.0f + (float)i;
    assert_int_equal(starling__sparse_encode(&c, x, n, 0, blob, NULL), STARLING_OK);
    ef_encode_ref(bad, n, k, idx);
    assert_memory_equal(bad, blob, ef_size(n, k)); /* the layout matches the docs */

    check_refused(&c, blob, size - 1, n, "truncated");
    check_refused(&c, blob, size + 1, n, "too long");
    check_refused(&c, blob, 0, n, "empty");
    {
        size_t v[6] = {3, 50, 51, 120, 200, 300}; /* index == n */
        memcpy(bad, blob, size);
        ef_encode_ref(bad, n, k, v);
        check_refused(&c, bad, size, n, "index n");
    }
    {
        size_t v[6] = {3, 50, 49, 120, 200, 299}; /* decreasing, same upper part */
        memcpy(bad, blob, size);
        ef_encode_ref(bad, n, k, v);
        check_refused(&c, bad, size, n, "decreasing");
    }
    {
        size_t v[6] = {3, 50, 50, 120, 200, 299}; /* repeated */
        memcpy(bad, blob, size);
        ef_encode_ref(bad, n, k, v);
        check_refused(&c, bad, size, n, "repeated");
    }
    {
        size_t l = ef_layout_l(n, k), low = (k * l + 7) / 8, upper_bits = k + (n >> l) + 1;
        /* a seventh one in the upper vector */
        memcpy(bad, blob, size);
        bad[low] |= 1u << 0;
        if (bad[low] != blob[low])
            check_refused(&c, bad, size, n, "k+1 ones");
        /* one fewer */
        memcpy(bad, blob, size);
        for (size_t pos = 0; pos < upper_bits; pos++)
            if (test_bit(bad + low, pos)) {
                bad[low + pos / 8] &= (uint8_t) ~(1u << (pos % 8));
                break;
            }
        check_refused(&c, bad, size, n, "k-1 ones");
        /* a one in the padding of the upper vector */
        if (upper_bits % 8) {
            memcpy(bad, blob, size);
            bad[low + upper_bits / 8] |= 0x80;
            check_refused(&c, bad, size, n, "upper padding");
        }
        /* a one in the padding of the low parts */
        if ((k * l) % 8) {
            memcpy(bad, blob, size);
            bad[low - 1] |= 0x80;
            check_refused(&c, bad, size, n, "low padding");
        }
        /* the upper vector all ones */
        memcpy(bad, blob, size);
        memset(bad + low, 0xff, ef_size(n, k) - low);
        check_refused(&c, bad, size, n, "all ones");
    }
    /* every single-bit flip of the index area: refused with nothing written, or accepted
     * as another valid index list (a flipped low bit can keep the list increasing) */
    for (size_t bit = 0; bit < 8 * ef_size(n, k); bit++) {
        int rc;
        size_t got[6];
        memcpy(bad, blob, size);
        bad[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        memset(out, 0, sizeof out);
        rc = starling__sparse_accumulate(&c, bad, size, n, 0, out);
        if (rc == STARLING_OK) {
            flips_accepted++;
            assert_int_equal(ef_decode_ref(bad, n, k, got), k);
            for (size_t i = 0; i < k; i++) {
                assert_true(got[i] < n && (i == 0 || got[i] > got[i - 1]));
                assert_true(out[got[i]] == 1.0f + (float)i);
            }
        } else {
            check_refused(&c, bad, size, n, "bit flip");
        }
    }
    assert_true(flips_accepted < 8 * ef_size(n, k) / 2);
    /* random garbage of the right length never crashes and never half-writes */
    for (int round = 0; round < 2000; round++) {
        float before[300];
        for (size_t i = 0; i < size; i++)
            bad[i] = (uint8_t)rng_next();
        for (size_t i = 0; i < n; i++)
            out[i] = before[i] = (float)i;
        if (starling__sparse_accumulate(&c, bad, size, n, 0, out) != STARLING_OK)
            assert_memory_equal(out, before, sizeof before);
    }
}

/* ---------------------------------------------------------------- random-k */

/* The indices a randk blob stands for, recovered by accumulating x[i] = i + 1. */
static size_t randk_indices(const starling__codec *c, size_t n, uint64_t seed, size_t *idx)
{
    size_t k = starling__sparse_k(c, n), m = 0;
    float *x = alloc_floats(n), *acc = alloc_floats(n), *resid = alloc_floats(n);
    uint8_t *blob = alloc_bytes(4 * k);
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)(i + 1);
        acc[i] = 0.0f;
    }
    assert_int_equal(starling__sparse_size(c, n), 4 * k);
    assert_int_equal(starling__sparse_encode(c, x, n, seed, blob, resid), STARLING_OK);
    /* the values travel in index order */
    for (size_t i = 1; i < k; i++)
        assert_true(load_le_f32(blob + 4 * i) > load_le_f32(blob + 4 * (i - 1)));
    assert_int_equal(starling__sparse_accumulate(c, blob, 4 * k, n, seed, acc), STARLING_OK);
    for (size_t i = 0; i < n; i++) {
        if (acc[i] != 0.0f) {
            assert_true(acc[i] == x[i]);
            assert_true(resid[i] == 0.0f);
            idx[m++] = i;
        } else {
            assert_true(resid[i] == x[i]);
        }
    }
    assert_int_equal(m, k); /* exactly k, distinct */
    free(x), free(acc), free(resid), free(blob);
    return m;
}

static void test_randk(void **state)
{
    const size_t n = 1000;
    starling__codec c = parse_ok("randk:0.05");
    size_t a[1000], b[1000];
    size_t counts[1000] = {0};
    (void)state;

    assert_int_equal(randk_indices(&c, n, 99, a), 50);
    assert_int_equal(randk_indices(&c, n, 99, b), 50);
    assert_memory_equal(a, b, 50 * sizeof *a);
    randk_indices(&c, n, 100, b);
    assert_memory_not_equal(a, b, 50 * sizeof *a);
    /* The draw is part of the protocol: every machine must make the same one. Golden
     * indices for seed 99 (if this changes, peers of different versions disagree). */
    {
        starling__codec small = parse_ok("randk:0.05");
        size_t g[5];
        static const size_t golden[5] = {23, 36, 70, 94, 95};
        randk_indices(&small, 100, 99, g);
        for (int i = 0; i < 5; i++)
            if (g[i] != golden[i])
                fail_msg("randk seed 99: index %d is %zu, golden %zu", i, g[i], golden[i]);
    }
    /* Every index about equally likely: 2000 draws of 50 of 1000 -> 100 each expected. */
    for (uint64_t seed = 0; seed < 2000; seed++) {
        size_t k = randk_indices(&c, n, seed * 7919, a);
        for (size_t i = 0; i < k; i++)
            counts[a[i]]++;
    }
    for (size_t i = 0; i < n; i++)
        if (counts[i] < 50 || counts[i] > 160)
            fail_msg("index %zu drawn %zu times in 2000 draws (expected about 100)", i, counts[i]);
    /* k = n and k = 1 */
    c = parse_ok("randk:1");
    assert_int_equal(randk_indices(&c, 37, 5, a), 37);
    c = parse_ok("randk:1e-6");
    assert_int_equal(randk_indices(&c, 37, 5, a), 1);
    assert_int_equal(randk_indices(&c, 1, 5, a), 1);
    assert_int_equal(a[0], 0);
    /* wrong length refused */
    {
        uint8_t blob[8] = {0};
        float out[2] = {1.0f, 2.0f};
        c = parse_ok("randk:0.5");
        assert_int_equal(starling__sparse_accumulate(&c, blob, 3, 2, 0, out), STARLING_E_PROTOCOL);
        assert_true(out[0] == 1.0f && out[1] == 2.0f);
    }
}

/* ---------------------------------------------------------------- zstd */

static void test_zstd(void **state)
{
    const size_t n = 100000;
    starling__zstd *z = starling__zstd_new();
    uint8_t *src = alloc_bytes(n), *dst = alloc_bytes(n + 1024), *back = alloc_bytes(n);
    uint8_t *two = alloc_bytes(2 * n + 2048);
    size_t packed;
    (void)state;
    assert_non_null(z);

    for (size_t i = 0; i < n; i++)
        src[i] = (uint8_t)(i % 7 == 0 ? rng_next() : i / 1000);
    packed = starling__zstd_pack(z, 3, src, n, dst, n + 1024);
    assert_true(packed > 0 && packed < n);
    assert_int_equal(starling__zstd_unpack(z, dst, packed, back, n), STARLING_OK);
    assert_memory_equal(src, back, n);
    /* reused contexts, another level */
    packed = starling__zstd_pack(z, 19, src, n, dst, n + 1024);
    assert_true(packed > 0);
    assert_int_equal(starling__zstd_unpack(z, dst, packed, back, n), STARLING_OK);
    assert_memory_equal(src, back, n);

    /* refusals */
    assert_int_equal(starling__zstd_unpack(z, dst, packed, back, n - 1), STARLING_E_PROTOCOL);
    assert_int_equal(starling__zstd_unpack(z, dst, packed - 1, back, n), STARLING_E_PROTOCOL);
    assert_int_equal(starling__zstd_unpack(z, dst, 3, back, n), STARLING_E_PROTOCOL);
    assert_int_equal(starling__zstd_unpack(z, dst, 0, back, n), STARLING_E_PROTOCOL);
    {
        uint8_t *bad = alloc_bytes(packed + 1);
        memcpy(bad, dst, packed);
        bad[packed] = 0; /* trailing garbage */
        assert_int_equal(starling__zstd_unpack(z, bad, packed + 1, back, n), STARLING_E_PROTOCOL);
        bad[0] ^= 0xff; /* magic */
        assert_int_equal(starling__zstd_unpack(z, bad, packed, back, n), STARLING_E_PROTOCOL);
        memcpy(bad, dst, packed);
        bad[4] ^= 0x40; /* frame header descriptor */
        assert_int_equal(starling__zstd_unpack(z, bad, packed, back, n), STARLING_E_PROTOCOL);
        /* corruption inside the compressed blocks: refused or, if zstd cannot tell (the
         * frame has no checksum), some output of the right size, never a crash */
        for (size_t i = 6; i < packed; i += 1 + packed / 300) {
            memcpy(bad, dst, packed);
            bad[i] ^= 0x5a;
            (void)starling__zstd_unpack(z, bad, packed, back, n);
        }
        free(bad);
    }
    /* two concatenated frames of half each: the content size check refuses the first */
    {
        size_t a = starling__zstd_pack(z, 3, src, n / 2, two, n);
        size_t b = starling__zstd_pack(z, 3, src + n / 2, n - n / 2, two + a, n);
        assert_true(a > 0 && b > 0);
        assert_int_equal(starling__zstd_unpack(z, two, a + b, back, n), STARLING_E_PROTOCOL);
        assert_int_equal(starling__zstd_unpack(z, two, a + b, back, n / 2), STARLING_E_PROTOCOL);
    }

    /* incompressible data and tiny inputs give 0 */
    for (size_t i = 0; i < n; i++)
        src[i] = (uint8_t)rng_next();
    assert_int_equal(starling__zstd_pack(z, 3, src, n, dst, n + 1024), 0);
    assert_int_equal(starling__zstd_pack(z, 3, src, 0, dst, n), 0);
    assert_int_equal(starling__zstd_pack(z, 3, src, 5, dst, n), 0);
    /* a dst too small for the frame gives 0 too */
    memset(src, 0, n);
    assert_int_equal(starling__zstd_pack(z, 3, src, n, dst, 4), 0);
    starling__zstd_free(z);
    starling__zstd_free(NULL);
    free(src), free(dst), free(back), free(two);
}

/* ---------------------------------------------------------------- public API */

static void api_round_trip(const char *spec, size_t n, int kind)
{
    starling_codec *codec = NULL;
    char err[128];
    float *x = alloc_floats(n), *y = alloc_floats(n), *z = alloc_floats(n);
    size_t cap, len = 0;
    uint8_t *buf;
    starling__codec c = parse_ok(spec);

    assert_int_equal(starling_codec_create(&codec, spec, err, sizeof err), STARLING_OK);
    cap = starling_codec_max_encoded(codec, n);
    buf = alloc_bytes(cap + 1);
    fill_data(x, n, kind);
    assert_int_equal(starling_codec_encode(codec, x, n, 77, buf, cap, &len), STARLING_OK);
    assert_true(len <= cap);
    if (c.zstd_level) {
        assert_true(buf[0] == 0 || buf[0] == 1);
        assert_true(buf[0] == 1 || len == cap);
    } else {
        assert_int_equal(len, cap);
    }
    assert_int_equal(starling_codec_decode(codec, buf, len, n, 77, y), STARLING_OK);

    /* the same as the internal functions give */
    if (c.kind == CODEC_NONE) {
        if (n)
            assert_memory_equal(x, y, n * sizeof *x);
    } else if (starling__codec_is_dense(&c)) {
        uint8_t *raw = alloc_bytes(starling__dense_size(&c, n));
        starling__dense_encode(&c, x, n, 77, raw, NULL);
        starling__dense_decode(&c, raw, n, z);
        for (size_t i = 0; i < n; i++)
            assert_true(same_float(y[i], z[i]));
        if (!c.zstd_level)
            assert_memory_equal(raw, buf, len);
        free(raw);
    } else {
        uint8_t *raw = alloc_bytes(starling__sparse_size(&c, n));
        assert_int_equal(starling__sparse_encode(&c, x, n, 77, raw, NULL), STARLING_OK);
        memset(z, 0, n * sizeof *z);
        assert_int_equal(
            starling__sparse_accumulate(&c, raw, starling__sparse_size(&c, n), n, 77, z),
            STARLING_OK);
        for (size_t i = 0; i < n; i++)
            assert_true(same_float(y[i], z[i]));
        free(raw);
    }

    /* wrong lengths are refused */
    if (n > 0) {
        assert_int_equal(starling_codec_decode(codec, buf, len - 1, n, 77, y), STARLING_E_PROTOCOL);
        buf[len] = 0;
        if (!(c.zstd_level && buf[0] == 1))
            assert_int_equal(starling_codec_decode(codec, buf, len + 1, n, 77, y),
                             STARLING_E_PROTOCOL);
    }
    /* out_cap too small */
    if (cap > 0)
        assert_int_equal(starling_codec_encode(codec, x, n, 77, buf, cap - 1, &len),
                         STARLING_E_INVALID);
    starling_codec_destroy(codec);
    free(x), free(y), free(z), free(buf);
}

static void test_api_round_trips(void **state)
{
    static const char *const specs[] = {
        "none",
        "none+zstd",
        "f16",
        "bf16:stochastic+zstd:1",
        "int8",
        "int8+zstd",
        "int4+ef+zstd:9",
        "topk:0.01",
        "topk:0.1+zstd",
        "randk:0.05",
        "randk:0.3+ef+zstd",
    };
    static const size_t sizes[] = {0, 1, 1000, 65537};
    (void)state;
    for (size_t s = 0; s < COUNT_OF(specs); s++)
        for (size_t z = 0; z < COUNT_OF(sizes); z++) {
            api_round_trip(specs[s], sizes[z], DATA_NORMAL);
            api_round_trip(specs[s], sizes[z], DATA_CONSTANT);
        }
}

static void test_api_spec_and_refusals(void **state)
{
    starling_codec *codec = (starling_codec *)&codec, *plain = NULL;
    char err[200];
    float x[64] = {0}, y[64];
    uint8_t buf[1024];
    size_t len;
    (void)state;

    assert_int_equal(starling_codec_create(&codec, "int9", err, sizeof err), STARLING_E_INVALID);
    assert_null(codec);
    assert_string_equal(
        err, "unknown codec 'int9' (expected none, f16, bf16, int8, int4, fp4, topk, randk)");
    assert_int_equal(starling_codec_create(&codec, NULL, err, sizeof err), STARLING_E_INVALID);
    assert_int_equal(starling_codec_create(&codec, "int9", NULL, 0), STARLING_E_INVALID);
    assert_int_equal(starling_codec_create(NULL, "int8", err, sizeof err), STARLING_E_INVALID);

    assert_int_equal(starling_codec_create(&codec, "int8+zstd+ef", err, sizeof err), STARLING_OK);
    assert_string_equal(starling_codec_spec(codec), "int8:block=256+ef+zstd:3");
    assert_int_equal(starling_codec_max_encoded(codec, 64), 1 + 8 + 64);
    assert_int_equal(starling_codec_max_encoded(codec, 0), 1);
    assert_int_equal(starling_codec_max_encoded(NULL, 64), 0);
    assert_true(starling_codec_max_encoded(codec, SIZE_MAX / 2) == SIZE_MAX);
    assert_null(starling_codec_spec(NULL));

    /* NULL arguments */
    assert_int_equal(starling_codec_encode(NULL, x, 64, 0, buf, sizeof buf, &len),
                     STARLING_E_INVALID);
    assert_int_equal(starling_codec_encode(codec, NULL, 64, 0, buf, sizeof buf, &len),
                     STARLING_E_INVALID);
    assert_int_equal(starling_codec_encode(codec, x, 64, 0, NULL, sizeof buf, &len),
                     STARLING_E_INVALID);
    assert_int_equal(starling_codec_encode(codec, x, 64, 0, buf, sizeof buf, NULL),
                     STARLING_E_INVALID);
    assert_int_equal(starling_codec_encode(codec, x, SIZE_MAX / 2, 0, buf, sizeof buf, &len),
                     STARLING_E_INVALID);
    assert_int_equal(starling_codec_decode(NULL, buf, 10, 64, 0, y), STARLING_E_INVALID);
    assert_int_equal(starling_codec_decode(codec, NULL, 10, 64, 0, y), STARLING_E_INVALID);
    assert_int_equal(starling_codec_decode(codec, buf, 10, 64, 0, NULL), STARLING_E_INVALID);

    /* zstd framing: an all-zero vector compresses; flags other than 0/1, empty input, a
     * packed flag on a bad frame, and a raw flag with the wrong length are refused */
    assert_int_equal(starling_codec_encode(codec, x, 64, 0, buf, sizeof buf, &len), STARLING_OK);
    assert_int_equal(buf[0], 1);
    assert_true(len < 1 + 8 + 64);
    assert_int_equal(starling_codec_decode(codec, buf, len, 64, 0, y), STARLING_OK);
    assert_int_equal(starling_codec_decode(codec, buf, len, 63, 0, y), STARLING_E_PROTOCOL);
    assert_int_equal(starling_codec_decode(codec, buf, 0, 64, 0, y), STARLING_E_PROTOCOL);
    buf[0] = 2;
    assert_int_equal(starling_codec_decode(codec, buf, len, 64, 0, y), STARLING_E_PROTOCOL);
    buf[0] = 0;
    assert_int_equal(starling_codec_decode(codec, buf, len, 64, 0, y), STARLING_E_PROTOCOL);
    buf[0] = 1;
    buf[1] ^= 0xff;
    assert_int_equal(starling_codec_decode(codec, buf, len, 64, 0, y), STARLING_E_PROTOCOL);

    /* "+ef" does not change a standalone encoding */
    assert_int_equal(starling_codec_create(&plain, "int8+zstd", err, sizeof err), STARLING_OK);
    {
        uint8_t a[1024], b[1024];
        size_t la, lb;
        for (int i = 0; i < 64; i++)
            x[i] = (float)rng_normal();
        assert_int_equal(starling_codec_encode(codec, x, 64, 0, a, sizeof a, &la), STARLING_OK);
        assert_int_equal(starling_codec_encode(plain, x, 64, 0, b, sizeof b, &lb), STARLING_OK);
        assert_int_equal(la, lb);
        assert_memory_equal(a, b, la);
    }
    starling_codec_destroy(plain);
    starling_codec_destroy(codec);
    starling_codec_destroy(NULL);

    /* a sparse decode zeroes what was not kept, and refuses a bad blob */
    assert_int_equal(starling_codec_create(&codec, "topk:0.25", err, sizeof err), STARLING_OK);
    for (int i = 0; i < 64; i++)
        x[i] = (float)(i % 8);
    assert_int_equal(starling_codec_encode(codec, x, 64, 0, buf, sizeof buf, &len), STARLING_OK);
    assert_int_equal(starling_codec_decode(codec, buf, len, 64, 0, y), STARLING_OK);
    for (int i = 0; i < 64; i++)
        assert_true(y[i] == (x[i] >= 6.0f ? x[i] : 0.0f));
    memset(buf, 0xff, len);
    assert_int_equal(starling_codec_decode(codec, buf, len, 64, 0, y), STARLING_E_PROTOCOL);
    starling_codec_destroy(codec);
}

/* Allocation failures come back as STARLING_E_NOMEM, with nothing leaked (valgrind,
 * ASan) and *out left NULL. */
static void test_api_out_of_memory(void **state)
{
    static const char *const specs[] = {"int8+zstd", "topk:0.1", "randk:0.1", "none+zstd"};
    float x[4096], y[4096];
    uint8_t buf[4096 * 4 + 16];
    size_t len;
    (void)state;
    for (int i = 0; i < 4096; i++)
        x[i] = (float)(i % 17);
    for (size_t s = 0; s < COUNT_OF(specs); s++) {
        for (long nth = 1; nth <= 3; nth++) {
            starling_codec *codec = NULL;
            int rc;
            starling__alloc_fail_after(nth);
            rc = starling_codec_create(&codec, specs[s], NULL, 0);
            if (rc != STARLING_OK) {
                starling__alloc_fail_after(0);
                assert_int_equal(rc, STARLING_E_NOMEM);
                assert_null(codec);
                continue;
            }
            rc = starling_codec_encode(codec, x, 4096, 1, buf, sizeof buf, &len);
            if (rc == STARLING_OK)
                rc = starling_codec_decode(codec, buf, len, 4096, 1, y);
            starling__alloc_fail_after(0);
            assert_true(rc == STARLING_OK || rc == STARLING_E_NOMEM);
            starling_codec_destroy(codec);
        }
    }
    /* the internal sparse functions report it too */
    {
        starling__codec c = parse_ok("topk:0.1");
        starling__alloc_fail_after(1);
        assert_int_equal(starling__sparse_encode(&c, x, 4096, 0, buf, NULL), STARLING_E_NOMEM);
        starling__alloc_fail_after(0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_accept),
        cmocka_unit_test(test_spec_refuse),
        cmocka_unit_test(test_cast_bf16_rne),
        cmocka_unit_test(test_cast_f16_rne),
        cmocka_unit_test(test_cast_bf16_all_patterns),
        cmocka_unit_test(test_cast_stochastic_unbiased),
        cmocka_unit_test(test_cast_stochastic_deterministic),
        cmocka_unit_test(test_cast_stochastic_specials),
        cmocka_unit_test(test_int8_error_bound),
        cmocka_unit_test(test_int4_error_bound),
        cmocka_unit_test(test_int8_rounds_to_nearest),
        cmocka_unit_test(test_affine_nonfinite),
        cmocka_unit_test(test_affine_wide_range),
        cmocka_unit_test(test_dense_decode_any_bytes),
        cmocka_unit_test(test_topk_exact),
        cmocka_unit_test(test_topk_nan_first),
        cmocka_unit_test(test_sparse_k),
        cmocka_unit_test(test_elias_fano_round_trip),
        cmocka_unit_test(test_sparse_refuses_malformed),
        cmocka_unit_test(test_randk),
        cmocka_unit_test(test_zstd),
        cmocka_unit_test(test_api_round_trips),
        cmocka_unit_test(test_api_spec_and_refusals),
        cmocka_unit_test(test_api_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
