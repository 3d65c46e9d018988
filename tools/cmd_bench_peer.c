/*
 * cmd_bench_peer.c -- `starling bench-peer` (hidden): one peer of `starling bench`.
 *
 * Started by the bench parent (cmd_bench.c) with the run's secret in STARLING_SECRET.
 * For each size: buffers are allocated once and touched before any timing (a fresh
 * buffer costs a page fault per 4 KiB, which would swamp the network figures), then
 * W warm-up calls, then K timed calls, each preceded by a 4-byte all-reduce so that
 * every member starts the timed call together. The first timed result is checked.
 *
 * With --compress SPEC the input is random (a compressed sum of the integer test pattern
 * would say little about real data); the first timed result is compared with an
 * uncompressed all-reduce of the same input ("e" report line: max and RMS error, RMS of
 * the exact result) and its hash with every other member's (bit parity).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cli.h"

#define PEER_MAX_SIZES 64

typedef struct bench_peer {
    char who[48]; /* "bench-peer-2" or "bench-peer-2 (rank 1)" */
    starling_comm *comm;
    FILE *rep;
    int peers, iters, warmup, rank, size;
    starling_dtype dtype;
    starling_op op;
    starling_callopts *opts; /* carries the codec; NULL without --compress */
    int compressed;
} bench_peer;

static int peer_fail(const bench_peer *p, const char *what, int rc)
{
    const char *detail = p->comm ? starling_comm_errmsg(p->comm) : starling_last_error();
    fprintf(stderr, "%s: %s failed: %s%s%s\n", p->who, what, starling_strerror(rc),
            detail && detail[0] ? ": " : "", detail ? detail : "");
    return CLI_EXIT_FAIL;
}

static uint64_t peak_rss_bytes(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (uint64_t)ru.ru_maxrss * 1024u; /* Linux reports KiB */
}

/* Roughly normal values (sum of four uniforms), different on every rank. */
static void fill_random(float *x, size_t n, int rank)
{
    uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)(rank + 1);
    for (size_t i = 0; i < n; i++) {
        float v = 0.0f;
        for (int k = 0; k < 4; k++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            v += (float)(s >> 40) / (float)(1 << 24);
        }
        x[i] = v - 2.0f;
    }
}

static uint64_t fnv1a(const void *buf, size_t n)
{
    const unsigned char *b = buf;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* Error of the compressed result against the exact one, and parity across members. */
static int check_compressed(bench_peer *p, int idx, const float *got, const float *ref,
                            size_t count)
{
    double maxerr = 0.0, se = 0.0, sr = 0.0;
    int64_t mine, *all;
    int err, ok = 1;
    for (size_t i = 0; i < count; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= maxerr))
            maxerr = d; /* NaN propagates */
        se += d * d;
        sr += (double)ref[i] * (double)ref[i];
    }
    all = calloc((size_t)p->size, sizeof *all);
    if (!all) {
        fprintf(stderr, "%s: out of memory\n", p->who);
        return CLI_EXIT_FAIL;
    }
    mine = (int64_t)fnv1a(got, count * sizeof *got);
    err = starling_allgather(p->comm, &mine, all, 1, STARLING_I64, NULL);
    if (err != STARLING_OK) {
        free(all);
        return peer_fail(p, "parity all-gather", err);
    }
    for (int r = 0; r < p->size; r++)
        ok &= all[r] == mine;
    free(all);
    if (!ok) {
        fprintf(stderr, "%s: PARITY VIOLATION: members hold different compressed results\n",
                p->who);
        return CLI_EXIT_FAIL;
    }
    if (p->rank == 0)
        cli_report(p->rep, "e %d %.9e %.9e %.9e", idx, maxerr,
                   count ? sqrt(se / (double)count) : 0.0,
                   count ? sqrt(sr / (double)count) : 0.0);
    return CLI_EXIT_OK;
}

static int bench_one_size(bench_peer *p, int idx, uint64_t nbytes)
{
    size_t esize = starling_dtype_size(p->dtype);
    size_t count = (size_t)(nbytes / esize);
    void *send = NULL, *recv = NULL, *ref = NULL;
    double *times = NULL;
    float bar_send = 1.0f, bar_recv = 0.0f;
    uint64_t sent = 0;
    int rc = CLI_EXIT_FAIL, k, err;
    char why[256], what[64];

    if (posix_memalign(&send, 4096, (size_t)nbytes) != 0 ||
        posix_memalign(&recv, 4096, (size_t)nbytes) != 0) {
        fprintf(stderr, "%s: cannot allocate 2 x %llu bytes\n", p->who, (unsigned long long)nbytes);
        goto out;
    }
    times = calloc((size_t)p->iters, sizeof *times);
    if (!times) {
        fprintf(stderr, "%s: out of memory\n", p->who);
        goto out;
    }
    if (p->compressed) {
        fill_random(send, count, p->rank);
        ref = malloc((size_t)nbytes);
        if (!ref) {
            fprintf(stderr, "%s: out of memory\n", p->who);
            goto out;
        }
        err = starling_allreduce(p->comm, send, ref, count, p->dtype, p->op, NULL);
        if (err != STARLING_OK) {
            rc = peer_fail(p, "uncompressed reference all-reduce", err);
            goto out;
        }
    } else {
        cli_pattern_fill(send, count, p->dtype, p->rank, 0);
    }
    memset(recv, 0, (size_t)nbytes);

    for (k = 0; k < p->warmup; k++) {
        err = starling_allreduce(p->comm, send, recv, count, p->dtype, p->op, p->opts);
        if (err != STARLING_OK) {
            snprintf(what, sizeof what, "warm-up all-reduce of %llu bytes",
                     (unsigned long long)nbytes);
            rc = peer_fail(p, what, err);
            goto out;
        }
    }
    for (k = 0; k < p->iters; k++) {
        struct timespec t0, t1;
        uint64_t b0, b1;

        /* Poison the output so a call that wrote nothing cannot pass the check. */
        if (k == 0)
            memset(recv, 0xff, (size_t)nbytes);
        err =
            starling_allreduce(p->comm, &bar_send, &bar_recv, 1, STARLING_F32, STARLING_SUM, NULL);
        if (err != STARLING_OK) {
            rc = peer_fail(p, "barrier all-reduce", err);
            goto out;
        }
        b0 = starling_comm_bytes_sent(p->comm);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        err = starling_allreduce(p->comm, send, recv, count, p->dtype, p->op, p->opts);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        b1 = starling_comm_bytes_sent(p->comm);
        if (err != STARLING_OK) {
            snprintf(what, sizeof what, "all-reduce of %llu bytes", (unsigned long long)nbytes);
            rc = peer_fail(p, what, err);
            goto out;
        }
        times[k] = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
        sent += b1 - b0;
        if (k == 0 && p->compressed) {
            if (check_compressed(p, idx, recv, ref, count) != CLI_EXIT_OK)
                goto out;
        } else if (k == 0 && cli_pattern_check(recv, count, p->dtype, p->op, p->size, 0, why,
                                               sizeof why) != 0) {
            fprintf(stderr, "%s: WRONG RESULT of the all-reduce of %llu bytes: %s\n", p->who,
                    (unsigned long long)nbytes, why);
            goto out;
        }
    }
    if (p->rank == 0)
        for (k = 0; k < p->iters; k++)
            cli_report(p->rep, "t %d %.9e", idx, times[k]);
    cli_report(p->rep, "p %d %d %llu %llu", idx, p->rank, (unsigned long long)sent,
               (unsigned long long)peak_rss_bytes());
    rc = CLI_EXIT_OK;
out:
    free(times);
    free(send);
    free(recv);
    free(ref);
    return rc;
}

int cmd_bench_peer(int argc, char **argv)
{
    static const char cmd[] = "bench-peer";
    static char log_prefix[40];
    const char *coord = NULL, *run = NULL, *index_t = NULL, *peers_t = NULL, *bytes_t = NULL;
    const char *iters_t = NULL, *warmup_t = NULL, *streams_t = NULL, *dtype_t = NULL;
    const char *op_t = NULL, *timeout_t = NULL, *report_t = NULL, *secret;
    const char *listen_t = NULL; /* data plane address; the library's default is loopback */
    const char *advertise_t = NULL; /* the host the others dial; default: the library's */
    const char *compress_t = NULL, *name_t = NULL, *sockbuf_t = NULL, *security_t = NULL;
    starling_codec *codec = NULL;
    char cerr[160];
    uint64_t bytes[PEER_MAX_SIZES], sockbuf = 0;
    long index = 0, peers = 0, iters = 0, warmup = 0, streams = 1, timeout_ms = 0;
    int verbose = 0, no_inbound = 0, no_shm = 0, nbytes = 0, rc, err, k;
    char name[32];
    starling_config *cfg = NULL;
    bench_peer p;
    const cli_opt opts[] = {
        CLI_OPT_VALUE("--coord", "HOST:PORT[,...]",
                      "the run's coordinator, or several: active first, then standbys (required)",
                      &coord),
        CLI_OPT_VALUE("--run", "NAME", "the run's name (required)", &run),
        CLI_OPT_VALUE("--index", "I", "this peer's index among the bench's children (required)",
                      &index_t),
        CLI_OPT_VALUE("--peers", "N", "members to wait for before the first size (required)",
                      &peers_t),
        CLI_OPT_VALUE("--bytes", "SIZE[,SIZE...]", "buffer sizes, K, M or G suffixes (required)",
                      &bytes_t),
        CLI_OPT_VALUE("--iters", "K", "timed all-reduces per size (required)", &iters_t),
        CLI_OPT_VALUE("--warmup", "W", "untimed all-reduces per size first (default 0)", &warmup_t),
        CLI_OPT_VALUE("--streams", "S", "TCP streams per ring link, 1..16 (default 1)", &streams_t),
        CLI_OPT_VALUE("--dtype", "T", "f32, f64, f16, bf16, i32, i64 or u8 (default f32)",
                      &dtype_t),
        CLI_OPT_VALUE("--op", "OP", "sum, avg, min or max (default sum)", &op_t),
        CLI_OPT_VALUE("--timeout-ms", "N",
                      "failure-detection timeout, 100..600000 ms (default 3000)", &timeout_t),
        CLI_OPT_VALUE("--report-fd", "FD", "the pipe for report lines to the parent (required)",
                      &report_t),
        CLI_OPT_VALUE("--listen", "HOST:PORT", "data-plane address (default 127.0.0.1:0)",
                      &listen_t),
        CLI_OPT_VALUE("--advertise", "HOST",
                      "host the other peers connect to (default: the listen host, or this "
                      "host's side of the coordinator link when listening on a wildcard)",
                      &advertise_t),
        CLI_OPT_FLAG("--no-inbound",
                     "this peer accepts no connections (behind a NAT): it opens its ring "
                     "links itself",
                     &no_inbound),
        CLI_OPT_FLAG("--no-shm", "ring links to peers on this host stay on TCP", &no_shm),
        CLI_OPT_VALUE("--compress", "SPEC", "codec for the all-reduce, f32 only (default none)",
                      &compress_t),
        CLI_OPT_VALUE("--name", "NAME", "peer name, 1..24 characters (default bench-peer-I)",
                      &name_t),
        CLI_OPT_VALUE("--socket-buffer", "SIZE",
                      "socket send and receive buffers, 4K..1G (default: the system's)",
                      &sockbuf_t),
        CLI_OPT_VALUE("--security", "MODE", CLI_SECURITY_HELP, &security_t),
        CLI_OPT_FLAG("--verbose", "log the library at info level (default: warnings)", &verbose),
    };
    const cli_cmd c = {cmd, "--coord HOST:PORT --run NAME --index I --peers N [options]",
                       "One peer of 'starling bench' (started by it, with the run's secret in\n"
                       "$" CLI_SECRET_ENV "): times all-reduces of each size and reports them on\n"
                       "the report pipe.\n",
                       NULL, opts, sizeof opts / sizeof opts[0]};

    memset(&p, 0, sizeof p);
    p.dtype = STARLING_F32;
    p.op = STARLING_SUM;
    cli_ignore_sigpipe();
    if ((rc = cli_parse_opts(&c, argc, argv, 2)))
        return rc;
    if (!coord || !run || !index_t || !peers_t || !bytes_t || !iters_t)
        return cli_usage_error(cmd, "--coord, --run, --index, --peers, --bytes and --iters "
                                    "are required (started by 'starling bench')");
    if ((rc = cli_get_coords(cmd, "--coord", coord)) ||
        (rc = cli_get_host_port(cmd, "--listen", listen_t)) ||
        (rc = cli_get_long(cmd, "--index", index_t, 0, 1 << 20, &index)) ||
        (rc = cli_get_long(cmd, "--peers", peers_t, 1, 1 << 16, &peers)) ||
        (rc = cli_get_long(cmd, "--iters", iters_t, 1, 1000000, &iters)) ||
        (rc = cli_get_long(cmd, "--warmup", warmup_t, 0, 1000000, &warmup)) ||
        (rc = cli_get_long(cmd, "--streams", streams_t, 1, 16, &streams)) ||
        (rc = cli_get_long(cmd, "--timeout-ms", timeout_t, 100, 600000, &timeout_ms)) ||
        (rc = cli_get_dtype(cmd, "--dtype", dtype_t, &p.dtype)) ||
        (rc = cli_get_op(cmd, "--op", op_t, &p.op)) ||
        (rc = cli_get_size_list(cmd, "--bytes", bytes_t, bytes, PEER_MAX_SIZES, &nbytes)) ||
        (rc = cli_get_size(cmd, "--socket-buffer", sockbuf_t, &sockbuf)) ||
        (rc = cli_get_security(cmd, "--security", security_t)))
        return rc;
    if (sockbuf_t && (sockbuf < 4096 || sockbuf > ((uint64_t)1 << 30)))
        return cli_usage_error(cmd, "--socket-buffer: expected 4K..1G, got '%s'", sockbuf_t);
    if (name_t && (strlen(name_t) == 0 || strlen(name_t) > 24))
        return cli_usage_error(cmd, "--name: expected 1..24 characters, got '%s'", name_t);
    if (compress_t && starling_codec_create(&codec, compress_t, cerr, sizeof cerr) != STARLING_OK)
        return cli_usage_error(cmd, "--compress: %s", cerr);
    if (codec && p.dtype != STARLING_F32) {
        starling_codec_destroy(codec);
        return cli_usage_error(cmd, "--compress needs --dtype f32");
    }
    p.rep = cli_child_open(cmd, report_t, &secret);
    if (!p.rep) {
        starling_codec_destroy(codec);
        return CLI_EXIT_USAGE;
    }
    p.peers = (int)peers;
    p.iters = (int)iters;
    p.warmup = (int)warmup;
    if (name_t)
        snprintf(name, sizeof name, "%s", name_t);
    else
        snprintf(name, sizeof name, "bench-peer-%ld", index);
    snprintf(p.who, sizeof p.who, "%s", name);
    /* Static: engine threads may still log while the process exits after a failure. */
    snprintf(log_prefix, sizeof log_prefix, "%s:", name);
    starling_log_set_handler(cli_log_prefixed, log_prefix);
    starling_log_set_level(verbose ? STARLING_LOG_INFO : STARLING_LOG_WARN);

    rc = CLI_EXIT_FAIL;
    err = starling_config_create(&cfg);
    if (err == STARLING_OK)
        err = starling_config_set_min_peers(cfg, p.peers);
    if (err == STARLING_OK)
        err = starling_config_set_streams(cfg, (int)streams);
    if (err == STARLING_OK && timeout_t)
        err = starling_config_set_timeout_ms(cfg, (int)timeout_ms);
    if (err == STARLING_OK)
        err = starling_config_set_name(cfg, name);
    if (err == STARLING_OK && listen_t)
        err = starling_config_set_listen(cfg, listen_t);
    if (err == STARLING_OK && advertise_t)
        err = starling_config_set_advertise(cfg, advertise_t);
    if (err == STARLING_OK && sockbuf_t)
        err = starling_config_set_socket_buffer(cfg, (size_t)sockbuf);
    if (err == STARLING_OK && no_inbound)
        err = starling_config_set_inbound(cfg, 0);
    if (err == STARLING_OK && no_shm)
        err = starling_config_set_shm(cfg, 0);
    if (err == STARLING_OK && security_t)
        err = starling_config_set_security(cfg, security_t);
    if (err == STARLING_OK && codec) {
        p.compressed = 1;
        err = starling_callopts_create(&p.opts);
        if (err == STARLING_OK)
            err = starling_callopts_set_codec(p.opts, codec);
    }
    if (err != STARLING_OK) {
        peer_fail(&p, "configuration", err);
        goto out;
    }
    err = starling_comm_create(&p.comm, coord, run, secret, strlen(secret), cfg);
    if (err != STARLING_OK) {
        peer_fail(&p, "connecting to the coordinator", err);
        goto out;
    }
    err = starling_update_topology(p.comm);
    if (err != STARLING_OK) {
        peer_fail(&p, "joining the run (first topology update)", err);
        goto out;
    }
    p.rank = starling_comm_rank(p.comm);
    p.size = starling_comm_size(p.comm);
    snprintf(p.who, sizeof p.who, "%s (rank %d)", name, p.rank);
    if (p.size != p.peers) {
        fprintf(stderr, "%s: the first epoch has %d members, expected %d\n", p.who, p.size,
                p.peers);
        goto out;
    }
    cli_report(p.rep, "ready %d %d %llu", p.rank, p.size,
               (unsigned long long)starling_comm_epoch(p.comm));
    for (k = 0; k < nbytes; k++)
        if (bench_one_size(&p, k, bytes[k]) != CLI_EXIT_OK)
            goto out;
    rc = CLI_EXIT_OK;
out:
    /* On failure, exit without the orderly leave: the parent kills the others anyway,
     * and leaving could block on a broken run. */
    if (rc == CLI_EXIT_OK)
        starling_comm_destroy(p.comm);
    starling_config_destroy(cfg);
    starling_callopts_destroy(p.opts);
    starling_codec_destroy(codec);
    fclose(p.rep);
    return rc;
}
