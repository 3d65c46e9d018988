#include "util/spec_lex.h"

#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int starling__token_is(const char *s, size_t len, const char *word)
{
    return strlen(word) == len && memcmp(s, word, len) == 0;
}

long starling__parse_small_uint(const char *s, size_t len)
{
    long v = 0;
    size_t i;
    if (len == 0 || len > 9)
        return -1;
    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

double starling__c_strtod(const char *s, char **end)
{
    locale_t c = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    locale_t old = c ? uselocale(c) : (locale_t)0;
    double v = strtod(s, end);
    if (c) {
        uselocale(old);
        freelocale(c);
    }
    return v;
}

void starling__c_format_g9(char *out, size_t cap, double v)
{
    locale_t c = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    locale_t old = c ? uselocale(c) : (locale_t)0;
    snprintf(out, cap, "%.9g", v);
    if (c) {
        uselocale(old);
        freelocale(c);
    }
}
