#include "proto/msg.h"

#include <string.h>

#include "platform/addr.h"
#include "proto/wire.h"
#include "starling.h"
#include "util/config.h"

void starling__frame_hdr_encode(uint8_t out[STARLING_FRAME_HDR], uint8_t type, uint32_t len)
{
    out[0] = type;
    out[1] = 0;
    out[2] = out[3] = 0;
    for (int i = 0; i < 4; i++)
        out[4 + i] = (uint8_t)(len >> (8 * i));
}

int starling__frame_hdr_decode(const uint8_t in[STARLING_FRAME_HDR], uint32_t max_data_len,
                               starling__frame_hdr *out)
{
    uint32_t len = (uint32_t)in[4] | (uint32_t)in[5] << 8 | (uint32_t)in[6] << 16 |
                   (uint32_t)in[7] << 24;
    if (in[0] < 1 || in[0] > MSG_TYPE_MAX || in[2] || in[3])
        return STARLING_E_PROTOCOL;
    if (in[1] & ~(in[0] == MSG_DATA ? STARLING_DATA_F_ZSTD : 0))
        return STARLING_E_PROTOCOL;
    if (in[0] == MSG_DATA) {
        if (len < STARLING_DATA_HDR || len - STARLING_DATA_HDR > max_data_len)
            return STARLING_E_PROTOCOL;
    } else if (in[0] == MSG_DONE || in[0] == MSG_ABORT) {
        if (len != STARLING_DATA_HDR)
            return STARLING_E_PROTOCOL;
    } else if (len > STARLING_CTRL_MAX) {
        return STARLING_E_PROTOCOL;
    }
    out->type = in[0];
    out->flags = in[1];
    out->len = len;
    return STARLING_OK;
}

/* Reserves the frame header, lets `body` write the payload, then fills in the length. */
static int finish(starling__wbuf *w, uint8_t *out, uint8_t type)
{
    if (w->err)
        return STARLING_E_LIMIT;
    starling__frame_hdr_encode(out, type, (uint32_t)(w->len - STARLING_FRAME_HDR));
    return (int)w->len;
}

static int begin(starling__wbuf *w, uint8_t *out, size_t cap)
{
    starling__w_init(w, out, cap);
    if (cap < STARLING_FRAME_HDR)
        return STARLING_E_LIMIT;
    w->len = STARLING_FRAME_HDR;
    return STARLING_OK;
}

int starling__hello_encode(uint8_t *out, size_t cap, const starling__msg_hello *m)
{
    starling__wbuf w;
    if (begin(&w, out, cap))
        return STARLING_E_LIMIT;
    starling__w_u32(&w, m->magic);
    starling__w_u16(&w, m->version);
    starling__w_u8(&w, m->role);
    starling__w_bytes(&w, m->nonce, STARLING_NONCE_LEN);
    starling__w_str(&w, m->run);
    starling__w_u64(&w, m->peer_id);
    starling__w_u64(&w, m->epoch);
    starling__w_u8(&w, m->stream);
    starling__w_u8(&w, m->nstreams);
    if (m->version >= 3) { /* the golden v1/v2 hellos still encode as they were */
        starling__w_u8(&w, m->security);
        starling__w_u8(&w, m->caps);
    }
    if (m->version >= 6)
        starling__w_u64(&w, m->host);
    return finish(&w, out, MSG_HELLO);
}

/* The magic and version come first and are checked before anything else, so that a
 * future version with a different layout is refused as a version mismatch. */
int starling__hello_decode(const uint8_t *p, size_t len, starling__msg_hello *m)
{
    starling__rbuf r;
    starling__r_init(&r, p, len);
    m->magic = starling__r_u32(&r);
    m->version = starling__r_u16(&r);
    if (r.err || m->magic != STARLING_MAGIC)
        return STARLING_E_PROTOCOL;
    if (m->version != STARLING_PROTOCOL_VERSION)
        return STARLING_E_VERSION;
    m->role = starling__r_u8(&r);
    starling__r_bytes(&r, m->nonce, STARLING_NONCE_LEN);
    starling__r_str(&r, m->run, sizeof m->run);
    m->peer_id = starling__r_u64(&r);
    m->epoch = starling__r_u64(&r);
    m->stream = starling__r_u8(&r);
    m->nstreams = starling__r_u8(&r);
    m->security = starling__r_u8(&r);
    m->caps = starling__r_u8(&r);
    m->host = starling__r_u64(&r);
    m->peer_host = 0;
    if (starling__r_finish(&r))
        return STARLING_E_PROTOCOL;
    if (m->role != ROLE_CONTROL && m->role != ROLE_DATA && m->role != ROLE_PROBE &&
        m->role != ROLE_DATA_REV)
        return STARLING_E_PROTOCOL;
    if (m->run[0] == '\0' || m->security > STARLING_SEC_MAX)
        return STARLING_E_PROTOCOL;
    if ((m->role == ROLE_DATA || m->role == ROLE_DATA_REV) &&
        (m->nstreams < 1 || m->nstreams > 16 || m->stream >= m->nstreams))
        return STARLING_E_PROTOCOL;
    return STARLING_OK;
}

int starling__challenge_encode(uint8_t *out, size_t cap, const starling__msg_challenge *m)
{
    starling__wbuf w;
    if (begin(&w, out, cap))
        return STARLING_E_LIMIT;
    starling__w_bytes(&w, m->nonce, STARLING_NONCE_LEN);
    starling__w_bytes(&w, m->mac, STARLING_MAC_LEN);
    starling__w_u8(&w, m->security);
    starling__w_u8(&w, m->caps);
    starling__w_u64(&w, m->host);
    return finish(&w, out, MSG_CHALLENGE);
}

int starling__challenge_decode(const uint8_t *p, size_t len, starling__msg_challenge *m)
{
    starling__rbuf r;
    starling__r_init(&r, p, len);
    starling__r_bytes(&r, m->nonce, STARLING_NONCE_LEN);
    starling__r_bytes(&r, m->mac, STARLING_MAC_LEN);
    m->security = starling__r_u8(&r);
    m->caps = starling__r_u8(&r);
    m->host = starling__r_u64(&r);
    if (starling__r_finish(&r) || m->security > STARLING_SEC_MAX)
        return STARLING_E_PROTOCOL;
    return STARLING_OK;
}

int starling__shm_offer_encode(uint8_t *out, size_t cap, const starling__msg_shm *m)
{
    starling__wbuf w;
    if (begin(&w, out, cap))
        return STARLING_E_LIMIT;
    starling__w_u32(&w, m->pid);
    starling__w_u32(&w, m->fd);
    starling__w_u64(&w, m->size);
    starling__w_bytes(&w, m->nonce, sizeof m->nonce);
    return finish(&w, out, MSG_SHM_OFFER);
}

/* A size is 0 (no segment) or a power of two within the ring limits of net/shm.h. */
int starling__shm_offer_decode(const uint8_t *p, size_t len, starling__msg_shm *m)
{
    starling__rbuf r;
    starling__r_init(&r, p, len);
    m->pid = starling__r_u32(&r);
    m->fd = starling__r_u32(&r);
    m->size = starling__r_u64(&r);
    starling__r_bytes(&r, m->nonce, sizeof m->nonce);
    m->ok = 0;
    if (starling__r_finish(&r))
        return STARLING_E_PROTOCOL;
    if (m->size != 0 && (m->size < STARLING_SHM_RING_MIN || m->size > STARLING_SHM_RING_MAX ||
                         (m->size & (m->size - 1)) || m->pid == 0))
        return STARLING_E_PROTOCOL;
    return STARLING_OK;
}

int starling__shm_reply_encode(uint8_t *out, size_t cap, const starling__msg_shm *m)
{
    starling__wbuf w;
    if (begin(&w, out, cap))
        return STARLING_E_LIMIT;
    starling__w_u8(&w, m->ok);
    return finish(&w, out, MSG_SHM_REPLY);
}

int starling__shm_reply_decode(const uint8_t *p, size_t len, starling__msg_shm *m)
{
    starling__rbuf r;
    starling__r_init(&r, p, len);
    memset(m, 0, sizeof *m);
    m->ok = starling__r_u8(&r);
    if (starling__r_finish(&r) || m->ok > 1)
        return STARLING_E_PROTOCOL;
    return STARLING_OK;
}

int starling__auth_encode(uint8_t *out, size_t cap, const starling__msg_auth *m)
{
    starling__wbuf w;
    if (begin(&w, out, cap))
        return STARLING_E_LIMIT;
    starling__w_bytes(&w, m->mac, STARLING_MAC_LEN);
    return finish(&w, out, MSG_AUTH);
}

int starling__auth_decode(const uint8_t *p, size_t len, starling__msg_auth *m)
{
    starling__rbuf r;
    starling__r_init(&r, p, len);
    starling__r_bytes(&r, m->mac, STARLING_MAC_LEN);
    return starling__r_finish(&r);
}

int starling__reject_encode(uint8_t *out, size_t cap, const starling__msg_reject *m)
{
    starling__wbuf w;
    if (begin(&w, out, cap))
        return STARLING_E_LIMIT;
    starling__w_u32(&w, (uint32_t)m->code);
    starling__w_str(&w, m->reason);
    return finish(&w, out, MSG_REJECT);
}

int starling__reject_decode(const uint8_t *p, size_t len, starling__msg_reject *m)
{
    starling__rbuf r;
    starling__r_init(&r, p, len);
    m->code = (int32_t)starling__r_u32(&r);
    starling__r_str(&r, m->reason, sizeof m->reason);
    if (starling__r_finish(&r))
        return STARLING_E_PROTOCOL;
    /* Only codes of the stable list are accepted. */
    if (m->code >= 0 || m->code < STARLING_E_BUSY)
        return STARLING_E_PROTOCOL;
    return STARLING_OK;
}

int starling__register_encode(uint8_t *out, size_t cap, const starling__msg_register *m)
{
    starling__wbuf w;
    if (begin(&w, out, cap) || m->nmembers > STARLING_MAX_PEERS)
        return STARLING_E_LIMIT;
    starling__w_u64(&w, m->peer_id);
    starling__w_str(&w, m->name);
    starling__w_str(&w, m->host);
    starling__w_u16(&w, m->port);
    starling__w_u32(&w, m->min_peers);
    starling__w_u64(&w, m->epoch);
    starling__w_u32(&w, m->nmembers);
    for (uint32_t i = 0; i < m->nmembers; i++)
        starling__w_u64(&w, m->members[i]);
    return finish(&w, out, MSG_REGISTER);
}

int starling__register_decode(const uint8_t *p, size_t len, starling__msg_register *m)
{
    starling__rbuf r;
    starling__r_init(&r, p, len);
    m->peer_id = starling__r_u64(&r);
    starling__r_str(&r, m->name, sizeof m->name);
    starling__r_str(&r, m->host, sizeof m->host);
    m->port = starling__r_u16(&r);
    m->min_peers = starling__r_u32(&r);
    m->epoch = starling__r_u64(&r);
    m->nmembers = starling__r_u32(&r);
    if (r.err || m->nmembers > STARLING_MAX_PEERS)
        return STARLING_E_PROTOCOL;
    for (uint32_t i = 0; i < m->nmembers; i++)
        m->members[i] = starling__r_u64(&r);
    if (starling__r_finish(&r))
        return STARLING_E_PROTOCOL;
    /* port 0: the peer accepts no inbound connections (v5) */
    if (m->peer_id == 0 || !starling__host_numeric(m->host) ||
        m->min_peers < 1 ||
        m->min_peers > STARLING_MAX_PEERS || (m->epoch == 0) != (m->nmembers == 0))
        return STARLING_E_PROTOCOL;
    return STARLING_OK;
}

int starling__welcome_encode(uint8_t *out, size_t cap, const starling__msg_welcome *m)
{
    starling__wbuf w;
    if (begin(&w, out, cap))
        return STARLING_E_LIMIT;
    starling__w_u64(&w, m->coord_id);
    starling__w_u32(&w, m->timeout_ms);
    return finish(&w, out, MSG_WELCOME);
}

int starling__welcome_decode(const uint8_t *p, size_t len, starling__msg_welcome *m)
{
    starling__rbuf r;
    starling__r_init(&r, p, len);
    m->coord_id = starling__r_u64(&r);
    m->timeout_ms = starling__r_u32(&r);
    if (starling__r_finish(&r) || m->timeout_ms < 100 || m->timeout_ms > 600000)
        return STARLING_E_PROTOCOL;
    return STARLING_OK;
}

int starling__topo_encode(uint8_t *out, size_t cap, const starling__msg_topo *m)
{
    starling__wbuf w;
    if (begin(&w, out, cap) || m->n > STARLING_MAX_PEERS)
        return STARLING_E_LIMIT;
    starling__w_u64(&w, m->epoch);
    starling__w_u32(&w, m->rank);
    starling__w_u32(&w, m->n);
    for (uint32_t i = 0; i < m->n; i++) {
        starling__w_u64(&w, m->members[i].id);
        starling__w_str(&w, m->members[i].host);
        starling__w_u16(&w, m->members[i].port);
    }
    starling__w_u32(&w, m->probe_bytes);
    return finish(&w, out, MSG_TOPO);
}

int starling__topo_decode(const uint8_t *p, size_t len, starling__msg_topo *m)
{
    starling__rbuf r;
    starling__r_init(&r, p, len);
    m->epoch = starling__r_u64(&r);
    m->rank = starling__r_u32(&r);
    m->n = starling__r_u32(&r);
    if (r.err || m->n < 1 || m->n > STARLING_MAX_PEERS || m->rank >= m->n || m->epoch == 0)
        return STARLING_E_PROTOCOL;
    for (uint32_t i = 0; i < m->n; i++) {
        m->members[i].id = starling__r_u64(&r);
        starling__r_str(&r, m->members[i].host, sizeof m->members[i].host);
        m->members[i].port = starling__r_u16(&r);
        if (m->members[i].id == 0) /* port 0: accepts no inbound connections */
            return STARLING_E_PROTOCOL;
    }
    m->probe_bytes = starling__r_u32(&r);
    if (m->probe_bytes != 0 &&
        (m->probe_bytes < STARLING__PROBE_MIN || m->probe_bytes > STARLING__PROBE_MAX))
        return STARLING_E_PROTOCOL;
    return starling__r_finish(&r);
}

int starling__links_encode(uint8_t *out, size_t cap, const starling__msg_links *m)
{
    starling__wbuf w;
    if (begin(&w, out, cap) || m->n > STARLING_MAX_PEERS)
        return STARLING_E_LIMIT;
    starling__w_u64(&w, m->epoch);
    starling__w_u32(&w, m->n);
    for (uint32_t i = 0; i < m->n; i++) {
        starling__w_u64(&w, m->links[i].id);
        starling__w_u64(&w, m->links[i].bytes_per_s);
        starling__w_u32(&w, m->links[i].rtt_us);
    }
    return finish(&w, out, MSG_LINKS);
}

/* Links to distinct, nonzero ids; bandwidth below 1 TB/s, round trips below 10 minutes. */
int starling__links_decode(const uint8_t *p, size_t len, starling__msg_links *m)
{
    starling__rbuf r;
    starling__r_init(&r, p, len);
    m->epoch = starling__r_u64(&r);
    m->n = starling__r_u32(&r);
    if (r.err || m->n > STARLING_MAX_PEERS)
        return STARLING_E_PROTOCOL;
    for (uint32_t i = 0; i < m->n; i++) {
        starling__link_est *l = &m->links[i];
        l->id = starling__r_u64(&r);
        l->bytes_per_s = starling__r_u64(&r);
        l->rtt_us = starling__r_u32(&r);
        if (r.err || l->id == 0 || l->bytes_per_s > STARLING_LINK_BPS_MAX ||
            l->rtt_us > STARLING_LINK_RTT_US_MAX)
            return STARLING_E_PROTOCOL;
        for (uint32_t j = 0; j < i; j++)
            if (m->links[j].id == l->id)
                return STARLING_E_PROTOCOL;
    }
    return starling__r_finish(&r);
}

static void w_ids(starling__wbuf *w, uint64_t epoch, uint32_t n, const uint64_t *ids)
{
    starling__w_u64(w, epoch);
    starling__w_u32(w, n);
    for (uint32_t i = 0; i < n; i++)
        starling__w_u64(w, ids[i]);
}

int starling__state_encode(uint8_t *out, size_t cap, const starling__msg_state *m)
{
    starling__wbuf w;
    if (begin(&w, out, cap) || m->n > STARLING_MAX_PEERS || m->nnext > STARLING_MAX_PEERS)
        return STARLING_E_LIMIT;
    starling__w_u64(&w, m->seq);
    starling__w_u64(&w, m->stamp);
    w_ids(&w, m->epoch, m->n, m->ids);
    w_ids(&w, m->next_epoch, m->nnext, m->next_ids);
    return finish(&w, out, MSG_STATE);
}

/* An epoch and its member list: none (0, empty) or a nonempty list of nonzero ids. */
static int r_ids(starling__rbuf *r, uint64_t *epoch, uint32_t *n, uint64_t *ids)
{
    *epoch = starling__r_u64(r);
    *n = starling__r_u32(r);
    if (r->err || *n > STARLING_MAX_PEERS || (*epoch == 0) != (*n == 0))
        return STARLING_E_PROTOCOL;
    for (uint32_t i = 0; i < *n; i++)
        if ((ids[i] = starling__r_u64(r)) == 0 || r->err)
            return STARLING_E_PROTOCOL;
    return STARLING_OK;
}

int starling__state_decode(const uint8_t *p, size_t len, starling__msg_state *m)
{
    starling__rbuf r;
    starling__r_init(&r, p, len);
    m->seq = starling__r_u64(&r);
    m->stamp = starling__r_u64(&r);
    if (r.err || m->seq == 0 || r_ids(&r, &m->epoch, &m->n, m->ids) ||
        r_ids(&r, &m->next_epoch, &m->nnext, m->next_ids))
        return STARLING_E_PROTOCOL;
    if (m->next_epoch && m->next_epoch <= m->epoch)
        return STARLING_E_PROTOCOL;
    return starling__r_finish(&r);
}

/* Which fields each small control message carries: E(poch), A, B, C(ode). */
static unsigned epoch_fields(uint8_t type)
{
    switch (type) {
    case MSG_HEARTBEAT:
    case MSG_LEAVE:
    case MSG_ACCEPT: return 0;
    case MSG_TOPO_REQ:
    case MSG_QUERY: return 1;
    case MSG_FAIL: return 1 | 2 | 8;
    case MSG_STATUS: return 1 | 2 | 4;
    case MSG_DECIDE: return 1 | 2 | 8;
    case MSG_WATCH: return 1 | 2;
    default: return 0x80; /* not a small control message */
    }
}

int starling__epoch_encode(uint8_t *out, size_t cap, uint8_t type, const starling__msg_epoch *m)
{
    starling__wbuf w;
    unsigned f = epoch_fields(type);
    if (f & 0x80)
        return STARLING_E_INVALID;
    if (begin(&w, out, cap))
        return STARLING_E_LIMIT;
    if (f & 1)
        starling__w_u64(&w, m->epoch);
    if (f & 2)
        starling__w_u64(&w, m->a);
    if (f & 4)
        starling__w_u64(&w, m->b);
    if (f & 8)
        starling__w_u32(&w, (uint32_t)m->code);
    return finish(&w, out, type);
}

int starling__epoch_decode(uint8_t type, const uint8_t *p, size_t len, starling__msg_epoch *m)
{
    starling__rbuf r;
    unsigned f = epoch_fields(type);
    if (f & 0x80)
        return STARLING_E_PROTOCOL;
    memset(m, 0, sizeof *m);
    starling__r_init(&r, p, len);
    if (f & 1)
        m->epoch = starling__r_u64(&r);
    if (f & 2)
        m->a = starling__r_u64(&r);
    if (f & 4)
        m->b = starling__r_u64(&r);
    if (f & 8)
        m->code = (int32_t)starling__r_u32(&r);
    if (starling__r_finish(&r))
        return STARLING_E_PROTOCOL;
    if ((f & 8) && (m->code > 0 || m->code < STARLING_E_BUSY))
        return STARLING_E_PROTOCOL;
    if (type == MSG_STATUS && m->a > m->b)
        return STARLING_E_PROTOCOL;
    return STARLING_OK;
}

int starling__data_encode(uint8_t *out, size_t cap, uint8_t type, uint8_t flags,
                          const starling__msg_data *m, uint32_t nbytes)
{
    starling__wbuf w;
    if (type != MSG_DATA && type != MSG_DONE && type != MSG_ABORT)
        return STARLING_E_INVALID;
    if (type != MSG_DATA && (nbytes || flags))
        return STARLING_E_INVALID;
    if (flags & ~STARLING_DATA_F_ZSTD)
        return STARLING_E_INVALID;
    if (nbytes > UINT32_MAX - STARLING_DATA_HDR)
        return STARLING_E_LIMIT;
    if (begin(&w, out, cap))
        return STARLING_E_LIMIT;
    starling__w_u64(&w, m->seq);
    starling__w_u64(&w, m->desc);
    starling__w_u32(&w, m->step);
    starling__w_u32(&w, m->piece);
    if (w.err)
        return STARLING_E_LIMIT;
    starling__frame_hdr_encode(out, type, STARLING_DATA_HDR + nbytes);
    out[1] = flags;
    return (int)w.len;
}

int starling__data_decode(const uint8_t p[STARLING_DATA_HDR], starling__msg_data *m)
{
    starling__rbuf r;
    starling__r_init(&r, p, STARLING_DATA_HDR);
    m->seq = starling__r_u64(&r);
    m->desc = starling__r_u64(&r);
    m->step = starling__r_u32(&r);
    m->piece = starling__r_u32(&r);
    if (starling__r_finish(&r) || m->seq == 0)
        return STARLING_E_PROTOCOL;
    return STARLING_OK;
}
