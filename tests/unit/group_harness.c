/* The in-process group of group_harness.h. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "group_harness.h"

static const char secret[] = "test-secret";
int g_streams = 1;
const char *g_ring_order;
const char *g_security;

struct group {
    starling_coord *coord;
    pthread_t coord_thr;
    char addr[64];
    int n;
};

static void *coord_main(void *arg)
{
    starling_coord_run(arg);
    return NULL;
}

static void group_start(group *g, int n)
{
    starling_config *cfg;
    memset(g, 0, sizeof *g);
    g->n = n;
    assert_int_equal(starling_config_create(&cfg), STARLING_OK);
    starling_config_set_timeout_ms(cfg, 2000);
    if (g_ring_order)
        assert_int_equal(starling_config_set_ring_order(cfg, g_ring_order), STARLING_OK);
    if (g_security)
        assert_int_equal(starling_config_set_security(cfg, g_security), STARLING_OK);
    assert_int_equal(starling_coord_create(&g->coord, "127.0.0.1:0", "grp", secret,
                                           sizeof secret - 1, cfg),
                     STARLING_OK);
    starling_config_destroy(cfg);
    snprintf(g->addr, sizeof g->addr, "127.0.0.1:%d", starling_coord_port(g->coord));
    assert_int_equal(pthread_create(&g->coord_thr, NULL, coord_main, g->coord), 0);
}

static void group_stop(group *g)
{
    starling_coord_stop(g->coord);
    pthread_join(g->coord_thr, NULL);
    starling_coord_destroy(g->coord);
}

static void *peer_main(void *arg)
{
    peer_arg *pa = arg;
    char name[16];
    starling_config *cfg;
    starling_comm *c = NULL;
    int rc;
    starling_config_create(&cfg);
    starling_config_set_min_peers(cfg, pa->g->n);
    starling_config_set_timeout_ms(cfg, 2000);
    starling_config_set_chunk_bytes(cfg, 4096); /* many pieces even for small buffers */
    starling_config_set_streams(cfg, g_streams);
    if (g_security)
        starling_config_set_security(cfg, g_security);
    snprintf(name, sizeof name, "p%d", pa->idx);
    starling_config_set_name(cfg, name);
    rc = starling_comm_create(&c, pa->g->addr, "grp", secret, sizeof secret - 1, cfg);
    starling_config_destroy(cfg);
    CHECK(pa, rc == STARLING_OK, "comm_create: %s", starling_strerror(rc));
    if (rc)
        return NULL;
    rc = starling_update_topology(c);
    CHECK(pa, rc == STARLING_OK, "update_topology: %s", starling_strerror(rc));
    if (rc == STARLING_OK) {
        CHECK(pa, starling_comm_size(c) == pa->g->n, "size %d", starling_comm_size(c));
        pa->body(pa, c);
    }
    starling_comm_destroy(c);
    return NULL;
}

void run_group(int n, void (*body)(peer_arg *, starling_comm *), peer_arg *out)
{
    run_group_with(n, body, NULL, out);
}

void run_group_with(int n, void (*body)(peer_arg *, starling_comm *), void *user,
                    peer_arg *out)
{
    group g;
    pthread_t t[MAXP];
    peer_arg pa[MAXP];
    group_start(&g, n);
    for (int i = 0; i < n; i++) {
        memset(&pa[i], 0, sizeof pa[i]);
        pa[i].g = &g;
        pa[i].idx = i;
        pa[i].body = body;
        pa[i].user = user;
        assert_int_equal(pthread_create(&t[i], NULL, peer_main, &pa[i]), 0);
    }
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    group_stop(&g);
    for (int i = 0; i < n; i++) {
        if (pa[i].fail)
            fail_msg("peer %d: %s", i, pa[i].why);
        if (out)
            out[i] = pa[i];
    }
}

