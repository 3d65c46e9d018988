/*
 * cli_pattern.c -- test data for all-reduces, and the check of their results.
 *
 * Member r's element i is v(r, k) = (r+1) * k with k = (i+shift) % 7 + 1: small integers,
 * different on every member and along the buffer, so a result with a chunk out of place,
 * a member counted twice or a missing member shows up. Sums stay below 2^24 for up to
 * 64 members, so f32 and f64 results are exact and compared bit for bit.
 */
#include <math.h>
#include <string.h>

#include "cli.h"

/* ---- 16-bit float encodings (round to nearest even, as the library documents) */

static uint16_t f32_to_f16(float f)
{
    uint32_t x, sign, mant, h, rem;
    int32_t exp;

    memcpy(&x, &f, sizeof x);
    sign = (x >> 16) & 0x8000u;
    mant = x & 0x7fffffu;
    if (((x >> 23) & 0xffu) == 0xffu)
        return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u : 0u));
    exp = (int32_t)((x >> 23) & 0xffu) - 127 + 15;
    if (exp >= 31)
        return (uint16_t)(sign | 0x7c00u);
    if (exp <= 0) { /* subnormal half */
        uint32_t shift, halfway;
        if (exp < -10)
            return (uint16_t)sign;
        mant |= 0x800000u;
        shift = (uint32_t)(14 - exp);
        h = mant >> shift;
        rem = mant & ((1u << shift) - 1u);
        halfway = 1u << (shift - 1u);
        if (rem > halfway || (rem == halfway && (h & 1u)))
            h++;
        return (uint16_t)(sign | h);
    }
    h = sign | ((uint32_t)exp << 10) | (mant >> 13);
    rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++; /* a carry into the exponent is the correct rounding */
    return (uint16_t)h;
}

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, x;
    float f;

    if (exp == 0) {
        f = (float)mant * (1.0f / 16777216.0f); /* mant * 2^-24 */
        return sign ? -f : f;
    }
    if (exp == 31)
        x = sign | 0x7f800000u | (mant << 13);
    else
        x = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    memcpy(&f, &x, sizeof f);
    return f;
}

static uint16_t f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

static float bf16_to_f32(uint16_t h)
{
    uint32_t x = (uint32_t)h << 16;
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

/* ---- one element as a double, whatever its type */

static double elem_get(const void *buf, size_t i, starling_dtype dt)
{
    switch (dt) {
    case STARLING_F32: return ((const float *)buf)[i];
    case STARLING_F64: return ((const double *)buf)[i];
    case STARLING_F16: return f16_to_f32(((const uint16_t *)buf)[i]);
    case STARLING_BF16: return bf16_to_f32(((const uint16_t *)buf)[i]);
    case STARLING_I32: return ((const int32_t *)buf)[i];
    case STARLING_I64: return (double)((const int64_t *)buf)[i];
    case STARLING_U8: return ((const uint8_t *)buf)[i];
    default: return 0.0;
    }
}

static void elem_set(void *buf, size_t i, starling_dtype dt, double v)
{
    switch (dt) {
    case STARLING_F32: ((float *)buf)[i] = (float)v; break;
    case STARLING_F64: ((double *)buf)[i] = v; break;
    case STARLING_F16: ((uint16_t *)buf)[i] = f32_to_f16((float)v); break;
    case STARLING_BF16: ((uint16_t *)buf)[i] = f32_to_bf16((float)v); break;
    case STARLING_I32: ((int32_t *)buf)[i] = (int32_t)v; break;
    case STARLING_I64: ((int64_t *)buf)[i] = (int64_t)v; break;
    case STARLING_U8: ((uint8_t *)buf)[i] = (uint8_t)((unsigned long)v & 0xffu); break;
    default: break;
    }
}

/* The value member `rank` actually holds for pattern step k, after encoding. */
static double member_value(starling_dtype dt, int rank, int k)
{
    unsigned char tmp[8];
    elem_set(tmp, 0, dt, (double)((rank + 1) * k));
    return elem_get(tmp, 0, dt);
}

static int is_float(starling_dtype dt)
{
    return dt == STARLING_F32 || dt == STARLING_F64 || dt == STARLING_F16 || dt == STARLING_BF16;
}

int cli_pattern_supported(starling_dtype dtype, starling_op op)
{
    if ((unsigned)dtype >= STARLING_DTYPE_COUNT || (unsigned)op >= STARLING_OP_COUNT)
        return 0;
    return !(dtype == STARLING_U8 && op == STARLING_AVG); /* the library refuses it too */
}

void cli_pattern_fill(void *buf, size_t count, starling_dtype dtype, int rank, unsigned shift)
{
    double val[7];
    size_t i;
    unsigned k = shift % 7u;
    int j;

    for (j = 0; j < 7; j++)
        val[j] = (double)((rank + 1) * (j + 1));
    if (dtype == STARLING_F32) { /* the common case, kept fast for large buffers */
        float *f = buf;
        for (i = 0; i < count; i++) {
            f[i] = (float)val[k];
            if (++k == 7)
                k = 0;
        }
        return;
    }
    for (i = 0; i < count; i++) {
        elem_set(buf, i, dtype, val[k]);
        if (++k == 7)
            k = 0;
    }
}

/* Expected result for pattern step k (1..7), and the tolerance allowed on it. */
static void expected_value(starling_dtype dt, starling_op op, int nranks, int k, double *exp,
                           double *tol)
{
    double sum = 0.0, mn = 0.0, mx = 0.0, eps = 0.0;
    long long isum = 0;
    int r;

    for (r = 0; r < nranks; r++) {
        double v = member_value(dt, r, k);
        sum += v;
        isum += (long long)v;
        if (r == 0 || v < mn)
            mn = v;
        if (r == 0 || v > mx)
            mx = v;
    }
    switch (dt) {
    case STARLING_F32: eps = 1.0 / 8388608.0; break;          /* 2^-23 */
    case STARLING_F64: eps = 1.0 / 4503599627370496.0; break; /* 2^-52 */
    case STARLING_F16: eps = 1.0 / 1024.0; break;             /* 2^-10 */
    case STARLING_BF16: eps = 1.0 / 128.0; break;             /* 2^-7 */
    default: eps = 0.0; break;
    }
    *tol = 0.0;
    switch (op) {
    case STARLING_SUM:
        if (dt == STARLING_U8)
            *exp = (double)(isum & 0xff);
        else
            *exp = sum;
        /* 16-bit floats may be rounded at every hop of the ring: n roundings at most. */
        if (dt == STARLING_F16 || dt == STARLING_BF16)
            *tol = sum * eps * (double)nranks;
        break;
    case STARLING_AVG:
        if (is_float(dt)) {
            *exp = sum / (double)nranks;
            *tol = *exp * eps * (double)(nranks + 2);
        } else {
            *exp = (double)(isum / nranks);
        }
        break;
    case STARLING_MIN: *exp = mn; break;
    case STARLING_MAX: *exp = mx; break;
    default: *exp = 0.0; break;
    }
}

int cli_pattern_check(const void *buf, size_t count, starling_dtype dtype, starling_op op,
                      int nranks, unsigned shift, char *why, size_t why_cap)
{
    double exp[7], tol[7];
    size_t i;
    unsigned k = shift % 7u;
    int j;

    if (!cli_pattern_supported(dtype, op)) {
        snprintf(why, why_cap, "cannot check %s %s", starling_dtype_name(dtype),
                 starling_op_name(op));
        return -1;
    }
    for (j = 0; j < 7; j++)
        expected_value(dtype, op, nranks, j + 1, &exp[j], &tol[j]);
    for (i = 0; i < count; i++) {
        double got = elem_get(buf, i, dtype);
        /* Written so that a NaN result fails. */
        if (!(fabs(got - exp[k]) <= tol[k])) {
            snprintf(why, why_cap,
                     "element %zu of %zu is %.9g, expected %.9g (%s %s over %d members)", i, count,
                     got, exp[k], starling_dtype_name(dtype), starling_op_name(op), nranks);
            return -1;
        }
        if (++k == 7)
            k = 0;
    }
    return 0;
}
