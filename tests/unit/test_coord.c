/* The coordinator, driven over real sockets by fake peers that speak raw frames.
 *
 * Each test runs its own coordinator (127.0.0.1:0, timeout 500 ms) on a thread. Fake peers
 * authenticate with the real handshake client and then send and receive frames by hand,
 * so every step of the protocol is visible here. Every wait is bounded (a few seconds) and
 * nothing asserts on time: where the coordinator must notice a silence, the test waits
 * for the consequence, answering the coordinator's heartbeats meanwhile.
 *
 * Set STARLING_TEST_LOG=1 to see the coordinator's log on stderr. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "auth/handshake.h"
#include "coord_fixture.h"
#include "platform/clock.h"
#include "platform/net.h"
#include "proto/msg.h"
#include "starling.h"
#include "util/alloc.h"

/* ---------------------------------------------------------------- tests */

static void test_first_epoch(void **state)
{
    fixture *f = *state;
    peer *a, *b;
    form_two(f, &a, &b);
    /* Nobody died, nobody joined: the same epoch is confirmed. */
    {
        const peer *ring[2] = {b, a};
        send_epoch(b, MSG_TOPO_REQ, 1, 0, 0, 0);
        send_epoch(a, MSG_TOPO_REQ, 1, 0, 0, 0);
        expect_topo(a, 1, 1, 2, ring);
        expect_topo(b, 1, 0, 2, ring);
    }
}

static void test_wrong_secret(void **state)
{
    fixture *f = *state;
    int fd;
    assert_int_equal(handshake(f, RUN, "not the secret", 0x42, &fd), STARLING_E_AUTH);
}

static void test_wrong_run(void **state)
{
    fixture *f = *state;
    int fd;
    assert_int_equal(handshake(f, "another-run", SECRET, 0x42, &fd), STARLING_E_AUTH);
}

/* A HELLO of any version but ours is answered REJECT(E_VERSION), then closed: a peer of
 * the previous protocol (1) and one of a future protocol alike. */
static void test_bad_version(void **state)
{
    static const uint16_t versions[] = {1, STARLING_PROTOCOL_VERSION + 1};
    fixture *f = *state;
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        starling__msg_hello hello;
        starling__msg_reject rj;
        starling__frame_hdr h;
        uint8_t buf[512];
        char want[64];
        int fd;

        assert_int_not_equal(versions[i], STARLING_PROTOCOL_VERSION);
        assert_int_equal(dial(f, &fd), STARLING_OK);
        memset(&hello, 0, sizeof hello);
        hello.magic = STARLING_MAGIC;
        hello.version = versions[i];
        hello.role = ROLE_CONTROL;
        strcpy(hello.run, RUN);
        hello.peer_id = 0x42;
        send_raw(fd, buf, starling__hello_encode(buf, sizeof buf, &hello));
        assert_int_equal(starling__frame_recv(fd, NULL, &h, buf, sizeof buf, deadline()),
                         STARLING_OK);
        assert_int_equal(h.type, MSG_REJECT);
        assert_int_equal(starling__reject_decode(buf, h.len, &rj), STARLING_OK);
        assert_int_equal(rj.code, STARLING_E_VERSION);
        /* The reason names the version refused. */
        snprintf(want, sizeof want, "version %u", (unsigned)versions[i]);
        assert_non_null(strstr(rj.reason, want));
        expect_closed(fd);
        starling__sock_close(fd);
    }
}

static void test_death_is_resolved(void **state)
{
    fixture *f = *state;
    peer *a, *b;
    form_two(f, &a, &b);
    hang_up(f, a);
    expect_epoch_msg(b, MSG_QUERY, 1, 0, 0);
    send_epoch(b, MSG_STATUS, 1, 3, 3, 0);
    expect_epoch_msg(b, MSG_DECIDE, 1, 3, STARLING_E_PEER_LOST);
    send_epoch(b, MSG_TOPO_REQ, 1, 0, 0, 0);
    {
        const peer *ring[1] = {b};
        expect_topo(b, 2, 0, 1, ring);
    }
}

static void test_failure_report(void **state)
{
    fixture *f = *state;
    peer *a, *b;
    form_two(f, &a, &b);
    send_epoch(a, MSG_FAIL, 1, 5, 0, STARLING_E_MISMATCH);
    expect_epoch_msg(a, MSG_QUERY, 1, 0, 0);
    expect_epoch_msg(b, MSG_QUERY, 1, 0, 0);
    send_epoch(a, MSG_STATUS, 1, 4, 5, 0);
    send_epoch(b, MSG_STATUS, 1, 5, 5, 0);
    expect_epoch_msg(a, MSG_DECIDE, 1, 4, STARLING_E_MISMATCH);
    expect_epoch_msg(b, MSG_DECIDE, 1, 4, STARLING_E_MISMATCH);
    /* A late report for the resolved epoch gets the same decision again. */
    send_epoch(b, MSG_FAIL, 1, 5, 0, STARLING_E_TIMEOUT);
    expect_epoch_msg(b, MSG_DECIDE, 1, 4, STARLING_E_MISMATCH);
    /* A broken epoch is replaced even when the members stay the same. */
    send_epoch(a, MSG_TOPO_REQ, 1, 0, 0, 0);
    send_epoch(b, MSG_TOPO_REQ, 1, 0, 0, 0);
    {
        const peer *ring[2] = {b, a};
        expect_topo(a, 2, 1, 2, ring);
        expect_topo(b, 2, 0, 2, ring);
    }
}

/* A mismatch reported for op S aborts S even where its data phase finished (a broadcast
 * whose members disagree on the root); other failures leave finished ops committed. */
static void test_mismatch_never_commits(void **state)
{
    fixture *f = *state;
    peer *a, *b;
    form_two(f, &a, &b);
    send_epoch(a, MSG_FAIL, 1, 2, 0, STARLING_E_MISMATCH);
    expect_epoch_msg(a, MSG_QUERY, 1, 0, 0);
    expect_epoch_msg(b, MSG_QUERY, 1, 0, 0);
    send_epoch(a, MSG_STATUS, 1, 2, 2, 0);
    send_epoch(b, MSG_STATUS, 1, 2, 2, 0);
    expect_epoch_msg(a, MSG_DECIDE, 1, 1, STARLING_E_MISMATCH);
    expect_epoch_msg(b, MSG_DECIDE, 1, 1, STARLING_E_MISMATCH);

    send_epoch(a, MSG_TOPO_REQ, 1, 0, 0, 0);
    send_epoch(b, MSG_TOPO_REQ, 1, 0, 0, 0);
    {
        const peer *ring[2] = {b, a};
        expect_topo(a, 2, 1, 2, ring);
        expect_topo(b, 2, 0, 2, ring);
    }
    send_epoch(b, MSG_FAIL, 2, 3, 0, STARLING_E_TIMEOUT);
    expect_epoch_msg(a, MSG_QUERY, 2, 0, 0);
    expect_epoch_msg(b, MSG_QUERY, 2, 0, 0);
    send_epoch(a, MSG_STATUS, 2, 3, 3, 0);
    send_epoch(b, MSG_STATUS, 2, 3, 3, 0);
    expect_epoch_msg(a, MSG_DECIDE, 2, 3, STARLING_E_TIMEOUT);
    expect_epoch_msg(b, MSG_DECIDE, 2, 3, STARLING_E_TIMEOUT);
}

static void test_silent_peer_declared_dead(void **state)
{
    fixture *f = *state;
    peer *a, *b;
    form_two(f, &a, &b);
    go_silent(f, a);
    expect_epoch_msg(b, MSG_QUERY, 1, 0, 0);
    send_epoch(b, MSG_STATUS, 1, 0, 1, 0);
    expect_epoch_msg(b, MSG_DECIDE, 1, 0, STARLING_E_PEER_LOST);
    expect_closed(a->fd);
}

static void test_unanswered_query(void **state)
{
    fixture *f = *state;
    peer *a = join_as(f, 0x2000, "alpha", 7001, 3, 0, NULL, 0);
    peer *b = join_as(f, 0x1000, "beta", 7002, 3, 0, NULL, 0);
    peer *c = join_as(f, 0x3000, "gamma", 7003, 3, 0, NULL, 0);
    send_epoch(a, MSG_TOPO_REQ, 0, 0, 0, 0);
    send_epoch(b, MSG_TOPO_REQ, 0, 0, 0, 0);
    send_epoch(c, MSG_TOPO_REQ, 0, 0, 0, 0);
    {
        const peer *ring[3] = {b, a, c};
        expect_topo(a, 1, 1, 3, ring);
        expect_topo(b, 1, 0, 3, ring);
        expect_topo(c, 1, 2, 3, ring);
    }
    /* c reports a failure, keeps heartbeating, but never answers the query. */
    send_epoch(c, MSG_FAIL, 1, 2, 0, STARLING_E_TIMEOUT);
    expect_epoch_msg(a, MSG_QUERY, 1, 0, 0);
    expect_epoch_msg(b, MSG_QUERY, 1, 0, 0);
    send_epoch(a, MSG_STATUS, 1, 2, 2, 0);
    send_epoch(b, MSG_STATUS, 1, 1, 2, 0);
    expect_epoch_msg(a, MSG_DECIDE, 1, 1, STARLING_E_PEER_LOST);
    expect_epoch_msg(b, MSG_DECIDE, 1, 1, STARLING_E_PEER_LOST);
    expect_closed(c->fd);
    send_epoch(a, MSG_TOPO_REQ, 1, 0, 0, 0);
    send_epoch(b, MSG_TOPO_REQ, 1, 0, 0, 0);
    {
        const peer *ring[2] = {b, a};
        expect_topo(a, 2, 1, 2, ring);
        expect_topo(b, 2, 0, 2, ring);
    }
}

static void test_leave_and_join(void **state)
{
    fixture *f = *state;
    peer *a, *b, *d;
    form_two(f, &a, &b);
    send_epoch(b, MSG_LEAVE, 0, 0, 0, 0);
    expect_closed(b->fd);
    expect_epoch_msg(a, MSG_QUERY, 1, 0, 0);
    send_epoch(a, MSG_STATUS, 1, 7, 7, 0);
    expect_epoch_msg(a, MSG_DECIDE, 1, 7, STARLING_E_PEER_LOST);
    /* A newcomer waits for the members; then it is appended after them. (Joiners ask
     * first: the epoch forms as soon as every live member waits.) */
    d = join(f, 0x10, "delta", 7004);
    send_epoch(d, MSG_TOPO_REQ, 0, 0, 0, 0);
    send_epoch(a, MSG_TOPO_REQ, 1, 0, 0, 0);
    {
        const peer *ring[2] = {a, d};
        expect_topo(a, 2, 0, 2, ring);
        expect_topo(d, 2, 1, 2, ring);
    }
}

static void test_garbage_refused(void **state)
{
    fixture *f = *state;
    static const uint8_t garbage[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    uint8_t oversized[STARLING_FRAME_HDR];
    int before = refused_count(), fd;
    peer *a, *b;

    assert_int_equal(dial(f, &fd), STARLING_OK);
    send_raw(fd, garbage, (int)sizeof garbage);
    expect_closed(fd);
    starling__sock_close(fd);

    assert_int_equal(dial(f, &fd), STARLING_OK);
    starling__frame_hdr_encode(oversized, MSG_HELLO, 0x7fffffffu);
    send_raw(fd, oversized, (int)sizeof oversized);
    expect_closed(fd);
    starling__sock_close(fd);

    /* Still serving. */
    form_two(f, &a, &b);
    assert_true(refused_count() >= before + 2);
}

static void test_malformed_after_register(void **state)
{
    fixture *f = *state;
    peer *a, *b, *c, *d;
    uint8_t hdr[STARLING_FRAME_HDR];
    form_two(f, &a, &b);

    /* A frame only the coordinator may send is malformed from a peer: a member dies. */
    send_epoch(a, MSG_QUERY, 1, 0, 0, 0);
    expect_closed(a->fd);
    expect_epoch_msg(b, MSG_QUERY, 1, 0, 0);
    send_epoch(b, MSG_STATUS, 1, 0, 0, 0);
    expect_epoch_msg(b, MSG_DECIDE, 1, 0, STARLING_E_PEER_LOST);

    /* An oversized length from a registered newcomer. */
    c = join(f, 0x3000, "gamma", 7003);
    starling__frame_hdr_encode(hdr, MSG_TOPO_REQ, STARLING_CTRL_MAX + 1);
    send_raw(c->fd, hdr, (int)sizeof hdr);
    expect_closed(c->fd);

    /* A first frame that is not a register. */
    {
        int fd;
        uint8_t buf[64];
        starling__msg_epoch m;
        memset(&m, 0, sizeof m);
        assert_int_equal(handshake(f, RUN, SECRET, 0x4000, &fd), STARLING_OK);
        send_raw(fd, buf, starling__epoch_encode(buf, sizeof buf, MSG_TOPO_REQ, &m));
        expect_closed(fd);
        starling__sock_close(fd);
    }

    /* A register naming another peer than the handshake did. */
    {
        static starling__msg_register reg;
        uint8_t buf[512];
        int fd;
        assert_int_equal(handshake(f, RUN, SECRET, 0x5000, &fd), STARLING_OK);
        memset(&reg, 0, sizeof reg);
        reg.peer_id = 0x5001;
        strcpy(reg.name, "liar");
        strcpy(reg.host, "127.0.0.1");
        reg.port = 9;
        reg.min_peers = 1;
        send_raw(fd, buf, starling__register_encode(buf, sizeof buf, &reg));
        expect_closed(fd);
        starling__sock_close(fd);
    }

    /* Still serving: b and a newcomer form epoch 2. */
    d = join(f, 0x10, "delta", 7004);
    send_epoch(d, MSG_TOPO_REQ, 0, 0, 0, 0);
    send_epoch(b, MSG_TOPO_REQ, 1, 0, 0, 0);
    {
        const peer *ring[2] = {b, d};
        expect_topo(b, 2, 0, 2, ring);
        expect_topo(d, 2, 1, 2, ring);
    }
}

/* p reports its links: to each ids[i], bw[i] bytes/s and a 1 ms round trip. */
static void send_links(const peer *p, uint64_t epoch, const uint64_t *ids, const uint64_t *bw,
                       uint32_t n)
{
    static starling__msg_links m;
    static uint8_t buf[STARLING_FRAME_HDR + 12 + 20 * 16];
    memset(&m, 0, sizeof m);
    m.epoch = epoch;
    m.n = n;
    for (uint32_t i = 0; i < n; i++) {
        m.links[i].id = ids[i];
        m.links[i].bytes_per_s = bw[i];
        m.links[i].rtt_us = 1000;
    }
    send_raw(p->fd, buf, starling__links_encode(buf, sizeof buf, &m));
}

/* Ring order "measured": the first epoch (by id: a b c) asks for measurements; the links
 * reported are fast only around a -> c -> b -> a (100 MB/s; 1 MB/s the other way), so
 * the next epoch is that ring, and asks for nothing. */
static void test_measured_order(void **state)
{
    fixture *f = *state;
    peer *a = join_as(f, 0x1000, "a", 7001, 3, 0, NULL, 0);
    peer *b = join_as(f, 0x2000, "b", 7002, 3, 0, NULL, 0);
    peer *c = join_as(f, 0x3000, "c", 7003, 3, 0, NULL, 0);
    const peer *first[3] = {a, b, c}, *fast[3] = {a, c, b};
    const uint64_t fast_bw = 100000000, slow_bw = 1000000;

    for (int i = 0; i < 3; i++)
        send_epoch(first[i], MSG_TOPO_REQ, 0, 0, 0, 0);
    for (uint32_t i = 0; i < 3; i++) {
        expect_topo(first[i], 1, i, 3, first);
        assert_int_equal(last_topo.probe_bytes, 2u << 20); /* the default probe size */
    }
    {
        const uint64_t to_a[2] = {b->id, c->id}, bw_a[2] = {slow_bw, fast_bw};
        const uint64_t to_b[2] = {a->id, c->id}, bw_b[2] = {fast_bw, slow_bw};
        const uint64_t to_c[2] = {a->id, b->id}, bw_c[2] = {slow_bw, fast_bw};
        send_links(a, 1, to_a, bw_a, 2);
        send_links(b, 1, to_b, bw_b, 2);
        send_links(c, 1, to_c, bw_c, 2);
    }
    for (int i = 0; i < 3; i++)
        send_epoch(first[i], MSG_TOPO_REQ, 1, 0, 0, 0);
    for (uint32_t i = 0; i < 3; i++) {
        expect_topo(fast[i], 2, i, 3, fast);
        assert_int_equal(last_topo.probe_bytes, 0);
    }
    /* The same members again: the same epoch is confirmed, nothing asked. */
    for (int i = 0; i < 3; i++)
        send_epoch(first[i], MSG_TOPO_REQ, 2, 0, 0, 0);
    for (uint32_t i = 0; i < 3; i++) {
        expect_topo(fast[i], 2, i, 3, fast);
        assert_int_equal(last_topo.probe_bytes, 0);
    }
}

/* A LINKS report naming the reporter itself is malformed: the member is lost. */
static void test_links_to_self_refused(void **state)
{
    fixture *f = *state;
    peer *a, *b;
    form_two(f, &a, &b);
    {
        const uint64_t to[1] = {a->id}, bw[1] = {1000000};
        send_links(a, 1, to, bw, 1);
    }
    expect_closed(a->fd);
    expect_epoch_msg(b, MSG_QUERY, 1, 0, 0);
}

static void test_reregistration_adopts_epoch(void **state)
{
    fixture *f = *state;
    /* Ring order of the epoch is kept as the peers report it, not re-sorted. */
    const uint64_t members[2] = {0x2000, 0x1000};
    peer *a = join_as(f, 0x2000, "alpha", 7001, 2, 5, members, 2);
    peer *b = join_as(f, 0x1000, "beta", 7002, 2, 5, members, 2);
    const peer *ring[2] = {a, b};
    send_epoch(a, MSG_TOPO_REQ, 5, 0, 0, 0);
    send_epoch(b, MSG_TOPO_REQ, 5, 0, 0, 0);
    expect_topo(a, 5, 0, 2, ring);
    expect_topo(b, 5, 1, 2, ring);
}

static void test_missing_member_and_stale_peers(void **state)
{
    fixture *f = *state;
    const uint64_t members[2] = {0x3000, 0x2000}; /* 0x3000 never comes back */
    const uint64_t old[2] = {0x4000, 0x9999};
    const uint64_t same[1] = {0x5000};
    peer *a, *s, *t;
    a = join_as(f, 0x2000, "alpha", 7001, 2, 7, members, 2);
    expect_epoch_msg(a, MSG_QUERY, 7, 0, 0);
    send_epoch(a, MSG_STATUS, 7, 2, 2, 0);
    expect_epoch_msg(a, MSG_DECIDE, 7, 2, STARLING_E_PEER_LOST);

    /* A peer of an older epoch learns that it is over, and continues as a newcomer. */
    s = join_as(f, 0x4000, "stale", 7005, 1, 3, old, 2);
    expect_epoch_msg(s, MSG_DECIDE, 3, 0, STARLING_E_PEER_LOST);
    /* One claiming the current epoch without being a member gets its decision. */
    t = join_as(f, 0x5000, "stray", 7006, 1, 7, same, 1);
    expect_epoch_msg(t, MSG_DECIDE, 7, 2, STARLING_E_PEER_LOST);

    /* Joiners first: the epoch forms as soon as every live member waits. */
    send_epoch(s, MSG_TOPO_REQ, 3, 0, 0, 0);
    send_epoch(t, MSG_TOPO_REQ, 7, 0, 0, 0);
    send_epoch(a, MSG_TOPO_REQ, 7, 0, 0, 0);
    {
        const peer *ring[3] = {a, s, t};
        expect_topo(a, 8, 0, 3, ring);
        expect_topo(s, 8, 1, 3, ring);
        expect_topo(t, 8, 2, 3, ring);
    }
}

static void test_reconnect_replaces(void **state)
{
    fixture *f = *state;
    peer *a = join(f, 0x2000, "alpha", 7001);
    peer *a2 = join(f, 0x2000, "alpha", 7011);
    peer *b;
    expect_closed(a->fd);
    b = join(f, 0x1000, "beta", 7002);
    send_epoch(a2, MSG_TOPO_REQ, 0, 0, 0, 0);
    send_epoch(b, MSG_TOPO_REQ, 0, 0, 0, 0);
    {
        const peer *ring[2] = {b, a2};
        expect_topo(a2, 1, 1, 2, ring);
        expect_topo(b, 1, 0, 2, ring);
    }
}

/* Registers `fd` as peer `id` and returns the type of the answer (WELCOME or REJECT). */
static int register_raw(int fd, uint64_t id, starling__msg_reject *rj)
{
    static starling__msg_register reg;
    starling__frame_hdr h;
    uint8_t buf[512];
    memset(&reg, 0, sizeof reg);
    reg.peer_id = id;
    snprintf(reg.name, sizeof reg.name, "p%llu", (unsigned long long)id);
    strcpy(reg.host, "127.0.0.1");
    reg.port = 9;
    reg.min_peers = 1;
    send_raw(fd, buf, starling__register_encode(buf, sizeof buf, &reg));
    assert_int_equal(starling__frame_recv(fd, NULL, &h, rx, sizeof rx, deadline()), STARLING_OK);
    if (h.type == MSG_REJECT)
        assert_int_equal(starling__reject_decode(rx, h.len, rj), STARLING_OK);
    return h.type;
}

/* STARLING_MAX_PEERS registered peers, and the next one is refused with E_LIMIT. Its own
 * coordinator with a long timeout, so that 8192 silent peers stay alive. */
static void test_peer_limit(void **state)
{
    enum { N = STARLING_MAX_PEERS };
    static int fds[N + 1];
    fixture lim;
    starling_config *cfg;
    starling__msg_reject rj;
    struct rlimit rl;
    (void)state;

    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 2 * N + 64) {
        rl.rlim_cur = rl.rlim_max;
        if (rl.rlim_cur < 2 * N + 64 || setrlimit(RLIMIT_NOFILE, &rl) != 0)
            skip(); /* the coordinator and its peers share this process's descriptors */
    }
    memset(&lim, 0, sizeof lim);
    assert_int_equal(starling_config_create(&cfg), STARLING_OK);
    assert_int_equal(starling_config_set_timeout_ms(cfg, 60000), STARLING_OK);
    assert_int_equal(starling_config_set_security(cfg, "none"), STARLING_OK);
    assert_int_equal(
        starling_coord_create(&lim.coord, "127.0.0.1:0", RUN, SECRET, strlen(SECRET), cfg),
        STARLING_OK);
    starling_config_destroy(cfg);
    lim.port = starling_coord_port(lim.coord);
    assert_int_equal(pthread_create(&lim.thread, NULL, coord_thread, &lim), 0);

    for (int i = 0; i <= N; i++) {
        assert_int_equal(handshake(&lim, RUN, SECRET, 0x100000u + (uint64_t)i, &fds[i]),
                         STARLING_OK);
        if (i < N)
            assert_int_equal(register_raw(fds[i], 0x100000u + (uint64_t)i, &rj), MSG_WELCOME);
    }
    assert_int_equal(register_raw(fds[N], 0x100000u + N, &rj), MSG_REJECT);
    assert_int_equal(rj.code, STARLING_E_LIMIT);
    expect_closed(fds[N]);
    /* A place freed is a place taken. */
    starling__sock_close(fds[0]);
    starling__sock_close(fds[N]);
    assert_int_equal(handshake(&lim, RUN, SECRET, 0x900000u, &fds[N]), STARLING_OK);
    for (int tries = 0;; tries++) {
        int t = register_raw(fds[N], 0x900000u, &rj);
        if (t == MSG_WELCOME)
            break;
        /* The coordinator may not have seen fds[0] close yet: try again. */
        assert_int_equal(t, MSG_REJECT);
        assert_true(tries < 100);
        starling__sock_close(fds[N]);
        starling__sleep_ms(10);
        assert_int_equal(handshake(&lim, RUN, SECRET, 0x900000u, &fds[N]), STARLING_OK);
    }

    starling_coord_stop(lim.coord);
    pthread_join(lim.thread, NULL);
    assert_int_equal(lim.run_rc, STARLING_OK);
    starling_coord_destroy(lim.coord);
    for (int i = 1; i <= N; i++)
        starling__sock_close(fds[i]);
}

static void test_create_arguments(void **state)
{
    fixture *f = *state;
    starling_coord *c = (starling_coord *)1;
    char addr[32];
    assert_int_equal(starling_coord_create(&c, "127.0.0.1:0", RUN, SECRET, 0, NULL),
                     STARLING_E_INVALID);
    assert_null(c);
    assert_int_equal(starling_coord_create(&c, "nowhere", RUN, SECRET, 1, NULL),
                     STARLING_E_INVALID);
    assert_int_equal(starling_coord_create(&c, "127.0.0.1:0", "", SECRET, 1, NULL),
                     STARLING_E_INVALID);
    assert_int_equal(starling_coord_create(NULL, "127.0.0.1:0", RUN, SECRET, 1, NULL),
                     STARLING_E_INVALID);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", f->port);
    assert_int_equal(starling_coord_create(&c, addr, RUN, SECRET, 1, NULL), STARLING_E_OS);
    assert_null(c);
    /* A stop before run makes run return at once. */
    assert_int_equal(starling_coord_create(&c, "127.0.0.1:0", RUN, SECRET, 1, NULL), STARLING_OK);
    starling_coord_stop(c);
    assert_int_equal(starling_coord_run(c), STARLING_OK);
    starling_coord_destroy(c);
    starling_coord_destroy(NULL);
}

/* Every allocation of create may fail: NOMEM, nothing leaked (ASan checks), and the
 * handle works once allocations succeed again. */
static void test_create_out_of_memory(void **state)
{
    int failed = 0;
    (void)state;
    for (long n = 1; n < 64; n++) {
        starling_coord *c = NULL;
        int r;
        starling__alloc_fail_after(n);
        r = starling_coord_create(&c, "127.0.0.1:0", RUN, SECRET, 1, NULL);
        starling__alloc_fail_after(0);
        if (r == STARLING_OK) {
            assert_non_null(c);
            starling_coord_destroy(c);
            break;
        }
        assert_int_equal(r, STARLING_E_NOMEM);
        assert_null(c);
        failed++;
    }
    assert_true(failed > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_first_epoch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_secret, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_run, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_death_is_resolved, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_report, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mismatch_never_commits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_peer_declared_dead, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unanswered_query, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leave_and_join, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_after_register, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reregistration_adopts_epoch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_member_and_stale_peers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnect_replaces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_measured_order, setup_measured, teardown),
        cmocka_unit_test_setup_teardown(test_links_to_self_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_arguments, setup, teardown),
        cmocka_unit_test(test_peer_limit),
        cmocka_unit_test(test_create_out_of_memory),
    };
    log_echo = getenv("STARLING_TEST_LOG") != NULL;
    starling_log_set_handler(capture, NULL);
    starling_log_set_level(STARLING_LOG_DEBUG);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
