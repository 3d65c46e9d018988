#include "auth/handshake.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "platform/net.h"
#include "starling.h"

static int sodium_ready(void)
{
    /* sodium_init is idempotent and thread-safe; it only fails without /dev/urandom. */
    return sodium_init() >= 0 ? STARLING_OK : STARLING_E_OS;
}

int starling__key_derive(starling__key *key, const char *run, const void *secret,
                         size_t secret_len)
{
    static const char label[] = "starling-v1-key";
    crypto_generichash_state st;
    uint8_t skey[crypto_generichash_KEYBYTES];
    size_t rlen;

    if (!key || !run || !secret || secret_len == 0 || sodium_ready())
        return STARLING_E_INVALID;
    rlen = strlen(run);
    if (rlen == 0 || rlen >= STARLING_NAME_MAX)
        return STARLING_E_INVALID;
    for (size_t i = 0; i < rlen; i++)
        if ((unsigned char)run[i] < 0x20 || run[i] == 0x7f)
            return STARLING_E_INVALID;
    /* A secret of any length becomes a fixed-size BLAKE2b key first. */
    crypto_generichash(skey, sizeof skey, secret, secret_len, NULL, 0);
    crypto_generichash_init(&st, skey, sizeof skey, STARLING_KEY_LEN);
    crypto_generichash_update(&st, (const uint8_t *)label, sizeof label);
    crypto_generichash_update(&st, (const uint8_t *)run, rlen);
    crypto_generichash_final(&st, key->k, STARLING_KEY_LEN);
    sodium_memzero(skey, sizeof skey);
    memcpy(key->run, run, rlen + 1);
    key->security = STARLING_SEC_AEAD;
    key->host = 0;
    return STARLING_OK;
}

void starling__key_wipe(starling__key *key)
{
    if (key)
        sodium_memzero(key, sizeof *key);
}

uint64_t starling__random_id(void)
{
    uint64_t id = 0;
    sodium_ready();
    while (id == 0)
        randombytes_buf(&id, sizeof id);
    return id;
}

/* MAC binds the direction, both nonces, the claimed identity of the client and what
 * both sides asked for and can do (so an attacker on the path cannot talk either side
 * down to no encryption or a weaker suite). */
static void proof(const starling__key *key, char who, const uint8_t *n1, const uint8_t *n2,
                  const starling__msg_hello *h, const starling__msg_challenge *ch,
                  uint8_t out[STARLING_MAC_LEN])
{
    crypto_auth_hmacsha256_state st;
    uint8_t ident[8 + 8 + 3 + 4 + 16];
    for (int i = 0; i < 8; i++) {
        ident[i] = (uint8_t)(h->peer_id >> (8 * i));
        ident[8 + i] = (uint8_t)(h->epoch >> (8 * i));
        ident[23 + i] = (uint8_t)(h->host >> (8 * i));
        ident[31 + i] = (uint8_t)(ch->host >> (8 * i));
    }
    ident[16] = h->role;
    ident[17] = h->stream;
    ident[18] = h->nstreams;
    ident[19] = h->security;
    ident[20] = h->caps;
    ident[21] = ch->security;
    ident[22] = ch->caps;
    crypto_auth_hmacsha256_init(&st, key->k, STARLING_KEY_LEN);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)&who, 1);
    crypto_auth_hmacsha256_update(&st, n1, STARLING_NONCE_LEN);
    crypto_auth_hmacsha256_update(&st, n2, STARLING_NONCE_LEN);
    crypto_auth_hmacsha256_update(&st, ident, sizeof ident);
    crypto_auth_hmacsha256_final(&st, out);
}

static void set_why(char *why, size_t len, const char *s)
{
    if (why && len)
        snprintf(why, len, "%s", s);
}

int starling__frame_recv(int fd, starling__seal *seal, starling__frame_hdr *h, uint8_t *payload,
                         size_t cap, int64_t deadline_ms)
{
    uint8_t hdr[STARLING_FRAME_HDR], tag[STARLING_SEAL_TAG];
    int r = starling__sock_recv_all(fd, hdr, sizeof hdr, deadline_ms);
    if (r)
        return r;
    if (starling__frame_hdr_decode(hdr, 0, h) || h->type == MSG_DATA || h->len > cap)
        return STARLING_E_PROTOCOL;
    if ((r = starling__sock_recv_all(fd, payload, h->len, deadline_ms)))
        return r;
    if (!seal || seal->suite == SUITE_NONE)
        return STARLING_OK;
    if ((r = starling__sock_recv_all(fd, tag, sizeof tag, deadline_ms)))
        return r;
    return starling__seal_open(seal, hdr, sizeof hdr, payload, h->len, tag);
}

int starling__frame_send(int fd, starling__seal *seal, uint8_t *frame, size_t n,
                         int64_t deadline_ms)
{
    uint8_t tag[STARLING_SEAL_TAG];
    int r;
    if (n < STARLING_FRAME_HDR)
        return STARLING_E_INVALID;
    if (seal->suite == SUITE_NONE)
        return starling__sock_send_all(fd, frame, n, deadline_ms);
    starling__seal_frame(seal, frame, STARLING_FRAME_HDR, frame + STARLING_FRAME_HDR,
                         n - STARLING_FRAME_HDR, frame + STARLING_FRAME_HDR, tag);
    if ((r = starling__sock_send_all(fd, frame, n, deadline_ms)))
        return r;
    return starling__sock_send_all(fd, tag, sizeof tag, deadline_ms);
}

static void send_reject(int fd, int code, const char *reason, int64_t deadline_ms)
{
    starling__msg_reject rj;
    uint8_t buf[STARLING_FRAME_HDR + 4 + 1 + STARLING_REASON_MAX];
    int n;
    rj.code = code;
    snprintf(rj.reason, sizeof rj.reason, "%s", reason);
    n = starling__reject_encode(buf, sizeof buf, &rj);
    if (n > 0)
        starling__sock_send_all(fd, buf, (size_t)n, deadline_ms);
}

/* The server's refusal: its code (never STARLING_OK: the decoder refuses 0) and reason. */
static int rejected(const uint8_t *payload, size_t len, char *why, size_t why_len)
{
    starling__msg_reject rj;
    if (starling__reject_decode(payload, len, &rj))
        return STARLING_E_PROTOCOL;
    set_why(why, why_len, rj.reason);
    return rj.code;
}

/* "security mismatch: ..." for the side whose mode is `mine`. */
static void mismatch_why(char *why, size_t len, uint8_t mine, uint8_t theirs)
{
    if (why && len)
        snprintf(why, len,
                 "security mismatch: this side has security=%s, the other side security=%s "
                 "(both ends of a run must agree)",
                 starling__sec_name(mine), starling__sec_name(theirs));
}

int starling__handshake_client(int fd, const starling__key *key, starling__msg_hello *hello,
                               starling__seal *seal, int64_t deadline_ms, char *why, size_t why_len)
{
    uint8_t buf[512], expect[STARLING_MAC_LEN];
    starling__frame_hdr h;
    starling__msg_challenge ch;
    starling__msg_auth au;
    int n, r, suite;

    if (sodium_ready())
        return STARLING_E_OS;
    hello->magic = STARLING_MAGIC;
    hello->version = STARLING_PROTOCOL_VERSION;
    randombytes_buf(hello->nonce, STARLING_NONCE_LEN);
    memcpy(hello->run, key->run, sizeof hello->run);
    hello->security = key->security;
    hello->caps = starling__seal_caps();
    hello->host = key->host;
    hello->peer_host = 0;
    n = starling__hello_encode(buf, sizeof buf, hello);
    if (n < 0)
        return n;
    if ((r = starling__sock_send_all(fd, buf, (size_t)n, deadline_ms)))
        return r;
    if ((r = starling__frame_recv(fd, NULL, &h, buf, sizeof buf, deadline_ms)))
        return r;
    if (h.type == MSG_REJECT)
        return rejected(buf, h.len, why, why_len);
    if (h.type != MSG_CHALLENGE || starling__challenge_decode(buf, h.len, &ch))
        return STARLING_E_PROTOCOL;
    proof(key, 'S', hello->nonce, ch.nonce, hello, &ch, expect);
    if (crypto_verify_32(expect, ch.mac) != 0) {
        set_why(why, why_len, "the other side does not know the run's secret");
        return STARLING_E_AUTH;
    }
    suite = starling__suite_pick(hello->security, hello->caps, ch.security, ch.caps);
    if (suite < 0) {
        mismatch_why(why, why_len, hello->security, ch.security);
        return STARLING_E_AUTH;
    }
    proof(key, 'C', ch.nonce, hello->nonce, hello, &ch, au.mac);
    n = starling__auth_encode(buf, sizeof buf, &au);
    if ((r = starling__sock_send_all(fd, buf, (size_t)n, deadline_ms)))
        return r;
    if ((r = starling__frame_recv(fd, NULL, &h, buf, sizeof buf, deadline_ms)))
        return r;
    if (h.type == MSG_REJECT)
        return rejected(buf, h.len, why, why_len);
    if (h.type != MSG_ACCEPT || h.len != 0)
        return STARLING_E_PROTOCOL;
    starling__seal_init(seal, (starling__suite)suite, key->k, hello->nonce, ch.nonce, 1);
    hello->peer_host = ch.host;
    return STARLING_OK;
}

int starling__handshake_server(int fd, const starling__key *key, starling__msg_hello *hello,
                               starling__seal *seal, int64_t deadline_ms, char *why, size_t why_len)
{
    uint8_t buf[512], expect[STARLING_MAC_LEN];
    starling__frame_hdr h;
    starling__msg_challenge ch;
    starling__msg_auth au;
    starling__msg_epoch none;
    int n, r, suite;

    if (sodium_ready())
        return STARLING_E_OS;
    if ((r = starling__frame_recv(fd, NULL, &h, buf, sizeof buf, deadline_ms))) {
        set_why(why, why_len, r == STARLING_E_PROTOCOL ? "malformed first frame"
                                                       : "no hello before the deadline");
        return r;
    }
    if (h.type != MSG_HELLO) {
        set_why(why, why_len, "first frame is not a hello");
        return STARLING_E_PROTOCOL;
    }
    r = starling__hello_decode(buf, h.len, hello);
    if (r == STARLING_E_VERSION) {
        char msg[STARLING_REASON_MAX];
        snprintf(msg, sizeof msg, "protocol version %u refused: this side speaks %d",
                 (unsigned)hello->version, STARLING_PROTOCOL_VERSION);
        set_why(why, why_len, msg);
        send_reject(fd, STARLING_E_VERSION, msg, deadline_ms);
        return r;
    }
    if (r) {
        set_why(why, why_len, "malformed hello");
        return r;
    }
    if (strcmp(hello->run, key->run) != 0) {
        set_why(why, why_len, "unknown run name");
        send_reject(fd, STARLING_E_AUTH, "unknown run name", deadline_ms);
        return STARLING_E_AUTH;
    }
    ch.security = key->security;
    ch.caps = starling__seal_caps();
    ch.host = key->host;
    suite = starling__suite_pick(hello->security, hello->caps, ch.security, ch.caps);
    if (suite < 0) {
        char msg[STARLING_REASON_MAX];
        /* The reason the client reads is from its own side: its mode first. */
        mismatch_why(msg, sizeof msg, hello->security, ch.security);
        send_reject(fd, STARLING_E_AUTH, msg, deadline_ms);
        mismatch_why(why, why_len, ch.security, hello->security);
        return STARLING_E_AUTH;
    }
    randombytes_buf(ch.nonce, STARLING_NONCE_LEN);
    proof(key, 'S', hello->nonce, ch.nonce, hello, &ch, ch.mac);
    n = starling__challenge_encode(buf, sizeof buf, &ch);
    if ((r = starling__sock_send_all(fd, buf, (size_t)n, deadline_ms)))
        return r;
    if ((r = starling__frame_recv(fd, NULL, &h, buf, sizeof buf, deadline_ms))) {
        set_why(why, why_len, r == STARLING_E_TIMEOUT ? "no proof before the deadline"
                                                      : "connection closed before the proof");
        return r;
    }
    if (h.type != MSG_AUTH || starling__auth_decode(buf, h.len, &au)) {
        set_why(why, why_len, "malformed proof");
        return STARLING_E_PROTOCOL;
    }
    proof(key, 'C', ch.nonce, hello->nonce, hello, &ch, expect);
    if (crypto_verify_32(expect, au.mac) != 0) {
        set_why(why, why_len, "wrong secret");
        send_reject(fd, STARLING_E_AUTH, "wrong secret", deadline_ms);
        return STARLING_E_AUTH;
    }
    memset(&none, 0, sizeof none);
    n = starling__epoch_encode(buf, sizeof buf, MSG_ACCEPT, &none);
    if ((r = starling__sock_send_all(fd, buf, (size_t)n, deadline_ms)))
        return r;
    starling__seal_init(seal, (starling__suite)suite, key->k, hello->nonce, ch.nonce, 0);
    return STARLING_OK;
}
