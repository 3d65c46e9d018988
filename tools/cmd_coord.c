/*
 * cmd_coord.c -- `starling coordinator`, and the in-process coordinator that `bench`
 * and `demo` run on a thread for their local peers.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The signal handler needs the handle; only `starling coordinator` sets it. */
static starling_coord *volatile g_running_coord;

static void on_coord_signal(int sig)
{
    starling_coord *c = g_running_coord;
    (void)sig;
    if (c)
        starling_coord_stop(c); /* async-signal-safe by contract */
}

static void install_coord_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_coord_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* The secret from --secret-file, or from the environment variable (given or default). */
static int load_secret(const char *cmd, const char *file, const char *env, char **out, size_t *len)
{
    char err[512];
    const char *val;

    if (file && env)
        return cli_usage_error(cmd, "give either --secret-file or --secret-env, not both");
    if (file) {
        if (cli_read_secret_file(file, out, len, err, sizeof err) != 0) {
            fprintf(stderr, "starling %s: %s\n", cmd, err);
            return CLI_EXIT_FAIL;
        }
        return 0;
    }
    if (!env)
        env = CLI_SECRET_ENV;
    val = getenv(env);
    if (!val || !val[0]) {
        fprintf(stderr,
                "starling %s: no secret: environment variable %s is %s; set it, or pass "
                "--secret-file PATH or --secret-env VAR\n",
                cmd, env, val ? "empty" : "not set");
        return CLI_EXIT_USAGE;
    }
    *out = strdup(val);
    if (!*out) {
        fprintf(stderr, "starling %s: out of memory\n", cmd);
        return CLI_EXIT_FAIL;
    }
    *len = strlen(val);
    return 0;
}

int cmd_coordinator(int argc, char **argv)
{
    static const char cmd[] = "coordinator";
    const char *listen = NULL, *run = NULL, *secret_file = NULL, *secret_env = NULL;
    const char *timeout_text = NULL, *min_peers_text = NULL, *order_text = NULL;
    const char *probe_text = NULL, *security_text = NULL, *standby_of = NULL;
    uint64_t probe_bytes = 0;
    int verbose = 0, rc, port = 0;
    long timeout_ms = 0, min_peers = 0;
    char host[256];
    char *secret = NULL;
    size_t secret_len = 0;
    starling_config *cfg = NULL;
    starling_coord *coord = NULL;
    const cli_opt opts[] = {
        CLI_OPT_VALUE("--listen", "HOST:PORT",
                      "address to listen on; port 0 picks a free one (required)", &listen),
        CLI_OPT_VALUE("--run", "NAME", "the run's name; peers must give the same (required)", &run),
        CLI_OPT_VALUE("--secret-file", "PATH",
                      "read the run's secret from PATH (a trailing newline is removed)",
                      &secret_file),
        CLI_OPT_VALUE("--secret-env", "VAR",
                      "read the secret from environment variable VAR (default " CLI_SECRET_ENV ")",
                      &secret_env),
        CLI_OPT_VALUE("--timeout-ms", "N",
                      "a peer silent this long is declared dead, 100..600000 (default 3000)",
                      &timeout_text),
        CLI_OPT_VALUE("--min-peers", "N",
                      "peers needed before the first epoch forms, 1..65536 (default 1)",
                      &min_peers_text),
        CLI_OPT_VALUE("--ring-order", "ORDER",
                      "join (survivors keep their order, newcomers last; the default), name "
                      "(by peer name) or measured (peers probe their links and the ring avoids "
                      "the slow ones; docs/architecture.md)",
                      &order_text),
        CLI_OPT_VALUE("--probe-bytes", "SIZE",
                      "bytes per link probe for --ring-order measured, 64K..256M (default 2M)",
                      &probe_text),
        CLI_OPT_VALUE("--security", "MODE", CLI_SECURITY_HELP, &security_text),
        CLI_OPT_VALUE("--standby-of", "HOST:PORT",
                      "be the standby of the active coordinator at HOST:PORT: refuse peers "
                      "while it answers, take over when it has been silent for the timeout "
                      "(peers list both: --coord ACTIVE,STANDBY)",
                      &standby_of),
        CLI_OPT_FLAG("--verbose", "log at debug level (default: info)", &verbose),
    };
    const cli_cmd c = {cmd,
                       "--listen HOST:PORT --run NAME [options]",
                       "Run the control plane of a run: admit peers that know the secret, detect\n"
                       "dead ones, decide each epoch's membership and ring order. It holds no\n"
                       "model data, so it can be restarted; peers re-register. With --standby-of\n"
                       "it is a standby that takes over when the active one dies. Prints the\n"
                       "address it listens on; stops cleanly on SIGINT or SIGTERM.\n",
                       NULL,
                       opts,
                       sizeof opts / sizeof opts[0]};

    if ((rc = cli_parse_opts(&c, argc, argv, 2)))
        return rc;
    if (!listen)
        return cli_usage_error(cmd, "--listen HOST:PORT is required");
    if (!run)
        return cli_usage_error(cmd, "--run NAME is required");
    if (cli_split_host_port(listen, host, sizeof host, &port) != 0)
        return cli_usage_error(cmd, "--listen: expected HOST:PORT (port 0..65535), got '%s'",
                               listen);
    if ((rc = cli_get_long(cmd, "--timeout-ms", timeout_text, 100, 600000, &timeout_ms)) ||
        (rc = cli_get_long(cmd, "--min-peers", min_peers_text, 1, 65536, &min_peers)) ||
        (rc = cli_get_size(cmd, "--probe-bytes", probe_text, &probe_bytes)))
        return rc;
    if (order_text && strcmp(order_text, "join") != 0 && strcmp(order_text, "name") != 0 &&
        strcmp(order_text, "measured") != 0)
        return cli_usage_error(cmd, "--ring-order: expected join, name or measured, got '%s'",
                               order_text);
    if (probe_text && (probe_bytes < (64u << 10) || probe_bytes > (256u << 20)))
        return cli_usage_error(cmd, "--probe-bytes: expected 64K..256M, got '%s'", probe_text);
    if ((rc = cli_get_security(cmd, "--security", security_text)))
        return rc;
    if (standby_of) {
        starling_config *probe = NULL;
        int bad = starling_config_create(&probe) != STARLING_OK ||
                  starling_config_set_standby_of(probe, standby_of) != STARLING_OK;
        starling_config_destroy(probe);
        if (bad)
            return cli_usage_error(cmd,
                                   "--standby-of: expected HOST:PORT of the active "
                                   "coordinator (port 1..65535, not a wildcard), got '%s'",
                                   standby_of);
    }
    if ((rc = load_secret(cmd, secret_file, secret_env, &secret, &secret_len)))
        return rc;

    starling_log_set_handler(starling_log_stderr, NULL);
    starling_log_set_level(verbose ? STARLING_LOG_DEBUG : STARLING_LOG_INFO);

    rc = starling_config_create(&cfg);
    if (rc == STARLING_OK && timeout_text)
        rc = starling_config_set_timeout_ms(cfg, (int)timeout_ms);
    if (rc == STARLING_OK && min_peers_text)
        rc = starling_config_set_min_peers(cfg, (int)min_peers);
    if (rc == STARLING_OK && order_text)
        rc = starling_config_set_ring_order(cfg, order_text);
    if (rc == STARLING_OK && probe_text)
        rc = starling_config_set_probe_bytes(cfg, (size_t)probe_bytes);
    if (rc == STARLING_OK && security_text)
        rc = starling_config_set_security(cfg, security_text);
    if (rc == STARLING_OK && standby_of)
        rc = starling_config_set_standby_of(cfg, standby_of);
    if (rc != STARLING_OK) {
        fprintf(stderr, "starling %s: configuration refused: %s\n", cmd, starling_strerror(rc));
        goto done;
    }
    rc = starling_coord_create(&coord, listen, run, secret, secret_len, cfg);
    /* The library keeps its own copy; ours is no longer needed. */
    memset(secret, 0, secret_len);
    if (rc != STARLING_OK) {
        const char *why = starling_last_error();
        fprintf(stderr, "starling %s: cannot start on %s: %s%s%s\n", cmd, listen,
                starling_strerror(rc), why[0] ? ": " : "", why);
        goto done;
    }
    g_running_coord = coord;
    install_coord_signals();
    printf("coordinator listening on %s:%d\n", host, starling_coord_port(coord));
    fflush(stdout);

    rc = starling_coord_run(coord);
    g_running_coord = NULL;
    if (rc != STARLING_OK)
        fprintf(stderr, "starling %s: stopped with error: %s\n", cmd, starling_strerror(rc));
    else
        fprintf(stderr, "starling %s: stopped\n", cmd);
done:
    starling_coord_destroy(coord);
    starling_config_destroy(cfg);
    free(secret);
    return rc == STARLING_OK ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

/* ---- the coordinator on a thread, for bench and demo */

static void *coord_thread_main(void *arg)
{
    cli_local_coord *lc = arg;
    lc->run_rc = starling_coord_run(lc->coord);
    return NULL;
}

int cli_local_coord_start(cli_local_coord *lc, const char *run, const char *secret, int timeout_ms,
                          int min_peers, const char *security)
{
    starling_config *cfg = NULL;
    pthread_t *th;
    sigset_t block, old;
    int rc;

    memset(lc, 0, sizeof *lc);
    th = calloc(1, sizeof *th);
    if (!th) {
        fprintf(stderr, "starling: out of memory\n");
        return -1;
    }
    lc->thread = th;
    rc = starling_config_create(&cfg);
    if (rc == STARLING_OK && timeout_ms > 0)
        rc = starling_config_set_timeout_ms(cfg, timeout_ms);
    if (rc == STARLING_OK)
        rc = starling_config_set_min_peers(cfg, min_peers);
    if (rc == STARLING_OK && security)
        rc = starling_config_set_security(cfg, security);
    if (rc == STARLING_OK)
        rc = starling_coord_create(&lc->coord, "127.0.0.1:0", run, secret, strlen(secret), cfg);
    starling_config_destroy(cfg);
    if (rc != STARLING_OK) {
        fprintf(stderr, "starling: cannot start the local coordinator: %s\n",
                starling_strerror(rc));
        cli_local_coord_stop(lc);
        return -1;
    }
    snprintf(lc->addr, sizeof lc->addr, "127.0.0.1:%d", starling_coord_port(lc->coord));

    /* Signals go to the main thread, which supervises the children; the coordinator
     * thread inherits this mask. */
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    rc = pthread_create(th, NULL, coord_thread_main, lc);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        fprintf(stderr, "starling: cannot start the coordinator thread: %s\n", strerror(rc));
        cli_local_coord_stop(lc);
        return -1;
    }
    lc->thread_started = 1;
    return 0;
}

void cli_local_coord_stop(cli_local_coord *lc)
{
    if (lc->thread_started) {
        starling_coord_stop(lc->coord);
        pthread_join(*(pthread_t *)lc->thread, NULL);
        lc->thread_started = 0;
        if (lc->run_rc != STARLING_OK)
            fprintf(stderr, "starling: local coordinator ended with: %s\n",
                    starling_strerror(lc->run_rc));
    }
    starling_coord_destroy(lc->coord);
    lc->coord = NULL;
    free(lc->thread);
    lc->thread = NULL;
}
