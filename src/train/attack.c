/* Byzantine contributions for evaluation runs (attack.h; docs/training.md, "Byzantine
 * members"). Each attack is one small loop over the coordinates it is asked for; the
 * trainer calls these with the whole model (ddp, diloco) or one fragment (streaming). */
#include "train/attack.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "data/prng.h"
#include "starling.h"
#include "train/train_config.h"
#include "util/alloc.h"

static int needs_buffer(int kind)
{
    return kind != STARLING__ATTACK_NONE && kind != STARLING__ATTACK_LABEL_FLIP;
}

int starling__attacker_init(starling__attacker *a, int kind, double scale, uint64_t start,
                            uint64_t seed, size_t n)
{
    memset(a, 0, sizeof *a);
    if (kind < 0 || kind >= STARLING__ATTACK_COUNT || n == 0 || !(scale >= 0.0) ||
        scale > FLT_MAX)
        return STARLING_E_INVALID;
    a->kind = kind;
    a->scale = (float)scale;
    a->start = start;
    a->seed = seed;
    a->n = n;
    if (needs_buffer(kind) && !(a->out = starling__alloc_aligned(n * sizeof(float))))
        return STARLING_E_NOMEM;
    if (kind == STARLING__ATTACK_ALIE && !(a->var = starling__calloc(n, sizeof(float)))) {
        starling__attacker_free(a);
        return STARLING_E_NOMEM;
    }
    return STARLING_OK;
}

void starling__attacker_free(starling__attacker *a)
{
    starling__free(a->out);
    starling__free(a->var);
    memset(a, 0, sizeof *a);
}

int starling__attack_active(const starling__attacker *a, uint64_t step)
{
    return a->kind != STARLING__ATTACK_NONE && step >= a->start;
}

/* Gaussian noise of std `s`. Seeded by (seed, step, rank) only: a rerun sends the same
 * noise, and two attackers or two steps send unrelated noise. A fragment draws its own
 * len values from the start of that stream (fragments are issued at different steps). */
static void attack_noise(const starling__attacker *a, float *o, size_t len, uint64_t step,
                         int rank)
{
    starling__prng r;
    starling__prng_seed(&r, starling__prng_derive(
                                starling__prng_derive(a->seed, STARLING__ATTACK_STREAM_NOISE),
                                step * 4096u + (uint64_t)rank));
    for (size_t i = 0; i < len; i++)
        o[i] = a->scale * (float)starling__prng_normal(&r);
}

/* Baruch et al. 2019: mean - z std of the honest contributions, per coordinate. The mean
 * is estimated by the attacker's own honest g, the std by the square root of its EMA of
 * (own honest - received aggregate)^2 over the previous syncs (0 at the first: the first
 * attacked sync is honest). */
static void attack_alie(const starling__attacker *a, float *o, const float *g, size_t off,
                        size_t len)
{
    const float *var = a->var + off;
    for (size_t i = 0; i < len; i++)
        o[i] = g[i] - a->scale * sqrtf(var[i]);
}

/* Crash-then-garbage: NaN everywhere on even steps, +-scale by global index on odd ones. */
static void attack_garbage(const starling__attacker *a, float *o, size_t off, size_t len,
                           uint64_t step)
{
    float v = (step & 1) ? a->scale : NAN;
    for (size_t i = 0; i < len; i++)
        o[i] = ((off + i) & 1) ? -v : v;
}

const float *starling__attack_contribution(starling__attacker *a, const float *g, size_t off,
                                           size_t len, uint64_t step, int rank)
{
    float *o = a->out ? a->out + off : NULL;
    if (!o || step < a->start)
        return g;
    switch (a->kind) {
    case STARLING__ATTACK_SIGN_FLIP:
    case STARLING__ATTACK_IPM:
        /* ipm (Xie et al. 2020): -epsilon times the attacker's estimate of the honest
         * mean, its own g; the same arithmetic as the sign flip, a small factor. */
        for (size_t i = 0; i < len; i++)
            o[i] = -a->scale * g[i];
        break;
    case STARLING__ATTACK_NOISE: attack_noise(a, o, len, step, rank); break;
    case STARLING__ATTACK_ALIE: attack_alie(a, o, g, off, len); break;
    case STARLING__ATTACK_GARBAGE: attack_garbage(a, o, off, len, step); break;
    default: return g;
    }
    return o;
}

void starling__attack_learn(starling__attacker *a, const float *g, const float *agg, size_t off,
                            size_t len)
{
    float *var;
    if (!a->var)
        return;
    var = a->var + off;
    for (size_t i = 0; i < len; i++) {
        float e = g[i] - agg[i];
        if (isfinite(e))
            var[i] = STARLING__ALIE_EMA * var[i] + (1.0f - STARLING__ALIE_EMA) * e * e;
    }
}

void starling__attack_labels(const starling__attacker *a, uint64_t step, uint8_t *y, size_t b,
                             size_t classes)
{
    if (a->kind != STARLING__ATTACK_LABEL_FLIP || step < a->start)
        return;
    for (size_t j = 0; j < b; j++) /* the attacker trains on the mirrored label */
        y[j] = (uint8_t)(classes - 1 - y[j]);
}
