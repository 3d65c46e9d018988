#include "model/mlp.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <cblas.h>

#include "data/prng.h"
#include "starling.h"
#include "util/alloc.h"
#include "util/log.h"
#include "util/why.h"

#define MAX_BATCH_CAP ((size_t)1 << 20) /* keeps every BLAS dimension within int */

int starling__mlp_create(starling__mlp **out, const size_t *widths, size_t nwidths,
                         size_t batch_cap, char *why, size_t wl)
{
    starling__mlp *m;
    size_t off = 0, act = 0, widest = 0;
    if (!out) {
        starling__why(why, wl, "mlp: NULL out");
        return STARLING_E_INVALID;
    }
    *out = NULL;
    if (!widths || nwidths < 2 || nwidths > STARLING__MLP_MAX_LAYERS + 1) {
        starling__why(why, wl, "mlp: need 2..%d widths, got %zu", STARLING__MLP_MAX_LAYERS + 1, nwidths);
        return STARLING_E_INVALID;
    }
    for (size_t i = 0; i < nwidths; i++) {
        if (widths[i] < 1 || widths[i] > STARLING__MLP_MAX_WIDTH) {
            starling__why(why, wl, "mlp: width %zu of layer %zu is outside 1..%d", widths[i], i,
                    STARLING__MLP_MAX_WIDTH);
            return STARLING_E_INVALID;
        }
    }
    if (widths[nwidths - 1] > 256) {
        starling__why(why, wl, "mlp: %zu classes; labels are bytes, so at most 256", widths[nwidths - 1]);
        return STARLING_E_INVALID;
    }
    if (batch_cap < 1 || batch_cap > MAX_BATCH_CAP) {
        starling__why(why, wl, "mlp: batch_cap %zu is outside 1..%zu", batch_cap, MAX_BATCH_CAP);
        return STARLING_E_INVALID;
    }
    m = starling__calloc(1, sizeof *m);
    if (!m) {
        starling__why(why, wl, "mlp: out of memory");
        return STARLING_E_NOMEM;
    }
    m->nlayers = nwidths - 1;
    m->batch_cap = batch_cap;
    for (size_t i = 0; i < nwidths; i++)
        m->widths[i] = widths[i];
    for (size_t l = 0; l < m->nlayers; l++) {
        starling__mlp_layer *ly = &m->layer[l];
        ly->in = widths[l];
        ly->out = widths[l + 1];
        ly->w_off = off;
        off += ly->in * ly->out;
        ly->b_off = off;
        off += ly->out;
        m->act_off[l + 1] = act;
        act += batch_cap * ly->out;
        if (ly->out > widest)
            widest = ly->out;
    }
    m->nparams = off;
    m->scratch_half = batch_cap * widest;
    m->params = starling__alloc_aligned(off * sizeof(float));
    m->grads = starling__alloc_aligned(off * sizeof(float));
    m->act = starling__alloc_aligned(act * sizeof(float));
    m->scratch = starling__alloc_aligned(2 * m->scratch_half * sizeof(float));
    if (!m->params || !m->grads || !m->act || !m->scratch) {
        starling__mlp_destroy(m);
        starling__why(why, wl, "mlp: out of memory for %zu parameters", off);
        return STARLING_E_NOMEM;
    }
    memset(m->params, 0, off * sizeof(float));
    memset(m->grads, 0, off * sizeof(float));
    *out = m;
    return STARLING_OK;
}

void starling__mlp_destroy(starling__mlp *m)
{
    if (!m)
        return;
    starling__free(m->params);
    starling__free(m->grads);
    starling__free(m->act);
    starling__free(m->scratch);
    starling__free(m);
}

size_t starling__mlp_nparams(const starling__mlp *m) { return m ? m->nparams : 0; }

void starling__mlp_init_params(starling__mlp *m, uint64_t seed)
{
    for (size_t l = 0; l < m->nlayers; l++) {
        const starling__mlp_layer *ly = &m->layer[l];
        starling__prng r;
        /* He: Var(w) = 2 / fan_in keeps activations' scale through ReLU layers; a
         * uniform on [-a, a] has variance a^2 / 3, hence a = sqrt(6 / fan_in). The
         * logits layer has no ReLU after it: gain 1, a = sqrt(3 / fan_in). */
        double gain2 = l + 1 < m->nlayers ? 2.0 : 1.0;
        double bound = sqrt(3.0 * gain2 / (double)ly->in);
        float *w = m->params + ly->w_off;
        starling__prng_seed(&r, starling__prng_derive(seed, l));
        for (size_t i = 0; i < ly->in * ly->out; i++)
            w[i] = (float)((2.0 * starling__prng_uniform(&r) - 1.0) * bound);
        memset(m->params + ly->b_off, 0, ly->out * sizeof(float));
    }
}

/* Forward through every layer: leaves h_1..h_{L-1} and the logits z_L in m->act. */
static void forward_layers(starling__mlp *m, const float *x, size_t batch)
{
    const int B = (int)batch;
    for (size_t l = 0; l < m->nlayers; l++) {
        const starling__mlp_layer *ly = &m->layer[l];
        const float *in = l == 0 ? x : m->act + m->act_off[l];
        float *out = m->act + m->act_off[l + 1];
        const float *w = m->params + ly->w_off, *b = m->params + ly->b_off;
        /* z = b (broadcast), then z += in (B x in) . W^T (in x out) */
        for (size_t i = 0; i < batch; i++)
            memcpy(out + i * ly->out, b, ly->out * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, (int)ly->out, (int)ly->in, 1.0f, in,
                    (int)ly->in, w, (int)ly->in, 1.0f, out, (int)ly->out);
        if (l + 1 < m->nlayers) {
            for (size_t k = 0; k < batch * ly->out; k++)
                out[k] = out[k] > 0.0f ? out[k] : 0.0f;
        }
    }
}

/* Turns the logits rows into probabilities in place; returns the summed cross-entropy
 * of the labels y (if given) and writes the argmax (if pred). Stable: the row maximum
 * is subtracted before exp, and the loss is taken as logsumexp - z_y, never log(p). */
static double softmax_rows(float *z, size_t batch, size_t classes, const uint8_t *y, uint8_t *pred)
{
    double loss = 0.0;
    for (size_t i = 0; i < batch; i++) {
        float *row = z + i * classes;
        size_t arg = 0;
        float mx = row[0];
        for (size_t k = 1; k < classes; k++) {
            if (row[k] > mx) {
                mx = row[k];
                arg = k;
            }
        }
        double sum = 0.0;
        for (size_t k = 0; k < classes; k++)
            sum += exp((double)(row[k] - mx));
        if (y)
            loss += (double)mx + log(sum) - (double)row[y[i]];
        for (size_t k = 0; k < classes; k++)
            row[k] = (float)(exp((double)(row[k] - mx)) / sum);
        if (pred)
            pred[i] = (uint8_t)arg;
    }
    return loss;
}

static int labels_ok(const uint8_t *y, size_t batch, size_t classes)
{
    for (size_t i = 0; i < batch; i++)
        if (y[i] >= classes)
            return 0;
    return 1;
}

int starling__mlp_forward(starling__mlp *m, const float *x, size_t batch, const uint8_t *y,
                          double *loss_sum, uint8_t *pred, const float **probs)
{
    const size_t L = m ? m->nlayers : 0, classes = m ? m->widths[L] : 0;
    if (!m || !x || batch == 0 || batch > m->batch_cap)
        return STARLING_E_INVALID;
    if (y && !labels_ok(y, batch, classes))
        return STARLING_E_INVALID;
    forward_layers(m, x, batch);
    double loss = softmax_rows(m->act + m->act_off[L], batch, classes, y, pred);
    if (loss_sum)
        *loss_sum = loss;
    if (probs)
        *probs = m->act + m->act_off[L];
    return STARLING_OK;
}

int starling__mlp_forward_backward(starling__mlp *m, const float *x, const uint8_t *y, size_t batch,
                                   float *loss)
{
    const size_t L = m ? m->nlayers : 0, classes = m ? m->widths[L] : 0;
    const int B = (int)batch;
    if (!m || !x || !y || batch == 0 || batch > m->batch_cap || !labels_ok(y, batch, classes))
        return STARLING_E_INVALID;
    forward_layers(m, x, batch);
    float *p = m->act + m->act_off[L];
    double loss_sum = softmax_rows(p, batch, classes, y, NULL);
    if (loss)
        *loss = (float)(loss_sum / (double)batch);

    /* dZ_L = (p - onehot(y)) / B, in the first scratch buffer. */
    float *dz = m->scratch, *dh = m->scratch + m->scratch_half;
    const float inv_b = 1.0f / (float)batch;
    for (size_t i = 0; i < batch; i++) {
        for (size_t k = 0; k < classes; k++)
            dz[i * classes + k] = p[i * classes + k] * inv_b;
        dz[i * classes + y[i]] -= inv_b;
    }
    for (size_t l = L; l-- > 0;) {
        const starling__mlp_layer *ly = &m->layer[l];
        const float *hin = l == 0 ? x : m->act + m->act_off[l];
        const int in = (int)ly->in, out = (int)ly->out;
        float *gw = m->grads + ly->w_off, *gb = m->grads + ly->b_off;
        /* dW (out x in) = dZ^T (out x B) . h_in (B x in) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, B, 1.0f, dz, out, hin, in,
                    0.0f, gw, in);
        for (size_t k = 0; k < ly->out; k++)
            gb[k] = 0.0f;
        for (size_t i = 0; i < batch; i++)
            for (size_t k = 0; k < ly->out; k++)
                gb[k] += dz[i * ly->out + k];
        if (l == 0)
            break; /* no gradient for the input */
        /* dH (B x in) = dZ (B x out) . W (out x in); then through the ReLU of h_in. */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, in, out, 1.0f, dz, out,
                    m->params + ly->w_off, in, 0.0f, dh, in);
        for (size_t k = 0; k < batch * ly->in; k++)
            dh[k] = hin[k] > 0.0f ? dh[k] : 0.0f;
        float *t = dz;
        dz = dh;
        dh = t;
    }
    return STARLING_OK;
}

int starling__mlp_evaluate(starling__mlp *m, const starling__dataset *ds, size_t limit,
                           float *x_scratch, uint8_t *y_scratch, double *accuracy,
                           double *mean_loss)
{
    size_t n, correct = 0;
    double loss = 0.0;
    if (!m || !ds || !x_scratch || !y_scratch || ds->n == 0 || ds->d != m->widths[0] ||
        ds->classes != m->widths[m->nlayers])
        return STARLING_E_INVALID;
    n = limit == 0 || limit > ds->n ? ds->n : limit;
    for (size_t first = 0; first < n; first += m->batch_cap) {
        size_t b = n - first < m->batch_cap ? n - first : m->batch_cap;
        const float *p;
        double ls = 0.0;
        starling__dataset_rows(ds, first, b, x_scratch, y_scratch);
        int rc = starling__mlp_forward(m, x_scratch, b, y_scratch, &ls, NULL, &p);
        if (rc != STARLING_OK)
            return rc;
        loss += ls;
        /* Argmax of the probabilities (ties: lowest index). */
        for (size_t i = 0; i < b; i++) {
            const float *row = p + i * ds->classes;
            size_t arg = 0;
            for (size_t k = 1; k < ds->classes; k++)
                if (row[k] > row[arg])
                    arg = k;
            correct += arg == y_scratch[i];
        }
    }
    if (accuracy)
        *accuracy = (double)correct / (double)n;
    if (mean_loss)
        *mean_loss = loss / (double)n;
    return STARLING_OK;
}
