/* libFuzzer target for the wire decoders (src/proto/msg.c).
 *
 * The input is a whole frame: the 8-byte header, then the payload. The header goes to
 * starling__frame_hdr_decode; the rest, whatever the header says, goes to the decoder
 * that the first byte (the type) selects, so that every decoder sees every kind of
 * garbage. For every accepted payload the harness checks that the encoding is canonical:
 * encode(decode(x)) == x byte for byte, and decode(encode(decode(x))) == decode(x).
 * A failed check aborts (the checks are not assert()s, which NDEBUG would remove).
 * Every rule docs/protocol.md lists for an accepted message is checked again here, so a
 * decoder that lets something through that it should refuse is a crash, not a pass.
 *
 * Protocol version 6: a u64 host tag at the end of HELLO and of CHALLENGE, and the two
 * messages of ring links on one host, SHM_OFFER (22: pid, fd, a ring size of 0 or a power
 * of two in 64 KiB..256 MiB, nonce) and SHM_REPLY (23: ok 0 or 1). Version 5 added HELLO
 * role 4 (ROLE_DATA_REV, a reversed ring link, with the data role's stream bounds) and
 * port 0 in REGISTER and in TOPO's members (a peer that accepts no inbound connections),
 * version 4 STATE (21) and WATCH (20), version 3 HELLO's and CHALLENGE's security and
 * caps bytes, version 2 HELLO role 3 (probe), TOPO's trailing probe_bytes and LINKS (19).
 * tests/golden/v6/ holds one valid frame of each, a useful extra seed directory:
 *   ./tests/fuzz/fuzz_frames corpus-frames /path/to/tests/golden/v6
 *
 * Built two ways (tests/fuzz/CMakeLists.txt): with -fsanitize=fuzzer by clang, and as
 * fuzz_frames_replay with fuzz_replay.c, which replays the saved corpus under ctest. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/msg.h"
#include "starling.h"
#include "util/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The data-plane limit the header is decoded with: the default chunk size. */
#define MAX_DATA (1u << 20)

static uint8_t enc[STARLING_FRAME_HDR + STARLING_CTRL_MAX];
/* Decoded messages are big (a topo is ~40 KiB): static, not on the stack. */
static starling__msg_register reg1, reg2;
static starling__msg_topo topo1, topo2;
static starling__msg_links links1, links2;

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* n is what an encoder returned for a message decoded from (p, len). */
static void check_canonical(int n, uint8_t type, const uint8_t *p, size_t len)
{
    CHECK(n >= STARLING_FRAME_HDR);
    CHECK((size_t)n == STARLING_FRAME_HDR + len);
    CHECK(enc[0] == type && enc[1] == 0 && enc[2] == 0 && enc[3] == 0);
    CHECK(le32(enc + 4) == len);
    CHECK(len == 0 || memcmp(enc + STARLING_FRAME_HDR, p, len) == 0);
}

static void check_header(const uint8_t *data, size_t size)
{
    starling__frame_hdr h;
    uint8_t again[STARLING_FRAME_HDR];
    int rc;
    if (size < STARLING_FRAME_HDR)
        return;
    rc = starling__frame_hdr_decode(data, MAX_DATA, &h);
    CHECK(rc == STARLING_OK || rc == STARLING_E_PROTOCOL);
    if (rc != STARLING_OK)
        return;
    CHECK(h.type >= 1 && h.type <= MSG_TYPE_MAX);
    CHECK(h.type == data[0] && h.flags == data[1] && h.len == le32(data + 4));
    if (h.type == MSG_DATA)
        CHECK(h.len >= STARLING_DATA_HDR && h.len - STARLING_DATA_HDR <= MAX_DATA);
    else
        CHECK(h.len <= STARLING_CTRL_MAX);
    /* Re-encoding gives the same bytes, except flags, which the encoder writes as 0. */
    starling__frame_hdr_encode(again, h.type, h.len);
    CHECK(again[0] == data[0] && again[1] == 0 && memcmp(again + 2, data + 2, 6) == 0);
    /* The limits only narrow: what passes with MAX_DATA passes with a larger one. */
    CHECK(starling__frame_hdr_decode(data, UINT32_MAX, &h) == STARLING_OK);
}

static void fuzz_hello(const uint8_t *p, size_t len)
{
    starling__msg_hello a, b;
    int rc;
    memset(&a, 0, sizeof a);
    rc = starling__hello_decode(p, len, &a);
    CHECK(rc == STARLING_OK || rc == STARLING_E_PROTOCOL || rc == STARLING_E_VERSION);
    if (rc == STARLING_E_VERSION)
        CHECK(len >= 6 && a.magic == STARLING_MAGIC && a.version != STARLING_PROTOCOL_VERSION);
    if (rc != STARLING_OK)
        return;
    CHECK(a.magic == STARLING_MAGIC && a.version == STARLING_PROTOCOL_VERSION);
    CHECK(a.role == ROLE_CONTROL || a.role == ROLE_DATA || a.role == ROLE_PROBE ||
          a.role == ROLE_DATA_REV);
    CHECK(a.run[0] != '\0' && strlen(a.run) < STARLING_NAME_MAX);
    CHECK(a.security <= STARLING_SEC_MAX); /* caps, host: any bits */
    /* security and caps, then (v6) the 8-byte host tag, end the payload. */
    CHECK(len >= 10 && p[len - 10] == a.security && p[len - 9] == a.caps);
    CHECK(le64(p + len - 8) == a.host);
    CHECK(a.peer_host == 0); /* not on the wire: the handshake fills it in */
    if (a.role == ROLE_DATA || a.role == ROLE_DATA_REV)
        CHECK(a.nstreams >= 1 && a.nstreams <= 16 && a.stream < a.nstreams);
    check_canonical(starling__hello_encode(enc, sizeof enc, &a), MSG_HELLO, p, len);
    memset(&b, 0, sizeof b);
    CHECK(starling__hello_decode(enc + STARLING_FRAME_HDR, len, &b) == STARLING_OK);
    CHECK(a.magic == b.magic && a.version == b.version && a.role == b.role);
    CHECK(memcmp(a.nonce, b.nonce, STARLING_NONCE_LEN) == 0 && strcmp(a.run, b.run) == 0);
    CHECK(a.peer_id == b.peer_id && a.epoch == b.epoch);
    CHECK(a.stream == b.stream && a.nstreams == b.nstreams);
    CHECK(a.security == b.security && a.caps == b.caps && a.host == b.host);
}

static void fuzz_challenge(const uint8_t *p, size_t len)
{
    starling__msg_challenge a, b;
    if (starling__challenge_decode(p, len, &a) != STARLING_OK)
        return;
    /* nonce, mac, security and caps (v3), host (v6) */
    CHECK(len == STARLING_NONCE_LEN + STARLING_MAC_LEN + 2 + 8);
    CHECK(a.security <= STARLING_SEC_MAX); /* caps, host: any bits */
    CHECK(le64(p + len - 8) == a.host);
    check_canonical(starling__challenge_encode(enc, sizeof enc, &a), MSG_CHALLENGE, p, len);
    CHECK(starling__challenge_decode(enc + STARLING_FRAME_HDR, len, &b) == STARLING_OK);
    /* Field by field: the struct has padding before the u64 host. */
    CHECK(memcmp(a.nonce, b.nonce, STARLING_NONCE_LEN) == 0);
    CHECK(memcmp(a.mac, b.mac, STARLING_MAC_LEN) == 0);
    CHECK(a.security == b.security && a.caps == b.caps && a.host == b.host);
}

/* SHM_OFFER (v6): pid, fd, size, nonce; a size of 0 (no segment) or a power of two within
 * the ring limits, and a pid when there is a segment. */
static void fuzz_shm_offer(const uint8_t *p, size_t len)
{
    starling__msg_shm a, b;
    int rc = starling__shm_offer_decode(p, len, &a);
    CHECK(rc == STARLING_OK || rc == STARLING_E_PROTOCOL);
    if (rc != STARLING_OK)
        return;
    CHECK(len == 4 + 4 + 8 + 16);
    CHECK(a.pid == le32(p) && a.fd == le32(p + 4) && a.size == le64(p + 8));
    CHECK(memcmp(a.nonce, p + 16, sizeof a.nonce) == 0);
    if (a.size != 0) {
        CHECK(a.size >= (64u << 10) && a.size <= (256u << 20));
        CHECK((a.size & (a.size - 1)) == 0);
        CHECK(a.pid != 0);
    }
    CHECK(a.ok == 0); /* not part of an offer */
    check_canonical(starling__shm_offer_encode(enc, sizeof enc, &a), MSG_SHM_OFFER, p, len);
    CHECK(starling__shm_offer_decode(enc + STARLING_FRAME_HDR, len, &b) == STARLING_OK);
    CHECK(a.pid == b.pid && a.fd == b.fd && a.size == b.size && a.ok == b.ok);
    CHECK(memcmp(a.nonce, b.nonce, sizeof a.nonce) == 0);
}

/* SHM_REPLY (v6): one byte, 0 or 1. */
static void fuzz_shm_reply(const uint8_t *p, size_t len)
{
    starling__msg_shm a, b;
    int rc = starling__shm_reply_decode(p, len, &a);
    CHECK(rc == STARLING_OK || rc == STARLING_E_PROTOCOL);
    if (rc != STARLING_OK)
        return;
    CHECK(len == 1 && a.ok == p[0] && a.ok <= 1);
    check_canonical(starling__shm_reply_encode(enc, sizeof enc, &a), MSG_SHM_REPLY, p, len);
    CHECK(starling__shm_reply_decode(enc + STARLING_FRAME_HDR, len, &b) == STARLING_OK);
    CHECK(a.ok == b.ok);
}

static void fuzz_auth(const uint8_t *p, size_t len)
{
    starling__msg_auth a, b;
    if (starling__auth_decode(p, len, &a) != STARLING_OK)
        return;
    CHECK(len == STARLING_MAC_LEN);
    check_canonical(starling__auth_encode(enc, sizeof enc, &a), MSG_AUTH, p, len);
    CHECK(starling__auth_decode(enc + STARLING_FRAME_HDR, len, &b) == STARLING_OK);
    CHECK(memcmp(a.mac, b.mac, STARLING_MAC_LEN) == 0);
}

static void fuzz_reject(const uint8_t *p, size_t len)
{
    starling__msg_reject a, b;
    if (starling__reject_decode(p, len, &a) != STARLING_OK)
        return;
    CHECK(a.code <= 0 && a.code >= STARLING_E_BUSY);
    CHECK(strlen(a.reason) < STARLING_REASON_MAX);
    check_canonical(starling__reject_encode(enc, sizeof enc, &a), MSG_REJECT, p, len);
    CHECK(starling__reject_decode(enc + STARLING_FRAME_HDR, len, &b) == STARLING_OK);
    CHECK(a.code == b.code && strcmp(a.reason, b.reason) == 0);
}

static void fuzz_register(const uint8_t *p, size_t len)
{
    if (starling__register_decode(p, len, &reg1) != STARLING_OK)
        return;
    CHECK(reg1.peer_id != 0 && reg1.host[0] != '\0'); /* port: any, 0 since v5 */
    CHECK(reg1.min_peers >= 1 && reg1.min_peers <= STARLING_MAX_PEERS);
    CHECK(reg1.nmembers <= STARLING_MAX_PEERS);
    CHECK(strlen(reg1.name) < STARLING_NAME_MAX && strlen(reg1.host) < STARLING_ADDR_MAX);
    check_canonical(starling__register_encode(enc, sizeof enc, &reg1), MSG_REGISTER, p, len);
    CHECK(starling__register_decode(enc + STARLING_FRAME_HDR, len, &reg2) == STARLING_OK);
    CHECK(reg1.peer_id == reg2.peer_id && strcmp(reg1.name, reg2.name) == 0);
    CHECK(strcmp(reg1.host, reg2.host) == 0 && reg1.port == reg2.port);
    CHECK(reg1.min_peers == reg2.min_peers && reg1.epoch == reg2.epoch);
    CHECK(reg1.nmembers == reg2.nmembers);
    CHECK(reg1.nmembers == 0 ||
          memcmp(reg1.members, reg2.members, reg1.nmembers * sizeof reg1.members[0]) == 0);
}

static void fuzz_welcome(const uint8_t *p, size_t len)
{
    starling__msg_welcome a, b;
    if (starling__welcome_decode(p, len, &a) != STARLING_OK)
        return;
    CHECK(a.timeout_ms >= 100 && a.timeout_ms <= 600000);
    check_canonical(starling__welcome_encode(enc, sizeof enc, &a), MSG_WELCOME, p, len);
    CHECK(starling__welcome_decode(enc + STARLING_FRAME_HDR, len, &b) == STARLING_OK);
    CHECK(a.coord_id == b.coord_id && a.timeout_ms == b.timeout_ms);
}

static void fuzz_topo(const uint8_t *p, size_t len)
{
    if (starling__topo_decode(p, len, &topo1) != STARLING_OK)
        return;
    CHECK(topo1.epoch != 0 && topo1.n >= 1 && topo1.n <= STARLING_MAX_PEERS);
    CHECK(topo1.rank < topo1.n);
    CHECK(topo1.probe_bytes == 0 || (topo1.probe_bytes >= STARLING__PROBE_MIN &&
                                     topo1.probe_bytes <= STARLING__PROBE_MAX));
    /* probe_bytes is the last field: the payload's last 4 bytes. */
    CHECK(len >= 4 && le32(p + len - 4) == topo1.probe_bytes);
    check_canonical(starling__topo_encode(enc, sizeof enc, &topo1), MSG_TOPO, p, len);
    CHECK(starling__topo_decode(enc + STARLING_FRAME_HDR, len, &topo2) == STARLING_OK);
    CHECK(topo1.epoch == topo2.epoch && topo1.rank == topo2.rank && topo1.n == topo2.n);
    CHECK(topo1.probe_bytes == topo2.probe_bytes);
    for (uint32_t i = 0; i < topo1.n; i++) {
        CHECK(topo1.members[i].id != 0); /* port: any, 0 since v5 */
        CHECK(topo1.members[i].id == topo2.members[i].id);
        CHECK(strcmp(topo1.members[i].host, topo2.members[i].host) == 0);
        CHECK(topo1.members[i].port == topo2.members[i].port);
    }
}

static void fuzz_links(const uint8_t *p, size_t len)
{
    int rc = starling__links_decode(p, len, &links1);
    CHECK(rc == STARLING_OK || rc == STARLING_E_PROTOCOL);
    if (rc != STARLING_OK)
        return;
    /* epoch u64, n u32, then n entries of id u64, bytes_per_s u64, rtt_us u32 */
    CHECK(links1.n <= STARLING_MAX_PEERS && len == 12 + 20 * (size_t)links1.n);
    for (uint32_t i = 0; i < links1.n; i++) {
        CHECK(links1.links[i].id != 0);
        CHECK(links1.links[i].bytes_per_s <= STARLING_LINK_BPS_MAX);
        CHECK(links1.links[i].rtt_us <= STARLING_LINK_RTT_US_MAX);
        for (uint32_t j = 0; j < i; j++)
            CHECK(links1.links[j].id != links1.links[i].id);
    }
    check_canonical(starling__links_encode(enc, sizeof enc, &links1), MSG_LINKS, p, len);
    CHECK(starling__links_decode(enc + STARLING_FRAME_HDR, len, &links2) == STARLING_OK);
    CHECK(links1.epoch == links2.epoch && links1.n == links2.n);
    for (uint32_t i = 0; i < links1.n; i++) {
        CHECK(links1.links[i].id == links2.links[i].id);
        CHECK(links1.links[i].bytes_per_s == links2.links[i].bytes_per_s);
        CHECK(links1.links[i].rtt_us == links2.links[i].rtt_us);
    }
}

static starling__msg_state state1, state2;

static void fuzz_state(const uint8_t *p, size_t len)
{
    int rc = starling__state_decode(p, len, &state1);
    CHECK(rc == STARLING_OK || rc == STARLING_E_PROTOCOL);
    if (rc != STARLING_OK)
        return;
    /* seq, stamp, then two (epoch u64, n u32, n ids) lists */
    CHECK(len == 40 + 8 * ((size_t)state1.n + state1.nnext));
    CHECK(state1.seq != 0);
    CHECK((state1.epoch == 0) == (state1.n == 0) && state1.n <= STARLING_MAX_PEERS);
    CHECK((state1.next_epoch == 0) == (state1.nnext == 0) && state1.nnext <= STARLING_MAX_PEERS);
    CHECK(state1.next_epoch == 0 || state1.next_epoch > state1.epoch);
    for (uint32_t i = 0; i < state1.n; i++)
        CHECK(state1.ids[i] != 0);
    for (uint32_t i = 0; i < state1.nnext; i++)
        CHECK(state1.next_ids[i] != 0);
    check_canonical(starling__state_encode(enc, sizeof enc, &state1), MSG_STATE, p, len);
    CHECK(starling__state_decode(enc + STARLING_FRAME_HDR, len, &state2) == STARLING_OK);
    CHECK(state1.seq == state2.seq && state1.stamp == state2.stamp);
    CHECK(state1.epoch == state2.epoch && state1.n == state2.n);
    CHECK(state1.next_epoch == state2.next_epoch && state1.nnext == state2.nnext);
    CHECK(memcmp(state1.ids, state2.ids, state1.n * sizeof state1.ids[0]) == 0);
    CHECK(memcmp(state1.next_ids, state2.next_ids, state1.nnext * sizeof state1.ids[0]) == 0);
}

static void fuzz_epoch(uint8_t type, const uint8_t *p, size_t len)
{
    starling__msg_epoch a, b;
    int rc = starling__epoch_decode(type, p, len, &a);
    CHECK(rc == STARLING_OK || rc == STARLING_E_PROTOCOL);
    if (rc != STARLING_OK)
        return;
    if (type == MSG_FAIL || type == MSG_DECIDE)
        CHECK(a.code <= 0 && a.code >= STARLING_E_BUSY);
    if (type == MSG_STATUS)
        CHECK(a.a <= a.b);
    check_canonical(starling__epoch_encode(enc, sizeof enc, type, &a), type, p, len);
    CHECK(starling__epoch_decode(type, enc + STARLING_FRAME_HDR, len, &b) == STARLING_OK);
    CHECK(a.epoch == b.epoch && a.a == b.a && a.b == b.b && a.code == b.code);
}

/* DATA, DONE, ABORT: the fixed 24-byte header after the frame header. */
static void fuzz_data(uint8_t type, const uint8_t *p, size_t len)
{
    starling__msg_data a, b;
    uint32_t nbytes;
    int n;
    if (len < STARLING_DATA_HDR)
        return;
    if (starling__data_decode(p, &a) != STARLING_OK)
        return;
    CHECK(a.seq != 0);
    nbytes = type == MSG_DATA ? (uint32_t)(len - STARLING_DATA_HDR) : 0;
    n = starling__data_encode(enc, sizeof enc, type, 0, &a, nbytes);
    CHECK(n == STARLING_FRAME_HDR + STARLING_DATA_HDR);
    CHECK(enc[0] == type && le32(enc + 4) == STARLING_DATA_HDR + nbytes);
    CHECK(memcmp(enc + STARLING_FRAME_HDR, p, STARLING_DATA_HDR) == 0);
    CHECK(starling__data_decode(enc + STARLING_FRAME_HDR, &b) == STARLING_OK);
    CHECK(a.seq == b.seq && a.desc == b.desc && a.step == b.step && a.piece == b.piece);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p;
    size_t len;
    uint8_t type;
    /* Cap the payload at what a control frame may carry, so one input stays cheap. */
    if (size < 1 || size > STARLING_FRAME_HDR + STARLING_CTRL_MAX)
        return 0;
    check_header(data, size);
    type = data[0];
    p = size > STARLING_FRAME_HDR ? data + STARLING_FRAME_HDR : data + size;
    len = size > STARLING_FRAME_HDR ? size - STARLING_FRAME_HDR : 0;
    switch (type) {
    case MSG_HELLO: fuzz_hello(p, len); break;
    case MSG_CHALLENGE: fuzz_challenge(p, len); break;
    case MSG_AUTH: fuzz_auth(p, len); break;
    case MSG_REJECT: fuzz_reject(p, len); break;
    case MSG_REGISTER: fuzz_register(p, len); break;
    case MSG_WELCOME: fuzz_welcome(p, len); break;
    case MSG_TOPO: fuzz_topo(p, len); break;
    case MSG_LINKS: fuzz_links(p, len); break;
    case MSG_STATE: fuzz_state(p, len); break;
    case MSG_SHM_OFFER: fuzz_shm_offer(p, len); break;
    case MSG_SHM_REPLY: fuzz_shm_reply(p, len); break;
    case MSG_WATCH:
    case MSG_HEARTBEAT:
    case MSG_TOPO_REQ:
    case MSG_FAIL:
    case MSG_QUERY:
    case MSG_STATUS:
    case MSG_DECIDE:
    case MSG_LEAVE:
    case MSG_ACCEPT: fuzz_epoch(type, p, len); break;
    case MSG_DATA:
    case MSG_DONE:
    case MSG_ABORT: fuzz_data(type, p, len); break;
    default: {
        /* Not a message type: the generic codecs must refuse it. */
        starling__msg_epoch e;
        starling__msg_data d = {1, 0, 0, 0};
        memset(&e, 0, sizeof e);
        CHECK(starling__epoch_decode(type, p, len, &e) == STARLING_E_PROTOCOL);
        CHECK(starling__epoch_encode(enc, sizeof enc, type, &e) == STARLING_E_INVALID);
        CHECK(starling__data_encode(enc, sizeof enc, type, 0, &d, 0) == STARLING_E_INVALID);
        break;
    }
    }
    return 0;
}
