/* Atomic, checksummed checkpoint files (format in checkpoint.h). */
#include "train/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "util/alloc.h"
#include "util/why.h"

#define CKPT_MAGIC "STRLCKPT"
#define CKPT_MAX_FILE ((uint64_t)1 << 36) /* 64 GiB: far above any model here */

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int starling__ckpt_write(const char *dir, uint32_t algo, uint64_t step,
                         const starling__ckpt_tensor *t, size_t nt, char *why, size_t wl)
{
    size_t total = 8 + 4 + 4 + 8 + 4 + 16, off = 0;
    uint8_t *buf;
    char tmp[4200], final[4200];
    int fd, dfd, rc = STARLING_OK;
    XXH128_hash_t h;

    if (!dir || !*dir || (nt && !t)) {
        starling__why(why, wl, "checkpoint: no directory given");
        return STARLING_E_INVALID;
    }
    for (size_t i = 0; i < nt; i++) {
        size_t nl = strlen(t[i].name), es = starling_dtype_size(t[i].dtype);
        if (nl < 1 || nl > 63 || !es) {
            starling__why(why, wl, "checkpoint: bad tensor %zu", i);
            return STARLING_E_INVALID;
        }
        total += 4 + nl + 4 + 8 + 8 + t[i].count * es;
    }
    if (snprintf(final, sizeof final, "%s/%s", dir, STARLING__CKPT_FILE) >= (int)sizeof final ||
        snprintf(tmp, sizeof tmp, "%s/.%s.XXXXXX", dir, STARLING__CKPT_FILE) >= (int)sizeof tmp) {
        starling__why(why, wl, "checkpoint: directory name too long");
        return STARLING_E_INVALID;
    }
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        starling__why(why, wl, "checkpoint: mkdir %s: %s", dir, strerror(errno));
        return STARLING_E_OS;
    }
    buf = starling__malloc(total);
    if (!buf) {
        starling__why(why, wl, "checkpoint: out of memory (%zu bytes)", total);
        return STARLING_E_NOMEM;
    }
    memcpy(buf, CKPT_MAGIC, 8);
    put_u32(buf + 8, STARLING__CKPT_VERSION);
    put_u32(buf + 12, algo);
    put_u64(buf + 16, step);
    put_u32(buf + 24, (uint32_t)nt);
    off = 28;
    for (size_t i = 0; i < nt; i++) {
        size_t nl = strlen(t[i].name), nb = t[i].count * starling_dtype_size(t[i].dtype);
        put_u32(buf + off, (uint32_t)nl);
        memcpy(buf + off + 4, t[i].name, nl);
        off += 4 + nl;
        put_u32(buf + off, (uint32_t)t[i].dtype);
        put_u64(buf + off + 4, t[i].count);
        put_u64(buf + off + 12, nb);
        off += 20;
        if (nb)
            memcpy(buf + off, t[i].data, nb);
        off += nb;
    }
    h = XXH3_128bits(buf, off);
    put_u64(buf + off, h.high64);
    put_u64(buf + off + 8, h.low64);
    off += 16;

    fd = mkstemp(tmp);
    if (fd < 0) {
        starling__why(why, wl, "checkpoint: create %s: %s", tmp, strerror(errno));
        starling__free(buf);
        return STARLING_E_OS;
    }
    if (write_all(fd, buf, off) != 0 || fsync(fd) != 0) {
        starling__why(why, wl, "checkpoint: write %s: %s", tmp, strerror(errno));
        rc = STARLING_E_OS;
    }
    if (close(fd) != 0 && rc == STARLING_OK) {
        starling__why(why, wl, "checkpoint: close %s: %s", tmp, strerror(errno));
        rc = STARLING_E_OS;
    }
    if (rc == STARLING_OK && rename(tmp, final) != 0) {
        starling__why(why, wl, "checkpoint: rename to %s: %s", final, strerror(errno));
        rc = STARLING_E_OS;
    }
    if (rc != STARLING_OK)
        unlink(tmp);
    starling__free(buf);
    if (rc != STARLING_OK)
        return rc;
    /* The rename is durable only once the directory entry is. */
    dfd = open(dir, O_RDONLY);
    if (dfd < 0 || fsync(dfd) != 0) {
        starling__why(why, wl, "checkpoint: fsync directory %s: %s", dir, strerror(errno));
        rc = STARLING_E_OS;
    }
    if (dfd >= 0)
        close(dfd);
    return rc;
}

static int read_file(const char *path, uint8_t **out, size_t *len, char *why, size_t wl)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t cap = 0, n = 0;
    if (!f) {
        int e = errno;
        starling__why(why, wl, "%s: %s", path, strerror(e));
        return e == ENOENT ? STARLING_E_NOT_FOUND : STARLING_E_OS;
    }
    for (;;) {
        size_t r;
        if (n == cap) {
            uint8_t *nb;
            if ((uint64_t)cap >= CKPT_MAX_FILE) {
                starling__why(why, wl, "%s: larger than %llu bytes", path,
                        (unsigned long long)CKPT_MAX_FILE);
                starling__free(buf);
                fclose(f);
                return STARLING_E_CORRUPT;
            }
            cap = cap ? cap * 2 : (1u << 20);
            nb = starling__realloc(buf, cap);
            if (!nb) {
                starling__why(why, wl, "%s: out of memory", path);
                starling__free(buf);
                fclose(f);
                return STARLING_E_NOMEM;
            }
            buf = nb;
        }
        r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) {
                starling__why(why, wl, "%s: read: %s", path, strerror(errno));
                starling__free(buf);
                fclose(f);
                return STARLING_E_OS;
            }
            break;
        }
    }
    fclose(f);
    *out = buf;
    *len = n;
    return STARLING_OK;
}

int starling__ckpt_read(const char *path, uint32_t algo, uint64_t *step,
                        const starling__ckpt_tensor *t, size_t nt, char *why, size_t wl)
{
    uint8_t *buf = NULL;
    size_t len = 0, off, body;
    uint32_t ver, falgo, fnt;
    XXH128_hash_t h;
    int rc;

    if (!path || !step || (nt && !t))
        return STARLING_E_INVALID;
    rc = read_file(path, &buf, &len, why, wl);
    if (rc != STARLING_OK)
        return rc;
    rc = STARLING_E_CORRUPT;
    if (len < 8 || memcmp(buf, CKPT_MAGIC, 8) != 0) {
        starling__why(why, wl, "%s: not a starling checkpoint (bad magic)", path);
        goto out;
    }
    if (len < 28 + 16) {
        starling__why(why, wl, "%s: truncated (%zu bytes)", path, len);
        goto out;
    }
    ver = get_u32(buf + 8);
    if (ver != STARLING__CKPT_VERSION) {
        starling__why(why, wl, "%s: checkpoint version %u, this library reads version %u", path, ver,
                STARLING__CKPT_VERSION);
        goto out;
    }
    body = len - 16;
    h = XXH3_128bits(buf, body);
    if (get_u64(buf + body) != h.high64 || get_u64(buf + body + 8) != h.low64) {
        starling__why(why, wl, "%s: checksum mismatch (file damaged or truncated)", path);
        goto out;
    }
    falgo = get_u32(buf + 12);
    if (falgo != algo) {
        starling__why(why, wl, "%s: written by algorithm %u, this run uses %u", path, falgo, algo);
        goto out;
    }
    fnt = get_u32(buf + 24);
    if (fnt != nt) {
        starling__why(why, wl, "%s: holds %u tensors, the model has %zu", path, fnt, nt);
        goto out;
    }
    /* Pass 1 validates the layout, pass 2 copies: a refused file changes nothing. */
    for (int pass = 0; pass < 2; pass++) {
        off = 28;
        for (size_t i = 0; i < nt; i++) {
            uint32_t nl, dt;
            uint64_t cnt, nb;
            size_t es = starling_dtype_size(t[i].dtype);
            if (body - off < 4 || (nl = get_u32(buf + off)) < 1 || nl > 63 ||
                body - off - 4 < (uint64_t)nl + 20) {
                starling__why(why, wl, "%s: tensor %zu: bad header", path, i);
                goto out;
            }
            if (nl != strlen(t[i].name) || memcmp(buf + off + 4, t[i].name, nl) != 0) {
                starling__why(why, wl, "%s: tensor %zu is \"%.*s\", expected \"%s\"", path, i, (int)nl,
                        (const char *)buf + off + 4, t[i].name);
                goto out;
            }
            off += 4 + nl;
            dt = get_u32(buf + off);
            cnt = get_u64(buf + off + 4);
            nb = get_u64(buf + off + 12);
            off += 20;
            if (dt != (uint32_t)t[i].dtype || cnt != t[i].count) {
                starling__why(why, wl,
                        "%s: tensor \"%s\" has %llu elements of dtype %u, the model needs %zu "
                        "of dtype %d (different model size?)",
                        path, t[i].name, (unsigned long long)cnt, dt, t[i].count, (int)t[i].dtype);
                goto out;
            }
            if (nb != cnt * es || nb > body - off) {
                starling__why(why, wl, "%s: tensor \"%s\": %llu data bytes, bad or truncated", path,
                        t[i].name, (unsigned long long)nb);
                goto out;
            }
            if (pass == 1 && nb)
                memcpy(t[i].data, buf + off, nb);
            off += nb;
        }
        if (off != body) {
            starling__why(why, wl, "%s: %zu unexpected bytes after the tensors", path, body - off);
            goto out;
        }
    }
    *step = get_u64(buf + 16);
    rc = STARLING_OK;
out:
    starling__free(buf);
    return rc;
}
