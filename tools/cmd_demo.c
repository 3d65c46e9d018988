/*
 * cmd_demo.c -- `starling demo`: a fault-tolerance walk-through on loopback.
 *
 * Schedule (with the defaults: 4 peers, 20 steps):
 *   - a coordinator on a thread of this process, 4 `demo-peer` processes
 *     (cmd_demo_peer.c) that all-reduce 1M f32 per step and check every result;
 *   - after step 8 the last peer is killed with SIGKILL, just before the step-9
 *     all-reduce; the survivors' collective fails with STARLING_E_PEER_LOST, they update
 *     the topology and retry;
 *   - when the survivors report the smaller epoch, a newcomer is started; it is admitted
 *     at the next topology update and receives the shared state (by step 14 at the
 *     latest: the members wait for it there);
 *   - after the last step every peer reports its state hash; all must be equal.
 * This process prints the narrative the peers send on their report pipes.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define DEMO_MAX_PEERS 16

typedef struct demo_run {
    int peers, steps, step_ms, timeout_ms, verbose;
    uint64_t elements;
    const char *security; /* --security, or NULL: the library's default */
    int kill_step, join_step;
    int victim, killed, joiner; /* child indexes; joiner -1 until started */
    int lost_reports, replaced;
    double t0;
    /* argument strings for spawning, kept for the newcomer started mid-run */
    char addr[64], run[64], peers_s[16], steps_s[16], elements_s[24], step_ms_s[16];
    char timeout_s[16], join_step_s[16];
    /* final reports, by child index */
    char hash[DEMO_MAX_PEERS + 1][33];
    unsigned long long hash_step[DEMO_MAX_PEERS + 1];
    int hash_rank[DEMO_MAX_PEERS + 1];
} demo_run;

static void narrate(const demo_run *d, const char *who, const char *fmt, ...) CLI_PRINTF(3, 4);

static void narrate(const demo_run *d, const char *who, const char *fmt, ...)
{
    va_list ap;
    printf("[%6.2fs] %-7s ", cli_now() - d->t0, who);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static int demo_spawn(demo_run *d, cli_group *g, int index, int joiner)
{
    char index_s[16], name[32];
    char *args[32];
    int na = 0, child;

    snprintf(index_s, sizeof index_s, "%d", index);
    snprintf(name, sizeof name, "peer-%d", index);
    args[na++] = (char *)"demo-peer";
    args[na++] = (char *)"--coord";
    args[na++] = d->addr;
    args[na++] = (char *)"--run";
    args[na++] = d->run;
    args[na++] = (char *)"--index";
    args[na++] = index_s;
    args[na++] = (char *)"--peers";
    args[na++] = d->peers_s;
    args[na++] = (char *)"--steps";
    args[na++] = d->steps_s;
    args[na++] = (char *)"--elements";
    args[na++] = d->elements_s;
    args[na++] = (char *)"--step-ms";
    args[na++] = d->step_ms_s;
    args[na++] = (char *)"--timeout-ms";
    args[na++] = d->timeout_s;
    args[na++] = (char *)"--join-step";
    args[na++] = d->join_step_s;
    if (d->security) {
        args[na++] = (char *)"--security";
        args[na++] = (char *)d->security;
    }
    if (joiner)
        args[na++] = (char *)"--joiner";
    if (d->verbose)
        args[na++] = (char *)"--verbose";
    args[na] = NULL;
    child = cli_group_spawn(g, name, args);
    if (child >= 0)
        narrate(d, "demo", "started %s%s (pid %ld)", name, joiner ? ", a newcomer" : "",
                (long)g->kids[child].pid);
    return child;
}

static int demo_on_line(void *user, cli_group *g, int child, const char *line)
{
    demo_run *d = user;
    const char *who = g->kids[child].name;
    unsigned long long epoch, step;
    int size, rank, changed;
    char hex[40];

    if (strncmp(line, "say ", 4) == 0) {
        narrate(d, who, "%s", line + 4);
        return 0;
    }
    if (sscanf(line, "pace %llu", &step) == 1) {
        /* The victim has made this step's topology update and is pausing before the
         * all-reduce: killed now, it leaves the others inside a collective. */
        if (child == d->victim && !d->killed && step > (unsigned long long)d->kill_step) {
            narrate(d, "demo", "%s is about to run step %llu: killing it with SIGKILL", who, step);
            cli_group_kill(g, child);
            d->killed = 1;
        }
        return 0;
    }
    if (sscanf(line, "step %llu %d", &step, &size) == 2)
        return 0;
    if (sscanf(line, "epoch %llu %d %d", &epoch, &size, &rank) == 3) {
        if (d->killed && d->joiner < 0 && size < d->peers) {
            narrate(d, "demo",
                    "the survivors formed epoch %llu with %d members; starting a "
                    "newcomer to take the lost peer's place",
                    epoch, size);
            d->joiner = demo_spawn(d, g, d->peers, 1);
            if (d->joiner < 0)
                return 1;
        }
        return 0;
    }
    if (strncmp(line, "lost ", 5) == 0) {
        d->lost_reports++;
        return 0;
    }
    if (sscanf(line, "synced %d %llu", &changed, &step) == 2) {
        if (changed)
            d->replaced++;
        return 0;
    }
    if (sscanf(line, "hash %32s %llu %d", hex, &step, &rank) == 3 && strlen(hex) == 32 &&
        child <= DEMO_MAX_PEERS) {
        memcpy(d->hash[child], hex, 33);
        d->hash_step[child] = step;
        d->hash_rank[child] = rank;
        return 0;
    }
    fprintf(stderr, "starling demo: unexpected report from %s: '%s'\n", who, line);
    return 1;
}

/* Prints the final table; returns 0 if every survivor reported the same state. */
static int demo_summary(const demo_run *d, const cli_group *g)
{
    const char *ref = NULL;
    int k, survivors = 0, equal = 1, missing = 0;

    printf("\nfinal shared state of the survivors:\n");
    for (k = 0; k < g->n; k++) {
        if (k == d->victim)
            continue;
        survivors++;
        if (!d->hash[k][0]) {
            printf("  %-7s  no hash reported\n", g->kids[k].name);
            missing = 1;
            continue;
        }
        printf("  %-7s  rank %d  step %llu  hash %s\n", g->kids[k].name, d->hash_rank[k],
               d->hash_step[k], d->hash[k]);
        if (!ref)
            ref = d->hash[k];
        else if (strcmp(ref, d->hash[k]) != 0)
            equal = 0;
        if (d->hash_step[k] != (unsigned long long)d->steps)
            equal = 0;
    }
    printf("\nsummary: %d peers started (%d + 1 newcomer), 1 killed, %d survivors; "
           "%d PEER_LOST reports recovered; %d state transfer%s to newcomers; %.1f s\n",
           g->n, d->peers, survivors, d->lost_reports, d->replaced, d->replaced == 1 ? "" : "s",
           cli_now() - d->t0);
    if (!missing && equal && ref) {
        printf("result: OK, all %d survivors hold identical state after step %d (hash %s)\n",
               survivors, d->steps, ref);
        return 0;
    }
    printf("result: FAILED, the survivors' states %s\n",
           missing ? "were not all reported" : "differ");
    return 1;
}

int cmd_demo(int argc, char **argv)
{
    static const char cmd[] = "demo";
    const char *peers_t = NULL, *steps_t = NULL, *elements_t = NULL, *step_ms_t = NULL;
    const char *timeout_t = NULL, *security_t = NULL;
    long peers = 4, steps = 20, step_ms = 100, timeout_ms = 1000;
    uint64_t elements = (uint64_t)1 << 20;
    int verbose = 0, rc, k;
    char secret[33];
    cli_local_coord lc;
    cli_group g;
    demo_run *d;
    double deadline;
    const cli_opt opts[] = {
        CLI_OPT_VALUE("--peers", "N", "peer processes to start, 3..16 (default 4)", &peers_t),
        CLI_OPT_VALUE("--steps", "N", "steps of the loop, 10..100000 (default 20)", &steps_t),
        CLI_OPT_VALUE("--elements", "N",
                      "f32 values all-reduced per step, 1..64M, K, M suffixes (default 1M)",
                      &elements_t),
        CLI_OPT_VALUE("--step-ms", "N", "pause per step so a human can follow, 0..10000 "
                      "(default 100)", &step_ms_t),
        CLI_OPT_VALUE("--timeout-ms", "N", "failure-detection timeout, 100..60000 (default 1000)",
                      &timeout_t),
        CLI_OPT_VALUE("--security", "MODE", CLI_SECURITY_HELP, &security_t),
        CLI_OPT_FLAG("--verbose", "log the library and the peers at info level", &verbose),
    };
    const cli_cmd c = {cmd, "[options]",
                       "Fault-tolerance walk-through on loopback: N peers all-reduce and check\n"
                       "the sums; the last peer is killed with SIGKILL at 40% of the steps, the\n"
                       "survivors recover, a new peer joins at 70% and receives the shared state;\n"
                       "the final state hashes are compared. Exit 0 if they all agree.\n",
                       NULL, opts, sizeof opts / sizeof opts[0]};

    if ((rc = cli_parse_opts(&c, argc, argv, 2)) ||
        (rc = cli_get_long(cmd, "--peers", peers_t, 3, DEMO_MAX_PEERS, &peers)) ||
        (rc = cli_get_long(cmd, "--steps", steps_t, 10, 100000, &steps)) ||
        (rc = cli_get_long(cmd, "--step-ms", step_ms_t, 0, 10000, &step_ms)) ||
        (rc = cli_get_long(cmd, "--timeout-ms", timeout_t, 100, 60000, &timeout_ms)) ||
        (rc = cli_get_size(cmd, "--elements", elements_t, &elements)) ||
        (rc = cli_get_security(cmd, "--security", security_t)))
        return rc;
    if (elements < 1 || elements > ((uint64_t)64 << 20))
        return cli_usage_error(cmd, "--elements: expected 1..64M, got %llu",
                               (unsigned long long)elements);

    d = calloc(1, sizeof *d);
    if (!d || cli_random_hex(secret, 16) != 0) {
        fprintf(stderr, "starling demo: cannot set up (memory or /dev/urandom)\n");
        free(d);
        return CLI_EXIT_FAIL;
    }
    d->peers = (int)peers;
    d->steps = (int)steps;
    d->step_ms = (int)step_ms;
    d->timeout_ms = (int)timeout_ms;
    d->verbose = verbose;
    d->elements = elements;
    d->security = security_t;
    d->kill_step = (int)(steps * 2 / 5);
    d->join_step = (int)(steps * 7 / 10);
    d->victim = d->peers - 1;
    d->joiner = -1;
    d->t0 = cli_now();
    snprintf(d->run, sizeof d->run, "demo-%ld", (long)getpid());
    snprintf(d->peers_s, sizeof d->peers_s, "%d", d->peers);
    snprintf(d->steps_s, sizeof d->steps_s, "%d", d->steps);
    snprintf(d->elements_s, sizeof d->elements_s, "%llu", (unsigned long long)elements);
    snprintf(d->step_ms_s, sizeof d->step_ms_s, "%d", d->step_ms);
    snprintf(d->timeout_s, sizeof d->timeout_s, "%d", d->timeout_ms);
    snprintf(d->join_step_s, sizeof d->join_step_s, "%d", d->join_step);

    cli_install_stop_handlers();
    starling_log_set_handler(cli_log_prefixed, (void *)"coordinator:");
    starling_log_set_level(verbose ? STARLING_LOG_INFO : STARLING_LOG_WARN);
    if (cli_local_coord_start(&lc, d->run, secret, d->timeout_ms, d->peers, d->security) != 0) {
        free(d);
        return CLI_EXIT_FAIL;
    }
    snprintf(d->addr, sizeof d->addr, "%s", lc.addr);
    if (cli_group_init(&g, secret) != 0) {
        cli_local_coord_stop(&lc);
        free(d);
        return CLI_EXIT_FAIL;
    }
    g.verbose = 0;
    narrate(d, "demo", "coordinator listening on %s (run %s, failure timeout %d ms)", d->addr,
            d->run, d->timeout_ms);
    narrate(d, "demo",
            "plan: %d peers, %d steps of %llu-float all-reduces; peer-%d is killed "
            "after step %d, a newcomer joins and receives the shared state",
            d->peers, d->steps, (unsigned long long)elements, d->victim, d->kill_step);

    rc = CLI_EXIT_FAIL;
    for (k = 0; k < d->peers; k++)
        if (demo_spawn(d, &g, k, 0) < 0)
            goto done;
    /* Normal runs take a few seconds; the bound only stops a hang. */
    deadline = cli_now() + 60.0 + (double)d->steps * ((double)d->step_ms / 1000.0 + 0.5);
    if (cli_group_wait(&g, deadline, demo_on_line, d) != 0)
        goto done;
    if (!d->killed || d->joiner < 0) {
        fprintf(stderr, "starling demo: the schedule did not run (kill %s, newcomer %s)\n",
                d->killed ? "done" : "missing", d->joiner >= 0 ? "started" : "missing");
        goto done;
    }
    rc = demo_summary(d, &g) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
done:
    if (rc != CLI_EXIT_OK)
        fprintf(stderr, "starling demo: FAILED\n");
    cli_group_kill_all(&g);
    cli_group_free(&g);
    cli_local_coord_stop(&lc);
    memset(secret, 0, sizeof secret);
    free(d);
    return rc;
}
