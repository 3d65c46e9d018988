/* Small lexing helpers shared by the spec parsers (codec specs, aggregator specs): exact
 * tokens, bounded integers, and numbers read and written in the "C" locale whatever the
 * application set, so that a spec means the same on every machine. */
#ifndef STARLING_UTIL_SPEC_LEX_H
#define STARLING_UTIL_SPEC_LEX_H
#include <stddef.h>

/* 1 if s[0..len) is exactly `word`. */
int starling__token_is(const char *s, size_t len, const char *word);
/* A decimal integer of 1..9 digits and nothing else; -1 otherwise. */
long starling__parse_small_uint(const char *s, size_t len);
/* strtod in the C locale, for this thread only (uselocale is per thread). */
double starling__c_strtod(const char *s, char **end);
/* snprintf "%.9g" in the C locale. */
void starling__c_format_g9(char *out, size_t cap, double v);
#endif
