/* coord_load -- the coordinator under many peers: N simulated peers' control connections
 * from this one process, against a real `starling coordinator` process it starts.
 *
 *   coord_load [--peers 100,250,500] [--timeout-ms 10000] [--hold-s 10]
 *              [--starling build/tools/starling]
 *
 * Per N, with a fresh coordinator (min_peers N): every simulated peer connects, runs the
 * real handshake (sealed: the default security), registers and then heartbeats every
 * timeout/4 as a peer's engine does, answering QUERY with STATUS. Measured:
 *   admission  time from the first connect to the N-th WELCOME, and the rate (this one
 *              client does every handshake in turn, so it is a lower bound on the
 *              coordinator's rate);
 *   epoch      every peer asks for an epoch (TOPO_REQ) at once: time until all N hold the
 *              TOPO of an epoch of N;
 *   steady     --hold-s seconds of heartbeats: the coordinator's CPU (utime + stime from
 *              /proc, as a fraction of one core) and its resident memory;
 *   change     one peer's connection is closed; the others answer the coordinator's QUERY
 *              and ask for the next epoch: time until all N - 1 hold its TOPO.
 * One JSON object per N on stdout. Exit status 1 if any phase does not finish within
 * 60 s or the coordinator refuses a peer. The coordinator's member limit is
 * STARLING_MAX_PEERS (proto/msg.h). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "auth/handshake.h"
#include "net/fconn.h"
#include "platform/clock.h"
#include "platform/net.h"
#include "proto/msg.h"
#include "starling.h"

#define RUN "coord-load"
#define SECRET "coord-load-secret"
#define PHASE_MS 60000

typedef struct sim_peer {
    starling__fconn fc;
    uint64_t id;
    uint64_t epoch; /* of the last TOPO */
    uint32_t topo_n;
    int dead;
} sim_peer;

static int fail(const char *what)
{
    fprintf(stderr, "coord_load: %s\n", what);
    return 1;
}

/* Starts `starling coordinator` with min_peers n; returns its pid and port, or -1. */
static pid_t start_coordinator(const char *starling, int n, int timeout_ms, int *port)
{
    char nbuf[16], tbuf[16], line[256];
    int fds[2];
    pid_t pid;
    FILE *out;
    snprintf(nbuf, sizeof nbuf, "%d", n);
    snprintf(tbuf, sizeof tbuf, "%d", timeout_ms);
    if (pipe(fds) != 0)
        return -1;
    pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY); /* its log: one line per peer */
        dup2(fds[1], 1);
        if (null >= 0)
            dup2(null, 2);
        close(fds[0]);
        close(fds[1]);
        setenv("STARLING_SECRET", SECRET, 1);
        execl(starling, starling, "coordinator", "--listen", "127.0.0.1:0", "--run", RUN,
              "--min-peers", nbuf, "--timeout-ms", tbuf, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        return -1;
    }
    out = fdopen(fds[0], "r");
    *port = 0;
    while (out && fgets(line, sizeof line, out)) {
        const char *colon = strrchr(line, ':');
        if (strncmp(line, "coordinator listening on", 24) == 0 && colon) {
            *port = atoi(colon + 1);
            break;
        }
    }
    if (out)
        fclose(out); /* the coordinator logs to stderr; its stdout may close */
    if (*port <= 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    return pid;
}

/* CPU seconds (user + system) and resident KiB of process `pid`. */
static void proc_usage(pid_t pid, double *cpu_s, long *rss_kib)
{
    char path[64], buf[2048];
    unsigned long ut = 0, st = 0;
    FILE *f;
    *cpu_s = 0;
    *rss_kib = 0;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if ((f = fopen(path, "r"))) {
        if (fgets(buf, sizeof buf, f)) {
            const char *p = strrchr(buf, ')'); /* comm may hold spaces */
            if (p &&
                sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
                *cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
        }
        fclose(f);
    }
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    if ((f = fopen(path, "r"))) {
        while (fgets(buf, sizeof buf, f))
            if (sscanf(buf, "VmRSS: %ld", rss_kib) == 1)
                break;
        fclose(f);
    }
}

/* Connect, handshake, REGISTER, WELCOME: blocking, as a peer's starling_comm_create. */
static int admit(sim_peer *p, int port, int n, int i, const starling__key *key)
{
    starling__msg_hello h;
    starling__msg_register reg;
    starling__frame_hdr fh;
    starling__seal seal;
    static uint8_t buf[STARLING_FRAME_HDR + STARLING_CTRL_MAX];
    int64_t deadline = starling__now_ms() + 10000;
    char why[128] = "";
    int fd, rc, len;
    rc = starling__tcp_connect("127.0.0.1", port, 0, 10000, &fd, why, sizeof why);
    if (rc)
        return fprintf(stderr, "coord_load: connect: %s\n", why), rc;
    memset(&h, 0, sizeof h);
    h.role = ROLE_CONTROL;
    h.peer_id = p->id;
    rc = starling__handshake_client(fd, key, &h, &seal, deadline, why, sizeof why);
    memset(&reg, 0, sizeof reg);
    reg.peer_id = p->id;
    snprintf(reg.name, sizeof reg.name, "sim%d", i);
    strcpy(reg.host, "127.0.0.1");
    reg.port = (uint16_t)(20000 + i);
    reg.min_peers = (uint32_t)n;
    len = rc ? rc : starling__register_encode(buf, sizeof buf, &reg);
    rc = len < 0 ? len : starling__frame_send(fd, &seal, buf, (size_t)len, deadline);
    if (!rc)
        rc = starling__frame_recv(fd, &seal, &fh, buf, STARLING_CTRL_MAX, deadline);
    if (!rc && fh.type != MSG_WELCOME)
        rc = STARLING_E_AUTH;
    if (rc) {
        fprintf(stderr, "coord_load: peer %d not admitted: %s %s\n", i, starling_strerror(rc), why);
        starling__sock_close(fd);
        return rc;
    }
    starling__fconn_init(&p->fc, fd, starling__now_ms(), &seal);
    starling__seal_wipe(&seal);
    return STARLING_OK;
}

static void send_epoch(sim_peer *p, uint8_t type, uint64_t epoch)
{
    uint8_t buf[64];
    starling__msg_epoch m;
    int n;
    memset(&m, 0, sizeof m);
    m.epoch = epoch;
    n = starling__epoch_encode(buf, sizeof buf, type, &m);
    if (n > 0)
        starling__fconn_queue(&p->fc, buf, (size_t)n);
}

/* Runs the event loop until every live peer holds a TOPO of `want_n` members in an epoch
 * after `after` (or, want_n 0, for hold_ms). Heartbeats every hb_ms, QUERY answered. */
static int loop(sim_peer *ps, int n, uint32_t want_n, uint64_t after, int64_t hold_ms, int hb_ms,
                int64_t *next_hb, starling__msg_topo *topo)
{
    struct pollfd *pf = calloc((size_t)n, sizeof *pf);
    int64_t end = starling__now_ms() + (want_n ? PHASE_MS : hold_ms);
    int rc = 1;
    if (!pf)
        return 1;
    for (;;) {
        int64_t now = starling__now_ms();
        int done = 1;
        for (int i = 0; i < n; i++)
            if (!ps[i].dead && (ps[i].topo_n != want_n || ps[i].epoch <= after))
                done = 0;
        if (want_n && done) {
            rc = 0;
            break;
        }
        if (now >= end) {
            rc = want_n ? 1 : 0;
            break;
        }
        if (now >= *next_hb) {
            uint8_t hb[STARLING_FRAME_HDR];
            starling__frame_hdr_encode(hb, MSG_HEARTBEAT, 0);
            for (int i = 0; i < n; i++)
                if (!ps[i].dead)
                    starling__fconn_queue(&ps[i].fc, hb, sizeof hb);
            *next_hb = now + hb_ms;
        }
        for (int i = 0; i < n; i++) {
            pf[i].fd = ps[i].dead ? -1 : ps[i].fc.fd;
            pf[i].events = ps[i].dead ? 0 : starling__fconn_events(&ps[i].fc);
            pf[i].revents = 0;
        }
        poll(pf, (nfds_t)n, 20);
        for (int i = 0; i < n; i++) {
            starling__frame_hdr h;
            const uint8_t *pl;
            int got;
            if (ps[i].dead)
                continue;
            if (pf[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                if (starling__fconn_read(&ps[i].fc, now)) {
                    fprintf(stderr, "coord_load: the coordinator closed peer %d\n", i);
                    goto out;
                }
                while ((got = starling__fconn_next(&ps[i].fc, &h, &pl)) == 1) {
                    starling__msg_epoch m;
                    if (h.type == MSG_TOPO && starling__topo_decode(pl, h.len, topo) == 0) {
                        ps[i].epoch = topo->epoch;
                        ps[i].topo_n = topo->n;
                    } else if (h.type == MSG_QUERY &&
                               starling__epoch_decode(h.type, pl, h.len, &m) == 0) {
                        send_epoch(&ps[i], MSG_STATUS, m.epoch);
                    }
                }
                if (got < 0) {
                    fprintf(stderr, "coord_load: bad frame for peer %d\n", i);
                    goto out;
                }
            }
            if (starling__fconn_flush(&ps[i].fc))
                goto out;
        }
    }
out:
    free(pf);
    return rc;
}

static int run_one(const char *starling, int n, int timeout_ms, int hold_s)
{
    static starling__msg_topo topo;
    starling__key key;
    sim_peer *ps = calloc((size_t)n, sizeof *ps);
    int port, rc = 1, hb_ms = timeout_ms / 4;
    int64_t t0, t_adm, t_ep, t_chg, next_hb;
    double cpu0, cpu1;
    long rss0, rss1;
    pid_t pid;
    if (!ps)
        return fail("no memory");
    if (starling__key_derive(&key, RUN, SECRET, strlen(SECRET)))
        return fail("key");
    pid = start_coordinator(starling, n, timeout_ms, &port);
    if (pid < 0)
        return fail("cannot start the coordinator");
    proc_usage(pid, &cpu0, &rss0);
    t0 = starling__now_ns();
    next_hb = starling__now_ms() + hb_ms;
    for (int i = 0; i < n; i++) {
        ps[i].id = 0x51000000ull + (uint64_t)i;
        ps[i].fc.fd = -1;
        if (admit(&ps[i], port, n, i, &key))
            goto done;
        if (starling__now_ms() >= next_hb) { /* the admitted ones must not go silent */
            uint8_t hb[STARLING_FRAME_HDR];
            starling__frame_hdr_encode(hb, MSG_HEARTBEAT, 0);
            for (int k = 0; k <= i; k++) {
                starling__fconn_queue(&ps[k].fc, hb, sizeof hb);
                starling__fconn_flush(&ps[k].fc);
            }
            next_hb = starling__now_ms() + hb_ms;
        }
    }
    t_adm = starling__now_ns();
    for (int i = 0; i < n; i++)
        send_epoch(&ps[i], MSG_TOPO_REQ, 0);
    if (loop(ps, n, (uint32_t)n, 0, 0, hb_ms, &next_hb, &topo)) {
        fail("no epoch of all peers within 60 s");
        goto done;
    }
    t_ep = starling__now_ns();
    {
        double c_a, c_b;
        long r_a;
        int64_t h0 = starling__now_ns(), h1;
        proc_usage(pid, &c_a, &r_a);
        loop(ps, n, 0, 0, (int64_t)hold_s * 1000, hb_ms, &next_hb, &topo);
        h1 = starling__now_ns();
        proc_usage(pid, &c_b, &rss1);
        cpu1 = (c_b - c_a) / ((double)(h1 - h0) * 1e-9);
    }
    {
        uint64_t ep = ps[1].epoch;
        int64_t k0 = starling__now_ns();
        starling__fconn_close(&ps[0].fc);
        ps[0].dead = 1;
        for (int i = 1; i < n; i++)
            send_epoch(&ps[i], MSG_TOPO_REQ, ep);
        if (loop(ps, n, (uint32_t)(n - 1), ep, 0, hb_ms, &next_hb, &topo)) {
            fail("no epoch of the survivors within 60 s");
            goto done;
        }
        t_chg = starling__now_ns() - k0;
    }
    printf("{\"peers\":%d,\"admission_s\":%.4f,\"admission_per_s\":%.1f,\"epoch_s\":%.4f,"
           "\"steady_cpu_cores\":%.4f,\"hold_s\":%d,\"heartbeat_ms\":%d,\"rss_kib\":%ld,"
           "\"rss_start_kib\":%ld,\"epoch_change_s\":%.4f}\n",
           n, (double)(t_adm - t0) * 1e-9, n / ((double)(t_adm - t0) * 1e-9),
           (double)(t_ep - t_adm) * 1e-9, cpu1, hold_s, hb_ms, rss1, rss0, (double)t_chg * 1e-9);
    fflush(stdout);
    (void)cpu0;
    rc = 0;
done:
    for (int i = 0; i < n; i++)
        if (!ps[i].dead && ps[i].fc.fd >= 0)
            starling__fconn_close(&ps[i].fc);
    free(ps);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    starling__key_wipe(&key);
    return rc;
}

int main(int argc, char **argv)
{
    const char *peers = "100,250,500", *starling = "build/tools/starling";
    int timeout_ms = 10000, hold_s = 10, rc = 0;
    struct rlimit rl;
    char list[256], *save = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--peers") == 0)
            peers = argv[i + 1];
        else if (strcmp(argv[i], "--timeout-ms") == 0)
            timeout_ms = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--hold-s") == 0)
            hold_s = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--starling") == 0)
            starling = argv[i + 1];
        else
            return fprintf(stderr, "coord_load: unknown option %s\n", argv[i]), 2;
    }
    if (argc % 2 == 0 || timeout_ms < 100 || hold_s < 1)
        return fprintf(stderr, "usage: coord_load [--peers N,...] [--timeout-ms MS] "
                               "[--hold-s S] [--starling PATH]\n"),
               2;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    snprintf(list, sizeof list, "%s", peers);
    for (char *t = strtok_r(list, ",", &save); t && !rc; t = strtok_r(NULL, ",", &save)) {
        int n = atoi(t);
        if (n < 2 || n > STARLING_MAX_PEERS)
            return fprintf(stderr,
                           "coord_load: peer count %s outside 2..%d "
                           "(STARLING_MAX_PEERS)\n",
                           t, STARLING_MAX_PEERS),
                   2;
        rc = run_one(starling, n, timeout_ms, hold_s);
    }
    return rc;
}
