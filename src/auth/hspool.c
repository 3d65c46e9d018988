#include "auth/hspool.h"

#include <string.h>

#include "platform/clock.h"
#include "platform/net.h"
#include "starling.h"
#include "util/alloc.h"
#include "util/log.h"

typedef struct hs_job {
    starling__hspool *pool;
    int fd;
} hs_job;

int starling__hspool_init(starling__hspool *p, const starling__key *key, int max,
                          int handshake_ms, const char *label, starling__hs_done_fn done,
                          void *user)
{
    memset(p, 0, sizeof *p);
    if (pthread_mutex_init(&p->mu, NULL) != 0)
        return STARLING_E_OS;
    if (pthread_cond_init(&p->idle, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        return STARLING_E_OS;
    }
    p->key = key;
    p->max = max;
    p->handshake_ms = handshake_ms;
    p->label = label;
    p->done = done;
    p->user = user;
    return STARLING_OK;
}

/* Gives back a handshake slot; the last one wakes starling__hspool_destroy. */
static void release(starling__hspool *p)
{
    pthread_mutex_lock(&p->mu);
    if (--p->active == 0)
        pthread_cond_broadcast(&p->idle);
    pthread_mutex_unlock(&p->mu);
}

static void *hs_main(void *arg)
{
    hs_job *j = arg;
    starling__hspool *p = j->pool;
    starling__msg_hello h;
    starling__seal seal;
    char why[STARLING_REASON_MAX] = "";
    int rc;

    memset(&h, 0, sizeof h);
    rc = starling__handshake_server(j->fd, p->key, &h, &seal, starling__now_ms() + p->handshake_ms,
                                    why, sizeof why);
    if (rc == STARLING_OK) {
        p->done(p->user, j->fd, &h, &seal);
        starling__seal_wipe(&seal);
    } else {
        SLOG_WARN("%s: refused connection: %s", p->label, why[0] ? why : starling_strerror(rc));
        starling__sock_close(j->fd);
    }
    starling__free(j);
    release(p);
    return NULL;
}

void starling__hspool_submit(starling__hspool *p, int fd)
{
    pthread_attr_t attr;
    pthread_t t;
    hs_job *j;
    int ok = 0;

    pthread_mutex_lock(&p->mu);
    if (p->active < p->max) {
        p->active++;
        ok = 1;
    }
    pthread_mutex_unlock(&p->mu);
    if (!ok) {
        SLOG_WARN("%s: refused connection: %d handshakes already in progress", p->label, p->max);
        starling__sock_close(fd);
        return;
    }
    j = starling__malloc(sizeof *j);
    ok = j != NULL && pthread_attr_init(&attr) == 0;
    if (ok) {
        j->pool = p;
        j->fd = fd;
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        /* Handshakes need little stack: keep hundreds of them cheap. */
        pthread_attr_setstacksize(&attr, 256 * 1024);
        ok = pthread_create(&t, &attr, hs_main, j) == 0;
        pthread_attr_destroy(&attr);
    }
    if (!ok) {
        starling__free(j);
        starling__sock_close(fd);
        release(p);
    }
}

void starling__hspool_destroy(starling__hspool *p)
{
    pthread_mutex_lock(&p->mu);
    while (p->active > 0)
        pthread_cond_wait(&p->idle, &p->mu);
    pthread_mutex_unlock(&p->mu);
    pthread_cond_destroy(&p->idle);
    pthread_mutex_destroy(&p->mu);
}
