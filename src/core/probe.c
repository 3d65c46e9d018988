/* Link measurement: how fast and how far each other member of the epoch is.
 *
 * A probe is a data-plane connection of its own (HELLO role ROLE_PROBE, authenticated
 * and sealed like a ring link): the prober sends a u64 byte count, then that many bytes
 * in records of at most 64 KiB, each sealed (auth/seal.h: ciphertext, then a tag); the
 * other side reads them all and answers the same u64. The TCP connect gives a round-trip
 * estimate; the time from the first byte sent to the answer, less one round trip, gives
 * the bandwidth. Member r probes member (r + k) mod n in round k = 1..n-1, so in each
 * round every member sends one probe and receives one, and the rounds line up without a
 * barrier as long as the links are alike. Probes that share a bottleneck (several links
 * crossing one slow uplink in the same round) each see their share of it: still the
 * slowest links, which is what the ring order needs to know. docs/protocol.md has the
 * bytes, docs/architecture.md what the coordinator does with the figures. */
#include <string.h>

#include "core/internal.h"
#include "platform/clock.h"
#include "util/alloc.h"
#include "util/log.h"

#define PROBE_CHUNK (64u << 10)

/* Each probe, on either side, is bounded by this. */
static int64_t probe_deadline_ms(const starling_comm *c)
{
    int64_t ms = 4 * (int64_t)c->cfg.timeout_ms;
    if (ms < 2000)
        ms = 2000;
    if (ms > c->cfg.op_timeout_ms)
        ms = c->cfg.op_timeout_ms;
    return starling__now_ms() + ms;
}

static void put_u64(uint8_t out[8], uint64_t v)
{
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t in[8])
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | in[i];
    return v;
}

static int stopping(starling_comm *c)
{
    int stop;
    pthread_mutex_lock(&c->mu);
    stop = c->stop;
    pthread_mutex_unlock(&c->mu);
    return stop;
}

/* Sends the probe over an authenticated connection; returns the microseconds from the
 * first byte to the answer, or a negative error. */
static int64_t send_probe(starling_comm *c, int fd, starling__seal *seal, uint32_t bytes,
                          const uint8_t *chunk, uint8_t *scratch, int64_t deadline_ms)
{
    uint8_t word[8], sword[8];
    int64_t t0;
    int rc;
    put_u64(word, bytes);
    t0 = starling__now_ns();
    if ((rc = starling__sealed_send_all(fd, seal, word, sizeof word, sword, deadline_ms)))
        return rc;
    for (uint32_t sent = 0; sent < bytes;) {
        uint32_t n = bytes - sent < PROBE_CHUNK ? bytes - sent : PROBE_CHUNK;
        if (stopping(c))
            return STARLING_E_CLOSED;
        if ((rc = starling__sealed_send_all(fd, seal, chunk, n, scratch, deadline_ms)))
            return rc;
        sent += n;
    }
    if ((rc = starling__sealed_recv_all(fd, seal, word, sizeof word, deadline_ms)))
        return rc;
    if (get_u64(word) != bytes)
        return STARLING_E_PROTOCOL;
    return (starling__now_ns() - t0) / 1000;
}

static void probe_one(starling_comm *c, const starling__member *to, uint64_t epoch, uint32_t bytes,
                      uint8_t *chunk, int64_t all_deadline_ms, starling__link_est *out)
{
    int64_t deadline = probe_deadline_ms(c), t0 = starling__now_ns(), rtt_us, us;
    starling__msg_hello h;
    starling__seal seal;
    char why[128] = "";
    int fd, rc;

    out->id = to->id;
    if (to->port == 0) {
        SLOG_INFO("%s: link to %s not measured: it accepts no inbound connections", c->name,
                  to->host);
        return;
    }
    if (deadline > all_deadline_ms)
        deadline = all_deadline_ms;
    if (starling__ms_until(deadline) == 0) {
        SLOG_WARN("%s: link to %s:%u not measured: no time left (op timeout)", c->name, to->host,
                  (unsigned)to->port);
        return;
    }
    rc = starling__tcp_connect(to->host, to->port, (int)c->cfg.socket_buffer,
                               starling__ms_until(deadline), &fd, why, sizeof why);
    if (rc != STARLING_OK) {
        SLOG_WARN("%s: link to %s:%u not measured: %s", c->name, to->host, (unsigned)to->port,
                  why);
        return;
    }
    rtt_us = (starling__now_ns() - t0) / 1000;
    memset(&h, 0, sizeof h);
    h.role = ROLE_PROBE;
    h.peer_id = c->id;
    h.epoch = epoch;
    rc = starling__handshake_client(fd, &c->key, &h, &seal, deadline, why, sizeof why);
    us = rc == STARLING_OK ? send_probe(c, fd, &seal, bytes, chunk, chunk + PROBE_CHUNK, deadline)
                           : rc;
    starling__sock_close(fd);
    starling__seal_wipe(&seal);
    if (us < 0) {
        SLOG_WARN("%s: link to %s:%u not measured: %s %s", c->name, to->host,
                  (unsigned)to->port, starling_strerror((int)us), why);
        return;
    }
    /* One round trip of the exchange is latency, not transfer; never count it as more
     * than half of the time. */
    us = us - rtt_us > us / 2 ? us - rtt_us : us / 2;
    if (us < 1)
        us = 1;
    out->bytes_per_s = (uint64_t)((double)bytes * 1e6 / (double)us);
    out->rtt_us = rtt_us < 1 ? 1 : (uint32_t)(rtt_us < STARLING_LINK_RTT_US_MAX
                                                   ? rtt_us : STARLING_LINK_RTT_US_MAX);
    if (out->bytes_per_s > STARLING_LINK_BPS_MAX)
        out->bytes_per_s = STARLING_LINK_BPS_MAX;
}

void starling__probe_links(starling_comm *c, const starling__member *m, int n, int rank,
                           uint64_t epoch, uint32_t bytes, int64_t deadline_ms,
                           starling__link_est *est)
{
    uint8_t *chunk = starling__calloc(2 * PROBE_CHUNK, 1); /* the bytes, then their seal */
    memset(est, 0, sizeof *est * (size_t)n);
    if (!chunk) {
        SLOG_WARN("%s: no memory to measure links", c->name);
        return;
    }
    for (int k = 1; k < n; k++) {
        int j = (rank + k) % n;
        probe_one(c, &m[j], epoch, bytes, chunk, deadline_ms, &est[j]);
        if (m[j].port == 0)
            continue;
        SLOG_INFO("%s: link to %s:%u: %.1f Mbit/s, rtt %.3f ms", c->name, m[j].host,
                  (unsigned)m[j].port, (double)est[j].bytes_per_s * 8e-6,
                  (double)est[j].rtt_us * 1e-3);
    }
    starling__free(chunk);
}

/* Whether to answer a probe: from a member of this member's epoch, or from a member of
 * a later one (this member has not taken it yet), and not too many at once, so that
 * probes never hold all the handshake pool's threads the ring links need. Takes a slot
 * (given back by probe_done) when it says yes. */
static int probe_admit(starling_comm *c, const starling__msg_hello *h)
{
    int ok;
    pthread_mutex_lock(&c->mu);
    ok = h->epoch > c->pub_epoch;
    for (int i = 0; !ok && c->pub_ids && i < c->pub_size; i++)
        ok = c->pub_ids[i] == h->peer_id && h->epoch == c->pub_epoch;
    ok = ok && c->probes_serving < STARLING_PROBES_SERVED;
    c->probes_serving += ok;
    pthread_mutex_unlock(&c->mu);
    return ok;
}

static void probe_done(starling_comm *c)
{
    pthread_mutex_lock(&c->mu);
    c->probes_serving--;
    pthread_mutex_unlock(&c->mu);
}

void starling__probe_serve(starling_comm *c, int fd, const starling__msg_hello *h,
                           starling__seal *seal)
{
    int64_t deadline = probe_deadline_ms(c);
    uint8_t word[8], *buf = NULL;
    uint64_t bytes = 0, left;
    int rc;

    if (!probe_admit(c, h)) {
        SLOG_WARN("%s: refused a link probe from %016llx (epoch %llu): not a member of this "
                  "epoch, or too many probes at once", c->name, (unsigned long long)h->peer_id,
                  (unsigned long long)h->epoch);
        starling__sock_close(fd);
        return;
    }
    rc = starling__sealed_recv_all(fd, seal, word, sizeof word, deadline);
    if (rc == STARLING_OK)
        bytes = get_u64(word);
    if (rc == STARLING_OK && (bytes < STARLING__PROBE_MIN || bytes > STARLING__PROBE_MAX)) {
        SLOG_WARN("%s: refused a link probe of %llu bytes (allowed %u..%u)", c->name,
                  (unsigned long long)bytes, STARLING__PROBE_MIN, STARLING__PROBE_MAX);
        rc = STARLING_E_PROTOCOL;
    }
    if (rc == STARLING_OK && !(buf = starling__malloc(PROBE_CHUNK)))
        rc = STARLING_E_NOMEM;
    for (left = bytes; rc == STARLING_OK && left > 0;) {
        size_t n = left < PROBE_CHUNK ? (size_t)left : PROBE_CHUNK;
        rc =
            stopping(c) ? STARLING_E_CLOSED : starling__sealed_recv_all(fd, seal, buf, n, deadline);
        left -= n;
    }
    if (rc == STARLING_OK) {
        uint8_t sword[8];
        rc = starling__sealed_send_all(fd, seal, word, sizeof word, sword, deadline);
    }
    if (rc != STARLING_OK)
        SLOG_DEBUG("%s: link probe ended early: %s", c->name, starling_strerror(rc));
    starling__free(buf);
    starling__sock_close(fd);
    probe_done(c);
}
