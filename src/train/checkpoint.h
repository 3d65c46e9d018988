/* Checkpoint files: the shared state of a training run, written atomically.
 *
 * Format of DIR/checkpoint.bin (integers little-endian):
 *   u8  magic[8]   "STRLCKPT"
 *   u32 version    STARLING__CKPT_VERSION
 *   u32 algo       the trainer's algorithm (0 ddp, 1 diloco, 2 streaming)
 *   u64 step       the run's step counter
 *   u32 ntensors
 *   ntensors times:
 *     u32 name_len (1..63), name bytes (no NUL), u32 dtype, u64 count, u64 nbytes,
 *     nbytes of data (the tensor's bytes as held in memory: little-endian on x86)
 *   u8  checksum[16]  XXH3-128 of every byte before it (high 64 bits, then low, LE)
 *
 * Writing goes to a temporary file in the same directory, which is fsynced, renamed over
 * checkpoint.bin, and then the directory is fsynced: a reader sees the old file or the
 * new one, never a torn mix (promise 4). */
#ifndef STARLING_TRAIN_CHECKPOINT_H
#define STARLING_TRAIN_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "starling.h"

#define STARLING__CKPT_VERSION 1u
#define STARLING__CKPT_FILE "checkpoint.bin"

typedef struct starling__ckpt_tensor {
    const char *name;
    void *data; /* written from / read into */
    size_t count;
    starling_dtype dtype;
} starling__ckpt_tensor;

/* Writes dir/checkpoint.bin (creates dir if absent). Errors: STARLING_E_OS (errno text in
 * why), STARLING_E_NOMEM, STARLING_E_INVALID. */
int starling__ckpt_write(const char *dir, uint32_t algo, uint64_t step,
                         const starling__ckpt_tensor *t, size_t nt, char *why, size_t wl);

/* Reads `path` and validates everything before touching the outputs: magic, version,
 * checksum, algo (== algo), and that the file holds exactly the tensors t[0..nt) in that
 * order with the same names, dtypes and counts. Then copies the data into t[i].data and
 * sets *step. Errors: STARLING_E_NOT_FOUND (no file), STARLING_E_OS, STARLING_E_NOMEM,
 * STARLING_E_CORRUPT (anything wrong with the content; why says what). */
int starling__ckpt_read(const char *path, uint32_t algo, uint64_t *step,
                        const starling__ckpt_tensor *t, size_t nt, char *why, size_t wl);

#endif
