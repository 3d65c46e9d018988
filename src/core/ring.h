/* The ring collective's state, shared by ring.c (schedule and I/O) and ring_codec.c
 * (what the bytes of a piece are when a codec compresses them). Engine thread only. */
#ifndef STARLING_CORE_RING_H
#define STARLING_CORE_RING_H
#include <stddef.h>
#include <stdint.h>

#include "core/internal.h"

typedef struct ring_step {
    int send_seg, recv_seg; /* -1: nothing this step */
    int send_dep;           /* step whose receipt of the same piece enables the send */
    uint8_t send_from_input, recv_reduce, recv_finish;
    uint8_t recv_seal; /* all-reduce's last reduce step: the owner fixes the final bytes */
} ring_step;

typedef struct ring_item {
    uint32_t g, p;
} ring_item;

typedef struct ring_tx {
    size_t k, off; /* the item this stream carries now, bytes of it sent incl. header */
    int busy;      /* carrying item k */
    int ready;     /* src/len/flags computed for item k (encoding happens once) */
    const uint8_t *src; /* the payload as sent: sealed into engine.stx when the link is */
    size_t len;
    uint8_t flags;
    uint8_t hdr[STARLING_FRAME_HDR + STARLING_DATA_HDR];
    uint8_t tag[STARLING_SEAL_TAG]; /* after the payload, when the link is sealed */
} ring_tx;

typedef struct ring_rx {
    size_t k, off; /* the item being received (known once its header is in), bytes of it */
    size_t plen; /* payload bytes of the frame being read (from its header) */
    uint8_t flags;
    int token; /* the frame being read is a DONE token (stream 0) */
    uint8_t hdr[STARLING_FRAME_HDR + STARLING_DATA_HDR];
    uint8_t tag[STARLING_SEAL_TAG];
} ring_rx;

typedef struct ring_op {
    struct starling_request *req;
    uint64_t seq, desc;
    int n, rank, nseg;
    coll_kind coll; /* what the ring runs: the request's kind, or ALLGATHER of sparse blobs
                     * or of a small all-reduce's inputs (gather) */
    int gather;     /* a small all-reduce run as an all-gather, folded at commit */
    size_t count;   /* elements per segment unit of `coll` (as the request's count) */
    size_t esize, piece;
    const uint8_t *in;
    uint8_t *work;
    size_t *seg_off, *seg_len; /* bytes */
    ring_step *steps;
    int nsteps;
    ring_item *send_items, *recv_items;
    size_t nsend, nrecv;
    size_t *recv_base; /* per step: index of its first recv item */
    uint8_t *recv_done; /* per recv item: RECV_NONE, RECV_BUSY (on some stream), RECV_DONE */
    size_t recv_left, send_left;
    size_t send_next; /* the next send item to hand to a stream with room */
    ring_tx tx[STARLING_MAX_STREAMS];
    ring_rx rx[STARLING_MAX_STREAMS];
    int nsout, nsin;
    int data_done;
    int done_sent, done_recv; /* commit barrier tokens */
    int done_ready;           /* done_frame holds token done_sent + 1, sealed */
    size_t done_off;          /* bytes of it sent */
    uint8_t done_frame[STARLING_FRAME_HDR + STARLING_DATA_HDR + STARLING_SEAL_TAG];
    uint64_t bytes;

    /* Codec (ring_codec.c); all zero when the call is uncompressed. */
    const starling__codec *codec;
    int dense, sparse, zlevel;
    uint64_t seed;
    size_t *enc_off;  /* dense: per segment, its offset in engine.enc */
    size_t enc_piece; /* dense: encoded bytes of a full piece */
    ef_entry *ef;     /* error feedback entry of the call's tag, or NULL */
    float *result;    /* sparse all-reduce: where the sum is built before commit */
    int prep;         /* the codec worker is preparing this op: no I/O until it is done */
} ring_op;

size_t starling__ring_piece_len(const ring_op *o, int seg, uint32_t p);
/* Grows an engine scratch buffer to at least `need` bytes (contents not kept). */
int starling__ring_ensure(uint8_t **buf, size_t *cap, size_t need);

/* ring_codec.c */
/* After the plan: hands the op to the codec worker, which lays out the encoded tensor,
 * forms the error-feedback input, seals what is sent unchanged from the start and encodes
 * the sparse blob. STARLING_OK or STARLING_E_NOMEM/_OS (the worker could not start). */
int starling__codec_op_start(starling_comm *c, ring_op *o);
/* While o->prep: 0 if the worker is still at it, else its result (and o->prep = 0). */
int starling__codec_prep_poll(starling_comm *c, ring_op *o);
/* Waits for the worker to finish with `o` (before the op is freed). */
void starling__codec_prep_wait(starling_comm *c, ring_op *o);
/* The bytes to send for item `it` on stream s (encoding and packing them if needed). */
void starling__codec_tx_payload(starling_comm *c, ring_op *o, int s, const ring_item *it,
                                const uint8_t **src, size_t *len);
/* Where the raw (unpacked) bytes of item `it` land, and how many there are. */
uint8_t *starling__codec_rx_dest(starling_comm *c, ring_op *o, int s, const ring_item *it,
                                 size_t *rawlen);
/* Once item `it` is in place at `dst`: reduce, decode, seal. */
void starling__codec_rx_post(starling_comm *c, ring_op *o, int s, const ring_item *it,
                             uint8_t *dst);
/* Sparse all-reduce: sums the gathered blobs in rank order. STARLING_E_PROTOCOL (and
 * `why`) on a malformed blob. Others: STARLING_OK. */
int starling__codec_data_done(starling_comm *c, ring_op *o, char *why, size_t wl);
/* Commit-time work: result copy, root's decode, residual swap. */
void starling__codec_commit(starling_comm *c, ring_op *o);
/* Engine teardown and epoch changes. */
void starling__codec_engine_free(engine *e);
void starling__ef_reset_all(engine *e);
/* The entry of `tag` with `count` elements: found, resized (zeroed) or made. NULL: no memory. */
ef_entry *starling__ef_get(engine *e, uint64_t tag, size_t count);
#endif
