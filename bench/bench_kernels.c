/* Throughput of the reduction kernels and the half-precision conversions.
 *
 * GB/s counts every byte the loop must move, 1 GB = 1e9 bytes: a reduce reads a and b
 * and writes dst (3 x the buffer size); a conversion reads one format and writes the
 * other (4 + 2 bytes per element). Each figure is the best of repeated runs lasting at
 * least 0.3 s in all, after one warm-up run that also faults the pages in.
 *
 * Build (not part of CMake):
 *   gcc -std=c99 -O2 -D_POSIX_C_SOURCE=200809L -DSTARLING_BUILDING -Iinclude -Isrc \
 *       src/kernels/half.c src/kernels/reduce.c src/kernels/dtype.c \
 *       bench/bench_kernels.c -o bench_kernels
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/half_bits.h"
#include "kernels/kernels.h"

#define MIB ((size_t)1 << 20)
#define MIN_TOTAL_S 0.3

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* One benchmark case: what to run and on which buffers. */
typedef struct {
    enum {
        CASE_REDUCE,
        CASE_TO_BF16,
        CASE_FROM_BF16,
        CASE_TO_F16,
        CASE_FROM_F16,
        CASE_TO_BF16_INLINE,
        CASE_FROM_BF16_INLINE,
        CASE_TO_F16_INLINE,
        CASE_FROM_F16_INLINE,
    } kind;
    starling_dtype dtype; /* CASE_REDUCE only */
    void *dst;
    const void *a;
    const void *b;
    size_t count; /* elements */
} bench_case;

static void run_case(const bench_case *c)
{
    const float *f32 = c->a;
    const uint16_t *h16 = c->a;
    float *out_f32 = c->dst;
    uint16_t *out_h16 = c->dst;
    switch (c->kind) {
    case CASE_REDUCE:
        starling__reduce(c->dst, c->a, c->b, c->count, c->dtype, STARLING_SUM);
        break;
    case CASE_TO_BF16:
        for (size_t i = 0; i < c->count; i++)
            out_h16[i] = starling__f32_to_bf16(f32[i]);
        break;
    case CASE_FROM_BF16:
        for (size_t i = 0; i < c->count; i++)
            out_f32[i] = starling__bf16_to_f32(h16[i]);
        break;
    case CASE_TO_F16:
        for (size_t i = 0; i < c->count; i++)
            out_h16[i] = starling__f32_to_f16(f32[i]);
        break;
    case CASE_FROM_F16:
        for (size_t i = 0; i < c->count; i++)
            out_f32[i] = starling__f16_to_f32(h16[i]);
        break;
    /* The static inline versions the reduce kernels use, which the compiler vectorizes
     * (here out and in are known not to overlap, so no blocking is needed -- at -O2
     * GCC may still keep these scalar; the reduce figures above are the real test). */
    case CASE_TO_BF16_INLINE:
        for (size_t i = 0; i < c->count; i++)
            out_h16[i] = half_f32_to_bf16(f32[i]);
        break;
    case CASE_FROM_BF16_INLINE:
        for (size_t i = 0; i < c->count; i++)
            out_f32[i] = half_bf16_to_f32(h16[i]);
        break;
    case CASE_TO_F16_INLINE:
        for (size_t i = 0; i < c->count; i++)
            out_h16[i] = half_f32_to_f16(f32[i]);
        break;
    case CASE_FROM_F16_INLINE:
        for (size_t i = 0; i < c->count; i++)
            out_f32[i] = half_f16_to_f32(h16[i]);
        break;
    }
}

/* Best seconds per run. */
static double time_case(const bench_case *c)
{
    run_case(c);
    double best = 1e30, total = 0;
    while (total < MIN_TOTAL_S) {
        double t0 = now_s();
        run_case(c);
        double dt = now_s() - t0;
        total += dt;
        if (dt < best)
            best = dt;
    }
    return best;
}

static void report(const char *what, size_t buffer_bytes, const char *how, double bytes_moved,
                   double seconds)
{
    printf("%-24s %5zu MiB  %-10s %8.2f GB/s  (%.3f ms)\n", what, buffer_bytes / MIB, how,
           bytes_moved / seconds / 1e9, seconds * 1e3);
}

/* Gradient-like values: in [-1, 1], many distinct, some zeros, all normal in f16 and
 * bf16. Subnormal or random bit patterns would measure the CPU's microcode assists for
 * subnormal floats (x86 takes ~100 cycles per such add) instead of the kernels. */
static float sample_value(size_t i, uint32_t salt)
{
    uint32_t h = (uint32_t)i * 2654435761u ^ salt;
    return (float)((int)(h % 20001u) - 10000) * 1e-4f;
}

static void fill_f32(void *a, void *b, size_t n)
{
    float *fa = a, *fb = b;
    for (size_t i = 0; i < n; i++) {
        fa[i] = sample_value(i, 0x1234u);
        fb[i] = sample_value(i, 0x9876u);
    }
}

static void fill_halves(void *a, void *b, size_t n, starling_dtype dtype)
{
    uint16_t *ha = a, *hb = b;
    for (size_t i = 0; i < n; i++) {
        float x = sample_value(i, 0x1234u), y = sample_value(i, 0x9876u);
        ha[i] = dtype == STARLING_F16 ? starling__f32_to_f16(x) : starling__f32_to_bf16(x);
        hb[i] = dtype == STARLING_F16 ? starling__f32_to_f16(y) : starling__f32_to_bf16(y);
    }
}

int main(void)
{
    const size_t sizes[] = {1 * MIB, 64 * MIB};
    const size_t max_bytes = 64 * MIB;
    unsigned char *a = malloc(max_bytes), *b = malloc(max_bytes), *d = malloc(max_bytes);
    if (a == NULL || b == NULL || d == NULL) {
        fprintf(stderr, "bench_kernels: out of memory\n");
        return 1;
    }

    fill_f32(a, b, max_bytes / 4);
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t nbytes = sizes[s];
        bench_case c = {CASE_REDUCE, STARLING_F32, d, a, b, nbytes / 4};
        report("reduce f32 sum", nbytes, "dst apart", 3.0 * (double)nbytes, time_case(&c));
        c.dst = a;
        report("reduce f32 sum", nbytes, "dst == a", 3.0 * (double)nbytes, time_case(&c));
    }

    /* Half-precision sums: same buffer size, twice the elements. */
    static const starling_dtype halves[] = {STARLING_BF16, STARLING_F16};
    for (size_t h = 0; h < 2; h++) {
        fill_halves(a, b, max_bytes / 2, halves[h]);
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            size_t nbytes = sizes[s];
            bench_case c = {CASE_REDUCE, halves[h], d, a, b, nbytes / 2};
            report(halves[h] == STARLING_BF16 ? "reduce bf16 sum" : "reduce f16 sum", nbytes,
                   "dst apart", 3.0 * (double)nbytes, time_case(&c));
        }
    }

    /* Conversions through the out-of-line functions, one call per element: what a
     * caller outside the kernels gets. 64 MiB of f32 in, 32 MiB of halves out. */
    fill_f32(a, b, max_bytes / 4);
    {
        size_t n = max_bytes / 4;
        double moved = 6.0 * (double)n;
        bench_case c = {CASE_TO_BF16, STARLING_F32, d, a, NULL, n};
        report("f32 -> bf16 (per call)", max_bytes, "", moved, time_case(&c));
        c.kind = CASE_TO_F16;
        report("f32 -> f16 (per call)", max_bytes, "", moved, time_case(&c));
        /* Widen the halves just produced (in d) back into b. */
        c = (bench_case){CASE_FROM_F16, STARLING_F32, b, d, NULL, n};
        report("f16 -> f32 (per call)", max_bytes, "", moved, time_case(&c));
        run_case(&(bench_case){CASE_TO_BF16, STARLING_F32, d, a, NULL, n});
        c.kind = CASE_FROM_BF16;
        report("bf16 -> f32 (per call)", max_bytes, "", moved, time_case(&c));

        c = (bench_case){CASE_TO_BF16_INLINE, STARLING_F32, d, a, NULL, n};
        report("f32 -> bf16 (inline)", max_bytes, "", moved, time_case(&c));
        c.kind = CASE_TO_F16_INLINE;
        report("f32 -> f16 (inline)", max_bytes, "", moved, time_case(&c));
        c = (bench_case){CASE_FROM_F16_INLINE, STARLING_F32, b, d, NULL, n};
        report("f16 -> f32 (inline)", max_bytes, "", moved, time_case(&c));
        run_case(&(bench_case){CASE_TO_BF16, STARLING_F32, d, a, NULL, n});
        c.kind = CASE_FROM_BF16_INLINE;
        report("bf16 -> f32 (inline)", max_bytes, "", moved, time_case(&c));
    }

    free(a);
    free(b);
    free(d);
    return 0;
}
