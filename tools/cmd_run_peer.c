/*
 * cmd_run_peer.c -- `starling run-peer` (hidden): one peer of `starling run`.
 *
 * Started by the run parent (cmd_run.c) with the run's secret in STARLING_SECRET. It
 * joins the run, builds a trainer from the --set KEY=VALUE options and steps it until
 * the configured steps are done; faults the run survives are handled inside
 * starling_trainer_step. The report lines are listed in cmd_run.c.
 *
 * Evaluation costs a forward pass over the test set, so during the run only the member
 * of ring rank 0 evaluates, every --eval-every steps, on a step that ended with a
 * synchronisation (between synchronisations a DiLoCo peer holds its own inner-loop
 * parameters, which say little about the run). At the end every survivor evaluates.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

#define PEER_MAX_SETS 64
/* Once it has said why it failed, a peer waits this long for the parent to end it, so
 * that the parent reads the reason before it sees the exit. */
#define PEER_FAIL_WAIT_MS 10000

typedef struct run_peer {
    int index;
    FILE *rep;
    starling_comm *comm;
    starling_trainer *t;
    uint64_t step;
} run_peer;

static int peer_fail(run_peer *p, const char *what, int rc, const char *detail)
{
    char msg[512];
    if ((!detail || !detail[0]) && p->comm)
        detail = starling_comm_errmsg(p->comm);
    snprintf(msg, sizeof msg, "%s: %s%s%s", what, starling_strerror(rc),
             detail && detail[0] ? ": " : "", detail ? detail : "");
    cli_report(p->rep, "f %d %llu %s", p->index, (unsigned long long)p->step, msg);
    cli_sleep_ms(PEER_FAIL_WAIT_MS);
    fprintf(stderr, "peer-%d: %s\n", p->index, msg);
    return CLI_EXIT_FAIL;
}

static void report_step(run_peer *p, const starling_train_stats *st, double acc, double loss)
{
    cli_report(p->rep, "m %llu %d %.6g %.6g %.6g %llu %d %llu", (unsigned long long)st->step,
               p->index, st->loss, acc, loss, (unsigned long long)st->bytes_sent, st->peers,
               (unsigned long long)st->epoch);
}

int cmd_run_peer(int argc, char **argv)
{
    static const char cmd[] = "run-peer";
    static char log_prefix[40];
    const char *coord = NULL, *run = NULL, *index_t = NULL, *peers_t = NULL, *eval_t = NULL;
    const char *report_every_t = NULL, *timeout_t = NULL, *ckpt_t = NULL, *ckpt_dir = NULL;
    const char *report_t = NULL, *security_t = NULL, *secret;
    const char *set_l[PEER_MAX_SETS];
    long index = 0, peers = 0, eval_every = 0, report_every = 1, timeout_ms = 0, ckpt_every = 0;
    int nset = 0, joiner = 0, verbose = 0, rc, err, k, done = 0, tries;
    uint64_t next_eval, next_ckpt, last_reported = (uint64_t)-1;
    double acc = -1, tloss = -1;
    char name[32], errbuf[256], hash[33];
    starling_train_config *tc = NULL;
    starling_config *cfg = NULL;
    starling_train_stats st;
    run_peer p;
    cli_list sets = {set_l, 0, PEER_MAX_SETS};
    const cli_opt opts[] = {
        CLI_OPT_VALUE("--coord", "HOST:PORT[,...]",
                      "the run's coordinator, or several: active first, then standbys (required)",
                      &coord),
        CLI_OPT_VALUE("--run", "NAME", "the run's name (required)", &run),
        CLI_OPT_VALUE("--index", "I", "this peer's index among the run's children (required)",
                      &index_t),
        CLI_OPT_VALUE("--peers", "N", "members to wait for at the start (required)", &peers_t),
        CLI_OPT_VALUE("--eval-every", "K", "evaluate every K steps while ring rank 0 (required)",
                      &eval_t),
        CLI_OPT_VALUE("--report-every", "K", "report an m line every K steps (default 1)",
                      &report_every_t),
        CLI_OPT_VALUE("--timeout-ms", "N",
                      "failure-detection timeout, 100..600000 ms (default 3000)", &timeout_t),
        CLI_OPT_VALUE("--security", "MODE", CLI_SECURITY_HELP, &security_t),
        CLI_OPT_VALUE("--checkpoint-every", "K",
                      "write a checkpoint every K steps while ring rank 0 (default never)",
                      &ckpt_t),
        CLI_OPT_VALUE("--checkpoint-dir", "DIR",
                      "where checkpoints go (needed with "
                      "--checkpoint-every)",
                      &ckpt_dir),
        CLI_OPT_VALUE("--report-fd", "FD", "the pipe for report lines to the parent (required)",
                      &report_t),
        CLI_OPT_LIST("--set", "KEY=VALUE", "a training key (docs/training.md)", &sets),
        CLI_OPT_FLAG("--joiner", "a newcomer: join a run already under way", &joiner),
        CLI_OPT_FLAG("--verbose", "log the library at info level (default: errors only)", &verbose),
    };
    const cli_cmd c = {cmd, "--coord HOST:PORT --run NAME --index I [options]",
                       "One peer of 'starling run' (started by it, with the run's secret in\n"
                       "$" CLI_SECRET_ENV "): builds a trainer from the --set keys and trains.\n",
                       NULL, opts, sizeof opts / sizeof opts[0]};

    memset(&p, 0, sizeof p);
    cli_ignore_sigpipe();
    if ((rc = cli_parse_opts(&c, argc, argv, 2)))
        return rc;
    nset = sets.n;
    if (!coord || !run || !index_t || !peers_t || !eval_t)
        return cli_usage_error(cmd, "missing options (this command is started by "
                                    "'starling run')");
    if ((rc = cli_get_coords(cmd, "--coord", coord)) ||
        (rc = cli_get_long(cmd, "--index", index_t, 0, 1 << 20, &index)) ||
        (rc = cli_get_long(cmd, "--peers", peers_t, 1, 1 << 16, &peers)) ||
        (rc = cli_get_long(cmd, "--eval-every", eval_t, 1, 100000000, &eval_every)) ||
        (rc = cli_get_long(cmd, "--report-every", report_every_t, 1, 100000000, &report_every)) ||
        (rc = cli_get_long(cmd, "--timeout-ms", timeout_t, 100, 600000, &timeout_ms)) ||
        (rc = cli_get_long(cmd, "--checkpoint-every", ckpt_t, 1, 100000000, &ckpt_every)) ||
        (rc = cli_get_security(cmd, "--security", security_t)))
        return rc;
    if (ckpt_every > 0 && !ckpt_dir)
        return cli_usage_error(cmd, "--checkpoint-every needs --checkpoint-dir");
    p.rep = cli_child_open(cmd, report_t, &secret);
    if (!p.rep)
        return CLI_EXIT_USAGE;
    p.index = (int)index;
    snprintf(name, sizeof name, "peer-%ld", index);
    /* Static: engine threads may still log while the process exits after a failure. */
    snprintf(log_prefix, sizeof log_prefix, "%s:", name);
    starling_log_set_handler(cli_log_prefixed, log_prefix);
    starling_log_set_level(verbose ? STARLING_LOG_INFO : STARLING_LOG_ERROR);

    rc = CLI_EXIT_FAIL;
    err = starling_train_config_create(&tc);
    if (err != STARLING_OK) {
        peer_fail(&p, "training configuration", err, NULL);
        goto out;
    }
    for (k = 0; k < nset; k++) {
        const char *eq = strchr(set_l[k], '=');
        char key[64];
        if (!eq || (size_t)(eq - set_l[k]) >= sizeof key) {
            peer_fail(&p, "training configuration", STARLING_E_INVALID, set_l[k]);
            goto out;
        }
        snprintf(key, sizeof key, "%.*s", (int)(eq - set_l[k]), set_l[k]);
        errbuf[0] = '\0';
        err = starling_train_config_set(tc, key, eq + 1, errbuf, sizeof errbuf);
        if (err != STARLING_OK) {
            peer_fail(&p, "training configuration", err, errbuf);
            goto out;
        }
    }

    err = starling_config_create(&cfg);
    if (err == STARLING_OK)
        err = starling_config_set_min_peers(cfg, (int)peers);
    if (err == STARLING_OK && timeout_t)
        err = starling_config_set_timeout_ms(cfg, (int)timeout_ms);
    if (err == STARLING_OK && security_t)
        err = starling_config_set_security(cfg, security_t);
    if (err == STARLING_OK)
        err = starling_config_set_name(cfg, name);
    if (err != STARLING_OK) {
        peer_fail(&p, "configuration", err, NULL);
        goto out;
    }
    err = starling_comm_create(&p.comm, coord, run, secret, strlen(secret), cfg);
    if (err != STARLING_OK) {
        peer_fail(&p, "connecting to the coordinator", err, starling_last_error());
        goto out;
    }
    /* A member may die while the first ring is being linked: try again. */
    for (tries = 0; tries < 20; tries++)
        if ((err = starling_update_topology(p.comm)) != STARLING_E_PEER_LOST)
            break;
    if (err != STARLING_OK) {
        peer_fail(&p, joiner ? "joining the run" : "forming the first epoch", err, NULL);
        goto out;
    }
    errbuf[0] = '\0';
    err = starling_trainer_create(&p.t, p.comm, tc, errbuf, sizeof errbuf);
    if (err != STARLING_OK) {
        peer_fail(&p, "creating the trainer", err, errbuf);
        goto out;
    }
    memset(&st, 0, sizeof st);
    starling_trainer_stats(p.t, &st, sizeof st);
    p.step = st.step;
    cli_report(p.rep, "r %d %d %d %llu %llu", p.index, starling_comm_rank(p.comm),
               starling_comm_size(p.comm), (unsigned long long)starling_comm_epoch(p.comm),
               (unsigned long long)st.step);

    next_eval = (uint64_t)eval_every;
    next_ckpt = (uint64_t)ckpt_every;
    if (ckpt_every > 0 && mkdir(ckpt_dir, 0777) != 0 && errno != EEXIST) {
        peer_fail(&p, "creating the checkpoint directory", STARLING_E_OS, strerror(errno));
        goto out;
    }
    while (!done) {
        int evaluated = 0;
        if (cli_stop_signal)
            goto out;
        err = starling_trainer_step(p.t, &done);
        if (err != STARLING_OK) {
            peer_fail(&p, "training step", err, NULL);
            goto out;
        }
        err = starling_trainer_stats(p.t, &st, sizeof st);
        if (err != STARLING_OK) {
            peer_fail(&p, "training statistics", err, NULL);
            goto out;
        }
        p.step = st.step;
        /* A newcomer's counter jumps to the run's: evaluate from there on. */
        while (next_eval + (uint64_t)eval_every <= st.step)
            next_eval += (uint64_t)eval_every;
        if (!done && st.step >= next_eval && st.synced && starling_comm_rank(p.comm) == 0) {
            err = starling_trainer_evaluate(p.t, &acc, &tloss);
            if (err != STARLING_OK) {
                peer_fail(&p, "evaluation", err, NULL);
                goto out;
            }
            evaluated = 1;
        }
        if (st.step >= next_eval && st.synced)
            next_eval = st.step - st.step % (uint64_t)eval_every + (uint64_t)eval_every;
        if (ckpt_every > 0 && st.step >= next_ckpt && st.synced) {
            if (starling_comm_rank(p.comm) == 0) {
                err = starling_trainer_checkpoint(p.t, ckpt_dir);
                if (err != STARLING_OK) {
                    peer_fail(&p, "writing a checkpoint", err, ckpt_dir);
                    goto out;
                }
            }
            next_ckpt = st.step - st.step % (uint64_t)ckpt_every + (uint64_t)ckpt_every;
        }
        /* The last step is reported after the loop, with the final evaluation. */
        if (!done && (evaluated || st.step % (uint64_t)report_every == 0) &&
            (st.step != last_reported || evaluated)) {
            report_step(&p, &st, evaluated ? acc : -1.0, evaluated ? tloss : -1.0);
            last_reported = st.step;
        }
    }
    err = starling_trainer_evaluate(p.t, &acc, &tloss);
    if (err != STARLING_OK) {
        peer_fail(&p, "final evaluation", err, NULL);
        goto out;
    }
    report_step(&p, &st, acc, tloss);
    err = starling_state_hash_hex(p.comm, hash);
    if (err != STARLING_OK) {
        peer_fail(&p, "state hash", err, NULL);
        goto out;
    }
    cli_report(p.rep, "h %d %s %llu", p.index, hash, (unsigned long long)st.step);
    cli_report(p.rep, "d %d %llu %.6f %.6f %llu %d %llu %llu", p.index, (unsigned long long)st.step,
               acc, tloss, (unsigned long long)starling_comm_bytes_sent(p.comm), st.recoveries,
               (unsigned long long)st.local_steps, (unsigned long long)st.rounds_cut);
    rc = CLI_EXIT_OK;
out:
    /* On failure, exit without the orderly leave: the parent ends the others anyway, and
     * leaving could block on a broken run. */
    if (rc == CLI_EXIT_OK) {
        starling_trainer_destroy(p.t);
        starling_comm_destroy(p.comm);
    }
    starling_config_destroy(cfg);
    starling_train_config_destroy(tc);
    fclose(p.rep);
    return rc;
}
