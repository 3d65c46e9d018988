/* Ring links between members on one host move their bytes through shared memory.
 *
 * Right after a data link's handshake both ends know both host tags (HELLO and CHALLENGE
 * carry them, under the handshake's proof). Only when the tags are equal and nonzero do
 * they talk about memory, so a link between hosts costs no extra round trip: the dialler
 * makes a segment and sends MSG_SHM_OFFER (sealed), the acceptor maps it, checks its nonce
 * and answers MSG_SHM_REPLY. On ok=1 both ends drop the link's seal (the frames go through
 * memory only the two processes map) and the ring carries the link's bytes; on ok=0 the
 * link stays what it was, a TCP stream sealed as usual. Both ends decide from the same two
 * frames, so they cannot disagree. Blocking, with the link's deadline: these run on the
 * dialling thread and on the acceptor's handshake threads, never on the engine. */
#include <stdio.h>
#include <string.h>

#include "core/internal.h"
#include "util/log.h"

static int same_host(const starling_comm *c, uint64_t other)
{
    return c->key.host != 0 && other == c->key.host;
}

static size_t ring_bytes(const starling_comm *c)
{
    return 4 * c->cfg.chunk_bytes; /* room for the pieces of a few steps in flight */
}

/* The dialling side of stream `h->stream`; `sender`: this side writes the ring (it
 * dialled its right neighbour). *out is the ring, or NULL for a TCP link. An error means
 * the connection itself failed. */
int starling__link_shm_dial(starling_comm *c, int fd, const starling__msg_hello *h,
                            starling__seal *seal, int sender, int64_t deadline,
                            starling__shm **out, char *why, size_t wl)
{
    uint8_t buf[STARLING_FRAME_HDR + 64];
    starling__msg_shm m;
    starling__frame_hdr fh;
    starling__shm *shm = NULL;
    int n, rc;
    *out = NULL;
    if (!same_host(c, h->peer_host))
        return STARLING_OK;
    if (starling__shm_create(ring_bytes(c), sender, &shm, &m) != STARLING_OK)
        SLOG_WARN("%s: cannot make a shared-memory segment; the link to a neighbour on this "
                  "host stays on TCP",
                  c->name);
    n = starling__shm_offer_encode(buf, sizeof buf, &m);
    if (n < 0 || (rc = starling__frame_send(fd, seal, buf, (size_t)n, deadline)) ||
        (rc = starling__frame_recv(fd, seal, &fh, buf, sizeof buf, deadline))) {
        starling__shm_free(shm);
        snprintf(why, wl, "shared-memory offer not answered");
        return n < 0 ? n : rc;
    }
    if (fh.type != MSG_SHM_REPLY || starling__shm_reply_decode(buf, fh.len, &m) ||
        (m.ok && !shm)) {
        starling__shm_free(shm);
        snprintf(why, wl, "malformed answer to the shared-memory offer");
        return STARLING_E_PROTOCOL;
    }
    if (!m.ok) {
        starling__shm_free(shm);
        return STARLING_OK;
    }
    starling__shm_release_fd(shm);
    starling__seal_wipe(seal);
    *out = shm;
    return STARLING_OK;
}

/* The accepting side, on its handshake thread. */
int starling__link_shm_accept(starling_comm *c, int fd, const starling__msg_hello *h,
                              starling__seal *seal, int sender, int64_t deadline,
                              starling__shm **out)
{
    uint8_t buf[STARLING_FRAME_HDR + 64];
    starling__msg_shm m;
    starling__frame_hdr fh;
    starling__shm *shm = NULL;
    char why[200] = "";
    int n, rc;
    *out = NULL;
    if (!same_host(c, h->host))
        return STARLING_OK;
    if ((rc = starling__frame_recv(fd, seal, &fh, buf, sizeof buf, deadline)))
        return rc;
    if (fh.type != MSG_SHM_OFFER || starling__shm_offer_decode(buf, fh.len, &m))
        return STARLING_E_PROTOCOL;
    if (m.size && starling__shm_attach(&m, sender, &shm, why, sizeof why) != STARLING_OK)
        SLOG_WARN("%s: a neighbour on this host offered shared memory that cannot be used "
                  "(%s); the link stays on TCP", c->name, why);
    memset(&m, 0, sizeof m);
    m.ok = shm != NULL;
    n = starling__shm_reply_encode(buf, sizeof buf, &m);
    if (n < 0 || (rc = starling__frame_send(fd, seal, buf, (size_t)n, deadline))) {
        starling__shm_free(shm);
        return n < 0 ? n : rc;
    }
    if (shm)
        starling__seal_wipe(seal);
    *out = shm;
    return STARLING_OK;
}
