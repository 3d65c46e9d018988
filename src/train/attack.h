/* Byzantine members for evaluation (docs/training.md, "Byzantine members"): what an
 * attacking member sends in place of its honest contribution, and the label flip of its
 * data. Pure computations on the caller's buffers plus the attacker's own memory (its
 * output buffer and, for alie, its spread estimate); no I/O, no global state.
 *
 * The attacker knows its own data, its own honest contribution g and the aggregates all
 * members receive; it never sees the other members' contributions before it sends (they
 * travel at the same time). A contribution may be a slice [off, off + len) of the model's
 * n parameters (a Streaming DiLoCo fragment): per-coordinate state and the garbage sign
 * pattern follow the global index, so slicing does not change what a coordinate gets. */
#ifndef STARLING_TRAIN_ATTACK_H
#define STARLING_TRAIN_ATTACK_H
#include <stddef.h>
#include <stdint.h>

#define STARLING__ATTACK_STREAM_NOISE 0xb12aull
#define STARLING__ALIE_EMA 0.9f /* decay of the ALIE attacker's spread estimate */

typedef struct starling__attacker {
    int kind;       /* starling__attack (train/train_config.h) */
    float scale;    /* sign_flip, ipm: the factor; noise: std; alie: z; garbage: magnitude */
    uint64_t start; /* first shared step at which the attack is active */
    uint64_t seed;  /* the run's seed (noise) */
    size_t n;       /* floats per full contribution */
    float *out;     /* n floats: the lie (NULL for none and label_flip) */
    float *var;     /* alie: EMA of (own honest - aggregate)^2 per coordinate, else NULL */
} starling__attacker;

/* Sets up `a` for attack `kind` on contributions of n floats. STARLING_E_NOMEM if its
 * buffers cannot be allocated (then nothing is held); STARLING_E_INVALID for an unknown
 * kind, n = 0 or a negative or non-finite scale. */
int starling__attacker_init(starling__attacker *a, int kind, double scale, uint64_t start,
                            uint64_t seed, size_t n);
/* Accepts a zeroed or initialised `a`; leaves it zeroed. */
void starling__attacker_free(starling__attacker *a);

/* 1 if the attack is active at shared step `step` (never for none). */
int starling__attack_active(const starling__attacker *a, uint64_t step);

/* What the member sends for coordinates [off, off + len) at shared step `step`, `g` being
 * its honest values for those coordinates (len floats). Returns `g` itself when honest
 * (no attack, label_flip, before `start`), else a pointer into the attacker's buffer
 * (len floats, valid until the next call for the same coordinates):
 *   sign_flip  -scale g          ipm  -scale g (its g standing in for the honest mean)
 *   noise      scale N(0, 1), the stream seeded by (seed, step, rank); independent of g
 *   alie       g - scale sqrt(var)   (var: see starling__attack_learn)
 *   garbage    even steps NaN; odd ones +scale at even global indices, -scale at odd
 * Requires off + len <= n. */
const float *starling__attack_contribution(starling__attacker *a, const float *g, size_t off,
                                           size_t len, uint64_t step, int rank);

/* After a successful sync: the alie attacker updates its spread estimate of coordinates
 * [off, off + len) from its honest `g` and the aggregate `agg` every member received,
 * var = EMA * var + (1 - EMA) (g - agg)^2, skipping non-finite differences. A no-op for
 * the other attacks. */
void starling__attack_learn(starling__attacker *a, const float *g, const float *agg, size_t off,
                            size_t len);

/* label_flip, when active at `step`: y := classes - 1 - y for the b labels of a batch
 * (labels are < classes). A no-op otherwise. */
void starling__attack_labels(const starling__attacker *a, uint64_t step, uint8_t *y, size_t b,
                             size_t classes);
#endif
