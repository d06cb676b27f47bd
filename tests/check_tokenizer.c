/* Tokenizer: parity with sentencepiece on a corpus of tricky strings
 * (the JSON files in tests/fixtures/tokenizer, made by tests/gen_tokenizer_fixtures.py),
 * round trips, hand-checked ids, Hugging Face export, errors, speed, and the
 * `modpo tokenize` command.  The tiny tokenizer (ours) is always tested; Llama
 * 2's only where ../shared/llama2-tokenizer exists. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "tokenizer.h"
#include "utf8.h"

#define TINY_DIR "tests/tiny-tokenizer"
#define TINY_MODEL "tests/fixtures/tokenizer/tiny-tokenizer.model"
#define TINY_FIXTURE "tests/fixtures/tokenizer/tiny.json"
#define LLAMA_MODEL "../shared/llama2-tokenizer/tokenizer.model"
#define LLAMA_FIXTURE "tests/fixtures/tokenizer/llama2.json"
#define OUT_DIR "build/tests/tokenizer"

/* ---------------------------------------------------------------- helpers */

typedef struct {
    const char *name;
    const char *text, *decoded;
    size_t text_len, decoded_len;
    int32_t *ids;
    size_t n_ids;
} Case;

typedef struct {
    json_t *root;
    Case *cases;
    size_t n;
} Fixture;

static void fixture_load(const char *path, Fixture *f)
{
    json_error_t jerr;
    f->root = json_load_file(path, JSON_ALLOW_NUL, &jerr);
    ck_assert_msg(f->root != NULL, "%s: %s", path, jerr.text);
    json_t *cases = json_object_get(f->root, "cases");
    f->n = json_array_size(cases);
    ck_assert_uint_ge(f->n, 40);
    f->cases = calloc(f->n, sizeof *f->cases);
    for (size_t i = 0; i < f->n; i++) {
        json_t *c = json_array_get(cases, i), *ids = json_object_get(c, "ids");
        Case *k = &f->cases[i];
        k->name = json_string_value(json_object_get(c, "name"));
        k->text = json_string_value(json_object_get(c, "text"));
        k->text_len = json_string_length(json_object_get(c, "text"));
        k->decoded = json_string_value(json_object_get(c, "decoded"));
        k->decoded_len = json_string_length(json_object_get(c, "decoded"));
        ck_assert_msg(k->name && k->text && k->decoded && json_is_array(ids), "%s: case %zu", path, i);
        k->n_ids = json_array_size(ids);
        k->ids = malloc((k->n_ids + 1) * sizeof *k->ids);
        for (size_t j = 0; j < k->n_ids; j++) k->ids[j] = (int32_t)json_integer_value(json_array_get(ids, j));
    }
}

static void fixture_free(Fixture *f)
{
    for (size_t i = 0; i < f->n; i++) free(f->cases[i].ids);
    free(f->cases);
    json_decref(f->root);
}

static Tokenizer *load_file(const char *path)
{
    Tokenizer *t = NULL;
    Error err = {""};
    ck_assert_msg(tokenizer_load_file(path, &t, &err) == 0, "%s", err.msg);
    return t;
}

static Tokenizer *load_dir(const char *dir)
{
    Tokenizer *t = NULL;
    Error err = {""};
    ck_assert_msg(tokenizer_load_dir(dir, &t, &err) == 0, "%s", err.msg);
    return t;
}

static void encode(const Tokenizer *t, const char *s, size_t len, int32_t **ids, size_t *n)
{
    Error err = {""};
    ck_assert_msg(tokenizer_encode(t, s, len, ids, n, &err) == 0, "%s", err.msg);
}

static char *decode_len(const Tokenizer *t, const int32_t *ids, size_t n, size_t *len)
{
    char *s = NULL;
    Error err = {""};
    ck_assert_msg(tokenizer_decode_len(t, ids, n, &s, len, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(s[*len], 0);
    return s;
}

static char *decode(const Tokenizer *t, const int32_t *ids, size_t n)
{
    char *s = NULL;
    Error err = {""};
    ck_assert_msg(tokenizer_decode(t, ids, n, &s, &err) == 0, "%s", err.msg);
    return s;
}

static void format_ids(const int32_t *ids, size_t n, char *out, size_t size)
{
    size_t used = 0;
    out[0] = 0;
    for (size_t i = 0; i < n && used + 16 < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%d", i ? " " : "", ids[i]);
}

static void assert_ids(const char *what, const int32_t *got, size_t n_got, const int32_t *want,
                       size_t n_want)
{
    if (n_got == n_want && memcmp(got, want, n_got * sizeof *got) == 0) return;
    static char g[4096], w[4096];
    format_ids(got, n_got, g, sizeof g);
    format_ids(want, n_want, w, sizeof w);
    ck_abort_msg("%s: got [%s], want [%s]", what, g, w);
}

/* Every case: encode gives sentencepiece's ids, decode gives its text, and
 * text that sentencepiece gives back unchanged round-trips. */
static void check_parity_min(const Tokenizer *t, const char *fixture, const char *label,
                             size_t min_round_trips)
{
    Fixture f;
    fixture_load(fixture, &f);
    size_t round_trips = 0;
    for (size_t i = 0; i < f.n; i++) {
        const Case *c = &f.cases[i];
        int32_t *ids;
        size_t n;
        char what[256];
        snprintf(what, sizeof what, "%s, case %s", label, c->name);
        encode(t, c->text, c->text_len, &ids, &n);
        assert_ids(what, ids, n, c->ids, c->n_ids);
        size_t len;
        char *s = decode_len(t, ids, n, &len);
        ck_assert_msg(len == c->decoded_len && memcmp(s, c->decoded, c->decoded_len) == 0,
                      "%s: decode gave \"%s\", want \"%s\"", what, s, c->decoded);
        if (c->decoded_len == c->text_len && memcmp(c->decoded, c->text, c->text_len) == 0) round_trips++;
        free(s);
        free(ids);
    }
    ck_assert_uint_ge(round_trips, min_round_trips);
    fixture_free(&f);
}

/* Only the strings with a literal U+2581 may not come back unchanged. */
static void check_parity(const Tokenizer *t, const char *fixture, const char *label)
{
    check_parity_min(t, fixture, label, 43);
}

static void mkdirs(const char *path)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        mkdir(buf, 0755);
        *p = '/';
    }
    mkdir(buf, 0755);
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

static char *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot read %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    ck_assert_uint_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
    buf[len] = 0;
    fclose(f);
    if (n) *n = (size_t)len;
    return buf;
}

static int llama_present(void)
{
    if (access(LLAMA_MODEL, R_OK) == 0) return 1;
    printf("skipping Llama 2 tokenizer parity: ../shared/llama2-tokenizer absent\n");
    return 0;
}

static void assert_error(int rc, const Error *err, const char *needle1, const char *needle2)
{
    ck_assert_int_eq(rc, -1);
    ck_assert_msg(strstr(err->msg, needle1) != NULL, "error \"%s\" lacks \"%s\"", err->msg, needle1);
    if (needle2)
        ck_assert_msg(strstr(err->msg, needle2) != NULL, "error \"%s\" lacks \"%s\"", err->msg, needle2);
}

/* ------------------------------------------------------------------ UTF-8 */

START_TEST(test_utf8)
{
    size_t bad = 99;
    ck_assert_int_eq(utf8_validate("", 0, &bad), 0);
    ck_assert_int_eq(utf8_validate("h\xC3\xA9 \xE6\x97\xA5 \xF0\x9F\xA6\x99", 12, &bad), 0);
    struct { const char *s; size_t len, bad; } cases[] = {
        {"ab\xFF", 3, 2},             /* never valid */
        {"a\xC0\x80", 3, 1},          /* overlong NUL */
        {"\xED\xA0\x80", 3, 0},       /* surrogate U+D800 */
        {"xy\xF4\x90\x80\x80", 6, 2}, /* above U+10FFFF */
        {"ok\xE6\x97", 4, 2},         /* truncated */
        {"\x80", 1, 0},               /* stray continuation */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck_assert_int_eq(utf8_validate(cases[i].s, cases[i].len, &bad), -1);
        ck_assert_uint_eq(bad, cases[i].bad);
    }
    uint32_t cp;
    ck_assert_uint_eq(utf8_decode("\xF0\x9F\xA6\x99", 4, &cp), 4);
    ck_assert_uint_eq(cp, 0x1F999);
    char out[4];
    ck_assert_uint_eq(utf8_encode(0x2581, out), 3);
    ck_assert_int_eq(memcmp(out, "\xE2\x96\x81", 3), 0);
    ck_assert_uint_eq(utf8_decode("\xE6\x97", 2, &cp), 0);
}
END_TEST

/* ------------------------------------------------------------ tiny parity */

START_TEST(test_tiny_json_parity)
{
    Tokenizer *t = load_dir(TINY_DIR); /* picks tokenizer.json */
    ck_assert_int_eq(tokenizer_vocab_size(t), 512);
    check_parity(t, TINY_FIXTURE, "tiny tokenizer.json");
    tokenizer_free(t);
}
END_TEST

START_TEST(test_tiny_model_parity)
{
    Tokenizer *t = load_file(TINY_MODEL);
    ck_assert_int_eq(tokenizer_vocab_size(t), 512);
    check_parity(t, TINY_FIXTURE, "tiny tokenizer.model");
    tokenizer_free(t);
}
END_TEST

/* tokenizer.json as transformers 5 writes it: Metaspace pre-tokenizer (no
 * dummy prefix before a leading space) and merges in vocabulary order; the
 * expected ids are the tokenizers library's, not sentencepiece's. */
START_TEST(test_tiny_hf5_layout)
{
    Tokenizer *t = load_file("tests/fixtures/tokenizer/tiny-hf5-tokenizer.json");
    ck_assert_int_eq(tokenizer_vocab_size(t), 512);
    ck_assert_int_eq(tokenizer_bos_id(t), 1);
    /* text starting with a space no longer round-trips: fewer checks */
    check_parity_min(t, "tests/fixtures/tokenizer/tiny-hf5.json", "tiny, transformers 5 layout", 30);
    tokenizer_free(t);
}
END_TEST

/* Ids checked by hand against the tiny vocabulary: <unk> <s> </s> are 0-2,
 * byte 0xNN is <0xNN> at id 3 + 0xNN, merged pieces follow. */
START_TEST(test_tiny_known_ids)
{
    Tokenizer *t = load_dir(TINY_DIR);
    ck_assert_int_eq(tokenizer_unk_id(t), 0);
    ck_assert_int_eq(tokenizer_bos_id(t), 1);
    ck_assert_int_eq(tokenizer_eos_id(t), 2);
    ck_assert_str_eq(tokenizer_piece(t, 1), "<s>");
    ck_assert_str_eq(tokenizer_piece(t, 3 + 0x41), "<0x41>");
    ck_assert_str_eq(tokenizer_piece(t, 264), "\xE2\x96\x81the");
    ck_assert_int_eq(tokenizer_piece_id(t, "\xE2\x96\x81model"), 392);
    ck_assert_ptr_null(tokenizer_piece(t, 512));
    struct { const char *text; int32_t ids[10]; size_t n; } known[] = {
        {"the model", {264, 392}, 2},                           /* ▁the ▁model */
        {"\xF0\x9F\xA6\x99", {417, 243, 162, 169, 156}, 5},      /* ▁ + the llama's 4 bytes */
        {"  leading spaces", {373, 417, 313, 428, 352, 268, 430, 422, 315}, 9},
        {"\n", {417, 13}, 2},                                   /* ▁ <0x0A> */
        {"", {0}, 0},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        int32_t *ids;
        size_t n;
        encode(t, known[i].text, strlen(known[i].text), &ids, &n);
        assert_ids(known[i].text, ids, n, known[i].ids, known[i].n);
        free(ids);
    }
    tokenizer_free(t);
}
END_TEST

START_TEST(test_tiny_decode_rules)
{
    Tokenizer *t = load_dir(TINY_DIR);
    struct { int32_t ids[8]; size_t n; const char *want; } cases[] = {
        {{1, 264, 392, 2}, 4, "the model"},        /* BOS/EOS dropped, dummy prefix too */
        {{373}, 1, " "},                           /* ▁▁: only the dummy prefix goes */
        {{264, 264}, 2, "the the"},                /* later ▁ are spaces */
        {{417, 264}, 2, " the"},                   /* only the first piece's ▁ goes */
        {{1, 417, 2, 264}, 4, " the"},
        {{417, 243, 162, 169, 156}, 5, "\xF0\x9F\xA6\x99"},
        {{3 + 0xE6, 264}, 2, "\xEF\xBF\xBD the"},  /* a lone lead byte: U+FFFD */
        {{0}, 1, " \xE2\x81\x87 "},                /* <unk>: sentencepiece's surface */
        {{1, 2}, 2, ""},
        {{0}, 0, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *s = decode(t, cases[i].ids, cases[i].n);
        ck_assert_str_eq(s, cases[i].want);
        free(s);
    }
    char *s = NULL;
    Error err = {""};
    int32_t bad[] = {264, 512};
    assert_error(tokenizer_decode(t, bad, 2, &s, &err), &err, "512", "position 1");
    tokenizer_free(t);
}
END_TEST

/* Invalid bytes are encoded as U+FFFD (sentencepiece); "<s>" in text is text. */
START_TEST(test_tiny_encode_edge_cases)
{
    Tokenizer *t = load_dir(TINY_DIR);
    int32_t *a, *b;
    size_t na, nb;
    encode(t, "a\xFF" "b\xC0", 4, &a, &na);
    encode(t, "a\xEF\xBF\xBD" "b\xEF\xBF\xBD", 8, &b, &nb);
    assert_ids("invalid UTF-8", a, na, b, nb);
    free(a);
    free(b);
    encode(t, "<s></s><unk>", 12, &a, &na);
    for (size_t i = 0; i < na; i++) ck_assert_int_gt(a[i], 2);
    free(a);
    encode(t, "a\0b", 3, &a, &na); /* NUL is an ordinary character */
    size_t len;
    char *s = decode_len(t, a, na, &len);
    ck_assert_uint_eq(len, 3);
    ck_assert_int_eq(memcmp(s, "a\0b", 4), 0);
    free(s);
    free(a);
    tokenizer_free(t);
}
END_TEST

/* ---------------------------------------------------------- Llama 2 parity */

START_TEST(test_llama_parity)
{
    if (!llama_present()) return;
    Tokenizer *t = load_file(LLAMA_MODEL);
    ck_assert_int_eq(tokenizer_vocab_size(t), 32000);
    ck_assert_int_eq(tokenizer_bos_id(t), 1);
    ck_assert_int_eq(tokenizer_eos_id(t), 2);
    ck_assert_int_eq(tokenizer_unk_id(t), 0);
    check_parity(t, LLAMA_FIXTURE, "Llama 2 tokenizer.model");
    tokenizer_free(t);
}
END_TEST

/* The reference ids of ../shared/llama2-tokenizer/README.md. */
START_TEST(test_llama_readme_ids)
{
    if (!llama_present()) return;
    Tokenizer *t = load_file(LLAMA_MODEL);
    static const int32_t hello[] = {15043, 3186};
    static const int32_t prompt[] = {29871, 13, 13, 29950, 7889, 29901, 13, 5618, 338, 29871,
                                     29906, 29974, 29906, 29973, 13, 13, 7900, 22137, 29901, 13};
    static const int32_t spaces[] = {259, 8236, 8162};
    struct { const char *text; const int32_t *ids; size_t n; } refs[] = {
        {"Hello world", hello, 2},
        {"\n\nHuman:\nWhat is 2+2?\n\nAssistant:\n", prompt, 20},
        {"  leading spaces", spaces, 3},
    };
    for (size_t i = 0; i < 3; i++) {
        int32_t *ids;
        size_t n;
        encode(t, refs[i].text, strlen(refs[i].text), &ids, &n);
        assert_ids(refs[i].text, ids, n, refs[i].ids, refs[i].n);
        char *s = decode(t, ids, n);
        ck_assert_str_eq(s, refs[i].text);
        free(s);
        free(ids);
    }
    tokenizer_free(t);
}
END_TEST

/* Writes the C ids of every fixture case next to an exported tokenizer, for
 * tests/check_tokenizer_hf.py to compare with transformers. */
static void write_c_ids(const Tokenizer *t, const char *fixture, const char *dir)
{
    Fixture f;
    fixture_load(fixture, &f);
    json_t *cases = json_array();
    for (size_t i = 0; i < f.n; i++) {
        int32_t *ids;
        size_t n;
        encode(t, f.cases[i].text, f.cases[i].text_len, &ids, &n);
        json_t *arr = json_array();
        for (size_t j = 0; j < n; j++) json_array_append_new(arr, json_integer(ids[j]));
        json_array_append_new(cases, json_pack("{s:s, s:s%, s:o}", "name", f.cases[i].name, "text",
                                               f.cases[i].text, f.cases[i].text_len, "ids", arr));
        free(ids);
    }
    char path[512];
    snprintf(path, sizeof path, "%s/c_ids.json", dir);
    json_t *doc = json_pack("{s:o}", "cases", cases);
    ck_assert_int_eq(json_dump_file(doc, path, JSON_COMPACT), 0);
    json_decref(doc);
    fixture_free(&f);
}

/* tokenizer.model -> tokenizer.json -> same ids: checks the merge order we
 * write (transformers' converter order) against sentencepiece on Llama 2. */
START_TEST(test_llama_save_hf_round_trip)
{
    if (!llama_present()) return;
    Tokenizer *t = load_file(LLAMA_MODEL);
    const char *dir = OUT_DIR "/hf-llama2"; /* build/: never committed */
    mkdirs(dir);
    Error err = {""};
    ck_assert_msg(tokenizer_save_hf(t, dir, &err) == 0, "%s", err.msg);
    write_c_ids(t, LLAMA_FIXTURE, dir);
    tokenizer_free(t);
    t = load_dir(dir);
    ck_assert_int_eq(tokenizer_vocab_size(t), 32000);
    ck_assert_int_eq(tokenizer_bos_id(t), 1);
    check_parity(t, LLAMA_FIXTURE, "Llama 2 exported tokenizer.json");
    tokenizer_free(t);
}
END_TEST

/* ----------------------------------------------------------- HF export */

static void check_export(Tokenizer *t, const char *dir, const char *label)
{
    mkdirs(dir);
    Error err = {""};
    ck_assert_msg(tokenizer_save_hf(t, dir, &err) == 0, "%s", err.msg);
    write_c_ids(t, TINY_FIXTURE, dir);
    Tokenizer *back = load_dir(dir);
    ck_assert_int_eq(tokenizer_vocab_size(back), tokenizer_vocab_size(t));
    check_parity(back, TINY_FIXTURE, label);
    tokenizer_free(back);

    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    json_t *cfg = json_load_file(path, 0, NULL);
    ck_assert_ptr_nonnull(cfg);
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "bos_token")), "<s>");
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "eos_token")), "</s>");
    ck_assert(json_is_true(json_object_get(cfg, "add_bos_token")));
    ck_assert(json_is_false(json_object_get(cfg, "add_eos_token")));
    json_decref(cfg);
    snprintf(path, sizeof path, "%s/special_tokens_map.json", dir);
    json_t *stm = json_load_file(path, 0, NULL);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(stm, "unk_token"), "content")), "<unk>");
    json_decref(stm);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    json_t *tj = json_load_file(path, 0, NULL);
    json_t *model = json_object_get(tj, "model");
    ck_assert(json_is_true(json_object_get(model, "byte_fallback")));
    ck_assert_uint_gt(json_array_size(json_object_get(model, "merges")), 100);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(tj, "normalizer"), "type")), "Sequence");
    ck_assert_uint_eq(json_array_size(json_object_get(tj, "added_tokens")), 3);
    json_decref(tj);
}

START_TEST(test_tiny_save_hf)
{
    /* from tokenizer.json: merges written back as loaded */
    Tokenizer *t = load_dir(TINY_DIR);
    check_export(t, OUT_DIR "/hf-tiny", "tiny re-exported tokenizer.json");
    tokenizer_free(t);
    /* from tokenizer.model: merges generated from piece scores */
    t = load_file(TINY_MODEL);
    check_export(t, OUT_DIR "/hf-tiny-from-model", "tiny tokenizer.model exported");
    tokenizer_free(t);
}
END_TEST

/* ----------------------------------------------------------------- errors */

START_TEST(test_errors)
{
    const char *dir = OUT_DIR "/tmp";
    mkdirs(dir);
    Tokenizer *t = (Tokenizer *)1;
    Error err = {""};

    assert_error(tokenizer_load_file("tests/no-such-tokenizer.model", &t, &err), &err,
                 "tests/no-such-tokenizer.model", "No such file");
    ck_assert_ptr_null(t);
    assert_error(tokenizer_load_dir(dir, &t, &err), &err, dir, "tokenizer.json");

    size_t n;
    char *model = read_bytes(TINY_MODEL, &n);
    const char *trunc = OUT_DIR "/tmp/truncated.model";
    size_t cuts[] = {n / 2, n - 3, 7, 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_bytes(trunc, model, cuts[i]);
        assert_error(tokenizer_load_file(trunc, &t, &err), &err, trunc, "truncated");
    }
    free(model);

    struct { const char *json, *needle; } bad[] = {
        {"{\"model\": {\"type\": \"BPE\", ", "invalid JSON"},
        {"{\"model\": {\"type\": \"Unigram\", \"vocab\": {}}}", "only BPE"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 2}, \"merges\": []}}", "id 1"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}}", "merges[0]"},
        {"{\"normalizer\": {\"type\": \"NFKC\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}", "NFKC"},
    };
    const char *bad_path = OUT_DIR "/tmp/tokenizer.json";
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_bytes(bad_path, bad[i].json, strlen(bad[i].json));
        assert_error(tokenizer_load_file(bad_path, &t, &err), &err, bad_path, bad[i].needle);
        /* the directory form names the file too */
        assert_error(tokenizer_load_dir(dir, &t, &err), &err, bad_path, bad[i].needle);
    }
    remove(bad_path);
    remove(trunc);
}
END_TEST

/* ------------------------------------------------------------------ speed */

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A 20 KB text takes about 2 ms here; the bounds are loose enough for
 * valgrind and slow CI but catch quadratic behaviour (200 KB). */
START_TEST(test_speed)
{
    Tokenizer *t = load_dir(TINY_DIR);
    Fixture f;
    fixture_load(TINY_FIXTURE, &f);
    const Case *lt = NULL;
    for (size_t i = 0; i < f.n; i++)
        if (strcmp(f.cases[i].name, "long_text") == 0) lt = &f.cases[i];
    ck_assert_ptr_nonnull(lt);
    size_t reps = 20, len = lt->text_len * reps;
    char *big = malloc(len);
    for (size_t i = 0; i < reps; i++) memcpy(big + i * lt->text_len, lt->text, lt->text_len);
    int32_t *ids;
    size_t n;
    double t0 = seconds();
    encode(t, big, 20000, &ids, &n);
    double t1 = seconds();
    free(ids);
    encode(t, big, len, &ids, &n);
    double t2 = seconds();
    printf("tokenizer speed: 20 KB in %.2f ms, %zu KB in %.1f ms\n", (t1 - t0) * 1e3, len / 1000,
           (t2 - t1) * 1e3);
    ck_assert_msg(t1 - t0 < 0.25, "20 KB took %.3f s", t1 - t0);
    ck_assert_msg(t2 - t1 < 2.5, "%zu bytes took %.3f s", len, t2 - t1);
    char *s = decode(t, ids, n);
    ck_assert_int_eq(memcmp(s, big, len), 0);
    free(s);
    free(ids);
    free(big);
    fixture_free(&f);
    tokenizer_free(t);
}
END_TEST

/* ---------------------------------------------------------- modpo tokenize */

/* Runs cmd_tokenize with stdin from `input` and returns what it printed.
 * Check forks each test, so redirecting this process's stdio is safe. */
static char *run_tokenize(int argc, char **argv, const char *input, int *status)
{
    const char *in = OUT_DIR "/tmp/stdin.txt", *out = OUT_DIR "/tmp/stdout.txt";
    mkdirs(OUT_DIR "/tmp");
    write_bytes(in, input, strlen(input));
    fflush(stdout);
    int saved_out = dup(1);
    ck_assert(freopen(in, "rb", stdin) != NULL);
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    close(fd);
    *status = cmd_tokenize(argc, argv);
    fflush(stdout);
    dup2(saved_out, 1);
    close(saved_out);
    return read_bytes(out, NULL);
}

START_TEST(test_cmd_tokenize)
{
    int status;
    char *argv1[] = {"tokenize", TINY_DIR, "--bos", "--eos", NULL};
    char *o = run_tokenize(4, argv1, "the model", &status);
    ck_assert_int_eq(status, 0);
    ck_assert_str_eq(o, "1 264 392 2\n");
    free(o);

    char *argv2[] = {"tokenize", TINY_MODEL, "--decode", NULL};
    o = run_tokenize(3, argv2, "1 264\n392, 2", &status);
    ck_assert_int_eq(status, 0);
    ck_assert_str_eq(o, "the model");
    free(o);

    char *argv3[] = {"tokenize", "--help", NULL};
    o = run_tokenize(2, argv3, "", &status);
    ck_assert_int_eq(status, 0);
    ck_assert_ptr_nonnull(strstr(o, "usage: modpo tokenize"));
    free(o);

    char *argv4[] = {"tokenize", TINY_DIR, "--decode", NULL};
    o = run_tokenize(3, argv4, "264 banana", &status);
    ck_assert_int_eq(status, 1);
    ck_assert_str_eq(o, "");
    free(o);

    char *argv5[] = {"tokenize", "tests/no-such-dir", NULL};
    o = run_tokenize(2, argv5, "x", &status);
    ck_assert_int_eq(status, 1);
    free(o);

    char *argv6[] = {"tokenize", NULL};
    o = run_tokenize(1, argv6, "x", &status);
    ck_assert_int_eq(status, 1);
    free(o);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("tokenizer");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_utf8);
    tcase_add_test(tc, test_tiny_json_parity);
    tcase_add_test(tc, test_tiny_model_parity);
    tcase_add_test(tc, test_tiny_hf5_layout);
    tcase_add_test(tc, test_tiny_known_ids);
    tcase_add_test(tc, test_tiny_decode_rules);
    tcase_add_test(tc, test_tiny_encode_edge_cases);
    tcase_add_test(tc, test_llama_parity);
    tcase_add_test(tc, test_llama_readme_ids);
    tcase_add_test(tc, test_llama_save_hf_round_trip);
    tcase_add_test(tc, test_tiny_save_hf);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_speed);
    tcase_add_test(tc, test_cmd_tokenize);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
