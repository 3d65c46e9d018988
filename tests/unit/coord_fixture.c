/* The coordinator test fixture: a real coordinator on a thread and fake peers that speak
 * raw frames over real sockets (test_coord.c, test_failover.c). See coord_fixture.h. */
#include "coord_fixture.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "platform/clock.h"
#include "platform/net.h"
#include "util/alloc.h"

/* ---------------------------------------------------------------- log capture */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_refused; /* "refused connection" lines seen */
int log_echo;

void capture(void *user, starling_log_level level, const char *msg)
{
    (void)user;
    pthread_mutex_lock(&log_lock);
    if (strstr(msg, "refused connection"))
        log_refused++;
    if (log_echo)
        fprintf(stderr, "  [coord %d] %s\n", (int)level, msg);
    pthread_mutex_unlock(&log_lock);
}

int refused_count(void)
{
    int n;
    pthread_mutex_lock(&log_lock);
    n = log_refused;
    pthread_mutex_unlock(&log_lock);
    return n;
}

/* ---------------------------------------------------------------- fixture */

fixture *cur; /* the running test's fixture (tests run one at a time) */

void *coord_thread(void *arg)
{
    fixture *f = arg;
    f->run_rc = starling_coord_run(f->coord);
    return NULL;
}

/* A real peer's engine heartbeats on its own; so does this thread for the fake ones, so
 * that a test may block on one peer without the others being declared dead. */
static void *beater_thread(void *arg)
{
    fixture *f = arg;
    uint8_t hb[STARLING_FRAME_HDR];
    starling__frame_hdr_encode(hb, MSG_HEARTBEAT, 0);
    for (;;) {
        pthread_mutex_lock(&f->lock);
        if (f->stop_beating) {
            pthread_mutex_unlock(&f->lock);
            return NULL;
        }
        for (int i = 0; i < f->npeers; i++)
            if (f->peers[i].beat && f->peers[i].fd >= 0)
                starling__sock_send_all(f->peers[i].fd, hb, sizeof hb, starling__now_ms() + 100);
        pthread_mutex_unlock(&f->lock);
        starling__sleep_ms(TIMEOUT_MS / 10);
    }
}

const char *fixture_order;             /* ring order of the next fixture's coordinator */
const char *fixture_security = "none"; /* and its security mode */
const char *fixture_standby_of;        /* and the active it is the standby of (NULL: none) */

int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    starling_config *cfg;
    assert_non_null(f);
    pthread_mutex_init(&f->lock, NULL);
    assert_int_equal(starling_config_create(&cfg), STARLING_OK);
    assert_int_equal(starling_config_set_timeout_ms(cfg, TIMEOUT_MS), STARLING_OK);
    /* The fake peers speak clear frames; test_sealed_register covers the sealed ones. */
    assert_int_equal(starling_config_set_security(cfg, fixture_security), STARLING_OK);
    if (fixture_order)
        assert_int_equal(starling_config_set_ring_order(cfg, fixture_order), STARLING_OK);
    if (fixture_standby_of)
        assert_int_equal(starling_config_set_standby_of(cfg, fixture_standby_of), STARLING_OK);
    assert_int_equal(
        starling_coord_create(&f->coord, "127.0.0.1:0", RUN, SECRET, strlen(SECRET), cfg),
        STARLING_OK);
    starling_config_destroy(cfg);
    f->port = starling_coord_port(f->coord);
    assert_true(f->port > 0);
    f->run_rc = 1;
    assert_int_equal(pthread_create(&f->thread, NULL, coord_thread, f), 0);
    assert_int_equal(pthread_create(&f->beater, NULL, beater_thread, f), 0);
    cur = f;
    *state = f;
    return 0;
}

int setup_measured(void **state)
{
    int r;
    fixture_order = "measured";
    r = setup(state);
    fixture_order = NULL;
    return r;
}

int teardown(void **state)
{
    fixture *f = *state;
    cur = NULL;
    pthread_mutex_lock(&f->lock);
    f->stop_beating = 1;
    pthread_mutex_unlock(&f->lock);
    pthread_join(f->beater, NULL);
    starling_coord_stop(f->coord);
    pthread_join(f->thread, NULL);
    assert_int_equal(f->run_rc, STARLING_OK);
    starling_coord_destroy(f->coord);
    for (int i = 0; i < f->npeers; i++)
        starling__sock_close(f->peers[i].fd);
    pthread_mutex_destroy(&f->lock);
    free(f);
    return 0;
}

/* ---------------------------------------------------------------- fake peers */

uint8_t rx[STARLING_FRAME_HDR + STARLING_CTRL_MAX];

int64_t deadline(void) { return starling__now_ms() + WAIT_MS; }

int dial(const fixture *f, int *fd)
{
    return starling__tcp_connect("127.0.0.1", f->port, 0, WAIT_MS, fd, NULL, 0);
}

/* Connects and authenticates as `id`; returns the handshake's result. */
int handshake(const fixture *f, const char *run, const char *secret, uint64_t id, int *fd_out)
{
    starling__key key;
    starling__msg_hello hello;
    int fd, r;
    starling__seal seal;
    assert_int_equal(starling__key_derive(&key, run, secret, strlen(secret)), STARLING_OK);
    key.security = STARLING_SEC_NONE;
    assert_int_equal(dial(f, &fd), STARLING_OK);
    memset(&hello, 0, sizeof hello);
    hello.role = ROLE_CONTROL;
    hello.peer_id = id;
    r = starling__handshake_client(fd, &key, &hello, &seal, deadline(), NULL, 0);
    assert_true(r != STARLING_OK || seal.suite == SUITE_NONE);
    if (r) {
        starling__sock_close(fd);
        fd = -1;
    }
    *fd_out = fd;
    return r;
}

void send_raw(int fd, const void *buf, int n)
{
    int r;
    assert_true(n > 0);
    if (cur)
        pthread_mutex_lock(&cur->lock);
    r = starling__sock_send_all(fd, buf, (size_t)n, deadline());
    if (cur)
        pthread_mutex_unlock(&cur->lock);
    assert_int_equal(r, STARLING_OK);
}

void send_epoch(const peer *p, uint8_t type, uint64_t epoch, uint64_t a, uint64_t b, int32_t code)
{
    uint8_t buf[64];
    starling__msg_epoch m;
    memset(&m, 0, sizeof m);
    m.epoch = epoch;
    m.a = a;
    m.b = b;
    m.code = code;
    send_raw(p->fd, buf, starling__epoch_encode(buf, sizeof buf, type, &m));
}

/* Next frame that is not a heartbeat. */
void recv_frame(const peer *p, starling__frame_hdr *h)
{
    for (;;) {
        int r = starling__frame_recv(p->fd, NULL, h, rx, sizeof rx, deadline());
        if (r)
            fail_msg("peer %s: no frame (%s)", p->name, starling_strerror(r));
        if (h->type != MSG_HEARTBEAT)
            return;
        assert_int_equal(h->len, 0);
    }
}

void expect_epoch_msg(const peer *p, uint8_t type, uint64_t epoch, uint64_t a, int32_t code)
{
    starling__frame_hdr h;
    starling__msg_epoch m;
    recv_frame(p, &h);
    if (h.type != type)
        fail_msg("peer %s: expected frame type %u, got %u", p->name, type, h.type);
    assert_int_equal(starling__epoch_decode(type, rx, h.len, &m), STARLING_OK);
    assert_int_equal(m.epoch, epoch);
    assert_int_equal(m.a, a);
    assert_int_equal(m.code, code);
}

starling__msg_topo last_topo; /* the last TOPO expect_topo received */

void expect_topo(const peer *p, uint64_t epoch, uint32_t rank, uint32_t n, const peer *const *ring)
{
    starling__frame_hdr h;
    recv_frame(p, &h);
    if (h.type != MSG_TOPO)
        fail_msg("peer %s: expected a topo, got frame type %u", p->name, h.type);
    assert_int_equal(starling__topo_decode(rx, h.len, &last_topo), STARLING_OK);
    assert_int_equal(last_topo.epoch, epoch);
    assert_int_equal(last_topo.rank, rank);
    assert_int_equal(last_topo.n, n);
    for (uint32_t i = 0; i < n; i++) {
        assert_int_equal(last_topo.members[i].id, ring[i]->id);
        assert_string_equal(last_topo.members[i].host, "127.0.0.1");
        assert_int_equal(last_topo.members[i].port, ring[i]->port);
    }
}

/* The coordinator closes this socket (frames sent before the close are skipped). */
void expect_closed(int fd)
{
    int64_t dl = deadline();
    for (;;) {
        uint8_t buf[256];
        struct pollfd pfd = {fd, POLLIN, 0};
        ssize_t r = starling__sock_recv(fd, buf, sizeof buf);
        if (r < 0)
            return; /* EOF or reset */
        if (r > 0)
            continue;
        if (poll(&pfd, 1, starling__ms_until(dl)) == 0)
            fail_msg("the coordinator did not close the connection");
    }
}

/* Authenticates and registers a new fake peer; checks the WELCOME. `members` != NULL:
 * re-registration as a member of `epoch`. */
peer *join_as(fixture *f, uint64_t id, const char *name, uint16_t port, uint32_t min_peers,
              uint64_t epoch, const uint64_t *members, uint32_t n)
{
    static starling__msg_register reg;
    starling__frame_hdr h;
    starling__msg_welcome w;
    uint8_t buf[STARLING_FRAME_HDR + 8192];
    peer *p;
    int fd;

    assert_true(f->npeers < MAX_FAKE);
    assert_int_equal(handshake(f, RUN, SECRET, id, &fd), STARLING_OK);
    pthread_mutex_lock(&f->lock);
    p = &f->peers[f->npeers++];
    p->fd = fd;
    p->id = id;
    p->port = port;
    snprintf(p->name, sizeof p->name, "%s", name);
    pthread_mutex_unlock(&f->lock);

    memset(&reg, 0, sizeof reg);
    reg.peer_id = id;
    snprintf(reg.name, sizeof reg.name, "%s", name);
    strcpy(reg.host, "127.0.0.1");
    reg.port = port;
    reg.min_peers = min_peers;
    reg.epoch = epoch;
    reg.nmembers = n;
    if (n)
        memcpy(reg.members, members, n * sizeof *members);
    send_raw(p->fd, buf, starling__register_encode(buf, sizeof buf, &reg));
    recv_frame(p, &h);
    assert_int_equal(h.type, MSG_WELCOME);
    assert_int_equal(starling__welcome_decode(rx, h.len, &w), STARLING_OK);
    assert_true(w.coord_id != 0);
    assert_int_equal(w.timeout_ms, TIMEOUT_MS);
    pthread_mutex_lock(&f->lock);
    p->beat = 1;
    pthread_mutex_unlock(&f->lock);
    return p;
}

peer *join(fixture *f, uint64_t id, const char *name, uint16_t port)
{
    return join_as(f, id, name, port, 2, 0, NULL, 0);
}

void hang_up(fixture *f, peer *p)
{
    pthread_mutex_lock(&f->lock);
    starling__sock_close(p->fd);
    p->fd = -1;
    pthread_mutex_unlock(&f->lock);
}

void go_silent(fixture *f, peer *p)
{
    pthread_mutex_lock(&f->lock);
    p->beat = 0;
    pthread_mutex_unlock(&f->lock);
}

/* Two peers registered with min_peers 2 form epoch 1; ring order is by peer id. */
void form_two(fixture *f, peer **a, peer **b)
{
    const peer *ring[2];
    *a = join(f, 0x2000, "alpha", 7001);
    *b = join(f, 0x1000, "beta", 7002);
    ring[0] = *b;
    ring[1] = *a;
    send_epoch(*a, MSG_TOPO_REQ, 0, 0, 0, 0);
    send_epoch(*b, MSG_TOPO_REQ, 0, 0, 0, 0);
    expect_topo(*a, 1, 1, 2, ring);
    expect_topo(*b, 1, 0, 2, ring);
}
