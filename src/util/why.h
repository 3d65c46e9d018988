/* The "why" convention: functions that can refuse their input take (char *why, size_t wl)
 * and write one line saying what was wrong, naming the value or the file. */
#ifndef STARLING_UTIL_WHY_H
#define STARLING_UTIL_WHY_H
#include <stddef.h>

#include "util/log.h"

/* Formats into why (wl bytes, always NUL-terminated); does nothing if why is NULL or
 * wl is 0. */
void starling__why(char *why, size_t wl, const char *fmt, ...) STARLING_PRINTF(3, 4);

/* For parsers that pass their caller's buffer down: the same, returning
 * STARLING_E_INVALID so that `return starling__refuse(e, ...)` reads as what it does. */
typedef struct starling__why_buf {
    char *why;
    size_t wl;
} starling__why_buf;
int starling__refuse(starling__why_buf *e, const char *fmt, ...) STARLING_PRINTF(2, 3);
/* The text starling_last_error() returns (this thread's): set by the create functions
 * that fail before a handle exists. _set returns STARLING_E_INVALID. */
int starling__last_error_set(const char *fmt, ...) STARLING_PRINTF(1, 2);
void starling__last_error_clear(void);
#endif
