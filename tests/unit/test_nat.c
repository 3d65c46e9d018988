/* The coordinator and peers that accept no inbound connections (registered with data
 * port 0, as behind a NAT; coord/coord_nat.c), driven over real sockets by fake peers
 * (coord_fixture.h): such peers are never ring neighbours, an epoch holds at most half
 * of them, and the surplus waits until members that accept connections arrive. The peer
 * side (reversed links, core/links.c) is exercised end to end by tests/python/test_nat.py
 * and tests/net/run_nat_test.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "coord_fixture.h"
#include "proto/msg.h"
#include "starling.h"

/* No two members of the last TOPO with port 0 are ring neighbours. */
static void assert_spread(void)
{
    for (uint32_t i = 0; i < last_topo.n && last_topo.n > 1; i++)
        if (last_topo.members[i].port == 0 && last_topo.members[(i + 1) % last_topo.n].port == 0)
            fail_msg("members %u and %u accept no connections and are neighbours", (unsigned)i,
                     (unsigned)((i + 1) % last_topo.n));
}

static void test_closed_peers_are_spread(void **state)
{
    fixture *f = *state;
    /* By id, the ring would be 1 2 3 4, with the two closed ones (2, 3) side by side. */
    peer *p1 = join_as(f, 0x1, "one", 7001, 4, 0, NULL, 0);
    peer *p2 = join_as(f, 0x2, "two", 0, 4, 0, NULL, 0);
    peer *p3 = join_as(f, 0x3, "three", 0, 4, 0, NULL, 0);
    peer *p4 = join_as(f, 0x4, "four", 7004, 4, 0, NULL, 0);
    const peer *ring[4] = {p1, p2, p4, p3}; /* open, closed, open, closed */
    send_epoch(p1, MSG_TOPO_REQ, 0, 0, 0, 0);
    send_epoch(p2, MSG_TOPO_REQ, 0, 0, 0, 0);
    send_epoch(p3, MSG_TOPO_REQ, 0, 0, 0, 0);
    send_epoch(p4, MSG_TOPO_REQ, 0, 0, 0, 0);
    expect_topo(p1, 1, 0, 4, ring);
    expect_topo(p2, 1, 1, 4, ring);
    expect_topo(p4, 1, 2, 4, ring);
    expect_topo(p3, 1, 3, 4, ring);
    assert_spread();
}

static void test_surplus_waits_for_an_open_member(void **state)
{
    fixture *f = *state;
    /* 1 open and 2 closed: an epoch of 3 would make two closed ones neighbours, and one of
     * 2 is below min_peers 3, so nothing forms until a second open member is there. */
    peer *p1 = join_as(f, 0x1, "one", 7001, 3, 0, NULL, 0);
    peer *p2 = join_as(f, 0x2, "two", 0, 3, 0, NULL, 0);
    peer *p3 = join_as(f, 0x3, "three", 0, 3, 0, NULL, 0);
    peer *p4;
    send_epoch(p1, MSG_TOPO_REQ, 0, 0, 0, 0);
    send_epoch(p2, MSG_TOPO_REQ, 0, 0, 0, 0);
    send_epoch(p3, MSG_TOPO_REQ, 0, 0, 0, 0);
    p4 = join_as(f, 0x4, "four", 7004, 3, 0, NULL, 0);
    send_epoch(p4, MSG_TOPO_REQ, 0, 0, 0, 0);
    {
        /* The first TOPO anyone gets is the epoch of all four (an earlier one of two or
         * three would come first). */
        const peer *ring[4] = {p1, p2, p4, p3};
        expect_topo(p1, 1, 0, 4, ring);
        expect_topo(p2, 1, 1, 4, ring);
        expect_topo(p3, 1, 3, 4, ring);
        expect_topo(p4, 1, 2, 4, ring);
        assert_spread();
    }
}

static void test_closed_newcomer_waits_then_joins(void **state)
{
    fixture *f = *state;
    peer *p1 = join_as(f, 0x1, "one", 7001, 2, 0, NULL, 0);
    peer *p2 = join_as(f, 0x2, "two", 0, 2, 0, NULL, 0);
    peer *p3, *p4;
    const peer *two[2] = {p1, p2};
    send_epoch(p1, MSG_TOPO_REQ, 0, 0, 0, 0);
    send_epoch(p2, MSG_TOPO_REQ, 0, 0, 0, 0);
    expect_topo(p1, 1, 0, 2, two);
    expect_topo(p2, 1, 1, 2, two);
    /* A closed newcomer: with it, 2 of 3 would be closed. The members go on in epoch 1. */
    p3 = join_as(f, 0x3, "three", 0, 1, 0, NULL, 0);
    send_epoch(p3, MSG_TOPO_REQ, 0, 0, 0, 0);
    send_epoch(p1, MSG_TOPO_REQ, 1, 0, 0, 0);
    send_epoch(p2, MSG_TOPO_REQ, 1, 0, 0, 0);
    expect_topo(p1, 1, 0, 2, two);
    expect_topo(p2, 1, 1, 2, two);
    /* An open newcomer lets it in: epoch 2 of four, spread. */
    p4 = join_as(f, 0x4, "four", 7004, 1, 0, NULL, 0);
    send_epoch(p4, MSG_TOPO_REQ, 0, 0, 0, 0);
    send_epoch(p1, MSG_TOPO_REQ, 1, 0, 0, 0);
    send_epoch(p2, MSG_TOPO_REQ, 1, 0, 0, 0);
    {
        /* join order: the members 1 2, then the newcomers by id 3 4; spread: 1 2 4 3 */
        const peer *ring[4] = {p1, p2, p4, p3};
        expect_topo(p1, 2, 0, 4, ring);
        expect_topo(p2, 2, 1, 4, ring);
        expect_topo(p3, 2, 3, 4, ring);
        expect_topo(p4, 2, 2, 4, ring);
        assert_spread();
    }
}

static void test_alone_closed_member(void **state)
{
    fixture *f = *state;
    /* Alone, a closed peer needs no link: it forms an epoch of one. */
    peer *p = join_as(f, 0x9, "solo", 0, 1, 0, NULL, 0);
    const peer *ring[1] = {p};
    send_epoch(p, MSG_TOPO_REQ, 0, 0, 0, 0);
    expect_topo(p, 1, 0, 1, ring);
}

static void test_inbound_setting(void **state)
{
    starling_config *cfg;
    (void)state;
    assert_int_equal(starling_config_create(&cfg), STARLING_OK);
    assert_int_equal(starling_config_set_inbound(cfg, 0), STARLING_OK);
    assert_int_equal(starling_config_set_inbound(cfg, 1), STARLING_OK);
    assert_int_equal(starling_config_set_inbound(cfg, 2), STARLING_E_INVALID);
    assert_int_equal(starling_config_set_inbound(cfg, -1), STARLING_E_INVALID);
    assert_int_equal(starling_config_set_inbound(NULL, 0), STARLING_E_INVALID);
    starling_config_destroy(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_closed_peers_are_spread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_surplus_waits_for_an_open_member, setup, teardown),
        cmocka_unit_test_setup_teardown(test_closed_newcomer_waits_then_joins, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alone_closed_member, setup, teardown),
        cmocka_unit_test(test_inbound_setting),
    };
    log_echo = getenv("STARLING_TEST_LOG") != NULL;
    starling_log_set_handler(capture, NULL);
    starling_log_set_level(STARLING_LOG_DEBUG);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
