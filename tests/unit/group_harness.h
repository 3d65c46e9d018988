/* A whole group in one process, for tests: a coordinator thread and N peer threads on
 * loopback, each peer with its own communicator (and so its own engine and sockets).
 * A test gives a body run by every peer once it is a member; checks inside bodies use
 * CHECK, which records the first failure of that peer for run_group to report. */
#ifndef STARLING_TESTS_GROUP_HARNESS_H
#define STARLING_TESTS_GROUP_HARNESS_H
#include <stdio.h>

#include "starling.h"

#define MAXP 8

/* Streams per ring link for the next group (default 1). */
extern int g_streams;
/* The coordinator's ring order for the next group (NULL: the default). Peers are named
 * "p<idx>". */
extern const char *g_ring_order;
/* Security mode of the next group's coordinator and peers (NULL: the default, "aead"). */
extern const char *g_security;

typedef struct group group;

typedef struct peer_arg {
    group *g;
    int idx;
    int fail; /* set by the peer thread on a failed check */
    char why[256];
    void (*body)(struct peer_arg *, starling_comm *);
    void *user; /* the test's own data, shared by all peers of the group */
    char hash[33];
} peer_arg;

#define CHECK(pa, cond, ...)                                                               \
    do {                                                                                   \
        if (!(cond) && !(pa)->fail) {                                                      \
            (pa)->fail = 1;                                                                \
            snprintf((pa)->why, sizeof (pa)->why, __VA_ARGS__);                            \
        }                                                                                  \
    } while (0)

/* Runs `body` on n peers (chunk 4 KiB, so buffers make many pieces); fails the cmocka test
 * with the first peer's message. `out` (may be NULL) receives every peer's peer_arg. */
void run_group(int n, void (*body)(peer_arg *, starling_comm *), peer_arg *out);
/* Same, with `user` handed to every peer. */
void run_group_with(int n, void (*body)(peer_arg *, starling_comm *), void *user,
                    peer_arg *out);
#endif
