/*
 * starling.h -- the public API of libstarling.
 *
 * starling trains one model on many machines joined by ordinary, unreliable networks.
 * This header is the manual: every function states its return codes, who owns what,
 * whether it blocks, and from which threads it may be called.
 *
 * Conventions
 *  - Every function that can fail returns an int: STARLING_OK (0) or a negative
 *    starling_error code. starling_strerror() names a code; starling_comm_errmsg()
 *    gives the detail of the last failure on a communicator (which peer, which limit).
 *  - Handles are opaque, made by *_create and released by *_destroy; destroy accepts NULL.
 *  - The caller keeps ownership of everything it passes, unless a function says otherwise.
 *    A failed call never transfers ownership.
 *  - The library never exits the process, never prints, and never calls back into the
 *    application from its own threads (except the log handler, see below).
 *
 * Thread rule
 *  - A starling_comm is used by one application thread at a time (the "owner"): calls on
 *    the same communicator must not overlap. Different communicators are independent.
 *  - Inside, each communicator runs one engine thread that does all network I/O
 *    (heartbeats, data plane). Collectives are executed by that thread, in the order the
 *    application issued them.
 *  - starling_config and starling_callopts are plain values: not thread-safe, but they may
 *    be destroyed as soon as the call that used them returns.
 */
#ifndef STARLING_H
#define STARLING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(STARLING_BUILDING) && defined(__GNUC__)
#define STARLING_API __attribute__((visibility("default")))
#else
#define STARLING_API
#endif

/* ---------------------------------------------------------------- version */

#define STARLING_VERSION_MAJOR 0
#define STARLING_VERSION_MINOR 1
#define STARLING_VERSION_PATCH 0
#define STARLING_VERSION_NUMBER                                                        \
    (STARLING_VERSION_MAJOR * 10000 + STARLING_VERSION_MINOR * 100 + STARLING_VERSION_PATCH)
#define STARLING_VERSION_STRING "0.1.0"

/* Version of the wire protocol spoken between peers and coordinator. A peer whose
 * protocol version differs from the coordinator's is refused with STARLING_E_VERSION. */
#define STARLING_PROTOCOL_VERSION 6

/* Returns STARLING_VERSION_NUMBER of the library actually linked. */
STARLING_API unsigned starling_version(void);
STARLING_API const char *starling_version_string(void);

/* ---------------------------------------------------------------- errors */

/* Stable list: values are never renumbered, new codes are appended. */
typedef enum starling_error {
    STARLING_OK = 0,
    STARLING_E_INVALID = -1,      /* bad argument (NULL handle, unknown enum, count overflow) */
    STARLING_E_NOMEM = -2,        /* allocation failed */
    STARLING_E_OS = -3,           /* an operating-system call failed; errmsg has errno text */
    STARLING_E_TIMEOUT = -4,      /* the call's deadline passed */
    STARLING_E_PEER_LOST = -5,    /* a member of the epoch died, froze or was cut off; the
                                     collective was aborted on every survivor, input
                                     buffers are unchanged; call starling_update_topology */
    STARLING_E_MISMATCH = -6,     /* peers disagree on a collective (count, dtype, op, kind,
                                     tag) or on the shared-state layout */
    STARLING_E_PROTOCOL = -7,     /* malformed frame received */
    STARLING_E_AUTH = -8,         /* the other side does not know the run's secret, or
                                     the two sides' security modes do not agree */
    STARLING_E_VERSION = -9,      /* protocol version differs from the other side's */
    STARLING_E_STATE = -10,       /* handle used in the wrong state (e.g. a collective
                                     before the first starling_update_topology) */
    STARLING_E_CLOSED = -11,      /* the communicator was closed */
    STARLING_E_UNSUPPORTED = -12, /* this dtype/op combination is not meaningful */
    STARLING_E_CORRUPT = -13,     /* data failed its integrity check (hash after transfer) */
    STARLING_E_LIMIT = -14,       /* a configured limit was exceeded (frame size, peers) */
    STARLING_E_NOT_FOUND = -15,   /* no such name (shared-state tensor) */
    STARLING_E_BUSY = -16,        /* too many requests in flight */
} starling_error;

/* Returns a static string naming the code; never NULL (unknown codes give "unknown error"). */
STARLING_API const char *starling_strerror(int code);
/* Why the last starling_comm_create or starling_coord_create called on this thread failed,
 * when there is no handle to ask yet: "cannot reach the coordinator: connect to
 * 127.0.0.1:7002: Connection refused", "coordinator address 'vm': expected HOST:PORT...",
 * "resolve nosuch: Name or service not known". "" after a success or when nothing more is
 * known. Thread-local; valid until the thread's next create call. Never NULL. */
STARLING_API const char *starling_last_error(void);

/* ---------------------------------------------------------------- logging */

typedef enum starling_log_level {
    STARLING_LOG_ERROR = 0,
    STARLING_LOG_WARN = 1,
    STARLING_LOG_INFO = 2,
    STARLING_LOG_DEBUG = 3,
} starling_log_level;

/* Log handler. May be called from any starling thread, including engine threads; it must
 * be thread-safe and must not call back into starling. `msg` has no trailing newline. */
typedef void (*starling_log_fn)(void *user, starling_log_level level, const char *msg);

/* Process-wide log handler and level. The library is silent until a handler is set.
 * Set it before creating handles. It may be replaced or removed (NULL) while handles
 * exist, but a thread that was already logging may still call the previous handler
 * once, so keep what it uses alive (`user` must match the handler it goes with). */
STARLING_API void starling_log_set_handler(starling_log_fn fn, void *user);
STARLING_API void starling_log_set_level(starling_log_level level);
/* A ready-made handler writing "starling[level] msg\n" to stderr. */
STARLING_API void starling_log_stderr(void *user, starling_log_level level, const char *msg);

/* ---------------------------------------------------------------- data types */

typedef enum starling_dtype {
    STARLING_F32 = 0,
    STARLING_F64 = 1,
    STARLING_F16 = 2,  /* IEEE binary16 (see "Half precision" below) */
    STARLING_BF16 = 3, /* bfloat16 (likewise) */
    STARLING_I32 = 4,
    STARLING_I64 = 5,
    STARLING_U8 = 6,
    STARLING_DTYPE_COUNT
} starling_dtype;

typedef enum starling_op {
    STARLING_SUM = 0,
    STARLING_AVG = 1, /* sum, then divided by the member count (integers: truncated) */
    STARLING_MIN = 2,
    STARLING_MAX = 3,
    STARLING_OP_COUNT
} starling_op;

/* Half precision (f16, bf16) in reductions: each pair is widened to f32, combined and
 * rounded back to the dtype (round to nearest, ties to even) at every ring hop, so a sum
 * over n members is rounded n - 1 times, in the ring's order, not once; every member
 * still gets the same bits. For each element, with x_i the members' values and s their
 * exact sum, the result r satisfies
 *     |r - s| <= ((1 + u)^(n-1) - 1) * sum_i |x_i| + (n - 1) * eta
 * with u = 2^-11 + 2^-23 (f16) or 2^-8 + 2^-23 (bf16), the dtype's unit roundoff plus the
 * f32 rounding in between, and eta = 2^-25 (f16) or 2^-134 (bf16), half the smallest
 * subnormal (tests/unit/test_half_sum.c checks it). Measured: a quarter of the elements
 * of a 5-member f16 sum differ from the once-rounded exact sum. A partial sum that
 * rounds past the dtype's largest value becomes +-inf and stays so, even when the exact
 * sum is finite (f16: 65504 + 16 - 16 can give +inf). STARLING_AVG divides the rounded sum
 * by n and rounds once more. MIN and MAX are exact. Where this matters, reduce in f32. */

/* Size in bytes of one element, or 0 for an unknown dtype. */
STARLING_API size_t starling_dtype_size(starling_dtype dtype);
/* Name ("f32", "bf16", ...), or NULL if unknown; and the reverse (-1 if unknown). */
STARLING_API const char *starling_dtype_name(starling_dtype dtype);
STARLING_API int starling_dtype_from_name(const char *name);
STARLING_API const char *starling_op_name(starling_op op);
STARLING_API int starling_op_from_name(const char *name);

/* ---------------------------------------------------------------- configuration */

typedef struct starling_config starling_config;

/* Defaults: timeout 3000 ms, 1 stream per neighbour, listen "127.0.0.1:0", min_peers 1,
 * op_timeout 60000 ms, chunk 1 MiB, max frame 64 MiB, kernel socket buffers, ring order
 * "join", probes of 2 MiB. */
STARLING_API int starling_config_create(starling_config **out);
STARLING_API void starling_config_destroy(starling_config *cfg);
/* Failure-detection timeout: a peer silent this long is declared dead. 100..600000 ms. */
STARLING_API int starling_config_set_timeout_ms(starling_config *cfg, int timeout_ms);
/* Upper bound on one collective or topology update; past it the call fails with
 * STARLING_E_TIMEOUT on every member. 100..86400000 ms. */
STARLING_API int starling_config_set_op_timeout_ms(starling_config *cfg, int op_timeout_ms);
/* Parallel TCP streams per ring neighbour, 1..16 (for long, fat links). */
STARLING_API int starling_config_set_streams(starling_config *cfg, int streams);
/* Address this peer's data plane listens on, "HOST:PORT" (PORT 0 = any free port).
 *
 * Addresses, everywhere the API takes one: "HOST:PORT" or "[IPV6]:PORT", PORT 0..65535;
 * HOST a name ("localhost", a name from /etc/hosts or DNS; at most 63 bytes of letters,
 * digits, '-', '_', '.'), a dotted quad, or an IPv6 literal in brackets ("[::1]:7000",
 * "[fe80::1%eth0]:7000"). Wildcards: "0.0.0.0" (every IPv4 address) and "[::]" (every
 * IPv6 address, and IPv4 too where the system allows). A name is resolved with
 * getaddrinfo when the address is used: listening binds its first address, connecting
 * tries each of its addresses in turn within the call's deadline. A DNS lookup may take
 * the resolver's own timeout (resolv.conf) beyond that deadline; names in /etc/hosts do
 * not. A malformed address is STARLING_E_INVALID (here: when set). */
STARLING_API int starling_config_set_listen(starling_config *cfg, const char *host_port);
/* The data-plane host the other members are told to connect to ("HOST", no port: the
 * port is the one the data plane listens on). Set it on a host with several addresses
 * (several interfaces, a VPN, NAT) to the one the others can reach. NULL or "" restores
 * the default: the listening host, or when that is a wildcard, this host's address on
 * its connection to the coordinator. A name is resolved once, by starling_comm_create,
 * to its first address: the coordinator passes numeric addresses on, so no member's
 * engine waits on a name lookup. STARLING_E_INVALID if not a host as described above. */
STARLING_API int starling_config_set_advertise(starling_config *cfg, const char *host);
/* Smallest membership for which the first epoch forms (all peers of a run should agree),
 * 1..8192 (the most members an epoch may have). */
STARLING_API int starling_config_set_min_peers(starling_config *cfg, int min_peers);
/* Pipelining unit of the ring, 4 KiB..64 MiB. */
STARLING_API int starling_config_set_chunk_bytes(starling_config *cfg, size_t chunk_bytes);
/* A name for this peer in logs and errors (copied; at most 63 bytes). */
STARLING_API int starling_config_set_name(starling_config *cfg, const char *name);
/* Send and receive buffer of every ring link, in bytes (4 KiB..1 GiB; 0, the default,
 * leaves the kernel's autotuning alone). One TCP stream carries at most buffer / RTT:
 * size it to the bandwidth-delay product of a long link (e.g. 1 Gbit/s x 100 ms RTT =
 * 12.5 MB), or use several streams. Above net.core.[rw]mem_max the kernel grants more
 * only to a process with CAP_NET_ADMIN; the size granted is logged. */
STARLING_API int starling_config_set_socket_buffer(starling_config *cfg, size_t bytes);
/* How the coordinator orders the ring (coordinator side; docs/architecture.md):
 *   "join"      survivors keep their order, newcomers are appended by id (the default);
 *   "name"      by peer name, then id (a fixed order, e.g. to compare orders);
 *   "measured"  by measured links: when members without measurements join, the
 *               coordinator asks every member to measure its links (starling_measure_links)
 *               and then orders the ring to minimise the expected all-reduce time, which
 *               is bound by its slowest link. */
STARLING_API int starling_config_set_ring_order(starling_config *cfg, const char *order);
/* Bytes sent to each other member by one link measurement (64 KiB..256 MiB, default
 * 2 MiB). Longer probes measure fast links better and cost more time. */
STARLING_API int starling_config_set_probe_bytes(starling_config *cfg, size_t bytes);
/* Whether this peer accepts inbound connections (default 1). 0 for a peer behind a NAT or
 * a firewall that lets no connection in: it registers without a data port, opens both of
 * its ring links itself (the left neighbour's link to it is opened from its side, so that
 * neighbour must accept connections), and other members do not measure their links to it.
 * The coordinator orders the ring so that no two such peers are neighbours; it admits at
 * most as many of them as there are members that accept connections, and the others wait
 * (docs/architecture.md, "Peers behind a NAT"). STARLING_E_INVALID for a value other
 * than 0 or 1. */
STARLING_API int starling_config_set_inbound(starling_config *cfg, int inbound);
/* Whether ring links to members on the same host go through shared memory (default 1).
 * "Same host" is proved, not guessed from addresses: the two members must share the boot,
 * the network and PID namespaces and the user, and the one that dialled the link shows
 * the other a memory segment it then maps (docs/architecture.md, "Shared memory"). Such
 * a link carries the same frames as TCP, unencrypted whatever the security mode: the
 * segment is readable only by the two processes (and by what could read their memory
 * anyway). Its TCP connection stays open for wake-ups and to tell a dead neighbour. 0
 * keeps every link on TCP (measurements, tests). STARLING_E_INVALID for a value other
 * than 0 or 1. */
STARLING_API int starling_config_set_shm(starling_config *cfg, int shm);
/* What every connection of this peer or coordinator carries (docs/protocol.md, "Sealed
 * frames"):
 *   "aead"      (the default) every frame after the handshake is encrypted and
 *               authenticated: AES-256-GCM when both ends' CPUs have AES-NI, else
 *               ChaCha20-Poly1305; keys per connection and direction, derived from the
 *               run's secret and both ends' fresh nonces; a frame counter as nonce, so a
 *               tampered, forged, replayed, reordered or dropped frame is refused (the
 *               connection closes: a collective on it fails with STARLING_E_PEER_LOST);
 *   "chacha20"  the same with ChaCha20-Poly1305 whatever the CPUs have;
 *   "none"      frames travel in clear and unauthenticated (the handshake still proves
 *               the secret): for trusted clusters, a little faster.
 * Both ends of every connection must agree on encryption: "none" against an encrypting
 * side is refused with STARLING_E_AUTH and a message saying so ("aead" and "chacha20"
 * agree, on ChaCha20-Poly1305). STARLING_E_INVALID for another name. */
STARLING_API int starling_config_set_security(starling_config *cfg, const char *mode);
/* Coordinator side: this coordinator is the standby of the active one at `host_port`
 * (docs/architecture.md, "Coordinator failover"). It watches the active, refuses peers
 * (STARLING_E_BUSY: they try the next coordinator they were given) while it hears it, and
 * takes over once the active, which it must have heard at least once, has been silent
 * for timeout_ms. Peers list both:
 * starling_comm_create(..., "ACTIVE:PORT,STANDBY:PORT", ...). NULL or "" (the default):
 * an active coordinator. STARLING_E_INVALID for a malformed address, port 0 or a
 * wildcard host. */
STARLING_API int starling_config_set_standby_of(starling_config *cfg, const char *host_port);

/* ---------------------------------------------------------------- coordinator */

/* The coordinator is the control plane: it admits peers, detects dead ones, numbers
 * epochs, chooses the ring order and resolves aborted collectives. It holds no model
 * data; if it restarts, peers re-register and carry on. */
typedef struct starling_coord starling_coord;

/* Binds `host_port` ("HOST:PORT"; port 0 picks a free one) for run `run` whose members
 * share `secret` (secret_len >= 1 bytes). `cfg` may be NULL (defaults; its timeout_ms is
 * the failure-detection timeout, min_peers the smallest first epoch). Does not block. */
STARLING_API int starling_coord_create(starling_coord **out, const char *host_port,
                                       const char *run, const void *secret,
                                       size_t secret_len, const starling_config *cfg);
/* Runs the event loop on the calling thread until starling_coord_stop is called (from
 * any thread or a signal handler). Returns STARLING_OK after a stop. */
STARLING_API int starling_coord_run(starling_coord *coord);
/* Async-signal-safe. Makes starling_coord_run return soon. */
STARLING_API void starling_coord_stop(starling_coord *coord);
/* The port actually bound (useful with port 0). */
STARLING_API int starling_coord_port(const starling_coord *coord);
/* How many peers are registered with it now (counted by the event loop after each pass;
 * a peer that left or was declared lost no longer counts). Any thread. STARLING_E_INVALID
 * for NULL. A process that hosts the coordinator of its own run calls this after its
 * starling_comm_destroy to stop it only once the other members have left too. */
STARLING_API int starling_coord_peers(const starling_coord *coord);
STARLING_API void starling_coord_destroy(starling_coord *coord);

/* ---------------------------------------------------------------- communicator */

typedef struct starling_comm starling_comm;

/* Connects to the coordinator at `coord_host_port`, proves knowledge of `secret` and
 * registers for run `run`. `coord_host_port` may list up to 8 coordinators separated by
 * commas, the active first and then its standbys ("10.0.0.1:7000,10.0.0.2:7000",
 * starling_config_set_standby_of): the first that admits this peer is used, and when
 * its connection is lost or it refuses the peer, the next. Blocks up to the config's
 * op_timeout. The new communicator
 * is not yet a member: call starling_update_topology() to join. `cfg` may be NULL.
 * Errors: STARLING_E_AUTH (wrong secret), STARLING_E_VERSION, STARLING_E_TIMEOUT,
 * STARLING_E_OS (connection refused...). On error *out is NULL. */
STARLING_API int starling_comm_create(starling_comm **out, const char *coord_host_port,
                                      const char *run, const void *secret,
                                      size_t secret_len, const starling_config *cfg);
/* Leaves the run (tells the coordinator), stops the engine thread, frees everything.
 * Requests still in flight are failed with STARLING_E_CLOSED first. */
STARLING_API void starling_comm_destroy(starling_comm *comm);

/* Membership changes (deaths, joins) take effect only here. Every live member calls it
 * at the same point of its loop; it blocks until the coordinator has formed the next
 * epoch (or confirmed the current one) and the ring links are up. A newcomer's first
 * call waits until the members make theirs. Returns STARLING_OK, STARLING_E_TIMEOUT
 * (op_timeout), STARLING_E_CLOSED, or STARLING_E_PEER_LOST when a member of the new
 * epoch died while the ring was being linked (call it again). */
STARLING_API int starling_update_topology(starling_comm *comm);

/* Measures this member's links to every other member of the epoch and reports them to
 * the coordinator, which may then reorder the ring (ring order "measured"). A collective
 * call: every member calls it at the same point of its loop, as for
 * starling_update_topology(), which it includes (before and after the measurement).
 * Member r measures, in round k = 1..n-1, the link to member (r + k) mod n: a TCP connect
 * (its time is the round-trip estimate) and probe_bytes sent and acknowledged. A link
 * that fails, or is still unmeasured when op_timeout has passed since the measurement
 * began, is reported as unusable, not as an error: the call takes at most two topology
 * updates and one op_timeout of probing. The same measurement runs inside
 * starling_update_topology() when the coordinator asks for it. Errors: those of
 * starling_update_topology(). */
STARLING_API int starling_measure_links(starling_comm *comm);
/* This member's last measurement of its link to the member of rank `rank` in the current
 * epoch: bytes per second and round-trip time in seconds (either pointer may be NULL).
 * STARLING_E_NOT_FOUND if that link has not been measured (or was unusable),
 * STARLING_E_INVALID for a bad rank or its own. */
STARLING_API int starling_comm_link(const starling_comm *comm, int rank, double *bytes_per_s,
                                    double *rtt_s);

/* Current epoch (0 before the first topology update), this peer's rank in the ring
 * order, and the member count. */
STARLING_API uint64_t starling_comm_epoch(const starling_comm *comm);
STARLING_API int starling_comm_rank(const starling_comm *comm);
STARLING_API int starling_comm_size(const starling_comm *comm);
/* Total payload bytes this communicator has sent on the data plane. */
STARLING_API uint64_t starling_comm_bytes_sent(const starling_comm *comm);
/* Detail of the last error on this communicator ("" if none). Valid until the next call
 * on the same communicator. */
STARLING_API const char *starling_comm_errmsg(const starling_comm *comm);

/* ---------------------------------------------------------------- collectives */

/* Per-call options (tag, ...). NULL everywhere means defaults (tag 0). */
typedef struct starling_callopts starling_callopts;
STARLING_API int starling_callopts_create(starling_callopts **out);
STARLING_API void starling_callopts_destroy(starling_callopts *opts);
/* Told-apart label of a collective; peers must issue the same tags in the same order,
 * a difference is reported as STARLING_E_MISMATCH. */
STARLING_API int starling_callopts_set_tag(starling_callopts *opts, uint64_t tag);

/* ---------------------------------------------------------------- codecs */

/* A compression codec for collectives, parsed once from a short spec (the grammar and
 * every wire format are in docs/codecs.md):
 *   none | f16[:stochastic] | bf16[:stochastic] | int8[:block=N] | int4[:block=N]
 *   | fp4[:block=N] | topk:FRAC[:bits=2|4|8][:block=N] | randk:FRAC, then optionally
 *   "+ef" (error feedback) and "+zstd[:LEVEL]".
 * Lossy codecs apply to f32 data only. Immutable once made: one codec may be used by
 * several threads and calls at once. */
typedef struct starling_codec starling_codec;

/* Parses `spec`. On a bad spec returns STARLING_E_INVALID and, if err != NULL, writes a
 * message naming the problem (at most errlen bytes, NUL-terminated). */
STARLING_API int starling_codec_create(starling_codec **out, const char *spec, char *err,
                                       size_t errlen);
STARLING_API void starling_codec_destroy(starling_codec *codec);
/* The canonical spec (defaults spelled out), e.g. "int8:block=256+zstd:3". Valid while
 * the codec lives. */
STARLING_API const char *starling_codec_spec(const starling_codec *codec);
/* Upper bound of the bytes starling_codec_encode writes for `count` elements. */
STARLING_API size_t starling_codec_max_encoded(const starling_codec *codec, size_t count);
/* Encodes `count` f32 values into `out` (out_cap bytes), *out_len = bytes written.
 * `seed` drives stochastic rounding and random-k (use the same seed to decode randk).
 * With a zstd stage the output starts with one byte: 0 raw, 1 compressed.
 * Errors: STARLING_E_INVALID (NULL, out_cap too small), STARLING_E_NOMEM. */
STARLING_API int starling_codec_encode(const starling_codec *codec, const float *in,
                                       size_t count, uint64_t seed, void *out,
                                       size_t out_cap, size_t *out_len);
/* Decodes `len` bytes made by starling_codec_encode for `count` elements into out
 * (sparse codecs: out is set to zero, then the kept values are written).
 * Errors: STARLING_E_INVALID (NULL), STARLING_E_PROTOCOL (malformed or wrong length). */
STARLING_API int starling_codec_decode(const starling_codec *codec, const void *in, size_t len,
                                       size_t count, uint64_t seed, float *out);

/* Compress this collective's payload with `codec` (copied; NULL = none). Applies to f32
 * all-reduce, reduce-scatter, all-gather and broadcast; other dtypes fail with
 * STARLING_E_UNSUPPORTED. Every member must use the same codec (else
 * STARLING_E_MISMATCH). See docs/codecs.md for what each collective does with it. */
STARLING_API int starling_callopts_set_codec(starling_callopts *opts,
                                             const starling_codec *codec);

/* Error feedback ("+ef"): for each tag, the library keeps what this member's compressed
 * calls dropped and adds it to the next input of that tag; the new residual replaces the
 * old one only when a call commits. Residuals are this member's own (not shared state:
 * they differ between members by design) and are set to zero when a new epoch forms, since
 * a dead member's residual is lost with it. These two calls copy a residual out and in,
 * e.g. for checkpoints; call them only when no collective is in flight on `comm`.
 * Errors: STARLING_E_NOT_FOUND (no residual for the tag yet), STARLING_E_MISMATCH (count
 * differs from the residual's), STARLING_E_INVALID. */
STARLING_API int starling_residual_get(starling_comm *comm, uint64_t tag, float *out,
                                       size_t count);
/* Sets the residual of `tag` (created when absent). */
STARLING_API int starling_residual_set(starling_comm *comm, uint64_t tag, const float *in,
                                       size_t count);

/* An asynchronous collective in flight. Made by a *_async call, released by
 * starling_request_free (which waits for it first if it is still running). */
typedef struct starling_request starling_request;

/* Semantics shared by every collective:
 *  - Every member of the epoch makes the same call (same kind, count, dtype, op, root,
 *    tag) in the same order. A difference is detected: STARLING_E_MISMATCH on every
 *    member, and, as after STARLING_E_PEER_LOST, the epoch is aborted: later collectives
 *    fail at once until starling_update_topology() has formed a new epoch.
 *  - Success: every member holds bit-identical results in `recvbuf`.
 *  - Failure (a member died or froze): STARLING_E_PEER_LOST on every survivor, `sendbuf`
 *    unchanged; `recvbuf` is unspecified unless recvbuf == sendbuf (in place), in which
 *    case it is unchanged too. Call starling_update_topology() and retry.
 *  - Buffers passed to *_async are borrowed until the request completes.
 *  - count may be 0 (the call still synchronises the members).
 */

/* All-reduce: recvbuf[i] = op over members of sendbuf[i], `count` elements.
 * sendbuf == recvbuf is allowed. u8 supports min/max/sum (wrapping). */
STARLING_API int starling_allreduce(starling_comm *comm, const void *sendbuf, void *recvbuf,
                                    size_t count, starling_dtype dtype, starling_op op,
                                    const starling_callopts *opts);
STARLING_API int starling_allreduce_async(starling_comm *comm, const void *sendbuf,
                                          void *recvbuf, size_t count, starling_dtype dtype,
                                          starling_op op, const starling_callopts *opts,
                                          starling_request **req);

/* Reduce-scatter: `sendbuf` holds count*size elements; member r receives in `recvbuf`
 * (count elements) the reduction of block r. */
STARLING_API int starling_reduce_scatter(starling_comm *comm, const void *sendbuf,
                                         void *recvbuf, size_t count, starling_dtype dtype,
                                         starling_op op, const starling_callopts *opts);
STARLING_API int starling_reduce_scatter_async(starling_comm *comm, const void *sendbuf,
                                               void *recvbuf, size_t count,
                                               starling_dtype dtype, starling_op op,
                                               const starling_callopts *opts,
                                               starling_request **req);

/* All-gather: every member contributes `count` elements; recvbuf (count*size elements)
 * receives them ordered by rank. */
STARLING_API int starling_allgather(starling_comm *comm, const void *sendbuf, void *recvbuf,
                                    size_t count, starling_dtype dtype,
                                    const starling_callopts *opts);
STARLING_API int starling_allgather_async(starling_comm *comm, const void *sendbuf,
                                          void *recvbuf, size_t count, starling_dtype dtype,
                                          const starling_callopts *opts,
                                          starling_request **req);

/* Broadcast: `count` elements of `buf` on member `root` are copied into `buf` on all. */
STARLING_API int starling_broadcast(starling_comm *comm, void *buf, size_t count,
                                    starling_dtype dtype, int root,
                                    const starling_callopts *opts);
STARLING_API int starling_broadcast_async(starling_comm *comm, void *buf, size_t count,
                                          starling_dtype dtype, int root,
                                          const starling_callopts *opts,
                                          starling_request **req);

/* Blocks until the request completes; returns its result (same codes as the blocking
 * call). May be called more than once. */
STARLING_API int starling_request_wait(starling_request *req);
/* Non-blocking: *done = 1 and returns the result if complete, else *done = 0, STARLING_OK. */
STARLING_API int starling_request_test(starling_request *req, int *done);
/* Waits for the request if needed, then frees it. Accepts NULL. */
STARLING_API void starling_request_free(starling_request *req);

/* ---------------------------------------------------------------- shared state */

/* Named tensors plus a step counter, registered once, kept identical across members by
 * starling_sync_state(). The library borrows `data` until the communicator is destroyed
 * or the tensor is unregistered. Names are 1..63 bytes, unique per communicator. */
STARLING_API int starling_state_register(starling_comm *comm, const char *name, void *data,
                                         size_t count, starling_dtype dtype);
STARLING_API int starling_state_unregister(starling_comm *comm, const char *name);
STARLING_API int starling_state_set_step(starling_comm *comm, uint64_t step);
STARLING_API uint64_t starling_state_step(const starling_comm *comm);

/* Collective. Every member hashes its state (XXH3-128 over names, layout, bytes and the
 * step); the state held by most members is the truth (ties: the lowest rank's); members
 * that differ receive its bytes from all up-to-date members at once, and verify the hash.
 * `*changed` (may be NULL) is set to 1 if this member's state was replaced.
 * Errors as for collectives, plus STARLING_E_MISMATCH (names or sizes differ) and
 * STARLING_E_CORRUPT (hash wrong after transfer). */
STARLING_API int starling_sync_state(starling_comm *comm, int *changed);

/* The 128-bit content hash of this member's shared state, as 32 hex digits + NUL. */
STARLING_API int starling_state_hash_hex(const starling_comm *comm, char out[33]);

/* ---------------------------------------------------------------- robust aggregation */

/* A rule that combines n vectors into one while up to f of them may be wrong (bugs, bit
 * flips, malice), parsed once from a short spec (the maths, requirements and costs of
 * each are in docs/aggregation.md):
 *   [bucket:S[:seed=N]+][nnm+]NAME[:k=v[,k=v]]
 *   mean | median | trimmed_mean | krum | multikrum[:m=M] | geomed[:iters=N,tol=X]
 *   | cclip[:tau=X,iters=N] | flag[:r=R,iters=N]
 * Defaults: multikrum m = n - f; geomed iters=100, tol=1e-6 (smoothing nu = 1e-6; tol is
 * on the objective, not the point: Weiszfeld's iteration stops once sum_i |x_i - z|
 * changes by at most tol times itself, and z may then still be further than tol * |z|
 * from the true geometric median, most where the objective is flat);
 * cclip tau=1, iters=3; flag r=1, iters=5. Applied in the order written: "bucket:S"
 * shuffles the rows (a permutation drawn from the seed, default 0) and averages buckets of
 * S, so the rest sees ceil(n/S) rows and f faulty ones can spoil at most f buckets (the
 * requirements below then hold for the bucket count; not order-independent for a fixed
 * seed); "nnm+" applies nearest-neighbour mixing (each vector replaced by the mean of its
 * n - f nearest, itself included); then NAME.
 * Immutable once made: one aggregator may be used by several threads and calls at once. */
typedef struct starling_aggregator starling_aggregator;

/* Parses `spec`. On a bad spec returns STARLING_E_INVALID and, if err != NULL, writes a
 * message naming the problem (at most errlen bytes, NUL-terminated); *out is NULL on
 * error. STARLING_E_NOMEM if the handle cannot be allocated. */
STARLING_API int starling_aggregator_create(starling_aggregator **out, const char *spec,
                                            char *err, size_t errlen);
/* Accepts NULL. */
STARLING_API void starling_aggregator_destroy(starling_aggregator *agg);
/* The canonical spec (defaults spelled out, e.g. "geomed:iters=100,tol=1e-06"); two
 * aggregators that behave the same have the same string. Valid while the handle lives. */
STARLING_API const char *starling_aggregator_spec(const starling_aggregator *agg);

/* Aggregates `vectors` (n rows of d floats, row-major: row i is member i's vector) into
 * `out` (d floats), assuming at most f rows are Byzantine. Blocks only for the computation;
 * no I/O; `vectors` is read only; `out` must not overlap it.
 *
 * Requirements, checked on the declared (n, f): n >= 1, d >= 1, f >= 0, and
 *   mean: n > f                    median, trimmed_mean, geomed, cclip, nnm+: n > 2f
 *   krum, multikrum: n > 2f + 2    multikrum: m <= n - f      flag: r <= n - 2f
 * otherwise STARLING_E_INVALID with a message in err.
 *
 * Non-finite input: a row holding any NaN or Inf is dropped as certainly faulty and counts
 * against f (the rule then runs on n - b rows with f - b faulty). If more than f rows are
 * non-finite the call fails with STARLING_E_CORRUPT and leaves `out` unspecified. NaN and
 * Inf in the input never reach the output.
 *
 * Deterministic: the same inputs give the same output bytes on every machine (sums in
 * double in a fixed order, no threads, ties to the lowest row index). median,
 * trimmed_mean and krum give the same bytes for any order of the rows (krum unless two
 * scores tie exactly); the others agree to rounding.
 * Scratch memory comes from the library's allocator: STARLING_E_NOMEM if it fails
 * (nnm+ needs n x d floats; the others O(n^2 + d) at most). Thread-safe: calls on the
 * same aggregator may run at once. */
STARLING_API int starling_aggregate(const starling_aggregator *agg, const float *vectors,
                                    size_t n, size_t d, int f, float *out, char *err,
                                    size_t errlen);

/* Robust all-reduce: every member contributes `count` f32 values; all of them are
 * gathered (an all-gather, so each member receives (n-1)*count values: n/2 times the
 * bytes of a ring all-reduce) and every member applies `agg` with `f` to the same
 * gathered bytes, so all members end with bit-identical `recvbuf` (count floats; may equal
 * sendbuf). `opts` may carry a tag and a dense codec (f16, bf16, int8, int4, fp4; every member
 * then aggregates the same decoded vectors). Failure semantics as for the other
 * collectives (STARLING_E_PEER_LOST, ...); additionally the aggregator's requirements on
 * (n, f) are checked before anything is sent (STARLING_E_INVALID on every member, which
 * all make the same call), and more than f non-finite contributions give
 * STARLING_E_CORRUPT on every member. Blocking; the aggregation runs on the calling
 * thread. With "bucket:", the permutation also mixes in the epoch, the call's tag and the
 * shared-state step (equal on every member), so successive training steps shuffle
 * differently; two calls with the same epoch, tag and step shuffle alike. */
STARLING_API int starling_robust_allreduce(starling_comm *comm, const float *sendbuf,
                                           float *recvbuf, size_t count,
                                           const starling_aggregator *agg, int f,
                                           const starling_callopts *opts);

/* ---------------------------------------------------------------- training */

/* The training engine: the built-in model (a multi-layer perceptron on Fashion-MNIST, or
 * a synthetic set when the Debian package is absent), trained across the members of a
 * communicator with data-parallel SGD, DiLoCo or Streaming DiLoCo, surviving peer loss
 * and joins. docs/training.md describes every algorithm and option. */
typedef struct starling_train_config starling_train_config;

/* Defaults are listed with the keys in docs/training.md. */
STARLING_API int starling_train_config_create(starling_train_config **out);
STARLING_API void starling_train_config_destroy(starling_train_config *cfg);
/* Sets option `key` from its text form, e.g. ("algo", "diloco"), ("inner_steps", "50"),
 * ("compress", "int8"), ("hidden", "256,128"). Keys: algo, steps, inner_steps, fragments,
 * tau, alpha, compress, hidden, batch, optimizer, lr, warmup, weight_decay, clip,
 * outer_lr, outer_momentum, seed, noniid, data, eval_every, eval_limit, checkpoint_dir,
 * checkpoint_every, resume, sync_every, aggregator, f, attack, attack_scale,
 * attack_start (those five: Byzantine-robust training and attacks, docs/training.md),
 * round_deadline (off, auto, auto:F or seconds: DiLoCo rounds that close at a deadline
 * instead of waiting for the slowest member) and slow (a factor >= 1 that stretches this
 * member's compute: a straggler, for experiments). STARLING_E_INVALID with a message in err (errlen
 * bytes) naming the key and the problem for an unknown key or a bad value; the config is
 * unchanged then. */
STARLING_API int starling_train_config_set(starling_train_config *cfg, const char *key,
                                           const char *value, char *err, size_t errlen);

typedef struct starling_trainer starling_trainer;

/* What a trainer reports after each step. Fields are only ever appended; pass
 * sizeof(starling_train_stats) as `size`. */
typedef struct starling_train_stats {
    uint64_t step;         /* inner steps completed by the run (shared, equal on members) */
    double loss;           /* this member's last mini-batch loss */
    double test_accuracy;  /* last evaluation on the test set, -1 before the first */
    double test_loss;      /* last evaluation's mean cross-entropy, -1 before the first */
    uint64_t bytes_sent;   /* this member's data-plane payload bytes so far */
    uint64_t epoch;        /* current membership epoch */
    int peers;             /* members of the current epoch */
    int recoveries;        /* topology updates forced by a failed collective */
    int synced;            /* 1 if the last step ended with a synchronisation */
    uint64_t local_steps;  /* inner steps this member computed (fewer than step when a
                            * deadline round closed before it finished, or it joined late) */
    uint64_t rounds_cut;   /* DiLoCo rounds this member closed at the deadline */
} starling_train_stats;

/* Builds the model and optimizer state, loads this member's shard of the data and
 * registers the shared state on `comm`, which must already be a member (after
 * starling_update_topology). A newcomer receives the run's state from the others at its
 * first synchronisation. With the config's `resume`, starts from that checkpoint (every
 * member must resume from the same one). Errors: STARLING_E_INVALID, STARLING_E_NOMEM,
 * STARLING_E_NOT_FOUND / STARLING_E_CORRUPT (data or checkpoint files), with a message
 * in err. */
STARLING_API int starling_trainer_create(starling_trainer **out, starling_comm *comm,
                                         const starling_train_config *cfg, char *err,
                                         size_t errlen);
/* Does one inner step, and the synchronisation it is due for (every step for ddp; every
 * inner_steps for diloco; a fragment at a time for streaming). A collective that fails
 * with STARLING_E_PEER_LOST leads to starling_update_topology, a state sync and a retry,
 * inside this call: faults the run can survive never reach the caller. Sets *done = 1
 * when the configured steps are complete. Errors: what the run cannot survive
 * (STARLING_E_TIMEOUT, STARLING_E_CLOSED, ...); details in starling_comm_errmsg. */
STARLING_API int starling_trainer_step(starling_trainer *t, int *done);
STARLING_API int starling_trainer_stats(const starling_trainer *t, starling_train_stats *out,
                                        size_t size);
/* Accuracy and mean loss of the current shared parameters on the test set (eval_limit
 * samples, 0 = all). Local computation, no communication. */
STARLING_API int starling_trainer_evaluate(starling_trainer *t, double *accuracy,
                                           double *loss);
/* Writes the shared state to dir/checkpoint.bin atomically (temporary file, fsync,
 * rename; checksummed). */
STARLING_API int starling_trainer_checkpoint(starling_trainer *t, const char *dir);
/* Accepts NULL. Unregisters the shared state; the communicator stays usable. */
STARLING_API void starling_trainer_destroy(starling_trainer *t);

#ifdef __cplusplus
}
#endif
#endif /* STARLING_H */
