/* A non-blocking connection carrying control frames, for event loops: bytes in are
 * buffered until a whole frame is there; frames out are queued and flushed as the
 * socket allows. Control frames only (each <= STARLING_CTRL_MAX). Frames go through the
 * connection's seal (auth/seal.h): sealed when queued, opened before they are handed
 * out, so a frame that fails to open closes the connection like a malformed one. */
#ifndef STARLING_NET_FCONN_H
#define STARLING_NET_FCONN_H
#include <stddef.h>
#include <stdint.h>

#include "auth/seal.h"
#include "proto/msg.h"

#define STARLING_FCONN_OUT_MAX (4u << 20) /* a peer that lets this much pile up is dead */
#define STARLING_FCONN_KEEP (64u << 10)   /* output buffer kept once all is sent */

typedef struct starling__fconn {
    int fd;
    uint8_t *in;
    size_t in_len, in_cap, in_consumed;
    uint8_t *out;
    size_t out_len, out_off, out_cap;
    int64_t last_rx_ms;
    starling__seal seal;
} starling__fconn;

/* `seal`: the handshake's (copied), or NULL for none. */
void starling__fconn_init(starling__fconn *c, int fd, int64_t now_ms, const starling__seal *seal);
/* Closes the socket and frees the buffers; the struct may be re-initialised. */
void starling__fconn_close(starling__fconn *c);
/* Appends an encoded frame to the output queue. STARLING_E_LIMIT if the queue is full. */
int starling__fconn_queue(starling__fconn *c, const uint8_t *frame, size_t n);
/* Sends what the socket takes now. Returns 0 or a negative error (connection is dead). */
int starling__fconn_flush(starling__fconn *c);
/* Reads what is available. Returns 0, or a negative error (EOF: STARLING_E_CLOSED). */
int starling__fconn_read(starling__fconn *c, int64_t now_ms);
/* Next complete frame: returns 1 and sets *h, *payload (valid until the next call),
 * 0 if none yet, STARLING_E_PROTOCOL for a malformed header or STARLING_E_AUTH for a
 * frame that fails to open (close the connection either way). */
int starling__fconn_next(starling__fconn *c, starling__frame_hdr *h, const uint8_t **payload);
/* poll() events this connection wants. */
short starling__fconn_events(const starling__fconn *c);
#endif
