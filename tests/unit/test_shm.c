/* The shared-memory ring link (src/net/shm.c) in one process: a segment made and then
 * mapped a second time through /proc/self/fd, as a neighbour on the same host does, with a
 * socketpair standing for the link's TCP connection.
 *
 * - bytes go through in order, across the ring's end, in pieces of any size;
 * - a full ring takes nothing and an empty one gives nothing (0), and the side that found
 *   it so is woken by exactly one doorbell byte when the other side moves;
 * - a neighbour gone (its socket closed) is PEER_LOST once what it wrote has been read;
 * - counters that claim more than the ring holds, a doorbell byte other than 0x01, and
 *   offers that do not describe a sealed segment with the right nonce are refused;
 * - the host tag is nonzero, stable, and depends on the run key. */
#define _GNU_SOURCE /* memfd_create for the unsealed-segment case */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/shm.h"
#include "starling.h"

typedef struct pair {
    starling__shm *tx, *rx;
    int sock[2]; /* [0]: the sender's end, [1]: the receiver's */
} pair;

static void make_pair(pair *p, size_t ring)
{
    starling__msg_shm off;
    char why[200];
    assert_int_equal(starling__shm_create(ring, 1, &p->tx, &off), STARLING_OK);
    assert_int_equal(off.pid, (uint32_t)getpid());
    assert_int_equal(starling__shm_attach(&off, 0, &p->rx, why, sizeof why), STARLING_OK);
    starling__shm_release_fd(p->tx);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, p->sock), 0);
}

static void free_pair(pair *p)
{
    starling__shm_free(p->tx);
    starling__shm_free(p->rx);
    if (p->sock[0] >= 0)
        close(p->sock[0]);
    if (p->sock[1] >= 0)
        close(p->sock[1]);
}

static ssize_t put(pair *p, const void *buf, size_t n)
{
    struct iovec iov = {(void *)buf, n};
    return starling__shm_write(p->tx, p->sock[0], &iov, 1);
}

/* Bytes waiting on socket `fd` (doorbells), without reading them. */
static int pending(int fd)
{
    struct pollfd pf = {fd, POLLIN, 0};
    return poll(&pf, 1, 0) == 1 && (pf.revents & POLLIN);
}

static void test_bytes_in_order_across_the_end(void **state)
{
    pair p;
    uint8_t *src = malloc(1 << 20), *dst = malloc(1 << 20);
    size_t sent = 0, got = 0, total = 1 << 20;
    (void)state;
    assert_non_null(src);
    assert_non_null(dst);
    for (size_t i = 0; i < total; i++)
        src[i] = (uint8_t)(i * 131 + (i >> 9));
    make_pair(&p, STARLING_SHM_RING_MIN);
    assert_int_equal(starling__shm_ring(p.tx), STARLING_SHM_RING_MIN);
    /* Odd piece sizes wrap the 64 KiB ring many times at ever different offsets. */
    while (got < total) {
        size_t w = total - sent < 7001 ? total - sent : 7001;
        ssize_t r;
        if (w) {
            /* Two iovecs, as a frame's header and payload. */
            struct iovec iov[2] = {{src + sent, w / 3}, {src + sent + w / 3, w - w / 3}};
            r = starling__shm_write(p.tx, p.sock[0], iov, 2);
            assert_true(r >= 0);
            sent += (size_t)r;
        }
        r = starling__shm_read(p.rx, p.sock[1], dst + got, 4999);
        assert_true(r >= 0);
        got += (size_t)r;
    }
    assert_memory_equal(src, dst, total);
    free_pair(&p);
    free(src);
    free(dst);
}

static void test_full_and_empty_wake_the_other_side(void **state)
{
    pair p;
    uint8_t buf[STARLING_SHM_RING_MIN], one;
    (void)state;
    memset(buf, 7, sizeof buf);
    make_pair(&p, STARLING_SHM_RING_MIN);

    /* Empty: nothing to read, and the reader asks to be woken. */
    assert_int_equal(starling__shm_read(p.rx, p.sock[1], buf, 10), 0);
    assert_false(pending(p.sock[1]));
    assert_int_equal(put(&p, "abc", 3), 3);
    assert_true(pending(p.sock[1])); /* one doorbell for the sleeping reader */
    assert_int_equal(recv(p.sock[1], &one, 1, 0), 1);
    assert_int_equal(one, 0x01);
    assert_int_equal(put(&p, "def", 3), 3);
    assert_false(pending(p.sock[1])); /* it did not sleep again: no second doorbell */
    assert_int_equal(starling__shm_read(p.rx, p.sock[1], buf, 10), 6);
    assert_memory_equal(buf, "abcdef", 6);

    /* Full: the writer gets what fits, then 0, and is woken once the reader makes room. */
    memset(buf, 7, sizeof buf);
    assert_int_equal(put(&p, buf, sizeof buf), sizeof buf);
    assert_int_equal(put(&p, buf, 1), 0);
    assert_false(pending(p.sock[0]));
    assert_int_equal(starling__shm_read(p.rx, p.sock[1], buf, 100), 100);
    assert_true(pending(p.sock[0]));
    assert_int_equal(put(&p, buf, 1000), 100); /* drains the doorbell, takes what fits */
    free_pair(&p);
}

static void test_gone_neighbour_after_its_last_bytes(void **state)
{
    pair p;
    uint8_t buf[16];
    (void)state;
    make_pair(&p, STARLING_SHM_RING_MIN);
    assert_int_equal(put(&p, "last", 4), 4);
    close(p.sock[0]);
    p.sock[0] = -1;
    assert_int_equal(starling__shm_read(p.rx, p.sock[1], buf, sizeof buf), 4);
    assert_memory_equal(buf, "last", 4);
    assert_int_equal(starling__shm_read(p.rx, p.sock[1], buf, sizeof buf), STARLING_E_PEER_LOST);
    free_pair(&p);
}

static void test_writer_sees_a_gone_reader(void **state)
{
    pair p;
    static uint8_t buf[STARLING_SHM_RING_MIN];
    (void)state;
    make_pair(&p, STARLING_SHM_RING_MIN);
    assert_int_equal(put(&p, buf, sizeof buf), sizeof buf);
    close(p.sock[1]);
    p.sock[1] = -1;
    assert_int_equal(put(&p, buf, 1), STARLING_E_PEER_LOST);
    free_pair(&p);
}

/* The counters live in memory the other process writes: a head more than a ring ahead
 * of what was read, or a tail ahead of what was written, is garbage. Here a third mapping
 * of the segment plays the other process: head and tail are the header's u64 at offsets
 * 64 and 128. */
static void test_garbage_counters_are_refused(void **state)
{
    starling__msg_shm off;
    pair p;
    char why[200], path[64];
    uint8_t buf[8], *map;
    uint64_t *head, *tail;
    int fd;
    (void)state;
    assert_int_equal(starling__shm_create(STARLING_SHM_RING_MIN, 1, &p.tx, &off), STARLING_OK);
    assert_int_equal(starling__shm_attach(&off, 0, &p.rx, why, sizeof why), STARLING_OK);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, p.sock), 0);
    snprintf(path, sizeof path, "/proc/self/fd/%u", (unsigned)off.fd);
    fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(map != MAP_FAILED);
    close(fd);
    head = (uint64_t *)(map + 64);
    tail = (uint64_t *)(map + 128);

    *head = STARLING_SHM_RING_MIN + 1;
    assert_int_equal(starling__shm_read(p.rx, p.sock[1], buf, sizeof buf), STARLING_E_PROTOCOL);
    *head = 0;
    *tail = 5;
    assert_int_equal(put(&p, "x", 1), STARLING_E_PROTOCOL);
    munmap(map, 4096);
    free_pair(&p);
}

static void test_bad_doorbell_is_refused(void **state)
{
    pair p;
    uint8_t buf[8], bad = 0x02;
    (void)state;
    make_pair(&p, STARLING_SHM_RING_MIN);
    assert_int_equal(send(p.sock[0], &bad, 1, 0), 1);
    assert_int_equal(starling__shm_read(p.rx, p.sock[1], buf, sizeof buf), STARLING_E_PROTOCOL);
    free_pair(&p);
}

static void test_offers_that_are_not_the_segment(void **state)
{
    starling__msg_shm off, bad;
    starling__shm *tx, *rx = NULL;
    char why[200];
    int fd;
    (void)state;
    assert_int_equal(starling__shm_create(1 << 20, 0, &tx, &off), STARLING_OK);
    assert_int_equal(off.size, 1u << 20);

    bad = off;
    bad.nonce[3] ^= 1; /* another segment's nonce: not the one the neighbour made */
    assert_int_equal(starling__shm_attach(&bad, 1, &rx, why, sizeof why), STARLING_E_PROTOCOL);
    assert_null(rx);
    bad = off;
    bad.size = off.size / 2; /* a size other than the segment's */
    assert_int_equal(starling__shm_attach(&bad, 1, &rx, why, sizeof why), STARLING_E_PROTOCOL);
    bad = off;
    bad.size = (1 << 20) + 4096; /* not a power of two */
    assert_int_equal(starling__shm_attach(&bad, 1, &rx, why, sizeof why), STARLING_E_PROTOCOL);
    bad = off;
    bad.pid = 0;
    assert_int_equal(starling__shm_attach(&bad, 1, &rx, why, sizeof why), STARLING_E_PROTOCOL);
    bad = off;
    bad.fd = 0; /* stdin: not a segment at all */
    assert_int_not_equal(starling__shm_attach(&bad, 1, &rx, why, sizeof why), STARLING_OK);
    bad = off;
    bad.fd = 1000000; /* no such descriptor */
    assert_int_equal(starling__shm_attach(&bad, 1, &rx, why, sizeof why), STARLING_E_OS);

    /* A segment that could still shrink is refused: mapping it would risk SIGBUS. */
    fd = memfd_create("starling-ring", MFD_CLOEXEC); /* the right name, but no seals */
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 4096 + (1 << 20)), 0);
    bad = off;
    bad.fd = (uint32_t)fd;
    assert_int_equal(starling__shm_attach(&bad, 1, &rx, why, sizeof why), STARLING_E_PROTOCOL);
    assert_non_null(strstr(why, "sealed"));
    close(fd);
    /* Any other descriptor is not even opened: another memfd, a pipe. */
    fd = memfd_create("other", MFD_CLOEXEC);
    assert_true(fd >= 0);
    bad = off;
    bad.fd = (uint32_t)fd;
    assert_int_equal(starling__shm_attach(&bad, 1, &rx, why, sizeof why), STARLING_E_PROTOCOL);
    assert_non_null(strstr(why, "not a starling shared-memory segment"));
    close(fd);

    assert_int_equal(starling__shm_attach(&off, 1, &rx, why, sizeof why), STARLING_OK);
    starling__shm_free(rx);
    starling__shm_free(tx);
}

static void test_host_tag(void **state)
{
    uint8_t k1[32] = {1}, k2[32] = {2};
    uint64_t a = starling__shm_host_tag(k1);
    (void)state;
    assert_true(a != 0);
    assert_true(a == starling__shm_host_tag(k1));
    assert_true(a != starling__shm_host_tag(k2));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes_in_order_across_the_end),
        cmocka_unit_test(test_full_and_empty_wake_the_other_side),
        cmocka_unit_test(test_gone_neighbour_after_its_last_bytes),
        cmocka_unit_test(test_writer_sees_a_gone_reader),
        cmocka_unit_test(test_garbage_counters_are_refused),
        cmocka_unit_test(test_bad_doorbell_is_refused),
        cmocka_unit_test(test_offers_that_are_not_the_segment),
        cmocka_unit_test(test_host_tag),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
