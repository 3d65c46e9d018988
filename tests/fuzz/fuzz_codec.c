/* libFuzzer target for the codec decoders (src/codec): the payloads other peers send in
 * compressed collectives (dense encodings, sparse blobs with Elias-Fano indices, zstd
 * frames).
 *
 * Input: byte 0 picks a codec (its low 5 bits index specs[], modulo its length) and a seed
 * (its top 3 bits, which randk draws its indices from); bytes 1-2 are the element count
 * n, little-endian; the rest is the payload, handed to starling_codec_decode as it is. The internal
 * decoders are called on it too (starling__sparse_accumulate, starling__zstd_unpack,
 * starling__dense_decode_add) and must agree with the public call. Checks:
 *  - every call returns STARLING_OK or STARLING_E_PROTOCOL;
 *  - a raw dense payload decodes iff its length is the encoded size; any accepted input
 *    is refused once its last byte is cut off;
 *  - sparse: an accepted blob gives at most k nonzero outputs; accumulate agrees with
 *    decode, adds exactly the decoded values, and on a refusal leaves `out` untouched
 *    (filled with a sentinel beforehand); topk blobs are canonical (re-encoding the
 *    decoded vector gives the same bytes when all k values are nonzero numbers) and
 *    randk re-encodes its values to the same places;
 *  - zstd: an accepted frame unpacks, and decodes exactly as its raw form (flag 0) does;
 *    a frame that does not unpack is refused;
 *  - whatever decoded is encoded again (the encoders meet NaN, Inf and extreme ranges
 *    this way) and that encoding decodes; casts and "none" give back the same values.
 * A failed check aborts (not assert(), which NDEBUG would remove). Every buffer is
 * heap-allocated at its exact size so that ASan sees any access past its end.
 *
 * The seed corpus (corpus/codec/) holds valid encodings made with starling_codec_encode,
 * named after the spec and count. specs[] is therefore part of the corpus format: append
 * to it (up to 32 entries), never reorder or remove.
 *
 * Built two ways (tests/fuzz/CMakeLists.txt): with -fsanitize=fuzzer by clang, and as
 * fuzz_codec_replay with fuzz_replay.c, which replays the saved corpus under ctest. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "starling.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Indexed by the low 5 bits of input byte 0: append only, at most 32. */
static const char *const specs[] = {
    "none",                    /* 0 */
    "f16",                     /* 1 */
    "bf16",                    /* 2 */
    "f16:stochastic",          /* 3 */
    "bf16:stochastic",         /* 4 */
    "int8",                    /* 5 */
    "int8:block=64",           /* 6 */
    "int4",                    /* 7 */
    "int4:block=32",           /* 8 */
    "int4:block=8",            /* 9 */
    "topk:0.01",               /* 10 */
    "topk:0.5",                /* 11 */
    "topk:1",                  /* 12 */
    "topk:0.0001",             /* 13 */
    "randk:0.1",               /* 14 */
    "randk:1",                 /* 15 */
    "int8+zstd:3",             /* 16 */
    "topk:0.05+zstd:1",        /* 17 */
    "none+zstd:1",             /* 18 */
    "randk:0.1+zstd:1",        /* 19 */
    "bf16+zstd:1",             /* 20 */
    "int4:block=32+zstd:1",    /* 21 */
    "topk:0.05:bits=2",        /* 22 */
    "topk:0.3:bits=4:block=8", /* 23 */
    "topk:0.01:bits=8+zstd:1", /* 24 */
    "fp4",                     /* 25 */
    "fp4:block=8+zstd:1",      /* 26 */
};
#define NSPECS (sizeof specs / sizeof specs[0])
#define SPEC_BITS 5

static starling_codec *codecs[NSPECS];
static starling__zstd *zstd_ctx;

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    CHECK(p != NULL);
    return p;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static int is_nan(float f) { return (f32_bits(f) & 0x7fffffffu) > 0x7f800000u; }
static int is_zero(float f) { return (f32_bits(f) & 0x7fffffffu) == 0; }

/* Bit for bit, except that any NaN equals any NaN (arithmetic may quiet a payload). */
static int same_float(float a, float b)
{
    return f32_bits(a) == f32_bits(b) || (is_nan(a) && is_nan(b));
}

static float get_f32(const uint8_t *p)
{
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* A sentinel for `out` before an accumulate: nonzero, finite, varied (x.5, so never 0). */
static float sentinel(size_t i) { return (float)((i * 2654435761u) % 1000u) - 500.5f; }

static void fill_sentinel(float *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = sentinel(i);
}

static size_t payload_size(const starling__codec *c, size_t n)
{
    return starling__codec_is_sparse(c) ? starling__sparse_size(c, n) : starling__dense_size(c, n);
}

static void init_once(void)
{
    char err[128];
    if (zstd_ctx)
        return;
    for (size_t i = 0; i < NSPECS; i++)
        CHECK(starling_codec_create(&codecs[i], specs[i], err, sizeof err) == STARLING_OK);
    zstd_ctx = starling__zstd_new();
    CHECK(zstd_ctx != NULL);
}

/* Dense: decode_add over a sentinel base (in place, as the collectives call it) gives
 * base + decode. */
static void check_dense(const starling__codec *c, const uint8_t *raw, size_t n, const float *dec)
{
    float *acc = xmalloc(n * sizeof *acc);
    fill_sentinel(acc, n);
    starling__dense_decode_add(c, raw, n, acc, acc);
    for (size_t i = 0; i < n; i++)
        CHECK(same_float(acc[i], sentinel(i) + dec[i]));
    free(acc);
}

/* Sparse: the lossy payload `raw` (rawlen bytes, any length) straight into accumulate.
 * dec_rc/dec are what starling_codec_decode made of the same payload. */
static void check_sparse(const starling__codec *c, const uint8_t *raw, size_t rawlen, size_t n,
                         uint64_t seed, int dec_rc, const float *dec)
{
    size_t k = starling__sparse_k(c, n), changed = 0, nonzero = 0, numbers = 0;
    float *acc = xmalloc(n * sizeof *acc);
    int rc;

    fill_sentinel(acc, n);
    rc = starling__sparse_accumulate(c, raw, rawlen, n, seed, acc);
    CHECK(rc == STARLING_OK || rc == STARLING_E_PROTOCOL);
    CHECK(rc == dec_rc);
    if (rawlen != starling__sparse_size(c, n))
        CHECK(rc == STARLING_E_PROTOCOL);
    if (c->kind == CODEC_RANDK)
        CHECK(rc == (rawlen == starling__sparse_size(c, n) ? STARLING_OK : STARLING_E_PROTOCOL));
    if (rc != STARLING_OK) {
        for (size_t i = 0; i < n; i++)
            CHECK(f32_bits(acc[i]) == f32_bits(sentinel(i)));
        free(acc);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        CHECK(same_float(acc[i], sentinel(i) + dec[i]));
        changed += f32_bits(acc[i]) != f32_bits(sentinel(i));
        nonzero += !is_zero(dec[i]);
        numbers += !is_zero(dec[i]) && !is_nan(dec[i]);
    }
    CHECK(changed <= k && nonzero <= k);
    free(acc);

    /* Re-encoding the decoded vector. topk: when all k values are nonzero numbers they
     * are exactly the k largest, so the blob must come back byte for byte (the format
     * has one encoding per index set, padding included); with quantized values only the
     * index part must (a block's lo and scale need not be the decoded values' range).
     * randk: the same seed draws the same indices, so the values come back in place (but
     * 0 + -0 is +0, and NaNs may be quieted). */
    if (rawlen > 0 && (c->kind == CODEC_RANDK || numbers == k)) {
        uint8_t *blob = xmalloc(rawlen);
        CHECK(starling__sparse_encode(c, dec, n, seed, blob, NULL) == STARLING_OK);
        if (c->kind == CODEC_TOPK) {
            size_t same = c->bits ? rawlen - starling__squant_size(c, k) : rawlen;
            CHECK(memcmp(blob, raw, same) == 0);
        } else {
            for (size_t i = 0; i < k; i++) {
                float sent = get_f32(raw + 4 * i), back = get_f32(blob + 4 * i);
                CHECK(same_float(sent, back) || (is_zero(sent) && is_zero(back)));
            }
        }
        free(blob);
    }
}

/* Encodes what was decoded and decodes that again. */
static void check_reencode(const starling_codec *codec, const starling__codec *c, size_t n,
                           uint64_t seed, const float *dec)
{
    size_t cap = starling_codec_max_encoded(codec, n), elen = 0, nonzero = 0;
    uint8_t *enc = xmalloc(cap);
    float *dec2 = xmalloc(n * sizeof *dec2);

    CHECK(starling_codec_encode(codec, dec, n, seed, enc, cap, &elen) == STARLING_OK);
    CHECK(elen <= cap);
    CHECK(starling_codec_decode(codec, enc, elen, n, seed, dec2) == STARLING_OK);
    switch (c->kind) {
    case CODEC_NONE:
    case CODEC_F16:
    case CODEC_BF16:
        /* A decoded half widens exactly and narrows back to itself, whatever the
         * rounding (the dropped bits are 0). */
        for (size_t i = 0; i < n; i++)
            CHECK(same_float(dec[i], dec2[i]));
        break;
    case CODEC_TOPK:
    case CODEC_RANDK:
        for (size_t i = 0; i < n; i++)
            nonzero += !is_zero(dec2[i]);
        CHECK(nonzero <= starling__sparse_k(c, n));
        break;
    default: break;
    }
    free(dec2);
    free(enc);
}

/* The lossy payload (no flag byte) of an input that starling_codec_decode gave `rc`. */
static void check_payload(const starling_codec *codec, const starling__codec *c, const uint8_t *raw,
                          size_t rawlen, size_t n, uint64_t seed, int rc, const float *dec)
{
    if (starling__codec_is_sparse(c)) {
        check_sparse(c, raw, rawlen, n, seed, rc, dec);
    } else {
        CHECK(rc == (rawlen == starling__dense_size(c, n) ? STARLING_OK : STARLING_E_PROTOCOL));
        if (rc == STARLING_OK)
            check_dense(c, raw, n, dec);
    }
    if (rc == STARLING_OK)
        check_reencode(codec, c, n, seed, dec);
}

/* A packed zstd input (flag 1): it must decode exactly as its unpacked raw form does. */
static void check_packed(const starling_codec *codec, const starling__codec *c,
                         const uint8_t *frame, size_t flen, size_t n, uint64_t seed, int rc,
                         const float *dec)
{
    size_t psize = payload_size(c, n);
    uint8_t *rawform;
    float *dec2;
    int urc, rc2;

    if (psize == 0) {
        CHECK(rc == STARLING_E_PROTOCOL);
        return;
    }
    rawform = xmalloc(1 + psize);
    rawform[0] = 0;
    urc = starling__zstd_unpack(zstd_ctx, frame, flen, rawform + 1, psize);
    CHECK(urc == STARLING_OK || urc == STARLING_E_PROTOCOL);
    if (urc != STARLING_OK) {
        CHECK(rc == STARLING_E_PROTOCOL);
        free(rawform);
        return;
    }
    dec2 = xmalloc(n * sizeof *dec2);
    rc2 = starling_codec_decode(codec, rawform, 1 + psize, n, seed, dec2);
    CHECK(rc2 == rc);
    if (rc == STARLING_OK)
        CHECK(n == 0 || memcmp(dec, dec2, n * sizeof *dec) == 0);
    free(dec2);
    check_payload(codec, c, rawform + 1, psize, n, seed, rc, dec);
    free(rawform);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const starling_codec *codec;
    const starling__codec *c;
    const uint8_t *p;
    size_t n, len;
    uint64_t seed;
    float *dec;
    int rc;

    if (size < 3)
        return 0;
    init_once();
    codec = codecs[(data[0] & ((1u << SPEC_BITS) - 1)) % NSPECS];
    c = starling__codec_of(codec);
    seed = data[0] >> SPEC_BITS;
    n = (size_t)data[1] | (size_t)data[2] << 8;
    p = data + 3;
    len = size - 3;

    dec = xmalloc(n * sizeof *dec);
    rc = starling_codec_decode(codec, p, len, n, seed, dec);
    CHECK(rc == STARLING_OK || rc == STARLING_E_PROTOCOL);
    if (rc == STARLING_OK && len > 0) {
        /* One byte short is always refused (a truncated zstd frame included). */
        float *tmp = xmalloc(n * sizeof *tmp);
        CHECK(starling_codec_decode(codec, p, len - 1, n, seed, tmp) == STARLING_E_PROTOCOL);
        free(tmp);
    }

    if (c->zstd_level == 0) {
        check_payload(codec, c, p, len, n, seed, rc, dec);
    } else if (len == 0 || p[0] > 1) {
        CHECK(rc == STARLING_E_PROTOCOL);
    } else if (p[0] == 0) {
        check_payload(codec, c, p + 1, len - 1, n, seed, rc, dec);
    } else {
        check_packed(codec, c, p + 1, len - 1, n, seed, rc, dec);
    }
    free(dec);
    return 0;
}
