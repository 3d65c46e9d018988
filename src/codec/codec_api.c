/* The public codec handle: a parsed codec plus its canonical spec, and standalone
 * encode/decode for applications (tests, benchmarks, their own transports). The
 * collectives call the internal functions of codec.h directly.
 *
 * Encoded form: the payload of the lossy codec (dense bytes, a sparse blob, or for
 * "none" the f32 bytes); with a zstd stage, one flag byte first (0: the payload follows
 * raw, 1: a zstd frame of it follows). "+ef" does nothing here: error feedback needs
 * state across calls, which the collectives keep. */
#include <stdio.h>
#include <string.h>

#include "codec/codec.h"
#include "starling.h"
#include "util/alloc.h"

struct starling_codec {
    starling__codec c;
    char spec[STARLING_CODEC_SPEC_MAX];
};

#define ZSTD_FLAG_RAW 0
#define ZSTD_FLAG_PACKED 1

int starling_codec_create(starling_codec **out, const char *spec, char *err, size_t errlen)
{
    starling__codec c;
    starling_codec *codec;
    int rc;

    if (err && errlen > 0)
        err[0] = '\0';
    if (!out) {
        if (err && errlen > 0)
            snprintf(err, errlen, "out is NULL");
        return STARLING_E_INVALID;
    }
    *out = NULL;
    rc = starling__codec_parse(spec, &c, err, errlen);
    if (rc != STARLING_OK)
        return rc;
    codec = starling__malloc(sizeof *codec);
    if (!codec)
        return STARLING_E_NOMEM;
    codec->c = c;
    starling__codec_format(&c, codec->spec, sizeof codec->spec);
    *out = codec;
    return STARLING_OK;
}

void starling_codec_destroy(starling_codec *codec) { starling__free(codec); }

const char *starling_codec_spec(const starling_codec *codec) { return codec ? codec->spec : NULL; }

/* Bytes of the lossy payload for count elements, or SIZE_MAX if that overflows. */
static size_t payload_size(const starling__codec *c, size_t count)
{
    if (count > SIZE_MAX / 8)
        return SIZE_MAX;
    if (starling__codec_is_sparse(c))
        return starling__sparse_size(c, count);
    return starling__dense_size(c, count); /* "none": 4 * count */
}

size_t starling_codec_max_encoded(const starling_codec *codec, size_t count)
{
    size_t p;
    if (!codec)
        return 0;
    p = payload_size(&codec->c, count);
    if (p == SIZE_MAX)
        return SIZE_MAX;
    return p + (codec->c.zstd_level > 0);
}

/* Writes the lossy payload of in[0..count) to out (payload_size bytes). */
static int encode_payload(const starling__codec *c, const float *in, size_t count, uint64_t seed,
                          uint8_t *out)
{
    if (starling__codec_is_sparse(c))
        return starling__sparse_encode(c, in, count, seed, out, NULL);
    starling__dense_encode(c, in, count, seed, out, NULL);
    return STARLING_OK;
}

int starling_codec_encode(const starling_codec *codec, const float *in, size_t count, uint64_t seed,
                          void *out, size_t out_cap, size_t *out_len)
{
    const starling__codec *c;
    uint8_t *dst = out;
    size_t psize, need, packed;
    uint8_t *tmp;
    starling__zstd *z;
    int rc;

    if (!codec || !out_len || (!in && count > 0))
        return STARLING_E_INVALID;
    c = &codec->c;
    need = starling_codec_max_encoded(codec, count);
    if (need == SIZE_MAX || out_cap < need || (!out && need > 0))
        return STARLING_E_INVALID;
    psize = payload_size(c, count);
    if (c->zstd_level == 0) {
        rc = encode_payload(c, in, count, seed, dst);
        if (rc == STARLING_OK)
            *out_len = psize;
        return rc;
    }

    /* Encode into place after the flag byte, then try to compress it into a scratch
     * buffer one byte smaller (zstd_pack refuses anything that does not shrink). */
    dst[0] = ZSTD_FLAG_RAW;
    rc = encode_payload(c, in, count, seed, dst + 1);
    if (rc != STARLING_OK)
        return rc;
    *out_len = 1 + psize;
    if (psize == 0)
        return STARLING_OK;
    tmp = starling__malloc(psize);
    z = starling__zstd_new();
    if (!tmp || !z) {
        starling__free(tmp);
        starling__zstd_free(z);
        return STARLING_E_NOMEM;
    }
    packed = starling__zstd_pack(z, c->zstd_level, dst + 1, psize, tmp, psize);
    if (packed > 0) {
        dst[0] = ZSTD_FLAG_PACKED;
        memcpy(dst + 1, tmp, packed);
        *out_len = 1 + packed;
    }
    starling__zstd_free(z);
    starling__free(tmp);
    return STARLING_OK;
}

/* Decodes a payload of exactly payload_size bytes into out. */
static int decode_payload(const starling__codec *c, const uint8_t *p, size_t len, size_t count,
                          uint64_t seed, float *out)
{
    if (starling__codec_is_sparse(c)) {
        if (count > 0)
            memset(out, 0, count * sizeof *out);
        return starling__sparse_accumulate(c, p, len, count, seed, out);
    }
    if (len != starling__dense_size(c, count))
        return STARLING_E_PROTOCOL;
    starling__dense_decode(c, p, count, out);
    return STARLING_OK;
}

int starling_codec_decode(const starling_codec *codec, const void *in, size_t len, size_t count,
                          uint64_t seed, float *out)
{
    const starling__codec *c;
    const uint8_t *src = in;
    size_t psize;
    uint8_t *tmp;
    starling__zstd *z;
    int rc;

    if (!codec || (!in && len > 0) || (!out && count > 0))
        return STARLING_E_INVALID;
    c = &codec->c;
    psize = payload_size(c, count);
    if (psize == SIZE_MAX)
        return STARLING_E_INVALID;
    if (c->zstd_level == 0) {
        if (len != psize)
            return STARLING_E_PROTOCOL;
        return decode_payload(c, src, len, count, seed, out);
    }

    if (len < 1)
        return STARLING_E_PROTOCOL;
    if (src[0] == ZSTD_FLAG_RAW) {
        if (len - 1 != psize)
            return STARLING_E_PROTOCOL;
        return decode_payload(c, src + 1, len - 1, count, seed, out);
    }
    if (src[0] != ZSTD_FLAG_PACKED || psize == 0)
        return STARLING_E_PROTOCOL;
    tmp = starling__malloc(psize);
    z = starling__zstd_new();
    if (!tmp || !z) {
        rc = STARLING_E_NOMEM;
        goto out;
    }
    rc = starling__zstd_unpack(z, src + 1, len - 1, tmp, psize);
    if (rc == STARLING_OK)
        rc = decode_payload(c, tmp, psize, count, seed, out);
out:
    starling__zstd_free(z);
    starling__free(tmp);
    return rc;
}

const starling__codec *starling__codec_of(const starling_codec *codec) { return &codec->c; }
