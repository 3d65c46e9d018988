#include "data/idx.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "starling.h"
#include "util/alloc.h"
#include "util/log.h"
#include "util/why.h"

#define IN_BUF_BYTES ((size_t)64 << 10)
#define GROW_START_BYTES ((size_t)1 << 20)
/* Trailing bytes are counted up to this many, so a decompression bomb appended to a
 * valid file costs bounded time; past it the message says "at least". */
#define TRAILING_COUNT_MAX ((size_t)16 << 20)

/* ---------------------------------------------------------------- byte source */

/* A file read as a byte stream, inflated when it is gzip. zlib's gzFile API would be
 * shorter, but it allocates with malloc and folds "truncated" and "corrupt" into one
 * EOF; inflate() on our own buffer gives both distinctions and the allocation hook. */
typedef struct src {
    const char *path;
    int fd;
    int gzip;       /* 1: gzip stream(s); 0: plain bytes */
    int z_live;     /* inflateInit2 succeeded */
    int member_end; /* the current gzip member has ended (Z_STREAM_END) */
    int file_eof;
    z_stream zs;
    unsigned char *buf; /* IN_BUF_BYTES of file input */
    size_t pos, len;    /* plain mode: unread part of buf */
} src;

static voidpf z_alloc(voidpf opaque, uInt items, uInt size)
{
    (void)opaque;
    return starling__malloc((size_t)items * (size_t)size);
}

static void z_free(voidpf opaque, voidpf p)
{
    (void)opaque;
    starling__free(p);
}

/* Reads more file bytes into buf (after what is still unread). */
static int src_fill(src *s, unsigned char *at, size_t cap, size_t *got, char *why, size_t wl)
{
    *got = 0;
    if (s->file_eof)
        return STARLING_OK;
    for (;;) {
        ssize_t r = read(s->fd, at, cap);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            starling__why(why, wl, "%s: read failed: %s", s->path, strerror(errno));
            return STARLING_E_OS;
        }
        if (r == 0)
            s->file_eof = 1;
        *got = (size_t)r;
        return STARLING_OK;
    }
}

static void src_close(src *s)
{
    if (s->z_live)
        inflateEnd(&s->zs);
    if (s->fd >= 0)
        close(s->fd);
    starling__free(s->buf);
}

static int src_open(src *s, const char *path, char *why, size_t wl)
{
    size_t got = 0;
    int rc;
    memset(s, 0, sizeof *s);
    s->path = path;
    s->fd = open(path, O_RDONLY);
    if (s->fd < 0) {
        int e = errno;
        starling__why(why, wl, "%s: cannot open: %s", path, strerror(e));
        return (e == ENOENT || e == ENOTDIR) ? STARLING_E_NOT_FOUND : STARLING_E_OS;
    }
    s->buf = starling__malloc(IN_BUF_BYTES);
    if (!s->buf) {
        starling__why(why, wl, "%s: out of memory", path);
        rc = STARLING_E_NOMEM;
        goto fail;
    }
    /* Two bytes decide the format; keep reading until we have them or the file ends. */
    while (s->len < 2 && !s->file_eof) {
        rc = src_fill(s, s->buf + s->len, IN_BUF_BYTES - s->len, &got, why, wl);
        if (rc != STARLING_OK)
            goto fail;
        s->len += got;
    }
    s->gzip = s->len >= 2 && s->buf[0] == 0x1f && s->buf[1] == 0x8b;
    if (s->gzip) {
        s->zs.zalloc = z_alloc;
        s->zs.zfree = z_free;
        s->zs.next_in = s->buf;
        s->zs.avail_in = (uInt)s->len;
        rc = inflateInit2(&s->zs, 16 + MAX_WBITS); /* 16: gzip wrapper only */
        if (rc != Z_OK) {
            starling__why(why, wl, "%s: inflateInit2 failed (%d)", path, rc);
            rc = rc == Z_MEM_ERROR ? STARLING_E_NOMEM : STARLING_E_INVALID;
            goto fail;
        }
        s->z_live = 1;
    }
    return STARLING_OK;
fail:
    src_close(s);
    return rc;
}

static int src_read_gzip(src *s, unsigned char *dst, size_t n, size_t *got, char *why, size_t wl)
{
    size_t in_got;
    int rc;
    s->zs.next_out = dst;
    s->zs.avail_out = (uInt)n;
    while (s->zs.avail_out > 0) {
        if (s->zs.avail_in == 0 && !s->file_eof) {
            rc = src_fill(s, s->buf, IN_BUF_BYTES, &in_got, why, wl);
            if (rc != STARLING_OK)
                return rc;
            s->zs.next_in = s->buf;
            s->zs.avail_in = (uInt)in_got;
        }
        if (s->member_end) {
            if (s->zs.avail_in == 0)
                break; /* clean end of the last member */
            /* More bytes after a member: a further member starts with 1f (inflate
             * checks the rest of its header); anything else is junk after the stream. */
            if (s->zs.next_in[0] != 0x1f) {
                starling__why(why, wl, "%s: trailing bytes after the end of the gzip stream", s->path);
                return STARLING_E_CORRUPT;
            }
            inflateReset(&s->zs);
            s->member_end = 0;
        }
        int z = inflate(&s->zs, Z_NO_FLUSH);
        if (z == Z_STREAM_END) {
            s->member_end = 1;
            continue;
        }
        if (z == Z_OK)
            continue;
        if (z == Z_BUF_ERROR && s->zs.avail_in == 0 && s->file_eof) {
            starling__why(why, wl, "%s: truncated gzip stream (file ends inside compressed data)",
                    s->path);
            return STARLING_E_CORRUPT;
        }
        if (z == Z_BUF_ERROR)
            continue; /* needs input we are about to read */
        if (z == Z_MEM_ERROR) {
            starling__why(why, wl, "%s: out of memory in inflate", s->path);
            return STARLING_E_NOMEM;
        }
        starling__why(why, wl, "%s: corrupt gzip data: %s", s->path,
                s->zs.msg ? s->zs.msg : "inflate error");
        return STARLING_E_CORRUPT;
    }
    *got = n - s->zs.avail_out;
    return STARLING_OK;
}

static int src_read_plain(src *s, unsigned char *dst, size_t n, size_t *got, char *why, size_t wl)
{
    size_t have = 0;
    while (have < n) {
        if (s->pos == s->len) {
            size_t in_got;
            int rc;
            if (s->file_eof)
                break;
            rc = src_fill(s, s->buf, IN_BUF_BYTES, &in_got, why, wl);
            if (rc != STARLING_OK)
                return rc;
            s->pos = 0;
            s->len = in_got;
            continue;
        }
        size_t take = s->len - s->pos;
        if (take > n - have)
            take = n - have;
        memcpy(dst + have, s->buf + s->pos, take);
        s->pos += take;
        have += take;
    }
    *got = have;
    return STARLING_OK;
}

/* Reads up to n bytes; fewer only at the end of the data. */
static int src_read(src *s, void *dst, size_t n, size_t *got, char *why, size_t wl)
{
    /* z_stream counts in uInt: feed at most 1 GiB per call. */
    const size_t step = (size_t)1 << 30;
    size_t have = 0;
    while (have < n) {
        size_t want = n - have < step ? n - have : step;
        size_t g = 0;
        int rc = s->gzip ? src_read_gzip(s, (unsigned char *)dst + have, want, &g, why, wl)
                         : src_read_plain(s, (unsigned char *)dst + have, want, &g, why, wl);
        if (rc != STARLING_OK)
            return rc;
        have += g;
        if (g < want)
            break;
    }
    *got = have;
    return STARLING_OK;
}

/* ---------------------------------------------------------------- IDX */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static const char *kind_of_magic(uint32_t magic)
{
    if (magic == STARLING__IDX_MAGIC_IMAGES)
        return " (an image file)";
    if (magic == STARLING__IDX_MAGIC_LABELS)
        return " (a label file)";
    return "";
}

/* Reads the header of a ubyte IDX file with `ndims` dimensions into dims[]. */
static int read_header(src *s, uint32_t expect_magic, uint32_t ndims, uint32_t *dims, char *why,
                       size_t wl)
{
    unsigned char hdr[16];
    size_t need = 4 + 4 * (size_t)ndims, got = 0;
    int rc = src_read(s, hdr, 4, &got, why, wl);
    if (rc != STARLING_OK)
        return rc;
    if (got < 4) {
        starling__why(why, wl, "%s: truncated: %zu of 4 magic bytes", s->path, got);
        return STARLING_E_CORRUPT;
    }
    uint32_t magic = be32(hdr);
    if (magic != expect_magic) {
        starling__why(why, wl, "%s: bad magic 0x%08x%s, expected 0x%08x (%s)", s->path, (unsigned)magic,
                kind_of_magic(magic), (unsigned)expect_magic,
                expect_magic == STARLING__IDX_MAGIC_IMAGES ? "ubyte images, 3 dimensions"
                                                           : "ubyte labels, 1 dimension");
        return STARLING_E_CORRUPT;
    }
    rc = src_read(s, hdr + 4, need - 4, &got, why, wl);
    if (rc != STARLING_OK)
        return rc;
    if (got < need - 4) {
        starling__why(why, wl, "%s: truncated header: %zu of %zu bytes", s->path, 4 + got, need);
        return STARLING_E_CORRUPT;
    }
    for (uint32_t i = 0; i < ndims; i++)
        dims[i] = be32(hdr + 4 + 4 * i);
    if (dims[0] == 0) {
        starling__why(why, wl, "%s: item count is 0", s->path);
        return STARLING_E_CORRUPT;
    }
    if (dims[0] > STARLING__IDX_MAX_COUNT) {
        starling__why(why, wl, "%s: item count %u exceeds the limit of %u", s->path, (unsigned)dims[0],
                (unsigned)STARLING__IDX_MAX_COUNT);
        return STARLING_E_CORRUPT;
    }
    return STARLING_OK;
}

/* Reads exactly `need` payload bytes into a buffer grown as data arrives, then checks
 * that nothing follows them. */
static int read_payload(src *s, size_t need, const char *what, uint8_t **out, char *why, size_t wl)
{
    size_t cap = need < GROW_START_BYTES ? need : GROW_START_BYTES;
    size_t have = 0, got = 0;
    uint8_t *buf = starling__malloc(cap);
    int rc;
    if (!buf) {
        starling__why(why, wl, "%s: out of memory", s->path);
        return STARLING_E_NOMEM;
    }
    for (;;) {
        rc = src_read(s, buf + have, cap - have, &got, why, wl);
        if (rc != STARLING_OK)
            goto fail;
        have += got;
        if (have < cap)
            break; /* the data ended */
        if (cap == need)
            break;
        size_t ncap = cap * 2 < need ? cap * 2 : need;
        uint8_t *nb = starling__realloc(buf, ncap);
        if (!nb) {
            starling__why(why, wl, "%s: out of memory", s->path);
            rc = STARLING_E_NOMEM;
            goto fail;
        }
        buf = nb;
        cap = ncap;
    }
    if (have < need) {
        starling__why(why, wl, "%s: truncated: %zu of %zu bytes of %s", s->path, have, need, what);
        rc = STARLING_E_CORRUPT;
        goto fail;
    }
    /* Anything after the payload is an error; count it (bounded) for the message. */
    {
        unsigned char junk[4096];
        size_t extra = 0;
        do {
            rc = src_read(s, junk, sizeof junk, &got, why, wl);
            if (rc != STARLING_OK)
                goto fail;
            extra += got;
        } while (got == sizeof junk && extra < TRAILING_COUNT_MAX);
        if (extra > 0) {
            starling__why(why, wl, "%s: %s%zu trailing bytes after the %zu bytes of %s", s->path,
                    extra >= TRAILING_COUNT_MAX ? "at least " : "", extra, need, what);
            rc = STARLING_E_CORRUPT;
            goto fail;
        }
    }
    *out = buf;
    return STARLING_OK;
fail:
    starling__free(buf);
    return rc;
}

int starling__idx_read_images(const char *path, uint8_t **pixels, size_t *count, char *why,
                              size_t wl)
{
    src s;
    uint32_t dims[3];
    uint8_t *data = NULL;
    int rc;
    if (!path || !pixels || !count) {
        starling__why(why, wl, "idx: NULL argument");
        return STARLING_E_INVALID;
    }
    rc = src_open(&s, path, why, wl);
    if (rc != STARLING_OK)
        return rc;
    rc = read_header(&s, STARLING__IDX_MAGIC_IMAGES, 3, dims, why, wl);
    if (rc != STARLING_OK)
        goto done;
    if (dims[1] != STARLING__IDX_SIDE || dims[2] != STARLING__IDX_SIDE) {
        starling__why(why, wl, "%s: images are %ux%u, expected %dx%d", path, (unsigned)dims[1],
                (unsigned)dims[2], STARLING__IDX_SIDE, STARLING__IDX_SIDE);
        rc = STARLING_E_CORRUPT;
        goto done;
    }
    rc = read_payload(&s, (size_t)dims[0] * STARLING__IDX_SIDE * STARLING__IDX_SIDE, "pixel data",
                      &data, why, wl);
    if (rc != STARLING_OK)
        goto done;
    *pixels = data;
    *count = dims[0];
done:
    src_close(&s);
    return rc;
}

int starling__idx_read_labels(const char *path, uint8_t **labels, size_t *count, char *why,
                              size_t wl)
{
    src s;
    uint32_t dims[1];
    uint8_t *data = NULL;
    int rc;
    if (!path || !labels || !count) {
        starling__why(why, wl, "idx: NULL argument");
        return STARLING_E_INVALID;
    }
    rc = src_open(&s, path, why, wl);
    if (rc != STARLING_OK)
        return rc;
    rc = read_header(&s, STARLING__IDX_MAGIC_LABELS, 1, dims, why, wl);
    if (rc != STARLING_OK)
        goto done;
    rc = read_payload(&s, dims[0], "labels", &data, why, wl);
    if (rc != STARLING_OK)
        goto done;
    for (size_t i = 0; i < dims[0]; i++) {
        if (data[i] >= STARLING__IDX_CLASSES) {
            starling__why(why, wl, "%s: label %u at index %zu is out of range (expected 0..%d)", path,
                    (unsigned)data[i], i, STARLING__IDX_CLASSES - 1);
            starling__free(data);
            rc = STARLING_E_CORRUPT;
            goto done;
        }
    }
    *labels = data;
    *count = dims[0];
done:
    src_close(&s);
    return rc;
}
