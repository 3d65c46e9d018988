/* A Flag-Aggregator-style subspace rule (after Almeida et al., "Flag Aggregator"): fit a
 * rank-r subspace to the rows' directions by iteratively reweighted least squares, so
 * that rows far from the subspace the majority shares lose their say, then average the
 * projections of the rows that fit best. What is implemented, exactly (docs/aggregation.md):
 *
 *   xh_i = x_i / |x_i|                         (zero rows: xh_i = 0, residual 1)
 *   w_i = 1; repeat iters times:
 *     U = top-r eigenvectors of sum_i w_i xh_i xh_i^T
 *     rho_i = sqrt(max(0, 1 - |U^T xh_i|^2))   (distance of the direction to the subspace)
 *     w_i = 1 / max(nu, rho_i)                 (IRLS for min sum_i rho_i)
 *   S = the n - f rows with the smallest rho (ties to the lower index)
 *   out = (1/|S|) sum_{i in S} U U^T (c_i x_i),  c_i = min(1, median_k |x_k| / |x_i|)
 *
 * d is large and n small, so nothing of size d x d or d x r is formed: with the Gram
 * matrix K (n x n, one pass over the rows) the eigenvectors of the d x d matrix come from
 * those of the n x n matrix A = W^1/2 Kh W^1/2 (Kh: K of the unit rows): if A a = l a,
 * then u = Xh^T W^1/2 a / sqrt(l) is a unit eigenvector with the same l. The output is
 * then a combination of the rows, written in one final pass. The n x n eigenproblem is
 * solved by cyclic Jacobi (deterministic, accurate for symmetric matrices).
 *
 * Clipping to the median norm is ours, not the paper's: directions alone cannot tell a
 * row at 1e30 along the honest subspace from an honest one, and with it |out| <= the
 * median norm, which n > 2f bounds by an honest row's norm. */
#include <math.h>
#include <stdlib.h>

#include "agg/agg.h"
#include "starling.h"
#include "util/alloc.h"

#define FLAG_NU 1e-6
#define JACOBI_SWEEPS 60
#define GRAM_BLOCK 2048

static void gram(const float *const *rows, size_t n, size_t d, double *K)
{
    size_t i, k, b, j;
    for (i = 0; i < n * n; i++)
        K[i] = 0.0;
    for (b = 0; b < d; b += GRAM_BLOCK) {
        size_t e = d - b < GRAM_BLOCK ? d : b + GRAM_BLOCK;
        for (i = 0; i < n; i++)
            for (k = i; k < n; k++) {
                double s = 0.0;
                for (j = b; j < e; j++)
                    s += (double)rows[i][j] * (double)rows[k][j];
                K[i * n + k] += s;
            }
    }
    for (i = 0; i < n; i++)
        for (k = i + 1; k < n; k++)
            K[k * n + i] = K[i * n + k];
}

/* Eigen-decomposition of the symmetric A (n x n, destroyed: its diagonal ends as the
 * eigenvalues); V receives the eigenvectors as columns. */
static void jacobi(double *A, double *V, size_t n)
{
    size_t p, q, k;
    int sweep;
    for (p = 0; p < n; p++)
        for (q = 0; q < n; q++)
            V[p * n + q] = p == q ? 1.0 : 0.0;
    for (sweep = 0; sweep < JACOBI_SWEEPS; sweep++) {
        double off = 0.0, all = 0.0;
        for (p = 0; p < n; p++)
            for (q = 0; q < n; q++) {
                all += A[p * n + q] * A[p * n + q];
                if (p != q)
                    off += A[p * n + q] * A[p * n + q];
            }
        if (off <= 1e-30 * all)
            break;
        for (p = 0; p < n; p++)
            for (q = p + 1; q < n; q++) {
                double apq = A[p * n + q], theta, t, c, s;
                if (apq == 0.0)
                    continue;
                theta = (A[q * n + q] - A[p * n + p]) / (2.0 * apq);
                t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                c = 1.0 / sqrt(t * t + 1.0);
                s = t * c;
                for (k = 0; k < n; k++) {
                    double akp = A[k * n + p], akq = A[k * n + q];
                    A[k * n + p] = c * akp - s * akq;
                    A[k * n + q] = s * akp + c * akq;
                }
                for (k = 0; k < n; k++) {
                    double apk = A[p * n + k], aqk = A[q * n + k];
                    A[p * n + k] = c * apk - s * aqk;
                    A[q * n + k] = s * apk + c * aqk;
                }
                for (k = 0; k < n; k++) {
                    double vkp = V[k * n + p], vkq = V[k * n + q];
                    V[k * n + p] = c * vkp - s * vkq;
                    V[k * n + q] = s * vkp + c * vkq;
                }
            }
    }
}

int starling__agg_flag(const float *const *rows, size_t n, size_t d, size_t f, long rank,
                       long iters, float *out)
{
    size_t r = (size_t)rank, i, k, j, used = 0, nn = n * n;
    double *buf = starling__malloc((4 * nn + 8 * n) * sizeof *buf);
    starling__agg_ranked *rk = starling__malloc(n * sizeof *rk);
    double *K, *A, *V, *P, *norm, *w, *sw, *rho, *lam, *beta, *coef, *tmp;
    size_t *top = starling__malloc(n * sizeof *top);
    double med, trace = 0.0;
    long t;
    int rc = STARLING_E_NOMEM;

    if (!buf || !rk || !top)
        goto done;
    K = buf, A = K + nn, V = A + nn, P = V + nn; /* P: n x r projections <xh_i, u_k> */
    norm = P + nn, w = norm + n, sw = w + n, rho = sw + n, lam = rho + n, beta = lam + n;
    coef = beta + n, tmp = coef + n;

    gram(rows, n, d, K);
    for (i = 0; i < n; i++)
        norm[i] = sqrt(K[i * n + i]);
    for (i = 0; i < n; i++)
        for (k = 0; k < n; k++)
            K[i * n + k] = norm[i] > 0 && norm[k] > 0 ? K[i * n + k] / (norm[i] * norm[k]) : 0.0;
    for (i = 0; i < n; i++)
        w[i] = 1.0;

    for (t = 0; t < iters; t++) {
        for (i = 0; i < n; i++)
            sw[i] = sqrt(w[i]);
        for (i = 0; i < n; i++)
            for (k = 0; k < n; k++)
                A[i * n + k] = sw[i] * K[i * n + k] * sw[k];
        jacobi(A, V, n);
        trace = 0.0;
        for (i = 0; i < n; i++) {
            rk[i].key = -A[i * n + i]; /* largest eigenvalue first, ties to the lower index */
            rk[i].idx = i;
            trace += fabs(A[i * n + i]);
        }
        qsort(rk, n, sizeof *rk, starling__agg_ranked_cmp);
        /* Components with a negligible eigenvalue are numerical noise, not directions. */
        used = 0;
        for (k = 0; k < r && k < n; k++) {
            if (-rk[k].key <= 1e-12 * trace)
                break;
            top[used] = rk[k].idx;
            lam[used] = -rk[k].key;
            used++;
        }
        /* P[i][k] = (Kh W^1/2 a_k)_i / sqrt(l_k) */
        for (k = 0; k < used; k++) {
            for (j = 0; j < n; j++)
                tmp[j] = sw[j] * V[j * n + top[k]];
            for (i = 0; i < n; i++) {
                double s = 0.0;
                for (j = 0; j < n; j++)
                    s += K[i * n + j] * tmp[j];
                P[i * n + k] = s / sqrt(lam[k]);
            }
        }
        for (i = 0; i < n; i++) {
            double p2 = 0.0;
            for (k = 0; k < used; k++)
                p2 += P[i * n + k] * P[i * n + k];
            rho[i] = norm[i] > 0 ? sqrt(p2 < 1.0 ? 1.0 - p2 : 0.0) : 1.0;
        }
        if (t + 1 < iters)
            for (i = 0; i < n; i++)
                w[i] = 1.0 / (rho[i] > FLAG_NU ? rho[i] : FLAG_NU);
    }

    /* The median norm, even n: the mean of the middle two. */
    for (i = 0; i < n; i++) {
        rk[i].key = norm[i];
        rk[i].idx = i;
    }
    qsort(rk, n, sizeof *rk, starling__agg_ranked_cmp);
    med = n % 2 ? rk[n / 2].key : (rk[n / 2 - 1].key + rk[n / 2].key) * 0.5;

    /* beta_k = (1/|S|) sum_{i in S} c_i |x_i| <xh_i, u_k>, S by rho then index. */
    for (i = 0; i < n; i++) {
        rk[i].key = rho[i];
        rk[i].idx = i;
    }
    qsort(rk, n, sizeof *rk, starling__agg_ranked_cmp);
    for (k = 0; k < used; k++) {
        double s = 0.0;
        for (j = 0; j < n - f; j++) {
            size_t ix = rk[j].idx;
            double scaled = norm[ix] > med ? med : norm[ix];
            s += scaled * P[ix * n + k];
        }
        beta[k] = s / (double)(n - f);
    }
    /* out = sum_k beta_k u_k = sum_j coef_j x_j, coef_j = sum_k beta_k sw_j a_kj /
     * (sqrt(l_k) |x_j|). */
    for (j = 0; j < n; j++) {
        double s = 0.0;
        for (k = 0; k < used; k++)
            s += beta[k] * sw[j] * V[j * n + top[k]] / sqrt(lam[k]);
        coef[j] = norm[j] > 0 ? s / norm[j] : 0.0;
    }
    for (j = 0; j < d; j++) {
        double s = 0.0;
        for (i = 0; i < n; i++)
            s += coef[i] * (double)rows[i][j];
        out[j] = (float)s;
    }
    rc = STARLING_OK;
done:
    starling__free(buf);
    starling__free(rk);
    starling__free(top);
    return rc;
}
