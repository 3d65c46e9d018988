/* fp4: a cast to the 4-bit float E2M1 (sign, 2 exponent bits, 1 mantissa bit: the
 * magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6) after scaling each block of B elements by
 * scale = max|x| / 6, so the block's largest magnitude lands on 6. docs/codecs.md has
 * the layout and the error bound.
 *
 * Against int4 (16 evenly spaced levels over [min, max]): the same 4 bits per element,
 * but the levels are dense near 0 and sparse near the block's extremes, which suits
 * heavy-tailed data (pseudo-gradients) and costs precision on uniform data. The header
 * is one f32 per block instead of two, so fp4:block=32 takes the bytes of int4:block=64.
 *
 * Rounding is to the nearest level, ties to the even code (0.25 -> 0, 0.75 -> 1, ...),
 * done with seven comparisons against the midpoints: branch-free, so GCC vectorizes it. */
#include "codec/codec.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "kernels/half_bits.h"

#define FP4_CHUNK 64

static const float levels[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

static size_t fp4_blocks(const starling__codec *c, size_t n)
{
    return n / c->block + (n % c->block != 0);
}

size_t starling__fp4_size(const starling__codec *c, size_t n)
{
    return 4 * fp4_blocks(c, n) + n / 2 + (n & 1);
}

static void put_f32(uint8_t *out, float f)
{
    uint32_t u = half_f32_bits(f);
    for (int i = 0; i < 4; i++)
        out[i] = (uint8_t)(u >> (8 * i));
}

static float get_f32(const uint8_t *in)
{
    uint32_t u = 0;
    for (int i = 0; i < 4; i++)
        u |= (uint32_t)in[i] << (8 * i);
    return half_f32_from_bits(u);
}

/* The level index of v >= 0 (v in units of the scale), ties to even. */
static inline uint8_t level_of(float v)
{
    return (uint8_t)((v > 0.25f) + (v >= 0.75f) + (v > 1.25f) + (v >= 1.75f) + (v > 2.5f) +
                     (v >= 3.5f) + (v > 5.0f));
}

static inline float fp4_value(uint8_t code, float scale)
{
    float m = levels[code & 7u] * scale;
    return code & 8u ? -m : m;
}

/* The block's scale, or NaN when it holds a NaN or an Inf. */
static float block_scale(const float *x, size_t len)
{
    float amax = 0.0f;
    uint32_t bad = 0;
    for (size_t i = 0; i < len; i++) {
        uint32_t mag = half_f32_bits(x[i]) & 0x7fffffffu;
        float a = half_f32_from_bits(mag);
        bad |= mag > 0x7f7fffffu;
        amax = a > amax ? a : amax;
    }
    return bad ? half_f32_from_bits(0x7fc00000u) : amax / 6.0f;
}

void starling__fp4_encode(const starling__codec *c, const float *x, size_t n, uint8_t *out,
                          float *err)
{
    size_t nblocks = fp4_blocks(c, n);
    uint8_t *codes = out + 4 * nblocks;
    uint8_t q[FP4_CHUNK];

    for (size_t b = 0; b < nblocks; b++) {
        size_t start = b * c->block, len = n - start < c->block ? n - start : c->block;
        float scale = block_scale(x + start, len);
        /* 1/scale overflows below FLT_MIN: divide in double there (rare, exact enough). */
        int wide = scale < FLT_MIN;
        float inv = scale > 0.0f && !wide ? 1.0f / scale : 0.0f;
        put_f32(out + 4 * b, scale);
        for (size_t off = 0; off < len; off += FP4_CHUNK) {
            size_t cnt = len - off < FP4_CHUNK ? len - off : FP4_CHUNK, at = start + off;
            const float *xc = x + at;
            if (scale != scale) {
                memset(q, 0, cnt);
            } else if (wide) {
                for (size_t i = 0; i < cnt; i++) {
                    float v = scale > 0.0f ? (float)((double)fabsf(xc[i]) / (double)scale) : 0.0f;
                    q[i] = (uint8_t)(level_of(v) | (signbit(xc[i]) ? 8u : 0u));
                }
            } else {
                for (size_t i = 0; i < cnt; i++) {
                    uint32_t u = half_f32_bits(xc[i]);
                    float v = half_f32_from_bits(u & 0x7fffffffu) * inv;
                    q[i] = (uint8_t)(level_of(v) | ((u >> 28) & 8u));
                }
            }
            /* at is even: blocks are multiples of 8 and chunks of 64 */
            for (size_t i = 0; i + 1 < cnt; i += 2)
                codes[(at + i) / 2] = (uint8_t)(q[i] | (q[i + 1] << 4));
            if (cnt & 1)
                codes[(at + cnt - 1) / 2] = q[cnt - 1];
            if (err)
                for (size_t i = 0; i < cnt; i++)
                    err[at + i] = xc[i] - fp4_value(q[i], scale);
        }
    }
}

void starling__fp4_decode(const starling__codec *c, const uint8_t *in, size_t n, const float *base,
                          float *out)
{
    size_t nblocks = fp4_blocks(c, n);
    const uint8_t *codes = in + 4 * nblocks;

    for (size_t b = 0; b < nblocks; b++) {
        size_t start = b * c->block, len = n - start < c->block ? n - start : c->block;
        float scale = get_f32(in + 4 * b), table[16];
        for (uint8_t code = 0; code < 16; code++)
            table[code] = fp4_value(code, scale);
        /* start and len are even except for the vector's last element */
        for (size_t i = start; i + 1 < start + len; i += 2) {
            uint8_t byte = codes[i / 2];
            float v0 = table[byte & 15u], v1 = table[byte >> 4];
            out[i] = base ? base[i] + v0 : v0;
            out[i + 1] = base ? base[i + 1] + v1 : v1;
        }
        if (len & 1) {
            size_t i = start + len - 1;
            float v = table[codes[i / 2] & 15u];
            out[i] = base ? base[i] + v : v;
        }
    }
}
