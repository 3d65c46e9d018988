#include "proto/wire.h"

#include <string.h>

#include "starling.h"

void starling__w_init(starling__wbuf *w, void *buf, size_t cap)
{
    w->p = buf;
    w->cap = cap;
    w->len = 0;
    w->err = 0;
}

static uint8_t *w_take(starling__wbuf *w, size_t n)
{
    uint8_t *at;
    if (w->err || w->cap - w->len < n) {
        w->err = 1;
        return NULL;
    }
    at = w->p + w->len;
    w->len += n;
    return at;
}

void starling__w_u8(starling__wbuf *w, uint8_t v)
{
    uint8_t *at = w_take(w, 1);
    if (at)
        at[0] = v;
}

void starling__w_u16(starling__wbuf *w, uint16_t v)
{
    uint8_t *at = w_take(w, 2);
    if (at) {
        at[0] = (uint8_t)v;
        at[1] = (uint8_t)(v >> 8);
    }
}

void starling__w_u32(starling__wbuf *w, uint32_t v)
{
    uint8_t *at = w_take(w, 4);
    if (at)
        for (int i = 0; i < 4; i++)
            at[i] = (uint8_t)(v >> (8 * i));
}

void starling__w_u64(starling__wbuf *w, uint64_t v)
{
    uint8_t *at = w_take(w, 8);
    if (at)
        for (int i = 0; i < 8; i++)
            at[i] = (uint8_t)(v >> (8 * i));
}

void starling__w_bytes(starling__wbuf *w, const void *src, size_t n)
{
    uint8_t *at = w_take(w, n);
    if (at && n)
        memcpy(at, src, n);
}

void starling__w_str(starling__wbuf *w, const char *s)
{
    size_t n = strlen(s);
    if (n > 255) {
        w->err = 1;
        return;
    }
    starling__w_u8(w, (uint8_t)n);
    starling__w_bytes(w, s, n);
}

void starling__r_init(starling__rbuf *r, const void *buf, size_t len)
{
    r->p = buf;
    r->len = len;
    r->off = 0;
    r->err = 0;
}

static const uint8_t *r_take(starling__rbuf *r, size_t n)
{
    const uint8_t *at;
    if (r->err || r->len - r->off < n) {
        r->err = 1;
        return NULL;
    }
    at = r->p + r->off;
    r->off += n;
    return at;
}

uint8_t starling__r_u8(starling__rbuf *r)
{
    const uint8_t *at = r_take(r, 1);
    return at ? at[0] : 0;
}

uint16_t starling__r_u16(starling__rbuf *r)
{
    const uint8_t *at = r_take(r, 2);
    return at ? (uint16_t)(at[0] | (at[1] << 8)) : 0;
}

uint32_t starling__r_u32(starling__rbuf *r)
{
    const uint8_t *at = r_take(r, 4);
    uint32_t v = 0;
    if (at)
        for (int i = 3; i >= 0; i--)
            v = (v << 8) | at[i];
    return v;
}

uint64_t starling__r_u64(starling__rbuf *r)
{
    const uint8_t *at = r_take(r, 8);
    uint64_t v = 0;
    if (at)
        for (int i = 7; i >= 0; i--)
            v = (v << 8) | at[i];
    return v;
}

void starling__r_bytes(starling__rbuf *r, void *dst, size_t n)
{
    const uint8_t *at = r_take(r, n);
    if (at && n)
        memcpy(dst, at, n);
    else if (n)
        memset(dst, 0, n);
}

void starling__r_str(starling__rbuf *r, char *dst, size_t cap)
{
    size_t n = starling__r_u8(r);
    const uint8_t *at;
    dst[0] = '\0';
    if (r->err)
        return;
    if (n >= cap) {
        r->err = 1;
        return;
    }
    at = r_take(r, n);
    if (!at)
        return;
    for (size_t i = 0; i < n; i++)
        if (at[i] < 0x20 || at[i] == 0x7f) {
            r->err = 1;
            return;
        }
    memcpy(dst, at, n);
    dst[n] = '\0';
}

int starling__r_finish(const starling__rbuf *r)
{
    return (r->err || r->off != r->len) ? STARLING_E_PROTOCOL : STARLING_OK;
}
