/* The codec spec grammar (docs/codecs.md):
 *
 *   spec   = base [ "+ef" ] [ "+zstd" [ ":" level ] ]      (the two suffixes in either order)
 *   base   = "none" | ("f16" | "bf16") [ ":stochastic" ]
 *          | ("int8" | "int4" | "fp4") [ ":block=" N ]
 *          | "topk" ":" frac [ ":bits=" B ] [ ":block=" N ] | "randk" ":" frac
 *
 * parse() leaves every field that does not apply at zero, so two specs meaning the same
 * codec parse to equal structs and format to the same canonical string: peers compare
 * that string to agree on a codec, so "int8" and "int8:block=256" must not differ.
 *
 * Numbers are read and written in the "C" locale whatever the application set: a spec
 * travels between processes, and a locale whose decimal point is ',' must not change
 * what "topk:0.01" means. */
#include "codec/codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "starling.h"
#include "util/spec_lex.h"
#include "util/why.h"

#define BLOCK_MIN 8u
#define BLOCK_MAX 65536u
#define INT8_BLOCK_DEFAULT 256u
#define INT4_BLOCK_DEFAULT 64u
#define FP4_BLOCK_DEFAULT 32u
#define TOPK_BLOCK_DEFAULT 128u /* quantized topk values per (lo, scale) pair */
#define ZSTD_LEVEL_DEFAULT 3
#define ZSTD_LEVEL_MAX 19
/* Longest number token we read; anything longer is refused rather than truncated. */
#define NUMBER_MAX 48

/* Length of the token at s: up to the next ':' or '+' or the end. */
static size_t token_len(const char *s) { return strcspn(s, ":+"); }

/* Length of the decimal number at s: digits [ "." digits ] [ ("e"|"E") [sign] digits ],
 * at least one digit in the mantissa; 0 if s does not start with one. The exponent's
 * sign may be '+', which the caller must not take for a suffix separator: "1e+2" is
 * one number (a suffix never starts with a digit). */
static size_t number_len(const char *s)
{
    size_t i = 0, digits = 0;
    while (s[i] >= '0' && s[i] <= '9')
        i++, digits++;
    if (s[i] == '.') {
        i++;
        while (s[i] >= '0' && s[i] <= '9')
            i++, digits++;
    }
    if (digits == 0)
        return 0;
    if (s[i] == 'e' || s[i] == 'E') {
        size_t j = i + 1;
        if (s[j] == '+' || s[j] == '-')
            j++;
        if (s[j] >= '0' && s[j] <= '9') {
            while (s[j] >= '0' && s[j] <= '9')
                j++;
            i = j;
        }
    }
    return i;
}

/* Reads FRAC for `name` from s[0..len). The value kept is the one its canonical
 * spelling ("%.9g") reads back as, so format() then parse() gives the same double. */
static int parse_frac(const char *name, const char *s, size_t len, double *out,
                      starling__why_buf *e)
{
    char buf[NUMBER_MAX + 1], canon[32];
    double v;

    if (len == 0 || number_len(s) != len || len > NUMBER_MAX)
        return starling__refuse(e, "%s fraction must be a decimal number in (0, 1], got '%.*s'",
                                name, (int)len, s);
    memcpy(buf, s, len);
    buf[len] = '\0';
    v = starling__c_strtod(buf, NULL);
    if (!(v > 0.0 && v <= 1.0))
        return starling__refuse(e, "%s fraction must be in (0, 1], got '%s'", name, buf);
    starling__c_format_g9(canon, sizeof canon, v);
    *out = starling__c_strtod(canon, NULL);
    return STARLING_OK;
}

/* Parses topk's ":bits=B" and ":block=N" at s (each at most once, in either order) and
 * adds their length to *len. block applies to quantized values only. */
static int parse_topk_options(const char *s, starling__codec *c, size_t *len, starling__why_buf *e)
{
    size_t i = 0;
    int seen_block = 0;

    while (s[i] == ':') {
        const char *t = s + i + 1;
        size_t tl = token_len(t);
        if (tl >= 5 && memcmp(t, "bits=", 5) == 0) {
            long b = starling__parse_small_uint(t + 5, tl - 5);
            if (c->bits)
                return starling__refuse(e, "topk option 'bits' given twice");
            if (b != 2 && b != 4 && b != 8)
                return starling__refuse(e, "topk bits must be 2, 4 or 8, got '%.*s'", (int)(tl - 5),
                                        t + 5);
            c->bits = (unsigned)b;
        } else if (tl >= 6 && memcmp(t, "block=", 6) == 0) {
            long b = starling__parse_small_uint(t + 6, tl - 6);
            if (seen_block++)
                return starling__refuse(e, "topk option 'block' given twice");
            if (b < (long)BLOCK_MIN || b > (long)BLOCK_MAX || b % 8 != 0)
                return starling__refuse(e,
                                        "topk block must be a multiple of 8 in %u..%u, got '%.*s'",
                                        BLOCK_MIN, BLOCK_MAX, (int)(tl - 6), t + 6);
            c->block = (uint32_t)b;
        } else {
            return starling__refuse(e,
                                    "unknown option '%.*s' for topk (expected 'bits=2|4|8' or "
                                    "'block=N')",
                                    (int)tl, t);
        }
        i += 1 + tl;
    }
    if (seen_block && !c->bits)
        return starling__refuse(e, "topk block=N needs bits=2, 4 or 8 (f32 values have no blocks)");
    if (c->bits && !seen_block)
        c->block = TOPK_BLOCK_DEFAULT;
    *len += i;
    return STARLING_OK;
}

/* Parses the base codec at s into c; *end is where the suffixes start. */
static int parse_base(const char *s, starling__codec *c, const char **end, starling__why_buf *e)
{
    size_t nlen = token_len(s);
    const char *opt = s + nlen;
    size_t olen = 0;
    int has_opt = *opt == ':';

    if (has_opt) {
        opt++;
        olen = token_len(opt);
    }

    if (starling__token_is(s, nlen, "none")) {
        c->kind = CODEC_NONE;
        if (has_opt)
            return starling__refuse(e, "none takes no option, got ':%.*s'", (int)olen, opt);
    } else if (starling__token_is(s, nlen, "f16") || starling__token_is(s, nlen, "bf16")) {
        c->kind = s[0] == 'f' ? CODEC_F16 : CODEC_BF16;
        if (has_opt) {
            if (!starling__token_is(opt, olen, "stochastic"))
                return starling__refuse(e, "unknown option '%.*s' for %.*s (expected 'stochastic')",
                                        (int)olen, opt, (int)nlen, s);
            c->stochastic = 1;
        }
    } else if (starling__token_is(s, nlen, "int8") || starling__token_is(s, nlen, "int4") ||
               starling__token_is(s, nlen, "fp4")) {
        c->kind = s[0] == 'f' ? CODEC_FP4 : s[3] == '8' ? CODEC_INT8 : CODEC_INT4;
        c->block = c->kind == CODEC_INT8   ? INT8_BLOCK_DEFAULT
                   : c->kind == CODEC_INT4 ? INT4_BLOCK_DEFAULT
                                           : FP4_BLOCK_DEFAULT;
        if (has_opt) {
            long b;
            if (olen < 6 || memcmp(opt, "block=", 6) != 0)
                return starling__refuse(e, "unknown option '%.*s' for %.*s (expected 'block=N')",
                                        (int)olen, opt, (int)nlen, s);
            b = starling__parse_small_uint(opt + 6, olen - 6);
            if (b < (long)BLOCK_MIN || b > (long)BLOCK_MAX || b % 8 != 0)
                return starling__refuse(
                    e, "%.*s block must be a multiple of 8 in %u..%u, got '%.*s'", (int)nlen, s,
                    BLOCK_MIN, BLOCK_MAX, (int)(olen - 6), opt + 6);
            c->block = (uint32_t)b;
        }
    } else if (starling__token_is(s, nlen, "topk") || starling__token_is(s, nlen, "randk")) {
        const char *name = s[0] == 't' ? "topk" : "randk";
        int rc;
        c->kind = s[0] == 't' ? CODEC_TOPK : CODEC_RANDK;
        if (!has_opt)
            return starling__refuse(e, "%s needs a fraction, e.g. '%s:0.01'", name, name);
        /* The number may contain "e+", so its extent comes from the number grammar, not
         * from the next '+'. */
        olen = number_len(opt);
        if (olen == 0 || (opt[olen] != '\0' && opt[olen] != '+' && opt[olen] != ':'))
            olen = token_len(opt);
        rc = parse_frac(name, opt, olen, &c->frac, e);
        if (rc == STARLING_OK && c->kind == CODEC_TOPK)
            rc = parse_topk_options(opt + olen, c, &olen, e);
        if (rc != STARLING_OK)
            return rc;
    } else {
        return starling__refuse(
            e, "unknown codec '%.*s' (expected none, f16, bf16, int8, int4, fp4, topk, randk)",
            (int)nlen, s);
    }

    *end = has_opt ? opt + olen : opt;
    if (**end == ':')
        return starling__refuse(e, "%.*s takes one option, got an extra '%.*s'", (int)nlen, s,
                                (int)(1 + token_len(*end + 1)), *end);
    return STARLING_OK;
}

/* Parses "+ef" and "+zstd[:LEVEL]" at s (each at most once, in any order). */
static int parse_suffixes(const char *s, starling__codec *c, starling__why_buf *e)
{
    int seen_ef = 0, seen_zstd = 0;

    while (*s != '\0') {
        const char *name = s + 1;
        size_t nlen = token_len(name);

        /* parse_base and the loop below stop only at '+' or the end; ':' after a suffix
         * is consumed as its option. */
        if (*s != '+')
            return starling__refuse(e, "unexpected '%s' in codec spec", s);
        if (nlen == 0)
            return starling__refuse(e,
                                    "empty suffix after '+' (expected '+ef' or '+zstd[:LEVEL]')");
        if (starling__token_is(name, nlen, "ef")) {
            if (seen_ef++)
                return starling__refuse(e, "suffix '+ef' given twice");
            if (c->kind == CODEC_NONE)
                return starling__refuse(e, "'+ef' needs a lossy codec (none is lossless)");
            c->ef = 1;
            s = name + nlen;
            if (*s == ':')
                return starling__refuse(e, "'+ef' takes no option, got ':%.*s'",
                                        (int)token_len(s + 1), s + 1);
        } else if (starling__token_is(name, nlen, "zstd")) {
            if (seen_zstd++)
                return starling__refuse(e, "suffix '+zstd' given twice");
            c->zstd_level = ZSTD_LEVEL_DEFAULT;
            s = name + nlen;
            if (*s == ':') {
                size_t llen = token_len(s + 1);
                long level = starling__parse_small_uint(s + 1, llen);
                if (level < 1 || level > ZSTD_LEVEL_MAX)
                    return starling__refuse(e, "zstd level must be 1..%d, got '%.*s'",
                                            ZSTD_LEVEL_MAX, (int)llen, s + 1);
                c->zstd_level = (int)level;
                s += 1 + llen;
                if (*s == ':')
                    return starling__refuse(e, "'+zstd' takes one option, got an extra '%.*s'",
                                            (int)(1 + token_len(s + 1)), s);
            }
        } else {
            return starling__refuse(e, "unknown suffix '+%.*s' (expected '+ef' or '+zstd[:LEVEL]')",
                                    (int)nlen, name);
        }
    }
    return STARLING_OK;
}

int starling__codec_parse(const char *spec, starling__codec *out, char *why, size_t wl)
{
    starling__why_buf e;
    starling__codec c;
    const char *rest = NULL;
    int rc;

    e.why = why;
    e.wl = wl;
    if (why && wl > 0)
        why[0] = '\0';
    if (!spec)
        return starling__refuse(&e, "no codec spec (NULL)");
    if (spec[0] == '\0')
        return starling__refuse(&e, "empty codec spec (expected e.g. 'none', 'bf16', 'int8+zstd')");
    memset(&c, 0, sizeof c);
    rc = parse_base(spec, &c, &rest, &e);
    if (rc == STARLING_OK)
        rc = parse_suffixes(rest, &c, &e);
    if (rc == STARLING_OK)
        *out = c;
    return rc;
}

void starling__codec_format(const starling__codec *c, char *out, size_t cap)
{
    char base[64], num[32];

    switch (c->kind) {
    case CODEC_F16:
    case CODEC_BF16:
        snprintf(base, sizeof base, "%s%s", c->kind == CODEC_F16 ? "f16" : "bf16",
                 c->stochastic ? ":stochastic" : "");
        break;
    case CODEC_INT8:
    case CODEC_INT4:
    case CODEC_FP4:
        snprintf(base, sizeof base, "%s:block=%u",
                 c->kind == CODEC_INT8   ? "int8"
                 : c->kind == CODEC_INT4 ? "int4"
                                         : "fp4",
                 (unsigned)c->block);
        break;
    case CODEC_TOPK:
    case CODEC_RANDK:
        starling__c_format_g9(num, sizeof num, c->frac);
        if (c->bits)
            snprintf(base, sizeof base, "topk:%s:bits=%u:block=%u", num, c->bits,
                     (unsigned)c->block);
        else
            snprintf(base, sizeof base, "%s:%s", c->kind == CODEC_TOPK ? "topk" : "randk", num);
        break;
    default: snprintf(base, sizeof base, "none"); break;
    }
    if (c->zstd_level > 0)
        snprintf(out, cap, "%s%s+zstd:%d", base, c->ef ? "+ef" : "", c->zstd_level);
    else
        snprintf(out, cap, "%s%s", base, c->ef ? "+ef" : "");
}

int starling__codec_is_dense(const starling__codec *c)
{
    return c->kind == CODEC_F16 || c->kind == CODEC_BF16 || c->kind == CODEC_INT8 ||
           c->kind == CODEC_INT4 || c->kind == CODEC_FP4;
}

int starling__codec_is_sparse(const starling__codec *c)
{
    return c->kind == CODEC_TOPK || c->kind == CODEC_RANDK;
}
