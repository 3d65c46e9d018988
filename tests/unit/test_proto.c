/* Unit tests of the wire protocol (src/proto/msg.c): every message round-trips, every
 * decoder refuses every malformed payload we can think of, and the golden frames of each
 * protocol version are pinned byte for byte (tests/golden/v<N>/ holds the same bytes as
 * files; test_golden_files checks that). A golden test that fails means the wire format
 * changed: that needs a new STARLING_PROTOCOL_VERSION and a tests/golden/v<N+1>, not an
 * edit of the constants below.
 *
 * Version 2 added ROLE_PROBE, TOPO's trailing probe_bytes and the LINKS message. Version 3
 * added two bytes, security and caps, at the end of HELLO and of CHALLENGE. Version 4
 * added WATCH and STATE, between coordinators. Version 5 lets REGISTER and TOPO carry
 * port 0 (a peer that accepts no inbound connections) and adds the HELLO role
 * ROLE_DATA_REV (4), a ring link opened by the right neighbour. Version 6 (the current
 * one) adds a u64 host tag at the end of HELLO and of CHALLENGE, and two messages for
 * ring links between members on one host, SHM_OFFER (22) and SHM_REPLY (23). The
 * constants of older versions are kept as they were: frames whose bytes version 6 still
 * produces (REGISTER, DECIDE, the DATA header, v2's TOPO and LINKS, v4's STATE and WATCH,
 * v5's REGISTER and TOPO with port 0) are checked as before, and those that changed are
 * checked for how version 6 treats them (a v1 to v5 HELLO is a version refusal, a v1
 * TOPO and a v3 CHALLENGE are too short). The v2 constants follow the v1 ones, the v3
 * constants (HELLO, HELLO probe, and CHALLENGE, which had none before) follow them, then
 * the v4 ones (HELLO, HELLO probe, STATE, WATCH), the v5 ones (HELLO, HELLO probe, HELLO
 * reversed data link, REGISTER and TOPO with port 0), and the v6 ones (the three HELLOs
 * and CHALLENGE with their host tag, SHM_OFFER, SHM_REPLY) come last. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/msg.h"
#include "starling.h"
#include "util/config.h"

/* Largest control frame, plus room to append trailing garbage. */
#define FRAME_MAX (STARLING_FRAME_HDR + STARLING_CTRL_MAX + 64)
#define CHUNK (1u << 20) /* max data payload used for header decoding (default chunk) */

static uint8_t frame[FRAME_MAX];
/* Big structs live here rather than on the stack (a topo is ~40 KiB). */
static starling__msg_register reg_a, reg_b;
static starling__msg_topo topo_a, topo_b;
static starling__msg_links links_a, links_b;
static starling__msg_state state_a, state_b;

/* ---------------------------------------------------------------- helpers */

/* Checks the frame header an encoder wrote and returns its payload length. */
static size_t frame_check(const uint8_t *f, int n, uint8_t type)
{
    starling__frame_hdr h;
    assert_true(n >= STARLING_FRAME_HDR);
    assert_int_equal(starling__frame_hdr_decode(f, CHUNK, &h), STARLING_OK);
    assert_int_equal(h.type, type);
    assert_int_equal(h.flags, 0);
    assert_int_equal(h.len, (uint32_t)n - STARLING_FRAME_HDR);
    return h.len;
}

/* Hex with optional spaces and newlines -> bytes. */
static size_t unhex(const char *s, uint8_t *out, size_t cap)
{
    size_t n = 0;
    int hi = -1;
    for (; *s; s++) {
        int v;
        if (*s == ' ' || *s == '\n')
            continue;
        if (*s >= '0' && *s <= '9')
            v = *s - '0';
        else if (*s >= 'a' && *s <= 'f')
            v = *s - 'a' + 10;
        else
            v = -1;
        assert_true(v >= 0);
        if (hi < 0) {
            hi = v;
        } else {
            assert_true(n < cap);
            out[n++] = (uint8_t)(hi << 4 | v);
            hi = -1;
        }
    }
    assert_true(hi < 0);
    return n;
}

/* Hands the decoder exactly `len` bytes on the heap, so that AddressSanitizer sees any
 * read past the end of the payload. */
static uint8_t *exact_copy(const uint8_t *p, size_t len)
{
    uint8_t *c = malloc(len ? len : 1);
    assert_non_null(c);
    if (len)
        memcpy(c, p, len);
    return c;
}

/* The decoder of a control frame's payload, chosen by type. */
static int decode_any(uint8_t type, const uint8_t *p, size_t len)
{
    static starling__msg_hello hello;
    static starling__msg_challenge challenge;
    static starling__msg_auth auth;
    static starling__msg_reject reject;
    static starling__msg_welcome welcome;
    static starling__msg_epoch epoch;
    static starling__msg_shm shm;
    switch (type) {
    case MSG_HELLO: return starling__hello_decode(p, len, &hello);
    case MSG_CHALLENGE: return starling__challenge_decode(p, len, &challenge);
    case MSG_AUTH: return starling__auth_decode(p, len, &auth);
    case MSG_REJECT: return starling__reject_decode(p, len, &reject);
    case MSG_REGISTER: return starling__register_decode(p, len, &reg_b);
    case MSG_WELCOME: return starling__welcome_decode(p, len, &welcome);
    case MSG_TOPO: return starling__topo_decode(p, len, &topo_b);
    case MSG_LINKS: return starling__links_decode(p, len, &links_b);
    case MSG_STATE: return starling__state_decode(p, len, &state_b);
    case MSG_SHM_OFFER: return starling__shm_offer_decode(p, len, &shm);
    case MSG_SHM_REPLY: return starling__shm_reply_decode(p, len, &shm);
    default: return starling__epoch_decode(type, p, len, &epoch);
    }
}

/* Decodes a payload given as an exact heap copy. */
static int decode_exact(uint8_t type, const uint8_t *p, size_t len)
{
    uint8_t *c = exact_copy(p, len);
    int rc = decode_any(type, c, len);
    free(c);
    return rc;
}

/* ---------------------------------------------------------------- sample messages */

#define SAMPLE_HOST 0x1f2e3d4c5b6a7988ull /* a host tag (v6) */

static void sample_hello(starling__msg_hello *m, uint8_t role)
{
    memset(m, 0, sizeof *m);
    m->magic = STARLING_MAGIC;
    m->version = STARLING_PROTOCOL_VERSION;
    m->role = role;
    for (int i = 0; i < STARLING_NONCE_LEN; i++)
        m->nonce[i] = (uint8_t)(0xf0 ^ i);
    strcpy(m->run, "run-42");
    m->peer_id = 0x8877665544332211ull;
    if (role == ROLE_DATA || role == ROLE_DATA_REV) { /* v5: the reversed link too */
        m->epoch = 12;
        m->stream = 3;
        m->nstreams = 4;
    }
    if (role == ROLE_PROBE)
        m->epoch = 12; /* as src/core/probe.c sends it: stream and nstreams 0 */
    /* v3: nonzero, so that a decoder that skipped or swapped the two bytes is noticed. */
    m->security = STARLING_SEC_AEAD;
    m->caps = STARLING_CAP_AESGCM;
    /* v6: eight different bytes, so that a decoder that reads them in the wrong order or
     * from the wrong place is noticed. */
    m->host = SAMPLE_HOST;
}

/* A segment as src/net/shm.c offers one: its own pid and descriptor, a ring of 4 MiB
 * (4 chunks of the default 1 MiB), a nonce of 16 different bytes. */
static void sample_shm_offer(starling__msg_shm *m)
{
    memset(m, 0, sizeof *m);
    m->pid = 0x00a1b2c3;
    m->fd = 17;
    m->size = 4u << 20;
    for (int i = 0; i < (int)sizeof m->nonce; i++)
        m->nonce[i] = (uint8_t)(0x90 + i);
}

static void sample_register(starling__msg_register *m, uint32_t nmembers)
{
    memset(m, 0, sizeof *m);
    m->peer_id = 0xfedcba9876543210ull;
    strcpy(m->name, "worker-7");
    strcpy(m->host, "192.168.1.20");
    m->port = 40001;
    m->min_peers = 4;
    m->epoch = nmembers ? 9 : 0;
    m->nmembers = nmembers;
    for (uint32_t i = 0; i < nmembers; i++)
        m->members[i] = 1000 + (uint64_t)i * 0x100000001ull;
}

static void sample_topo(starling__msg_topo *m, uint32_t n)
{
    memset(m, 0, sizeof *m);
    m->epoch = 77;
    m->rank = n - 1;
    m->n = n;
    for (uint32_t i = 0; i < n; i++) {
        m->members[i].id = 0x100 + i;
        snprintf(m->members[i].host, sizeof m->members[i].host, "10.%u.%u.%u",
                 (unsigned)(i >> 16) & 255u, (unsigned)(i >> 8) & 255u, (unsigned)i & 255u);
        m->members[i].port = (uint16_t)(20000 + i);
    }
    m->probe_bytes = 0;
}

/* n links to ids 0x200.., with bandwidths and round trips that differ per entry; the
 * entry i = 1 (when n > 1) could not be measured (0 bytes/s). */
static void sample_links(starling__msg_links *m, uint32_t n)
{
    memset(m, 0, sizeof *m);
    m->epoch = 77;
    m->n = n;
    for (uint32_t i = 0; i < n; i++) {
        m->links[i].id = 0x200 + (uint64_t)i * 0x10000000001ull;
        m->links[i].bytes_per_s = i == 1 ? 0 : 125000000ull * (i % 1000 + 1); /* Gbit/s */
        m->links[i].rtt_us = i == 1 ? 0 : 50 + 7 * i;
    }
}

static void sample_epoch(starling__msg_epoch *m)
{
    m->epoch = 0x0102030405060708ull;
    m->a = 5;
    m->b = 9;
    m->code = STARLING_E_PEER_LOST;
}

static const uint8_t epoch_types[] = {MSG_HEARTBEAT, MSG_TOPO_REQ, MSG_FAIL,  MSG_QUERY,
                                      MSG_STATUS,    MSG_DECIDE,   MSG_LEAVE, MSG_ACCEPT};

/* Payload size of each small control message (E=8, A=8, B=8, code=4). */
static size_t epoch_payload_len(uint8_t type)
{
    switch (type) {
    case MSG_TOPO_REQ:
    case MSG_QUERY: return 8;
    case MSG_FAIL:
    case MSG_DECIDE: return 20;
    case MSG_STATUS: return 24;
    default: return 0;
    }
}

/* One valid frame of every control type (two shapes for some): the input of the
 * generic truncation and trailing-byte tests. Returns the frame size, 0 past the end. */
static int build_sample(int idx, uint8_t *out, size_t cap, uint8_t *type)
{
    static starling__msg_hello hello;
    static starling__msg_challenge challenge;
    static starling__msg_auth auth;
    static starling__msg_reject reject;
    static starling__msg_welcome welcome;
    static starling__msg_epoch epoch;
    static starling__msg_shm shm;
    const int nfixed = 25;
    switch (idx) {
    case 0:
        sample_hello(&hello, ROLE_CONTROL);
        *type = MSG_HELLO;
        return starling__hello_encode(out, cap, &hello);
    case 1:
        sample_hello(&hello, ROLE_DATA);
        *type = MSG_HELLO;
        return starling__hello_encode(out, cap, &hello);
    case 2:
        memset(&challenge, 0x3c, sizeof challenge);
        challenge.security = STARLING_SEC_CHACHA; /* 0x3c would be refused */
        challenge.caps = 0x3c;                    /* only bit 0 means something; not checked */
        *type = MSG_CHALLENGE;
        return starling__challenge_encode(out, cap, &challenge);
    case 3:
        memset(&auth, 0x4d, sizeof auth);
        *type = MSG_AUTH;
        return starling__auth_encode(out, cap, &auth);
    case 4:
        reject.code = STARLING_E_AUTH;
        strcpy(reject.reason, "bad proof");
        *type = MSG_REJECT;
        return starling__reject_encode(out, cap, &reject);
    case 5:
        sample_register(&reg_a, 0);
        *type = MSG_REGISTER;
        return starling__register_encode(out, cap, &reg_a);
    case 6:
        sample_register(&reg_a, 3);
        *type = MSG_REGISTER;
        return starling__register_encode(out, cap, &reg_a);
    case 7:
        welcome.coord_id = 99;
        welcome.timeout_ms = 3000;
        *type = MSG_WELCOME;
        return starling__welcome_encode(out, cap, &welcome);
    case 8:
        sample_topo(&topo_a, 1);
        *type = MSG_TOPO;
        return starling__topo_encode(out, cap, &topo_a);
    case 9:
        sample_topo(&topo_a, 3);
        *type = MSG_TOPO;
        return starling__topo_encode(out, cap, &topo_a);
    case 10:
        strcpy(reject.reason, "");
        reject.code = STARLING_E_VERSION;
        *type = MSG_REJECT;
        return starling__reject_encode(out, cap, &reject);
    case 11:
        sample_hello(&hello, ROLE_PROBE);
        *type = MSG_HELLO;
        return starling__hello_encode(out, cap, &hello);
    case 12:
        sample_topo(&topo_a, 3);
        topo_a.probe_bytes = 2u << 20;
        *type = MSG_TOPO;
        return starling__topo_encode(out, cap, &topo_a);
    case 13:
        sample_links(&links_a, 0);
        *type = MSG_LINKS;
        return starling__links_encode(out, cap, &links_a);
    case 14:
        sample_links(&links_a, 1);
        *type = MSG_LINKS;
        return starling__links_encode(out, cap, &links_a);
    case 15:
        sample_links(&links_a, 3);
        *type = MSG_LINKS;
        return starling__links_encode(out, cap, &links_a);
    case 16: /* v5: a reversed ring link */
        sample_hello(&hello, ROLE_DATA_REV);
        *type = MSG_HELLO;
        return starling__hello_encode(out, cap, &hello);
    case 17: /* v5: a peer that accepts no inbound connections */
        sample_register(&reg_a, 0);
        reg_a.port = 0;
        *type = MSG_REGISTER;
        return starling__register_encode(out, cap, &reg_a);
    case 18: /* v5: one member of three accepts no inbound connections */
        sample_topo(&topo_a, 3);
        topo_a.members[1].port = 0;
        *type = MSG_TOPO;
        return starling__topo_encode(out, cap, &topo_a);
    case 19: /* v6: a segment offered */
        sample_shm_offer(&shm);
        *type = MSG_SHM_OFFER;
        return starling__shm_offer_encode(out, cap, &shm);
    case 20: /* v6: none could be made (all zero, as src/net/shm.c leaves it) */
        memset(&shm, 0, sizeof shm);
        *type = MSG_SHM_OFFER;
        return starling__shm_offer_encode(out, cap, &shm);
    case 21: /* v6: the largest ring, the largest pid and descriptor */
        sample_shm_offer(&shm);
        shm.pid = shm.fd = UINT32_MAX;
        shm.size = 256u << 20;
        *type = MSG_SHM_OFFER;
        return starling__shm_offer_encode(out, cap, &shm);
    case 22: /* v6: mapped */
        memset(&shm, 0, sizeof shm);
        shm.ok = 1;
        *type = MSG_SHM_REPLY;
        return starling__shm_reply_encode(out, cap, &shm);
    case 23: /* v6: not mapped, the link stays on TCP */
        memset(&shm, 0, sizeof shm);
        *type = MSG_SHM_REPLY;
        return starling__shm_reply_encode(out, cap, &shm);
    case 24: /* v6: a member that shares no memory (host tag 0) */
        sample_hello(&hello, ROLE_DATA);
        hello.host = 0;
        *type = MSG_HELLO;
        return starling__hello_encode(out, cap, &hello);
    default:
        if (idx - nfixed >= (int)sizeof epoch_types)
            return 0;
        sample_epoch(&epoch);
        *type = epoch_types[idx - nfixed];
        return starling__epoch_encode(out, cap, *type, &epoch);
    }
}

/* ---------------------------------------------------------------- round trips */

static void assert_hello_equal(const starling__msg_hello *a, const starling__msg_hello *b)
{
    assert_int_equal(a->magic, b->magic);
    assert_int_equal(a->version, b->version);
    assert_int_equal(a->role, b->role);
    assert_memory_equal(a->nonce, b->nonce, STARLING_NONCE_LEN);
    assert_string_equal(a->run, b->run);
    assert_true(a->peer_id == b->peer_id);
    assert_true(a->epoch == b->epoch);
    assert_int_equal(a->stream, b->stream);
    assert_int_equal(a->nstreams, b->nstreams);
    assert_int_equal(a->security, b->security);
    assert_int_equal(a->caps, b->caps);
    assert_true(a->host == b->host);
}

/* The u64 little-endian at p. */
static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Every role with every security mode and several host tags; caps is carried whatever
 * its bits (only bit 0 is defined, the others are not checked), and so is the host tag
 * (v6: 0 means "shares no memory", any other value is compared, never interpreted). */
static void test_hello_round_trip(void **state)
{
    static const uint8_t roles[] = {ROLE_CONTROL, ROLE_DATA, ROLE_PROBE, ROLE_DATA_REV};
    static const uint8_t secs[] = {STARLING_SEC_NONE, STARLING_SEC_AEAD, STARLING_SEC_CHACHA};
    static const uint8_t caps[] = {0, STARLING_CAP_AESGCM, 0xfe, 0xff};
    static const uint64_t hosts[] = {0, 1, SAMPLE_HOST, UINT64_MAX};
    (void)state;
    for (size_t i = 0; i < sizeof roles; i++)
        for (size_t j = 0; j < sizeof secs; j++)
            for (size_t k = 0; k < sizeof caps; k++)
                for (size_t l = 0; l < sizeof hosts / sizeof hosts[0]; l++) {
                    starling__msg_hello in, out;
                    int n;
                    size_t plen;
                    sample_hello(&in, roles[i]);
                    in.security = secs[j];
                    in.caps = caps[k];
                    in.host = hosts[l];
                    n = starling__hello_encode(frame, sizeof frame, &in);
                    plen = frame_check(frame, n, MSG_HELLO);
                    /* magic, version, role, nonce, run, peer_id, epoch, stream, nstreams,
                     * security, caps, host */
                    assert_int_equal(plen, 4 + 2 + 1 + 32 + 1 + strlen(in.run) + 8 + 8 + 1 + 1 + 1 +
                                               1 + 8);
                    /* the two v3 bytes, then the v6 host tag, end the payload */
                    assert_int_equal(frame[n - 10], secs[j]);
                    assert_int_equal(frame[n - 9], caps[k]);
                    assert_true(le64(frame + n - 8) == hosts[l]);
                    memset(&out, 0xee, sizeof out);
                    assert_int_equal(starling__hello_decode(frame + STARLING_FRAME_HDR, plen, &out),
                                     STARLING_OK);
                    assert_hello_equal(&in, &out);
                    /* Not on the wire: the decoder leaves no stale value in it. */
                    assert_true(out.peer_host == 0);
                }
}

/* Both data roles: ROLE_DATA and (v5) ROLE_DATA_REV. */
static void test_hello_data_role_stream_bounds(void **state)
{
    static const uint8_t roles[] = {ROLE_DATA, ROLE_DATA_REV};
    (void)state;
    for (size_t i = 0; i < sizeof roles; i++) {
        starling__msg_hello in, out;
        sample_hello(&in, roles[i]);
        /* The extremes that are allowed: 1 stream, and stream 15 of 16. */
        in.stream = 0;
        in.nstreams = 1;
        int n = starling__hello_encode(frame, sizeof frame, &in);
        assert_int_equal(starling__hello_decode(frame + 8, (size_t)n - 8, &out), STARLING_OK);
        assert_hello_equal(&in, &out);
        in.stream = 15;
        in.nstreams = 16;
        n = starling__hello_encode(frame, sizeof frame, &in);
        assert_int_equal(starling__hello_decode(frame + 8, (size_t)n - 8, &out), STARLING_OK);
        assert_hello_equal(&in, &out);
    }
}

/* nonce, mac, then (v3) security and caps and (v6) the host tag: 32 + 32 + 1 + 1 + 8 =
 * 74 bytes, with every security mode, caps bits that are not checked, and host tags
 * that are carried, not checked. */
static void test_challenge_round_trip(void **state)
{
    static const uint8_t secs[] = {STARLING_SEC_NONE, STARLING_SEC_AEAD, STARLING_SEC_CHACHA};
    static const uint8_t caps[] = {0, STARLING_CAP_AESGCM, 0xfe, 0xff};
    static const uint64_t hosts[] = {0, 1, SAMPLE_HOST, UINT64_MAX};
    (void)state;
    for (size_t j = 0; j < sizeof secs; j++)
        for (size_t k = 0; k < sizeof caps; k++)
            for (size_t l = 0; l < sizeof hosts / sizeof hosts[0]; l++) {
                starling__msg_challenge in, out;
                for (int i = 0; i < STARLING_NONCE_LEN; i++)
                    in.nonce[i] = (uint8_t)i;
                for (int i = 0; i < STARLING_MAC_LEN; i++)
                    in.mac[i] = (uint8_t)(255 - i);
                in.security = secs[j];
                in.caps = caps[k];
                in.host = hosts[l];
                int n = starling__challenge_encode(frame, sizeof frame, &in);
                assert_int_equal(frame_check(frame, n, MSG_CHALLENGE), 74);
                assert_int_equal(frame[8 + 64], secs[j]);
                assert_int_equal(frame[8 + 65], caps[k]);
                assert_true(le64(frame + 8 + 66) == hosts[l]);
                memset(&out, 0xee, sizeof out);
                assert_int_equal(starling__challenge_decode(frame + 8, 74, &out), STARLING_OK);
                assert_memory_equal(in.nonce, out.nonce, STARLING_NONCE_LEN);
                assert_memory_equal(in.mac, out.mac, STARLING_MAC_LEN);
                assert_int_equal(out.security, secs[j]);
                assert_int_equal(out.caps, caps[k]);
                assert_true(out.host == hosts[l]);
            }
}

/* SHM_OFFER (v6): pid, fd, size, nonce: 4 + 4 + 8 + 16 = 32 bytes, for every ring size
 * the decoder allows (the powers of two from 64 KiB to 256 MiB) and for the empty offer
 * (size 0: the dialler could not make a segment; then pid, fd and nonce mean nothing and
 * are carried as they are). */
static void test_shm_offer_round_trip(void **state)
{
    starling__msg_shm in, out;
    int n;
    (void)state;
    for (uint64_t size = 64u << 10; size <= (256u << 20); size <<= 1) {
        sample_shm_offer(&in);
        in.size = size;
        in.ok = 1; /* not part of an offer: not written, 0 after decoding */
        n = starling__shm_offer_encode(frame, sizeof frame, &in);
        assert_int_equal(frame_check(frame, n, MSG_SHM_OFFER), 32);
        assert_true(le64(frame + 8 + 8) == size);
        memset(&out, 0xee, sizeof out);
        assert_int_equal(starling__shm_offer_decode(frame + 8, 32, &out), STARLING_OK);
        assert_int_equal(out.pid, in.pid);
        assert_int_equal(out.fd, in.fd);
        assert_true(out.size == size);
        assert_memory_equal(out.nonce, in.nonce, sizeof in.nonce);
        assert_int_equal(out.ok, 0);
    }
    /* The extremes of pid and fd: any u32 but pid 0 with a segment. */
    sample_shm_offer(&in);
    in.pid = 1;
    in.fd = 0;
    n = starling__shm_offer_encode(frame, sizeof frame, &in);
    assert_int_equal(starling__shm_offer_decode(frame + 8, (size_t)n - 8, &out), STARLING_OK);
    assert_true(out.pid == 1 && out.fd == 0);
    in.pid = in.fd = UINT32_MAX;
    n = starling__shm_offer_encode(frame, sizeof frame, &in);
    assert_int_equal(starling__shm_offer_decode(frame + 8, (size_t)n - 8, &out), STARLING_OK);
    assert_true(out.pid == UINT32_MAX && out.fd == UINT32_MAX);
    /* No segment: all zero as src/net/shm.c sends it, or with leftovers in the other
     * fields; both are valid. */
    memset(&in, 0, sizeof in);
    n = starling__shm_offer_encode(frame, sizeof frame, &in);
    assert_int_equal(frame_check(frame, n, MSG_SHM_OFFER), 32);
    memset(&out, 0xee, sizeof out);
    assert_int_equal(starling__shm_offer_decode(frame + 8, 32, &out), STARLING_OK);
    assert_true(out.pid == 0 && out.fd == 0 && out.size == 0 && out.ok == 0);
    sample_shm_offer(&in);
    in.size = 0;
    n = starling__shm_offer_encode(frame, sizeof frame, &in);
    assert_int_equal(starling__shm_offer_decode(frame + 8, 32, &out), STARLING_OK);
    assert_true(out.size == 0 && out.pid == in.pid && out.fd == in.fd);
    assert_memory_equal(out.nonce, in.nonce, sizeof in.nonce);
}

/* SHM_REPLY (v6): one byte, ok 0 or 1. */
static void test_shm_reply_round_trip(void **state)
{
    starling__msg_shm in, out;
    (void)state;
    for (uint8_t ok = 0; ok <= 1; ok++) {
        sample_shm_offer(&in); /* the other fields are not part of a reply */
        in.ok = ok;
        int n = starling__shm_reply_encode(frame, sizeof frame, &in);
        assert_int_equal(frame_check(frame, n, MSG_SHM_REPLY), 1);
        assert_int_equal(frame[8], ok);
        memset(&out, 0xee, sizeof out);
        assert_int_equal(starling__shm_reply_decode(frame + 8, 1, &out), STARLING_OK);
        assert_int_equal(out.ok, ok);
        assert_true(out.pid == 0 && out.fd == 0 && out.size == 0);
    }
}

static void test_auth_round_trip(void **state)
{
    starling__msg_auth in, out;
    (void)state;
    for (int i = 0; i < STARLING_MAC_LEN; i++)
        in.mac[i] = (uint8_t)(i * 7);
    int n = starling__auth_encode(frame, sizeof frame, &in);
    assert_int_equal(frame_check(frame, n, MSG_AUTH), 32);
    assert_int_equal(starling__auth_decode(frame + 8, 32, &out), STARLING_OK);
    assert_memory_equal(in.mac, out.mac, STARLING_MAC_LEN);
}

static void test_reject_round_trip(void **state)
{
    starling__msg_reject in, out;
    (void)state;
    /* Every code of the stable list that can be a reason to refuse. */
    for (int code = STARLING_E_INVALID; code >= STARLING_E_BUSY; code--) {
        memset(&in, 0, sizeof in);
        in.code = code;
        snprintf(in.reason, sizeof in.reason, "refused: %s", starling_strerror(code));
        int n = starling__reject_encode(frame, sizeof frame, &in);
        size_t plen = frame_check(frame, n, MSG_REJECT);
        assert_int_equal(plen, 4 + 1 + strlen(in.reason));
        assert_int_equal(starling__reject_decode(frame + 8, plen, &out), STARLING_OK);
        assert_int_equal(out.code, code);
        assert_string_equal(out.reason, in.reason);
    }
    /* Longest reason: 127 bytes. */
    memset(in.reason, 'r', STARLING_REASON_MAX - 1);
    in.reason[STARLING_REASON_MAX - 1] = '\0';
    int n = starling__reject_encode(frame, sizeof frame, &in);
    assert_int_equal(starling__reject_decode(frame + 8, (size_t)n - 8, &out), STARLING_OK);
    assert_string_equal(out.reason, in.reason);
}

static void assert_register_equal(const starling__msg_register *a, const starling__msg_register *b)
{
    assert_true(a->peer_id == b->peer_id);
    assert_string_equal(a->name, b->name);
    assert_string_equal(a->host, b->host);
    assert_int_equal(a->port, b->port);
    assert_int_equal(a->min_peers, b->min_peers);
    assert_true(a->epoch == b->epoch);
    assert_int_equal(a->nmembers, b->nmembers);
    for (uint32_t i = 0; i < a->nmembers; i++)
        assert_true(a->members[i] == b->members[i]);
}

static void test_register_round_trip(void **state)
{
    static const uint32_t counts[] = {0, 1, 2, 100, STARLING_MAX_PEERS};
    (void)state;
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        sample_register(&reg_a, counts[i]);
        int n = starling__register_encode(frame, sizeof frame, &reg_a);
        size_t plen = frame_check(frame, n, MSG_REGISTER);
        assert_int_equal(plen, 8 + 1 + strlen(reg_a.name) + 1 + strlen(reg_a.host) + 2 + 4 + 8 + 4 +
                                   8 * (size_t)counts[i]);
        memset(&reg_b, 0xee, sizeof reg_b);
        assert_int_equal(starling__register_decode(frame + 8, plen, &reg_b), STARLING_OK);
        assert_register_equal(&reg_a, &reg_b);
    }
}

/* Names up to 63 bytes, the longest numeric host (45 bytes: hosts are numeric
 * addresses), min_peers up to STARLING_MAX_PEERS. */
static void test_register_field_extremes(void **state)
{
    (void)state;
    sample_register(&reg_a, STARLING_MAX_PEERS);
    memset(reg_a.name, 'n', STARLING_NAME_MAX - 1);
    reg_a.name[STARLING_NAME_MAX - 1] = '\0';
    strcpy(reg_a.host, "0000:0000:0000:0000:0000:ffff:255.255.255.255");
    reg_a.min_peers = STARLING_MAX_PEERS;
    reg_a.port = 65535;
    reg_a.peer_id = UINT64_MAX;
    int n = starling__register_encode(frame, sizeof frame, &reg_a);
    assert_true(n > 0 && (size_t)n - 8 <= STARLING_CTRL_MAX);
    assert_int_equal(starling__register_decode(frame + 8, (size_t)n - 8, &reg_b), STARLING_OK);
    assert_register_equal(&reg_a, &reg_b);

    sample_register(&reg_a, 0);
    reg_a.name[0] = '\0';
    reg_a.min_peers = 1;
    n = starling__register_encode(frame, sizeof frame, &reg_a);
    assert_int_equal(starling__register_decode(frame + 8, (size_t)n - 8, &reg_b), STARLING_OK);
    assert_register_equal(&reg_a, &reg_b);
}

static void test_welcome_round_trip(void **state)
{
    static const uint32_t timeouts[] = {100, 3000, 600000};
    (void)state;
    for (size_t i = 0; i < 3; i++) {
        starling__msg_welcome in = {0xabcdef0123456789ull, timeouts[i]}, out;
        int n = starling__welcome_encode(frame, sizeof frame, &in);
        assert_int_equal(frame_check(frame, n, MSG_WELCOME), 12);
        assert_int_equal(starling__welcome_decode(frame + 8, 12, &out), STARLING_OK);
        assert_true(out.coord_id == in.coord_id);
        assert_int_equal(out.timeout_ms, in.timeout_ms);
    }
}

static void assert_topo_equal(const starling__msg_topo *a, const starling__msg_topo *b)
{
    assert_true(a->epoch == b->epoch);
    assert_int_equal(a->rank, b->rank);
    assert_int_equal(a->n, b->n);
    for (uint32_t i = 0; i < a->n; i++) {
        assert_true(a->members[i].id == b->members[i].id);
        assert_string_equal(a->members[i].host, b->members[i].host);
        assert_int_equal(a->members[i].port, b->members[i].port);
    }
    assert_int_equal(a->probe_bytes, b->probe_bytes);
}

static void test_topo_round_trip(void **state)
{
    static const uint32_t counts[] = {1, 2, 3, STARLING_MAX_PEERS};
    (void)state;
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        sample_topo(&topo_a, counts[i]);
        for (uint32_t rank = 0; rank < counts[i]; rank += (counts[i] > 4 ? 97 : 1)) {
            topo_a.rank = rank;
            topo_a.probe_bytes = rank % 2 ? 0 : STARLING__PROBE_MIN << rank % 8;
            int n = starling__topo_encode(frame, sizeof frame, &topo_a);
            size_t plen = frame_check(frame, n, MSG_TOPO);
            /* epoch u64, rank u32, n u32, then per member id u64, host str, port u16,
             * then probe_bytes u32 */
            size_t want = 8 + 4 + 4 + 4;
            for (uint32_t j = 0; j < counts[i]; j++)
                want += 8 + 1 + strlen(topo_a.members[j].host) + 2;
            assert_int_equal(plen, want);
            memset(&topo_b, 0xee, sizeof topo_b);
            assert_int_equal(starling__topo_decode(frame + 8, plen, &topo_b), STARLING_OK);
            assert_topo_equal(&topo_a, &topo_b);
        }
    }
}

/* The largest legal topology (8192 members, 63-byte hosts, the largest probe size) fits in
 * one control frame: 16 + 8192 * (8 + 1 + 63 + 2) + 4 = 16 + 606,208 + 4 = 606,228 bytes of
 * payload, against STARLING_CTRL_MAX = 1,048,576 (v3; v2: 512 members in 65,536). */
static void test_topo_largest_fits(void **state)
{
    (void)state;
    sample_topo(&topo_a, STARLING_MAX_PEERS);
    for (uint32_t i = 0; i < STARLING_MAX_PEERS; i++) {
        memset(topo_a.members[i].host, 'a' + (int)(i % 26), STARLING_ADDR_MAX - 1);
        topo_a.members[i].host[STARLING_ADDR_MAX - 1] = '\0';
        topo_a.members[i].port = 65535;
        topo_a.members[i].id = UINT64_MAX - i;
    }
    topo_a.epoch = UINT64_MAX;
    topo_a.probe_bytes = STARLING__PROBE_MAX;
    int n = starling__topo_encode(frame, sizeof frame, &topo_a);
    size_t plen = frame_check(frame, n, MSG_TOPO);
    /* epoch, rank, n; members (id, host length byte, 63 host bytes, port); probe_bytes */
    assert_int_equal(plen, 8 + 4 + 4 + (size_t)STARLING_MAX_PEERS * (8 + 1 + 63 + 2) + 4);
    assert_int_equal(plen, 606228);
    assert_true(plen <= STARLING_CTRL_MAX);
    assert_int_equal(starling__topo_decode(frame + 8, plen, &topo_b), STARLING_OK);
    assert_topo_equal(&topo_a, &topo_b);
}

/* TOPO's probe_bytes (v2): 0 (nothing asked) up to STARLING__PROBE_MAX (256 MiB). */
static void test_topo_probe_bytes(void **state)
{
    static const uint32_t ok[] = {0, STARLING__PROBE_MIN, 2u << 20, STARLING__PROBE_MAX};
    static const uint32_t bad[] = {1, STARLING__PROBE_MIN - 1, STARLING__PROBE_MAX + 1,
                                   1u << 31, UINT32_MAX};
    (void)state;
    assert_int_equal(STARLING__PROBE_MAX, 268435456); /* 256 MiB */
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        sample_topo(&topo_a, 2);
        topo_a.probe_bytes = ok[i];
        int n = starling__topo_encode(frame, sizeof frame, &topo_a);
        size_t plen = frame_check(frame, n, MSG_TOPO);
        /* probe_bytes is the last 4 bytes of the payload, little-endian */
        const uint8_t *pb = frame + n - 4;
        assert_int_equal((uint32_t)pb[0] | (uint32_t)pb[1] << 8 | (uint32_t)pb[2] << 16 |
                             (uint32_t)pb[3] << 24,
                         ok[i]);
        assert_int_equal(decode_exact(MSG_TOPO, frame + 8, plen), STARLING_OK);
        assert_topo_equal(&topo_a, &topo_b);
    }
    /* 0 (nothing asked) or a size a probed peer accepts: STARLING__PROBE_MIN..MAX. */
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sample_topo(&topo_a, 2);
        topo_a.probe_bytes = bad[i];
        int n = starling__topo_encode(frame, sizeof frame, &topo_a);
        assert_true(n > 0); /* the encoder writes any value: the decoder is the gate */
        assert_int_equal(decode_exact(MSG_TOPO, frame + 8, (size_t)n - 8), STARLING_E_PROTOCOL);
    }
}

static void assert_links_equal(const starling__msg_links *a, const starling__msg_links *b)
{
    assert_true(a->epoch == b->epoch);
    assert_int_equal(a->n, b->n);
    for (uint32_t i = 0; i < a->n; i++) {
        assert_true(a->links[i].id == b->links[i].id);
        assert_true(a->links[i].bytes_per_s == b->links[i].bytes_per_s);
        assert_int_equal(a->links[i].rtt_us, b->links[i].rtt_us);
    }
}

static void test_links_round_trip(void **state)
{
    static const uint32_t counts[] = {0, 1, 2, 3, 100, STARLING_MAX_PEERS};
    (void)state;
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        sample_links(&links_a, counts[i]);
        int n = starling__links_encode(frame, sizeof frame, &links_a);
        size_t plen = frame_check(frame, n, MSG_LINKS);
        /* epoch u64, n u32, then per link id u64, bytes_per_s u64, rtt_us u32 */
        assert_int_equal(plen, 8 + 4 + (size_t)counts[i] * (8 + 8 + 4));
        memset(&links_b, 0xee, sizeof links_b);
        assert_int_equal(decode_exact(MSG_LINKS, frame + 8, plen), STARLING_OK);
        assert_links_equal(&links_a, &links_b);
    }
}

/* The limits themselves are accepted; the epoch is carried unchecked (even 0). */
static void test_links_field_extremes(void **state)
{
    (void)state;
    sample_links(&links_a, 3);
    links_a.epoch = 0;
    links_a.links[0].id = UINT64_MAX;
    links_a.links[0].bytes_per_s = STARLING_LINK_BPS_MAX;
    links_a.links[0].rtt_us = STARLING_LINK_RTT_US_MAX;
    links_a.links[1].id = 1;
    links_a.links[1].bytes_per_s = 0; /* unmeasured */
    links_a.links[1].rtt_us = 0;
    links_a.links[2].bytes_per_s = 1;
    links_a.links[2].rtt_us = 1;
    int n = starling__links_encode(frame, sizeof frame, &links_a);
    assert_int_equal(decode_exact(MSG_LINKS, frame + 8, (size_t)n - 8), STARLING_OK);
    assert_links_equal(&links_a, &links_b);
    links_a.epoch = UINT64_MAX;
    n = starling__links_encode(frame, sizeof frame, &links_a);
    assert_int_equal(decode_exact(MSG_LINKS, frame + 8, (size_t)n - 8), STARLING_OK);
    assert_links_equal(&links_a, &links_b);
    assert_true(STARLING_LINK_BPS_MAX == 1000000000000ull); /* 1 TB/s */
    assert_int_equal(STARLING_LINK_RTT_US_MAX, 600000000);  /* 10 minutes */
}

/* The largest LINKS (8192 links) fits in one control frame: 8 + 4 + 8192 * (8 + 8 + 4) =
 * 12 + 163,840 = 163,852 bytes of payload. A member reports at most n - 1 = 8191 links;
 * the decoder allows 8192. */
static void test_links_largest_fits(void **state)
{
    (void)state;
    sample_links(&links_a, STARLING_MAX_PEERS);
    for (uint32_t i = 0; i < STARLING_MAX_PEERS; i++) {
        links_a.links[i].id = UINT64_MAX - i;
        links_a.links[i].bytes_per_s = STARLING_LINK_BPS_MAX;
        links_a.links[i].rtt_us = STARLING_LINK_RTT_US_MAX;
    }
    links_a.epoch = UINT64_MAX;
    int n = starling__links_encode(frame, sizeof frame, &links_a);
    size_t plen = frame_check(frame, n, MSG_LINKS);
    assert_int_equal(plen, 8 + 4 + (size_t)STARLING_MAX_PEERS * (8 + 8 + 4));
    assert_int_equal(plen, 163852);
    assert_true(plen <= STARLING_CTRL_MAX);
    assert_int_equal(decode_exact(MSG_LINKS, frame + 8, plen), STARLING_OK);
    assert_links_equal(&links_a, &links_b);
}

static void test_epoch_round_trip_every_type(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof epoch_types; i++) {
        uint8_t type = epoch_types[i];
        starling__msg_epoch in, out;
        sample_epoch(&in);
        int n = starling__epoch_encode(frame, sizeof frame, type, &in);
        size_t plen = frame_check(frame, n, type);
        assert_int_equal(plen, epoch_payload_len(type));
        memset(&out, 0xee, sizeof out);
        assert_int_equal(starling__epoch_decode(type, frame + 8, plen, &out), STARLING_OK);
        /* Fields a type carries come back; the others are zeroed by the decoder. */
        switch (type) {
        case MSG_TOPO_REQ:
        case MSG_QUERY:
            assert_true(out.epoch == in.epoch);
            assert_true(out.a == 0 && out.b == 0 && out.code == 0);
            break;
        case MSG_FAIL:
        case MSG_DECIDE:
            assert_true(out.epoch == in.epoch && out.a == in.a);
            assert_int_equal(out.code, in.code);
            assert_true(out.b == 0);
            break;
        case MSG_STATUS:
            assert_true(out.epoch == in.epoch && out.a == in.a && out.b == in.b);
            assert_int_equal(out.code, 0);
            break;
        default: assert_true(out.epoch == 0 && out.a == 0 && out.b == 0 && out.code == 0); break;
        }
    }
}

static void test_epoch_code_range(void **state)
{
    static const uint8_t with_code[] = {MSG_FAIL, MSG_DECIDE};
    (void)state;
    for (size_t i = 0; i < 2; i++) {
        starling__msg_epoch in, out;
        sample_epoch(&in);
        for (int code = STARLING_OK; code >= STARLING_E_BUSY; code--) {
            in.code = code;
            int n = starling__epoch_encode(frame, sizeof frame, with_code[i], &in);
            assert_int_equal(starling__epoch_decode(with_code[i], frame + 8, (size_t)n - 8, &out),
                             STARLING_OK);
            assert_int_equal(out.code, code);
        }
        static const int32_t bad[] = {1, STARLING_E_BUSY - 1, INT32_MIN, INT32_MAX};
        for (size_t j = 0; j < 4; j++) {
            in.code = bad[j];
            int n = starling__epoch_encode(frame, sizeof frame, with_code[i], &in);
            assert_int_equal(starling__epoch_decode(with_code[i], frame + 8, (size_t)n - 8, &out),
                             STARLING_E_PROTOCOL);
        }
    }
}

/* STATUS: done_seq <= cur_seq. */
static void test_epoch_status_order(void **state)
{
    starling__msg_epoch in, out;
    (void)state;
    sample_epoch(&in);
    in.a = in.b = 7;
    int n = starling__epoch_encode(frame, sizeof frame, MSG_STATUS, &in);
    assert_int_equal(starling__epoch_decode(MSG_STATUS, frame + 8, (size_t)n - 8, &out),
                     STARLING_OK);
    in.a = 8;
    n = starling__epoch_encode(frame, sizeof frame, MSG_STATUS, &in);
    assert_int_equal(starling__epoch_decode(MSG_STATUS, frame + 8, (size_t)n - 8, &out),
                     STARLING_E_PROTOCOL);
}

/* ---------------------------------------------------------------- STATE and WATCH */

static void sample_state(starling__msg_state *m, uint32_t n, uint32_t nnext)
{
    memset(m, 0, sizeof *m);
    m->seq = 7;
    m->stamp = 123456789;
    m->epoch = n ? (1ull << 32) + 3 : 0;
    m->n = n;
    for (uint32_t i = 0; i < n; i++)
        m->ids[i] = 0xa000 + i;
    m->next_epoch = nnext ? (1ull << 32) + 4 : 0;
    m->nnext = nnext;
    for (uint32_t i = 0; i < nnext; i++)
        m->next_ids[i] = 0xb000 + i;
}

static void assert_state_equal(const starling__msg_state *a, const starling__msg_state *b)
{
    assert_true(a->seq == b->seq && a->stamp == b->stamp);
    assert_true(a->epoch == b->epoch && a->next_epoch == b->next_epoch);
    assert_int_equal(a->n, b->n);
    assert_int_equal(a->nnext, b->nnext);
    for (uint32_t i = 0; i < a->n; i++)
        assert_true(a->ids[i] == b->ids[i]);
    for (uint32_t i = 0; i < a->nnext; i++)
        assert_true(a->next_ids[i] == b->next_ids[i]);
}

static void test_state_round_trip(void **state)
{
    static const uint32_t counts[][2] = {
        {0, 0}, {1, 0}, {3, 4}, {0, 2}, {STARLING_MAX_PEERS, STARLING_MAX_PEERS}};
    (void)state;
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        sample_state(&state_a, counts[i][0], counts[i][1]);
        int n = starling__state_encode(frame, sizeof frame, &state_a);
        size_t plen = frame_check(frame, n, MSG_STATE);
        /* seq u64, stamp u64, epoch u64, n u32, ids, next_epoch u64, nnext u32, next ids */
        assert_int_equal(plen, 40 + 8 * (size_t)(counts[i][0] + counts[i][1]));
        memset(&state_b, 0xee, sizeof state_b);
        assert_int_equal(decode_exact(MSG_STATE, frame + 8, plen), STARLING_OK);
        assert_state_equal(&state_a, &state_b);
    }
    /* The largest fits a control frame: 40 + 16 * 8192 = 131,112 bytes. */
    assert_true(40 + 16 * (size_t)STARLING_MAX_PEERS <= STARLING_CTRL_MAX);
}

/* Every rule of the decoder, each broken alone on an otherwise good frame. */
static void test_state_refusals(void **state)
{
    int n;
    (void)state;
    sample_state(&state_a, 2, 2);
    state_a.seq = 0; /* STATEs count from 1 */
    n = starling__state_encode(frame, sizeof frame, &state_a);
    assert_int_equal(decode_exact(MSG_STATE, frame + 8, (size_t)n - 8), STARLING_E_PROTOCOL);
    sample_state(&state_a, 2, 2);
    state_a.ids[1] = 0; /* a member id 0 */
    n = starling__state_encode(frame, sizeof frame, &state_a);
    assert_int_equal(decode_exact(MSG_STATE, frame + 8, (size_t)n - 8), STARLING_E_PROTOCOL);
    sample_state(&state_a, 2, 2);
    state_a.next_ids[0] = 0;
    n = starling__state_encode(frame, sizeof frame, &state_a);
    assert_int_equal(decode_exact(MSG_STATE, frame + 8, (size_t)n - 8), STARLING_E_PROTOCOL);
    sample_state(&state_a, 2, 2);
    state_a.epoch = 0; /* members without an epoch */
    n = starling__state_encode(frame, sizeof frame, &state_a);
    assert_int_equal(decode_exact(MSG_STATE, frame + 8, (size_t)n - 8), STARLING_E_PROTOCOL);
    sample_state(&state_a, 0, 2);
    state_a.epoch = 5; /* an epoch without members */
    n = starling__state_encode(frame, sizeof frame, &state_a);
    assert_int_equal(decode_exact(MSG_STATE, frame + 8, (size_t)n - 8), STARLING_E_PROTOCOL);
    sample_state(&state_a, 2, 2);
    state_a.next_epoch = state_a.epoch; /* a proposal not after the current epoch */
    n = starling__state_encode(frame, sizeof frame, &state_a);
    assert_int_equal(decode_exact(MSG_STATE, frame + 8, (size_t)n - 8), STARLING_E_PROTOCOL);
    state_a.next_epoch = state_a.epoch + 1; /* the same frame, mended, passes */
    n = starling__state_encode(frame, sizeof frame, &state_a);
    assert_int_equal(decode_exact(MSG_STATE, frame + 8, (size_t)n - 8), STARLING_OK);
    /* Truncated anywhere, or a trailing byte. */
    for (size_t cut = 0; cut < (size_t)n - 8; cut++)
        assert_int_equal(decode_exact(MSG_STATE, frame + 8, cut), STARLING_E_PROTOCOL);
    frame[n] = 0;
    assert_int_equal(decode_exact(MSG_STATE, frame + 8, (size_t)n - 8 + 1), STARLING_E_PROTOCOL);
    /* A count over the limit is refused before any id is read. */
    sample_state(&state_a, 1, 0);
    n = starling__state_encode(frame, sizeof frame, &state_a);
    frame[8 + 24] = 0x01, frame[8 + 25] = 0x20, frame[8 + 26] = 0, frame[8 + 27] = 0; /* 8193 */
    assert_int_equal(decode_exact(MSG_STATE, frame + 8, (size_t)n - 8), STARLING_E_PROTOCOL);
    state_a.n = STARLING_MAX_PEERS + 1;
    assert_int_equal(starling__state_encode(frame, sizeof frame, &state_a), STARLING_E_LIMIT);
}

/* WATCH is a small control message: the seq and stamp of the STATE it echoes. */
static void test_watch_round_trip(void **state)
{
    starling__msg_epoch in, out;
    int n;
    (void)state;
    memset(&in, 0, sizeof in);
    in.epoch = 42;
    in.a = 987654321;
    n = starling__epoch_encode(frame, sizeof frame, MSG_WATCH, &in);
    assert_int_equal(frame_check(frame, n, MSG_WATCH), 16);
    assert_int_equal(starling__epoch_decode(MSG_WATCH, frame + 8, 16, &out), STARLING_OK);
    assert_true(out.epoch == 42 && out.a == 987654321 && out.b == 0 && out.code == 0);
    assert_int_equal(starling__epoch_decode(MSG_WATCH, frame + 8, 15, &out), STARLING_E_PROTOCOL);
    assert_int_equal(starling__epoch_decode(MSG_WATCH, frame + 8, 17, &out), STARLING_E_PROTOCOL);
}

/* The epoch codec only handles the small control messages. */
static void test_epoch_refuses_other_types(void **state)
{
    static const uint8_t others[] = {
        0,           MSG_HELLO,     MSG_CHALLENGE, MSG_AUTH,         MSG_REJECT, MSG_REGISTER,
        MSG_WELCOME, MSG_TOPO,      MSG_DATA,      MSG_DONE,         MSG_ABORT,  MSG_LINKS,
        MSG_STATE,   MSG_SHM_OFFER, MSG_SHM_REPLY, MSG_TYPE_MAX + 1, 255};
    starling__msg_epoch m;
    (void)state;
    sample_epoch(&m);
    for (size_t i = 0; i < sizeof others; i++) {
        assert_int_equal(starling__epoch_encode(frame, sizeof frame, others[i], &m),
                         STARLING_E_INVALID);
        assert_int_equal(starling__epoch_decode(others[i], frame, 0, &m), STARLING_E_PROTOCOL);
        assert_int_equal(starling__epoch_decode(others[i], frame, 24, &m), STARLING_E_PROTOCOL);
    }
}

static void test_data_round_trip(void **state)
{
    static const uint8_t types[] = {MSG_DATA, MSG_DONE, MSG_ABORT};
    (void)state;
    for (size_t i = 0; i < 3; i++) {
        starling__msg_data in = {0x1122334455667788ull, 0x99aabbccddeeff00ull, 0xdeadbeefu,
                                 (uint32_t)STARLING_E_MISMATCH},
                           out;
        uint32_t nbytes = types[i] == MSG_DATA ? 4096 : 0;
        starling__frame_hdr h;
        int n = starling__data_encode(frame, sizeof frame, types[i], 0, &in, nbytes);
        /* The encoder writes the header only; the caller sends the bytes after it. */
        assert_int_equal(n, STARLING_FRAME_HDR + STARLING_DATA_HDR);
        assert_int_equal(starling__frame_hdr_decode(frame, CHUNK, &h), STARLING_OK);
        assert_int_equal(h.type, types[i]);
        assert_int_equal(h.len, STARLING_DATA_HDR + nbytes);
        memset(&out, 0xee, sizeof out);
        assert_int_equal(starling__data_decode(frame + 8, &out), STARLING_OK);
        assert_true(out.seq == in.seq && out.desc == in.desc);
        assert_int_equal(out.step, in.step);
        assert_int_equal(out.piece, in.piece);
        assert_int_equal((int32_t)out.piece, STARLING_E_MISMATCH);
    }
}

static void test_data_encode_refusals(void **state)
{
    starling__msg_data m = {1, 2, 3, 4};
    (void)state;
    /* Only the data-plane types, and only DATA carries bytes. */
    assert_int_equal(starling__data_encode(frame, sizeof frame, MSG_HELLO, 0, &m, 0),
                     STARLING_E_INVALID);
    assert_int_equal(starling__data_encode(frame, sizeof frame, 0, 0, &m, 0), STARLING_E_INVALID);
    assert_int_equal(starling__data_encode(frame, sizeof frame, MSG_DONE, 0, &m, 1),
                     STARLING_E_INVALID);
    assert_int_equal(starling__data_encode(frame, sizeof frame, MSG_ABORT, 0, &m, 1),
                     STARLING_E_INVALID);
    for (size_t cap = 0; cap < STARLING_FRAME_HDR + STARLING_DATA_HDR; cap++)
        assert_int_equal(starling__data_encode(frame, cap, MSG_DATA, 0, &m, 0), STARLING_E_LIMIT);
    assert_int_equal(starling__data_encode(frame, 32, MSG_DATA, 0, &m, 0), 32);
}

/* Only MSG_DATA may carry a flag, and only the zstd one. */
static void test_data_flags(void **state)
{
    starling__msg_data m = {1, 2, 3, 4};
    starling__frame_hdr h;
    (void)state;
    assert_int_equal(starling__data_encode(frame, sizeof frame, MSG_DATA, STARLING_DATA_F_ZSTD,
                                           &m, 16),
                     STARLING_FRAME_HDR + STARLING_DATA_HDR);
    assert_int_equal(starling__frame_hdr_decode(frame, CHUNK, &h), STARLING_OK);
    assert_int_equal(h.flags, STARLING_DATA_F_ZSTD);
    frame[1] = 0x02; /* an unknown flag */
    assert_int_equal(starling__frame_hdr_decode(frame, CHUNK, &h), STARLING_E_PROTOCOL);
    assert_int_equal(starling__data_encode(frame, sizeof frame, MSG_DATA, 0x02, &m, 16),
                     STARLING_E_INVALID);
    assert_int_equal(starling__data_encode(frame, sizeof frame, MSG_DONE, STARLING_DATA_F_ZSTD,
                                           &m, 0),
                     STARLING_E_INVALID);
    assert_int_equal(starling__data_encode(frame, sizeof frame, MSG_DONE, 0, &m, 0),
                     STARLING_FRAME_HDR + STARLING_DATA_HDR);
    frame[1] = STARLING_DATA_F_ZSTD; /* a flag on a frame type that has none */
    assert_int_equal(starling__frame_hdr_decode(frame, CHUNK, &h), STARLING_E_PROTOCOL);
    starling__frame_hdr_encode(frame, MSG_HEARTBEAT, 0);
    frame[1] = STARLING_DATA_F_ZSTD;
    assert_int_equal(starling__frame_hdr_decode(frame, CHUNK, &h), STARLING_E_PROTOCOL);
}

/* DATA: nbytes so large that 24 + nbytes would wrap the u32 length must be refused. */
static void test_data_encode_length_wrap(void **state)
{
    starling__msg_data m = {1, 2, 3, 4};
    int rc;
    (void)state;
    /* Regression (fixed: src/proto/msg.c, starling__data_encode): the header length is computed as
     * STARLING_DATA_HDR + nbytes in uint32_t, so nbytes > UINT32_MAX - 24 wraps to a small
     * length. */
    rc = starling__data_encode(frame, sizeof frame, MSG_DATA, 0, &m, UINT32_MAX - 10);
    assert_int_equal(rc, STARLING_E_LIMIT);
}

/* Every encoder: STARLING_E_LIMIT, never a partial write, when cap is one byte short. */
static void test_encoders_limit(void **state)
{
    static uint8_t small[FRAME_MAX];
    uint8_t type;
    (void)state;
    for (int idx = 0;; idx++) {
        int n = build_sample(idx, frame, sizeof frame, &type);
        if (n == 0)
            break;
        assert_true(n > 0);
        for (size_t cap = 0; cap < (size_t)n; cap++) {
            memset(small, 0xa5, sizeof small);
            assert_int_equal(build_sample(idx, small, cap, &type), STARLING_E_LIMIT);
            /* nothing past cap was touched */
            for (size_t j = cap; j < (size_t)n + 1; j++)
                assert_int_equal(small[j], 0xa5);
        }
        assert_int_equal(build_sample(idx, small, (size_t)n, &type), n);
        assert_memory_equal(small, frame, (size_t)n);
    }
}

/* Counts over the limit are refused by the encoders too. */
static void test_encoders_refuse_over_limit(void **state)
{
    (void)state;
    sample_register(&reg_a, STARLING_MAX_PEERS);
    reg_a.nmembers = STARLING_MAX_PEERS + 1;
    assert_int_equal(starling__register_encode(frame, sizeof frame, &reg_a), STARLING_E_LIMIT);
    sample_topo(&topo_a, STARLING_MAX_PEERS);
    topo_a.n = STARLING_MAX_PEERS + 1;
    assert_int_equal(starling__topo_encode(frame, sizeof frame, &topo_a), STARLING_E_LIMIT);
    sample_links(&links_a, STARLING_MAX_PEERS);
    links_a.n = STARLING_MAX_PEERS + 1;
    assert_int_equal(starling__links_encode(frame, sizeof frame, &links_a), STARLING_E_LIMIT);
    links_a.n = UINT32_MAX;
    assert_int_equal(starling__links_encode(frame, sizeof frame, &links_a), STARLING_E_LIMIT);
}

/* ---------------------------------------------------------------- frame header */

static void test_frame_hdr_round_trip(void **state)
{
    uint8_t hdr[STARLING_FRAME_HDR];
    starling__frame_hdr h;
    (void)state;
    for (uint8_t type = 1; type <= MSG_TYPE_MAX; type++) {
        uint32_t len = type == MSG_DATA                        ? STARLING_DATA_HDR + CHUNK
                       : type == MSG_DONE || type == MSG_ABORT ? STARLING_DATA_HDR
                                                               : STARLING_CTRL_MAX;
        starling__frame_hdr_encode(hdr, type, len);
        assert_int_equal(hdr[0], type);
        assert_int_equal(hdr[1] | hdr[2] | hdr[3], 0);
        assert_int_equal(starling__frame_hdr_decode(hdr, CHUNK, &h), STARLING_OK);
        assert_int_equal(h.type, type);
        assert_int_equal(h.flags, 0);
        assert_int_equal(h.len, len);
    }
}

static void test_frame_hdr_unknown_type(void **state)
{
    uint8_t hdr[STARLING_FRAME_HDR];
    starling__frame_hdr h;
    (void)state;
    for (int type = 0; type < 256; type++) {
        if (type >= 1 && type <= MSG_TYPE_MAX)
            continue;
        starling__frame_hdr_encode(hdr, (uint8_t)type, 24);
        assert_int_equal(starling__frame_hdr_decode(hdr, CHUNK, &h), STARLING_E_PROTOCOL);
    }
}

static void test_frame_hdr_reserved_bytes(void **state)
{
    uint8_t hdr[STARLING_FRAME_HDR];
    starling__frame_hdr h;
    (void)state;
    for (int at = 2; at <= 3; at++)
        for (int bit = 0; bit < 8; bit++) {
            starling__frame_hdr_encode(hdr, MSG_HEARTBEAT, 0);
            hdr[at] = (uint8_t)(1u << bit);
            assert_int_equal(starling__frame_hdr_decode(hdr, CHUNK, &h), STARLING_E_PROTOCOL);
        }
    /* Byte 1 is the flags byte: only MSG_DATA defines one (test_data_flags); any other bit
     * is refused rather than ignored. */
    starling__frame_hdr_encode(hdr, MSG_HEARTBEAT, 0);
    hdr[1] = 0x80;
    assert_int_equal(starling__frame_hdr_decode(hdr, CHUNK, &h), STARLING_E_PROTOCOL);
}

static void test_frame_hdr_control_len(void **state)
{
    uint8_t hdr[STARLING_FRAME_HDR];
    starling__frame_hdr h;
    (void)state;
    for (uint8_t type = 1; type <= MSG_TYPE_MAX; type++) {
        if (type == MSG_DATA || type == MSG_DONE || type == MSG_ABORT)
            continue; /* data-plane frames: see the tests below */
        starling__frame_hdr_encode(hdr, type, STARLING_CTRL_MAX);
        assert_int_equal(starling__frame_hdr_decode(hdr, CHUNK, &h), STARLING_OK);
        starling__frame_hdr_encode(hdr, type, STARLING_CTRL_MAX + 1);
        assert_int_equal(starling__frame_hdr_decode(hdr, CHUNK, &h), STARLING_E_PROTOCOL);
        starling__frame_hdr_encode(hdr, type, UINT32_MAX);
        assert_int_equal(starling__frame_hdr_decode(hdr, CHUNK, &h), STARLING_E_PROTOCOL);
        /* The control limit holds even when the data limit is larger. */
        starling__frame_hdr_encode(hdr, type, STARLING_CTRL_MAX + 1);
        assert_int_equal(starling__frame_hdr_decode(hdr, UINT32_MAX, &h), STARLING_E_PROTOCOL);
    }
}

static void test_frame_hdr_data_len(void **state)
{
    static const uint32_t maxes[] = {0, 4096, CHUNK, 64u << 20, UINT32_MAX - 24, UINT32_MAX};
    uint8_t hdr[STARLING_FRAME_HDR];
    starling__frame_hdr h;
    (void)state;
    for (uint32_t len = 0; len < STARLING_DATA_HDR; len++) {
        starling__frame_hdr_encode(hdr, MSG_DATA, len);
        assert_int_equal(starling__frame_hdr_decode(hdr, CHUNK, &h), STARLING_E_PROTOCOL);
    }
    for (size_t i = 0; i < sizeof maxes / sizeof maxes[0]; i++) {
        uint32_t max = maxes[i];
        /* 24 header bytes plus up to max payload bytes. */
        starling__frame_hdr_encode(hdr, MSG_DATA, STARLING_DATA_HDR);
        assert_int_equal(starling__frame_hdr_decode(hdr, max, &h), STARLING_OK);
        if (max <= UINT32_MAX - STARLING_DATA_HDR) {
            starling__frame_hdr_encode(hdr, MSG_DATA, STARLING_DATA_HDR + max);
            assert_int_equal(starling__frame_hdr_decode(hdr, max, &h), STARLING_OK);
            assert_int_equal(h.len, STARLING_DATA_HDR + max);
        }
        if (max < UINT32_MAX - STARLING_DATA_HDR) {
            starling__frame_hdr_encode(hdr, MSG_DATA, STARLING_DATA_HDR + max + 1);
            assert_int_equal(starling__frame_hdr_decode(hdr, max, &h), STARLING_E_PROTOCOL);
        }
    }
}

/* DONE and ABORT are exactly the 24-byte data header: any other length is malformed. */
static void test_frame_hdr_done_abort_len(void **state)
{
    static const uint8_t types[] = {MSG_DONE, MSG_ABORT};
    uint8_t hdr[STARLING_FRAME_HDR];
    starling__frame_hdr h;
    (void)state;
    for (size_t i = 0; i < 2; i++) {
        starling__frame_hdr_encode(hdr, types[i], STARLING_DATA_HDR);
        assert_int_equal(starling__frame_hdr_decode(hdr, CHUNK, &h), STARLING_OK);
    }
    /* Regression (fixed: src/proto/msg.c, starling__frame_hdr_decode): DONE and ABORT are checked
     * as control frames (len <= STARLING_CTRL_MAX), so len 0..23 passes and the caller's
     * starling__data_decode, which always reads 24 bytes, would read past the payload.
     */
    for (size_t i = 0; i < 2; i++) {
        static const uint32_t bad[] = {0, 1, STARLING_DATA_HDR - 1, STARLING_DATA_HDR + 1, 4096};
        for (size_t j = 0; j < sizeof bad / sizeof bad[0]; j++) {
            starling__frame_hdr_encode(hdr, types[i], bad[j]);
            assert_int_equal(starling__frame_hdr_decode(hdr, CHUNK, &h), STARLING_E_PROTOCOL);
        }
    }
}

/* ---------------------------------------------------------------- generic refusals */

/* Every proper prefix of every valid payload is refused, and never read past. */
static void test_truncated_every_length(void **state)
{
    uint8_t type;
    (void)state;
    for (int idx = 0;; idx++) {
        int n = build_sample(idx, frame, sizeof frame, &type);
        if (n == 0)
            break;
        size_t plen = frame_check(frame, n, type);
        assert_int_equal(decode_exact(type, frame + 8, plen), STARLING_OK);
        for (size_t len = 0; len < plen; len++)
            assert_int_equal(decode_exact(type, frame + 8, len), STARLING_E_PROTOCOL);
    }
}

/* Every valid payload with bytes appended is refused. */
static void test_trailing_bytes(void **state)
{
    static const size_t extra[] = {1, 2, 7, 8, 64};
    uint8_t type;
    (void)state;
    for (int idx = 0;; idx++) {
        int n = build_sample(idx, frame, sizeof frame, &type);
        if (n == 0)
            break;
        size_t plen = frame_check(frame, n, type);
        for (size_t e = 0; e < sizeof extra / sizeof extra[0]; e++) {
            memset(frame + n, 0, extra[e]);
            assert_int_equal(decode_exact(type, frame + 8, plen + extra[e]), STARLING_E_PROTOCOL);
        }
    }
}

static void test_data_decode_refusals(void **state)
{
    starling__msg_data in = {1, 2, 3, 4}, out;
    uint8_t *hdr;
    (void)state;
    starling__data_encode(frame, sizeof frame, MSG_DATA, 0, &in, 0);
    hdr = exact_copy(frame + 8, STARLING_DATA_HDR);
    assert_int_equal(starling__data_decode(hdr, &out), STARLING_OK);
    /* seq counts from 1. */
    memset(hdr, 0, 8);
    assert_int_equal(starling__data_decode(hdr, &out), STARLING_E_PROTOCOL);
    free(hdr);
}

/* ---------------------------------------------------------------- hello refusals */

static int hello_decode_of(const starling__msg_hello *m)
{
    starling__msg_hello out;
    int n = starling__hello_encode(frame, sizeof frame, m);
    assert_true(n > 0);
    uint8_t *c = exact_copy(frame + 8, (size_t)n - 8);
    int rc = starling__hello_decode(c, (size_t)n - 8, &out);
    free(c);
    return rc;
}

static void test_hello_magic_and_version(void **state)
{
    starling__msg_hello m;
    (void)state;
    sample_hello(&m, ROLE_CONTROL);
    m.magic = 0x4c525454; /* "TTRL" */
    assert_int_equal(hello_decode_of(&m), STARLING_E_PROTOCOL);
    m.magic = 0;
    assert_int_equal(hello_decode_of(&m), STARLING_E_PROTOCOL);
    m.magic = 0x5354524c; /* byte-swapped */
    assert_int_equal(hello_decode_of(&m), STARLING_E_PROTOCOL);
    /* Magic is checked before version: a stranger is a protocol error, not a version. */
    m.version = STARLING_PROTOCOL_VERSION + 1;
    assert_int_equal(hello_decode_of(&m), STARLING_E_PROTOCOL);

    /* Every version but ours, older (1..5) or newer, is a version refusal. */
    sample_hello(&m, ROLE_CONTROL);
    /* 0x0600: ours byte-swapped */
    static const uint16_t versions[] = {
        0,      1,      2,      3,      4,      5,      STARLING_PROTOCOL_VERSION + 1,
        0x0100, 0x0200, 0x0300, 0x0400, 0x0500, 0x0600, 0xffff};
    assert_int_equal(STARLING_PROTOCOL_VERSION, 6); /* 0x0600 above */
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        assert_int_not_equal(versions[i], STARLING_PROTOCOL_VERSION);
        m.version = versions[i];
        assert_int_equal(hello_decode_of(&m), STARLING_E_VERSION);
    }
}

/* Another version may lay out the rest of HELLO differently: once magic and version are
 * read, a different version is STARLING_E_VERSION whatever follows, a future one (7) or a
 * past one (1 to 5; version 2's layout is 10 bytes shorter than ours, see
 * test_golden_v2_hello, and version 5's 8 bytes, test_golden_v5_hello). Our own version
 * (6) with nothing after it is a truncated hello. */
static void test_hello_future_version_any_layout(void **state)
{
    static const uint8_t v7_short[] = {0x53, 0x54, 0x52, 0x4c, 0x07, 0x00};
    static const uint8_t v7_other[] = {0x53, 0x54, 0x52, 0x4c, 0x07, 0x00, 0xff, 0xff, 0x00};
    static const uint8_t v1_short[] = {0x53, 0x54, 0x52, 0x4c, 0x01, 0x00};
    static const uint8_t v2_short[] = {0x53, 0x54, 0x52, 0x4c, 0x02, 0x00};
    static const uint8_t v3_short[] = {0x53, 0x54, 0x52, 0x4c, 0x03, 0x00};
    static const uint8_t v4_short[] = {0x53, 0x54, 0x52, 0x4c, 0x04, 0x00};
    static const uint8_t v5_short[] = {0x53, 0x54, 0x52, 0x4c, 0x05, 0x00};
    static const uint8_t v6_short[] = {0x53, 0x54, 0x52, 0x4c, 0x06, 0x00};
    static const uint8_t magic_only[] = {0x53, 0x54, 0x52, 0x4c, 0x06};
    starling__msg_hello out;
    (void)state;
    assert_int_equal(STARLING_PROTOCOL_VERSION, 6); /* the bytes above spell versions out */
    assert_int_equal(starling__hello_decode(v7_short, sizeof v7_short, &out), STARLING_E_VERSION);
    assert_int_equal(starling__hello_decode(v7_other, sizeof v7_other, &out), STARLING_E_VERSION);
    assert_int_equal(starling__hello_decode(v1_short, sizeof v1_short, &out), STARLING_E_VERSION);
    assert_int_equal(starling__hello_decode(v2_short, sizeof v2_short, &out), STARLING_E_VERSION);
    assert_int_equal(starling__hello_decode(v3_short, sizeof v3_short, &out), STARLING_E_VERSION);
    assert_int_equal(starling__hello_decode(v4_short, sizeof v4_short, &out), STARLING_E_VERSION);
    assert_int_equal(starling__hello_decode(v5_short, sizeof v5_short, &out), STARLING_E_VERSION);
    assert_int_equal(starling__hello_decode(v6_short, sizeof v6_short, &out), STARLING_E_PROTOCOL);
    assert_int_equal(starling__hello_decode(magic_only, sizeof magic_only, &out),
                     STARLING_E_PROTOCOL);
}

static void test_hello_role(void **state)
{
    /* 1, 2, (since v2) 3 and (since v5) 4 are roles */
    static const uint8_t bad[] = {0, 5, 6, 0x7f, 0x80, 255};
    starling__msg_hello m;
    (void)state;
    for (size_t i = 0; i < sizeof bad; i++) {
        sample_hello(&m, ROLE_CONTROL);
        m.role = bad[i];
        assert_int_equal(hello_decode_of(&m), STARLING_E_PROTOCOL);
    }
}

/* The stream bounds of both data roles, ROLE_DATA and (v5) ROLE_DATA_REV. */
static void test_hello_streams(void **state)
{
    static const uint8_t roles[] = {ROLE_DATA, ROLE_DATA_REV};
    starling__msg_hello m;
    (void)state;
    for (size_t i = 0; i < sizeof roles; i++) {
        sample_hello(&m, roles[i]);
        m.stream = 0;
        m.nstreams = 0;
        assert_int_equal(hello_decode_of(&m), STARLING_E_PROTOCOL);
        m.nstreams = 17;
        assert_int_equal(hello_decode_of(&m), STARLING_E_PROTOCOL);
        m.nstreams = 255;
        assert_int_equal(hello_decode_of(&m), STARLING_E_PROTOCOL);
        for (uint8_t ns = 1; ns <= 16; ns++) {
            m.nstreams = ns;
            m.stream = ns;
            assert_int_equal(hello_decode_of(&m), STARLING_E_PROTOCOL);
            m.stream = 255;
            assert_int_equal(hello_decode_of(&m), STARLING_E_PROTOCOL);
            m.stream = (uint8_t)(ns - 1);
            assert_int_equal(hello_decode_of(&m), STARLING_OK);
        }
    }
    /* On a control connection the stream fields mean nothing and are not checked. */
    sample_hello(&m, ROLE_CONTROL);
    m.stream = 200;
    m.nstreams = 0;
    assert_int_equal(hello_decode_of(&m), STARLING_OK);
}

/* ROLE_PROBE (v2): a link measurement. Like a control hello, the stream fields are carried
 * but not checked; the prober sends stream 0 of 0 and the epoch it measures in. */
static void test_hello_probe_role(void **state)
{
    static const uint8_t streams[][2] = {{0, 0}, {0, 1}, {200, 0}, {255, 255}, {16, 17}};
    starling__msg_hello m, out;
    (void)state;
    assert_int_equal(ROLE_PROBE, 3);
    for (size_t i = 0; i < sizeof streams / sizeof streams[0]; i++) {
        sample_hello(&m, ROLE_PROBE);
        m.stream = streams[i][0];
        m.nstreams = streams[i][1];
        int n = starling__hello_encode(frame, sizeof frame, &m);
        /* magic, version, role, nonce, run, peer_id, epoch, stream, nstreams, security,
         * caps, host */
        assert_int_equal(frame_check(frame, n, MSG_HELLO),
                         4 + 2 + 1 + 32 + 1 + strlen(m.run) + 8 + 8 + 1 + 1 + 1 + 1 + 8);
        assert_int_equal(frame[8 + 6], ROLE_PROBE);
        assert_int_equal(starling__hello_decode(frame + 8, (size_t)n - 8, &out), STARLING_OK);
        assert_hello_equal(&m, &out);
    }
    /* The other rules still hold on a probe hello. */
    sample_hello(&m, ROLE_PROBE);
    m.run[0] = '\0';
    assert_int_equal(hello_decode_of(&m), STARLING_E_PROTOCOL);
    sample_hello(&m, ROLE_PROBE);
    m.security = STARLING_SEC_MAX + 1;
    assert_int_equal(hello_decode_of(&m), STARLING_E_PROTOCOL);
    sample_hello(&m, ROLE_PROBE);
    m.version = 1;
    assert_int_equal(hello_decode_of(&m), STARLING_E_VERSION);
    m.version = 2;
    assert_int_equal(hello_decode_of(&m), STARLING_E_VERSION);
    m.version = 4;
    assert_int_equal(hello_decode_of(&m), STARLING_E_VERSION);
    m.version = 5;
    assert_int_equal(hello_decode_of(&m), STARLING_E_VERSION);
}

/* ROLE_DATA_REV (v5): a ring link stream opened by the right neighbour, because the left
 * one accepts no inbound connections. It carries stream and nstreams like ROLE_DATA and
 * the same bounds apply (test_hello_streams); every other rule holds too. */
static void test_hello_data_rev_role(void **state)
{
    static const uint8_t streams[][2] = {{0, 1}, {0, 2}, {1, 2}, {3, 4}, {15, 16}};
    starling__msg_hello m, out;
    (void)state;
    assert_int_equal(ROLE_DATA_REV, 4);
    for (size_t i = 0; i < sizeof streams / sizeof streams[0]; i++) {
        sample_hello(&m, ROLE_DATA_REV);
        m.stream = streams[i][0];
        m.nstreams = streams[i][1];
        int n = starling__hello_encode(frame, sizeof frame, &m);
        /* the same layout as every role's: magic, version, role, nonce, run, peer_id,
         * epoch, stream, nstreams, security, caps, host */
        assert_int_equal(frame_check(frame, n, MSG_HELLO),
                         4 + 2 + 1 + 32 + 1 + strlen(m.run) + 8 + 8 + 1 + 1 + 1 + 1 + 8);
        assert_int_equal(frame[8 + 6], ROLE_DATA_REV);
        memset(&out, 0xee, sizeof out);
        assert_int_equal(starling__hello_decode(frame + 8, (size_t)n - 8, &out), STARLING_OK);
        assert_hello_equal(&m, &out);
        assert_int_equal(out.role, ROLE_DATA_REV);
    }
    /* Out of bounds: no stream, more than 16, stream not below nstreams (0 of 0 is a
     * probe's, not a data link's). */
    static const uint8_t bad[][2] = {{0, 0}, {0, 17}, {16, 17}, {2, 2}, {16, 16}, {255, 255}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sample_hello(&m, ROLE_DATA_REV);
        m.stream = bad[i][0];
        m.nstreams = bad[i][1];
        assert_int_equal(hello_decode_of(&m), STARLING_E_PROTOCOL);
    }
    sample_hello(&m, ROLE_DATA_REV);
    m.run[0] = '\0';
    assert_int_equal(hello_decode_of(&m), STARLING_E_PROTOCOL);
    sample_hello(&m, ROLE_DATA_REV);
    m.security = STARLING_SEC_MAX + 1;
    assert_int_equal(hello_decode_of(&m), STARLING_E_PROTOCOL);
    /* A v4 side could not have sent it: version 4 is refused as a version first. */
    sample_hello(&m, ROLE_DATA_REV);
    m.version = 4;
    assert_int_equal(hello_decode_of(&m), STARLING_E_VERSION);
    /* The next role number is still refused. */
    sample_hello(&m, ROLE_DATA_REV);
    m.role = ROLE_DATA_REV + 1;
    assert_int_equal(hello_decode_of(&m), STARLING_E_PROTOCOL);
}

/* HELLO's security byte (v3): a STARLING_SEC_* mode, nothing above STARLING_SEC_MAX, in
 * every role. The caps byte is carried, not checked: bits other than
 * STARLING_CAP_AESGCM are free for later use by a side that knows them. */
static void test_hello_security(void **state)
{
    static const uint8_t roles[] = {ROLE_CONTROL, ROLE_DATA, ROLE_PROBE, ROLE_DATA_REV};
    static const uint8_t bad[] = {STARLING_SEC_MAX + 1, 4, 0x7f, 0x80, 0xff};
    starling__msg_hello m;
    (void)state;
    assert_int_equal(STARLING_SEC_MAX, 2);
    for (size_t i = 0; i < sizeof roles; i++) {
        for (unsigned sec = 0; sec <= STARLING_SEC_MAX; sec++) {
            sample_hello(&m, roles[i]);
            m.security = (uint8_t)sec;
            assert_int_equal(hello_decode_of(&m), STARLING_OK);
        }
        for (size_t j = 0; j < sizeof bad; j++) {
            sample_hello(&m, roles[i]);
            m.security = bad[j];
            assert_int_equal(hello_decode_of(&m), STARLING_E_PROTOCOL);
        }
        for (unsigned caps = 0; caps <= 0xff; caps++) {
            sample_hello(&m, roles[i]);
            m.caps = (uint8_t)caps;
            assert_int_equal(hello_decode_of(&m), STARLING_OK);
        }
    }
}

static void test_hello_run_name(void **state)
{
    starling__msg_hello m;
    (void)state;
    sample_hello(&m, ROLE_CONTROL);
    m.run[0] = '\0';
    assert_int_equal(hello_decode_of(&m), STARLING_E_PROTOCOL); /* empty */
    memset(m.run, 'r', STARLING_NAME_MAX - 1);
    m.run[STARLING_NAME_MAX - 1] = '\0';
    assert_int_equal(hello_decode_of(&m), STARLING_OK); /* 63 bytes */
    strcpy(m.run, "tab\there");
    assert_int_equal(hello_decode_of(&m), STARLING_E_PROTOCOL);
    strcpy(m.run, "del\x7f");
    assert_int_equal(hello_decode_of(&m), STARLING_E_PROTOCOL);
    strcpy(m.run, "\x1b[31m");
    assert_int_equal(hello_decode_of(&m), STARLING_E_PROTOCOL);
}

/* A run name of 64 bytes and more does not fit the struct; patch it into the bytes. */
static void test_hello_run_too_long(void **state)
{
    /* 63 bytes, the longest that fits, shows that the payload is otherwise valid. */
    static const struct {
        size_t runlen;
        int rc;
    } cases[] = {{STARLING_NAME_MAX - 1, STARLING_OK},
                 {STARLING_NAME_MAX, STARLING_E_PROTOCOL},
                 {255, STARLING_E_PROTOCOL}};
    starling__msg_hello m, out;
    static uint8_t p[512];
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t runlen = cases[i].runlen, n = 0;
        sample_hello(&m, ROLE_CONTROL);
        memcpy(p, "STRL", 4);             /* magic */
        p[4] = STARLING_PROTOCOL_VERSION; /* u16 version */
        p[5] = 0;
        p[6] = ROLE_CONTROL;
        n = 7;
        memcpy(p + n, m.nonce, 32);
        n += 32;
        p[n++] = (uint8_t)runlen;
        memset(p + n, 'r', runlen);
        n += runlen;
        memset(p + n, 1, 28); /* peer_id, epoch, stream, nstreams, security 1, caps 1, host */
        n += 28;
        assert_int_equal(starling__hello_decode(p, n, &out), cases[i].rc);
    }
}

/* HELLO's host tag (v6): a u64 after caps, in every role, carried and never checked by
 * the decoder (the handshake's proofs cover it; links_shm.c compares it). A version 6
 * hello without it (a version 5 layout with the version field changed) is truncated,
 * and so is one with only some of its bytes; one with a byte more has a trailing byte. */
static void test_hello_host(void **state)
{
    static const uint8_t roles[] = {ROLE_CONTROL, ROLE_DATA, ROLE_PROBE, ROLE_DATA_REV};
    starling__msg_hello m, out;
    (void)state;
    for (size_t i = 0; i < sizeof roles; i++) {
        int n, n5;
        sample_hello(&m, roles[i]);
        assert_true(m.host != 0);
        n = starling__hello_encode(frame, sizeof frame, &m);
        memset(&out, 0, sizeof out);
        assert_int_equal(starling__hello_decode(frame + 8, (size_t)n - 8, &out), STARLING_OK);
        assert_true(out.host == SAMPLE_HOST);
        /* The same message as version 5 wrote it: 8 bytes shorter, nothing after caps. */
        m.version = 5;
        n5 = starling__hello_encode(frame, sizeof frame, &m);
        assert_int_equal(n5, n - 8);
        assert_int_equal(decode_exact(MSG_HELLO, frame + 8, (size_t)n5 - 8), STARLING_E_VERSION);
        frame[8 + 4] = 6; /* ... claiming version 6 */
        assert_int_equal(decode_exact(MSG_HELLO, frame + 8, (size_t)n5 - 8), STARLING_E_PROTOCOL);
        /* 1 to 7 of the 8 host bytes, and 9. */
        m.version = STARLING_PROTOCOL_VERSION;
        n = starling__hello_encode(frame, sizeof frame, &m);
        for (size_t cut = 1; cut < 8; cut++)
            assert_int_equal(decode_exact(MSG_HELLO, frame + 8, (size_t)n - 8 - cut),
                             STARLING_E_PROTOCOL);
        frame[n] = 0;
        assert_int_equal(decode_exact(MSG_HELLO, frame + 8, (size_t)n - 8 + 1),
                         STARLING_E_PROTOCOL);
    }
    /* What it says is not the decoder's business: 0 (shares no memory) and every bit
     * pattern pass, the other rules still apply with any of them. */
    static const uint64_t hosts[] = {0, 1, 0x8000000000000000ull, UINT64_MAX};
    for (size_t j = 0; j < sizeof hosts / sizeof hosts[0]; j++) {
        sample_hello(&m, ROLE_DATA);
        m.host = hosts[j];
        assert_int_equal(hello_decode_of(&m), STARLING_OK);
        m.nstreams = 0;
        assert_int_equal(hello_decode_of(&m), STARLING_E_PROTOCOL);
        sample_hello(&m, ROLE_DATA);
        m.host = hosts[j];
        m.security = STARLING_SEC_MAX + 1;
        assert_int_equal(hello_decode_of(&m), STARLING_E_PROTOCOL);
    }
}

/* ---------------------------------------------------------------- other refusals */

/* CHALLENGE's security byte (v3), as in the hello: nothing above STARLING_SEC_MAX; caps
 * (and the v6 host tag, test_challenge_host) is not checked. Lengths other than 74 are
 * test_truncated_every_length's and test_trailing_bytes'. */
static void test_challenge_security(void **state)
{
    static const uint8_t bad[] = {STARLING_SEC_MAX + 1, 4, 0x7f, 0x80, 0xff};
    starling__msg_challenge m;
    (void)state;
    memset(&m, 0x5a, sizeof m);
    for (unsigned sec = 0; sec <= STARLING_SEC_MAX; sec++) {
        m.security = (uint8_t)sec;
        int n = starling__challenge_encode(frame, sizeof frame, &m);
        assert_int_equal(decode_exact(MSG_CHALLENGE, frame + 8, (size_t)n - 8), STARLING_OK);
    }
    for (size_t i = 0; i < sizeof bad; i++) {
        m.security = bad[i];
        int n = starling__challenge_encode(frame, sizeof frame, &m);
        assert_true(n > 0); /* the encoder writes any value: the decoder is the gate */
        assert_int_equal(decode_exact(MSG_CHALLENGE, frame + 8, (size_t)n - 8),
                         STARLING_E_PROTOCOL);
    }
    m.security = STARLING_SEC_NONE;
    for (unsigned caps = 0; caps <= 0xff; caps++) {
        m.caps = (uint8_t)caps;
        int n = starling__challenge_encode(frame, sizeof frame, &m);
        assert_int_equal(decode_exact(MSG_CHALLENGE, frame + 8, (size_t)n - 8), STARLING_OK);
    }
}

/* CHALLENGE's host tag (v6): 8 bytes after caps, any value. The 66 bytes a version 3 to
 * 5 server sent are truncated now (the HELLO's version refusal comes first in practice:
 * CHALLENGE has no version field), and so is any cut into the tag. */
static void test_challenge_host(void **state)
{
    static const uint64_t hosts[] = {0, 1, SAMPLE_HOST, UINT64_MAX};
    starling__msg_challenge m, out;
    (void)state;
    for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) {
        memset(&m, 0x5a, sizeof m);
        m.security = STARLING_SEC_AEAD;
        m.host = hosts[i];
        int n = starling__challenge_encode(frame, sizeof frame, &m);
        assert_int_equal(n, 8 + 74);
        memset(&out, 0, sizeof out);
        assert_int_equal(starling__challenge_decode(frame + 8, 74, &out), STARLING_OK);
        assert_true(out.host == hosts[i]);
        assert_int_equal(out.security, STARLING_SEC_AEAD);
        for (size_t len = 66; len < 74; len++)
            assert_int_equal(decode_exact(MSG_CHALLENGE, frame + 8, len), STARLING_E_PROTOCOL);
        frame[n] = 0;
        assert_int_equal(decode_exact(MSG_CHALLENGE, frame + 8, 75), STARLING_E_PROTOCOL);
    }
}

/* SHM_OFFER (v6): 32 bytes exactly; a size of 0 (no segment) or a power of two in
 * [64 KiB, 256 MiB] (STARLING_SHM_RING_MIN..MAX, net/shm.h); pid not 0 when there is a
 * segment (/proc/0 is nobody). fd is not checked: the acceptor's open() is the check. */
static void test_shm_offer_refusals(void **state)
{
    /* Below the minimum, around it, not powers of two, above the maximum. */
    static const uint64_t bad_sizes[] = {1,
                                         2,
                                         4096,
                                         32u << 10,
                                         (64u << 10) - 1,
                                         (64u << 10) + 1,
                                         3u << 16,
                                         (4u << 20) - 1,
                                         (4u << 20) + 4096,
                                         (1u << 20) | (1u << 17),
                                         (256u << 20) - 1,
                                         (256u << 20) + 1,
                                         512u << 20,
                                         1ull << 32,
                                         1ull << 40,
                                         1ull << 63,
                                         UINT64_MAX};
    static const uint64_t good_sizes[] = {64u << 10, 128u << 10, 1u << 20, 4u << 20, 256u << 20};
    starling__msg_shm m;
    int n;
    (void)state;
    /* Truncated anywhere, or a byte or more too long. */
    sample_shm_offer(&m);
    n = starling__shm_offer_encode(frame, sizeof frame, &m);
    assert_int_equal(n, 8 + 32);
    assert_int_equal(decode_exact(MSG_SHM_OFFER, frame + 8, 32), STARLING_OK);
    for (size_t len = 0; len < 32; len++)
        assert_int_equal(decode_exact(MSG_SHM_OFFER, frame + 8, len), STARLING_E_PROTOCOL);
    memset(frame + n, 0, 8);
    assert_int_equal(decode_exact(MSG_SHM_OFFER, frame + 8, 33), STARLING_E_PROTOCOL);
    assert_int_equal(decode_exact(MSG_SHM_OFFER, frame + 8, 40), STARLING_E_PROTOCOL);
    /* Sizes outside the ring limits or not powers of two, whatever the pid. */
    for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++) {
        sample_shm_offer(&m);
        m.size = bad_sizes[i];
        n = starling__shm_offer_encode(frame, sizeof frame, &m);
        assert_true(n > 0); /* the encoder writes any value: the decoder is the gate */
        assert_int_equal(decode_exact(MSG_SHM_OFFER, frame + 8, 32), STARLING_E_PROTOCOL);
        m.pid = 0;
        n = starling__shm_offer_encode(frame, sizeof frame, &m);
        assert_int_equal(decode_exact(MSG_SHM_OFFER, frame + 8, 32), STARLING_E_PROTOCOL);
    }
    /* Every allowed size: accepted with a pid, refused with pid 0. */
    for (size_t i = 0; i < sizeof good_sizes / sizeof good_sizes[0]; i++) {
        sample_shm_offer(&m);
        m.size = good_sizes[i];
        n = starling__shm_offer_encode(frame, sizeof frame, &m);
        assert_int_equal(decode_exact(MSG_SHM_OFFER, frame + 8, 32), STARLING_OK);
        m.pid = 0;
        n = starling__shm_offer_encode(frame, sizeof frame, &m);
        assert_int_equal(decode_exact(MSG_SHM_OFFER, frame + 8, 32), STARLING_E_PROTOCOL);
    }
    /* Size 0: no segment, valid with pid 0 (as sent) or any other. */
    memset(&m, 0, sizeof m);
    n = starling__shm_offer_encode(frame, sizeof frame, &m);
    assert_int_equal(decode_exact(MSG_SHM_OFFER, frame + 8, 32), STARLING_OK);
    m.pid = 77;
    n = starling__shm_offer_encode(frame, sizeof frame, &m);
    assert_int_equal(decode_exact(MSG_SHM_OFFER, frame + 8, 32), STARLING_OK);
}

/* SHM_REPLY (v6): exactly one byte, 0 or 1. */
static void test_shm_reply_refusals(void **state)
{
    static const uint8_t bad[] = {2, 3, 0x7f, 0x80, 0xfe, 0xff};
    uint8_t p[2] = {1, 0};
    (void)state;
    assert_int_equal(decode_exact(MSG_SHM_REPLY, p, 1), STARLING_OK);
    assert_int_equal(decode_exact(MSG_SHM_REPLY, p, 0), STARLING_E_PROTOCOL);
    assert_int_equal(decode_exact(MSG_SHM_REPLY, p, 2), STARLING_E_PROTOCOL);
    p[0] = 0;
    assert_int_equal(decode_exact(MSG_SHM_REPLY, p, 1), STARLING_OK);
    assert_int_equal(decode_exact(MSG_SHM_REPLY, p, 2), STARLING_E_PROTOCOL);
    for (size_t i = 0; i < sizeof bad; i++) {
        p[0] = bad[i];
        assert_int_equal(decode_exact(MSG_SHM_REPLY, p, 1), STARLING_E_PROTOCOL);
    }
    /* The encoder writes what it is given: the decoder is the gate. */
    {
        starling__msg_shm m;
        memset(&m, 0, sizeof m);
        m.ok = 2;
        int n = starling__shm_reply_encode(frame, sizeof frame, &m);
        assert_int_equal(n, 8 + 1);
        assert_int_equal(decode_exact(MSG_SHM_REPLY, frame + 8, 1), STARLING_E_PROTOCOL);
    }
}

static void test_reject_refusals(void **state)
{
    static const int32_t bad[] = {1, 2, STARLING_E_BUSY - 1, -100, INT32_MIN, INT32_MAX};
    starling__msg_reject m, out;
    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        m.code = bad[i];
        strcpy(m.reason, "x");
        int n = starling__reject_encode(frame, sizeof frame, &m);
        assert_int_equal(starling__reject_decode(frame + 8, (size_t)n - 8, &out),
                         STARLING_E_PROTOCOL);
    }
    m.code = STARLING_E_AUTH;
    strcpy(m.reason, "line\nbreak");
    int n = starling__reject_encode(frame, sizeof frame, &m);
    assert_int_equal(starling__reject_decode(frame + 8, (size_t)n - 8, &out), STARLING_E_PROTOCOL);

    /* 128-byte reason: one more than fits. */
    static uint8_t p[4 + 1 + 255];
    p[0] = (uint8_t)STARLING_E_AUTH;
    p[1] = p[2] = p[3] = 0xff;
    p[4] = STARLING_REASON_MAX;
    memset(p + 5, 'y', STARLING_REASON_MAX);
    assert_int_equal(starling__reject_decode(p, 5 + STARLING_REASON_MAX, &out),
                     STARLING_E_PROTOCOL);
    p[4] = STARLING_REASON_MAX - 1;
    assert_int_equal(starling__reject_decode(p, 5 + STARLING_REASON_MAX - 1, &out), STARLING_OK);
}

/* A REJECT must carry an error: STARLING_OK (0) is not a reason to refuse, and a client
 * that returns the code it received would report success. */
static void test_reject_code_ok_refused(void **state)
{
    starling__msg_reject m = {STARLING_OK, "ok?"}, out;
    (void)state;
    /* Regression (fixed: src/proto/msg.c, starling__reject_decode): the range check is
     * `code > 0 || code < STARLING_E_BUSY`, which let 0 through; it now reads
     * `code >= 0 || ...`. */
    int n = starling__reject_encode(frame, sizeof frame, &m);
    assert_int_equal(starling__reject_decode(frame + 8, (size_t)n - 8, &out), STARLING_E_PROTOCOL);
}

static int register_decode_of(const starling__msg_register *m)
{
    int n = starling__register_encode(frame, sizeof frame, m);
    assert_true(n > 0);
    return decode_exact(MSG_REGISTER, frame + 8, (size_t)n - 8);
}

static void test_register_refusals(void **state)
{
    (void)state;
    sample_register(&reg_a, 0);
    assert_int_equal(register_decode_of(&reg_a), STARLING_OK);

    sample_register(&reg_a, 0);
    reg_a.peer_id = 0;
    assert_int_equal(register_decode_of(&reg_a), STARLING_E_PROTOCOL);
    /* Port 0 is no refusal since v5 (test_register_port_zero). */
    sample_register(&reg_a, 0);
    reg_a.port = 0;
    assert_int_equal(register_decode_of(&reg_a), STARLING_OK);
    sample_register(&reg_a, 0);
    reg_a.min_peers = 0;
    assert_int_equal(register_decode_of(&reg_a), STARLING_E_PROTOCOL);
    reg_a.min_peers = STARLING_MAX_PEERS + 1;
    assert_int_equal(register_decode_of(&reg_a), STARLING_E_PROTOCOL);
    reg_a.min_peers = UINT32_MAX;
    assert_int_equal(register_decode_of(&reg_a), STARLING_E_PROTOCOL);
    sample_register(&reg_a, 0);
    reg_a.host[0] = '\0';
    assert_int_equal(register_decode_of(&reg_a), STARLING_E_PROTOCOL);
    /* A newcomer (epoch 0) lists no members; a member (epoch > 0) lists its epoch's. */
    sample_register(&reg_a, 0);
    reg_a.epoch = 3;
    assert_int_equal(register_decode_of(&reg_a), STARLING_E_PROTOCOL);
    sample_register(&reg_a, 2);
    reg_a.epoch = 0;
    assert_int_equal(register_decode_of(&reg_a), STARLING_E_PROTOCOL);
    /* Strings. */
    sample_register(&reg_a, 0);
    strcpy(reg_a.name, "bad\001name");
    assert_int_equal(register_decode_of(&reg_a), STARLING_E_PROTOCOL);
    sample_register(&reg_a, 0);
    strcpy(reg_a.host, "10.0.0.1\n");
    assert_int_equal(register_decode_of(&reg_a), STARLING_E_PROTOCOL);
}

/* Port 0 (v5): the peer accepts no inbound connections (it is behind a NAT); accepted
 * for a newcomer and for a member, and carried as 0. Until version 4 it was refused. */
static void test_register_port_zero(void **state)
{
    static const uint32_t counts[] = {0, 2};
    (void)state;
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        sample_register(&reg_a, counts[i]);
        reg_a.port = 0;
        int n = starling__register_encode(frame, sizeof frame, &reg_a);
        size_t plen = frame_check(frame, n, MSG_REGISTER);
        /* peer_id, name, host, then the u16 port */
        size_t at = 8 + 8 + 1 + strlen(reg_a.name) + 1 + strlen(reg_a.host);
        assert_int_equal(frame[at], 0);
        assert_int_equal(frame[at + 1], 0);
        memset(&reg_b, 0xee, sizeof reg_b);
        assert_int_equal(decode_exact(MSG_REGISTER, frame + 8, plen), STARLING_OK);
        assert_int_equal(reg_b.port, 0);
        assert_register_equal(&reg_a, &reg_b);
    }
    /* The other rules still hold with port 0. */
    sample_register(&reg_a, 0);
    reg_a.port = 0;
    reg_a.peer_id = 0;
    assert_int_equal(register_decode_of(&reg_a), STARLING_E_PROTOCOL);
    sample_register(&reg_a, 0);
    reg_a.port = 0;
    reg_a.host[0] = '\0';
    assert_int_equal(register_decode_of(&reg_a), STARLING_E_PROTOCOL);
}

/* nmembers over the limit: refused from the count alone, before reading members. */
static void test_register_count_over_limit(void **state)
{
    static const uint32_t counts[] = {STARLING_MAX_PEERS + 1, 100000, UINT32_MAX};
    (void)state;
    sample_register(&reg_a, STARLING_MAX_PEERS);
    int n = starling__register_encode(frame, sizeof frame, &reg_a);
    size_t plen = (size_t)n - 8;
    /* nmembers sits right before the member list */
    uint8_t *count = frame + n - 8 * STARLING_MAX_PEERS - 4;
    assert_int_equal(count[0] | count[1] << 8, STARLING_MAX_PEERS);
    for (size_t i = 0; i < 3; i++) {
        for (int b = 0; b < 4; b++)
            count[b] = (uint8_t)(counts[i] >> (8 * b));
        assert_int_equal(decode_exact(MSG_REGISTER, frame + 8, plen), STARLING_E_PROTOCOL);
        /* ... even if the payload really holds that many members */
        if (counts[i] == STARLING_MAX_PEERS + 1) {
            memset(frame + n, 0x11, 8);
            assert_int_equal(decode_exact(MSG_REGISTER, frame + 8, plen + 8), STARLING_E_PROTOCOL);
        }
    }
}

/* A REGISTER payload built by hand, so that name and host can be longer than the
 * struct's fields allow. */
static size_t register_bytes(uint8_t *p, size_t namelen, size_t hostlen)
{
    size_t n = 0;
    memset(p + n, 0x07, 8); /* peer_id */
    n += 8;
    p[n++] = (uint8_t)namelen;
    memset(p + n, 'a', namelen);
    n += namelen;
    p[n++] = (uint8_t)hostlen;
    if (hostlen == 7)
        memcpy(p + n, "1.1.1.1", 7); /* numeric: accepted */
    else
        memset(p + n, '1', hostlen); /* "111..." is no address: refused */
    n += hostlen;
    memcpy(p + n, "\x39\x30", 2); /* port 12345 */
    n += 2;
    memcpy(p + n, "\x01\0\0\0", 4); /* min_peers 1 */
    n += 4;
    memset(p + n, 0, 12); /* epoch 0, nmembers 0 */
    return n + 12;
}

static void test_register_name_too_long(void **state)
{
    static uint8_t p[600];
    (void)state;
    assert_int_equal(decode_exact(MSG_REGISTER, p, register_bytes(p, 63, 7)), STARLING_OK);
    /* a host that is not a numeric address (a name, or no address at all) */
    assert_int_equal(decode_exact(MSG_REGISTER, p, register_bytes(p, 8, 6)), STARLING_E_PROTOCOL);
    assert_int_equal(decode_exact(MSG_REGISTER, p, register_bytes(p, 64, 8)), STARLING_E_PROTOCOL);
    assert_int_equal(decode_exact(MSG_REGISTER, p, register_bytes(p, 8, 64)), STARLING_E_PROTOCOL);
    assert_int_equal(decode_exact(MSG_REGISTER, p, register_bytes(p, 255, 8)), STARLING_E_PROTOCOL);
    assert_int_equal(decode_exact(MSG_REGISTER, p, register_bytes(p, 8, 255)), STARLING_E_PROTOCOL);
}

static void test_welcome_refusals(void **state)
{
    static const uint32_t bad[] = {0, 99, 600001, UINT32_MAX};
    starling__msg_welcome m = {1, 0}, out;
    (void)state;
    for (size_t i = 0; i < 4; i++) {
        m.timeout_ms = bad[i];
        int n = starling__welcome_encode(frame, sizeof frame, &m);
        assert_int_equal(starling__welcome_decode(frame + 8, (size_t)n - 8, &out),
                         STARLING_E_PROTOCOL);
    }
}

static int topo_decode_of(const starling__msg_topo *m)
{
    int n = starling__topo_encode(frame, sizeof frame, m);
    assert_true(n > 0);
    return decode_exact(MSG_TOPO, frame + 8, (size_t)n - 8);
}

static void test_topo_refusals(void **state)
{
    (void)state;
    sample_topo(&topo_a, 3);
    assert_int_equal(topo_decode_of(&topo_a), STARLING_OK);
    topo_a.rank = 3; /* rank >= n */
    assert_int_equal(topo_decode_of(&topo_a), STARLING_E_PROTOCOL);
    topo_a.rank = UINT32_MAX;
    assert_int_equal(topo_decode_of(&topo_a), STARLING_E_PROTOCOL);
    sample_topo(&topo_a, 3);
    topo_a.epoch = 0; /* epochs count from 1 */
    assert_int_equal(topo_decode_of(&topo_a), STARLING_E_PROTOCOL);
    sample_topo(&topo_a, 3);
    topo_a.members[2].id = 0;
    assert_int_equal(topo_decode_of(&topo_a), STARLING_E_PROTOCOL);
    /* A member's port 0 is no refusal since v5 (test_topo_port_zero). */
    sample_topo(&topo_a, 3);
    topo_a.members[1].port = 0;
    assert_int_equal(topo_decode_of(&topo_a), STARLING_OK);
    sample_topo(&topo_a, 3);
    strcpy(topo_a.members[0].host, "10.0.0.1\r");
    assert_int_equal(topo_decode_of(&topo_a), STARLING_E_PROTOCOL);
    /* n = 0: nobody, and no rank can be < 0. */
    sample_topo(&topo_a, 1);
    topo_a.n = 0;
    topo_a.rank = 0;
    assert_int_equal(topo_decode_of(&topo_a), STARLING_E_PROTOCOL);
    /* probe_bytes over 256 MiB (test_topo_probe_bytes has the bounds). */
    sample_topo(&topo_a, 3);
    topo_a.probe_bytes = STARLING__PROBE_MAX + 1;
    assert_int_equal(topo_decode_of(&topo_a), STARLING_E_PROTOCOL);
}

/* A member's port 0 (v5): it accepts no inbound connections; accepted at any rank, for
 * any number of such members (the decoder does not check where the coordinator placed
 * them), and carried as 0. Until version 4 it was refused. The member id is still checked. */
static void test_topo_port_zero(void **state)
{
    (void)state;
    sample_topo(&topo_a, 4);
    topo_a.members[0].port = 0;
    topo_a.members[2].port = 0;
    topo_a.probe_bytes = 2u << 20;
    for (uint32_t rank = 0; rank < 4; rank++) {
        topo_a.rank = rank;
        int n = starling__topo_encode(frame, sizeof frame, &topo_a);
        size_t plen = frame_check(frame, n, MSG_TOPO);
        memset(&topo_b, 0xee, sizeof topo_b);
        assert_int_equal(decode_exact(MSG_TOPO, frame + 8, plen), STARLING_OK);
        assert_int_equal(topo_b.members[0].port, 0);
        assert_int_equal(topo_b.members[1].port, 20001);
        assert_int_equal(topo_b.members[2].port, 0);
        assert_topo_equal(&topo_a, &topo_b);
    }
    /* Every member at port 0, even adjacent ones: still a well-formed TOPO. */
    sample_topo(&topo_a, 3);
    for (uint32_t i = 0; i < 3; i++)
        topo_a.members[i].port = 0;
    assert_int_equal(topo_decode_of(&topo_a), STARLING_OK);
    topo_a.members[1].id = 0;
    assert_int_equal(topo_decode_of(&topo_a), STARLING_E_PROTOCOL);
}

static void test_topo_count_over_limit(void **state)
{
    static const uint32_t counts[] = {STARLING_MAX_PEERS + 1, 1u << 20, UINT32_MAX};
    (void)state;
    sample_topo(&topo_a, STARLING_MAX_PEERS);
    topo_a.rank = 0;
    int n = starling__topo_encode(frame, sizeof frame, &topo_a);
    uint8_t *count = frame + 8 + 12; /* epoch u64, rank u32, n u32 */
    for (size_t i = 0; i < 3; i++) {
        for (int b = 0; b < 4; b++)
            count[b] = (uint8_t)(counts[i] >> (8 * b));
        assert_int_equal(decode_exact(MSG_TOPO, frame + 8, (size_t)n - 8), STARLING_E_PROTOCOL);
    }
}

static void test_topo_host_too_long(void **state)
{
    static uint8_t p[512];
    size_t n = 0;
    (void)state;
    memcpy(p, "\x01\0\0\0\0\0\0\0" /* epoch 1 */ "\0\0\0\0" /* rank 0 */ "\x01\0\0\0", 16);
    n = 16;
    memcpy(p + n, "\x05\0\0\0\0\0\0\0", 8); /* id 5 */
    n += 8;
    p[n++] = STARLING_ADDR_MAX;
    memset(p + n, '1', STARLING_ADDR_MAX);
    n += STARLING_ADDR_MAX;
    memcpy(p + n, "\x39\x30" /* port 12345 */ "\0\0\0\0" /* probe_bytes 0 */, 6);
    n += 6;
    assert_int_equal(decode_exact(MSG_TOPO, p, n), STARLING_E_PROTOCOL);
    /* shorten the host by one byte: accepted */
    p[24] = STARLING_ADDR_MAX - 1;
    memmove(p + 25 + STARLING_ADDR_MAX - 1, p + 25 + STARLING_ADDR_MAX, 6);
    assert_int_equal(decode_exact(MSG_TOPO, p, n - 1), STARLING_OK);
}

/* ---------------------------------------------------------------- links refusals */

static int links_decode_of(const starling__msg_links *m)
{
    int n = starling__links_encode(frame, sizeof frame, m);
    assert_true(n > 0);
    return decode_exact(MSG_LINKS, frame + 8, (size_t)n - 8);
}

/* Ids nonzero and distinct, bandwidth <= 1 TB/s, round trip <= 10 minutes, at every
 * position of the list (the first, a middle and the last entry). */
static void test_links_refusals(void **state)
{
    static const uint32_t at[] = {0, 2, 4};
    (void)state;
    sample_links(&links_a, 5);
    assert_int_equal(links_decode_of(&links_a), STARLING_OK);
    for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
        uint32_t k = at[i];
        sample_links(&links_a, 5);
        links_a.links[k].id = 0;
        assert_int_equal(links_decode_of(&links_a), STARLING_E_PROTOCOL);
        sample_links(&links_a, 5);
        links_a.links[k].bytes_per_s = STARLING_LINK_BPS_MAX + 1;
        assert_int_equal(links_decode_of(&links_a), STARLING_E_PROTOCOL);
        links_a.links[k].bytes_per_s = UINT64_MAX;
        assert_int_equal(links_decode_of(&links_a), STARLING_E_PROTOCOL);
        sample_links(&links_a, 5);
        links_a.links[k].rtt_us = STARLING_LINK_RTT_US_MAX + 1;
        assert_int_equal(links_decode_of(&links_a), STARLING_E_PROTOCOL);
        links_a.links[k].rtt_us = UINT32_MAX;
        assert_int_equal(links_decode_of(&links_a), STARLING_E_PROTOCOL);
    }
    /* Duplicate ids: adjacent, first and last, and the same id three times. */
    sample_links(&links_a, 5);
    links_a.links[3].id = links_a.links[2].id;
    assert_int_equal(links_decode_of(&links_a), STARLING_E_PROTOCOL);
    sample_links(&links_a, 5);
    links_a.links[4].id = links_a.links[0].id;
    assert_int_equal(links_decode_of(&links_a), STARLING_E_PROTOCOL);
    sample_links(&links_a, 3);
    links_a.links[1].id = links_a.links[2].id = links_a.links[0].id;
    assert_int_equal(links_decode_of(&links_a), STARLING_E_PROTOCOL);
    /* The same figures under distinct ids are fine: only ids must differ. */
    sample_links(&links_a, 3);
    links_a.links[1] = links_a.links[0];
    links_a.links[1].id = 42;
    assert_int_equal(links_decode_of(&links_a), STARLING_OK);
}

/* n over STARLING_MAX_PEERS: refused from the count alone, before reading entries. */
static void test_links_count_over_limit(void **state)
{
    static const uint32_t counts[] = {STARLING_MAX_PEERS + 1, 1u << 20, UINT32_MAX};
    (void)state;
    sample_links(&links_a, STARLING_MAX_PEERS);
    int n = starling__links_encode(frame, sizeof frame, &links_a);
    size_t plen = (size_t)n - 8;
    uint8_t *count = frame + 8 + 8; /* after epoch u64 */
    assert_int_equal(count[0] | count[1] << 8, STARLING_MAX_PEERS);
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        for (int b = 0; b < 4; b++)
            count[b] = (uint8_t)(counts[i] >> (8 * b));
        assert_int_equal(decode_exact(MSG_LINKS, frame + 8, plen), STARLING_E_PROTOCOL);
        /* ... even if the payload really holds that many entries (20 bytes each) */
        if (counts[i] == STARLING_MAX_PEERS + 1) {
            static const uint8_t entry[20] = {
                0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, /* id */
                1,    0,    0,    0,    0,    0,    0,    0,    /* bytes_per_s 1 */
                1,    0,    0,    0};                           /* rtt_us 1 */
            memcpy(frame + n, entry, sizeof entry);
            assert_int_equal(decode_exact(MSG_LINKS, frame + 8, plen + 20), STARLING_E_PROTOCOL);
        }
    }
}

/* The count and the entries must agree: fewer entries than n is truncation, more is
 * trailing bytes (test_truncated_every_length and test_trailing_bytes cut and pad every
 * sample; these are the cases where a whole entry is missing or extra). */
static void test_links_count_disagrees(void **state)
{
    (void)state;
    sample_links(&links_a, 2);
    int n = starling__links_encode(frame, sizeof frame, &links_a);
    size_t plen = (size_t)n - 8; /* 12 + 2 * 20 = 52 */
    assert_int_equal(plen, 52);
    frame[8 + 8] = 3; /* n 3, two entries */
    assert_int_equal(decode_exact(MSG_LINKS, frame + 8, plen), STARLING_E_PROTOCOL);
    frame[8 + 8] = 1; /* n 1, two entries */
    assert_int_equal(decode_exact(MSG_LINKS, frame + 8, plen), STARLING_E_PROTOCOL);
    frame[8 + 8] = 0; /* n 0, two entries */
    assert_int_equal(decode_exact(MSG_LINKS, frame + 8, plen), STARLING_E_PROTOCOL);
    assert_int_equal(decode_exact(MSG_LINKS, frame + 8, 12), STARLING_OK); /* n 0, none */
    assert_int_equal(decode_exact(MSG_LINKS, frame + 8, 11), STARLING_E_PROTOCOL);
    frame[8 + 8] = 2;
    assert_int_equal(decode_exact(MSG_LINKS, frame + 8, plen - 20), STARLING_E_PROTOCOL);
    assert_int_equal(decode_exact(MSG_LINKS, frame + 8, plen), STARLING_OK);
}

/* ---------------------------------------------------------------- golden frames, v1 */

/* The bytes below were written from docs/protocol.md field by field, not copied from
 * the encoder; tests/golden/v1/<name>.bin hold the same bytes. They are version 1's and
 * stay as they were: REGISTER, DECIDE and the DATA header are the same bytes in versions 2
 * to 6 (tests/golden/v2/ .. v6/ have copies), HELLO and TOPO are not (see
 * test_golden_v1_hello and test_golden_v1_topo). */

/* HELLO, data role: nonce 00..1f, run "demo", peer 0x0102030405060708, epoch 3,
 * stream 1 of 2. */
static const char golden_hello[] = "01 00 0000 3e000000" /* type 1, flags, reserved, len 62 */
                                   "5354524c"            /* magic "STRL" */
                                   "0100"                /* version 1 */
                                   "02"                  /* role: data */
                                   "000102030405060708090a0b0c0d0e0f"
                                   "101112131415161718191a1b1c1d1e1f" /* nonce */
                                   "04 64656d6f"                      /* run "demo" */
                                   "0807060504030201"                 /* peer_id */
                                   "0300000000000000"                 /* epoch 3 */
                                   "01"                               /* stream 1 */
                                   "02";                              /* nstreams 2 */

/* REGISTER: peer 0x1122334455667788 "w0" at 10.0.0.1:29500, min_peers 2, re-registering
 * as a member of epoch 7 with members {0x1122334455667788, 0x0a0b0c0d0e0f1011}. */
static const char golden_register[] = "05 00 0000 36000000" /* type 5, len 54 */
                                      "8877665544332211"    /* peer_id */
                                      "02 7730"             /* name "w0" */
                                      "08 31302e302e302e31" /* host "10.0.0.1" */
                                      "3c73"                /* port 29500 */
                                      "02000000"            /* min_peers 2 */
                                      "0700000000000000"    /* epoch 7 */
                                      "02000000"            /* nmembers 2 */
                                      "8877665544332211"    /* members[0] */
                                      "11100f0e0d0c0b0a";   /* members[1] */

/* TOPO: epoch 5, rank 1 of 2: 0xa1 at 10.0.0.1:29500, 0xb2 at 10.0.0.2:29501. */
static const char golden_topo[] = "09 00 0000 36000000" /* type 9, len 54 */
                                  "0500000000000000"    /* epoch 5 */
                                  "01000000"            /* rank 1 */
                                  "02000000"            /* n 2 */
                                  "a100000000000000 08 31302e302e302e31 3c73"
                                  "b200000000000000 08 31302e302e302e32 3d73";

/* DECIDE: epoch 5, commit_seq 42, code STARLING_E_PEER_LOST (-5). */
static const char golden_decide[] = "0d 00 0000 14000000" /* type 13, len 20 */
                                    "0500000000000000"    /* epoch 5 */
                                    "2a00000000000000"    /* commit_seq 42 */
                                    "fbffffff";           /* code -5 */

/* DATA header: seq 3, desc 0xdeadbeefcafef00d, step 2, piece 1, 16 payload bytes to
 * follow (not part of the golden frame). */
static const char golden_data[] = "0f 00 0000 28000000" /* type 15, len 24 + 16 */
                                  "0300000000000000"    /* seq 3 */
                                  "0df0fecaefbeadde"    /* desc */
                                  "02000000"            /* step 2 */
                                  "01000000";           /* piece 1 */

static void golden_hello_msg(starling__msg_hello *m)
{
    memset(m, 0, sizeof *m);
    m->magic = STARLING_MAGIC;
    m->version = 1;
    m->role = ROLE_DATA;
    for (int i = 0; i < STARLING_NONCE_LEN; i++)
        m->nonce[i] = (uint8_t)i;
    strcpy(m->run, "demo");
    m->peer_id = 0x0102030405060708ull;
    m->epoch = 3;
    m->stream = 1;
    m->nstreams = 2;
}

static void golden_register_msg(starling__msg_register *m)
{
    memset(m, 0, sizeof *m);
    m->peer_id = 0x1122334455667788ull;
    strcpy(m->name, "w0");
    strcpy(m->host, "10.0.0.1");
    m->port = 29500;
    m->min_peers = 2;
    m->epoch = 7;
    m->nmembers = 2;
    m->members[0] = 0x1122334455667788ull;
    m->members[1] = 0x0a0b0c0d0e0f1011ull;
}

static void golden_topo_msg(starling__msg_topo *m)
{
    memset(m, 0, sizeof *m);
    m->epoch = 5;
    m->rank = 1;
    m->n = 2;
    m->members[0].id = 0xa1;
    strcpy(m->members[0].host, "10.0.0.1");
    m->members[0].port = 29500;
    m->members[1].id = 0xb2;
    strcpy(m->members[1].host, "10.0.0.2");
    m->members[1].port = 29501;
}

static void test_golden_protocol_version(void **state)
{
    (void)state;
    /* The v1 to v5 frames below are checked for how version 6 treats them; the v6 set
     * follows. A new version gets a new set. */
    assert_int_equal(STARLING_PROTOCOL_VERSION, 6);
    assert_int_equal(STARLING_MAGIC, 0x4c525453u); /* "STRL" on the wire */
    /* Numbers that are on the wire: message types, roles, security modes and caps bits
     * never move. */
    assert_int_equal(MSG_ACCEPT, 18);
    assert_int_equal(MSG_LINKS, 19); /* new in v2 */
    assert_int_equal(MSG_WATCH, 20); /* new in v4: coordinator failover */
    assert_int_equal(MSG_STATE, 21);
    assert_int_equal(MSG_SHM_OFFER, 22); /* new in v6: ring links on one host */
    assert_int_equal(MSG_SHM_REPLY, 23);
    assert_int_equal(MSG_TYPE_MAX, 23);
    assert_int_equal(ROLE_CONTROL, 1);
    assert_int_equal(ROLE_DATA, 2);
    assert_int_equal(ROLE_PROBE, 3);        /* new in v2 */
    assert_int_equal(ROLE_DATA_REV, 4);     /* new in v5: a reversed ring link (NAT) */
    assert_int_equal(STARLING_SEC_NONE, 0); /* new in v3 */
    assert_int_equal(STARLING_SEC_AEAD, 1);
    assert_int_equal(STARLING_SEC_CHACHA, 2);
    assert_int_equal(STARLING_SEC_MAX, 2);
    assert_int_equal(STARLING_CAP_AESGCM, 0x01);
}

/* A version 1 HELLO: the encoder, given version 1, still writes exactly the v1 bytes
 * (security and caps only from version 3 on), but the decoder refuses it as another
 * version: STARLING_E_VERSION, which the handshake answers with REJECT(E_VERSION). */
static void test_golden_v1_hello(void **state)
{
    static uint8_t want[128];
    starling__msg_hello m, out;
    starling__frame_hdr h;
    size_t n = unhex(golden_hello, want, sizeof want);
    (void)state;
    assert_int_equal(n, 8 + 62);
    golden_hello_msg(&m);
    assert_int_equal(starling__hello_encode(frame, sizeof frame, &m), (int)n);
    assert_memory_equal(frame, want, n);
    assert_int_equal(starling__frame_hdr_decode(want, CHUNK, &h), STARLING_OK);
    assert_int_equal(h.type, MSG_HELLO);
    assert_int_equal(h.len, n - 8);
    memset(&out, 0, sizeof out);
    assert_int_equal(starling__hello_decode(want + 8, h.len, &out), STARLING_E_VERSION);
    /* What the handshake reads to name the refused version in its REJECT. */
    assert_int_equal(out.magic, STARLING_MAGIC);
    assert_int_equal(out.version, 1);
}

/* A version 1 TOPO ends after the members; version 2 (and 3) reads a u32 probe_bytes
 * there, so the v1 bytes are 4 short: refused as truncated. The v2 encoding of the same
 * message (probe_bytes 0) is the v1 bytes, len 54 + 4 = 58, followed by 00000000. */
static void test_golden_v1_topo(void **state)
{
    static uint8_t want[128];
    starling__frame_hdr h;
    size_t n = unhex(golden_topo, want, sizeof want);
    (void)state;
    assert_int_equal(n, 8 + 54);
    assert_int_equal(starling__frame_hdr_decode(want, CHUNK, &h), STARLING_OK);
    assert_int_equal(h.type, MSG_TOPO);
    assert_int_equal(h.len, 54);
    assert_int_equal(decode_exact(MSG_TOPO, want + 8, h.len), STARLING_E_PROTOCOL);
    golden_topo_msg(&topo_a);
    assert_int_equal(topo_a.probe_bytes, 0);
    assert_int_equal(starling__topo_encode(frame, sizeof frame, &topo_a), (int)n + 4);
    assert_int_equal(frame[4], 54 + 4);              /* len */
    assert_memory_equal(frame + 5, want + 5, n - 5); /* rest of header, epoch..members */
    assert_memory_equal(frame + n, "\0\0\0\0", 4);   /* probe_bytes 0 */
}

/* REGISTER: the same bytes in versions 1 to 6 (the register.bin of tests/golden/v2/ ..
 * v6/ are copies). */
static void test_golden_register(void **state)
{
    static uint8_t want[128];
    starling__frame_hdr h;
    size_t n = unhex(golden_register, want, sizeof want);
    (void)state;
    assert_int_equal(n, 8 + 54);
    golden_register_msg(&reg_a);
    assert_int_equal(starling__register_encode(frame, sizeof frame, &reg_a), (int)n);
    assert_memory_equal(frame, want, n);
    assert_int_equal(starling__frame_hdr_decode(want, CHUNK, &h), STARLING_OK);
    assert_int_equal(h.type, MSG_REGISTER);
    assert_int_equal(h.len, n - 8);
    assert_int_equal(starling__register_decode(want + 8, h.len, &reg_b), STARLING_OK);
    assert_register_equal(&reg_a, &reg_b);
}

/* DECIDE: the same bytes in versions 1 to 6 (the decide.bin of tests/golden/v2/ .. v6/
 * are copies). */
static void test_golden_decide(void **state)
{
    static uint8_t want[64];
    starling__msg_epoch m = {5, 42, 0, STARLING_E_PEER_LOST}, out;
    starling__frame_hdr h;
    size_t n = unhex(golden_decide, want, sizeof want);
    (void)state;
    assert_int_equal(n, 8 + 20);
    assert_int_equal(starling__epoch_encode(frame, sizeof frame, MSG_DECIDE, &m), (int)n);
    assert_memory_equal(frame, want, n);
    assert_int_equal(starling__frame_hdr_decode(want, CHUNK, &h), STARLING_OK);
    assert_int_equal(h.type, MSG_DECIDE);
    assert_int_equal(h.len, 20);
    assert_int_equal(starling__epoch_decode(MSG_DECIDE, want + 8, h.len, &out), STARLING_OK);
    assert_true(out.epoch == 5 && out.a == 42 && out.b == 0);
    assert_int_equal(out.code, STARLING_E_PEER_LOST);
}

/* DATA header: the same bytes in versions 1 to 6 (the data_hdr.bin of tests/golden/v2/
 * .. v6/ are copies). */
static void test_golden_data(void **state)
{
    static uint8_t want[64];
    starling__msg_data m = {3, 0xdeadbeefcafef00dull, 2, 1}, out;
    starling__frame_hdr h;
    size_t n = unhex(golden_data, want, sizeof want);
    (void)state;
    assert_int_equal(n, 8 + 24);
    assert_int_equal(starling__data_encode(frame, sizeof frame, MSG_DATA, 0, &m, 16), (int)n);
    assert_memory_equal(frame, want, n);
    assert_int_equal(starling__frame_hdr_decode(want, CHUNK, &h), STARLING_OK);
    assert_int_equal(h.type, MSG_DATA);
    assert_int_equal(h.len, 24 + 16);
    assert_int_equal(starling__data_decode(want + 8, &out), STARLING_OK);
    assert_true(out.seq == 3 && out.desc == 0xdeadbeefcafef00dull);
    assert_int_equal(out.step, 2);
    assert_int_equal(out.piece, 1);
}

/* ---------------------------------------------------------------- golden frames, v2 */

/* Written from docs/protocol.md like the v1 set; tests/golden/v2/<name>.bin hold the same
 * bytes, and register.bin, decide.bin and data_hdr.bin there are copies of v1's, which
 * version 2 did not change (golden_register, golden_decide and golden_data above).
 * Version 3 did not change TOPO and LINKS either (tests/golden/v3/ has copies); it did
 * change HELLO, so the two v2 hellos are now checked for how version 3 refuses them. */

/* HELLO, data role: the v1 golden hello with version 2. Only byte 12 differs. */
static const char golden_v2_hello[] = "01 00 0000 3e000000" /* type 1, flags, reserved, len 62 */
                                      "5354524c"            /* magic "STRL" */
                                      "0200"                /* version 2 */
                                      "02"                  /* role: data */
                                      "000102030405060708090a0b0c0d0e0f"
                                      "101112131415161718191a1b1c1d1e1f" /* nonce */
                                      "04 64656d6f"                      /* run "demo" */
                                      "0807060504030201"                 /* peer_id */
                                      "0300000000000000"                 /* epoch 3 */
                                      "01"                               /* stream 1 */
                                      "02";                              /* nstreams 2 */

/* HELLO, probe role (new in v2): as above, stream 0 of 0 (not interpreted), as
 * src/core/probe.c sends it. */
static const char golden_v2_hello_probe[] = "01 00 0000 3e000000" /* type 1, len 62 */
                                            "5354524c"            /* magic "STRL" */
                                            "0200"                /* version 2 */
                                            "03"                  /* role: probe */
                                            "000102030405060708090a0b0c0d0e0f"
                                            "101112131415161718191a1b1c1d1e1f" /* nonce */
                                            "04 64656d6f"                      /* run "demo" */
                                            "0807060504030201"                 /* peer_id */
                                            "0300000000000000"                 /* epoch 3 */
                                            "00"                               /* stream 0 */
                                            "00";                              /* nstreams 0 */

/* TOPO: the v1 golden topo (epoch 5, rank 1 of 2: 0xa1 at 10.0.0.1:29500, 0xb2 at
 * 10.0.0.2:29501) asking for probes of 2 MiB: len 54 + 4. */
static const char golden_v2_topo[] = "09 00 0000 3a000000" /* type 9, len 58 */
                                     "0500000000000000"    /* epoch 5 */
                                     "01000000"            /* rank 1 */
                                     "02000000"            /* n 2 */
                                     "a100000000000000 08 31302e302e302e31 3c73"
                                     "b200000000000000 08 31302e302e302e32 3d73"
                                     "00002000"; /* probe_bytes 0x200000 = 2 MiB */

/* LINKS (new in v2): epoch 6, two links: to 0xa1 at 1.25e9 bytes/s (10 Gbit/s) with a
 * 150 us round trip; to 0xc3 not measured (0 bytes/s, rtt 0). 12 + 2 * 20 = 52 bytes. */
static const char golden_v2_links[] = "13 00 0000 34000000" /* type 19, len 52 */
                                      "0600000000000000"    /* epoch 6 */
                                      "02000000"            /* n 2 */
                                      "a100000000000000"    /* [0] id 0xa1 */
                                      "807c814a00000000"    /*     bytes_per_s 1250000000 */
                                      "96000000"            /*     rtt_us 150 */
                                      "c300000000000000"    /* [1] id 0xc3 */
                                      "0000000000000000"    /*     bytes_per_s 0: unmeasured */
                                      "00000000";           /*     rtt_us 0 */

static void golden_v2_links_msg(starling__msg_links *m)
{
    memset(m, 0, sizeof *m);
    m->epoch = 6;
    m->n = 2;
    m->links[0].id = 0xa1;
    m->links[0].bytes_per_s = 1250000000ull;
    m->links[0].rtt_us = 150;
    m->links[1].id = 0xc3;
}

/* A version 2 HELLO, as version 3 treats it: the encoder, given version 2, still writes
 * exactly the v2 bytes (62, without security and caps, even when the struct has them
 * set), and the decoder refuses them as another version, as it does version 1's
 * (test_golden_v1_hello): STARLING_E_VERSION, answered with REJECT(E_VERSION). */
static void golden_v2_hello_refused(const char *hex, const starling__msg_hello *m)
{
    static uint8_t want[128];
    starling__msg_hello out;
    starling__frame_hdr h;
    size_t n = unhex(hex, want, sizeof want);
    assert_int_equal(m->version, 2);
    assert_int_equal(n, 8 + 62);
    assert_int_equal(starling__hello_encode(frame, sizeof frame, m), (int)n);
    assert_memory_equal(frame, want, n);
    assert_int_equal(starling__frame_hdr_decode(want, CHUNK, &h), STARLING_OK);
    assert_int_equal(h.type, MSG_HELLO);
    assert_int_equal(h.len, n - 8);
    memset(&out, 0, sizeof out);
    assert_int_equal(starling__hello_decode(want + 8, h.len, &out), STARLING_E_VERSION);
    /* What the handshake reads to name the refused version in its REJECT. */
    assert_int_equal(out.magic, STARLING_MAGIC);
    assert_int_equal(out.version, 2);
}

static void test_golden_v2_hello(void **state)
{
    starling__msg_hello m;
    (void)state;
    golden_hello_msg(&m);
    m.version = 2;
    m.security = STARLING_SEC_AEAD; /* not written: version 2 has no such byte */
    m.caps = STARLING_CAP_AESGCM;
    golden_v2_hello_refused(golden_v2_hello, &m);
    /* v1 and v2 golden hellos differ in the version byte only. */
    {
        uint8_t v1[128], v2[128];
        size_t n = unhex(golden_hello, v1, sizeof v1);
        assert_int_equal(unhex(golden_v2_hello, v2, sizeof v2), n);
        for (size_t i = 0; i < n; i++)
            assert_int_equal(v1[i] != v2[i], i == 8 + 4);
    }
}

static void test_golden_v2_hello_probe(void **state)
{
    starling__msg_hello m;
    (void)state;
    golden_hello_msg(&m);
    m.version = 2;
    m.role = ROLE_PROBE;
    m.stream = 0;
    m.nstreams = 0;
    golden_v2_hello_refused(golden_v2_hello_probe, &m);
}

/* TOPO: the same bytes in versions 2 to 6 (the topo.bin of tests/golden/v3/ .. v6/ are
 * copies). */
static void test_golden_v2_topo(void **state)
{
    static uint8_t want[128];
    starling__frame_hdr h;
    size_t n = unhex(golden_v2_topo, want, sizeof want);
    (void)state;
    assert_int_equal(n, 8 + 58);
    golden_topo_msg(&topo_a);
    topo_a.probe_bytes = 2u << 20;
    assert_int_equal(starling__topo_encode(frame, sizeof frame, &topo_a), (int)n);
    assert_memory_equal(frame, want, n);
    assert_int_equal(starling__frame_hdr_decode(want, CHUNK, &h), STARLING_OK);
    assert_int_equal(h.type, MSG_TOPO);
    assert_int_equal(h.len, n - 8);
    assert_int_equal(starling__topo_decode(want + 8, h.len, &topo_b), STARLING_OK);
    assert_topo_equal(&topo_a, &topo_b);
}

/* LINKS: the same bytes in versions 2 to 6 (the links.bin of tests/golden/v3/ .. v6/ are
 * copies). */
static void test_golden_v2_links(void **state)
{
    static uint8_t want[128];
    starling__frame_hdr h;
    size_t n = unhex(golden_v2_links, want, sizeof want);
    (void)state;
    assert_int_equal(n, 8 + 52);
    golden_v2_links_msg(&links_a);
    assert_int_equal(starling__links_encode(frame, sizeof frame, &links_a), (int)n);
    assert_memory_equal(frame, want, n);
    assert_int_equal(starling__frame_hdr_decode(want, CHUNK, &h), STARLING_OK);
    assert_int_equal(h.type, MSG_LINKS);
    assert_int_equal(h.len, n - 8);
    assert_int_equal(starling__links_decode(want + 8, h.len, &links_b), STARLING_OK);
    assert_links_equal(&links_a, &links_b);
}

/* ---------------------------------------------------------------- golden frames, v3 */

/* Written from docs/protocol.md like the v1 and v2 sets; tests/golden/v3/<name>.bin hold
 * the same bytes, and register.bin, topo.bin, links.bin, decide.bin and data_hdr.bin
 * there are copies of v2's, which version 3 did not change (golden_register,
 * golden_v2_topo, golden_v2_links, golden_decide and golden_data above). CHALLENGE has a
 * golden frame from version 3 on; version 6 appended the host tag to it, so the v3
 * CHALLENGE is now checked for how version 6 refuses it. */

/* HELLO, data role: the v2 golden hello with version 3, then security 1 (aead, the
 * default mode) and caps 1 (this CPU has AES-GCM): len 62 + 2 = 64. */
static const char golden_v3_hello[] = "01 00 0000 40000000" /* type 1, flags, reserved, len 64 */
                                      "5354524c"            /* magic "STRL" */
                                      "0300"                /* version 3 */
                                      "02"                  /* role: data */
                                      "000102030405060708090a0b0c0d0e0f"
                                      "101112131415161718191a1b1c1d1e1f" /* nonce */
                                      "04 64656d6f"                      /* run "demo" */
                                      "0807060504030201"                 /* peer_id */
                                      "0300000000000000"                 /* epoch 3 */
                                      "01"                               /* stream 1 */
                                      "02"                               /* nstreams 2 */
                                      "01"  /* security 1: STARLING_SEC_AEAD */
                                      "01"; /* caps: STARLING_CAP_AESGCM */

/* HELLO, probe role: as above with stream 0 of 0 (not interpreted), as src/core/probe.c
 * sends it. A probe goes through the same handshake as any connection
 * (src/auth/handshake.c), so it carries the same security and caps. */
static const char golden_v3_hello_probe[] = "01 00 0000 40000000" /* type 1, len 64 */
                                            "5354524c"            /* magic "STRL" */
                                            "0300"                /* version 3 */
                                            "03"                  /* role: probe */
                                            "000102030405060708090a0b0c0d0e0f"
                                            "101112131415161718191a1b1c1d1e1f" /* nonce */
                                            "04 64656d6f"                      /* run "demo" */
                                            "0807060504030201"                 /* peer_id */
                                            "0300000000000000"                 /* epoch 3 */
                                            "00"                               /* stream 0 */
                                            "00"                               /* nstreams 0 */
                                            "01"  /* security 1: STARLING_SEC_AEAD */
                                            "01"; /* caps: STARLING_CAP_AESGCM */

/* CHALLENGE: nonce 00..1f, mac 20..3f, then the server's security 2 (chacha20) and caps 0
 * (no AES-GCM): 32 + 32 + 1 + 1 = 66 bytes. Version 2's CHALLENGE was the first 64; the
 * same bytes in versions 3 to 5. */
static const char golden_v3_challenge[] = "02 00 0000 42000000" /* type 2, len 66 */
                                          "000102030405060708090a0b0c0d0e0f"
                                          "101112131415161718191a1b1c1d1e1f" /* nonce */
                                          "202122232425262728292a2b2c2d2e2f"
                                          "303132333435363738393a3b3c3d3e3f" /* mac */
                                          "02"  /* security 2: STARLING_SEC_CHACHA */
                                          "00"; /* caps 0 */

static void golden_v3_hello_msg(starling__msg_hello *m, uint8_t role)
{
    golden_hello_msg(m);
    m->version = 3;
    m->role = role;
    if (role == ROLE_PROBE)
        m->stream = m->nstreams = 0;
    m->security = STARLING_SEC_AEAD;
    m->caps = STARLING_CAP_AESGCM;
}

static void golden_v3_challenge_msg(starling__msg_challenge *m)
{
    for (int i = 0; i < STARLING_NONCE_LEN; i++)
        m->nonce[i] = (uint8_t)i;
    for (int i = 0; i < STARLING_MAC_LEN; i++)
        m->mac[i] = (uint8_t)(0x20 + i);
    m->security = STARLING_SEC_CHACHA;
    m->caps = 0;
    m->host = 0; /* not on the wire before version 6 */
}

/* Encoding gives the bytes and decoding the bytes gives the message, for a HELLO of this
 * version (v6: run "demo", so 8 + 72 bytes). */
static void golden_hello_both_ways(const char *hex, const starling__msg_hello *m)
{
    static uint8_t want[128];
    starling__msg_hello out;
    starling__frame_hdr h;
    size_t n = unhex(hex, want, sizeof want);
    assert_int_equal(m->version, STARLING_PROTOCOL_VERSION);
    assert_int_equal(n, 8 + 72);
    assert_int_equal(starling__hello_encode(frame, sizeof frame, m), (int)n);
    assert_memory_equal(frame, want, n);
    assert_int_equal(starling__frame_hdr_decode(want, CHUNK, &h), STARLING_OK);
    assert_int_equal(h.type, MSG_HELLO);
    assert_int_equal(h.len, n - 8);
    memset(&out, 0xee, sizeof out);
    assert_int_equal(starling__hello_decode(want + 8, h.len, &out), STARLING_OK);
    assert_hello_equal(m, &out);
}

/* A version 3, 4 or 5 HELLO, as version 6 treats it: the same layout up to caps (version
 * 6 appends the host tag), so the encoder given version 3, 4 or 5 writes exactly those
 * bytes, even when the struct has a host tag set, and the decoder refuses them as another
 * version: STARLING_E_VERSION, answered with REJECT(E_VERSION). */
static void golden_same_layout_hello_refused(const char *hex, const starling__msg_hello *m)
{
    static uint8_t want[128];
    starling__msg_hello out, tagged;
    size_t n = unhex(hex, want, sizeof want);
    assert_true(m->version == 3 || m->version == 4 || m->version == 5);
    assert_int_not_equal(m->version, STARLING_PROTOCOL_VERSION);
    assert_int_equal(n, 8 + 64);
    assert_int_equal(starling__hello_encode(frame, sizeof frame, m), (int)n);
    assert_memory_equal(frame, want, n);
    memset(&out, 0, sizeof out);
    assert_int_equal(starling__hello_decode(want + 8, n - 8, &out), STARLING_E_VERSION);
    assert_int_equal(out.magic, STARLING_MAGIC);
    assert_int_equal(out.version, m->version);
    tagged = *m;
    tagged.host = SAMPLE_HOST; /* not written before version 6 */
    assert_int_equal(starling__hello_encode(frame, sizeof frame, &tagged), (int)n);
    assert_memory_equal(frame, want, n);
}

static void test_golden_v3_hello(void **state)
{
    starling__msg_hello m;
    (void)state;
    golden_v3_hello_msg(&m, ROLE_DATA);
    golden_same_layout_hello_refused(golden_v3_hello, &m);
    /* The v3 golden hello is the v2 one with len 64 (byte 4) and version 3 (byte 12),
     * and security and caps appended. */
    {
        uint8_t v2[128], v3[128];
        size_t n = unhex(golden_v2_hello, v2, sizeof v2);
        assert_int_equal(unhex(golden_v3_hello, v3, sizeof v3), n + 2);
        for (size_t i = 0; i < n; i++)
            assert_int_equal(v2[i] != v3[i], i == 4 || i == 8 + 4);
        assert_int_equal(v3[4], 64);
        assert_int_equal(v3[8 + 4], 3);
        assert_int_equal(v3[n], STARLING_SEC_AEAD);
        assert_int_equal(v3[n + 1], STARLING_CAP_AESGCM);
    }
}

static void test_golden_v3_hello_probe(void **state)
{
    starling__msg_hello m;
    (void)state;
    golden_v3_hello_msg(&m, ROLE_PROBE);
    golden_same_layout_hello_refused(golden_v3_hello_probe, &m);
}

/* A version 3 to 5 CHALLENGE, as version 6 treats it: 8 bytes short (no host tag), so
 * refused as truncated. CHALLENGE has no version field; the HELLO's version refusal comes
 * first anyway. The version 6 encoding of the same message with host tag 0 is the v3
 * bytes, len 66 + 8 = 74, followed by eight zero bytes (test_golden_v6_challenge has the
 * v6 golden frame). */
static void test_golden_v3_challenge(void **state)
{
    static uint8_t want[128];
    starling__msg_challenge m;
    starling__frame_hdr h;
    size_t n = unhex(golden_v3_challenge, want, sizeof want);
    (void)state;
    assert_int_equal(n, 8 + 66);
    assert_int_equal(starling__frame_hdr_decode(want, CHUNK, &h), STARLING_OK);
    assert_int_equal(h.type, MSG_CHALLENGE);
    assert_int_equal(h.len, 66);
    assert_int_equal(decode_exact(MSG_CHALLENGE, want + 8, h.len), STARLING_E_PROTOCOL);
    golden_v3_challenge_msg(&m);
    m.host = 0;
    assert_int_equal(starling__challenge_encode(frame, sizeof frame, &m), (int)n + 8);
    assert_int_equal(frame[4], 66 + 8);                    /* len */
    assert_memory_equal(frame + 5, want + 5, n - 5);       /* rest of header, ..caps */
    assert_memory_equal(frame + n, "\0\0\0\0\0\0\0\0", 8); /* host 0 */
    /* A version 2 CHALLENGE (nonce and mac only) is 10 bytes short: refused as well. */
    assert_int_equal(decode_exact(MSG_CHALLENGE, want + 8, 64), STARLING_E_PROTOCOL);
}

/* ---------------------------------------------------------------- golden frames, v4 */

/* Written from docs/protocol.md like the others; tests/golden/v4/<name>.bin hold the same
 * bytes, and challenge.bin, register.bin, topo.bin, links.bin, decide.bin and
 * data_hdr.bin there are copies of v3's, which version 4 did not change. Versions 5 and
 * 6 did not change STATE and WATCH either (tests/golden/v5/ and v6/ have copies); version
 * 5's HELLO differs in the version field, so the two v4 hellos are now checked for how
 * later versions refuse them. */

/* HELLO, data role: the v3 golden hello with version 4 (byte 12). */
static const char golden_v4_hello[] = "01 00 0000 40000000" /* type 1, flags, reserved, len 64 */
                                      "5354524c"            /* magic "STRL" */
                                      "0400"                /* version 4 */
                                      "02"                  /* role: data */
                                      "000102030405060708090a0b0c0d0e0f"
                                      "101112131415161718191a1b1c1d1e1f" /* nonce */
                                      "04 64656d6f"                      /* run "demo" */
                                      "0807060504030201"                 /* peer_id */
                                      "0300000000000000"                 /* epoch 3 */
                                      "01"                               /* stream 1 */
                                      "02"                               /* nstreams 2 */
                                      "01"  /* security 1: STARLING_SEC_AEAD */
                                      "01"; /* caps: STARLING_CAP_AESGCM */

/* HELLO, probe role: the v3 golden probe hello with version 4. */
static const char golden_v4_hello_probe[] = "01 00 0000 40000000" /* type 1, len 64 */
                                            "5354524c"            /* magic "STRL" */
                                            "0400"                /* version 4 */
                                            "03"                  /* role: probe */
                                            "000102030405060708090a0b0c0d0e0f"
                                            "101112131415161718191a1b1c1d1e1f" /* nonce */
                                            "04 64656d6f"                      /* run "demo" */
                                            "0807060504030201"                 /* peer_id */
                                            "0300000000000000"                 /* epoch 3 */
                                            "00"                               /* stream 0 */
                                            "00"                               /* nstreams 0 */
                                            "01"  /* security 1: STARLING_SEC_AEAD */
                                            "01"; /* caps: STARLING_CAP_AESGCM */

/* STATE: seq 3, stamp 1000, epoch 2^32 + 5 (term 1) of 0xa1 0xb2, proposing 2^32 + 6 of
 * 0xa1 0xb2 0xc3: 8 + 8 + (8 + 4 + 2 x 8) + (8 + 4 + 3 x 8) = 80 bytes. */
static const char golden_v4_state[] = "15 00 0000 50000000" /* type 21, len 80 */
                                      "0300000000000000"    /* seq 3 */
                                      "e803000000000000"    /* stamp 1000 */
                                      "0500000001000000"    /* epoch 2^32 + 5 */
                                      "02000000"            /* n 2 */
                                      "a100000000000000 b200000000000000"
                                      "0600000001000000" /* next_epoch 2^32 + 6 */
                                      "03000000"         /* nnext 3 */
                                      "a100000000000000 b200000000000000 c300000000000000";

/* WATCH: the echo of that STATE: seq 3, stamp 1000. */
static const char golden_v4_watch[] = "14 00 0000 10000000" /* type 20, len 16 */
                                      "0300000000000000"    /* seq 3 */
                                      "e803000000000000";   /* stamp 1000 */

static void test_golden_v4_hello(void **state)
{
    starling__msg_hello m;
    (void)state;
    golden_v3_hello_msg(&m, ROLE_DATA);
    m.version = 4;
    golden_same_layout_hello_refused(golden_v4_hello, &m);
    /* The v4 golden hello is the v3 one with version 4 (byte 12). */
    {
        uint8_t v3[128], v4[128];
        size_t n = unhex(golden_v3_hello, v3, sizeof v3);
        assert_int_equal(unhex(golden_v4_hello, v4, sizeof v4), n);
        for (size_t i = 0; i < n; i++)
            assert_int_equal(v3[i] != v4[i], i == 8 + 4);
    }
    golden_v3_hello_msg(&m, ROLE_PROBE);
    m.version = 4;
    golden_same_layout_hello_refused(golden_v4_hello_probe, &m);
}

/* STATE and WATCH: the same bytes in versions 4 to 6 (tests/golden/v5/ and v6/ state.bin
 * and watch.bin are copies). */
static void test_golden_v4_state_watch(void **state)
{
    static uint8_t want[128];
    starling__msg_epoch w, wout;
    size_t n = unhex(golden_v4_state, want, sizeof want);
    (void)state;
    memset(&state_a, 0, sizeof state_a);
    state_a.seq = 3;
    state_a.stamp = 1000;
    state_a.epoch = (1ull << 32) + 5;
    state_a.n = 2;
    state_a.ids[0] = 0xa1, state_a.ids[1] = 0xb2;
    state_a.next_epoch = (1ull << 32) + 6;
    state_a.nnext = 3;
    state_a.next_ids[0] = 0xa1, state_a.next_ids[1] = 0xb2, state_a.next_ids[2] = 0xc3;
    assert_int_equal(n, 8 + 80);
    assert_int_equal(starling__state_encode(frame, sizeof frame, &state_a), (int)n);
    assert_memory_equal(frame, want, n);
    memset(&state_b, 0xee, sizeof state_b);
    assert_int_equal(decode_exact(MSG_STATE, want + 8, n - 8), STARLING_OK);
    assert_state_equal(&state_a, &state_b);
    n = unhex(golden_v4_watch, want, sizeof want);
    memset(&w, 0, sizeof w);
    w.epoch = 3;
    w.a = 1000;
    assert_int_equal(starling__epoch_encode(frame, sizeof frame, MSG_WATCH, &w), (int)n);
    assert_memory_equal(frame, want, n);
    assert_int_equal(starling__epoch_decode(MSG_WATCH, want + 8, n - 8, &wout), STARLING_OK);
    assert_true(wout.epoch == 3 && wout.a == 1000);
}

/* ---------------------------------------------------------------- golden frames, v5 */

/* Written from docs/protocol.md like the others; tests/golden/v5/<name>.bin hold the same
 * bytes, and challenge.bin, register.bin, topo.bin, links.bin, decide.bin, data_hdr.bin,
 * state.bin and watch.bin there are copies of v4's, which version 5 did not change.
 * Version 5 gave a meaning to values version 4 refused (port 0, role 4), so
 * hello_rev.bin, register_closed.bin and topo_closed.bin are new: each is an older golden
 * frame with those bytes changed. Version 6 did not change REGISTER and TOPO
 * (tests/golden/v6/ has copies of register_closed.bin and topo_closed.bin); it appended
 * the host tag to HELLO, so the three v5 hellos are now checked for how version 6 refuses
 * them. */

/* HELLO, data role: the v4 golden hello with version 5 (byte 12). */
static const char golden_v5_hello[] = "01 00 0000 40000000" /* type 1, flags, reserved, len 64 */
                                      "5354524c"            /* magic "STRL" */
                                      "0500"                /* version 5 */
                                      "02"                  /* role: data */
                                      "000102030405060708090a0b0c0d0e0f"
                                      "101112131415161718191a1b1c1d1e1f" /* nonce */
                                      "04 64656d6f"                      /* run "demo" */
                                      "0807060504030201"                 /* peer_id */
                                      "0300000000000000"                 /* epoch 3 */
                                      "01"                               /* stream 1 */
                                      "02"                               /* nstreams 2 */
                                      "01"  /* security 1: STARLING_SEC_AEAD */
                                      "01"; /* caps: STARLING_CAP_AESGCM */

/* HELLO, probe role: the v4 golden probe hello with version 5. */
static const char golden_v5_hello_probe[] = "01 00 0000 40000000" /* type 1, len 64 */
                                            "5354524c"            /* magic "STRL" */
                                            "0500"                /* version 5 */
                                            "03"                  /* role: probe */
                                            "000102030405060708090a0b0c0d0e0f"
                                            "101112131415161718191a1b1c1d1e1f" /* nonce */
                                            "04 64656d6f"                      /* run "demo" */
                                            "0807060504030201"                 /* peer_id */
                                            "0300000000000000"                 /* epoch 3 */
                                            "00"                               /* stream 0 */
                                            "00"                               /* nstreams 0 */
                                            "01"  /* security 1: STARLING_SEC_AEAD */
                                            "01"; /* caps: STARLING_CAP_AESGCM */

/* HELLO, reversed data role (new in v5): the v5 golden data hello with role 4 (byte 14):
 * stream 1 of 2 of the link from the accepting side's point of view, opened by its right
 * neighbour, which accepts no inbound connections. */
static const char golden_v5_hello_rev[] = "01 00 0000 40000000" /* type 1, len 64 */
                                          "5354524c"            /* magic "STRL" */
                                          "0500"                /* version 5 */
                                          "04"                  /* role: data, reversed */
                                          "000102030405060708090a0b0c0d0e0f"
                                          "101112131415161718191a1b1c1d1e1f" /* nonce */
                                          "04 64656d6f"                      /* run "demo" */
                                          "0807060504030201"                 /* peer_id */
                                          "0300000000000000"                 /* epoch 3 */
                                          "01"                               /* stream 1 */
                                          "02"                               /* nstreams 2 */
                                          "01"  /* security 1: STARLING_SEC_AEAD */
                                          "01"; /* caps: STARLING_CAP_AESGCM */

/* REGISTER (port 0 new in v5): the golden register (peer 0x1122334455667788 "w0" at
 * 10.0.0.1, min_peers 2, epoch 7, 2 members) with port 0: it accepts no inbound
 * connections. Only bytes 28 and 29 differ from register.bin. */
static const char golden_v5_register_closed[] = "05 00 0000 36000000" /* type 5, len 54 */
                                                "8877665544332211"    /* peer_id */
                                                "02 7730"             /* name "w0" */
                                                "08 31302e302e302e31" /* host "10.0.0.1" */
                                                "0000"                /* port 0: no inbound */
                                                "02000000"            /* min_peers 2 */
                                                "0700000000000000"    /* epoch 7 */
                                                "02000000"            /* nmembers 2 */
                                                "8877665544332211"    /* members[0] */
                                                "11100f0e0d0c0b0a";   /* members[1] */

/* TOPO (a member's port 0 new in v5): the v2 golden topo (epoch 5, rank 1 of 2, probes of
 * 2 MiB) with 0xb2 at 10.0.0.2 port 0. Only bytes 60 and 61 differ from topo.bin. */
static const char golden_v5_topo_closed[] = "09 00 0000 3a000000" /* type 9, len 58 */
                                            "0500000000000000"    /* epoch 5 */
                                            "01000000"            /* rank 1 */
                                            "02000000"            /* n 2 */
                                            "a100000000000000 08 31302e302e302e31 3c73"
                                            "b200000000000000 08 31302e302e302e32 0000"
                                            "00002000"; /* probe_bytes 0x200000 = 2 MiB */

/* Two golden frames of the same length that differ in bytes at0 and at1 only (pass the
 * same index twice for one byte). */
static void golden_differ_only(const char *hex_a, const char *hex_b, size_t at0, size_t at1)
{
    static uint8_t a[128], b[128];
    size_t n = unhex(hex_a, a, sizeof a);
    assert_int_equal(unhex(hex_b, b, sizeof b), n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(a[i] != b[i], i == at0 || i == at1);
}

static void test_golden_v5_hello(void **state)
{
    starling__msg_hello m;
    (void)state;
    golden_v3_hello_msg(&m, ROLE_DATA);
    m.version = 5;
    golden_same_layout_hello_refused(golden_v5_hello, &m);
    golden_v3_hello_msg(&m, ROLE_PROBE);
    m.version = 5;
    golden_same_layout_hello_refused(golden_v5_hello_probe, &m);
    /* The v5 golden hellos are the v4 ones with version 5 (byte 12). */
    golden_differ_only(golden_v4_hello, golden_v5_hello, 8 + 4, 8 + 4);
    golden_differ_only(golden_v4_hello_probe, golden_v5_hello_probe, 8 + 4, 8 + 4);
}

static void test_golden_v5_hello_rev(void **state)
{
    starling__msg_hello m;
    (void)state;
    golden_v3_hello_msg(&m, ROLE_DATA_REV);
    m.version = 5;
    assert_int_equal(m.stream, 1);
    assert_int_equal(m.nstreams, 2);
    golden_same_layout_hello_refused(golden_v5_hello_rev, &m);
    /* The data hello with role 4 (byte 14). */
    golden_differ_only(golden_v5_hello, golden_v5_hello_rev, 8 + 6, 8 + 6);
}

/* REGISTER with port 0: the same bytes in versions 5 and 6 (tests/golden/v6/
 * register_closed.bin is a copy). */
static void test_golden_v5_register_closed(void **state)
{
    static uint8_t want[128];
    size_t n = unhex(golden_v5_register_closed, want, sizeof want);
    (void)state;
    assert_int_equal(n, 8 + 54);
    golden_register_msg(&reg_a);
    reg_a.port = 0;
    assert_int_equal(starling__register_encode(frame, sizeof frame, &reg_a), (int)n);
    assert_memory_equal(frame, want, n);
    memset(&reg_b, 0xee, sizeof reg_b);
    assert_int_equal(decode_exact(MSG_REGISTER, want + 8, n - 8), STARLING_OK);
    assert_register_equal(&reg_a, &reg_b);
    /* header 8, peer_id 8, name 1 + 2, host 1 + 8: the port is bytes 28 and 29 */
    golden_differ_only(golden_register, golden_v5_register_closed, 28, 29);
}

/* TOPO with a member at port 0: the same bytes in versions 5 and 6 (tests/golden/v6/
 * topo_closed.bin is a copy). */
static void test_golden_v5_topo_closed(void **state)
{
    static uint8_t want[128];
    size_t n = unhex(golden_v5_topo_closed, want, sizeof want);
    (void)state;
    assert_int_equal(n, 8 + 58);
    golden_topo_msg(&topo_a);
    topo_a.probe_bytes = 2u << 20;
    topo_a.members[1].port = 0;
    assert_int_equal(starling__topo_encode(frame, sizeof frame, &topo_a), (int)n);
    assert_memory_equal(frame, want, n);
    memset(&topo_b, 0xee, sizeof topo_b);
    assert_int_equal(decode_exact(MSG_TOPO, want + 8, n - 8), STARLING_OK);
    assert_topo_equal(&topo_a, &topo_b);
    /* header 8, epoch/rank/n 16, member 0 (8 + 1 + 8 + 2), member 1's id and host
     * (8 + 1 + 8): its port is bytes 60 and 61 */
    golden_differ_only(golden_v2_topo, golden_v5_topo_closed, 60, 61);
}

/* ---------------------------------------------------------------- golden frames, v6 */

/* Written from docs/protocol.md like the others; tests/golden/v6/<name>.bin hold the same
 * bytes, and register.bin, register_closed.bin, topo.bin, topo_closed.bin, links.bin,
 * decide.bin, data_hdr.bin, state.bin and watch.bin there are copies of v5's, which
 * version 6 did not change. Its HELLOs are the v5 ones with version 6 and the host tag
 * appended, its CHALLENGE the v3 one with the host tag appended; SHM_OFFER and SHM_REPLY
 * are new. */

/* HELLO, data role: the v5 golden hello with len 72 (byte 4), version 6 (byte 12) and the
 * host tag 0x0123456789abcdef appended. */
static const char golden_v6_hello[] = "01 00 0000 48000000" /* type 1, flags, reserved, len 72 */
                                      "5354524c"            /* magic "STRL" */
                                      "0600"                /* version 6 */
                                      "02"                  /* role: data */
                                      "000102030405060708090a0b0c0d0e0f"
                                      "101112131415161718191a1b1c1d1e1f" /* nonce */
                                      "04 64656d6f"                      /* run "demo" */
                                      "0807060504030201"                 /* peer_id */
                                      "0300000000000000"                 /* epoch 3 */
                                      "01"                               /* stream 1 */
                                      "02"                               /* nstreams 2 */
                                      "01"                /* security 1: STARLING_SEC_AEAD */
                                      "01"                /* caps: STARLING_CAP_AESGCM */
                                      "efcdab8967452301"; /* host 0x0123456789abcdef */

/* HELLO, probe role: the v5 golden probe hello likewise (a probe's handshake is every
 * connection's, so it carries the host tag too). */
static const char golden_v6_hello_probe[] = "01 00 0000 48000000" /* type 1, len 72 */
                                            "5354524c"            /* magic "STRL" */
                                            "0600"                /* version 6 */
                                            "03"                  /* role: probe */
                                            "000102030405060708090a0b0c0d0e0f"
                                            "101112131415161718191a1b1c1d1e1f" /* nonce */
                                            "04 64656d6f"                      /* run "demo" */
                                            "0807060504030201"                 /* peer_id */
                                            "0300000000000000"                 /* epoch 3 */
                                            "00"                               /* stream 0 */
                                            "00"                               /* nstreams 0 */
                                            "01"                /* security 1: STARLING_SEC_AEAD */
                                            "01"                /* caps: STARLING_CAP_AESGCM */
                                            "efcdab8967452301"; /* host */

/* HELLO, reversed data role: the v6 golden data hello with role 4 (byte 14). */
static const char golden_v6_hello_rev[] = "01 00 0000 48000000" /* type 1, len 72 */
                                          "5354524c"            /* magic "STRL" */
                                          "0600"                /* version 6 */
                                          "04"                  /* role: data, reversed */
                                          "000102030405060708090a0b0c0d0e0f"
                                          "101112131415161718191a1b1c1d1e1f" /* nonce */
                                          "04 64656d6f"                      /* run "demo" */
                                          "0807060504030201"                 /* peer_id */
                                          "0300000000000000"                 /* epoch 3 */
                                          "01"                               /* stream 1 */
                                          "02"                               /* nstreams 2 */
                                          "01"                /* security 1: STARLING_SEC_AEAD */
                                          "01"                /* caps: STARLING_CAP_AESGCM */
                                          "efcdab8967452301"; /* host */

/* CHALLENGE: the v3 golden challenge (nonce 00..1f, mac 20..3f, security 2, caps 0) with
 * len 74 and the server's host tag, the same as hello.bin's (both ends on one host),
 * appended: 32 + 32 + 1 + 1 + 8 = 74 bytes. The mac is not computed (the decoder does not
 * check it; the handshake does, src/auth/handshake.c). */
static const char golden_v6_challenge[] = "02 00 0000 4a000000" /* type 2, len 74 */
                                          "000102030405060708090a0b0c0d0e0f"
                                          "101112131415161718191a1b1c1d1e1f" /* nonce */
                                          "202122232425262728292a2b2c2d2e2f"
                                          "303132333435363738393a3b3c3d3e3f" /* mac */
                                          "02"                /* security 2: STARLING_SEC_CHACHA */
                                          "00"                /* caps 0 */
                                          "efcdab8967452301"; /* host 0x0123456789abcdef */

/* SHM_OFFER (new in v6): the dialler's segment is /proc/4242/fd/7, a ring of 4 MiB (four
 * chunks of the default 1 MiB, as links_shm.c asks), nonce 40..4f: 4 + 4 + 8 + 16 = 32. */
static const char golden_v6_shm_offer[] = "16 00 0000 20000000"               /* type 22, len 32 */
                                          "92100000"                          /* pid 4242 */
                                          "07000000"                          /* fd 7 */
                                          "0000400000000000"                  /* size 4 MiB */
                                          "404142434445464748494a4b4c4d4e4f"; /* nonce */

/* SHM_OFFER with no segment (the dialler could not make one): all zero, as
 * src/net/shm.c leaves the offer when memfd_create or mmap fails. */
static const char golden_v6_shm_offer_none[] = "16 00 0000 20000000" /* type 22, len 32 */
                                               "00000000"            /* pid 0 */
                                               "00000000"            /* fd 0 */
                                               "0000000000000000"    /* size 0: none */
                                               "00000000000000000000000000000000"; /* nonce */

/* SHM_REPLY (new in v6): mapped, the link runs over the segment from now on. */
static const char golden_v6_shm_reply[] = "17 00 0000 01000000" /* type 23, len 1 */
                                          "01";                 /* ok 1 */

/* SHM_REPLY: not mapped, the link stays a sealed TCP stream. */
static const char golden_v6_shm_reply_tcp[] = "17 00 0000 01000000" /* type 23, len 1 */
                                              "00";                 /* ok 0 */

#define GOLDEN_HOST 0x0123456789abcdefull

/* A v6 golden hello is the v5 one with len + 8 (byte 4), version 6 (byte 12) and the
 * host tag's 8 bytes appended. */
static void golden_v6_from_v5(const char *hex_v5, const char *hex_v6)
{
    static uint8_t a[128], b[128];
    size_t n = unhex(hex_v5, a, sizeof a);
    assert_int_equal(unhex(hex_v6, b, sizeof b), n + 8);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(a[i] != b[i], i == 4 || i == 8 + 4);
    assert_int_equal(b[4], a[4] + 8);
    assert_int_equal(b[8 + 4], 6);
    assert_true(le64(b + n) == GOLDEN_HOST);
}

static void golden_v6_hello_msg(starling__msg_hello *m, uint8_t role)
{
    golden_v3_hello_msg(m, role);
    m->version = 6;
    m->host = GOLDEN_HOST;
}

static void test_golden_v6_hello(void **state)
{
    starling__msg_hello m;
    (void)state;
    golden_v6_hello_msg(&m, ROLE_DATA);
    golden_hello_both_ways(golden_v6_hello, &m);
    golden_v6_hello_msg(&m, ROLE_PROBE);
    golden_hello_both_ways(golden_v6_hello_probe, &m);
    golden_v6_from_v5(golden_v5_hello, golden_v6_hello);
    golden_v6_from_v5(golden_v5_hello_probe, golden_v6_hello_probe);
    /* Without the host tag, as a v5 side would lay it out: truncated, not a version. */
    {
        static uint8_t want[128];
        size_t n = unhex(golden_v6_hello, want, sizeof want);
        assert_int_equal(decode_exact(MSG_HELLO, want + 8, n - 8 - 8), STARLING_E_PROTOCOL);
    }
}

static void test_golden_v6_hello_rev(void **state)
{
    starling__msg_hello m;
    (void)state;
    golden_v6_hello_msg(&m, ROLE_DATA_REV);
    assert_int_equal(m.stream, 1);
    assert_int_equal(m.nstreams, 2);
    golden_hello_both_ways(golden_v6_hello_rev, &m);
    golden_v6_from_v5(golden_v5_hello_rev, golden_v6_hello_rev);
    /* The data hello with role 4 (byte 14). */
    golden_differ_only(golden_v6_hello, golden_v6_hello_rev, 8 + 6, 8 + 6);
    /* As a data hello: stream 0 of 0 (a probe's) is refused on it. */
    {
        static uint8_t want[128];
        size_t n = unhex(golden_v6_hello_rev, want, sizeof want);
        want[n - 12] = 0; /* stream */
        want[n - 11] = 0; /* nstreams */
        assert_int_equal(decode_exact(MSG_HELLO, want + 8, n - 8), STARLING_E_PROTOCOL);
        /* ... and role 5 is no role */
        n = unhex(golden_v6_hello_rev, want, sizeof want);
        want[8 + 6] = 5;
        assert_int_equal(decode_exact(MSG_HELLO, want + 8, n - 8), STARLING_E_PROTOCOL);
    }
}

static void test_golden_v6_challenge(void **state)
{
    static uint8_t want[128], v3[128];
    starling__msg_challenge m, out;
    starling__frame_hdr h;
    size_t n = unhex(golden_v6_challenge, want, sizeof want), n3;
    (void)state;
    assert_int_equal(n, 8 + 74);
    golden_v3_challenge_msg(&m);
    m.host = GOLDEN_HOST;
    assert_int_equal(starling__challenge_encode(frame, sizeof frame, &m), (int)n);
    assert_memory_equal(frame, want, n);
    assert_int_equal(starling__frame_hdr_decode(want, CHUNK, &h), STARLING_OK);
    assert_int_equal(h.type, MSG_CHALLENGE);
    assert_int_equal(h.len, 74);
    memset(&out, 0xee, sizeof out);
    assert_int_equal(starling__challenge_decode(want + 8, h.len, &out), STARLING_OK);
    assert_memory_equal(out.nonce, m.nonce, STARLING_NONCE_LEN);
    assert_memory_equal(out.mac, m.mac, STARLING_MAC_LEN);
    assert_int_equal(out.security, STARLING_SEC_CHACHA);
    assert_int_equal(out.caps, 0);
    assert_true(out.host == GOLDEN_HOST);
    /* The v3 golden challenge with len 74 (byte 4) and the host tag appended. */
    n3 = unhex(golden_v3_challenge, v3, sizeof v3);
    assert_int_equal(n, n3 + 8);
    for (size_t i = 0; i < n3; i++)
        assert_int_equal(v3[i] != want[i], i == 4);
    assert_true(le64(want + n3) == GOLDEN_HOST);
}

static void test_golden_v6_shm_offer(void **state)
{
    static uint8_t want[128];
    starling__msg_shm m, out;
    starling__frame_hdr h;
    size_t n = unhex(golden_v6_shm_offer, want, sizeof want);
    (void)state;
    assert_int_equal(n, 8 + 32);
    memset(&m, 0, sizeof m);
    m.pid = 4242;
    m.fd = 7;
    m.size = 4u << 20;
    for (int i = 0; i < 16; i++)
        m.nonce[i] = (uint8_t)(0x40 + i);
    assert_int_equal(starling__shm_offer_encode(frame, sizeof frame, &m), (int)n);
    assert_memory_equal(frame, want, n);
    assert_int_equal(starling__frame_hdr_decode(want, CHUNK, &h), STARLING_OK);
    assert_int_equal(h.type, MSG_SHM_OFFER);
    assert_int_equal(h.len, 32);
    memset(&out, 0xee, sizeof out);
    assert_int_equal(starling__shm_offer_decode(want + 8, h.len, &out), STARLING_OK);
    assert_true(out.pid == 4242 && out.fd == 7 && out.size == (4u << 20) && out.ok == 0);
    assert_memory_equal(out.nonce, m.nonce, sizeof m.nonce);
    /* The same offer with pid 0, or a size one byte off, is malformed. */
    want[8] = want[9] = 0;
    assert_int_equal(decode_exact(MSG_SHM_OFFER, want + 8, 32), STARLING_E_PROTOCOL);
    n = unhex(golden_v6_shm_offer, want, sizeof want);
    want[8 + 8] = 1; /* size 4 MiB + 1 */
    assert_int_equal(decode_exact(MSG_SHM_OFFER, want + 8, 32), STARLING_E_PROTOCOL);
    /* No segment. */
    n = unhex(golden_v6_shm_offer_none, want, sizeof want);
    assert_int_equal(n, 8 + 32);
    memset(&m, 0, sizeof m);
    assert_int_equal(starling__shm_offer_encode(frame, sizeof frame, &m), (int)n);
    assert_memory_equal(frame, want, n);
    memset(&out, 0xee, sizeof out);
    assert_int_equal(starling__shm_offer_decode(want + 8, 32, &out), STARLING_OK);
    assert_true(out.pid == 0 && out.fd == 0 && out.size == 0);
}

static void test_golden_v6_shm_reply(void **state)
{
    static uint8_t want[16];
    static const char *const hex[] = {golden_v6_shm_reply_tcp, golden_v6_shm_reply};
    (void)state;
    for (uint8_t ok = 0; ok <= 1; ok++) {
        starling__msg_shm m, out;
        size_t n = unhex(hex[ok], want, sizeof want);
        assert_int_equal(n, 8 + 1);
        memset(&m, 0, sizeof m);
        m.ok = ok;
        assert_int_equal(starling__shm_reply_encode(frame, sizeof frame, &m), (int)n);
        assert_memory_equal(frame, want, n);
        memset(&out, 0xee, sizeof out);
        assert_int_equal(starling__shm_reply_decode(want + 8, 1, &out), STARLING_OK);
        assert_int_equal(out.ok, ok);
        want[8] = 2; /* neither */
        assert_int_equal(decode_exact(MSG_SHM_REPLY, want + 8, 1), STARLING_E_PROTOCOL);
    }
}

/* The golden frames with their security byte set to 3 (one past STARLING_SEC_MAX): the
 * same bytes otherwise, refused as malformed (STARLING_E_PROTOCOL), while 0..2 there are
 * accepted. The byte is the payload's tenth last in both messages (security, caps, then
 * the 8-byte host tag). */
static void test_golden_v6_security_refused(void **state)
{
    static const struct {
        const char *hex;
        uint8_t type;
    } frames[] = {{golden_v6_hello, MSG_HELLO},
                  {golden_v6_hello_probe, MSG_HELLO},
                  {golden_v6_hello_rev, MSG_HELLO},
                  {golden_v6_challenge, MSG_CHALLENGE}};
    static uint8_t want[128];
    (void)state;
    for (size_t i = 0; i < sizeof frames / sizeof frames[0]; i++) {
        size_t n = unhex(frames[i].hex, want, sizeof want);
        uint8_t *sec = want + n - 10;
        assert_true(*sec == STARLING_SEC_AEAD || *sec == STARLING_SEC_CHACHA);
        for (uint8_t v = 0; v <= STARLING_SEC_MAX; v++) {
            *sec = v;
            assert_int_equal(decode_exact(frames[i].type, want + 8, n - 8), STARLING_OK);
        }
        *sec = 3;
        assert_int_equal(decode_exact(frames[i].type, want + 8, n - 8), STARLING_E_PROTOCOL);
    }
}

/* tests/golden/v<N>/ holds the same bytes as the constants: every file, byte for byte.
 * The directory is found from this file's path (CMake compiles it by absolute path); the
 * test is skipped if the source tree is not there. */
static void test_golden_files(void **state)
{
    static const struct {
        const char *path, *hex;
    } files[] = {
        {"v1/hello.bin", golden_hello},
        {"v1/register.bin", golden_register},
        {"v1/topo.bin", golden_topo},
        {"v1/decide.bin", golden_decide},
        {"v1/data_hdr.bin", golden_data},
        {"v2/hello.bin", golden_v2_hello},
        {"v2/hello_probe.bin", golden_v2_hello_probe},
        {"v2/register.bin", golden_register}, /* unchanged from v1 */
        {"v2/topo.bin", golden_v2_topo},
        {"v2/links.bin", golden_v2_links},
        {"v2/decide.bin", golden_decide}, /* unchanged from v1 */
        {"v2/data_hdr.bin", golden_data}, /* unchanged from v1 */
        {"v3/hello.bin", golden_v3_hello},
        {"v3/hello_probe.bin", golden_v3_hello_probe},
        {"v3/challenge.bin", golden_v3_challenge}, /* new in v3 */
        {"v3/register.bin", golden_register},      /* unchanged from v1 */
        {"v3/topo.bin", golden_v2_topo},           /* unchanged from v2 */
        {"v3/links.bin", golden_v2_links},         /* unchanged from v2 */
        {"v3/decide.bin", golden_decide},          /* unchanged from v1 */
        {"v3/data_hdr.bin", golden_data},          /* unchanged from v1 */
        {"v4/hello.bin", golden_v4_hello},
        {"v4/hello_probe.bin", golden_v4_hello_probe},
        {"v4/state.bin", golden_v4_state},         /* new in v4 */
        {"v4/watch.bin", golden_v4_watch},         /* new in v4 */
        {"v4/challenge.bin", golden_v3_challenge}, /* unchanged from v3 */
        {"v4/register.bin", golden_register},      /* unchanged from v1 */
        {"v4/topo.bin", golden_v2_topo},           /* unchanged from v2 */
        {"v4/links.bin", golden_v2_links},         /* unchanged from v2 */
        {"v4/decide.bin", golden_decide},          /* unchanged from v1 */
        {"v4/data_hdr.bin", golden_data},          /* unchanged from v1 */
        {"v5/hello.bin", golden_v5_hello},
        {"v5/hello_probe.bin", golden_v5_hello_probe},
        {"v5/hello_rev.bin", golden_v5_hello_rev},             /* new in v5 */
        {"v5/register_closed.bin", golden_v5_register_closed}, /* new in v5 */
        {"v5/topo_closed.bin", golden_v5_topo_closed},         /* new in v5 */
        {"v5/challenge.bin", golden_v3_challenge},             /* unchanged from v3 */
        {"v5/register.bin", golden_register},                  /* unchanged from v1 */
        {"v5/topo.bin", golden_v2_topo},                       /* unchanged from v2 */
        {"v5/links.bin", golden_v2_links},                     /* unchanged from v2 */
        {"v5/decide.bin", golden_decide},                      /* unchanged from v1 */
        {"v5/data_hdr.bin", golden_data},                      /* unchanged from v1 */
        {"v5/state.bin", golden_v4_state},                     /* unchanged from v4 */
        {"v5/watch.bin", golden_v4_watch},                     /* unchanged from v4 */
        {"v6/hello.bin", golden_v6_hello},
        {"v6/hello_probe.bin", golden_v6_hello_probe},
        {"v6/hello_rev.bin", golden_v6_hello_rev},
        {"v6/challenge.bin", golden_v6_challenge},
        {"v6/shm_offer.bin", golden_v6_shm_offer},             /* new in v6 */
        {"v6/shm_offer_none.bin", golden_v6_shm_offer_none},   /* new in v6 */
        {"v6/shm_reply.bin", golden_v6_shm_reply},             /* new in v6 */
        {"v6/shm_reply_tcp.bin", golden_v6_shm_reply_tcp},     /* new in v6 */
        {"v6/register.bin", golden_register},                  /* unchanged from v1 */
        {"v6/register_closed.bin", golden_v5_register_closed}, /* unchanged from v5 */
        {"v6/topo.bin", golden_v2_topo},                       /* unchanged from v2 */
        {"v6/topo_closed.bin", golden_v5_topo_closed},         /* unchanged from v5 */
        {"v6/links.bin", golden_v2_links},                     /* unchanged from v2 */
        {"v6/decide.bin", golden_decide},                      /* unchanged from v1 */
        {"v6/data_hdr.bin", golden_data},                      /* unchanged from v1 */
        {"v6/state.bin", golden_v4_state},                     /* unchanged from v4 */
        {"v6/watch.bin", golden_v4_watch},                     /* unchanged from v4 */
    };
    static char dir[4096], path[4200];
    const char *unit = strstr(__FILE__, "/unit/test_proto.c");
    (void)state;
    if (!unit || (size_t)(unit - __FILE__) >= sizeof dir - 16) {
        skip();
        return;
    }
    memcpy(dir, __FILE__, (size_t)(unit - __FILE__));
    dir[unit - __FILE__] = '\0';
    snprintf(path, sizeof path, "%s/golden/v1/hello.bin", dir);
    FILE *probe = fopen(path, "rb");
    if (!probe) {
        skip();
        return;
    }
    fclose(probe);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        uint8_t want[128], got[129];
        size_t n = unhex(files[i].hex, want, sizeof want), m;
        FILE *f;
        snprintf(path, sizeof path, "%s/golden/%s", dir, files[i].path);
        f = fopen(path, "rb");
        if (!f)
            fail_msg("missing golden file %s", path);
        m = fread(got, 1, sizeof got, f);
        fclose(f);
        if (m != n || memcmp(got, want, n) != 0)
            fail_msg("%s differs from its constant in test_proto.c (%zu bytes, want %zu)", path, m,
                     n);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* round trips */
        cmocka_unit_test(test_hello_round_trip),
        cmocka_unit_test(test_hello_data_role_stream_bounds),
        cmocka_unit_test(test_challenge_round_trip),
        cmocka_unit_test(test_shm_offer_round_trip),
        cmocka_unit_test(test_shm_reply_round_trip),
        cmocka_unit_test(test_auth_round_trip),
        cmocka_unit_test(test_reject_round_trip),
        cmocka_unit_test(test_register_round_trip),
        cmocka_unit_test(test_register_field_extremes),
        cmocka_unit_test(test_welcome_round_trip),
        cmocka_unit_test(test_topo_round_trip),
        cmocka_unit_test(test_topo_largest_fits),
        cmocka_unit_test(test_topo_probe_bytes),
        cmocka_unit_test(test_links_round_trip),
        cmocka_unit_test(test_state_round_trip),
        cmocka_unit_test(test_state_refusals),
        cmocka_unit_test(test_watch_round_trip),
        cmocka_unit_test(test_links_field_extremes),
        cmocka_unit_test(test_links_largest_fits),
        cmocka_unit_test(test_epoch_round_trip_every_type),
        cmocka_unit_test(test_epoch_code_range),
        cmocka_unit_test(test_epoch_status_order),
        cmocka_unit_test(test_epoch_refuses_other_types),
        cmocka_unit_test(test_data_round_trip),
        cmocka_unit_test(test_data_encode_refusals),
        cmocka_unit_test(test_data_encode_length_wrap),
        cmocka_unit_test(test_data_flags),
        cmocka_unit_test(test_encoders_limit),
        cmocka_unit_test(test_encoders_refuse_over_limit),
        /* frame header */
        cmocka_unit_test(test_frame_hdr_round_trip),
        cmocka_unit_test(test_frame_hdr_unknown_type),
        cmocka_unit_test(test_frame_hdr_reserved_bytes),
        cmocka_unit_test(test_frame_hdr_control_len),
        cmocka_unit_test(test_frame_hdr_data_len),
        cmocka_unit_test(test_frame_hdr_done_abort_len),
        /* refusals */
        cmocka_unit_test(test_truncated_every_length),
        cmocka_unit_test(test_trailing_bytes),
        cmocka_unit_test(test_data_decode_refusals),
        cmocka_unit_test(test_hello_magic_and_version),
        cmocka_unit_test(test_hello_future_version_any_layout),
        cmocka_unit_test(test_hello_role),
        cmocka_unit_test(test_hello_streams),
        cmocka_unit_test(test_hello_probe_role),
        cmocka_unit_test(test_hello_data_rev_role),
        cmocka_unit_test(test_hello_security),
        cmocka_unit_test(test_hello_run_name),
        cmocka_unit_test(test_hello_run_too_long),
        cmocka_unit_test(test_hello_host),
        cmocka_unit_test(test_challenge_security),
        cmocka_unit_test(test_challenge_host),
        cmocka_unit_test(test_shm_offer_refusals),
        cmocka_unit_test(test_shm_reply_refusals),
        cmocka_unit_test(test_reject_refusals),
        cmocka_unit_test(test_reject_code_ok_refused),
        cmocka_unit_test(test_register_refusals),
        cmocka_unit_test(test_register_port_zero),
        cmocka_unit_test(test_register_count_over_limit),
        cmocka_unit_test(test_register_name_too_long),
        cmocka_unit_test(test_welcome_refusals),
        cmocka_unit_test(test_topo_refusals),
        cmocka_unit_test(test_topo_port_zero),
        cmocka_unit_test(test_topo_count_over_limit),
        cmocka_unit_test(test_topo_host_too_long),
        cmocka_unit_test(test_links_refusals),
        cmocka_unit_test(test_links_count_over_limit),
        cmocka_unit_test(test_links_count_disagrees),
        /* golden frames: versions 1 to 5 (as version 6 reads them), then 6 */
        cmocka_unit_test(test_golden_protocol_version),
        cmocka_unit_test(test_golden_v1_hello),
        cmocka_unit_test(test_golden_register),
        cmocka_unit_test(test_golden_v1_topo),
        cmocka_unit_test(test_golden_decide),
        cmocka_unit_test(test_golden_data),
        cmocka_unit_test(test_golden_v2_hello),
        cmocka_unit_test(test_golden_v2_hello_probe),
        cmocka_unit_test(test_golden_v2_topo),
        cmocka_unit_test(test_golden_v2_links),
        cmocka_unit_test(test_golden_v3_hello),
        cmocka_unit_test(test_golden_v3_hello_probe),
        cmocka_unit_test(test_golden_v3_challenge),
        cmocka_unit_test(test_golden_v4_hello),
        cmocka_unit_test(test_golden_v4_state_watch),
        cmocka_unit_test(test_golden_v5_hello),
        cmocka_unit_test(test_golden_v5_hello_rev),
        cmocka_unit_test(test_golden_v5_register_closed),
        cmocka_unit_test(test_golden_v5_topo_closed),
        cmocka_unit_test(test_golden_v6_hello),
        cmocka_unit_test(test_golden_v6_hello_rev),
        cmocka_unit_test(test_golden_v6_challenge),
        cmocka_unit_test(test_golden_v6_shm_offer),
        cmocka_unit_test(test_golden_v6_shm_reply),
        cmocka_unit_test(test_golden_v6_security_refused),
        cmocka_unit_test(test_golden_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
