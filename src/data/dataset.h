/* Training data: Fashion-MNIST or a synthetic stand-in, split into per-peer shards and
 * served as deterministic mini-batches.
 *
 * Representation. A dataset keeps its features as bytes (n x 784, row-major), exactly as
 * IDX stores them, and converts to f32 only when a batch is gathered: feature = byte/255,
 * so every feature lies in [0, 1] (normalised, not standardised: no mean is subtracted).
 * Bytes keep a process's copy of the 60000-image training set at 47 MB instead of 188 MB,
 * which matters when `starling run` starts several peers on one machine.
 *
 * Determinism. Everything random here (synthetic data, shards, batch order) is a pure
 * function of the seeds passed in, through data/prng.h; no global state. Peers that
 * compute their own shard from the same (seed, nranks) therefore agree on the partition.
 *
 * Errors are starling codes; where a `why, wl` pair is taken, the detail is written there
 * (NUL-terminated, at most wl bytes; why may be NULL). */
#ifndef STARLING_DATA_DATASET_H
#define STARLING_DATA_DATASET_H

#include <stddef.h>
#include <stdint.h>

#define STARLING__DATASET_DIM 784 /* 28 x 28 features */
#define STARLING__DATASET_CLASSES 10
/* Where Debian's dataset-fashion-mnist package puts the files. */
#define STARLING__FASHION_DIR "/usr/share/datasets/fashion-mnist"

typedef enum starling__split {
    STARLING__SPLIT_TRAIN = 0, /* train-*-ubyte.gz, 60000 samples */
    STARLING__SPLIT_TEST = 1,  /* t10k-*-ubyte.gz, 10000 samples */
} starling__split;

typedef struct starling__dataset {
    size_t n;        /* samples, >= 1 */
    size_t d;        /* features per sample: STARLING__DATASET_DIM */
    size_t classes;  /* STARLING__DATASET_CLASSES */
    uint8_t *pixels; /* n x d bytes, row-major; feature = byte / 255 */
    uint8_t *labels; /* n labels, each < classes */
    int synthetic;   /* 1 when made by starling__dataset_synthetic */
} starling__dataset;

/* Loads one split of Fashion-MNIST from `dir` (e.g. STARLING__FASHION_DIR): the gzip
 * files "<dir>/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz", or the same names
 * without ".gz" when the compressed file is absent. Validation is idx.h's, plus: the
 * image and label files must hold the same count (else STARLING_E_CORRUPT naming both).
 * Errors: STARLING_E_NOT_FOUND, STARLING_E_CORRUPT, STARLING_E_OS, STARLING_E_NOMEM,
 * STARLING_E_INVALID. On error *out is zeroed. */
int starling__dataset_load_fashion(starling__dataset *out, const char *dir, starling__split split,
                                   char *why, size_t wl);

/* A synthetic 10-class problem of n samples (1 <= n <= 1000000) shaped like
 * Fashion-MNIST (784 byte features, labels 0..9, exactly balanced up to n mod 10).
 * `seed` fixes the task: each class prototype on the 28 x 28 grid is half a shape shared
 * by all classes and half its own, each shape three Gaussian blobs. The samples come
 * from a stream derived from (seed, split), so the TRAIN and TEST splits of one seed are
 * two samples of the same task. A sample is its class prototype blended with a random
 * other class (weight t ~ U[0, 0.45]), scaled in brightness by U[0.8, 1.2], translated
 * by up to 2 pixels on each axis (zero fill), plus N(0, 0.3^2) pixel noise, clamped to
 * [0, 1] and quantised to bytes. About as hard as Fashion-MNIST: the 784-256-128-10 MLP
 * reaches ~90% test accuracy after a few epochs of 20000 samples. */
int starling__dataset_synthetic(starling__dataset *out, size_t n, uint64_t seed,
                                starling__split split, char *why, size_t wl);

/* Frees the buffers and zeroes *ds. Accepts NULL and an already zeroed dataset. */
void starling__dataset_free(starling__dataset *ds);

/* Converts samples idx[0..count) to f32 rows of x (count x d) and their labels to y.
 * x or y may be NULL. Indices must be < ds->n (the caller's shard guarantees it). */
void starling__dataset_gather(const starling__dataset *ds, const uint32_t *idx, size_t count,
                              float *x, uint8_t *y);

/* Same for the contiguous samples first .. first+count-1. */
void starling__dataset_rows(const starling__dataset *ds, size_t first, size_t count, float *x,
                            uint8_t *y);

/* ---------------------------------------------------------------- shards */

/* One peer's share of a dataset: indices into it. */
typedef struct starling__shard {
    size_t n;
    uint32_t *idx; /* n indices, each < dataset n, no repeats */
} starling__shard;

/* IID shard: a permutation of 0..n-1 drawn from `seed`, of which rank r of nranks takes
 * the contiguous slice [floor(r n / R), floor((r+1) n / R)). Shard sizes differ by at
 * most one; the R shards partition the set. 1 <= nranks <= n, rank < nranks. */
int starling__shard_iid(starling__shard *out, const starling__dataset *ds, size_t rank,
                        size_t nranks, uint64_t seed, char *why, size_t wl);

/* Label-skewed shard (Hsu, Qi, Brown 2019, "Measuring the effects of non-identical data
 * distribution"): for each class c, its samples are shuffled (stream derived from seed,
 * attempt and c), proportions q ~ Dirichlet(alpha, ..., alpha) over the R peers are drawn
 * (Gamma(alpha) variates normalised; computed in log space so tiny alpha does not
 * underflow), and the shuffled list is cut at the rounded cumulative sums
 * round(n_c * (q_0 + ... + q_k)), the last cut being n_c: every sample goes to exactly one
 * peer. Small alpha concentrates each class on few peers; large alpha approaches IID.
 * If some peer would get fewer than `min_size` samples, the whole draw is repeated with
 * the next attempt number (up to 1000 attempts, then STARLING_E_INVALID). The shard's
 * indices come in increasing order. alpha > 0 and finite; min_size * nranks <= n. */
int starling__shard_dirichlet(starling__shard *out, const starling__dataset *ds, size_t rank,
                              size_t nranks, double alpha, size_t min_size, uint64_t seed,
                              char *why, size_t wl);

/* Frees and zeroes. Accepts NULL. */
void starling__shard_free(starling__shard *s);

/* ---------------------------------------------------------------- mini-batches */

/* Deterministic mini-batches over one shard. Epoch e visits the shard's samples in the
 * order of a Fisher–Yates shuffle of the shard's index list seeded by
 * starling__prng_derive(seed, e): a function of (seed, e) alone, so a restarted peer can
 * seek straight to (epoch, position). Batches have `batch` samples except the last of an
 * epoch, which has what remains (an epoch is ceil(n / batch) batches). */
typedef struct starling__batcher {
    size_t n;     /* shard size */
    size_t batch; /* samples per batch */
    uint64_t seed;
    uint64_t epoch;   /* current epoch, from 0 */
    size_t pos;       /* next position within the epoch's order */
    uint32_t *base;   /* the shard's indices (copied) */
    uint32_t *order;  /* this epoch's permutation of base */
    uint32_t max_idx; /* largest index, checked against the dataset in _next */
} starling__batcher;

/* Copies the shard's indices (the shard may be freed afterwards) and positions at
 * epoch 0, position 0. Errors: STARLING_E_INVALID (empty shard, batch 0), NOMEM. */
int starling__batcher_init(starling__batcher *b, const starling__shard *shard, size_t batch,
                           uint64_t seed);
void starling__batcher_free(starling__batcher *b);
/* Positions at `pos` (< shard size) of epoch `epoch`. */
int starling__batcher_seek(starling__batcher *b, uint64_t epoch, size_t pos);
/* Writes the next batch: x (batch x d floats) and y (batch labels); *count = samples
 * written (1..batch); *epoch (may be NULL) = the epoch they belong to. Moves to the next
 * epoch, reshuffled, once one is exhausted. Does not allocate. STARLING_E_INVALID if
 * the shard indexes past ds (a dataset other than the shard's). */
int starling__batcher_next(starling__batcher *b, const starling__dataset *ds, float *x, uint8_t *y,
                           size_t *count, uint64_t *epoch);

#endif
