/* Reader for IDX files (the MNIST / Fashion-MNIST container), gzip-compressed or plain.
 *
 * An IDX file is a big-endian header followed by raw items:
 *   u32 magic = 0x0000 | type | ndims   (type 0x08 = unsigned byte)
 *   u32 dims[ndims]                     (dims[0] = item count)
 *   u8  data[prod(dims)]
 * Images are magic 0x00000803 (count x 28 x 28, row-major, 0 = background) and labels
 * magic 0x00000801 (count, each 0..9). The file may be a gzip stream (as Debian ships
 * `*-ubyte.gz`, detected by its 1f 8b signature; several concatenated members are
 * accepted, as gunzip does) or a plain IDX file.
 *
 * Everything is validated before it is trusted: the magic, the dimensions (28 x 28,
 * 1 <= count <= STARLING__IDX_MAX_COUNT), the gzip stream itself (CRC and length are
 * checked by zlib), the payload length (no truncation, nothing after it) and each label
 * (< 10). The buffer grows as data actually arrives, so a small file with a huge count
 * in its header fails as truncated instead of allocating the claimed size up front.
 *
 * Errors: STARLING_E_NOT_FOUND (no such file), STARLING_E_OS (open/read failed, errno
 * text in the message), STARLING_E_CORRUPT (anything wrong with the content),
 * STARLING_E_NOMEM, STARLING_E_INVALID (NULL arguments). On error `why` (wl bytes,
 * NUL-terminated; may be NULL) holds "PATH: what is wrong" and the outputs are untouched.
 * All memory comes from starling__malloc (zlib's too); free results with starling__free. */
#ifndef STARLING_DATA_IDX_H
#define STARLING_DATA_IDX_H

#include <stddef.h>
#include <stdint.h>

#define STARLING__IDX_MAGIC_LABELS 0x00000801u
#define STARLING__IDX_MAGIC_IMAGES 0x00000803u
#define STARLING__IDX_SIDE 28           /* images are SIDE x SIDE */
#define STARLING__IDX_CLASSES 10        /* labels are 0..CLASSES-1 */
#define STARLING__IDX_MAX_COUNT 1000000 /* items per file; Fashion-MNIST has 60000 */

/* Reads an image file: *pixels = count x 28 x 28 bytes, row-major; *count = items. */
int starling__idx_read_images(const char *path, uint8_t **pixels, size_t *count, char *why,
                              size_t wl);

/* Reads a label file: *labels = count bytes, each < STARLING__IDX_CLASSES. */
int starling__idx_read_labels(const char *path, uint8_t **labels, size_t *count, char *why,
                              size_t wl);

#endif
