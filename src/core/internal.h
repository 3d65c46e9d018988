/* Internals of the communicator: the handle, its engine, and the job queue between the
 * application thread and the engine thread. See docs/architecture.md for the picture. */
#ifndef STARLING_CORE_INTERNAL_H
#define STARLING_CORE_INTERNAL_H
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/handshake.h"
#include "codec/codec.h"
#include "net/fconn.h"
#include "net/shm.h"
#include "platform/net.h"
#include "platform/wake.h"
#include "proto/msg.h"
#include "starling.h"
#include "util/config.h"

#define STARLING_MAX_STREAMS 16
#define STARLING_PENDING_LINKS 64
#define STARLING_UNSENT_MAX (256 << 10) /* per ring stream, with several streams (links.c) */
#define STARLING_COORDS_MAX 8           /* coordinator addresses a peer may be given */
#define STARLING_GATHER_MAX (256u << 10) /* ring.c: all-reduces gathering <= this */
#define STARLING_SPIN_NS 50000 /* engine.c: spin before sleeping on shared-memory links */
#define STARLING_PROBES_SERVED 4 /* link probes answered at once (of 32 handshake threads) */

typedef enum job_kind { JOB_COLL = 1, JOB_TOPO = 2 } job_kind;

typedef enum coll_kind {
    COLL_ALLREDUCE = 1,
    COLL_REDUCE_SCATTER = 2,
    COLL_ALLGATHER = 3,
    COLL_BROADCAST = 4,
    COLL_ALLGATHERV = 5 /* internal: per-rank byte counts, used by state sync */
} coll_kind;

/* One unit of work for the engine. Shared by the application (which waits on it) and
 * the engine (which completes it); freed when both have dropped their reference. */
struct starling_request {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    int done;
    int result;
    char errmsg[256];

    job_kind job;
    coll_kind coll;
    const void *sendbuf;
    void *recvbuf;
    size_t count;
    starling_dtype dtype;
    starling_op op;
    int root;
    uint64_t tag;
    size_t *vcounts; /* ALLGATHERV: bytes per rank (owned), dtype is u8 */
    int vn;
    int has_codec; /* compress with `codec` (docs/codecs.md) */
    starling__codec codec;

    /* JOB_TOPO. In: an encoded LINKS frame sent before TOPO_REQ (owned), or NULL.
     * Out, when it succeeds: the probe size the coordinator asked for (0: none) and a
     * copy of the epoch's members (owned). */
    uint8_t *links_frame;
    size_t links_len;
    uint32_t probe_bytes;
    starling__member *members;
    int n, rank;
    uint64_t epoch;
    struct starling_request *next;
};

struct starling_callopts {
    uint64_t tag;
    int has_codec;
    starling__codec codec;
};

typedef struct pending_link {
    int fd;
    uint64_t peer_id, epoch;
    int stream, nstreams;
    int rev;             /* opened by this member's right neighbour (ROLE_DATA_REV) */
    starling__seal seal; /* its keys, from the handshake (none over shared memory) */
    starling__shm *shm;  /* a neighbour on this host: the link's ring, else NULL */
} pending_link;

typedef struct state_tensor {
    char name[64];
    void *data;
    size_t count;
    starling_dtype dtype;
} state_tensor;

struct ring_op; /* ring.h */

/* A thread that prepares compressed collectives (error-feedback sums, sparse selection,
 * sealing whole buffers) so the engine keeps servicing heartbeats and control messages
 * meanwhile: a long computation on the engine thread would look like a dead peer.
 * Made on first use by the engine (ring_codec.c); `mu` guards busy/rc/job/stop. */
typedef struct codec_worker {
    pthread_t thr;
    int started, stop, busy, rc;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct ring_op *job;
} codec_worker;

/* Error feedback: per tag, what compression dropped from this member's input. The engine
 * adds it to the next input and, at commit, replaces it by what that call dropped
 * (ring_codec.c). `next` is the working copy, so a failed call leaves `resid` alone. */
typedef struct ef_entry {
    uint64_t tag;
    size_t count;
    float *resid, *next;
} ef_entry;

/* A re-registration attempt on its own thread (ctrl.c). The engine starts it and reads
 * it once `done` is set; the thread writes only fd, seal, rc, why and done. */
typedef struct ctrl_dial {
    pthread_t thr;
    int active; /* a thread was started and not joined */
    int done;   /* set by the thread when finished; accessed atomically */
    int idx;    /* the coordinator it dials */
    int64_t deadline_ms;
    int fd, rc;
    starling__seal seal;
    char why[160];
    starling__msg_register *reg; /* what to register, filled by the engine */
} ctrl_dial;

/* Engine-thread-only state. */
typedef struct engine {
    starling__fconn ctrl;
    int ctrl_up;
    ctrl_dial dial;
    int64_t next_hb_ms, next_reconnect_ms;

    uint64_t epoch; /* 0: not a member yet */
    int rank, n;
    starling__member *members;
    int right[STARLING_MAX_STREAMS], nright;
    int left[STARLING_MAX_STREAMS], nleft;
    /* Per stream: the link's keys and frame counters (auth/seal.h). Right links only
     * seal, left links only open. */
    starling__seal rseal[STARLING_MAX_STREAMS], lseal[STARLING_MAX_STREAMS];
    /* Per stream, for a neighbour on this host: the ring the bytes go through instead of
     * the socket (which then carries only wake-ups), else NULL (links_shm.c). */
    starling__shm *rshm[STARLING_MAX_STREAMS], *lshm[STARLING_MAX_STREAMS];

    uint64_t seq;      /* last collective started in this epoch */
    uint64_t done_seq; /* highest seq whose data phase finished here */
    int broken;        /* the epoch can carry no more collectives */
    int broken_code;   /* what they fail with */
    int frozen;        /* answered a QUERY: wait for the DECIDE */
    int fail_sent;     /* reported a local failure of the current op */
    int fail_code;
    int64_t fail_deadline_ms;

    struct starling_request *cur;
    int64_t cur_deadline_ms;
    int topo_sent;
    int topo_applied; /* new epoch taken, waiting for the left neighbour's links */
    uint32_t probe_bytes; /* the new epoch's TOPO asked for link measurements */
    struct ring_op *op;

    uint8_t *scratch;
    size_t scratch_cap;
    uint8_t *tmp[STARLING_MAX_STREAMS];
    uint8_t *stx[STARLING_MAX_STREAMS]; /* sealed payloads out, on sealed links */
    size_t tmp_cap;

    /* Codecs (ring_codec.c): the encoded tensor or the gathered sparse blobs, and per
     * stream an encode buffer and the lossless stage's two buffers (tmp_cap bytes each). */
    uint8_t *enc;
    size_t enc_cap;
    uint8_t *cbuf[STARLING_MAX_STREAMS], *ztx[STARLING_MAX_STREAMS], *zrx[STARLING_MAX_STREAMS];
    starling__zstd *zstd;
    ef_entry *ef;
    int nef;
    codec_worker worker;
} engine;

struct starling_comm {
    struct starling_config cfg;
    starling__key key;
    uint64_t id;
    char name[64];
    /* The coordinators it was given, tried in turn (coord_cur: the one in use or next). */
    char coord_host[STARLING_COORDS_MAX][STARLING_HOST_MAX];
    int coord_port[STARLING_COORDS_MAX];
    int ncoords, coord_cur;
    char data_host[STARLING_HOST_MAX];
    int data_port;
    int listen_fd;

    pthread_t engine_thr, acceptor_thr;
    int threads_started;
    starling__wake wake, acc_wake;

    pthread_mutex_t mu; /* guards everything down to the engine */
    struct starling_request *qhead, *qtail;
    int stop;
    pending_link pend[STARLING_PENDING_LINKS];
    int npend;
    uint64_t pub_epoch;
    int pub_rank, pub_size;
    uint64_t *pub_ids; /* the members' ids in ring order (pub_size of them), or NULL */
    uint64_t bytes_sent;
    starling__link_est *links; /* this member's last measurements (nlinks of them) */
    int nlinks;
    int probes_serving; /* link probes being answered (probe.c) */

    /* Application thread only. */
    char errmsg[256];
    state_tensor *tensors;
    int ntensors;
    uint64_t step;

    engine eng;
};

/* comm.c */
void starling__comm_log_failure(starling_comm *c, int code, const char *fmt, ...);
int starling__submit(starling_comm *c, struct starling_request *r, starling_request **out);
struct starling_request *starling__request_new(job_kind job);
void starling__request_complete(struct starling_request *r, int result, const char *msg);
void starling__request_unref(struct starling_request *r);
int starling__request_wait_into(starling_comm *c, struct starling_request *r);

/* engine.c */
void *starling__engine_main(void *arg);
/* ctrl.c */
int starling__ctrl_send(starling_comm *c, uint8_t type, const starling__msg_epoch *m);
/* REGISTER and its WELCOME on a fresh control connection, through its seal. On success
 * the connection becomes the engine's control connection (ctrl, ctrl_up); on failure the
 * caller closes fd. The seal is wiped either way. */
int starling__ctrl_register(starling_comm *c, int fd, starling__seal *seal, int64_t deadline_ms,
                            char *why, size_t why_len);
/* Connects, authenticates and registers with coordinator c->coord_cur by `deadline_ms`;
 * on failure moves coord_cur on to the next one. Blocking: for starling_comm_create. */
int starling__ctrl_connect(starling_comm *c, int64_t deadline_ms, char *why, size_t why_len);
/* Engine thread: starts a re-registration with coordinator c->coord_cur on a dialing
 * thread (at most one at a time); _poll installs its connection once it is done (1: the
 * control connection is up again; 0: not done, or failed, and coord_cur moved on); _join
 * waits for one still running (when the engine stops). */
int starling__ctrl_dial_start(starling_comm *c);
int starling__ctrl_dial_poll(starling_comm *c);
void starling__ctrl_dial_join(starling_comm *c);

/* probe.c: link measurement (starling_measure_links). */
/* Measures this member's links to every other member of an epoch (rank `rank` of n),
 * `bytes` per probe, into est[0..n) (est[rank] is left zero), all by `deadline_ms`.
 * Per-link failures, and links left when the deadline passes, give a zero bandwidth,
 * never an error. Runs on the application's thread. */
void starling__probe_links(starling_comm *c, const starling__member *m, int n, int rank,
                           uint64_t epoch, uint32_t bytes, int64_t deadline_ms,
                           starling__link_est *est);
/* The receiving side of a probe, on the handshake thread that authenticated it. */
void starling__probe_serve(starling_comm *c, int fd, const starling__msg_hello *h,
                           starling__seal *seal);

/* links.c */
void *starling__acceptor_main(void *arg);
int starling__links_setup(starling_comm *c, const starling__msg_topo *t);
/* links_shm.c: after a data link's handshake, the two ends on one host move it to shared
 * memory (*out: its ring) or keep it on TCP (*out NULL). `sender`: this end writes. */
int starling__link_shm_dial(starling_comm *c, int fd, const starling__msg_hello *h,
                            starling__seal *seal, int sender, int64_t deadline,
                            starling__shm **out, char *why, size_t wl);
int starling__link_shm_accept(starling_comm *c, int fd, const starling__msg_hello *h,
                              starling__seal *seal, int sender, int64_t deadline,
                              starling__shm **out);
void starling__links_close(starling_comm *c);
/* Moves accepted links of the current epoch from the pending list; 1 when all present. */
int starling__links_adopt(starling_comm *c);

/* ring.c: start / progress / finish of a collective on the engine thread. */
int starling__ring_start(starling_comm *c, struct starling_request *r);
/* Does all I/O possible now. Returns 1 when the data phase and commit barrier are both
 * complete, 0 when it must wait, or a negative error (then the op is failed). Fills
 * `fds` with what to poll for (at most 2*STARLING_MAX_STREAMS entries). */
int starling__ring_progress(starling_comm *c, struct pollfd *fds, int *nfds);
int starling__ring_data_done(const starling_comm *c);
/* Whether every link the op waits on (fds from ring_progress) is a shared-memory one;
 * *moved: one of them can go on now. */
int starling__ring_shm_wait(const starling_comm *c, const struct pollfd *fds, int nfds,
                            int *moved);
/* Copies the result into the caller's buffer (commit). */
void starling__ring_commit(starling_comm *c);
void starling__ring_free(starling_comm *c);
uint64_t starling__ring_bytes(const starling_comm *c);
#endif
