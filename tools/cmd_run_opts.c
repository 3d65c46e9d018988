/*
 * cmd_run_opts.c -- the options of `starling run`: its table (and so its --help), and the
 * validation of every flag, the fault schedule's syntax and each training key, before any
 * process starts. The result is a run_opts (cmd_run.h).
 *
 * Training keys reach the peers as "key=value" strings: the flags first, then --set in
 * the order given, the last one winning as in the trainer. Each goes through a throwaway
 * starling_train_config here, so a bad value is a usage error naming it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmd_run.h"

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

const char *run_set_value(const run_opts *o, const char *key)
{
    size_t kl = strlen(key);
    int k;
    for (k = o->nsets - 1; k >= 0; k--)
        if (strncmp(o->sets[k], key, kl) == 0 && o->sets[k][kl] == '=')
            return o->sets[k] + kl + 1;
    return NULL;
}

int run_file_exists(const char *dir, const char *name)
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
        if (!run_file_exists(dir, gz) && !run_file_exists(dir, names[k]))
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

/* ------------------------------------------------------------ the table and the checks */

int run_opts_parse(int argc, char **argv, run_opts **out)
{
    static const char cmd[] = "run";
    const char *peers_t = NULL, *algo_t = NULL, *steps_t = NULL, *inner_t = NULL;
    const char *frag_t = NULL, *compress_t = NULL, *seed_t = NULL, *noniid_t = NULL;
    const char *ckpt_t = NULL, *resume_t = NULL, *out_t = NULL, *timeout_t = NULL;
    const char *hidden_t = NULL, *batch_t = NULL, *lr_t = NULL, *deadline_t = NULL;
    const char *data_t = NULL, *eval_t = NULL, *security_t = NULL;
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
    const char *slow_v[RUN_MAX_PEERS];
    cli_list slow_l = {slow_v, 0, RUN_MAX_PEERS};
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
                     "SIGSTOP peer RANK at STEP, SIGCONT after SECONDS (at most 3600)", &freeze_l),
        CLI_OPT_LIST("--join", "@STEP", "start a newcomer once the run passes STEP", &join_l),
        CLI_OPT_LIST("--slow", "RANK:FACTOR",
                     "starting peer RANK computes FACTOR (1..100) times slower (a straggler)",
                     &slow_l),
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
        CLI_OPT_VALUE("--timeout-ms", "N", "failure-detection timeout, 100..600000 (default 3000)",
                      &timeout_t),
        CLI_OPT_VALUE("--security", "MODE", CLI_SECURITY_HELP, &security_t),
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
        CLI_OPT_VALUE("--attack", "NAME", "sign_flip, noise, alie, ipm, label_flip or garbage",
                      &attack_t),
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
        cli_get_long(cmd, "--f", f_t, 0, RUN_MAX_PEERS, &byz_f) ||
        cli_get_security(cmd, "--security", security_t))
        goto out;
    o->security = security_t;
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
    for (k = 0; k < slow_l.n; k++)
        if ((rc = run_parse_slow(cmd, o, slow_v[k])) != 0)
            goto out;
    if ((rc = run_check_byzantine(cmd, o, byz, attack_t, agg_t, byz_f, nnm)) != 0)
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
        if (!run_file_exists(resume_t, "checkpoint.bin")) {
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
        const char *cs = run_set_value(o, "compress");
        if (o->aggregator[0] && cs &&
            (strstr(cs, "topk") || strstr(cs, "randk") || strstr(cs, "+ef"))) {
            cli_usage_error(cmd,
                            "--compress %s cannot carry the robust all-reduce of "
                            "--aggregator (dense codecs only: none, f16, bf16, int8, int4, fp4; "
                            "no +ef)",
                            cs);
            goto out;
        }
    }
    /* --set may have changed the step count. */
    if (run_set_value(o, "steps")) {
        long s2;
        if (cli_get_long(cmd, "steps", run_set_value(o, "steps"), 2, 100000000, &s2))
            goto out;
        o->steps = s2;
    }
    if (run_set_value(o, "algo"))
        o->algo = run_set_value(o, "algo");
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
    rc = 0;
out:
    starling_train_config_destroy(tc);
    if (rc == 0)
        *out = o;
    else
        run_opts_free(o);
    return rc;
}

void run_opts_free(run_opts *o)
{
    int k;
    if (!o)
        return;
    for (k = 0; k < o->nsets; k++)
        free(o->sets[k]);
    free(o);
}

