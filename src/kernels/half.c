/* Out-of-line f16/bf16 conversions for callers outside the kernels; the arithmetic lives
 * in half_bits.h so the reduce loops can inline it. */
#include "kernels/kernels.h"

#include "kernels/half_bits.h"

uint16_t starling__f32_to_f16(float f) { return half_f32_to_f16(f); }

float starling__f16_to_f32(uint16_t h) { return half_f16_to_f32(h); }

uint16_t starling__f32_to_bf16(float f) { return half_f32_to_bf16(f); }

float starling__bf16_to_f32(uint16_t h) { return half_bf16_to_f32(h); }
