/* Unit tests of the bounds-checked little-endian reader and writer (src/proto/wire.c).
 * The contract under test: a writer never writes past its capacity and a reader never
 * reads past its length; either sets a sticky `err` instead, readers then return zeros,
 * and starling__r_finish refuses both an error and unread trailing bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proto/wire.h"
#include "starling.h"

#define GUARD 0xa5

/* ---------------------------------------------------------------- writer */

static void test_writer_little_endian(void **state)
{
    uint8_t buf[15];
    starling__wbuf w;
    static const uint8_t want[15] = {0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
                                     0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
    (void)state;
    starling__w_init(&w, buf, sizeof buf);
    starling__w_u8(&w, 0x11);
    starling__w_u16(&w, 0x3322);
    starling__w_u32(&w, 0x77665544u);
    starling__w_u64(&w, 0xffeeddccbbaa9988ull);
    assert_int_equal(w.err, 0);
    assert_int_equal(w.len, 15);
    assert_memory_equal(buf, want, sizeof want);
}

static void test_writer_exact_fit(void **state)
{
    uint8_t buf[8];
    starling__wbuf w;
    (void)state;
    starling__w_init(&w, buf, sizeof buf);
    starling__w_u64(&w, 1);
    assert_int_equal(w.err, 0);
    assert_int_equal(w.len, 8);
    /* Full: even one more byte is refused. */
    starling__w_u8(&w, 1);
    assert_int_not_equal(w.err, 0);
    assert_int_equal(w.len, 8);
}

/* Every writer, one byte short: err is set, nothing is written past cap, len is kept. */
static void test_writer_overflow_each_width(void **state)
{
    (void)state;
    for (int width = 1; width <= 8; width *= 2) {
        uint8_t buf[16];
        starling__wbuf w;
        memset(buf, GUARD, sizeof buf);
        starling__w_init(&w, buf, (size_t)width - 1);
        switch (width) {
        case 1: starling__w_u8(&w, 0); break;
        case 2: starling__w_u16(&w, 0); break;
        case 4: starling__w_u32(&w, 0); break;
        default: starling__w_u64(&w, 0); break;
        }
        assert_int_not_equal(w.err, 0);
        assert_int_equal(w.len, 0);
        for (size_t i = 0; i < sizeof buf; i++)
            assert_int_equal(buf[i], GUARD);
    }
}

static void test_writer_error_is_sticky(void **state)
{
    uint8_t buf[4];
    starling__wbuf w;
    (void)state;
    memset(buf, GUARD, sizeof buf);
    starling__w_init(&w, buf, sizeof buf);
    starling__w_u64(&w, 0); /* does not fit */
    assert_int_not_equal(w.err, 0);
    starling__w_u8(&w, 0x01); /* would fit, but the writer has failed */
    starling__w_u16(&w, 0x0202);
    assert_int_not_equal(w.err, 0);
    assert_int_equal(w.len, 0);
    for (size_t i = 0; i < sizeof buf; i++)
        assert_int_equal(buf[i], GUARD);
}

static void test_writer_bytes(void **state)
{
    uint8_t buf[6];
    starling__wbuf w;
    (void)state;
    memset(buf, GUARD, sizeof buf);
    starling__w_init(&w, buf, 5);
    starling__w_bytes(&w, NULL, 0); /* empty copy is fine, even from NULL */
    starling__w_bytes(&w, "abc", 3);
    assert_int_equal(w.err, 0);
    assert_int_equal(w.len, 3);
    starling__w_bytes(&w, "xyz", 3); /* 2 left */
    assert_int_not_equal(w.err, 0);
    assert_int_equal(w.len, 3);
    assert_memory_equal(buf, "abc", 3);
    assert_int_equal(buf[3], GUARD);
    assert_int_equal(buf[4], GUARD);
    assert_int_equal(buf[5], GUARD);
}

/* A huge n must not wrap the bounds check around. */
static void test_writer_bytes_huge(void **state)
{
    uint8_t buf[8];
    starling__wbuf w;
    (void)state;
    starling__w_init(&w, buf, sizeof buf);
    starling__w_u8(&w, 0);
    starling__w_bytes(&w, buf, SIZE_MAX);
    assert_int_not_equal(w.err, 0);
    assert_int_equal(w.len, 1);
}

static void test_writer_zero_capacity(void **state)
{
    starling__wbuf w;
    (void)state;
    starling__w_init(&w, NULL, 0);
    starling__w_u8(&w, 7);
    assert_int_not_equal(w.err, 0);
    assert_int_equal(w.len, 0);
}

static void test_writer_str(void **state)
{
    uint8_t buf[300];
    char s[257];
    starling__wbuf w;
    (void)state;

    starling__w_init(&w, buf, sizeof buf);
    starling__w_str(&w, "");
    starling__w_str(&w, "ab");
    assert_int_equal(w.err, 0);
    assert_int_equal(w.len, 4);
    assert_memory_equal(buf, "\0\2ab", 4);

    /* 255 bytes is the longest string a u8 length can carry. */
    memset(s, 'x', 255);
    s[255] = '\0';
    starling__w_init(&w, buf, sizeof buf);
    starling__w_str(&w, s);
    assert_int_equal(w.err, 0);
    assert_int_equal(w.len, 256);
    assert_int_equal(buf[0], 255);

    s[255] = 'x';
    s[256] = '\0';
    starling__w_init(&w, buf, sizeof buf);
    starling__w_str(&w, s);
    assert_int_not_equal(w.err, 0);
    assert_int_equal(w.len, 0);

    /* Length fits but the bytes do not. */
    starling__w_init(&w, buf, 3);
    starling__w_str(&w, "abc");
    assert_int_not_equal(w.err, 0);
}

/* ---------------------------------------------------------------- reader */

static void test_reader_little_endian(void **state)
{
    static const uint8_t in[15] = {0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
                                   0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
    starling__rbuf r;
    (void)state;
    starling__r_init(&r, in, sizeof in);
    assert_int_equal(starling__r_u8(&r), 0x11);
    assert_int_equal(starling__r_u16(&r), 0x3322);
    assert_int_equal(starling__r_u32(&r), 0x77665544u);
    assert_true(starling__r_u64(&r) == 0xffeeddccbbaa9988ull);
    assert_int_equal(r.err, 0);
    assert_int_equal(starling__r_finish(&r), STARLING_OK);
}

static void test_reader_extremes(void **state)
{
    uint8_t buf[30];
    starling__wbuf w;
    starling__rbuf r;
    (void)state;
    starling__w_init(&w, buf, sizeof buf);
    starling__w_u8(&w, UINT8_MAX);
    starling__w_u16(&w, UINT16_MAX);
    starling__w_u32(&w, UINT32_MAX);
    starling__w_u64(&w, UINT64_MAX);
    starling__w_u64(&w, 0);
    assert_int_equal(w.err, 0);
    starling__r_init(&r, buf, w.len);
    assert_int_equal(starling__r_u8(&r), UINT8_MAX);
    assert_int_equal(starling__r_u16(&r), UINT16_MAX);
    assert_true(starling__r_u32(&r) == UINT32_MAX);
    assert_true(starling__r_u64(&r) == UINT64_MAX);
    assert_true(starling__r_u64(&r) == 0);
    assert_int_equal(starling__r_finish(&r), STARLING_OK);
}

/* Every reader, one byte short: returns 0, sets err, does not advance. */
static void test_reader_overrun_each_width(void **state)
{
    static const uint8_t ff[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    (void)state;
    for (int width = 1; width <= 8; width *= 2) {
        starling__rbuf r;
        uint64_t v;
        starling__r_init(&r, ff, (size_t)width - 1);
        switch (width) {
        case 1: v = starling__r_u8(&r); break;
        case 2: v = starling__r_u16(&r); break;
        case 4: v = starling__r_u32(&r); break;
        default: v = starling__r_u64(&r); break;
        }
        assert_true(v == 0);
        assert_int_not_equal(r.err, 0);
        assert_int_equal(r.off, 0);
        assert_int_equal(starling__r_finish(&r), STARLING_E_PROTOCOL);
    }
}

/* After an overrun every later read returns zeros, even where bytes remain: a decoder
 * checks err once at the end. */
static void test_reader_error_is_sticky(void **state)
{
    static const uint8_t in[3] = {0xff, 0xff, 0xff};
    uint8_t dst[2] = {GUARD, GUARD};
    starling__rbuf r;
    (void)state;
    starling__r_init(&r, in, sizeof in);
    assert_true(starling__r_u32(&r) == 0);
    assert_int_not_equal(r.err, 0);
    assert_int_equal(starling__r_u8(&r), 0);
    assert_int_equal(starling__r_u16(&r), 0);
    starling__r_bytes(&r, dst, 2);
    assert_int_equal(dst[0], 0);
    assert_int_equal(dst[1], 0);
    assert_int_equal(starling__r_finish(&r), STARLING_E_PROTOCOL);
}

static void test_reader_bytes(void **state)
{
    static const uint8_t in[5] = {1, 2, 3, 4, 5};
    uint8_t dst[8];
    starling__rbuf r;
    (void)state;
    starling__r_init(&r, in, sizeof in);
    starling__r_bytes(&r, NULL, 0);
    starling__r_bytes(&r, dst, 3);
    assert_memory_equal(dst, in, 3);
    assert_int_equal(r.err, 0);
    /* Overrun: dst is zeroed rather than left with stale or partial bytes. */
    memset(dst, GUARD, sizeof dst);
    starling__r_bytes(&r, dst, 3);
    assert_int_not_equal(r.err, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(dst[i], 0);
    assert_int_equal(dst[3], GUARD);
}

/* An overrun part-way through leaves the offset where it was. */
static void test_reader_overrun_midway(void **state)
{
    static const uint8_t in[4] = {1, 2, 3, 4};
    starling__rbuf r;
    (void)state;
    starling__r_init(&r, in, sizeof in);
    assert_int_equal(starling__r_u8(&r), 1);
    assert_true(starling__r_u32(&r) == 0); /* 3 bytes left */
    assert_int_not_equal(r.err, 0);
    assert_int_equal(r.off, 1);
    assert_int_equal(starling__r_finish(&r), STARLING_E_PROTOCOL);
}

static void test_reader_empty(void **state)
{
    starling__rbuf r;
    (void)state;
    starling__r_init(&r, NULL, 0);
    assert_int_equal(starling__r_finish(&r), STARLING_OK);
    assert_int_equal(starling__r_u8(&r), 0);
    assert_int_not_equal(r.err, 0);
    assert_int_equal(starling__r_finish(&r), STARLING_E_PROTOCOL);
}

static void test_reader_finish_trailing(void **state)
{
    static const uint8_t in[5] = {1, 2, 3, 4, 5};
    starling__rbuf r;
    (void)state;
    starling__r_init(&r, in, sizeof in);
    starling__r_u32(&r);
    assert_int_equal(r.err, 0);
    assert_int_equal(starling__r_finish(&r), STARLING_E_PROTOCOL); /* one byte unread */
    starling__r_u8(&r);
    assert_int_equal(starling__r_finish(&r), STARLING_OK);
    /* finish does not consume: asking twice gives the same answer. */
    assert_int_equal(starling__r_finish(&r), STARLING_OK);
}

/* ---------------------------------------------------------------- strings */

static void test_reader_str_ok(void **state)
{
    static const uint8_t in[] = {0, 3, 'a', 'b', 'c', 2, 0xc3, 0xa9 /* UTF-8 e-acute */};
    char s[4];
    char u[3];
    starling__rbuf r;
    (void)state;
    memset(s, GUARD, sizeof s);
    starling__r_init(&r, in, sizeof in);
    starling__r_str(&r, s, sizeof s);
    assert_string_equal(s, "");
    starling__r_str(&r, s, sizeof s); /* 3 bytes + NUL fit exactly in 4 */
    assert_string_equal(s, "abc");
    starling__r_str(&r, u, sizeof u); /* bytes >= 0x80 are allowed */
    assert_int_equal(r.err, 0);
    assert_memory_equal(u, "\xc3\xa9", 3);
    assert_int_equal(starling__r_finish(&r), STARLING_OK);
}

static void test_reader_str_too_long(void **state)
{
    static const uint8_t in[] = {4, 'a', 'b', 'c', 'd'};
    char s[4];
    starling__rbuf r;
    (void)state;
    memset(s, GUARD, sizeof s);
    starling__r_init(&r, in, sizeof in);
    starling__r_str(&r, s, sizeof s); /* needs 5 with the NUL */
    assert_int_not_equal(r.err, 0);
    assert_string_equal(s, "");
    assert_int_equal(starling__r_finish(&r), STARLING_E_PROTOCOL);
}

static void test_reader_str_truncated(void **state)
{
    static const uint8_t in[] = {5, 'a', 'b'};
    char s[16];
    starling__rbuf r;
    (void)state;
    starling__r_init(&r, in, sizeof in);
    starling__r_str(&r, s, sizeof s);
    assert_int_not_equal(r.err, 0);
    assert_string_equal(s, "");

    /* Missing even the length byte. */
    starling__r_init(&r, in, 0);
    starling__r_str(&r, s, sizeof s);
    assert_int_not_equal(r.err, 0);
    assert_string_equal(s, "");
}

static void test_reader_str_control_chars(void **state)
{
    static const uint8_t bad[] = {0x00, 0x01, 0x09, 0x0a, 0x0d, 0x1b, 0x1f, 0x7f};
    (void)state;
    for (size_t i = 0; i < sizeof bad; i++) {
        /* the bad byte in the middle of "a?b" */
        uint8_t in[4] = {3, 'a', bad[i], 'b'};
        char s[8];
        starling__rbuf r;
        starling__r_init(&r, in, sizeof in);
        starling__r_str(&r, s, sizeof s);
        assert_int_not_equal(r.err, 0);
        assert_string_equal(s, "");
    }
    {
        /* 0x20 (space) and 0x7e (~) are the edges of what is allowed */
        static const uint8_t in[] = {2, 0x20, 0x7e};
        char s[8];
        starling__rbuf r;
        starling__r_init(&r, in, sizeof in);
        starling__r_str(&r, s, sizeof s);
        assert_int_equal(r.err, 0);
        assert_string_equal(s, " ~");
    }
}

static void test_reader_str_after_error(void **state)
{
    static const uint8_t in[] = {1, 'a'};
    char s[8];
    starling__rbuf r;
    (void)state;
    memset(s, 'z', sizeof s);
    starling__r_init(&r, in, sizeof in);
    starling__r_u32(&r); /* overrun */
    starling__r_str(&r, s, sizeof s);
    assert_int_not_equal(r.err, 0);
    assert_string_equal(s, "");
}

/* The writer accepts up to 255 bytes; the reader refuses what its buffer cannot hold. */
static void test_str_round_trip_lengths(void **state)
{
    uint8_t buf[300];
    char src[256], dst[256];
    (void)state;
    for (size_t n = 0; n <= 255; n++) {
        starling__wbuf w;
        starling__rbuf r;
        memset(src, 'a' + (int)(n % 26), n);
        src[n] = '\0';
        starling__w_init(&w, buf, sizeof buf);
        starling__w_str(&w, src);
        assert_int_equal(w.err, 0);
        assert_int_equal(w.len, n + 1);
        starling__r_init(&r, buf, w.len);
        starling__r_str(&r, dst, sizeof dst);
        assert_int_equal(starling__r_finish(&r), STARLING_OK);
        assert_string_equal(dst, src);
        /* Into a 64-byte buffer: up to 63 bytes fit. */
        starling__r_init(&r, buf, w.len);
        starling__r_str(&r, dst, 64);
        assert_int_equal(starling__r_finish(&r) == STARLING_OK, n < 64);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writer_little_endian),
        cmocka_unit_test(test_writer_exact_fit),
        cmocka_unit_test(test_writer_overflow_each_width),
        cmocka_unit_test(test_writer_error_is_sticky),
        cmocka_unit_test(test_writer_bytes),
        cmocka_unit_test(test_writer_bytes_huge),
        cmocka_unit_test(test_writer_zero_capacity),
        cmocka_unit_test(test_writer_str),
        cmocka_unit_test(test_reader_little_endian),
        cmocka_unit_test(test_reader_extremes),
        cmocka_unit_test(test_reader_overrun_each_width),
        cmocka_unit_test(test_reader_error_is_sticky),
        cmocka_unit_test(test_reader_bytes),
        cmocka_unit_test(test_reader_overrun_midway),
        cmocka_unit_test(test_reader_empty),
        cmocka_unit_test(test_reader_finish_trailing),
        cmocka_unit_test(test_reader_str_ok),
        cmocka_unit_test(test_reader_str_too_long),
        cmocka_unit_test(test_reader_str_truncated),
        cmocka_unit_test(test_reader_str_control_chars),
        cmocka_unit_test(test_reader_str_after_error),
        cmocka_unit_test(test_str_round_trip_lengths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
