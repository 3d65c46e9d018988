/* Pure numeric kernels on caller-owned memory: reductions, half-precision conversion.
 * No I/O, no allocation, no global state. Every kernel is generated once per dtype. */
#ifndef STARLING_KERNELS_H
#define STARLING_KERNELS_H
#include <stddef.h>
#include <stdint.h>

#include "starling.h"

/* IEEE binary16 <-> f32. f32->f16 rounds to nearest, ties to even; overflow gives +-inf;
 * NaN stays NaN (quiet, sign kept); subnormals handled exactly. */
uint16_t starling__f32_to_f16(float f);
float starling__f16_to_f32(uint16_t h);
/* bfloat16 <-> f32, round to nearest even; NaN stays NaN (quiet). */
uint16_t starling__f32_to_bf16(float f);
float starling__bf16_to_f32(uint16_t h);

/* 1 if `op` is meaningful for `dtype` (all four ops for every dtype; u8 sum wraps). */
int starling__op_supported(starling_dtype dtype, starling_op op);

/* dst[i] = op(a[i], b[i]) for n elements of `dtype`. dst may alias a or b.
 * For STARLING_AVG this is a plain sum: the division happens once, in
 * starling__reduce_finish. f16/bf16 are widened to f32, combined, rounded back (RNE).
 * Integer sums wrap (two's complement, computed in unsigned arithmetic: no UB). */
void starling__reduce(void *dst, const void *a, const void *b, size_t n,
                      starling_dtype dtype, starling_op op);

/* Final step of a reduction over `nmembers` contributions: for STARLING_AVG divides every
 * element by nmembers in place (floats: x / n in the element's precision, f16/bf16 via
 * f32; integers: truncating division); other ops: no-op. */
void starling__reduce_finish(void *buf, size_t n, starling_dtype dtype, starling_op op,
                             int nmembers);
#endif
