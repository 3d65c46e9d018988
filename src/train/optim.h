/* Optimizers, gradient clipping, learning-rate schedules and the DiLoCo outer step.
 *
 * Everything works on flat f32 buffers of n elements (params, grads, optimizer state), so
 * a trainer can all-reduce or register any of them as one shared-state tensor. The step
 * functions never allocate and are deterministic: element i of the result depends only
 * on element i of the inputs (plus the scalars), in a fixed order of f32 operations, so
 * peers holding the same bytes compute the same bytes.
 *
 * Formulas (t = 1, 2, ... the step being taken; g the gradient, p the parameters):
 *
 *   SGD (as torch.optim.SGD, dampening 0; weight decay is L2, added to the gradient):
 *     g' = g + wd p
 *     b  = mu b + g'                    (b starts at 0, so b_1 = g')
 *     d  = nesterov ? g' + mu b : b     (mu = 0: d = g', no buffer)
 *     p  = p - lr d
 *
 *   AdamW (Loshchilov & Hutter, decoupled weight decay; as torch.optim.AdamW):
 *     p  = p (1 - lr wd)
 *     m  = b1 m + (1 - b1) g            v = b2 v + (1 - b2) g^2      (both start at 0)
 *     p  = p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 *
 *   Outer Nesterov step of DiLoCo (Douillard et al. 2023), i.e. SGD with nesterov=True on
 *   the pseudo-gradient Delta:
 *     Delta = theta_old - mean_k theta_k   (the global params at the start of the round
 *                                           minus the average of the peers' params after
 *                                           their inner steps: points uphill, like a
 *                                           gradient; mean of per-peer theta_old - theta_k)
 *     m     = mu m + Delta                 (m starts at 0)
 *     theta = theta_old - lr (Delta + mu m)
 *   With lr = 1 and mu = 0 this is plain averaging: theta = mean_k theta_k. */
#ifndef STARLING_TRAIN_OPTIM_H
#define STARLING_TRAIN_OPTIM_H

#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------- optimizers */

typedef enum starling__optim_kind {
    STARLING__OPTIM_SGD = 0,
    STARLING__OPTIM_ADAMW = 1,
} starling__optim_kind;

/* Hyper-parameters and the step counter. Plain value: copy it, save it with the state. */
typedef struct starling__optim {
    starling__optim_kind kind;
    float weight_decay; /* SGD: L2 coefficient (coupled); AdamW: decoupled decay */
    float momentum;     /* SGD: mu in [0, 1); 0 = plain SGD (no state) */
    int nesterov;       /* SGD: 1 = Nesterov momentum (needs momentum > 0) */
    float beta1, beta2; /* AdamW: in [0, 1) */
    float eps;          /* AdamW: > 0 */
    uint64_t step;      /* steps taken; AdamW's bias correction uses step + 1 */
} starling__optim;

/* Defaults. SGD: momentum 0.9, nesterov off, weight_decay 0. AdamW: beta1 0.9, beta2
 * 0.999, eps 1e-8, weight_decay 0.01 (torch's AdamW defaults). step = 0. */
void starling__optim_defaults(starling__optim *o, starling__optim_kind kind);
/* STARLING_OK, or STARLING_E_INVALID with why naming the bad field. */
int starling__optim_check(const starling__optim *o, char *why, size_t wl);
/* Floats of state per n parameters: SGD n (momentum buffer; 0 without momentum),
 * AdamW 2n (m then v, one contiguous buffer). The state must be zeroed before step 1. */
size_t starling__optim_state_floats(const starling__optim *o, size_t n);
/* One step with learning rate lr (from a schedule) on n parameters; increments o->step.
 * Errors: STARLING_E_INVALID (NULL buffers with n > 0, bad hyper-parameters). */
int starling__optim_step(starling__optim *o, float *params, const float *grads, float *state,
                         size_t n, float lr);

/* The two kernels behind starling__optim_step, for callers with their own bookkeeping.
 * buf may be NULL when momentum == 0. t >= 1 is the AdamW step number. */
void starling__sgd_step(float *p, const float *g, float *buf, size_t n, float lr, float momentum,
                        int nesterov, float weight_decay);
void starling__adamw_step(float *p, const float *g, float *m, float *v, size_t n, float lr,
                          float beta1, float beta2, float eps, float weight_decay, uint64_t t);

/* ---------------------------------------------------------------- clipping */

/* L2 norm of x, accumulated in double. */
double starling__l2_norm(const float *x, size_t n);
/* Clips by global L2 norm, as torch.nn.utils.clip_grad_norm_: with N = ||g||_2, if
 * N > max_norm every g_i is multiplied by max_norm / (N + 1e-6). Returns N (before
 * clipping). A non-finite N leaves g unchanged (the caller should skip the step). */
double starling__clip_grad_norm(float *g, size_t n, double max_norm);

/* ---------------------------------------------------------------- schedules */

typedef enum starling__lr_kind {
    STARLING__LR_CONSTANT = 0,      /* base_lr */
    STARLING__LR_WARMUP = 1,        /* linear warm-up, then base_lr */
    STARLING__LR_COSINE = 2,        /* cosine from base_lr to min_lr over total_steps */
    STARLING__LR_WARMUP_COSINE = 3, /* warm-up, then cosine over the remaining steps */
} starling__lr_kind;

/* The learning rate for step s (0-based: the s-th optimizer step about to be taken),
 * W = warmup_steps, T = total_steps:
 *   warm-up part (s < W):  base * (s + 1) / W         (never 0; reaches base at s = W-1)
 *   cosine part:          min + (base - min) (1 + cos(pi q)) / 2,
 *                          q = min(s - W, T - W) / (T - W)   (W = 0 for COSINE)
 * so the cosine starts at base right after the warm-up and stays at min from s = T on. */
typedef struct starling__lr_schedule {
    starling__lr_kind kind;
    float base_lr;
    float min_lr;          /* cosine floor, 0 <= min_lr <= base_lr */
    uint64_t warmup_steps; /* WARMUP, WARMUP_COSINE: >= 1 */
    uint64_t total_steps;  /* COSINE: >= 1; WARMUP_COSINE: > warmup_steps */
} starling__lr_schedule;

int starling__lr_check(const starling__lr_schedule *s, char *why, size_t wl);
/* Assumes a schedule accepted by starling__lr_check. */
float starling__lr_at(const starling__lr_schedule *s, uint64_t step);

/* ---------------------------------------------------------------- outer step */

#define STARLING__OUTER_LR_DEFAULT 0.7f
#define STARLING__OUTER_MOMENTUM_DEFAULT 0.9f

/* delta = theta_old - theta_local: this peer's pseudo-gradient after its inner steps;
 * the trainer then all-reduces it with AVG to get Delta. delta may alias theta_local. */
void starling__outer_pseudo_grad(float *delta, const float *theta_old, const float *theta_local,
                                 size_t n);
/* The outer Nesterov step above: theta (holding theta_old) and mom (m) are updated in
 * place from the averaged delta. Does not allocate. */
void starling__outer_nesterov_step(float *theta, const float *delta, float *mom, size_t n, float lr,
                                   float momentum);

#endif
