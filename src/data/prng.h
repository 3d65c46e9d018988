/* A small seeded PRNG for everything in the training engine that must be reproducible:
 * data shuffles and shards, synthetic data, parameter initialisation.
 *
 * splitmix64 (Steele, Lea, Flood, "Fast splittable pseudorandom number generators",
 * OOPSLA 2014; the constants are those of Vigna's public-domain reference). Its state is
 * one 64-bit counter, so a stream is fully described by its seed, and distinct seeds made
 * with starling__prng_mix() give independent-looking streams. Normal variates come from
 * the Box–Muller transform; the second variate of each pair is kept in the state, so a
 * stream of normals is a pure function of the seed too. Not for cryptography.
 *
 * Everything is static inline: the header has no object file and no global state.
 * Floating-point results depend only on IEEE arithmetic plus log/sqrt/cos/sin from libm;
 * peers that must agree bit-for-bit (e.g. on Dirichlet shards) need the same libm. */
#ifndef STARLING_DATA_PRNG_H
#define STARLING_DATA_PRNG_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

typedef struct starling__prng {
    uint64_t state;
    double spare; /* second Box–Muller variate */
    int has_spare;
} starling__prng;

/* The splitmix64 finaliser: a bijective 64-bit mix. */
static inline uint64_t starling__prng_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Derives the seed of an independent stream from a seed and a stream number (e.g. a
 * class index, an epoch): seeds that differ in either give unrelated streams. */
static inline uint64_t starling__prng_derive(uint64_t seed, uint64_t stream)
{
    return starling__prng_mix(seed ^ starling__prng_mix(stream + UINT64_C(0x9e3779b97f4a7c15)));
}

static inline void starling__prng_seed(starling__prng *r, uint64_t seed)
{
    r->state = seed;
    r->spare = 0.0;
    r->has_spare = 0;
}

static inline uint64_t starling__prng_u64(starling__prng *r)
{
    r->state += UINT64_C(0x9e3779b97f4a7c15);
    return starling__prng_mix(r->state);
}

/* Uniform in [0, 1) with 53 random bits. */
static inline double starling__prng_uniform(starling__prng *r)
{
    return (double)(starling__prng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* Uniform integer in [0, bound), bound >= 1, without modulo bias (rejects the top
 * 2^64 mod bound values). */
static inline uint64_t starling__prng_below(starling__prng *r, uint64_t bound)
{
    uint64_t threshold = (0 - bound) % bound; /* = 2^64 mod bound */
    for (;;) {
        uint64_t x = starling__prng_u64(r);
        if (x >= threshold)
            return x % bound;
    }
}

/* Standard normal N(0, 1) (Box–Muller; u1 is taken in (0, 1] so log(u1) is finite). */
static inline double starling__prng_normal(starling__prng *r)
{
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    double u1 = 1.0 - starling__prng_uniform(r);
    double u2 = starling__prng_uniform(r);
    double rad = sqrt(-2.0 * log(u1));
    double ang = 6.283185307179586 * u2;
    r->spare = rad * sin(ang);
    r->has_spare = 1;
    return rad * cos(ang);
}

/* Fisher–Yates shuffle of a uint32 array, in place. */
static inline void starling__prng_shuffle_u32(starling__prng *r, uint32_t *a, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)starling__prng_below(r, (uint64_t)i);
        uint32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

#endif
