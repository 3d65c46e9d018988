/* The peer's control connection: registering with a coordinator, and re-registering after
 * losing it.
 *
 * starling_comm_create registers on the caller's thread (blocking, bounded by its
 * deadline). Afterwards the engine thread owns the connection, and a re-registration must
 * not stall it: a connect and handshake to a frozen coordinator can take timeout/2, during
 * which the ring would stop. So the engine hands each attempt to a short-lived dialing
 * thread, with a copy of what to register, and keeps servicing the ring; the thread wakes
 * the engine when done, and the engine installs the connection (starling__ctrl_dial_poll).
 * The thread touches nothing of the engine's: only its own struct, the key and the
 * coordinator addresses, which are fixed after create. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/internal.h"
#include "platform/clock.h"
#include "util/alloc.h"
#include "util/flag.h"
#include "util/log.h"

int starling__ctrl_send(starling_comm *c, uint8_t type, const starling__msg_epoch *m)
{
    uint8_t buf[64];
    int n;
    if (!c->eng.ctrl_up)
        return STARLING_E_CLOSED;
    n = starling__epoch_encode(buf, sizeof buf, type, m);
    if (n < 0)
        return n;
    return starling__fconn_queue(&c->eng.ctrl, buf, (size_t)n);
}

/* What this peer registers as: its address, and the epoch it is a member of. */
static void fill_register(starling_comm *c, starling__msg_register *reg)
{
    engine *e = &c->eng;
    memset(reg, 0, sizeof *reg);
    reg->peer_id = c->id;
    snprintf(reg->name, sizeof reg->name, "%s", c->name);
    snprintf(reg->host, sizeof reg->host, "%s", c->data_host);
    reg->port = c->cfg.inbound ? (uint16_t)c->data_port : 0; /* 0: accepts no connections */
    reg->min_peers = (uint32_t)c->cfg.min_peers;
    if (e->epoch && e->n > 0) {
        reg->epoch = e->epoch;
        reg->nmembers = (uint32_t)e->n;
        for (int i = 0; i < e->n; i++)
            reg->members[i] = e->members[i].id;
    }
}

/* REGISTER, then WELCOME or REJECT, on an authenticated socket. Blocking. */
static int register_exchange(int fd, starling__seal *seal, const starling__msg_register *reg,
                             int64_t deadline_ms, char *why, size_t why_len)
{
    size_t cap = STARLING_FRAME_HDR + STARLING_CTRL_MAX;
    uint8_t *buf = starling__malloc(cap);
    starling__msg_welcome w;
    starling__frame_hdr h;
    int n, rc;

    if (!buf)
        return STARLING_E_NOMEM;
    n = starling__register_encode(buf, cap, reg);
    rc = n < 0 ? n : starling__frame_send(fd, seal, buf, (size_t)n, deadline_ms);
    if (rc == STARLING_OK)
        rc = starling__frame_recv(fd, seal, &h, buf, cap - STARLING_FRAME_HDR, deadline_ms);
    if (rc == STARLING_OK) {
        if (h.type == MSG_REJECT) {
            starling__msg_reject rj;
            rc = starling__reject_decode(buf, h.len, &rj) ? STARLING_E_PROTOCOL : rj.code;
            if (rc == STARLING_E_PROTOCOL || rc == STARLING_OK)
                rc = STARLING_E_PROTOCOL;
            else if (why)
                snprintf(why, why_len, "%s", rj.reason);
        } else if (h.type != MSG_WELCOME || starling__welcome_decode(buf, h.len, &w)) {
            rc = STARLING_E_PROTOCOL;
            if (why)
                snprintf(why, why_len, "coordinator sent no welcome");
        }
    }
    starling__free(buf);
    return rc;
}

static void install(starling_comm *c, int fd, starling__seal *seal)
{
    starling__fconn_init(&c->eng.ctrl, fd, starling__now_ms(), seal);
    c->eng.ctrl_up = 1;
}

int starling__ctrl_register(starling_comm *c, int fd, starling__seal *seal, int64_t deadline_ms,
                            char *why, size_t why_len)
{
    starling__msg_register *reg = starling__malloc(sizeof *reg);
    int rc = STARLING_E_NOMEM;
    if (reg) {
        fill_register(c, reg);
        rc = register_exchange(fd, seal, reg, deadline_ms, why, why_len);
        starling__free(reg);
    }
    if (rc == STARLING_OK)
        install(c, fd, seal);
    starling__seal_wipe(seal);
    return rc;
}

/* Connect and handshake with coordinator i. */
static int dial(const starling_comm *c, int i, int64_t deadline_ms, int *fd, starling__seal *seal,
                char *why, size_t why_len)
{
    starling__msg_hello h;
    int rc = starling__tcp_connect(c->coord_host[i], c->coord_port[i], 0,
                                   starling__ms_until(deadline_ms), fd, why, why_len);
    if (rc != STARLING_OK)
        return rc;
    memset(&h, 0, sizeof h);
    h.role = ROLE_CONTROL;
    h.peer_id = c->id;
    rc = starling__handshake_client(*fd, &c->key, &h, seal, deadline_ms, why, why_len);
    if (rc != STARLING_OK)
        starling__sock_close(*fd);
    return rc;
}

int starling__ctrl_connect(starling_comm *c, int64_t deadline_ms, char *why, size_t why_len)
{
    int i = c->coord_cur;
    starling__seal seal;
    int fd, rc;

    why[0] = '\0';
    rc = dial(c, i, deadline_ms, &fd, &seal, why, why_len);
    if (rc == STARLING_OK) {
        /* The data host the others should dial: our side of the coordinator link when
         * we listen on every interface. */
        if (!c->cfg.advertise[0] && starling__host_is_wildcard(c->data_host))
            starling__sock_local_host(fd, c->data_host);
        rc = starling__ctrl_register(c, fd, &seal, deadline_ms, why, why_len);
        if (rc != STARLING_OK)
            starling__sock_close(fd);
    }
    if (rc != STARLING_OK)
        c->coord_cur = (i + 1) % c->ncoords;
    return rc;
}

/* ---------------------------------------------------------------- re-registration */

static void *dial_main(void *arg)
{
    starling_comm *c = arg;
    ctrl_dial *d = &c->eng.dial;
    d->rc = dial(c, d->idx, d->deadline_ms, &d->fd, &d->seal, d->why, sizeof d->why);
    if (d->rc == STARLING_OK) {
        d->rc = register_exchange(d->fd, &d->seal, d->reg, d->deadline_ms, d->why, sizeof d->why);
        if (d->rc != STARLING_OK) {
            starling__sock_close(d->fd);
            starling__seal_wipe(&d->seal);
        }
    }
    STARLING_FLAG_STORE(&d->done, 1);
    starling__wake_signal(&c->wake);
    return NULL;
}

int starling__ctrl_dial_start(starling_comm *c)
{
    ctrl_dial *d = &c->eng.dial;
    int64_t now = starling__now_ms();
    if (d->active)
        return STARLING_OK;
    if (!d->reg && !(d->reg = starling__malloc(sizeof *d->reg)))
        return STARLING_E_NOMEM;
    fill_register(c, d->reg);
    d->idx = c->coord_cur;
    d->deadline_ms = now + (c->cfg.timeout_ms / 2 > 100 ? c->cfg.timeout_ms / 2 : 100);
    d->why[0] = '\0';
    d->fd = -1;
    d->done = 0;
    if (pthread_create(&d->thr, NULL, dial_main, c) != 0)
        return STARLING_E_OS;
    d->active = 1;
    return STARLING_OK;
}

int starling__ctrl_dial_poll(starling_comm *c)
{
    ctrl_dial *d = &c->eng.dial;
    int i = d->idx;
    if (!d->active || !STARLING_FLAG_LOAD(&d->done))
        return 0;
    pthread_join(d->thr, NULL);
    d->active = 0;
    if (d->rc != STARLING_OK) {
        if (d->rc == STARLING_E_OS || d->rc == STARLING_E_TIMEOUT || d->rc == STARLING_E_BUSY)
            SLOG_DEBUG("%s: re-registration with %s:%d: %s", c->name, c->coord_host[i],
                       c->coord_port[i], d->why[0] ? d->why : starling_strerror(d->rc));
        else
            SLOG_WARN("%s: re-registration with %s:%d failed: %s", c->name, c->coord_host[i],
                      c->coord_port[i], d->why[0] ? d->why : starling_strerror(d->rc));
        c->coord_cur = (i + 1) % c->ncoords;
        return 0;
    }
    install(c, d->fd, &d->seal);
    starling__seal_wipe(&d->seal);
    c->coord_cur = i;
    SLOG_INFO("%s: re-registered with the coordinator %s:%d", c->name, c->coord_host[i],
              c->coord_port[i]);
    return 1;
}

void starling__ctrl_dial_join(starling_comm *c)
{
    ctrl_dial *d = &c->eng.dial;
    if (d->active) {
        pthread_join(d->thr, NULL); /* bounded by its deadline */
        d->active = 0;
        if (d->rc == STARLING_OK) {
            starling__sock_close(d->fd);
            starling__seal_wipe(&d->seal);
        }
    }
    starling__free(d->reg);
    d->reg = NULL;
}
