/* The public aggregator handle and the one entry point, starling_aggregate: it checks the
 * rule's requirement on (n, f), drops rows holding NaN or Inf, applies bucketing and then
 * nearest-neighbour mixing if asked, and calls the rule.
 *
 * Non-finite rows are dropped and counted against f. Such a row is certainly faulty (no
 * honest gradient holds Inf), so n - b rows with at most f - b faulty ones remain, and
 * every requirement below still holds for them: n - b > 2(f - b) follows from n > 2f.
 * Replacing the row by something finite instead would hand a faulty peer a vote chosen
 * by us. More than f such rows break the caller's own assumption, and no rule can then
 * promise anything, so the call fails with STARLING_E_CORRUPT rather than guess.
 *
 * Bucketing turns n rows into ceil(n/S) bucket means, of which the f faulty rows spoil at
 * most f: the requirement is checked on (ceil(n/S), f). After dropping b non-finite rows
 * it still holds for (ceil((n-b)/S), f-b), because ceil(n/S) - ceil((n-b)/S) <= b. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "agg/agg.h"
#include "starling.h"
#include "util/alloc.h"

#define N_MAX 1000000u

struct starling_aggregator {
    starling__agg a;
    char spec[STARLING_AGG_SPEC_MAX];
};

#if defined(__GNUC__)
#define AGG_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define AGG_PRINTF(a, b)
#endif

static int fail(int code, char *err, size_t errlen, const char *fmt, ...) AGG_PRINTF(4, 5);

static int fail(int code, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (err && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

int starling_aggregator_create(starling_aggregator **out, const char *spec, char *err,
                               size_t errlen)
{
    starling__agg a;
    starling_aggregator *agg;
    int rc;

    if (err && errlen > 0)
        err[0] = '\0';
    if (!out)
        return fail(STARLING_E_INVALID, err, errlen, "out is NULL");
    *out = NULL;
    rc = starling__agg_parse(spec, &a, err, errlen);
    if (rc != STARLING_OK)
        return rc;
    agg = starling__malloc(sizeof *agg);
    if (!agg)
        return fail(STARLING_E_NOMEM, err, errlen, "out of memory");
    agg->a = a;
    starling__agg_format(&a, agg->spec, sizeof agg->spec);
    *out = agg;
    return STARLING_OK;
}

void starling_aggregator_destroy(starling_aggregator *agg) { starling__free(agg); }

const char *starling_aggregator_spec(const starling_aggregator *agg)
{
    return agg ? agg->spec : NULL;
}

/* The rule's requirement on (n, f) for the rows it sees; n >= 1 and f >= 0 hold. */
static int check_rule(const starling_aggregator *agg, size_t n, size_t f, char *err,
                             size_t errlen)
{
    const starling__agg *a = &agg->a;
    switch (a->kind) {
    case AGG_MEAN:
        if (n <= f)
            return fail(STARLING_E_INVALID, err, errlen, "mean needs n > f (got n=%zu, f=%zu)", n,
                        f);
        break;
    case AGG_KRUM:
    case AGG_MULTIKRUM:
        if (n <= 2 * f + 2)
            return fail(STARLING_E_INVALID, err, errlen, "%s needs n > 2f + 2 (got n=%zu, f=%zu)",
                        a->kind == AGG_KRUM ? "krum" : "multikrum", n, f);
        if (a->kind == AGG_MULTIKRUM && a->m > 0 && (size_t)a->m > n - f)
            return fail(STARLING_E_INVALID, err, errlen,
                        "multikrum m=%ld must be at most n - f = %zu", a->m, n - f);
        break;
    default:
        if (n <= 2 * f)
            return fail(STARLING_E_INVALID, err, errlen, "%s needs n > 2f (got n=%zu, f=%zu)",
                        agg->spec, n, f);
        if (a->kind == AGG_FLAG && (size_t)a->rank > n - 2 * f)
            return fail(STARLING_E_INVALID, err, errlen,
                        "flag rank r=%ld must be at most n - 2f = %zu", a->rank, n - 2 * f);
        break;
    }
    if (a->nnm && n <= 2 * f)
        return fail(STARLING_E_INVALID, err, errlen, "nnm needs n > 2f (got n=%zu, f=%zu)", n, f);
    return STARLING_OK;
}

/* The requirement on the declared (n, f): on the bucket count when bucketing, with the
 * bucketing named in the message. */
static int check_requirement(const starling_aggregator *agg, size_t n, size_t f, char *err,
                             size_t errlen)
{
    size_t s = (size_t)agg->a.bucket, nb;
    char why[200];
    int rc;
    if (s == 0)
        return check_rule(agg, n, f, err, errlen);
    nb = starling__agg_bucket_count(n, s);
    rc = check_rule(agg, nb, f, why, sizeof why);
    if (rc != STARLING_OK)
        fail(rc, err, errlen,
             "%s, counting buckets: n=%zu vectors in buckets of %zu make %zu, and f Byzantine "
             "vectors can spoil f of them",
             why, n, s, nb);
    return rc;
}

static int row_is_finite(const float *x, size_t d)
{
    size_t j;
    for (j = 0; j < d; j++)
        if (!isfinite(x[j]))
            return 0;
    return 1;
}

static int run_rule(const starling__agg *a, const float *const *rows, size_t n, size_t d, size_t f,
                    float *out)
{
    switch (a->kind) {
    case AGG_MEAN: return starling__agg_mean(rows, n, d, out);
    case AGG_MEDIAN: return starling__agg_median(rows, n, d, out);
    case AGG_TRIMMED: return starling__agg_trimmed(rows, n, d, f, out);
    case AGG_KRUM: return starling__agg_krum(rows, n, d, f, 1, out);
    case AGG_MULTIKRUM:
        return starling__agg_krum(rows, n, d, f, a->m > 0 ? (size_t)a->m : n - f, out);
    case AGG_GEOMED: return starling__agg_geomed(rows, n, d, a->iters, a->tol, out);
    case AGG_CCLIP: return starling__agg_cclip(rows, n, d, a->tau, a->iters, out);
    case AGG_FLAG: return starling__agg_flag(rows, n, d, f, a->rank, a->iters, out);
    default: return STARLING_E_INVALID;
    }
}

int starling__aggregator_check(const starling_aggregator *agg, size_t n, size_t d, int f,
                               char *err, size_t errlen)
{
    if (f < 0)
        return fail(STARLING_E_INVALID, err, errlen, "f must be >= 0 (got %d)", f);
    if (n == 0 || d == 0)
        return fail(STARLING_E_INVALID, err, errlen,
                    "need at least one vector of one element "
                    "(got n=%zu, d=%zu)",
                    n, d);
    if (n > N_MAX || d > SIZE_MAX / sizeof(float) / n)
        return fail(STARLING_E_INVALID, err, errlen, "n=%zu x d=%zu is too large", n, d);
    return check_requirement(agg, n, (size_t)f, err, errlen);
}

int starling_aggregate(const starling_aggregator *agg, const float *vectors, size_t n, size_t d,
                       int f, float *out, char *err, size_t errlen)
{
    return starling__aggregate_salted(agg, vectors, n, d, f, 0, out, err, errlen);
}

/* Replaces rows[0..*n) by their ceil(*n/S) bucket means (bucketing permutation seeded by
 * the spec's seed and `salt`), held in *means. */
static int apply_bucketing(const starling__agg *a, const float **rows, size_t *n, size_t d,
                           uint64_t salt, float **means, char *err, size_t errlen)
{
    size_t nb = starling__agg_bucket_count(*n, (size_t)a->bucket);
    *means = starling__malloc(nb * d * sizeof **means);
    if (!*means)
        return fail(STARLING_E_NOMEM, err, errlen, "out of memory (bucketing: %zu x %zu floats)",
                    nb, d);
    *n = starling__agg_bucket(rows, *n, d, (size_t)a->bucket, (uint64_t)a->bucket_seed, salt,
                              *means);
    return STARLING_OK;
}

int starling__aggregate_salted(const starling_aggregator *agg, const float *vectors, size_t n,
                               size_t d, int f, uint64_t salt, float *out, char *err,
                               size_t errlen)
{
    const float **rows = NULL;
    float *mixed = NULL, *means = NULL;
    size_t i, kept = 0, bad, fk;
    int rc;

    if (err && errlen > 0)
        err[0] = '\0';
    if (!agg || !vectors || !out)
        return fail(STARLING_E_INVALID, err, errlen, "%s is NULL",
                    !agg       ? "agg"
                    : !vectors ? "vectors"
                               : "out");
    rc = starling__aggregator_check(agg, n, d, f, err, errlen);
    if (rc != STARLING_OK)
        return rc;

    rows = starling__malloc(n * sizeof *rows);
    if (!rows)
        return fail(STARLING_E_NOMEM, err, errlen, "out of memory (%zu row pointers)", n);
    for (i = 0; i < n; i++)
        if (row_is_finite(vectors + i * d, d))
            rows[kept++] = vectors + i * d;
    bad = n - kept;
    if (bad > (size_t)f) {
        rc = fail(STARLING_E_CORRUPT, err, errlen,
                  "%zu of %zu vectors hold NaN or Inf, more than f=%d", bad, n, f);
        goto done;
    }
    fk = (size_t)f - bad;
    if (agg->a.bucket > 0 &&
        (rc = apply_bucketing(&agg->a, rows, &kept, d, salt, &means, err, errlen)) != STARLING_OK)
        goto done;
    if (agg->a.nnm) {
        mixed = starling__malloc(kept * d * sizeof *mixed);
        if (!mixed) {
            rc = fail(STARLING_E_NOMEM, err, errlen, "out of memory (nnm: %zu x %zu floats)", kept,
                      d);
            goto done;
        }
        rc = starling__agg_nnm(rows, kept, d, fk, mixed);
        if (rc != STARLING_OK) {
            fail(rc, err, errlen, "out of memory (nnm scratch)");
            goto done;
        }
        for (i = 0; i < kept; i++)
            rows[i] = mixed + i * d;
    }
    rc = run_rule(&agg->a, rows, kept, d, fk, out);
    if (rc == STARLING_E_NOMEM)
        fail(rc, err, errlen, "out of memory (%s scratch for n=%zu, d=%zu)", agg->spec, kept, d);
done:
    starling__free(means);
    starling__free(mixed);
    starling__free(rows);
    return rc;
}
