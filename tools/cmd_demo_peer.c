/*
 * cmd_demo_peer.c -- `starling demo-peer` (hidden): one peer of `starling demo`.
 *
 * A toy training loop: each step all-reduces 1M f32 values, checks the sum exactly and
 * folds it into a shared "weights" tensor registered with the library. Every step starts
 * with starling_update_topology, which is where deaths and joins take effect; whenever
 * the epoch changes, the members run starling_sync_state, so a newcomer (which makes the
 * same two calls on arrival) receives the majority's weights and step counter.
 *
 * Report lines to the demo parent:
 *   say TEXT                  narrative, printed by the parent
 *   epoch EPOCH SIZE RANK     a new epoch was formed
 *   pace STEP                 about to run step STEP (topology updated, pacing)
 *   step STEP SIZE            step STEP completed (all-reduce checked)
 *   lost STEP                 a collective failed with STARLING_E_PEER_LOST
 *   synced CHANGED STEP       a state sync completed (CHANGED = 1: replaced)
 *   hash HEX STEP RANK        the final state hash
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define DEMO_MAX_LOSSES 50

typedef struct demo_peer {
    char who[32];
    starling_comm *comm;
    FILE *rep;
    int index, joiner, steps, step_ms, join_step, join_size, verbose;
    size_t elements;
    float *send, *recv, *weights;
    uint64_t epoch;
    int rank, size, losses;
} demo_peer;

static void say(demo_peer *p, const char *fmt, ...) CLI_PRINTF(2, 3);
static void say(demo_peer *p, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    cli_report(p->rep, "say %s", text);
}

static int demo_fail(demo_peer *p, const char *what, int rc)
{
    const char *detail = p->comm ? starling_comm_errmsg(p->comm) : starling_last_error();
    fprintf(stderr, "%s: %s failed: %s%s%s\n", p->who, what, starling_strerror(rc),
            detail && detail[0] ? ": " : "", detail ? detail : "");
    return CLI_EXIT_FAIL;
}

static const char *errmsg_or(const demo_peer *p, const char *fallback)
{
    const char *m = starling_comm_errmsg(p->comm);
    return m && m[0] ? m : fallback;
}

/* Takes part in the topology update every member makes at the top of a step; when the
 * epoch changed (or `need_sync`), brings the shared state in line with the majority.
 * A sync interrupted by another death is retried after the next topology update. */
static int demo_topology(demo_peer *p, int need_sync)
{
    for (;;) {
        char hash[33];
        uint64_t epoch;
        int rc, changed = 0, old_size = p->size;

        rc = starling_update_topology(p->comm);
        if (rc != STARLING_OK)
            return demo_fail(p, "topology update", rc);
        epoch = starling_comm_epoch(p->comm);
        if (epoch != p->epoch) {
            p->epoch = epoch;
            p->rank = starling_comm_rank(p->comm);
            p->size = starling_comm_size(p->comm);
            cli_report(p->rep, "epoch %llu %d %d", (unsigned long long)epoch, p->size, p->rank);
            if (p->rank == 0 || p->verbose)
                say(p, "epoch %llu: %d members%s (I am rank %d)", (unsigned long long)epoch,
                    p->size,
                    old_size == 0        ? ""
                    : p->size < old_size ? ", a peer is gone"
                    : p->size > old_size ? ", a peer joined"
                                         : "",
                    p->rank);
            need_sync = 1;
        }
        if (!need_sync)
            return CLI_EXIT_OK;
        rc = starling_sync_state(p->comm, &changed);
        if (rc == STARLING_E_PEER_LOST) {
            if (++p->losses > DEMO_MAX_LOSSES)
                return demo_fail(p, "state sync (too many losses)", rc);
            say(p, "state sync interrupted: %s (%s); updating the topology again",
                starling_strerror(rc), errmsg_or(p, "no detail"));
            cli_report(p->rep, "lost %llu", (unsigned long long)starling_state_step(p->comm));
            continue;
        }
        if (rc != STARLING_OK)
            return demo_fail(p, "state sync", rc);
        rc = starling_state_hash_hex(p->comm, hash);
        if (rc != STARLING_OK)
            return demo_fail(p, "state hash", rc);
        cli_report(p->rep, "synced %d %llu", changed,
                   (unsigned long long)starling_state_step(p->comm));
        if (changed)
            say(p, "my shared state was replaced by the majority's: step %llu, hash %.12s...",
                (unsigned long long)starling_state_step(p->comm), hash);
        else if (p->rank == 0 || p->verbose)
            say(p, "shared state identical on all members: step %llu, hash %.12s...",
                (unsigned long long)starling_state_step(p->comm), hash);
        return CLI_EXIT_OK;
    }
}

/* Runs steps `step`..steps. The caller has just made the topology update of the first
 * step (a newcomer's admission is the members' update at the top of some step), so the
 * first iteration must not make another: every member must issue the same calls. */
static int demo_steps(demo_peer *p, uint64_t step)
{
    char why[256];
    size_t i;
    int rc, topology_done = 1;

    while (step <= (uint64_t)p->steps) {
        if (!topology_done && (rc = demo_topology(p, 0)) != CLI_EXIT_OK)
            return rc;
        topology_done = 0;
        /* The schedule wants the newcomer in before the end: wait for it here, all
         * members together (they agree on the size, so they leave the loop together). */
        if (!p->joiner && step == (uint64_t)p->join_step && p->size < p->join_size) {
            double give_up = cli_now() + 20.0;
            if (p->rank == 0)
                say(p, "step %llu: waiting for a newcomer (%d of %d members)",
                    (unsigned long long)step, p->size, p->join_size);
            while (p->size < p->join_size) {
                if (cli_now() > give_up || cli_stop_signal) {
                    fprintf(stderr, "%s: no newcomer joined within 20 s\n", p->who);
                    return CLI_EXIT_FAIL;
                }
                cli_sleep_ms(100);
                if ((rc = demo_topology(p, 0)) != CLI_EXIT_OK)
                    return rc;
            }
        }
        /* The demo parent kills its victim on this line: while it sleeps here, after
         * the topology update, so the others' next all-reduce is the one that fails. */
        cli_report(p->rep, "pace %llu", (unsigned long long)step);
        cli_sleep_ms(p->step_ms); /* pacing, so that a human can follow */
        cli_pattern_fill(p->send, p->elements, STARLING_F32, p->rank, (unsigned)step);
        rc = starling_allreduce(p->comm, p->send, p->recv, p->elements, STARLING_F32, STARLING_SUM,
                                NULL);
        if (rc == STARLING_E_PEER_LOST) {
            if (++p->losses > DEMO_MAX_LOSSES)
                return demo_fail(p, "all-reduce (too many losses)", rc);
            say(p,
                "step %llu: all-reduce failed: %s (%s); updating the topology and "
                "retrying",
                (unsigned long long)step, starling_strerror(rc), errmsg_or(p, "no detail"));
            cli_report(p->rep, "lost %llu", (unsigned long long)step);
            continue; /* the same step, after the next topology update */
        }
        if (rc != STARLING_OK)
            return demo_fail(p, "all-reduce", rc);
        if (cli_pattern_check(p->recv, p->elements, STARLING_F32, STARLING_SUM, p->size,
                              (unsigned)step, why, sizeof why) != 0) {
            fprintf(stderr, "%s: WRONG RESULT at step %llu: %s\n", p->who, (unsigned long long)step,
                    why);
            return CLI_EXIT_FAIL;
        }
        /* The "training" update: identical inputs on every member, so identical weights. */
        for (i = 0; i < p->elements; i++)
            p->weights[i] += 1e-3f * p->recv[i] / (float)p->size;
        starling_state_set_step(p->comm, step);
        cli_report(p->rep, "step %llu %d", (unsigned long long)step, p->size);
        if (p->rank == 0 && (step == 1 || step % 5 == 0))
            say(p, "step %llu: all-reduce of %zu floats checked exactly on %d members",
                (unsigned long long)step, p->elements, p->size);
        step++;
    }
    return CLI_EXIT_OK;
}

int cmd_demo_peer(int argc, char **argv)
{
    static const char cmd[] = "demo-peer";
    static char log_prefix[40];
    const char *coord = NULL, *run = NULL, *index_t = NULL, *peers_t = NULL, *steps_t = NULL;
    const char *elements_t = NULL, *step_ms_t = NULL, *timeout_t = NULL, *join_step_t = NULL;
    const char *report_t = NULL, *security_t = NULL, *secret;
    long index = 0, peers = 0, steps = 0, step_ms = 0, timeout_ms = 0, join_step = 0;
    uint64_t elements = 0;
    int rc, err, verbose = 0, joiner = 0;
    size_t i;
    char hash[33];
    starling_config *cfg = NULL;
    demo_peer p;
    const cli_opt opts[] = {
        CLI_OPT_VALUE("--coord", "HOST:PORT[,...]",
                      "the run's coordinator, or several: active first, then standbys (required)",
                      &coord),
        CLI_OPT_VALUE("--run", "NAME", "the run's name (required)", &run),
        CLI_OPT_VALUE("--index", "I", "this peer's index among the demo's children (required)",
                      &index_t),
        CLI_OPT_VALUE("--peers", "N", "members to wait for at the start (required)", &peers_t),
        CLI_OPT_VALUE("--steps", "S", "steps of the toy loop (required)", &steps_t),
        CLI_OPT_VALUE("--elements", "N", "f32 values all-reduced per step (required)", &elements_t),
        CLI_OPT_VALUE("--step-ms", "N", "pause per step, 0..60000 ms (default 0)", &step_ms_t),
        CLI_OPT_VALUE("--timeout-ms", "N",
                      "failure-detection timeout, 100..600000 ms (default 3000)", &timeout_t),
        CLI_OPT_VALUE("--security", "MODE", CLI_SECURITY_HELP, &security_t),
        CLI_OPT_VALUE("--join-step", "S", "the step at which the newcomer joins (required)",
                      &join_step_t),
        CLI_OPT_VALUE("--report-fd", "FD", "the pipe for report lines to the parent (required)",
                      &report_t),
        CLI_OPT_FLAG("--joiner", "this peer is the newcomer", &joiner),
        CLI_OPT_FLAG("--verbose", "log the library at info level (default: warnings)", &verbose),
    };
    const cli_cmd c = {cmd, "--coord HOST:PORT --run NAME --index I [options]",
                       "One peer of 'starling demo' (started by it, with the run's secret in\n"
                       "$" CLI_SECRET_ENV "): a toy loop of checked all-reduces and state syncs.\n",
                       NULL, opts, sizeof opts / sizeof opts[0]};

    memset(&p, 0, sizeof p);
    cli_ignore_sigpipe();
    if ((rc = cli_parse_opts(&c, argc, argv, 2)))
        return rc;
    if (!coord || !run || !index_t || !peers_t || !steps_t || !elements_t || !join_step_t)
        return cli_usage_error(cmd, "missing options (this command is started by "
                                    "'starling demo')");
    if ((rc = cli_get_coords(cmd, "--coord", coord)) ||
        (rc = cli_get_long(cmd, "--index", index_t, 0, 1 << 20, &index)) ||
        (rc = cli_get_long(cmd, "--peers", peers_t, 1, 1 << 16, &peers)) ||
        (rc = cli_get_long(cmd, "--steps", steps_t, 1, 1000000, &steps)) ||
        (rc = cli_get_long(cmd, "--step-ms", step_ms_t, 0, 60000, &step_ms)) ||
        (rc = cli_get_long(cmd, "--timeout-ms", timeout_t, 100, 600000, &timeout_ms)) ||
        (rc = cli_get_long(cmd, "--join-step", join_step_t, 0, 1000000, &join_step)) ||
        (rc = cli_get_size(cmd, "--elements", elements_t, &elements)) ||
        (rc = cli_get_security(cmd, "--security", security_t)))
        return rc;
    if (elements == 0 || elements > ((uint64_t)1 << 28))
        return cli_usage_error(cmd, "--elements: 1..256M");
    p.rep = cli_child_open(cmd, report_t, &secret);
    if (!p.rep)
        return CLI_EXIT_USAGE;
    p.index = (int)index;
    p.joiner = joiner;
    p.steps = (int)steps;
    p.step_ms = (int)step_ms;
    p.join_step = (int)join_step;
    p.join_size = (int)peers;
    p.elements = (size_t)elements;
    p.verbose = verbose;
    snprintf(p.who, sizeof p.who, "peer-%ld", index);
    snprintf(log_prefix, sizeof log_prefix, "peer-%ld:", index);
    starling_log_set_handler(cli_log_prefixed, log_prefix);
    starling_log_set_level(verbose ? STARLING_LOG_INFO : STARLING_LOG_WARN);

    rc = CLI_EXIT_FAIL;
    if (posix_memalign((void **)&p.send, 4096, p.elements * sizeof(float)) != 0 ||
        posix_memalign((void **)&p.recv, 4096, p.elements * sizeof(float)) != 0 ||
        posix_memalign((void **)&p.weights, 4096, p.elements * sizeof(float)) != 0) {
        fprintf(stderr, "%s: out of memory\n", p.who);
        goto out;
    }
    memset(p.recv, 0, p.elements * sizeof(float));
    /* Members start from the same weights; a newcomer's are stale on purpose, so the
     * sync visibly replaces them. */
    for (i = 0; i < p.elements; i++)
        p.weights[i] = joiner ? 42.0f : 0.0f;

    err = starling_config_create(&cfg);
    if (err == STARLING_OK)
        err = starling_config_set_min_peers(cfg, (int)peers);
    if (err == STARLING_OK && timeout_t)
        err = starling_config_set_timeout_ms(cfg, (int)timeout_ms);
    if (err == STARLING_OK)
        err = starling_config_set_op_timeout_ms(cfg, 20000);
    if (err == STARLING_OK && security_t)
        err = starling_config_set_security(cfg, security_t);
    if (err == STARLING_OK)
        err = starling_config_set_name(cfg, p.who);
    if (err != STARLING_OK) {
        demo_fail(&p, "configuration", err);
        goto out;
    }
    err = starling_comm_create(&p.comm, coord, run, secret, strlen(secret), cfg);
    if (err != STARLING_OK) {
        demo_fail(&p, "connecting to the coordinator", err);
        goto out;
    }
    err = starling_state_register(p.comm, "weights", p.weights, p.elements, STARLING_F32);
    if (err == STARLING_OK)
        err = starling_state_set_step(p.comm, 0);
    if (err != STARLING_OK) {
        demo_fail(&p, "registering the shared state", err);
        goto out;
    }
    if (joiner)
        say(&p, "newcomer: registered with the coordinator, waiting to be admitted");
    if (demo_topology(&p, 0) != CLI_EXIT_OK)
        goto out;
    if (joiner)
        say(&p, "admitted at epoch %llu as rank %d of %d; continuing from step %llu",
            (unsigned long long)p.epoch, p.rank, p.size,
            (unsigned long long)starling_state_step(p.comm) + 1);
    if (demo_steps(&p, starling_state_step(p.comm) + 1) != CLI_EXIT_OK)
        goto out;
    /* One last sync at the same point on every member, then the hash to compare. */
    if (demo_topology(&p, 1) != CLI_EXIT_OK)
        goto out;
    err = starling_state_hash_hex(p.comm, hash);
    if (err != STARLING_OK) {
        demo_fail(&p, "state hash", err);
        goto out;
    }
    cli_report(p.rep, "hash %s %llu %d", hash, (unsigned long long)starling_state_step(p.comm),
               p.rank);
    rc = CLI_EXIT_OK;
out:
    if (rc == CLI_EXIT_OK) {
        starling_comm_destroy(p.comm);
        free(p.weights); /* borrowed by the communicator until it is destroyed */
    }
    starling_config_destroy(cfg);
    free(p.send);
    free(p.recv);
    fclose(p.rep);
    return rc;
}
