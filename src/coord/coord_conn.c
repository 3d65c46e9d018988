/* One control connection: sending, reading, dispatching frames, and its death.
 * Nothing read from the network is trusted: every frame goes through its decoder, and a
 * frame that does not decode, or that a peer has no business sending, kills the
 * connection like a crash of that peer would. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "coord/coord_internal.h"
#include "util/log.h"

void starling__coord_label(const starling__coord_conn *p, char out[96])
{
    snprintf(out, 96, "%s/%016" PRIx64, p->name[0] ? p->name : "?",
             p->registered ? p->peer_id : p->hello_id);
}

starling__coord_conn *starling__coord_find(starling_coord *c, uint64_t peer_id)
{
    for (int i = 0; i < c->nconns; i++) {
        starling__coord_conn *p = c->conns[i];
        if (p->registered && !p->closing && p->peer_id == peer_id)
            return p;
    }
    return NULL;
}

void starling__coord_send(starling_coord *c, starling__coord_conn *p, const uint8_t *frame, int n)
{
    int r;
    if (p->closing || p->send_failed)
        return;
    if (n < 0) {
        SLOG_WARN("coordinator: cannot encode a frame: %s", starling_strerror(n));
        return;
    }
    r = starling__fconn_queue(&p->fc, frame, (size_t)n);
    if (r) {
        p->send_failed = 1;
        p->send_why = r == STARLING_E_LIMIT ? "not reading (output queue full)" : "out of memory";
        c->reap = 1;
    }
}

void starling__coord_send_epoch(starling_coord *c, starling__coord_conn *p, uint8_t type,
                                uint64_t epoch, uint64_t a, int32_t code)
{
    uint8_t frame[STARLING_FRAME_HDR + 32];
    starling__msg_epoch m;
    memset(&m, 0, sizeof m);
    m.epoch = epoch;
    m.a = a;
    m.code = code;
    starling__coord_send(c, p, frame, starling__epoch_encode(frame, sizeof frame, type, &m));
}

void starling__coord_lost(starling_coord *c, starling__coord_conn *p, const char *reason)
{
    char label[96];
    if (p->closing)
        return;
    starling__coord_label(p, label);
    if (p->watcher) {
        SLOG_INFO("standby coordinator %016" PRIx64 " lost: %s", p->hello_id, reason);
        if (c->watcher == p)
            c->watcher = NULL;
    } else if (p->registered)
        SLOG_INFO("peer %s lost: %s", label, reason);
    else
        SLOG_INFO("connection of peer %016" PRIx64 " closed before registering: %s", p->hello_id,
                  reason);
    starling__fconn_close(&p->fc);
    p->closing = 1;
    p->waiting = 0;
    c->dirty = 1;
    if (p->registered) {
        int idx = starling__coord_member_index(c, p->peer_id);
        if (idx >= 0 && !c->members[idx].dead)
            starling__coord_member_lost(c, idx);
    }
}

void starling__coord_reject(starling_coord *c, starling__coord_conn *p, int32_t code,
                            const char *reason)
{
    uint8_t frame[STARLING_FRAME_HDR + 5 + STARLING_REASON_MAX];
    starling__msg_reject rj;
    int n;
    rj.code = code;
    snprintf(rj.reason, sizeof rj.reason, "%s", reason);
    n = starling__reject_encode(frame, sizeof frame, &rj);
    /* Best effort and non-blocking: behind what is queued, sealed like every frame. */
    if (n > 0 && starling__fconn_queue(&p->fc, frame, (size_t)n) == STARLING_OK)
        starling__fconn_flush(&p->fc);
    starling__coord_lost(c, p, reason);
}

static void malformed(starling_coord *c, starling__coord_conn *p, const char *why)
{
    char label[96];
    starling__coord_label(p, label);
    SLOG_WARN("peer %s sent a malformed frame: %s", label, why);
    starling__coord_lost(c, p, "malformed frame");
}

static void on_frame(starling_coord *c, starling__coord_conn *p, const starling__frame_hdr *h,
                     const uint8_t *payload, int64_t now)
{
    starling__msg_epoch m;
    char why[64];

    if (p->watcher || (!p->registered && h->type == MSG_WATCH)) {
        if (h->type != MSG_WATCH || starling__epoch_decode(h->type, payload, h->len, &m))
            malformed(c, p, "a standby sent a frame other than watch");
        else
            starling__coord_on_watch(c, p, &m, now);
        return;
    }
    if (!p->registered) {
        if (h->type != MSG_REGISTER) {
            snprintf(why, sizeof why, "first frame has type %u, not register", h->type);
            malformed(c, p, why);
        } else if (starling__register_decode(payload, h->len, c->reg)) {
            malformed(c, p, "bad register");
        } else if (c->reg->peer_id != p->hello_id) {
            malformed(c, p, "register names another peer than the handshake did");
        } else {
            starling__coord_on_register(c, p, c->reg, now);
        }
        return;
    }
    switch (h->type) {
    case MSG_HEARTBEAT:
    case MSG_TOPO_REQ:
    case MSG_FAIL:
    case MSG_STATUS:
    case MSG_LEAVE:
        if (starling__epoch_decode(h->type, payload, h->len, &m)) {
            snprintf(why, sizeof why, "bad frame of type %u", h->type);
            malformed(c, p, why);
            return;
        }
        break;
    case MSG_LINKS:
        if (starling__links_decode(payload, h->len, c->links_msg) ||
            starling__coord_on_links(c, p, c->links_msg))
            malformed(c, p, "bad links report");
        return;
    default:
        snprintf(why, sizeof why, "unexpected frame of type %u", h->type);
        malformed(c, p, why);
        return;
    }
    switch (h->type) {
    case MSG_TOPO_REQ:
        SLOG_DEBUG("peer %s waits for an epoch (it is in %" PRIu64 ")", p->name, m.epoch);
        p->waiting = 1;
        c->dirty = 1;
        break;
    case MSG_FAIL: starling__coord_on_fail(c, p, &m); break;
    case MSG_STATUS: starling__coord_on_status(c, p, &m); break;
    case MSG_LEAVE: starling__coord_lost(c, p, "left"); break;
    default: break; /* heartbeat: the read already refreshed last_rx_ms */
    }
}

void starling__coord_on_readable(starling_coord *c, starling__coord_conn *p, int64_t now_ms)
{
    int r = starling__fconn_read(&p->fc, now_ms);
    /* Frames that arrived before an EOF still count (a LEAVE, a last STATUS). */
    while (!p->closing) {
        starling__frame_hdr h;
        const uint8_t *payload;
        int k = starling__fconn_next(&p->fc, &h, &payload);
        if (k == 0)
            break;
        if (k < 0) {
            malformed(c, p,
                      k == STARLING_E_AUTH ? "frame fails authentication (tampered or forged)"
                                           : "bad frame header");
            return;
        }
        on_frame(c, p, &h, payload, now_ms);
    }
    if (r && !p->closing)
        starling__coord_lost(c, p,
                             r == STARLING_E_CLOSED  ? "connection closed"
                             : r == STARLING_E_NOMEM ? "out of memory"
                                                     : "receive failed");
}
