/* Addresses: the HOST:PORT / [V6]:PORT parser, the config setters that use it, connection
 * errors carrying the system's text (also through starling_last_error when there is no
 * handle yet), and whole groups whose coordinator and data planes are named "localhost",
 * "[::1]" (skipped where loopback has no IPv6), or listen on a wildcard and advertise
 * another loopback address. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "platform/net.h"
#include "starling.h"

static const char secret[] = "addr-test";

/* ---------------------------------------------------------------- parsing */

static void test_parse_accepts(void **state)
{
    static const struct {
        const char *in, *host;
        int port;
    } ok[] = {
        {"127.0.0.1:7000", "127.0.0.1", 7000},
        {"localhost:0", "localhost", 0},
        {"[::1]:65535", "::1", 65535},
        {"[::]:1", "::", 1},
        {"[fe80::1%lo]:9", "fe80::1%lo", 9},
        {"node-3.cluster_a.example:80", "node-3.cluster_a.example", 80},
        {"0.0.0.0:5", "0.0.0.0", 5},
    };
    char host[STARLING_HOST_MAX];
    int port;
    (void)state;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        port = -1;
        assert_int_equal(starling__addr_parse(ok[i].in, host, &port), STARLING_OK);
        assert_string_equal(host, ok[i].host);
        assert_int_equal(port, ok[i].port);
    }
}

static void test_parse_refuses(void **state)
{
    char long_name[STARLING_HOST_MAX + 8];
    const char *bad[] = {
        "vm:", ":7", "vm", "[::1]", "[::1]:99999", "::1:7", "[::1]7", "a b:1", "-x:1",
        "[vm]:1", "127.0.0.1:+5", "127.0.0.1:-1", "host:7x", "[]:1", "[::1:1", "x]:1",
        "[1.2.3.4]:1", "fe80::1%lo:1", "[zz::1]:1", "ho$t:1", "",
    };
    char host[STARLING_HOST_MAX] = "untouched";
    int port = 42;
    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(starling__addr_parse(bad[i], host, &port), STARLING_E_INVALID);
        assert_string_equal(host, "untouched");
        assert_int_equal(port, 42);
    }
    assert_int_equal(starling__addr_parse(NULL, host, &port), STARLING_E_INVALID);
    /* 63 bytes of name fit, 64 do not */
    memset(long_name, 'a', STARLING_HOST_MAX - 1);
    strcpy(long_name + STARLING_HOST_MAX - 1, ":1");
    assert_int_equal(starling__addr_parse(long_name, host, &port), STARLING_OK);
    memset(long_name, 'a', STARLING_HOST_MAX);
    strcpy(long_name + STARLING_HOST_MAX, ":1");
    assert_int_equal(starling__addr_parse(long_name, host, &port), STARLING_E_INVALID);
}

static void test_format(void **state)
{
    char buf[80];
    (void)state;
    starling__addr_format("::1", 7, buf, sizeof buf);
    assert_string_equal(buf, "[::1]:7");
    starling__addr_format("localhost", 0, buf, sizeof buf);
    assert_string_equal(buf, "localhost:0");
}

static void test_config_setters(void **state)
{
    starling_config *cfg;
    (void)state;
    assert_int_equal(starling_config_create(&cfg), STARLING_OK);
    assert_int_equal(starling_config_set_listen(cfg, "vm:"), STARLING_E_INVALID);
    assert_int_equal(starling_config_set_listen(cfg, "::1:0"), STARLING_E_INVALID);
    assert_int_equal(starling_config_set_listen(cfg, "[::1]:0"), STARLING_OK);
    assert_int_equal(starling_config_set_listen(cfg, "localhost:0"), STARLING_OK);
    assert_int_equal(starling_config_set_advertise(cfg, "0.0.0.0"), STARLING_E_INVALID);
    assert_int_equal(starling_config_set_advertise(cfg, "::"), STARLING_E_INVALID);
    assert_int_equal(starling_config_set_advertise(cfg, "a b"), STARLING_E_INVALID);
    assert_int_equal(starling_config_set_advertise(cfg, "10.0.0.1:7"), STARLING_E_INVALID);
    assert_int_equal(starling_config_set_advertise(cfg, "fd00::2"), STARLING_OK);
    assert_int_equal(starling_config_set_advertise(cfg, "node-1"), STARLING_OK);
    assert_int_equal(starling_config_set_advertise(cfg, NULL), STARLING_OK);
    assert_int_equal(starling_config_set_advertise(NULL, "x"), STARLING_E_INVALID);
    starling_config_destroy(cfg);
}

/* ---------------------------------------------------------------- errors */

/* A port nothing listens on (bound, then closed; nobody else takes it this fast). */
static int closed_port(void)
{
    int fd, port = 0;
    assert_int_equal(starling__tcp_listen("127.0.0.1", 0, 0, &fd, &port, NULL, 0), STARLING_OK);
    starling__sock_close(fd);
    return port;
}

static void test_refused_carries_strerror(void **state)
{
    char why[160] = "", addr[64];
    starling_comm *comm = (starling_comm *)1;
    int fd = -1, port = closed_port();
    (void)state;
    assert_int_equal(starling__tcp_connect("127.0.0.1", port, 0, 2000, &fd, why, sizeof why),
                     STARLING_E_OS);
    assert_non_null(strstr(why, "Connection refused"));
    assert_non_null(strstr(why, "connect to 127.0.0.1:"));
    /* through the public API: no handle, so starling_last_error says why */
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    assert_int_equal(starling_comm_create(&comm, addr, "r", secret, sizeof secret - 1, NULL),
                     STARLING_E_OS);
    assert_null(comm);
    assert_non_null(strstr(starling_last_error(), "cannot reach the coordinator"));
    assert_non_null(strstr(starling_last_error(), "Connection refused"));
    assert_int_equal(starling_comm_create(&comm, "vm:", "r", secret, sizeof secret - 1, NULL),
                     STARLING_E_INVALID);
    assert_non_null(strstr(starling_last_error(), "'vm:'"));
}

static void test_coordinator_errors(void **state)
{
    starling_coord *a = NULL, *b = NULL;
    char addr[64];
    (void)state;
    assert_int_equal(starling_coord_create(&a, "127.0.0.1:0", "r", secret, sizeof secret - 1,
                                           NULL),
                     STARLING_OK);
    assert_string_equal(starling_last_error(), "");
    snprintf(addr, sizeof addr, "127.0.0.1:%d", starling_coord_port(a));
    assert_int_equal(starling_coord_create(&b, addr, "r", secret, sizeof secret - 1, NULL),
                     STARLING_E_OS);
    assert_null(b);
    assert_non_null(strstr(starling_last_error(), "Address already in use"));
    assert_int_equal(starling_coord_create(&b, "[::1", "r", secret, sizeof secret - 1, NULL),
                     STARLING_E_INVALID);
    assert_non_null(strstr(starling_last_error(), "'[::1'"));
    starling_coord_destroy(a);
}

/* ---------------------------------------------------------------- groups */

typedef struct member {
    const char *coord, *listen, *advertise;
    int rc;
    float sum;
    char why[256];
} member;

static void *member_main(void *arg)
{
    member *m = arg;
    starling_config *cfg;
    starling_comm *c = NULL;
    float x[4] = {1, 1, 1, 1};

    starling_config_create(&cfg);
    starling_config_set_min_peers(cfg, 2);
    starling_config_set_timeout_ms(cfg, 2000);
    starling_config_set_op_timeout_ms(cfg, 20000);
    if ((m->rc = starling_config_set_listen(cfg, m->listen)) ||
        (m->rc = starling_config_set_advertise(cfg, m->advertise)) ||
        (m->rc = starling_comm_create(&c, m->coord, "addr", secret, sizeof secret - 1, cfg))) {
        snprintf(m->why, sizeof m->why, "create: %s", starling_last_error());
        starling_config_destroy(cfg);
        return NULL;
    }
    starling_config_destroy(cfg);
    if ((m->rc = starling_update_topology(c)) ||
        (m->rc = starling_allreduce(c, x, x, 4, STARLING_F32, STARLING_SUM, NULL)))
        snprintf(m->why, sizeof m->why, "%s", starling_comm_errmsg(c));
    m->sum = x[0] + x[1] + x[2] + x[3];
    starling_comm_destroy(c);
    return NULL;
}

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_seen[4096];

static void log_keep(void *user, starling_log_level level, const char *msg)
{
    (void)user;
    (void)level;
    pthread_mutex_lock(&log_mu);
    if (strlen(log_seen) + strlen(msg) + 2 < sizeof log_seen) {
        strcat(log_seen, msg);
        strcat(log_seen, "\n");
    }
    pthread_mutex_unlock(&log_mu);
}

static void *coord_main(void *arg)
{
    starling_coord_run(arg);
    return NULL;
}

/* A coordinator on coord_listen, reached as coord_name:PORT by two members listening on
 * listen and advertising advertise; both all-reduce 4 ones (sum 8 each). */
static void run_pair(const char *coord_listen, const char *coord_name, const char *listen,
                     const char *advertise)
{
    starling_coord *coord;
    pthread_t ct, t[2];
    char addr[96];
    member m[2];

    assert_int_equal(starling_coord_create(&coord, coord_listen, "addr", secret,
                                           sizeof secret - 1, NULL),
                     STARLING_OK);
    assert_int_equal(pthread_create(&ct, NULL, coord_main, coord), 0);
    snprintf(addr, sizeof addr, strchr(coord_name, ':') ? "[%s]:%d" : "%s:%d", coord_name,
             starling_coord_port(coord));
    for (int i = 0; i < 2; i++) {
        m[i] = (member){addr, listen, advertise, 0, 0, ""};
        assert_int_equal(pthread_create(&t[i], NULL, member_main, &m[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    starling_coord_stop(coord);
    pthread_join(ct, NULL);
    starling_coord_destroy(coord);
    for (int i = 0; i < 2; i++) {
        if (m[i].rc != STARLING_OK)
            fail_msg("member %d (%s, listen %s): %s: %s", i, addr, listen,
                     starling_strerror(m[i].rc), m[i].why);
        assert_true(m[i].sum == 8.0f);
    }
}

static void test_group_localhost(void **state)
{
    (void)state;
    run_pair("localhost:0", "localhost", "localhost:0", NULL);
}

static int have_ipv6_loopback(void)
{
    int fd, port;
    if (starling__tcp_listen("::1", 0, 0, &fd, &port, NULL, 0) != STARLING_OK)
        return 0;
    starling__sock_close(fd);
    return 1;
}

static void test_group_ipv6(void **state)
{
    (void)state;
    if (!have_ipv6_loopback())
        skip();
    run_pair("[::1]:0", "::1", "[::1]:0", NULL);
    /* a dual-stack wildcard: members reach it over IPv4 and IPv6 alike */
    run_pair("[::]:0", "127.0.0.1", "[::]:0", NULL);
    run_pair("[::]:0", "::1", "[::]:0", NULL);
}

static void test_group_advertise(void **state)
{
    (void)state;
    /* listening on every interface, each member advertises 127.0.0.3 (loopback, but not
     * the address of its coordinator link): the coordinator passes that on */
    log_seen[0] = '\0';
    starling_log_set_level(STARLING_LOG_INFO);
    starling_log_set_handler(log_keep, NULL);
    run_pair("127.0.0.1:0", "127.0.0.1", "0.0.0.0:0", "127.0.0.3");
    starling_log_set_handler(NULL, NULL);
    assert_non_null(strstr(log_seen, "data plane 127.0.0.3:"));
    assert_null(strstr(log_seen, "data plane 127.0.0.1:"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_accepts),
        cmocka_unit_test(test_parse_refuses),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_config_setters),
        cmocka_unit_test(test_refused_carries_strerror),
        cmocka_unit_test(test_coordinator_errors),
        cmocka_unit_test(test_group_localhost),
        cmocka_unit_test(test_group_ipv6),
        cmocka_unit_test(test_group_advertise),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
