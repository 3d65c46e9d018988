/* Iterative rules: the geometric median by smoothed Weiszfeld (Pillutla et al., "Robust
 * Aggregation for Federated Learning") and centered clipping (Karimireddy et al. 2021).
 *
 * Both start from the coordinate-wise median rather than the mean: from the mean, one row
 * at 1e30 puts the start 1e29 away and Weiszfeld then needs dozens of iterations only to
 * come back (each shrinks the error by a bounded factor), and centered clipping with a
 * fixed radius tau could not come back at all. The median is within the honest range
 * when n > 2f, which both rules require anyway. The iterate is kept in double. */
#include <math.h>

#include "agg/agg.h"
#include "starling.h"
#include "util/alloc.h"

static double dist_to(const float *x, const double *z, size_t d)
{
    double s = 0.0;
    size_t j;
    for (j = 0; j < d; j++) {
        double t = (double)x[j] - z[j];
        s += t * t;
    }
    return sqrt(s);
}

/* Weiszfeld step z' = sum_i w_i x_i / sum_i w_i, w_i = 1 / max(nu, |x_i - z|); stops when
 * the objective g(z) = sum_i |x_i - z| changes by at most tol * g(z'), or after iters. */
int starling__agg_geomed(const float *const *rows, size_t n, size_t d, long iters, double tol,
                         float *out)
{
    double *z = starling__malloc(d * sizeof *z);
    double *w = starling__malloc(n * sizeof *w);
    double g = 0.0, g_new, wsum;
    size_t i, j;
    long t;
    int rc = STARLING_E_NOMEM;

    if (!z || !w)
        goto done;
    rc = starling__agg_median_d(rows, n, d, z);
    if (rc != STARLING_OK)
        goto done;
    for (i = 0; i < n; i++) {
        w[i] = dist_to(rows[i], z, d);
        g += w[i];
    }
    for (t = 0; t < iters; t++) {
        wsum = 0.0;
        for (i = 0; i < n; i++) {
            w[i] = 1.0 / (w[i] > AGG_GEOMED_NU ? w[i] : AGG_GEOMED_NU);
            wsum += w[i];
        }
        for (j = 0; j < d; j++) {
            double s = 0.0;
            for (i = 0; i < n; i++)
                s += w[i] * (double)rows[i][j];
            z[j] = s / wsum;
        }
        g_new = 0.0;
        for (i = 0; i < n; i++) {
            w[i] = dist_to(rows[i], z, d);
            g_new += w[i];
        }
        if (fabs(g - g_new) <= tol * g_new)
            break;
        g = g_new;
    }
    for (j = 0; j < d; j++)
        out[j] = (float)z[j];
    rc = STARLING_OK;
done:
    starling__free(z);
    starling__free(w);
    return rc;
}

/* v <- v + (1/n) sum_i (x_i - v) min(1, tau / |x_i - v|), iters times. Each row moves the
 * centre by at most tau / n per iteration, so f rows, however large, move the output by
 * at most iters * tau * f / n from where the honest rows would put it. */
int starling__agg_cclip(const float *const *rows, size_t n, size_t d, double tau, long iters,
                        float *out)
{
    double *v = starling__malloc(d * sizeof *v);
    double *c = starling__malloc(n * sizeof *c);
    size_t i, j;
    long t;
    int rc = STARLING_E_NOMEM;

    if (!v || !c)
        goto done;
    rc = starling__agg_median_d(rows, n, d, v);
    if (rc != STARLING_OK)
        goto done;
    for (t = 0; t < iters; t++) {
        for (i = 0; i < n; i++) {
            double r = dist_to(rows[i], v, d);
            c[i] = r > tau ? tau / r : 1.0;
        }
        for (j = 0; j < d; j++) {
            double s = 0.0;
            for (i = 0; i < n; i++)
                s += c[i] * ((double)rows[i][j] - v[j]);
            v[j] += s / (double)n;
        }
    }
    for (j = 0; j < d; j++)
        out[j] = (float)v[j];
    rc = STARLING_OK;
done:
    starling__free(v);
    starling__free(c);
    return rc;
}
