/* The built-in model's speed and what one process learns.
 *
 *   bench_mlp [--epochs N] [--synthetic] [--reps N]
 *
 * 1. Time of one forward+backward step of the 784-256-128-10 MLP at batch 64 and 256
 *    (best and median of --reps runs after 5 warm-up runs), with the GFLOP/s that
 *    implies (2 flops per multiply-add of the three GEMMs per layer, 1 for the first).
 *    The optimizer step (AdamW) is timed separately.
 * 2. Single-process training: AdamW (lr 1e-3, betas 0.9/0.999, weight decay 0.01),
 *    batch 64, --epochs epochs (default 2) over Fashion-MNIST's 60000 training images
 *    (or the synthetic set with --synthetic or when the package is absent), test
 *    accuracy and loss on the 10000 test images after each epoch.
 *
 * BLAS threads: the figures are per core, so the program re-executes itself with
 * OPENBLAS_NUM_THREADS=1 unless that variable is already set (OpenBLAS reads it when
 * it is loaded, before main runs). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "data/dataset.h"
#include "data/prng.h"
#include "model/mlp.h"
#include "starling.h"
#include "train/optim.h"

static const size_t widths[] = {784, 256, 128, 10};
#define NWIDTHS (sizeof widths / sizeof widths[0])

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double flops_fwd_bwd(size_t batch)
{
    double f = 0.0;
    for (size_t l = 0; l + 1 < NWIDTHS; l++) {
        double mac = (double)batch * (double)widths[l] * (double)widths[l + 1];
        f += 2.0 * mac * (l == 0 ? 2.0 : 3.0); /* forward, dW, and dH except layer 1 */
    }
    return f;
}

static int bench_step(size_t batch, int reps)
{
    starling__mlp *m;
    starling__optim o;
    char why[256];
    int rc = starling__mlp_create(&m, widths, NWIDTHS, batch, why, sizeof why);
    if (rc != STARLING_OK) {
        fprintf(stderr, "bench_mlp: %s\n", why);
        return 1;
    }
    float *x = malloc(batch * widths[0] * sizeof(float));
    uint8_t *y = malloc(batch);
    double *t = malloc((size_t)reps * sizeof(double));
    starling__optim_defaults(&o, STARLING__OPTIM_ADAMW);
    float *st = calloc(starling__optim_state_floats(&o, m->nparams), sizeof(float));
    if (!x || !y || !t || !st) {
        fprintf(stderr, "bench_mlp: out of memory\n");
        return 1;
    }
    starling__prng r;
    starling__prng_seed(&r, 1);
    for (size_t i = 0; i < batch * widths[0]; i++)
        x[i] = (float)starling__prng_uniform(&r);
    for (size_t i = 0; i < batch; i++)
        y[i] = (uint8_t)(i % 10);
    starling__mlp_init_params(m, 1);
    float loss;
    for (int i = 0; i < 5; i++)
        starling__mlp_forward_backward(m, x, y, batch, &loss);
    for (int i = 0; i < reps; i++) {
        double t0 = now_s();
        starling__mlp_forward_backward(m, x, y, batch, &loss);
        t[i] = now_s() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    double fl = flops_fwd_bwd(batch);
    printf("fwd+bwd  784-256-128-10  batch %4zu: best %7.3f ms  median %7.3f ms  "
           "(%.1f GFLOP/s at best; %.0f samples/s)\n",
           batch, t[0] * 1e3, t[reps / 2] * 1e3, fl / t[0] * 1e-9, (double)batch / t[reps / 2]);
    /* The optimizer step does not depend on the batch; time it once, with batch 64. */
    if (batch == 64) {
        for (int i = 0; i < reps; i++) {
            double t0 = now_s();
            starling__optim_step(&o, m->params, m->grads, st, m->nparams, 1e-3f);
            t[i] = now_s() - t0;
        }
        qsort(t, (size_t)reps, sizeof *t, cmp_double);
        printf("AdamW step on %zu params: best %.3f ms  median %.3f ms\n", m->nparams, t[0] * 1e3,
               t[reps / 2] * 1e3);
    }
    free(st);
    free(t);
    free(x);
    free(y);
    starling__mlp_destroy(m);
    return 0;
}

static int bench_train(int epochs, int synthetic)
{
    starling__dataset train, test;
    char why[512];
    const size_t B = 64;
    if (!synthetic) {
        int rc = starling__dataset_load_fashion(&train, STARLING__FASHION_DIR,
                                                STARLING__SPLIT_TRAIN, why, sizeof why);
        if (rc == STARLING_OK)
            rc = starling__dataset_load_fashion(&test, STARLING__FASHION_DIR, STARLING__SPLIT_TEST,
                                                why, sizeof why);
        if (rc != STARLING_OK) {
            printf("Fashion-MNIST unavailable (%s): using the synthetic set\n", why);
            synthetic = 1;
        }
    }
    if (synthetic && (starling__dataset_synthetic(&train, 60000, 1, STARLING__SPLIT_TRAIN, why,
                                                  sizeof why) != STARLING_OK ||
                      starling__dataset_synthetic(&test, 10000, 1, STARLING__SPLIT_TEST, why,
                                                  sizeof why) != STARLING_OK)) {
        fprintf(stderr, "bench_mlp: %s\n", why);
        return 1;
    }
    starling__mlp *m;
    starling__shard sh;
    starling__batcher b;
    starling__optim o;
    if (starling__mlp_create(&m, widths, NWIDTHS, 256, why, sizeof why) != STARLING_OK ||
        starling__shard_iid(&sh, &train, 0, 1, 1, why, sizeof why) != STARLING_OK ||
        starling__batcher_init(&b, &sh, B, 1) != STARLING_OK) {
        fprintf(stderr, "bench_mlp: setup failed: %s\n", why);
        return 1;
    }
    starling__mlp_init_params(m, 1);
    starling__optim_defaults(&o, STARLING__OPTIM_ADAMW);
    float *st = calloc(starling__optim_state_floats(&o, m->nparams), sizeof(float));
    float *x = malloc(256 * 784 * sizeof(float));
    uint8_t y[256];
    if (!st || !x) {
        fprintf(stderr, "bench_mlp: out of memory\n");
        return 1;
    }
    printf("training 784-256-128-10 on %s (%zu train / %zu test), AdamW lr 1e-3 wd 0.01, "
           "batch %zu, seed 1\n",
           synthetic ? "synthetic data" : "Fashion-MNIST", train.n, test.n, B);
    const long per_epoch = (long)((train.n + B - 1) / B);
    double t_train = 0.0, acc = 0.0, loss = 0.0;
    long steps = 0;
    for (int epoch = 0; epoch < epochs; epoch++) {
        double t0 = now_s();
        for (long k = 0; k < per_epoch; k++) {
            size_t n;
            starling__batcher_next(&b, &train, x, y, &n, NULL);
            starling__mlp_forward_backward(m, x, y, n, NULL);
            starling__optim_step(&o, m->params, m->grads, st, m->nparams, 1e-3f);
            steps++;
        }
        t_train += now_s() - t0;
        starling__mlp_evaluate(m, &test, 0, x, y, &acc, &loss);
        printf("  epoch %d: %ld steps, %.1f s training, test accuracy %.4f, test loss %.4f\n",
               epoch + 1, steps, t_train, acc, loss);
    }
    printf("final: test accuracy %.4f after %d epochs (%ld steps, %.1f s, %.2f ms/step incl. "
           "batching)\n",
           acc, epochs, steps, t_train, t_train / (double)steps * 1e3);
    free(st);
    free(x);
    starling__batcher_free(&b);
    starling__shard_free(&sh);
    starling__mlp_destroy(m);
    starling__dataset_free(&train);
    starling__dataset_free(&test);
    return 0;
}

int main(int argc, char **argv)
{
    int epochs = 2, synthetic = 0, reps = 200;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--epochs") && i + 1 < argc)
            epochs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--synthetic"))
            synthetic = 1;
        else {
            fprintf(stderr, "usage: %s [--epochs N] [--synthetic] [--reps N]\n", argv[0]);
            return 2;
        }
    }
    if (epochs < 0 || reps < 1) {
        fprintf(stderr, "bench_mlp: bad --epochs or --reps\n");
        return 2;
    }
    if (!getenv("OPENBLAS_NUM_THREADS")) {
        setenv("OPENBLAS_NUM_THREADS", "1", 1);
        execv("/proc/self/exe", argv);
        perror("bench_mlp: re-exec with OPENBLAS_NUM_THREADS=1");
        return 1;
    }
    printf("OPENBLAS_NUM_THREADS=%s\n", getenv("OPENBLAS_NUM_THREADS"));
    if (bench_step(64, reps) || bench_step(256, reps))
        return 1;
    return epochs > 0 ? bench_train(epochs, synthetic) : 0;
}
