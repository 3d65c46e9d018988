/*
 * cmd_run.c -- `starling run`: the main job. Trains the built-in model on loopback.
 *
 * The parent runs a coordinator on a thread, starts N `run-peer` processes
 * (cmd_run_peer.c) that train together through the public trainer API, and follows
 * their report pipes: it applies the fault schedule (--kill, --freeze, --join), draws a
 * progress line on a terminal, and writes metrics.csv, summary.json and plot.png.
 *
 * Report lines from the peers (INDEX is the child's index: 0..N-1 at start, N, N+1...
 * for newcomers; it never changes, unlike the ring rank):
 *   r INDEX RANK SIZE EPOCH STEP      admitted (first topology update done)
 *   m STEP INDEX LOSS TESTACC TESTLOSS BYTES PEERS EPOCH
 *                                     after a step (every few steps, and after each
 *                                     evaluation; TESTACC/TESTLOSS -1 when none yet)
 *   h INDEX HASH STEP                 the final shared-state hash
 *   d INDEX STEP ACC LOSS BYTES RECOVERIES
 *                                     done, with the final evaluation
 *   f INDEX STEP MESSAGE              a fatal error; the peer then waits to be killed
 *
 * --byzantine K --attack NAME makes the last K starting peers (indices N-K..N-1)
 * Byzantine: spawn_peer passes them one more training key, attack=NAME. Newcomers are
 * honest. --aggregator SPEC (with --nnm: "nnm+SPEC") and --f F (default K) go to every
 * peer as the keys aggregator and f.
 *
 * The parent validates every flag, including each training key through a throwaway
 * starling_train_config, before it starts anything.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

#define RUN_MAX_PEERS 64
#define RUN_MAX_EVENTS 32
#define RUN_MAX_SETS 64
#define RUN_MAX_CHILDREN (RUN_MAX_PEERS + RUN_MAX_EVENTS)
#define RUN_DEFAULT_DATA "/usr/share/datasets/fashion-mnist"

/* Defaults of `starling run` with no flags (= `make demo`); see the usage text. */
#define RUN_DEFAULT_PEERS 4
#define RUN_DEFAULT_STEPS 2000
#define RUN_DEFAULT_INNER 50
/* Measured on the 2-core reference machine (Fashion-MNIST, the demo's kill and join):
 * batch 64 reaches ~88% and starts to overfit past 2000 steps (4000: 88.7%, test loss
 * rising to 0.75); batch 128 reaches ~89.4% in 2000 steps, in 15-25 s. */
#define RUN_DEFAULT_BATCH "128"
#define RUN_DEFAULT_OUT "./starling-run"

typedef struct run_event {
    int rank;    /* --kill/--freeze: child index */
    long step;   /* the step at which it happens */
    double secs; /* --freeze: duration */
    int done;
} run_event;

typedef struct run_kid {
    int admitted, dropped, late;
    int killed, frozen_ever, failed, finished;
    int have_hash;
    char hash[33];
    unsigned long long hash_step, step, bytes, epoch;
    double loss;
    int peers, recoveries;
    double final_acc, final_loss;
} run_kid;

typedef struct run_opts {
    int peers;
    long steps, inner_steps;
    const char *algo, *compress, *out, *resume, *data;
    long checkpoint_every, timeout_ms, deadline_s;
    int json, verbose, synthetic;
    run_event kills[RUN_MAX_EVENTS], freezes[RUN_MAX_EVENTS], joins[RUN_MAX_EVENTS];
    int nkills, nfreezes, njoins;
    /* every training key as "key=value", in the order given; passed to the peers */
    char *sets[RUN_MAX_SETS];
    int nsets;
    long eval_every, report_every;
    int byzantine;          /* the last `byzantine` starting peers attack */
    char attack_set[64];    /* "attack=NAME", given to those peers only */
    char aggregator[160];   /* the effective spec ("nnm+" included), "" = plain average */
} run_opts;

typedef struct run_state {
    run_opts *o;
    cli_group *g;
    FILE *csv;
    int tty;
    double t0;
    unsigned long long max_step;
    double last_acc, last_test_loss;
    int progress_shown;
    run_kid kids[RUN_MAX_CHILDREN];
    /* spawn arguments, kept for newcomers started mid-run */
    char addr[64], run[64], peers_s[16], timeout_s[16], eval_s[24], report_s[24];
    char ckpt_s[24], ckpt_dir[4096];
    /* --freeze: SIGCONT is sent by a timer thread, since a frozen peer may stall every
     * report line that would otherwise give the parent a chance to act */
    pthread_mutex_t mu;
    pthread_t timer;
    int timer_started, timer_stop;
    pid_t thaw_pid[RUN_MAX_EVENTS];
    double thaw_at[RUN_MAX_EVENTS];
} run_state;

/* ------------------------------------------------------------ option parsing */

static int parse_num(const char *s, long *out, const char **end)
{
    char *e;
    long v;
    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtol(s, &e, 10);
    if (errno || v < 0)
        return -1;
    *out = v;
    *end = e;
    return 0;
}

/* RANK@STEP, RANK@STEP:SECONDS (want_secs) or @STEP (rank < 0 on input). */
static int parse_event(const char *cmd, const char *opt, const char *text, int want_rank,
                       int want_secs, run_event *ev)
{
    const char *p = text;
    long v;
    memset(ev, 0, sizeof *ev);
    ev->rank = -1;
    if (want_rank) {
        if (parse_num(p, &v, &p) != 0 || v > RUN_MAX_PEERS)
            goto bad;
        ev->rank = (int)v;
    }
    if (*p++ != '@')
        goto bad;
    if (parse_num(p, &ev->step, &p) != 0 || ev->step > 100000000)
        goto bad;
    if (want_secs) {
        char *e;
        if (*p++ != ':' || !*p)
            goto bad;
        errno = 0;
        ev->secs = strtod(p, &e);
        if (errno || *e || !(ev->secs > 0.0) || ev->secs > 3600.0)
            goto bad;
    } else if (*p) {
        goto bad;
    }
    return 0;
bad:
    return cli_usage_error(cmd, "%s: expected %s, got '%s'", opt,
                           want_secs   ? "RANK@STEP:SECONDS (seconds > 0, at most 3600)"
                           : want_rank ? "RANK@STEP"
                                       : "@STEP",
                           text);
}

static int add_set(const char *cmd, run_opts *o, const char *key, const char *value)
{
    size_t n = strlen(key) + strlen(value) + 2;
    char *s;
    if (o->nsets >= RUN_MAX_SETS)
        return cli_usage_error(cmd, "too many training options");
    s = malloc(n);
    if (!s) {
        fprintf(stderr, "starling run: out of memory\n");
        return CLI_EXIT_FAIL;
    }
    snprintf(s, n, "%s=%s", key, value);
    o->sets[o->nsets++] = s;
    return 0;
}

/* The value given for `key` (the last one wins, as in the trainer), or NULL. */
static const char *set_value(const run_opts *o, const char *key)
{
    size_t kl = strlen(key);
    int k;
    for (k = o->nsets - 1; k >= 0; k--)
        if (strncmp(o->sets[k], key, kl) == 0 && o->sets[k][kl] == '=')
            return o->sets[k] + kl + 1;
    return NULL;
}

static int file_exists(const char *dir, const char *name)
{
    char path[4352];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int dir_exists(const char *dir)
{
    struct stat st;
    return stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The four IDX files, gzip-compressed or plain. Returns the name of one missing, or NULL. */
static const char *missing_data_file(const char *dir)
{
    static const char *names[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                  "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
    static char gz[64];
    size_t k;
    for (k = 0; k < sizeof names / sizeof names[0]; k++) {
        snprintf(gz, sizeof gz, "%s.gz", names[k]);
        if (!file_exists(dir, gz) && !file_exists(dir, names[k]))
            return gz;
    }
    return NULL;
}

static int mkdir_p(const char *path)
{
    char buf[4096];
    size_t k, n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, path, n + 1);
    for (k = 1; k <= n; k++) {
        if (buf[k] == '/' || buf[k] == '\0') {
            char c = buf[k];
            buf[k] = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return -1;
            buf[k] = c;
        }
    }
    return dir_exists(path) ? 0 : -1;
}

/* ------------------------------------------------------------ output */

static void clear_progress(run_state *s)
{
    if (s->tty && s->progress_shown) {
        fputs("\r\033[K", stdout);
        s->progress_shown = 0;
    }
}

static void say(run_state *s, const char *fmt, ...) CLI_PRINTF(2, 3);
static void say(run_state *s, const char *fmt, ...)
{
    va_list ap;
    clear_progress(s);
    printf("[%7.2fs] ", cli_now() - s->t0);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static int alive_count(const run_state *s)
{
    int k, n = 0;
    for (k = 0; k < s->g->n; k++)
        if (!s->kids[k].killed && !s->kids[k].failed && !s->g->kids[k].reaped)
            n++;
    return n;
}

static double total_bytes(const run_state *s)
{
    double b = 0;
    int k;
    for (k = 0; k < s->g->n; k++)
        b += (double)s->kids[k].bytes;
    return b;
}

static void show_progress(run_state *s)
{
    double loss = 0;
    int k, n = 0;
    static double last_draw;
    double now = cli_now();
    if (!s->tty || now - last_draw < 0.1)
        return;
    last_draw = now;
    for (k = 0; k < s->g->n; k++)
        if (!s->kids[k].killed && s->kids[k].step > 0) {
            loss += s->kids[k].loss;
            n++;
        }
    printf("\r\033[Kstep %llu/%ld  loss %.4f  test acc ", s->max_step, s->o->steps,
           n ? loss / n : 0.0);
    if (s->last_acc >= 0)
        printf("%.2f%%", 100.0 * s->last_acc);
    else
        printf("  -   ");
    printf("  sent %.2f MB  peers %d  %.1f s", total_bytes(s) / 1e6, alive_count(s), now - s->t0);
    fflush(stdout);
    s->progress_shown = 1;
}

/* ------------------------------------------------------------ freeze timer */

static void *timer_main(void *arg)
{
    run_state *s = arg;
    for (;;) {
        int k, stop;
        pthread_mutex_lock(&s->mu);
        stop = s->timer_stop;
        for (k = 0; k < RUN_MAX_EVENTS; k++)
            if (s->thaw_pid[k] > 0 && (stop || cli_now() >= s->thaw_at[k])) {
                kill(s->thaw_pid[k], SIGCONT);
                s->thaw_pid[k] = 0;
            }
        pthread_mutex_unlock(&s->mu);
        if (stop)
            return NULL;
        cli_sleep_ms(20);
    }
}

/* ------------------------------------------------------------ peers */

static int spawn_peer(run_state *s, int index, int joiner)
{
    char index_s[16], name[32];
    char *args[32 + 2 * RUN_MAX_SETS];
    int na = 0, k, child;
    run_opts *o = s->o;

    snprintf(index_s, sizeof index_s, "%d", index);
    snprintf(name, sizeof name, "peer-%d", index);
    args[na++] = (char *)"run-peer";
    args[na++] = (char *)"--coord";
    args[na++] = s->addr;
    args[na++] = (char *)"--run";
    args[na++] = s->run;
    args[na++] = (char *)"--index";
    args[na++] = index_s;
    args[na++] = (char *)"--peers";
    args[na++] = s->peers_s;
    args[na++] = (char *)"--eval-every";
    args[na++] = s->eval_s;
    args[na++] = (char *)"--report-every";
    args[na++] = s->report_s;
    if (o->timeout_ms > 0) {
        args[na++] = (char *)"--timeout-ms";
        args[na++] = s->timeout_s;
    }
    if (o->checkpoint_every > 0) {
        args[na++] = (char *)"--checkpoint-every";
        args[na++] = s->ckpt_s;
        args[na++] = (char *)"--checkpoint-dir";
        args[na++] = s->ckpt_dir;
    }
    if (joiner)
        args[na++] = (char *)"--joiner";
    if (o->verbose)
        args[na++] = (char *)"--verbose";
    for (k = 0; k < o->nsets; k++) {
        args[na++] = (char *)"--set";
        args[na++] = o->sets[k];
    }
    if (o->byzantine > 0 && index >= o->peers - o->byzantine && index < o->peers) {
        args[na++] = (char *)"--set";
        args[na++] = o->attack_set;
    }
    args[na] = NULL;
    child = cli_group_spawn(s->g, name, args);
    return child;
}

static void apply_schedule(run_state *s, int child, unsigned long long step)
{
    run_opts *o = s->o;
    int k;

    for (k = 0; k < o->nkills; k++) {
        run_event *e = &o->kills[k];
        if (!e->done && e->rank == child && step >= (unsigned long long)e->step &&
            !s->g->kids[child].reaped) {
            e->done = 1;
            say(s, "peer-%d reached step %llu: killing it with SIGKILL", child, step);
            cli_group_kill(s->g, child);
            s->kids[child].killed = 1;
        }
    }
    for (k = 0; k < o->nfreezes; k++) {
        run_event *e = &o->freezes[k];
        if (!e->done && e->rank == child && step >= (unsigned long long)e->step &&
            !s->kids[child].killed && !s->g->kids[child].reaped) {
            e->done = 1;
            say(s, "peer-%d reached step %llu: freezing it (SIGSTOP) for %.1f s", child, step,
                e->secs);
            pthread_mutex_lock(&s->mu);
            s->thaw_pid[k] = s->g->kids[child].pid;
            s->thaw_at[k] = cli_now() + e->secs;
            pthread_mutex_unlock(&s->mu);
            s->kids[child].frozen_ever = 1;
            kill(s->g->kids[child].pid, SIGSTOP);
        }
    }
    for (k = 0; k < o->njoins; k++) {
        run_event *e = &o->joins[k];
        int idx;
        if (e->done || s->max_step < (unsigned long long)e->step)
            continue;
        e->done = 1;
        idx = s->g->n;
        if (idx >= RUN_MAX_CHILDREN)
            continue;
        if (spawn_peer(s, idx, 1) < 0)
            continue;
        e->rank = idx; /* from now on, the newcomer's child index */
        say(s, "the run passed step %llu: starting newcomer peer-%d (pid %ld)", s->max_step, idx,
            (long)s->g->kids[idx].pid);
    }
}

/* A newcomer started near the end may find no run left to join: once every admitted
 * peer has finished, one still waiting for admission is stopped, not counted a failure. */
static void end_late_joiners(run_state *s)
{
    int k;
    for (k = 0; k < s->g->n; k++)
        if (s->kids[k].admitted && !s->kids[k].killed && !s->kids[k].failed && !s->kids[k].finished)
            return;
    for (k = s->o->peers; k < s->g->n; k++)
        if (!s->kids[k].admitted && !s->kids[k].killed) {
            say(s, "newcomer peer-%d was not admitted before the run ended: stopping it", k);
            cli_group_kill(s->g, k);
            s->kids[k].killed = 1;
            s->kids[k].late = 1;
        }
}

static int run_on_line(void *user, cli_group *g, int child, const char *line)
{
    run_state *s = user;
    run_kid *kid;
    unsigned long long step, bytes, epoch;
    double loss, acc, tloss;
    int index, peers, rank, size, rec;
    char hex[40], tail;

    if (child < 0 || child >= RUN_MAX_CHILDREN)
        return 1;
    kid = &s->kids[child];
    if (sscanf(line, "m %llu %d %lf %lf %lf %llu %d %llu %c", &step, &index, &loss, &acc, &tloss,
               &bytes, &peers, &epoch, &tail) == 8 &&
        index == child) {
        kid->step = step;
        kid->loss = loss;
        kid->bytes = bytes;
        kid->peers = peers;
        kid->epoch = epoch;
        if (step > s->max_step)
            s->max_step = step;
        if (acc >= 0) {
            s->last_acc = acc;
            s->last_test_loss = tloss;
        }
        if (s->csv)
            fprintf(s->csv, "%llu,%d,%.6f,%.6f,%.6f,%llu,%d,%llu\n", step, index, loss, acc, tloss,
                    bytes, peers, epoch);
        apply_schedule(s, child, step);
        show_progress(s);
        return 0;
    }
    if (sscanf(line, "r %d %d %d %llu %llu %c", &index, &rank, &size, &epoch, &step, &tail) == 5 &&
        index == child) {
        kid->admitted = 1;
        if (child >= s->o->peers)
            say(s,
                "peer-%d admitted: rank %d of %d in epoch %llu; it receives the shared "
                "state at its first synchronisation",
                index, rank, size, epoch);
        else if (s->o->verbose)
            say(s, "peer-%d admitted: rank %d of %d, epoch %llu, step %llu", index, rank, size,
                epoch, step);
        return 0;
    }
    if (sscanf(line, "h %d %32s %llu %c", &index, hex, &step, &tail) == 3 && index == child &&
        strlen(hex) == 32) {
        memcpy(kid->hash, hex, 33);
        kid->hash_step = step;
        kid->have_hash = 1;
        return 0;
    }
    if (sscanf(line, "d %d %llu %lf %lf %llu %d %c", &index, &step, &acc, &tloss, &bytes, &rec,
               &tail) == 6 &&
        index == child) {
        kid->finished = 1;
        kid->final_acc = acc;
        kid->final_loss = tloss;
        kid->bytes = bytes;
        kid->recoveries = rec;
        if (step > s->max_step)
            s->max_step = step;
        end_late_joiners(s);
        return 0;
    }
    if (sscanf(line, "f %d %llu %c", &index, &step, &tail) == 3 && index == child) {
        const char *msg = strchr(line + 2, ' ');
        msg = msg ? strchr(msg + 1, ' ') : NULL;
        if (kid->frozen_ever) {
            /* Frozen past the failure timeout, it was expelled: an expected casualty. */
            say(s, "peer-%d (frozen earlier) was dropped from the run: %s", child,
                msg ? msg + 1 : "");
            cli_group_kill(g, child);
            kid->killed = 1;
            kid->dropped = 1;
            return 0;
        }
        clear_progress(s);
        fprintf(stderr, "starling run: peer-%d failed at step %llu: %s\n", child, step,
                msg ? msg + 1 : "");
        kid->failed = 1;
        return 1;
    }
    clear_progress(s);
    fprintf(stderr, "starling run: unexpected report from %s: '%s'\n", g->kids[child].name, line);
    return 1;
}

/* ------------------------------------------------------------ results */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

typedef struct run_result {
    int completed, survivors, agree;
    const char *hash;
    double acc, loss, wall;
} run_result;

/* JSON has no NaN or Inf: a diverged run (e.g. an unprotected mean under attack) reports
 * its loss as null. */
static void json_num(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.6f", v);
    else
        fputs("null", f);
}

static void write_summary(FILE *f, const run_state *s, const run_result *r)
{
    const run_opts *o = s->o;
    const char *v;
    int k, first = 1;

    fprintf(f, "{\"algo\":");
    json_str(f, o->algo);
    fprintf(f, ",\"peers\":%d,\"steps\":%ld", o->peers, o->steps);
    if ((v = set_value(o, "inner_steps")))
        fprintf(f, ",\"inner_steps\":%s", v);
    fprintf(f, ",\"test_accuracy\":");
    json_num(f, r->acc);
    fprintf(f, ",\"test_loss\":");
    json_num(f, r->loss);
    fprintf(f, ",\"bytes_sent\":{");
    for (k = 0; k < s->g->n; k++) {
        fprintf(f, "%s\"peer-%d\":%llu", first ? "" : ",", k, s->kids[k].bytes);
        first = 0;
    }
    fprintf(f, "},\"wall_time_s\":%.3f,\"peers_alive\":%d,\"hashes_agree\":%s,\"hash\":", r->wall,
            r->survivors, r->agree ? "true" : "false");
    json_str(f, r->hash ? r->hash : "");
    fprintf(f, ",\"compress\":");
    json_str(f, (v = set_value(o, "compress")) ? v : "none");
    fprintf(f, ",\"byzantine\":%d,\"attack\":", o->byzantine);
    json_str(f, o->byzantine > 0 ? o->attack_set + strlen("attack=") : "none");
    fprintf(f, ",\"aggregator\":");
    json_str(f, o->aggregator[0] ? o->aggregator : "none");
    fprintf(f, ",\"kills\":[");
    for (k = 0, first = 1; k < o->nkills; k++)
        if (o->kills[k].done) {
            fprintf(f, "%s{\"rank\":%d,\"step\":%ld}", first ? "" : ",", o->kills[k].rank,
                    o->kills[k].step);
            first = 0;
        }
    fprintf(f, "],\"freezes\":[");
    for (k = 0, first = 1; k < o->nfreezes; k++)
        if (o->freezes[k].done) {
            fprintf(f, "%s{\"rank\":%d,\"step\":%ld,\"seconds\":%g}", first ? "" : ",",
                    o->freezes[k].rank, o->freezes[k].step, o->freezes[k].secs);
            first = 0;
        }
    fprintf(f, "],\"dropped\":[");
    for (k = 0, first = 1; k < s->g->n; k++)
        if (s->kids[k].dropped) {
            fprintf(f, "%s%d", first ? "" : ",", k);
            first = 0;
        }
    fprintf(f, "],\"joins\":[");
    for (k = 0, first = 1; k < o->njoins; k++)
        if (o->joins[k].done) {
            int idx = o->joins[k].rank;
            fprintf(f, "%s{\"step\":%ld,\"peer\":%d,\"admitted\":%s}", first ? "" : ",",
                    o->joins[k].step, idx, idx >= 0 && s->kids[idx].admitted ? "true" : "false");
            first = 0;
        }
    fprintf(f, "],\"data\":\"%s\",\"completed\":%s,\"options\":{",
            o->synthetic ? "synthetic" : "fashion-mnist", r->completed ? "true" : "false");
    for (k = 0; k < o->nsets; k++) {
        const char *eq = strchr(o->sets[k], '=');
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)(eq - o->sets[k]), o->sets[k]);
        fprintf(f, "%s", k ? "," : "");
        json_str(f, key);
        fputc(':', f);
        json_str(f, eq + 1);
    }
    fprintf(f, "}}\n");
}

/* Loss and accuracy against steps and against MB sent, per peer, with gnuplot. */
static void write_plot(const run_state *s)
{
    char path[4200], cmdline[4400];
    FILE *gp;
    int n = s->g->n;

    if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
        printf("plot: gnuplot not found, plot.png skipped (apt-get install gnuplot-nox)\n");
        return;
    }
    snprintf(path, sizeof path, "%s/plot.png", s->o->out);
    snprintf(cmdline, sizeof cmdline, "cd '%s' && gnuplot 2>/dev/null", s->o->out);
    if (strchr(s->o->out, '\'')) {
        printf("plot: output directory name contains a quote, plot.png skipped\n");
        return;
    }
    gp = popen(cmdline, "w");
    if (!gp) {
        printf("plot: cannot run gnuplot, plot.png skipped\n");
        return;
    }
    fprintf(gp,
            "set terminal pngcairo size 1400,1000 noenhanced\n"
            "set output 'plot.png'\n"
            "set datafile separator ','\n"
            "set key autotitle columnhead\n"
            "set multiplot layout 2,2 title 'starling run: %s, %d peers, %ld steps'\n"
            "set grid\n",
            s->o->algo, s->o->peers, s->o->steps);
    /* Column 2 is the peer: rows of other peers become NaN and are skipped. Test
     * accuracy comes from whichever peer evaluated (ring rank 0 during the run, every
     * survivor at the end): one series. */
    fprintf(gp, "set datafile missing NaN\n");
    fprintf(gp,
            "set xlabel 'step'\nset ylabel 'training loss (mini-batch)'\nset logscale y\n"
            "plot for [p=0:%d] 'metrics.csv' using 1:(column(2)==p ? $3 : NaN) "
            "with lines title sprintf('peer-%%d', p)\n",
            n - 1);
    fprintf(gp, "unset logscale y\nset xlabel 'step'\nset ylabel 'test accuracy'\n"
                "plot 'metrics.csv' using 1:($4 >= 0 ? $4 : NaN) with linespoints pt 7 "
                "title 'test accuracy'\n");
    fprintf(gp,
            "set xlabel 'MB sent by the peer'\nset ylabel 'training loss (mini-batch)'\n"
            "set logscale y\n"
            "plot for [p=0:%d] 'metrics.csv' using ($6/1e6):(column(2)==p ? $3 : NaN) "
            "with points pt 7 ps 0.3 title sprintf('peer-%%d', p)\n",
            n - 1);
    fprintf(gp, "unset logscale y\nset xlabel 'MB sent by the evaluating peer'\n"
                "set ylabel 'test accuracy'\n"
                "plot 'metrics.csv' using ($6/1e6):($4 >= 0 ? $4 : NaN) with points pt 7 "
                "title 'test accuracy'\n");
    fprintf(gp, "unset multiplot\nset output\n");
    if (pclose(gp) != 0 || !file_exists(s->o->out, "plot.png"))
        printf("plot: gnuplot failed, plot.png not written\n");
}

static int finish(run_state *s, int waited_ok)
{
    run_opts *o = s->o;
    run_result r;
    char path[4200];
    FILE *f;
    int k, missing = 0;
    unsigned long long hash_step = 0;

    memset(&r, 0, sizeof r);
    r.wall = cli_now() - s->t0;
    r.agree = 1;
    r.acc = -1;
    r.loss = -1;
    /* A peer frozen past the failure timeout is expelled by the others; if it then trained
     * on alone, its state is not the run's. It is reported as dropped, not as a survivor
     * that disagrees: the run's state is the one most finished peers hold. */
    {
        const char *major = NULL;
        int best = 0, j;
        for (k = 0; k < s->g->n; k++) {
            int c = 0;
            if (s->kids[k].killed || !s->kids[k].have_hash)
                continue;
            for (j = 0; j < s->g->n; j++)
                c += !s->kids[j].killed && s->kids[j].have_hash &&
                     strcmp(s->kids[j].hash, s->kids[k].hash) == 0;
            if (c > best) {
                best = c;
                major = s->kids[k].hash;
            }
        }
        for (k = 0; major && k < s->g->n; k++)
            if (s->kids[k].frozen_ever && !s->kids[k].killed && s->kids[k].have_hash &&
                strcmp(s->kids[k].hash, major) != 0) {
                say(s,
                    "peer-%d, frozen past the failure timeout, was dropped from the run and "
                    "trained on alone; its state is not counted",
                    k);
                s->kids[k].killed = 1;
                s->kids[k].dropped = 1;
            }
    }
    for (k = 0; k < s->g->n; k++) {
        run_kid *kid = &s->kids[k];
        if (kid->killed)
            continue;
        if (!kid->finished || !kid->have_hash) {
            missing++;
            r.agree = 0;
            continue;
        }
        r.survivors++;
        if (!r.hash) {
            r.hash = kid->hash;
            hash_step = kid->hash_step;
            r.acc = kid->final_acc;
            r.loss = kid->final_loss;
        } else if (strcmp(r.hash, kid->hash) != 0 || kid->hash_step != hash_step) {
            r.agree = 0;
        }
    }
    if (r.survivors == 0)
        r.agree = 0;
    r.completed = waited_ok && missing == 0 && r.survivors > 0;
    clear_progress(s);

    snprintf(path, sizeof path, "%s/summary.json", o->out);
    f = fopen(path, "w");
    if (f) {
        write_summary(f, s, &r);
        if (fclose(f) != 0)
            fprintf(stderr, "starling run: writing %s failed\n", path);
    } else {
        fprintf(stderr, "starling run: cannot write %s: %s\n", path, strerror(errno));
    }
    if (s->csv) {
        fclose(s->csv);
        s->csv = NULL;
    }
    if (s->g->n > 0 && s->max_step > 0)
        write_plot(s);

    printf("\nresult: %s after %.1f s: %d peer%s alive", r.completed && r.agree ? "OK" : "FAILED",
           r.wall, r.survivors, r.survivors == 1 ? "" : "s");
    if (r.acc >= 0)
        printf(", test accuracy %.2f%%, test loss %.4f", 100.0 * r.acc, r.loss);
    printf("\n");
    for (k = 0; k < s->g->n; k++) {
        char b[32];
        run_kid *kid = &s->kids[k];
        printf("  peer-%-3d %-9s sent %10s  %s%s\n", k,
               kid->late       ? "too late"
               : kid->dropped  ? "dropped"
               : kid->killed   ? "killed"
               : kid->finished ? "finished"
               : kid->failed   ? "failed"
                               : "unfinished",
               cli_format_bytes((double)kid->bytes, b, sizeof b), kid->have_hash ? "hash " : "",
               kid->have_hash ? kid->hash : "");
    }
    printf("state hashes of the survivors: %s\n", r.agree ? "all equal" : "DIFFER or missing");
    printf("outputs: %s/metrics.csv, %s/summary.json, %s/plot.png\n", o->out, o->out, o->out);
    if (o->json)
        write_summary(stdout, s, &r);
    fflush(stdout);
    return r.completed && r.agree ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

static int run_job(run_opts *o)
{
    char secret[33];
    cli_local_coord lc;
    cli_group g;
    run_state *s;
    char path[4200];
    int k, rc = CLI_EXIT_FAIL, waited;
    double deadline;

    s = calloc(1, sizeof *s);
    if (!s || cli_random_hex(secret, 16) != 0) {
        fprintf(stderr, "starling run: cannot set up (memory or /dev/urandom)\n");
        free(s);
        return CLI_EXIT_FAIL;
    }
    s->o = o;
    s->g = &g;
    s->tty = isatty(STDOUT_FILENO);
    s->last_acc = -1;
    s->t0 = cli_now();
    pthread_mutex_init(&s->mu, NULL);
    snprintf(s->run, sizeof s->run, "run-%ld", (long)getpid());
    snprintf(s->peers_s, sizeof s->peers_s, "%d", o->peers);
    snprintf(s->timeout_s, sizeof s->timeout_s, "%ld", o->timeout_ms);
    snprintf(s->eval_s, sizeof s->eval_s, "%ld", o->eval_every);
    snprintf(s->report_s, sizeof s->report_s, "%ld", o->report_every);
    snprintf(s->ckpt_s, sizeof s->ckpt_s, "%ld", o->checkpoint_every);
    snprintf(s->ckpt_dir, sizeof s->ckpt_dir, "%s/checkpoint", o->out);

    snprintf(path, sizeof path, "%s/metrics.csv", o->out);
    s->csv = fopen(path, "w");
    if (!s->csv) {
        fprintf(stderr, "starling run: cannot write %s: %s\n", path, strerror(errno));
        free(s);
        return CLI_EXIT_FAIL;
    }
    fprintf(s->csv, "step,peer,loss,test_accuracy,test_loss,bytes_sent,peers,epoch\n");

    /* One BLAS thread per peer: N peers already share the cores. */
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    cli_install_stop_handlers();
    starling_log_set_handler(cli_log_prefixed, (void *)"coordinator:");
    starling_log_set_level(o->verbose ? STARLING_LOG_INFO : STARLING_LOG_ERROR);
    if (cli_local_coord_start(&lc, s->run, secret, (int)o->timeout_ms, o->peers) != 0) {
        fclose(s->csv);
        free(s);
        return CLI_EXIT_FAIL;
    }
    snprintf(s->addr, sizeof s->addr, "%s", lc.addr);
    if (cli_group_init(&g, secret) != 0) {
        cli_local_coord_stop(&lc);
        fclose(s->csv);
        free(s);
        return CLI_EXIT_FAIL;
    }
    g.verbose = o->verbose;
    if (pthread_create(&s->timer, NULL, timer_main, s) == 0)
        s->timer_started = 1;

    if (o->synthetic && o->data)
        say(s, "data: synthetic stand-in for Fashion-MNIST (--data %s)", o->data);
    else if (o->synthetic)
        say(s,
            "data: synthetic stand-in for Fashion-MNIST (%s not found; install "
            "dataset-fashion-mnist for the real one)",
            RUN_DEFAULT_DATA);
    else
        say(s, "data: Fashion-MNIST from %s", o->data ? o->data : RUN_DEFAULT_DATA);
    {
        const char *c = set_value(o, "compress");
        const char *h = set_value(o, "inner_steps");
        say(s, "plan: %d peers, %s%s%s, %ld steps%s%s; coordinator %s", o->peers, o->algo,
            h ? " H=" : "", h ? h : "", o->steps, c ? ", outer gradients " : "", c ? c : "",
            s->addr);
        for (k = 0; k < o->nkills; k++)
            say(s, "plan: kill peer-%d at step %ld", o->kills[k].rank, o->kills[k].step);
        for (k = 0; k < o->nfreezes; k++)
            say(s, "plan: freeze peer-%d at step %ld for %g s", o->freezes[k].rank,
                o->freezes[k].step, o->freezes[k].secs);
        for (k = 0; k < o->njoins; k++)
            say(s, "plan: a newcomer joins after step %ld", o->joins[k].step);
    }

    for (k = 0; k < o->peers; k++)
        if (spawn_peer(s, k, 0) < 0)
            goto done;
    deadline = cli_now() + (double)o->deadline_s;
    waited = cli_group_wait(&g, deadline, run_on_line, s) == 0;
    /* Every kill scheduled must have happened for the run to count. */
    for (k = 0; k < o->nkills; k++)
        if (waited && !o->kills[k].done) {
            clear_progress(s);
            fprintf(stderr, "starling run: peer-%d never reached step %ld to be killed\n",
                    o->kills[k].rank, o->kills[k].step);
            waited = 0;
        }
    if (s->timer_started) {
        pthread_mutex_lock(&s->mu);
        s->timer_stop = 1;
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->timer, NULL);
        s->timer_started = 0;
    }
    cli_group_kill_all(&g);
    rc = finish(s, waited);
done:
    if (s->timer_started) {
        pthread_mutex_lock(&s->mu);
        s->timer_stop = 1;
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->timer, NULL);
    }
    cli_group_kill_all(&g);
    cli_group_free(&g);
    cli_local_coord_stop(&lc);
    if (s->csv)
        fclose(s->csv);
    pthread_mutex_destroy(&s->mu);
    memset(secret, 0, sizeof secret);
    free(s);
    return rc;
}

/* ------------------------------------------------------------ Byzantine peers */

/* --byzantine K --attack NAME --aggregator SPEC [--f F] [--nnm]: fills o->byzantine,
 * o->attack_set and o->aggregator. The aggregator's requirement on (n, f) is checked for
 * the smallest membership the schedule leads to (the starting peers less the kills), by
 * aggregating that many zero vectors: the rule's own check, with its own message. */
static int check_byzantine(const char *cmd, run_opts *o, long byz, const char *attack,
                           const char *agg_spec, long f, int nnm)
{
    starling_train_config *tc = NULL;
    starling_aggregator *agg = NULL;
    char err[256];
    float *zeros = NULL, out1;
    int n = o->peers - o->nkills, rc = CLI_EXIT_USAGE;

    if (byz > 0 && !attack)
        return cli_usage_error(cmd, "--byzantine needs --attack NAME");
    if (attack && byz == 0)
        return cli_usage_error(cmd, "--attack needs --byzantine K (K >= 1)");
    if (byz >= o->peers)
        return cli_usage_error(cmd, "--byzantine: K %ld must be below --peers %d", byz,
                               o->peers);
    if ((f >= 0 || nnm) && !agg_spec)
        return cli_usage_error(cmd, "%s applies with --aggregator only", nnm ? "--nnm" : "--f");
    o->byzantine = (int)byz;
    if (attack) {
        if (starling_train_config_create(&tc) != STARLING_OK)
            return CLI_EXIT_FAIL;
        if (strcmp(attack, "none") == 0 ||
            starling_train_config_set(tc, "attack", attack, err, sizeof err) != STARLING_OK) {
            starling_train_config_destroy(tc);
            return cli_usage_error(cmd, "--attack: expected sign_flip, noise, alie, ipm, "
                                        "label_flip or garbage, got '%s'", attack);
        }
        starling_train_config_destroy(tc);
        snprintf(o->attack_set, sizeof o->attack_set, "attack=%s", attack);
    }
    if (!agg_spec)
        return 0;
    if (f < 0)
        f = byz;
    if (strlen(agg_spec) > 100)
        return cli_usage_error(cmd, "--aggregator: spec too long");
    if (nnm && strstr(agg_spec, "nnm+"))
        return cli_usage_error(cmd, "--nnm: the spec '%s' already has nnm+", agg_spec);
    {
        /* nnm+ goes after a bucketing prefix ("bucket:S[:seed=N]+"): the grammar's order. */
        const char *rest = agg_spec;
        if (nnm && strncmp(agg_spec, "bucket:", 7) == 0 && strchr(agg_spec, '+'))
            rest = strchr(agg_spec, '+') + 1;
        snprintf(o->aggregator, sizeof o->aggregator, "%.*s%s%s", (int)(rest - agg_spec),
                 agg_spec, nnm ? "nnm+" : "", rest);
    }
    if (starling_aggregator_create(&agg, o->aggregator, err, sizeof err) != STARLING_OK)
        return cli_usage_error(cmd, "--aggregator: %s", err);
    zeros = calloc((size_t)(n > 0 ? n : 1), sizeof *zeros);
    if (!zeros) {
        rc = CLI_EXIT_FAIL;
    } else if (starling_aggregate(agg, zeros, (size_t)n, 1, (int)f, &out1, err, sizeof err) !=
               STARLING_OK) {
        cli_usage_error(cmd, "--aggregator %s with --f %ld and %d peers%s: %s", o->aggregator, f,
                        n, o->nkills ? " (after the kills)" : "", err);
    } else {
        rc = 0;
    }
    free(zeros);
    starling_aggregator_destroy(agg);
    return rc;
}

/* ------------------------------------------------------------ entry */

int cmd_run(int argc, char **argv)
{
    static const char cmd[] = "run";
    const char *peers_t = NULL, *algo_t = NULL, *steps_t = NULL, *inner_t = NULL;
    const char *frag_t = NULL, *compress_t = NULL, *seed_t = NULL, *noniid_t = NULL;
    const char *ckpt_t = NULL, *resume_t = NULL, *out_t = NULL, *timeout_t = NULL;
    const char *hidden_t = NULL, *batch_t = NULL, *lr_t = NULL, *deadline_t = NULL;
    const char *data_t = NULL, *eval_t = NULL;
    const char *byz_t = NULL, *attack_t = NULL, *agg_t = NULL, *f_t = NULL;
    int nnm = 0;
    long byz = 0, byz_f = -1;
    const char *kill_v[RUN_MAX_EVENTS], *freeze_v[RUN_MAX_EVENTS], *join_v[RUN_MAX_EVENTS];
    const char *set_v[RUN_MAX_SETS];
    int nkill = 0, nfreeze = 0, njoin = 0, nset = 0, json = 0, verbose = 0, no_faults = 0, rc, k;
    long peers = RUN_DEFAULT_PEERS, v;
    int defaults_schedule;
    starling_train_config *tc = NULL;
    char err[256];
    run_opts *o;
    cli_list kill_l = {kill_v, 0, RUN_MAX_EVENTS}, freeze_l = {freeze_v, 0, RUN_MAX_EVENTS};
    cli_list join_l = {join_v, 0, RUN_MAX_EVENTS}, set_l = {set_v, 0, RUN_MAX_SETS - 16};
    const cli_opt opts[] = {
        CLI_OPT_VALUE("--peers", "N", "peer processes to start, 1..64 (default 4)", &peers_t),
        CLI_OPT_VALUE("--algo", "ALGO", "ddp, diloco or streaming (default diloco)", &algo_t),
        CLI_OPT_VALUE("--steps", "S", "training steps in total, 2..100000000 (default 2000)",
                      &steps_t),
        CLI_OPT_VALUE("--inner-steps", "H",
                      "diloco, streaming: inner steps between synchronisations (default 50)",
                      &inner_t),
        CLI_OPT_VALUE("--fragments", "P",
                      "streaming: parameter fragments synchronised in turn (default 4)", &frag_t),
        CLI_OPT_VALUE("--compress", "SPEC",
                      "codec of the synchronising all-reduce, docs/codecs.md (default int8 with "
                      "diloco, none otherwise)",
                      &compress_t),
        CLI_OPT_LIST("--kill", "RANK@STEP", "SIGKILL starting peer RANK when it reports STEP",
                     &kill_l),
        CLI_OPT_LIST("--freeze", "RANK@STEP:SECONDS",
                     "SIGSTOP peer RANK at STEP, SIGCONT after SECONDS (at most 3600)",
                     &freeze_l),
        CLI_OPT_LIST("--join", "@STEP", "start a newcomer once the run passes STEP", &join_l),
        CLI_OPT_VALUE("--seed", "N", "initial parameters, data order, synthetic data (default 1)",
                      &seed_t),
        CLI_OPT_VALUE("--noniid", "ALPHA",
                      "label skew across peers with this Dirichlet alpha > 0 (default IID)",
                      &noniid_t),
        CLI_OPT_VALUE("--checkpoint-every", "K",
                      "the rank-0 peer writes OUT/checkpoint every K steps (default never)",
                      &ckpt_t),
        CLI_OPT_VALUE("--resume", "DIR", "start from DIR/checkpoint.bin (e.g. OUT/checkpoint)",
                      &resume_t),
        CLI_OPT_VALUE("--out", "DIR", "output directory (default " RUN_DEFAULT_OUT ")", &out_t),
        CLI_OPT_VALUE("--timeout-ms", "N",
                      "failure-detection timeout, 100..600000 (default 3000)", &timeout_t),
        CLI_OPT_VALUE("--deadline-s", "N",
                      "give up after N seconds (default 300 + 0.05 per step per peer, plus the "
                      "freezes)",
                      &deadline_t),
        CLI_OPT_VALUE("--hidden", "W,W", "hidden layer widths, up to 7 (default 256,128)",
                      &hidden_t),
        CLI_OPT_VALUE("--batch", "B", "samples per peer per step (default " RUN_DEFAULT_BATCH ")",
                      &batch_t),
        CLI_OPT_VALUE("--lr", "X", "base learning rate (default 1e-3 with adamw)", &lr_t),
        CLI_OPT_VALUE("--data", "DIR",
                      "Fashion-MNIST IDX files, or synthetic[:N] (default " RUN_DEFAULT_DATA
                      ", the synthetic set when absent)",
                      &data_t),
        CLI_OPT_VALUE("--eval-every", "K", "evaluate every K steps (default 5% of the steps)",
                      &eval_t),
        CLI_OPT_LIST("--set", "KEY=VALUE",
                     "any trainer key (docs/training.md), after the options above; the last wins",
                     &set_l),
        CLI_OPT_FLAG("--no-faults",
                     "no fault schedule (default: peer 1 killed at 40% of the steps, a newcomer "
                     "at 60%)",
                     &no_faults),
        CLI_OPT_VALUE("--byzantine", "K", "the last K starting peers attack (needs --attack)",
                      &byz_t),
        CLI_OPT_VALUE("--attack", "NAME",
                      "sign_flip, noise, alie, ipm, label_flip or garbage", &attack_t),
        CLI_OPT_VALUE("--aggregator", "SPEC",
                      "robust rule every peer aggregates with, e.g. median, krum, geomed "
                      "(docs/aggregation.md; default the plain average)",
                      &agg_t),
        CLI_OPT_VALUE("--f", "F", "Byzantine peers the aggregator assumes (default K)", &f_t),
        CLI_OPT_FLAG("--nnm", "nearest-neighbour mixing before the aggregator", &nnm),
        CLI_OPT_FLAG("--json", "the summary is also the last line of stdout", &json),
        CLI_OPT_FLAG("--verbose", "log the coordinator and the peers at info level", &verbose),
    };
    const cli_cmd c = {
        cmd, "[options]",
        "The main job: start a coordinator and N peer processes on loopback and train the\n"
        "built-in model (an MLP on Fashion-MNIST, or a synthetic stand-in when\n"
        RUN_DEFAULT_DATA " is absent, announced on stdout), through a\n"
        "fault schedule. With no options this is `make demo`.\n",
        "Faults: any --kill, --freeze or --join replaces the default schedule; --no-faults\n"
        "drops it. RANK is the peer's index at start (0..N-1), not its ring rank; STEP is\n"
        "below --steps.\n"
        "Byzantine peers: --byzantine K --attack NAME --aggregator SPEC [--f F] [--nnm].\n"
        "Outputs: OUT/metrics.csv, OUT/summary.json and OUT/plot.png (with gnuplot), and a\n"
        "progress line on a terminal. Exit 0 if the run completed and all survivors' state\n"
        "hashes agree.\n",
        opts, sizeof opts / sizeof opts[0]};

    if ((rc = cli_parse_opts(&c, argc, argv, 2)))
        return rc;
    nkill = kill_l.n;
    nfreeze = freeze_l.n;
    njoin = join_l.n;
    nset = set_l.n;
    o = calloc(1, sizeof *o);
    if (!o) {
        fprintf(stderr, "starling run: out of memory\n");
        return CLI_EXIT_FAIL;
    }
    rc = CLI_EXIT_USAGE;
    o->steps = RUN_DEFAULT_STEPS;
    o->inner_steps = RUN_DEFAULT_INNER;
    o->timeout_ms = 0;
    if (cli_get_long(cmd, "--peers", peers_t, 1, RUN_MAX_PEERS, &peers) ||
        cli_get_long(cmd, "--steps", steps_t, 1, 100000000, &o->steps) ||
        cli_get_long(cmd, "--inner-steps", inner_t, 1, 100000000, &o->inner_steps) ||
        cli_get_long(cmd, "--fragments", frag_t, 1, 1024, &v) ||
        cli_get_long(cmd, "--checkpoint-every", ckpt_t, 1, 100000000, &o->checkpoint_every) ||
        cli_get_long(cmd, "--timeout-ms", timeout_t, 100, 600000, &o->timeout_ms) ||
        cli_get_long(cmd, "--deadline-s", deadline_t, 1, 7 * 24 * 3600, &o->deadline_s) ||
        cli_get_long(cmd, "--eval-every", eval_t, 1, 100000000, &o->eval_every) ||
        cli_get_long(cmd, "--byzantine", byz_t, 0, RUN_MAX_PEERS, &byz) ||
        cli_get_long(cmd, "--f", f_t, 0, RUN_MAX_PEERS, &byz_f))
        goto out;
    o->peers = (int)peers;
    o->algo = algo_t ? algo_t : "diloco";
    if (strcmp(o->algo, "ddp") != 0 && strcmp(o->algo, "diloco") != 0 &&
        strcmp(o->algo, "streaming") != 0) {
        cli_usage_error(cmd, "--algo: expected ddp, diloco or streaming, got '%s'", o->algo);
        goto out;
    }
    if (inner_t && strcmp(o->algo, "ddp") == 0) {
        cli_usage_error(cmd, "--inner-steps applies to diloco and streaming, not ddp");
        goto out;
    }
    if (frag_t && strcmp(o->algo, "streaming") != 0) {
        cli_usage_error(cmd, "--fragments applies to --algo streaming only");
        goto out;
    }
    if (compress_t) {
        starling_codec *codec = NULL;
        if (starling_codec_create(&codec, compress_t, err, sizeof err) != STARLING_OK) {
            cli_usage_error(cmd, "--compress: %s", err);
            goto out;
        }
        starling_codec_destroy(codec);
    }
    o->compress = compress_t ? compress_t : strcmp(o->algo, "diloco") == 0 ? "int8" : NULL;
    if (noniid_t) {
        char *e;
        double a;
        errno = 0;
        a = strtod(noniid_t, &e);
        if (errno || *e || !(a > 0.0) || a > 1e6) {
            cli_usage_error(cmd, "--noniid: expected a Dirichlet alpha > 0, got '%s'", noniid_t);
            goto out;
        }
    }
    if (o->steps < 2) {
        cli_usage_error(cmd, "--steps: at least 2");
        goto out;
    }

    /* The fault schedule. Unless --kill, --freeze, --join or --no-faults is given, it is
     * the demo's: peer 1 dies at 40% of the steps, a newcomer joins at 60%. */
    defaults_schedule = nkill == 0 && nfreeze == 0 && njoin == 0 && !no_faults;
    for (k = 0; k < nkill; k++)
        if ((rc = parse_event(cmd, "--kill", kill_v[k], 1, 0, &o->kills[k])) != 0)
            goto out;
    for (k = 0; k < nfreeze; k++)
        if ((rc = parse_event(cmd, "--freeze", freeze_v[k], 1, 1, &o->freezes[k])) != 0)
            goto out;
    for (k = 0; k < njoin; k++)
        if ((rc = parse_event(cmd, "--join", join_v[k], 0, 0, &o->joins[k])) != 0)
            goto out;
    rc = CLI_EXIT_USAGE;
    o->nkills = nkill;
    o->nfreezes = nfreeze;
    o->njoins = njoin;
    if (no_faults && (nkill || nfreeze || njoin)) {
        cli_usage_error(cmd, "--no-faults contradicts --kill, --freeze and --join");
        goto out;
    }
    if (defaults_schedule && o->peers >= 2) {
        o->kills[0].rank = 1;
        o->kills[0].step = o->steps * 2 / 5;
        o->nkills = 1;
        o->joins[0].rank = -1;
        o->joins[0].step = o->steps * 3 / 5;
        o->njoins = 1;
    }
    for (k = 0; k < o->nkills + o->nfreezes; k++) {
        run_event *e = k < o->nkills ? &o->kills[k] : &o->freezes[k - o->nkills];
        const char *opt = k < o->nkills ? "--kill" : "--freeze";
        if (e->rank >= o->peers) {
            cli_usage_error(cmd, "%s: RANK %d is not a starting peer (0..%d)", opt, e->rank,
                            o->peers - 1);
            goto out;
        }
        if (e->step >= o->steps) {
            cli_usage_error(cmd, "%s: STEP %ld is not below --steps %ld", opt, e->step, o->steps);
            goto out;
        }
    }
    for (k = 0; k < o->nkills; k++) {
        int j;
        for (j = 0; j < k; j++)
            if (o->kills[j].rank == o->kills[k].rank) {
                cli_usage_error(cmd, "--kill: peer %d is killed twice", o->kills[k].rank);
                goto out;
            }
    }
    if (o->nkills >= o->peers) {
        cli_usage_error(cmd, "--kill: at least one of the %d starting peers must survive",
                        o->peers);
        goto out;
    }
    for (k = 0; k < o->njoins; k++)
        if (o->joins[k].step >= o->steps) {
            cli_usage_error(cmd, "--join: STEP %ld is not below --steps %ld", o->joins[k].step,
                            o->steps);
            goto out;
        }
    if ((rc = check_byzantine(cmd, o, byz, attack_t, agg_t, byz_f, nnm)) != 0)
        goto out;
    rc = CLI_EXIT_USAGE;

    /* Files and directories. */
    o->out = out_t ? out_t : RUN_DEFAULT_OUT;
    if (strlen(o->out) > 3800) {
        cli_usage_error(cmd, "--out: path too long");
        goto out;
    }
    if (resume_t) {
        if (!dir_exists(resume_t)) {
            cli_usage_error(cmd, "--resume: '%s' is not a directory", resume_t);
            goto out;
        }
        if (!file_exists(resume_t, "checkpoint.bin")) {
            cli_usage_error(cmd, "--resume: no checkpoint.bin in '%s'", resume_t);
            goto out;
        }
        o->resume = resume_t;
    }
    if (data_t && strncmp(data_t, "synthetic", 9) == 0) {
        o->data = data_t; /* "synthetic" or "synthetic:N", checked by the trainer */
        o->synthetic = 1;
    } else if (data_t) {
        const char *miss;
        if (!dir_exists(data_t)) {
            cli_usage_error(cmd, "--data: '%s' is not a directory", data_t);
            goto out;
        }
        if ((miss = missing_data_file(data_t)) != NULL) {
            cli_usage_error(cmd, "--data: '%s' has no %s (nor its uncompressed form)", data_t,
                            miss);
            goto out;
        }
        o->data = data_t;
    } else {
        o->synthetic = missing_data_file(RUN_DEFAULT_DATA) != NULL;
    }

    /* Training keys: the flags first, then --set in the order given (the last wins). */
    if (add_set(cmd, o, "algo", o->algo))
        goto out;
    {
        char buf[32];
        snprintf(buf, sizeof buf, "%ld", o->steps);
        if (add_set(cmd, o, "steps", buf))
            goto out;
        if (strcmp(o->algo, "ddp") != 0) {
            snprintf(buf, sizeof buf, "%ld", o->inner_steps);
            if (add_set(cmd, o, "inner_steps", buf))
                goto out;
        }
    }
    if ((frag_t && add_set(cmd, o, "fragments", frag_t)) ||
        (o->compress && add_set(cmd, o, "compress", o->compress)) ||
        (seed_t && add_set(cmd, o, "seed", seed_t)) ||
        (noniid_t && add_set(cmd, o, "noniid", noniid_t)) ||
        (hidden_t && add_set(cmd, o, "hidden", hidden_t)) ||
        add_set(cmd, o, "batch", batch_t ? batch_t : RUN_DEFAULT_BATCH) ||
        (lr_t && add_set(cmd, o, "lr", lr_t)) || (o->data && add_set(cmd, o, "data", o->data)) ||
        (o->resume && add_set(cmd, o, "resume", o->resume)))
        goto out;
    if (o->aggregator[0]) {
        char buf[16];
        snprintf(buf, sizeof buf, "%ld", byz_f >= 0 ? byz_f : byz);
        if (add_set(cmd, o, "aggregator", o->aggregator) || add_set(cmd, o, "f", buf))
            goto out;
    }
    for (k = 0; k < nset; k++) {
        const char *eq = strchr(set_v[k], '=');
        char key[64];
        if (!eq || eq == set_v[k] || (size_t)(eq - set_v[k]) >= sizeof key) {
            cli_usage_error(cmd, "--set: expected KEY=VALUE, got '%s'", set_v[k]);
            goto out;
        }
        snprintf(key, sizeof key, "%.*s", (int)(eq - set_v[k]), set_v[k]);
        if (add_set(cmd, o, key, eq + 1))
            goto out;
    }
    /* Every key through a throwaway config: the trainer's own checks, before any process. */
    if (starling_train_config_create(&tc) != STARLING_OK) {
        fprintf(stderr, "starling run: out of memory\n");
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    for (k = 0; k < o->nsets; k++) {
        char key[64];
        const char *eq = strchr(o->sets[k], '=');
        snprintf(key, sizeof key, "%.*s", (int)(eq - o->sets[k]), o->sets[k]);
        err[0] = '\0';
        if (starling_train_config_set(tc, key, eq + 1, err, sizeof err) != STARLING_OK) {
            cli_usage_error(cmd, "%s: %s", o->sets[k], err[0] ? err : "invalid");
            goto out;
        }
    }
    if (o->byzantine > 0 &&
        starling_train_config_set(tc, "attack", o->attack_set + strlen("attack="), err,
                                  sizeof err) != STARLING_OK) {
        cli_usage_error(cmd, "--attack: %s", err);
        goto out;
    }
    /* What the trainer would refuse at create, refused here before anything starts. */
    if (o->aggregator[0] || o->byzantine > 0) {
        const char *cs = set_value(o, "compress");
        if (o->aggregator[0] && cs &&
            (strstr(cs, "topk") || strstr(cs, "randk") || strstr(cs, "+ef"))) {
            cli_usage_error(cmd, "--compress %s cannot carry the robust all-reduce of "
                                 "--aggregator (dense codecs only: none, f16, bf16, int8, int4; "
                                 "no +ef)", cs);
            goto out;
        }
    }
    /* --set may have changed the step count. */
    if (set_value(o, "steps")) {
        long s2;
        if (cli_get_long(cmd, "steps", set_value(o, "steps"), 2, 100000000, &s2))
            goto out;
        o->steps = s2;
    }
    if (set_value(o, "algo"))
        o->algo = set_value(o, "algo");
    if (mkdir_p(o->out) != 0) {
        fprintf(stderr, "starling run: cannot create the output directory '%s': %s\n", o->out,
                strerror(errno));
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    o->json = json;
    o->verbose = verbose;
    if (o->eval_every == 0)
        o->eval_every = o->steps / 20 > 0 ? o->steps / 20 : 1;
    o->report_every = o->steps / 500 > 0 ? o->steps / 500 : 1;
    if (o->deadline_s == 0) {
        /* Only a bound against a hang: generous for a loaded 2-core machine. */
        double d = 300.0 + (double)o->steps * 0.05 * (double)o->peers;
        for (k = 0; k < o->nfreezes; k++)
            d += o->freezes[k].secs;
        o->deadline_s = (long)d;
    }
    rc = run_job(o);
out:
    starling_train_config_destroy(tc);
    for (k = 0; k < o->nsets; k++)
        free(o->sets[k]);
    free(o);
    return rc;
}
