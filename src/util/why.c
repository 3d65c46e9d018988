#include "util/why.h"

#include <stdarg.h>
#include <stdio.h>

#include "starling.h"

void starling__why(char *why, size_t wl, const char *fmt, ...)
{
    va_list ap;
    if (!why || wl == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(why, wl, fmt, ap);
    va_end(ap);
}

int starling__refuse(starling__why_buf *e, const char *fmt, ...)
{
    va_list ap;
    if (e->why && e->wl > 0) {
        va_start(ap, fmt);
        vsnprintf(e->why, e->wl, fmt, ap);
        va_end(ap);
    }
    return STARLING_E_INVALID;
}

/* The last failure of starling_comm_create / starling_coord_create on this thread: there
 * is no handle yet to carry its text. */
static __thread char last_error[256];

int starling__last_error_set(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return STARLING_E_INVALID;
}

void starling__last_error_clear(void) { last_error[0] = '\0'; }

const char *starling_last_error(void) { return last_error; }
