/* Ring collectives as a non-blocking state machine on the engine thread.
 *
 * A collective is a list of steps; in each step this member sends one segment to its
 * right neighbour and receives one from its left. Segments are cut into pieces of at
 * most chunk_bytes, and a piece is sent as soon as the piece it depends on (the same
 * piece of the previous step, or of this step for the broadcast chain) has arrived,
 * so reduction of one piece overlaps the transfer of the next. Pieces travel round-robin
 * over the link's streams: item k of the op on stream k mod S, in order within a stream.
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
#include "kernels/kernels.h"
#include "platform/net.h"
#include "util/alloc.h"
#include "util/log.h"

typedef struct ring_step {
    int send_seg, recv_seg; /* -1: nothing this step */
    int send_dep;           /* step whose receipt of the same piece enables the send */
    uint8_t send_from_input, recv_reduce, recv_finish;
} ring_step;

typedef struct ring_item {
    uint32_t g, p;
} ring_item;

typedef struct ring_tx {
    size_t k, off; /* item index (== stream mod S), bytes of it sent incl. header */
    uint8_t hdr[STARLING_FRAME_HDR + STARLING_DATA_HDR];
} ring_tx;

typedef struct ring_rx {
    size_t k, off;
    uint8_t hdr[STARLING_FRAME_HDR + STARLING_DATA_HDR];
} ring_rx;

typedef struct ring_op {
    struct starling_request *req;
    uint64_t seq, desc;
    int n, rank, nseg;
    size_t esize, piece;
    const uint8_t *in;
    uint8_t *work;
    size_t *seg_off, *seg_len; /* bytes */
    ring_step *steps;
    int nsteps;
    ring_item *send_items, *recv_items;
    size_t nsend, nrecv;
    size_t *recv_base; /* per step: index of its first recv item */
    uint8_t *recv_done;
    size_t recv_left, send_left;
    ring_tx tx[STARLING_MAX_STREAMS];
    ring_rx rx[STARLING_MAX_STREAMS];
    int nsout, nsin;
    int data_done;
    int done_sent, done_recv; /* commit barrier tokens */
    uint64_t bytes;
} ring_op;

static size_t pieces_of(const ring_op *o, int seg)
{
    size_t len = o->seg_len[seg];
    return len == 0 ? 1 : (len + o->piece - 1) / o->piece;
}

static size_t piece_len(const ring_op *o, int seg, uint32_t p)
{
    size_t off = (size_t)p * o->piece, len = o->seg_len[seg];
    return off >= len ? 0 : (len - off < o->piece ? len - off : o->piece);
}

static uint64_t op_desc(const struct starling_request *r, int n)
{
    uint64_t f[8];
    f[0] = (uint64_t)r->coll;
    f[1] = (uint64_t)r->count;
    f[2] = (uint64_t)r->dtype;
    f[3] = (uint64_t)r->op;
    f[4] = (uint64_t)(int64_t)r->root;
    f[5] = r->tag;
    f[6] = (uint64_t)n;
    f[7] = r->vcounts ? XXH3_64bits(r->vcounts, sizeof(size_t) * (size_t)r->vn) : 0;
    return XXH3_64bits(f, sizeof f);
}

static int mod(int a, int n) { return ((a % n) + n) % n; }

/* Fills steps[] for the collective; see the comment at the top for the shape. */
static void plan_steps(ring_op *o, const struct starling_request *r)
{
    int n = o->n, rank = o->rank;
    if (r->coll == COLL_ALLREDUCE || r->coll == COLL_REDUCE_SCATTER) {
        /* Reduce-scatter leaves segment rank+1+shift fully reduced here. */
        int shift = r->coll == COLL_REDUCE_SCATTER ? -1 : 0;
        for (int g = 0; g < n - 1; g++) {
            ring_step *s = &o->steps[o->nsteps++];
            s->send_seg = mod(rank - g + shift, n);
            s->recv_seg = mod(rank - g - 1 + shift, n);
            s->send_dep = g - 1;
            s->send_from_input = g == 0;
            s->recv_reduce = 1;
            s->recv_finish = g == n - 2 && r->op == STARLING_AVG;
        }
    }
    if (r->coll == COLL_ALLREDUCE || r->coll == COLL_ALLGATHER || r->coll == COLL_ALLGATHERV) {
        /* All-gather starting from the segment this member holds complete. */
        int own = r->coll == COLL_ALLREDUCE ? rank + 1 : rank;
        for (int s = 0; s < n - 1; s++) {
            ring_step *st = &o->steps[o->nsteps];
            st->send_seg = mod(own - s, n);
            st->recv_seg = mod(own - s - 1, n);
            st->send_dep = o->nsteps - 1;
            st->send_from_input = 0;
            st->recv_reduce = 0;
            st->recv_finish = 0;
            o->nsteps++;
        }
    }
    if (r->coll == COLL_BROADCAST) {
        int d = mod(rank - r->root, n);
        ring_step *s = &o->steps[o->nsteps++];
        s->send_seg = d < n - 1 ? 0 : -1;
        s->recv_seg = d > 0 ? 0 : -1;
        s->send_dep = d > 0 ? 0 : -1;
        s->send_from_input = d == 0;
        s->recv_reduce = 0;
        s->recv_finish = 0;
    }
}

static void plan_segments(ring_op *o, const struct starling_request *r)
{
    size_t base, rem, off = 0;
    switch (r->coll) {
    case COLL_ALLREDUCE:
        base = r->count / (size_t)o->n;
        rem = r->count % (size_t)o->n;
        for (int i = 0; i < o->n; i++) {
            o->seg_off[i] = off;
            o->seg_len[i] = (base + ((size_t)i < rem)) * o->esize;
            off += o->seg_len[i];
        }
        break;
    case COLL_REDUCE_SCATTER:
    case COLL_ALLGATHER:
        for (int i = 0; i < o->n; i++) {
            o->seg_off[i] = (size_t)i * r->count * o->esize;
            o->seg_len[i] = r->count * o->esize;
        }
        break;
    case COLL_ALLGATHERV:
        for (int i = 0; i < o->n; i++) {
            o->seg_off[i] = off;
            o->seg_len[i] = r->vcounts[i];
            off += r->vcounts[i];
        }
        break;
    case COLL_BROADCAST:
        o->seg_off[0] = 0;
        o->seg_len[0] = r->count * o->esize;
        break;
    }
}

static int ensure(uint8_t **buf, size_t *cap, size_t need)
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

static size_t total_bytes(const struct starling_request *r, int n, size_t esize)
{
    size_t t = 0;
    switch (r->coll) {
    case COLL_ALLREDUCE:
    case COLL_BROADCAST: return r->count * esize;
    case COLL_REDUCE_SCATTER:
    case COLL_ALLGATHER: return r->count * esize * (size_t)n;
    case COLL_ALLGATHERV:
        for (int i = 0; i < n; i++)
            t += r->vcounts[i];
        return t;
    }
    return 0;
}

/* Where results accumulate. The caller's buffer is used directly whenever writing it
 * early cannot destroy an input the caller must get back on failure. */
static int choose_work(starling_comm *c, ring_op *o, const struct starling_request *r)
{
    engine *e = &c->eng;
    size_t total = total_bytes(r, o->n, o->esize);
    switch (r->coll) {
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
    if (ensure(&e->scratch, &e->scratch_cap, total ? total : 1))
        return STARLING_E_NOMEM;
    o->work = e->scratch;
    return STARLING_OK;
}

void starling__ring_free(starling_comm *c)
{
    ring_op *o = c->eng.op;
    if (!o)
        return;
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
    o->esize = starling_dtype_size(r->dtype);
    o->piece = c->cfg.chunk_bytes / 8 * 8;
    o->desc = op_desc(r, e->n);
    o->nseg = r->coll == COLL_BROADCAST ? 1 : e->n;
    o->seg_off = starling__malloc(sizeof(size_t) * 2 * (size_t)o->nseg);
    o->steps = starling__calloc((size_t)(2 * e->n), sizeof(ring_step));
    if (!o->seg_off || !o->steps)
        return STARLING_E_NOMEM;
    o->seg_len = o->seg_off + o->nseg;
    o->in = r->sendbuf;
    plan_segments(o, r);
    if ((rc = choose_work(c, o, r)))
        return rc;
    if (r->coll == COLL_ALLGATHER || r->coll == COLL_ALLGATHERV) {
        uint8_t *own = o->work + o->seg_off[o->rank];
        if (own != (const uint8_t *)r->sendbuf && o->seg_len[o->rank])
            memmove(own, r->sendbuf, o->seg_len[o->rank]);
    }
    if (r->coll == COLL_BROADCAST)
        o->in = r->recvbuf;
    if (e->n > 1) {
        plan_steps(o, r);
        if ((rc = build_items(o)))
            return rc;
    } else if (r->coll == COLL_ALLREDUCE || r->coll == COLL_REDUCE_SCATTER) {
        /* Alone: the result is the input (avg over one member is the identity). */
        if (o->work != r->sendbuf && o->seg_len[0])
            memmove(o->work, r->sendbuf, o->seg_len[0]);
    }
    o->nsout = e->nright;
    o->nsin = e->nleft;
    for (int s = 0; s < STARLING_MAX_STREAMS; s++) {
        o->tx[s].k = (size_t)s;
        o->rx[s].k = (size_t)s;
    }
    if (e->n > 1) {
        /* One receive buffer per incoming stream, kept across ops. */
        if (o->piece > e->tmp_cap) {
            for (int s = 0; s < STARLING_MAX_STREAMS; s++) {
                starling__free(e->tmp[s]);
                e->tmp[s] = NULL;
            }
            e->tmp_cap = o->piece;
        }
        for (int s = 0; s < o->nsin; s++)
            if (!e->tmp[s] && !(e->tmp[s] = starling__alloc_aligned(e->tmp_cap)))
                return STARLING_E_NOMEM;
    }
    return STARLING_OK;
}

static int item_ready(const ring_op *o, const ring_item *it)
{
    const ring_step *s = &o->steps[it->g];
    if (s->send_dep < 0)
        return 1;
    return o->recv_done[o->recv_base[s->send_dep] + it->p];
}

static void encode_hdr(const ring_op *o, uint8_t type, uint32_t step, uint32_t piece,
                       uint32_t nbytes, uint8_t *out)
{
    starling__msg_data m;
    m.seq = o->seq;
    m.desc = o->desc;
    m.step = step;
    m.piece = piece;
    starling__data_encode(out, STARLING_FRAME_HDR + STARLING_DATA_HDR, type, &m, nbytes);
}

/* Sends as many ready items on stream s as the socket takes. <0 on a dead link. */
static int tx_stream(starling_comm *c, ring_op *o, int s, int *want_out)
{
    ring_tx *t = &o->tx[s];
    const size_t H = STARLING_FRAME_HDR + STARLING_DATA_HDR;
    while (t->k < o->nsend) {
        const ring_item *it = &o->send_items[t->k];
        const ring_step *st = &o->steps[it->g];
        size_t len = piece_len(o, st->send_seg, it->p);
        const uint8_t *src = (st->send_from_input ? o->in : o->work) + o->seg_off[st->send_seg] +
                             (size_t)it->p * o->piece;
        struct iovec iov[2];
        struct msghdr mh;
        int niov = 0;
        ssize_t r;
        if (!item_ready(o, it))
            return STARLING_OK;
        if (t->off == 0)
            encode_hdr(o, MSG_DATA, it->g, it->p, (uint32_t)len, t->hdr);
        if (t->off < H) {
            iov[niov].iov_base = t->hdr + t->off;
            iov[niov++].iov_len = H - t->off;
        }
        if (len) {
            size_t done = t->off > H ? t->off - H : 0;
            iov[niov].iov_base = (void *)(src + done);
            iov[niov++].iov_len = len - done;
        }
        /* sendmsg, not writev: MSG_NOSIGNAL keeps a dead neighbour from raising SIGPIPE
         * in the application's process. */
        memset(&mh, 0, sizeof mh);
        mh.msg_iov = iov;
        mh.msg_iovlen = (size_t)niov;
        do {
            r = sendmsg(c->eng.right[s], &mh, MSG_NOSIGNAL);
        } while (r < 0 && errno == EINTR);
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                *want_out = 1;
                return STARLING_OK;
            }
            return STARLING_E_PEER_LOST;
        }
        t->off += (size_t)r;
        if (t->off < H + len) {
            *want_out = 1;
            return STARLING_OK;
        }
        o->bytes += len;
        t->off = 0;
        t->k += (size_t)o->nsout;
        o->send_left--;
    }
    return STARLING_OK;
}

static int check_hdr(const ring_op *o, const uint8_t *hdr, uint8_t want_type, uint32_t step,
                     uint32_t piece, size_t len, char *why, size_t wl)
{
    starling__frame_hdr h;
    starling__msg_data m;
    if (starling__frame_hdr_decode(hdr, (uint32_t)o->piece, &h) ||
        starling__data_decode(hdr + STARLING_FRAME_HDR, &m)) {
        snprintf(why, wl, "malformed data frame from the left neighbour");
        return STARLING_E_PROTOCOL;
    }
    if (m.seq != o->seq || m.desc != o->desc || (h.type != want_type && h.type != MSG_ABORT)) {
        snprintf(why, wl,
                 "left neighbour is in a different collective (seq %llu vs %llu, or "
                 "different count/dtype/op/tag)",
                 (unsigned long long)m.seq, (unsigned long long)o->seq);
        return STARLING_E_MISMATCH;
    }
    if (h.type == MSG_ABORT) {
        snprintf(why, wl, "left neighbour aborted the collective");
        return STARLING_E_MISMATCH;
    }
    if (m.step != step || m.piece != piece || h.len != STARLING_DATA_HDR + len) {
        snprintf(why, wl, "unexpected piece %u/%u (%u bytes) from the left neighbour",
                 m.step, m.piece, h.len);
        return STARLING_E_PROTOCOL;
    }
    return STARLING_OK;
}

static int rx_read(int fd, void *dst, size_t n, size_t *got)
{
    ssize_t r = starling__sock_recv(fd, dst, n);
    if (r < 0)
        return STARLING_E_PEER_LOST;
    *got = (size_t)r;
    return STARLING_OK;
}

/* Receives what has arrived on stream s; reduces finished pieces. */
static int rx_stream(starling_comm *c, ring_op *o, int s, char *why, size_t wl)
{
    ring_rx *x = &o->rx[s];
    const size_t H = STARLING_FRAME_HDR + STARLING_DATA_HDR;
    int fd = c->eng.left[s];
    while (x->k < o->nrecv) {
        const ring_item *it = &o->recv_items[x->k];
        const ring_step *st = &o->steps[it->g];
        size_t len = piece_len(o, st->recv_seg, it->p);
        size_t at = o->seg_off[st->recv_seg] + (size_t)it->p * o->piece;
        uint8_t *dst = st->recv_reduce ? c->eng.tmp[s] : o->work + at;
        size_t got;
        int rc;
        if (x->off < H) {
            if ((rc = rx_read(fd, x->hdr + x->off, H - x->off, &got)))
                return rc;
            if (got == 0)
                return STARLING_OK;
            x->off += got;
            if (x->off < H)
                return STARLING_OK;
            if ((rc = check_hdr(o, x->hdr, MSG_DATA, it->g, it->p, len, why, wl)))
                return rc;
        }
        if (x->off < H + len) {
            if ((rc = rx_read(fd, dst + (x->off - H), H + len - x->off, &got)))
                return rc;
            if (got == 0)
                return STARLING_OK;
            x->off += got;
            if (x->off < H + len)
                return STARLING_OK;
        }
        if (st->recv_reduce) {
            size_t nel = len / o->esize;
            starling__reduce(o->work + at, o->in + at, dst, nel, o->req->dtype, o->req->op);
            if (st->recv_finish)
                starling__reduce_finish(o->work + at, nel, o->req->dtype, o->req->op, o->n);
        }
        o->recv_done[x->k] = 1;
        o->recv_left--;
        x->off = 0;
        x->k += (size_t)o->nsin;
    }
    return STARLING_OK;
}

/* Commit barrier on stream 0: DONE(k) from the left means the k members ending there
 * have finished their data phase; a member that has seen DONE(n-1) knows all have. */
static int barrier_tx(starling_comm *c, ring_op *o, int *want_out)
{
    int target = 1 + (o->done_recv < o->n - 2 ? o->done_recv : o->n - 2);
    uint8_t hdr[STARLING_FRAME_HDR + STARLING_DATA_HDR];
    while (o->done_sent < target) {
        ssize_t r;
        encode_hdr(o, MSG_DONE, (uint32_t)(o->done_sent + 1), 0, 0, hdr);
        r = starling__sock_send(c->eng.right[0], hdr, sizeof hdr);
        if (r < 0)
            return STARLING_E_PEER_LOST;
        if (r == 0) {
            *want_out = 1;
            return STARLING_OK;
        }
        /* A 32-byte send is all-or-nothing in practice; a partial one would need the
         * same resume logic as data, so refuse to pretend otherwise. */
        if ((size_t)r != sizeof hdr)
            return STARLING_E_PEER_LOST;
        o->done_sent++;
    }
    return STARLING_OK;
}

static int barrier_rx(starling_comm *c, ring_op *o, char *why, size_t wl)
{
    ring_rx *x = &o->rx[0];
    const size_t H = STARLING_FRAME_HDR + STARLING_DATA_HDR;
    while (o->done_recv < o->n - 1) {
        size_t got;
        int rc = rx_read(c->eng.left[0], x->hdr + x->off, H - x->off, &got);
        if (rc)
            return rc;
        if (got == 0)
            return STARLING_OK;
        x->off += got;
        if (x->off < H)
            return STARLING_OK;
        x->off = 0;
        if ((rc = check_hdr(o, x->hdr, MSG_DONE, (uint32_t)(o->done_recv + 1), 0, 0, why, wl)))
            return rc;
        o->done_recv++;
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
    if (o->n == 1) {
        o->data_done = 1;
        return 1;
    }
    for (int s = 0; s < o->nsin && !rc; s++)
        if (o->rx[s].k < o->nrecv)
            rc = rx_stream(c, o, s, why, sizeof why);
    for (int s = 0; s < o->nsout && !rc; s++)
        rc = tx_stream(c, o, s, &want_out[s]);
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
        int need = o->rx[s].k < o->nrecv || (s == 0 && o->data_done);
        if (need) {
            fds[*nfds].fd = c->eng.left[s];
            fds[*nfds].events = POLLIN;
            (*nfds)++;
        }
    }
    for (int s = 0; s < o->nsout; s++)
        if (want_out[s]) {
            fds[*nfds].fd = c->eng.right[s];
            fds[*nfds].events = POLLOUT;
            (*nfds)++;
        }
    return 0;
}

void starling__ring_commit(starling_comm *c)
{
    ring_op *o = c->eng.op;
    const struct starling_request *r = o->req;
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
