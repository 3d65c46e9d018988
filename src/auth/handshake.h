/* Connection handshake: both sides prove knowledge of the run's secret without sending
 * it (HMAC-SHA-256 over fresh nonces, key derived from secret and run name), and the
 * protocol version is checked first. Blocking, with a deadline: used by the connecting
 * side and by the accepting threads, never by an event loop. */
#ifndef STARLING_AUTH_HANDSHAKE_H
#define STARLING_AUTH_HANDSHAKE_H
#include <stddef.h>
#include <stdint.h>

#include "auth/seal.h"
#include "proto/msg.h"

#define STARLING_KEY_LEN 32

typedef struct starling__key {
    uint8_t k[STARLING_KEY_LEN];
    char run[STARLING_NAME_MAX];
    uint8_t security; /* what this side asks of every connection: STARLING_SEC_* */
    uint64_t host;    /* the host tag it sends (net/shm.h); 0: it shares no memory */
} starling__key;

/* Derives the MAC key from (secret, run); security is STARLING_SEC_AEAD (set it after). Returns
 * STARLING_E_INVALID on an empty secret or a run name that is empty, too long or holds control
 * characters. */
int starling__key_derive(starling__key *key, const char *run, const void *secret,
                         size_t secret_len);
void starling__key_wipe(starling__key *key);
/* Random 64-bit nonzero identifier. */
uint64_t starling__random_id(void);

/* Client side. `hello` has role, peer_id, epoch, stream, nstreams set; magic, version,
 * nonce, run, security, caps and host are filled in here, and peer_host on success (the
 * server's host tag). On success `seal` holds the
 * connection's suite and keys (auth/seal.h): every later frame goes through it. Errors:
 * STARLING_E_AUTH (wrong secret either way, unknown run, or security modes that do not
 * agree: one side none, the other not), STARLING_E_VERSION, STARLING_E_TIMEOUT,
 * STARLING_E_PROTOCOL, STARLING_E_CLOSED, STARLING_E_OS. `why` (may be NULL, 128 bytes)
 * gets the reason. */
int starling__handshake_client(int fd, const starling__key *key, starling__msg_hello *hello,
                               starling__seal *seal, int64_t deadline_ms, char *why,
                               size_t why_len);

/* Server side: reads the HELLO, checks version, run, security and proof; on failure
 * sends a REJECT with the reason (best effort) and returns the error; `why` gets the
 * reason for the log. On success `seal` is set as on the client side. */
int starling__handshake_server(int fd, const starling__key *key, starling__msg_hello *hello,
                               starling__seal *seal, int64_t deadline_ms, char *why,
                               size_t why_len);

/* Reads one whole control frame (header + payload <= cap) with a deadline, and opens it
 * with `seal` (NULL: the handshake's own frames, which are never sealed). STARLING_E_AUTH
 * if it fails to open. */
int starling__frame_recv(int fd, starling__seal *seal, starling__frame_hdr *h, uint8_t *payload,
                         size_t cap, int64_t deadline_ms);
/* Sends one whole control frame (header + payload, n bytes) sealed with `seal`, with a
 * deadline. The payload is encrypted in place: `frame` holds ciphertext afterwards. */
int starling__frame_send(int fd, starling__seal *seal, uint8_t *frame, size_t n,
                         int64_t deadline_ms);
#endif
