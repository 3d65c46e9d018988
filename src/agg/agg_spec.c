/* The aggregator spec grammar (docs/aggregation.md):
 *
 *   spec   = [ bucket "+" ] [ "nnm+" ] name [ ":" param { "," param } ]
 *   bucket = "bucket:" S [ ":seed=" N ]   S in 1..10^6, N in 0..999999999 (default 0)
 *   name   = "mean" | "median" | "trimmed_mean" | "krum" | "multikrum" | "geomed"
 *          | "cclip" | "flag"
 *   param  = key "=" value      multikrum: m | geomed: iters, tol | cclip: tau, iters
 *                               | flag: r, iters        (each key at most once)
 *
 * As for codecs, parse() fills every default, so two specs meaning the same aggregator
 * parse to equal structs and format to one canonical string: peers of the robust
 * collective will compare that string, and "geomed" must equal "geomed:iters=100".
 * Numbers are read and written in the "C" locale whatever the application set. */
#include "agg/agg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "starling.h"
#include "util/spec_lex.h"
#include "util/why.h"

#define ITERS_MAX 100000L
#define RANK_MAX 1024L
#define M_MAX 1000000L
#define NUMBER_MAX 48

static const struct {
    const char *name;
    int kind;
} NAMES[] = {{"mean", AGG_MEAN},
             {"median", AGG_MEDIAN},
             {"trimmed_mean", AGG_TRIMMED},
             {"krum", AGG_KRUM},
             {"multikrum", AGG_MULTIKRUM},
             {"geomed", AGG_GEOMED},
             {"cclip", AGG_CCLIP},
             {"flag", AGG_FLAG}};
#define NAME_COUNT (sizeof NAMES / sizeof NAMES[0])

static const char *kind_name(int kind)
{
    size_t i;
    for (i = 0; i < NAME_COUNT; i++)
        if (NAMES[i].kind == kind)
            return NAMES[i].name;
    return "?";
}

/* A positive finite decimal; keeps the value its canonical spelling reads back as. */
static int parse_positive(const char *key, const char *s, size_t len, double *out,
                          starling__why_buf *e)
{
    char buf[NUMBER_MAX + 1], canon[32], *end = NULL;
    double v;
    size_t i;

    if (len == 0 || len > NUMBER_MAX)
        return starling__refuse(e, "%s must be a positive number, got '%.*s'", key, (int)len, s);
    for (i = 0; i < len; i++) /* no hex, inf, nan, signs or spaces: digits . e E - + only */
        if (!strchr("0123456789.eE-+", s[i]) || ((s[i] == '-' || s[i] == '+') && i == 0))
            return starling__refuse(e, "%s must be a positive number, got '%.*s'", key, (int)len,
                                    s);
    memcpy(buf, s, len);
    buf[len] = '\0';
    v = starling__c_strtod(buf, &end);
    if (end != buf + len || !(v > 0.0) || !isfinite(v))
        return starling__refuse(e, "%s must be a positive finite number, got '%s'", key, buf);
    starling__c_format_g9(canon, sizeof canon, v);
    *out = starling__c_strtod(canon, NULL);
    return STARLING_OK;
}

static int parse_count(const char *key, const char *s, size_t len, long lo, long hi, long *out,
                       starling__why_buf *e)
{
    long v = starling__parse_small_uint(s, len);
    if (v < lo || v > hi)
        return starling__refuse(e, "%s must be an integer in %ld..%ld, got '%.*s'", key, lo, hi,
                                (int)len, s);
    *out = v;
    return STARLING_OK;
}

/* One "key=value" for aggregator `a` (its kind and defaults already set). */
static int parse_param(starling__agg *a, const char *s, size_t len, unsigned *seen,
                       starling__why_buf *e)
{
    const char *eq = memchr(s, '=', len);
    const char *name = kind_name(a->kind);
    size_t klen, vlen;
    const char *v;
    unsigned bit;
    int rc;

    if (!eq)
        return starling__refuse(e, "parameter '%.*s' of %s is not key=value", (int)len, s, name);
    klen = (size_t)(eq - s);
    v = eq + 1;
    vlen = len - klen - 1;
    if (a->kind == AGG_MULTIKRUM && starling__token_is(s, klen, "m")) {
        bit = 1;
        rc = parse_count("multikrum m", v, vlen, 1, M_MAX, &a->m, e);
    } else if ((a->kind == AGG_GEOMED || a->kind == AGG_CCLIP || a->kind == AGG_FLAG) &&
               starling__token_is(s, klen, "iters")) {
        bit = 2;
        rc = parse_count("iters", v, vlen, 1, ITERS_MAX, &a->iters, e);
    } else if (a->kind == AGG_GEOMED && starling__token_is(s, klen, "tol")) {
        bit = 4;
        rc = parse_positive("geomed tol", v, vlen, &a->tol, e);
        if (rc == STARLING_OK && a->tol >= 1.0)
            rc = starling__refuse(e, "geomed tol must be below 1, got '%.*s'", (int)vlen, v);
    } else if (a->kind == AGG_CCLIP && starling__token_is(s, klen, "tau")) {
        bit = 8;
        rc = parse_positive("cclip tau", v, vlen, &a->tau, e);
    } else if (a->kind == AGG_FLAG && starling__token_is(s, klen, "r")) {
        bit = 16;
        rc = parse_count("flag r", v, vlen, 1, RANK_MAX, &a->rank, e);
    } else {
        static const char *const expected[] = {"none", "none",       "none",       "none",
                                               "m",    "iters, tol", "tau, iters", "r, iters"};
        return starling__refuse(e, "unknown parameter '%.*s' for %s (expected: %s)", (int)klen, s,
                                name, expected[a->kind]);
    }
    if (rc != STARLING_OK)
        return rc;
    if (*seen & bit)
        return starling__refuse(e, "parameter '%.*s' given twice", (int)klen, s);
    *seen |= bit;
    return STARLING_OK;
}

/* "bucket:S[:seed=N]+" at the start of s: fills a->bucket and a->bucket_seed and
 * returns how many bytes it took (0 when s does not start with "bucket"), or -1 after
 * writing the reason. */
static long parse_bucket(const char *s, starling__agg *a, starling__why_buf *e)
{
    size_t len = strcspn(s, "+"), slen;
    const char *p = s + 7, *end = s + len;
    const char *seed_at;

    if (strncmp(s, "bucket", 6) != 0 || (s[6] != ':' && s[6] != '+' && s[6] != '\0'))
        return 0;
    if (s[6] != ':') {
        starling__refuse(e, "bucket needs a size, e.g. 'bucket:2+median'");
        return -1;
    }
    slen = strcspn(p, ":+");
    if (parse_count("bucket size", p, slen, 1, AGG_BUCKET_MAX, &a->bucket, e) != STARLING_OK)
        return -1;
    seed_at = p + slen;
    if (seed_at < end) { /* ":seed=N" */
        seed_at++;
        if ((size_t)(end - seed_at) < 5 || strncmp(seed_at, "seed=", 5) != 0) {
            starling__refuse(e, "unknown parameter '%.*s' for bucket (expected: seed)",
                             (int)strcspn(seed_at, "=+"), seed_at);
            return -1;
        }
        seed_at += 5;
        if (parse_count("bucket seed", seed_at, (size_t)(end - seed_at), 0, AGG_BUCKET_SEED_MAX,
                        &a->bucket_seed, e) != STARLING_OK)
            return -1;
    }
    if (*end != '+') {
        starling__refuse(e, "%.*s needs an aggregator after it, e.g. 'bucket:2+median'",
                         (int)len, s);
        return -1;
    }
    return (long)len + 1;
}

int starling__agg_parse(const char *spec, starling__agg *out, char *why, size_t wl)
{
    long taken;
    starling__why_buf e;
    starling__agg a;
    const char *s = spec;
    size_t nlen, i;
    unsigned seen = 0;
    int found = 0, rc;

    e.why = why;
    e.wl = wl;
    if (why && wl > 0)
        why[0] = '\0';
    if (!spec)
        return starling__refuse(&e, "no aggregator spec (NULL)");
    if (spec[0] == '\0')
        return starling__refuse(&e, "empty aggregator spec (expected e.g. 'median', 'nnm+krum')");
    memset(&a, 0, sizeof a);
    if ((taken = parse_bucket(s, &a, &e)) < 0)
        return STARLING_E_INVALID;
    s += taken;
    if (strncmp(s, "nnm+", 4) == 0) {
        a.nnm = 1;
        s += 4;
    }
    nlen = strcspn(s, ":+");
    if (starling__token_is(s, nlen, "bucket"))
        return starling__refuse(&e, "%s: bucket:S must come first and at most once, e.g. "
                                    "'bucket:2+nnm+median'",
                                spec);
    for (i = 0; i < NAME_COUNT; i++)
        if (starling__token_is(s, nlen, NAMES[i].name)) {
            a.kind = NAMES[i].kind;
            found = 1;
        }
    if (!found) {
        if (starling__token_is(s, nlen, "nnm"))
            return starling__refuse(&e, "nnm needs an aggregator after it, e.g. 'nnm+median'");
        return starling__refuse(
            &e,
            "unknown aggregator '%.*s' (expected mean, median, trimmed_mean, krum, "
            "multikrum, geomed, cclip or flag, optionally after 'bucket:S+' and 'nnm+')",
            (int)nlen, s);
    }
    switch (a.kind) {
    case AGG_GEOMED:
        a.iters = AGG_GEOMED_ITERS_DEFAULT;
        a.tol = AGG_GEOMED_TOL_DEFAULT;
        break;
    case AGG_CCLIP:
        a.iters = AGG_CCLIP_ITERS_DEFAULT;
        a.tau = AGG_CCLIP_TAU_DEFAULT;
        break;
    case AGG_FLAG:
        a.iters = AGG_FLAG_ITERS_DEFAULT;
        a.rank = AGG_FLAG_RANK_DEFAULT;
        break;
    default: break;
    }
    s += nlen;
    if (*s == '+')
        return starling__refuse(&e, "unexpected '%s' after %s (only 'nnm+' may come first)", s,
                                kind_name(a.kind));
    if (*s == ':') {
        s++;
        for (;;) {
            size_t plen = strcspn(s, ",");
            if (plen == 0)
                return starling__refuse(&e, "empty parameter in '%s'", spec);
            rc = parse_param(&a, s, plen, &seen, &e);
            if (rc != STARLING_OK)
                return rc;
            s += plen;
            if (*s == '\0')
                break;
            s++; /* ',' */
        }
    }
    *out = a;
    return STARLING_OK;
}

void starling__agg_format(const starling__agg *a, char *out, size_t cap)
{
    char num[32], params[64], bucket[48];

    params[0] = '\0';
    switch (a->kind) {
    case AGG_MULTIKRUM:
        if (a->m > 0)
            snprintf(params, sizeof params, ":m=%ld", a->m);
        break;
    case AGG_GEOMED:
        starling__c_format_g9(num, sizeof num, a->tol);
        snprintf(params, sizeof params, ":iters=%ld,tol=%s", a->iters, num);
        break;
    case AGG_CCLIP:
        starling__c_format_g9(num, sizeof num, a->tau);
        snprintf(params, sizeof params, ":tau=%s,iters=%ld", num, a->iters);
        break;
    case AGG_FLAG: snprintf(params, sizeof params, ":r=%ld,iters=%ld", a->rank, a->iters); break;
    default: break;
    }
    bucket[0] = '\0';
    if (a->bucket > 0)
        snprintf(bucket, sizeof bucket, "bucket:%ld:seed=%ld+", a->bucket, a->bucket_seed);
    snprintf(out, cap, "%s%s%s%s", bucket, a->nnm ? "nnm+" : "", kind_name(a->kind), params);
}
