/* Shared-memory ring links: see shm.h. */
#define _GNU_SOURCE /* memfd_create, F_ADD_SEALS */
#include "net/shm.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "starling.h"
#include "util/alloc.h"

#define SHM_MAGIC "STRLSHM1"
#define SHM_DATA_OFF 4096 /* the ring starts on the second page */
#define DOORBELL 0x01

/* The segment's first page. Each counter and flag has its own cache line: the sender
 * writes head, the receiver tail; both write the two wait flags. */
typedef struct shm_hdr {
    char magic[8];
    uint8_t nonce[STARLING_SHM_NONCE];
    uint64_t ring;
    char pad0[32];
    uint64_t head; /* bytes written, ever (sender) */
    char pad1[56];
    uint64_t tail; /* bytes read, ever (receiver) */
    char pad2[56];
    int rx_wait; /* the receiver found the ring empty and sleeps: ring the doorbell */
    char pad3[60];
    int tx_wait; /* the sender found it full and sleeps */
    char pad4[60];
} shm_hdr;

struct starling__shm {
    int fd; /* the creator's memfd until the other side has mapped it; else -1 */
    uint8_t *map;
    size_t map_len, ring;
    shm_hdr *h;
    uint8_t *data;
    uint64_t pos; /* this side's own count (head for the sender, tail for the receiver) */
    int sender;
};

static int ino_of(const char *path, uint64_t out[2])
{
    struct stat st;
    if (stat(path, &st) != 0)
        return -1;
    out[0] = (uint64_t)st.st_dev;
    out[1] = (uint64_t)st.st_ino;
    return 0;
}

uint64_t starling__shm_host_tag(const uint8_t key[32])
{
    static const char label[] = "starling-host-v1";
    crypto_generichash_state st;
    char boot[64];
    uint64_t ns[4], euid = (uint64_t)geteuid(), tag = 0;
    uint8_t out[8];
    size_t nb;
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (!f)
        return 0;
    nb = fread(boot, 1, sizeof boot, f);
    fclose(f);
    if (nb < 32 || ino_of("/proc/self/ns/net", ns) || ino_of("/proc/self/ns/pid", ns + 2) ||
        sodium_init() < 0)
        return 0;
    crypto_generichash_init(&st, key, 32, sizeof out);
    crypto_generichash_update(&st, (const uint8_t *)label, sizeof label);
    crypto_generichash_update(&st, (const uint8_t *)boot, nb);
    crypto_generichash_update(&st, (const uint8_t *)ns, sizeof ns);
    crypto_generichash_update(&st, (const uint8_t *)&euid, sizeof euid);
    crypto_generichash_final(&st, out, sizeof out);
    for (int i = 0; i < 8; i++)
        tag |= (uint64_t)out[i] << (8 * i);
    return tag ? tag : 1;
}

static size_t ring_size(size_t want)
{
    size_t r = STARLING_SHM_RING_MIN;
    while (r < want && r < STARLING_SHM_RING_MAX)
        r <<= 1;
    return r;
}

static starling__shm *wrap(int fd, uint8_t *map, size_t ring, int sender)
{
    starling__shm *s = starling__calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->fd = fd;
    s->map = map;
    s->map_len = SHM_DATA_OFF + ring;
    s->ring = ring;
    s->h = (shm_hdr *)map;
    s->data = map + SHM_DATA_OFF;
    s->sender = sender;
    return s;
}

int starling__shm_create(size_t ring, int sender, starling__shm **out, starling__msg_shm *offer)
{
    int fd;
    uint8_t *map;
    shm_hdr *h;
    *out = NULL;
    memset(offer, 0, sizeof *offer);
    ring = ring_size(ring);
    fd = memfd_create("starling-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return STARLING_E_OS;
    if (ftruncate(fd, (off_t)(SHM_DATA_OFF + ring)) != 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        close(fd);
        return STARLING_E_OS;
    }
    map = mmap(NULL, SHM_DATA_OFF + ring, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        close(fd);
        return STARLING_E_OS;
    }
    h = (shm_hdr *)map;
    randombytes_buf(offer->nonce, sizeof offer->nonce);
    memcpy(h->magic, SHM_MAGIC, sizeof h->magic);
    memcpy(h->nonce, offer->nonce, sizeof h->nonce);
    h->ring = ring;
    if (!(*out = wrap(fd, map, ring, sender))) {
        munmap(map, SHM_DATA_OFF + ring);
        close(fd);
        memset(offer, 0, sizeof *offer);
        return STARLING_E_NOMEM;
    }
    offer->pid = (uint32_t)getpid();
    offer->fd = (uint32_t)fd;
    offer->size = ring;
    return STARLING_OK;
}

int starling__shm_attach(const starling__msg_shm *offer, int sender, starling__shm **out, char *why,
                         size_t wl)
{
    char path[64], target[64];
    struct stat st;
    uint8_t *map;
    const shm_hdr *h;
    ssize_t n;
    int fd, seals;
    *out = NULL;
    if (offer->size < STARLING_SHM_RING_MIN || offer->size > STARLING_SHM_RING_MAX ||
        (offer->size & (offer->size - 1)) || offer->pid == 0) {
        snprintf(why, wl, "malformed shared-memory offer (ring of %llu bytes)",
                 (unsigned long long)offer->size);
        return STARLING_E_PROTOCOL;
    }
    snprintf(path, sizeof path, "/proc/%u/fd/%u", (unsigned)offer->pid, (unsigned)offer->fd);
    /* Only a memfd of ours is opened: whoever knows the run's secret can name any
     * descriptor here, and opening a device or a FIFO can have effects of its own. */
    n = readlink(path, target, sizeof target - 1);
    if (n < 0 || (target[n] = '\0', strncmp(target, "/memfd:starling-ring", 20) != 0) ||
        stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(why, wl, "%s is not a starling shared-memory segment", path);
        return n < 0 ? STARLING_E_OS : STARLING_E_PROTOCOL;
    }
    fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        snprintf(why, wl, "cannot open the neighbour's segment %s: %s", path, strerror(errno));
        return STARLING_E_OS;
    }
    /* Only a segment that can never shrink is safe to map: a shorter one would raise
     * SIGBUS here on the first touch past its end. */
    seals = fcntl(fd, F_GET_SEALS);
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size != SHM_DATA_OFF + offer->size || seals < 0 ||
        !(seals & F_SEAL_SHRINK)) {
        snprintf(why, wl, "%s is not a sealed segment of the offered size", path);
        close(fd);
        return STARLING_E_PROTOCOL;
    }
    map = mmap(NULL, SHM_DATA_OFF + offer->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        snprintf(why, wl, "cannot map the neighbour's segment: %s", strerror(errno));
        return STARLING_E_OS;
    }
    h = (const shm_hdr *)map;
    if (memcmp(h->magic, SHM_MAGIC, sizeof h->magic) != 0 ||
        sodium_memcmp(h->nonce, offer->nonce, sizeof h->nonce) != 0 || h->ring != offer->size) {
        snprintf(why, wl, "%s is not the neighbour's segment (another process's descriptor)",
                 path);
        munmap(map, SHM_DATA_OFF + offer->size);
        return STARLING_E_PROTOCOL;
    }
    if (!(*out = wrap(-1, map, offer->size, sender))) {
        munmap(map, SHM_DATA_OFF + offer->size);
        return STARLING_E_NOMEM;
    }
    return STARLING_OK;
}

void starling__shm_release_fd(starling__shm *s)
{
    if (s && s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
}

void starling__shm_free(starling__shm *s)
{
    if (!s)
        return;
    starling__shm_release_fd(s);
    munmap(s->map, s->map_len);
    starling__free(s);
}

size_t starling__shm_ring(const starling__shm *s) { return s->ring; }

static void doorbell(int sock)
{
    static const uint8_t b = DOORBELL;
    ssize_t r;
    do {
        r = send(sock, &b, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (r < 0 && errno == EINTR);
    /* A full socket already holds doorbells the other side has not read; a closed one
     * shows on this side's next wait. Neither needs more here. */
}

/* Before sleeping: the doorbells that came meanwhile are stale (the ring was just
 * looked at); EOF is the neighbour gone. */
static int drain(int sock)
{
    uint8_t b[64];
    for (;;) {
        ssize_t r = recv(sock, b, sizeof b, MSG_DONTWAIT);
        if (r > 0) {
            for (ssize_t i = 0; i < r; i++)
                if (b[i] != DOORBELL)
                    return STARLING_E_PROTOCOL;
            continue;
        }
        if (r == 0)
            return STARLING_E_PEER_LOST;
        if (errno == EINTR)
            continue;
        return errno == EAGAIN || errno == EWOULDBLOCK ? STARLING_OK : STARLING_E_PEER_LOST;
    }
}

/* After moving a counter: wake the other side if it sleeps on it. The full fence pairs
 * with the one the other side makes between raising its flag and looking again, so one
 * of the two always sees the other (no lost wake-up). */
static void wake_other(int *flag, int sock)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(flag, __ATOMIC_RELAXED) && __atomic_exchange_n(flag, 0, __ATOMIC_ACQ_REL))
        doorbell(sock);
}

/* Raises this side's flag and says whether the other side's counter is still `seen`. */
static int still(int *flag, const uint64_t *counter, uint64_t seen)
{
    __atomic_store_n(flag, 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return __atomic_load_n(counter, __ATOMIC_ACQUIRE) == seen;
}

static void ring_copy_in(starling__shm *s, uint64_t at, const uint8_t *src, size_t n)
{
    size_t off = (size_t)(at & (s->ring - 1)), first = s->ring - off < n ? s->ring - off : n;
    if (n == 0)
        return; /* an empty iovec may carry a null base */
    memcpy(s->data + off, src, first);
    if (n > first)
        memcpy(s->data, src + first, n - first);
}

ssize_t starling__shm_write(starling__shm *s, int sock, const struct iovec *iov, int niov)
{
    for (;;) {
        uint64_t tail = __atomic_load_n(&s->h->tail, __ATOMIC_ACQUIRE), head = s->pos;
        size_t room, moved = 0;
        int rc;
        if (head - tail > s->ring)
            return STARLING_E_PROTOCOL; /* the reader claims bytes never written */
        room = s->ring - (size_t)(head - tail);
        for (int i = 0; i < niov && room > 0; i++) {
            size_t k = iov[i].iov_len < room ? iov[i].iov_len : room;
            ring_copy_in(s, head + moved, iov[i].iov_base, k);
            moved += k;
            room -= k;
        }
        if (moved > 0) {
            s->pos += moved;
            __atomic_store_n(&s->h->head, s->pos, __ATOMIC_RELEASE);
            wake_other(&s->h->rx_wait, sock);
            return (ssize_t)moved;
        }
        if (room > 0)
            return 0; /* nothing to write */
        if ((rc = drain(sock)))
            return rc;
        if (still(&s->h->tx_wait, &s->h->tail, tail))
            return 0;
    }
}

ssize_t starling__shm_peek(starling__shm *s, int sock, size_t min, const uint8_t **p)
{
    for (;;) {
        uint64_t head = __atomic_load_n(&s->h->head, __ATOMIC_ACQUIRE), tail = s->pos;
        size_t avail, off = (size_t)(tail & (s->ring - 1));
        int rc;
        if (head - tail > s->ring)
            return STARLING_E_PROTOCOL;
        avail = (size_t)(head - tail);
        if (avail >= min && avail > 0) {
            *p = s->data + off;
            return (ssize_t)(avail < s->ring - off ? avail : s->ring - off);
        }
        if ((rc = drain(sock))) {
            if (rc == STARLING_E_PEER_LOST &&
                __atomic_load_n(&s->h->head, __ATOMIC_ACQUIRE) != head)
                continue;
            return rc;
        }
        if (still(&s->h->rx_wait, &s->h->head, head))
            return 0;
    }
}

void starling__shm_consume(starling__shm *s, int sock, size_t k)
{
    s->pos += k;
    __atomic_store_n(&s->h->tail, s->pos, __ATOMIC_RELEASE);
    wake_other(&s->h->tx_wait, sock);
}

ssize_t starling__shm_read(starling__shm *s, int sock, void *dst, size_t n)
{
    const uint8_t *p;
    ssize_t r;
    size_t k;
    if (n == 0)
        return 0;
    if ((r = starling__shm_peek(s, sock, 1, &p)) <= 0)
        return r;
    k = (size_t)r < n ? (size_t)r : n; /* up to the ring's end; the caller reads on */
    memcpy(dst, p, k);
    starling__shm_consume(s, sock, k);
    return (ssize_t)k;
}

int starling__shm_ready(const starling__shm *s)
{
    if (s->sender)
        return s->pos - __atomic_load_n(&s->h->tail, __ATOMIC_ACQUIRE) < s->ring;
    return __atomic_load_n(&s->h->head, __ATOMIC_ACQUIRE) != s->pos;
}
