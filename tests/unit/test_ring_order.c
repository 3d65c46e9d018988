/* Topology-aware ring order: the model and search of coord/ring_order.c on matrices
 * written down here, then the whole path on loopback (the coordinator asks, the members
 * measure, report, and the ring is ordered), and the configuration's refusals. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "coord/ring_order.h"
#include "group_harness.h"
#include "starling.h"

#define MB 1e6 /* bytes/s: 8 Mbit/s */
#define NMAX 16

typedef struct matrix {
    int n;
    double bw[NMAX * NMAX], rtt[NMAX * NMAX];
} matrix;

/* Every link `fast`, except between members of different sites: `slow`. */
static void two_level(matrix *x, int n, const int *site, double fast, double slow)
{
    x->n = n;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            x->bw[i * n + j] = i == j ? 0 : site[i] == site[j] ? fast : slow;
            x->rtt[i * n + j] = i == j ? 0 : 1e-4;
        }
}

static int crossings(const int *order, int n, const int *site)
{
    int c = 0;
    for (int i = 0; i < n; i++)
        c += site[order[i]] != site[order[(i + 1) % n]];
    return c;
}

static double time_of(const matrix *x, const int *order)
{
    starling__ring_model m;
    double t;
    assert_int_equal(starling__ring_model_init(&m, x->n, x->bw, x->rtt), STARLING_OK);
    t = starling__ring_time(&m, order, STARLING_ORDER_REF_BYTES);
    starling__ring_model_free(&m);
    return t;
}

static void best_of(const matrix *x, int *order)
{
    starling__ring_model m;
    assert_int_equal(starling__ring_model_init(&m, x->n, x->bw, x->rtt), STARLING_OK);
    starling__ring_best(&m, STARLING_ORDER_REF_BYTES, order);
    starling__ring_model_free(&m);
}

static const int ident[NMAX] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

/* 3 members, every link 100 MB/s with 1 ms round trips, B = 64 MiB:
 * T = 2(n-1) (B/n / bw + rtt/2) = 4 * (67108864/3 / 1e8 + 0.0005) = 0.896785 s. */
static void test_time_formula(void **state)
{
    matrix x;
    int site[3] = {0, 0, 0};
    (void)state;
    two_level(&x, 3, site, 100 * MB, 100 * MB);
    for (int i = 0; i < 9; i++)
        x.rtt[i] = 1e-3;
    assert_true(fabs(time_of(&x, ident) - 4 * (67108864.0 / 3 / 1e8 + 0.0005)) < 1e-9);
}

/* Two sites {0,2,4} and {1,3,5}, 125 MB/s inside, 12.5 MB/s between. The order 0..5
 * alternates: each uplink carries 3 ring links, 12.5/3 MB/s each. The best order visits
 * each site once (2 crossings, 12.5 MB/s each): 3 times faster, up to the latency term
 * 2(n-1) * rtt/2 = 10 * 5e-5 = 5e-4 s, which both orders share. */
static void test_two_sites(void **state)
{
    matrix x;
    int site[6] = {0, 1, 0, 1, 0, 1}, order[6];
    double worst, best, lat = 10 * 5e-5;
    starling__ring_model m;
    (void)state;
    two_level(&x, 6, site, 125 * MB, 12.5 * MB);
    assert_int_equal(starling__ring_model_init(&m, 6, x.bw, x.rtt), STARLING_OK);
    for (int i = 0; i < 6; i++)
        assert_int_equal(m.site[i], site[i]); /* the sites are found */
    assert_true(m.uplink[0] == 12.5 * MB && m.uplink[1] == 12.5 * MB);
    starling__ring_model_free(&m);
    best_of(&x, order);
    assert_int_equal(order[0], 0);
    assert_int_equal(crossings(order, 6, site), 2);
    worst = time_of(&x, ident);
    best = time_of(&x, order);
    assert_true(fabs((worst - lat) / (best - lat) - 3.0) < 1e-9);
}

/* Beyond the exact search: 12 members, two alternating sites. */
static void test_two_sites_heuristic(void **state)
{
    matrix x;
    int site[12], order[12];
    (void)state;
    for (int i = 0; i < 12; i++)
        site[i] = i % 2;
    two_level(&x, 12, site, 125 * MB, 12.5 * MB);
    best_of(&x, order);
    assert_int_equal(order[0], 0);
    assert_int_equal(crossings(order, 12, site), 2);
    /* A permutation of 0..11. */
    int seen[12] = {0};
    for (int i = 0; i < 12; i++)
        seen[order[i]]++;
    for (int i = 0; i < 12; i++)
        assert_int_equal(seen[i], 1);
}

/* Three sites of three, interleaved (site = i mod 3): each site left once. */
static void test_three_sites(void **state)
{
    matrix x;
    int site[9], order[9];
    (void)state;
    for (int i = 0; i < 9; i++)
        site[i] = i % 3;
    two_level(&x, 9, site, 125 * MB, 10 * MB);
    best_of(&x, order);
    assert_int_equal(crossings(order, 9, site), 3);
    assert_true(time_of(&x, order) < time_of(&x, ident) / 2.9);
}

/* An unusable link (0: could not be measured) is avoided; a ring that needs it is
 * "infinitely" slow. */
static void test_unusable_link(void **state)
{
    matrix x;
    int site[4] = {0, 0, 0, 0}, order[4];
    (void)state;
    two_level(&x, 4, site, 100 * MB, 100 * MB);
    x.bw[0 * 4 + 1] = 0;
    assert_true(time_of(&x, ident) >= 1e300);
    best_of(&x, order);
    for (int i = 0; i < 4; i++)
        assert_false(order[i] == 0 && order[(i + 1) % 4] == 1);
    assert_true(time_of(&x, order) < 1.1); /* 6 * (64 MiB / 4 / 1e8 + 5e-5) = 1.0069 s */
}

/* Links are directed: fast 0->2->1->0, slow the other way round. */
static void test_directed(void **state)
{
    matrix x;
    int site[3] = {0, 0, 0}, order[3];
    (void)state;
    two_level(&x, 3, site, 10 * MB, 10 * MB);
    x.bw[0 * 3 + 2] = x.bw[2 * 3 + 1] = x.bw[1 * 3 + 0] = 100 * MB;
    best_of(&x, order);
    assert_int_equal(order[0], 0);
    assert_int_equal(order[1], 2);
    assert_int_equal(order[2], 1);
}

/* One slow host slows every ring alike: no order is better, the first one is kept
 * (ties go to the lexicographically first order, so nothing churns). */
static void test_slow_host_keeps_order(void **state)
{
    matrix x;
    int site[5] = {0, 0, 0, 0, 0}, order[5];
    (void)state;
    two_level(&x, 5, site, 100 * MB, 100 * MB);
    for (int j = 0; j < 5; j++)
        if (j != 3)
            x.bw[3 * 5 + j] = x.bw[j * 5 + 3] = 5 * MB;
    best_of(&x, order);
    for (int i = 0; i < 5; i++)
        assert_int_equal(order[i], i);
}

/* ---------------------------------------------------------------- on loopback */

static void body_measured(peer_arg *pa, starling_comm *c)
{
    int n = starling_comm_size(c), me = starling_comm_rank(c), rc;
    double bps = 0, rtt = 0;
    float v[1000];
    for (int r = 0; r < n; r++) {
        if (r == me)
            continue;
        rc = starling_comm_link(c, r, &bps, &rtt);
        CHECK(pa, rc == STARLING_OK, "link to rank %d: %s", r, starling_strerror(rc));
        CHECK(pa, bps > 1e6 && rtt > 0 && rtt < 1.0, "link to rank %d: %g B/s, rtt %g s", r,
              bps, rtt);
    }
    CHECK(pa, starling_comm_link(c, me, NULL, NULL) == STARLING_E_INVALID, "own rank");
    CHECK(pa, starling_comm_link(c, n, NULL, NULL) == STARLING_E_INVALID, "rank n");
    CHECK(pa, starling_comm_link(c, -1, NULL, NULL) == STARLING_E_INVALID, "rank -1");
    /* On request, again; the ring still carries collectives afterwards. */
    rc = starling_measure_links(c);
    CHECK(pa, rc == STARLING_OK, "measure_links: %s", starling_strerror(rc));
    CHECK(pa, starling_comm_size(c) == n, "size %d after measuring", starling_comm_size(c));
    for (int i = 0; i < 1000; i++)
        v[i] = (float)(pa->idx + 1);
    rc = starling_allreduce(c, v, v, 1000, STARLING_F32, STARLING_SUM, NULL);
    CHECK(pa, rc == STARLING_OK, "allreduce: %s", starling_strerror(rc));
    CHECK(pa, v[0] == 10.0f && v[999] == 10.0f, "sum %g", (double)v[0]);
}

/* ring order "measured": the coordinator asks the first epoch's members to measure inside
 * their first starling_update_topology; every link then has a figure. */
static void test_measured_on_loopback(void **state)
{
    (void)state;
    g_ring_order = "measured";
    run_group(4, body_measured, NULL);
    g_ring_order = NULL;
}

static void body_by_name(peer_arg *pa, starling_comm *c)
{
    /* Named p0..p3: rank = index. Nothing measured: no link figures. */
    CHECK(pa, starling_comm_rank(c) == pa->idx, "p%d has rank %d", pa->idx, starling_comm_rank(c));
    float one = 1.0f;
    int rc;
    CHECK(pa, starling_comm_link(c, (pa->idx + 1) % 4, NULL, NULL) == STARLING_E_NOT_FOUND,
          "a link figure without a measurement");
    /* A collective before leaving: a member whose update_topology returned first must not
     * leave while the others still wait for their ring links. */
    rc = starling_allreduce(c, &one, &one, 1, STARLING_F32, STARLING_SUM, NULL);
    CHECK(pa, rc == STARLING_OK && one == 4.0f, "allreduce: %s", starling_strerror(rc));
}

static void test_order_by_name(void **state)
{
    (void)state;
    g_ring_order = "name";
    run_group(4, body_by_name, NULL);
    g_ring_order = NULL;
}

static void test_config_refusals(void **state)
{
    starling_config *cfg;
    (void)state;
    assert_int_equal(starling_config_create(&cfg), STARLING_OK);
    assert_int_equal(starling_config_set_ring_order(cfg, "fastest"), STARLING_E_INVALID);
    assert_int_equal(starling_config_set_ring_order(cfg, ""), STARLING_E_INVALID);
    assert_int_equal(starling_config_set_ring_order(cfg, NULL), STARLING_E_INVALID);
    assert_int_equal(starling_config_set_ring_order(cfg, "measured"), STARLING_OK);
    assert_int_equal(starling_config_set_probe_bytes(cfg, 65535), STARLING_E_INVALID);
    assert_int_equal(starling_config_set_probe_bytes(cfg, (256u << 20) + 1), STARLING_E_INVALID);
    assert_int_equal(starling_config_set_probe_bytes(cfg, 65536), STARLING_OK);
    assert_int_equal(starling_config_set_socket_buffer(cfg, 4095), STARLING_E_INVALID);
    assert_int_equal(starling_config_set_socket_buffer(cfg, (1u << 30) + 1), STARLING_E_INVALID);
    assert_int_equal(starling_config_set_socket_buffer(cfg, 0), STARLING_OK);
    assert_int_equal(starling_config_set_socket_buffer(cfg, 1u << 20), STARLING_OK);
    assert_int_equal(starling_config_set_ring_order(NULL, "join"), STARLING_E_INVALID);
    assert_int_equal(starling_measure_links(NULL), STARLING_E_INVALID);
    assert_int_equal(starling_comm_link(NULL, 0, NULL, NULL), STARLING_E_INVALID);
    starling_config_destroy(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time_formula),
        cmocka_unit_test(test_two_sites),
        cmocka_unit_test(test_two_sites_heuristic),
        cmocka_unit_test(test_three_sites),
        cmocka_unit_test(test_unusable_link),
        cmocka_unit_test(test_directed),
        cmocka_unit_test(test_slow_host_keeps_order),
        cmocka_unit_test(test_measured_on_loopback),
        cmocka_unit_test(test_order_by_name),
        cmocka_unit_test(test_config_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
