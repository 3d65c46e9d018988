/* The lossless stage: one zstd frame per payload, with the content size in its header
 * (zstd writes it by default when the size is known up front, as here). The receiver
 * knows how many bytes to expect, so it checks that size before decompressing and
 * never needs to guess a buffer size from remote data.
 *
 * The contexts are kept and reused: creating a compression context allocates its
 * workspace (about 1 MiB at level 3), which would dominate small payloads. zstd
 * allocates through its own malloc; starling__alloc_fail_after covers only the struct. */
#include "codec/codec.h"

#include <zstd.h>

#include "starling.h"
#include "util/alloc.h"

struct starling__zstd {
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
};

starling__zstd *starling__zstd_new(void)
{
    starling__zstd *z = starling__malloc(sizeof *z);
    if (!z)
        return NULL;
    z->cctx = ZSTD_createCCtx();
    z->dctx = ZSTD_createDCtx();
    if (!z->cctx || !z->dctx) {
        starling__zstd_free(z);
        return NULL;
    }
    return z;
}

void starling__zstd_free(starling__zstd *z)
{
    if (!z)
        return;
    ZSTD_freeCCtx(z->cctx);
    ZSTD_freeDCtx(z->dctx);
    starling__free(z);
}

size_t starling__zstd_pack(starling__zstd *z, int level, const uint8_t *src, size_t n, uint8_t *dst,
                           size_t cap)
{
    size_t r;
    if (n == 0)
        return 0;
    /* A dst smaller than the frame makes zstd stop with an error: the same answer as a
     * frame that does not shrink. */
    r = ZSTD_compressCCtx(z->cctx, dst, cap, src, n, level);
    if (ZSTD_isError(r) || r >= n)
        return 0;
    return r;
}

int starling__zstd_unpack(starling__zstd *z, const uint8_t *src, size_t n, uint8_t *dst,
                          size_t expect)
{
    unsigned long long content = ZSTD_getFrameContentSize(src, n);
    size_t r;

    if (content == ZSTD_CONTENTSIZE_UNKNOWN || content == ZSTD_CONTENTSIZE_ERROR ||
        content != (unsigned long long)expect)
        return STARLING_E_PROTOCOL;
    /* Exactly one frame and nothing after it: ZSTD_decompressDCtx would go on to decode
     * a second frame, or a skippable one, into the same buffer. */
    r = ZSTD_findFrameCompressedSize(src, n);
    if (ZSTD_isError(r) || r != n)
        return STARLING_E_PROTOCOL;
    r = ZSTD_decompressDCtx(z->dctx, dst, expect, src, n);
    if (ZSTD_isError(r) || r != expect)
        return STARLING_E_PROTOCOL;
    return STARLING_OK;
}
