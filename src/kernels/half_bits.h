/* Bit-level f16/bf16 <-> f32 conversions, static inline so that the reduce kernels can
 * inline them and the compiler can vectorize the widen-combine-narrow loops (a call into
 * half.c per element would not vectorize). half.c wraps these for everyone else.
 *
 * Only integer operations and exact float operations are used, so the results do not
 * depend on the rounding mode, on FLT_EVAL_METHOD (x87) or on flush-to-zero settings.
 * Every case is computed unconditionally and the answer picked with bit masks, and only
 * constant shifts are used (SSE2 has no per-lane variable shift), so the loops vectorize.
 * Why masks rather than ?: -- GCC sinks a float operation into the one arm of a ?: that
 * uses it, and then, because float operations may trap (-ftrapping-math, the default),
 * refuses to if-convert the branch back and the loop stays scalar.
 *
 * The f16 pair was checked, when written, against the F16C instructions (vcvtps2ph with
 * round-to-nearest-even, vcvtph2ps) over all 2^32 f32 and all 2^16 f16 inputs, NaNs
 * included: bit-identical. */
#ifndef STARLING_KERNELS_HALF_BITS_H
#define STARLING_KERNELS_HALF_BITS_H
#include <stdint.h>
#include <string.h>

static inline uint32_t half_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float half_f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* All ones if cond, else 0. */
static inline uint32_t half_mask(int cond)
{
    return 0u - (uint32_t)(cond != 0);
}

/* f32 -> IEEE binary16, round to nearest even.
 * |f| in f32 bits (ax)          result
 *   [0, 2^-14)                  subnormal or zero: round(|f| * 2^24) units of 2^-24
 *   [2^-14, 65536)              normal; rounding may carry into the exponent, which
 *                               also turns [65520, 65536) into inf, as RNE requires
 *   [65536, inf]                inf
 *   NaN                         quiet NaN keeping the top 9 payload bits */
static inline uint16_t half_f32_to_f16(float f)
{
    uint32_t x = half_f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    int is_small = ax < 0x38800000u; /* below 2^-14 */

    /* Rebias the exponent (127 -> 15) and round the 13 dropped mantissa bits: adding
     * 0xfff plus the kept lsb rounds up above the halfway point, and at it only if odd.
     * Unsigned wrap for small ax is harmless: that lane is not selected. */
    uint32_t normal = (ax - 0x38000000u + 0x0fffu + ((ax >> 13) & 1u)) >> 13;

    /* Subnormal: scaling by 2^24 is exact (power of two, result normal), truncation of
     * a value below 1024 is exact, and a float minus its integer part is exact, so the
     * tie test sees the true remainder. Lanes not selected are fed 0, because
     * converting a large float to int32_t would be UB. A carry to 1024 gives 0x400,
     * the smallest normal, which is the right encoding. */
    float scaled = half_f32_from_bits(ax & half_mask(is_small)) * 16777216.0f;
    int32_t whole = (int32_t)scaled;
    float frac = scaled - (float)whole;
    uint32_t above_half = half_mask(frac > 0.5f);
    uint32_t at_half = half_mask(frac == 0.5f);
    uint32_t round_up = (above_half | (at_half & (uint32_t)whole)) & 1u;
    uint32_t subnormal = (uint32_t)whole + round_up;

    uint32_t nan = 0x7e00u | ((ax >> 13) & 0x03ffu);
    uint32_t small_mask = half_mask(is_small);
    uint32_t normal_mask = half_mask(!is_small && ax < 0x47800000u);
    uint32_t inf_mask = half_mask(ax >= 0x47800000u && ax <= 0x7f800000u);
    uint32_t nan_mask = half_mask(ax > 0x7f800000u);
    uint32_t r = (subnormal & small_mask) | (normal & normal_mask) | (0x7c00u & inf_mask) |
                 (nan & nan_mask);
    return (uint16_t)(sign | r);
}

/* IEEE binary16 -> f32, exact. A signalling NaN comes back quiet, payload and sign
 * kept. */
static inline float half_f16_to_f32(uint16_t h)
{
    uint32_t hu = h;
    uint32_t sign = (hu & 0x8000u) << 16;
    uint32_t exponent = (hu >> 10) & 0x1fu;
    uint32_t mantissa = hu & 0x03ffu;

    uint32_t normal = ((hu & 0x7fffu) << 13) + 0x38000000u;
    /* m * 2^-24: int -> float of m < 1024 is exact, and so is the scaling. Building the
     * f32 from bits instead would make an f32 subnormal, which DAZ would read as 0. */
    uint32_t subnormal = half_f32_bits((float)(int32_t)mantissa * 5.9604644775390625e-8f);
    uint32_t special = 0x7f800000u | (mantissa << 13) | (0x00400000u & half_mask(mantissa));
    /* Exponents 1..30 are normal. (Spelt as one range test because GCC turns
     * "e != 0 && e != 31" into a bit test with a variable shift, which SSE2 lacks.) */
    uint32_t r = (subnormal & half_mask(exponent == 0)) | (special & half_mask(exponent == 31)) |
                 (normal & half_mask(exponent - 1u < 30u));
    return half_f32_from_bits(sign | r);
}

/* f32 -> bfloat16 (the top half of an f32), round to nearest even. Same exponent range
 * as f32, so subnormals round like everything else; the carry out of the largest finite
 * value lands exactly on inf. NaN: quiet bit forced, else a NaN whose payload lives only
 * in the low 16 bits would truncate to inf. */
static inline uint16_t half_f32_to_bf16(float f)
{
    uint32_t x = half_f32_bits(f);
    uint32_t rounded = x + 0x7fffu + ((x >> 16) & 1u);
    uint32_t quiet_nan = x | 0x00400000u;
    return (uint16_t)(((x & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded) >> 16);
}

/* bfloat16 -> f32 without the NaN test: a signalling NaN stays signalling. Only for
 * values that half_f32_to_bf16 narrows again, which quiets every NaN anyway (as does
 * any f32 arithmetic on one), so a NaN still comes out as the same quiet NaN. (Which
 * payload NaN + NaN keeps is unspecified either way.) Dropping the test cuts about a
 * third off the bf16 reduce time with SSE2. */
static inline float half_bf16_to_f32_keep_nan(uint16_t h)
{
    return half_f32_from_bits((uint32_t)h << 16);
}

/* bfloat16 -> f32, exact; a signalling NaN comes back quiet. */
static inline float half_bf16_to_f32(uint16_t h)
{
    uint32_t hu = h;
    uint32_t quiet = (hu & 0x7fffu) > 0x7f80u ? 0x00400000u : 0u;
    return half_f32_from_bits((hu << 16) | quiet);
}
#endif
