/* Robust aggregators: n vectors of d f32 in, one vector out. Pure functions (no I/O, no
 * globals, scratch from the allocator); the maths, requirements and costs are in
 * docs/aggregation.md. An aggregator is parsed once from its spec into this value.
 *
 * Every rule below works on an array of row pointers (`rows`, n of them, each d floats,
 * all finite): the public entry point drops non-finite rows, then applies bucketing and
 * nearest-neighbour mixing if asked (in that order) before calling a rule, so the rules
 * never see NaN or Inf. Sums and distances are
 * in double in a fixed order; ties go to the lowest row index. */
#ifndef STARLING_AGG_AGG_H
#define STARLING_AGG_AGG_H
#include <stddef.h>
#include <stdint.h>

typedef enum starling__agg_kind {
    AGG_MEAN = 0,
    AGG_MEDIAN = 1,    /* coordinate-wise median */
    AGG_TRIMMED = 2,   /* coordinate-wise trimmed mean, f dropped at each end */
    AGG_KRUM = 3,      /* Blanchard et al. 2017 */
    AGG_MULTIKRUM = 4, /* mean of the m best Krum scores */
    AGG_GEOMED = 5,    /* smoothed Weiszfeld (Pillutla et al.) */
    AGG_CCLIP = 6,     /* centered clipping (Karimireddy et al. 2021) */
    AGG_FLAG = 7       /* Flag-style IRLS subspace aggregator (Almeida et al.) */
} starling__agg_kind;

#define STARLING_AGG_SPEC_MAX 96
#define AGG_GEOMED_ITERS_DEFAULT 100
#define AGG_GEOMED_TOL_DEFAULT 1e-6
#define AGG_GEOMED_NU 1e-6 /* Weiszfeld smoothing: distances below nu count as nu */
#define AGG_CCLIP_TAU_DEFAULT 1.0
#define AGG_CCLIP_ITERS_DEFAULT 3
#define AGG_FLAG_RANK_DEFAULT 1
#define AGG_FLAG_ITERS_DEFAULT 5
#define AGG_BUCKET_MAX 1000000L     /* bucket size S */
#define AGG_BUCKET_SEED_MAX 999999999L

typedef struct starling__agg {
    int kind;         /* starling__agg_kind */
    long bucket;      /* "bucket:S+": buckets of S rows first; 0 = no bucketing */
    long bucket_seed; /* "bucket:S:seed=N+": seed of the bucketing permutation */
    int nnm;          /* "nnm+": nearest-neighbour mixing (after bucketing) */
    long m;     /* multikrum: rows averaged; 0 = n - f */
    long iters; /* geomed, cclip, flag; 0 for the others */
    double tol; /* geomed: relative objective change that stops the iteration */
    double tau; /* cclip: clipping radius (L2) */
    long rank;  /* flag: subspace rank r */
} starling__agg;

/* Parses `spec` (docs/aggregation.md). On error returns STARLING_E_INVALID and writes a
 * message into why (wl bytes); *out is untouched on error. */
/* starling_aggregate's checks of its arguments and of the rule's requirement on (n, f),
 * without aggregating: lets a collective refuse before it sends anything. */
struct starling_aggregator;
int starling__aggregator_check(const struct starling_aggregator *agg, size_t n, size_t d, int f,
                               char *err, size_t errlen);
/* starling_aggregate with a salt mixed into the bucketing permutation (its seed is
 * derive(bucket seed, salt)); starling_aggregate is this with salt 0. Without bucketing
 * the salt changes nothing. The robust collective passes a salt every member computes
 * alike and that changes from call to call (core/robust.c). */
int starling__aggregate_salted(const struct starling_aggregator *agg, const float *vectors,
                               size_t n, size_t d, int f, uint64_t salt, float *out, char *err,
                               size_t errlen);
/* A salt from three values (e.g. epoch, tag, step): distinct inputs give unrelated salts. */
uint64_t starling__agg_salt(uint64_t a, uint64_t b, uint64_t c);

/* A score and the row it belongs to; sorted by score, ties to the lower row index (the
 * order Krum's selection and the subspace rule's trimming both need). */
typedef struct starling__agg_ranked {
    double key;
    size_t idx;
} starling__agg_ranked;
int starling__agg_ranked_cmp(const void *pa, const void *pb);

int starling__agg_parse(const char *spec, starling__agg *out, char *why, size_t wl);
/* Canonical spec: parse(format(a)) == a, equal aggregators format equally. */
void starling__agg_format(const starling__agg *a, char *out, size_t cap);

/* The rules. `rows`: n pointers to d finite floats; f: Byzantine rows assumed among them;
 * the caller has checked the rule's requirement on (n, f). Write d floats to out.
 * Return STARLING_OK or STARLING_E_NOMEM. */
int starling__agg_mean(const float *const *rows, size_t n, size_t d, float *out);
int starling__agg_median(const float *const *rows, size_t n, size_t d, float *out);
int starling__agg_trimmed(const float *const *rows, size_t n, size_t d, size_t f, float *out);
int starling__agg_krum(const float *const *rows, size_t n, size_t d, size_t f, size_t m,
                       float *out);
int starling__agg_geomed(const float *const *rows, size_t n, size_t d, long iters, double tol,
                         float *out);
int starling__agg_cclip(const float *const *rows, size_t n, size_t d, double tau, long iters,
                        float *out);
int starling__agg_flag(const float *const *rows, size_t n, size_t d, size_t f, long rank,
                       long iters, float *out);
/* Bucketing (Karimireddy, He, Jaggi 2022): shuffles rows[0..n) in place by the
 * Fisher-Yates permutation of the PRNG stream derive(seed, salt), then writes the mean of each run of
 * s consecutive shuffled rows (the last run holds the n mod s left over, if any) to
 * means (ceil(n/s) x d floats; sums in double in shuffled order, rounded once) and points
 * rows[0..ceil(n/s)) at them. Returns ceil(n/s). Never fails. */
size_t starling__agg_bucket(const float **rows, size_t n, size_t d, size_t s, uint64_t seed,
                            uint64_t salt, float *means);
/* Buckets made of n rows in buckets of s: ceil(n/s). */
size_t starling__agg_bucket_count(size_t n, size_t s);
/* Nearest-neighbour mixing: mixed[i*d..] = mean of the n - f rows nearest to row i
 * (itself first, then by squared distance, ties to the lower index). mixed: n*d floats. */
int starling__agg_nnm(const float *const *rows, size_t n, size_t d, size_t f, float *mixed);

/* Shared helpers. */
/* D[i*n + j] = squared L2 distance of rows i and j (double; D symmetric, zero diagonal).
 * Summed over blocks of coordinates in a fixed order, so D[i][j] == D[j][i] bit for bit
 * and does not depend on where the rows sit in `rows`. */
void starling__agg_sqdist(const float *const *rows, size_t n, size_t d, double *D);
/* out[j] (double) = coordinate-wise median of rows; used as a robust starting point. */
int starling__agg_median_d(const float *const *rows, size_t n, size_t d, double *out);
#endif
