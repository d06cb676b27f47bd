/* Deterministic RNG, shuffle and sharding.  The expected numbers come from an
 * independent Python implementation of splitmix64 + xoshiro256** (the same
 * stream must come out on every machine, since every rank derives the data
 * order from the seed on its own). */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "shuffle.h"

START_TEST(test_known_stream)
{
    Rng r;
    rng_seed(&r, 0);
    ck_assert_uint_eq(rng_next(&r), 0x99ec5f36cb75f2b4ull);
    ck_assert_uint_eq(rng_next(&r), 0xbf6e1f784956452aull);
    ck_assert_uint_eq(rng_next(&r), 0x1a5f849d4933e6e0ull);
    rng_seed(&r, 42);
    ck_assert_uint_eq(rng_next(&r), 0x15780b2e0c2ec716ull);
    ck_assert_uint_eq(rng_next(&r), 0x6104d9866d113a7eull);
    ck_assert_uint_eq(rng_next(&r), 0xae17533239e499a1ull);
    rng_seed_stream(&r, 42, 1);
    ck_assert_uint_eq(rng_next(&r), 0x584870a53e6ddcdfull);
    ck_assert_uint_eq(rng_next(&r), 0x24862b58ab088c44ull);
}
END_TEST

START_TEST(test_known_shuffle)
{
    Rng r;
    rng_seed(&r, 42);
    size_t *perm;
    Error err = { "" };
    ck_assert_int_eq(shuffle_permutation(10, &r, &perm, &err), 0);
    static const size_t expected[10] = { 7, 3, 8, 9, 5, 6, 4, 1, 0, 2 };
    for (int i = 0; i < 10; i++) ck_assert_uint_eq(perm[i], expected[i]);
    free(perm);
}
END_TEST

START_TEST(test_same_seed_same_order)
{
    Rng a, b;
    rng_seed(&a, 1234);
    rng_seed(&b, 1234);
    size_t *pa, *pb, *pc;
    Error err = { "" };
    ck_assert_int_eq(shuffle_permutation(1000, &a, &pa, &err), 0);
    ck_assert_int_eq(shuffle_permutation(1000, &b, &pb, &err), 0);
    ck_assert_int_eq(memcmp(pa, pb, 1000 * sizeof *pa), 0);
    /* A permutation: every index exactly once. */
    char seen[1000] = { 0 };
    for (int i = 0; i < 1000; i++) {
        ck_assert_uint_lt(pa[i], 1000);
        ck_assert_int_eq(seen[pa[i]]++, 0);
    }
    /* Another seed (or stream) gives another order. */
    Rng c;
    rng_seed_stream(&c, 1234, 1);
    ck_assert_int_eq(shuffle_permutation(1000, &c, &pc, &err), 0);
    ck_assert_int_ne(memcmp(pa, pc, 1000 * sizeof *pa), 0);
    free(pa);
    free(pb);
    free(pc);
    size_t *id;
    ck_assert_int_eq(shuffle_permutation(5, NULL, &id, &err), 0);
    for (size_t i = 0; i < 5; i++) ck_assert_uint_eq(id[i], i);
    free(id);
}
END_TEST

/* The state is a plain struct: copying it (as a checkpoint does) resumes the
 * exact stream. */
START_TEST(test_state_roundtrip)
{
    Rng r;
    rng_seed(&r, 7);
    for (int i = 0; i < 100; i++) rng_next(&r);
    uint64_t saved[4];
    memcpy(saved, r.s, sizeof saved);
    uint64_t expect[5];
    for (int i = 0; i < 5; i++) expect[i] = rng_next(&r);
    Rng restored;
    memcpy(restored.s, saved, sizeof saved);
    for (int i = 0; i < 5; i++) ck_assert_uint_eq(rng_next(&restored), expect[i]);
}
END_TEST

START_TEST(test_below_and_uniform)
{
    Rng r;
    rng_seed(&r, 99);
    int counts[7] = { 0 };
    for (int i = 0; i < 70000; i++) {
        uint64_t v = rng_below(&r, 7);
        ck_assert_uint_lt(v, 7);
        counts[v]++;
    }
    /* 10000 expected per bucket; 5 sigma is about 460. */
    for (int i = 0; i < 7; i++) ck_assert_int_lt(abs(counts[i] - 10000), 500);
    ck_assert_uint_eq(rng_below(&r, 1), 0);
    double lo = 1, hi = 0;
    for (int i = 0; i < 10000; i++) {
        double u = rng_uniform(&r);
        ck_assert(u >= 0.0 && u < 1.0);
        if (u < lo) lo = u;
        if (u > hi) hi = u;
    }
    ck_assert(lo < 0.01 && hi > 0.99);
}
END_TEST

START_TEST(test_shard_known)
{
    size_t b, e;
    Error err = { "" };
    /* 10 items over 3 shards: 4, 3, 3 contiguous. */
    ck_assert_int_eq(shard_range(10, 3, 0, &b, &e, &err), 0);
    ck_assert_uint_eq(b, 0);
    ck_assert_uint_eq(e, 4);
    ck_assert_int_eq(shard_range(10, 3, 1, &b, &e, &err), 0);
    ck_assert_uint_eq(b, 4);
    ck_assert_uint_eq(e, 7);
    ck_assert_int_eq(shard_range(10, 3, 2, &b, &e, &err), 0);
    ck_assert_uint_eq(b, 7);
    ck_assert_uint_eq(e, 10);
    /* More shards than items: the last shards are empty. */
    ck_assert_int_eq(shard_range(2, 4, 3, &b, &e, &err), 0);
    ck_assert_uint_eq(b, 2);
    ck_assert_uint_eq(e, 2);
    ck_assert_int_eq(shard_range(10, 3, 3, &b, &e, &err), -1);
    ck_assert_str_eq(err.msg, "shard 3 of 3 does not exist");
    ck_assert_int_eq(shard_range(10, 0, 0, &b, &e, &err), -1);
    ck_assert_int_eq(shard_range(10, 2, -1, &b, &e, &err), -1);
}
END_TEST

/* Shards partition 0..n exactly, in order, sizes within one of each other. */
START_TEST(test_shard_partition)
{
    Error err = { "" };
    for (size_t n = 0; n <= 60; n++)
        for (int shards = 1; shards <= 9; shards++) {
            size_t next = 0, min = (size_t)-1, max = 0;
            for (int k = 0; k < shards; k++) {
                size_t b, e;
                ck_assert_int_eq(shard_range(n, shards, k, &b, &e, &err), 0);
                ck_assert_uint_eq(b, next);
                ck_assert_uint_ge(e, b);
                next = e;
                if (e - b < min) min = e - b;
                if (e - b > max) max = e - b;
            }
            ck_assert_uint_eq(next, n);
            ck_assert_uint_le(max - min, 1);
        }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("shuffle");
    TCase *tc = tcase_create("shuffle");
    tcase_add_test(tc, test_known_stream);
    tcase_add_test(tc, test_known_shuffle);
    tcase_add_test(tc, test_same_seed_same_order);
    tcase_add_test(tc, test_state_roundtrip);
    tcase_add_test(tc, test_below_and_uniform);
    tcase_add_test(tc, test_shard_known);
    tcase_add_test(tc, test_shard_partition);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
