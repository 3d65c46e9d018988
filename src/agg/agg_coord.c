/* The coordinate-wise rules: mean, median, trimmed mean.
 *
 * Median and trimmed mean sort each coordinate's n values. They sort the floats' bit
 * patterns mapped to an unsigned key that orders like the numbers and puts -0 before +0:
 * a comparison of floats would call -0 and +0 equal and leave their order to the input,
 * and then a permutation of the rows could change the sign of a zero in the output.
 * With a total order the sorted column, and so the output, is the same bytes whatever
 * the order of the rows. (The rows are finite here: the caller dropped NaN and Inf.) */
#include <stdint.h>
#include <string.h>

#include "agg/agg.h"
#include "starling.h"
#include "util/alloc.h"

static uint32_t key_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static float float_of_key(uint32_t k)
{
    uint32_t u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* Insertion sort for small n (the common case: tens of peers), heap sort beyond, so the
 * worst case stays O(n log n) without recursion. Keys are totally ordered and equal keys
 * are equal values, so stability does not matter. */
static void sort_keys(uint32_t *k, size_t n)
{
    size_t i, j;
    if (n <= 32) {
        for (i = 1; i < n; i++) {
            uint32_t v = k[i];
            for (j = i; j > 0 && k[j - 1] > v; j--)
                k[j] = k[j - 1];
            k[j] = v;
        }
        return;
    }
    /* heap sort */
    for (i = n / 2; i-- > 0;) {
        size_t r = i;
        for (;;) {
            size_t c = 2 * r + 1;
            uint32_t t;
            if (c >= n)
                break;
            if (c + 1 < n && k[c + 1] > k[c])
                c++;
            if (k[r] >= k[c])
                break;
            t = k[r], k[r] = k[c], k[c] = t;
            r = c;
        }
    }
    for (j = n; j-- > 1;) {
        uint32_t t = k[0];
        size_t r = 0;
        k[0] = k[j], k[j] = t;
        for (;;) {
            size_t c = 2 * r + 1;
            if (c >= j)
                break;
            if (c + 1 < j && k[c + 1] > k[c])
                c++;
            if (k[r] >= k[c])
                break;
            t = k[r], k[r] = k[c], k[c] = t;
            r = c;
        }
    }
}

static void gather_sorted(const float *const *rows, size_t n, size_t j, uint32_t *k)
{
    size_t i;
    for (i = 0; i < n; i++)
        k[i] = key_of(rows[i][j]);
    sort_keys(k, n);
}

/* Even n: (lo + hi) / 2 computed in double from the sorted pair, lo first, so the
 * result does not depend on the order of the rows. */
static double median_of_sorted(const uint32_t *k, size_t n)
{
    if (n % 2)
        return (double)float_of_key(k[n / 2]);
    return ((double)float_of_key(k[n / 2 - 1]) + (double)float_of_key(k[n / 2])) * 0.5;
}

int starling__agg_mean(const float *const *rows, size_t n, size_t d, float *out)
{
    size_t i, j;
    for (j = 0; j < d; j++) {
        double s = 0.0;
        for (i = 0; i < n; i++)
            s += (double)rows[i][j];
        out[j] = (float)(s / (double)n);
    }
    return STARLING_OK;
}

/* The coordinate-wise median into out_f (rounded to float) or, when it is NULL, out_d. */
static int median_into(const float *const *rows, size_t n, size_t d, float *out_f,
                       double *out_d)
{
    uint32_t *k = starling__malloc(n * sizeof *k);
    if (!k)
        return STARLING_E_NOMEM;
    for (size_t j = 0; j < d; j++) {
        double m;
        gather_sorted(rows, n, j, k);
        m = median_of_sorted(k, n);
        if (out_f)
            out_f[j] = (float)m;
        else
            out_d[j] = m;
    }
    starling__free(k);
    return STARLING_OK;
}

int starling__agg_median(const float *const *rows, size_t n, size_t d, float *out)
{
    return median_into(rows, n, d, out, NULL);
}

int starling__agg_median_d(const float *const *rows, size_t n, size_t d, double *out)
{
    return median_into(rows, n, d, NULL, out);
}

/* Sums the kept n - 2f values in ascending order. */
int starling__agg_trimmed(const float *const *rows, size_t n, size_t d, size_t f, float *out)
{
    uint32_t *k = starling__malloc(n * sizeof *k);
    size_t i, j;
    if (!k)
        return STARLING_E_NOMEM;
    for (j = 0; j < d; j++) {
        double s = 0.0;
        gather_sorted(rows, n, j, k);
        for (i = f; i < n - f; i++)
            s += (double)float_of_key(k[i]);
        out[j] = (float)(s / (double)(n - 2 * f));
    }
    starling__free(k);
    return STARLING_OK;
}
