/*
 * cli.h -- helpers shared by the subcommands of the `starling` program.
 *
 * The program uses only the public API (starling.h). Its pieces:
 *   cli_main.c     dispatch, usage, version
 *   cli_opts.c     the option parser shared by every subcommand, and its --help
 *   cli_suggest.c  "did you mean": edit distance to the known options and commands
 *   cli_args.c     validation of numbers, sizes, names, addresses; secrets, formatting
 *   cli_proc.c     child peer processes: spawn, read their report pipes, reap, kill
 *   cli_pattern.c  rank-dependent test data and the check of reduced results
 *   cmd_coord.c    `starling coordinator`, and the in-process coordinator thread that
 *                  `bench` and `demo` run for their local peers
 *   cmd_bench.c    `starling bench` (parent) and cmd_bench_peer.c (`bench-peer`, a child)
 *   cmd_bench_codec.c  `starling bench codec`: one codec's size, error and speed, no network
 *   cmd_demo.c     `starling demo` (parent) and cmd_demo_peer.c (`demo-peer`, a child)
 *   cmd_run.c      `starling run`, the main job (parent): its peers and their report
 *                  lines; its pieces share cmd_run.h:
 *     cmd_run_opts.c    its options and the validation of every flag and training key
 *     cmd_run_faults.c  the fault schedule (--kill, --freeze with its thaw thread, --join)
 *     cmd_run_output.c  progress line, metrics.csv, summary.json, plot.png, the result
 *   cmd_run_peer.c `run-peer`, a child of `run` that trains through the public trainer API
 *
 * Exit status everywhere: 0 success, 1 failure at run time, 2 bad usage.
 */
#ifndef STARLING_TOOLS_CLI_H
#define STARLING_TOOLS_CLI_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "starling.h"

#if defined(__GNUC__)
#define CLI_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CLI_PRINTF(a, b)
#endif

enum { CLI_EXIT_OK = 0, CLI_EXIT_FAIL = 1, CLI_EXIT_USAGE = 2 };

/* The environment variable that carries the run's secret to child peers (and the
 * coordinator's default source). */
#define CLI_SECRET_ENV "STARLING_SECRET"

/* ------------------------------------------------------------ cli_main.c */

/* The top-level usage: the commands, one line each. */
void cli_usage(FILE *out);
/* Prints "starling <cmd>: <message>" and a hint to stderr; returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) CLI_PRINTF(2, 3);

/* ------------------------------------------------------------ cli_args.c */

/* One accepted option of a subcommand; write entries with the CLI_OPT_* macros below.
 * Exactly one of value, seen, list is set:
 *   value: an option with a value; *value points into argv (NULL if absent)
 *   seen:  a flag; *seen is set to 1 when given
 *   list:  an option with a value that may repeat; each occurrence is appended
 * `arg` is the value's placeholder in the help ("N", "HOST:PORT"; NULL for a flag) and
 * `help` one line for the generated --help, defaults included ("(default 4)"). */
typedef struct cli_list {
    const char **items;
    int n, max;
} cli_list;

typedef struct cli_opt {
    const char *name; /* "--peers" */
    const char *arg;
    const char *help;
    const char **value;
    int *seen;
    cli_list *list;
} cli_opt;

#define CLI_OPT_VALUE(name, arg, help, value) {name, arg, help, value, NULL, NULL}
#define CLI_OPT_FLAG(name, help, seen) {name, NULL, help, NULL, seen, NULL}
#define CLI_OPT_LIST(name, arg, help, list) {name, arg, help, NULL, NULL, list}

/* A subcommand as its parser and its --help see it. */
typedef struct cli_cmd {
    const char *name;     /* "run", "bench codec": for messages and the usage line */
    const char *synopsis; /* what follows "starling NAME" in the usage line */
    const char *about;    /* what the command does: lines ending in "\n", printed as is */
    const char *notes;    /* printed after the options, as is; NULL for none */
    const cli_opt *opts;
    size_t nopts;
} cli_cmd;

/* Returned by cli_parse_opts (and so by a subcommand) once --help has been printed;
 * main turns it into exit status 0. */
#define CLI_HELP_SHOWN (-1)

/* Parses argv[first..argc) against c->opts ("--name VALUE" or "--name=VALUE").
 * "--help" or "-h" prints the command's help on stdout and returns CLI_HELP_SHOWN.
 * Unknown options (with the nearest known one suggested), positional arguments,
 * missing values, a separate value that starts with "--" (a forgotten value: use
 * "--name=--x" to mean it) and repeated single options are usage errors: the message
 * is printed and CLI_EXIT_USAGE returned; else 0. */
int cli_parse_opts(const cli_cmd *c, int argc, char **argv, int first);
/* The generated help: usage line, about, every option with its placeholder and help. */
void cli_print_help(const cli_cmd *c, FILE *out);
/* 1 if `arg` asks for help ("--help" or "-h"). */
int cli_is_help(const char *arg);

/* ------------------------------------------------------------ cli_suggest.c */

/* Edit distance between a[0..alen) and b[0..blen): insertions, deletions,
 * substitutions and transpositions of two adjacent characters each cost 1 (optimal
 * string alignment). Strings longer than CLI_SUGGEST_MAX count as far apart. */
#define CLI_SUGGEST_MAX 64
size_t cli_edit_distance(const char *a, size_t alen, const char *b, size_t blen);

/* The nearest of several candidates to a mistyped word, fed one by one. */
typedef struct cli_suggest {
    const char *word;
    size_t len;
    const char *best;
    size_t best_score;
} cli_suggest;
void cli_suggest_init(cli_suggest *s, const char *word, size_t len);
void cli_suggest_add(cli_suggest *s, const char *candidate);
/* The best candidate if it is close enough to be what was meant, else NULL. Leading
 * dashes are ignored on both sides, so "-peers" finds "--peers". */
const char *cli_suggest_result(const cli_suggest *s);

/* Each converter leaves *out alone and returns 0 if `text` is NULL (option absent);
 * prints a usage error and returns CLI_EXIT_USAGE if `text` is invalid. */
int cli_get_long(const char *cmd, const char *opt, const char *text, long min, long max, long *out);
/* Byte size: digits with an optional K, M or G suffix (powers of 1024, "KiB" etc. also
 * accepted). At most 64 GiB. */
int cli_get_size(const char *cmd, const char *opt, const char *text, uint64_t *out);
/* Comma-separated sizes, 1..max entries. */
int cli_get_size_list(const char *cmd, const char *opt, const char *text, uint64_t *out, int max,
                      int *n);
int cli_get_dtype(const char *cmd, const char *opt, const char *text, starling_dtype *out);
int cli_get_op(const char *cmd, const char *opt, const char *text, starling_op *out);
/* A security mode for starling_config_set_security: aead, chacha20 or none. */
int cli_get_security(const char *cmd, const char *opt, const char *text);
/* The help of --security, the same for every command that has it. */
#define CLI_SECURITY_HELP                                                                          \
    "frames after the handshake: aead (encrypted and authenticated, default), chacha20, or "       \
    "none (clear; every peer and the coordinator must agree)"
/* "HOST:PORT" with a non-empty host ("[v6]" allowed) and port 0..65535. */
int cli_get_host_port(const char *cmd, const char *opt, const char *text);
/* A coordinator list: HOST:PORT, or several separated by commas (active first). */
int cli_get_coords(const char *cmd, const char *opt, const char *text);

/* Parses a plain size ("64M"); 0 on success, -1 if malformed or too large. */
int cli_parse_size(const char *text, uint64_t *out);
/* Splits "HOST:PORT": copies the host (brackets kept) and returns 0, or -1 if malformed. */
int cli_split_host_port(const char *text, char *host, size_t host_cap, int *port);

/* Reads a secret file whole, strips trailing "\n" / "\r\n". *out is malloc'd and
 * NUL-terminated. Returns 0, or -1 with a message in `err`. */
int cli_read_secret_file(const char *path, char **out, size_t *len, char *err, size_t err_cap);
/* Fills `out` with 2*nbytes random hex digits and a NUL (from /dev/urandom). */
int cli_random_hex(char *out, size_t nbytes);

/* Human-readable byte count ("64 MiB", "1.50 GiB", "12 B"). */
const char *cli_format_bytes(double nbytes, char *buf, size_t cap);
/* Human-readable duration ("85.2 us", "12.35 ms", "1.234 s"). */
const char *cli_format_seconds(double s, char *buf, size_t cap);

/* Monotonic seconds; and a sleep that does not need usleep. */
double cli_now(void);
void cli_sleep_ms(int ms);

/* Log handler for peer processes: like starling_log_stderr, with a prefix naming the
 * process (the prefix string must outlive every handle). */
void cli_log_prefixed(void *prefix, starling_log_level level, const char *msg);

/* ------------------------------------------------------------ cli_proc.c */

/* Set by the SIGINT/SIGTERM handler cli_install_stop_handlers installs. */
extern volatile sig_atomic_t cli_stop_signal;
void cli_install_stop_handlers(void);
/* Ignores SIGPIPE (a report pipe whose reader died must give EPIPE, not a kill). */
void cli_ignore_sigpipe(void);

/* A child peer process, with a pipe on which it writes line-oriented reports. */
typedef struct cli_child {
    char name[32];
    pid_t pid;  /* > 0 until reaped */
    int fd;     /* read end of its report pipe, -1 at EOF */
    char *line; /* partial line read so far */
    size_t len, cap;
    int reaped;       /* 1 once waitpid collected it */
    int status;       /* wait status, valid once reaped */
    int expect_death; /* killed on purpose: a SIGKILL status is not a failure */
} cli_child;

/* Called for every complete report line (without its newline). A non-zero return stops
 * cli_group_wait, which then returns that value. */
typedef struct cli_group cli_group;
typedef int (*cli_line_fn)(void *user, cli_group *g, int child, const char *line);

struct cli_group {
    cli_child *kids;
    int n, cap;
    char **envp; /* environment for exec: ours, with CLI_SECRET_ENV replaced */
    int verbose;
};

/* Prepares a group whose children get `secret` in CLI_SECRET_ENV. */
int cli_group_init(cli_group *g, const char *secret);
/* Starts `starling <args...> --report-fd FD` as a child named `name`. Returns the
 * child's index, or -1 (message printed). */
int cli_group_spawn(cli_group *g, const char *name, char *const args[]);
/* Reads report lines and reaps children until all have exited and their pipes are
 * drained (returns 0), or: a child failed (1, message printed), the monotonic
 * `deadline` passed (1), a stop signal arrived (1), or `fn` returned non-zero (that
 * value). Children still running are left running; call cli_group_kill_all. */
int cli_group_wait(cli_group *g, double deadline, cli_line_fn fn, void *user);
/* SIGKILLs one child and marks its death as expected. */
void cli_group_kill(cli_group *g, int child);
/* SIGKILLs every child still running and reaps it (bounded wait). */
void cli_group_kill_all(cli_group *g);
void cli_group_free(cli_group *g);
/* "exited with status 1", "killed by signal 9 (Killed)". */
const char *cli_describe_status(int status, char *buf, size_t cap);

/* In a child: the report stream on `fd` (line-buffered), or NULL. */
FILE *cli_report_open(const char *cmd, const char *fd_text);
/* A child peer's start: the run's secret from CLI_SECRET_ENV (*secret), then the report
 * stream. NULL, with the reason printed, if either is missing. */
FILE *cli_child_open(const char *cmd, const char *fd_text, const char **secret);
void cli_report(FILE *rep, const char *fmt, ...) CLI_PRINTF(2, 3);

/* ------------------------------------------------------------ cli_pattern.c */

/* Test data: element i of member `rank`'s buffer holds (rank+1) * ((i+shift) % 7 + 1),
 * converted to `dtype` (u8 wraps). Small integers, so f32/f64/int results of sum, min
 * and max are exact and can be checked bit for bit. */
void cli_pattern_fill(void *buf, size_t count, starling_dtype dtype, int rank, unsigned shift);
/* Checks `buf` against `op` over `nranks` members' pattern buffers. Exact for integer
 * types and for f32/f64 sum/min/max; f16/bf16 and float averages get a tolerance of a
 * few units in the last place. Returns 0, or -1 with the first difference in `why`. */
int cli_pattern_check(const void *buf, size_t count, starling_dtype dtype, starling_op op,
                      int nranks, unsigned shift, char *why, size_t why_cap);
/* The check refuses these combinations (and so should the caller, before running). */
int cli_pattern_supported(starling_dtype dtype, starling_op op);

/* ------------------------------------------------------------ cmd_coord.c */

/* A coordinator running on a thread of this process, for local peers. */
typedef struct cli_local_coord {
    starling_coord *coord;
    int thread_started;
    int run_rc;
    char addr[64]; /* "127.0.0.1:PORT" */
    void *thread;  /* pthread_t, kept opaque here */
} cli_local_coord;

/* `security` is a mode for starling_config_set_security, or NULL for the default. */
int cli_local_coord_start(cli_local_coord *lc, const char *run, const char *secret, int timeout_ms,
                          int min_peers, const char *security);
void cli_local_coord_stop(cli_local_coord *lc);

/* ------------------------------------------------------------ subcommands */

int cmd_coordinator(int argc, char **argv);
int cmd_bench(int argc, char **argv);
/* `bench codec SPEC [...]`, called by cmd_bench: SPEC is argv[3], options from argv[4]. */
int cmd_bench_codec(int argc, char **argv);
int cmd_bench_peer(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_demo_peer(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_run_peer(int argc, char **argv);

#endif /* STARLING_TOOLS_CLI_H */
