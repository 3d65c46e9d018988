/* The data module: IDX reading (valid files, and every refusal: bad magic, wrong dims,
 * truncation, count mismatch, bad label, trailing garbage, missing file, corrupt gzip,
 * failed allocations), the real Fashion-MNIST test set when installed, the synthetic
 * set, IID and Dirichlet sharding, and mini-batch iteration. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <zlib.h>

#include "data/dataset.h"
#include "data/idx.h"
#include "starling.h"
#include "util/alloc.h"

#define SIDE 28
#define PIX (SIDE * SIDE)

static char tmpdir[256];

/* ---------------------------------------------------------------- file writers */

static void path_in(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", tmpdir, name);
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* An IDX byte image: header (magic, dims) + payload. Returns malloc'd bytes. */
static unsigned char *idx_bytes(uint32_t magic, const uint32_t *dims, int ndims,
                                const unsigned char *payload, size_t payload_len, size_t *len)
{
    size_t hdr = 4 + 4 * (size_t)ndims;
    unsigned char *b = malloc(hdr + payload_len + 1);
    assert_non_null(b);
    put_be32(b, magic);
    for (int i = 0; i < ndims; i++)
        put_be32(b + 4 + 4 * i, dims[i]);
    if (payload_len)
        memcpy(b + hdr, payload, payload_len);
    *len = hdr + payload_len;
    return b;
}

static void write_gz(const char *path, const unsigned char *data, size_t len)
{
    gzFile f = gzopen(path, "wb");
    assert_non_null(f);
    if (len)
        assert_int_equal(gzwrite(f, data, (unsigned)len), (int)len);
    assert_int_equal(gzclose(f), Z_OK);
}

static void write_plain(const char *path, const unsigned char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (len)
        assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* Writes an image file of n images (pixel k of image i = (7 i + k) mod 256) with the
 * given magic and sides, and `extra` payload bytes more (negative: fewer). */
static void write_images(const char *name, uint32_t magic, uint32_t n, uint32_t rows, uint32_t cols,
                         long extra, int gz)
{
    char path[512];
    size_t plen = (size_t)((long)n * rows * cols + extra), len;
    unsigned char *payload = malloc(plen + 1);
    assert_non_null(payload);
    for (size_t k = 0; k < plen; k++)
        payload[k] = (unsigned char)((7 * (k / PIX) + k % PIX) & 0xff);
    uint32_t dims[3] = {n, rows, cols};
    unsigned char *b = idx_bytes(magic, dims, 3, payload, plen, &len);
    path_in(path, sizeof path, name);
    if (gz)
        write_gz(path, b, len);
    else
        write_plain(path, b, len);
    free(b);
    free(payload);
}

static void write_labels(const char *name, uint32_t magic, uint32_t n, long extra, int bad_at,
                         int gz)
{
    char path[512];
    size_t plen = (size_t)((long)n + extra), len;
    unsigned char *payload = malloc(plen + 1);
    assert_non_null(payload);
    for (size_t k = 0; k < plen; k++)
        payload[k] = (unsigned char)(k % 10);
    if (bad_at >= 0)
        payload[bad_at] = 10;
    uint32_t dims[1] = {n};
    unsigned char *b = idx_bytes(magic, dims, 1, payload, plen, &len);
    path_in(path, sizeof path, name);
    if (gz)
        write_gz(path, b, len);
    else
        write_plain(path, b, len);
    free(b);
    free(payload);
}

static int setup_dir(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/starling-test-data-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    char cmd[512];
    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Expects a refusal of `path` as images (or labels) with code `want` and a message that
 * names the file and contains `needle`. */
static void expect_refusal(const char *name, int images, int want, const char *needle)
{
    char path[512], why[512] = "";
    uint8_t *data = (uint8_t *)"untouched";
    size_t count = 12345;
    path_in(path, sizeof path, name);
    int rc = images ? starling__idx_read_images(path, &data, &count, why, sizeof why)
                    : starling__idx_read_labels(path, &data, &count, why, sizeof why);
    if (rc != want || !strstr(why, needle) || !strstr(why, path))
        print_error("%s: rc %d (want %d), why \"%s\" (want \"%s\")\n", name, rc, want, why, needle);
    assert_int_equal(rc, want);
    assert_non_null(strstr(why, path));
    assert_non_null(strstr(why, needle));
    assert_string_equal((const char *)data, "untouched"); /* outputs untouched */
    assert_int_equal(count, 12345);
}

/* ---------------------------------------------------------------- IDX */

static void test_idx_roundtrip(void **state)
{
    char path[512], why[256];
    uint8_t *px = NULL, *lab = NULL;
    size_t n = 0, nl = 0;
    (void)state;
    for (int gz = 0; gz <= 1; gz++) {
        write_images("rt-img", STARLING__IDX_MAGIC_IMAGES, 5, SIDE, SIDE, 0, gz);
        write_labels("rt-lab", STARLING__IDX_MAGIC_LABELS, 5, 0, -1, gz);
        path_in(path, sizeof path, "rt-img");
        assert_int_equal(starling__idx_read_images(path, &px, &n, why, sizeof why), STARLING_OK);
        assert_int_equal(n, 5);
        for (size_t k = 0; k < 5 * PIX; k++)
            assert_int_equal(px[k], (7 * (k / PIX) + k % PIX) & 0xff);
        path_in(path, sizeof path, "rt-lab");
        assert_int_equal(starling__idx_read_labels(path, &lab, &nl, why, sizeof why), STARLING_OK);
        assert_int_equal(nl, 5);
        for (size_t k = 0; k < 5; k++)
            assert_int_equal(lab[k], k % 10);
        starling__free(px);
        starling__free(lab);
    }
}

/* gzip allows several members back to back (`cat a.gz b.gz`); gunzip reads them as one. */
static void test_idx_multimember_gzip(void **state)
{
    char path[512], why[256];
    unsigned char payload[3];
    uint32_t dims[1] = {3};
    size_t len, alen, blen;
    uint8_t *lab = NULL;
    size_t n = 0;
    (void)state;
    for (int i = 0; i < 3; i++)
        payload[i] = (unsigned char)(9 - i);
    unsigned char *b = idx_bytes(STARLING__IDX_MAGIC_LABELS, dims, 1, payload, 3, &len);
    path_in(path, sizeof path, "mm-a");
    write_gz(path, b, 6);
    unsigned char *a = read_all(path, &alen);
    write_gz(path, b + 6, len - 6);
    unsigned char *c = read_all(path, &blen);
    unsigned char *both = malloc(alen + blen);
    memcpy(both, a, alen);
    memcpy(both + alen, c, blen);
    path_in(path, sizeof path, "mm-lab");
    write_plain(path, both, alen + blen);
    assert_int_equal(starling__idx_read_labels(path, &lab, &n, why, sizeof why), STARLING_OK);
    assert_int_equal(n, 3);
    assert_memory_equal(lab, payload, 3);
    starling__free(lab);
    free(a);
    free(b);
    free(c);
    free(both);
}

static void test_idx_bad_magic(void **state)
{
    (void)state;
    write_images("bm-img", 0x00000804u, 2, SIDE, SIDE, 0, 1);
    expect_refusal("bm-img", 1, STARLING_E_CORRUPT, "bad magic 0x00000804");
    /* A label file given as images is named as such. */
    write_labels("bm-lab", STARLING__IDX_MAGIC_LABELS, 4, 0, -1, 1);
    expect_refusal("bm-lab", 1, STARLING_E_CORRUPT, "(a label file)");
    write_images("bm-img2", STARLING__IDX_MAGIC_IMAGES, 1, SIDE, SIDE, 0, 1);
    expect_refusal("bm-img2", 0, STARLING_E_CORRUPT, "(an image file)");
}

static void test_idx_wrong_dims(void **state)
{
    (void)state;
    write_images("wd-img", STARLING__IDX_MAGIC_IMAGES, 2, 27, SIDE, 0, 1);
    expect_refusal("wd-img", 1, STARLING_E_CORRUPT, "27x28, expected 28x28");
    write_images("wd-img2", STARLING__IDX_MAGIC_IMAGES, 2, SIDE, 32, 0, 1);
    expect_refusal("wd-img2", 1, STARLING_E_CORRUPT, "28x32");
    write_images("wd-zero", STARLING__IDX_MAGIC_IMAGES, 0, SIDE, SIDE, 0, 1);
    expect_refusal("wd-zero", 1, STARLING_E_CORRUPT, "item count is 0");
    write_labels("wd-huge", STARLING__IDX_MAGIC_LABELS, STARLING__IDX_MAX_COUNT + 1, -1000001, -1,
                 1);
    expect_refusal("wd-huge", 0, STARLING_E_CORRUPT, "exceeds the limit");
}

static void test_idx_truncated(void **state)
{
    char path[512];
    size_t len;
    (void)state;
    /* The header promises 5 images, the payload holds 4 and a half. */
    write_images("tr-img", STARLING__IDX_MAGIC_IMAGES, 5, SIDE, SIDE, -(long)PIX / 2, 1);
    expect_refusal("tr-img", 1, STARLING_E_CORRUPT, "truncated: 3528 of 3920 bytes");
    /* A header promising far more than the file holds fails as truncated too. */
    write_labels("tr-big", STARLING__IDX_MAGIC_LABELS, 900000, -899990, -1, 1);
    expect_refusal("tr-big", 0, STARLING_E_CORRUPT, "truncated: 10 of 900000");
    /* Header cut short, in a plain file; and an empty file. */
    path_in(path, sizeof path, "tr-hdr");
    write_plain(path, (const unsigned char *)"\0\0\x08\x03\0\0", 6);
    expect_refusal("tr-hdr", 1, STARLING_E_CORRUPT, "truncated header");
    path_in(path, sizeof path, "tr-empty");
    write_plain(path, NULL, 0);
    expect_refusal("tr-empty", 1, STARLING_E_CORRUPT, "truncated");
    /* A gzip file cut inside its compressed stream. */
    write_images("tr-gz", STARLING__IDX_MAGIC_IMAGES, 20, SIDE, SIDE, 0, 1);
    path_in(path, sizeof path, "tr-gz");
    unsigned char *b = read_all(path, &len);
    write_plain(path, b, len / 2);
    free(b);
    expect_refusal("tr-gz", 1, STARLING_E_CORRUPT, "truncated gzip stream");
}

static void test_idx_label_range(void **state)
{
    (void)state;
    write_labels("lr-lab", STARLING__IDX_MAGIC_LABELS, 50, 0, 37, 1);
    expect_refusal("lr-lab", 0, STARLING_E_CORRUPT, "label 10 at index 37 is out of range");
}

static void test_idx_trailing(void **state)
{
    char path[512];
    size_t len;
    (void)state;
    /* Inside the decompressed data ... */
    write_images("tg-img", STARLING__IDX_MAGIC_IMAGES, 2, SIDE, SIDE, 3, 1);
    expect_refusal("tg-img", 1, STARLING_E_CORRUPT, "3 trailing bytes after the 1568 bytes");
    write_labels("tg-lab", STARLING__IDX_MAGIC_LABELS, 4, 1, -1, 0);
    expect_refusal("tg-lab", 0, STARLING_E_CORRUPT, "1 trailing bytes");
    /* ... and after the gzip stream. */
    write_labels("tg-gz", STARLING__IDX_MAGIC_LABELS, 4, 0, -1, 1);
    path_in(path, sizeof path, "tg-gz");
    unsigned char *b = read_all(path, &len);
    memcpy(b + len, "X", 1);
    write_plain(path, b, len + 1);
    free(b);
    expect_refusal("tg-gz", 0, STARLING_E_CORRUPT, "after the end of the gzip stream");
}

static void test_idx_corrupt_gzip(void **state)
{
    char path[512];
    size_t len;
    (void)state;
    write_images("cg-img", STARLING__IDX_MAGIC_IMAGES, 10, SIDE, SIDE, 0, 1);
    path_in(path, sizeof path, "cg-img");
    unsigned char *b = read_all(path, &len);
    b[len - 6] ^= 0x55; /* inside the CRC-32 of the trailer */
    write_plain(path, b, len);
    free(b);
    expect_refusal("cg-img", 1, STARLING_E_CORRUPT, "corrupt gzip data");
}

static void test_idx_missing(void **state)
{
    char why[256] = "";
    uint8_t *d = NULL;
    size_t n = 0;
    starling__dataset ds;
    (void)state;
    expect_refusal("no-such-file", 1, STARLING_E_NOT_FOUND, "cannot open");
    expect_refusal("no-such-file", 0, STARLING_E_NOT_FOUND, "cannot open");
    assert_int_equal(starling__idx_read_images(NULL, &d, &n, why, sizeof why), STARLING_E_INVALID);
    /* The loader names the .gz file it wanted. */
    assert_int_equal(
        starling__dataset_load_fashion(&ds, tmpdir, STARLING__SPLIT_TEST, why, sizeof why),
        STARLING_E_NOT_FOUND);
    assert_non_null(strstr(why, "t10k-images-idx3-ubyte.gz"));
    assert_null(ds.pixels);
}

/* Every allocation of a read may fail; each failure must be reported, and leak nothing
 * (ASan/valgrind check the latter). */
static void test_idx_alloc_failure(void **state)
{
    char path[512], why[256];
    uint8_t *px = NULL;
    size_t n = 0;
    int rc, saw_nomem = 0;
    (void)state;
    write_images("af-img", STARLING__IDX_MAGIC_IMAGES, 3, SIDE, SIDE, 0, 1);
    path_in(path, sizeof path, "af-img");
    for (long k = 1; k < 64; k++) {
        starling__alloc_fail_after(k);
        rc = starling__idx_read_images(path, &px, &n, why, sizeof why);
        starling__alloc_fail_after(0);
        if (rc == STARLING_OK) {
            assert_int_equal(n, 3);
            starling__free(px);
            break;
        }
        assert_int_equal(rc, STARLING_E_NOMEM);
        saw_nomem++;
    }
    assert_true(saw_nomem >= 3); /* input buffer, zlib state, payload */
    assert_int_equal(rc, STARLING_OK);
}

/* Dataset-level checks: both files must agree on the count. */
static void test_dataset_count_mismatch(void **state)
{
    char sub[300], why[1024] = "";
    starling__dataset ds;
    (void)state;
    snprintf(sub, sizeof sub, "%s/cm", tmpdir);
    assert_int_equal(mkdir(sub, 0700), 0);
    write_images("cm/t10k-images-idx3-ubyte.gz", STARLING__IDX_MAGIC_IMAGES, 5, SIDE, SIDE, 0, 1);
    write_labels("cm/t10k-labels-idx1-ubyte", STARLING__IDX_MAGIC_LABELS, 4, 0, -1, 0);
    assert_int_equal(
        starling__dataset_load_fashion(&ds, sub, STARLING__SPLIT_TEST, why, sizeof why),
        STARLING_E_CORRUPT);
    assert_non_null(strstr(why, "5 images"));
    assert_non_null(strstr(why, "4 labels"));
    assert_non_null(strstr(why, "t10k-labels-idx1-ubyte"));
    /* With matching counts the same directory loads (plain labels file as fallback). */
    write_labels("cm/t10k-labels-idx1-ubyte", STARLING__IDX_MAGIC_LABELS, 5, 0, -1, 0);
    assert_int_equal(
        starling__dataset_load_fashion(&ds, sub, STARLING__SPLIT_TEST, why, sizeof why),
        STARLING_OK);
    assert_int_equal(ds.n, 5);
    assert_int_equal(ds.d, 784);
    assert_int_equal(ds.synthetic, 0);
    float x[2 * 784];
    uint8_t y[2];
    uint32_t idx[2] = {4, 1};
    starling__dataset_gather(&ds, idx, 2, x, y);
    assert_int_equal(y[0], 4);
    assert_int_equal(y[1], 1);
    assert_float_equal(x[10], (float)((7 * 4 + 10) & 0xff) / 255.0f, 1e-7);
    assert_float_equal(x[784 + 300], (float)((7 + 300) & 0xff) / 255.0f, 1e-7);
    starling__dataset_free(&ds);
    assert_null(ds.pixels);
}

static void test_fashion_real(void **state)
{
    char why[512];
    starling__dataset ds;
    size_t hist[10] = {0};
    (void)state;
    if (access(STARLING__FASHION_DIR "/t10k-images-idx3-ubyte.gz", R_OK) != 0) {
        print_message("dataset-fashion-mnist not installed: skipped\n");
        skip();
    }
    int rc = starling__dataset_load_fashion(&ds, STARLING__FASHION_DIR, STARLING__SPLIT_TEST, why,
                                            sizeof why);
    if (rc != STARLING_OK)
        print_error("%s\n", why);
    assert_int_equal(rc, STARLING_OK);
    assert_int_equal(ds.n, 10000);
    assert_int_equal(ds.d, 784);
    assert_int_equal(ds.classes, 10);
    for (size_t i = 0; i < ds.n; i++) {
        assert_true(ds.labels[i] < 10);
        hist[ds.labels[i]]++;
    }
    for (int c = 0; c < 10; c++)
        assert_int_equal(hist[c], 1000);
    /* Pixels span the byte range (a sanity check that data is not all zero). */
    uint8_t lo = 255, hi = 0;
    for (size_t k = 0; k < ds.n * ds.d; k++) {
        lo = ds.pixels[k] < lo ? ds.pixels[k] : lo;
        hi = ds.pixels[k] > hi ? ds.pixels[k] : hi;
    }
    assert_int_equal(lo, 0);
    assert_int_equal(hi, 255);
    starling__dataset_free(&ds);
}

/* ---------------------------------------------------------------- synthetic */

static void test_synthetic(void **state)
{
    starling__dataset a, b, t;
    size_t hist[10] = {0};
    (void)state;
    assert_int_equal(starling__dataset_synthetic(&a, 3003, 42, STARLING__SPLIT_TRAIN, NULL, 0),
                     STARLING_OK);
    assert_int_equal(starling__dataset_synthetic(&b, 3003, 42, STARLING__SPLIT_TRAIN, NULL, 0),
                     STARLING_OK);
    assert_int_equal(starling__dataset_synthetic(&t, 3003, 42, STARLING__SPLIT_TEST, NULL, 0),
                     STARLING_OK);
    assert_int_equal(a.synthetic, 1);
    assert_int_equal(a.n, 3003);
    assert_memory_equal(a.pixels, b.pixels, a.n * a.d);
    assert_memory_equal(a.labels, b.labels, a.n);
    assert_true(memcmp(a.pixels, t.pixels, a.n * a.d) != 0);
    for (size_t i = 0; i < a.n; i++)
        hist[a.labels[i]]++;
    for (int c = 0; c < 10; c++)
        assert_int_equal(hist[c], c < 3 ? 301 : 300);
    /* Same class, same task across splits: class means of train and test are close,
     * and closer than those of two different classes. */
    double mean_a[2][784] = {{0}}, mean_t[784] = {0};
    size_t na[2] = {0}, nt = 0;
    for (size_t i = 0; i < a.n; i++) {
        if (a.labels[i] < 2) {
            for (size_t k = 0; k < 784; k++)
                mean_a[a.labels[i]][k] += a.pixels[i * 784 + k];
            na[a.labels[i]]++;
        }
        if (t.labels[i] == 0) {
            for (size_t k = 0; k < 784; k++)
                mean_t[k] += t.pixels[i * 784 + k];
            nt++;
        }
    }
    double same = 0, diff = 0;
    for (size_t k = 0; k < 784; k++) {
        double u = mean_a[0][k] / na[0], v = mean_t[k] / nt, w = mean_a[1][k] / na[1];
        same += (u - v) * (u - v);
        diff += (u - w) * (u - w);
    }
    print_message("class-0 train/test mean distance^2 %.0f, class 0/1 %.0f\n", same, diff);
    assert_true(same * 5 < diff);
    assert_int_equal(starling__dataset_synthetic(&b, 0, 1, STARLING__SPLIT_TRAIN, NULL, 0),
                     STARLING_E_INVALID);
    starling__dataset_free(&a);
    starling__dataset_free(&b);
    starling__dataset_free(&t);
}

/* ---------------------------------------------------------------- shards */

/* Checks that the R shards partition 0..n-1; returns nothing, asserts. */
static void assert_partition(starling__shard *sh, size_t R, size_t n)
{
    unsigned char *seen = calloc(n, 1);
    size_t total = 0;
    assert_non_null(seen);
    for (size_t r = 0; r < R; r++) {
        for (size_t i = 0; i < sh[r].n; i++) {
            assert_true(sh[r].idx[i] < n);
            assert_int_equal(seen[sh[r].idx[i]], 0);
            seen[sh[r].idx[i]] = 1;
        }
        total += sh[r].n;
    }
    assert_int_equal(total, n);
    free(seen);
}

static void test_shard_iid(void **state)
{
    starling__dataset ds;
    starling__shard sh[3], again, other;
    (void)state;
    assert_int_equal(starling__dataset_synthetic(&ds, 1000, 7, STARLING__SPLIT_TRAIN, NULL, 0),
                     STARLING_OK);
    for (size_t r = 0; r < 3; r++)
        assert_int_equal(starling__shard_iid(&sh[r], &ds, r, 3, 99, NULL, 0), STARLING_OK);
    assert_int_equal(sh[0].n, 333);
    assert_int_equal(sh[1].n, 333);
    assert_int_equal(sh[2].n, 334);
    assert_partition(sh, 3, ds.n);
    assert_int_equal(starling__shard_iid(&again, &ds, 1, 3, 99, NULL, 0), STARLING_OK);
    assert_memory_equal(again.idx, sh[1].idx, again.n * sizeof *again.idx);
    assert_int_equal(starling__shard_iid(&other, &ds, 1, 3, 100, NULL, 0), STARLING_OK);
    assert_true(memcmp(other.idx, sh[1].idx, other.n * sizeof *other.idx) != 0);
    /* Shuffled: not the contiguous 333..665. */
    size_t in_order = 0;
    for (size_t i = 0; i < sh[1].n; i++)
        in_order += sh[1].idx[i] == 333 + i;
    assert_true(in_order < 10);
    char why[128];
    assert_int_equal(starling__shard_iid(&other, &ds, 3, 3, 1, why, sizeof why),
                     STARLING_E_INVALID);
    assert_int_equal(starling__shard_iid(&other, &ds, 0, 1001, 1, why, sizeof why),
                     STARLING_E_INVALID);
    for (size_t r = 0; r < 3; r++)
        starling__shard_free(&sh[r]);
    starling__shard_free(&again);
    starling__shard_free(&other);
    starling__dataset_free(&ds);
}

/* Mean over shards of the largest class fraction in the shard: 0.1 for perfectly
 * balanced shards of 10 classes, 1 when each shard holds a single class. */
static double skew(const starling__dataset *ds, const starling__shard *sh, size_t R)
{
    double s = 0.0;
    for (size_t r = 0; r < R; r++) {
        size_t h[10] = {0}, mx = 0;
        for (size_t i = 0; i < sh[r].n; i++)
            h[ds->labels[sh[r].idx[i]]]++;
        for (int c = 0; c < 10; c++)
            mx = h[c] > mx ? h[c] : mx;
        s += sh[r].n ? (double)mx / (double)sh[r].n : 1.0;
    }
    return s / (double)R;
}

static void test_shard_dirichlet(void **state)
{
    enum { R = 5 };
    starling__dataset ds;
    starling__shard lo[R], hi[R], again, other;
    char why[256];
    (void)state;
    assert_int_equal(starling__dataset_synthetic(&ds, 5000, 3, STARLING__SPLIT_TRAIN, NULL, 0),
                     STARLING_OK);
    for (size_t r = 0; r < R; r++) {
        assert_int_equal(starling__shard_dirichlet(&lo[r], &ds, r, R, 0.1, 50, 11, why, sizeof why),
                         STARLING_OK);
        assert_int_equal(
            starling__shard_dirichlet(&hi[r], &ds, r, R, 100.0, 0, 11, why, sizeof why),
            STARLING_OK);
        assert_true(lo[r].n >= 50);
        for (size_t i = 1; i < lo[r].n; i++)
            assert_true(lo[r].idx[i - 1] < lo[r].idx[i]); /* increasing */
    }
    assert_partition(lo, R, ds.n);
    assert_partition(hi, R, ds.n);
    double s_lo = skew(&ds, lo, R), s_hi = skew(&ds, hi, R);
    print_message("Dirichlet skew: alpha 0.1 -> %.3f, alpha 100 -> %.3f\n", s_lo, s_hi);
    assert_true(s_lo > 0.35);
    assert_true(s_hi < 0.15);
    assert_true(s_lo > 2 * s_hi);
    /* Deterministic for a seed; another seed gives another partition. */
    assert_int_equal(starling__shard_dirichlet(&again, &ds, 2, R, 0.1, 50, 11, NULL, 0),
                     STARLING_OK);
    assert_int_equal(again.n, lo[2].n);
    assert_memory_equal(again.idx, lo[2].idx, again.n * sizeof *again.idx);
    assert_int_equal(starling__shard_dirichlet(&other, &ds, 2, R, 0.1, 50, 12, NULL, 0),
                     STARLING_OK);
    assert_true(other.n != lo[2].n ||
                memcmp(other.idx, lo[2].idx, other.n * sizeof *other.idx) != 0);
    /* Tiny alpha: every class goes (almost) whole to one peer, still a partition. */
    starling__shard tiny[R];
    for (size_t r = 0; r < R; r++)
        assert_int_equal(starling__shard_dirichlet(&tiny[r], &ds, r, R, 1e-3, 0, 5, NULL, 0),
                         STARLING_OK);
    assert_partition(tiny, R, ds.n);
    assert_true(skew(&ds, tiny, R) > s_lo);
    /* Refusals. */
    assert_int_equal(starling__shard_dirichlet(&other, &ds, 0, R, 0.0, 0, 1, why, sizeof why),
                     STARLING_E_INVALID);
    assert_int_equal(starling__shard_dirichlet(&other, &ds, 0, R, NAN, 0, 1, why, sizeof why),
                     STARLING_E_INVALID);
    assert_int_equal(starling__shard_dirichlet(&other, &ds, 0, R, 1.0, 1001, 1, why, sizeof why),
                     STARLING_E_INVALID);
    /* A min_size no draw meets at tiny alpha: 30 samples, 3 per class; each class goes
     * whole to one of 3 peers, so shard sizes are multiples of 3 and cannot all be >= 10.
     * (A small set, as all 1000 attempts run.) */
    starling__dataset small;
    assert_int_equal(starling__dataset_synthetic(&small, 30, 3, STARLING__SPLIT_TRAIN, NULL, 0),
                     STARLING_OK);
    assert_int_equal(starling__shard_dirichlet(&other, &small, 0, 3, 1e-3, 10, 1, why, sizeof why),
                     STARLING_E_INVALID);
    assert_non_null(strstr(why, "no Dirichlet"));
    starling__dataset_free(&small);
    for (size_t r = 0; r < R; r++) {
        starling__shard_free(&lo[r]);
        starling__shard_free(&hi[r]);
        starling__shard_free(&tiny[r]);
    }
    starling__shard_free(&again);
    starling__shard_free(&other);
    starling__dataset_free(&ds);
}

/* ---------------------------------------------------------------- batches */

static void test_batcher(void **state)
{
    starling__dataset ds;
    starling__shard sh;
    starling__batcher b, b2;
    float x[4 * 784];
    uint8_t y[4];
    size_t count;
    uint64_t epoch;
    uint32_t order[2][10];
    (void)state;
    assert_int_equal(starling__dataset_synthetic(&ds, 30, 1, STARLING__SPLIT_TRAIN, NULL, 0),
                     STARLING_OK);
    assert_int_equal(starling__shard_iid(&sh, &ds, 1, 3, 5, NULL, 0), STARLING_OK);
    assert_int_equal(sh.n, 10);
    assert_int_equal(starling__batcher_init(&b, &sh, 4, 77), STARLING_OK);
    for (int e = 0; e < 2; e++) {
        size_t got = 0;
        const size_t want[3] = {4, 4, 2};
        for (int k = 0; k < 3; k++) {
            assert_int_equal(starling__batcher_next(&b, &ds, x, y, &count, &epoch), STARLING_OK);
            assert_int_equal(count, want[k]);
            assert_int_equal(epoch, (uint64_t)e);
            memcpy(order[e] + got, b.order + got, count * sizeof(uint32_t));
            /* The gathered rows are the ordered samples. */
            for (size_t i = 0; i < count; i++) {
                assert_int_equal(y[i], ds.labels[order[e][got + i]]);
                assert_float_equal(x[i * 784 + 400],
                                   ds.pixels[order[e][got + i] * 784 + 400] / 255.0f, 1e-7);
            }
            got += count;
        }
        /* Each epoch visits every shard sample exactly once. */
        for (size_t i = 0; i < sh.n; i++) {
            int found = 0;
            for (size_t j = 0; j < sh.n; j++)
                found += order[e][j] == sh.idx[i];
            assert_int_equal(found, 1);
        }
    }
    assert_true(memcmp(order[0], order[1], sizeof order[0]) != 0); /* reshuffled */
    /* Seeking reproduces the iteration; the same seed reproduces the order. */
    assert_int_equal(starling__batcher_init(&b2, &sh, 4, 77), STARLING_OK);
    assert_int_equal(starling__batcher_seek(&b2, 1, 4), STARLING_OK);
    assert_int_equal(starling__batcher_next(&b2, &ds, x, y, &count, &epoch), STARLING_OK);
    assert_int_equal(epoch, 1);
    assert_int_equal(count, 4);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(y[i], ds.labels[order[1][4 + i]]);
    assert_int_equal(starling__batcher_seek(&b2, 0, 10), STARLING_E_INVALID);
    starling__batcher_free(&b2);
    assert_int_equal(starling__batcher_init(&b2, &sh, 0, 1), STARLING_E_INVALID);
    /* A dataset smaller than the shard's indices is refused. */
    starling__dataset small;
    assert_int_equal(starling__dataset_synthetic(&small, 5, 1, STARLING__SPLIT_TRAIN, NULL, 0),
                     STARLING_OK);
    assert_int_equal(starling__batcher_next(&b, &small, x, y, &count, NULL), STARLING_E_INVALID);
    starling__dataset_free(&small);
    starling__batcher_free(&b);
    starling__batcher_free(NULL);
    starling__shard_free(&sh);
    starling__dataset_free(&ds);
}

/* Every allocating function of the module under failing allocations: NOMEM, nothing
 * leaked (ASan/valgrind), outputs left empty; and success once allocations work. */
static void test_alloc_failure_everywhere(void **state)
{
    starling__dataset ds, syn;
    starling__shard sh;
    starling__batcher b;
    (void)state;
    assert_int_equal(starling__dataset_synthetic(&ds, 200, 1, STARLING__SPLIT_TRAIN, NULL, 0),
                     STARLING_OK);
    for (int which = 0; which < 4; which++) {
        int rc = STARLING_E_NOMEM;
        long k;
        for (k = 1; k < 16 && rc == STARLING_E_NOMEM; k++) {
            starling__alloc_fail_after(k);
            switch (which) {
            case 0:
                rc = starling__dataset_synthetic(&syn, 50, 1, STARLING__SPLIT_TEST, NULL, 0);
                break;
            case 1: rc = starling__shard_iid(&sh, &ds, 1, 2, 1, NULL, 0); break;
            case 2: rc = starling__shard_dirichlet(&sh, &ds, 1, 2, 0.5, 0, 1, NULL, 0); break;
            case 3: {
                starling__shard whole = {0};
                starling__alloc_fail_after(0);
                assert_int_equal(starling__shard_iid(&whole, &ds, 0, 1, 1, NULL, 0), STARLING_OK);
                starling__alloc_fail_after(k);
                rc = starling__batcher_init(&b, &whole, 8, 1);
                starling__alloc_fail_after(0);
                starling__shard_free(&whole);
                break;
            }
            }
            starling__alloc_fail_after(0);
            if (rc == STARLING_E_NOMEM && which == 0)
                assert_null(syn.pixels);
            if (rc == STARLING_E_NOMEM && which == 3)
                assert_null(b.order);
        }
        assert_int_equal(rc, STARLING_OK);
        assert_true(k > 2); /* at least one allocation failed first */
        if (which == 0)
            starling__dataset_free(&syn);
        else if (which == 3)
            starling__batcher_free(&b);
        else
            starling__shard_free(&sh);
    }
    starling__dataset_free(&ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idx_roundtrip),
        cmocka_unit_test(test_idx_multimember_gzip),
        cmocka_unit_test(test_idx_bad_magic),
        cmocka_unit_test(test_idx_wrong_dims),
        cmocka_unit_test(test_idx_truncated),
        cmocka_unit_test(test_idx_label_range),
        cmocka_unit_test(test_idx_trailing),
        cmocka_unit_test(test_idx_corrupt_gzip),
        cmocka_unit_test(test_idx_missing),
        cmocka_unit_test(test_idx_alloc_failure),
        cmocka_unit_test(test_dataset_count_mismatch),
        cmocka_unit_test(test_fashion_real),
        cmocka_unit_test(test_synthetic),
        cmocka_unit_test(test_shard_iid),
        cmocka_unit_test(test_shard_dirichlet),
        cmocka_unit_test(test_batcher),
        cmocka_unit_test(test_alloc_failure_everywhere),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
