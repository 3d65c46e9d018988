/* Element-wise reduction kernels: dst[i] = op(a[i], b[i]) over n elements, one kernel per
 * (dtype, op) generated from the macros below, plus the AVG division.
 *
 * Semantics per dtype
 *  - f32, f64: IEEE arithmetic in the element's own precision.
 *  - f16, bf16: widened to f32, combined, rounded back to nearest even. For + this is
 *    the correctly rounded result, not merely close: f32 has p = 24 >= 2p + 2 bits for
 *    both f16 (p = 11) and bf16 (p = 8), so the double rounding is innocuous (Figueroa,
 *    "When is double rounding innocuous?", SIGNUM 1995).
 *  - i32, i64, u8: sums wrap modulo 2^bits. The signed sums run on the unsigned type of
 *    the same width (C99 6.5p7 lets an int32_t object be accessed as uint32_t), so the
 *    wrap is defined arithmetic rather than signed-overflow UB.
 *  - min/max on floats propagate NaN: if either input is NaN the result is NaN (a's NaN
 *    when both are). fmin/fmax would instead drop the NaN, and which value survives
 *    would then depend on the order members are combined in; with propagation a NaN
 *    anywhere shows up everywhere, identically. On ties, including -0 vs +0, the result
 *    is a's value.
 */
#include "kernels/kernels.h"

#include "kernels/half_bits.h"

/* Elements per inner loop. GCC's -O2 cost model ("very cheap") vectorizes only loops
 * whose trip count is a known multiple of the vector length and which need no runtime
 * alias check, so the kernels walk fixed-size blocks; the pragma below removes the alias
 * check. 64 elements keeps the scalar tail short and is a multiple of any vector width. */
#define KERNEL_BLOCK 64

/* "dst may alias a or b" (kernels.h) means dst is the same pointer as a or b, or
 * disjoint from both. Element j is then read before it is written and no iteration
 * touches another's element: the loop carries no dependence, and the vectorizer may
 * assume so. (A partial overlap such as dst == a + 1 would break this; no caller does
 * that, and the result would be order-dependent even in scalar code.)
 * clang needs no hint: at -O2 it vectorizes behind a runtime alias check. Its
 * "vectorize(assume_safety)" would also turn every loop it cannot vectorize (-O1,
 * sanitizer builds) into a -Wpass-failed warning, which -Werror makes fatal. */
#if defined(__GNUC__) && !defined(__clang__)
#define KERNEL_NO_LOOP_DEPENDENCE _Pragma("GCC ivdep")
#else
#define KERNEL_NO_LOOP_DEPENDENCE
#endif

typedef void (*binary_kernel)(void *dst, const void *a, const void *b, size_t n);
typedef void (*scale_kernel)(void *buf, size_t n, int divisor);

/* ---------------------------------------------------------------- combiners */

#define COMBINE_ADD(x, y) ((x) + (y))
/* u8 operands are promoted to int; the cast back to uint8_t is the defined modulo wrap. */
#define COMBINE_ADD_U8(x, y) ((uint8_t)((x) + (y)))
#define COMBINE_MIN_INT(x, y) ((y) < (x) ? (y) : (x))
#define COMBINE_MAX_INT(x, y) ((y) > (x) ? (y) : (x))
/* Keep x if x is NaN or y is not strictly better; y >= x is false when y is NaN, so a
 * NaN y wins over a number x. x != x is the NaN test (isnan may be a function call).
 * The order matters to GCC: the NaN test goes second because it cannot trap, so GCC may
 * evaluate it unconditionally and the loop vectorizes (with -ftrapping-math, the default,
 * a possibly trapping compare behind || keeps the branch and the loop scalar). */
#define COMBINE_MIN_FLOAT(x, y) (((y) >= (x) || (x) != (x)) ? (x) : (y))
#define COMBINE_MAX_FLOAT(x, y) (((y) <= (x) || (x) != (x)) ? (x) : (y))

/* How an element is widened to the type the combiner works in, and narrowed back. */
#define CONVERT_SAME(x) (x)
#define DIVIDE(x, d) ((x) / (d))

/* ---------------------------------------------------------------- generators */

/* void <name>(T *dst, const T *a, const T *b, size_t n):
 * dst[i] = NARROW(COMBINE(WIDEN(a[i]), WIDEN(b[i]))). */
#define DEFINE_BINARY_KERNEL(name, T, WIDEN, NARROW, COMBINE)                              \
    static void name(void *dst_v, const void *a_v, const void *b_v, size_t n)               \
    {                                                                                      \
        T *dst = dst_v;                                                                    \
        const T *a = a_v;                                                                  \
        const T *b = b_v;                                                                  \
        size_t i = 0;                                                                      \
        for (; n - i >= KERNEL_BLOCK; i += KERNEL_BLOCK) {                                 \
            T *dst_blk = dst + i;                                                          \
            const T *a_blk = a + i;                                                        \
            const T *b_blk = b + i;                                                        \
            KERNEL_NO_LOOP_DEPENDENCE                                                      \
            for (size_t j = 0; j < KERNEL_BLOCK; j++)                                      \
                dst_blk[j] = NARROW(COMBINE(WIDEN(a_blk[j]), WIDEN(b_blk[j])));            \
        }                                                                                  \
        for (; i < n; i++)                                                                 \
            dst[i] = NARROW(COMBINE(WIDEN(a[i]), WIDEN(b[i])));                            \
    }

/* void <name>(T *buf, size_t n, int divisor): buf[i] = NARROW(WIDEN(buf[i]) / divisor),
 * the divisor converted once to DT, the type the division is done in. Blocked like the
 * binary kernels, for the same cost-model reason (integer division stays scalar: SSE and
 * NEON have no vector integer divide). */
#define DEFINE_SCALE_KERNEL(name, T, DT, WIDEN, NARROW)                                   \
    static void name(void *buf_v, size_t n, int divisor)                                   \
    {                                                                                      \
        T *buf = buf_v;                                                                    \
        const DT d = (DT)divisor;                                                          \
        size_t i = 0;                                                                      \
        for (; n - i >= KERNEL_BLOCK; i += KERNEL_BLOCK) {                                 \
            T *blk = buf + i;                                                              \
            for (size_t j = 0; j < KERNEL_BLOCK; j++)                                      \
                blk[j] = NARROW(DIVIDE(WIDEN(blk[j]), d));                                 \
        }                                                                                  \
        for (; i < n; i++)                                                                 \
            buf[i] = NARROW(DIVIDE(WIDEN(buf[i]), d));                                     \
    }

/* The kernels of one dtype: sum (on SUM_T, which differs from T only for the wrapping
 * signed sums), min, max and the AVG division (done in DIV_T). */
#define DEFINE_DTYPE_KERNELS(tag, T, SUM_T, DIV_T, WIDEN, NARROW, ADD, MIN, MAX)           \
    DEFINE_BINARY_KERNEL(tag##_sum, SUM_T, WIDEN, NARROW, ADD)                             \
    DEFINE_BINARY_KERNEL(tag##_min, T, WIDEN, NARROW, MIN)                                 \
    DEFINE_BINARY_KERNEL(tag##_max, T, WIDEN, NARROW, MAX)                                 \
    DEFINE_SCALE_KERNEL(tag##_div, T, DIV_T, WIDEN, NARROW)

/* clang-format off */
DEFINE_DTYPE_KERNELS(f32,  float,    float,    float,    CONVERT_SAME, CONVERT_SAME,
                     COMBINE_ADD, COMBINE_MIN_FLOAT, COMBINE_MAX_FLOAT)
DEFINE_DTYPE_KERNELS(f64,  double,   double,   double,   CONVERT_SAME, CONVERT_SAME,
                     COMBINE_ADD, COMBINE_MIN_FLOAT, COMBINE_MAX_FLOAT)
DEFINE_DTYPE_KERNELS(f16,  uint16_t, uint16_t, float,    half_f16_to_f32, half_f32_to_f16,
                     COMBINE_ADD, COMBINE_MIN_FLOAT, COMBINE_MAX_FLOAT)
DEFINE_DTYPE_KERNELS(bf16, uint16_t, uint16_t, float,    half_bf16_to_f32_keep_nan,
                     half_f32_to_bf16,
                     COMBINE_ADD, COMBINE_MIN_FLOAT, COMBINE_MAX_FLOAT)
DEFINE_DTYPE_KERNELS(i32,  int32_t,  uint32_t, int32_t,  CONVERT_SAME, CONVERT_SAME,
                     COMBINE_ADD, COMBINE_MIN_INT, COMBINE_MAX_INT)
DEFINE_DTYPE_KERNELS(i64,  int64_t,  uint64_t, int64_t,  CONVERT_SAME, CONVERT_SAME,
                     COMBINE_ADD, COMBINE_MIN_INT, COMBINE_MAX_INT)
DEFINE_DTYPE_KERNELS(u8,   uint8_t,  uint8_t,  unsigned, CONVERT_SAME, CONVERT_SAME,
                     COMBINE_ADD_U8, COMBINE_MIN_INT, COMBINE_MAX_INT)
/* clang-format on */

/* ---------------------------------------------------------------- dispatch */

enum { KIND_SUM, KIND_MIN, KIND_MAX, KIND_COUNT };

static const binary_kernel binary_kernels[STARLING_DTYPE_COUNT][KIND_COUNT] = {
    [STARLING_F32] = {f32_sum, f32_min, f32_max},
    [STARLING_F64] = {f64_sum, f64_min, f64_max},
    [STARLING_F16] = {f16_sum, f16_min, f16_max},
    [STARLING_BF16] = {bf16_sum, bf16_min, bf16_max},
    [STARLING_I32] = {i32_sum, i32_min, i32_max},
    [STARLING_I64] = {i64_sum, i64_min, i64_max},
    [STARLING_U8] = {u8_sum, u8_min, u8_max},
};

static const scale_kernel scale_kernels[STARLING_DTYPE_COUNT] = {
    [STARLING_F32] = f32_div, [STARLING_F64] = f64_div, [STARLING_F16] = f16_div,
    [STARLING_BF16] = bf16_div, [STARLING_I32] = i32_div, [STARLING_I64] = i64_div,
    [STARLING_U8] = u8_div,
};

int starling__op_supported(starling_dtype dtype, starling_op op)
{
    /* The unsigned casts reject negative values too (enums may come off the wire). */
    return (unsigned)dtype < (unsigned)STARLING_DTYPE_COUNT &&
           (unsigned)op < (unsigned)STARLING_OP_COUNT;
}

/* AVG accumulates as a sum; the division happens once, in starling__reduce_finish. */
static int op_kind(starling_op op)
{
    switch (op) {
    case STARLING_MIN:
        return KIND_MIN;
    case STARLING_MAX:
        return KIND_MAX;
    default:
        return KIND_SUM;
    }
}

/* Unsupported pairs are a no-op: callers check starling__op_supported when they validate
 * the collective's arguments, and a kernel has no error path. */
void starling__reduce(void *dst, const void *a, const void *b, size_t n,
                      starling_dtype dtype, starling_op op)
{
    if (!starling__op_supported(dtype, op) || n == 0)
        return;
    binary_kernels[dtype][op_kind(op)](dst, a, b, n);
}

void starling__reduce_finish(void *buf, size_t n, starling_dtype dtype, starling_op op,
                             int nmembers)
{
    /* nmembers < 1 cannot come from a formed epoch; refusing it keeps the integer
     * division away from / 0. Dividing by 1 would change nothing. */
    if (!starling__op_supported(dtype, op) || op != STARLING_AVG || nmembers <= 1)
        return;
    scale_kernels[dtype](buf, n, nmembers);
}
