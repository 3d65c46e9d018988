/* linkemu -- a packet-level link emulator: forwards Ethernet frames between two TAP
 * devices, holding each frame for a delay (plus optional uniform jitter), pacing them at an
 * optional rate, dropping them at random with an optional probability, and dropping
 * everything while the link is cut (on a schedule or toggled by SIGUSR1).
 *
 * The kernel here has no netem. A byte-stream proxy would terminate TCP and hide the delay
 * from the endpoints' congestion control; forwarding frames keeps one TCP connection end to
 * end, so its windows and RTT estimates see a real long link. See docs/testbed.md.
 *
 *   starling_linkemu --tap-a NAME --tap-b NAME [--delay-ms D] [--jitter-ms J]
 *                    [--rate BITS_PER_S] [--burst BYTES] [--loss P] [--seed N]
 *                    [--cut-at T --cut-for S] [--queue-bytes N] [--hold-bytes N]
 *                    [--offload on|off] [--check]
 *
 * --offload on: the TAPs take GSO super-packets (up to 64 KiB) instead of MTU frames, ~40x
 * fewer frames to move, so the emulator keeps up with Gbit/s links; loss, the queue limits
 * and the counters then act per super-packet (one loss drops a burst). Default off.
 * --check validates the arguments and exits (0 or 2) without opening anything.
 * Model, per direction (a->b and b->a are independent):
 *   1. A frame read from one TAP is dropped if the link is cut, or with probability P.
 *   2. With --rate, a token bucket (rate bits/s, --burst bytes, default max(rate/250, 3000))
 *      gives the time the frame has finished "serialising"; frames that would wait for the
 *      bucket behind more than --queue-bytes (default 1 MiB) of backlog are dropped
 *      (drop-tail, as tbf's limit).
 *   3. It is released at that time + D + uniform[0, J] ms. Without jitter release times never
 *      decrease, so frames leave in arrival order; with jitter they may be reordered, as on a
 *      path whose delay varies.
 *   4. Frames are held in memory up to --hold-bytes per direction (default 64 MiB, enough for
 *      ~0.5 s at 1 Gbit/s); beyond that new frames are dropped (drop-tail).
 *   5. A frame due for release while the link is cut is dropped.
 * Exit: SIGTERM or SIGINT; counters per direction go to stderr. Exit status 0, 2 for bad
 * arguments, 1 for a runtime failure (cannot open the TAPs).
 */
#define _DEFAULT_SOURCE /* struct ifreq, IFNAMSIZ */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define FRAME_MAX (256 * 1024) /* above any frame, even a GSO super-packet with --offload on */
#define READ_BATCH 64   /* frames read per fd per loop turn, so one side cannot starve the other */
#define MAX_POLL_MS 100 /* bound on a poll, so a signal that lands just before it is seen soon */
#define NS_PER_S 1000000000LL

struct frame {
    int64_t release_ns; /* monotonic time at which it leaves */
    uint64_t seq;       /* arrival order: breaks ties so equal times keep FIFO order */
    size_t len;
    unsigned char data[];
};

/* A min-heap of frames ordered by (release_ns, seq): FIFO without jitter, and the right
 * order with it. */
struct direction {
    const char *name;
    struct frame **heap;
    size_t n, cap;
    size_t held_bytes;
    int64_t bucket_free_ns; /* token bucket: when the serialiser becomes free */
    uint64_t next_seq;
    uint64_t rx, forwarded, drop_loss, drop_cut, drop_queue, drop_hold, drop_write;
};

struct options {
    const char *tap_a, *tap_b;
    double delay_ms, jitter_ms, loss, cut_at_s, cut_for_s;
    double rate_bps;
    long long burst_bytes, queue_bytes, hold_bytes;
    uint64_t seed;
    int seed_given, cut_given, check_only, offload;
};

static volatile sig_atomic_t g_stop, g_toggle;

static void on_stop(int sig)
{
    (void)sig;
    g_stop = 1;
}
static void on_toggle(int sig)
{
    (void)sig;
    g_toggle = 1;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

/* splitmix64: small, seedable, good enough for loss and jitter draws. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double rng_unit(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

static int frame_before(const struct frame *x, const struct frame *y)
{
    return x->release_ns < y->release_ns || (x->release_ns == y->release_ns && x->seq < y->seq);
}

static int heap_push(struct direction *d, struct frame *f)
{
    size_t i;
    if (d->n == d->cap) {
        size_t ncap = d->cap ? d->cap * 2 : 1024;
        struct frame **nh = realloc(d->heap, ncap * sizeof *nh);
        if (!nh)
            return -1;
        d->heap = nh;
        d->cap = ncap;
    }
    i = d->n++;
    while (i > 0 && frame_before(f, d->heap[(i - 1) / 2])) {
        d->heap[i] = d->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    d->heap[i] = f;
    d->held_bytes += f->len;
    return 0;
}

static struct frame *heap_pop(struct direction *d)
{
    struct frame *top = d->heap[0], *last;
    size_t i = 0;
    d->held_bytes -= top->len;
    last = d->heap[--d->n];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= d->n)
            break;
        if (c + 1 < d->n && frame_before(d->heap[c + 1], d->heap[c]))
            c++;
        if (!frame_before(d->heap[c], last))
            break;
        d->heap[i] = d->heap[c];
        i = c;
    }
    if (d->n > 0)
        d->heap[i] = last;
    return top;
}

static int tap_open(const char *name, int offload)
{
    struct ifreq ifr;
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "linkemu: open /dev/net/tun: %s\n", strerror(errno));
        return -1;
    }
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (offload ? IFF_VNET_HDR : 0);
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        fprintf(stderr, "linkemu: TUNSETIFF %s: %s\n", name, strerror(errno));
        close(fd);
        return -1;
    }
    /* With offloads the kernel hands us (and takes back) GSO super-packets behind a
     * virtio_net_hdr. Both TAPs use the same header, so it passes through untouched. */
    if (offload && ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) < 0) {
        fprintf(stderr, "linkemu: TUNSETOFFLOAD %s: %s\n", name, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int cut_active(const struct options *o, int manual_cut, int64_t t_ns, int64_t start_ns)
{
    if (manual_cut)
        return 1;
    if (o->cut_given) {
        double t = (double)(t_ns - start_ns) / 1e9;
        if (t >= o->cut_at_s && t < o->cut_at_s + o->cut_for_s)
            return 1;
    }
    return 0;
}

/* Takes one frame read from the source side of d: drops it or queues it for release. */
static void admit(struct direction *d, const struct options *o, uint64_t *rng,
                  const unsigned char *buf, size_t len, int64_t t, int cut)
{
    struct frame *f;
    int64_t ready = t;
    d->rx++;
    if (cut) {
        d->drop_cut++;
        return;
    }
    if (o->loss > 0 && rng_unit(rng) < o->loss) {
        d->drop_loss++;
        return;
    }
    if (o->rate_bps > 0) {
        /* Token bucket as a virtual clock: the bucket holds `burst` bytes of credit, i.e. the
         * serialiser may run up to burst*8/rate seconds behind real time. */
        int64_t burst_ns = (int64_t)((double)o->burst_bytes * 8.0 / o->rate_bps * 1e9);
        int64_t tx_ns = (int64_t)((double)len * 8.0 / o->rate_bps * 1e9);
        int64_t start = d->bucket_free_ns;
        double backlog_bytes;
        if (start < t - burst_ns)
            start = t - burst_ns;
        backlog_bytes = (double)(start - (t - burst_ns)) * o->rate_bps / 8.0 / 1e9;
        if (backlog_bytes > (double)o->queue_bytes) {
            d->drop_queue++;
            return;
        }
        d->bucket_free_ns = start + tx_ns;
        if (d->bucket_free_ns > t)
            ready = d->bucket_free_ns;
    }
    if (d->held_bytes + len > (size_t)o->hold_bytes) {
        d->drop_hold++;
        return;
    }
    f = malloc(sizeof *f + len);
    if (!f) {
        d->drop_hold++;
        return;
    }
    f->len = len;
    memcpy(f->data, buf, len);
    f->seq = d->next_seq++;
    f->release_ns = ready + (int64_t)(o->delay_ms * 1e6);
    if (o->jitter_ms > 0)
        f->release_ns += (int64_t)(rng_unit(rng) * o->jitter_ms * 1e6);
    if (heap_push(d, f) < 0) {
        free(f);
        d->drop_hold++;
    }
}

/* Releases the frames of d that are due at time t into fd. */
static void release_due(struct direction *d, int fd, int64_t t, int cut)
{
    while (d->n > 0 && d->heap[0]->release_ns <= t) {
        struct frame *f = heap_pop(d);
        if (cut) {
            d->drop_cut++;
        } else if (write(fd, f->data, f->len) == (ssize_t)f->len) {
            d->forwarded++;
        } else {
            /* A TAP write injects into the stack and does not block; a failure means the
             * device is down or the frame is malformed. A real link loses such a frame too. */
            d->drop_write++;
        }
        free(f);
    }
}

static void print_stats(const struct direction *d)
{
    fprintf(stderr,
            "linkemu: %s: received %" PRIu64 " forwarded %" PRIu64 " dropped loss %" PRIu64
            " cut %" PRIu64 " queue %" PRIu64 " hold %" PRIu64 " write %" PRIu64
            " (still held %zu)\n",
            d->name, d->rx, d->forwarded, d->drop_loss, d->drop_cut, d->drop_queue, d->drop_hold,
            d->drop_write, d->n);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: starling_linkemu --tap-a NAME --tap-b NAME [--delay-ms D] [--jitter-ms J]\n"
            "         [--rate BITS_PER_S[k|m|g]] [--burst BYTES] [--loss P] [--seed N]\n"
            "         [--cut-at T --cut-for S] [--queue-bytes N] [--hold-bytes N]\n"
            "         [--offload on|off] [--check]\n"
            "  D, J: milliseconds (0..60000); P: probability 0..1; T, S: seconds since start;\n"
            "  SIGUSR1 toggles a cut; SIGTERM/SIGINT exit and print counters to stderr.\n");
}

static int parse_double(const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    double v;
    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "linkemu: %s '%s': expected a number in [%g, %g]\n", opt, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_ll(const char *opt, const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    long long v;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "linkemu: %s '%s': expected an integer in [%lld, %lld]\n", opt, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

/* A rate in bits/s: a number with an optional k, m or g (decimal multiples; "mbit" and
 * "gbit" are accepted too, as tc writes them). */
static int parse_rate(const char *s, double *out)
{
    char *end;
    double v, mul = 1;
    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s)
        goto bad;
    if (*end == 'k' || *end == 'K')
        mul = 1e3, end++;
    else if (*end == 'm' || *end == 'M')
        mul = 1e6, end++;
    else if (*end == 'g' || *end == 'G')
        mul = 1e9, end++;
    if (strcmp(end, "bit") == 0)
        end += 3;
    if (*end)
        goto bad;
    v *= mul;
    if (!(v >= 8000 && v <= 1e12))
        goto bad;
    *out = v;
    return 0;
bad:
    fprintf(stderr, "linkemu: --rate '%s': expected bits/s from 8000 to 1e12 (e.g. 100m)\n", s);
    return -1;
}

static int parse_args(int argc, char **argv, struct options *o)
{
    int i;
    double cut_at = -1, cut_for = -1;
    memset(o, 0, sizeof *o);
    o->queue_bytes = 1 << 20;
    o->hold_bytes = 64LL << 20;
    o->burst_bytes = -1;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        long long ll;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage();
            exit(0);
        }
        if (strcmp(a, "--check") == 0) {
            o->check_only = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "linkemu: %s: missing value (or unknown option)\n", a);
            return -1;
        }
        v = argv[++i];
        if (strcmp(a, "--tap-a") == 0 || strcmp(a, "--tap-b") == 0) {
            if (!*v || strlen(v) >= IFNAMSIZ || strchr(v, '/') || strchr(v, ' ')) {
                fprintf(stderr, "linkemu: %s '%s': a device name of 1..%d characters\n", a, v,
                        IFNAMSIZ - 1);
                return -1;
            }
            if (a[6] == 'a')
                o->tap_a = v;
            else
                o->tap_b = v;
        } else if (strcmp(a, "--delay-ms") == 0) {
            if (parse_double(a, v, 0, 60000, &o->delay_ms))
                return -1;
        } else if (strcmp(a, "--jitter-ms") == 0) {
            if (parse_double(a, v, 0, 60000, &o->jitter_ms))
                return -1;
        } else if (strcmp(a, "--loss") == 0) {
            if (parse_double(a, v, 0, 1, &o->loss))
                return -1;
        } else if (strcmp(a, "--rate") == 0) {
            if (parse_rate(v, &o->rate_bps))
                return -1;
        } else if (strcmp(a, "--burst") == 0) {
            if (parse_ll(a, v, 1500, 1LL << 30, &o->burst_bytes))
                return -1;
        } else if (strcmp(a, "--queue-bytes") == 0) {
            if (parse_ll(a, v, 1500, 1LL << 32, &o->queue_bytes))
                return -1;
        } else if (strcmp(a, "--hold-bytes") == 0) {
            if (parse_ll(a, v, 65536, 1LL << 34, &o->hold_bytes))
                return -1;
        } else if (strcmp(a, "--seed") == 0) {
            if (parse_ll(a, v, 0, LLONG_MAX, &ll))
                return -1;
            o->seed = (uint64_t)ll;
            o->seed_given = 1;
        } else if (strcmp(a, "--offload") == 0) {
            if (strcmp(v, "on") != 0 && strcmp(v, "off") != 0) {
                fprintf(stderr, "linkemu: --offload '%s': expected on or off\n", v);
                return -1;
            }
            o->offload = v[1] == 'n';
        } else if (strcmp(a, "--cut-at") == 0) {
            if (parse_double(a, v, 0, 1e6, &cut_at))
                return -1;
        } else if (strcmp(a, "--cut-for") == 0) {
            if (parse_double(a, v, 0.001, 1e6, &cut_for))
                return -1;
        } else {
            fprintf(stderr, "linkemu: unknown option '%s'\n", a);
            return -1;
        }
    }
    if (!o->tap_a || !o->tap_b) {
        fprintf(stderr, "linkemu: --tap-a and --tap-b are required\n");
        return -1;
    }
    if (strcmp(o->tap_a, o->tap_b) == 0) {
        fprintf(stderr, "linkemu: --tap-a and --tap-b must differ\n");
        return -1;
    }
    if ((cut_at >= 0) != (cut_for >= 0)) {
        fprintf(stderr, "linkemu: --cut-at and --cut-for go together\n");
        return -1;
    }
    if (cut_at >= 0) {
        o->cut_given = 1;
        o->cut_at_s = cut_at;
        o->cut_for_s = cut_for;
    }
    if (o->burst_bytes >= 0 && o->rate_bps == 0) {
        fprintf(stderr, "linkemu: --burst needs --rate\n");
        return -1;
    }
    if (o->rate_bps > 0 && o->burst_bytes < 0) {
        o->burst_bytes = (long long)(o->rate_bps / 8 / 250);
        if (o->burst_bytes < 3000)
            o->burst_bytes = 3000;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct options o;
    struct direction dir[2];
    int fd[2], i, manual_cut = 0, was_cut = 0, rc = 0;
    uint64_t rng;
    int64_t start;
    struct sigaction sa;
    static unsigned char buf[FRAME_MAX];

    if (parse_args(argc, argv, &o) < 0) {
        usage();
        return 2;
    }
    if (o.check_only)
        return 0;
    if (!o.seed_given)
        o.seed = (uint64_t)now_ns() ^ ((uint64_t)getpid() << 32);
    rng = o.seed;

    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_toggle;
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    fd[0] = tap_open(o.tap_a, o.offload);
    fd[1] = fd[0] < 0 ? -1 : tap_open(o.tap_b, o.offload);
    if (fd[0] < 0 || fd[1] < 0) {
        if (fd[0] >= 0)
            close(fd[0]);
        return 1;
    }
    memset(dir, 0, sizeof dir);
    dir[0].name = "a->b";
    dir[1].name = "b->a";
    start = now_ns();
    fprintf(stderr,
            "linkemu: ready %s <-> %s delay %.3f ms jitter %.3f ms rate %.0f bit/s burst %lld B "
            "loss %.4f seed %" PRIu64 " queue %lld B hold %lld B offload %s\n",
            o.tap_a, o.tap_b, o.delay_ms, o.jitter_ms, o.rate_bps,
            o.rate_bps > 0 ? o.burst_bytes : 0, o.loss, o.seed, o.queue_bytes, o.hold_bytes,
            o.offload ? "on" : "off");

    while (!g_stop) {
        struct pollfd pfd[2];
        int64_t t = now_ns(), next = -1;
        int cut, timeout_ms = MAX_POLL_MS;

        if (g_toggle) {
            g_toggle = 0;
            manual_cut = !manual_cut;
        }
        cut = cut_active(&o, manual_cut, t, start);
        if (cut != was_cut) {
            fprintf(stderr, "linkemu: %s at %.3f s\n", cut ? "cut" : "restored",
                    (double)(t - start) / 1e9);
            was_cut = cut;
        }
        /* Frames of side i are released into the other side's TAP. */
        release_due(&dir[0], fd[1], t, cut);
        release_due(&dir[1], fd[0], t, cut);
        for (i = 0; i < 2; i++) {
            if (dir[i].n > 0 && (next < 0 || dir[i].heap[0]->release_ns < next))
                next = dir[i].heap[0]->release_ns;
        }
        if (next >= 0) {
            /* Round up: a frame may leave up to 1 ms late, never early. */
            int64_t ms = (next - t + 999999) / 1000000;
            if (ms < timeout_ms)
                timeout_ms = (int)(ms < 0 ? 0 : ms);
        }
        if (o.cut_given) {
            /* Wake at the cut's edges so they are logged and applied on time. */
            int64_t edges[2], e;
            edges[0] = start + (int64_t)(o.cut_at_s * 1e9);
            edges[1] = start + (int64_t)((o.cut_at_s + o.cut_for_s) * 1e9);
            for (i = 0; i < 2; i++) {
                e = edges[i];
                if (e > t && (e - t + 999999) / 1000000 < timeout_ms)
                    timeout_ms = (int)((e - t + 999999) / 1000000);
            }
        }
        pfd[0].fd = fd[0];
        pfd[1].fd = fd[1];
        pfd[0].events = pfd[1].events = POLLIN;
        if (poll(pfd, 2, timeout_ms) < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "linkemu: poll: %s\n", strerror(errno));
            rc = 1;
            break;
        }
        t = now_ns();
        cut = cut_active(&o, manual_cut, t, start);
        for (i = 0; i < 2; i++) {
            int k;
            if (pfd[i].revents & (POLLERR | POLLHUP | POLLNVAL)) {
                fprintf(stderr, "linkemu: TAP %s failed (revents 0x%x)\n", i ? o.tap_b : o.tap_a,
                        (unsigned)pfd[i].revents);
                rc = 1;
                g_stop = 1;
            }
            if (!(pfd[i].revents & POLLIN))
                continue;
            for (k = 0; k < READ_BATCH; k++) {
                ssize_t n = read(fd[i], buf, sizeof buf);
                if (n < 0) {
                    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                        fprintf(stderr, "linkemu: read %s: %s\n", i ? o.tap_b : o.tap_a,
                                strerror(errno));
                        rc = 1;
                        g_stop = 1;
                    }
                    break;
                }
                if (n == 0)
                    break;
                admit(&dir[i], &o, &rng, buf, (size_t)n, t, cut);
            }
        }
    }

    print_stats(&dir[0]);
    print_stats(&dir[1]);
    for (i = 0; i < 2; i++) {
        while (dir[i].n > 0)
            free(heap_pop(&dir[i]));
        free(dir[i].heap);
        close(fd[i]);
    }
    return rc;
}
