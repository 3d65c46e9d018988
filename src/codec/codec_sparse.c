/* Sparse codecs: k of n elements as a fixed-size blob (docs/codecs.md has the layout).
 *
 *  - topk: the k largest |x|. Blob = Elias-Fano code of the sorted index list, then the
 *    k values (f32 LE). Elias-Fano (Elias 1974, Fano 1971; the layout of Vigna,
 *    "Quasi-succinct indices", WSDM 2013) needs at most 2 + log2(n/k) bits per index
 *    and, unlike a varint delta code, its size depends only on (n, k): the blob has a
 *    fixed size that the receiver knows before it arrives.
 *    With ":bits=B" the values are B-bit sign-magnitude codes in blocks instead
 *    (codec_squant.c).
 *  - randk: k indices drawn from a seed every peer shares, so only the k values travel.
 *
 * Everything here is integer arithmetic except ceil(frac * n), so every machine draws
 * and selects the same indices. */
#include "codec/codec.h"

#include <math.h>
#include <string.h>

#include "kernels/half_bits.h"
#include "starling.h"
#include "util/alloc.h"

/* ---------------------------------------------------------------- sizes */

size_t starling__sparse_k(const starling__codec *c, size_t n)
{
    double k;
    if (n == 0)
        return 0;
    /* Products and ceil are exact IEEE operations: the same k everywhere. */
    k = ceil(c->frac * (double)n);
    if (k >= (double)n)
        return n;
    if (k < 1.0)
        return 1;
    return (size_t)k;
}

typedef struct ef_layout {
    unsigned l;         /* low bits per index */
    size_t low_bytes;   /* k * l bits, byte-padded */
    size_t upper_bits;  /* k + (n >> l) + 1 */
    size_t upper_bytes; /* upper_bits, byte-padded */
} ef_layout;

/* l = floor(log2(n / k)) for n > k, else 0. floor(log2(n / k)) over the reals equals
 * floor(log2(floor(n / k))) because 2^j is an integer, so integer division is exact. */
static ef_layout ef_layout_of(size_t n, size_t k)
{
    ef_layout e;
    e.l = 0;
    if (n > k) {
        size_t q = n / k;
        while (q >> (e.l + 1))
            e.l++;
    }
    e.low_bytes = (k * e.l + 7) / 8;
    e.upper_bits = k + (n >> e.l) + 1;
    e.upper_bytes = (e.upper_bits + 7) / 8;
    return e;
}

/* Bytes of a topk blob's value part. */
static size_t values_size(const starling__codec *c, size_t k)
{
    return c->bits ? starling__squant_size(c, k) : 4 * k;
}

size_t starling__sparse_size(const starling__codec *c, size_t n)
{
    size_t k = starling__sparse_k(c, n);
    ef_layout e;
    if (k == 0)
        return 0;
    if (c->kind == CODEC_RANDK)
        return 4 * k;
    e = ef_layout_of(n, k);
    return e.low_bytes + e.upper_bytes + values_size(c, k);
}

/* ---------------------------------------------------------------- helpers */

static void put_f32(uint8_t *out, float f)
{
    uint32_t u = half_f32_bits(f);
    for (int i = 0; i < 4; i++)
        out[i] = (uint8_t)(u >> (8 * i));
}

static float get_f32(const uint8_t *in)
{
    uint32_t u = 0;
    for (int i = 0; i < 4; i++)
        u |= (uint32_t)in[i] << (8 * i);
    return half_f32_from_bits(u);
}

/* ORs the w low bits of v into the bit stream p at bit pos (LSB first); the stream
 * starts zeroed. */
static void put_bits(uint8_t *p, size_t pos, uint64_t v, unsigned w)
{
    while (w > 0) {
        unsigned sh = (unsigned)(pos & 7), take = 8 - sh < w ? 8 - sh : w;
        p[pos >> 3] |= (uint8_t)((v & ((1u << take) - 1)) << sh);
        v >>= take;
        pos += take;
        w -= take;
    }
}

static uint64_t get_bits(const uint8_t *p, size_t pos, unsigned w)
{
    uint64_t v = 0;
    unsigned got = 0;
    while (got < w) {
        unsigned sh = (unsigned)(pos & 7), take = 8 - sh < w - got ? 8 - sh : w - got;
        v |= (uint64_t)((p[pos >> 3] >> sh) & ((1u << take) - 1)) << got;
        pos += take;
        got += take;
    }
    return v;
}

/* ---------------------------------------------------------------- Elias-Fano */

typedef struct ef_writer {
    ef_layout e;
    uint8_t *low, *upper;
    size_t i; /* indices written */
} ef_writer;

static void ef_begin(ef_writer *w, uint8_t *blob, size_t n, size_t k)
{
    w->e = ef_layout_of(n, k);
    w->low = blob;
    w->upper = blob + w->e.low_bytes;
    w->i = 0;
    memset(blob, 0, w->e.low_bytes + w->e.upper_bytes);
}

/* Appends idx (strictly greater than the previous one). */
static void ef_put(ef_writer *w, size_t idx)
{
    size_t up = (idx >> w->e.l) + w->i;
    if (w->e.l)
        put_bits(w->low, w->i * w->e.l, idx, w->e.l);
    w->upper[up >> 3] |= (uint8_t)(1u << (up & 7));
    w->i++;
}

/* Walks the k indices of an Elias-Fano blob received from the network, checking as it
 * goes: exactly k ones in the upper bit vector and none in its padding, zero padding
 * after the low bits, indices strictly increasing and below n. With out == NULL it only
 * checks; else it also adds value i into out[index i]. Callers check first and add in a
 * second walk, so a bad blob leaves out untouched. */
/* Index of the lowest set bit of a nonzero byte. */
static inline unsigned low_bit(unsigned bits)
{
#if defined(__GNUC__)
    return (unsigned)__builtin_ctz(bits);
#else
    unsigned b = 0;
    while (!((bits >> b) & 1u))
        b++;
    return b;
#endif
}

/* The w-bit field at bit `pos` of the low part (low_bytes long): one unaligned 64-bit
 * little-endian load when it fits inside the part (w <= 56 here), else bytewise. */
static inline uint64_t low_field(const uint8_t *low, size_t low_bytes, size_t pos, unsigned w)
{
    size_t at = pos >> 3;
    if (at + 8 <= low_bytes) {
        uint64_t v = 0;
        for (int b = 0; b < 8; b++)
            v |= (uint64_t)low[at + b] << (8 * b);
        return (v >> (pos & 7)) & (((uint64_t)1 << w) - 1);
    }
    return get_bits(low, pos, w);
}

static int ef_walk(const uint8_t *blob, size_t n, size_t k, size_t *idx_out)
{
    ef_layout e = ef_layout_of(n, k);
    const uint8_t *low = blob, *upper = blob + e.low_bytes;
    size_t i = 0, prev = 0;
    size_t low_end = k * e.l;

    if (low_end % 8 && (low[low_end / 8] >> (low_end % 8)) != 0)
        return STARLING_E_PROTOCOL;
    if (e.upper_bits % 8 && (upper[e.upper_bits / 8] >> (e.upper_bits % 8)) != 0)
        return STARLING_E_PROTOCOL;
    for (size_t byte = 0; byte < e.upper_bytes; byte++) {
        unsigned bits = upper[byte];
        while (bits) {
            size_t pos = byte * 8 + low_bit(bits), idx;
            bits &= bits - 1;
            if (i == k)
                return STARLING_E_PROTOCOL; /* more than k ones */
            /* pos >= i because the i earlier ones sit below it */
            idx = ((pos - i) << e.l) |
                  (size_t)(e.l ? low_field(low, e.low_bytes, i * e.l, e.l) : 0);
            if (idx >= n || (i > 0 && idx <= prev))
                return STARLING_E_PROTOCOL;
            idx_out[i] = idx;
            prev = idx;
            i++;
        }
    }
    return i == k ? STARLING_OK : STARLING_E_PROTOCOL;
}

/* out[idx[i]] += vals[i]. The indices are sparse over a buffer much larger than the
 * caches, so each add is a cache miss; prefetching a few ahead overlaps them. */
static void scatter_add(const size_t *idx, const float *vals, size_t k, float *out)
{
    enum { AHEAD = 16 };
    for (size_t i = 0; i < k; i++) {
#if defined(__GNUC__)
        if (i + AHEAD < k)
            __builtin_prefetch(&out[idx[i + AHEAD]], 1, 0);
#endif
        out[idx[i]] += vals[i];
    }
}

/* ---------------------------------------------------------------- topk selection */

/* The order topk ranks by: |x| as its magnitude bits (for non-NaN floats the integer
 * order of the bits is the order of |x|), every NaN above inf and equal to each other,
 * so that among NaNs, as among equal magnitudes, the lower index wins. */
static inline uint32_t rank_key(float f)
{
    uint32_t mag = half_f32_bits(f) & 0x7fffffffu;
    return mag > 0x7f800000u ? 0x7f800001u : mag;
}

/* The key of the k-th largest element (1 <= k <= n), exactly, by radix selection on the
 * 31-bit keys: digits of 11, 11 and 9 bits. The first pass reads x; later passes only
 * the keys in the bucket that holds the k-th, copied to a scratch array (for gradients a
 * small fraction of n). Worst case linear, unlike quickselect, whose median-of-3 pivots
 * go quadratic on adversarial or heavily repeated keys (a gradient with many exact
 * zeros); no random pivots, no recursion. *ties_out = how many elements with exactly
 * that key belong to the top k (the others above it are strictly greater).
 * Returns STARLING_E_NOMEM if the scratch cannot be had. */
static int kth_largest_key(const float *x, size_t n, size_t k, uint32_t *key_out, size_t *ties_out)
{
    static const unsigned shift[3] = {20, 9, 0};
    static const unsigned width[3] = {11, 11, 9};
    size_t hist[2048];
    uint64_t hist4[4][2048]; /* 64 KiB on the stack, pass 0 only */
    uint32_t *cand = NULL;
    size_t ncand = 0;
    uint32_t prefix = 0; /* the digits fixed so far, in place */
    size_t rank = k;     /* rank of the target among the remaining keys, from the top */

    for (int pass = 0; pass < 3; pass++) {
        unsigned nb = 1u << width[pass];
        uint32_t dmask = nb - 1;
        size_t above = 0;
        unsigned d;

        memset(hist, 0, nb * sizeof hist[0]);
        if (pass == 0) {
            /* Real data piles into a few buckets (the top digit is mostly the exponent),
             * and increments of one counter wait for each other: four counter sets
             * let four run at once. */
            size_t i = 0;
            memset(hist4, 0, sizeof hist4);
            for (; i + 4 <= n; i += 4) {
                hist4[0][rank_key(x[i]) >> shift[0]]++;
                hist4[1][rank_key(x[i + 1]) >> shift[0]]++;
                hist4[2][rank_key(x[i + 2]) >> shift[0]]++;
                hist4[3][rank_key(x[i + 3]) >> shift[0]]++;
            }
            for (; i < n; i++)
                hist4[0][rank_key(x[i]) >> shift[0]]++;
            for (unsigned b = 0; b < nb; b++)
                hist[b] = (size_t)hist4[0][b] + hist4[1][b] + hist4[2][b] + hist4[3][b];
        } else {
            for (size_t i = 0; i < ncand; i++)
                hist[(cand[i] >> shift[pass]) & dmask]++;
        }
        /* The bucket holding the rank-th largest; the buckets above it hold `above`
         * keys, all strictly greater than the answer. */
        for (d = nb - 1;; d--) {
            if (above + hist[d] >= rank)
                break;
            above += hist[d];
        }
        rank -= above;
        prefix |= (uint32_t)d << shift[pass];
        if (pass == 2)
            break;
        /* Keep the keys of bucket d: gathered from x after the first pass, filtered in
         * place after the second (their higher digits already match). */
        if (pass == 0) {
            cand = starling__malloc(hist[d] * sizeof *cand);
            if (!cand)
                return STARLING_E_NOMEM;
            for (size_t i = 0; i < n; i++) {
                uint32_t key = rank_key(x[i]);
                if ((key >> shift[0]) == d)
                    cand[ncand++] = key;
            }
        } else {
            size_t kept = 0;
            for (size_t i = 0; i < ncand; i++)
                if (((cand[i] >> shift[pass]) & dmask) == d)
                    cand[kept++] = cand[i];
            ncand = kept;
        }
    }
    starling__free(cand);
    *key_out = prefix;
    *ties_out = rank;
    return STARLING_OK;
}

/* The bits > 0 form: the selected values are gathered, quantized as a whole (blocks
 * span consecutive selected values), and the residual at a selected index is what the
 * quantization lost, x - decoded, so error feedback carries it to the next call. */
static int topk_encode_quant(const starling__codec *c, const float *x, size_t n, size_t k,
                             uint32_t kth, size_t ties, uint8_t *blob, float *resid)
{
    ef_writer w;
    size_t *idx = starling__malloc(k * sizeof *idx);
    float *vals = starling__malloc(k * sizeof *vals), *dec = starling__malloc(k * sizeof *dec);
    int rc = STARLING_E_NOMEM;

    if (!idx || !vals || !dec)
        goto out;
    ef_begin(&w, blob, n, k);
    for (size_t i = 0; i < n; i++) {
        uint32_t key = rank_key(x[i]);
        if (key > kth || (key == kth && ties > 0)) {
            ties -= key == kth;
            idx[w.i] = i;
            vals[w.i] = x[i];
            ef_put(&w, i);
        } else if (resid) {
            resid[i] = x[i];
        }
    }
    starling__squant_encode(c, vals, k, blob + w.e.low_bytes + w.e.upper_bytes, dec);
    if (resid)
        for (size_t j = 0; j < k; j++)
            resid[idx[j]] = vals[j] - dec[j];
    rc = STARLING_OK;
out:
    starling__free(idx);
    starling__free(vals);
    starling__free(dec);
    return rc;
}

static int topk_encode(const starling__codec *c, const float *x, size_t n, size_t k, uint8_t *blob,
                       float *resid)
{
    ef_writer w;
    uint8_t *vals;
    uint32_t kth;
    size_t ties; /* of the keys equal to kth, the first `ties` by index are taken */
    int rc = kth_largest_key(x, n, k, &kth, &ties);

    if (rc != STARLING_OK)
        return rc;
    if (c->bits)
        return topk_encode_quant(c, x, n, k, kth, ties, blob, resid);
    ef_begin(&w, blob, n, k);
    vals = blob + w.e.low_bytes + w.e.upper_bytes;
    for (size_t i = 0; i < n; i++) {
        uint32_t key = rank_key(x[i]);
        int take = key > kth || (key == kth && ties > 0);
        if (take) {
            ties -= key == kth;
            put_f32(vals + 4 * w.i, x[i]);
            ef_put(&w, i);
        }
        if (resid)
            resid[i] = take ? 0.0f : x[i];
    }
    return STARLING_OK;
}

/* ---------------------------------------------------------------- randk draw */

static inline uint64_t mix64(uint64_t z)
{
    /* splitmix64's output function, as in codec_dense.c */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

typedef struct splitmix {
    uint64_t state;
} splitmix;

static uint64_t splitmix_next(splitmix *s)
{
    s->state += 0x9e3779b97f4a7c15ull;
    return mix64(s->state);
}

/* Uniform in [0, bound) without modulo bias: reject the top partial copy of the range. */
static uint64_t uniform_below(splitmix *s, uint64_t bound)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t r;
    do
        r = splitmix_next(s);
    while (r >= limit);
    return r % bound;
}

/* Marks k distinct indices of [0, n) in `bits` (n bits, zeroed by the caller) with
 * Floyd's algorithm (Bentley, "Programming Pearls: A sample of brilliance", CACM 1987):
 * for j = n-k .. n-1 draw t in [0, j] and take t, or j if t is already taken. Every
 * k-subset is equally likely; k draws; a bitmap answers "taken?" and, read in order,
 * gives the indices sorted. */
static void randk_mark(size_t n, size_t k, uint64_t seed, uint64_t *bits)
{
    splitmix s;
    s.state = mix64(seed ^ 0x52414e444bull); /* a key distinct from stochastic rounding's */
    for (size_t j = n - k; j < n; j++) {
        size_t t = (size_t)uniform_below(&s, (uint64_t)j + 1);
        if ((bits[t / 64] >> (t % 64)) & 1u)
            t = j;
        bits[t / 64] |= UINT64_C(1) << (t % 64);
    }
}

static uint64_t *randk_bitmap(size_t n, size_t k, uint64_t seed)
{
    size_t words = n / 64 + 1;
    uint64_t *bits = starling__calloc(words, sizeof *bits);
    if (bits)
        randk_mark(n, k, seed, bits);
    return bits;
}

/* The index of the lowest set bit of a non-zero word. */
static inline unsigned lowest_bit(uint64_t w)
{
#if defined(__GNUC__)
    return (unsigned)__builtin_ctzll(w);
#else
    unsigned b = 0;
    while (!((w >> b) & 1u))
        b++;
    return b;
#endif
}

/* Calls the body for every marked index in increasing order; i counts them. */
#define FOR_MARKED(bits, n, idx, i, BODY)                                                          \
    for (size_t word_ = 0, i = 0; word_ < (n) / 64 + 1; word_++)                                   \
        for (uint64_t w_ = (bits)[word_]; w_; w_ &= w_ - 1, i++) {                                 \
            size_t idx = word_ * 64 + lowest_bit(w_);                                              \
            BODY;                                                                                  \
        }

static int randk_encode(const float *x, size_t n, size_t k, uint64_t seed, uint8_t *blob,
                        float *resid)
{
    uint64_t *bits = randk_bitmap(n, k, seed);
    if (!bits)
        return STARLING_E_NOMEM;
    FOR_MARKED(bits, n, idx, i, put_f32(blob + 4 * i, x[idx]));
    if (resid) {
        if (resid != x)
            memcpy(resid, x, n * sizeof *x);
        FOR_MARKED(bits, n, idx, i, (void)i; resid[idx] = 0.0f);
    }
    starling__free(bits);
    return STARLING_OK;
}

/* ---------------------------------------------------------------- entry points */

int starling__sparse_encode(const starling__codec *c, const float *x, size_t n, uint64_t seed,
                            uint8_t *blob, float *resid)
{
    size_t k = starling__sparse_k(c, n);
    if (k == 0)
        return STARLING_OK;
    if (c->kind == CODEC_RANDK)
        return randk_encode(x, n, k, seed, blob, resid);
    return topk_encode(c, x, n, k, blob, resid);
}

int starling__sparse_accumulate(const starling__codec *c, const uint8_t *blob, size_t len, size_t n,
                                uint64_t seed, float *out)
{
    size_t k = starling__sparse_k(c, n);
    int rc;

    if (len != starling__sparse_size(c, n))
        return STARLING_E_PROTOCOL;
    if (k == 0)
        return STARLING_OK;
    if (c->kind == CODEC_RANDK) {
        /* Nothing to check beyond the length: the indices come from the seed. */
        uint64_t *bits = randk_bitmap(n, k, seed);
        if (!bits)
            return STARLING_E_NOMEM;
        FOR_MARKED(bits, n, idx, i, out[idx] += get_f32(blob + 4 * i));
        starling__free(bits);
        return STARLING_OK;
    }
    {
        ef_layout e = ef_layout_of(n, k);
        const uint8_t *vbytes = blob + e.low_bytes + e.upper_bytes;
        size_t *idx = starling__malloc(k * sizeof *idx);
        float *vals = starling__malloc(k * sizeof *vals);
        rc = STARLING_E_NOMEM;
        if (!idx || !vals)
            goto out;
        /* The whole blob is checked before the first add: a bad blob writes nothing. */
        rc = ef_walk(blob, n, k, idx);
        if (rc == STARLING_OK && c->bits)
            rc = starling__squant_check(c, vbytes, k);
        if (rc != STARLING_OK)
            goto out;
        if (c->bits)
            starling__squant_decode(c, vbytes, k, vals);
        else
            for (size_t i = 0; i < k; i++)
                vals[i] = get_f32(vbytes + 4 * i);
        scatter_add(idx, vals, k, out);
    out:
        starling__free(idx);
        starling__free(vals);
        return rc;
    }
}
