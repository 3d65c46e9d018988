/* Distance-based rules: Krum and Multi-Krum (Blanchard et al. 2017), and nearest-neighbour
 * mixing (Allouah et al. 2023). All three start from the n x n squared distances.
 *
 * Krum's neighbour count is n - f - 2, as in the paper: a Byzantine row may sit among the
 * n - f - 2 nearest of an honest row only by displacing an honest one, and the "- 2"
 * (the row itself and one more) is what the paper's variance bound needs with n > 2f + 2.
 * Rankings sort (value, index) pairs: no two are equal, so the order, and ties going to
 * the lower index, do not depend on the sort routine. */
#include <stdlib.h>
#include <string.h>

#include "agg/agg.h"
#include "starling.h"
#include "util/alloc.h"

/* Coordinates per block: the partial sums of one block for all pairs are accumulated
 * before the next block, so each block of every row is read from cache, not memory. */
#define DIST_BLOCK 2048

int starling__agg_ranked_cmp(const void *pa, const void *pb)
{
    const starling__agg_ranked *a = pa, *b = pb;
    if (a->key != b->key)
        return a->key < b->key ? -1 : 1;
    return a->idx < b->idx ? -1 : (a->idx > b->idx);
}

void starling__agg_sqdist(const float *const *rows, size_t n, size_t d, double *D)
{
    size_t i, k, b, j;
    for (i = 0; i < n * n; i++)
        D[i] = 0.0;
    for (b = 0; b < d; b += DIST_BLOCK) {
        size_t e = d - b < DIST_BLOCK ? d : b + DIST_BLOCK;
        for (i = 0; i < n; i++)
            for (k = i + 1; k < n; k++) {
                const float *x = rows[i], *y = rows[k];
                double s = 0.0;
                for (j = b; j < e; j++) {
                    double t = (double)x[j] - (double)y[j];
                    s += t * t;
                }
                D[i * n + k] += s;
            }
    }
    for (i = 0; i < n; i++)
        for (k = i + 1; k < n; k++)
            D[k * n + i] = D[i * n + k];
}

/* m == 1: Krum (a copy of the best row); m > 1: Multi-Krum, the mean of the m best rows
 * summed best first. */
int starling__agg_krum(const float *const *rows, size_t n, size_t d, size_t f, size_t m, float *out)
{
    size_t nb = n - f - 2, i, k, j, c;
    double *D = starling__malloc(n * n * sizeof *D);
    starling__agg_ranked *r = starling__malloc(n * sizeof *r);
    starling__agg_ranked *score = starling__malloc(n * sizeof *score);
    int rc = STARLING_E_NOMEM;

    if (!D || !r || !score)
        goto done;
    starling__agg_sqdist(rows, n, d, D);
    for (i = 0; i < n; i++) {
        double s = 0.0;
        for (k = 0, c = 0; k < n; k++)
            if (k != i) {
                r[c].key = D[i * n + k];
                r[c].idx = k;
                c++;
            }
        qsort(r, c, sizeof *r, starling__agg_ranked_cmp);
        for (k = 0; k < nb; k++)
            s += r[k].key;
        score[i].key = s;
        score[i].idx = i;
    }
    qsort(score, n, sizeof *score, starling__agg_ranked_cmp);
    if (m == 1) {
        memcpy(out, rows[score[0].idx], d * sizeof *out);
    } else {
        for (j = 0; j < d; j++) {
            double s = 0.0;
            for (k = 0; k < m; k++)
                s += (double)rows[score[k].idx][j];
            out[j] = (float)(s / (double)m);
        }
    }
    rc = STARLING_OK;
done:
    starling__free(D);
    starling__free(r);
    starling__free(score);
    return rc;
}

int starling__agg_nnm(const float *const *rows, size_t n, size_t d, size_t f, float *mixed)
{
    size_t keep = n - f, i, k, j;
    double *D = starling__malloc(n * n * sizeof *D);
    starling__agg_ranked *r = starling__malloc(n * sizeof *r);
    size_t *nbr = starling__malloc(n * keep * sizeof *nbr);
    double *acc = starling__malloc(DIST_BLOCK * sizeof *acc);
    int rc = STARLING_E_NOMEM;

    if (!D || !r || !nbr || !acc)
        goto done;
    starling__agg_sqdist(rows, n, d, D);
    for (i = 0; i < n; i++) {
        /* The row itself first even if another row is at distance 0. */
        for (k = 0; k < n; k++) {
            r[k].key = k == i ? -1.0 : D[i * n + k];
            r[k].idx = k;
        }
        qsort(r, n, sizeof *r, starling__agg_ranked_cmp);
        for (k = 0; k < keep; k++)
            nbr[i * keep + k] = r[k].idx;
    }
    /* Row by row into a block of double sums: the same order of additions per coordinate
     * as a loop over neighbours inside a loop over coordinates, but sequential reads. */
    for (i = 0; i < n; i++) {
        const size_t *nb = nbr + i * keep;
        float *y = mixed + i * d;
        size_t b;
        for (b = 0; b < d; b += DIST_BLOCK) {
            size_t e = d - b < DIST_BLOCK ? d - b : DIST_BLOCK;
            const float *x = rows[nb[0]] + b;
            for (j = 0; j < e; j++)
                acc[j] = (double)x[j];
            for (k = 1; k < keep; k++) {
                x = rows[nb[k]] + b;
                for (j = 0; j < e; j++)
                    acc[j] += (double)x[j];
            }
            for (j = 0; j < e; j++)
                y[b + j] = (float)(acc[j] / (double)keep);
        }
    }
    rc = STARLING_OK;
done:
    starling__free(D);
    starling__free(r);
    starling__free(nbr);
    starling__free(acc);
    return rc;
}
