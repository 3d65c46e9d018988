/*
 * cmd_bench_codec.c -- `starling bench codec SPEC`: one codec on one thread, no network.
 *
 * Encodes and decodes a generated f32 vector with the public codec API and reports the
 * size (ratio), the error of decode(encode(x)) against x, and the single-thread speed
 * (f32 input bytes / median time, GB/s = 1e9 B/s) of encode, decode and the round trip.
 *
 * --reference pccl adds rows for comparison with the 8-bit quantizer PCCL publishes: one
 * min/max per 1 MiB of input (262144 elements) and codes by truncation,
 * q = (uint8)((x - min) / scale). Written here, in the tool, as the reference. Next to it:
 * our int8 with its default block and with the largest block the grammar allows (65536,
 * i.e. 24 bytes more per MiB than PCCL's chunks: equal bytes to 0.01 %), so a reader can
 * compare errors at equal size, and the gain of the smaller default block.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define CODEC_CMD "bench codec"
#define PCCL_CHUNK 262144 /* elements: 1 MiB of f32 */

typedef enum { DATA_NORMAL, DATA_SKEWED, DATA_NEGATIVE, DATA_CONSTANT, DATA_TINY } data_kind;

static const char *const data_names[] = {"normal", "skewed", "negative", "constant", "tiny"};

typedef struct bench_result {
    const char *name;
    size_t count, encoded;
    double max_err, rms_err, rel_rms;
    double enc_s, dec_s, rt_s; /* medians */
} bench_result;

/* ---------------------------------------------------------------- data */

static uint64_t data_rng;

static uint64_t rng_next(void)
{
    /* xorshift64*: fast, fixed, and the same data on every machine for a seed */
    data_rng ^= data_rng >> 12;
    data_rng ^= data_rng << 25;
    data_rng ^= data_rng >> 27;
    return data_rng * 0x2545f4914f6cdd1dull;
}

static double rng_uniform(void) { return ((double)(rng_next() >> 11) + 0.5) / 9007199254740992.0; }

/* Box-Muller: two normals per pair of uniforms. */
static void fill_data(float *x, size_t n, data_kind kind, uint64_t seed)
{
    data_rng = seed * 0x9e3779b97f4a7c15ull + 0x0123456789abcdefull;
    if (data_rng == 0)
        data_rng = 1;
    for (size_t i = 0; i < n; i += 2) {
        double r = sqrt(-2.0 * log(rng_uniform())), t = 6.283185307179586 * rng_uniform();
        double g[2] = {r * cos(t), r * sin(t)};
        for (size_t j = 0; j < 2 && i + j < n; j++) {
            double v;
            switch (kind) {
            case DATA_SKEWED: v = exp(g[j]); break;          /* lognormal: a long right tail */
            case DATA_NEGATIVE: v = -exp(0.5 * g[j]); break; /* every value below zero */
            case DATA_CONSTANT: v = 0.5; break;
            case DATA_TINY: v = 1e-8 * g[j]; break; /* mostly below f16's smallest normal */
            default: v = g[j]; break;
            }
            x[i + j] = (float)v;
        }
    }
}

/* ---------------------------------------------------------------- PCCL reference */

static size_t pccl_size(size_t n) { return n + 8 * ((n + PCCL_CHUNK - 1) / PCCL_CHUNK); }

/* Layout: per chunk, f32 min and f32 scale, then one byte per element. */
static void pccl_encode(const float *x, size_t n, uint8_t *out)
{
    size_t nchunks = (n + PCCL_CHUNK - 1) / PCCL_CHUNK;
    uint8_t *codes = out + 8 * nchunks;
    for (size_t c = 0; c < nchunks; c++) {
        size_t start = c * PCCL_CHUNK, end = start + PCCL_CHUNK < n ? start + PCCL_CHUNK : n;
        float mn = x[start], mx = x[start], scale, inv;
        for (size_t i = start; i < end; i++) {
            mn = x[i] < mn ? x[i] : mn;
            mx = x[i] > mx ? x[i] : mx;
        }
        scale = (mx - mn) / 255.0f;
        inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        memcpy(out + 8 * c, &mn, 4);
        memcpy(out + 8 * c + 4, &scale, 4);
        for (size_t i = start; i < end; i++) {
            float v = (x[i] - mn) * inv;
            codes[i] = (uint8_t)(v < 255.0f ? v : 255.0f); /* truncation, as published */
        }
    }
}

static void pccl_decode(const uint8_t *in, size_t n, float *y)
{
    size_t nchunks = (n + PCCL_CHUNK - 1) / PCCL_CHUNK;
    const uint8_t *codes = in + 8 * nchunks;
    for (size_t c = 0; c < nchunks; c++) {
        size_t start = c * PCCL_CHUNK, end = start + PCCL_CHUNK < n ? start + PCCL_CHUNK : n;
        float mn, scale;
        memcpy(&mn, in + 8 * c, 4);
        memcpy(&scale, in + 8 * c + 4, 4);
        for (size_t i = start; i < end; i++)
            y[i] = mn + (float)codes[i] * scale;
    }
}

/* ---------------------------------------------------------------- measurement */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void measure_error(const float *x, const float *y, size_t n, bench_result *r)
{
    double sq = 0.0, ref = 0.0, mx = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)x[i] - (double)y[i]);
        if (!(e <= mx)) /* a NaN error shows as NaN */
            mx = e;
        sq += e * e;
        ref += (double)x[i] * (double)x[i];
    }
    r->max_err = mx;
    r->rms_err = n ? sqrt(sq / (double)n) : 0.0;
    r->rel_rms = ref > 0.0 ? sqrt(sq / ref) : 0.0;
}

/* Times `iters` encode + decode rounds of codec (or of the PCCL reference if codec is
 * NULL) after one untimed round. Returns 0, or CLI_EXIT_FAIL with a message. */
static int run_one(starling_codec *codec, const float *x, float *y, size_t n, uint64_t seed,
                   int iters, uint8_t *buf, size_t cap, double *times, bench_result *r)
{
    double *enc = times, *dec = times + iters, *rt = times + 2 * iters;
    size_t len = 0;

    for (int it = -1; it < iters; it++) {
        double t0, t1, t2;
        int rc = STARLING_OK;
        t0 = cli_now();
        if (codec) {
            rc = starling_codec_encode(codec, x, n, seed, buf, cap, &len);
        } else {
            pccl_encode(x, n, buf);
            len = pccl_size(n);
        }
        t1 = cli_now();
        if (rc == STARLING_OK) {
            if (codec)
                rc = starling_codec_decode(codec, buf, len, n, seed, y);
            else
                pccl_decode(buf, n, y);
        }
        t2 = cli_now();
        if (rc != STARLING_OK) {
            fprintf(stderr, "starling %s: %s: %s\n", CODEC_CMD, r->name, starling_strerror(rc));
            return CLI_EXIT_FAIL;
        }
        if (it >= 0) {
            enc[it] = t1 - t0;
            dec[it] = t2 - t1;
            rt[it] = t2 - t0;
        }
    }
    r->count = n;
    r->encoded = len;
    r->enc_s = median(enc, iters);
    r->dec_s = median(dec, iters);
    r->rt_s = median(rt, iters);
    measure_error(x, y, n, r);
    return 0;
}

static double gbps(size_t n, double s) { return s > 0.0 ? 4.0 * (double)n / s / 1e9 : 0.0; }

static void print_header(const char *data, size_t n, int iters, uint64_t seed)
{
    char b[32];
    printf("# starling codec bench: %zu f32 elements (%s), data %s, seed %llu, %d iterations, "
           "one thread\n",
           n, cli_format_bytes(4.0 * (double)n, b, sizeof b), data, (unsigned long long)seed,
           iters);
    printf("# ratio = input / encoded; errors of decode(encode(x)) against x, rel rms = "
           "rms err / rms(x); GB/s = f32 input bytes / median time (1e9 B/s)\n");
    printf("%-28s %12s %12s %8s %11s %11s %11s %9s %9s %9s\n", "codec", "input", "encoded", "ratio",
           "max err", "rms err", "rel rms", "enc GB/s", "dec GB/s", "rt GB/s");
}

static void print_result(const bench_result *r, const char *data, int iters, uint64_t seed,
                         int json)
{
    double ratio = r->encoded ? 4.0 * (double)r->count / (double)r->encoded : 0.0;
    if (json) {
        printf("{\"codec\":\"%s\",\"data\":\"%s\",\"count\":%zu,\"input_bytes\":%zu,"
               "\"encoded_bytes\":%zu,\"ratio\":%.6g,\"max_err\":%.9g,\"rms_err\":%.9g,"
               "\"rel_rms_err\":%.9g,\"encode_s\":%.9g,\"decode_s\":%.9g,\"roundtrip_s\":%.9g,"
               "\"encode_GBps\":%.6g,\"decode_GBps\":%.6g,\"roundtrip_GBps\":%.6g,"
               "\"iters\":%d,\"seed\":%llu}\n",
               r->name, data, r->count, 4 * r->count, r->encoded, ratio, r->max_err, r->rms_err,
               r->rel_rms, r->enc_s, r->dec_s, r->rt_s, gbps(r->count, r->enc_s),
               gbps(r->count, r->dec_s), gbps(r->count, r->rt_s), iters, (unsigned long long)seed);
    } else {
        char in[32], out[32];
        printf("%-28s %12s %12s %8.3f %11.3e %11.3e %11.3e %9.2f %9.2f %9.2f\n", r->name,
               cli_format_bytes(4.0 * (double)r->count, in, sizeof in),
               cli_format_bytes((double)r->encoded, out, sizeof out), ratio, r->max_err, r->rms_err,
               r->rel_rms, gbps(r->count, r->enc_s), gbps(r->count, r->dec_s),
               gbps(r->count, r->rt_s));
    }
    fflush(stdout);
}

int cmd_bench_codec(int argc, char **argv)
{
    const char *spec, *count_t = NULL, *data_t = NULL, *iters_t = NULL, *seed_t = NULL;
    const char *ref_t = NULL;
    int json = 0, rc, pccl = 0, nrows = 0;
    long iters = 5, seed_l = 1;
    uint64_t count = 16u << 20, seed;
    data_kind kind = DATA_NORMAL;
    char err[256];
    /* rows: the spec given, then with --reference pccl: int8 default, int8 at PCCL's
     * size, the PCCL reference */
    const char *row_specs[3];
    starling_codec *codecs[3] = {NULL, NULL, NULL};
    float *x = NULL, *y = NULL;
    uint8_t *buf = NULL;
    double *times = NULL;
    size_t cap;
    const cli_opt opts[] = {
        CLI_OPT_VALUE("--count", "N", "f32 values, 1..1G, K, M, G suffixes (default 16M)",
                      &count_t),
        CLI_OPT_VALUE("--data", "KIND",
                      "normal (mean 0, sd 1; the default), skewed (lognormal), negative, "
                      "constant or tiny (sd 1e-8)",
                      &data_t),
        CLI_OPT_VALUE("--iters", "K", "timed runs; the median is reported, 1..10000 (default 5)",
                      &iters_t),
        CLI_OPT_VALUE("--seed", "S", "seed of the data and of random-k (default 1)", &seed_t),
        CLI_OPT_VALUE("--reference", "pccl",
                      "add PCCL's 8-bit scheme (1 MiB chunks, truncation) and our int8 at its "
                      "default block and at equal bytes (block 65536)",
                      &ref_t),
        CLI_OPT_FLAG("--json", "one JSON object per row instead of the table", &json),
    };
    const cli_cmd c = {CODEC_CMD, "SPEC [options]",
                       "Encode and decode N f32 values with the codec SPEC (e.g. int8, bf16,\n"
                       "topk:0.01, int8+zstd:3; see docs/codecs.md) on one thread, no network.\n"
                       "Prints the encoded size and ratio, the max, rms and relative rms error of\n"
                       "decode(encode(x)), and encode, decode and round-trip GB/s (f32 input\n"
                       "bytes / median time, GB/s = 1e9 B/s).\n",
                       NULL, opts, sizeof opts / sizeof opts[0]};

    if (argc >= 4 && cli_is_help(argv[3])) {
        cli_print_help(&c, stdout);
        return CLI_HELP_SHOWN;
    }
    if (argc < 4 || strncmp(argv[3], "--", 2) == 0)
        return cli_usage_error(CODEC_CMD, "which codec? e.g. 'starling bench codec int8'");
    spec = argv[3];
    if ((rc = cli_parse_opts(&c, argc, argv, 4)))
        return rc;
    if (cli_get_long(CODEC_CMD, "--iters", iters_t, 1, 10000, &iters) ||
        cli_get_long(CODEC_CMD, "--seed", seed_t, 0, 2147483647L, &seed_l))
        return CLI_EXIT_USAGE;
    if (count_t && (cli_parse_size(count_t, &count) != 0 || count < 1 || count > (1u << 30)))
        return cli_usage_error(CODEC_CMD,
                               "--count: expected 1..1G elements (K, M, G suffixes: powers of "
                               "1024), got '%s'",
                               count_t);
    seed = (uint64_t)seed_l;
    if (data_t) {
        int k;
        for (k = 0; k < 5 && strcmp(data_t, data_names[k]) != 0; k++)
            ;
        if (k == 5)
            return cli_usage_error(CODEC_CMD,
                                   "--data: expected normal, skewed, negative, constant or "
                                   "tiny, got '%s'",
                                   data_t);
        kind = (data_kind)k;
    }
    if (ref_t) {
        if (strcmp(ref_t, "pccl") != 0)
            return cli_usage_error(CODEC_CMD, "--reference: expected 'pccl', got '%s'", ref_t);
        pccl = 1;
    }

    row_specs[nrows++] = spec;
    if (pccl) {
        row_specs[nrows++] = "int8";
        row_specs[nrows++] = "int8:block=65536";
    }
    for (int k = 0; k < nrows; k++) {
        if (starling_codec_create(&codecs[k], row_specs[k], err, sizeof err) != STARLING_OK) {
            rc = cli_usage_error(CODEC_CMD, "%s", err);
            goto out;
        }
    }

    rc = CLI_EXIT_FAIL;
    cap = pccl_size((size_t)count);
    for (int k = 0; k < nrows; k++) {
        size_t m = starling_codec_max_encoded(codecs[k], (size_t)count);
        cap = m > cap ? m : cap;
    }
    x = malloc((size_t)count * sizeof *x);
    y = malloc((size_t)count * sizeof *y);
    buf = malloc(cap);
    times = malloc(3 * (size_t)iters * sizeof *times);
    if (!x || !y || !buf || !times) {
        fprintf(stderr, "starling %s: out of memory\n", CODEC_CMD);
        goto out;
    }
    fill_data(x, (size_t)count, kind, seed);
    if (!json)
        print_header(data_names[kind], (size_t)count, (int)iters, seed);
    for (int k = 0; k < nrows + pccl; k++) {
        bench_result r;
        memset(&r, 0, sizeof r);
        r.name = k < nrows ? starling_codec_spec(codecs[k]) : "pccl-int8 (1 MiB, truncate)";
        if (run_one(k < nrows ? codecs[k] : NULL, x, y, (size_t)count, seed, (int)iters, buf, cap,
                    times, &r))
            goto out;
        print_result(&r, data_names[kind], (int)iters, seed, json);
    }
    rc = CLI_EXIT_OK;
out:
    for (int k = 0; k < 3; k++)
        starling_codec_destroy(codecs[k]);
    free(x);
    free(y);
    free(buf);
    free(times);
    return rc;
}
