/* Sealed frames: per-connection keys and per-frame AEAD on an authenticated connection.
 *
 * The handshake (auth/handshake.h) picks a suite from what both sides ask for and can do
 * (starling__suite_pick) and derives two keys from the run key and both sides' fresh
 * nonces, one per direction, so no two connections and no two directions share a key.
 * Every frame sent is then encrypted and authenticated under the next value of the
 * direction's frame counter (the nonce), with the frame's clear header as associated
 * data: a flipped, dropped, replayed, reordered or injected frame fails to open, and the
 * connection is closed. See docs/protocol.md ("Sealed frames").
 *
 * The suite "none" (security=none on both ends) seals nothing: tag length 0, frames pass
 * as they are. A starling__seal is used by one thread at a time. */
#ifndef STARLING_AUTH_SEAL_H
#define STARLING_AUTH_SEAL_H
#include <stddef.h>
#include <stdint.h>

#include "proto/msg.h"

#define STARLING_SEAL_TAG 16 /* bytes of authentication tag after a sealed frame */
#define STARLING_SEAL_KEY 32

/* The suite a connection uses. */
typedef enum starling__suite {
    SUITE_NONE = 0,
    SUITE_CHACHA20_POLY1305 = 1,
    SUITE_AES256_GCM = 2
} starling__suite;

typedef struct starling__seal {
    starling__suite suite;
    uint8_t tx_key[STARLING_SEAL_KEY], rx_key[STARLING_SEAL_KEY];
    uint64_t ntx, nrx; /* frames sealed and opened so far: the next nonces */
} starling__seal;

/* This side's caps byte (STARLING_CAP_AESGCM when libsodium finds AES-NI and CLMUL). */
uint8_t starling__seal_caps(void);
/* The suite both sides' (security, caps) give, or -1 if one side asks for none and the
 * other does not (a mismatch the handshake refuses). Symmetric in its two sides. */
int starling__suite_pick(uint8_t sec_a, uint8_t caps_a, uint8_t sec_b, uint8_t caps_b);
const char *starling__suite_name(starling__suite s);
/* The name of a security mode ("none", "aead", "chacha20"), or "?" */
const char *starling__sec_name(uint8_t sec);

/* Derives the connection's two keys from the 32-byte run key and both nonces; `client`
 * says which end this is (its tx key is the other end's rx key). Counters start at 0. */
void starling__seal_init(starling__seal *s, starling__suite suite, const uint8_t *run_key,
                         const uint8_t *client_nonce, const uint8_t *server_nonce, int client);
void starling__seal_wipe(starling__seal *s);
/* Tag bytes per frame: 0 for SUITE_NONE, else STARLING_SEAL_TAG. */
size_t starling__seal_tag(const starling__seal *s);

/* Encrypts m[0..n) into c (c == m allowed), authenticating ad[0..adn) too, and writes the
 * tag; uses and advances the send counter. A no-op for SUITE_NONE (c gets m's bytes). */
void starling__seal_frame(starling__seal *s, const uint8_t *ad, size_t adn, const uint8_t *m,
                          size_t n, uint8_t *c, uint8_t tag[STARLING_SEAL_TAG]);
/* Decrypts c[0..n) in place after checking the tag over ad and c under the receive
 * counter, which advances on success. STARLING_E_AUTH if the frame is not the next one
 * the other end sealed (tampered, forged, replayed, reordered or dropped before it); the
 * buffer's bytes are then undefined (libsodium zeroes them) and the counter stays. */
int starling__seal_open(starling__seal *s, const uint8_t *ad, size_t adn, uint8_t *c, size_t n,
                        const uint8_t tag[STARLING_SEAL_TAG]);

/* Blocking records for the probe exchange: n bytes sealed (no clear header: both ends
 * know n), then the tag. `scratch` holds at least n bytes. */
int starling__sealed_send_all(int fd, starling__seal *s, const uint8_t *buf, size_t n,
                              uint8_t *scratch, int64_t deadline_ms);
int starling__sealed_recv_all(int fd, starling__seal *s, uint8_t *buf, size_t n,
                              int64_t deadline_ms);
#endif
