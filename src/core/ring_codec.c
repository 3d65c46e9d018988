/* Codecs inside the ring (docs/codecs.md, "In collectives").
 *
 * Dense codecs (casts, int8, int4) change what a piece's bytes are, not the schedule:
 *  - in the reduce-scatter phase a member encodes its partial sum when it sends a piece,
 *    and the receiver adds the decoded piece to its own input in f32;
 *  - the member that completes a segment "seals" it: encodes the final sum once, into the
 *    encoded tensor `engine.enc`, and replaces its own copy by the decoding of those bytes;
 *  - the all-gather phase (and broadcast, and all-gather) then forwards those bytes
 *    unchanged and every member decodes them: all members, the owner included, hold the
 *    decoding of the same bytes, so bit parity holds.
 * Sparse codecs (top-k, random-k) turn an all-reduce into an all-gather of every member's
 * fixed-size blob; the blobs are summed in rank order after the data phase.
 * Error feedback keeps, per tag, what this member's encodings dropped; the working copy
 * `next` becomes the residual only at commit, so a failed call changes nothing. */
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

#include "core/internal.h"
#include "core/ring.h"
#include "kernels/kernels.h"
#include "util/alloc.h"
#include "util/log.h"

static float *f32_at(uint8_t *base, size_t byte_off) { return (float *)(void *)(base + byte_off); }

static size_t byte_at(const ring_op *o, int seg, uint32_t p)
{
    return o->seg_off[seg] + (size_t)p * o->piece;
}

static size_t enc_at(const ring_op *o, int seg, uint32_t p)
{
    return o->enc_off[seg] + (size_t)p * o->enc_piece;
}

static size_t nel_of(const ring_op *o, int seg, uint32_t p)
{
    return starling__ring_piece_len(o, seg, p) / sizeof(float);
}

/* Stochastic rounding wants different bits per member, hop and piece; any value works
 * for parity because every member decodes the bytes actually sent. */
static uint64_t piece_seed(const ring_op *o, uint32_t g, uint32_t p)
{
    uint64_t f[4] = {o->seed, (uint64_t)o->rank, g, p};
    return XXH3_64bits(f, sizeof f);
}

ef_entry *starling__ef_get(engine *e, uint64_t tag, size_t count)
{
    ef_entry *ent = NULL, *grown;
    size_t bytes = (count ? count : 1) * sizeof(float);
    for (int i = 0; i < e->nef; i++)
        if (e->ef[i].tag == tag)
            ent = &e->ef[i];
    if (ent && ent->count == count)
        return ent;
    if (!ent) {
        grown = starling__realloc(e->ef, sizeof *e->ef * (size_t)(e->nef + 1));
        if (!grown)
            return NULL;
        e->ef = grown;
        ent = &e->ef[e->nef++];
        memset(ent, 0, sizeof *ent);
        ent->tag = tag;
    } else {
        /* Same tag, new size: the old residual describes another tensor. */
        SLOG_INFO("error feedback for tag %llu: size %zu -> %zu, residual reset",
                  (unsigned long long)tag, ent->count, count);
    }
    starling__free(ent->resid);
    starling__free(ent->next);
    ent->resid = starling__calloc(1, bytes);
    ent->next = starling__malloc(bytes);
    ent->count = count;
    if (!ent->resid || !ent->next) {
        starling__free(ent->resid);
        starling__free(ent->next);
        ent->resid = ent->next = NULL;
        ent->count = 0;
        return NULL;
    }
    return ent;
}

void starling__ef_reset_all(engine *e)
{
    for (int i = 0; i < e->nef; i++)
        memset(e->ef[i].resid, 0, (e->ef[i].count ? e->ef[i].count : 1) * sizeof(float));
}

static void worker_stop(engine *e);

void starling__codec_engine_free(engine *e)
{
    worker_stop(e);
    for (int i = 0; i < e->nef; i++) {
        starling__free(e->ef[i].resid);
        starling__free(e->ef[i].next);
    }
    starling__free(e->ef);
    e->ef = NULL;
    e->nef = 0;
    starling__free(e->enc);
    e->enc = NULL;
    e->enc_cap = 0;
    for (int s = 0; s < STARLING_MAX_STREAMS; s++) {
        starling__free(e->cbuf[s]);
        starling__free(e->ztx[s]);
        starling__free(e->zrx[s]);
        e->cbuf[s] = e->ztx[s] = e->zrx[s] = NULL;
    }
    starling__zstd_free(e->zstd);
    e->zstd = NULL;
}

/* Encodes x (nel values) into `out` once. err (may be NULL) receives what the encoding
 * dropped, scaled by `err_scale` (an average's owner drops 1/n of each contribution's
 * share, so its residual is counted n times). If `back` is not NULL it receives the
 * decoding of `out`: what every other member will hold. */
static void seal(const ring_op *o, const float *x, size_t nel, uint64_t seed, uint8_t *out,
                 float *err, float err_scale, float *back)
{
    starling__dense_encode(o->codec, x, nel, seed, out, err);
    if (err && err_scale != 1.0f)
        for (size_t i = 0; i < nel; i++)
            err[i] *= err_scale;
    if (back)
        starling__dense_decode(o->codec, out, nel, back);
}

static int dense_layout(starling_comm *c, ring_op *o)
{
    engine *e = &c->eng;
    size_t off = 0;
    o->enc_piece = starling__dense_size(o->codec, o->piece / sizeof(float));
    for (int seg = 0; seg < o->nseg; seg++) {
        size_t len = o->seg_len[seg], full = len / o->piece;
        o->enc_off[seg] = off;
        off += full * o->enc_piece;
        off += starling__dense_size(o->codec, (len - full * o->piece) / sizeof(float));
    }
    return starling__ring_ensure(&e->enc, &e->enc_cap, off ? off : 1);
}

static int sparse_start(starling_comm *c, ring_op *o, const float *x)
{
    engine *e = &c->eng;
    const struct starling_request *r = o->req;
    if (r->sendbuf != r->recvbuf) {
        o->result = r->recvbuf;
    } else {
        if (starling__ring_ensure(&e->scratch, &e->scratch_cap, r->count * sizeof(float) + 1))
            return STARLING_E_NOMEM;
        o->result = (float *)(void *)e->scratch;
    }
    return starling__sparse_encode(o->codec, x, r->count, o->seed,
                                   o->work + o->seg_off[o->rank], o->ef ? o->ef->next : NULL);
}

static int op_prepare(starling_comm *c, ring_op *o)
{
    engine *e = &c->eng;
    const struct starling_request *r = o->req;
    const float *x = r->sendbuf;
    uint64_t f[3] = {e->epoch, o->seq, r->tag};
    int rc;

    /* Equal on every member: random-k draws the same indices everywhere. */
    o->seed = XXH3_64bits(f, sizeof f);
    if (o->codec->ef) {
        size_t nin = r->coll == COLL_REDUCE_SCATTER ? r->count * (size_t)o->n : r->count;
        ef_entry *ent = starling__ef_get(e, r->tag, nin);
        if (!ent)
            return STARLING_E_NOMEM;
        for (size_t i = 0; i < nin; i++)
            ent->next[i] = x[i] + ent->resid[i];
        o->ef = ent;
        o->in = (const uint8_t *)ent->next;
        x = ent->next;
        if (o->n == 1) {
            /* Alone nothing is sent, so nothing is dropped. */
            if (nin)
                memcpy(o->work, ent->next, o->seg_len[0]);
            memset(ent->next, 0, nin * sizeof(float));
            return STARLING_OK;
        }
    }
    if (o->sparse)
        return sparse_start(c, o, x);
    if (!o->dense)
        return STARLING_OK;
    if ((rc = dense_layout(c, o)))
        return rc;
    /* What the schedule sends unchanged from the start is sealed now. */
    if (o->coll == COLL_ALLGATHER || o->coll == COLL_BROADCAST) {
        int seg = o->coll == COLL_ALLGATHER ? o->rank : 0;
        int root = o->coll == COLL_ALLGATHER || o->rank == r->root;
        size_t np = o->seg_len[seg] ? (o->seg_len[seg] + o->piece - 1) / o->piece : 0;
        if (!root)
            return STARLING_OK;
        for (uint32_t p = 0; p < np; p++) {
            size_t at = byte_at(o, seg, p);
            /* A broadcast root's buffer is its input until commit. */
            float *back = o->coll == COLL_ALLGATHER ? f32_at(o->work, at) : NULL;
            const float *src = o->coll == COLL_ALLGATHER ? f32_at(o->work, at)
                                                         : (const float *)(o->in + at);
            seal(o, src, nel_of(o, seg, p), piece_seed(o, 0, p), e->enc + enc_at(o, seg, p),
                 NULL, 1.0f, back);
        }
    }
    return STARLING_OK;
}

static void *worker_main(void *arg)
{
    starling_comm *c = arg;
    codec_worker *w = &c->eng.worker;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        ring_op *o;
        int rc;
        while (!w->job && !w->stop)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->stop)
            break;
        o = w->job;
        pthread_mutex_unlock(&w->mu);
        rc = op_prepare(c, o);
        pthread_mutex_lock(&w->mu);
        w->job = NULL;
        w->rc = rc;
        w->busy = 0;
        pthread_cond_broadcast(&w->cv);
        starling__wake_signal(&c->wake);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

int starling__codec_op_start(starling_comm *c, ring_op *o)
{
    codec_worker *w = &c->eng.worker;
    if (!w->started) {
        if (pthread_mutex_init(&w->mu, NULL) != 0)
            return STARLING_E_OS;
        if (pthread_cond_init(&w->cv, NULL) != 0) {
            pthread_mutex_destroy(&w->mu);
            return STARLING_E_OS;
        }
        w->stop = w->busy = 0;
        w->job = NULL;
        if (pthread_create(&w->thr, NULL, worker_main, c) != 0) {
            pthread_cond_destroy(&w->cv);
            pthread_mutex_destroy(&w->mu);
            return STARLING_E_OS;
        }
        w->started = 1;
    }
    pthread_mutex_lock(&w->mu);
    w->job = o;
    w->busy = 1;
    o->prep = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return STARLING_OK;
}

int starling__codec_prep_poll(starling_comm *c, ring_op *o)
{
    codec_worker *w = &c->eng.worker;
    int rc;
    pthread_mutex_lock(&w->mu);
    if (w->busy) {
        pthread_mutex_unlock(&w->mu);
        return 0;
    }
    rc = w->rc;
    pthread_mutex_unlock(&w->mu);
    o->prep = 0;
    return rc;
}

void starling__codec_prep_wait(starling_comm *c, ring_op *o)
{
    codec_worker *w = &c->eng.worker;
    if (!o->prep)
        return;
    pthread_mutex_lock(&w->mu);
    while (w->busy)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    o->prep = 0;
}

static void worker_stop(engine *e)
{
    codec_worker *w = &e->worker;
    if (!w->started)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thr, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    w->started = 0;
}

void starling__codec_tx_payload(starling_comm *c, ring_op *o, int s, const ring_item *it,
                                const uint8_t **src, size_t *len)
{
    engine *e = &c->eng;
    const ring_step *st = &o->steps[it->g];
    int seg = st->send_seg;
    size_t nel = nel_of(o, seg, it->p), at = byte_at(o, seg, it->p);
    *len = starling__dense_size(o->codec, nel);
    if (!st->recv_reduce) {
        *src = e->enc + enc_at(o, seg, it->p);
        return;
    }
    /* Reduce-scatter phase: this member's partial sum (or its input, on the first hop). */
    starling__dense_encode(o->codec, (const float *)((st->send_from_input ? o->in : o->work) + at),
                           nel, piece_seed(o, it->g, it->p), e->cbuf[s],
                           o->ef ? o->ef->next + at / sizeof(float) : NULL);
    *src = e->cbuf[s];
}

uint8_t *starling__codec_rx_dest(starling_comm *c, ring_op *o, int s, const ring_item *it,
                                 size_t *rawlen)
{
    const ring_step *st = &o->steps[it->g];
    *rawlen = starling__dense_size(o->codec, nel_of(o, st->recv_seg, it->p));
    return st->recv_reduce ? c->eng.tmp[s] : c->eng.enc + enc_at(o, st->recv_seg, it->p);
}

void starling__codec_rx_post(starling_comm *c, ring_op *o, int s, const ring_item *it,
                             uint8_t *dst)
{
    const ring_step *st = &o->steps[it->g];
    int seg = st->recv_seg;
    size_t nel = nel_of(o, seg, it->p), at = byte_at(o, seg, it->p);
    float *w = f32_at(o->work, at);
    (void)s;
    if (!st->recv_reduce) {
        starling__dense_decode(o->codec, dst, nel, w);
        return;
    }
    starling__dense_decode_add(o->codec, dst, nel, (const float *)(o->in + at), w);
    if (st->recv_finish)
        starling__reduce_finish(w, nel, STARLING_F32, o->req->op, o->n);
    if (st->recv_seal)
        seal(o, w, nel, piece_seed(o, it->g, it->p), c->eng.enc + enc_at(o, seg, it->p),
             o->ef ? o->ef->next + at / sizeof(float) : NULL,
             o->req->op == STARLING_AVG ? (float)o->n : 1.0f, w);
}

int starling__codec_data_done(starling_comm *c, ring_op *o, char *why, size_t wl)
{
    const struct starling_request *r = o->req;
    (void)c;
    memset(o->result, 0, r->count * sizeof(float));
    /* Rank order on every member: the same sums in the same order, bit for bit. */
    for (int m = 0; m < o->n; m++) {
        int rc = starling__sparse_accumulate(o->codec, o->work + o->seg_off[m], o->seg_len[m],
                                             r->count, o->seed, o->result);
        if (rc == STARLING_E_NOMEM) {
            snprintf(why, wl, "out of memory decoding the sparse contribution of rank %d", m);
            return rc;
        }
        if (rc) {
            snprintf(why, wl, "the sparse contribution of rank %d is malformed", m);
            return STARLING_E_PROTOCOL;
        }
    }
    starling__reduce_finish(o->result, r->count, STARLING_F32, r->op, o->n);
    return STARLING_OK;
}

void starling__codec_commit(starling_comm *c, ring_op *o)
{
    engine *e = &c->eng;
    const struct starling_request *r = o->req;
    if (o->sparse) {
        if ((void *)o->result != r->recvbuf)
            memcpy(r->recvbuf, o->result, r->count * sizeof(float));
    } else if (r->coll == COLL_ALLREDUCE) {
        if (o->work != r->recvbuf)
            memcpy(r->recvbuf, o->work, r->count * o->esize);
    } else if (r->coll == COLL_REDUCE_SCATTER) {
        memcpy(r->recvbuf, o->work + o->seg_off[o->rank], o->seg_len[o->rank]);
    } else if (r->coll == COLL_BROADCAST && o->dense && o->rank == r->root) {
        size_t np = o->seg_len[0] ? (o->seg_len[0] + o->piece - 1) / o->piece : 0;
        for (uint32_t p = 0; p < np; p++)
            starling__dense_decode(o->codec, e->enc + enc_at(o, 0, p), nel_of(o, 0, p),
                                   f32_at(r->recvbuf, byte_at(o, 0, p)));
    }
    if (o->ef) {
        float *t;
        /* Reduce-scatter keeps its own segment exact: nothing of it was dropped. */
        if (r->coll == COLL_REDUCE_SCATTER && o->n > 1)
            memset(o->ef->next + o->seg_off[o->rank] / sizeof(float), 0, o->seg_len[o->rank]);
        t = o->ef->resid;
        o->ef->resid = o->ef->next;
        o->ef->next = t;
    }
}
