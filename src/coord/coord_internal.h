/* The coordinator's insides, shared by the files of src/coord/.
 *
 * Two threads. The acceptor (coord_accept.c) accepts TCP connections and runs the blocking
 * handshake, then hands the authenticated socket over through a small locked queue. The
 * main loop (coord.c, on the thread that called starling_coord_run) owns everything
 * else: connections, membership, epochs and failure resolution, without locks.
 *
 * Deaths caused by a failed send are not handled where the send happens but recorded on
 * the connection (send_failed) and reaped by the main loop: so a send inside a loop over
 * members (TOPO, QUERY, DECIDE) never changes the member list under that loop's feet. */
#ifndef STARLING_COORD_INTERNAL_H
#define STARLING_COORD_INTERNAL_H
#include <poll.h>
#include <pthread.h>
#include <stdint.h>

#include "auth/handshake.h"
#include "auth/hspool.h"
#include "net/fconn.h"
#include "platform/net.h"
#include "platform/wake.h"
#include "proto/msg.h"
#include "starling.h"

#define STARLING_COORD_ACCEPT_QUEUE 256 /* authenticated sockets not yet taken by the loop */
#define STARLING_COORD_MAX_CONNS (STARLING_MAX_PEERS + STARLING_COORD_ACCEPT_QUEUE)
#define STARLING_COORD_DECISIONS 16 /* resolved epochs remembered for late askers */
#define STARLING_COORD_HANDSHAKE_MS 2000
#define STARLING_COORD_HANDSHAKES 64 /* concurrent handshakes; more are refused at once */

/* One control connection (after the handshake), registered or not yet. Heap-allocated so
 * its address stays put while the connection table is compacted. */
typedef struct starling__coord_conn {
    starling__fconn fc;
    uint64_t hello_id; /* the peer_id its (authenticated) HELLO claimed */
    int registered;
    int closing;     /* socket closed; freed at the end of the loop iteration */
    int send_failed; /* output could not be queued: dies when the loop reaps it */
    const char *send_why;
    int waiting; /* sent TOPO_REQ, waits for the next epoch */
    int watcher; /* a standby coordinator's connection (WATCH), not a peer's */
    uint64_t peer_id;
    char name[STARLING_NAME_MAX];
    char host[STARLING_ADDR_MAX];
    uint16_t port;
    uint32_t min_peers;
    uint64_t epoch;        /* the epoch it said it is in, or was last given (0: none) */
    uint64_t decide_epoch; /* owed the decision of this epoch once resolved (0: none) */
} starling__coord_conn;

typedef struct starling__coord_member {
    uint64_t id;
    int dead;    /* died in this epoch: excluded from the next one */
    int replied; /* resolution: STATUS received */
    uint64_t done_seq;
} starling__coord_member;

typedef struct starling__coord_decision {
    uint64_t epoch;
    uint64_t commit_seq;
    int32_t code;
} starling__coord_decision;

/* A link one member measured to another (MSG_LINKS). */
typedef struct starling__coord_link {
    uint64_t from, to;
    double bytes_per_s; /* 0: unusable */
    double rtt_s;
} starling__coord_link;

typedef struct starling__coord_pending {
    int fd;
    uint64_t peer_id;
    starling__seal seal; /* the connection's keys, from its handshake */
} starling__coord_pending;

struct starling_coord {
    /* Fixed at create; read by both threads. */
    int lfd;
    int port;
    starling__key key;
    uint64_t coord_id;
    int timeout_ms;
    int min_peers;
    starling__wake wake;        /* wakes the main loop (new connection, stop) */
    starling__wake accept_wake; /* wakes the acceptor (stop) */
    int stop;                   /* set by starling_coord_stop; accessed atomically */
    int running;                /* a starling_coord_run is active; accessed atomically */
    int npeers;                 /* registered peers after the last loop pass; atomically */

    /* Hand-over from the acceptor, under qlock. */
    pthread_mutex_t qlock;
    pthread_t acceptor;
    starling__hspool hs; /* handshakes in flight, each on its own thread */
    starling__coord_pending queue[STARLING_COORD_ACCEPT_QUEUE];
    int qlen;

    /* Main-loop state: touched by the main loop only. */
    starling__coord_conn **conns;
    int nconns;
    struct pollfd *pfds;           /* 1 + STARLING_COORD_MAX_CONNS */
    starling__coord_conn **polled; /* connection behind pfds[i + 1] */
    int64_t next_heartbeat_ms;
    int reap;  /* some connection has send_failed set */
    int dirty; /* something changed that may allow an epoch to form */

    /* The current epoch (0: none formed or adopted yet). */
    uint64_t epoch;
    starling__coord_member *members; /* STARLING_MAX_PEERS, ring order */
    uint32_t nmembers;
    int broken;                /* a member died or a collective failed in this epoch */
    int had_death;             /* a member of this epoch died */
    int64_t adopt_deadline_ms; /* adopted epoch: members must re-register by then (0: none) */

    /* Failure resolution of the current epoch. */
    int res_active;
    int64_t res_deadline_ms;
    int32_t res_code;        /* first FAIL code reported (0: none) */
    uint64_t res_commit_cap; /* a MISMATCH reported for op S: commit_seq <= S - 1 */
    starling__coord_decision decisions[STARLING_COORD_DECISIONS];
    int ndecisions, decision_next;

    /* Ring order (coord_order.c): the policy, and the links members measured. */
    int order;                  /* starling__ring_order */
    uint32_t probe_bytes;       /* asked of members whose links are not known */
    uint64_t probed_set;        /* the membership last asked to measure (a signature) */
    uint64_t ordered_set;       /* the membership last ordered from measurements */
    uint32_t probe_now;         /* the epoch being formed asks for measurements */
    starling__coord_link *links;
    int nlinks, links_cap;
    starling__msg_links *links_msg; /* decoding scratch */

    /* Failover (coord_failover.c). Epoch numbers carry the term in their high 32 bits. */
    uint32_t term;
    int standby; /* a standby not promoted yet: refuses peers */
    char active_host[STARLING_HOST_MAX];
    int active_port;
    starling__fconn watch; /* standby: its connection to the active */
    int watch_up;
    int64_t heard_ms;              /* standby: when the active was last heard */
    int64_t next_watch_ms;         /* standby: next connection attempt */
    int warned_unheard;            /* standby: logged that it never heard the active */
    int fenced;                    /* promoted, no epoch formed yet: needs a majority of `known` */
    starling__msg_state *known;    /* standby: the last STATE heard */
    starling__coord_conn *watcher; /* active: its standby's connection (NULL: none) */
    char standby_host[STARLING_HOST_MAX]; /* active: where its standby listens */
    int standby_port;                     /* (0: not known) */
    int replicated;                /* active: a standby has watched: forming needs its ack or a
                                      majority */
    uint64_t state_seq;            /* active: STATE frames sent on this standby connection */
    uint64_t acked_seq;            /* active: the last STATE the standby echoed */
    int64_t acked_stamp_ms;        /* active: when that STATE was sent */
    uint64_t prop_sig, prop_seq;   /* active: the proposed epoch, and the STATE carrying it */
    uint64_t prop_epoch;
    uint32_t nprop;
    uint64_t *prop_ids;         /* STARLING_MAX_PEERS */
    int64_t quorum_lost_ms;     /* active: since when it has neither standby nor majority (0) */
    starling__msg_state *state; /* encoding scratch */
    uint64_t *sort_a, *sort_b;  /* sorted id lists, STARLING_MAX_PEERS each (majorities) */

    /* Scratch for the single-threaded main loop. */
    uint8_t *buf; /* one encoded control frame */
    starling__msg_register *reg;
    starling__msg_topo *topo;
    uint64_t *ids;              /* STARLING_MAX_PEERS */
    uint32_t closed_left_out;   /* peers accepting no connections left out (last logged) */
    starling__coord_conn **who; /* STARLING_MAX_PEERS */
};

/* Atomic flag access (the stop flag is written from other threads and signal handlers). */
int starling__coord_stopped(starling_coord *c);

/* coord_accept.c */
int starling__coord_acceptor_start(starling_coord *c);
void starling__coord_acceptor_join(starling_coord *c);
/* Moves accepted sockets out of the queue; returns how many (at most max). */
int starling__coord_take_accepted(starling_coord *c, starling__coord_pending *out, int max);

/* coord_conn.c */
/* "name/0123456789abcdef" for logs. */
void starling__coord_label(const starling__coord_conn *p, char out[96]);
starling__coord_conn *starling__coord_find(starling_coord *c, uint64_t peer_id);
/* Queues an encoded frame; a failure marks the connection for death (reaped later). */
void starling__coord_send(starling_coord *c, starling__coord_conn *p, const uint8_t *frame, int n);
void starling__coord_send_epoch(starling_coord *c, starling__coord_conn *p, uint8_t type,
                                uint64_t epoch, uint64_t a, int32_t code);
/* Death of a connection: closes it, and if it was a member of the current epoch, breaks
 * the epoch. `reason` is logged. Idempotent. */
void starling__coord_lost(starling_coord *c, starling__coord_conn *p, const char *reason);
/* Refuses a registration: REJECT{code, reason} (best effort), then close. */
void starling__coord_reject(starling_coord *c, starling__coord_conn *p, int32_t code,
                            const char *reason);
/* Reads and handles every complete frame; a malformed one kills the connection. */
void starling__coord_on_readable(starling_coord *c, starling__coord_conn *p, int64_t now_ms);

/* coord_members.c */
/* qsort/bsearch comparator of u64 ids. */
int starling__coord_cmp_id(const void *a, const void *b);
int starling__coord_member_index(const starling_coord *c, uint64_t peer_id);
/* A member of the current epoch died (its connection, if any, is handled by the caller). */
void starling__coord_member_lost(starling_coord *c, int idx);
/* Handles a decoded REGISTER on a not-yet-registered connection. */
void starling__coord_on_register(starling_coord *c, starling__coord_conn *p,
                                 const starling__msg_register *reg, int64_t now_ms);
/* Adopted epoch: members that did not re-register in time are declared dead. */
void starling__coord_adopt_check(starling_coord *c, int64_t now_ms);
/* Forms the next epoch (or confirms the current one) if everyone needed is waiting. */
void starling__coord_check_formation(starling_coord *c);

/* coord_resolve.c */
/* Starts resolving the current epoch (broken from now on). `code` is a FAIL's code, or 0
 * when started by a death. */
void starling__coord_resolve_start(starling_coord *c, int32_t code);
void starling__coord_on_fail(starling_coord *c, starling__coord_conn *p,
                             const starling__msg_epoch *m);
void starling__coord_on_status(starling_coord *c, starling__coord_conn *p,
                               const starling__msg_epoch *m);
/* Finishes the resolution when every live member replied or the deadline passed. */
void starling__coord_resolve_check(starling_coord *c, int64_t now_ms);
const starling__coord_decision *starling__coord_decision_find(const starling_coord *c,
                                                              uint64_t epoch);
/* Sends the decision of `epoch` if remembered, else {epoch, 0, PEER_LOST}. */
void starling__coord_send_decision(starling_coord *c, starling__coord_conn *p, uint64_t epoch);
/* coord_failover.c (docs/architecture.md, "Coordinator failover") */
/* The number the next new epoch gets: the epoch after the current one in our term. */
uint64_t starling__coord_next_epoch(const starling_coord *c);
/* Whether the epoch of c->ids[0..n) may be formed now (it differs from the current one):
 * a promoted standby needs a majority of the epochs it heard of in it; an active with a standby
 * needs the standby's acknowledgement of it, or when out of contact, a majority of the current
 * epoch's members. May send the proposal. */
int starling__coord_may_form(starling_coord *c, uint32_t n);
/* A new epoch was formed: the fence is lifted, the standby told. */
void starling__coord_formed(starling_coord *c);
/* An active coordinator that lost both its standby and its majority refuses peers, which
 * then try the next coordinator they know (0: accept). */
int starling__coord_no_quorum(starling_coord *c, int64_t now_ms);
/* A WATCH frame on connection p. */
void starling__coord_on_watch(starling_coord *c, starling__coord_conn *p,
                              const starling__msg_epoch *m, int64_t now_ms);
/* Every timer tick: the active's STATE to its standby; the standby's watch and promotion. */
void starling__coord_failover_tick(starling_coord *c, int64_t now_ms, int beat);
/* Standby: its watch connection is readable. */
void starling__coord_watch_io(starling_coord *c, short revents, int64_t now_ms);
int starling__coord_failover_init(starling_coord *c, const char *standby_of);
void starling__coord_failover_free(starling_coord *c);

/* coord_order.c */
/* A member's measured links (MSG_LINKS): replaces what it reported before. */
int starling__coord_on_links(starling_coord *c, starling__coord_conn *p,
                             const starling__msg_links *m);
/* Orders c->ids[0..n) for the next epoch by the ring-order policy, and sets probe_now
 * when the members should measure their links. */
void starling__coord_order(starling_coord *c, uint32_t n);
/* coord_nat.c: peers that accept no inbound connections (port 0). fit_closed leaves the
 * surplus of c->ids[0..n) out (at most n/2 of them; the last ones first) and returns the
 * new n; spread_closed reorders c->ids[0..n) so that no two of them are neighbours. */
uint32_t starling__coord_fit_closed(starling_coord *c, uint32_t n);
void starling__coord_spread_closed(starling_coord *c, uint32_t n);
#endif
