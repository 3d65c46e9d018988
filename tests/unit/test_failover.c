/* Coordinator failover (src/coord/coord_failover.c), frame by frame: the test plays the
 * standby of a real active coordinator, or the active of a real standby, and the fake
 * peers of coord_fixture.h. What is checked is the order of events (no TOPO before the
 * standby's echo, no epoch without a majority), never how long anything takes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord_fixture.h"
#include "platform/clock.h"
#include "platform/net.h"

#define STANDBY_ID 0x5151

static starling__msg_state st;

/* Registers `id` as a newcomer on a fresh connection and expects a REJECT with `code`. */
static void expect_register_refused(fixture *f, uint64_t id, int32_t code, const char *reason)
{
    static starling__msg_register reg;
    uint8_t buf[STARLING_FRAME_HDR + 256];
    starling__frame_hdr h;
    starling__msg_reject rj;
    peer p;
    memset(&p, 0, sizeof p);
    strcpy(p.name, "refused");
    assert_int_equal(handshake(f, RUN, SECRET, id, &p.fd), STARLING_OK);
    memset(&reg, 0, sizeof reg);
    reg.peer_id = id;
    strcpy(reg.host, "127.0.0.1");
    reg.port = 7999;
    reg.min_peers = 1;
    send_raw(p.fd, buf, starling__register_encode(buf, sizeof buf, &reg));
    recv_frame(&p, &h);
    assert_int_equal(h.type, MSG_REJECT);
    assert_int_equal(starling__reject_decode(rx, h.len, &rj), STARLING_OK);
    assert_int_equal(rj.code, code);
    if (!strstr(rj.reason, reason))
        fail_msg("reject reason '%s' does not mention '%s'", rj.reason, reason);
    expect_closed(p.fd);
    starling__sock_close(p.fd);
}

/* ---------------------------------------------------------------- the test as standby */

/* Connects to the fixture's (active) coordinator as its standby, saying it listens on
 * `port` (0: not said), and reads the first STATE. */
static peer watch_at(fixture *f, int port)
{
    peer w;
    starling__frame_hdr h;
    memset(&w, 0, sizeof w);
    strcpy(w.name, "standby");
    assert_int_equal(handshake(f, RUN, SECRET, STANDBY_ID, &w.fd), STARLING_OK);
    send_epoch(&w, MSG_WATCH, 0, (uint64_t)port, 0, 0);
    recv_frame(&w, &h);
    assert_int_equal(h.type, MSG_STATE);
    assert_int_equal(starling__state_decode(rx, h.len, &st), STARLING_OK);
    assert_int_equal(st.seq, 1);
    return w;
}

static peer watch(fixture *f) { return watch_at(f, 0); }

static void next_state(const peer *w)
{
    starling__frame_hdr h;
    recv_frame(w, &h);
    assert_int_equal(h.type, MSG_STATE);
    assert_int_equal(starling__state_decode(rx, h.len, &st), STARLING_OK);
}

static void echo(const peer *w) { send_epoch(w, MSG_WATCH, st.seq, st.stamp, 0, 0); }

/* Reads STATEs (echoing each) until one proposes an epoch. */
static void until_proposal(const peer *w)
{
    for (int i = 0; i < 200 && !st.next_epoch; i++) {
        echo(w);
        next_state(w);
    }
    assert_true(st.next_epoch != 0);
}

/* Two newcomers (alpha 0x2000, beta 0x1000) wait for the first epoch, which the active
 * then proposes to the watching standby w (not yet echoed). */
static void two_proposed(fixture *f, const peer *w, peer **a, peer **b)
{
    *a = join(f, 0x2000, "alpha", 7001);
    *b = join(f, 0x1000, "beta", 7002);
    send_epoch(*a, MSG_TOPO_REQ, 0, 0, 0, 0);
    send_epoch(*b, MSG_TOPO_REQ, 0, 0, 0, 0);
    until_proposal(w);
}

/* Nothing (but heartbeats) is waiting on p's socket right now. */
static void expect_nothing_yet(const peer *p)
{
    for (;;) {
        struct pollfd pfd = {p->fd, POLLIN, 0};
        starling__frame_hdr h;
        if (poll(&pfd, 1, 50) == 0)
            return;
        assert_int_equal(starling__frame_recv(p->fd, NULL, &h, rx, sizeof rx, deadline()),
                         STARLING_OK);
        if (h.type != MSG_HEARTBEAT)
            fail_msg("peer %s: got frame type %u before the standby's echo", p->name, h.type);
    }
}

/* The next TOPO for p, answering QUERYs (done_seq 0) and skipping DECIDEs on the way; a
 * REJECT instead fails the test unless `rejected` is given, which then says so. */
static void next_topo(const peer *p, int *rejected)
{
    for (;;) {
        starling__frame_hdr h;
        starling__msg_epoch m;
        recv_frame(p, &h);
        if (h.type == MSG_TOPO) {
            assert_int_equal(starling__topo_decode(rx, h.len, &last_topo), STARLING_OK);
            return;
        }
        if (h.type == MSG_REJECT && rejected) {
            *rejected = 1;
            return;
        }
        if (h.type != MSG_QUERY && h.type != MSG_DECIDE)
            fail_msg("peer %s: unexpected frame type %u", p->name, h.type);
        assert_int_equal(starling__epoch_decode(h.type, rx, h.len, &m), STARLING_OK);
        if (h.type == MSG_QUERY)
            send_epoch(p, MSG_STATUS, m.epoch, 0, 0, 0);
    }
}

/* A death broke `epoch`: each live peer answers its QUERY (done_seq 0) and gets the
 * DECIDE. */
static void resolve(peer *const *live, int n, uint64_t epoch)
{
    for (int i = 0; i < n; i++) {
        expect_epoch_msg(live[i], MSG_QUERY, epoch, 0, 0);
        send_epoch(live[i], MSG_STATUS, epoch, 0, 0, 0);
    }
    for (int i = 0; i < n; i++)
        expect_epoch_msg(live[i], MSG_DECIDE, epoch, 0, STARLING_E_PEER_LOST);
}

/* With a standby watching, the next epoch is proposed to it first and formed only after
 * its echo of that proposal. */
static void test_epoch_waits_for_the_standby(void **state)
{
    fixture *f = *state;
    peer w = watch(f), *a, *b;
    assert_true(st.epoch == 0 && st.n == 0 && st.next_epoch == 0);
    echo(&w);
    two_proposed(f, &w, &a, &b);
    assert_true(st.next_epoch == 1);
    assert_int_equal(st.nnext, 2);
    assert_true(st.next_ids[0] == 0x1000 && st.next_ids[1] == 0x2000);
    expect_nothing_yet(a);
    expect_nothing_yet(b);
    echo(&w);
    {
        const peer *ring[2] = {b, a};
        expect_topo(a, 1, 1, 2, ring);
        expect_topo(b, 1, 0, 2, ring);
    }
    /* The standby hears the formed epoch next. */
    for (int i = 0; i < 200 && st.epoch != 1; i++) {
        next_state(&w);
        echo(&w);
    }
    assert_true(st.epoch == 1 && st.n == 2 && st.next_epoch == 0);
    starling__sock_close(w.fd);
}

/* Out of contact with its standby, the active forms an epoch only with a majority of the
 * current one: 2 of 3 survivors do, 1 of 2 does not, and after a timeout without quorum
 * the waiting peer and newcomers are sent to their other coordinators. */
static void test_out_of_contact_needs_a_majority(void **state)
{
    fixture *f = *state;
    peer w = watch(f), *a, *b, *c;
    int rejected = 0;
    echo(&w);
    a = join_as(f, 0x1000, "a", 7001, 3, 0, NULL, 0);
    b = join_as(f, 0x2000, "b", 7002, 3, 0, NULL, 0);
    c = join_as(f, 0x3000, "c", 7003, 3, 0, NULL, 0);
    for (int i = 0; i < 3; i++)
        send_epoch(&f->peers[i], MSG_TOPO_REQ, 0, 0, 0, 0);
    until_proposal(&w);
    echo(&w);
    next_topo(a, NULL);
    assert_true(last_topo.epoch == 1 && last_topo.n == 3);
    next_topo(b, NULL);
    next_topo(c, NULL);
    /* The standby falls silent (the active drops it), then c dies: a and b are 2 of 3. */
    starling__sock_close(w.fd);
    hang_up(f, c);
    {
        peer *const live[2] = {a, b};
        resolve(live, 2, 1);
    }
    send_epoch(a, MSG_TOPO_REQ, 1, 0, 0, 0);
    send_epoch(b, MSG_TOPO_REQ, 1, 0, 0, 0);
    next_topo(a, NULL);
    assert_true(last_topo.epoch == 2 && last_topo.n == 2);
    next_topo(b, NULL);
    /* b dies: a alone is 1 of 2, no majority. It gets no epoch; once the quorum has been
     * lost for a timeout it is refused, and so is a newcomer. */
    hang_up(f, b);
    resolve(&a, 1, 2);
    send_epoch(a, MSG_TOPO_REQ, 2, 0, 0, 0);
    next_topo(a, &rejected);
    assert_true(rejected);
    expect_closed(a->fd);
    expect_register_refused(f, 0x4000, STARLING_E_BUSY, "quorum");
}

/* ---------------------------------------------------------------- the test as active */

typedef struct fake_active {
    int lfd, fd;
    int port;
    char addr[32];
} fake_active;

static void active_listen(fake_active *fa)
{
    memset(fa, 0, sizeof *fa);
    fa->fd = -1;
    assert_int_equal(starling__tcp_listen("127.0.0.1", 0, 0, &fa->lfd, &fa->port, NULL, 0),
                     STARLING_OK);
    snprintf(fa->addr, sizeof fa->addr, "127.0.0.1:%d", fa->port);
}

/* Accepts the standby's connection, runs the server handshake, reads its first WATCH. */
static void active_accept(fake_active *fa)
{
    starling__key key;
    starling__msg_hello hello;
    starling__seal seal;
    starling__frame_hdr h;
    starling__msg_epoch m;
    struct pollfd pfd = {fa->lfd, POLLIN, 0};
    assert_true(poll(&pfd, 1, WAIT_MS) == 1);
    assert_int_equal(starling__tcp_accept(fa->lfd, &fa->fd), STARLING_OK);
    assert_int_equal(starling__key_derive(&key, RUN, SECRET, strlen(SECRET)), STARLING_OK);
    key.security = STARLING_SEC_NONE;
    assert_int_equal(starling__handshake_server(fa->fd, &key, &hello, &seal, deadline(), NULL, 0),
                     STARLING_OK);
    assert_int_equal(hello.role, ROLE_CONTROL);
    assert_int_equal(starling__frame_recv(fa->fd, NULL, &h, rx, sizeof rx, deadline()),
                     STARLING_OK);
    assert_int_equal(h.type, MSG_WATCH);
    assert_int_equal(starling__epoch_decode(MSG_WATCH, rx, h.len, &m), STARLING_OK);
    assert_true(m.epoch == 0 && m.a > 0 && m.a <= 65535); /* {0, where the watcher listens} */
}

/* Sends STATE {epoch 5: 0x1000 0x2000 0x3000} and reads its echo. */
static void active_state(fake_active *fa, uint64_t seq)
{
    uint8_t buf[STARLING_FRAME_HDR + 128];
    starling__frame_hdr h;
    starling__msg_epoch m;
    memset(&st, 0, sizeof st);
    st.seq = seq;
    st.stamp = 1000 + seq;
    st.epoch = 5;
    st.n = 3;
    st.ids[0] = 0x1000, st.ids[1] = 0x2000, st.ids[2] = 0x3000;
    send_raw(fa->fd, buf, starling__state_encode(buf, sizeof buf, &st));
    assert_int_equal(starling__frame_recv(fa->fd, NULL, &h, rx, sizeof rx, deadline()),
                     STARLING_OK);
    assert_int_equal(h.type, MSG_WATCH);
    assert_int_equal(starling__epoch_decode(MSG_WATCH, rx, h.len, &m), STARLING_OK);
    assert_true(m.epoch == seq && m.a == 1000 + seq);
}

static fake_active the_active;

static int setup_standby(void **state)
{
    int r;
    active_listen(&the_active);
    fixture_standby_of = the_active.addr;
    r = setup(state);
    fixture_standby_of = NULL;
    return r;
}

static int teardown_standby(void **state)
{
    int r = teardown(state);
    starling__sock_close(the_active.fd);
    starling__sock_close(the_active.lfd);
    return r;
}

/* While it hears the active, a standby refuses peers; after a timeout of silence it is
 * promoted, admits them, and forms its first epoch only once a majority of the epoch it
 * heard of (5: 0x1000 0x2000 0x3000) has registered, numbered in a new term. */
static void test_standby_takes_over_with_a_majority(void **state)
{
    fixture *f = *state;
    const uint64_t members[3] = {0x1000, 0x2000, 0x3000};
    peer *a, *b;
    int64_t until;

    active_accept(&the_active);
    active_state(&the_active, 1);
    expect_register_refused(f, 0x1000, STARLING_E_BUSY, "standby");
    /* Keep talking while the standby refuses again, then fall silent. */
    active_state(&the_active, 2);
    expect_register_refused(f, 0x1000, STARLING_E_BUSY, "alive");
    /* Silent from here: promotion comes a timeout later. Until then it refuses. */
    until = starling__now_ms() + WAIT_MS;
    for (;;) {
        static starling__msg_register reg;
        uint8_t buf[STARLING_FRAME_HDR + 256];
        starling__frame_hdr h;
        peer p;
        memset(&p, 0, sizeof p);
        assert_true(starling__now_ms() < until);
        assert_int_equal(handshake(f, RUN, SECRET, 0x1000, &p.fd), STARLING_OK);
        memset(&reg, 0, sizeof reg);
        reg.peer_id = 0x1000;
        strcpy(reg.host, "127.0.0.1");
        reg.port = 7001;
        reg.min_peers = 1;
        reg.epoch = 5;
        reg.nmembers = 3;
        memcpy(reg.members, members, sizeof members);
        send_raw(p.fd, buf, starling__register_encode(buf, sizeof buf, &reg));
        recv_frame(&p, &h);
        starling__sock_close(p.fd);
        if (h.type == MSG_WELCOME)
            break;
        assert_int_equal(h.type, MSG_REJECT);
        starling__sleep_ms(TIMEOUT_MS / 5);
    }
    /* Promoted (that probe registered and left). 0x1000 alone is 1 of 3: it waits past the
     * adoption deadline, which declares the others dead, and gets no epoch of one. */
    a = join_as(f, 0x1000, "a", 7001, 1, 5, members, 3);
    send_epoch(a, MSG_TOPO_REQ, 5, 0, 0, 0);
    starling__sleep_ms(2 * TIMEOUT_MS); /* ordering only: the adoption deadline passes */
    /* 0x2000 makes 2 of 3: the first epoch of term 1 forms with both. */
    b = join_as(f, 0x2000, "b", 7002, 1, 5, members, 3);
    send_epoch(b, MSG_TOPO_REQ, 5, 0, 0, 0);
    next_topo(a, NULL);
    assert_true(last_topo.epoch == (1ull << 32) + 1);
    assert_int_equal(last_topo.n, 2);
    next_topo(b, NULL);
    assert_true(last_topo.epoch == (1ull << 32) + 1);
}

static int setup_with_listener(void **state)
{
    active_listen(&the_active); /* plays the standby that took over */
    return setup(state);
}

/* An active that lost its standby and then its majority probes the standby's address (the
 * port its first WATCH gave); when that answers as an active with a STATE, it becomes its
 * standby and sends its peers away. */
static void test_deposed_active_becomes_standby(void **state)
{
    fixture *f = *state;
    peer w = watch_at(f, the_active.port), *a, *b;
    echo(&w);
    two_proposed(f, &w, &a, &b);
    echo(&w);
    next_topo(a, NULL);
    next_topo(b, NULL);
    /* The standby goes (to take over), and so do both members. */
    starling__sock_close(w.fd);
    hang_up(f, a);
    hang_up(f, b);
    /* Without quorum for a timeout, the active dials the standby's port... */
    active_accept(&the_active);
    /* ...which answers as an active: the old one is now its standby and refuses peers. */
    active_state(&the_active, 1);
    expect_register_refused(f, 0x3000, STARLING_E_BUSY, "standby");
}

/* A standby that has never heard the active does not take over, however long the silence:
 * started before it, or cut off from the start, it could run beside an active it never
 * knew. */
static void test_unheard_standby_stays_standby(void **state)
{
    fixture *f = *state;
    starling__sleep_ms(3 * TIMEOUT_MS); /* ordering only: well past the timeout */
    expect_register_refused(f, 0x1000, STARLING_E_BUSY, "standby");
}

/* Bad standby addresses are refused when set. */
static void test_standby_of_refusals(void **state)
{
    starling_config *cfg;
    (void)state;
    assert_int_equal(starling_config_create(&cfg), STARLING_OK);
    assert_int_equal(starling_config_set_standby_of(cfg, "127.0.0.1:7000"), STARLING_OK);
    assert_int_equal(starling_config_set_standby_of(cfg, "[::1]:7000"), STARLING_OK);
    assert_int_equal(starling_config_set_standby_of(cfg, ""), STARLING_OK);
    assert_int_equal(starling_config_set_standby_of(cfg, NULL), STARLING_OK);
    assert_int_equal(starling_config_set_standby_of(cfg, "127.0.0.1:0"), STARLING_E_INVALID);
    assert_int_equal(starling_config_set_standby_of(cfg, "0.0.0.0:7000"), STARLING_E_INVALID);
    assert_int_equal(starling_config_set_standby_of(cfg, "no-port"), STARLING_E_INVALID);
    assert_int_equal(starling_config_set_standby_of(cfg, "a:1,b:2"), STARLING_E_INVALID);
    assert_int_equal(starling_config_set_standby_of(NULL, "127.0.0.1:7000"), STARLING_E_INVALID);
    starling_config_destroy(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_epoch_waits_for_the_standby, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_contact_needs_a_majority, setup, teardown),
        cmocka_unit_test_setup_teardown(test_standby_takes_over_with_a_majority, setup_standby,
                                        teardown_standby),
        cmocka_unit_test_setup_teardown(test_deposed_active_becomes_standby, setup_with_listener,
                                        teardown_standby),
        cmocka_unit_test_setup_teardown(test_unheard_standby_stays_standby, setup_standby,
                                        teardown_standby),
        cmocka_unit_test(test_standby_of_refusals),
    };
    log_echo = getenv("STARLING_TEST_LOG") != NULL;
    starling_log_set_handler(capture, NULL);
    starling_log_set_level(STARLING_LOG_DEBUG);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
