#include "util/alloc.h"

#include <stdlib.h>
#include <string.h>

static long fail_after; /* 0: never fail; test hook only */

static int should_fail(void)
{
    if (fail_after <= 0)
        return 0;
    if (fail_after == 1)
        return 1;
    fail_after--;
    return 0;
}

void starling__alloc_fail_after(long n) { fail_after = n; }

void *starling__malloc(size_t n)
{
    if (should_fail())
        return NULL;
    return malloc(n ? n : 1);
}

void *starling__calloc(size_t count, size_t size)
{
    if (should_fail())
        return NULL;
    return calloc(count ? count : 1, size ? size : 1);
}

void *starling__realloc(void *p, size_t n)
{
    if (should_fail())
        return NULL;
    return realloc(p, n ? n : 1);
}

void *starling__alloc_aligned(size_t n)
{
    void *p = NULL;
    if (should_fail())
        return NULL;
    if (posix_memalign(&p, 4096, n ? n : 1) != 0)
        return NULL;
    return p;
}

void starling__free(void *p) { free(p); }

char *starling__strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = starling__malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}
