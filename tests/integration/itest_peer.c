/*
 * itest_peer -- one peer of the multi-process integration tests.
 *
 * Driven by run_scenario.py, which starts a coordinator and several of these on loopback
 * and injects faults (kill, freeze, coordinator restart, a late joiner, garbage on the
 * sockets). Uses only the public header: it is a user of the library like any other.
 *
 * Modes
 *   collectives  every (count, dtype, op) combination of all-reduce (out of place and in
 *                place), reduce-scatter, all-gather and broadcast, checked bit for bit
 *                against a reference computed here; async calls with tags; mismatches.
 *   big          one f32 sum all-reduce of --bytes bytes, checked.
 *   stream       all-reduces until --iters or, at a topology point (every --topo-every
 *                iterations), until the members vote to stop because --stop-file exists.
 *                On STARLING_E_PEER_LOST: update the topology and retry the same
 *                iteration. Prints "ITER i size epoch" per iteration.
 *   badauth      comm_create with the secret in STARLING_SECRET must fail with
 *                STARLING_E_AUTH.
 *
 * Every mode registers shared state ("w": --state-count f32, "it": one i64) and syncs it
 * first; --fresh (and --join) start from zeros, the others from a function of --seed.
 *
 * Inputs are chosen so that every reference is exact whatever the reduction order: small
 * multiples of a power of two for floats (sums exactly representable, also in f16/bf16),
 * full-range values for integer sum/min/max (sums wrap, which is associative), small values
 * for integer averages. So every check is a bit-exact comparison.
 *
 * Output on stdout (line-buffered, parsed by the driver):
 *   SYNC changed=C rank=R size=S epoch=E hash=H wsum=F   after the first state sync
 *                (F: FNV-1a of the tensors' bytes, computed here, independent of H)
 *   JOINED iter=I size=S epoch=E                    a --join peer, after receiving state
 *   TOPO iter=I size=S epoch=E why=W stop=V         a stream topology point
 *   ITER i size epoch                               a completed stream iteration
 *   REJOINED from=I iter=J size=S epoch=E           a --rejoin peer whose state was replaced at
 *                                                   a topology point: it resumes at J
 *   DONE [iters=N] hash=H wsum=F                    success, state at the end
 * Exit status: 0 success, 1 a check failed, 2 usage, 3 a library call failed.
 * Every failed check is named on stderr ("FAIL ...").
 *
 * Flags: --coord HOST:PORT --run NAME --mode M (required; the secret comes from the
 * environment variable STARLING_SECRET); --name, --listen HOST:PORT, --timeout-ms,
 * --op-timeout-ms, --min-peers, --streams, --chunk-bytes (the config); --counts, --dtypes,
 * --ops (collectives); --bytes (big); --iters, --count, --topo-every, --sleep-ms,
 * --stop-file, --max-retries (stream); --seed, --state-count, --fresh, --join,
 * --expect-seeded (shared state); --rejoin (stream: a peer that may be cut off and let back
 * in as a newcomer, tests/net/run_partition_test.sh: a topology point whose state sync
 * replaces its state is expected, and it resumes at the group's synced iteration instead
 * of failing); --no-inbound (the peer accepts no connections: its ring links are opened
 * from its side, tests/net/run_nat_test.sh); --log-level none|error|warn|info|debug, --deadline-s
 * (the process ends by SIGALRM after that long), --ignore-sigpipe (diagnosis only).
 */
#include "starling.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EXIT_CHECK 1
#define EXIT_USAGE 2
#define EXIT_LIBRARY 3

#define MAX_LIST 32
#define GUARD_BYTES 64
#define GUARD_BYTE 0xA5
#define MAX_PRINTED_FAILURES 30

enum mode { MODE_COLLECTIVES, MODE_BIG, MODE_STREAM, MODE_BADAUTH };

typedef struct options {
    const char *coord;
    const char *run;
    const char *name;
    const char *listen;
    int timeout_ms, op_timeout_ms, min_peers, streams;
    size_t chunk_bytes;
    enum mode mode;
    size_t counts[MAX_LIST];
    int ncounts;
    starling_dtype dtypes[MAX_LIST];
    int ndtypes;
    starling_op ops[MAX_LIST];
    int nops;
    size_t big_bytes;
    long iters;
    size_t stream_count;
    long topo_every;
    int sleep_ms;
    int max_retries;
    uint64_t seed;
    int fresh, join;
    int rejoin;        /* stream: a replaced state at a topology point means "catch up" */
    int no_inbound;    /* behind a NAT: accepts no connections (starling_config_set_inbound) */
    int expect_seeded; /* after the first sync "w" must hold the seeded values */
    size_t state_count;
    const char *stop_file; /* stream: stop at the next topology point once it exists */
    int log_level;         /* -1: no handler */
    int deadline_s;
    int ignore_sigpipe;
} options;

typedef struct peer {
    options opt;
    starling_comm *comm;
    const char *secret;
    long failures;
    long checks;
    float *w;      /* shared tensor "w" */
    int64_t *it;   /* shared tensor "it": the stream iteration (one element) */
    uint64_t call; /* collective counter, identical on every member */
} peer;

/* ---------------------------------------------------------------- reporting */

#if defined(__GNUC__)
#define PRINTF_LIKE(a, b) __attribute__((format(printf, a, b)))
#define NORETURN __attribute__((noreturn))
#else
#define PRINTF_LIKE(a, b)
#define NORETURN
#endif

static void fail(peer *p, const char *fmt, ...) PRINTF_LIKE(2, 3);
static NORETURN void die_rc(peer *p, const char *what, int rc);
static NORETURN void usage_error(const char *fmt, ...) PRINTF_LIKE(1, 2);

static void fail(peer *p, const char *fmt, ...)
{
    va_list ap;
    p->failures++;
    if (p->failures > MAX_PRINTED_FAILURES)
        return;
    fprintf(stderr, "itest_peer[%s] FAIL ", p->opt.name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (p->failures == MAX_PRINTED_FAILURES)
        fprintf(stderr, "itest_peer[%s] (further failures not printed)\n", p->opt.name);
}

/* A library call failed in a way that leaves nothing sensible to do next. */
static void die_rc(peer *p, const char *what, int rc)
{
    fprintf(stderr, "itest_peer[%s] FAIL %s returned %d (%s): %s\n", p->opt.name, what, rc,
            starling_strerror(rc), p->comm ? starling_comm_errmsg(p->comm) : "");
    fflush(stdout);
    exit(EXIT_LIBRARY);
}

static void usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "itest_peer: usage error: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(EXIT_USAGE);
}

static void sleep_ms(int ms)
{
    struct timespec ts;
    if (ms <= 0)
        return;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---------------------------------------------------------------- dtypes, reference maths */

static const char *const dtype_names[] = {"f32", "f64", "f16", "bf16", "i32", "i64", "u8"};
static const size_t dtype_sizes[] = {4, 8, 2, 2, 4, 8, 1};
static const char *const op_names[] = {"sum", "avg", "min", "max"};

static size_t esize(starling_dtype dt) { return dtype_sizes[dt]; }

static int is_float(starling_dtype dt)
{
    return dt == STARLING_F32 || dt == STARLING_F64 || dt == STARLING_F16 || dt == STARLING_BF16;
}

static uint64_t mix64(uint64_t x)
{
    /* splitmix64 finaliser */
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* f32 -> IEEE binary16, round to nearest even; written here independently of the
 * library's kernel so the two check each other. */
static uint16_t ref_f32_to_f16(float f)
{
    uint32_t x, sign, man, rem, half, h;
    int e, shift;
    memcpy(&x, &f, 4);
    sign = (x >> 16) & 0x8000u;
    man = x & 0x7FFFFFu;
    e = (int)((x >> 23) & 0xFFu);
    if (e == 0xFF)
        return (uint16_t)(sign | 0x7C00u | (man ? 0x200u | (man >> 13) : 0u));
    e = e - 127 + 15;
    if (e >= 31)
        return (uint16_t)(sign | 0x7C00u);
    if (e <= 0) {
        if (e < -10)
            return (uint16_t)sign;
        man |= 0x800000u;
        shift = 14 - e;
        h = man >> shift;
        rem = man & ((1u << shift) - 1u);
        half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1u)))
            h++;
        return (uint16_t)(sign | h);
    }
    h = sign | ((uint32_t)e << 10) | (man >> 13);
    rem = man & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++;
    return (uint16_t)h;
}

static uint16_t ref_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7F800000u) == 0x7F800000u && (x & 0x7FFFFFu))
        return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7FFFu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* Bit pattern of an exactly representable value `v` in float dtype `dt`. */
static uint64_t float_bits(starling_dtype dt, double v)
{
    float f = (float)v;
    uint32_t u32;
    uint64_t u64;
    switch (dt) {
    case STARLING_F32: memcpy(&u32, &f, 4); return u32;
    case STARLING_F64: memcpy(&u64, &v, 8); return u64;
    case STARLING_F16: return ref_f32_to_f16(f);
    case STARLING_BF16: return ref_f32_to_bf16(f);
    default: return 0;
    }
}

static uint64_t load_bits(starling_dtype dt, const void *buf, size_t idx)
{
    const unsigned char *b = (const unsigned char *)buf + idx * esize(dt);
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    switch (esize(dt)) {
    case 1: memcpy(&u8, b, 1); return u8;
    case 2: memcpy(&u16, b, 2); return u16;
    case 4: memcpy(&u32, b, 4); return u32;
    default: memcpy(&u64, b, 8); return u64;
    }
}

static void store_bits(starling_dtype dt, void *buf, size_t idx, uint64_t bits)
{
    unsigned char *b = (unsigned char *)buf + idx * esize(dt);
    uint8_t u8 = (uint8_t)bits;
    uint16_t u16 = (uint16_t)bits;
    uint32_t u32 = (uint32_t)bits;
    switch (esize(dt)) {
    case 1: memcpy(b, &u8, 1); break;
    case 2: memcpy(b, &u16, 2); break;
    case 4: memcpy(b, &u32, 4); break;
    default: memcpy(b, &bits, 8); break;
    }
}

/* One input element: its bit pattern and its exact numeric value. */
typedef struct elem {
    uint64_t bits;
    double f;  /* float dtypes */
    int64_t s; /* integer dtypes: i32/i64 sign-extended, u8 as 0..255 */
} elem;

/* Input of member `rank` for collective number `call`, element `idx`. */
static elem gen_elem(starling_dtype dt, starling_op op, int rank, uint64_t call, size_t idx)
{
    elem e;
    uint64_t h = mix64(mix64(call * 0x100000001B3ull + (uint64_t)dt * 131u + (uint64_t)op) ^
                       ((uint64_t)(unsigned)rank << 48) ^ (uint64_t)idx);
    int64_t k;
    e.f = 0;
    e.s = 0;
    switch (dt) {
    case STARLING_F32: /* units of 1/4 up to 2^18: 16 members sum exactly in f32 */
        k = (int64_t)(h % (2u * 262144u + 1u)) - 262144;
        e.f = (double)k * 0.25;
        break;
    case STARLING_F64:
        k = (int64_t)(h % (2ull * 1099511627776ull + 1ull)) - (int64_t)1099511627776ll;
        e.f = (double)k * 0.125;
        break;
    case STARLING_F16:
    case STARLING_BF16: /* halves in [-7.5, 7.5]: 16 members stay within 8 significant bits */
        k = (int64_t)(h % 31u) - 15;
        e.f = (double)k * 0.5;
        break;
    case STARLING_I32:
        e.s = op == STARLING_AVG ? (int64_t)(h % 2097153u) - 1048576 : (int64_t)(int32_t)h;
        break;
    case STARLING_I64:
        e.s = op == STARLING_AVG ? (int64_t)(h % 2199023255553ull) - (int64_t)1099511627776ll
                                 : (int64_t)h;
        break;
    case STARLING_U8: e.s = op == STARLING_AVG ? (int64_t)(h % 16u) : (int64_t)(h & 0xFFu); break;
    default: break;
    }
    e.bits = is_float(dt) ? float_bits(dt, e.f) : (uint64_t)e.s;
    if (esize(dt) < 8)
        e.bits &= (1ull << (8 * esize(dt))) - 1ull;
    return e;
}

/* Expected result of reducing element `idx` over members 0..size-1 (inputs of collective
 * `call`, input index `idx`). Exact by construction of the inputs. */
static uint64_t ref_reduce(starling_dtype dt, starling_op op, int size, uint64_t call, size_t idx)
{
    int r;
    uint64_t bits;
    if (is_float(dt)) {
        double acc = 0;
        for (r = 0; r < size; r++) {
            double v = gen_elem(dt, op, r, call, idx).f;
            if (r == 0 || op == STARLING_SUM || op == STARLING_AVG)
                acc = (r == 0) ? v : acc + v;
            else if (op == STARLING_MIN)
                acc = v < acc ? v : acc;
            else
                acc = v > acc ? v : acc;
        }
        if (op != STARLING_AVG)
            return float_bits(dt, acc);
        switch (dt) {
        case STARLING_F64: return float_bits(dt, acc / (double)size);
        case STARLING_F32: return float_bits(dt, (double)((float)acc / (float)size));
        case STARLING_F16: return ref_f32_to_f16((float)acc / (float)size);
        default: return ref_f32_to_bf16((float)acc / (float)size);
        }
    } else {
        uint64_t usum = 0;
        int64_t acc = 0;
        for (r = 0; r < size; r++) {
            int64_t v = gen_elem(dt, op, r, call, idx).s;
            if (op == STARLING_SUM)
                usum += (uint64_t)v;
            else if (op == STARLING_AVG)
                acc += v; /* inputs small enough not to overflow */
            else if (r == 0)
                acc = v;
            else if (op == STARLING_MIN)
                acc = v < acc ? v : acc;
            else
                acc = v > acc ? v : acc;
        }
        if (op == STARLING_SUM)
            bits = usum;
        else if (op == STARLING_AVG)
            bits = (uint64_t)(acc / (int64_t)size); /* C99 division truncates */
        else
            bits = (uint64_t)acc;
        if (esize(dt) < 8)
            bits &= (1ull << (8 * esize(dt))) - 1ull;
        return bits;
    }
}

/* ---------------------------------------------------------------- buffers */

/* A buffer of `nbytes` followed by a guard zone that no collective may touch. Never NULL
 * (count 0 still gets a valid pointer). */
static void *buf_alloc(size_t nbytes)
{
    unsigned char *b = malloc(nbytes + GUARD_BYTES);
    if (!b) {
        fprintf(stderr, "itest_peer: out of memory (%zu bytes)\n", nbytes);
        exit(EXIT_LIBRARY);
    }
    memset(b + nbytes, GUARD_BYTE, GUARD_BYTES);
    return b;
}

static void buf_check_guard(peer *p, const void *buf, size_t nbytes, const char *what)
{
    const unsigned char *g = (const unsigned char *)buf + nbytes;
    size_t i;
    for (i = 0; i < GUARD_BYTES; i++) {
        if (g[i] != GUARD_BYTE) {
            fail(p, "%s: wrote past the end of a %zu-byte buffer (guard byte %zu)", what, nbytes,
                 i);
            return;
        }
    }
}

/* Compares `count` elements of `got` with what `want_fn` expects; reports the first few
 * differences. */
typedef uint64_t (*want_fn)(const void *ctx, size_t idx);

static int compare(peer *p, const char *what, starling_dtype dt, const void *got, size_t count,
                   want_fn want, const void *ctx)
{
    size_t i;
    int bad = 0;
    p->checks++;
    for (i = 0; i < count; i++) {
        uint64_t g = load_bits(dt, got, i), w = want(ctx, i);
        if (g != w) {
            if (bad < 3)
                fail(p, "%s: element %zu of %zu is 0x%" PRIx64 ", want 0x%" PRIx64, what, i, count,
                     g, w);
            bad++;
        }
    }
    if (bad > 3)
        fail(p, "%s: %d of %zu elements wrong", what, bad, count);
    return bad == 0;
}

typedef struct want_ctx {
    starling_dtype dt;
    starling_op op;
    int size;
    int rank; /* input owner (gen) or receiving member (reduce-scatter) */
    uint64_t call;
    size_t count;  /* elements per block */
    size_t offset; /* index offset of the input */
} want_ctx;

static want_ctx make_want(starling_dtype dt, starling_op op, int size, int rank, uint64_t call,
                          size_t count, size_t offset)
{
    want_ctx w;
    w.dt = dt;
    w.op = op;
    w.size = size;
    w.rank = rank;
    w.call = call;
    w.count = count;
    w.offset = offset;
    return w;
}

static uint64_t want_input(const void *c, size_t idx)
{
    const want_ctx *w = c;
    return gen_elem(w->dt, w->op, w->rank, w->call, w->offset + idx).bits;
}

static uint64_t want_reduce(const void *c, size_t idx)
{
    const want_ctx *w = c;
    return ref_reduce(w->dt, w->op, w->size, w->call, w->offset + idx);
}

static uint64_t want_gather(const void *c, size_t idx)
{
    const want_ctx *w = c;
    int r = (int)(idx / w->count);
    return gen_elem(w->dt, w->op, r, w->call, idx % w->count).bits;
}

static void fill_input(void *buf, starling_dtype dt, starling_op op, int rank, uint64_t call,
                       size_t count)
{
    size_t i;
    for (i = 0; i < count; i++)
        store_bits(dt, buf, i, gen_elem(dt, op, rank, call, i).bits);
}

/* ---------------------------------------------------------------- setup */

static void connect_and_join(peer *p)
{
    starling_config *cfg = NULL;
    int rc;
    const options *o = &p->opt;

    rc = starling_config_create(&cfg);
    if (rc != STARLING_OK)
        die_rc(p, "starling_config_create", rc);
    if (o->timeout_ms > 0 && (rc = starling_config_set_timeout_ms(cfg, o->timeout_ms)) != 0)
        die_rc(p, "starling_config_set_timeout_ms", rc);
    if (o->op_timeout_ms > 0 &&
        (rc = starling_config_set_op_timeout_ms(cfg, o->op_timeout_ms)) != 0)
        die_rc(p, "starling_config_set_op_timeout_ms", rc);
    if (o->min_peers > 0 && (rc = starling_config_set_min_peers(cfg, o->min_peers)) != 0)
        die_rc(p, "starling_config_set_min_peers", rc);
    if (o->streams > 0 && (rc = starling_config_set_streams(cfg, o->streams)) != 0)
        die_rc(p, "starling_config_set_streams", rc);
    if (o->chunk_bytes > 0 && (rc = starling_config_set_chunk_bytes(cfg, o->chunk_bytes)) != 0)
        die_rc(p, "starling_config_set_chunk_bytes", rc);
    if (o->listen && (rc = starling_config_set_listen(cfg, o->listen)) != 0)
        die_rc(p, "starling_config_set_listen", rc);
    if (o->no_inbound && (rc = starling_config_set_inbound(cfg, 0)) != 0)
        die_rc(p, "starling_config_set_inbound", rc);
    if ((rc = starling_config_set_name(cfg, o->name)) != 0)
        die_rc(p, "starling_config_set_name", rc);

    rc = starling_comm_create(&p->comm, o->coord, o->run, p->secret, strlen(p->secret), cfg);
    starling_config_destroy(cfg);
    if (o->mode == MODE_BADAUTH) {
        if (rc == STARLING_E_AUTH && p->comm == NULL) {
            printf("AUTH refused\n");
            exit(0);
        }
        fprintf(stderr,
                "itest_peer[%s] FAIL badauth: starling_comm_create with a wrong secret "
                "returned %d (%s), comm %s; want STARLING_E_AUTH and NULL\n",
                o->name, rc, starling_strerror(rc), p->comm ? "non-NULL" : "NULL");
        exit(EXIT_CHECK);
    }
    if (rc != STARLING_OK) {
        if (p->comm)
            fail(p, "starling_comm_create failed but left *out non-NULL");
        p->comm = NULL;
        die_rc(p, "starling_comm_create", rc);
    }
    if (starling_comm_epoch(p->comm) != 0)
        fail(p, "epoch before the first topology update is %" PRIu64 ", want 0",
             starling_comm_epoch(p->comm));
}

static float seeded_w(uint64_t seed, size_t i)
{
    return (float)(int32_t)(mix64(seed ^ (uint64_t)i) >> 40) * (1.0f / 1024);
}

/* FNV-1a over the bytes of the shared tensors: an independent check that members hold the
 * same bytes, not relying on the library's own hash. */
static uint64_t state_fnv(const peer *p)
{
    uint64_t h = 0xCBF29CE484222325ull;
    const unsigned char *b = (const unsigned char *)p->w;
    size_t i, n = p->opt.state_count * sizeof *p->w;
    for (i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001B3ull;
    b = (const unsigned char *)p->it;
    for (i = 0; i < sizeof *p->it; i++)
        h = (h ^ b[i]) * 0x100000001B3ull;
    return h;
}

static void state_register(peer *p)
{
    size_t i;
    int rc;
    p->w = malloc(p->opt.state_count * sizeof *p->w + 1);
    p->it = malloc(sizeof *p->it);
    if (!p->w || !p->it) {
        fprintf(stderr, "itest_peer: out of memory\n");
        exit(EXIT_LIBRARY);
    }
    for (i = 0; i < p->opt.state_count; i++) {
        if (p->opt.fresh || p->opt.join)
            p->w[i] = 0.0f;
        else
            p->w[i] = seeded_w(p->opt.seed, i);
    }
    *p->it = 0;
    if ((rc = starling_state_register(p->comm, "w", p->w, p->opt.state_count, STARLING_F32)))
        die_rc(p, "starling_state_register(w)", rc);
    if ((rc = starling_state_register(p->comm, "it", p->it, 1, STARLING_I64)))
        die_rc(p, "starling_state_register(it)", rc);
}

static void state_hash(peer *p, char out[33])
{
    int rc = starling_state_hash_hex(p->comm, out);
    if (rc != STARLING_OK)
        die_rc(p, "starling_state_hash_hex", rc);
    if (strlen(out) != 32 || strspn(out, "0123456789abcdefABCDEF") != 32)
        fail(p, "state hash \"%s\" is not 32 hex digits", out);
}

static void check_membership(peer *p, const char *when)
{
    int rank = starling_comm_rank(p->comm), size = starling_comm_size(p->comm);
    if (size < 1 || rank < 0 || rank >= size) {
        fail(p, "%s: rank %d / size %d out of range", when, rank, size);
        fflush(stdout);
        exit(EXIT_CHECK);
    }
    if (starling_comm_epoch(p->comm) == 0)
        fail(p, "%s: epoch is still 0 after a topology update", when);
}

/* Topology update followed by a state sync; retried (a bounded number of times) when a
 * member is lost during the sync. Returns the sync's `changed`. */
static int topology_and_sync(peer *p, const char *when)
{
    int attempt, rc, changed = -1;
    for (attempt = 0; attempt < p->opt.max_retries; attempt++) {
        rc = starling_update_topology(p->comm);
        if (rc == STARLING_E_PEER_LOST) {
            /* Not a documented result of update_topology (OK, TIMEOUT, CLOSED): a failed
             * check, but calling again is the obvious recovery, so the run goes on and
             * shows what happens next. */
            fail(p,
                 "%s: starling_update_topology returned STARLING_E_PEER_LOST, which the "
                 "header does not list (%s); retrying",
                 when, starling_comm_errmsg(p->comm));
            continue;
        }
        if (rc != STARLING_OK)
            die_rc(p, "starling_update_topology", rc);
        check_membership(p, when);
        changed = -1;
        rc = starling_sync_state(p->comm, &changed);
        if (rc == STARLING_OK)
            break;
        if (rc != STARLING_E_PEER_LOST)
            die_rc(p, "starling_sync_state", rc);
        fprintf(stderr, "itest_peer[%s] %s: sync_state: peer lost, retrying\n", p->opt.name, when);
    }
    if (attempt == p->opt.max_retries) {
        fprintf(stderr, "itest_peer[%s] FAIL %s: state sync lost a peer %d times in a row\n",
                p->opt.name, when, attempt);
        exit(EXIT_LIBRARY);
    }
    if (changed != 0 && changed != 1)
        fail(p, "%s: sync_state left *changed = %d", when, changed);
    return changed;
}

static void first_sync(peer *p)
{
    char hash[33];
    int changed = topology_and_sync(p, "first sync");
    state_hash(p, hash);
    if (p->opt.expect_seeded) {
        /* The driver made the seeded state the majority's: whatever this peer started
         * with, it must now hold exactly those bytes. */
        size_t i, bad = 0;
        p->checks++;
        for (i = 0; i < p->opt.state_count; i++)
            bad += p->w[i] != seeded_w(p->opt.seed, i);
        if (bad || *p->it != 0)
            fail(p,
                 "first sync (changed=%d): %zu of %zu elements of \"w\" differ from the "
                 "majority's, \"it\" is %" PRId64,
                 changed, bad, p->opt.state_count, *p->it);
    }
    printf("SYNC changed=%d rank=%d size=%d epoch=%" PRIu64 " hash=%s wsum=%016" PRIx64 "\n",
           changed, starling_comm_rank(p->comm), starling_comm_size(p->comm),
           starling_comm_epoch(p->comm), hash, state_fnv(p));
}

/* ---------------------------------------------------------------- collectives mode */

/* A collective returned `rc` where success was expected: checks cannot go on if the
 * group is broken, but a local refusal is just a failed check. */
static int expect_ok(peer *p, int rc, const char *what)
{
    if (rc == STARLING_OK)
        return 1;
    if (rc == STARLING_E_PEER_LOST || rc == STARLING_E_TIMEOUT || rc == STARLING_E_CLOSED ||
        rc == STARLING_E_MISMATCH)
        die_rc(p, what, rc);
    fail(p, "%s returned %d (%s): %s", what, rc, starling_strerror(rc),
         starling_comm_errmsg(p->comm));
    return 0;
}

static void run_allreduce(peer *p, size_t count, starling_dtype dt, starling_op op, int inplace)
{
    int size = starling_comm_size(p->comm), rank = starling_comm_rank(p->comm), rc;
    size_t nbytes = count * esize(dt);
    void *send = buf_alloc(nbytes), *recv = inplace ? send : buf_alloc(nbytes);
    uint64_t call = p->call++;
    char what[128];
    want_ctx w;

    snprintf(what, sizeof what, "allreduce%s count=%zu dtype=%s op=%s call=%" PRIu64,
             inplace ? "(in place)" : "", count, dtype_names[dt], op_names[op], call);
    fill_input(send, dt, op, rank, call, count);
    if (!inplace)
        memset(recv, 0xEE, nbytes);
    rc = starling_allreduce(p->comm, send, recv, count, dt, op, NULL);
    if (rc == STARLING_E_UNSUPPORTED && dt == STARLING_U8 && op == STARLING_AVG) {
        /* The header lists min/max/sum for u8; refusing avg is allowed. */
    } else if (expect_ok(p, rc, what)) {
        w = make_want(dt, op, size, rank, call, count, 0);
        compare(p, what, dt, recv, count, want_reduce, &w);
        if (!inplace) {
            char what2[160];
            snprintf(what2, sizeof what2, "%s: sendbuf modified", what);
            compare(p, what2, dt, send, count, want_input, &w);
        }
    }
    buf_check_guard(p, send, nbytes, what);
    if (!inplace) {
        buf_check_guard(p, recv, nbytes, what);
        free(recv);
    }
    free(send);
}

static void run_reduce_scatter(peer *p, size_t count, starling_dtype dt, starling_op op)
{
    int size = starling_comm_size(p->comm), rank = starling_comm_rank(p->comm), rc;
    size_t nbytes = count * esize(dt), total = count * (size_t)size;
    void *send = buf_alloc(total * esize(dt)), *recv = buf_alloc(nbytes);
    uint64_t call = p->call++;
    char what[128];
    want_ctx w;

    snprintf(what, sizeof what, "reduce_scatter count=%zu dtype=%s op=%s call=%" PRIu64, count,
             dtype_names[dt], op_names[op], call);
    fill_input(send, dt, op, rank, call, total);
    memset(recv, 0xEE, nbytes);
    rc = starling_reduce_scatter(p->comm, send, recv, count, dt, op, NULL);
    if (rc == STARLING_E_UNSUPPORTED && dt == STARLING_U8 && op == STARLING_AVG) {
    } else if (expect_ok(p, rc, what)) {
        w = make_want(dt, op, size, rank, call, count, (size_t)rank * count);
        compare(p, what, dt, recv, count, want_reduce, &w);
        w.offset = 0;
        snprintf(what + strlen(what), sizeof what - strlen(what), " (sendbuf)");
        compare(p, what, dt, send, total, want_input, &w);
    }
    buf_check_guard(p, send, total * esize(dt), what);
    buf_check_guard(p, recv, nbytes, what);
    free(send);
    free(recv);
}

static void run_allgather(peer *p, size_t count, starling_dtype dt)
{
    int size = starling_comm_size(p->comm), rank = starling_comm_rank(p->comm), rc;
    size_t nbytes = count * esize(dt), total = count * (size_t)size;
    void *send = buf_alloc(nbytes), *recv = buf_alloc(total * esize(dt));
    uint64_t call = p->call++;
    char what[128];
    want_ctx w;

    snprintf(what, sizeof what, "allgather count=%zu dtype=%s call=%" PRIu64, count,
             dtype_names[dt], call);
    fill_input(send, dt, STARLING_SUM, rank, call, count);
    memset(recv, 0xEE, total * esize(dt));
    rc = starling_allgather(p->comm, send, recv, count, dt, NULL);
    if (expect_ok(p, rc, what)) {
        w = make_want(dt, STARLING_SUM, size, rank, call, count, 0);
        compare(p, what, dt, recv, total, want_gather, &w);
        snprintf(what + strlen(what), sizeof what - strlen(what), " (sendbuf)");
        compare(p, what, dt, send, count, want_input, &w);
    }
    buf_check_guard(p, send, nbytes, what);
    buf_check_guard(p, recv, total * esize(dt), what);
    free(send);
    free(recv);
}

static void run_broadcast(peer *p, size_t count, starling_dtype dt, int root)
{
    int size = starling_comm_size(p->comm), rank = starling_comm_rank(p->comm), rc;
    size_t nbytes = count * esize(dt);
    void *buf = buf_alloc(nbytes);
    uint64_t call = p->call++;
    char what[128];
    want_ctx w;

    snprintf(what, sizeof what, "broadcast count=%zu dtype=%s root=%d call=%" PRIu64, count,
             dtype_names[dt], root, call);
    /* Non-roots start from their own (different) data, so a skipped copy shows. */
    fill_input(buf, dt, STARLING_SUM, rank, call, count);
    rc = starling_broadcast(p->comm, buf, count, dt, root, NULL);
    if (expect_ok(p, rc, what)) {
        w = make_want(dt, STARLING_SUM, size, root, call, count, 0);
        compare(p, what, dt, buf, count, want_input, &w);
    }
    buf_check_guard(p, buf, nbytes, what);
    free(buf);
}

/* Mismatched calls: rank 0 differs from the others in one attribute; every member must
 * get STARLING_E_MISMATCH. By the header the epoch is then aborted: the next collective
 * fails at once, and after starling_update_topology() a matched call works again. */
enum mismatch_kind { MM_COUNT, MM_DTYPE, MM_OP, MM_TAG, MM_KIND, MM_ROOT, MM_COUNT_OF };
static const char *const mismatch_names[] = {"count", "dtype", "op", "tag", "kind", "root"};

static void run_mismatch(peer *p, enum mismatch_kind kind)
{
    int size = starling_comm_size(p->comm), rank = starling_comm_rank(p->comm), rc;
    const size_t count = 1000;
    size_t mycount = count;
    starling_dtype dt = STARLING_F32;
    starling_op op = STARLING_SUM;
    starling_callopts *opts = NULL;
    void *send = buf_alloc(8 * (count + 1) * (size_t)size);
    void *recv = buf_alloc(8 * (count + 1) * (size_t)size);
    uint64_t call = p->call++;
    char what[128];

    if ((rc = starling_callopts_create(&opts)) != STARLING_OK)
        die_rc(p, "starling_callopts_create", rc);
    if (rank == 0) {
        switch (kind) {
        case MM_COUNT: mycount = count + 1; break;
        case MM_DTYPE: dt = STARLING_I32; break;
        case MM_OP: op = STARLING_MAX; break;
        default: break;
        }
    }
    if ((rc = starling_callopts_set_tag(opts, kind == MM_TAG ? 7u + (rank == 0) : 7u)) != 0)
        die_rc(p, "starling_callopts_set_tag", rc);
    fill_input(send, dt, op, rank, call, mycount);
    snprintf(what, sizeof what, "mismatch(%s) on rank 0 call=%" PRIu64, mismatch_names[kind], call);
    if (kind == MM_KIND && rank == 0)
        rc = starling_allgather(p->comm, send, recv, mycount, dt, opts);
    else if (kind == MM_ROOT)
        rc = starling_broadcast(p->comm, send, mycount, dt, rank == 0 ? 0 : 1, opts);
    else
        rc = starling_allreduce(p->comm, send, recv, mycount, dt, op, opts);
    p->checks++;
    if (rc != STARLING_E_MISMATCH) {
        fail(p, "%s: returned %d (%s), want STARLING_E_MISMATCH on every member: %s", what, rc,
             starling_strerror(rc), starling_comm_errmsg(p->comm));
        if (rc == STARLING_E_PEER_LOST || rc == STARLING_E_TIMEOUT || rc == STARLING_E_CLOSED)
            die_rc(p, what, rc);
    } else {
        want_ctx w;
        w = make_want(dt, op, size, rank, call, mycount, 0);
        if (kind != MM_ROOT) { /* a broadcast's buffer is its output */
            snprintf(what + strlen(what), sizeof what - strlen(what), " (sendbuf)");
            compare(p, what, dt, send, mycount, want_input, &w);
        }
        /* The epoch is aborted: a matched call fails at once, without a topology update. */
        p->checks++;
        rc = starling_allreduce(p->comm, send, recv, count, STARLING_F32, STARLING_SUM, NULL);
        if (rc == STARLING_OK)
            fail(p,
                 "mismatch(%s): the next collective succeeded without a topology update "
                 "(the header says the epoch is aborted)",
                 mismatch_names[kind]);
    }
    /* Also after a failed check: the topology update recovers a broken epoch (and merely
     * confirms a healthy one), so the checks after this one still run. */
    if ((rc = starling_update_topology(p->comm)) != STARLING_OK)
        die_rc(p, "starling_update_topology after a mismatch", rc);
    check_membership(p, "topology update after a mismatch");
    if (starling_comm_size(p->comm) != size)
        fail(p, "mismatch(%s): the member count changed from %d to %d", mismatch_names[kind], size,
             starling_comm_size(p->comm));
    starling_callopts_destroy(opts);
    free(send);
    free(recv);
    /* The group must work again. */
    run_allreduce(p, count, STARLING_F32, STARLING_SUM, 0);
}

/* Several collectives in flight at once, told apart by tag, completed out of order. */
static void run_async(peer *p)
{
    enum { NREQ = 3 };
    static const size_t counts[NREQ] = {1000, 4099, 65537};
    static const starling_dtype dts[NREQ] = {STARLING_F32, STARLING_I64, STARLING_F64};
    static const starling_op ops[NREQ] = {STARLING_SUM, STARLING_MAX, STARLING_AVG};
    int size = starling_comm_size(p->comm), rank = starling_comm_rank(p->comm), rc, i, done;
    starling_request *req[NREQ + 3];
    starling_callopts *opts[NREQ + 3];
    void *send[NREQ + 3], *recv[NREQ + 3];
    uint64_t call[NREQ + 3];
    size_t n[NREQ + 3];
    char what[128];
    want_ctx w;

    /* Three all-reduces with tags 101..103. */
    for (i = 0; i < NREQ; i++) {
        n[i] = counts[i] * esize(dts[i]);
        send[i] = buf_alloc(n[i]);
        recv[i] = buf_alloc(n[i]);
        call[i] = p->call++;
        fill_input(send[i], dts[i], ops[i], rank, call[i], counts[i]);
        if ((rc = starling_callopts_create(&opts[i])) != 0 ||
            (rc = starling_callopts_set_tag(opts[i], 101u + (unsigned)i)) != 0)
            die_rc(p, "callopts", rc);
        req[i] = NULL;
        rc = starling_allreduce_async(p->comm, send[i], recv[i], counts[i], dts[i], ops[i], opts[i],
                                      &req[i]);
        if (rc != STARLING_OK || !req[i])
            die_rc(p, "starling_allreduce_async", rc != STARLING_OK ? rc : STARLING_E_INVALID);
    }
    /* request_test on the newest: done or not, it must not fail while in flight. */
    done = -1;
    rc = starling_request_test(req[NREQ - 1], &done);
    if (done != 0 && done != 1)
        fail(p, "starling_request_test left *done = %d", done);
    else if (done == 0 && rc != STARLING_OK)
        fail(p, "starling_request_test: not done but returned %d", rc);
    for (i = NREQ - 1; i >= 0; i--) {
        snprintf(what, sizeof what, "allreduce_async tag=%d count=%zu dtype=%s op=%s", 101 + i,
                 counts[i], dtype_names[dts[i]], op_names[ops[i]]);
        rc = starling_request_wait(req[i]);
        if (expect_ok(p, rc, what)) {
            w = make_want(dts[i], ops[i], size, rank, call[i], counts[i], 0);
            compare(p, what, dts[i], recv[i], counts[i], want_reduce, &w);
            compare(p, what, dts[i], send[i], counts[i], want_input, &w);
            if ((rc = starling_request_wait(req[i])) != STARLING_OK)
                fail(p, "%s: second request_wait returned %d", what, rc);
            done = -1;
            if ((rc = starling_request_test(req[i], &done)) != STARLING_OK || done != 1)
                fail(p, "%s: request_test after completion: rc %d done %d", what, rc, done);
        }
        buf_check_guard(p, recv[i], n[i], what);
        starling_request_free(req[i]);
        starling_callopts_destroy(opts[i]);
        free(send[i]);
        free(recv[i]);
    }
    starling_request_free(NULL);

    /* One of each other kind in flight together (tags 201..203), waited in reverse. */
    {
        const size_t c = 4099;
        const starling_dtype dt = STARLING_I32;
        const int root = size - 1;
        for (i = 0; i < 3; i++) {
            call[i] = p->call++;
            if ((rc = starling_callopts_create(&opts[i])) != 0 ||
                (rc = starling_callopts_set_tag(opts[i], 201u + (unsigned)i)) != 0)
                die_rc(p, "callopts", rc);
            req[i] = NULL;
        }
        n[0] = c * (size_t)size * esize(dt); /* reduce-scatter send */
        send[0] = buf_alloc(n[0]);
        recv[0] = buf_alloc(c * esize(dt));
        fill_input(send[0], dt, STARLING_SUM, rank, call[0], c * (size_t)size);
        rc = starling_reduce_scatter_async(p->comm, send[0], recv[0], c, dt, STARLING_SUM, opts[0],
                                           &req[0]);
        if (rc != STARLING_OK || !req[0])
            die_rc(p, "starling_reduce_scatter_async", rc ? rc : STARLING_E_INVALID);
        n[1] = c * (size_t)size * esize(dt); /* all-gather recv */
        send[1] = buf_alloc(c * esize(dt));
        recv[1] = buf_alloc(n[1]);
        fill_input(send[1], dt, STARLING_SUM, rank, call[1], c);
        rc = starling_allgather_async(p->comm, send[1], recv[1], c, dt, opts[1], &req[1]);
        if (rc != STARLING_OK || !req[1])
            die_rc(p, "starling_allgather_async", rc ? rc : STARLING_E_INVALID);
        send[2] = buf_alloc(c * esize(dt));
        recv[2] = NULL;
        fill_input(send[2], dt, STARLING_SUM, rank, call[2], c);
        rc = starling_broadcast_async(p->comm, send[2], c, dt, root, opts[2], &req[2]);
        if (rc != STARLING_OK || !req[2])
            die_rc(p, "starling_broadcast_async", rc ? rc : STARLING_E_INVALID);

        rc = starling_request_wait(req[2]);
        if (expect_ok(p, rc, "broadcast_async tag=203")) {
            w = make_want(dt, STARLING_SUM, size, root, call[2], c, 0);
            compare(p, "broadcast_async tag=203", dt, send[2], c, want_input, &w);
        }
        rc = starling_request_wait(req[1]);
        if (expect_ok(p, rc, "allgather_async tag=202")) {
            w = make_want(dt, STARLING_SUM, size, rank, call[1], c, 0);
            compare(p, "allgather_async tag=202", dt, recv[1], c * (size_t)size, want_gather, &w);
        }
        rc = starling_request_wait(req[0]);
        if (expect_ok(p, rc, "reduce_scatter_async tag=201")) {
            w = make_want(dt, STARLING_SUM, size, rank, call[0], c, (size_t)rank * c);
            compare(p, "reduce_scatter_async tag=201", dt, recv[0], c, want_reduce, &w);
        }
        for (i = 0; i < 3; i++) {
            starling_request_free(req[i]);
            starling_callopts_destroy(opts[i]);
            free(send[i]);
            free(recv[i]);
        }
    }
}

static void mode_collectives(peer *p)
{
    int ci, di, oi, k;
    for (ci = 0; ci < p->opt.ncounts; ci++) {
        size_t count = p->opt.counts[ci];
        for (di = 0; di < p->opt.ndtypes; di++) {
            starling_dtype dt = p->opt.dtypes[di];
            for (oi = 0; oi < p->opt.nops; oi++) {
                run_allreduce(p, count, dt, p->opt.ops[oi], 0);
                run_allreduce(p, count, dt, p->opt.ops[oi], 1);
                run_reduce_scatter(p, count, dt, p->opt.ops[oi]);
            }
            run_allgather(p, count, dt);
            run_broadcast(p, count, dt,
                          (int)((size_t)(ci * 7 + di) % (size_t)starling_comm_size(p->comm)));
        }
        fprintf(stderr, "itest_peer[%s] count %zu done (%ld checks, %ld failures)\n", p->opt.name,
                count, p->checks, p->failures);
    }
    run_async(p);
    for (k = 0; k < MM_COUNT_OF; k++)
        run_mismatch(p, (enum mismatch_kind)k);
    /* Broadcast from every root once. */
    for (k = 0; k < starling_comm_size(p->comm); k++)
        run_broadcast(p, 257, STARLING_U8, k);
}

/* ---------------------------------------------------------------- big mode */

static float big_input(int rank, size_t i)
{
    return (float)((int)((i + (size_t)rank * 7u) % 17u) - 8);
}

static void mode_big(peer *p)
{
    size_t count = p->opt.big_bytes / sizeof(float), i;
    int size = starling_comm_size(p->comm), rank = starling_comm_rank(p->comm), r, rc;
    float *send = buf_alloc(count * sizeof(float)), *recv = buf_alloc(count * sizeof(float));
    long bad = 0;

    for (i = 0; i < count; i++)
        send[i] = big_input(rank, i);
    memset(recv, 0, count * sizeof(float));
    rc = starling_allreduce(p->comm, send, recv, count, STARLING_F32, STARLING_SUM, NULL);
    if (rc != STARLING_OK)
        die_rc(p, "big allreduce", rc);
    p->checks++;
    for (i = 0; i < count; i++) {
        float want = 0;
        for (r = 0; r < size; r++)
            want += big_input(r, i);
        if (recv[i] != want || send[i] != big_input(rank, i)) {
            if (bad < 3)
                fail(p,
                     "big allreduce (%zu bytes): element %zu is %g (input %g), want %g (input "
                     "%g)",
                     count * sizeof(float), i, (double)recv[i], (double)send[i], (double)want,
                     (double)big_input(rank, i));
            bad++;
        }
    }
    if (bad)
        fail(p, "big allreduce: %ld of %zu elements wrong", bad, count);
    buf_check_guard(p, send, count * sizeof(float), "big allreduce");
    buf_check_guard(p, recv, count * sizeof(float), "big allreduce");
    printf("BIG ok bytes=%zu size=%d\n", count * sizeof(float), size);
    free(send);
    free(recv);
}

/* ---------------------------------------------------------------- stream mode */

/* Every member contributes the same values, so the expected sum depends only on the
 * member count and the iteration. */
static float stream_input(long iter, size_t j) { return (float)(iter % 100 + 1 + (long)(j % 7)); }

/* The members agree whether to stop: each votes 1 if the driver's stop file exists, and
 * a max all-reduce makes the decision common (peers see the file at different moments).
 * Returns 0 or 1, or -1 if a member was lost (the caller redoes the topology point). */
static int stream_vote(peer *p)
{
    int32_t mine = p->opt.stop_file && access(p->opt.stop_file, F_OK) == 0, all = -1;
    int rc = starling_allreduce(p->comm, &mine, &all, 1, STARLING_I32, STARLING_MAX, NULL);
    if (rc == STARLING_E_PEER_LOST)
        return -1;
    if (rc != STARLING_OK)
        die_rc(p, "stop-vote allreduce", rc);
    p->checks++;
    if (all != 0 && all != 1) {
        fail(p, "stop vote: max of 0/1 votes is %d", (int)all);
        all = 1;
    }
    return (int)all;
}

/* A stream topology point: topology update, state sync, stop vote. All members pass the
 * same iteration number, so a late joiner learns where the group is from the synced
 * state. Returns the vote. */
static int stream_topology_point(peer *p, long *iterp, const char *why)
{
    int attempt, changed, stop = -1;
    long iter = *iterp;
    for (attempt = 0; attempt < p->opt.max_retries && stop < 0; attempt++) {
        *p->it = iter;
        if (starling_state_set_step(p->comm, (uint64_t)iter) != STARLING_OK)
            fail(p, "starling_state_set_step failed");
        changed = topology_and_sync(p, why);
        if (changed == 1 && p->opt.rejoin) {
            /* Cut off, then let back in as a newcomer: the group's state, which carries
             * its iteration, replaced this peer's. Resume there. */
            long group = (long)*p->it;
            if (starling_state_step(p->comm) != (uint64_t)group)
                fail(p, "rejoin: step %" PRIu64 " after sync differs from the synced iteration %ld",
                     starling_state_step(p->comm), group);
            if (group < iter || group > p->opt.iters) {
                fail(p, "rejoin at iteration %ld: synced iteration %ld out of range", iter, group);
                fflush(stdout);
                exit(EXIT_CHECK);
            }
            printf("REJOINED from=%ld iter=%ld size=%d epoch=%" PRIu64 "\n", iter, group,
                   starling_comm_size(p->comm), starling_comm_epoch(p->comm));
            iter = group;
            *iterp = iter;
        } else if (changed == 1) {
            fail(p, "%s at iteration %ld: a member's state was replaced (members never differ)",
                 why, iter);
        }
        stop = stream_vote(p);
        if (stop < 0) {
            fprintf(stderr, "itest_peer[%s] iteration %ld: peer lost during the stop vote\n",
                    p->opt.name, iter);
            why = "peer-lost";
        }
    }
    if (stop < 0) {
        fprintf(stderr, "itest_peer[%s] FAIL iteration %ld: stop vote lost a peer %d times\n",
                p->opt.name, iter, attempt);
        exit(EXIT_LIBRARY);
    }
    printf("TOPO iter=%ld size=%d epoch=%" PRIu64 " why=%s stop=%d\n", iter,
           starling_comm_size(p->comm), starling_comm_epoch(p->comm), why, stop);
    return stop;
}

static void mode_stream(peer *p)
{
    size_t count = p->opt.stream_count, j;
    float *input = buf_alloc(count * sizeof(float));
    float *send = buf_alloc(count * sizeof(float));
    float *recv = buf_alloc(count * sizeof(float));
    long iter = 0, topo_done_for, retries = 0, lost = 0;
    int stop;
    char hash[33];

    if (p->opt.join) {
        /* The joiner's first sync already happened in first_sync(); the group's position
         * comes with the state. */
        iter = (long)*p->it;
        if (starling_state_step(p->comm) != (uint64_t)iter)
            fail(p, "joiner: step %" PRIu64 " after sync differs from the synced iteration %ld",
                 starling_state_step(p->comm), iter);
        if (iter < 0 || iter > p->opt.iters) {
            fail(p, "joiner: synced iteration %ld out of range", iter);
            fflush(stdout);
            exit(EXIT_CHECK);
        }
        printf("JOINED iter=%ld size=%d epoch=%" PRIu64 "\n", iter, starling_comm_size(p->comm),
               starling_comm_epoch(p->comm));
    }
    /* first_sync() was this iteration's topology update and sync; the vote completes it. */
    stop = stream_vote(p);
    if (stop < 0)
        stop = stream_topology_point(p, &iter, "peer-lost");
    topo_done_for = iter;

    for (;;) {
        int size, rc, inplace;
        float *out;
        if (!stop && (iter % p->opt.topo_every == 0 || iter == p->opt.iters) &&
            topo_done_for != iter) {
            stop = stream_topology_point(p, &iter, iter == p->opt.iters ? "final" : "periodic");
            topo_done_for = iter;
        }
        if (stop || iter >= p->opt.iters)
            break;

        for (j = 0; j < count; j++)
            input[j] = stream_input(iter, j);
        inplace = (int)(iter & 1);
        memcpy(send, input, count * sizeof(float));
        out = inplace ? send : recv;
        if (!inplace)
            memset(recv, 0xEE, count * sizeof(float));
        size = starling_comm_size(p->comm);
        rc = starling_allreduce(p->comm, send, out, count, STARLING_F32, STARLING_SUM, NULL);
        if (rc == STARLING_E_PEER_LOST) {
            lost++;
            p->checks++;
            if (memcmp(send, input, count * sizeof(float)) != 0)
                fail(p,
                     "iteration %ld: %s buffer changed by an all-reduce that failed with "
                     "STARLING_E_PEER_LOST",
                     iter, inplace ? "in-place" : "send");
            fprintf(stderr, "itest_peer[%s] iteration %ld: peer lost (%s), updating topology\n",
                    p->opt.name, iter, starling_comm_errmsg(p->comm));
            if (++retries > p->opt.max_retries) {
                fprintf(stderr, "itest_peer[%s] FAIL iteration %ld: %ld retries\n", p->opt.name,
                        iter, retries);
                exit(EXIT_LIBRARY);
            }
            stop = stream_topology_point(p, &iter, "peer-lost");
            topo_done_for = iter;
            continue;
        }
        if (rc != STARLING_OK)
            die_rc(p, "stream allreduce", rc);
        retries = 0;
        p->checks++;
        for (j = 0; j < count; j++) {
            float want = (float)size * stream_input(iter, j);
            if (out[j] != want) {
                fail(p, "iteration %ld size %d: element %zu is %g, want %g", iter, size, j,
                     (double)out[j], (double)want);
                break;
            }
        }
        if (!inplace && memcmp(send, input, count * sizeof(float)) != 0)
            fail(p, "iteration %ld: sendbuf modified by a successful all-reduce", iter);
        buf_check_guard(p, send, count * sizeof(float), "stream allreduce");
        buf_check_guard(p, recv, count * sizeof(float), "stream allreduce");
        /* Evolve the shared state identically on every member. */
        for (j = 0; j < p->opt.state_count; j++)
            p->w[j] = p->w[j] * 0.5f + out[j % count] * (1.0f / 64);
        printf("ITER %ld %d %" PRIu64 "\n", iter, size, starling_comm_epoch(p->comm));
        iter++;
        sleep_ms(p->opt.sleep_ms);
    }
    state_hash(p, hash);
    fprintf(stderr, "itest_peer[%s] stream done: %ld iterations, %ld lost-peer retries\n",
            p->opt.name, iter, lost);
    free(input);
    free(send);
    free(recv);
    printf("DONE iters=%ld hash=%s wsum=%016" PRIx64 "\n", iter, hash, state_fnv(p));
}

/* ---------------------------------------------------------------- options */

static long parse_long(const char *flag, const char *s, long lo, long hi)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 0);
    if (errno || end == s || *end || v < lo || v > hi)
        usage_error("%s: \"%s\" is not an integer in %ld..%ld", flag, s, lo, hi);
    return v;
}

static size_t parse_size(const char *flag, const char *s)
{
    char *end;
    unsigned long long v;
    errno = 0;
    if (*s == '-')
        usage_error("%s: negative size", flag);
    v = strtoull(s, &end, 0);
    if (errno || end == s || *end || v > (unsigned long long)(SIZE_MAX / 64))
        usage_error("%s: \"%s\" is not a size", flag, s);
    return (size_t)v;
}

static int name_index(const char *name, const char *const *names, int n)
{
    int i;
    for (i = 0; i < n; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

/* Splits a comma-separated list; calls `item` for each element. */
static int split_list(const char *flag, const char *s, char items[MAX_LIST][32])
{
    int n = 0;
    const char *start = s;
    for (;;) {
        const char *comma = strchr(start, ',');
        size_t len = comma ? (size_t)(comma - start) : strlen(start);
        if (n == MAX_LIST || len == 0 || len >= 32)
            usage_error("%s: bad list \"%s\"", flag, s);
        memcpy(items[n], start, len);
        items[n][len] = '\0';
        n++;
        if (!comma)
            break;
        start = comma + 1;
    }
    return n;
}

static void parse_options(options *o, int argc, char **argv)
{
    int i, k;
    char items[MAX_LIST][32];
    const char *counts = "0,1,2,3,7,13,1000,4099,65537";
    const char *dtypes = "f32,f64,f16,bf16,i32,i64,u8";
    const char *ops = "sum,avg,min,max";
    const char *mode = NULL;

    memset(o, 0, sizeof *o);
    o->name = "itest";
    o->big_bytes = 268435456u;
    o->iters = 200;
    o->stream_count = 65536;
    o->topo_every = 8;
    o->max_retries = 20;
    o->seed = 1;
    o->state_count = 100003;
    o->log_level = STARLING_LOG_WARN;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define TAKE()                                                                                     \
    do {                                                                                           \
        if (!v)                                                                                    \
            usage_error("%s needs a value", a);                                                    \
        i++;                                                                                       \
    } while (0)
        if (!strcmp(a, "--coord")) {
            TAKE();
            o->coord = v;
        } else if (!strcmp(a, "--run")) {
            TAKE();
            o->run = v;
        } else if (!strcmp(a, "--name")) {
            TAKE();
            o->name = v;
        } else if (!strcmp(a, "--listen")) {
            TAKE();
            o->listen = v;
        } else if (!strcmp(a, "--mode")) {
            TAKE();
            mode = v;
        } else if (!strcmp(a, "--timeout-ms")) {
            TAKE();
            o->timeout_ms = (int)parse_long(a, v, 1, 86400000);
        } else if (!strcmp(a, "--op-timeout-ms")) {
            TAKE();
            o->op_timeout_ms = (int)parse_long(a, v, 1, 86400000);
        } else if (!strcmp(a, "--min-peers")) {
            TAKE();
            o->min_peers = (int)parse_long(a, v, 1, 4096);
        } else if (!strcmp(a, "--streams")) {
            TAKE();
            o->streams = (int)parse_long(a, v, 1, 64);
        } else if (!strcmp(a, "--chunk-bytes")) {
            TAKE();
            o->chunk_bytes = parse_size(a, v);
        } else if (!strcmp(a, "--counts")) {
            TAKE();
            counts = v;
        } else if (!strcmp(a, "--dtypes")) {
            TAKE();
            dtypes = v;
        } else if (!strcmp(a, "--ops")) {
            TAKE();
            ops = v;
        } else if (!strcmp(a, "--bytes")) {
            TAKE();
            o->big_bytes = parse_size(a, v);
        } else if (!strcmp(a, "--iters")) {
            TAKE();
            o->iters = parse_long(a, v, 0, 100000000);
        } else if (!strcmp(a, "--count")) {
            TAKE();
            o->stream_count = parse_size(a, v);
        } else if (!strcmp(a, "--topo-every")) {
            TAKE();
            o->topo_every = parse_long(a, v, 1, 1000000);
        } else if (!strcmp(a, "--sleep-ms")) {
            TAKE();
            o->sleep_ms = (int)parse_long(a, v, 0, 60000);
        } else if (!strcmp(a, "--max-retries")) {
            TAKE();
            o->max_retries = (int)parse_long(a, v, 1, 1000);
        } else if (!strcmp(a, "--seed")) {
            TAKE();
            o->seed = (uint64_t)parse_size(a, v);
        } else if (!strcmp(a, "--state-count")) {
            TAKE();
            o->state_count = parse_size(a, v);
        } else if (!strcmp(a, "--deadline-s")) {
            TAKE();
            o->deadline_s = (int)parse_long(a, v, 0, 86400);
        } else if (!strcmp(a, "--log-level")) {
            static const char *const levels[] = {"error", "warn", "info", "debug"};
            TAKE();
            o->log_level = strcmp(v, "none") ? name_index(v, levels, 4) : -1;
            if (o->log_level < 0 && strcmp(v, "none"))
                usage_error("--log-level: none, error, warn, info or debug");
        } else if (!strcmp(a, "--stop-file")) {
            TAKE();
            o->stop_file = v;
        } else if (!strcmp(a, "--fresh")) {
            o->fresh = 1;
        } else if (!strcmp(a, "--expect-seeded")) {
            o->expect_seeded = 1;
        } else if (!strcmp(a, "--join")) {
            o->join = 1;
        } else if (!strcmp(a, "--rejoin")) {
            o->rejoin = 1;
        } else if (!strcmp(a, "--no-inbound")) {
            o->no_inbound = 1;
        } else if (!strcmp(a, "--ignore-sigpipe")) {
            o->ignore_sigpipe = 1;
        } else {
            usage_error("unknown argument \"%s\"", a);
        }
#undef TAKE
    }
    if (!o->coord || !o->run || !mode)
        usage_error("--coord, --run and --mode are required");
    if (!strcmp(mode, "collectives"))
        o->mode = MODE_COLLECTIVES;
    else if (!strcmp(mode, "big"))
        o->mode = MODE_BIG;
    else if (!strcmp(mode, "stream"))
        o->mode = MODE_STREAM;
    else if (!strcmp(mode, "badauth"))
        o->mode = MODE_BADAUTH;
    else
        usage_error("--mode: collectives, big, stream or badauth");
    if (o->join && o->mode != MODE_STREAM)
        usage_error("--join is for --mode stream");
    if (o->rejoin && o->mode != MODE_STREAM)
        usage_error("--rejoin is for --mode stream");
    if (o->stream_count == 0 || o->state_count == 0)
        usage_error("--count and --state-count must be positive");

    o->ncounts = split_list("--counts", counts, items);
    for (k = 0; k < o->ncounts; k++)
        o->counts[k] = parse_size("--counts", items[k]);
    o->ndtypes = split_list("--dtypes", dtypes, items);
    for (k = 0; k < o->ndtypes; k++) {
        int d = name_index(items[k], dtype_names, STARLING_DTYPE_COUNT);
        if (d < 0)
            usage_error("--dtypes: unknown dtype \"%s\"", items[k]);
        o->dtypes[k] = (starling_dtype)d;
    }
    o->nops = split_list("--ops", ops, items);
    for (k = 0; k < o->nops; k++) {
        int d = name_index(items[k], op_names, STARLING_OP_COUNT);
        if (d < 0)
            usage_error("--ops: unknown op \"%s\"", items[k]);
        o->ops[k] = (starling_op)d;
    }
}

/* The library's names and sizes must agree with the ones this program uses. */
static void check_naming(peer *p)
{
    int d;
    for (d = 0; d < STARLING_DTYPE_COUNT; d++) {
        const char *n = starling_dtype_name((starling_dtype)d);
        p->checks++;
        if (!n || strcmp(n, dtype_names[d]) != 0)
            fail(p, "starling_dtype_name(%d) is \"%s\", want \"%s\"", d, n ? n : "(null)",
                 dtype_names[d]);
        if (starling_dtype_from_name(dtype_names[d]) != d)
            fail(p, "starling_dtype_from_name(\"%s\") != %d", dtype_names[d], d);
        if (starling_dtype_size((starling_dtype)d) != dtype_sizes[d])
            fail(p, "starling_dtype_size(%s) is %zu, want %zu", dtype_names[d],
                 starling_dtype_size((starling_dtype)d), dtype_sizes[d]);
    }
    for (d = 0; d < STARLING_OP_COUNT; d++) {
        const char *n = starling_op_name((starling_op)d);
        if (!n || strcmp(n, op_names[d]) != 0 || starling_op_from_name(op_names[d]) != d)
            fail(p, "op name of %d is \"%s\", want \"%s\"", d, n ? n : "(null)", op_names[d]);
    }
}

int main(int argc, char **argv)
{
    peer p;
    char hash[33];

    memset(&p, 0, sizeof p);
    parse_options(&p.opt, argc, argv);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (p.opt.deadline_s > 0)
        alarm((unsigned)p.opt.deadline_s); /* default action: the process ends */
    if (p.opt.ignore_sigpipe)
        signal(SIGPIPE, SIG_IGN);
    p.secret = getenv("STARLING_SECRET");
    if (!p.secret || !*p.secret)
        usage_error("STARLING_SECRET must be set to the run's secret");
    if (p.opt.log_level >= 0) {
        starling_log_set_handler(starling_log_stderr, NULL);
        starling_log_set_level((starling_log_level)p.opt.log_level);
    }
    check_naming(&p);

    connect_and_join(&p);
    state_register(&p);
    first_sync(&p);
    switch (p.opt.mode) {
    case MODE_COLLECTIVES: mode_collectives(&p); break;
    case MODE_BIG: mode_big(&p); break;
    case MODE_STREAM: mode_stream(&p); break;
    default: break;
    }
    if (p.opt.mode != MODE_STREAM) {
        state_hash(&p, hash);
        printf("DONE hash=%s wsum=%016" PRIx64 "\n", hash, state_fnv(&p));
    }
    fprintf(stderr, "itest_peer[%s] %ld checks, %ld failures, %" PRIu64 " bytes sent\n", p.opt.name,
            p.checks, p.failures, starling_comm_bytes_sent(p.comm));
    starling_comm_destroy(p.comm);
    free(p.w);
    free(p.it);
    if (p.failures) {
        fprintf(stderr, "itest_peer[%s] FAILED: %ld failed checks\n", p.opt.name, p.failures);
        return EXIT_CHECK;
    }
    return 0;
}
