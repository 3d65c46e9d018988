/* Unit tests of sealed frames (src/auth/seal.c) and of the handshake that sets them up
 * (src/auth/handshake.c): the suite both sides' modes give, keys per direction and per
 * connection, and that a frame opens only once, in order, untouched. The handshake runs
 * for real over a socketpair, one side on a thread. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth/handshake.h"
#include "auth/seal.h"
#include "net/fconn.h"
#include "platform/clock.h"
#include "platform/net.h"
#include "starling.h"

static const uint8_t run_key[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9};

static void nonces(uint8_t cn[STARLING_NONCE_LEN], uint8_t sn[STARLING_NONCE_LEN], uint8_t salt)
{
    for (int i = 0; i < STARLING_NONCE_LEN; i++) {
        cn[i] = (uint8_t)(i + salt);
        sn[i] = (uint8_t)(0x80 + i + salt);
    }
}

/* A connection's two ends. */
static void pair(starling__suite suite, starling__seal *client, starling__seal *server,
                 uint8_t salt)
{
    uint8_t cn[STARLING_NONCE_LEN], sn[STARLING_NONCE_LEN];
    nonces(cn, sn, salt);
    starling__seal_init(client, suite, run_key, cn, sn, 1);
    starling__seal_init(server, suite, run_key, cn, sn, 0);
}

static void test_suite_pick(void **state)
{
    const uint8_t A = STARLING_CAP_AESGCM;
    (void)state;
    assert_int_equal(starling__suite_pick(STARLING_SEC_NONE, 0, STARLING_SEC_NONE, A), SUITE_NONE);
    assert_int_equal(starling__suite_pick(STARLING_SEC_AEAD, A, STARLING_SEC_AEAD, A),
                     SUITE_AES256_GCM);
    /* One CPU without AES-NI, or one side forcing ChaCha20: ChaCha20 for both. */
    assert_int_equal(starling__suite_pick(STARLING_SEC_AEAD, A, STARLING_SEC_AEAD, 0),
                     SUITE_CHACHA20_POLY1305);
    assert_int_equal(starling__suite_pick(STARLING_SEC_CHACHA, A, STARLING_SEC_AEAD, A),
                     SUITE_CHACHA20_POLY1305);
    /* "none" against an encrypting side is a mismatch, in either order. */
    assert_int_equal(starling__suite_pick(STARLING_SEC_NONE, 0, STARLING_SEC_AEAD, 0), -1);
    assert_int_equal(starling__suite_pick(STARLING_SEC_CHACHA, 0, STARLING_SEC_NONE, 0), -1);
    assert_int_equal(starling__suite_pick(STARLING_SEC_MAX + 1, 0, STARLING_SEC_AEAD, 0), -1);
    /* Symmetric. */
    for (uint8_t a = 0; a <= STARLING_SEC_MAX; a++)
        for (uint8_t b = 0; b <= STARLING_SEC_MAX; b++)
            for (uint8_t ca = 0; ca < 2; ca++)
                for (uint8_t cb = 0; cb < 2; cb++)
                    assert_int_equal(starling__suite_pick(a, ca, b, cb),
                                     starling__suite_pick(b, cb, a, ca));
}

/* What one end seals the other opens, both ways, for both ciphers; the ciphertext is
 * not the plaintext; in place works. */
static void round_trip(starling__suite suite)
{
    starling__seal c, s;
    uint8_t ad[32], msg[1000], ct[1000], tag[STARLING_SEAL_TAG];
    pair(suite, &c, &s, 0);
    assert_int_equal(starling__seal_tag(&c), STARLING_SEAL_TAG);
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (uint8_t)(i * 7);
    memset(ad, 0x5a, sizeof ad);
    for (int k = 0; k < 3; k++) {
        starling__seal_frame(&c, ad, sizeof ad, msg, sizeof msg, ct, tag);
        assert_memory_not_equal(ct, msg, sizeof msg);
        assert_int_equal(starling__seal_open(&s, ad, sizeof ad, ct, sizeof ct, tag), STARLING_OK);
        assert_memory_equal(ct, msg, sizeof msg);
        /* The other direction, sealed in place. */
        memcpy(ct, msg, sizeof msg);
        starling__seal_frame(&s, ad, sizeof ad, ct, sizeof ct, ct, tag);
        assert_int_equal(starling__seal_open(&c, ad, sizeof ad, ct, sizeof ct, tag), STARLING_OK);
        assert_memory_equal(ct, msg, sizeof msg);
    }
    /* An empty payload (a DONE token) still carries a tag over its header. */
    starling__seal_frame(&c, ad, sizeof ad, NULL, 0, NULL, tag);
    ad[3] ^= 1;
    assert_int_equal(starling__seal_open(&s, ad, sizeof ad, NULL, 0, tag), STARLING_E_AUTH);
    ad[3] ^= 1;
    assert_int_equal(starling__seal_open(&s, ad, sizeof ad, NULL, 0, tag), STARLING_OK);
    starling__seal_wipe(&c);
    starling__seal_wipe(&s);
}

static void test_round_trip_chacha(void **state)
{
    (void)state;
    round_trip(SUITE_CHACHA20_POLY1305);
}

static void test_round_trip_aes(void **state)
{
    (void)state;
    if (!(starling__seal_caps() & STARLING_CAP_AESGCM))
        skip(); /* no AES-NI here: the suite is never picked */
    round_trip(SUITE_AES256_GCM);
}

/* Every kind of tampering fails to open, and a failed open does not move the counter:
 * the genuine frame still opens afterwards. */
static void test_tampering_refused(void **state)
{
    starling__seal c, s;
    uint8_t ad[8] = {15, 0, 0, 0, 64, 0, 0, 0}, msg[64], ct[64], bad[64], tag[16], tag2[16];
    (void)state;
    pair(SUITE_CHACHA20_POLY1305, &c, &s, 1);
    memset(msg, 7, sizeof msg);
    starling__seal_frame(&c, ad, sizeof ad, msg, sizeof msg, ct, tag);
    for (size_t i = 0; i < sizeof ct; i += 9) { /* a flipped payload bit */
        memcpy(bad, ct, sizeof bad);
        bad[i] ^= 0x10;
        assert_int_equal(starling__seal_open(&s, ad, sizeof ad, bad, sizeof bad, tag),
                         STARLING_E_AUTH);
    }
    memcpy(tag2, tag, sizeof tag2); /* a flipped tag bit */
    tag2[15] ^= 1;
    memcpy(bad, ct, sizeof bad);
    assert_int_equal(starling__seal_open(&s, ad, sizeof ad, bad, sizeof bad, tag2),
                     STARLING_E_AUTH);
    ad[4] = 63; /* a changed header (the length) */
    memcpy(bad, ct, sizeof bad);
    assert_int_equal(starling__seal_open(&s, ad, sizeof ad, bad, sizeof bad, tag), STARLING_E_AUTH);
    ad[4] = 64;
    memcpy(bad, ct, sizeof bad); /* cut short */
    assert_int_equal(starling__seal_open(&s, ad, sizeof ad, bad, sizeof bad - 1, tag),
                     STARLING_E_AUTH);
    memcpy(bad, ct, sizeof bad); /* the genuine frame */
    assert_int_equal(starling__seal_open(&s, ad, sizeof ad, bad, sizeof bad, tag), STARLING_OK);
    /* Replayed: the same bytes again are not the next frame. */
    memcpy(bad, ct, sizeof bad);
    assert_int_equal(starling__seal_open(&s, ad, sizeof ad, bad, sizeof bad, tag), STARLING_E_AUTH);
    /* A frame sealed by the receiver's own end (reflected back) does not open either. */
    starling__seal_frame(&s, ad, sizeof ad, msg, sizeof msg, bad, tag2);
    assert_int_equal(starling__seal_open(&s, ad, sizeof ad, bad, sizeof bad, tag2),
                     STARLING_E_AUTH);
}

/* Frames opened out of order or with one dropped before them fail; another connection's
 * frames (other nonces) fail. */
static void test_order_and_connection_bound(void **state)
{
    starling__seal c, s, c2, s2;
    uint8_t m1[16] = {1}, m2[16] = {2}, cp[16], t1[16], t2[16];
    (void)state;
    pair(SUITE_CHACHA20_POLY1305, &c, &s, 2);
    pair(SUITE_CHACHA20_POLY1305, &c2, &s2, 3);
    starling__seal_frame(&c, NULL, 0, m1, sizeof m1, m1, t1);
    starling__seal_frame(&c, NULL, 0, m2, sizeof m2, m2, t2);
    /* A failed open leaves its buffer undefined (libsodium zeroes it): try on copies. */
    memcpy(cp, m2, sizeof cp);
    assert_int_equal(starling__seal_open(&s, NULL, 0, cp, sizeof cp, t2), STARLING_E_AUTH);
    memcpy(cp, m1, sizeof cp);
    assert_int_equal(starling__seal_open(&s2, NULL, 0, cp, sizeof cp, t1), STARLING_E_AUTH);
    assert_int_equal(starling__seal_open(&s, NULL, 0, m1, sizeof m1, t1), STARLING_OK);
    assert_int_equal(starling__seal_open(&s, NULL, 0, m2, sizeof m2, t2), STARLING_OK);
    assert_int_equal(m1[0], 1);
    assert_int_equal(m2[0], 2);
    /* Keys: one per direction, none shared between connections. */
    assert_memory_equal(c.tx_key, s.rx_key, STARLING_SEAL_KEY);
    assert_memory_equal(c.rx_key, s.tx_key, STARLING_SEAL_KEY);
    assert_memory_not_equal(c.tx_key, c.rx_key, STARLING_SEAL_KEY);
    assert_memory_not_equal(c.tx_key, c2.tx_key, STARLING_SEAL_KEY);
}

static void test_none_passes_through(void **state)
{
    starling__seal c, s;
    uint8_t m[8] = {1, 2, 3, 4, 5, 6, 7, 8}, out[8], tag[16] = {0};
    (void)state;
    pair(SUITE_NONE, &c, &s, 4);
    assert_int_equal(starling__seal_tag(&c), 0);
    starling__seal_frame(&c, NULL, 0, m, sizeof m, out, tag);
    assert_memory_equal(out, m, sizeof m);
    assert_int_equal(starling__seal_open(&s, NULL, 0, out, sizeof out, tag), STARLING_OK);
}

/* ---------------------------------------------------------------- the handshake */

typedef struct server_arg {
    int fd;
    starling__key key;
    starling__seal seal;
    int rc;
    char why[STARLING_REASON_MAX];
} server_arg;

static void *server_main(void *p)
{
    server_arg *a = p;
    starling__msg_hello h;
    memset(&h, 0, sizeof h);
    a->rc = starling__handshake_server(a->fd, &a->key, &h, &a->seal, starling__now_ms() + 5000,
                                       a->why, sizeof a->why);
    return NULL;
}

/* Runs a handshake between a client asking `csec` and a server asking `ssec`; returns the
 * client's result and leaves both sides' seals and messages in the out arguments. */
static int shake(uint8_t csec, uint8_t ssec, starling__seal *cseal, server_arg *srv, char *cwhy,
                 int *fds)
{
    starling__key key;
    starling__msg_hello h;
    pthread_t t;
    int rc;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
    assert_int_equal(starling__key_derive(&key, "run", "secret", 6), STARLING_OK);
    memset(srv, 0, sizeof *srv);
    srv->fd = fds[1];
    srv->key = key;
    srv->key.security = ssec;
    key.security = csec;
    assert_int_equal(pthread_create(&t, NULL, server_main, srv), 0);
    memset(&h, 0, sizeof h);
    h.role = ROLE_CONTROL;
    h.peer_id = 7;
    cwhy[0] = '\0';
    rc = starling__handshake_client(fds[0], &key, &h, cseal, starling__now_ms() + 5000, cwhy,
                                    STARLING_REASON_MAX);
    pthread_join(t, NULL);
    return rc;
}

static void test_handshake_agrees(void **state)
{
    starling__seal c;
    server_arg srv;
    char why[STARLING_REASON_MAX];
    int fds[2];
    (void)state;
    assert_int_equal(shake(STARLING_SEC_CHACHA, STARLING_SEC_AEAD, &c, &srv, why, fds),
                     STARLING_OK);
    assert_int_equal(srv.rc, STARLING_OK);
    assert_int_equal(c.suite, SUITE_CHACHA20_POLY1305);
    assert_int_equal(srv.seal.suite, SUITE_CHACHA20_POLY1305);
    assert_memory_equal(c.tx_key, srv.seal.rx_key, STARLING_SEAL_KEY);
    /* Sealed control frames across the pair: through fconn on one side, the blocking
     * helpers on the other. */
    {
        starling__fconn fc;
        starling__frame_hdr h;
        const uint8_t *payload;
        uint8_t frame[8 + 3], got[16];
        int n = 0;
        starling__fconn_init(&fc, fds[1], starling__now_ms(), &srv.seal);
        starling__frame_hdr_encode(frame, MSG_HEARTBEAT, 3);
        memcpy(frame + 8, "abc", 3);
        assert_int_equal(
            starling__frame_send(fds[0], &c, frame, sizeof frame, starling__now_ms() + 5000),
            STARLING_OK);
        for (int tries = 0; tries < 100 && n == 0; tries++) {
            assert_int_equal(starling__fconn_read(&fc, starling__now_ms()), STARLING_OK);
            n = starling__fconn_next(&fc, &h, &payload);
            if (n == 0)
                starling__sleep_ms(10);
        }
        assert_int_equal(n, 1);
        assert_int_equal(h.len, 3);
        assert_memory_equal(payload, "abc", 3);
        /* frame_send sealed the payload in place: put the plaintext back. */
        assert_memory_not_equal(frame + 8, "abc", 3);
        memcpy(frame + 8, "abc", 3);
        assert_int_equal(starling__fconn_queue(&fc, frame, sizeof frame), STARLING_OK);
        assert_memory_equal(frame + 8, "abc", 3); /* queue seals its own copy */
        assert_int_equal(starling__fconn_flush(&fc), STARLING_OK);
        assert_int_equal(
            starling__frame_recv(fds[0], &c, &h, got, sizeof got, starling__now_ms() + 5000),
            STARLING_OK);
        assert_int_equal(h.len, 3);
        assert_memory_equal(got, "abc", 3);
        starling__fconn_close(&fc); /* closes fds[1] */
    }
    close(fds[0]);
}

static void test_handshake_mismatch(void **state)
{
    starling__seal c;
    server_arg srv;
    char why[STARLING_REASON_MAX];
    int fds[2];
    (void)state;
    /* A client without encryption meets a server that requires it: both refuse, and each
     * message says which side has which mode. */
    assert_int_equal(shake(STARLING_SEC_NONE, STARLING_SEC_AEAD, &c, &srv, why, fds),
                     STARLING_E_AUTH);
    assert_int_equal(srv.rc, STARLING_E_AUTH);
    assert_non_null(strstr(why, "security mismatch: this side has security=none, the other "
                                "side security=aead"));
    assert_non_null(strstr(srv.why, "this side has security=aead, the other side security=none"));
    close(fds[0]);
    close(fds[1]);
    /* And the other way round. */
    assert_int_equal(shake(STARLING_SEC_CHACHA, STARLING_SEC_NONE, &c, &srv, why, fds),
                     STARLING_E_AUTH);
    assert_non_null(strstr(why, "this side has security=chacha20, the other side security=none"));
    close(fds[0]);
    close(fds[1]);
    /* Both none: agreed, nothing sealed. */
    assert_int_equal(shake(STARLING_SEC_NONE, STARLING_SEC_NONE, &c, &srv, why, fds), STARLING_OK);
    assert_int_equal(c.suite, SUITE_NONE);
    assert_int_equal(srv.seal.suite, SUITE_NONE);
    close(fds[0]);
    close(fds[1]);
}

/* The public setter: names in, anything else refused. */
static void test_config_security(void **state)
{
    starling_config *cfg;
    (void)state;
    assert_int_equal(starling_config_create(&cfg), STARLING_OK);
    assert_int_equal(starling_config_set_security(cfg, "none"), STARLING_OK);
    assert_int_equal(starling_config_set_security(cfg, "aead"), STARLING_OK);
    assert_int_equal(starling_config_set_security(cfg, "chacha20"), STARLING_OK);
    assert_int_equal(starling_config_set_security(cfg, "AEAD"), STARLING_E_INVALID);
    assert_int_equal(starling_config_set_security(cfg, ""), STARLING_E_INVALID);
    assert_int_equal(starling_config_set_security(cfg, NULL), STARLING_E_INVALID);
    assert_int_equal(starling_config_set_security(NULL, "none"), STARLING_E_INVALID);
    starling_config_destroy(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_suite_pick),
        cmocka_unit_test(test_round_trip_chacha),
        cmocka_unit_test(test_round_trip_aes),
        cmocka_unit_test(test_tampering_refused),
        cmocka_unit_test(test_order_and_connection_bound),
        cmocka_unit_test(test_none_passes_through),
        cmocka_unit_test(test_handshake_agrees),
        cmocka_unit_test(test_handshake_mismatch),
        cmocka_unit_test(test_config_security),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
