/* Ring links: the acceptor thread authenticates incoming data connections and parks
 * them; the engine connects its own outgoing streams and adopts the parked ones that
 * belong to the current epoch and come from its left neighbour.
 *
 * A member that accepts no inbound connections (behind a NAT: starling_config_set_inbound)
 * opens both of its links: to its right neighbour as usual, and to its left neighbour
 * with HELLO role ROLE_DATA_REV, which that neighbour adopts as its right link. The
 * bytes flow as on any link; only who dialled differs, so a reversed link costs nothing.
 *
 * Why a separate acceptor thread: every member connects to its right neighbour while
 * its left neighbour connects to it. If the engine did both in turn with blocking
 * handshakes, the ring of "connect first" would deadlock; and a slow or hostile client
 * must never stall the engine's heartbeats. Each handshake runs on its own thread
 * (auth/hspool.h), so a silent client does not hold up the real neighbour either. */
#include <poll.h>
#include <pthread.h>
#include <string.h>

#include "auth/hspool.h"
#include "core/internal.h"
#include "platform/clock.h"
#include "util/alloc.h"
#include "util/log.h"

static void park(starling_comm *c, int fd, const starling__msg_hello *h, const starling__seal *seal,
                 starling__shm *shm)
{
    pthread_mutex_lock(&c->mu);
    if (c->npend == STARLING_PENDING_LINKS) {
        /* Full: the oldest parked link is the least likely to be wanted. */
        starling__sock_close(c->pend[0].fd);
        starling__seal_wipe(&c->pend[0].seal);
        starling__shm_free(c->pend[0].shm);
        memmove(c->pend, c->pend + 1, sizeof c->pend[0] * (STARLING_PENDING_LINKS - 1));
        c->npend--;
    }
    c->pend[c->npend].fd = fd;
    c->pend[c->npend].peer_id = h->peer_id;
    c->pend[c->npend].epoch = h->epoch;
    c->pend[c->npend].stream = h->stream;
    c->pend[c->npend].nstreams = h->nstreams;
    c->pend[c->npend].rev = h->role == ROLE_DATA_REV;
    c->pend[c->npend].seal = *seal;
    c->pend[c->npend].shm = shm;
    c->npend++;
    pthread_mutex_unlock(&c->mu);
    starling__wake_signal(&c->wake);
}

/* On the handshake's own thread, for an authenticated connection. A link probe is
 * answered right here: it holds one of the pool's slots until it ends (bounded). */
static void on_handshake(void *user, int fd, const starling__msg_hello *h,
                         const starling__seal *seal)
{
    starling_comm *c = user;
    starling__seal link;
    starling__shm *shm = NULL;
    int hs_ms = c->cfg.timeout_ms < 2000 ? c->cfg.timeout_ms : 2000, rc;
    if (h->role == ROLE_PROBE) {
        starling__seal probe = *seal;
        starling__probe_serve(c, fd, h, &probe);
        starling__seal_wipe(&probe);
        return;
    }
    if (h->role != ROLE_DATA && h->role != ROLE_DATA_REV) {
        SLOG_WARN("%s: refused data connection: not a data-link hello", c->name);
        starling__sock_close(fd);
        return;
    }
    link = *seal;
    rc = starling__link_shm_accept(c, fd, h, &link, h->role == ROLE_DATA_REV,
                                   starling__now_ms() + hs_ms, &shm);
    if (rc != STARLING_OK) {
        SLOG_WARN("%s: refused data connection: no valid shared-memory offer (%s)", c->name,
                  starling_strerror(rc));
        starling__seal_wipe(&link);
        starling__sock_close(fd);
        return;
    }
    park(c, fd, h, &link, shm);
    starling__seal_wipe(&link);
}

void *starling__acceptor_main(void *arg)
{
    starling_comm *c = arg;
    starling__hspool pool;
    int hs_ms = c->cfg.timeout_ms < 2000 ? c->cfg.timeout_ms : 2000;

    if (starling__hspool_init(&pool, &c->key, 32, hs_ms, c->name, on_handshake, c) != STARLING_OK) {
        SLOG_ERROR("%s: cannot start the handshake pool; no ring links can be accepted",
                   c->name);
        return NULL;
    }
    for (;;) {
        struct pollfd p[2] = {{c->listen_fd, POLLIN, 0}, {c->acc_wake.rfd, POLLIN, 0}};
        int fd, stop;

        pthread_mutex_lock(&c->mu);
        stop = c->stop;
        pthread_mutex_unlock(&c->mu);
        if (stop)
            break;
        if (poll(p, 2, 500) <= 0 || !(p[0].revents & POLLIN))
            continue;
        if (starling__tcp_accept(c->listen_fd, &fd) != STARLING_OK)
            continue;
        starling__hspool_submit(&pool, fd);
    }
    starling__hspool_destroy(&pool); /* handshakes in flight end by their deadline */
    return NULL;
}

void starling__links_close(starling_comm *c)
{
    engine *e = &c->eng;
    for (int s = 0; s < STARLING_MAX_STREAMS; s++) {
        if (s < e->nright && e->right[s] >= 0)
            starling__sock_close(e->right[s]);
        if (s < e->nleft && e->left[s] >= 0)
            starling__sock_close(e->left[s]);
        e->right[s] = e->left[s] = -1;
        starling__seal_wipe(&e->rseal[s]);
        starling__seal_wipe(&e->lseal[s]);
        starling__shm_free(e->rshm[s]);
        starling__shm_free(e->lshm[s]);
        e->rshm[s] = e->lshm[s] = NULL;
    }
    e->nright = e->nleft = 0;
}

/* One outgoing stream: connect and handshake, on its own thread when a link has several,
 * so that S streams cost one connect and handshake of time (3 round trips), not S. */
typedef struct stream_open {
    starling_comm *c;
    const starling__member *to;
    uint8_t role; /* ROLE_DATA to the right neighbour, ROLE_DATA_REV to the left one */
    uint64_t epoch;
    int s;
    int64_t deadline;
    starling__seal *seal;
    starling__shm *shm; /* the link's ring when the neighbour is on this host */
    int fd, rc;
    char why[128];
} stream_open;

static void *open_stream(void *arg)
{
    stream_open *o = arg;
    starling_comm *c = o->c;
    starling__msg_hello h;
    memset(&h, 0, sizeof h);
    h.role = o->role;
    h.peer_id = c->id;
    h.epoch = o->epoch;
    h.stream = (uint8_t)o->s;
    h.nstreams = (uint8_t)c->cfg.streams;
    o->why[0] = '\0';
    o->rc = starling__tcp_connect(o->to->host, o->to->port, (int)c->cfg.socket_buffer,
                                  starling__ms_until(o->deadline), &o->fd, o->why, sizeof o->why);
    if (o->rc == STARLING_OK) {
        o->rc = starling__handshake_client(o->fd, &c->key, &h, o->seal, o->deadline, o->why,
                                           sizeof o->why);
        if (o->rc == STARLING_OK)
            o->rc = starling__link_shm_dial(c, o->fd, &h, o->seal, o->role == ROLE_DATA,
                                            o->deadline, &o->shm, o->why, sizeof o->why);
        if (o->rc != STARLING_OK)
            starling__sock_close(o->fd);
    }
    return NULL;
}

/* Opens the streams in o[0..k) at once: o[0] on this thread, the others on their own
 * (inline if none can start). */
static void open_all(stream_open *o, int k)
{
    pthread_t thr[2 * STARLING_MAX_STREAMS];
    int started[2 * STARLING_MAX_STREAMS] = {0};
    for (int i = 1; i < k; i++) {
        started[i] = pthread_create(&thr[i], NULL, open_stream, &o[i]) == 0;
        if (!started[i])
            open_stream(&o[i]);
    }
    if (k > 0)
        open_stream(&o[0]);
    for (int i = 1; i < k; i++)
        if (started[i])
            pthread_join(thr[i], NULL);
}

/* Who opens the link from a member to its right neighbour: the member, unless the
 * neighbour accepts no inbound connections (port 0); then the neighbour opens it
 * ("reversed", HELLO role ROLE_DATA_REV). The coordinator never makes two members that
 * accept none neighbours. */
int starling__links_setup(starling_comm *c, const starling__msg_topo *t)
{
    engine *e = &c->eng;
    const int ns = c->cfg.streams;
    const starling__member *me, *right, *left;
    int64_t deadline = starling__now_ms() + c->cfg.timeout_ms;
    stream_open o[2 * STARLING_MAX_STREAMS];
    int k = 0, bad = -1, rev_right, rev_left;

    starling__links_close(c);
    if (t->n < 2)
        return STARLING_OK;
    me = &t->members[t->rank];
    right = &t->members[(t->rank + 1) % t->n];
    left = &t->members[(t->rank + t->n - 1) % t->n];
    if (me->port == 0 && (right->port == 0 || left->port == 0)) {
        starling__comm_log_failure(c, STARLING_E_PROTOCOL,
                                   "the coordinator made two members that accept no inbound "
                                   "connections neighbours: no ring link can be opened");
        return STARLING_E_PROTOCOL;
    }
    rev_right = right->port == 0; /* the right neighbour opens the right links */
    rev_left = me->port == 0;     /* this member opens its left links */
    for (int pass = 0; pass < 2; pass++) {
        if ((pass == 0 && rev_right) || (pass == 1 && !rev_left))
            continue;
        for (int s = 0; s < ns; s++, k++) {
            o[k].c = c;
            o[k].to = pass == 0 ? right : left;
            o[k].role = pass == 0 ? ROLE_DATA : ROLE_DATA_REV;
            o[k].epoch = t->epoch;
            o[k].s = s;
            o[k].deadline = deadline;
            o[k].seal = pass == 0 ? &e->rseal[s] : &e->lseal[s];
            o[k].shm = NULL;
            o[k].fd = -1;
        }
    }
    open_all(o, k);
    for (int i = 0; i < k && bad < 0; i++)
        if (o[i].rc != STARLING_OK)
            bad = i;
    if (bad >= 0) {
        starling__comm_log_failure(c, o[bad].rc, "cannot open ring link to %s:%d%s: %s",
                                   o[bad].to->host, o[bad].to->port,
                                   o[bad].role == ROLE_DATA_REV ? " (the left neighbour's, "
                                                                  "from this side)"
                                                                : "",
                                   o[bad].why[0] ? o[bad].why : starling_strerror(o[bad].rc));
        for (int i = 0; i < k; i++) {
            if (o[i].rc == STARLING_OK)
                starling__sock_close(o[i].fd);
            starling__seal_wipe(o[i].seal);
            starling__shm_free(o[i].shm);
        }
        starling__links_close(c);
        return o[bad].rc;
    }
    for (int s = 0; s < STARLING_MAX_STREAMS; s++)
        e->right[s] = e->left[s] = -1;
    e->nright = e->nleft = 0;
    for (int i = 0; i < k; i++) {
        /* Several streams: each keeps little unsent, so that the next piece goes to a
         * stream that is moving, not behind pieces queued in a slow one. */
        if (ns > 1)
            starling__sock_set_unsent_max(o[i].fd, STARLING_UNSENT_MAX);
        if (o[i].role == ROLE_DATA) {
            e->right[o[i].s] = o[i].fd;
            e->rshm[o[i].s] = o[i].shm;
            e->nright = ns;
        } else {
            e->left[o[i].s] = o[i].fd;
            e->lshm[o[i].s] = o[i].shm;
            e->nleft = ns;
        }
    }
    return STARLING_OK;
}

/* Takes a parked stream into `fds`/`seals` if it fills a free slot of a link of
 * `nstreams` streams (*n: the link's count, 0 while none has come). */
static int take(pending_link *p, int *fds, starling__seal *seals, starling__shm **shms, int *n)
{
    if (fds[p->stream] >= 0 || (*n != 0 && *n != p->nstreams))
        return 0;
    fds[p->stream] = p->fd;
    seals[p->stream] = p->seal;
    shms[p->stream] = p->shm;
    p->shm = NULL;
    *n = p->nstreams;
    return 1;
}

static int complete(const int *fds, int n)
{
    int have = 0;
    for (int s = 0; s < n; s++)
        have += fds[s] >= 0;
    return n > 0 && have == n;
}

/* Adopts the parked streams of the current epoch: the left neighbour's (unless this
 * member opened its left links itself) and, when the right neighbour accepts no
 * connections, the right links it opened. 1 once both links are whole. */
int starling__links_adopt(starling_comm *c)
{
    engine *e = &c->eng;
    const starling__member *left, *right;
    int rev_left, rev_right;
    if (e->n < 2)
        return 1;
    left = &e->members[(e->rank + e->n - 1) % e->n];
    right = &e->members[(e->rank + 1) % e->n];
    rev_left = e->members[e->rank].port == 0; /* as starling__links_setup decided */
    rev_right = right->port == 0;
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->npend;) {
        pending_link *p = &c->pend[i];
        int taken = 0, keep = 0;
        if (p->epoch == e->epoch && !p->rev && !rev_left && p->peer_id == left->id) {
            taken = take(p, e->left, e->lseal, e->lshm, &e->nleft);
        } else if (p->epoch == e->epoch && p->rev && rev_right && p->peer_id == right->id) {
            taken = take(p, e->right, e->rseal, e->rshm, &e->nright);
            if (taken && p->nstreams > 1)
                starling__sock_set_unsent_max(p->fd, STARLING_UNSENT_MAX);
        } else if (p->epoch > e->epoch) {
            keep = 1; /* for an epoch this member has not reached yet */
        }
        if (!taken && !keep) {
            starling__sock_close(p->fd);
            starling__shm_free(p->shm);
        }
        if (!keep)
            starling__seal_wipe(&p->seal);
        if (keep) {
            i++;
        } else {
            c->pend[i] = c->pend[--c->npend];
        }
    }
    pthread_mutex_unlock(&c->mu);
    return complete(e->left, e->nleft) && complete(e->right, e->nright);
}
