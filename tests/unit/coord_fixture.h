/* The coordinator test fixture (coord_fixture.c), shared by test_coord.c and
 * test_failover.c: each test runs its own coordinator (127.0.0.1:0, timeout 500 ms) on a
 * thread; fake peers authenticate with the real handshake client and then send and
 * receive frames by hand. Every wait is bounded (WAIT_MS) and nothing asserts on time.
 * Set STARLING_TEST_LOG=1 to see the coordinator's log on stderr. */
#ifndef STARLING_TEST_COORD_FIXTURE_H
#define STARLING_TEST_COORD_FIXTURE_H
#include <pthread.h>
#include <stdint.h>

#include "auth/handshake.h"
#include "proto/msg.h"
#include "starling.h"

#define RUN "coord-test"
#define SECRET "correct horse battery staple"
#define TIMEOUT_MS 500
#define WAIT_MS 5000 /* bound on any single wait; far above what each step needs */

#define MAX_FAKE 16

/* A fake peer. Owned by the fixture, so the heartbeat thread never sees a dead object. */
typedef struct peer {
    int fd;
    int beat; /* the heartbeat thread keeps it alive */
    uint64_t id;
    char name[32];
    uint16_t port; /* its (pretend) data-plane port */
} peer;

typedef struct fixture {
    starling_coord *coord;
    pthread_t thread, beater;
    int port;
    int run_rc;
    /* Peers and every write to their sockets, under `lock`: the test thread writes frames,
     * the beater writes heartbeats (reads happen on the test thread only). */
    pthread_mutex_t lock;
    peer peers[MAX_FAKE];
    int npeers;
    int stop_beating;
} fixture;

extern fixture *cur; /* the running test's fixture (tests run one at a time) */
extern int log_echo; /* echo the coordinator's log (STARLING_TEST_LOG) */
/* Settings of the next fixture's coordinator (NULL: the default). */
extern const char *fixture_order, *fixture_security, *fixture_standby_of;
/* The last frame recv_frame read (payload), and the last TOPO expect_topo decoded. */
extern uint8_t rx[STARLING_FRAME_HDR + STARLING_CTRL_MAX];
extern starling__msg_topo last_topo;

/* The log handler: counts "refused connection" lines, echoes when log_echo is set. */
void capture(void *user, starling_log_level level, const char *msg);
int refused_count(void);

/* A thread body: starling_coord_run(f->coord), its result in f->run_rc. */
void *coord_thread(void *arg);
int setup(void **state);
int setup_measured(void **state); /* ring order "measured" */
int teardown(void **state);

int64_t deadline(void); /* now + WAIT_MS */
int dial(const fixture *f, int *fd);
/* Connects and authenticates as `id`; returns the handshake's result. */
int handshake(const fixture *f, const char *run, const char *secret, uint64_t id, int *fd_out);
void send_raw(int fd, const void *buf, int n);
void send_epoch(const peer *p, uint8_t type, uint64_t epoch, uint64_t a, uint64_t b, int32_t code);
/* Next frame that is not a heartbeat, into rx. */
void recv_frame(const peer *p, starling__frame_hdr *h);
void expect_epoch_msg(const peer *p, uint8_t type, uint64_t epoch, uint64_t a, int32_t code);
void expect_topo(const peer *p, uint64_t epoch, uint32_t rank, uint32_t n, const peer *const *ring);
/* The coordinator closes this socket (frames sent before the close are skipped). */
void expect_closed(int fd);
/* Authenticates and registers a new fake peer; checks the WELCOME. `members` != NULL:
 * re-registration as a member of `epoch`. */
peer *join_as(fixture *f, uint64_t id, const char *name, uint16_t port, uint32_t min_peers,
              uint64_t epoch, const uint64_t *members, uint32_t n);
peer *join(fixture *f, uint64_t id, const char *name, uint16_t port); /* min_peers 2 */
void hang_up(fixture *f, peer *p);
void go_silent(fixture *f, peer *p); /* the beater stops heartbeating it */
/* Two peers registered with min_peers 2 form epoch 1; ring order is by peer id. */
void form_two(fixture *f, peer **a, peer **b);
#endif
