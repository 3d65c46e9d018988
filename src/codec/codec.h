/* Codecs: lossy compression of f32 vectors for collectives, plus the lossless zstd stage.
 * Pure functions (no I/O, no globals); the grammar and every wire format are in
 * docs/codecs.md. A codec is parsed once from its spec string into this value. */
#ifndef STARLING_CODEC_CODEC_H
#define STARLING_CODEC_CODEC_H
#include <stddef.h>
#include <stdint.h>

typedef enum starling__codec_kind {
    CODEC_NONE = 0,
    CODEC_F16 = 1,   /* IEEE binary16 cast */
    CODEC_BF16 = 2,  /* bfloat16 cast */
    CODEC_INT8 = 3,  /* block-wise affine 8-bit */
    CODEC_INT4 = 4,  /* block-wise affine 4-bit */
    CODEC_TOPK = 5,  /* k largest magnitudes, (index, value) pairs */
    CODEC_RANDK = 6, /* k indices drawn from a seed all peers share; values only */
    CODEC_FP4 = 7    /* block-scaled cast to the 4-bit float E2M1 */
} starling__codec_kind;

#define STARLING_CODEC_SPEC_MAX 64

typedef struct starling__codec {
    int kind;         /* starling__codec_kind */
    int stochastic;   /* casts: stochastic rounding instead of round-to-nearest-even */
    uint32_t block;   /* int8/int4/fp4: elements per block (defaults 256, 64, 32);
                       * topk with bits: selected values per block (default 128) */
    double frac;      /* topk/randk: fraction of elements kept, 0 < frac <= 1 */
    unsigned bits;    /* topk: 0 for f32 values, else 2, 4 or 8 (sign-magnitude codes) */
    int ef;           /* "+ef": the library keeps and re-adds the residual */
    int zstd_level;   /* 0: no lossless stage; else the zstd level (1..19) */
} starling__codec;

/* Parses `spec` (see docs/codecs.md). On error returns STARLING_E_INVALID and writes a
 * message naming the offending part into why (wl bytes). *out is untouched on error. */
int starling__codec_parse(const char *spec, starling__codec *out, char *why, size_t wl);
/* Writes the canonical spec (parse(format(c)) == c; equal codecs format equally). */
void starling__codec_format(const starling__codec *c, char *out, size_t cap);
int starling__codec_is_dense(const starling__codec *c);  /* f16 bf16 int8 int4 fp4 */
int starling__codec_is_sparse(const starling__codec *c); /* topk randk */

/* ---- dense codecs: n f32 in, a fixed number of bytes out, n f32 back. */

/* Bytes the encoding of n elements takes (0 for n == 0). */
size_t starling__dense_size(const starling__codec *c, size_t n);
/* Encodes x[0..n) into out (dense_size bytes). `seed` drives stochastic rounding only.
 * If err != NULL, err[i] = x[i] - decode(out)[i] (computed in f32; err may alias x). */
void starling__dense_encode(const starling__codec *c, const float *x, size_t n, uint64_t seed,
                            uint8_t *out, float *err);
/* out[i] = decode(in)[i]. Every byte pattern decodes (no failure); `in` holds dense_size
 * bytes. */
void starling__dense_decode(const starling__codec *c, const uint8_t *in, size_t n, float *out);
/* out[i] = base[i] + decode(in)[i], in f32; out may alias base. */
void starling__dense_decode_add(const starling__codec *c, const uint8_t *in, size_t n,
                                const float *base, float *out);

/* fp4 (codec_fp4.c), called by the dense entry points above. */
size_t starling__fp4_size(const starling__codec *c, size_t n);
void starling__fp4_encode(const starling__codec *c, const float *x, size_t n, uint8_t *out,
                          float *err);
/* out[i] = decode(in)[i], plus base[i] when base != NULL (out may alias base). */
void starling__fp4_decode(const starling__codec *c, const uint8_t *in, size_t n, const float *base,
                          float *out);

/* ---- sparse codecs: a fixed-size blob of k (index, value) pairs. */

/* k for n elements: 0 when n == 0, else min(n, max(1, ceil(frac * n))). */
size_t starling__sparse_k(const starling__codec *c, size_t n);
/* Blob bytes for n elements (depends on n and the codec only). */
size_t starling__sparse_size(const starling__codec *c, size_t n);
/* Selects k elements of x and writes the blob. topk: the k largest |x|, ties to the lower
 * index, NaN ranked above everything; randk: the k distinct indices drawn from `seed`
 * (every peer passing the same seed draws the same ones). If resid != NULL it receives
 * x with the selected entries set to 0, or with topk:bits to x - decoded (resid may
 * alias x). Returns STARLING_OK or STARLING_E_NOMEM (selection scratch). */
int starling__sparse_encode(const starling__codec *c, const float *x, size_t n, uint64_t seed,
                            uint8_t *blob, float *resid);
/* Validates a blob received from the network (len == sparse_size, indices strictly
 * increasing and < n) and then adds its values into out[index]. Returns
 * STARLING_E_PROTOCOL, with nothing written, on a malformed blob, and STARLING_E_NOMEM
 * (nothing written) when the scratch (12 bytes per kept element; randk: n/8 bytes)
 * cannot be had. */
int starling__sparse_accumulate(const starling__codec *c, const uint8_t *blob, size_t len,
                                size_t n, uint64_t seed, float *out);

/* ---- quantized values of a topk blob (bits 2, 4 or 8; codec_squant.c) */

/* Bytes of k quantized values: 8 per block of `block` values, then k codes of `bits`. */
size_t starling__squant_size(const starling__codec *c, size_t k);
/* Quantizes v[0..k) into out (squant_size bytes). If dec != NULL it receives the
 * decoded values, exactly as starling__squant_decode gives them (dec may alias v). */
void starling__squant_encode(const starling__codec *c, const float *v, size_t k, uint8_t *out,
                             float *dec);
/* STARLING_E_PROTOCOL if the padding bits after the last code are not 0. */
int starling__squant_check(const starling__codec *c, const uint8_t *in, size_t k);
/* out[0..k) = the values. Every byte pattern decodes (check the padding first). */
void starling__squant_decode(const starling__codec *c, const uint8_t *in, size_t k, float *out);

/* The parsed codec behind a public handle (codec_api.c). */
struct starling_codec;
const starling__codec *starling__codec_of(const struct starling_codec *codec);

/* ---- lossless stage */

typedef struct starling__zstd starling__zstd; /* compression + decompression contexts */
starling__zstd *starling__zstd_new(void);
void starling__zstd_free(starling__zstd *z);
/* Compresses src[0..n) at `level` into dst (cap bytes). Returns the compressed size when
 * it is smaller than n, else 0 (send the raw bytes). */
size_t starling__zstd_pack(starling__zstd *z, int level, const uint8_t *src, size_t n,
                           uint8_t *dst, size_t cap);
/* Decompresses exactly `expect` bytes into dst. STARLING_E_PROTOCOL if src is not a
 * valid zstd frame of exactly that content size. */
int starling__zstd_unpack(starling__zstd *z, const uint8_t *src, size_t n, uint8_t *dst,
                          size_t expect);
#endif
