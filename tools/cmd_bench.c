/*
 * cmd_bench.c -- `starling bench allreduce|latency`: the parent side.
 *
 * The parent runs a coordinator on a thread, starts N `bench-peer` processes on
 * loopback (cmd_bench_peer.c), collects what they report on their pipes and prints one
 * row (or JSON object) per message size. The peers do all the timing; the parent only
 * does arithmetic on their figures, so its own scheduling does not enter the numbers.
 *
 * Report lines from the peers:
 *   ready RANK SIZE EPOCH            after the first topology update
 *   t IDX SECONDS                    rank 0: one timed all-reduce of size IDX
 *   p IDX RANK SENT_BYTES RSS_BYTES  every rank, after size IDX: payload bytes it sent
 *                                    during the timed calls, its peak RSS so far
 *   e IDX MAXERR RMSERR REFRMS       rank 0, with --compress: error of the first timed
 *                                    result against an uncompressed all-reduce
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define BENCH_MAX_SIZES 64
#define BENCH_MAX_PEERS 64

typedef struct bench_size {
    uint64_t bytes;
    double *times; /* rank 0's timed iterations */
    int ntimes;
    int nreports;     /* "p" lines received */
    double sent_mean; /* payload bytes sent per timed call, averaged over peers */
    uint64_t rss0;    /* rank 0's peak RSS */
    double maxerr, rmserr, refrms; /* --compress: rank 0's "e" line */
    int have_err;
    int done;
} bench_size;

typedef struct bench_run {
    int peers, iters, warmup, streams, json, verbose, no_shm;
    long timeout_ms; /* 0: library default */
    const char *compress; /* codec spec, or NULL */
    const char *security; /* aead, chacha20 or none */
    starling_dtype dtype;
    starling_op op;
    bench_size sizes[BENCH_MAX_SIZES];
    int nsizes;
    int next_row; /* rows are printed in size order, as soon as complete */
    int nready;
} bench_run;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double ring_bytes(int peers, uint64_t bytes)
{
    return 2.0 * (double)(peers - 1) / (double)peers * (double)bytes;
}

/* JSON numbers: integers without a fraction, others with enough digits. */
static void json_number(char *buf, size_t cap, double v)
{
    if (v == (double)(long long)v && v < 9e15 && v > -9e15)
        snprintf(buf, cap, "%lld", (long long)v);
    else
        snprintf(buf, cap, "%.9g", v);
}

static void print_header(const bench_run *b, const char *coord_addr)
{
    if (b->json)
        return;
    printf("# starling all-reduce: %d peer%s, %s %s, %d stream%s, %d iterations (+%d warm-up), "
           "security %s, links %s, coordinator %s\n",
           b->peers, b->peers == 1 ? "" : "s", starling_dtype_name(b->dtype),
           starling_op_name(b->op), b->streams, b->streams == 1 ? "" : "s", b->iters, b->warmup,
           b->security, b->no_shm ? "tcp" : "shm", coord_addr);
    printf("# busbw = bytes*2(n-1)/n / median; GB/s = 1e9 B/s; ring bound = 2(n-1)/n * bytes\n");
    if (b->compress)
        printf("# codec %s: ratio = ring bound / sent; errors of the first timed result against "
               "an uncompressed all-reduce (rel = rms err / rms of the exact sum)\n",
               b->compress);
    printf("%12s %12s %12s %11s %11s %12s %12s %12s", "size", "median", "min", "algbw GB/s",
           "busbw GB/s", "sent/peer", "ring bound", "rss rank 0");
    if (b->compress)
        printf(" %8s %11s %11s %11s", "ratio", "max err", "rms err", "rel rms");
    printf("\n");
    fflush(stdout);
}

static void print_row(const bench_run *b, bench_size *s)
{
    double *t = s->times, median, min, busbw, algbw;
    char a[32], m[32], mi[32], se[32], rb[32], rs[32];
    int k = s->ntimes;

    qsort(t, (size_t)k, sizeof *t, cmp_double);
    median = k % 2 ? t[k / 2] : 0.5 * (t[k / 2 - 1] + t[k / 2]);
    min = t[0];
    algbw = median > 0 ? (double)s->bytes / median / 1e9 : 0.0;
    busbw = median > 0 ? ring_bytes(b->peers, s->bytes) / median / 1e9 : 0.0;
    if (b->json) {
        char rbj[40], sej[40];
        json_number(rbj, sizeof rbj, ring_bytes(b->peers, s->bytes));
        json_number(sej, sizeof sej, s->sent_mean);
        printf("{\"impl\":\"starling\",\"peers\":%d,\"bytes\":%llu,\"dtype\":\"%s\","
               "\"streams\":%d,\"iters\":%d,\"median_s\":%.9g,\"min_s\":%.9g,"
               "\"busbw_GBps\":%.6g,\"bytes_sent_per_peer\":%s,\"ring_bytes_per_peer\":%s,"
               "\"peak_rss_bytes\":%llu,\"op\":\"%s\",\"warmup\":%d,\"algbw_GBps\":%.6g,"
               "\"security\":\"%s\",\"links\":\"%s\"",
               b->peers, (unsigned long long)s->bytes, starling_dtype_name(b->dtype), b->streams,
               b->iters, median, min, busbw, sej, rbj, (unsigned long long)s->rss0,
               starling_op_name(b->op), b->warmup, algbw, b->security, b->no_shm ? "tcp" : "shm");
        if (b->compress)
            printf(",\"codec\":\"%s\",\"max_err\":%.9g,\"rms_err\":%.9g,\"ref_rms\":%.9g",
                   b->compress, s->maxerr, s->rmserr, s->refrms);
        printf("}\n");
    } else {
        printf("%12s %12s %12s %11.4f %11.4f %12s %12s %12s",
               cli_format_bytes((double)s->bytes, a, sizeof a),
               cli_format_seconds(median, m, sizeof m), cli_format_seconds(min, mi, sizeof mi),
               algbw, busbw, cli_format_bytes(s->sent_mean, se, sizeof se),
               cli_format_bytes(ring_bytes(b->peers, s->bytes), rb, sizeof rb),
               cli_format_bytes((double)s->rss0, rs, sizeof rs));
        if (b->compress)
            printf(" %8.2f %11.3e %11.3e %11.3e",
                   s->sent_mean > 0 ? ring_bytes(b->peers, s->bytes) / s->sent_mean : 0.0,
                   s->maxerr, s->rmserr, s->refrms > 0 ? s->rmserr / s->refrms : 0.0);
        printf("\n");
    }
    fflush(stdout);
}

static int bench_on_line(void *user, cli_group *g, int child, const char *line)
{
    bench_run *b = user;
    int idx, rank, size;
    unsigned long long epoch, sent, rss;
    double sec, e1, e2, e3;
    char tail;

    if (sscanf(line, "e %d %lf %lf %lf %c", &idx, &e1, &e2, &e3, &tail) == 4) {
        if (idx < 0 || idx >= b->nsizes || !b->compress || b->sizes[idx].have_err)
            goto bad;
        b->sizes[idx].maxerr = e1;
        b->sizes[idx].rmserr = e2;
        b->sizes[idx].refrms = e3;
        b->sizes[idx].have_err = 1;
        return 0;
    }
    if (sscanf(line, "t %d %lf %c", &idx, &sec, &tail) == 2) {
        if (idx < 0 || idx >= b->nsizes || b->sizes[idx].ntimes >= b->iters || !(sec >= 0))
            goto bad;
        b->sizes[idx].times[b->sizes[idx].ntimes++] = sec;
        return 0;
    }
    if (sscanf(line, "p %d %d %llu %llu %c", &idx, &rank, &sent, &rss, &tail) == 4) {
        bench_size *s;
        if (idx < 0 || idx >= b->nsizes || rank < 0 || rank >= b->peers)
            goto bad;
        s = &b->sizes[idx];
        if (s->nreports >= b->peers)
            goto bad;
        s->sent_mean += (double)sent / (double)b->iters / (double)b->peers;
        if (rank == 0)
            s->rss0 = rss;
        s->nreports++;
        while (b->next_row < b->nsizes && b->sizes[b->next_row].nreports == b->peers) {
            s = &b->sizes[b->next_row];
            if (s->ntimes != b->iters) {
                fprintf(stderr,
                        "starling bench: rank 0 reported %d of %d timings for %llu "
                        "bytes\n",
                        s->ntimes, b->iters, (unsigned long long)s->bytes);
                return 1;
            }
            print_row(b, s);
            s->done = 1;
            b->next_row++;
        }
        return 0;
    }
    if (sscanf(line, "ready %d %d %llu %c", &rank, &size, &epoch, &tail) == 3) {
        b->nready++;
        if (b->verbose)
            fprintf(stderr, "starling bench: %s is rank %d of %d (epoch %llu)\n",
                    g->kids[child].name, rank, size, epoch);
        return 0;
    }
bad:
    fprintf(stderr, "starling bench: unexpected report from %s: '%s'\n", g->kids[child].name, line);
    return 1;
}

/* A bound on the whole run, generous for a slow shared machine: start-up, then per call
 * a fixed cost plus the ring's bytes at 100 MB/s, plus filling and checking buffers. */
static double default_deadline_s(const bench_run *b)
{
    double t = 30.0;
    int k;
    for (k = 0; k < b->nsizes; k++) {
        double bytes = (double)b->sizes[k].bytes;
        t += 1.0 + bytes * 4.0 / 1e8 * (double)b->peers / 2.0;
        t += (double)(b->warmup + b->iters) * (0.05 + 2.0 * bytes / 1e8);
    }
    return t;
}

static int run_bench(bench_run *b, double deadline_s)
{
    char secret[33], run[64], addr[64], bytes_list[BENCH_MAX_SIZES * 24];
    char peers_s[16], iters_s[16], warmup_s[16], streams_s[16], timeout_s[24], index_s[16];
    char name[32];
    char *args[32];
    cli_local_coord lc;
    cli_group g;
    size_t off = 0;
    int k, rc = CLI_EXIT_FAIL, na;
    double deadline;

    if (cli_random_hex(secret, 16) != 0) {
        fprintf(stderr, "starling bench: cannot read /dev/urandom\n");
        return CLI_EXIT_FAIL;
    }
    snprintf(run, sizeof run, "bench-%ld", (long)getpid());
    for (k = 0; k < b->nsizes; k++)
        off += (size_t)snprintf(bytes_list + off, sizeof bytes_list - off, "%s%llu", k ? "," : "",
                                (unsigned long long)b->sizes[k].bytes);
    snprintf(peers_s, sizeof peers_s, "%d", b->peers);
    snprintf(iters_s, sizeof iters_s, "%d", b->iters);
    snprintf(warmup_s, sizeof warmup_s, "%d", b->warmup);
    snprintf(streams_s, sizeof streams_s, "%d", b->streams);
    snprintf(timeout_s, sizeof timeout_s, "%ld", b->timeout_ms);

    cli_install_stop_handlers();
    starling_log_set_handler(cli_log_prefixed, (void *)"bench-coordinator:");
    starling_log_set_level(b->verbose ? STARLING_LOG_INFO : STARLING_LOG_WARN);
    if (cli_local_coord_start(&lc, run, secret, (int)b->timeout_ms, b->peers, b->security) != 0)
        return CLI_EXIT_FAIL;
    snprintf(addr, sizeof addr, "%s", lc.addr);
    if (cli_group_init(&g, secret) != 0) {
        cli_local_coord_stop(&lc);
        return CLI_EXIT_FAIL;
    }
    g.verbose = b->verbose;
    print_header(b, addr);

    for (k = 0; k < b->peers; k++) {
        na = 0;
        snprintf(index_s, sizeof index_s, "%d", k);
        snprintf(name, sizeof name, "bench-peer-%d", k);
        args[na++] = (char *)"bench-peer";
        args[na++] = (char *)"--coord";
        args[na++] = addr;
        args[na++] = (char *)"--run";
        args[na++] = run;
        args[na++] = (char *)"--index";
        args[na++] = index_s;
        args[na++] = (char *)"--peers";
        args[na++] = peers_s;
        args[na++] = (char *)"--bytes";
        args[na++] = bytes_list;
        args[na++] = (char *)"--iters";
        args[na++] = iters_s;
        args[na++] = (char *)"--warmup";
        args[na++] = warmup_s;
        args[na++] = (char *)"--streams";
        args[na++] = streams_s;
        args[na++] = (char *)"--dtype";
        args[na++] = (char *)starling_dtype_name(b->dtype);
        args[na++] = (char *)"--op";
        args[na++] = (char *)starling_op_name(b->op);
        if (b->timeout_ms > 0) {
            args[na++] = (char *)"--timeout-ms";
            args[na++] = timeout_s;
        }
        if (b->compress) {
            args[na++] = (char *)"--compress";
            args[na++] = (char *)b->compress;
        }
        args[na++] = (char *)"--security";
        args[na++] = (char *)b->security;
        if (b->verbose)
            args[na++] = (char *)"--verbose";
        if (b->no_shm)
            args[na++] = (char *)"--no-shm";
        args[na] = NULL;
        if (cli_group_spawn(&g, name, args) < 0)
            goto done;
    }

    deadline = cli_now() + deadline_s;
    if (cli_group_wait(&g, deadline, bench_on_line, b) != 0)
        goto done;
    if (b->next_row != b->nsizes) {
        fprintf(stderr, "starling bench: the peers exited without reporting every size\n");
        goto done;
    }
    rc = CLI_EXIT_OK;
done:
    if (rc != CLI_EXIT_OK)
        fprintf(stderr, "starling bench: failed%s\n",
                b->next_row > 0 ? " (rows above are complete)" : "");
    cli_group_kill_all(&g);
    cli_group_free(&g);
    cli_local_coord_stop(&lc);
    memset(secret, 0, sizeof secret);
    return rc;
}

int cmd_bench(int argc, char **argv)
{
    const char *kind, *peers_t = NULL, *bytes_t = NULL, *iters_t = NULL, *warmup_t = NULL;
    const char *streams_t = NULL, *dtype_t = NULL, *op_t = NULL, *timeout_t = NULL;
    const char *deadline_t = NULL, *compress_t = NULL, *security_t = NULL;
    char cmd[32], cerr[160];
    uint64_t bytes[BENCH_MAX_SIZES];
    long peers = 0, iters = 0, warmup = 1, streams = 1, timeout_ms = 0, deadline_s = 0;
    int json = 0, verbose = 0, no_shm = 0, nbytes = 0, rc, k, latency;
    size_t esize;
    bench_run *b;
    const cli_opt opts[] = {
        CLI_OPT_VALUE("--peers", "N", "peer processes to start, 1..64 (required)", &peers_t),
        CLI_OPT_VALUE("--bytes", "SIZE[,SIZE...]",
                      "buffer sizes, K, M or G suffixes, powers of 1024 (required by "
                      "allreduce; latency: 4)",
                      &bytes_t),
        CLI_OPT_VALUE("--iters", "K",
                      "timed all-reduces per size, 1..1000000 (required by allreduce; "
                      "latency: default 100)",
                      &iters_t),
        CLI_OPT_VALUE("--warmup", "W", "untimed all-reduces per size first (default 1)",
                      &warmup_t),
        CLI_OPT_VALUE("--streams", "S", "TCP streams per ring link, 1..16 (default 1)",
                      &streams_t),
        CLI_OPT_VALUE("--dtype", "T", "f32, f64, f16, bf16, i32, i64 or u8 (default f32)",
                      &dtype_t),
        CLI_OPT_VALUE("--op", "OP", "sum, avg, min or max (default sum)", &op_t),
        CLI_OPT_VALUE("--timeout-ms", "N", "failure-detection timeout, 100..600000 (default 3000)",
                      &timeout_t),
        CLI_OPT_VALUE("--deadline-s", "N",
                      "give up after N seconds (default: estimated from sizes and iterations)",
                      &deadline_t),
        CLI_OPT_VALUE("--compress", "SPEC",
                      "codec for the all-reduce, with --dtype f32 and --op sum or avg (default "
                      "none); also reports its error and checks bit parity",
                      &compress_t),
        CLI_OPT_VALUE("--security", "MODE", CLI_SECURITY_HELP, &security_t),
        CLI_OPT_FLAG("--no-shm",
                     "keep every ring link on TCP (default: peers on one host share memory)",
                     &no_shm),
        CLI_OPT_FLAG("--json", "one JSON object per size instead of the table", &json),
        CLI_OPT_FLAG("--verbose", "log the library and the peers at info level", &verbose),
    };
    cli_cmd c = {"bench", "allreduce|latency [options]",
                 "Start a coordinator and N peer processes on loopback and time all-reduces.\n"
                 "Prints per size the median and minimum time, algorithm and bus bandwidth\n"
                 "(busbw = S*2(N-1)/N / t, GB/s = 1e9 B/s), bytes sent per peer against the\n"
                 "ring bound 2(N-1)/N*S, and the peak RSS of rank 0. 'bench latency' is\n"
                 "'bench allreduce --bytes 4'.\n",
                 "'starling bench codec --help': one codec's size, error and speed.\n", opts,
                 sizeof opts / sizeof opts[0]};
    static const char *const kinds[] = {"allreduce", "latency", "codec"};

    if (argc < 3)
        return cli_usage_error("bench", "which benchmark? 'allreduce', 'latency' or 'codec'");
    kind = argv[2];
    if (cli_is_help(kind)) {
        cli_print_help(&c, stdout);
        return CLI_HELP_SHOWN;
    }
    if (strcmp(kind, "codec") == 0)
        return cmd_bench_codec(argc, argv);
    if (strcmp(kind, "allreduce") != 0 && strcmp(kind, "latency") != 0) {
        cli_suggest s;
        const char *near;
        cli_suggest_init(&s, kind, strlen(kind));
        for (k = 0; k < 3; k++)
            cli_suggest_add(&s, kinds[k]);
        near = cli_suggest_result(&s);
        if (near)
            return cli_usage_error("bench", "unknown benchmark '%s' (did you mean '%s'?)", kind,
                                   near);
        return cli_usage_error("bench",
                               "unknown benchmark '%s' ('allreduce', 'latency' or 'codec')", kind);
    }
    latency = kind[0] == 'l';
    snprintf(cmd, sizeof cmd, "bench %s", kind);
    c.name = cmd;
    c.synopsis = "[options]";
    if ((rc = cli_parse_opts(&c, argc, argv, 3)))
        return rc;

    b = calloc(1, sizeof *b);
    if (!b) {
        fprintf(stderr, "starling: out of memory\n");
        return CLI_EXIT_FAIL;
    }
    b->dtype = STARLING_F32;
    b->op = STARLING_SUM;
    if (latency) {
        if (bytes_t) {
            free(b);
            return cli_usage_error(cmd, "--bytes is fixed at 4 (use 'bench allreduce')");
        }
        bytes_t = "4";
        iters = 100;
    }
    rc = CLI_EXIT_USAGE;
    if (!peers_t) {
        cli_usage_error(cmd, "--peers N is required");
        goto out;
    }
    if (!bytes_t) {
        cli_usage_error(cmd, "--bytes SIZE[,SIZE...] is required");
        goto out;
    }
    if (!iters_t && !latency) {
        cli_usage_error(cmd, "--iters K is required");
        goto out;
    }
    if (cli_get_long(cmd, "--peers", peers_t, 1, BENCH_MAX_PEERS, &peers) ||
        cli_get_long(cmd, "--iters", iters_t, 1, 1000000, &iters) ||
        cli_get_long(cmd, "--warmup", warmup_t, 0, 1000000, &warmup) ||
        cli_get_long(cmd, "--streams", streams_t, 1, 16, &streams) ||
        cli_get_long(cmd, "--timeout-ms", timeout_t, 100, 600000, &timeout_ms) ||
        cli_get_long(cmd, "--deadline-s", deadline_t, 1, 7 * 24 * 3600, &deadline_s) ||
        cli_get_dtype(cmd, "--dtype", dtype_t, &b->dtype) ||
        cli_get_op(cmd, "--op", op_t, &b->op) ||
        cli_get_size_list(cmd, "--bytes", bytes_t, bytes, BENCH_MAX_SIZES, &nbytes) ||
        cli_get_security(cmd, "--security", security_t))
        goto out;
    if (compress_t) {
        starling_codec *codec = NULL;
        if (starling_codec_create(&codec, compress_t, cerr, sizeof cerr) != STARLING_OK) {
            cli_usage_error(cmd, "--compress: %s", cerr);
            goto out;
        }
        starling_codec_destroy(codec);
        if (b->dtype != STARLING_F32 || (b->op != STARLING_SUM && b->op != STARLING_AVG)) {
            cli_usage_error(cmd, "--compress needs --dtype f32 and --op sum or avg");
            goto out;
        }
    }
    if (!cli_pattern_supported(b->dtype, b->op)) {
        cli_usage_error(cmd, "--op %s is not defined for --dtype %s", starling_op_name(b->op),
                        starling_dtype_name(b->dtype));
        goto out;
    }
    esize = starling_dtype_size(b->dtype);
    for (k = 0; k < nbytes; k++) {
        if (bytes[k] < esize || bytes[k] % esize != 0) {
            cli_usage_error(cmd,
                            "--bytes: %llu is not a whole number (>= 1) of %s elements "
                            "(%zu bytes each)",
                            (unsigned long long)bytes[k], starling_dtype_name(b->dtype), esize);
            goto out;
        }
    }

    rc = CLI_EXIT_FAIL;
    b->peers = (int)peers;
    b->iters = (int)iters;
    b->warmup = (int)warmup;
    b->streams = (int)streams;
    b->timeout_ms = timeout_ms;
    b->compress = compress_t;
    b->security = security_t ? security_t : "aead";
    b->json = json;
    b->verbose = verbose;
    b->no_shm = no_shm;
    b->nsizes = nbytes;
    for (k = 0; k < nbytes; k++) {
        b->sizes[k].bytes = bytes[k];
        b->sizes[k].times = calloc((size_t)iters, sizeof(double));
        if (!b->sizes[k].times) {
            fprintf(stderr, "starling: out of memory\n");
            goto out;
        }
    }
    rc = run_bench(b, deadline_s > 0 ? (double)deadline_s : default_deadline_s(b));
out:
    for (k = 0; k < b->nsizes; k++)
        free(b->sizes[k].times);
    free(b);
    return rc;
}
