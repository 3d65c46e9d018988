/* Bucketing (Karimireddy, He, Jaggi, "Byzantine-robust learning on heterogeneous datasets
 * via bucketing", ICLR 2022): the rows are shuffled, averaged in buckets of s, and the
 * rule runs on the ceil(n/s) bucket means. A faulty row spoils only its own bucket, so
 * f faulty rows spoil at most f buckets, and the rule's requirement is checked on
 * (ceil(n/s), f); averaging s honest rows divides their spread (the heterogeneity that
 * lets attacks such as ALIE hide) by about sqrt(s).
 *
 * The permutation must be the same on every member of a robust collective: it comes from
 * the seeded splitmix64 stream of data/prng.h (header-only, no object file, so this
 * module links no more than before), seeded by the spec's seed and a salt the caller
 * derives from what every member shares (core/robust.c). */
#include <stdint.h>

#include "agg/agg.h"
#include "data/prng.h"

uint64_t starling__agg_salt(uint64_t a, uint64_t b, uint64_t c)
{
    return starling__prng_derive(starling__prng_derive(a, b), c);
}

size_t starling__agg_bucket_count(size_t n, size_t s) { return n / s + (n % s != 0); }

/* Fisher-Yates, from the top, as the trainer's data shuffle. */
static void shuffle_rows(const float **rows, size_t n, uint64_t seed)
{
    starling__prng r;
    starling__prng_seed(&r, seed);
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)starling__prng_below(&r, (uint64_t)i + 1);
        const float *tmp = rows[i];
        rows[i] = rows[j];
        rows[j] = tmp;
    }
}

/* out[j] = mean of rows[0..k)[j], summed in double from the first row (so a column of
 * -0 stays -0), divided once, rounded once. The k rows are read side by side: k
 * sequential streams, which the prefetcher follows for the small k of bucketing. */
static void bucket_mean(const float *const *rows, size_t k, size_t d, float *out)
{
    for (size_t j = 0; j < d; j++) {
        double s = (double)rows[0][j];
        for (size_t i = 1; i < k; i++)
            s += (double)rows[i][j];
        out[j] = (float)(s / (double)k);
    }
}

size_t starling__agg_bucket(const float **rows, size_t n, size_t d, size_t s, uint64_t seed,
                            uint64_t salt, float *means)
{
    size_t nb = starling__agg_bucket_count(n, s);
    if (n > 1)
        shuffle_rows(rows, n, starling__prng_derive(seed, salt));
    for (size_t b = 0; b < nb; b++) {
        size_t first = b * s, k = n - first < s ? n - first : s;
        bucket_mean(rows + first, k, d, means + b * d);
    }
    for (size_t b = 0; b < nb; b++)
        rows[b] = means + b * d;
    return nb;
}
