/* Cost of each robust aggregator per step, for the target shape: n = 10 vectors of
 * d = 1M f32, f = 2 (issue 5: "aggregation cost per step for n = 10, d = 1M").
 *
 * Input: 8 honest rows (a shared centre plus noise, like gradients of one model) and 2
 * Byzantine rows (the centre, sign-flipped and scaled by 10), fixed seed. Each aggregator
 * runs once to warm up, then RUNS times; the table gives the median and the best wall
 * time, and the input rate n*d*4 bytes / median time. One thread, as the library runs it.
 * The bucket:2 rows time bucketing in pairs plus the rule on the 5 bucket means (f = 2
 * still holds: 5 > 2f).
 *
 * Usage: bench_agg [d [runs]]      (defaults 1048576 and 5) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "starling.h"

#define N 10
#define F 2

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static uint64_t rng = 42;
static float frand(void) /* [-0.5, 0.5) */
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng >> 40) / 16777216.0 - 0.5);
}

int main(int argc, char **argv)
{
    static const char *const specs[] = {"mean",
                                        "median",
                                        "trimmed_mean",
                                        "krum",
                                        "multikrum",
                                        "geomed",
                                        "cclip",
                                        "flag",
                                        "nnm+mean",
                                        "nnm+median",
                                        "nnm+krum",
                                        "nnm+cclip",
                                        "bucket:2+median",
                                        "bucket:2+trimmed_mean",
                                        "bucket:2+geomed",
                                        "bucket:2+cclip",
                                        "bucket:2+nnm+median"};
    size_t d = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : (size_t)1 << 20;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    float *v, *out, *centre;
    double *t;
    size_t i, j, s;
    char err[256];

    if (d == 0 || runs < 1) {
        fprintf(stderr, "usage: bench_agg [d [runs]]\n");
        return 2;
    }
    v = malloc((size_t)N * d * sizeof *v);
    out = malloc(d * sizeof *out);
    centre = malloc(d * sizeof *centre);
    t = malloc((size_t)runs * sizeof *t);
    if (!v || !out || !centre || !t)
        return 1;
    for (j = 0; j < d; j++)
        centre[j] = frand();
    for (i = 0; i < N; i++)
        for (j = 0; j < d; j++)
            v[i * d + j] = i < N - F ? centre[j] + 0.5f * frand() : -10.0f * centre[j];

    printf("n = %d, d = %zu, f = %d, %d runs (median, best)\n\n", N, d, F, runs);
    printf("| %-42s | %10s | %10s | %9s |\n", "aggregator (canonical spec)", "median ms", "best ms",
           "GB/s in");
    printf("|%s|%s|%s|%s|\n", "--------------------------------------------", "------------",
           "------------", "-----------");
    for (s = 0; s < sizeof specs / sizeof specs[0]; s++) {
        starling_aggregator *a = NULL;
        int r, rc;
        if (starling_aggregator_create(&a, specs[s], err, sizeof err) != STARLING_OK) {
            fprintf(stderr, "%s: %s\n", specs[s], err);
            return 1;
        }
        rc = starling_aggregate(a, v, N, d, F, out, err, sizeof err); /* warm-up */
        for (r = 0; r < runs && rc == STARLING_OK; r++) {
            double t0 = now_s();
            rc = starling_aggregate(a, v, N, d, F, out, err, sizeof err);
            t[r] = now_s() - t0;
        }
        if (rc != STARLING_OK) {
            fprintf(stderr, "%s: %s\n", specs[s], err);
            return 1;
        }
        qsort(t, (size_t)runs, sizeof *t, cmp_double);
        printf("| %-42s | %10.1f | %10.1f | %9.2f |\n", starling_aggregator_spec(a),
               t[runs / 2] * 1e3, t[0] * 1e3, (double)N * (double)d * 4.0 / t[runs / 2] / 1e9);
        fflush(stdout);
        starling_aggregator_destroy(a);
    }
    free(v);
    free(out);
    free(centre);
    free(t);
    return 0;
}
