/*
 * cmd_run.h -- the pieces of `starling run`, internal to it (see cmd_run.c).
 *
 *   cmd_run.c         entry, peer processes, their report lines, the job from start to end
 *   cmd_run_opts.c    option table, validation of every flag and training key, defaults
 *   cmd_run_faults.c  the fault schedule: kills, freezes (and the thaw thread), joins
 *   cmd_run_output.c  progress line, narrative, metrics.csv, summary.json, plot.png and
 *                     the final result
 */
#ifndef STARLING_TOOLS_CMD_RUN_H
#define STARLING_TOOLS_CMD_RUN_H

#include <pthread.h>
#include <stdio.h>
#include <sys/types.h>

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
    unsigned long long local_steps, rounds_cut; /* from its "d" line */
    double loss;
    int peers, recoveries;
    double final_acc, final_loss;
} run_kid;

typedef struct run_opts {
    int peers;
    long steps, inner_steps;
    const char *algo, *compress, *out, *resume, *data;
    const char *security; /* --security, or NULL: the library's default */
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
    char slow_set[RUN_MAX_PEERS][24]; /* "slow=F" for a straggling starting peer, else "" */
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
    double last_draw; /* when the progress line was last drawn */
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

/* ------------------------------------------------------------ cmd_run_opts.c */

/* Parses and validates argv (everything is checked before any process starts) into a
 * new run_opts. Returns 0 with *out set (free with run_opts_free), CLI_HELP_SHOWN, or
 * an exit status with the message printed. Creates the output directory. */
int run_opts_parse(int argc, char **argv, run_opts **out);
void run_opts_free(run_opts *o);
/* The value given for training key `key` (the last one wins, as in the trainer), or NULL. */
const char *run_set_value(const run_opts *o, const char *key);
int run_file_exists(const char *dir, const char *name);

/* ------------------------------------------------------------ cmd_run_roles.c */

/* --byzantine K --attack NAME --aggregator SPEC [--f F] [--nnm] (f < 0: not given):
 * fills o->byzantine, o->attack_set and o->aggregator, or prints a usage error and
 * returns its exit status. Needs o->peers and the kills. */
int run_check_byzantine(const char *cmd, run_opts *o, long byz, const char *attack,
                        const char *agg_spec, long f, int nnm);
/* One --slow RANK:FACTOR into o->slow_set; 0 or a usage error's exit status. */
int run_parse_slow(const char *cmd, run_opts *o, const char *text);

/* ------------------------------------------------------------ cmd_run.c */

/* Starts peer `index` (a newcomer if `joiner`); returns its child index or -1. */
int run_spawn_peer(run_state *s, int index, int joiner);

/* ------------------------------------------------------------ cmd_run_faults.c */

/* The thread that sends SIGCONT when a freeze ends; stop joins it (both idempotent). */
void run_thaw_start(run_state *s);
void run_thaw_stop(run_state *s);
/* Applies the kills and freezes due for `child` at `step`, and the joins due for the run. */
void run_apply_schedule(run_state *s, int child, unsigned long long step);
/* Once every admitted peer has finished, stops newcomers still waiting for admission. */
void run_end_late_joiners(run_state *s);

/* ------------------------------------------------------------ cmd_run_output.c */

/* A line of narrative on stdout, with the time since the start. */
void run_say(run_state *s, const char *fmt, ...) CLI_PRINTF(2, 3);
void run_clear_progress(run_state *s);
void run_show_progress(run_state *s);
/* OUT/metrics.csv with its header line; 0, or -1 with the reason printed. */
int run_metrics_open(run_state *s);
void run_metrics_row(run_state *s, unsigned long long step, int index, double loss, double acc,
                     double tloss, unsigned long long bytes, int peers, unsigned long long epoch);
/* The end: compares the survivors' hashes, writes summary.json and plot.png, prints the
 * result. Returns the exit status. */
int run_finish(run_state *s, int waited_ok);

#endif /* STARLING_TOOLS_CMD_RUN_H */
