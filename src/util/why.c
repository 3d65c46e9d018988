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
