/* All library allocation goes through these, so tests can fail the Nth allocation. */
#ifndef STARLING_UTIL_ALLOC_H
#define STARLING_UTIL_ALLOC_H
#include <stddef.h>

void *starling__malloc(size_t n);
void *starling__calloc(size_t count, size_t size);
void *starling__realloc(void *p, size_t n);
/* Page-aligned large buffer (scratch for collectives). */
void *starling__alloc_aligned(size_t n);
void starling__free(void *p);
char *starling__strdup(const char *s);

/* Test hook: the Nth allocation from now (1-based) and every one after it fails;
 * 0 disables. Not thread-safe: set it before starting threads. */
void starling__alloc_fail_after(long n);
#endif
