/* Optimizers, clipping, schedules and the outer step against values worked out by hand
 * (the arithmetic is in the comments), plus argument checks and the no-state cases. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "starling.h"
#include "train/optim.h"

/* f32 results of a few operations: compare with a tolerance of a few ulps of 1. */
#define TOL 1e-6f

static void test_sgd_plain_and_weight_decay(void **state)
{
    starling__optim o;
    float p[2] = {1.0f, -2.0f}, g[2] = {0.5f, 0.25f};
    (void)state;
    starling__optim_defaults(&o, STARLING__OPTIM_SGD);
    o.momentum = 0.0f;
    assert_int_equal(starling__optim_state_floats(&o, 2), 0);
    /* p = p - lr g: 1 - 0.1*0.5 = 0.95; -2 - 0.1*0.25 = -2.025. Twice: 0.9, -2.05. */
    assert_int_equal(starling__optim_step(&o, p, g, NULL, 2, 0.1f), STARLING_OK);
    assert_float_equal(p[0], 0.95f, TOL);
    assert_float_equal(p[1], -2.025f, TOL);
    assert_int_equal(starling__optim_step(&o, p, g, NULL, 2, 0.1f), STARLING_OK);
    assert_float_equal(p[0], 0.9f, TOL);
    assert_float_equal(p[1], -2.05f, TOL);
    assert_int_equal(o.step, 2);
    /* Coupled weight decay 0.1: g' = g + 0.1 p = 0.5 + 0.1*1 = 0.6; p = 1 - 0.1*0.6 = 0.94.
     * For p = -2: g' = 0.25 - 0.2 = 0.05; p = -2 - 0.005 = -2.005. */
    p[0] = 1.0f;
    p[1] = -2.0f;
    o.weight_decay = 0.1f;
    assert_int_equal(starling__optim_step(&o, p, g, NULL, 2, 0.1f), STARLING_OK);
    assert_float_equal(p[0], 0.94f, TOL);
    assert_float_equal(p[1], -2.005f, TOL);
}

static void test_sgd_momentum(void **state)
{
    starling__optim o;
    float p = 1.0f, g = 0.5f, buf = 0.0f;
    (void)state;
    starling__optim_defaults(&o, STARLING__OPTIM_SGD); /* momentum 0.9 */
    assert_int_equal(starling__optim_state_floats(&o, 7), 7);
    /* step 1: b = 0.9*0 + 0.5 = 0.5;          p = 1 - 0.1*0.5 = 0.95
     * step 2: b = 0.9*0.5 + 0.5 = 0.95;       p = 0.95 - 0.1*0.95 = 0.855 */
    assert_int_equal(starling__optim_step(&o, &p, &g, &buf, 1, 0.1f), STARLING_OK);
    assert_float_equal(buf, 0.5f, TOL);
    assert_float_equal(p, 0.95f, TOL);
    assert_int_equal(starling__optim_step(&o, &p, &g, &buf, 1, 0.1f), STARLING_OK);
    assert_float_equal(buf, 0.95f, TOL);
    assert_float_equal(p, 0.855f, TOL);
}

static void test_sgd_nesterov(void **state)
{
    starling__optim o;
    float p = 1.0f, g = 0.5f, buf = 0.0f;
    (void)state;
    starling__optim_defaults(&o, STARLING__OPTIM_SGD);
    o.nesterov = 1;
    /* step 1: b = 0.5;  d = g + mu b = 0.5 + 0.45 = 0.95;    p = 1 - 0.095 = 0.905
     * step 2: b = 0.95; d = 0.5 + 0.9*0.95 = 1.355;          p = 0.905 - 0.1355 = 0.7695 */
    assert_int_equal(starling__optim_step(&o, &p, &g, &buf, 1, 0.1f), STARLING_OK);
    assert_float_equal(p, 0.905f, TOL);
    assert_int_equal(starling__optim_step(&o, &p, &g, &buf, 1, 0.1f), STARLING_OK);
    assert_float_equal(buf, 0.95f, TOL);
    assert_float_equal(p, 0.7695f, TOL);
    /* Nesterov without momentum is refused. */
    o.momentum = 0.0f;
    assert_int_equal(starling__optim_step(&o, &p, &g, &buf, 1, 0.1f), STARLING_E_INVALID);
    assert_float_equal(p, 0.7695f, TOL); /* untouched */
}

static void test_adamw(void **state)
{
    starling__optim o;
    float p = 1.0f, g, st[2] = {0.0f, 0.0f};
    (void)state;
    starling__optim_defaults(&o, STARLING__OPTIM_ADAMW);
    assert_float_equal(o.weight_decay, 0.01f, 0.0f);
    assert_int_equal(starling__optim_state_floats(&o, 1), 2);
    /* lr 0.1, b1 0.9, b2 0.999, eps 1e-8, wd 0.01.
     * step 1, g = 0.5:  p = 1*(1 - 0.1*0.01) = 0.999
     *   m = 0.1*0.5 = 0.05; v = 0.001*0.25 = 0.00025
     *   bc1 = 0.1, bc2 = 0.001: m^ = 0.5, v^ = 0.25, sqrt = 0.5
     *   p = 0.999 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.999 - 0.099999998 = 0.899000002 */
    g = 0.5f;
    assert_int_equal(starling__optim_step(&o, &p, &g, st, 1, 0.1f), STARLING_OK);
    /* (1 - 0.9f and 1 - 0.999f are 1e-7 and 1.3e-5 off in relative terms in f32.) */
    assert_float_equal(st[0], 0.05f, 0.05f * 1e-6f);
    assert_float_equal(st[1], 0.00025f, 0.00025f * 2e-5f);
    assert_float_equal(p, 0.899000002f, TOL);
    /* step 2, g = -0.25: p = 0.899000002 * 0.999 = 0.898101002
     *   m = 0.9*0.05 - 0.1*0.25 = 0.02; v = 0.999*0.00025 + 0.001*0.0625 = 0.00031225
     *   bc1 = 1 - 0.81 = 0.19, bc2 = 1 - 0.998001 = 0.001999
     *   m^ = 0.105263158, v^ = 0.156203102, sqrt(v^) = 0.395225382
     *   p = 0.898101002 - 0.1 * 0.105263158 / 0.395225382 = 0.898101002 - 0.026633703
     *     = 0.871467299 */
    g = -0.25f;
    assert_int_equal(starling__optim_step(&o, &p, &g, st, 1, 0.1f), STARLING_OK);
    assert_float_equal(st[0], 0.02f, 0.02f * 1e-5f);
    assert_float_equal(st[1], 0.00031225f, 0.00031225f * 2e-5f);
    assert_float_equal(p, 0.871467299f, TOL);
    assert_int_equal(o.step, 2);
    /* The kernel with explicit t gives the same as the dispatcher. */
    float q = 1.0f, m = 0.0f, v = 0.0f;
    g = 0.5f;
    starling__adamw_step(&q, &g, &m, &v, 1, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 1);
    assert_float_equal(q, 0.899000002f, TOL);
}

static void test_optim_check(void **state)
{
    starling__optim o;
    char why[128];
    float p = 0, g = 0;
    (void)state;
    starling__optim_defaults(&o, STARLING__OPTIM_ADAMW);
    assert_int_equal(starling__optim_check(&o, why, sizeof why), STARLING_OK);
    o.beta2 = 1.0f;
    assert_int_equal(starling__optim_check(&o, why, sizeof why), STARLING_E_INVALID);
    assert_non_null(strstr(why, "betas"));
    starling__optim_defaults(&o, STARLING__OPTIM_ADAMW);
    o.eps = 0.0f;
    assert_int_equal(starling__optim_check(&o, why, sizeof why), STARLING_E_INVALID);
    starling__optim_defaults(&o, STARLING__OPTIM_SGD);
    o.weight_decay = -1.0f;
    assert_int_equal(starling__optim_check(&o, why, sizeof why), STARLING_E_INVALID);
    starling__optim_defaults(&o, STARLING__OPTIM_SGD);
    o.momentum = NAN;
    assert_int_equal(starling__optim_check(&o, why, sizeof why), STARLING_E_INVALID);
    starling__optim_defaults(&o, STARLING__OPTIM_SGD);
    o.kind = (starling__optim_kind)7;
    assert_int_equal(starling__optim_check(&o, why, sizeof why), STARLING_E_INVALID);
    starling__optim_defaults(&o, STARLING__OPTIM_SGD);
    assert_int_equal(starling__optim_step(&o, &p, &g, NULL, 1, 0.1f), STARLING_E_INVALID);
    assert_int_equal(starling__optim_step(&o, &p, &g, &p, 1, INFINITY), STARLING_E_INVALID);
    assert_int_equal(starling__optim_step(&o, NULL, NULL, NULL, 0, 0.1f), STARLING_OK);
    assert_int_equal(o.step, 1);
}

static void test_clip(void **state)
{
    float g[2] = {3.0f, 4.0f};
    (void)state;
    /* ||(3, 4)|| = 5 > 1: scaled by 1 / (5 + 1e-6) -> (0.6, 0.8) within 1e-6. */
    assert_float_equal(starling__clip_grad_norm(g, 2, 1.0), 5.0, 1e-12);
    assert_float_equal(g[0], 0.6f, TOL);
    assert_float_equal(g[1], 0.8f, TOL);
    assert_float_equal(starling__l2_norm(g, 2), 1.0, 2e-6);
    /* Below the threshold: untouched. */
    g[0] = 3.0f;
    g[1] = 4.0f;
    assert_float_equal(starling__clip_grad_norm(g, 2, 10.0), 5.0, 1e-12);
    assert_true(g[0] == 3.0f && g[1] == 4.0f);
    /* Non-finite norm: untouched, and reported. */
    g[1] = NAN;
    assert_true(isnan(starling__clip_grad_norm(g, 2, 1.0)));
    assert_true(g[0] == 3.0f);
    g[1] = INFINITY;
    assert_true(isinf(starling__clip_grad_norm(g, 2, 1.0)));
    assert_true(g[0] == 3.0f);
    assert_float_equal(starling__clip_grad_norm(NULL, 0, 1.0), 0.0, 0.0);
}

static void test_schedules(void **state)
{
    starling__lr_schedule s = {STARLING__LR_CONSTANT, 1.0f, 0.1f, 10, 110};
    char why[128];
    (void)state;
    assert_int_equal(starling__lr_check(&s, why, sizeof why), STARLING_OK);
    assert_float_equal(starling__lr_at(&s, 0), 1.0f, 0.0f);
    assert_float_equal(starling__lr_at(&s, 1000000), 1.0f, 0.0f);

    /* Warm-up over W = 4: (s+1)/4 -> 0.25, 0.5, 0.75, 1, then 1. */
    s.kind = STARLING__LR_WARMUP;
    s.warmup_steps = 4;
    assert_int_equal(starling__lr_check(&s, why, sizeof why), STARLING_OK);
    assert_float_equal(starling__lr_at(&s, 0), 0.25f, TOL);
    assert_float_equal(starling__lr_at(&s, 1), 0.5f, TOL);
    assert_float_equal(starling__lr_at(&s, 3), 1.0f, TOL);
    assert_float_equal(starling__lr_at(&s, 4), 1.0f, TOL);
    assert_float_equal(starling__lr_at(&s, 99), 1.0f, TOL);

    /* Cosine over T = 100 from 1 to 0.1: 0.1 + 0.9 (1 + cos(pi q)) / 2.
     * q = 0 -> 1; q = 0.5 -> 0.55; q = 0.25 -> 0.1 + 0.45 (1 + 0.7071068) = 0.8681981;
     * q >= 1 -> 0.1. */
    s.kind = STARLING__LR_COSINE;
    s.total_steps = 100;
    assert_int_equal(starling__lr_check(&s, why, sizeof why), STARLING_OK);
    assert_float_equal(starling__lr_at(&s, 0), 1.0f, TOL);
    assert_float_equal(starling__lr_at(&s, 25), 0.8681981f, TOL);
    assert_float_equal(starling__lr_at(&s, 50), 0.55f, TOL);
    assert_float_equal(starling__lr_at(&s, 100), 0.1f, TOL);
    assert_float_equal(starling__lr_at(&s, 5000), 0.1f, TOL);

    /* Warm-up 10 then cosine over the remaining 100 of T = 110:
     * s = 0 -> 0.1; s = 9 -> 1; s = 10 -> 1 (q = 0); s = 60 -> 0.55; s >= 110 -> 0.1. */
    s.kind = STARLING__LR_WARMUP_COSINE;
    s.warmup_steps = 10;
    s.total_steps = 110;
    assert_int_equal(starling__lr_check(&s, why, sizeof why), STARLING_OK);
    assert_float_equal(starling__lr_at(&s, 0), 0.1f, TOL);
    assert_float_equal(starling__lr_at(&s, 4), 0.5f, TOL);
    assert_float_equal(starling__lr_at(&s, 9), 1.0f, TOL);
    assert_float_equal(starling__lr_at(&s, 10), 1.0f, TOL);
    assert_float_equal(starling__lr_at(&s, 60), 0.55f, TOL);
    assert_float_equal(starling__lr_at(&s, 110), 0.1f, TOL);
    assert_float_equal(starling__lr_at(&s, 111), 0.1f, TOL);
    /* Monotone non-increasing after the warm-up. */
    for (uint64_t k = 10; k < 120; k++)
        assert_true(starling__lr_at(&s, k + 1) <= starling__lr_at(&s, k));

    /* Refusals. */
    s.total_steps = 10;
    assert_int_equal(starling__lr_check(&s, why, sizeof why), STARLING_E_INVALID);
    assert_non_null(strstr(why, "total_steps"));
    s.total_steps = 110;
    s.min_lr = 2.0f;
    assert_int_equal(starling__lr_check(&s, why, sizeof why), STARLING_E_INVALID);
    s.min_lr = 0.1f;
    s.kind = STARLING__LR_WARMUP;
    s.warmup_steps = 0;
    assert_int_equal(starling__lr_check(&s, why, sizeof why), STARLING_E_INVALID);
    s.kind = STARLING__LR_COSINE;
    s.total_steps = 0;
    assert_int_equal(starling__lr_check(&s, why, sizeof why), STARLING_E_INVALID);
    s.kind = STARLING__LR_CONSTANT;
    s.base_lr = -1.0f;
    assert_int_equal(starling__lr_check(&s, why, sizeof why), STARLING_E_INVALID);
}

static void test_outer_step(void **state)
{
    float theta[2] = {1.0f, -1.0f}, mom[2] = {0.0f, 0.0f};
    float local[2] = {0.8f, -0.5f}, delta[2];
    (void)state;
    /* Pseudo-gradient = old - local: (0.2, -0.5). */
    starling__outer_pseudo_grad(delta, theta, local, 2);
    assert_float_equal(delta[0], 0.2f, TOL);
    assert_float_equal(delta[1], -0.5f, TOL);
    /* lr 0.7, mu 0.9. Element 0:
     * step 1, D = 0.2: m = 0.2;              theta = 1 - 0.7 (0.2 + 0.18) = 0.734
     * step 2, D = 0.1: m = 0.18 + 0.1 = 0.28; theta = 0.734 - 0.7 (0.1 + 0.252) = 0.4876
     * Element 1: step 1, D = -0.5: m = -0.5; theta = -1 + 0.7 (0.5 + 0.45) = -0.335 */
    starling__outer_nesterov_step(theta, delta, mom, 2, STARLING__OUTER_LR_DEFAULT,
                                  STARLING__OUTER_MOMENTUM_DEFAULT);
    assert_float_equal(mom[0], 0.2f, TOL);
    assert_float_equal(theta[0], 0.734f, TOL);
    assert_float_equal(theta[1], -0.335f, TOL);
    delta[0] = 0.1f;
    delta[1] = 0.0f;
    starling__outer_nesterov_step(theta, delta, mom, 2, 0.7f, 0.9f);
    assert_float_equal(mom[0], 0.28f, TOL);
    assert_float_equal(theta[0], 0.4876f, TOL);
    /* lr 1, mu 0 is plain averaging: theta_old - mean(old - local_k) = mean(local_k).
     * Peers at 0.8 and 0.4 from 1.0: mean delta = 0.4, theta = 0.6. */
    float t1 = 1.0f, m1 = 0.0f, d1 = ((1.0f - 0.8f) + (1.0f - 0.4f)) / 2.0f;
    starling__outer_nesterov_step(&t1, &d1, &m1, 1, 1.0f, 0.0f);
    assert_float_equal(t1, 0.6f, TOL);
    /* The pseudo-gradient may be computed in place over the local copy. */
    float old[1] = {2.0f}, loc[1] = {1.5f};
    starling__outer_pseudo_grad(loc, old, loc, 1);
    assert_float_equal(loc[0], 0.5f, TOL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd_plain_and_weight_decay),
        cmocka_unit_test(test_sgd_momentum),
        cmocka_unit_test(test_sgd_nesterov),
        cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_optim_check),
        cmocka_unit_test(test_clip),
        cmocka_unit_test(test_schedules),
        cmocka_unit_test(test_outer_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
