/*
 * cli_proc.c -- child peer processes of `bench` and `demo`.
 *
 * Each child is this same program (re-executed through /proc/self/exe) running a hidden
 * subcommand. It reports to the parent on a pipe, one text line per event; its stderr
 * is the parent's, so a failing child's message reaches the user directly.
 *
 * No process may outlive the parent: children ask the kernel for SIGKILL when the parent
 * dies (PR_SET_PDEATHSIG), and the parent reaps every child with a deadline and
 * SIGKILLs whatever is still running when it gives up.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "cli.h"

#define CLI_MAX_CHILDREN 128
#define CLI_MAX_LINE (1u << 20)
#define CLI_SELF_EXE "/proc/self/exe"

/* POSIX leaves declaring environ to the application. */
extern char **environ;

volatile sig_atomic_t cli_stop_signal = 0;

static void on_stop_signal(int sig) { cli_stop_signal = sig; }

void cli_install_stop_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: poll() and sleeps return early with EINTR */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

void cli_ignore_sigpipe(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, NULL);
}

int cli_group_init(cli_group *g, const char *secret)
{
    static const char key[] = CLI_SECRET_ENV "=";
    size_t n = 0, k, out = 0;
    char *entry;

    memset(g, 0, sizeof *g);
    while (environ && environ[n])
        n++;
    g->envp = calloc(n + 2, sizeof *g->envp);
    entry = malloc(sizeof key + strlen(secret));
    if (!g->envp || !entry) {
        free(g->envp);
        free(entry);
        g->envp = NULL;
        fprintf(stderr, "starling: out of memory\n");
        return -1;
    }
    for (k = 0; k < n; k++)
        if (strncmp(environ[k], key, sizeof key - 1) != 0)
            g->envp[out++] = environ[k];
    memcpy(entry, key, sizeof key - 1);
    strcpy(entry + sizeof key - 1, secret);
    g->envp[out++] = entry;
    g->envp[out] = NULL;
    return 0;
}

static void set_cloexec(int fd, int on)
{
    int fl = fcntl(fd, F_GETFD);
    if (fl >= 0)
        fcntl(fd, F_SETFD, on ? (fl | FD_CLOEXEC) : (fl & ~FD_CLOEXEC));
}

int cli_group_spawn(cli_group *g, const char *name, char *const args[])
{
    char fd_text[16];
    char **argv = NULL;
    size_t nargs = 0, k;
    int p[2] = {-1, -1};
    pid_t parent = getpid(), pid;
    cli_child *c;

    if (g->n == CLI_MAX_CHILDREN) {
        fprintf(stderr, "starling: too many child processes\n");
        return -1;
    }
    if (g->n == g->cap) {
        int cap = g->cap ? 2 * g->cap : 8;
        cli_child *kids = realloc(g->kids, (size_t)cap * sizeof *kids);
        if (!kids)
            goto nomem;
        g->kids = kids;
        g->cap = cap;
    }
    while (args[nargs])
        nargs++;
    argv = calloc(nargs + 4, sizeof *argv);
    if (!argv)
        goto nomem;
    if (pipe(p) != 0) {
        fprintf(stderr, "starling: pipe: %s\n", strerror(errno));
        free(argv);
        return -1;
    }
    /* Every report pipe is close-on-exec, so a child holds only its own write end
     * (re-enabled below, after fork) and EOF on a pipe means that child is gone. */
    set_cloexec(p[0], 1);
    set_cloexec(p[1], 1);
    snprintf(fd_text, sizeof fd_text, "%d", p[1]);
    argv[0] = (char *)"starling";
    for (k = 0; k < nargs; k++)
        argv[k + 1] = args[k];
    argv[nargs + 1] = (char *)"--report-fd";
    argv[nargs + 2] = fd_text;
    argv[nargs + 3] = NULL;

    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0) {
        fprintf(stderr, "starling: fork: %s\n", strerror(errno));
        close(p[0]);
        close(p[1]);
        free(argv);
        return -1;
    }
    if (pid == 0) {
        /* The parent may have threads (the coordinator): only async-signal-safe calls
         * between fork and exec, hence everything above was prepared beforehand. */
        set_cloexec(p[1], 0);
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
#else
        (void)parent;
#endif
        execve(CLI_SELF_EXE, argv, g->envp);
        {
            static const char msg[] = "starling: cannot exec " CLI_SELF_EXE "\n";
            ssize_t w = write(2, msg, sizeof msg - 1);
            (void)w;
        }
        _exit(127);
    }
    close(p[1]);
    free(argv);

    c = &g->kids[g->n];
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    c->pid = pid;
    c->fd = p[0];
    if (g->verbose)
        fprintf(stderr, "starling: started %s (pid %ld)\n", c->name, (long)pid);
    return g->n++;

nomem:
    free(argv);
    fprintf(stderr, "starling: out of memory\n");
    return -1;
}

const char *cli_describe_status(int status, char *buf, size_t cap)
{
    if (WIFEXITED(status))
        snprintf(buf, cap, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, cap, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, cap, "ended with wait status %#x", (unsigned)status);
    return buf;
}

static int child_failed(const cli_child *c)
{
    if (c->expect_death && WIFSIGNALED(c->status) && WTERMSIG(c->status) == SIGKILL)
        return 0;
    return !(WIFEXITED(c->status) && WEXITSTATUS(c->status) == 0);
}

/* Reaps whichever children have exited; returns the index of one that failed, or -1. */
static int reap_exited(cli_group *g)
{
    int k;
    for (k = 0; k < g->n; k++) {
        cli_child *c = &g->kids[k];
        int st;
        pid_t r;
        if (c->reaped)
            continue;
        r = waitpid(c->pid, &st, WNOHANG);
        if (r == c->pid) {
            c->reaped = 1;
            c->status = st;
            if (child_failed(c))
                return k;
        } else if (r < 0 && errno == ECHILD) {
            c->reaped = 1; /* not ours any more; nothing to wait for */
            c->status = 0;
        }
    }
    return -1;
}

/* Splits newly read bytes into lines and hands each to `fn`. */
static int feed_lines(cli_group *g, int idx, const char *data, size_t n, cli_line_fn fn, void *user)
{
    size_t k;
    for (k = 0; k < n; k++) {
        cli_child *c = &g->kids[idx];
        if (data[k] != '\n') {
            if (c->len + 2 > c->cap) {
                size_t cap = c->cap ? 2 * c->cap : 256;
                char *line;
                if (cap > CLI_MAX_LINE) {
                    fprintf(stderr, "starling: %s sent a report line over %u bytes\n", c->name,
                            CLI_MAX_LINE);
                    return 1;
                }
                line = realloc(c->line, cap);
                if (!line) {
                    fprintf(stderr, "starling: out of memory\n");
                    return 1;
                }
                c->line = line;
                c->cap = cap;
            }
            c->line[c->len++] = data[k];
            continue;
        }
        if (c->len == 0)
            continue;
        c->line[c->len] = '\0';
        c->len = 0;
        if (fn) {
            /* `fn` may spawn children, which can move g->kids: nothing is held over. */
            int rc = fn(user, g, idx, g->kids[idx].line);
            if (rc)
                return rc;
        }
    }
    return 0;
}

int cli_group_wait(cli_group *g, double deadline, cli_line_fn fn, void *user)
{
    static char chunk[65536];
    struct pollfd pfd[CLI_MAX_CHILDREN];
    int owner[CLI_MAX_CHILDREN];

    for (;;) {
        int k, np = 0, failed, timeout_ms, all_done = 1;
        double now;

        failed = reap_exited(g);
        if (failed >= 0) {
            char why[96];
            fprintf(stderr, "starling: %s (pid %ld) %s\n", g->kids[failed].name,
                    (long)g->kids[failed].pid,
                    cli_describe_status(g->kids[failed].status, why, sizeof why));
            return 1;
        }
        for (k = 0; k < g->n; k++) {
            if (!g->kids[k].reaped || g->kids[k].fd >= 0)
                all_done = 0;
            if (g->kids[k].fd >= 0) {
                pfd[np].fd = g->kids[k].fd;
                pfd[np].events = POLLIN;
                pfd[np].revents = 0;
                owner[np++] = k;
            }
        }
        if (all_done)
            return 0;
        if (cli_stop_signal) {
            fprintf(stderr, "starling: interrupted, stopping the peers\n");
            return 1;
        }
        now = cli_now();
        if (now >= deadline) {
            fprintf(stderr, "starling: deadline passed; still running:");
            for (k = 0; k < g->n; k++)
                if (!g->kids[k].reaped)
                    fprintf(stderr, " %s", g->kids[k].name);
            fputc('\n', stderr);
            return 1;
        }
        /* Short polls: exits are noticed by waitpid, not by a signal. */
        timeout_ms = (int)((deadline - now) * 1000.0) + 1;
        if (timeout_ms > 50)
            timeout_ms = 50;
        if (poll(pfd, (nfds_t)np, timeout_ms) < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "starling: poll: %s\n", strerror(errno));
            return 1;
        }
        for (k = 0; k < np; k++) {
            int idx = owner[k];
            ssize_t r;
            if (!(pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            r = read(g->kids[idx].fd, chunk, sizeof chunk);
            if (r < 0) {
                if (errno == EINTR || errno == EAGAIN)
                    continue;
                r = 0;
            }
            if (r == 0) {
                int rc;
                close(g->kids[idx].fd);
                g->kids[idx].fd = -1;
                /* A last line without its newline still counts. */
                rc = feed_lines(g, idx, "\n", 1, fn, user);
                if (rc)
                    return rc;
                continue;
            }
            {
                int rc = feed_lines(g, idx, chunk, (size_t)r, fn, user);
                if (rc)
                    return rc;
            }
        }
    }
}

void cli_group_kill(cli_group *g, int child)
{
    cli_child *c = &g->kids[child];
    if (c->reaped)
        return;
    c->expect_death = 1;
    kill(c->pid, SIGKILL);
}

void cli_group_kill_all(cli_group *g)
{
    double give_up;
    int k, left;

    for (k = 0; k < g->n; k++)
        if (!g->kids[k].reaped) {
            g->kids[k].expect_death = 1;
            kill(g->kids[k].pid, SIGKILL);
        }
    /* SIGKILL cannot be caught, so this is quick unless a child is stuck in the kernel;
     * even then, do not hang the user's terminal. */
    give_up = cli_now() + 5.0;
    do {
        left = 0;
        for (k = 0; k < g->n; k++) {
            cli_child *c = &g->kids[k];
            int st = 0;
            pid_t r;
            if (c->reaped)
                continue;
            r = waitpid(c->pid, &st, WNOHANG);
            if (r == c->pid || (r < 0 && errno == ECHILD)) {
                c->reaped = 1;
                c->status = st;
            } else {
                left++;
            }
        }
        if (left)
            cli_sleep_ms(10);
    } while (left && cli_now() < give_up);
    for (k = 0; k < g->n; k++)
        if (!g->kids[k].reaped)
            fprintf(stderr, "starling: %s (pid %ld) did not die after SIGKILL\n", g->kids[k].name,
                    (long)g->kids[k].pid);
}

void cli_group_free(cli_group *g)
{
    int k;
    size_t n = 0;
    for (k = 0; k < g->n; k++) {
        if (g->kids[k].fd >= 0)
            close(g->kids[k].fd);
        free(g->kids[k].line);
    }
    free(g->kids);
    if (g->envp) {
        /* Only the last entry (the secret) is ours; the rest belong to environ. */
        while (g->envp[n])
            n++;
        if (n > 0) {
            memset(g->envp[n - 1], 0, strlen(g->envp[n - 1]));
            free(g->envp[n - 1]);
        }
        free(g->envp);
    }
    memset(g, 0, sizeof *g);
}

FILE *cli_child_open(const char *cmd, const char *fd_text, const char **secret)
{
    *secret = getenv(CLI_SECRET_ENV);
    if (!*secret || !(*secret)[0]) {
        fprintf(stderr, "starling %s: %s is not set\n", cmd, CLI_SECRET_ENV);
        return NULL;
    }
    return cli_report_open(cmd, fd_text);
}

FILE *cli_report_open(const char *cmd, const char *fd_text)
{
    char *end;
    long fd;
    FILE *f;

    if (!fd_text) {
        cli_usage_error(cmd, "--report-fd is required (this command is started by "
                             "'starling bench' or 'starling demo')");
        return NULL;
    }
    errno = 0;
    fd = strtol(fd_text, &end, 10);
    if (errno || *end || fd < 3 || fd > 65535) {
        cli_usage_error(cmd, "--report-fd: bad descriptor '%s'", fd_text);
        return NULL;
    }
    set_cloexec((int)fd, 1);
    f = fdopen((int)fd, "w");
    if (!f) {
        fprintf(stderr, "starling %s: report fd %ld: %s\n", cmd, fd, strerror(errno));
        return NULL;
    }
    setvbuf(f, NULL, _IOLBF, 0);
    return f;
}

void cli_report(FILE *rep, const char *fmt, ...)
{
    va_list ap;
    if (!rep)
        return;
    va_start(ap, fmt);
    vfprintf(rep, fmt, ap);
    va_end(ap);
    fputc('\n', rep);
    fflush(rep);
}
