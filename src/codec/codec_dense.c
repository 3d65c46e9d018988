/* Dense codecs: n f32 in, a fixed number of bytes out (docs/codecs.md has the byte
 * layouts and the error bounds).
 *
 *  - f16, bf16: one little-endian u16 per element; round to nearest even (the kernels'
 *    conversions, inlined) or stochastic rounding driven by a counter-based hash of
 *    (seed, element index), so an encoding is a pure function of (x, seed).
 *  - int8, int4: block-wise affine min/max quantization. Per block of B elements:
 *    lo = min, scale = (max - min) / (2^bits - 1), q = floor((x - lo) / scale + 0.5),
 *    decoded as lo + q * scale. All (lo, scale) pairs first, then the codes.
 *  - none: the raw f32 bytes (little-endian), so callers need no special case.
 *  - fp4: codec_fp4.c.
 *
 * Speed: GCC's -O2 cost model ("very cheap") vectorizes a loop only when its trip count
 * is a known multiple of the vector length and it needs no runtime alias check. So every
 * loop below runs over chunks of a constant CHUNK (or 8) elements through an inlined
 * kernel whose pointers are restrict, and a short scalar remainder handles the rest.
 * Blocks are multiples of 8 elements, so only the last block of a vector has one. */
#include "codec/codec.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "kernels/half_bits.h"
#include "starling.h"

#if defined(__GNUC__)
#define CODEC_INLINE static inline __attribute__((always_inline))
#else
#define CODEC_INLINE static inline
#endif

/* err may be the same pointer as x (codec.h); element i is read before it is written and
 * no iteration touches another's element, so the loops carry no dependence. GCC needs to
 * be told (it would otherwise version the loop, which its -O2 cost model refuses); see
 * kernels/reduce.c for why clang gets no hint. */
#if defined(__GNUC__) && !defined(__clang__)
#define CODEC_NO_LOOP_DEPENDENCE _Pragma("GCC ivdep")
#else
#define CODEC_NO_LOOP_DEPENDENCE
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define CODEC_LITTLE_ENDIAN 1
#else
#define CODEC_LITTLE_ENDIAN 0
#endif

#define CHUNK 64

/* Runs BODY(off, cnt) over [0, len) in chunks: whole CHUNKs, then 8s, then the rest.
 * BODY calls always_inline kernels, so the first two see a constant trip count. */
#define FOR_CHUNKS(len, BODY)                                                                      \
    do {                                                                                           \
        size_t off_ = 0, len_ = (len);                                                             \
        for (; len_ - off_ >= CHUNK; off_ += CHUNK)                                                \
            BODY(off_, CHUNK);                                                                     \
        for (; len_ - off_ >= 8; off_ += 8)                                                        \
            BODY(off_, 8);                                                                         \
        if (off_ < len_)                                                                           \
            BODY(off_, len_ - off_);                                                               \
    } while (0)

/* ---------------------------------------------------------------- byte order */

static void store_u16s(uint8_t *out, const uint16_t *v, size_t n)
{
    if (CODEC_LITTLE_ENDIAN) {
        memcpy(out, v, n * 2);
    } else {
        for (size_t i = 0; i < n; i++) {
            out[2 * i] = (uint8_t)v[i];
            out[2 * i + 1] = (uint8_t)(v[i] >> 8);
        }
    }
}

static void load_u16s(uint16_t *v, const uint8_t *in, size_t n)
{
    if (CODEC_LITTLE_ENDIAN) {
        memcpy(v, in, n * 2);
    } else {
        for (size_t i = 0; i < n; i++)
            v[i] = (uint16_t)(in[2 * i] | (in[2 * i + 1] << 8));
    }
}

static void store_f32(uint8_t *out, float f)
{
    uint32_t u = half_f32_bits(f);
    for (int i = 0; i < 4; i++)
        out[i] = (uint8_t)(u >> (8 * i));
}

static float load_f32(const uint8_t *in)
{
    uint32_t u = 0;
    for (int i = 0; i < 4; i++)
        u |= (uint32_t)in[i] << (8 * i);
    return half_f32_from_bits(u);
}

static void store_f32s(uint8_t *out, const float *v, size_t n)
{
    if (CODEC_LITTLE_ENDIAN) {
        memcpy(out, v, n * 4);
    } else {
        for (size_t i = 0; i < n; i++)
            store_f32(out + 4 * i, v[i]);
    }
}

static void load_f32s(float *v, const uint8_t *in, size_t n)
{
    if (CODEC_LITTLE_ENDIAN) {
        memcpy(v, in, n * 4);
    } else {
        for (size_t i = 0; i < n; i++)
            v[i] = load_f32(in + 4 * i);
    }
}

/* ---------------------------------------------------------------- random bits */

/* splitmix64's output function (Steele, Lea, Flood, "Fast splittable pseudorandom number
 * generators", OOPSLA 2014): a bijection of 64 bits whose outputs for consecutive
 * inputs pass BigCrush. Hashing (key + index * golden) gives random bits addressable by
 * element index, so any chunking of the input gives the same result. */
static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

#define GOLDEN_GAMMA 0x9e3779b97f4a7c15ull

/* The per-call key: seeds that differ by a multiple of the gamma must not share bits. */
static uint64_t stochastic_key(uint64_t seed) { return mix64(seed ^ 0x5354524c4e47ull); }

static inline uint64_t random_at(uint64_t key, uint64_t index)
{
    return mix64(key + index * GOLDEN_GAMMA);
}

/* ---------------------------------------------------------------- casts */

/* Stochastic f32 -> bf16: adding 16 uniform random bits to the f32 pattern and dropping
 * them rounds the magnitude up with probability (dropped part) / 2^16, which makes the
 * expectation exact. Works unchanged across the subnormal/normal boundary (the encoding
 * is linear there) and at the top, where the carry out of the largest finite value
 * lands on inf. Infinities stay (their low bits are 0 and 16 random bits cannot carry
 * into the exponent). NaN: quiet, as in RNE. */
static inline uint16_t bf16_stochastic(float f, uint32_t r16)
{
    uint32_t x = half_f32_bits(f);
    uint32_t rounded = x + r16;
    uint32_t quiet_nan = x | 0x00400000u;
    return (uint16_t)(((x & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded) >> 16);
}

/* Stochastic f32 -> f16 with 64 random bits r. Normal f16 range: as for bf16 with the 13
 * dropped mantissa bits. Subnormal f16 range: the value in units of 2^-24 is sig >> s
 * with s = 126 - exponent >= 14 (the f32 significand shifted right), and it rounds up
 * with probability (dropped bits) / 2^s, tested exactly against the top s random bits.
 * Below 2^-88 (s >= 64) the input always rounds to zero: a bias below 2^-64 of a unit. */
static uint16_t f16_stochastic(float f, uint64_t r)
{
    uint32_t x = half_f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;

    if (ax > 0x7f800000u)
        return half_f32_to_f16(f); /* NaN, quiet */
    if (ax >= 0x47800000u)         /* >= 65536 or inf */
        return (uint16_t)(sign | 0x7c00u);
    if (ax >= 0x38800000u) /* >= 2^-14: normal; a carry out of 65504 gives inf */
        return (uint16_t)(sign | ((ax - 0x38000000u + (uint32_t)(r & 0x1fffu)) >> 13));
    {
        uint32_t e = ax >> 23;
        uint64_t sig = (ax & 0x7fffffu) | (e ? 0x800000u : 0u);
        unsigned s = 126u - (e ? e : 1u);
        uint64_t whole, rem;
        if (s >= 64)
            return (uint16_t)sign;
        whole = sig >> s;
        rem = sig & ((UINT64_C(1) << s) - 1);
        return (uint16_t)(sign | (uint32_t)(whole + ((r >> (64 - s)) < rem)));
    }
}

/* dst[i] = narrow(x[i]) for one chunk (RNE). */
CODEC_INLINE void bf16_chunk(const float *restrict x, size_t cnt, uint16_t *restrict dst)
{
    for (size_t i = 0; i < cnt; i++)
        dst[i] = half_f32_to_bf16(x[i]);
}

CODEC_INLINE void f16_chunk(const float *restrict x, size_t cnt, uint16_t *restrict dst)
{
    for (size_t i = 0; i < cnt; i++)
        dst[i] = half_f32_to_f16(x[i]);
}

/* err[i] = x[i] - widen(h[i]) for one chunk; err may be x. */
CODEC_INLINE void half_err_chunk(int kind, const float *x, const uint16_t *restrict h, size_t cnt,
                                 float *err)
{
    if (kind == CODEC_BF16) {
        CODEC_NO_LOOP_DEPENDENCE
        for (size_t i = 0; i < cnt; i++)
            err[i] = x[i] - half_bf16_to_f32(h[i]);
    } else {
        CODEC_NO_LOOP_DEPENDENCE
        for (size_t i = 0; i < cnt; i++)
            err[i] = x[i] - half_f16_to_f32(h[i]);
    }
}

/* out[i] = (base ? base[i] : 0) + widen(h[i]) for one chunk; out may be base. */
CODEC_INLINE void half_decode_chunk(int kind, const uint16_t *restrict h, size_t cnt,
                                    const float *base, float *out)
{
    if (kind == CODEC_BF16 && base) {
        CODEC_NO_LOOP_DEPENDENCE
        for (size_t i = 0; i < cnt; i++)
            out[i] = base[i] + half_bf16_to_f32(h[i]);
    } else if (kind == CODEC_BF16) {
        for (size_t i = 0; i < cnt; i++)
            out[i] = half_bf16_to_f32(h[i]);
    } else if (base) {
        CODEC_NO_LOOP_DEPENDENCE
        for (size_t i = 0; i < cnt; i++)
            out[i] = base[i] + half_f16_to_f32(h[i]);
    } else {
        for (size_t i = 0; i < cnt; i++)
            out[i] = half_f16_to_f32(h[i]);
    }
}

static void cast_encode(const starling__codec *c, const float *x, size_t n, uint64_t seed,
                        uint8_t *out, float *err)
{
    uint16_t h[CHUNK];
    uint64_t key = stochastic_key(seed);

    if (c->stochastic) {
        for (size_t start = 0; start < n; start += CHUNK) {
            size_t cnt = n - start < CHUNK ? n - start : CHUNK;
            for (size_t i = 0; i < cnt; i++) {
                uint64_t at = (uint64_t)(start + i);
                if (c->kind == CODEC_BF16) /* one hash feeds four elements */
                    h[i] = bf16_stochastic(
                        x[at], (uint32_t)(random_at(key, at >> 2) >> (16 * (at & 3))) & 0xffffu);
                else
                    h[i] = f16_stochastic(x[at], random_at(key, at));
            }
            store_u16s(out + 2 * start, h, cnt);
            if (err)
                half_err_chunk(c->kind, x + start, h, cnt, err + start);
        }
        return;
    }

#define CAST_RNE(off, cnt)                                                                         \
    do {                                                                                           \
        if (c->kind == CODEC_BF16)                                                                 \
            bf16_chunk(x + (off), (cnt), h);                                                       \
        else                                                                                       \
            f16_chunk(x + (off), (cnt), h);                                                        \
        store_u16s(out + 2 * (off), h, (cnt));                                                     \
        if (err)                                                                                   \
            half_err_chunk(c->kind, x + (off), h, (cnt), err + (off));                             \
    } while (0)
    FOR_CHUNKS(n, CAST_RNE);
#undef CAST_RNE
}

static void cast_decode(const starling__codec *c, const uint8_t *in, size_t n, const float *base,
                        float *out)
{
    uint16_t h[CHUNK];
#define CAST_DECODE(off, cnt)                                                                      \
    do {                                                                                           \
        load_u16s(h, in + 2 * (off), (cnt));                                                       \
        half_decode_chunk(c->kind, h, (cnt), base ? base + (off) : NULL, out + (off));             \
    } while (0)
    FOR_CHUNKS(n, CAST_DECODE);
#undef CAST_DECODE
}

/* ---------------------------------------------------------------- int8 / int4 */

typedef struct affine_block {
    float lo, scale;
    float inv;     /* 1 / scale, or 0 for a constant block */
    int nonfinite; /* a NaN or inf in the block: lo = scale = NaN, codes 0 */
    int wide;      /* range or 1/scale not finite in f32: quantize in double */
} affine_block;

static size_t affine_blocks(const starling__codec *c, size_t n)
{
    return n / c->block + (n % c->block != 0);
}

/* min, max and whether any element is NaN or inf. Eight lanes of running min/max: the
 * constant inner loop becomes two SSE minps/maxps per eight elements. `v < l ? v : l`
 * is exactly what minps computes, so GCC uses it without -ffast-math; a NaN would be
 * skipped by it, hence the separate exponent test (integer, so it vectorizes too). */
static void block_range(const float *restrict x, size_t len, float *lo, float *hi, int *nonfinite)
{
    float l8[8], h8[8];
    int32_t bad8[8];
    size_t i = 0;
    float l, h;
    int32_t bad = 0;

    for (int j = 0; j < 8; j++) {
        l8[j] = h8[j] = x[0];
        bad8[j] = 0;
    }
    for (; len - i >= 8; i += 8) {
        for (int j = 0; j < 8; j++) {
            float v = x[i + j];
            int32_t mag = (int32_t)(half_f32_bits(v) & 0x7fffffffu);
            l8[j] = v < l8[j] ? v : l8[j];
            h8[j] = v > h8[j] ? v : h8[j];
            bad8[j] |= mag > 0x7f7fffff;
        }
    }
    l = l8[0];
    h = h8[0];
    for (int j = 0; j < 8; j++) {
        l = l8[j] < l ? l8[j] : l;
        h = h8[j] > h ? h8[j] : h;
        bad |= bad8[j];
    }
    for (; i < len; i++) {
        float v = x[i];
        l = v < l ? v : l;
        h = v > h ? v : h;
        bad |= (int32_t)(half_f32_bits(v) & 0x7fffffffu) > 0x7f7fffff;
    }
    *lo = l;
    *hi = h;
    *nonfinite = bad != 0;
}

static void affine_params(const float *x, size_t len, uint32_t qmax, affine_block *p)
{
    float hi, range;

    block_range(x, len, &p->lo, &hi, &p->nonfinite);
    p->wide = 0;
    p->inv = 0.0f;
    if (p->nonfinite) {
        p->lo = p->scale = half_f32_from_bits(0x7fc00000u);
        return;
    }
    range = hi - p->lo;
    p->scale = range / (float)qmax;
    if (range == 0.0f)
        return;
    /* hi - lo overflows for values of both signs beyond +-FLT_MAX/2; 1/scale overflows
     * below scale 2^-126. Both are rare enough for a slow exact path. */
    if (!(range <= FLT_MAX) || p->scale < FLT_MIN) {
        p->wide = 1;
        p->scale = (float)(((double)hi - (double)p->lo) / (double)qmax);
        return;
    }
    p->inv = 1.0f / p->scale;
}

/* q[i] = min(floor((x[i] - lo) * inv + 0.5), qmax). x >= lo, so the value is >= 0.5 and
 * the conversion truncates toward zero, i.e. floors. inv is 0 for a constant block. */
CODEC_INLINE void quant_chunk(const float *restrict x, size_t cnt, float lo, float inv,
                              int32_t qmax, uint8_t *restrict q)
{
    for (size_t i = 0; i < cnt; i++) {
        int32_t v = (int32_t)((x[i] - lo) * inv + 0.5f);
        q[i] = (uint8_t)(v < qmax ? v : qmax);
    }
}

/* The slow path of quant_chunk, in double: for blocks whose range or 1/scale does not
 * fit in f32. */
static void quant_chunk_wide(const float *x, size_t cnt, float lo, float scale, int32_t qmax,
                             uint8_t *q)
{
    for (size_t i = 0; i < cnt; i++) {
        double v = scale > 0.0f ? floor(((double)x[i] - (double)lo) / (double)scale + 0.5) : 0.0;
        q[i] = (uint8_t)(v < 0.0 ? 0 : v > (double)qmax ? qmax : (int32_t)v);
    }
}

/* The decoded value; encode (for err) and decode share it so they agree bit for bit. */
CODEC_INLINE float dequant(float lo, float scale, uint8_t q) { return lo + (float)q * scale; }

CODEC_INLINE void dequant_err_chunk(const float *x, const uint8_t *restrict q, size_t cnt, float lo,
                                    float scale, float *err)
{
    CODEC_NO_LOOP_DEPENDENCE
    for (size_t i = 0; i < cnt; i++)
        err[i] = x[i] - dequant(lo, scale, q[i]);
}

CODEC_INLINE void dequant_chunk(const uint8_t *restrict q, size_t cnt, float lo, float scale,
                                const float *base, float *out)
{
    if (base) {
        CODEC_NO_LOOP_DEPENDENCE
        for (size_t i = 0; i < cnt; i++)
            out[i] = base[i] + dequant(lo, scale, q[i]);
    } else {
        for (size_t i = 0; i < cnt; i++)
            out[i] = dequant(lo, scale, q[i]);
    }
}

/* Two 4-bit codes per byte, element 2i in the low nibble. cnt may be odd only for the
 * last chunk of the vector, whose last high nibble is then 0. */
CODEC_INLINE void pack_nibbles(const uint8_t *restrict q, size_t cnt, uint8_t *restrict out)
{
    for (size_t i = 0; i < cnt / 2; i++)
        out[i] = (uint8_t)(q[2 * i] | (q[2 * i + 1] << 4));
    if (cnt & 1)
        out[cnt / 2] = q[cnt - 1];
}

CODEC_INLINE void unpack_nibbles(const uint8_t *restrict in, size_t cnt, uint8_t *restrict q)
{
    for (size_t i = 0; i < cnt / 2; i++) {
        q[2 * i] = in[i] & 15u;
        q[2 * i + 1] = (uint8_t)(in[i] >> 4);
    }
    if (cnt & 1)
        q[cnt - 1] = in[cnt / 2] & 15u;
}

static void affine_encode(const starling__codec *c, const float *x, size_t n, uint8_t *out,
                          float *err)
{
    int four = c->kind == CODEC_INT4;
    int32_t qmax = four ? 15 : 255;
    size_t nblocks = affine_blocks(c, n);
    uint8_t *codes = out + 8 * nblocks;
    uint8_t tmp[CHUNK];

    for (size_t b = 0; b < nblocks; b++) {
        size_t start = b * c->block;
        size_t len = n - start < c->block ? n - start : c->block;
        const float *xb = x + start;
        affine_block p;

        affine_params(xb, len, (uint32_t)qmax, &p);
        store_f32(out + 8 * b, p.lo);
        store_f32(out + 8 * b + 4, p.scale);
        /* q: where this chunk's codes go, one per byte; int4 packs them afterwards. */
#define AFFINE_ENCODE(off, cnt)                                                                    \
    do {                                                                                           \
        uint8_t *q = four ? tmp : codes + start + (off);                                           \
        if (p.nonfinite)                                                                           \
            memset(q, 0, (cnt));                                                                   \
        else if (p.wide)                                                                           \
            quant_chunk_wide(xb + (off), (cnt), p.lo, p.scale, qmax, q);                           \
        else                                                                                       \
            quant_chunk(xb + (off), (cnt), p.lo, p.inv, qmax, q);                                  \
        if (four)                                                                                  \
            pack_nibbles(q, (cnt), codes + (start + (off)) / 2);                                   \
        if (err)                                                                                   \
            dequant_err_chunk(xb + (off), q, (cnt), p.lo, p.scale, err + start + (off));           \
    } while (0)
        FOR_CHUNKS(len, AFFINE_ENCODE);
#undef AFFINE_ENCODE
    }
}

static void affine_decode(const starling__codec *c, const uint8_t *in, size_t n, const float *base,
                          float *out)
{
    int four = c->kind == CODEC_INT4;
    size_t nblocks = affine_blocks(c, n);
    const uint8_t *codes = in + 8 * nblocks;
    uint8_t tmp[CHUNK];

    for (size_t b = 0; b < nblocks; b++) {
        size_t start = b * c->block;
        size_t len = n - start < c->block ? n - start : c->block;
        float lo = load_f32(in + 8 * b), scale = load_f32(in + 8 * b + 4);
        const float *bb = base ? base + start : NULL;
        float *ob = out + start;
#define AFFINE_DECODE(off, cnt)                                                                    \
    do {                                                                                           \
        const uint8_t *q = codes + start + (off);                                                  \
        if (four) {                                                                                \
            unpack_nibbles(codes + (start + (off)) / 2, (cnt), tmp);                               \
            q = tmp;                                                                               \
        }                                                                                          \
        dequant_chunk(q, (cnt), lo, scale, bb ? bb + (off) : NULL, ob + (off));                    \
    } while (0)
        FOR_CHUNKS(len, AFFINE_DECODE);
#undef AFFINE_DECODE
    }
}

/* ---------------------------------------------------------------- entry points */

size_t starling__dense_size(const starling__codec *c, size_t n)
{
    switch (c->kind) {
    case CODEC_NONE: return 4 * n;
    case CODEC_F16:
    case CODEC_BF16: return 2 * n;
    case CODEC_INT8: return 8 * affine_blocks(c, n) + n;
    case CODEC_INT4: return 8 * affine_blocks(c, n) + n / 2 + (n & 1);
    case CODEC_FP4: return starling__fp4_size(c, n);
    default: return 0;
    }
}

void starling__dense_encode(const starling__codec *c, const float *x, size_t n, uint64_t seed,
                            uint8_t *out, float *err)
{
    switch (c->kind) {
    case CODEC_NONE:
        store_f32s(out, x, n);
        if (err)
            memset(err, 0, n * sizeof *err);
        break;
    case CODEC_F16:
    case CODEC_BF16: cast_encode(c, x, n, seed, out, err); break;
    case CODEC_INT8:
    case CODEC_INT4: affine_encode(c, x, n, out, err); break;
    case CODEC_FP4: starling__fp4_encode(c, x, n, out, err); break;
    default: break;
    }
}

static void dense_decode_into(const starling__codec *c, const uint8_t *in, size_t n,
                              const float *base, float *out)
{
    switch (c->kind) {
    case CODEC_NONE:
        if (!base) {
            load_f32s(out, in, n);
        } else {
            float v[CHUNK];
            for (size_t i = 0; i < n; i += CHUNK) {
                size_t cnt = n - i < CHUNK ? n - i : CHUNK;
                load_f32s(v, in + 4 * i, cnt);
                for (size_t j = 0; j < cnt; j++)
                    out[i + j] = base[i + j] + v[j];
            }
        }
        break;
    case CODEC_F16:
    case CODEC_BF16: cast_decode(c, in, n, base, out); break;
    case CODEC_INT8:
    case CODEC_INT4: affine_decode(c, in, n, base, out); break;
    case CODEC_FP4: starling__fp4_decode(c, in, n, base, out); break;
    default: break;
    }
}

void starling__dense_decode(const starling__codec *c, const uint8_t *in, size_t n, float *out)
{
    dense_decode_into(c, in, n, NULL, out);
}

void starling__dense_decode_add(const starling__codec *c, const uint8_t *in, size_t n,
                                const float *base, float *out)
{
    dense_decode_into(c, in, n, base, out);
}
