/* The MLP: layout and initialisation, gradients against a scalar f64 reference and
 * against finite differences, stable softmax, argument checks, loss going down under
 * SGD, bit-identical determinism for a seed, and a learning check (AdamW on
 * Fashion-MNIST when installed, else on the synthetic set).
 * Environment: STARLING_TEST_SYNTHETIC=1 uses the synthetic set even if Fashion-MNIST is
 * installed; STARLING_TEST_SKIP=PATTERN skips the matching tests (cmocka glob). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>
#include <cmocka.h>

#include "data/dataset.h"
#include "data/prng.h"
#include "model/mlp.h"
#include "starling.h"
#include "train/optim.h"
#include "util/alloc.h"

/* ---------------------------------------------------------------- reference */

/* Plain f64 forward + backward, one loop per formula of mlp.h, no BLAS. Returns the
 * mean loss; writes d(mean loss)/d(params) into g (same layout as m->params). */
static double ref_forward_backward(const starling__mlp *m, const float *x, const uint8_t *y,
                                   size_t B, double *g)
{
    const size_t L = m->nlayers;
    double *h[STARLING__MLP_MAX_LAYERS + 1], *dz, *dh;
    size_t maxw = 0;
    for (size_t l = 0; l <= L; l++)
        maxw = m->widths[l] > maxw ? m->widths[l] : maxw;
    for (size_t l = 0; l <= L; l++) {
        h[l] = calloc(B * m->widths[l], sizeof(double));
        assert_non_null(h[l]);
    }
    dz = calloc(B * maxw, sizeof(double));
    dh = calloc(B * maxw, sizeof(double));
    for (size_t k = 0; k < B * m->widths[0]; k++)
        h[0][k] = x[k];
    for (size_t l = 0; l < L; l++) {
        const starling__mlp_layer *ly = &m->layer[l];
        for (size_t i = 0; i < B; i++) {
            for (size_t o = 0; o < ly->out; o++) {
                double z = m->params[ly->b_off + o];
                for (size_t k = 0; k < ly->in; k++)
                    z += h[l][i * ly->in + k] * (double)m->params[ly->w_off + o * ly->in + k];
                h[l + 1][i * ly->out + o] = (l + 1 < L && z < 0) ? 0.0 : z;
            }
        }
    }
    const size_t C = m->widths[L];
    double loss = 0.0;
    for (size_t i = 0; i < B; i++) {
        double *z = h[L] + i * C, mx = z[0], s = 0.0;
        for (size_t c = 1; c < C; c++)
            mx = z[c] > mx ? z[c] : mx;
        for (size_t c = 0; c < C; c++)
            s += exp(z[c] - mx);
        loss += mx + log(s) - z[y[i]];
        for (size_t c = 0; c < C; c++)
            dz[i * C + c] = (exp(z[c] - mx) / s - (c == y[i])) / (double)B;
    }
    for (size_t l = L; l-- > 0;) {
        const starling__mlp_layer *ly = &m->layer[l];
        for (size_t o = 0; o < ly->out; o++) {
            double gb = 0.0;
            for (size_t i = 0; i < B; i++)
                gb += dz[i * ly->out + o];
            g[ly->b_off + o] = gb;
            for (size_t k = 0; k < ly->in; k++) {
                double gw = 0.0;
                for (size_t i = 0; i < B; i++)
                    gw += dz[i * ly->out + o] * h[l][i * ly->in + k];
                g[ly->w_off + o * ly->in + k] = gw;
            }
        }
        if (l == 0)
            break;
        for (size_t i = 0; i < B; i++) {
            for (size_t k = 0; k < ly->in; k++) {
                double s = 0.0;
                for (size_t o = 0; o < ly->out; o++)
                    s += dz[i * ly->out + o] * (double)m->params[ly->w_off + o * ly->in + k];
                dh[i * ly->in + k] = h[l][i * ly->in + k] > 0 ? s : 0.0;
            }
        }
        memcpy(dz, dh, B * ly->in * sizeof(double));
    }
    for (size_t l = 0; l <= L; l++)
        free(h[l]);
    free(dz);
    free(dh);
    return loss / (double)B;
}

static void fill_uniform(float *x, size_t n, uint64_t seed, double lo, double hi)
{
    starling__prng r;
    starling__prng_seed(&r, seed);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(lo + (hi - lo) * starling__prng_uniform(&r));
}

/* ---------------------------------------------------------------- tests */

static void test_create_layout(void **state)
{
    const size_t w[] = {784, 256, 128, 10};
    starling__mlp *m = NULL;
    char why[128];
    (void)state;
    assert_int_equal(starling__mlp_create(&m, w, 4, 64, why, sizeof why), STARLING_OK);
    /* 784*256 + 256 + 256*128 + 128 + 128*10 + 10 */
    assert_int_equal(starling__mlp_nparams(m), 235146);
    assert_int_equal(m->nlayers, 3);
    assert_int_equal(m->layer[0].w_off, 0);
    assert_int_equal(m->layer[0].b_off, 200704);
    assert_int_equal(m->layer[1].w_off, 200960);
    assert_int_equal(m->layer[1].b_off, 200960 + 32768);
    assert_int_equal(m->layer[2].w_off, 233856);
    assert_int_equal(m->layer[2].b_off, 235136);
    assert_int_equal(m->layer[2].in, 128);
    assert_int_equal(m->layer[2].out, 10);
    assert_int_equal((uintptr_t)m->params % 64, 0);
    starling__mlp_destroy(m);
    starling__mlp_destroy(NULL);

    const size_t bad0[] = {784, 0, 10};
    const size_t bad_classes[] = {784, 300};
    m = (starling__mlp *)1;
    assert_int_equal(starling__mlp_create(&m, w, 1, 64, why, sizeof why), STARLING_E_INVALID);
    assert_null(m);
    assert_int_equal(starling__mlp_create(&m, bad0, 3, 64, why, sizeof why), STARLING_E_INVALID);
    assert_non_null(strstr(why, "width 0 of layer 1"));
    assert_int_equal(starling__mlp_create(&m, bad_classes, 2, 64, why, sizeof why),
                     STARLING_E_INVALID);
    assert_int_equal(starling__mlp_create(&m, w, 4, 0, why, sizeof why), STARLING_E_INVALID);
    assert_int_equal(starling__mlp_create(&m, w, 10, 1, why, sizeof why), STARLING_E_INVALID);
}

static void test_create_alloc_failure(void **state)
{
    const size_t w[] = {20, 10, 3};
    starling__mlp *m = (starling__mlp *)1;
    int rc = STARLING_E_NOMEM;
    long k;
    (void)state;
    for (k = 1; k < 16 && rc == STARLING_E_NOMEM; k++) {
        starling__alloc_fail_after(k);
        rc = starling__mlp_create(&m, w, 3, 4, NULL, 0);
        starling__alloc_fail_after(0);
        if (rc == STARLING_E_NOMEM)
            assert_null(m);
    }
    assert_int_equal(rc, STARLING_OK);
    assert_int_equal(k - 1, 6); /* first success with 5 allocations allowed: struct + 4 */
    starling__mlp_destroy(m);
}

static void test_init(void **state)
{
    const size_t w[] = {50, 40, 3};
    starling__mlp *a, *b;
    (void)state;
    assert_int_equal(starling__mlp_create(&a, w, 3, 4, NULL, 0), STARLING_OK);
    assert_int_equal(starling__mlp_create(&b, w, 3, 4, NULL, 0), STARLING_OK);
    starling__mlp_init_params(a, 5);
    starling__mlp_init_params(b, 5);
    assert_memory_equal(a->params, b->params, a->nparams * sizeof(float));
    starling__mlp_init_params(b, 6);
    assert_true(memcmp(a->params, b->params, a->nparams * sizeof(float)) != 0);
    /* Bounds: sqrt(6/50) for the ReLU layer, sqrt(3/40) for the logits layer; both
     * ranges are nearly filled; biases zero; mean near 0. */
    const double b0 = sqrt(6.0 / 50), b1 = sqrt(3.0 / 40);
    double mx0 = 0, mx1 = 0, mean0 = 0;
    for (size_t i = 0; i < 2000; i++) {
        double v = fabs(a->params[a->layer[0].w_off + i]);
        mx0 = v > mx0 ? v : mx0;
        mean0 += a->params[a->layer[0].w_off + i];
    }
    for (size_t i = 0; i < 120; i++) {
        double v = fabs(a->params[a->layer[1].w_off + i]);
        mx1 = v > mx1 ? v : mx1;
    }
    assert_true(mx0 <= b0 && mx0 > 0.95 * b0);
    assert_true(mx1 <= b1 && mx1 > 0.8 * b1);
    assert_true(fabs(mean0 / 2000) < 0.05 * b0);
    for (size_t i = 0; i < 40; i++)
        assert_true(a->params[a->layer[0].b_off + i] == 0.0f);
    for (size_t i = 0; i < 3; i++)
        assert_true(a->params[a->layer[1].b_off + i] == 0.0f);
    starling__mlp_destroy(a);
    starling__mlp_destroy(b);
}

/* Analytic gradients (BLAS, f32) against the f64 scalar reference, on a net with two
 * hidden layers, a full and a partial batch. Tolerance: f32 accumulation over at most
 * ~40 terms, relative to the gradient's overall scale. */
static void test_grad_vs_reference(void **state)
{
    const size_t w[] = {13, 11, 7, 5};
    const size_t cap = 9;
    starling__mlp *m;
    float x[9 * 13], loss;
    uint8_t y[9];
    (void)state;
    assert_int_equal(starling__mlp_create(&m, w, 4, cap, NULL, 0), STARLING_OK);
    starling__mlp_init_params(m, 17);
    fill_uniform(m->params + m->layer[0].b_off, 11, 3, -0.1, 0.1); /* non-zero biases */
    fill_uniform(x, sizeof x / sizeof x[0], 4, -1.0, 1.0);
    for (size_t i = 0; i < cap; i++)
        y[i] = (uint8_t)((i * 3) % 5);
    double *g = calloc(m->nparams, sizeof(double));
    for (size_t B = cap; B >= cap - 4; B -= 4) {
        assert_int_equal(starling__mlp_forward_backward(m, x, y, B, &loss), STARLING_OK);
        double ref = ref_forward_backward(m, x, y, B, g);
        assert_true(fabs(loss - ref) < 1e-5 * (1 + fabs(ref)));
        double scale = 0, maxerr = 0;
        for (size_t i = 0; i < m->nparams; i++)
            scale = fabs(g[i]) > scale ? fabs(g[i]) : scale;
        for (size_t i = 0; i < m->nparams; i++) {
            double e = fabs(m->grads[i] - g[i]);
            maxerr = e > maxerr ? e : maxerr;
        }
        print_message("batch %zu: loss %.6f (ref %.6f), max |grad - ref| %.2e of scale %.2e\n", B,
                      (double)loss, ref, maxerr, scale);
        assert_true(scale > 1e-3);
        assert_true(maxerr < 1e-5 * scale);
    }
    free(g);
    starling__mlp_destroy(m);
}

/* Central finite differences of the library's own forward pass (loss summed in f64
 * from f32 logits), step h = 1e-2: truncation error O(h^2) ~ 1e-5, rounding error
 * ~ 1e-7 / h ~ 1e-5. Parameters whose perturbation flips a ReLU (a kink within h) are
 * detected by a mismatch of one-sided differences and skipped; few may be. */
static void test_grad_finite_difference(void **state)
{
    const size_t w[] = {6, 8, 5, 4};
    const size_t B = 5;
    starling__mlp *m;
    float x[5 * 6];
    uint8_t y[5] = {0, 3, 1, 2, 3};
    (void)state;
    assert_int_equal(starling__mlp_create(&m, w, 4, B, NULL, 0), STARLING_OK);
    starling__mlp_init_params(m, 99);
    fill_uniform(m->params + m->layer[0].b_off, 8, 5, -0.2, 0.2);
    fill_uniform(x, sizeof x / sizeof x[0], 6, -1.0, 1.0);
    assert_int_equal(starling__mlp_forward_backward(m, x, y, B, NULL), STARLING_OK);
    float *grad = malloc(m->nparams * sizeof(float));
    memcpy(grad, m->grads, m->nparams * sizeof(float));
    const float h = 1e-2f;
    size_t checked = 0, skipped = 0;
    double worst = 0;
    for (size_t i = 0; i < m->nparams; i++) {
        float saved = m->params[i];
        double lp, lm, l0;
        m->params[i] = saved + h;
        assert_int_equal(starling__mlp_forward(m, x, B, y, &lp, NULL, NULL), STARLING_OK);
        m->params[i] = saved - h;
        assert_int_equal(starling__mlp_forward(m, x, B, y, &lm, NULL, NULL), STARLING_OK);
        m->params[i] = saved;
        assert_int_equal(starling__mlp_forward(m, x, B, y, &l0, NULL, NULL), STARLING_OK);
        double hp = (double)(float)(saved + h) - saved, hm = saved - (double)(float)(saved - h);
        double fwd = (lp - l0) / B / hp, bwd = (l0 - lm) / B / hm;
        double fd = (lp - lm) / B / (hp + hm);
        if (fabs(fwd - bwd) > 0.05 * (fabs(fd) + 1e-2)) {
            skipped++; /* a ReLU kink inside [p - h, p + h] */
            continue;
        }
        double err = fabs(fd - grad[i]) / (fabs(fd) + 1e-3);
        worst = err > worst ? err : worst;
        if (err > 1e-2)
            print_error("param %zu: fd %.6e analytic %.6e\n", i, fd, (double)grad[i]);
        assert_true(err < 1e-2);
        checked++;
    }
    print_message("finite differences: %zu params checked (worst rel. error %.1e), %zu at kinks\n",
                  checked, worst, skipped);
    assert_true(skipped * 10 < m->nparams);
    free(grad);
    starling__mlp_destroy(m);
}

static void test_stable_softmax_and_args(void **state)
{
    const size_t w[] = {4, 3};
    starling__mlp *m;
    float x[2 * 4] = {1, 2, 3, 4, -1, 0, 1, 0}, loss;
    uint8_t y[2] = {0, 2}, bad[2] = {0, 3}, pred[2];
    double ls;
    const float *p;
    (void)state;
    assert_int_equal(starling__mlp_create(&m, w, 2, 2, NULL, 0), STARLING_OK);
    /* Logits of order 1e4: exp would overflow without the max subtraction. */
    memset(m->params, 0, m->nparams * sizeof(float));
    m->params[m->layer[0].b_off + 0] = 20000.0f;
    m->params[m->layer[0].b_off + 1] = 19990.0f;
    m->params[m->layer[0].b_off + 2] = -20000.0f;
    assert_int_equal(starling__mlp_forward_backward(m, x, y, 2, &loss), STARLING_OK);
    /* Row 0: label 0 has the top logit: loss log(1 + e^-10) ~ 4.54e-5; row 1: label 2
     * is 40000 below: loss ~ 40000. Mean ~ 20000. */
    assert_true(isfinite(loss));
    assert_float_equal(loss, 20000.0f, 1.0f);
    for (size_t i = 0; i < m->nparams; i++)
        assert_true(isfinite(m->grads[i]));
    assert_int_equal(starling__mlp_forward(m, x, 2, y, &ls, pred, &p), STARLING_OK);
    assert_int_equal(pred[0], 0);
    assert_float_equal(p[0] + p[1] + p[2], 1.0f, 1e-6f);
    assert_float_equal(p[1], expf(-10.0f), 1e-7f);
    /* Refusals. */
    assert_int_equal(starling__mlp_forward_backward(m, x, bad, 2, &loss), STARLING_E_INVALID);
    assert_int_equal(starling__mlp_forward_backward(m, x, y, 3, &loss), STARLING_E_INVALID);
    assert_int_equal(starling__mlp_forward_backward(m, x, y, 0, &loss), STARLING_E_INVALID);
    assert_int_equal(starling__mlp_forward(m, x, 3, NULL, NULL, NULL, NULL), STARLING_E_INVALID);
    assert_int_equal(starling__mlp_forward_backward(NULL, x, y, 1, &loss), STARLING_E_INVALID);
    starling__mlp_destroy(m);
}

/* Runs `steps` SGD (momentum 0.9, lr 0.05) steps of batch 32 on ds from seed; returns the
 * model. Loss of the first and the mean of the last 10 steps in first/last. */
static starling__mlp *train_sgd(const starling__dataset *ds, uint64_t seed, int steps, float *first,
                                float *last)
{
    const size_t w[] = {784, 64, 10};
    starling__mlp *m;
    starling__shard sh;
    starling__batcher b;
    starling__optim o;
    float *x = malloc(32 * 784 * sizeof(float)), *mom, loss;
    uint8_t y[32];
    size_t n;
    assert_int_equal(starling__mlp_create(&m, w, 3, 32, NULL, 0), STARLING_OK);
    starling__mlp_init_params(m, seed);
    mom = calloc(m->nparams, sizeof(float));
    starling__optim_defaults(&o, STARLING__OPTIM_SGD);
    assert_int_equal(starling__shard_iid(&sh, ds, 0, 1, seed, NULL, 0), STARLING_OK);
    assert_int_equal(starling__batcher_init(&b, &sh, 32, seed), STARLING_OK);
    *last = 0;
    for (int s = 0; s < steps; s++) {
        assert_int_equal(starling__batcher_next(&b, ds, x, y, &n, NULL), STARLING_OK);
        assert_int_equal(starling__mlp_forward_backward(m, x, y, n, &loss), STARLING_OK);
        assert_int_equal(starling__optim_step(&o, m->params, m->grads, mom, m->nparams, 0.05f),
                         STARLING_OK);
        if (s == 0)
            *first = loss;
        if (s >= steps - 10)
            *last += loss / 10;
    }
    starling__batcher_free(&b);
    starling__shard_free(&sh);
    free(mom);
    free(x);
    return m;
}

static void test_loss_decreases_and_determinism(void **state)
{
    starling__dataset ds;
    float f1, l1, f2, l2;
    (void)state;
    assert_int_equal(starling__dataset_synthetic(&ds, 2000, 8, STARLING__SPLIT_TRAIN, NULL, 0),
                     STARLING_OK);
    starling__mlp *a = train_sgd(&ds, 21, 150, &f1, &l1);
    starling__mlp *b = train_sgd(&ds, 21, 150, &f2, &l2);
    starling__mlp *c = train_sgd(&ds, 22, 150, &f2, &l2);
    print_message("SGD on synthetic data: loss %.4f -> %.4f over 150 steps\n", (double)f1,
                  (double)l1);
    assert_true(f1 > 1.5);      /* about log(10) = 2.3 at the start */
    assert_true(l1 < 0.3 * f1); /* and much lower after */
    assert_memory_equal(a->params, b->params, a->nparams * sizeof(float)); /* bit-identical */
    assert_true(memcmp(a->params, c->params, a->nparams * sizeof(float)) != 0);
    starling__mlp_destroy(a);
    starling__mlp_destroy(b);
    starling__mlp_destroy(c);
    starling__dataset_free(&ds);
}

/* The learning check: 784-256-128-10 with AdamW (lr 1e-3, batch 64) for 900 steps
 * (~1 epoch) must pass 80% test accuracy on Fashion-MNIST (a linear model gets ~84%;
 * this lands at ~85%), or on the synthetic set when the package is absent (~89%).
 * Bounded: ~3 s on one core. */
static void test_learns(void **state)
{
    const size_t w[] = {784, 256, 128, 10};
    const size_t B = 64;
    const int steps = 900;
    starling__dataset train, test;
    char why[512];
    /* STARLING_TEST_SYNTHETIC=1 forces the fallback even when the package is installed. */
    int real = access(STARLING__FASHION_DIR "/train-images-idx3-ubyte.gz", R_OK) == 0 &&
               !getenv("STARLING_TEST_SYNTHETIC");
    (void)state;
    if (real) {
        assert_int_equal(starling__dataset_load_fashion(&train, STARLING__FASHION_DIR,
                                                        STARLING__SPLIT_TRAIN, why, sizeof why),
                         STARLING_OK);
        assert_int_equal(starling__dataset_load_fashion(&test, STARLING__FASHION_DIR,
                                                        STARLING__SPLIT_TEST, why, sizeof why),
                         STARLING_OK);
    } else {
        print_message("synthetic data (package absent or STARLING_TEST_SYNTHETIC set)\n");
        assert_int_equal(
            starling__dataset_synthetic(&train, 20000, 1, STARLING__SPLIT_TRAIN, NULL, 0),
            STARLING_OK);
        assert_int_equal(starling__dataset_synthetic(&test, 2000, 1, STARLING__SPLIT_TEST, NULL, 0),
                         STARLING_OK);
    }
    starling__mlp *m;
    starling__shard sh;
    starling__batcher b;
    starling__optim o;
    assert_int_equal(starling__mlp_create(&m, w, 4, 256, NULL, 0), STARLING_OK);
    starling__mlp_init_params(m, 1);
    float *x = malloc(256 * 784 * sizeof(float));
    uint8_t y[256];
    starling__optim_defaults(&o, STARLING__OPTIM_ADAMW);
    float *st = calloc(starling__optim_state_floats(&o, m->nparams), sizeof(float));
    assert_int_equal(starling__shard_iid(&sh, &train, 0, 1, 1, NULL, 0), STARLING_OK);
    assert_int_equal(starling__batcher_init(&b, &sh, B, 1), STARLING_OK);
    for (int s = 0; s < steps; s++) {
        size_t n;
        assert_int_equal(starling__batcher_next(&b, &train, x, y, &n, NULL), STARLING_OK);
        assert_int_equal(starling__mlp_forward_backward(m, x, y, n, NULL), STARLING_OK);
        assert_int_equal(starling__optim_step(&o, m->params, m->grads, st, m->nparams, 1e-3f),
                         STARLING_OK);
    }
    double acc, loss;
    assert_int_equal(starling__mlp_evaluate(m, &test, 0, x, y, &acc, &loss), STARLING_OK);
    print_message("%s: test accuracy %.4f, loss %.4f after %d AdamW steps of %zu\n",
                  real ? "Fashion-MNIST" : "synthetic", acc, loss, steps, B);
    assert_true(acc > 0.80);
    assert_true(loss < 0.7);
    /* evaluate's limit and argument checks */
    double acc100;
    assert_int_equal(starling__mlp_evaluate(m, &test, 100, x, y, &acc100, NULL), STARLING_OK);
    assert_true(fabs(acc100 * 100 - round(acc100 * 100)) < 1e-9); /* k correct of 100 */
    assert_int_equal(starling__mlp_evaluate(m, &test, 0, NULL, y, &acc, NULL), STARLING_E_INVALID);
    starling__batcher_free(&b);
    starling__shard_free(&sh);
    free(st);
    free(x);
    starling__mlp_destroy(m);
    starling__dataset_free(&train);
    starling__dataset_free(&test);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_layout),
        cmocka_unit_test(test_create_alloc_failure),
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_grad_vs_reference),
        cmocka_unit_test(test_grad_finite_difference),
        cmocka_unit_test(test_stable_softmax_and_args),
        cmocka_unit_test(test_loss_decreases_and_determinism),
        cmocka_unit_test(test_learns),
    };
    /* One BLAS thread, as every peer runs (the library leaves this to the application). */
    openblas_set_num_threads(1);
    /* e.g. STARLING_TEST_SKIP=test_learns under valgrind, where it takes many minutes. */
    if (getenv("STARLING_TEST_SKIP"))
        cmocka_set_skip_filter(getenv("STARLING_TEST_SKIP"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
