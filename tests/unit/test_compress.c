/* Compressed collectives in a whole group (group_harness.h): bit parity of every codec
 * across 2 to 8 peers, the documented error bounds (docs/codecs.md), exact references for
 * top-k, error-feedback conservation, and the refusals. Every peer regenerates every
 * other peer's input, so each can compute the references alone. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "group_harness.h"
#include "starling.h"

static const size_t counts[] = {0, 1, 7, 1000, 4099, 65537};
#define NCOUNTS (sizeof counts / sizeof counts[0])

/* Roughly normal values, a different stream per (rank, salt); some skew and an
 * all-negative stretch so blocks of every shape occur. */
static float gen(int rank, size_t i, uint64_t salt)
{
    uint64_t z = (uint64_t)rank * 0x9e3779b97f4a7c15ull + i * 0xbf58476d1ce4e5b9ull + salt;
    float v = 0.0f;
    for (int k = 0; k < 3; k++) {
        z += 0x9e3779b97f4a7c15ull;
        uint64_t x = z;
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
        x ^= x >> 31;
        v += (float)(x >> 40) / (float)(1 << 24);
    }
    v = v - 1.5f;
    if (i % 1000 < 100)
        v = -fabsf(v) - 3.0f; /* all-negative stretch */
    if (i % 997 == 5)
        v *= 50.0f; /* skew */
    return v;
}

static void fill(float *x, size_t n, int rank, uint64_t salt)
{
    for (size_t i = 0; i < n; i++)
        x[i] = gen(rank, i, salt);
}

static uint64_t hash_bytes(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* Every member holds the same bytes: all-gather of each one's hash. */
static void check_parity(peer_arg *pa, starling_comm *c, const float *x, size_t n,
                         const char *what)
{
    int64_t mine = (int64_t)hash_bytes(x, n * sizeof *x), all[MAXP];
    int rc = starling_allgather(c, &mine, all, 1, STARLING_I64, NULL);
    CHECK(pa, rc == STARLING_OK, "%s: parity all-gather: %s", what, starling_strerror(rc));
    for (int r = 0; r < starling_comm_size(c) && rc == STARLING_OK; r++)
        CHECK(pa, all[r] == mine, "%s: rank %d holds different bytes", what, r);
}

static starling_callopts *opts_for(const char *spec, uint64_t tag)
{
    starling_codec *codec;
    starling_callopts *o;
    char err[128];
    assert_int_equal(starling_codec_create(&codec, spec, err, sizeof err), STARLING_OK);
    assert_int_equal(starling_callopts_create(&o), STARLING_OK);
    assert_int_equal(starling_callopts_set_codec(o, codec), STARLING_OK);
    assert_int_equal(starling_callopts_set_tag(o, tag), STARLING_OK);
    starling_codec_destroy(codec); /* the options keep their own copy */
    return o;
}

/* ---------------------------------------------------------------- dense codecs */

typedef struct dense_case {
    const char *spec;
    int bits;        /* int8/int4: code bits; 0 for casts */
    double rel_unit; /* casts: largest relative error of one rounding */
    double amax_unit; /* fp4: largest error of one encoding, relative to the block's max |x| */
} dense_case;

static const dense_case dense_cases[] = {
    {"f16", 0, 0x1p-11, 0},
    {"bf16", 0, 0x1p-8, 0},
    {"bf16:stochastic", 0, 0x1p-7, 0},
    {"f16:stochastic", 0, 0x1p-10, 0},
    {"int8", 8, 0, 0},
    {"int8:block=64", 8, 0, 0},
    {"int4", 4, 0, 0},
    {"int4:block=32+zstd:1", 4, 0, 0},
    {"int8+zstd:3", 8, 0, 0},
    {"fp4", 0, 0, 1.0 / 6.0},
    {"fp4:block=8+zstd:1", 0, 0, 1.0 / 6.0},
};

/* The bound of docs/codecs.md for one all-reduce over n members. Casts: each of the n
 * roundings of a partial sum errs by at most rel_unit of its magnitude, itself at most
 * sum |x_r|. Affine codes: each of the n encodings of a block errs by at most half its
 * step, and a partial sum's range is at most the sum of the inputs' ranges. fp4: each
 * encoding errs by at most max|x| / 6 of its block (half the widest gap, 4 to 6). */
static int within_bound(const dense_case *dc, int n, size_t cnt, const float *got,
                        uint64_t salt, char *why, size_t wl)
{
    double range_sum = 0.0, amax_sum = 0.0;
    for (int r = 0; r < n && dc->amax_unit > 0.0; r++) {
        double amax = 0.0;
        for (size_t i = 0; i < cnt; i++)
            amax = fmax(amax, fabs(gen(r, i, salt)));
        amax_sum += amax;
    }
    if (dc->bits) {
        for (int r = 0; r < n; r++) {
            double lo = INFINITY, hi = -INFINITY;
            for (size_t i = 0; i < cnt; i++) {
                double v = gen(r, i, salt);
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
            }
            range_sum += cnt ? hi - lo : 0.0;
        }
    }
    for (size_t i = 0; i < cnt; i++) {
        double exact = 0.0, mag = 0.0, bound;
        for (int r = 0; r < n; r++) {
            exact += gen(r, i, salt);
            mag += fabs(gen(r, i, salt));
        }
        if (dc->bits)
            bound = n * range_sum / (2.0 * ((1 << dc->bits) - 1));
        else if (dc->amax_unit > 0.0) /* a partial sum's max |x| is at most amax_sum */
            bound = n * dc->amax_unit * amax_sum;
        else
            bound = n * dc->rel_unit * mag + n * 0x1p-24; /* f16 subnormal spacing */
        bound = bound * 1.001 + 1e-5 * mag;               /* f32 arithmetic on the way */
        if (!(fabs(got[i] - exact) <= bound)) {
            snprintf(why, wl, "%s: element %zu of %zu: %.9g, exact %.9g, bound %.3g", dc->spec,
                     i, cnt, got[i], exact, bound);
            return 0;
        }
    }
    return 1;
}

static void body_dense(peer_arg *pa, starling_comm *c)
{
    int rank = starling_comm_rank(c), n = starling_comm_size(c);
    for (size_t d = 0; d < sizeof dense_cases / sizeof dense_cases[0]; d++) {
        starling_callopts *o = opts_for(dense_cases[d].spec, 10 + d);
        for (size_t k = 0; k < NCOUNTS && !pa->fail; k++) {
            size_t cnt = counts[k];
            float *in = malloc(cnt * 4 + 4), *out = malloc(cnt * 4 + 4);
            char why[200], what[64];
            uint64_t salt = d * 100 + k;
            int rc;
            fill(in, cnt, rank, salt);
            rc = starling_allreduce(c, in, out, cnt, STARLING_F32, STARLING_SUM, o);
            snprintf(what, sizeof what, "%s, %zu elements", dense_cases[d].spec, cnt);
            CHECK(pa, rc == STARLING_OK, "%s: %s (%s)", what, starling_strerror(rc),
                  starling_comm_errmsg(c));
            for (size_t i = 0; i < cnt && !pa->fail; i++)
                CHECK(pa, in[i] == gen(rank, i, salt), "%s: input changed", what);
            if (!pa->fail && !within_bound(&dense_cases[d], n, cnt, out, salt, why, sizeof why))
                CHECK(pa, 0, "%s", why);
            if (!pa->fail)
                check_parity(pa, c, out, cnt, what);
            free(in);
            free(out);
        }
        starling_callopts_destroy(o);
    }
}

static void test_dense_2(void **s) { (void)s; run_group(2, body_dense, NULL); }
static void test_dense_3(void **s) { (void)s; run_group(3, body_dense, NULL); }
static void test_dense_5(void **s) { (void)s; run_group(5, body_dense, NULL); }
static void test_dense_8(void **s) { (void)s; run_group(8, body_dense, NULL); }

/* In place, average, several streams: the owner's sealing and the final division. */
static void body_dense_avg_inplace(peer_arg *pa, starling_comm *c)
{
    static const dense_case dc = {"int8:block=128", 8, 0, 0};
    int rank = starling_comm_rank(c), n = starling_comm_size(c);
    size_t cnt = 30001;
    float *buf = malloc(cnt * 4);
    char why[200];
    starling_callopts *o = opts_for(dc.spec, 3);
    int rc;
    fill(buf, cnt, rank, 77);
    rc = starling_allreduce(c, buf, buf, cnt, STARLING_F32, STARLING_AVG, o);
    CHECK(pa, rc == STARLING_OK, "avg: %s (%s)", starling_strerror(rc), starling_comm_errmsg(c));
    for (size_t i = 0; i < cnt; i++)
        buf[i] *= (float)n; /* compare as a sum, with the bound scaled alike */
    if (!pa->fail && !within_bound(&dc, n, cnt, buf, 77, why, sizeof why))
        CHECK(pa, 0, "%s", why);
    check_parity(pa, c, buf, cnt, "avg in place");
    starling_callopts_destroy(o);
    free(buf);
}

static void test_dense_avg_streams(void **s)
{
    (void)s;
    g_streams = 3;
    run_group(4, body_dense_avg_inplace, NULL);
    g_streams = 1;
}

/* ---------------------------------------------------------------- sparse codecs */

/* Top-k: the reference is every member's blob decoded by the public codec and summed in
 * rank order, exactly as the library must do it: bit-identical. */
static void body_topk(peer_arg *pa, starling_comm *c)
{
    static const char *specs[] = {"topk:0.01", "topk:0.3+zstd:1", "topk:1", "topk:0.05:bits=2",
                                  "topk:0.2:bits=4:block=8+zstd:1"};
    int rank = starling_comm_rank(c), n = starling_comm_size(c);
    for (size_t sp = 0; sp < sizeof specs / sizeof specs[0]; sp++) {
        starling_callopts *o = opts_for(specs[sp], 20 + sp);
        starling_codec *codec;
        assert_int_equal(starling_codec_create(&codec, specs[sp], NULL, 0), STARLING_OK);
        for (size_t k = 0; k < NCOUNTS && !pa->fail; k++) {
            size_t cnt = counts[k], cap = starling_codec_max_encoded(codec, cnt), len;
            float *in = malloc(cnt * 4 + 4), *out = malloc(cnt * 4 + 4);
            float *ref = calloc(cnt + 1, 4), *dec = malloc(cnt * 4 + 4);
            unsigned char *blob = malloc(cap + 1);
            int rc;
            fill(in, cnt, rank, 500 + k);
            for (int r = 0; r < n; r++) {
                float *x = malloc(cnt * 4 + 4);
                fill(x, cnt, r, 500 + k);
                assert_int_equal(starling_codec_encode(codec, x, cnt, 0, blob, cap, &len),
                                 STARLING_OK);
                assert_int_equal(starling_codec_decode(codec, blob, len, cnt, 0, dec),
                                 STARLING_OK);
                for (size_t i = 0; i < cnt; i++)
                    ref[i] += dec[i];
                free(x);
            }
            rc = starling_allreduce(c, in, out, cnt, STARLING_F32, STARLING_SUM, o);
            CHECK(pa, rc == STARLING_OK, "%s %zu: %s (%s)", specs[sp], cnt,
                  starling_strerror(rc), starling_comm_errmsg(c));
            for (size_t i = 0; i < cnt && !pa->fail; i++)
                CHECK(pa, memcmp(&out[i], &ref[i], 4) == 0, "%s %zu: [%zu] = %.9g, expected %.9g",
                      specs[sp], cnt, i, out[i], ref[i]);
            free(in);
            free(out);
            free(ref);
            free(dec);
            free(blob);
        }
        starling_codec_destroy(codec);
        starling_callopts_destroy(o);
    }
}

static void test_topk_3(void **s) { (void)s; run_group(3, body_topk, NULL); }
static void test_topk_5(void **s) { (void)s; run_group(5, body_topk, NULL); }

/* Random-k: the indices come from a seed the members share, so the result has at most k
 * nonzeros, and each one is the rank-order sum of the inputs there. */
static void body_randk(peer_arg *pa, starling_comm *c)
{
    int rank = starling_comm_rank(c), n = starling_comm_size(c);
    starling_callopts *o = opts_for("randk:0.05", 30);
    for (size_t k = 0; k < NCOUNTS && !pa->fail; k++) {
        size_t cnt = counts[k], nz = 0, kk = cnt ? (size_t)ceil(0.05 * (double)cnt) : 0;
        float *in = malloc(cnt * 4 + 4), *out = malloc(cnt * 4 + 4);
        int rc;
        fill(in, cnt, rank, 600 + k);
        rc = starling_allreduce(c, in, out, cnt, STARLING_F32, STARLING_SUM, o);
        CHECK(pa, rc == STARLING_OK, "randk %zu: %s (%s)", cnt, starling_strerror(rc),
              starling_comm_errmsg(c));
        for (size_t i = 0; i < cnt && !pa->fail; i++) {
            float sum = 0.0f;
            if (out[i] == 0.0f)
                continue;
            nz++;
            for (int r = 0; r < n; r++)
                sum += gen(r, i, 600 + k);
            CHECK(pa, out[i] == sum, "randk %zu: [%zu] = %.9g, expected %.9g", cnt, i, out[i],
                  sum);
        }
        CHECK(pa, nz <= kk, "randk %zu: %zu nonzeros, k = %zu", cnt, nz, kk);
        CHECK(pa, cnt < 1000 || nz > kk / 2, "randk %zu: only %zu nonzeros", cnt, nz);
        check_parity(pa, c, out, cnt, "randk");
        free(in);
        free(out);
    }
    starling_callopts_destroy(o);
}

static void test_randk_4(void **s) { (void)s; run_group(4, body_randk, NULL); }

/* ---------------------------------------------------------------- error feedback */

/* Over many calls, what was delivered plus what the members still hold back equals what
 * they put in: sum_t R_t + sum_r resid_r = sum_t sum_r x_{t,r}. */
static void body_ef(peer_arg *pa, starling_comm *c)
{
    static const char *specs[] = {"topk:0.05+ef", "int4:block=64+ef", "randk:0.1+ef",
                                  "topk:0.05:bits=2+ef"};
    int rank = starling_comm_rank(c), n = starling_comm_size(c);
    const size_t cnt = 5000;
    const int steps = 12;
    for (size_t sp = 0; sp < sizeof specs / sizeof specs[0]; sp++) {
        starling_callopts *o = opts_for(specs[sp], 40 + sp);
        double *delivered = calloc(cnt, sizeof(double)), worst = 0.0, scale = 0.0;
        float *x = malloc(cnt * 4), *out = malloc(cnt * 4), *res = malloc(cnt * 4);
        float *allres = malloc(cnt * 4);
        int rc = starling_residual_get(c, 40 + sp, res, cnt);
        CHECK(pa, rc == STARLING_E_NOT_FOUND, "%s: residual before any call: %s", specs[sp],
              starling_strerror(rc));
        for (int t = 0; t < steps && !pa->fail; t++) {
            fill(x, cnt, rank, 900 + (uint64_t)t);
            rc = starling_allreduce(c, x, out, cnt, STARLING_F32, STARLING_SUM, o);
            CHECK(pa, rc == STARLING_OK, "%s step %d: %s (%s)", specs[sp], t,
                  starling_strerror(rc), starling_comm_errmsg(c));
            for (size_t i = 0; i < cnt; i++)
                delivered[i] += out[i];
        }
        CHECK(pa, starling_residual_get(c, 40 + sp, res, cnt - 1) == STARLING_E_MISMATCH,
              "%s: residual read with a wrong count", specs[sp]);
        rc = starling_residual_get(c, 40 + sp, res, cnt);
        CHECK(pa, rc == STARLING_OK, "%s: residual: %s", specs[sp], starling_strerror(rc));
        rc = starling_allreduce(c, res, allres, cnt, STARLING_F32, STARLING_SUM, NULL);
        CHECK(pa, rc == STARLING_OK, "%s: residual sum: %s", specs[sp], starling_strerror(rc));
        for (size_t i = 0; i < cnt && !pa->fail; i++) {
            double in = 0.0;
            for (int t = 0; t < steps; t++)
                for (int r = 0; r < n; r++)
                    in += gen(r, i, 900 + (uint64_t)t);
            scale = fabs(in) > scale ? fabs(in) : scale;
            double d = fabs(delivered[i] + allres[i] - in);
            worst = d > worst ? d : worst;
        }
        /* f32 rounding of every addition on the way, relative to the values' size. */
        CHECK(pa, worst <= 1e-4 * (scale + 1.0), "%s: conservation off by %.3g (scale %.3g)",
              specs[sp], worst, scale);
        free(delivered);
        free(x);
        free(out);
        free(res);
        free(allres);
        starling_callopts_destroy(o);
    }
}

static void test_ef_3(void **s) { (void)s; run_group(3, body_ef, NULL); }

/* Alone, nothing is sent: the result is the input plus the residual, nothing is kept. */
static void body_alone(peer_arg *pa, starling_comm *c)
{
    float x[5] = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f}, out[5], res[5] = {0.5f, 0.5f, 0, 0, 0};
    starling_callopts *o = opts_for("int4+ef", 9);
    CHECK(pa, starling_residual_set(c, 9, res, 5) == STARLING_OK, "residual_set");
    CHECK(pa, starling_allreduce(c, x, out, 5, STARLING_F32, STARLING_SUM, o) == STARLING_OK,
          "allreduce alone");
    CHECK(pa, out[0] == 2.0f && out[1] == -1.5f && out[2] == 3.25f && out[4] == 7.0f,
          "alone: %g %g %g %g", out[0], out[1], out[2], out[4]);
    CHECK(pa, starling_residual_get(c, 9, res, 5) == STARLING_OK, "residual_get");
    for (int i = 0; i < 5; i++)
        CHECK(pa, res[i] == 0.0f, "alone: residual[%d] = %g", i, res[i]);
    starling_callopts_destroy(o);
}

static void test_alone(void **s) { (void)s; run_group(1, body_alone, NULL); }

/* ---------------------------------------------------------------- other collectives */

static void body_others(peer_arg *pa, starling_comm *c)
{
    int rank = starling_comm_rank(c), n = starling_comm_size(c);
    const size_t cnt = 3001;
    float *x = malloc(cnt * 4), *all = malloc(cnt * 4 * (size_t)n), *dec = malloc(cnt * 4);
    float *rs_in = malloc(cnt * 4 * (size_t)n), *rs_out = malloc(cnt * 4);
    starling_codec *bf16, *int8;
    unsigned char *blob = malloc(cnt * 4 + 64);
    size_t len;
    starling_callopts *o;
    int rc;
    assert_int_equal(starling_codec_create(&bf16, "bf16", NULL, 0), STARLING_OK);
    assert_int_equal(starling_codec_create(&int8, "int8:block=256", NULL, 0), STARLING_OK);

    /* All-gather: every block is the round-to-nearest-even bf16 of its owner's input. */
    fill(x, cnt, rank, 1234);
    o = opts_for("bf16+zstd:2", 50);
    rc = starling_allgather(c, x, all, cnt, STARLING_F32, o);
    CHECK(pa, rc == STARLING_OK, "allgather bf16: %s (%s)", starling_strerror(rc),
          starling_comm_errmsg(c));
    for (int r = 0; r < n && !pa->fail; r++) {
        fill(x, cnt, r, 1234);
        starling_codec_encode(bf16, x, cnt, 0, blob, cnt * 4 + 64, &len);
        starling_codec_decode(bf16, blob, len, cnt, 0, dec);
        CHECK(pa, memcmp(all + (size_t)r * cnt, dec, cnt * 4) == 0, "allgather block %d", r);
    }
    starling_callopts_destroy(o);

    /* Broadcast from rank 1: everyone, the root too, holds the decoding of its bytes. */
    fill(x, cnt, 1, 4321);
    if (rank != 1)
        memset(x, 0, cnt * 4);
    o = opts_for("int8:block=256", 51);
    rc = starling_broadcast(c, x, cnt, STARLING_F32, 1 % n, o);
    CHECK(pa, rc == STARLING_OK, "broadcast int8: %s (%s)", starling_strerror(rc),
          starling_comm_errmsg(c));
    fill(dec, cnt, 1, 4321);
    starling_codec_encode(int8, dec, cnt, 0, blob, cnt * 4 + 64, &len);
    starling_codec_decode(int8, blob, len, cnt, 0, dec);
    CHECK(pa, memcmp(x, dec, cnt * 4) == 0, "broadcast: not the decoding of the root's bytes");
    starling_callopts_destroy(o);

    /* Reduce-scatter: within the int8 bound for its block. */
    for (int b = 0; b < n; b++)
        fill(rs_in + (size_t)b * cnt, cnt, rank, 7000 + (uint64_t)b);
    o = opts_for("int8", 52);
    rc = starling_reduce_scatter(c, rs_in, rs_out, cnt, STARLING_F32, STARLING_SUM, o);
    CHECK(pa, rc == STARLING_OK, "reduce-scatter int8: %s (%s)", starling_strerror(rc),
          starling_comm_errmsg(c));
    if (!pa->fail) {
        static const dense_case dc = {"int8", 8, 0, 0};
        char why[200];
        if (!within_bound(&dc, n, cnt, rs_out, 7000 + (uint64_t)rank, why, sizeof why))
            CHECK(pa, 0, "reduce-scatter: %s", why);
    }
    starling_callopts_destroy(o);
    starling_codec_destroy(bf16);
    starling_codec_destroy(int8);
    free(x);
    free(all);
    free(dec);
    free(rs_in);
    free(rs_out);
    free(blob);
}

static void test_others_3(void **s) { (void)s; run_group(3, body_others, NULL); }

/* ---------------------------------------------------------------- refusals */

static void body_refusals(peer_arg *pa, starling_comm *c)
{
    int32_t ibuf[4] = {1, 2, 3, 4}, iout[4];
    float f[4] = {1, 2, 3, 4}, fo[16];
    starling_callopts *o = opts_for("int8", 60), *z = opts_for("none+zstd:1", 61);
    starling_callopts *t = opts_for("topk:0.5", 62), *ef = opts_for("bf16+ef", 63);
    int rc;
    rc = starling_allreduce(c, ibuf, iout, 4, STARLING_I32, STARLING_SUM, o);
    CHECK(pa, rc == STARLING_E_UNSUPPORTED, "int8 on i32: %s", starling_strerror(rc));
    CHECK(pa, strstr(starling_comm_errmsg(c), "f32") != NULL, "message: %s",
          starling_comm_errmsg(c));
    rc = starling_allreduce(c, f, fo, 4, STARLING_F32, STARLING_MAX, o);
    CHECK(pa, rc == STARLING_E_UNSUPPORTED, "int8 with max: %s", starling_strerror(rc));
    rc = starling_allgather(c, f, fo, 4, STARLING_F32, t);
    CHECK(pa, rc == STARLING_E_UNSUPPORTED, "topk all-gather: %s", starling_strerror(rc));
    rc = starling_broadcast(c, f, 4, STARLING_F32, 0, ef);
    CHECK(pa, rc == STARLING_E_UNSUPPORTED, "+ef broadcast: %s", starling_strerror(rc));
    /* The lossless stage alone works on any dtype and is exact. */
    rc = starling_allreduce(c, ibuf, iout, 4, STARLING_I32, STARLING_SUM, z);
    CHECK(pa, rc == STARLING_OK, "none+zstd on i32: %s", starling_strerror(rc));
    for (int i = 0; i < 4 && rc == STARLING_OK; i++)
        CHECK(pa, iout[i] == (i + 1) * starling_comm_size(c), "none+zstd [%d] = %d", i, iout[i]);
    starling_callopts_destroy(o);
    starling_callopts_destroy(z);
    starling_callopts_destroy(t);
    starling_callopts_destroy(ef);
}

static void test_refusals(void **s) { (void)s; run_group(2, body_refusals, NULL); }

/* Members that disagree on the codec: detected on every member, as for any mismatch. */
static void body_codec_mismatch(peer_arg *pa, starling_comm *c)
{
    float f[64], out[64];
    starling_callopts *o = opts_for(starling_comm_rank(c) == 0 ? "int8" : "bf16", 70);
    int rc;
    fill(f, 64, starling_comm_rank(c), 1);
    rc = starling_allreduce(c, f, out, 64, STARLING_F32, STARLING_SUM, o);
    CHECK(pa, rc == STARLING_E_MISMATCH, "different codecs: %s", starling_strerror(rc));
    starling_callopts_destroy(o);
}

static void test_codec_mismatch(void **s) { (void)s; run_group(3, body_codec_mismatch, NULL); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_2),        cmocka_unit_test(test_dense_3),
        cmocka_unit_test(test_dense_5),        cmocka_unit_test(test_dense_8),
        cmocka_unit_test(test_dense_avg_streams), cmocka_unit_test(test_topk_3),
        cmocka_unit_test(test_topk_5),         cmocka_unit_test(test_randk_4),
        cmocka_unit_test(test_ef_3),           cmocka_unit_test(test_alone),
        cmocka_unit_test(test_others_3),       cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_codec_mismatch),
    };
    if (getenv("STARLING_TEST_LOG")) {
        starling_log_set_handler(starling_log_stderr, NULL);
        starling_log_set_level(STARLING_LOG_DEBUG);
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
