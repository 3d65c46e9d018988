/* Ring collectives as a non-blocking state machine on the engine thread.
 *
 * A collective is a list of steps; in each step this member sends one segment to its
 * right neighbour and receives one from its left. Segments are cut into pieces of at
 * most chunk_bytes, and a piece is sent as soon as the piece it depends on (the same
 * piece of the previous step, or of this step for the broadcast chain) has arrived,
 * so reduction of one piece overlaps the transfer of the next. Pieces are handed out in
 * order to whichever of the link's streams has room (a stream carries one piece at a
 * time), so a stream that TCP serves more slowly carries fewer: the call is not held back
 * by its slowest stream's fixed share. The receiver tells the piece by its header.
 *
 * Results build up in `work` (the caller's recvbuf when that is not also the input, else
 * a scratch buffer) and reach the caller only at commit, after the DONE barrier (n-1
 * tokens around the ring) has told this member that every member finished its data
 * phase. That is what lets a failure abort the op uniformly (see engine.c). */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <xxhash.h>

#include "core/internal.h"
#include "core/ring.h"
#include "kernels/kernels.h"
#include "platform/net.h"
#include "util/alloc.h"
#include "util/log.h"

static size_t pieces_of(const ring_op *o, int seg)
{
    size_t len = o->seg_len[seg];
    return len == 0 ? 1 : (len + o->piece - 1) / o->piece;
}

size_t starling__ring_piece_len(const ring_op *o, int seg, uint32_t p)
{
    size_t off = (size_t)p * o->piece, len = o->seg_len[seg];
    return off >= len ? 0 : (len - off < o->piece ? len - off : o->piece);
}

static uint64_t op_desc(const struct starling_request *r, int n)
{
    uint64_t f[9];
    f[0] = (uint64_t)r->coll;
    f[1] = (uint64_t)r->count;
    f[2] = (uint64_t)r->dtype;
    f[3] = (uint64_t)r->op;
    f[4] = (uint64_t)(int64_t)r->root;
    f[5] = r->tag;
    f[6] = (uint64_t)n;
    f[7] = r->vcounts ? XXH3_64bits(r->vcounts, sizeof(size_t) * (size_t)r->vn) : 0;
    f[8] = 0;
    if (r->has_codec) {
        char spec[STARLING_CODEC_SPEC_MAX];
        starling__codec_format(&r->codec, spec, sizeof spec);
        f[8] = XXH3_64bits(spec, strlen(spec));
    }
    /* Uncompressed calls hash as they did before codecs existed. */
    return XXH3_64bits(f, r->has_codec ? sizeof f : sizeof f - sizeof f[8]);
}

static int mod(int a, int n) { return ((a % n) + n) % n; }

/* Fills steps[] for the collective; see the comment at the top for the shape. */
static void plan_steps(ring_op *o, const struct starling_request *r)
{
    int n = o->n, rank = o->rank;
    if (o->coll == COLL_ALLREDUCE || o->coll == COLL_REDUCE_SCATTER) {
        /* Reduce-scatter leaves segment rank+1+shift fully reduced here. */
        int shift = o->coll == COLL_REDUCE_SCATTER ? -1 : 0;
        for (int g = 0; g < n - 1; g++) {
            ring_step *s = &o->steps[o->nsteps++];
            s->send_seg = mod(rank - g + shift, n);
            s->recv_seg = mod(rank - g - 1 + shift, n);
            s->send_dep = g - 1;
            s->send_from_input = g == 0;
            s->recv_reduce = 1;
            s->recv_finish = g == n - 2 && r->op == STARLING_AVG;
            s->recv_seal = g == n - 2 && o->coll == COLL_ALLREDUCE;
        }
    }
    if (o->coll == COLL_ALLREDUCE || o->coll == COLL_ALLGATHER || o->coll == COLL_ALLGATHERV) {
        /* All-gather starting from the segment this member holds complete. */
        int own = o->coll == COLL_ALLREDUCE ? rank + 1 : rank;
        for (int s = 0; s < n - 1; s++) {
            ring_step *st = &o->steps[o->nsteps];
            st->send_seg = mod(own - s, n);
            st->recv_seg = mod(own - s - 1, n);
            st->send_dep = o->nsteps - 1;
            st->send_from_input = 0;
            st->recv_reduce = 0;
            st->recv_finish = 0;
            st->recv_seal = 0;
            o->nsteps++;
        }
    }
    if (o->coll == COLL_BROADCAST) {
        int d = mod(rank - r->root, n);
        ring_step *s = &o->steps[o->nsteps++];
        s->send_seg = d < n - 1 ? 0 : -1;
        s->recv_seg = d > 0 ? 0 : -1;
        s->send_dep = d > 0 ? 0 : -1;
        s->send_from_input = d == 0;
        s->recv_reduce = 0;
        s->recv_finish = 0;
        s->recv_seal = 0;
    }
}

static void plan_segments(ring_op *o)
{
    size_t base, rem, off = 0;
    switch (o->coll) {
    case COLL_ALLREDUCE:
        base = o->count / (size_t)o->n;
        rem = o->count % (size_t)o->n;
        for (int i = 0; i < o->n; i++) {
            o->seg_off[i] = off;
            o->seg_len[i] = (base + ((size_t)i < rem)) * o->esize;
            off += o->seg_len[i];
        }
        break;
    case COLL_REDUCE_SCATTER:
    case COLL_ALLGATHER:
        for (int i = 0; i < o->n; i++) {
            o->seg_off[i] = (size_t)i * o->count * o->esize;
            o->seg_len[i] = o->count * o->esize;
        }
        break;
    case COLL_ALLGATHERV:
        for (int i = 0; i < o->n; i++) {
            o->seg_off[i] = off;
            o->seg_len[i] = o->req->vcounts[i];
            off += o->req->vcounts[i];
        }
        break;
    case COLL_BROADCAST:
        o->seg_off[0] = 0;
        o->seg_len[0] = o->count * o->esize;
        break;
    }
}

int starling__ring_ensure(uint8_t **buf, size_t *cap, size_t need)
{
    uint8_t *nb;
    if (*cap >= need)
        return STARLING_OK;
    nb = starling__alloc_aligned(need);
    if (!nb)
        return STARLING_E_NOMEM;
    starling__free(*buf);
    *buf = nb;
    *cap = need;
    return STARLING_OK;
}

static size_t total_bytes(const ring_op *o)
{
    size_t t = 0;
    for (int i = 0; i < o->nseg; i++)
        t += o->seg_len[i];
    return t;
}

/* Where results accumulate. The caller's buffer is used directly whenever writing it
 * early cannot destroy an input the caller must get back on failure. */
static int choose_work(starling_comm *c, ring_op *o, const struct starling_request *r)
{
    engine *e = &c->eng;
    size_t total = total_bytes(o);
    if (o->gather) {
        if (starling__ring_ensure(&e->scratch, &e->scratch_cap, total ? total : 1))
            return STARLING_E_NOMEM;
        o->work = e->scratch;
        return STARLING_OK;
    }
    if (o->sparse) {
        /* The ring gathers every member's blob; the sum is built at the end. */
        if (starling__ring_ensure(&e->enc, &e->enc_cap, total))
            return STARLING_E_NOMEM;
        o->work = e->enc;
        return STARLING_OK;
    }
    switch (o->coll) {
    case COLL_ALLREDUCE:
        if (r->sendbuf != r->recvbuf) {
            o->work = r->recvbuf;
            return STARLING_OK;
        }
        break;
    case COLL_ALLGATHER:
    case COLL_ALLGATHERV:
    case COLL_BROADCAST: o->work = r->recvbuf; return STARLING_OK;
    case COLL_REDUCE_SCATTER: break;
    }
    if (starling__ring_ensure(&e->scratch, &e->scratch_cap, total ? total : 1))
        return STARLING_E_NOMEM;
    o->work = e->scratch;
    return STARLING_OK;
}

void starling__ring_free(starling_comm *c)
{
    ring_op *o = c->eng.op;
    if (!o)
        return;
    starling__codec_prep_wait(c, o);
    starling__free(o->seg_off);
    starling__free(o->steps);
    starling__free(o->send_items);
    starling__free(o->recv_base);
    starling__free(o->recv_done);
    starling__free(o);
    c->eng.op = NULL;
}

static int build_items(ring_op *o)
{
    size_t ns = 0, nr = 0;
    for (int g = 0; g < o->nsteps; g++) {
        if (o->steps[g].send_seg >= 0)
            ns += pieces_of(o, o->steps[g].send_seg);
        if (o->steps[g].recv_seg >= 0)
            nr += pieces_of(o, o->steps[g].recv_seg);
    }
    o->send_items = starling__malloc(sizeof(ring_item) * (ns + nr + 1));
    o->recv_base = starling__malloc(sizeof(size_t) * (size_t)(o->nsteps + 1));
    o->recv_done = starling__calloc(nr + 1, 1);
    if (!o->send_items || !o->recv_base || !o->recv_done)
        return STARLING_E_NOMEM;
    o->recv_items = o->send_items + ns;
    ns = nr = 0;
    for (int g = 0; g < o->nsteps; g++) {
        o->recv_base[g] = nr;
        if (o->steps[g].send_seg >= 0)
            for (size_t p = 0; p < pieces_of(o, o->steps[g].send_seg); p++)
                o->send_items[ns++] = (ring_item){(uint32_t)g, (uint32_t)p};
        if (o->steps[g].recv_seg >= 0)
            for (size_t p = 0; p < pieces_of(o, o->steps[g].recv_seg); p++)
                o->recv_items[nr++] = (ring_item){(uint32_t)g, (uint32_t)p};
    }
    o->nsend = o->send_left = ns;
    o->nrecv = o->recv_left = nr;
    return STARLING_OK;
}

/* Per-stream buffers of tmp_cap bytes, kept across ops; all are dropped when a larger
 * piece size needs a larger capacity. */
static int stream_bufs(engine *e, uint8_t **bufs, int n)
{
    for (int s = 0; s < n; s++)
        if (!bufs[s] && !(bufs[s] = starling__alloc_aligned(e->tmp_cap)))
            return STARLING_E_NOMEM;
    return STARLING_OK;
}

static int ensure_stream_bufs(engine *e, const ring_op *o)
{
    uint8_t **all[] = {e->tmp, e->cbuf, e->ztx, e->zrx, e->stx};
    if (o->piece > e->tmp_cap) {
        for (size_t a = 0; a < sizeof all / sizeof all[0]; a++)
            for (int s = 0; s < STARLING_MAX_STREAMS; s++) {
                starling__free(all[a][s]);
                all[a][s] = NULL;
            }
        e->tmp_cap = o->piece;
    }
    if (stream_bufs(e, e->tmp, o->nsin))
        return STARLING_E_NOMEM;
    for (int s = 0; s < o->nsout; s++) /* a stream over shared memory seals nothing */
        if (starling__seal_tag(&e->rseal[s])) {
            if (stream_bufs(e, e->stx, o->nsout))
                return STARLING_E_NOMEM;
            break;
        }
    if (o->dense && stream_bufs(e, e->cbuf, o->nsout))
        return STARLING_E_NOMEM;
    if (o->zlevel) {
        if (stream_bufs(e, e->ztx, o->nsout) || stream_bufs(e, e->zrx, o->nsin))
            return STARLING_E_NOMEM;
        if (!e->zstd && !(e->zstd = starling__zstd_new()))
            return STARLING_E_NOMEM;
    }
    return STARLING_OK;
}

int starling__ring_start(starling_comm *c, struct starling_request *r)
{
    engine *e = &c->eng;
    ring_op *o;
    int rc;

    o = starling__calloc(1, sizeof *o);
    if (!o)
        return STARLING_E_NOMEM;
    e->op = o;
    o->req = r;
    o->seq = e->seq;
    o->n = e->n;
    o->rank = e->rank;
    o->coll = r->coll;
    o->count = r->count;
    o->esize = starling_dtype_size(r->dtype);
    o->piece = c->cfg.chunk_bytes / 8 * 8;
    o->desc = op_desc(r, e->n);
    if (r->has_codec) {
        o->codec = &r->codec;
        o->zlevel = e->n > 1 ? r->codec.zstd_level : 0;
        o->dense = e->n > 1 && starling__codec_is_dense(&r->codec);
        o->sparse = e->n > 1 && starling__codec_is_sparse(&r->codec);
        if (o->sparse) {
            /* A sparse all-reduce is an all-gather of every member's fixed-size blob. */
            o->coll = COLL_ALLGATHER;
            o->count = starling__sparse_size(&r->codec, r->count);
            o->esize = 1;
        }
    }
    if (o->coll == COLL_ALLREDUCE && !r->has_codec && e->n > 1 &&
        (size_t)e->n * r->count * o->esize <= STARLING_GATHER_MAX) {
        /* Small: the ring's 2(n-1) dependent steps become the n-1 of an all-gather of
         * every member's input, which each member then folds in rank order (the same
         * sums in the same order everywhere: bit parity). More bytes, fewer hops. */
        o->gather = 1;
        o->coll = COLL_ALLGATHER;
    }
    o->nseg = o->coll == COLL_BROADCAST ? 1 : e->n;
    o->seg_off = starling__malloc(sizeof(size_t) * 3 * (size_t)o->nseg);
    o->steps = starling__calloc((size_t)(2 * e->n), sizeof(ring_step));
    if (!o->seg_off || !o->steps)
        return STARLING_E_NOMEM;
    o->seg_len = o->seg_off + o->nseg;
    o->enc_off = o->seg_len + o->nseg;
    o->in = r->sendbuf;
    plan_segments(o);
    if ((rc = choose_work(c, o, r)))
        return rc;
    if ((o->coll == COLL_ALLGATHER || o->coll == COLL_ALLGATHERV) && !o->sparse) {
        uint8_t *own = o->work + o->seg_off[o->rank];
        if (own != (const uint8_t *)r->sendbuf && o->seg_len[o->rank])
            memmove(own, r->sendbuf, o->seg_len[o->rank]);
    }
    if (o->coll == COLL_BROADCAST)
        o->in = r->recvbuf;
    if (e->n > 1) {
        plan_steps(o, r);
        if ((rc = build_items(o)))
            return rc;
    } else if (o->coll == COLL_ALLREDUCE || o->coll == COLL_REDUCE_SCATTER) {
        /* Alone: the result is the input (avg over one member is the identity). */
        if (o->work != r->sendbuf && o->seg_len[0])
            memmove(o->work, r->sendbuf, o->seg_len[0]);
    }
    o->nsout = e->nright;
    o->nsin = e->nleft;
    if (e->n > 1 && (rc = ensure_stream_bufs(e, o)))
        return rc;
    if (o->codec)
        return starling__codec_op_start(c, o);
    return STARLING_OK;
}

enum { RECV_NONE = 0, RECV_BUSY = 1, RECV_DONE = 2 };

/* Stream s of the right link: over its socket, or (a neighbour on this host) its
 * shared-memory ring. >0 bytes moved, 0 if it would block, <0 a dead or garbled link.
 * sendmsg, not writev: MSG_NOSIGNAL keeps a dead neighbour from raising SIGPIPE in the
 * application's process. */
static ssize_t link_send(engine *e, int s, const struct iovec *iov, int niov)
{
    struct msghdr mh;
    ssize_t r;
    if (e->rshm[s])
        return starling__shm_write(e->rshm[s], e->right[s], iov, niov);
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = (struct iovec *)iov;
    mh.msg_iovlen = (size_t)niov;
    do {
        r = sendmsg(e->right[s], &mh, MSG_NOSIGNAL);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : STARLING_E_PEER_LOST;
    return r;
}

/* Stream s of the left link, likewise. */
static int rx_read(engine *e, int s, void *dst, size_t n, size_t *got)
{
    ssize_t r = e->lshm[s] ? starling__shm_read(e->lshm[s], e->left[s], dst, n)
                           : starling__sock_recv(e->left[s], dst, n);
    if (r < 0)
        return r == STARLING_E_PROTOCOL ? STARLING_E_PROTOCOL : STARLING_E_PEER_LOST;
    *got = (size_t)r;
    return STARLING_OK;
}

/* What to poll for when stream s of a link would block: readable for a ring (a doorbell
 * or the end of the connection), else the socket's own readiness. */
static short link_events(const engine *e, int s, int out)
{
    return out && !e->rshm[s] ? POLLOUT : POLLIN;
}

static int item_ready(const ring_op *o, const ring_item *it)
{
    const ring_step *s = &o->steps[it->g];
    if (s->send_dep < 0)
        return 1;
    return o->recv_done[o->recv_base[s->send_dep] + it->p] == RECV_DONE;
}

static void encode_hdr(const ring_op *o, uint8_t type, uint32_t step, uint32_t piece,
                       uint32_t nbytes, uint8_t flags, uint8_t *out)
{
    starling__msg_data m;
    m.seq = o->seq;
    m.desc = o->desc;
    m.step = step;
    m.piece = piece;
    starling__data_encode(out, STARLING_FRAME_HDR + STARLING_DATA_HDR, type, flags, &m, nbytes);
}

/* The bytes of item `it`: straight from the input or the result, or what the codec
 * made of them; then through the lossless stage when it shrinks them. */
static void tx_payload(starling_comm *c, ring_op *o, int s, const ring_item *it, ring_tx *t)
{
    const ring_step *st = &o->steps[it->g];
    t->flags = 0;
    if (o->dense) {
        starling__codec_tx_payload(c, o, s, it, &t->src, &t->len);
    } else {
        t->len = starling__ring_piece_len(o, st->send_seg, it->p);
        t->src = (st->send_from_input ? o->in : o->work) + o->seg_off[st->send_seg] +
                 (size_t)it->p * o->piece;
    }
    if (o->zlevel && t->len) {
        engine *e = &c->eng;
        size_t z = starling__zstd_pack(e->zstd, o->zlevel, t->src, t->len, e->ztx[s], e->tmp_cap);
        if (z) {
            t->src = e->ztx[s];
            t->len = z;
            t->flags = STARLING_DATA_F_ZSTD;
        }
    }
    t->ready = 1;
}

/* On a sealed link, the payload is encrypted into the stream's stx buffer under the
 * header (associated data) and the tag goes after it. Every payload fits in tmp_cap: a
 * piece, or less (codecs and the lossless stage only shrink it). */
static int tx_seal(starling_comm *c, int s, ring_tx *t)
{
    engine *e = &c->eng;
    if (!starling__seal_tag(&e->rseal[s]))
        return STARLING_OK;
    if (t->len > e->tmp_cap)
        return STARLING_E_LIMIT;
    starling__seal_frame(&e->rseal[s], t->hdr, sizeof t->hdr, t->src, t->len, e->stx[s], t->tag);
    t->src = e->stx[s];
    return STARLING_OK;
}

/* Sends on stream s as much as its socket takes: the item it carries, then the next ones
 * in order while they are ready. <0 on a dead link. */
static int tx_stream(starling_comm *c, ring_op *o, int s, int *want_out)
{
    ring_tx *t = &o->tx[s];
    const size_t H = STARLING_FRAME_HDR + STARLING_DATA_HDR;
    const size_t T = starling__seal_tag(&c->eng.rseal[s]);
    for (;;) {
        const ring_item *it;
        struct iovec iov[3];
        int niov = 0, rc;
        ssize_t r;
        if (!t->busy) {
            if (o->send_next == o->nsend || !item_ready(o, &o->send_items[o->send_next]))
                return STARLING_OK;
            t->k = o->send_next++;
            t->busy = 1;
        }
        it = &o->send_items[t->k];
        if (!t->ready) {
            tx_payload(c, o, s, it, t);
            encode_hdr(o, MSG_DATA, it->g, it->p, (uint32_t)t->len, t->flags, t->hdr);
            if ((rc = tx_seal(c, s, t)))
                return rc;
        }
        if (t->off < H) {
            iov[niov].iov_base = t->hdr + t->off;
            iov[niov++].iov_len = H - t->off;
        }
        if (t->off < H + t->len) {
            size_t done = t->off > H ? t->off - H : 0;
            iov[niov].iov_base = (void *)(t->src + done);
            iov[niov++].iov_len = t->len - done;
        }
        if (T) {
            size_t done = t->off > H + t->len ? t->off - H - t->len : 0;
            iov[niov].iov_base = t->tag + done;
            iov[niov++].iov_len = T - done;
        }
        r = link_send(&c->eng, s, iov, niov);
        if (r < 0)
            return (int)r;
        t->off += (size_t)r;
        if (t->off < H + t->len + T) {
            *want_out = 1;
            return STARLING_OK;
        }
        o->bytes += t->len;
        t->off = 0;
        t->ready = 0;
        t->busy = 0;
        o->send_left--;
    }
}

/* Checks a data-plane header: a frame of this op (seq and descriptor) of type
 * `want_type` (an ABORT is the left neighbour giving up). Fills *m, *plen (payload bytes
 * after the data header) and *flags. */
static int check_frame(const ring_op *o, const uint8_t *hdr, uint8_t want_type,
                       starling__msg_data *m, size_t *plen, uint8_t *flags, char *why, size_t wl)
{
    starling__frame_hdr h;
    if (starling__frame_hdr_decode(hdr, (uint32_t)o->piece, &h) ||
        starling__data_decode(hdr + STARLING_FRAME_HDR, m)) {
        snprintf(why, wl, "malformed data frame from the left neighbour");
        return STARLING_E_PROTOCOL;
    }
    if (m->seq != o->seq || m->desc != o->desc || (h.type != want_type && h.type != MSG_ABORT)) {
        snprintf(why, wl,
                 "left neighbour is in a different collective (seq %llu vs %llu, or "
                 "different count/dtype/op/tag/codec)",
                 (unsigned long long)m->seq, (unsigned long long)o->seq);
        return STARLING_E_MISMATCH;
    }
    if (h.type == MSG_ABORT) {
        snprintf(why, wl, "left neighbour aborted the collective");
        return STARLING_E_MISMATCH;
    }
    *plen = h.len - STARLING_DATA_HDR;
    *flags = h.flags;
    return STARLING_OK;
}

/* The item a DATA header names: a piece of one of this op's receive steps that no stream
 * has brought yet. It is marked as arriving on this stream (x->k). */
static int rx_claim(ring_op *o, ring_rx *x, char *why, size_t wl)
{
    starling__msg_data m;
    size_t idx = 0;
    int rc = check_frame(o, x->hdr, MSG_DATA, &m, &x->plen, &x->flags, why, wl), known;
    if (rc)
        return rc;
    known = m.step < (uint32_t)o->nsteps && o->steps[m.step].recv_seg >= 0 &&
            m.piece < pieces_of(o, o->steps[m.step].recv_seg);
    if (known)
        idx = o->recv_base[m.step] + m.piece;
    if (!known || o->recv_done[idx] != RECV_NONE) {
        snprintf(why, wl, "unexpected piece %u/%u from the left neighbour", m.step, m.piece);
        return STARLING_E_PROTOCOL;
    }
    o->recv_done[idx] = RECV_BUSY;
    x->k = idx;
    return STARLING_OK;
}

/* The payload size a claimed item may have: its raw size `len`, or (lossless stage) less
 * than that: the sender only packs when it shrinks, and anything else would let a frame
 * claim more than it holds. */
static int check_len(const ring_op *o, const ring_rx *x, size_t len, char *why, size_t wl)
{
    const ring_item *it = &o->recv_items[x->k];
    if ((x->flags & STARLING_DATA_F_ZSTD) ? !o->zlevel || x->plen == 0 || x->plen >= len
                                          : x->plen != len) {
        snprintf(why, wl, "piece %u/%u from the left neighbour has %zu bytes (flags %u), "
                 "expected %zu", it->g, it->p, x->plen, (unsigned)x->flags, len);
        return STARLING_E_PROTOCOL;
    }
    return STARLING_OK;
}

/* A DONE token's header (in x->hdr, stream 0): the next one in order. The left
 * neighbour sends it once all its pieces are out, possibly before the last of them have
 * arrived on other streams. Checked when the header is in (so another collective's frame
 * is a mismatch, not a broken seal), counted once the frame has opened (done_open). */
static int rx_done_check(ring_op *o, ring_rx *x, char *why, size_t wl)
{
    starling__msg_data m;
    size_t plen;
    uint8_t flags;
    int rc = check_frame(o, x->hdr, MSG_DONE, &m, &plen, &flags, why, wl);
    if (rc)
        return rc;
    if (o->done_recv >= o->n - 1 || m.step != (uint32_t)(o->done_recv + 1) || m.piece != 0 ||
        plen != 0) {
        snprintf(why, wl, "unexpected commit token %u from the left neighbour", m.step);
        return STARLING_E_PROTOCOL;
    }
    x->token = 1;
    x->plen = 0;
    return STARLING_OK;
}

static void done_open(ring_op *o, ring_rx *x)
{
    o->done_recv++;
    x->off = 0;
    x->token = 0;
}

/* Reads what there is of the next frame's header on stream s; *in is set once it is all
 * in. */
static int rx_hdr(engine *e, int s, ring_rx *x, int *in)
{
    const size_t H = STARLING_FRAME_HDR + STARLING_DATA_HDR;
    size_t got = 0;
    int rc = rx_read(e, s, x->hdr + x->off, H - x->off, &got);
    x->off += got;
    *in = rc == STARLING_OK && x->off == H;
    return rc;
}

/* Where item `it`'s raw bytes go: a reduction buffer, the result, or (codecs) the
 * encoded tensor. */
static uint8_t *rx_dest(starling_comm *c, ring_op *o, int s, const ring_item *it,
                        size_t *rawlen)
{
    const ring_step *st = &o->steps[it->g];
    if (o->dense)
        return starling__codec_rx_dest(c, o, s, it, rawlen);
    *rawlen = starling__ring_piece_len(o, st->recv_seg, it->p);
    return st->recv_reduce ? c->eng.tmp[s]
                           : o->work + o->seg_off[st->recv_seg] + (size_t)it->p * o->piece;
}

/* Whether stream s's frame x (of item it) is reduced straight from the link's shared
 * ring: a plain reduce step's piece, clear and unpacked, on a shared-memory link. */
static int rx_in_place(const starling_comm *c, const ring_op *o, int s, const ring_rx *x,
                       const ring_item *it)
{
    const engine *e = &c->eng;
    return e->lshm[s] && !o->dense && !(x->flags & STARLING_DATA_F_ZSTD) &&
           o->steps[it->g].recv_reduce && !starling__seal_tag(&e->lseal[s]);
}

/* The payload of x, reduced from the ring as whole elements arrive (saves copying the
 * piece out first). An element the ring's end cuts in two is read out, alone. */
static int rx_reduce_ring(starling_comm *c, ring_op *o, int s, ring_rx *x, const ring_item *it)
{
    const size_t H = STARLING_FRAME_HDR + STARLING_DATA_HDR, es = o->esize;
    const ring_step *st = &o->steps[it->g];
    engine *e = &c->eng;
    const starling_dtype dt = o->req->dtype;
    while (x->off < H + x->plen) {
        size_t done = x->off - H, left = x->plen - done, k;
        size_t at = o->seg_off[st->recv_seg] + (size_t)it->p * o->piece + done;
        const uint8_t *src;
        uint64_t bounce[512];
        ssize_t r = starling__shm_peek(e->lshm[s], e->left[s], es, &src);
        int copied = 0;
        if (r <= 0)
            return r == 0 ? STARLING_OK : r == STARLING_E_PROTOCOL ? (int)r : STARLING_E_PEER_LOST;
        k = ((size_t)r < left ? (size_t)r : left) / es * es;
        if (k == 0 || (uintptr_t)src % es != 0) {
            /* An element split across the ring's end (peek said a whole one is there), or
             * a piece at an address its type may not be loaded from (an odd-sized frame
             * went before it): copied out, at most sizeof bounce at a time. */
            size_t got = 0;
            k = k == 0 ? es : k < sizeof bounce ? k : sizeof bounce;
            for (int part = 0; part < 2 && got < k; part++) {
                ssize_t a =
                    starling__shm_read(e->lshm[s], e->left[s], (uint8_t *)bounce + got, k - got);
                if (a <= 0)
                    return STARLING_E_PROTOCOL;
                got += (size_t)a;
            }
            if (got != k)
                return STARLING_E_PROTOCOL;
            src = (const uint8_t *)bounce;
            copied = 1;
        }
        starling__reduce(o->work + at, o->in + at, src, k / es, dt, o->req->op);
        if (st->recv_finish)
            starling__reduce_finish(o->work + at, k / es, dt, o->req->op, o->n);
        if (!copied)
            starling__shm_consume(e->lshm[s], e->left[s], k);
        x->off += k;
    }
    return STARLING_OK;
}

static void rx_post(starling_comm *c, ring_op *o, int s, const ring_item *it, uint8_t *dst)
{
    const ring_step *st = &o->steps[it->g];
    size_t at, nel;
    if (o->dense) {
        starling__codec_rx_post(c, o, s, it, dst);
        return;
    }
    if (!st->recv_reduce)
        return;
    at = o->seg_off[st->recv_seg] + (size_t)it->p * o->piece;
    nel = starling__ring_piece_len(o, st->recv_seg, it->p) / o->esize;
    starling__reduce(o->work + at, o->in + at, dst, nel, o->req->dtype, o->req->op);
    if (st->recv_finish)
        starling__reduce_finish(o->work + at, nel, o->req->dtype, o->req->op, o->n);
}

/* The tag after a frame's payload on a sealed link (bytes [at, at + T) of the frame),
 * then the check: the payload at `land` (plen bytes) is decrypted in place. *ok is set
 * once the frame has opened; a frame that does not open is refused. */
static int rx_open(starling_comm *c, int s, ring_rx *x, size_t at, uint8_t *land, char *why,
                   size_t wl, int *ok)
{
    starling__seal *seal = &c->eng.lseal[s];
    const size_t T = starling__seal_tag(seal);
    size_t got;
    int rc;
    *ok = 0;
    if (x->off < at + T) {
        if ((rc = rx_read(&c->eng, s, x->tag + (x->off - at), at + T - x->off, &got)))
            return rc;
        x->off += got;
        if (x->off < at + T)
            return STARLING_OK;
    }
    if (starling__seal_open(seal, x->hdr, sizeof x->hdr, land, x->plen, x->tag)) {
        snprintf(why, wl,
                 "a frame from the left neighbour fails authentication (tampered, "
                 "forged, replayed or out of order): refused");
        return STARLING_E_PROTOCOL;
    }
    *ok = 1;
    return STARLING_OK;
}

/* Header of the next frame on stream s is in: a DONE token (stream 0) waits for its
 * tag; a DATA header claims its item. */
static int rx_header(ring_op *o, int s, ring_rx *x, char *why, size_t wl, int *fresh)
{
    x->token = 0;
    if (s == 0 && x->hdr[0] == MSG_DONE)
        return rx_done_check(o, x, why, wl);
    *fresh = 1;
    return rx_claim(o, x, why, wl);
}

/* Receives what has arrived on stream s; reduces finished pieces. A frame is: header
 * (clear, authenticated), payload (encrypted on a sealed link), tag (sealed links). */
static int rx_stream(starling_comm *c, ring_op *o, int s, char *why, size_t wl)
{
    ring_rx *x = &o->rx[s];
    const size_t H = STARLING_FRAME_HDR + STARLING_DATA_HDR;
    engine *e = &c->eng;
    while (x->off > 0 || o->recv_left > 0) {
        const ring_item *it;
        size_t rawlen, got;
        uint8_t *dst, *land;
        int rc, fresh = 0, ok, direct;
        if (x->off < H) {
            if ((rc = rx_hdr(e, s, x, &ok)) || !ok)
                return rc;
            if ((rc = rx_header(o, s, x, why, wl, &fresh)))
                return rc;
        }
        if (x->token) {
            if ((rc = rx_open(c, s, x, H, NULL, why, wl, &ok)) || !ok)
                return rc;
            done_open(o, x);
            continue;
        }
        it = &o->recv_items[x->k];
        dst = rx_dest(c, o, s, it, &rawlen);
        if (fresh && (rc = check_len(o, x, rawlen, why, wl)))
            return rc;
        land = (x->flags & STARLING_DATA_F_ZSTD) ? e->zrx[s] : dst;
        direct = rx_in_place(c, o, s, x, it);
        if (direct && x->off < H + x->plen) {
            if ((rc = rx_reduce_ring(c, o, s, x, it)) || x->off < H + x->plen)
                return rc;
        } else if (x->off < H + x->plen) {
            if ((rc = rx_read(e, s, land + (x->off - H), H + x->plen - x->off, &got)))
                return rc;
            if (got == 0)
                return STARLING_OK;
            x->off += got;
            if (x->off < H + x->plen)
                return STARLING_OK;
        }
        if ((rc = rx_open(c, s, x, H + x->plen, land, why, wl, &ok)) || !ok)
            return rc;
        if ((x->flags & STARLING_DATA_F_ZSTD) &&
            starling__zstd_unpack(e->zstd, land, x->plen, dst, rawlen)) {
            snprintf(why, wl, "piece %u/%u from the left neighbour: bad zstd frame", it->g,
                     it->p);
            return STARLING_E_PROTOCOL;
        }
        if (!direct)
            rx_post(c, o, s, it, dst);
        o->recv_done[x->k] = RECV_DONE;
        o->recv_left--;
        x->off = 0;
    }
    return STARLING_OK;
}

/* Commit barrier on stream 0: DONE(k) from the left means the k members ending there
 * have finished their data phase; a member that has seen DONE(n-1) knows all have. */
static int barrier_tx(starling_comm *c, ring_op *o, int *want_out)
{
    int target = 1 + (o->done_recv < o->n - 2 ? o->done_recv : o->n - 2);
    const size_t H = STARLING_FRAME_HDR + STARLING_DATA_HDR;
    starling__seal *seal = &c->eng.rseal[0];
    const size_t len = H + starling__seal_tag(seal);
    while (o->done_sent < target) {
        struct iovec iov;
        ssize_t r;
        /* Sealed once: the frame counter moves when a frame is made, not when it is sent. */
        if (!o->done_ready) {
            encode_hdr(o, MSG_DONE, (uint32_t)(o->done_sent + 1), 0, 0, 0, o->done_frame);
            starling__seal_frame(seal, o->done_frame, H, NULL, 0, NULL, o->done_frame + H);
            o->done_ready = 1;
            o->done_off = 0;
        }
        iov.iov_base = o->done_frame + o->done_off;
        iov.iov_len = len - o->done_off;
        r = link_send(&c->eng, 0, &iov, 1);
        if (r < 0)
            return (int)r;
        o->done_off += (size_t)r;
        if (o->done_off < len) {
            *want_out = 1;
            return STARLING_OK;
        }
        o->done_sent++;
        o->done_ready = 0;
    }
    return STARLING_OK;
}

static int barrier_rx(starling_comm *c, ring_op *o, char *why, size_t wl)
{
    ring_rx *x = &o->rx[0];
    const size_t H = STARLING_FRAME_HDR + STARLING_DATA_HDR;
    while (o->done_recv < o->n - 1) {
        int rc, ok;
        if (x->off < H) {
            if ((rc = rx_hdr(&c->eng, 0, x, &ok)) || !ok)
                return rc;
            if ((rc = rx_done_check(o, x, why, wl)))
                return rc;
        }
        if ((rc = rx_open(c, 0, x, H, NULL, why, wl, &ok)) || !ok)
            return rc;
        done_open(o, x);
    }
    return STARLING_OK;
}

int starling__ring_data_done(const starling_comm *c) { return c->eng.op && c->eng.op->data_done; }

int starling__ring_progress(starling_comm *c, struct pollfd *fds, int *nfds)
{
    ring_op *o = c->eng.op;
    char why[200];
    int rc = STARLING_OK;
    int want_out[STARLING_MAX_STREAMS] = {0};

    *nfds = 0;
    why[0] = '\0';
    if (o->prep) {
        rc = starling__codec_prep_poll(c, o);
        if (rc < 0) {
            snprintf(o->req->errmsg, sizeof o->req->errmsg, "%s",
                     rc == STARLING_E_NOMEM ? "out of memory for the codec" : "codec failed");
            return rc;
        }
        if (o->prep)
            return 0; /* the engine's loop keeps heartbeats going meanwhile */
    }
    if (o->n == 1) {
        o->data_done = 1;
        return 1;
    }
    for (int s = 0; s < o->nsin && !rc; s++)
        if (o->recv_left > 0 || o->rx[s].off > 0)
            rc = rx_stream(c, o, s, why, sizeof why);
    for (int s = 0; s < o->nsout && !rc; s++)
        rc = tx_stream(c, o, s, &want_out[s]);
    if (!rc && !o->data_done && o->recv_left == 0 && o->send_left == 0 && o->sparse)
        rc = starling__codec_data_done(c, o, why, sizeof why);
    if (!rc && !o->data_done && o->recv_left == 0 && o->send_left == 0) {
        o->data_done = 1;
        c->eng.done_seq = o->seq;
    }
    if (!rc && o->data_done) {
        rc = barrier_rx(c, o, why, sizeof why);
        if (!rc)
            rc = barrier_tx(c, o, &want_out[0]);
        if (!rc && o->done_recv == o->n - 1 && o->done_sent == o->n - 1)
            return 1;
    }
    if (rc) {
        starling__comm_log_failure(c, rc, "%s", why[0] ? why : "a ring link closed");
        snprintf(o->req->errmsg, sizeof o->req->errmsg, "%s",
                 why[0] ? why : "a ring link closed");
        return rc;
    }
    for (int s = 0; s < o->nsin; s++) {
        int need = o->recv_left > 0 || o->rx[s].off > 0 || (s == 0 && o->data_done);
        if (need) {
            fds[*nfds].fd = c->eng.left[s];
            fds[*nfds].events = link_events(&c->eng, s, 0);
            (*nfds)++;
        }
    }
    for (int s = 0; s < o->nsout; s++)
        if (want_out[s]) {
            fds[*nfds].fd = c->eng.right[s];
            fds[*nfds].events = link_events(&c->eng, s, 1);
            (*nfds)++;
        }
    return 0;
}

int starling__ring_shm_wait(const starling_comm *c, const struct pollfd *fds, int nfds,
                            int *moved)
{
    const engine *e = &c->eng;
    *moved = 0;
    for (int i = 0; i < nfds; i++) {
        const starling__shm *r = NULL;
        for (int s = 0; s < STARLING_MAX_STREAMS && !r; s++) {
            if (s < e->nleft && fds[i].fd == e->left[s])
                r = e->lshm[s];
            else if (s < e->nright && fds[i].fd == e->right[s])
                r = e->rshm[s];
        }
        if (!r)
            return 0; /* a TCP link: only poll sees it move */
        if (starling__shm_ready(r))
            *moved = 1;
    }
    return nfds > 0;
}

/* A small all-reduce's result: the gathered inputs folded in rank order. */
static void gather_fold(const ring_op *o, const struct starling_request *r)
{
    uint8_t *out = r->recvbuf;
    memcpy(out, o->work, r->count * o->esize);
    for (int i = 1; i < o->n; i++)
        starling__reduce(out, out, o->work + o->seg_off[i], r->count, r->dtype, r->op);
    starling__reduce_finish(out, r->count, r->dtype, r->op, o->n);
}

void starling__ring_commit(starling_comm *c)
{
    ring_op *o = c->eng.op;
    const struct starling_request *r = o->req;
    if (o->gather) {
        gather_fold(o, r);
        return;
    }
    if (o->codec) {
        starling__codec_commit(c, o);
        return;
    }
    switch (r->coll) {
    case COLL_ALLREDUCE:
        if (o->work != r->recvbuf)
            memcpy(r->recvbuf, o->work, r->count * o->esize);
        break;
    case COLL_REDUCE_SCATTER:
        memcpy(r->recvbuf, o->work + o->seg_off[o->rank], o->seg_len[o->rank]);
        break;
    default: break;
    }
}

uint64_t starling__ring_bytes(const starling_comm *c) { return c->eng.op ? c->eng.op->bytes : 0; }
