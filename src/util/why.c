#include "util/why.h"

#include <stdarg.h>
#include <stdio.h>

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
