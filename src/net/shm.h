/* A ring link over shared memory, for two members on the same host.
 *
 * The link's TCP connection stays open beside it and carries only doorbells (one byte
 * 0x01: "I moved, look again") and the end of the connection: a member that dies closes
 * it, so a neighbour waiting on the segment learns of the death exactly as it would on
 * TCP, and a frozen one runs into the op's deadline. Nobody ever sleeps on a futex or a
 * slot of the segment: waiting is poll() on the socket.
 *
 * The segment is one memfd made by the member that dialled the connection, sized and
 * sealed against resizing (so the other side can never SIGBUS), and opened by the other
 * through /proc/<pid>/fd/<fd>; a 16-byte nonce sent over the authenticated connection and
 * written into the segment proves both mapped the same memory. It holds one byte ring,
 * written by the link's sending member and read by its receiving one: the frames are
 * those of a TCP link, byte for byte. See docs/architecture.md ("Shared memory").
 *
 * The header's counters come from the other process: every read of them is checked
 * (a ring that claims more than its capacity is refused as STARLING_E_PROTOCOL). */
#ifndef STARLING_NET_SHM_H
#define STARLING_NET_SHM_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "proto/msg.h" /* STARLING_SHM_RING_MIN / _MAX: what an offer may say */

#define STARLING_SHM_NONCE 16 /* = sizeof starling__msg_shm.nonce */

typedef struct starling__shm starling__shm;

/* An offer is the MSG_SHM_OFFER message itself (proto/msg.h, starling__msg_shm): pid and
 * fd say where the other side finds the segment (/proc/<pid>/fd/<fd>), size is its ring
 * (0: none could be made), nonce what its header must hold. */

/* This process's host tag under the 32-byte run key: a keyed hash of the boot id, the
 * network and PID namespaces and the effective user, so two members get the same tag
 * only if they could share a segment (and the tag says nothing across runs). 0 if one of
 * them cannot be read: such a member never offers shared memory. */
uint64_t starling__shm_host_tag(const uint8_t key[32]);

/* The dialling side: a segment with a ring of `ring` bytes (rounded up to a power of two
 * within [STARLING_SHM_RING_MIN, STARLING_SHM_RING_MAX]); `offer` describes it. `sender`:
 * this side writes the ring. STARLING_OK, or STARLING_E_OS / _NOMEM (then *out is NULL
 * and offer->size is 0: send the offer anyway). */
int starling__shm_create(size_t ring, int sender, starling__shm **out, starling__msg_shm *offer);
/* The other side: maps the offered segment and checks its nonce. STARLING_OK, or
 * STARLING_E_OS / _PROTOCOL with `why` (the two are not on one host after all, or the
 * offer is malformed): the link stays on TCP. */
int starling__shm_attach(const starling__msg_shm *offer, int sender, starling__shm **out, char *why,
                         size_t wl);
/* Drops the creator's descriptor once the other side has mapped the segment (or refused):
 * from then on the memory lives exactly as long as the two mappings. */
void starling__shm_release_fd(starling__shm *s);
void starling__shm_free(starling__shm *s);
size_t starling__shm_ring(const starling__shm *s);

/* Non-blocking I/O on the ring; `sock` is the link's connection. Both return bytes moved
 * (> 0), 0 when the ring is full (write) or empty (read) — then wait for POLLIN on
 * `sock` — or STARLING_E_PEER_LOST (the connection closed) / STARLING_E_PROTOCOL (the
 * counters or the doorbell bytes are garbage). */
ssize_t starling__shm_write(starling__shm *s, int sock, const struct iovec *iov, int niov);
ssize_t starling__shm_read(starling__shm *s, int sock, void *dst, size_t n);
/* Reading in place (the receiver reduces straight from the ring): if at least `min`
 * bytes are there, *p points at the next of them and the result is how many follow it
 * contiguously (fewer than `min` when the ring's end cuts them: read those with
 * starling__shm_read). 0 (wait as above) when fewer than `min` are there; errors as
 * above. The bytes stay put until starling__shm_consume(k) lets the writer reuse them. */
ssize_t starling__shm_peek(starling__shm *s, int sock, size_t min, const uint8_t **p);
void starling__shm_consume(starling__shm *s, int sock, size_t k);
/* Whether the other side has moved so that this side could: bytes to read (receiver) or
 * room to write (sender). No system call, no side effect: for spinning before a sleep. */
int starling__shm_ready(const starling__shm *s);
#endif
