#include "net/fconn.h"

#include <poll.h>
#include <string.h>

#include "platform/net.h"
#include "starling.h"
#include "util/alloc.h"

void starling__fconn_init(starling__fconn *c, int fd, int64_t now_ms, const starling__seal *seal)
{
    memset(c, 0, sizeof *c);
    c->fd = fd;
    c->last_rx_ms = now_ms;
    if (seal)
        c->seal = *seal;
}

void starling__fconn_close(starling__fconn *c)
{
    starling__sock_close(c->fd);
    starling__free(c->in);
    starling__free(c->out);
    starling__seal_wipe(&c->seal);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

static int reserve(uint8_t **buf, size_t *cap, size_t need)
{
    size_t ncap = *cap ? *cap : 4096;
    uint8_t *nb;
    if (need <= *cap)
        return STARLING_OK;
    while (ncap < need)
        ncap *= 2;
    nb = starling__realloc(*buf, ncap);
    if (!nb)
        return STARLING_E_NOMEM;
    *buf = nb;
    *cap = ncap;
    return STARLING_OK;
}

int starling__fconn_queue(starling__fconn *c, const uint8_t *frame, size_t n)
{
    size_t tag = starling__seal_tag(&c->seal);
    uint8_t *at;
    if (n < STARLING_FRAME_HDR)
        return STARLING_E_INVALID;
    n += tag; /* bytes this frame takes in the queue */
    if (c->fd < 0)
        return STARLING_E_CLOSED;
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_len - c->out_off + n > STARLING_FCONN_OUT_MAX)
        return STARLING_E_LIMIT;
    if (c->out_off && c->out_len + n > c->out_cap) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    if (reserve(&c->out, &c->out_cap, c->out_len + n))
        return STARLING_E_NOMEM;
    at = c->out + c->out_len;
    memcpy(at, frame, n - tag);
    starling__seal_frame(&c->seal, at, STARLING_FRAME_HDR, at + STARLING_FRAME_HDR,
                         n - tag - STARLING_FRAME_HDR, at + STARLING_FRAME_HDR, at + n - tag);
    c->out_len += n;
    return STARLING_OK;
}

int starling__fconn_flush(starling__fconn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t r = starling__sock_send(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (r < 0)
            return (int)r;
        if (r == 0)
            break;
        c->out_off += (size_t)r;
    }
    /* All sent: a buffer a large frame (a TOPO) grew is given back, so thousands of idle
     * connections do not each keep one. */
    if (c->out_off == c->out_len && c->out_cap > STARLING_FCONN_KEEP) {
        starling__free(c->out);
        c->out = NULL;
        c->out_cap = c->out_len = c->out_off = 0;
    }
    return STARLING_OK;
}

int starling__fconn_read(starling__fconn *c, int64_t now_ms)
{
    /* Drop consumed frames first, so the buffer never grows past one frame + slack. */
    if (c->in_consumed) {
        memmove(c->in, c->in + c->in_consumed, c->in_len - c->in_consumed);
        c->in_len -= c->in_consumed;
        c->in_consumed = 0;
    }
    if (c->in_len == 0 && c->in_cap > STARLING_FCONN_KEEP) { /* as in starling__fconn_flush */
        starling__free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
    for (;;) {
        ssize_t r;
        if (reserve(&c->in, &c->in_cap, c->in_len + 4096))
            return STARLING_E_NOMEM;
        r = starling__sock_recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
        if (r < 0)
            return (int)r;
        if (r == 0)
            return STARLING_OK;
        c->in_len += (size_t)r;
        c->last_rx_ms = now_ms;
        if (c->in_len >= STARLING_FRAME_HDR + STARLING_CTRL_MAX + STARLING_SEAL_TAG)
            return STARLING_OK; /* enough for a frame; let the caller parse first */
    }
}

int starling__fconn_next(starling__fconn *c, starling__frame_hdr *h, const uint8_t **payload)
{
    size_t avail = c->in_len - c->in_consumed, tag = starling__seal_tag(&c->seal);
    uint8_t *at = c->in + c->in_consumed;
    if (avail < STARLING_FRAME_HDR)
        return 0;
    if (starling__frame_hdr_decode(at, 0, h) || h->type == MSG_DATA)
        return STARLING_E_PROTOCOL;
    if (avail - STARLING_FRAME_HDR < h->len + tag)
        return 0;
    if (starling__seal_open(&c->seal, at, STARLING_FRAME_HDR, at + STARLING_FRAME_HDR, h->len,
                            at + STARLING_FRAME_HDR + h->len))
        return STARLING_E_AUTH;
    *payload = at + STARLING_FRAME_HDR;
    c->in_consumed += STARLING_FRAME_HDR + h->len + tag;
    return 1;
}

short starling__fconn_events(const starling__fconn *c)
{
    return (short)(POLLIN | (c->out_off < c->out_len ? POLLOUT : 0));
}
