#include "shuffle.h"

#include <stdlib.h>

/* splitmix64: spreads any seed (even 0 or consecutive ones) over the state,
 * as xoshiro's authors recommend; the state must not be all zero. */
static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void rng_seed(Rng *rng, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&x);
}

void rng_seed_stream(Rng *rng, uint64_t seed, uint64_t stream)
{
    /* Mix the stream through splitmix64 first so (seed, stream) and
     * (seed + 1, stream - 1) do not collide. */
    uint64_t x = stream;
    rng_seed(rng, seed ^ splitmix64(&x));
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t rng_next(Rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t rng_below(Rng *rng, uint64_t n)
{
    /* Reject the lowest (2^64 mod n) values so every residue is equally likely. */
    uint64_t threshold = (0 - n) % n;
    for (;;) {
        uint64_t r = rng_next(rng);
        if (r >= threshold) return r % n;
    }
}

double rng_uniform(Rng *rng)
{
    return (double)(rng_next(rng) >> 11) * (1.0 / 9007199254740992.0);
}

void shuffle_indices(size_t *idx, size_t n, Rng *rng)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)rng_below(rng, (uint64_t)i);
        size_t tmp = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = tmp;
    }
}

int shuffle_permutation(size_t n, Rng *rng, size_t **out, Error *err)
{
    *out = malloc((n ? n : 1) * sizeof **out);
    if (!*out) return error_set(err, "out of memory for a permutation of %zu", n);
    for (size_t i = 0; i < n; i++) (*out)[i] = i;
    if (rng) shuffle_indices(*out, n, rng);
    return 0;
}

int shard_range(size_t n_items, int n_shards, int k, size_t *begin, size_t *end, Error *err)
{
    if (n_shards <= 0 || k < 0 || k >= n_shards)
        return error_set(err, "shard %d of %d does not exist", k, n_shards);
    size_t base = n_items / (size_t)n_shards, rem = n_items % (size_t)n_shards, uk = (size_t)k;
    *begin = uk * base + (uk < rem ? uk : rem);
    *end = *begin + base + (uk < rem ? 1 : 0);
    return 0;
}
