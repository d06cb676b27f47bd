/* Generation records: the seed's response split, the exact JSONL bytes,
 * shard naming, atomic writes, and every way a directory of shards can be
 * incomplete or malformed. */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "generation_io.h"

int cmd_validate_eval(int argc, char **argv); /* src/cmd_validate_eval.c */

static char dir[64];

static void make_dir(void)
{
    strcpy(dir, "/tmp/modpo-genio-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void remove_dir(void)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static void write_text(const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

static char *read_text(const char *name)
{
    static char buf[8192];
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static int count_entries(void)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static const GenRecord *one(const char *raw, const char *prompt, const char *response, bool flag)
{
    static GenRecord r[8];
    static int next;
    Error err;
    GenRecord *slot = &r[next++ % 8];
    gen_record_free(slot);
    ck_assert_int_eq(gen_record_init(slot, raw, prompt, response, flag, &err), 0);
    return slot;
}

START_TEST(picks_the_response_as_the_seed_does)
{
    bool flag = false;
    /* The full decode starts with the prompt: the rest, with its leading space. */
    const char *full = "\n\nHuman:\nHi\n\nAssistant:\n Hello there";
    const char *r = gen_pick_response("\n\nHuman:\nHi\n\nAssistant:\n", full, "Hello there", &flag);
    ck_assert(flag);
    ck_assert_str_eq(r, " Hello there");
    ck_assert_ptr_eq(r, full + 24);
    /* In context the prompt's trailing space decoded otherwise: the response
     * decoded alone. */
    r = gen_pick_response("Assistant: ", "Assistant:Hello", "Hello", &flag);
    ck_assert(!flag);
    ck_assert_str_eq(r, "Hello");
    /* Empty prompt is a prefix of everything. */
    r = gen_pick_response("", "abc", "xyz", &flag);
    ck_assert(flag);
    ck_assert_str_eq(r, "abc");
    /* Full text shorter than the prompt. */
    r = gen_pick_response("abcdef", "abc", "", &flag);
    ck_assert(!flag);
    ck_assert_str_eq(r, "");
}
END_TEST

START_TEST(record_joins_prompt_and_response)
{
    GenRecord r;
    Error err;
    ck_assert_int_eq(gen_record_init(&r, "raw", "P: raw\n", "answer", true, &err), 0);
    ck_assert_str_eq(r.raw_prompt, "raw");
    ck_assert_str_eq(r.prompt, "P: raw\n");
    ck_assert_str_eq(r.response, "answer");
    ck_assert_str_eq(r.prompt_response, "P: raw\nanswer");
    ck_assert(r.response_had_prompt_prefix_match);
    gen_record_free(&r);
    ck_assert_ptr_null(r.prompt);
    gen_record_free(&r); /* twice is harmless */
}
END_TEST

START_TEST(shard_paths)
{
    char buf[128];
    Error err;
    ck_assert_int_eq(gen_shard_path(buf, sizeof buf, "out/gen", 1, 2, &err), 0);
    ck_assert_str_eq(buf, "out/gen/00001-of-00002.jsonl");
    ck_assert_int_eq(gen_shard_path(buf, sizeof buf, "d", 0, 1, &err), 0);
    ck_assert_str_eq(buf, "d/00000-of-00001.jsonl");
    ck_assert_int_eq(gen_shard_path(buf, sizeof buf, "d", 2, 2, &err), -1);
    ck_assert_int_eq(gen_shard_path(buf, sizeof buf, "d", 0, 0, &err), -1);
    ck_assert_int_eq(gen_shard_path(buf, sizeof buf, "d", 0, 100000, &err), -1);
    ck_assert_int_eq(gen_shard_path(buf, 10, "d", 0, 1, &err), -1);
}
END_TEST

START_TEST(writes_the_seeds_bytes)
{
    make_dir();
    Error err;
    GenRecord recs[2];
    recs[0] = *one("a", "b", "c", true);
    recs[1] = *one("q \"x\"\té", "p\n", "ü 😀\\", false);
    ck_assert_int_eq(gen_write_shard(dir, 0, 1, recs, 2, &err), 0);
    ck_assert_str_eq(read_text("00000-of-00001.jsonl"),
                     "{\"raw_prompt\": \"a\", \"prompt\": \"b\", \"response\": \"c\", "
                     "\"prompt_response\": \"bc\", \"response_had_prompt_prefix_match\": true}\n"
                     "{\"raw_prompt\": \"q \\\"x\\\"\\té\", \"prompt\": \"p\\n\", "
                     "\"response\": \"ü 😀\\\\\", \"prompt_response\": \"p\\nü 😀\\\\\", "
                     "\"response_had_prompt_prefix_match\": false}\n");
    ck_assert_int_eq(count_entries(), 1); /* no temporary left behind */
    remove_dir();
}
END_TEST

START_TEST(round_trip_in_rank_order)
{
    make_dir();
    Error err;
    GenRecord a[2] = {*one("r0", "p0", "x0", true), *one("r1", "p1", "x1", false)};
    GenRecord b[1] = {*one("r2", "p2 ß", "x2 ∑", true)};
    /* Written out of order; an empty shard is a valid shard. */
    ck_assert_int_eq(gen_write_shard(dir, 2, 3, b, 1, &err), 0);
    ck_assert_int_eq(gen_write_shard(dir, 1, 3, NULL, 0, &err), 0);
    ck_assert_int_eq(gen_write_shard(dir, 0, 3, a, 2, &err), 0);
    write_text("notes.txt", "ignored");
    write_text("00000-of-00003.jsonl.tmp.1", "ignored too");
    GenRecordList list;
    ck_assert_msg(gen_read_dir(dir, &list, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(list.world, 3);
    ck_assert_uint_eq(list.n, 3);
    ck_assert_str_eq(list.items[0].raw_prompt, "r0");
    ck_assert_str_eq(list.items[1].raw_prompt, "r1");
    ck_assert(!list.items[1].response_had_prompt_prefix_match);
    ck_assert_str_eq(list.items[2].prompt, "p2 ß");
    ck_assert_str_eq(list.items[2].response, "x2 ∑");
    ck_assert_str_eq(list.items[2].prompt_response, "p2 ßx2 ∑");
    ck_assert(list.items[2].response_had_prompt_prefix_match);
    gen_list_free(&list);
    ck_assert_ptr_null(list.items);
    remove_dir();
}
END_TEST

START_TEST(rewrite_replaces_the_file)
{
    make_dir();
    Error err;
    GenRecord a[2] = {*one("old", "p", "x", true), *one("old2", "p", "x", true)};
    GenRecord b[1] = {*one("new", "p", "y", true)};
    ck_assert_int_eq(gen_write_shard(dir, 0, 1, a, 2, &err), 0);
    ck_assert_int_eq(gen_write_shard(dir, 0, 1, b, 1, &err), 0);
    GenRecordList list;
    ck_assert_int_eq(gen_read_dir(dir, &list, &err), 0);
    ck_assert_uint_eq(list.n, 1);
    ck_assert_str_eq(list.items[0].raw_prompt, "new");
    gen_list_free(&list);
    ck_assert_int_eq(count_entries(), 1);
    remove_dir();
}
END_TEST

START_TEST(invalid_utf8_is_refused_and_leaves_nothing)
{
    make_dir();
    Error err;
    GenRecord r[1] = {*one("ok", "p", "bad \xff byte", true)};
    ck_assert_int_eq(gen_write_shard(dir, 0, 1, r, 1, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "record 0: response is not valid UTF-8"));
    ck_assert_int_eq(count_entries(), 0);
    remove_dir();
}
END_TEST

START_TEST(incomplete_sets_are_named)
{
    make_dir();
    Error err;
    GenRecordList list;
    ck_assert_int_eq(gen_read_dir(dir, &list, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "no NNNNN-of-NNNNN.jsonl"));

    GenRecord r[1] = {*one("a", "b", "c", true)};
    ck_assert_int_eq(gen_write_shard(dir, 0, 3, r, 1, &err), 0);
    ck_assert_int_eq(gen_write_shard(dir, 2, 3, r, 1, &err), 0);
    ck_assert_int_eq(gen_read_dir(dir, &list, &err), -1);
    ck_assert_msg(strstr(err.msg, "00001-of-00003.jsonl is missing") != NULL, "%s", err.msg);

    ck_assert_int_eq(gen_write_shard(dir, 1, 3, r, 1, &err), 0);
    ck_assert_int_eq(gen_write_shard(dir, 0, 2, r, 1, &err), 0);
    ck_assert_int_eq(gen_read_dir(dir, &list, &err), -1);
    ck_assert_msg(strstr(err.msg, "mixes shard sets") != NULL, "%s", err.msg);
    remove_dir();

    make_dir();
    write_text("00004-of-00002.jsonl", "");
    ck_assert_int_eq(gen_read_dir(dir, &list, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "not below the world size"));
    remove_dir();

    ck_assert_int_eq(gen_read_dir("/nonexistent/modpo-gen", &list, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent/modpo-gen"));
}
END_TEST

static void expect_bad_line(const char *text, const char *where, const char *what)
{
    make_dir();
    write_text("00000-of-00001.jsonl", text);
    GenRecordList list;
    Error err;
    ck_assert_int_eq(gen_read_dir(dir, &list, &err), -1);
    ck_assert_msg(strstr(err.msg, where) && strstr(err.msg, what), "got: %s", err.msg);
    ck_assert_ptr_null(list.items);
    remove_dir();
}

START_TEST(malformed_lines_name_file_and_line)
{
    const char *good = "{\"raw_prompt\": \"a\", \"prompt\": \"b\", \"response\": \"c\", "
                       "\"prompt_response\": \"bc\", \"response_had_prompt_prefix_match\": true}\n";
    char text[1024];
    snprintf(text, sizeof text, "%s%s{\"raw_prompt\": \"a\", oops}\n", good, good);
    expect_bad_line(text, "00000-of-00001.jsonl:3:", "malformed JSON");
    snprintf(text, sizeof text, "%s\n%s", good, good);
    expect_bad_line(text, "00000-of-00001.jsonl:2:", "malformed JSON");
    expect_bad_line("{\"raw_prompt\": \"a\", \"prompt\": \"b\", \"response\": \"c\", "
                    "\"response_had_prompt_prefix_match\": true}\n",
                    "00000-of-00001.jsonl:1:", "\"prompt_response\" is missing");
    expect_bad_line("{\"raw_prompt\": 3, \"prompt\": \"b\", \"response\": \"c\", "
                    "\"prompt_response\": \"bc\", \"response_had_prompt_prefix_match\": true}\n",
                    ":1:", "\"raw_prompt\" is not a string");
    expect_bad_line("{\"raw_prompt\": \"a\", \"prompt\": \"b\", \"response\": \"c\", "
                    "\"prompt_response\": \"bc\", \"response_had_prompt_prefix_match\": 1}\n",
                    ":1:", "not a boolean");
    expect_bad_line("[1, 2]\n", ":1:", "not a JSON object");
}
END_TEST

START_TEST(last_line_without_newline_is_read)
{
    make_dir();
    write_text("00000-of-00001.jsonl",
               "{\"raw_prompt\": \"a\", \"prompt\": \"b\", \"response\": \"c\", "
               "\"prompt_response\": \"stored\", \"response_had_prompt_prefix_match\": false}");
    GenRecordList list;
    Error err;
    ck_assert_int_eq(gen_read_dir(dir, &list, &err), 0);
    ck_assert_uint_eq(list.n, 1);
    ck_assert_str_eq(list.items[0].prompt_response, "stored"); /* kept as written */
    gen_list_free(&list);
    remove_dir();
}
END_TEST


/* Runs validate-eval with stdout and stderr captured together; returns its
 * exit status. */
static int run_validate(int argc, char **argv, char *out, size_t size)
{
    char path[] = "/tmp/modpo-validate-out-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    dup2(fd, 1);
    dup2(fd, 2);
    int rc = cmd_validate_eval(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, out, size - 1);
    out[n < 0 ? 0 : n] = '\0';
    close(fd);
    unlink(path);
    return rc;
}

static void write_prompts(const char *sub, const char *const *prompts, size_t n, int world)
{
    char d[128];
    snprintf(d, sizeof d, "%s/%s", dir, sub);
    ck_assert_int_eq(mkdir(d, 0700), 0);
    GenRecord recs[16];
    Error err;
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(gen_record_init(&recs[i], prompts[i], "p", "r", true, &err), 0);
    size_t per = (n + (size_t)world - 1) / (size_t)world;
    for (int r = 0; r < world; r++) {
        size_t b = (size_t)r * per < n ? (size_t)r * per : n, e = b + per < n ? b + per : n;
        ck_assert_int_eq(gen_write_shard(d, r, world, recs + b, e - b, &err), 0);
    }
    for (size_t i = 0; i < n; i++) gen_record_free(&recs[i]);
}

START_TEST(validate_eval_compares_prompt_lists)
{
    make_dir();
    const char *base[] = {"one", "two", "three", "four"};
    const char *swapped[] = {"one", "three", "two", "four"};
    const char *shorter[] = {"one", "two", "three"};
    char longp[200];
    memset(longp, 'x', sizeof longp - 1);
    longp[sizeof longp - 1] = '\0';
    const char *long_one[] = {"one", "two", "three", longp};
    write_prompts("sft", base, 4, 1);
    write_prompts("w0.4", base, 4, 3); /* same prompts, other shard count */
    write_prompts("swapped", swapped, 4, 2);
    write_prompts("short", shorter, 3, 1);
    write_prompts("long", long_one, 4, 1);
    char a[128], b[128], c[128], d[128], e[128], out[4096];
    snprintf(a, sizeof a, "%s/sft", dir);
    snprintf(b, sizeof b, "%s/w0.4", dir);
    snprintf(c, sizeof c, "%s/swapped", dir);
    snprintf(d, sizeof d, "%s/short", dir);
    snprintf(e, sizeof e, "%s/long", dir);

    char *ok[] = {"validate-eval", a, b};
    ck_assert_int_eq(run_validate(3, ok, out, sizeof out), 0);
    ck_assert_msg(strstr(out, "ok: 2 directories hold the same 4 prompts") != NULL, "%s", out);

    char *bad[] = {"validate-eval", a, c, d};
    ck_assert_int_eq(run_validate(4, bad, out, sizeof out), 1);
    ck_assert_msg(strstr(out, "mismatch at index 1:") && strstr(out, "\"two\"") &&
                      strstr(out, "\"three\"") && strstr(out, "mismatch at index 2:"),
                  "%s", out);
    ck_assert_msg(strstr(out, "swapped: 2 mismatches against") != NULL, "%s", out);
    ck_assert_msg(strstr(out, "has 4 prompts") && strstr(out, "has 3") &&
                      strstr(out, "short: 1 mismatch against"), "%s", out);

    /* Long prompts are cut at 80 characters. */
    char *cut[] = {"validate-eval", a, e};
    ck_assert_int_eq(run_validate(3, cut, out, sizeof out), 1);
    char expect[128];
    snprintf(expect, sizeof expect, "\"%.80s\"...", longp);
    ck_assert_msg(strstr(out, expect) != NULL, "%s", out);

    char *missing[] = {"validate-eval", a, "/nonexistent/gen"};
    ck_assert_int_eq(run_validate(3, missing, out, sizeof out), 1);
    ck_assert_msg(strstr(out, "/nonexistent/gen") != NULL, "%s", out);
    char *help[] = {"validate-eval", "--help"};
    ck_assert_int_eq(run_validate(2, help, out, sizeof out), 0);
    ck_assert_ptr_nonnull(strstr(out, "usage: modpo validate-eval"));
    char *none[] = {"validate-eval"};
    ck_assert_int_eq(run_validate(1, none, out, sizeof out), 2);
    ck_assert_ptr_nonnull(strstr(out, "usage:"));

    const char *subs[] = {"sft", "w0.4", "swapped", "short", "long"};
    for (int i = 0; i < 5; i++) {
        char sub[128];
        snprintf(sub, sizeof sub, "%s/%s", dir, subs[i]);
        DIR *dd = opendir(sub);
        struct dirent *en;
        while ((en = readdir(dd)) != NULL) {
            char path[512];
            snprintf(path, sizeof path, "%s/%s", sub, en->d_name);
            if (en->d_name[0] != '.') unlink(path);
        }
        closedir(dd);
        rmdir(sub);
    }
    remove_dir();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("generation_io");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, picks_the_response_as_the_seed_does);
    tcase_add_test(tc, record_joins_prompt_and_response);
    tcase_add_test(tc, shard_paths);
    tcase_add_test(tc, writes_the_seeds_bytes);
    tcase_add_test(tc, round_trip_in_rank_order);
    tcase_add_test(tc, rewrite_replaces_the_file);
    tcase_add_test(tc, invalid_utf8_is_refused_and_leaves_nothing);
    tcase_add_test(tc, incomplete_sets_are_named);
    tcase_add_test(tc, malformed_lines_name_file_and_line);
    tcase_add_test(tc, last_line_without_newline_is_read);
    tcase_add_test(tc, validate_eval_compares_prompt_lists);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
