#include "auth/seal.h"

#include <sodium.h>
#include <string.h>

#include "platform/net.h"
#include "proto/msg.h"
#include "starling.h"
#include "util/config.h"

uint8_t starling__seal_caps(void)
{
    if (sodium_init() < 0)
        return 0;
    return crypto_aead_aes256gcm_is_available() ? STARLING_CAP_AESGCM : 0;
}

/* starling__security_names (util/config.h) is indexed by these wire values. */
typedef char sec_values_agree[STARLING_SEC_NONE == 0 && STARLING_SEC_AEAD == 1 &&
                                      STARLING_SEC_CHACHA == 2 && STARLING_SEC_MAX == 2
                                  ? 1
                                  : -1];

int starling__suite_pick(uint8_t sec_a, uint8_t caps_a, uint8_t sec_b, uint8_t caps_b)
{
    if (sec_a > STARLING_SEC_MAX || sec_b > STARLING_SEC_MAX)
        return -1;
    if (sec_a == STARLING_SEC_NONE || sec_b == STARLING_SEC_NONE)
        return sec_a == sec_b ? SUITE_NONE : -1;
    if (sec_a == STARLING_SEC_AEAD && sec_b == STARLING_SEC_AEAD &&
        (caps_a & caps_b & STARLING_CAP_AESGCM))
        return SUITE_AES256_GCM;
    return SUITE_CHACHA20_POLY1305;
}

const char *starling__suite_name(starling__suite s)
{
    switch (s) {
    case SUITE_NONE: return "none";
    case SUITE_CHACHA20_POLY1305: return "chacha20-poly1305";
    case SUITE_AES256_GCM: return "aes-256-gcm";
    }
    return "?";
}

const char *starling__sec_name(uint8_t sec)
{
    return sec <= STARLING_SEC_MAX ? starling__security_names[sec] : "?";
}

static void derive(uint8_t out[STARLING_SEAL_KEY], const uint8_t *run_key, char dir,
                   starling__suite suite, const uint8_t *cn, const uint8_t *sn)
{
    static const char label[] = "starling-v3-seal";
    crypto_generichash_state st;
    uint8_t b[2] = {(uint8_t)dir, (uint8_t)suite};
    crypto_generichash_init(&st, run_key, STARLING_SEAL_KEY, STARLING_SEAL_KEY);
    crypto_generichash_update(&st, (const uint8_t *)label, sizeof label);
    crypto_generichash_update(&st, b, sizeof b);
    crypto_generichash_update(&st, cn, STARLING_NONCE_LEN);
    crypto_generichash_update(&st, sn, STARLING_NONCE_LEN);
    crypto_generichash_final(&st, out, STARLING_SEAL_KEY);
}

void starling__seal_init(starling__seal *s, starling__suite suite, const uint8_t *run_key,
                         const uint8_t *client_nonce, const uint8_t *server_nonce, int client)
{
    memset(s, 0, sizeof *s);
    s->suite = suite;
    if (suite == SUITE_NONE)
        return;
    /* 'C': frames the client sends, 'S': frames the server sends. */
    derive(client ? s->tx_key : s->rx_key, run_key, 'C', suite, client_nonce, server_nonce);
    derive(client ? s->rx_key : s->tx_key, run_key, 'S', suite, client_nonce, server_nonce);
}

void starling__seal_wipe(starling__seal *s)
{
    if (s)
        sodium_memzero(s, sizeof *s);
}

size_t starling__seal_tag(const starling__seal *s)
{
    return s->suite == SUITE_NONE ? 0 : STARLING_SEAL_TAG;
}

/* The 96-bit nonce of frame number `ctr`: the counter little-endian, then zeros. Each
 * direction has its own key, so the counter alone never repeats under one key. */
static void nonce_of(uint64_t ctr, uint8_t n[12])
{
    for (int i = 0; i < 8; i++)
        n[i] = (uint8_t)(ctr >> (8 * i));
    n[8] = n[9] = n[10] = n[11] = 0;
}

void starling__seal_frame(starling__seal *s, const uint8_t *ad, size_t adn, const uint8_t *m,
                          size_t n, uint8_t *c, uint8_t tag[STARLING_SEAL_TAG])
{
    uint8_t nonce[12], empty[1] = {0};
    if (s->suite == SUITE_NONE) {
        if (c != m && n)
            memmove(c, m, n);
        return;
    }
    if (!c) { /* an empty payload (a DONE token): libsodium wants a pointer all the same */
        c = empty;
        m = empty;
    }
    nonce_of(s->ntx++, nonce);
    if (s->suite == SUITE_AES256_GCM)
        crypto_aead_aes256gcm_encrypt_detached(c, tag, NULL, m, n, ad, adn, NULL, nonce, s->tx_key);
    else
        crypto_aead_chacha20poly1305_ietf_encrypt_detached(c, tag, NULL, m, n, ad, adn, NULL, nonce,
                                                           s->tx_key);
}

int starling__seal_open(starling__seal *s, const uint8_t *ad, size_t adn, uint8_t *c, size_t n,
                        const uint8_t tag[STARLING_SEAL_TAG])
{
    uint8_t nonce[12], empty[1];
    int r;
    if (s->suite == SUITE_NONE)
        return STARLING_OK;
    nonce_of(s->nrx, nonce);
    if (!c) /* empty, as in starling__seal_frame */
        c = empty;
    if (s->suite == SUITE_AES256_GCM)
        r = crypto_aead_aes256gcm_decrypt_detached(c, NULL, c, n, tag, ad, adn, nonce, s->rx_key);
    else
        r = crypto_aead_chacha20poly1305_ietf_decrypt_detached(c, NULL, c, n, tag, ad, adn, nonce,
                                                               s->rx_key);
    if (r != 0)
        return STARLING_E_AUTH;
    s->nrx++;
    return STARLING_OK;
}

int starling__sealed_send_all(int fd, starling__seal *s, const uint8_t *buf, size_t n,
                              uint8_t *scratch, int64_t deadline_ms)
{
    uint8_t tag[STARLING_SEAL_TAG];
    int rc;
    if (s->suite == SUITE_NONE)
        return starling__sock_send_all(fd, buf, n, deadline_ms);
    starling__seal_frame(s, NULL, 0, buf, n, scratch, tag);
    if ((rc = starling__sock_send_all(fd, scratch, n, deadline_ms)))
        return rc;
    return starling__sock_send_all(fd, tag, sizeof tag, deadline_ms);
}

int starling__sealed_recv_all(int fd, starling__seal *s, uint8_t *buf, size_t n,
                              int64_t deadline_ms)
{
    uint8_t tag[STARLING_SEAL_TAG];
    int rc = starling__sock_recv_all(fd, buf, n, deadline_ms);
    if (rc || s->suite == SUITE_NONE)
        return rc;
    if ((rc = starling__sock_recv_all(fd, tag, sizeof tag, deadline_ms)))
        return rc;
    return starling__seal_open(s, NULL, 0, buf, n, tag);
}
