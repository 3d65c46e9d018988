/* The collectives of a whole group in one process (group_harness.h), against references
 * computed here, and state sync. Fast enough to run under ThreadSanitizer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "group_harness.h"
#include "starling.h"

/* Inputs are small integers so every order of summation is exact. */
static void body_allreduce(peer_arg *pa, starling_comm *c)
{
    static const size_t counts[] = {0, 1, 2, 3, 7, 13, 1000, 4099, 65537};
    int rank = starling_comm_rank(c), n = starling_comm_size(c);
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        size_t cnt = counts[k];
        float *in = malloc(cnt * 4 + 4), *out = malloc(cnt * 4 + 4), *keep = malloc(cnt * 4 + 4);
        for (size_t i = 0; i < cnt; i++)
            in[i] = (float)((rank + 1) * (int)(i % 5 + 1));
        memcpy(keep, in, cnt * 4);
        int rc = starling_allreduce(c, in, out, cnt, STARLING_F32, STARLING_SUM, NULL);
        CHECK(pa, rc == STARLING_OK, "allreduce %zu: %s (%s)", cnt, starling_strerror(rc),
              starling_comm_errmsg(c));
        for (size_t i = 0; i < cnt && !pa->fail; i++)
            CHECK(pa, out[i] == (float)(n * (n + 1) / 2 * (int)(i % 5 + 1)), "sum[%zu]=%g", i,
                  out[i]);
        CHECK(pa, memcmp(in, keep, cnt * 4) == 0, "input changed");
        /* in place, max */
        rc = starling_allreduce(c, in, in, cnt, STARLING_F32, STARLING_MAX, NULL);
        CHECK(pa, rc == STARLING_OK, "allreduce max: %s", starling_strerror(rc));
        for (size_t i = 0; i < cnt && !pa->fail; i++)
            CHECK(pa, in[i] == (float)(n * (int)(i % 5 + 1)), "max[%zu]=%g", i, in[i]);
        free(in);
        free(out);
        free(keep);
    }
}

static void body_others(peer_arg *pa, starling_comm *c)
{
    int rank = starling_comm_rank(c), n = starling_comm_size(c);
    size_t cnt = 5003;
    int32_t *in = malloc(cnt * n * 4), *out = malloc(cnt * n * 4);
    for (size_t i = 0; i < cnt * n; i++)
        in[i] = (int32_t)(i * 3 + rank);
    int rc = starling_reduce_scatter(c, in, out, cnt, STARLING_I32, STARLING_SUM, NULL);
    CHECK(pa, rc == STARLING_OK, "reduce_scatter: %s", starling_strerror(rc));
    for (size_t i = 0; i < cnt && !pa->fail; i++) {
        size_t gi = (size_t)rank * cnt + i;
        CHECK(pa, out[i] == (int32_t)(gi * 3 * n + n * (n - 1) / 2), "rs[%zu]=%d", i, out[i]);
    }
    for (size_t i = 0; i < cnt; i++)
        in[i] = (int32_t)(rank * 100000 + i);
    rc = starling_allgather(c, in, out, cnt, STARLING_I32, NULL);
    CHECK(pa, rc == STARLING_OK, "allgather: %s", starling_strerror(rc));
    for (int r = 0; r < n && !pa->fail; r++)
        for (size_t i = 0; i < cnt && !pa->fail; i++)
            CHECK(pa, out[r * cnt + i] == (int32_t)(r * 100000 + i), "ag[%d][%zu]", r, i);
    for (int root = 0; root < n; root++) {
        for (size_t i = 0; i < cnt; i++)
            in[i] = rank == root ? (int32_t)(i ^ 0x5a5a) : -1;
        rc = starling_broadcast(c, in, cnt, STARLING_I32, root, NULL);
        CHECK(pa, rc == STARLING_OK, "broadcast: %s", starling_strerror(rc));
        for (size_t i = 0; i < cnt && !pa->fail; i++)
            CHECK(pa, in[i] == (int32_t)(i ^ 0x5a5a), "bc root %d [%zu]=%d", root, i, in[i]);
    }
    /* three in flight, told apart by tag */
    {
        starling_request *req[3];
        double d[3][100];
        starling_callopts *o;
        starling_callopts_create(&o);
        for (int k = 0; k < 3; k++) {
            for (int i = 0; i < 100; i++)
                d[k][i] = (double)(k + 1);
            starling_callopts_set_tag(o, (uint64_t)k + 10);
            rc = starling_allreduce_async(c, d[k], d[k], 100, STARLING_F64, STARLING_AVG, o, &req[k]);
            CHECK(pa, rc == STARLING_OK, "async submit: %s", starling_strerror(rc));
        }
        starling_callopts_destroy(o);
        for (int k = 0; k < 3; k++) {
            rc = starling_request_wait(req[k]);
            CHECK(pa, rc == STARLING_OK, "async %d: %s", k, starling_strerror(rc));
            CHECK(pa, d[k][99] == (double)(k + 1), "avg %g", d[k][99]);
            starling_request_free(req[k]);
        }
    }
    free(in);
    free(out);
}

static void body_state(peer_arg *pa, starling_comm *c)
{
    int rank = starling_comm_rank(c);
    size_t cnt = 100003;
    float *w = calloc(cnt, 4);
    double m[7] = {0};
    int changed = -1, rc;
    char h[33];
    if (rank != 1) { /* rank 1 plays the newcomer with zeros */
        for (size_t i = 0; i < cnt; i++)
            w[i] = (float)i * 0.5f;
        for (int i = 0; i < 7; i++)
            m[i] = i;
        starling_state_set_step(c, 42);
    }
    starling_state_register(c, "w", w, cnt, STARLING_F32);
    starling_state_register(c, "m", m, 7, STARLING_F64);
    rc = starling_sync_state(c, &changed);
    CHECK(pa, rc == STARLING_OK, "sync: %s (%s)", starling_strerror(rc), starling_comm_errmsg(c));
    CHECK(pa, changed == (rank == 1), "changed=%d on rank %d", changed, rank);
    CHECK(pa, w[cnt - 1] == (float)(cnt - 1) * 0.5f && m[6] == 6.0, "state bytes wrong");
    CHECK(pa, starling_state_step(c) == 42, "step %llu", (unsigned long long)starling_state_step(c));
    starling_state_hash_hex(c, h);
    memcpy(pa->hash, h, 33);
    rc = starling_sync_state(c, &changed);
    CHECK(pa, rc == STARLING_OK && changed == 0, "second sync changed=%d", changed);
    free(w);
}

static void test_allreduce_2(void **s) { (void)s; run_group(2, body_allreduce, NULL); }
static void test_allreduce_3(void **s) { (void)s; run_group(3, body_allreduce, NULL); }
static void test_allreduce_5(void **s) { (void)s; run_group(5, body_allreduce, NULL); }
static void test_allreduce_3_streams(void **s)
{
    (void)s;
    g_streams = 3; /* pieces go to whichever of 3 sockets has room, arrive out of order */
    run_group(3, body_allreduce, NULL);
    run_group(4, body_others, NULL);
    g_streams = 1;
}
/* The most streams a link may have: most carry few pieces or none in a call, and the
 * commit token on stream 0 may overtake pieces still in flight on the others. */
static void test_sixteen_streams(void **s)
{
    peer_arg pa[3];
    (void)s;
    g_streams = 16;
    run_group(3, body_allreduce, NULL);
    run_group(2, body_others, NULL);
    run_group(3, body_state, pa);
    g_streams = 1;
    assert_string_equal(pa[0].hash, pa[2].hash);
}
/* Every security mode carries the same collectives to the same bits: clear frames,
 * ChaCha20-Poly1305 forced, and the default (AES-256-GCM where the CPU has it), with
 * several streams so that sealed pieces arrive out of order across sockets. */
static void test_security_modes(void **s)
{
    static const char *const modes[] = {"none", "chacha20", "aead"};
    (void)s;
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        peer_arg pa[3];
        g_security = modes[m];
        g_streams = 2;
        run_group(3, body_allreduce, NULL);
        run_group(3, body_others, NULL);
        run_group(3, body_state, pa);
        g_streams = 1;
        g_security = NULL;
        assert_string_equal(pa[0].hash, pa[1].hash);
        assert_string_equal(pa[0].hash, pa[2].hash);
    }
}
static void test_others_1(void **s) { (void)s; run_group(1, body_others, NULL); }
static void test_others_4(void **s) { (void)s; run_group(4, body_others, NULL); }
static void test_state_3(void **s)
{
    peer_arg pa[3];
    (void)s;
    run_group(3, body_state, pa);
    assert_string_equal(pa[0].hash, pa[1].hash);
    assert_string_equal(pa[0].hash, pa[2].hash);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allreduce_2),     cmocka_unit_test(test_allreduce_3),
        cmocka_unit_test(test_allreduce_5),     cmocka_unit_test(test_allreduce_3_streams),
        cmocka_unit_test(test_sixteen_streams), cmocka_unit_test(test_security_modes),
        cmocka_unit_test(test_others_1),        cmocka_unit_test(test_others_4),
        cmocka_unit_test(test_state_3),
    };
    if (getenv("STARLING_TEST_LOG")) {
        starling_log_set_handler(starling_log_stderr, NULL);
        starling_log_set_level(STARLING_LOG_DEBUG);
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
