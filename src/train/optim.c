#include "train/optim.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

#include "starling.h"
#include "util/log.h"
#include "util/why.h"

/* ---------------------------------------------------------------- optimizers */

void starling__optim_defaults(starling__optim *o, starling__optim_kind kind)
{
    o->kind = kind;
    o->step = 0;
    o->nesterov = 0;
    o->momentum = 0.9f;
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->eps = 1e-8f;
    o->weight_decay = kind == STARLING__OPTIM_ADAMW ? 0.01f : 0.0f;
}

/* x in [0, 1), NaN refused. */
static int unit_interval(float x) { return x >= 0.0f && x < 1.0f; }

int starling__optim_check(const starling__optim *o, char *why, size_t wl)
{
    if (!o) {
        starling__why(why, wl, "optim: NULL");
        return STARLING_E_INVALID;
    }
    if (!(o->weight_decay >= 0.0f) || !isfinite(o->weight_decay)) {
        starling__why(why, wl, "optim: weight_decay %g must be >= 0", (double)o->weight_decay);
        return STARLING_E_INVALID;
    }
    switch (o->kind) {
    case STARLING__OPTIM_SGD:
        if (!unit_interval(o->momentum)) {
            starling__why(why, wl, "optim: momentum %g must be in [0, 1)", (double)o->momentum);
            return STARLING_E_INVALID;
        }
        if (o->nesterov && o->momentum == 0.0f) {
            starling__why(why, wl, "optim: Nesterov needs momentum > 0");
            return STARLING_E_INVALID;
        }
        return STARLING_OK;
    case STARLING__OPTIM_ADAMW:
        if (!unit_interval(o->beta1) || !unit_interval(o->beta2)) {
            starling__why(why, wl, "optim: betas (%g, %g) must be in [0, 1)", (double)o->beta1,
                    (double)o->beta2);
            return STARLING_E_INVALID;
        }
        if (!(o->eps > 0.0f) || !isfinite(o->eps)) {
            starling__why(why, wl, "optim: eps %g must be > 0", (double)o->eps);
            return STARLING_E_INVALID;
        }
        return STARLING_OK;
    }
    starling__why(why, wl, "optim: unknown kind %d", (int)o->kind);
    return STARLING_E_INVALID;
}

size_t starling__optim_state_floats(const starling__optim *o, size_t n)
{
    if (o->kind == STARLING__OPTIM_ADAMW)
        return 2 * n;
    return o->momentum != 0.0f ? n : 0;
}

void starling__sgd_step(float *p, const float *g, float *buf, size_t n, float lr, float momentum,
                        int nesterov, float weight_decay)
{
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] + weight_decay * p[i];
        if (momentum != 0.0f) {
            float b = momentum * buf[i] + gi;
            buf[i] = b;
            gi = nesterov ? gi + momentum * b : b;
        }
        p[i] -= lr * gi;
    }
}

void starling__adamw_step(float *p, const float *g, float *m, float *v, size_t n, float lr,
                          float beta1, float beta2, float eps, float weight_decay, uint64_t t)
{
    /* Scalars in double, as torch computes them in Python floats, then rounded once. */
    const double bc1 = 1.0 - pow((double)beta1, (double)t);
    const double bc2 = 1.0 - pow((double)beta2, (double)t);
    const float step_size = (float)((double)lr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    const float decay = 1.0f - lr * weight_decay;
    const float c1 = 1.0f - beta1, c2 = 1.0f - beta2;
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        float mi = beta1 * m[i] + c1 * gi;
        float vi = beta2 * v[i] + c2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - step_size * (mi / (sqrtf(vi) / bc2_sqrt + eps));
    }
}

int starling__optim_step(starling__optim *o, float *params, const float *grads, float *state,
                         size_t n, float lr)
{
    if (starling__optim_check(o, NULL, 0) != STARLING_OK || !isfinite(lr))
        return STARLING_E_INVALID;
    if (n > 0 && (!params || !grads || (starling__optim_state_floats(o, n) > 0 && !state)))
        return STARLING_E_INVALID;
    if (o->kind == STARLING__OPTIM_ADAMW)
        starling__adamw_step(params, grads, state, state + n, n, lr, o->beta1, o->beta2, o->eps,
                             o->weight_decay, o->step + 1);
    else
        starling__sgd_step(params, grads, state, n, lr, o->momentum, o->nesterov, o->weight_decay);
    o->step++;
    return STARLING_OK;
}

/* ---------------------------------------------------------------- clipping */

double starling__l2_norm(const float *x, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)x[i] * (double)x[i];
    return sqrt(s);
}

double starling__clip_grad_norm(float *g, size_t n, double max_norm)
{
    double norm = starling__l2_norm(g, n);
    if (!isfinite(norm) || !(norm > max_norm))
        return norm;
    const float coef = (float)(max_norm / (norm + 1e-6));
    for (size_t i = 0; i < n; i++)
        g[i] *= coef;
    return norm;
}

/* ---------------------------------------------------------------- schedules */

int starling__lr_check(const starling__lr_schedule *s, char *why, size_t wl)
{
    if (!s) {
        starling__why(why, wl, "lr schedule: NULL");
        return STARLING_E_INVALID;
    }
    if (!(s->base_lr >= 0.0f) || !isfinite(s->base_lr)) {
        starling__why(why, wl, "lr schedule: base_lr %g must be >= 0", (double)s->base_lr);
        return STARLING_E_INVALID;
    }
    switch (s->kind) {
    case STARLING__LR_CONSTANT: return STARLING_OK;
    case STARLING__LR_WARMUP:
        if (s->warmup_steps < 1) {
            starling__why(why, wl, "lr schedule: warm-up needs warmup_steps >= 1");
            return STARLING_E_INVALID;
        }
        return STARLING_OK;
    case STARLING__LR_COSINE:
    case STARLING__LR_WARMUP_COSINE:
        if (!(s->min_lr >= 0.0f) || !(s->min_lr <= s->base_lr)) {
            starling__why(why, wl, "lr schedule: min_lr %g must be in [0, base_lr %g]", (double)s->min_lr,
                    (double)s->base_lr);
            return STARLING_E_INVALID;
        }
        if (s->kind == STARLING__LR_WARMUP_COSINE && s->warmup_steps < 1) {
            starling__why(why, wl, "lr schedule: warm-up needs warmup_steps >= 1");
            return STARLING_E_INVALID;
        }
        {
            uint64_t w = s->kind == STARLING__LR_COSINE ? 0 : s->warmup_steps;
            if (s->total_steps <= w) {
                starling__why(why, wl, "lr schedule: total_steps %llu must exceed warmup_steps %llu",
                        (unsigned long long)s->total_steps, (unsigned long long)w);
                return STARLING_E_INVALID;
            }
        }
        return STARLING_OK;
    }
    starling__why(why, wl, "lr schedule: unknown kind %d", (int)s->kind);
    return STARLING_E_INVALID;
}

float starling__lr_at(const starling__lr_schedule *s, uint64_t step)
{
    const double base = s->base_lr;
    uint64_t w = 0;
    switch (s->kind) {
    case STARLING__LR_CONSTANT: return s->base_lr;
    case STARLING__LR_WARMUP:
        if (step < s->warmup_steps)
            return (float)(base * (double)(step + 1) / (double)s->warmup_steps);
        return s->base_lr;
    case STARLING__LR_WARMUP_COSINE:
        w = s->warmup_steps;
        if (step < w)
            return (float)(base * (double)(step + 1) / (double)w);
        break;
    case STARLING__LR_COSINE: break;
    }
    {
        const double span = (double)(s->total_steps - w);
        const uint64_t into = step - w < s->total_steps - w ? step - w : s->total_steps - w;
        const double q = (double)into / span;
        const double pi = 3.14159265358979323846;
        return (float)(s->min_lr + (base - s->min_lr) * 0.5 * (1.0 + cos(pi * q)));
    }
}

/* ---------------------------------------------------------------- outer step */

void starling__outer_pseudo_grad(float *delta, const float *theta_old, const float *theta_local,
                                 size_t n)
{
    for (size_t i = 0; i < n; i++)
        delta[i] = theta_old[i] - theta_local[i];
}

void starling__outer_nesterov_step(float *theta, const float *delta, float *mom, size_t n, float lr,
                                   float momentum)
{
    for (size_t i = 0; i < n; i++) {
        float m = momentum * mom[i] + delta[i];
        mom[i] = m;
        theta[i] -= lr * (delta[i] + momentum * m);
    }
}
