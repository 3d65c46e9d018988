/* The communicator's public face: creation and teardown, the job queue, requests. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/internal.h"
#include "core/ring.h"
#include "kernels/kernels.h"
#include "platform/clock.h"
#include "util/alloc.h"
#include "util/log.h"
#include "util/why.h"

/* Engine-side failures are logged here; their detail reaches the application through
 * the request's errmsg, copied into the communicator by the owner thread. */
void starling__comm_log_failure(starling_comm *c, int code, const char *fmt, ...)
{
    va_list ap;
    char detail[200];
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    SLOG_DEBUG("%s: %s: %s", c->name, starling_strerror(code), detail);
}

/* Detail for the application thread (engine-side detail travels in the request). */
static int app_err(starling_comm *c, int code, const char *fmt, ...) STARLING_PRINTF(3, 4);
static int app_err(starling_comm *c, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof c->errmsg, fmt, ap);
    va_end(ap);
    return code;
}

struct starling_request *starling__request_new(job_kind job)
{
    struct starling_request *r = starling__calloc(1, sizeof *r);
    if (!r)
        return NULL;
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        starling__free(r);
        return NULL;
    }
    if (pthread_cond_init(&r->cv, NULL) != 0) {
        pthread_mutex_destroy(&r->mu);
        starling__free(r);
        return NULL;
    }
    r->refs = 1;
    r->job = job;
    return r;
}

void starling__request_unref(struct starling_request *r)
{
    int last;
    pthread_mutex_lock(&r->mu);
    last = --r->refs == 0;
    pthread_mutex_unlock(&r->mu);
    if (!last)
        return;
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    starling__free(r->vcounts);
    starling__free(r->links_frame);
    starling__free(r->members);
    starling__free(r);
}

void starling__request_complete(struct starling_request *r, int result, const char *msg)
{
    pthread_mutex_lock(&r->mu);
    r->result = result;
    if (msg && !r->errmsg[0])
        snprintf(r->errmsg, sizeof r->errmsg, "%s", msg);
    r->done = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    starling__request_unref(r); /* the engine's reference */
}

/* Hands the request to the engine; it then holds a second reference. */
int starling__submit(starling_comm *c, struct starling_request *r, starling_request **out)
{
    r->refs = 2;
    pthread_mutex_lock(&c->mu);
    if (c->stop) {
        pthread_mutex_unlock(&c->mu);
        r->refs = 1;
        return STARLING_E_CLOSED;
    }
    if (c->qtail)
        c->qtail->next = r;
    else
        c->qhead = r;
    c->qtail = r;
    pthread_mutex_unlock(&c->mu);
    starling__wake_signal(&c->wake);
    *out = r;
    return STARLING_OK;
}

static int request_wait(struct starling_request *r)
{
    int rc;
    pthread_mutex_lock(&r->mu);
    /* The engine bounds every job by op_timeout (+ the resolution window), so this wait
     * ends; no deadline of its own is needed here. */
    while (!r->done)
        pthread_cond_wait(&r->cv, &r->mu);
    rc = r->result;
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int starling__request_wait_into(starling_comm *c, struct starling_request *r)
{
    int rc = request_wait(r);
    if (rc != STARLING_OK)
        snprintf(c->errmsg, sizeof c->errmsg, "%s", r->errmsg[0] ? r->errmsg : starling_strerror(rc));
    return rc;
}

int starling_request_wait(starling_request *req)
{
    if (!req)
        return STARLING_E_INVALID;
    return request_wait(req);
}

int starling_request_test(starling_request *req, int *done)
{
    int rc = STARLING_OK;
    if (!req || !done)
        return STARLING_E_INVALID;
    pthread_mutex_lock(&req->mu);
    *done = req->done;
    if (req->done)
        rc = req->result;
    pthread_mutex_unlock(&req->mu);
    return rc;
}

void starling_request_free(starling_request *req)
{
    if (!req)
        return;
    request_wait(req);
    starling__request_unref(req);
}

/* ---------------------------------------------------------------- options */

int starling_callopts_create(starling_callopts **out)
{
    if (!out)
        return STARLING_E_INVALID;
    *out = starling__calloc(1, sizeof **out);
    return *out ? STARLING_OK : STARLING_E_NOMEM;
}

void starling_callopts_destroy(starling_callopts *opts) { starling__free(opts); }

int starling_callopts_set_tag(starling_callopts *opts, uint64_t tag)
{
    if (!opts)
        return STARLING_E_INVALID;
    opts->tag = tag;
    return STARLING_OK;
}

int starling_callopts_set_codec(starling_callopts *opts, const starling_codec *codec)
{
    if (!opts)
        return STARLING_E_INVALID;
    opts->has_codec = codec != NULL;
    if (codec)
        opts->codec = *starling__codec_of(codec);
    return STARLING_OK;
}

/* The engine touches residuals only while it runs a collective; the header requires that
 * none is in flight here, and the request's completion (under its mutex) orders the
 * engine's last writes before these reads. */
static ef_entry *residual_find(starling_comm *c, uint64_t tag)
{
    for (int i = 0; i < c->eng.nef; i++)
        if (c->eng.ef[i].tag == tag)
            return &c->eng.ef[i];
    return NULL;
}

int starling_residual_get(starling_comm *c, uint64_t tag, float *out, size_t count)
{
    ef_entry *ent;
    if (!c || (count && !out))
        return STARLING_E_INVALID;
    if (!(ent = residual_find(c, tag)))
        return app_err(c, STARLING_E_NOT_FOUND, "no residual for tag %llu",
                       (unsigned long long)tag);
    if (ent->count != count)
        return app_err(c, STARLING_E_MISMATCH, "the residual of tag %llu has %zu elements, not %zu",
                       (unsigned long long)tag, ent->count, count);
    if (count)
        memcpy(out, ent->resid, count * sizeof(float));
    return STARLING_OK;
}

int starling_residual_set(starling_comm *c, uint64_t tag, const float *in, size_t count)
{
    ef_entry *ent;
    if (!c || (count && !in))
        return STARLING_E_INVALID;
    if (!(ent = starling__ef_get(&c->eng, tag, count)))
        return app_err(c, STARLING_E_NOMEM, "out of memory for a residual of %zu elements",
                       count);
    if (count)
        memcpy(ent->resid, in, count * sizeof(float));
    return STARLING_OK;
}

/* What a codec can do with a collective; a message for the caller when it cannot. */
static int codec_check(starling_comm *c, coll_kind kind, starling_dtype dtype, starling_op op,
                       const starling__codec *k)
{
    char spec[STARLING_CODEC_SPEC_MAX];
    int lossy = k->kind != CODEC_NONE;
    starling__codec_format(k, spec, sizeof spec);
    if (lossy && dtype != STARLING_F32)
        return app_err(c, STARLING_E_UNSUPPORTED, "codec %s compresses f32 data, not %s", spec,
                       starling_dtype_name(dtype));
    if (lossy && (kind == COLL_ALLREDUCE || kind == COLL_REDUCE_SCATTER) &&
        op != STARLING_SUM && op != STARLING_AVG)
        return app_err(c, STARLING_E_UNSUPPORTED, "codec %s supports sum and avg, not %s", spec,
                       starling_op_name(op));
    if (starling__codec_is_sparse(k) && kind != COLL_ALLREDUCE)
        return app_err(c, STARLING_E_UNSUPPORTED, "codec %s applies to all-reduce only", spec);
    if (k->ef && kind != COLL_ALLREDUCE && kind != COLL_REDUCE_SCATTER)
        return app_err(c, STARLING_E_UNSUPPORTED,
                       "error feedback (+ef) applies to all-reduce and reduce-scatter only");
    return STARLING_OK;
}

/* ---------------------------------------------------------------- lifecycle */

/* "HOST:PORT[,HOST:PORT...]": the coordinators, active first. */
static int parse_coordinators(starling_comm *c, const char *list)
{
    const char *p = list;
    char one[STARLING_HOST_MAX + 16];
    if (!list || !list[0])
        return STARLING_E_INVALID;
    for (c->ncoords = 0; *p; c->ncoords++) {
        size_t len = strcspn(p, ",");
        if (c->ncoords == STARLING_COORDS_MAX || len == 0 || len >= sizeof one)
            return STARLING_E_INVALID;
        memcpy(one, p, len);
        one[len] = '\0';
        if (starling__addr_parse(one, c->coord_host[c->ncoords], &c->coord_port[c->ncoords]))
            return STARLING_E_INVALID;
        p += len;
        if (*p == ',' && !*++p)
            return STARLING_E_INVALID; /* a trailing comma */
    }
    return STARLING_OK;
}

/* Registers with the first coordinator that admits this peer. With several, the others
 * are tried in turn until the deadline (a standby refuses until it takes over); a wrong
 * secret or version ends the search at once. */
static int connect_coordinator(starling_comm *c, int64_t deadline)
{
    char why[160] = "";
    int rc, i;

    for (;;) {
        int64_t step = deadline;
        i = c->coord_cur;
        if (c->ncoords > 1 && starling__now_ms() + c->cfg.timeout_ms < deadline)
            step = starling__now_ms() + c->cfg.timeout_ms;
        rc = starling__ctrl_connect(c, step, why, sizeof why);
        if (rc == STARLING_OK || c->ncoords == 1 || rc == STARLING_E_AUTH ||
            rc == STARLING_E_VERSION || rc == STARLING_E_NOMEM || starling__now_ms() >= deadline)
            break;
        SLOG_DEBUG("%s: coordinator %s:%d: %s; trying the next", c->name, c->coord_host[i],
                   c->coord_port[i], why);
        if (c->coord_cur == 0)
            starling__sleep_ms(100);
    }
    if (rc == STARLING_OK)
        return STARLING_OK;
    if (rc == STARLING_E_OS || rc == STARLING_E_TIMEOUT)
        return app_err(c, rc, "cannot reach the coordinator%s: %s", c->ncoords > 1 ? "s" : "", why);
    return app_err(c, rc, "coordinator %s:%d refused this peer: %s", c->coord_host[i],
                   c->coord_port[i], why[0] ? why : starling_strerror(rc));
}

static void comm_free(starling_comm *c)
{
    engine *e = &c->eng;
    starling__links_close(c);
    if (e->ctrl_up)
        starling__fconn_close(&e->ctrl);
    starling__sock_close(c->listen_fd);
    for (int i = 0; i < c->npend; i++) {
        starling__sock_close(c->pend[i].fd);
        starling__seal_wipe(&c->pend[i].seal);
        starling__shm_free(c->pend[i].shm);
    }
    starling__wake_close(&c->wake);
    starling__wake_close(&c->acc_wake);
    starling__ring_free(c);
    starling__codec_engine_free(e);
    starling__free(e->scratch);
    for (int s = 0; s < STARLING_MAX_STREAMS; s++) {
        starling__free(e->tmp[s]);
        starling__free(e->stx[s]);
    }
    starling__free(e->members);
    starling__free(c->pub_ids);
    starling__free(c->links);
    starling__free(c->tensors);
    starling__key_wipe(&c->key);
    pthread_mutex_destroy(&c->mu);
    starling__free(c);
}

int starling_comm_create(starling_comm **out, const char *coord_host_port, const char *run,
                         const void *secret, size_t secret_len, const starling_config *cfg)
{
    starling_comm *c;
    char lhost[STARLING_HOST_MAX], why[160] = "";
    int lport, rc;
    int64_t deadline;

    if (!out)
        return STARLING_E_INVALID;
    *out = NULL;
    c = starling__calloc(1, sizeof *c);
    if (!c)
        return STARLING_E_NOMEM;
    c->listen_fd = -1;
    c->wake.rfd = c->wake.wfd = c->acc_wake.rfd = c->acc_wake.wfd = -1;
    c->eng.ctrl.fd = -1;
    for (int s = 0; s < STARLING_MAX_STREAMS; s++)
        c->eng.right[s] = c->eng.left[s] = -1;
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        starling__free(c);
        return STARLING_E_OS;
    }
    if (cfg)
        c->cfg = *cfg;
    else
        starling__config_defaults(&c->cfg);
    c->id = starling__random_id();
    if (c->cfg.name[0])
        snprintf(c->name, sizeof c->name, "%s", c->cfg.name);
    else
        snprintf(c->name, sizeof c->name, "peer-%04x", (unsigned)(c->id & 0xffff));

    starling__last_error_clear();
    rc = starling__key_derive(&c->key, run ? run : "", secret, secret_len);
    c->key.security = (uint8_t)c->cfg.security;
    if (rc == STARLING_OK && c->cfg.shm)
        c->key.host = starling__shm_host_tag(c->key.k);
    if (rc == STARLING_OK && parse_coordinators(c, coord_host_port) != STARLING_OK)
        rc = app_err(c, STARLING_E_INVALID,
                     "coordinator address '%s': expected HOST:PORT or "
                     "[IPV6]:PORT (port 0..65535), or up to %d of them separated by commas",
                     coord_host_port ? coord_host_port : "(null)", STARLING_COORDS_MAX);
    if (rc == STARLING_OK && starling__addr_parse(c->cfg.listen, lhost, &lport) != STARLING_OK)
        rc = app_err(c, STARLING_E_INVALID, "listen address '%s': expected HOST:PORT or "
                     "[IPV6]:PORT", c->cfg.listen);
    if (rc == STARLING_OK &&
        (rc = starling__tcp_listen(lhost, lport, (int)c->cfg.socket_buffer, &c->listen_fd,
                                   &c->data_port, why, sizeof why)))
        app_err(c, rc, "%s", why);
    if (rc == STARLING_OK &&
        ((rc = starling__wake_init(&c->wake)) || (rc = starling__wake_init(&c->acc_wake))))
        app_err(c, rc, "cannot create a wake-up pipe: %s", strerror(errno));
    if (rc != STARLING_OK) {
        starling__last_error_set("%s", c->errmsg);
        comm_free(c);
        return rc;
    }
    if (c->cfg.socket_buffer)
        SLOG_INFO("%s: ring link socket buffers: %zu bytes asked, the kernel grants %d", c->name,
                  c->cfg.socket_buffer,
                  starling__sock_set_buffers(c->listen_fd, (int)c->cfg.socket_buffer));
    /* What the others dial goes on the wire as a numeric address, resolved here, on the
     * caller's thread: the engine then never waits on a name lookup. A wildcard is
     * replaced by this side of the coordinator link (connect_coordinator). */
    if (c->cfg.advertise[0])
        rc = starling__host_resolve_first(c->cfg.advertise, c->data_host, why, sizeof why);
    else if (starling__host_is_wildcard(lhost))
        snprintf(c->data_host, sizeof c->data_host, "%s", lhost);
    else
        rc = starling__sock_local_host(c->listen_fd, c->data_host);
    if (rc != STARLING_OK) {
        app_err(c, rc, "data-plane host '%s': %s",
                c->cfg.advertise[0] ? c->cfg.advertise : lhost,
                why[0] ? why : starling_strerror(rc));
        starling__last_error_set("%s", c->errmsg);
        comm_free(c);
        return rc;
    }
    deadline = starling__now_ms() + c->cfg.op_timeout_ms;
    if ((rc = connect_coordinator(c, deadline))) {
        SLOG_ERROR("%s", c->errmsg);
        starling__last_error_set("%s", c->errmsg);
        comm_free(c);
        return rc;
    }
    if (pthread_create(&c->acceptor_thr, NULL, starling__acceptor_main, c) != 0) {
        comm_free(c);
        return STARLING_E_OS;
    }
    if (pthread_create(&c->engine_thr, NULL, starling__engine_main, c) != 0) {
        pthread_mutex_lock(&c->mu);
        c->stop = 1;
        pthread_mutex_unlock(&c->mu);
        starling__wake_signal(&c->acc_wake);
        pthread_join(c->acceptor_thr, NULL);
        comm_free(c);
        return STARLING_E_OS;
    }
    c->threads_started = 1;
    SLOG_INFO("%s: registered with %s:%d, data plane on %s:%d%s", c->name,
              c->coord_host[c->coord_cur], c->coord_port[c->coord_cur], c->data_host, c->data_port,
              c->cfg.inbound ? "" : " (accepts no inbound connections: opens its links itself)");
    *out = c;
    return STARLING_OK;
}

void starling_comm_destroy(starling_comm *c)
{
    if (!c)
        return;
    if (c->threads_started) {
        pthread_mutex_lock(&c->mu);
        c->stop = 1;
        pthread_mutex_unlock(&c->mu);
        starling__wake_signal(&c->wake);
        starling__wake_signal(&c->acc_wake);
        pthread_join(c->engine_thr, NULL);
        pthread_join(c->acceptor_thr, NULL);
        /* Threads are gone: an orderly goodbye so the coordinator need not time out. */
        if (c->eng.ctrl_up) {
            starling__msg_epoch m;
            memset(&m, 0, sizeof m);
            if (starling__ctrl_send(c, MSG_LEAVE, &m) == STARLING_OK)
                starling__fconn_flush(&c->eng.ctrl);
        }
    }
    comm_free(c);
}

/* One topology update; on success, *out holds the finished request (its epoch, members
 * and the coordinator's probe request) for the caller to release. `links` (owned,
 * freed here on failure) is an encoded LINKS frame sent with the request, or NULL. */
static int topo_job(starling_comm *c, uint8_t *links, size_t links_len,
                    struct starling_request **out)
{
    struct starling_request *r, *h;
    int rc;
    *out = NULL;
    r = starling__request_new(JOB_TOPO);
    if (!r) {
        starling__free(links);
        return app_err(c, STARLING_E_NOMEM, "out of memory");
    }
    r->links_frame = links;
    r->links_len = links_len;
    if ((rc = starling__submit(c, r, &h))) {
        starling__request_unref(r);
        return app_err(c, rc, "communicator closed");
    }
    rc = starling__request_wait_into(c, h);
    if (rc == STARLING_OK)
        *out = h;
    else
        starling__request_unref(h);
    return rc;
}

/* Keeps this member's row for starling_comm_link and encodes it as a LINKS frame. */
static uint8_t *links_frame(starling_comm *c, const struct starling_request *t,
                            const starling__link_est *est, size_t *len)
{
    starling__msg_links *m = starling__calloc(1, sizeof *m);
    starling__link_est *row = starling__malloc(sizeof *row * (size_t)t->n);
    size_t cap = STARLING_FRAME_HDR + 12 + 20 * (size_t)t->n;
    uint8_t *frame = starling__malloc(cap);
    int n = -1;
    if (m && row && frame) {
        m->epoch = t->epoch;
        for (int j = 0; j < t->n; j++)
            if (j != t->rank)
                m->links[m->n++] = est[j];
        n = starling__links_encode(frame, cap, m);
    }
    starling__free(m);
    if (n < 0) {
        starling__free(row);
        starling__free(frame);
        return NULL;
    }
    memcpy(row, est, sizeof *row * (size_t)t->n);
    pthread_mutex_lock(&c->mu);
    starling__free(c->links);
    c->links = row;
    c->nlinks = t->n;
    pthread_mutex_unlock(&c->mu);
    *len = (size_t)n;
    return frame;
}

/* Measures the links of the epoch `t` describes, reports them with a second topology
 * request, and hands back that request's result. The measurement as a whole stays within
 * the op timeout (no hang: the call already holds one topology update). */
static int measure_and_report(starling_comm *c, struct starling_request **t, uint32_t bytes)
{
    int64_t deadline = starling__now_ms() + c->cfg.op_timeout_ms;
    starling__link_est *est;
    uint8_t *frame;
    size_t len = 0;
    if ((*t)->n < 2)
        return STARLING_OK;
    if (!(est = starling__calloc((size_t)(*t)->n, sizeof *est)))
        return app_err(c, STARLING_E_NOMEM, "out of memory");
    starling__probe_links(c, (*t)->members, (*t)->n, (*t)->rank, (*t)->epoch, bytes, deadline,
                          est);
    frame = links_frame(c, *t, est, &len);
    starling__free(est);
    if (!frame)
        return app_err(c, STARLING_E_NOMEM, "out of memory");
    starling__request_unref(*t);
    return topo_job(c, frame, len, t);
}

int starling_update_topology(starling_comm *c)
{
    struct starling_request *t;
    int rc;
    if (!c)
        return STARLING_E_INVALID;
    rc = topo_job(c, NULL, 0, &t);
    /* The coordinator asks for measurements when members it has none for joined; a
     * second request in the same call is not followed (it would be the same members). */
    if (rc == STARLING_OK && t->probe_bytes)
        rc = measure_and_report(c, &t, t->probe_bytes);
    if (t)
        starling__request_unref(t);
    return rc;
}

int starling_measure_links(starling_comm *c)
{
    struct starling_request *t;
    int rc;
    if (!c)
        return STARLING_E_INVALID;
    rc = topo_job(c, NULL, 0, &t);
    if (rc == STARLING_OK)
        rc = measure_and_report(c, &t, (uint32_t)c->cfg.probe_bytes);
    if (t)
        starling__request_unref(t);
    return rc;
}

int starling_comm_link(const starling_comm *c, int rank, double *bytes_per_s, double *rtt_s)
{
    int rc = STARLING_E_NOT_FOUND;
    if (!c)
        return STARLING_E_INVALID;
    pthread_mutex_lock((pthread_mutex_t *)&c->mu);
    if (rank < 0 || rank >= c->pub_size || rank == c->pub_rank) {
        rc = STARLING_E_INVALID;
    } else if (c->pub_ids) {
        for (int i = 0; i < c->nlinks; i++) {
            const starling__link_est *l = &c->links[i];
            if (l->id != c->pub_ids[rank] || l->bytes_per_s == 0)
                continue;
            if (bytes_per_s)
                *bytes_per_s = (double)l->bytes_per_s;
            if (rtt_s)
                *rtt_s = (double)l->rtt_us * 1e-6;
            rc = STARLING_OK;
            break;
        }
    }
    pthread_mutex_unlock((pthread_mutex_t *)&c->mu);
    return rc;
}

uint64_t starling_comm_epoch(const starling_comm *c)
{
    uint64_t v;
    if (!c)
        return 0;
    pthread_mutex_lock((pthread_mutex_t *)&c->mu);
    v = c->pub_epoch;
    pthread_mutex_unlock((pthread_mutex_t *)&c->mu);
    return v;
}

int starling_comm_rank(const starling_comm *c)
{
    int v;
    if (!c)
        return STARLING_E_INVALID;
    pthread_mutex_lock((pthread_mutex_t *)&c->mu);
    v = c->pub_rank;
    pthread_mutex_unlock((pthread_mutex_t *)&c->mu);
    return v;
}

int starling_comm_size(const starling_comm *c)
{
    int v;
    if (!c)
        return STARLING_E_INVALID;
    pthread_mutex_lock((pthread_mutex_t *)&c->mu);
    v = c->pub_size;
    pthread_mutex_unlock((pthread_mutex_t *)&c->mu);
    return v;
}

uint64_t starling_comm_bytes_sent(const starling_comm *c)
{
    uint64_t v;
    if (!c)
        return 0;
    pthread_mutex_lock((pthread_mutex_t *)&c->mu);
    v = c->bytes_sent;
    pthread_mutex_unlock((pthread_mutex_t *)&c->mu);
    return v;
}

const char *starling_comm_errmsg(const starling_comm *c) { return c ? c->errmsg : ""; }

/* ---------------------------------------------------------------- collectives */

static int ranges_overlap(const void *a, size_t an, const void *b, size_t bn)
{
    const char *pa = a, *pb = b;
    return an && bn && pa < pb + bn && pb < pa + an;
}

/* Validates, queues, and either hands back the request or waits for it. */
static int coll_submit(starling_comm *c, coll_kind kind, const void *sendbuf, void *recvbuf,
                       size_t count, starling_dtype dtype, starling_op op, int root,
                       const starling_callopts *opts, starling_request **async_out)
{
    struct starling_request *r, *h;
    size_t esize = starling_dtype_size(dtype);
    int size, rc;

    if (async_out)
        *async_out = NULL;
    if (!c)
        return STARLING_E_INVALID;
    c->errmsg[0] = '\0';
    if (esize == 0)
        return app_err(c, STARLING_E_INVALID, "unknown dtype %d", (int)dtype);
    if ((kind == COLL_ALLREDUCE || kind == COLL_REDUCE_SCATTER) &&
        ((unsigned)op >= STARLING_OP_COUNT || !starling__op_supported(dtype, op)))
        return app_err(c, STARLING_E_UNSUPPORTED, "op %d is not supported for %s", (int)op,
                       starling_dtype_name(dtype));
    size = starling_comm_size(c);
    if (size < 1)
        return app_err(c, STARLING_E_STATE,
                       "not a member yet: call starling_update_topology first");
    if (count > ((size_t)1 << 40) / esize / (size_t)size)
        return app_err(c, STARLING_E_LIMIT, "count %zu too large", count);
    if (count && ((!recvbuf) || (kind != COLL_BROADCAST && !sendbuf)))
        return app_err(c, STARLING_E_INVALID, "NULL buffer");
    if (kind == COLL_BROADCAST && (root < 0 || root >= size))
        return app_err(c, STARLING_E_INVALID, "root %d outside 0..%d", root, size - 1);
    if (kind == COLL_REDUCE_SCATTER && ranges_overlap(sendbuf, count * esize * (size_t)size,
                                                      recvbuf, count * esize))
        return app_err(c, STARLING_E_INVALID, "reduce-scatter buffers overlap");
    if (kind == COLL_ALLGATHER && ranges_overlap(sendbuf, count * esize, recvbuf,
                                                 count * esize * (size_t)size))
        return app_err(c, STARLING_E_INVALID, "all-gather buffers overlap");

    if (opts && opts->has_codec && (rc = codec_check(c, kind, dtype, op, &opts->codec)))
        return rc;

    r = starling__request_new(JOB_COLL);
    if (!r)
        return app_err(c, STARLING_E_NOMEM, "out of memory");
    r->coll = kind;
    r->sendbuf = sendbuf;
    r->recvbuf = recvbuf;
    r->count = count;
    r->dtype = dtype;
    r->op = op;
    r->root = root;
    r->tag = opts ? opts->tag : 0;
    if (opts && opts->has_codec) {
        r->has_codec = 1;
        r->codec = opts->codec;
    }
    if ((rc = starling__submit(c, r, &h))) {
        starling__request_unref(r);
        return app_err(c, rc, "communicator closed");
    }
    if (async_out) {
        *async_out = h;
        return STARLING_OK;
    }
    rc = starling__request_wait_into(c, h);
    starling__request_unref(h);
    return rc;
}

int starling_allreduce(starling_comm *comm, const void *sendbuf, void *recvbuf, size_t count,
                       starling_dtype dtype, starling_op op, const starling_callopts *opts)
{
    return coll_submit(comm, COLL_ALLREDUCE, sendbuf, recvbuf, count, dtype, op, 0, opts, NULL);
}

int starling_allreduce_async(starling_comm *comm, const void *sendbuf, void *recvbuf,
                             size_t count, starling_dtype dtype, starling_op op,
                             const starling_callopts *opts, starling_request **req)
{
    if (!req)
        return STARLING_E_INVALID;
    return coll_submit(comm, COLL_ALLREDUCE, sendbuf, recvbuf, count, dtype, op, 0, opts, req);
}

int starling_reduce_scatter(starling_comm *comm, const void *sendbuf, void *recvbuf,
                            size_t count, starling_dtype dtype, starling_op op,
                            const starling_callopts *opts)
{
    return coll_submit(comm, COLL_REDUCE_SCATTER, sendbuf, recvbuf, count, dtype, op, 0, opts,
                       NULL);
}

int starling_reduce_scatter_async(starling_comm *comm, const void *sendbuf, void *recvbuf,
                                  size_t count, starling_dtype dtype, starling_op op,
                                  const starling_callopts *opts, starling_request **req)
{
    if (!req)
        return STARLING_E_INVALID;
    return coll_submit(comm, COLL_REDUCE_SCATTER, sendbuf, recvbuf, count, dtype, op, 0, opts,
                       req);
}

int starling_allgather(starling_comm *comm, const void *sendbuf, void *recvbuf, size_t count,
                       starling_dtype dtype, const starling_callopts *opts)
{
    return coll_submit(comm, COLL_ALLGATHER, sendbuf, recvbuf, count, dtype, STARLING_SUM, 0,
                       opts, NULL);
}

int starling_allgather_async(starling_comm *comm, const void *sendbuf, void *recvbuf,
                             size_t count, starling_dtype dtype, const starling_callopts *opts,
                             starling_request **req)
{
    if (!req)
        return STARLING_E_INVALID;
    return coll_submit(comm, COLL_ALLGATHER, sendbuf, recvbuf, count, dtype, STARLING_SUM, 0,
                       opts, req);
}

int starling_broadcast(starling_comm *comm, void *buf, size_t count, starling_dtype dtype,
                       int root, const starling_callopts *opts)
{
    return coll_submit(comm, COLL_BROADCAST, buf, buf, count, dtype, STARLING_SUM, root, opts,
                       NULL);
}

int starling_broadcast_async(starling_comm *comm, void *buf, size_t count, starling_dtype dtype,
                             int root, const starling_callopts *opts, starling_request **req)
{
    if (!req)
        return STARLING_E_INVALID;
    return coll_submit(comm, COLL_BROADCAST, buf, buf, count, dtype, STARLING_SUM, root, opts,
                       req);
}
