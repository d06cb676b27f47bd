/* safetensors reader and writer, against files written by the Python
 * safetensors library and values computed by torch (tests/gen_model_fixtures.py). */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safetensors.h"

#define FIX "tests/fixtures/model/st/"

/* ------------------------------------------------------------- helpers */

static char tmpdir[64];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/modpo-st-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void remove_tmpdir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

static char *tmp_path(const char *name)
{
    static char bufs[4][256]; /* single-threaded tests; a few paths alive at once */
    static int next;
    char *buf = bufs[next++ % 4];
    snprintf(buf, 256, "%s/%s", tmpdir, name);
    return buf;
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    ck_assert_ptr_nonnull(fp);
    fseek(fp, 0, SEEK_END);
    *len = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *buf = malloc(*len + 1);
    ck_assert_uint_eq(fread(buf, 1, *len, fp), *len);
    fclose(fp);
    return buf;
}

static void write_all(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    ck_assert_ptr_nonnull(fp);
    ck_assert_uint_eq(fwrite(data, 1, len, fp), len);
    fclose(fp);
}

/* A file made of a header text (length prefixed) and `data_len` zero bytes. */
static const char *craft(const char *name, const char *header, size_t data_len)
{
    size_t hl = strlen(header);
    unsigned char *buf = calloc(8 + hl + data_len + 1, 1);
    uint64_t n = hl;
    memcpy(buf, &n, 8);
    memcpy(buf + 8, header, hl);
    const char *path = tmp_path(name);
    write_all(path, buf, 8 + hl + data_len);
    free(buf);
    return path;
}

/* Opening must fail with a message containing every one of the strings. */
static void expect_open_error(const char *path, const char *s1, const char *s2)
{
    SafetensorsFile *f = NULL;
    Error err = {{0}};
    ck_assert_int_eq(safetensors_open(path, &f, &err), -1);
    ck_assert_ptr_null(f);
    ck_assert_msg(strstr(err.msg, path), "message does not name the file: %s", err.msg);
    if (s1) ck_assert_msg(strstr(err.msg, s1), "'%s' not in: %s", s1, err.msg);
    if (s2) ck_assert_msg(strstr(err.msg, s2), "'%s' not in: %s", s2, err.msg);
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* --------------------------------------------------- reading the fixture */

START_TEST(test_read_dtypes)
{
    SafetensorsFile *f;
    Error err = {{0}};
    ck_assert_msg(safetensors_open(FIX "dtypes.safetensors", &f, &err) == 0, "%s", err.msg);
    json_t *want = json_load_file(FIX "dtypes.json", 0, NULL);
    ck_assert_ptr_nonnull(want);
    ck_assert_uint_eq(safetensors_count(f), json_object_size(want));
    ck_assert_str_eq(safetensors_metadata(f, "note"), "modpo fixture");
    ck_assert_ptr_null(safetensors_metadata(f, "format"));
    ck_assert_ptr_null(safetensors_find(f, "nope"));

    const char *name;
    json_t *w;
    json_object_foreach(want, name, w) {
        const SafetensorsTensor *t = safetensors_find(f, name);
        ck_assert_ptr_nonnull(t);
        json_t *shape = json_object_get(w, "shape"), *vals = json_object_get(w, "values");
        ck_assert_int_eq(t->ndim, (int)json_array_size(shape));
        for (int d = 0; d < t->ndim; d++)
            ck_assert_int_eq(t->shape[d], json_integer_value(json_array_get(shape, (size_t)d)));
        ck_assert_uint_eq(t->n_elements, json_array_size(vals));
        float *got = calloc(t->n_elements + 1, sizeof *got);
        ck_assert_msg(safetensors_tensor_to_f32(f, t, got, &err) == 0, "%s", err.msg);
        for (size_t i = 0; i < t->n_elements; i++) {
            float exp = (float)json_number_value(json_array_get(vals, i));
            ck_assert_msg(f32_bits(got[i]) == f32_bits(exp), "%s[%zu]: %g != %g", name, i,
                          (double)got[i], (double)exp);
        }
        free(got);
    }
    json_decref(want);

    const SafetensorsTensor *t = safetensors_find(f, "i64");
    ck_assert_int_eq(t->dtype, ST_I64);
    int64_t iv[3];
    ck_assert_int_eq(safetensors_tensor_to_i64(f, t, iv, &err), 0);
    ck_assert(iv[0] == -(1LL << 40) && iv[1] == 5 && iv[2] == 0);
    t = safetensors_find(f, "i32");
    int64_t i32[4];
    ck_assert_int_eq(safetensors_tensor_to_i64(f, t, i32, &err), 0);
    ck_assert(i32[0] == -3 && i32[3] == 2147483647);
    ck_assert_int_eq(safetensors_tensor_to_i64(f, safetensors_find(f, "f32"), i32, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "'f32'"));

    t = safetensors_find(f, "scalar");
    ck_assert_int_eq(t->ndim, 0);
    ck_assert_uint_eq(t->n_elements, 1);
    ck_assert_int_eq(safetensors_find(f, "bf16")->dtype, ST_BF16);
    ck_assert_int_eq(safetensors_find(f, "f16")->dtype, ST_F16);
    safetensors_close(f);
}
END_TEST

START_TEST(test_read_f32_checks_shape)
{
    SafetensorsFile *f;
    Error err = {{0}};
    ck_assert_int_eq(safetensors_open(FIX "dtypes.safetensors", &f, &err), 0);
    float buf[6];
    int64_t good[2] = {2, 3}, bad[2] = {3, 2};
    ck_assert_int_eq(safetensors_read_f32(f, "f32", buf, 2, good, &err), 0);
    ck_assert(buf[0] == 1.5f && buf[5] == -7.0f);
    ck_assert_int_eq(safetensors_read_f32(f, "f32", buf, 2, bad, &err), -1);
    ck_assert_msg(strstr(err.msg, FIX "dtypes.safetensors") && strstr(err.msg, "'f32'") &&
                  strstr(err.msg, "[2, 3]") && strstr(err.msg, "[3, 2]"), "%s", err.msg);
    ck_assert_int_eq(safetensors_read_f32(f, "f32", buf, 1, good, &err), -1);
    ck_assert_int_eq(safetensors_read_f32(f, "missing.weight", buf, 2, good, &err), -1);
    ck_assert_msg(strstr(err.msg, "missing tensor 'missing.weight'") &&
                  strstr(err.msg, "dtypes.safetensors"), "%s", err.msg);
    safetensors_close(f);
}
END_TEST

/* ------------------------------------------------------------- dtypes */

START_TEST(test_conversions)
{
    ck_assert(safetensors_f16_to_f32(0x3c00) == 1.0f);
    ck_assert(safetensors_f16_to_f32(0xc100) == -2.5f);
    ck_assert(safetensors_f16_to_f32(0x0001) == ldexpf(1.0f, -24));  /* smallest subnormal */
    ck_assert(safetensors_f16_to_f32(0x03ff) == ldexpf(1023.0f, -24)); /* largest subnormal */
    ck_assert(safetensors_f16_to_f32(0x7bff) == 65504.0f);
    ck_assert(isinf(safetensors_f16_to_f32(0x7c00)));
    ck_assert(isnan(safetensors_f16_to_f32(0x7e00)));
    ck_assert(signbit(safetensors_f16_to_f32(0x8000)));
    ck_assert(safetensors_bf16_to_f32(0x3f80) == 1.0f);
    ck_assert_uint_eq(safetensors_f32_to_bf16(1.0f), 0x3f80);
    /* 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even 1.0 */
    ck_assert_uint_eq(safetensors_f32_to_bf16(1.0f + ldexpf(1.0f, -8)), 0x3f80);
    ck_assert_uint_eq(safetensors_f32_to_bf16(1.0f + 3 * ldexpf(1.0f, -8)), 0x3f82);
    ck_assert_uint_eq(safetensors_f32_to_bf16(NAN), 0x7fc0);
    ck_assert_uint_eq(safetensors_f32_to_bf16(INFINITY), 0x7f80);
    ck_assert_int_eq(safetensors_dtype_from_name("BF16"), ST_BF16);
    ck_assert_int_eq(safetensors_dtype_from_name("Q4_K"), -1);
    ck_assert_uint_eq(safetensors_dtype_size(ST_I64), 8);
}
END_TEST

/* torch's float32 -> bfloat16 on tricky values, bit for bit. */
START_TEST(test_bf16_rounding_matches_torch)
{
    SafetensorsFile *f;
    Error err = {{0}};
    ck_assert_int_eq(safetensors_open(FIX "bf16_round.safetensors", &f, &err), 0);
    const SafetensorsTensor *src = safetensors_find(f, "src"), *ref = safetensors_find(f, "ref");
    ck_assert_int_eq(ref->dtype, ST_BF16);
    size_t n = src->n_elements;
    ck_assert_uint_ge(n, 60);
    float *x = malloc(n * sizeof *x);
    ck_assert_int_eq(safetensors_tensor_to_f32(f, src, x, &err), 0);
    const uint16_t *r = ref->data;
    for (size_t i = 0; i < n; i++) {
        /* torch's vectorised path writes NaN as 0xffff, its scalar one as
         * 0x7fc0 (ours): any NaN will do */
        if (isnan(x[i])) {
            ck_assert(isnan(safetensors_bf16_to_f32(safetensors_f32_to_bf16(x[i]))));
            continue;
        }
        ck_assert_msg(safetensors_f32_to_bf16(x[i]) == r[i], "value %zu (%a): got %04x torch %04x",
                      i, (double)x[i], safetensors_f32_to_bf16(x[i]), r[i]);
    }

    /* The writer's BF16 output is the same bytes. */
    make_tmpdir();
    SafetensorsWriter *w = safetensors_writer_new();
    int64_t shape[1] = {(int64_t)n};
    ck_assert_int_eq(safetensors_writer_add(w, "x", ST_BF16, 1, shape, x, &err), 0);
    ck_assert_msg(safetensors_writer_write(w, tmp_path("b.safetensors"), &err) == 0, "%s", err.msg);
    safetensors_writer_free(w);
    SafetensorsFile *g;
    ck_assert_msg(safetensors_open(tmp_path("b.safetensors"), &g, &err) == 0, "%s", err.msg);
    const SafetensorsTensor *t = safetensors_find(g, "x");
    ck_assert_int_eq(t->dtype, ST_BF16);
    const uint16_t *wrote = t->data;
    for (size_t i = 0; i < n; i++)
        if (!isnan(x[i])) ck_assert_uint_eq(wrote[i], r[i]);
    safetensors_close(g);
    remove_tmpdir();
    free(x);
    safetensors_close(f);
}
END_TEST

/* ------------------------------------------------------------- writer */

typedef struct {
    size_t calls, next;
} FillState;

static int fill_ramp(void *ctx, size_t start, size_t count, float *dst, Error *err)
{
    (void)err;
    FillState *s = ctx;
    ck_assert_uint_eq(start, s->next); /* chunks come in order */
    for (size_t i = 0; i < count; i++) dst[i] = (float)(start + i) * 0.5f;
    s->next = start + count;
    s->calls++;
    return 0;
}

static int fill_fail(void *ctx, size_t start, size_t count, float *dst, Error *err)
{
    (void)ctx; (void)start; (void)count; (void)dst;
    return error_set(err, "generator broke");
}

START_TEST(test_writer_round_trip)
{
    make_tmpdir();
    Error err = {{0}};
    float a[6] = {1, -2, 3.5f, 1e-20f, -0.0f, 7};
    int64_t sa[2] = {2, 3}, sb[1] = {(1 << 20) + 5}, s0[1] = {0};
    FillState fs = {0, 0};
    SafetensorsWriter *w = safetensors_writer_new();
    ck_assert_int_eq(safetensors_writer_add(w, "a", ST_F32, 2, sa, a, &err), 0);
    ck_assert_int_eq(safetensors_writer_add_fill(w, "big", ST_F32, 1, sb, fill_ramp, &fs, &err), 0);
    ck_assert_int_eq(safetensors_writer_add(w, "none", ST_BF16, 1, s0, NULL, &err), 0);
    ck_assert_int_eq(safetensors_writer_add(w, "a", ST_F32, 2, sa, a, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "'a' added twice"));
    ck_assert_int_eq(safetensors_writer_add(w, "c", ST_F16, 2, sa, a, &err), -1);
    ck_assert_int_eq(safetensors_writer_set_metadata(w, "who", "modpo", &err), 0);
    ck_assert_uint_eq(safetensors_writer_data_bytes(w), 24 + 4 * (size_t)sb[0]);
    const char *path = tmp_path("w.safetensors");
    ck_assert_msg(safetensors_writer_write(w, path, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(fs.calls, 2); /* chunked */
    safetensors_writer_free(w);
    ck_assert_int_eq(access(tmp_path("w.safetensors.tmp"), F_OK), -1);

    SafetensorsFile *f;
    ck_assert_msg(safetensors_open(path, &f, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(safetensors_metadata(f, "format"), "pt");
    ck_assert_str_eq(safetensors_metadata(f, "who"), "modpo");
    float got[6];
    ck_assert_int_eq(safetensors_read_f32(f, "a", got, 2, sa, &err), 0);
    ck_assert_mem_eq(got, a, sizeof a);
    const SafetensorsTensor *t = safetensors_find(f, "big");
    float *big = malloc(t->n_elements * sizeof *big);
    ck_assert_int_eq(safetensors_tensor_to_f32(f, t, big, &err), 0);
    for (size_t i = 0; i < t->n_elements; i++) ck_assert(big[i] == (float)i * 0.5f);
    free(big);
    ck_assert_uint_eq(safetensors_find(f, "none")->n_elements, 0);
    size_t len;
    unsigned char *raw = read_all(path, &len);
    uint64_t hlen;
    memcpy(&hlen, raw, 8);
    ck_assert_uint_eq(hlen % 8, 0); /* data 8-byte aligned, as the reference writer does */
    free(raw);
    safetensors_close(f);

    /* A failing generator leaves no file behind, not even the temporary. */
    w = safetensors_writer_new();
    ck_assert_int_eq(safetensors_writer_add_fill(w, "x", ST_F32, 1, sa, fill_fail, NULL, &err), 0);
    ck_assert_int_eq(safetensors_writer_write(w, tmp_path("fail.safetensors"), &err), -1);
    ck_assert_msg(strstr(err.msg, "generator broke") && strstr(err.msg, "'x'"), "%s", err.msg);
    safetensors_writer_free(w);
    ck_assert_int_eq(access(tmp_path("fail.safetensors"), F_OK), -1);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "test $(ls '%s' | wc -l) -eq 1", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
    remove_tmpdir();
}
END_TEST

/* ----------------------------------------------------- malformed files */

START_TEST(test_truncated)
{
    make_tmpdir();
    size_t len;
    unsigned char *good = read_all(FIX "dtypes.safetensors", &len);
    uint64_t hlen;
    memcpy(&hlen, good, 8);
    size_t cuts[] = {0, 4, 7, 8, 30, (size_t)hlen + 7, (size_t)hlen + 8, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        const char *path = tmp_path("cut.safetensors");
        write_all(path, good, cuts[i]);
        const char *want = cuts[i] < 8 ? "shorter than the 8-byte" : "truncated";
        if (cuts[i] == (size_t)hlen + 8 || cuts[i] == len - 1) {
            /* header intact: the last tensor's data is what is missing */
            expect_open_error(path, "truncated", "tensor '");
        } else {
            expect_open_error(path, want, NULL);
        }
    }
    free(good);
    expect_open_error("/nonexistent/x.safetensors", "cannot open", NULL);
    remove_tmpdir();
}
END_TEST

START_TEST(test_bad_header_length)
{
    make_tmpdir();
    size_t len;
    unsigned char *buf = read_all(FIX "dtypes.safetensors", &len);
    const char *path = tmp_path("hl.safetensors");
    uint64_t huge = 1ull << 40;
    memcpy(buf, &huge, 8);
    write_all(path, buf, len);
    expect_open_error(path, "absurd", NULL);
    uint64_t over = len - 7; /* one byte more than the file holds */
    memcpy(buf, &over, 8);
    write_all(path, buf, len);
    expect_open_error(path, "header length", "truncated");
    uint64_t small = 10; /* cuts the JSON */
    memcpy(buf, &small, 8);
    write_all(path, buf, len);
    expect_open_error(path, "malformed JSON", NULL);
    free(buf);
    remove_tmpdir();
}
END_TEST

START_TEST(test_bad_json_and_entries)
{
    make_tmpdir();
    expect_open_error(craft("j1", "{\"a\": {\"dtype\": \"F32\", ", 0), "malformed JSON", NULL);
    expect_open_error(craft("j2", "[1, 2]", 0), "not an object", NULL);
    expect_open_error(craft("j3", "{\"a\": 3}", 0), "tensor 'a'", NULL);
    expect_open_error(craft("j4", "{\"w\": {\"dtype\": \"Q4_K\", \"shape\": [2], "
                                  "\"data_offsets\": [0, 8]}}", 8),
                      "tensor 'w'", "unknown dtype \"Q4_K\"");
    expect_open_error(craft("j5", "{\"w\": {\"shape\": [2], \"data_offsets\": [0, 8]}}", 8),
                      "tensor 'w'", "dtype");
    expect_open_error(craft("j6", "{\"w\": {\"dtype\": \"F32\", \"shape\": [-2], "
                                  "\"data_offsets\": [0, 8]}}", 8), "tensor 'w'", "shape");
    expect_open_error(craft("j7", "{\"w\": {\"dtype\": \"F32\", \"shape\": [2]}}", 8),
                      "tensor 'w'", "data_offsets");
    expect_open_error(craft("j8", "{\"__metadata__\": {\"k\": 1}}", 0), "__metadata__", NULL);
    expect_open_error(craft("j9", "{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": "
                                  "[0, 8]}, \"w\": {\"dtype\": \"F32\", \"shape\": [2], "
                                  "\"data_offsets\": [8, 16]}}", 16), "malformed JSON", "w");
    remove_tmpdir();
}
END_TEST

START_TEST(test_bad_offsets)
{
    make_tmpdir();
    /* beyond the data */
    expect_open_error(craft("o1", "{\"w\": {\"dtype\": \"F32\", \"shape\": [4], "
                                  "\"data_offsets\": [0, 16]}}", 12), "tensor 'w'", "beyond");
    /* inconsistent with shape x dtype */
    expect_open_error(craft("o2", "{\"w\": {\"dtype\": \"F32\", \"shape\": [2, 2], "
                                  "\"data_offsets\": [0, 12]}}", 12), "tensor 'w'", "needs 16");
    expect_open_error(craft("o3", "{\"w\": {\"dtype\": \"BF16\", \"shape\": [3], "
                                  "\"data_offsets\": [0, 12]}}", 12), "tensor 'w'", "needs 6");
    /* end before begin */
    expect_open_error(craft("o4", "{\"w\": {\"dtype\": \"F32\", \"shape\": [0], "
                                  "\"data_offsets\": [8, 4]}}", 8), "tensor 'w'", "before");
    /* overlap, gap, and data nobody owns */
    expect_open_error(craft("o5", "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": "
                                  "[0, 8]}, \"b\": {\"dtype\": \"F32\", \"shape\": [2], "
                                  "\"data_offsets\": [4, 12]}}", 12), "tensor 'b'", "overlaps");
    expect_open_error(craft("o6", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": "
                                  "[0, 4]}, \"b\": {\"dtype\": \"F32\", \"shape\": [1], "
                                  "\"data_offsets\": [8, 12]}}", 12), "tensor 'b'", "gap");
    expect_open_error(craft("o7", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": "
                                  "[0, 4]}}", 12), "cover 4 bytes", NULL);
    expect_open_error(craft("o8", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": "
                                  "[0, \"4\"]}}", 4), "tensor 'a'", "data_offsets");
    /* a well-formed crafted file opens: empty tensors may share an offset */
    SafetensorsFile *f;
    Error err = {{0}};
    const char *ok = craft("ok", "{\"e\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": "
                                 "[4, 4]}, \"a\": {\"dtype\": \"I32\", \"shape\": [1], "
                                 "\"data_offsets\": [0, 4]}, \"b\": {\"dtype\": \"U8\", "
                                 "\"shape\": [2], \"data_offsets\": [4, 6]}}  ", 6);
    ck_assert_msg(safetensors_open(ok, &f, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(safetensors_count(f), 3);
    ck_assert_str_eq(safetensors_tensor(f, 0)->name, "e"); /* header order */
    safetensors_close(f);
    remove_tmpdir();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("safetensors");
    TCase *tc = tcase_create("read");
    tcase_add_test(tc, test_read_dtypes);
    tcase_add_test(tc, test_read_f32_checks_shape);
    tcase_add_test(tc, test_conversions);
    tcase_add_test(tc, test_bf16_rounding_matches_torch);
    suite_add_tcase(s, tc);
    tc = tcase_create("write");
    tcase_add_test(tc, test_writer_round_trip);
    suite_add_tcase(s, tc);
    tc = tcase_create("malformed");
    tcase_add_test(tc, test_truncated);
    tcase_add_test(tc, test_bad_header_length);
    tcase_add_test(tc, test_bad_json_and_entries);
    tcase_add_test(tc, test_bad_offsets);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
