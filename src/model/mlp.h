/* The built-in model: a multi-layer perceptron with ReLU hidden layers and a softmax
 * cross-entropy loss, matrix work through OpenBLAS (cblas_sgemm, row-major).
 *
 * Shapes (B = batch, widths w_0 .. w_L, L = number of weight layers):
 *   h_0 = X                         B x w_0   (the caller's input, not copied)
 *   z_l = h_{l-1} W_l^T + b_l       B x w_l   W_l: w_l x w_{l-1}, b_l: w_l   (l = 1..L)
 *   h_l = relu(z_l)                 for l < L; z_L are the logits
 *   p   = softmax(z_L) row-wise     (max subtracted before exp)
 *   loss = -(1/B) sum_i log p[i, y_i]
 * Backward (dZ_L = (p - onehot(y)) / B, then for l = L..1):
 *   dW_l = dZ_l^T h_{l-1}    db_l = column sums of dZ_l
 *   dH_{l-1} = dZ_l W_l      dZ_{l-1} = dH_{l-1} * [h_{l-1} > 0]   (no dX for l = 1)
 *
 * Parameters live in ONE contiguous f32 buffer, so a trainer can all-reduce it or
 * register it as shared state as a single tensor. Layout, layer by layer: W_1 (w_1 x w_0,
 * row-major, i.e. [out][in] as PyTorch's nn.Linear.weight), b_1, W_2, b_2, ... — the
 * order of PyTorch's nn.Sequential state_dict, so a flat copy matches torch exactly.
 * Gradients use one buffer of the same layout. `layer[]` gives every offset.
 *
 * Thread rule: one thread per model at a time. BLAS threading is the application's
 * business (set OPENBLAS_NUM_THREADS=1 for one core per peer); the library never changes
 * it. Results are deterministic for a given OpenBLAS build, core type and thread count. */
#ifndef STARLING_MODEL_MLP_H
#define STARLING_MODEL_MLP_H

#include <stddef.h>
#include <stdint.h>

#include "data/dataset.h"

#define STARLING__MLP_MAX_LAYERS 8 /* weight layers; widths has one more entry */
#define STARLING__MLP_MAX_WIDTH 65536

typedef struct starling__mlp_layer {
    size_t in, out; /* w_{l-1}, w_l */
    size_t w_off;   /* offset (floats) of W_l in params/grads: out x in, row-major */
    size_t b_off;   /* offset of b_l: out floats */
} starling__mlp_layer;

/* Fields are read-only to callers, except the contents of params and grads. */
typedef struct starling__mlp {
    size_t nlayers;                              /* weight layers L */
    size_t widths[STARLING__MLP_MAX_LAYERS + 1]; /* w_0 .. w_L */
    starling__mlp_layer layer[STARLING__MLP_MAX_LAYERS];
    size_t nparams;   /* floats in params (and grads) */
    size_t batch_cap; /* largest batch accepted */
    float *params;    /* nparams, 64-byte aligned */
    float *grads;     /* nparams, same layout, written by forward_backward */
    float *act;       /* h_1 .. h_{L-1}, then z_L / p: batch_cap x w_l each */
    float *scratch;   /* two ping-pong buffers for dH/dZ, batch_cap x max hidden width */
    size_t act_off[STARLING__MLP_MAX_LAYERS + 1]; /* offset of h_l in act (l = 1..L) */
    size_t scratch_half;                          /* floats per ping-pong buffer */
} starling__mlp;

/* Makes a model with nwidths unit counts widths[0..nwidths-1] (input, hidden..., classes;
 * e.g. {784, 256, 128, 10}), 2 <= nwidths <= STARLING__MLP_MAX_LAYERS + 1, each width
 * 1..STARLING__MLP_MAX_WIDTH, batches of up to batch_cap (>= 1) samples. Parameters are
 * zero until starling__mlp_init_params. Errors: STARLING_E_INVALID (with why),
 * STARLING_E_NOMEM. On error *out is NULL. */
int starling__mlp_create(starling__mlp **out, const size_t *widths, size_t nwidths,
                         size_t batch_cap, char *why, size_t wl);
/* Accepts NULL. */
void starling__mlp_destroy(starling__mlp *m);

/* Parameter count: sum over layers of w_l * w_{l-1} + w_l. */
size_t starling__mlp_nparams(const starling__mlp *m);

/* Deterministic initialisation from `seed` (data/prng.h): weights uniform in
 * [-bound, bound] with bound = sqrt(6 / fan_in) for layers followed by a ReLU (He /
 * Kaiming uniform, gain sqrt(2)) and sqrt(3 / fan_in) for the output layer (gain 1);
 * biases zero. Layer l draws from its own stream, derive(seed, l). */
void starling__mlp_init_params(starling__mlp *m, uint64_t seed);

/* Forward and backward on a batch: x is batch x w_0 floats, y batch labels (< w_L).
 * Overwrites grads with d(mean loss)/d(params) and stores the mean cross-entropy in
 * *loss (may be NULL). Does not allocate. Errors: STARLING_E_INVALID (batch 0 or over
 * batch_cap, a label out of range, NULL). */
int starling__mlp_forward_backward(starling__mlp *m, const float *x, const uint8_t *y, size_t batch,
                                   float *loss);

/* Forward only. Leaves the class probabilities (batch x w_L) in m's activation buffer
 * and returns a pointer to them via *probs (valid until the next call on m); if y is
 * given, *loss_sum (may be NULL) gets the summed (not mean) cross-entropy, and pred (may
 * be NULL) the argmax class of each row (ties: lowest index). */
int starling__mlp_forward(starling__mlp *m, const float *x, size_t batch, const uint8_t *y,
                          double *loss_sum, uint8_t *pred, const float **probs);

/* Accuracy and mean cross-entropy over the first `limit` samples of ds (0 = all), in
 * batches of batch_cap; x_scratch must hold batch_cap x w_0 floats, y_scratch batch_cap
 * bytes (the caller owns them so that evaluation does not allocate). ds->d must equal
 * w_0 and ds->classes w_L. */
int starling__mlp_evaluate(starling__mlp *m, const starling__dataset *ds, size_t limit,
                           float *x_scratch, uint8_t *y_scratch, double *accuracy,
                           double *mean_loss);

#endif
