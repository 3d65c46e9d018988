/* Quantized values of a sparse blob ("topk:FRAC:bits=B"): the k selected values in
 * blocks of `block`, each block a magnitude range (f32 lo, f32 scale) and one B-bit
 * sign-magnitude code per value. docs/codecs.md has the layout.
 *
 * Why sign and magnitude rather than the dense codecs' min/max affine code: top-k keeps
 * the largest |x|, so a block's values sit in two clusters, [-hi, -lo] and [lo, hi],
 * with nothing between. An affine code over [-hi, hi] would spend its levels on the
 * empty middle (with 2 bits: two of its four levels); a sign bit plus an affine code of
 * the magnitude over [lo, hi] spends them all where the values are.
 *
 * The quantization step is computed in double (k is a few percent of n, so speed does
 * not matter here), which needs no special path for tiny or huge ranges. The decoded
 * value is computed in f32 by one function the encoder and the decoder share, so the
 * encoder's residual and every receiver's decoding agree bit for bit. */
#include "codec/codec.h"

#include <math.h>
#include <string.h>

#include "kernels/half_bits.h"
#include "starling.h"

static size_t squant_blocks(const starling__codec *c, size_t k)
{
    return k / c->block + (k % c->block != 0);
}

static size_t code_bytes(const starling__codec *c, size_t k) { return (k * c->bits + 7) / 8; }

size_t starling__squant_size(const starling__codec *c, size_t k)
{
    return 8 * squant_blocks(c, k) + code_bytes(c, k);
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

/* Code i occupies bits [i*bits, (i+1)*bits) of the code area, least significant first;
 * bits is 2, 4 or 8, so a code never straddles a byte. */
static unsigned get_code(const uint8_t *codes, unsigned bits, size_t i)
{
    size_t pos = i * bits;
    return (codes[pos >> 3] >> (pos & 7)) & ((1u << bits) - 1);
}

static void put_code(uint8_t *codes, unsigned bits, size_t i, unsigned code)
{
    size_t pos = i * bits;
    codes[pos >> 3] |= (uint8_t)(code << (pos & 7));
}

/* The decoded value of a code: sign bit on top, magnitude level below. */
static float dequant(float lo, float scale, unsigned bits, unsigned code)
{
    unsigned q = code & ((1u << (bits - 1)) - 1);
    float m = lo + (float)q * scale;
    return code >> (bits - 1) ? -m : m;
}

static int is_finite(float f) { return (half_f32_bits(f) & 0x7fffffffu) < 0x7f800000u; }

void starling__squant_encode(const starling__codec *c, const float *v, size_t k, uint8_t *out,
                             float *dec)
{
    unsigned bits = c->bits, qmax = (1u << (bits - 1)) - 1;
    size_t nblocks = squant_blocks(c, k);
    uint8_t *codes = out + 8 * nblocks;

    memset(codes, 0, code_bytes(c, k));
    for (size_t b = 0; b < nblocks; b++) {
        size_t start = b * c->block;
        size_t len = k - start < c->block ? k - start : c->block;
        float lo = fabsf(v[start]), hi = lo, scale;
        int bad = 0;

        for (size_t i = start; i < start + len; i++) {
            float m = fabsf(v[i]);
            bad |= !is_finite(v[i]);
            lo = m < lo ? m : lo;
            hi = m > hi ? m : hi;
        }
        if (bad) {
            /* The whole block decodes to NaN, as in the dense codecs; codes stay 0. */
            lo = scale = half_f32_from_bits(0x7fc00000u);
        } else {
            scale = (hi - lo) / (float)qmax;
        }
        put_f32(out + 8 * b, lo);
        put_f32(out + 8 * b + 4, scale);
        for (size_t i = start; i < start + len; i++) {
            unsigned code = 0;
            if (!bad) {
                double q = scale > 0.0f
                               ? floor(((double)fabsf(v[i]) - (double)lo) / (double)scale + 0.5)
                               : 0.0;
                code = q > (double)qmax ? qmax : (unsigned)q;
                if (signbit(v[i]))
                    code |= 1u << (bits - 1);
                put_code(codes, bits, i, code);
            }
            if (dec)
                dec[i] = dequant(lo, scale, bits, code);
        }
    }
}

int starling__squant_check(const starling__codec *c, const uint8_t *in, size_t k)
{
    size_t used = k * c->bits, nb = code_bytes(c, k);
    const uint8_t *codes = in + 8 * squant_blocks(c, k);

    if (used % 8 && (codes[nb - 1] >> (used % 8)) != 0)
        return STARLING_E_PROTOCOL; /* padding after the last code must be 0 */
    return STARLING_OK;
}

void starling__squant_decode(const starling__codec *c, const uint8_t *in, size_t k, float *out)
{
    unsigned bits = c->bits;
    size_t nblocks = squant_blocks(c, k);
    const uint8_t *codes = in + 8 * nblocks;

    for (size_t b = 0; b < nblocks; b++) {
        size_t start = b * c->block;
        size_t len = k - start < c->block ? k - start : c->block;
        float lo = get_f32(in + 8 * b), scale = get_f32(in + 8 * b + 4);
        for (size_t i = start; i < start + len; i++)
            out[i] = dequant(lo, scale, bits, get_code(codes, bits, i));
    }
}
