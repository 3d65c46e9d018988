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
 *   d INDEX STEP ACC LOSS BYTES RECOVERIES LOCAL CUT
 *                                     done, with the final evaluation, the inner steps
 *                                     it computed and the rounds it closed at the deadline
 *   f INDEX STEP MESSAGE              a fatal error; the peer then waits to be killed
 *
 * --byzantine K --attack NAME makes the last K starting peers (indices N-K..N-1)
 * Byzantine: run_spawn_peer passes them one more training key, attack=NAME. Newcomers are
 * honest. --aggregator SPEC (with --nnm: "nnm+SPEC") and --f F (default K) go to every
 * peer as the keys aggregator and f. --slow RANK:FACTOR gives starting peer RANK the key
 * slow=FACTOR (cmd_run_roles.c).
 *
 * The parent validates every flag, including each training key through a throwaway
 * starling_train_config, before it starts anything (cmd_run_opts.c). The fault schedule
 * is cmd_run_faults.c; the progress line and the files written, cmd_run_output.c; the
 * pieces share cmd_run.h.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd_run.h"

/* ------------------------------------------------------------ peers */

int run_spawn_peer(run_state *s, int index, int joiner)
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
    if (o->security) {
        args[na++] = (char *)"--security";
        args[na++] = (char *)o->security;
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
    if (index < o->peers && o->slow_set[index][0]) {
        args[na++] = (char *)"--set";
        args[na++] = o->slow_set[index];
    }
    args[na] = NULL;
    child = cli_group_spawn(s->g, name, args);
    return child;
}

static int run_on_line(void *user, cli_group *g, int child, const char *line)
{
    run_state *s = user;
    run_kid *kid;
    unsigned long long step, bytes, epoch, local, cut;
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
        run_metrics_row(s, step, index, loss, acc, tloss, bytes, peers, epoch);
        run_apply_schedule(s, child, step);
        run_show_progress(s);
        return 0;
    }
    if (sscanf(line, "r %d %d %d %llu %llu %c", &index, &rank, &size, &epoch, &step, &tail) == 5 &&
        index == child) {
        kid->admitted = 1;
        if (child >= s->o->peers)
            run_say(s,
                    "peer-%d admitted: rank %d of %d in epoch %llu; it receives the shared "
                    "state at its first synchronisation",
                    index, rank, size, epoch);
        else if (s->o->verbose)
            run_say(s, "peer-%d admitted: rank %d of %d, epoch %llu, step %llu", index, rank, size,
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
    if (sscanf(line, "d %d %llu %lf %lf %llu %d %llu %llu %c", &index, &step, &acc, &tloss, &bytes,
               &rec, &local, &cut, &tail) == 8 &&
        index == child) {
        kid->local_steps = local;
        kid->rounds_cut = cut;
        kid->finished = 1;
        kid->final_acc = acc;
        kid->final_loss = tloss;
        kid->bytes = bytes;
        kid->recoveries = rec;
        if (step > s->max_step)
            s->max_step = step;
        run_end_late_joiners(s);
        return 0;
    }
    if (sscanf(line, "f %d %llu %c", &index, &step, &tail) == 3 && index == child) {
        const char *msg = strchr(line + 2, ' ');
        msg = msg ? strchr(msg + 1, ' ') : NULL;
        if (kid->frozen_ever) {
            /* Frozen past the failure timeout, it was expelled: an expected casualty. */
            run_say(s, "peer-%d (frozen earlier) was dropped from the run: %s", child,
                    msg ? msg + 1 : "");
            cli_group_kill(g, child);
            kid->killed = 1;
            kid->dropped = 1;
            return 0;
        }
        run_clear_progress(s);
        fprintf(stderr, "starling run: peer-%d failed at step %llu: %s\n", child, step,
                msg ? msg + 1 : "");
        kid->failed = 1;
        return 1;
    }
    run_clear_progress(s);
    fprintf(stderr, "starling run: unexpected report from %s: '%s'\n", g->kids[child].name, line);
    return 1;
}

/* ------------------------------------------------------------ the job */

/* The coordinator on a thread, the peers, their report lines until every one has ended
 * (or the deadline), then the result. */
static int run_job(run_opts *o)
{
    char secret[33];
    cli_local_coord lc;
    cli_group g;
    run_state *s;
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

    if (run_metrics_open(s) != 0) {
        free(s);
        return CLI_EXIT_FAIL;
    }

    /* One BLAS thread per peer: N peers already share the cores. */
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    cli_install_stop_handlers();
    starling_log_set_handler(cli_log_prefixed, (void *)"coordinator:");
    starling_log_set_level(o->verbose ? STARLING_LOG_INFO : STARLING_LOG_ERROR);
    if (cli_local_coord_start(&lc, s->run, secret, (int)o->timeout_ms, o->peers, o->security) !=
        0) {
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
    run_thaw_start(s);

    if (o->synthetic && o->data)
        run_say(s, "data: synthetic stand-in for Fashion-MNIST (--data %s)", o->data);
    else if (o->synthetic)
        run_say(s,
                "data: synthetic stand-in for Fashion-MNIST (%s not found; install "
                "dataset-fashion-mnist for the real one)",
                RUN_DEFAULT_DATA);
    else
        run_say(s, "data: Fashion-MNIST from %s", o->data ? o->data : RUN_DEFAULT_DATA);
    {
        const char *c = run_set_value(o, "compress");
        const char *h = run_set_value(o, "inner_steps");
        run_say(s, "plan: %d peers, %s%s%s, %ld steps%s%s; coordinator %s", o->peers, o->algo,
                h ? " H=" : "", h ? h : "", o->steps, c ? ", outer gradients " : "", c ? c : "",
                s->addr);
        for (k = 0; k < o->nkills; k++)
            run_say(s, "plan: kill peer-%d at step %ld", o->kills[k].rank, o->kills[k].step);
        for (k = 0; k < o->nfreezes; k++)
            run_say(s, "plan: freeze peer-%d at step %ld for %g s", o->freezes[k].rank,
                    o->freezes[k].step, o->freezes[k].secs);
        for (k = 0; k < o->njoins; k++)
            run_say(s, "plan: a newcomer joins after step %ld", o->joins[k].step);
    }

    for (k = 0; k < o->peers; k++)
        if (run_spawn_peer(s, k, 0) < 0)
            goto done;
    deadline = cli_now() + (double)o->deadline_s;
    waited = cli_group_wait(&g, deadline, run_on_line, s) == 0;
    /* Every kill scheduled must have happened for the run to count. */
    for (k = 0; k < o->nkills; k++)
        if (waited && !o->kills[k].done) {
            run_clear_progress(s);
            fprintf(stderr, "starling run: peer-%d never reached step %ld to be killed\n",
                    o->kills[k].rank, o->kills[k].step);
            waited = 0;
        }
    run_thaw_stop(s);
    cli_group_kill_all(&g);
    rc = run_finish(s, waited);
done:
    run_thaw_stop(s);
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

int cmd_run(int argc, char **argv)
{
    run_opts *o = NULL;
    int rc = run_opts_parse(argc, argv, &o);
    if (rc != 0)
        return rc;
    rc = run_job(o);
    run_opts_free(o);
    return rc;
}
