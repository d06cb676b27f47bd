/* `modpo tokenize MODEL_DIR [--bos] [--eos]`: text on stdin -> ids on stdout.
 * `modpo tokenize MODEL_DIR --decode`: ids on stdin -> text on stdout.
 * Decoding prints the text exactly, with no newline added, so that
 * `tokenize | tokenize --decode` gives back the input byte for byte. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "commands.h"
#include "error.h"
#include "tokenizer.h"

static const char USAGE[] =
    "usage: modpo tokenize MODEL_DIR [--bos] [--eos]   encode stdin, print ids\n"
    "       modpo tokenize MODEL_DIR --decode          decode ids on stdin, print text\n"
    "MODEL_DIR holds tokenizer.json or tokenizer.model; it may also be one of those files.\n"
    "  --bos     start with the BOS id\n"
    "  --eos     end with the EOS id\n"
    "  --decode  read whitespace-separated ids (commas and [ ] are ignored too)\n";

typedef struct {
    const char *model;
    bool bos, eos, decode, help;
} TokenizeArgs;

static int parse_args(int argc, char **argv, TokenizeArgs *a, Error *err)
{
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) a->help = true;
        else if (strcmp(s, "--bos") == 0) a->bos = true;
        else if (strcmp(s, "--eos") == 0) a->eos = true;
        else if (strcmp(s, "--decode") == 0) a->decode = true;
        else if (s[0] == '-' && s[1]) return error_set(err, "unknown option %s", s);
        else if (a->model) return error_set(err, "more than one MODEL_DIR (%s, %s)", a->model, s);
        else a->model = s;
    }
    if (!a->help && !a->model) return error_set(err, "MODEL_DIR is missing");
    if (a->decode && (a->bos || a->eos)) return error_set(err, "--bos/--eos make no sense with --decode");
    return 0;
}

static int read_stdin(char **data, size_t *len, Error *err)
{
    size_t cap = 1 << 16, n = 0, got;
    char *p = malloc(cap);
    if (!p) return error_set(err, "out of memory");
    while ((got = fread(p + n, 1, cap - n - 1, stdin)) > 0) {
        n += got;
        if (cap - n - 1 == 0) {
            char *q = realloc(p, cap *= 2);
            if (!q) {
                free(p);
                return error_set(err, "out of memory reading stdin");
            }
            p = q;
        }
    }
    if (ferror(stdin)) {
        free(p);
        return error_set(err, "cannot read stdin");
    }
    p[n] = 0;
    *data = p;
    *len = n;
    return 0;
}

static int load(const char *path, Tokenizer **tok, Error *err)
{
    struct stat st;
    if (stat(path, &st) != 0) return error_set_errno(err, "cannot open %s", path);
    return S_ISDIR(st.st_mode) ? tokenizer_load_dir(path, tok, err)
                               : tokenizer_load_file(path, tok, err);
}

static int print_ids(const Tokenizer *tok, const TokenizeArgs *a, const char *text, size_t len,
                     Error *err)
{
    int32_t *ids = NULL;
    size_t n = 0;
    if (tokenizer_encode(tok, text, len, &ids, &n, err)) return -1;
    if ((a->bos && tokenizer_bos_id(tok) < 0) || (a->eos && tokenizer_eos_id(tok) < 0)) {
        free(ids);
        return error_set(err, "the tokenizer has no %s token", a->bos ? "BOS" : "EOS");
    }
    const char *sep = "";
    if (a->bos) {
        printf("%d", tokenizer_bos_id(tok));
        sep = " ";
    }
    for (size_t i = 0; i < n; i++, sep = " ") printf("%s%d", sep, ids[i]);
    if (a->eos) printf("%s%d", sep, tokenizer_eos_id(tok));
    printf("\n");
    free(ids);
    return 0;
}

static bool is_sep(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',' || c == '[' || c == ']';
}

static int parse_ids(char *text, int32_t **ids, size_t *n, Error *err)
{
    size_t cap = 256, k = 0;
    int32_t *v = malloc(cap * sizeof *v);
    if (!v) return error_set(err, "out of memory");
    char *p = text;
    for (;;) {
        while (*p && is_sep(*p)) p++;
        if (!*p) break;
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || (*end && !is_sep(*end)) || x < INT32_MIN || x > INT32_MAX) {
            int len = 0;
            while (p[len] && !is_sep(p[len]) && len < 40) len++;
            free(v);
            return error_set(err, "stdin: \"%.*s\" is not a token id", len, p);
        }
        if (k == cap) {
            int32_t *q = realloc(v, (cap *= 2) * sizeof *q);
            if (!q) {
                free(v);
                return error_set(err, "out of memory");
            }
            v = q;
        }
        v[k++] = (int32_t)x;
        p = end;
    }
    *ids = v;
    *n = k;
    return 0;
}

static int print_text(const Tokenizer *tok, char *input, Error *err)
{
    int32_t *ids = NULL;
    size_t n = 0;
    char *text = NULL;
    size_t len = 0;
    if (parse_ids(input, &ids, &n, err)) return -1;
    int rc = tokenizer_decode_len(tok, ids, n, &text, &len, err);
    free(ids);
    if (rc) return -1;
    fwrite(text, 1, len, stdout);
    free(text);
    return 0;
}

int cmd_tokenize(int argc, char **argv)
{
    TokenizeArgs a;
    Error err = {{0}};
    if (parse_args(argc, argv, &a, &err)) {
        fprintf(stderr, "modpo tokenize: %s\n%s", err.msg, USAGE);
        return 1;
    }
    if (a.help) {
        fputs(USAGE, stdout);
        return 0;
    }
    Tokenizer *tok = NULL;
    char *input = NULL;
    size_t len = 0;
    int rc = load(a.model, &tok, &err) || read_stdin(&input, &len, &err);
    if (!rc) rc = a.decode ? print_text(tok, input, &err) : print_ids(tok, &a, input, len, &err);
    if (!rc && fflush(stdout) != 0) rc = error_set(&err, "cannot write stdout");
    if (rc) fprintf(stderr, "modpo tokenize: %s\n", err.msg);
    free(input);
    tokenizer_free(tok);
    return rc ? 1 : 0;
}
