/* Bounds-checked little-endian readers and writers. A reader that runs past its end sets
 * `err` and returns zeros from then on, so a decoder checks once at the end. */
#ifndef STARLING_PROTO_WIRE_H
#define STARLING_PROTO_WIRE_H
#include <stddef.h>
#include <stdint.h>

typedef struct starling__wbuf {
    uint8_t *p;
    size_t cap, len;
    int err;
} starling__wbuf;

typedef struct starling__rbuf {
    const uint8_t *p;
    size_t len, off;
    int err;
} starling__rbuf;

void starling__w_init(starling__wbuf *w, void *buf, size_t cap);
void starling__w_u8(starling__wbuf *w, uint8_t v);
void starling__w_u16(starling__wbuf *w, uint16_t v);
void starling__w_u32(starling__wbuf *w, uint32_t v);
void starling__w_u64(starling__wbuf *w, uint64_t v);
void starling__w_bytes(starling__wbuf *w, const void *src, size_t n);
/* u8 length, then the bytes (no NUL). Strings longer than 255 set err. */
void starling__w_str(starling__wbuf *w, const char *s);

void starling__r_init(starling__rbuf *r, const void *buf, size_t len);
uint8_t starling__r_u8(starling__rbuf *r);
uint16_t starling__r_u16(starling__rbuf *r);
uint32_t starling__r_u32(starling__rbuf *r);
uint64_t starling__r_u64(starling__rbuf *r);
void starling__r_bytes(starling__rbuf *r, void *dst, size_t n);
/* Reads a u8-length string into dst (cap bytes incl. NUL); refuses a string that does
 * not fit or holds a NUL or a control character. */
void starling__r_str(starling__rbuf *r, char *dst, size_t cap);
/* 0 if the whole buffer was consumed without error, else STARLING_E_PROTOCOL. */
int starling__r_finish(const starling__rbuf *r);
#endif
