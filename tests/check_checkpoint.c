/* Checkpoints: the HDF5 file (round trip, rejection of truncated, corrupted
 * and tampered files with messages naming what is wrong), the stage
 * directory (listing, fallback, pruning, best marker, interrupted writes) and
 * the atomic file helpers under them.  Everything is written under one
 * mkdtemp directory in /tmp, removed when the suite ends. */
#include <check.h>
#include <float.h>
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "checkpoint_dir.h"
#include "fs_util.h"

/* Made by the parent before the tests fork, removed by it afterwards, so a
 * failing test cannot leave files behind. */
static char root[PATH_MAX];

static void root_setup(void)
{
    strcpy(root, "/tmp/modpo-check-ckpt-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(root));
}

static void root_teardown(void)
{
    Error err;
    if (fs_remove_tree(root, &err)) fprintf(stderr, "cleanup: %s\n", err.msg);
}

/* A fresh directory for one test. */
static void new_dir(char *out)
{
    ck_assert_int_lt(snprintf(out, PATH_MAX, "%s/t-XXXXXX", root), PATH_MAX);
    ck_assert_ptr_nonnull(mkdtemp(out));
}

static void join(char *out, const char *dir, const char *name)
{
    ck_assert_int_lt(snprintf(out, PATH_MAX, "%s/%s", dir, name), PATH_MAX);
}

#define CK_ASSERT_HAS(haystack, needle)                                                            \
    ck_assert_msg(strstr((haystack), (needle)) != NULL, "\"%s\" not in \"%s\"", (needle),          \
                  (haystack))

/* A small trainer-like checkpoint whose values depend on step. */
static CheckpointWriter *sample(int64_t step)
{
    float params[64];
    for (int i = 0; i < 64; i++) params[i] = 0.25f * (float)i + (float)step;
    uint64_t rng[4] = {0x9e3779b97f4a7c15ull, (uint64_t)step, 3, 4};
    uint8_t mask[10] = {1, 0, 1, 1, 0, 0, 1, 0, 1, 1};
    CheckpointWriter *w = ckpt_writer_new();
    ck_assert_ptr_nonnull(w);
    ckpt_put_f32(w, "lora/params", params, 64);
    ckpt_put_u64(w, "rng/state", rng, 4);
    ckpt_put_u8(w, "data/mask", mask, 10);
    ckpt_attr_i64(w, "step", step);
    ckpt_attr_str(w, "stage", "modpo");
    return w;
}

static void write_sample(const char *path, int64_t step)
{
    CheckpointWriter *w = sample(step);
    Error err = {{0}};
    ck_assert_msg(ckpt_write(w, path, &err) == 0, "%s", err.msg);
    ckpt_writer_free(w);
}

static void save_sample(const char *dir, int64_t step, int limit, bool best)
{
    CheckpointWriter *w = sample(step);
    Error err = {{0}};
    ck_assert_msg(ckdir_save(dir, step, w, limit, best, &err) == 0, "%s", err.msg);
    ckpt_writer_free(w);
}

static int64_t step_of(const Checkpoint *c)
{
    int64_t step = -1;
    Error err;
    ck_assert_int_eq(ckpt_get_attr_i64(c, "step", &step, &err), 0);
    return step;
}

static long file_size(const char *path)
{
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    return (long)st.st_size;
}

/* Copies the first len bytes of src to dst. */
static void copy_prefix(const char *src, const char *dst, long len)
{
    char *data;
    size_t n;
    Error err;
    ck_assert_int_eq(fs_read_file(src, &data, &n, &err), 0);
    ck_assert_int_le(len, (long)n);
    FILE *f = fopen(dst, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    free(data);
}

static uint8_t byte_at(const char *path, long off)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fseek(f, off, SEEK_SET), 0);
    int ch = fgetc(f);
    fclose(f);
    ck_assert_int_ge(ch, 0);
    return (uint8_t)ch;
}

static void flip_byte(const char *path, long off)
{
    uint8_t b = byte_at(path, off) ^ 0x5a;
    FILE *f = fopen(path, "r+b");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fseek(f, off, SEEK_SET), 0);
    ck_assert_int_eq(fputc(b, f), b);
    fclose(f);
}

/* Where the bytes of a contiguous dataset start in the file. */
static long data_offset(const char *path, const char *dataset)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    hid_t d = H5Dopen2(f, dataset, H5P_DEFAULT);
    ck_assert_int_ge(d, 0);
    haddr_t off = H5Dget_offset(d);
    H5Dclose(d);
    H5Fclose(f);
    ck_assert(off != HADDR_UNDEF);
    return (long)off;
}

static Checkpoint *open_ok(const char *path)
{
    Error err = {{0}};
    Checkpoint *c = ckpt_open(path, &err);
    ck_assert_msg(c != NULL, "%s", err.msg);
    return c;
}

/* Opens a file expected to be rejected and returns the message. */
static void open_fails(const char *path, Error *err)
{
    err->msg[0] = '\0';
    Checkpoint *c = ckpt_open(path, err);
    ck_assert_msg(c == NULL, "%s was accepted", path);
    ck_assert_msg(strncmp(err->msg, path, strlen(path)) == 0, "message does not name the file: %s",
                  err->msg);
}

/* ------------------------------------------------------------ the file */

START_TEST(round_trip_every_type)
{
    char dir[PATH_MAX], path[PATH_MAX];
    new_dir(dir);
    join(path, dir, "all.h5");
    const float f32[8] = {0.0f, -0.0f, 1.5f, -3.25e-38f, FLT_MAX, INFINITY, NAN, 1e-45f};
    const double f64[6] = {0.0, -1.0 / 3.0, DBL_MAX, -INFINITY, NAN, 4.9e-324};
    const int64_t i64[4] = {INT64_MIN, -1, 0, INT64_MAX};
    const uint64_t u64[3] = {0, UINT64_MAX, 0x0123456789abcdefull};
    uint8_t u8[256];
    for (int i = 0; i < 256; i++) u8[i] = (uint8_t)i;
    float grid[3][4];
    for (int i = 0; i < 12; i++) grid[i / 4][i % 4] = (float)i - 5.5f;
    const uint64_t grid_dims[2] = {3, 4};

    CheckpointWriter *w = ckpt_writer_new();
    ck_assert_int_eq(ckpt_put_f32(w, "opt/f32", f32, 8), 0);
    ck_assert_int_eq(ckpt_put_f64(w, "opt/f64", f64, 6), 0);
    ck_assert_int_eq(ckpt_put_i64(w, "data/order", i64, 4), 0);
    ck_assert_int_eq(ckpt_put_u64(w, "rng/state", u64, 3), 0);
    ck_assert_int_eq(ckpt_put_u8(w, "bytes", u8, 256), 0);
    ck_assert_int_eq(ckpt_put(w, "lora/layers.0/q_proj/A", CKPT_F32, grid, 2, grid_dims), 0);
    ck_assert_int_eq(ckpt_put_u8(w, "empty", NULL, 0), 0);
    ck_assert_int_eq(ckpt_attr_i64(w, "step", 300), 0);
    ck_assert_int_eq(ckpt_attr_i64(w, "seed", -42), 0);
    ck_assert_int_eq(ckpt_attr_f64(w, "lr", 1.25e-4), 0);
    ck_assert_int_eq(ckpt_attr_str(w, "stage", "modpo"), 0);
    ck_assert_int_eq(ckpt_attr_str(w, "note", "w=0.4 \xc3\xbc \xe2\x9c\x93"), 0);
    ck_assert_int_eq(ckpt_attr_str(w, "blank", ""), 0);
    Error err = {{0}};
    ck_assert_msg(ckpt_write(w, path, &err) == 0, "%s", err.msg);
    ckpt_writer_free(w);

    Checkpoint *c = open_ok(path);
    float r32[8];
    double r64[6];
    int64_t ri[4];
    uint64_t ru[3];
    uint8_t rb[256];
    float rg[12];
    ck_assert_int_eq(ckpt_get_f32(c, "opt/f32", r32, 8, &err), 0);
    ck_assert_mem_eq(r32, f32, sizeof f32); /* bit for bit: -0, NaN, denormal */
    ck_assert_int_eq(ckpt_get_f64(c, "opt/f64", r64, 6, &err), 0);
    ck_assert_mem_eq(r64, f64, sizeof f64);
    ck_assert_int_eq(ckpt_get_i64(c, "data/order", ri, 4, &err), 0);
    ck_assert_mem_eq(ri, i64, sizeof i64);
    ck_assert_int_eq(ckpt_get_u64(c, "rng/state", ru, 3, &err), 0);
    ck_assert_mem_eq(ru, u64, sizeof u64);
    ck_assert_int_eq(ckpt_get_u8(c, "bytes", rb, 256, &err), 0);
    ck_assert_mem_eq(rb, u8, sizeof u8);
    ck_assert_int_eq(ckpt_get_f32(c, "lora/layers.0/q_proj/A", rg, 12, &err), 0);
    ck_assert_mem_eq(rg, grid, sizeof grid);
    ck_assert_int_eq(ckpt_get_u8(c, "empty", rb, 0, &err), 0);

    CkptType t;
    size_t n;
    int nd;
    uint64_t dims[CKPT_MAX_DIMS];
    ck_assert_int_eq(ckpt_info(c, "lora/layers.0/q_proj/A", &t, &n, &nd, dims, &err), 0);
    ck_assert_int_eq(t, CKPT_F32);
    ck_assert_uint_eq(n, 12);
    ck_assert_int_eq(nd, 2);
    ck_assert_uint_eq(dims[0], 3);
    ck_assert_uint_eq(dims[1], 4);
    ck_assert_int_eq(ckpt_info(c, "empty", &t, &n, &nd, dims, &err), 0);
    ck_assert_uint_eq(n, 0);
    ck_assert_uint_eq(dims[0], 0);

    /* Arrays are listed in name order. */
    const char *names[] = {"bytes",   "data/order", "empty",    "lora/layers.0/q_proj/A",
                           "opt/f32", "opt/f64",    "rng/state"};
    ck_assert_uint_eq(ckpt_n_arrays(c), 7);
    for (size_t i = 0; i < 7; i++) ck_assert_str_eq(ckpt_array_name(c, i), names[i]);
    ck_assert_ptr_null(ckpt_array_name(c, 7));
    ck_assert(ckpt_has(c, "rng/state"));
    ck_assert(!ckpt_has(c, "rng"));

    int64_t iv;
    double dv;
    const char *sv;
    ck_assert_int_eq(ckpt_get_attr_i64(c, "step", &iv, &err), 0);
    ck_assert_int_eq(iv, 300);
    ck_assert_int_eq(ckpt_get_attr_i64(c, "seed", &iv, &err), 0);
    ck_assert_int_eq(iv, -42);
    ck_assert_int_eq(ckpt_get_attr_f64(c, "lr", &dv, &err), 0);
    ck_assert(dv == 1.25e-4);
    ck_assert_int_eq(ckpt_get_attr_str(c, "stage", &sv, &err), 0);
    ck_assert_str_eq(sv, "modpo");
    ck_assert_int_eq(ckpt_get_attr_str(c, "note", &sv, &err), 0);
    ck_assert_str_eq(sv, "w=0.4 \xc3\xbc \xe2\x9c\x93");
    ck_assert_int_eq(ckpt_get_attr_str(c, "blank", &sv, &err), 0);
    ck_assert_str_eq(sv, "");
    ck_assert_int_eq(ckpt_get_attr_str(c, "format", &sv, &err), 0);
    ck_assert_str_eq(sv, CKPT_FORMAT_NAME);
    ck_assert_int_eq(ckpt_get_attr_i64(c, "format_version", &iv, &err), 0);
    ck_assert_int_eq(iv, CKPT_FORMAT_VERSION);
    ck_assert(ckpt_has_attr(c, "lr"));
    ck_assert(!ckpt_has_attr(c, "checksum")); /* the checksum is not content */
    ck_assert_str_eq(ckpt_path(c), path);
    ckpt_close(c);

    /* Readers of other tools see groups, not slashes in names. */
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    ck_assert_int_gt(H5Lexists(f, "lora/layers.0/q_proj", H5P_DEFAULT), 0);
    hid_t g = H5Gopen2(f, "lora/layers.0", H5P_DEFAULT);
    ck_assert_int_ge(g, 0);
    H5Gclose(g);
    H5Fclose(f);
}
END_TEST

START_TEST(equal_content_gives_identical_files)
{
    char dir[PATH_MAX], a[PATH_MAX], b[PATH_MAX];
    new_dir(dir);
    join(a, dir, "a.h5");
    join(b, dir, "b.h5");
    write_sample(a, 7);
    write_sample(b, 7);
    char *da, *db;
    size_t na, nb;
    Error err;
    ck_assert_int_eq(fs_read_file(a, &da, &na, &err), 0);
    ck_assert_int_eq(fs_read_file(b, &db, &nb, &err), 0);
    ck_assert_uint_eq(na, nb);
    ck_assert(memcmp(da, db, na) == 0);
    free(da);
    free(db);
}
END_TEST

START_TEST(bad_puts_are_reported_by_write)
{
    char dir[PATH_MAX], path[PATH_MAX];
    new_dir(dir);
    join(path, dir, "bad.h5");
    const float x[2] = {1, 2};
    const char *bad_arrays[] = {"", "/a", "a/", "a//b", "a b", "../x", "a/./b", "a\xc3\xbc"};
    for (size_t i = 0; i < sizeof bad_arrays / sizeof *bad_arrays; i++) {
        CheckpointWriter *w = ckpt_writer_new();
        ck_assert_int_eq(ckpt_put_f32(w, bad_arrays[i], x, 2), -1);
        Error err = {{0}};
        ck_assert_int_eq(ckpt_write(w, path, &err), -1);
        CK_ASSERT_HAS(err.msg, "invalid array name");
        ckpt_writer_free(w);
    }
    struct {
        const char *first, *second, *expect;
    } clashes[] = {
        {"x", "x", "array 'x' put twice"},
        {"x", "x/y", "'x' and 'x/y' conflict"},
        {"x/y/z", "x/y", "'x/y/z' and 'x/y' conflict"},
    };
    for (size_t i = 0; i < 3; i++) {
        CheckpointWriter *w = ckpt_writer_new();
        ck_assert_int_eq(ckpt_put_f32(w, clashes[i].first, x, 2), 0);
        ck_assert_int_eq(ckpt_put_f32(w, clashes[i].second, x, 2), -1);
        Error err = {{0}};
        ck_assert_int_eq(ckpt_write(w, path, &err), -1);
        CK_ASSERT_HAS(err.msg, clashes[i].expect);
        CK_ASSERT_HAS(err.msg, path);
        ckpt_writer_free(w);
    }
    /* Only the first problem is reported; attribute names are checked too. */
    CheckpointWriter *w = ckpt_writer_new();
    ck_assert_int_eq(ckpt_attr_i64(w, "checksum", 1), -1);
    ck_assert_int_eq(ckpt_attr_i64(w, "a/b", 1), -1);
    ck_assert_int_eq(ckpt_put_f32(w, "fine", x, 2), 0);
    Error err = {{0}};
    ck_assert_int_eq(ckpt_write(w, path, &err), -1);
    CK_ASSERT_HAS(err.msg, "attribute 'checksum' is reserved");
    ckpt_writer_free(w);
    w = ckpt_writer_new();
    ck_assert_int_eq(ckpt_attr_str(w, "format", "x"), -1);
    ck_assert_int_eq(ckpt_attr_i64(w, "step", 1), 0);
    ck_assert_int_eq(ckpt_attr_f64(w, "step", 1), -1);
    ckpt_writer_free(w);
    ck_assert(!fs_exists(path));
}
END_TEST

START_TEST(truncated_file_is_rejected)
{
    char dir[PATH_MAX], good[PATH_MAX], cut[PATH_MAX];
    new_dir(dir);
    join(good, dir, "good.h5");
    join(cut, dir, "cut.h5");
    write_sample(good, 100);
    long size = file_size(good);
    ck_assert_int_gt(size, 1000);
    const long lengths[] = {0, 1, 7, 100, 512, size / 2, size - 100, size - 1};
    for (size_t i = 0; i < sizeof lengths / sizeof *lengths; i++) {
        copy_prefix(good, cut, lengths[i]);
        Error err;
        open_fails(cut, &err);
        CK_ASSERT_HAS(err.msg, "HDF5");
    }
    Checkpoint *c = open_ok(good);
    ck_assert_int_eq(step_of(c), 100);
    ckpt_close(c);
}
END_TEST

START_TEST(flipped_data_byte_fails_the_checksum)
{
    char dir[PATH_MAX], path[PATH_MAX];
    new_dir(dir);
    join(path, dir, "flip.h5");
    write_sample(path, 100);
    long off = data_offset(path, "lora/params");
    /* params[1] = 0.25 + 100 = 100.25f: its bytes are where H5Dget_offset says. */
    float expect = 100.25f;
    uint8_t raw[4];
    memcpy(raw, &expect, 4);
    for (int i = 0; i < 4; i++) ck_assert_uint_eq(byte_at(path, off + 4 + i), raw[i]);

    flip_byte(path, off + 6);
    Error err;
    open_fails(path, &err);
    CK_ASSERT_HAS(err.msg, "checksum mismatch");
    ck_assert_int_eq(ckpt_verify(path, &err), -1);
    flip_byte(path, off + 6); /* undone: the file is good again */
    ck_assert_msg(ckpt_verify(path, &err) == 0, "%s", err.msg);

    long moff = data_offset(path, "data/mask");
    flip_byte(path, moff + 9);
    open_fails(path, &err);
    CK_ASSERT_HAS(err.msg, "checksum mismatch");
}
END_TEST

/* Rewrites part of a good file with the HDF5 API, as a tool or a bug might. */
static hid_t reopen_rw(const char *path)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    return f;
}

static void set_i64_attr(hid_t f, const char *name, int64_t v)
{
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    ck_assert_int_ge(a, 0);
    ck_assert_int_ge(H5Awrite(a, H5T_NATIVE_INT64, &v), 0);
    H5Aclose(a);
}

START_TEST(tampered_content_is_named)
{
    char dir[PATH_MAX], path[PATH_MAX];
    new_dir(dir);
    join(path, dir, "t.h5");
    Error err;

    write_sample(path, 100);
    hid_t f = reopen_rw(path);
    set_i64_attr(f, "step", 101);
    H5Fclose(f);
    open_fails(path, &err);
    CK_ASSERT_HAS(err.msg, "checksum mismatch");

    write_sample(path, 100);
    f = reopen_rw(path);
    ck_assert_int_ge(H5Ldelete(f, "rng/state", H5P_DEFAULT), 0);
    H5Fclose(f);
    open_fails(path, &err);
    CK_ASSERT_HAS(err.msg, "checksum mismatch");

    write_sample(path, 100);
    f = reopen_rw(path);
    set_i64_attr(f, "format_version", 2);
    H5Fclose(f);
    open_fails(path, &err);
    CK_ASSERT_HAS(err.msg, "unsupported format version 2");

    write_sample(path, 100);
    f = reopen_rw(path);
    ck_assert_int_ge(H5Adelete(f, "checksum"), 0);
    H5Fclose(f);
    open_fails(path, &err);
    CK_ASSERT_HAS(err.msg, "attribute 'checksum' missing");

    write_sample(path, 100);
    f = reopen_rw(path);
    hsize_t dim = 3;
    hid_t space = H5Screate_simple(1, &dim, NULL);
    hid_t d =
        H5Dcreate2(f, "lora/extra", H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert_int_ge(d, 0);
    H5Dclose(d);
    H5Sclose(space);
    H5Fclose(f);
    open_fails(path, &err);
    CK_ASSERT_HAS(err.msg, "array 'lora/extra' has an unsupported type");

    /* An HDF5 file that is not ours. */
    f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(f);
    open_fails(path, &err);
    CK_ASSERT_HAS(err.msg, "not a modpo checkpoint");

    join(path, dir, "absent.h5");
    open_fails(path, &err);
    CK_ASSERT_HAS(err.msg, "No such file");
}
END_TEST

START_TEST(missing_or_mismatched_array_is_named)
{
    char dir[PATH_MAX], path[PATH_MAX];
    new_dir(dir);
    join(path, dir, "g.h5");
    write_sample(path, 5);
    Checkpoint *c = open_ok(path);
    float buf[65];
    double dbuf[64];
    int64_t iv;
    Error err;

    ck_assert_int_eq(ckpt_get_f32(c, "lora/nope", buf, 64, &err), -1);
    CK_ASSERT_HAS(err.msg, path);
    CK_ASSERT_HAS(err.msg, "array 'lora/nope' missing");

    ck_assert_int_eq(ckpt_get_f32(c, "lora/params", buf, 65, &err), -1);
    CK_ASSERT_HAS(err.msg, path);
    CK_ASSERT_HAS(err.msg, "array 'lora/params' has 64 elements, expected 65");

    ck_assert_int_eq(ckpt_get_f64(c, "lora/params", dbuf, 64, &err), -1);
    CK_ASSERT_HAS(err.msg, "array 'lora/params' is f32, expected f64");

    ck_assert_int_eq(ckpt_get_attr_i64(c, "epoch", &iv, &err), -1);
    CK_ASSERT_HAS(err.msg, "attribute 'epoch' missing");
    ck_assert_int_eq(ckpt_get_attr_i64(c, "stage", &iv, &err), -1);
    CK_ASSERT_HAS(err.msg, "attribute 'stage' is str, expected i64");

    ck_assert_int_eq(ckpt_info(c, "rng", NULL, NULL, NULL, NULL, &err), -1);
    CK_ASSERT_HAS(err.msg, "array 'rng' missing");

    ck_assert_int_eq(ckpt_get_f32(c, "lora/params", buf, 64, &err), 0);
    ck_assert(buf[3] == 5.75f);
    ckpt_close(c);
}
END_TEST

/* ------------------------------------------------------ the directory */

START_TEST(checkpoint_names)
{
    char name[64], path[PATH_MAX];
    Error err;
    ck_assert_int_eq(ckdir_file_name(name, sizeof name, 300, &err), 0);
    ck_assert_str_eq(name, "checkpoint-00000300.h5");
    ck_assert_int_eq(ckdir_path(path, sizeof path, "runs/sft", 123456789, &err), 0);
    ck_assert_str_eq(path, "runs/sft/checkpoint-123456789.h5");
    ck_assert_int_eq(ckdir_file_name(name, sizeof name, -1, &err), -1);

    int64_t step = 0;
    ck_assert(ckdir_parse_name("checkpoint-00000300.h5", &step));
    ck_assert_int_eq(step, 300);
    ck_assert(ckdir_parse_name("checkpoint-123456789.h5", &step));
    ck_assert_int_eq(step, 123456789);
    const char *not_names[] = {"checkpoint-300.h5",
                               "checkpoint-000000300.h5",
                               "checkpoint-00000300.h5.tmp-1",
                               "checkpoint-0000030a.h5",
                               "checkpoint-00000300.h5~",
                               "Checkpoint-00000300.h5",
                               "checkpoint-00000300",
                               "best"};
    for (size_t i = 0; i < sizeof not_names / sizeof *not_names; i++)
        ck_assert_msg(!ckdir_parse_name(not_names[i], &step), "%s accepted", not_names[i]);
}
END_TEST

START_TEST(listing_is_newest_first_and_ignores_others)
{
    char dir[PATH_MAX], p[PATH_MAX];
    new_dir(dir);
    int64_t *steps;
    size_t n;
    Error err;

    join(p, dir, "missing");
    ck_assert_int_eq(ckdir_list(p, &steps, &n, &err), 0);
    ck_assert_uint_eq(n, 0);
    ck_assert_ptr_null(steps);

    save_sample(dir, 20, 0, false);
    save_sample(dir, 1000, 0, false);
    save_sample(dir, 300, 0, false);
    join(p, dir, "checkpoint-00000400.h5.tmp-4242");
    ck_assert_int_eq(fs_write_atomic(p, "", 0, &err), 0);
    join(p, dir, "checkpoint-00000500.h5"); /* a directory is not a checkpoint file */
    ck_assert_int_eq(mkdir(p, 0777), 0);
    join(p, dir, "notes.txt");
    ck_assert_int_eq(fs_write_atomic(p, "x", 1, &err), 0);

    ck_assert_int_eq(ckdir_list(dir, &steps, &n, &err), 0);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(steps[0], 1000);
    ck_assert_int_eq(steps[1], 300);
    ck_assert_int_eq(steps[2], 20);
    free(steps);
}
END_TEST

START_TEST(interrupted_write_never_replaces_a_good_checkpoint)
{
    char dir[PATH_MAX], good[PATH_MAX], p[PATH_MAX];
    new_dir(dir);
    save_sample(dir, 100, 0, true);
    ck_assert_int_eq(ckdir_path(good, sizeof good, dir, 100, NULL), 0);

    /* A crash while writing step 200 and another while rewriting step 100
     * leave only temporary files, half written. */
    join(p, dir, "checkpoint-00000200.h5.tmp-99999");
    copy_prefix(good, p, file_size(good) / 2);
    join(p, dir, "checkpoint-00000100.h5.tmp-88888");
    copy_prefix(good, p, 300);
    join(p, dir, "best.tmp-77777");
    copy_prefix(good, p, 3);

    int64_t *steps, step;
    size_t n;
    char warn[512];
    Error err = {{0}};
    ck_assert_int_eq(ckdir_list(dir, &steps, &n, &err), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(steps[0], 100);
    free(steps);
    Checkpoint *c = NULL;
    ck_assert_int_eq(ckdir_find_latest_valid(dir, &step, &c, warn, sizeof warn, &err), 0);
    ck_assert_int_eq(step, 100);
    ck_assert_str_eq(warn, "");
    ck_assert_int_eq(step_of(c), 100);
    ckpt_close(c);

    /* A write that fails in the middle (here: its temporary name is taken by
     * a directory) reports the error and leaves the old file alone. */
    char tmp[PATH_MAX];
    ck_assert_int_eq(fs_tmp_name(tmp, sizeof tmp, good, &err), 0);
    ck_assert_int_eq(mkdir(tmp, 0777), 0);
    CheckpointWriter *w = sample(999);
    ck_assert_int_eq(ckpt_write(w, good, &err), -1);
    CK_ASSERT_HAS(err.msg, good);
    ckpt_writer_free(w);
    ck_assert_int_eq(rmdir(tmp), 0);
    c = open_ok(good);
    ck_assert_int_eq(step_of(c), 100);
    ckpt_close(c);

    int removed = 0;
    ck_assert_int_eq(ckdir_remove_leftovers(dir, &removed, &err), 0);
    ck_assert_int_eq(removed, 3);
    bool empty;
    ck_assert_int_eq(ckdir_list(dir, &steps, &n, &err), 0);
    ck_assert_uint_eq(n, 1);
    free(steps);
    join(p, dir, "best");
    ck_assert(fs_exists(p));
    ck_assert(fs_exists(good));
    ck_assert_int_eq(fs_dir_is_empty(dir, &empty, &err), 0);
    ck_assert(!empty);
}
END_TEST

START_TEST(corrupt_newest_falls_back_to_previous)
{
    char dir[PATH_MAX], p[PATH_MAX];
    new_dir(dir);
    int64_t step;
    char warn[1024];
    Error err = {{0}};

    /* Nothing yet: "none", not an error. */
    ck_assert_int_eq(ckdir_find_latest_valid(dir, &step, NULL, warn, sizeof warn, &err), 0);
    ck_assert_int_eq(step, -1);
    ck_assert_str_eq(warn, "");

    save_sample(dir, 100, 0, false);
    save_sample(dir, 200, 0, false);
    save_sample(dir, 300, 0, false);
    ck_assert_int_eq(ckdir_find_latest_valid(dir, &step, NULL, warn, sizeof warn, &err), 0);
    ck_assert_int_eq(step, 300);
    ck_assert_str_eq(warn, "");

    ck_assert_int_eq(ckdir_path(p, sizeof p, dir, 300, NULL), 0);
    flip_byte(p, data_offset(p, "lora/params") + 10);
    Checkpoint *c = NULL;
    ck_assert_int_eq(ckdir_find_latest_valid(dir, &step, &c, warn, sizeof warn, &err), 0);
    ck_assert_int_eq(step, 200);
    ck_assert_int_eq(step_of(c), 200);
    ckpt_close(c);
    ck_assert_msg(strncmp(warn, "checkpoint-00000300.h5 is corrupt (checksum mismatch", 52) == 0,
                  "%s", warn);
    const char *tail = "); using checkpoint-00000200.h5";
    ck_assert_str_eq(warn + strlen(warn) - strlen(tail), tail);

    ck_assert_int_eq(ckdir_path(p, sizeof p, dir, 200, NULL), 0);
    char cut[PATH_MAX];
    join(cut, dir, "cut");
    copy_prefix(p, cut, file_size(p) - 1);
    ck_assert_int_eq(rename(cut, p), 0);
    ck_assert_int_eq(ckdir_find_latest_valid(dir, &step, NULL, warn, sizeof warn, &err), 0);
    ck_assert_int_eq(step, 100);
    ck_assert_msg(strncmp(warn, "checkpoint-00000300.h5 is corrupt (checksum mismatch", 52) == 0,
                  "%s", warn);
    CK_ASSERT_HAS(warn, "; checkpoint-00000200.h5 is corrupt (");
    tail = "; using checkpoint-00000100.h5";
    ck_assert_str_eq(warn + strlen(warn) - strlen(tail), tail);

    /* All corrupt: an error, since starting over would discard them. */
    ck_assert_int_eq(ckdir_path(p, sizeof p, dir, 100, NULL), 0);
    copy_prefix(p, cut, 0);
    ck_assert_int_eq(rename(cut, p), 0);
    ck_assert_int_eq(ckdir_find_latest_valid(dir, &step, NULL, warn, sizeof warn, &err), -1);
    ck_assert_int_eq(step, -1);
    CK_ASSERT_HAS(err.msg, "none of its 3 checkpoints is valid");
    CK_ASSERT_HAS(err.msg, "checkpoint-00000100.h5 is corrupt");
}
END_TEST

static void assert_steps(const char *dir, size_t n_expect, const int64_t *expect)
{
    int64_t *steps;
    size_t n;
    Error err;
    ck_assert_int_eq(ckdir_list(dir, &steps, &n, &err), 0);
    ck_assert_uint_eq(n, n_expect);
    for (size_t i = 0; i < n; i++) ck_assert_int_eq(steps[i], expect[i]);
    free(steps);
}

START_TEST(pruning_keeps_limit_newest_plus_best)
{
    char dir[PATH_MAX], p[PATH_MAX];
    new_dir(dir);
    Error err;
    int64_t best;
    ck_assert_int_eq(ckdir_get_best(dir, &best, &err), 0);
    ck_assert_int_eq(best, -1);

    save_sample(dir, 100, 2, true);
    save_sample(dir, 200, 2, true);
    for (int64_t s = 300; s <= 600; s += 100) save_sample(dir, s, 2, false);
    assert_steps(dir, 3, (const int64_t[]){600, 500, 200});
    ck_assert_int_eq(ckdir_get_best(dir, &best, &err), 0);
    ck_assert_int_eq(best, 200);
    char *text;
    join(p, dir, "best");
    ck_assert_int_eq(fs_read_file(p, &text, NULL, &err), 0);
    ck_assert_str_eq(text, "checkpoint-00000200.h5\n");
    free(text);

    /* A new best frees the old one. */
    save_sample(dir, 700, 2, true);
    assert_steps(dir, 2, (const int64_t[]){700, 600});
    save_sample(dir, 800, 1, false);
    assert_steps(dir, 2, (const int64_t[]){800, 700});

    /* No limit keeps everything. */
    ck_assert_int_eq(ckdir_prune(dir, 0, &err), 0);
    assert_steps(dir, 2, (const int64_t[]){800, 700});
    ck_assert_int_eq(ckdir_prune(dir, 1, &err), 0);
    assert_steps(dir, 2, (const int64_t[]){800, 700});
    ck_assert_int_eq(ckdir_set_best(dir, 800, &err), 0);
    ck_assert_int_eq(ckdir_prune(dir, 1, &err), 0);
    assert_steps(dir, 1, (const int64_t[]){800});

    ck_assert_int_eq(fs_write_atomic(p, "rubbish\n", 8, &err), 0);
    ck_assert_int_eq(ckdir_get_best(dir, &best, &err), -1);
    CK_ASSERT_HAS(err.msg, p);
    ck_assert_int_eq(ckdir_prune(dir, 1, &err), -1);
}
END_TEST

/* ------------------------------------------------------------ fs_util */

static size_t count_entries(const char *dir)
{
    size_t n = 0;
    char cmd[PATH_MAX + 32];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", dir);
    FILE *f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fscanf(f, "%zu", &n), 1);
    pclose(f);
    return n;
}

START_TEST(atomic_write_replaces_whole_files)
{
    char dir[PATH_MAX], p[PATH_MAX], q[PATH_MAX];
    new_dir(dir);
    join(p, dir, "state.json");
    Error err = {{0}};
    char *text;
    size_t n;
    ck_assert_int_eq(fs_write_atomic(p, "{\"a\": 1}", 8, &err), 0);
    ck_assert_int_eq(fs_read_file(p, &text, &n, &err), 0);
    ck_assert_uint_eq(n, 8);
    ck_assert_str_eq(text, "{\"a\": 1}");
    free(text);
    ck_assert_int_eq(fs_write_atomic(p, "{}", 2, &err), 0);
    ck_assert_int_eq(fs_read_file(p, &text, &n, &err), 0);
    ck_assert_str_eq(text, "{}");
    free(text);
    ck_assert_uint_eq(count_entries(dir), 1); /* no temporary file left */

    /* Larger than fs_read_file's first buffer. */
    size_t big = 100000;
    char *data = malloc(big);
    for (size_t i = 0; i < big; i++) data[i] = (char)('a' + i % 26);
    ck_assert_int_eq(fs_write_atomic(p, data, big, &err), 0);
    ck_assert_int_eq(fs_read_file(p, &text, &n, &err), 0);
    ck_assert_uint_eq(n, big);
    ck_assert(memcmp(text, data, big) == 0);
    free(text);
    free(data);

    join(q, dir, "no/such/dir/x");
    ck_assert_int_eq(fs_write_atomic(q, "x", 1, &err), -1);
    CK_ASSERT_HAS(err.msg, q);
    ck_assert_int_eq(fs_read_file(q, &text, &n, &err), -1);
    CK_ASSERT_HAS(err.msg, "No such file");

    ck_assert_int_eq(fs_tmp_name(q, sizeof q, "a/b.h5", &err), 0);
    char expect[64];
    snprintf(expect, sizeof expect, "a/b.h5.tmp-%ld", (long)getpid());
    ck_assert_str_eq(q, expect);
    ck_assert_int_eq(fs_dirname(q, sizeof q, "a/b/c.h5", &err), 0);
    ck_assert_str_eq(q, "a/b");
    ck_assert_int_eq(fs_dirname(q, sizeof q, "c.h5", &err), 0);
    ck_assert_str_eq(q, ".");
    ck_assert_int_eq(fs_dirname(q, sizeof q, "/c.h5", &err), 0);
    ck_assert_str_eq(q, "/");
}
END_TEST

START_TEST(directory_helpers)
{
    char dir[PATH_MAX], p[PATH_MAX], q[PATH_MAX];
    new_dir(dir);
    Error err = {{0}};
    bool empty = false;

    join(p, dir, "a/b//c/");
    ck_assert_msg(fs_mkdir_p(p, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(fs_mkdir_p(p, &err), 0); /* exists: fine */
    join(p, dir, "a/b/c");
    ck_assert_int_eq(fs_dir_is_empty(p, &empty, &err), 0);
    ck_assert(empty);
    join(p, dir, "a/b");
    ck_assert_int_eq(fs_dir_is_empty(p, &empty, &err), 0);
    ck_assert(!empty);
    join(p, dir, "nowhere");
    ck_assert_int_eq(fs_dir_is_empty(p, &empty, &err), 0);
    ck_assert(empty);

    join(p, dir, "a/file");
    ck_assert_int_eq(fs_write_atomic(p, "x", 1, &err), 0);
    ck_assert_int_eq(fs_dir_is_empty(p, &empty, &err), -1);
    CK_ASSERT_HAS(err.msg, p);
    join(q, dir, "a/file/sub");
    ck_assert_int_eq(fs_mkdir_p(q, &err), -1);
    CK_ASSERT_HAS(err.msg, "a/file");

    /* remove_tree removes links, never what they point to. */
    char outside[PATH_MAX], kept[PATH_MAX];
    join(outside, dir, "outside");
    ck_assert_int_eq(fs_mkdir_p(outside, &err), 0);
    join(kept, outside, "kept.txt");
    ck_assert_int_eq(fs_write_atomic(kept, "keep", 4, &err), 0);
    join(p, dir, "a/b/c/link");
    ck_assert_int_eq(symlink(outside, p), 0);
    join(p, dir, "a/b/c/deep.txt");
    ck_assert_int_eq(fs_write_atomic(p, "y", 1, &err), 0);
    join(p, dir, "a");
    ck_assert_msg(fs_remove_tree(p, &err) == 0, "%s", err.msg);
    ck_assert(!fs_exists(p));
    ck_assert(fs_exists(kept));
    ck_assert_int_eq(fs_remove_tree(p, &err), 0);    /* already gone: fine */
    ck_assert_int_eq(fs_remove_tree(kept, &err), 0); /* a plain file too */
    ck_assert(!fs_exists(kept));
    ck_assert_int_eq(fs_dir_is_empty(outside, &empty, &err), 0);
    ck_assert(empty);
}
END_TEST

static Suite *checkpoint_suite(void)
{
    Suite *s = suite_create("checkpoint");
    TCase *file = tcase_create("file");
    tcase_add_unchecked_fixture(file, root_setup, root_teardown);
    tcase_add_test(file, round_trip_every_type);
    tcase_add_test(file, equal_content_gives_identical_files);
    tcase_add_test(file, bad_puts_are_reported_by_write);
    tcase_add_test(file, truncated_file_is_rejected);
    tcase_add_test(file, flipped_data_byte_fails_the_checksum);
    tcase_add_test(file, tampered_content_is_named);
    tcase_add_test(file, missing_or_mismatched_array_is_named);
    suite_add_tcase(s, file);
    TCase *dir = tcase_create("dir");
    tcase_add_unchecked_fixture(dir, root_setup, root_teardown);
    tcase_add_test(dir, checkpoint_names);
    tcase_add_test(dir, listing_is_newest_first_and_ignores_others);
    tcase_add_test(dir, interrupted_write_never_replaces_a_good_checkpoint);
    tcase_add_test(dir, corrupt_newest_falls_back_to_previous);
    tcase_add_test(dir, pruning_keeps_limit_newest_plus_best);
    suite_add_tcase(s, dir);
    TCase *fs = tcase_create("fs_util");
    tcase_add_unchecked_fixture(fs, root_setup, root_teardown);
    tcase_add_test(fs, atomic_write_replaces_whole_files);
    tcase_add_test(fs, directory_helpers);
    suite_add_tcase(s, fs);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(checkpoint_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
