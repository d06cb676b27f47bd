/* modpo validate-eval DIR [DIR...]: every generation directory must hold the
 * same raw prompts in the same order, or the per-model scores are not
 * comparable.  The first directory is the reference; each other is compared
 * with it prompt by prompt and by count. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "generation_io.h"

#define SHOW_MISMATCHES 5
#define EXCERPT_CHARS 80

static void usage(FILE *f)
{
    fprintf(f, "usage: modpo validate-eval DIR [DIR...]\n"
               "Checks that every generation directory (NNNNN-of-NNNNN.jsonl shards) holds the\n"
               "same raw_prompt list in the same order as the first.  Exit status 0 when they\n"
               "all agree, 1 when one differs (the first %d mismatches are shown) or cannot be\n"
               "read.\n",
            SHOW_MISMATCHES);
}

/* A one-line excerpt: at most EXCERPT_CHARS UTF-8 characters, never cut
 * inside one, with newlines and tabs escaped so each mismatch stays on its
 * own lines. */
static void print_excerpt(const char *s)
{
    size_t chars = 0;
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int starts_char = (*p & 0xC0) != 0x80;
        if (starts_char && chars++ == EXCERPT_CHARS) {
            fputs("\"...", stdout);
            return;
        }
        if (*p == '\n') fputs("\\n", stdout);
        else if (*p == '\t') fputs("\\t", stdout);
        else if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else putchar(*p);
    }
    putchar('"');
}

/* Compares dir's prompts with the reference's; prints up to *budget of the
 * mismatches (decrementing it) and returns how many there are, a count
 * difference counting as one. */
static size_t compare_dir(const char *ref_dir, const GenRecordList *ref, const char *dir,
                          const GenRecordList *list, int *budget)
{
    size_t n = ref->n < list->n ? ref->n : list->n, mismatches = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(ref->items[i].raw_prompt, list->items[i].raw_prompt) == 0) continue;
        mismatches++;
        if (*budget <= 0) continue;
        (*budget)--;
        printf("mismatch at index %zu:\n  %s: ", i, ref_dir);
        print_excerpt(ref->items[i].raw_prompt);
        printf("\n  %s: ", dir);
        print_excerpt(list->items[i].raw_prompt);
        putchar('\n');
    }
    if (ref->n != list->n) {
        mismatches++;
        printf("count differs: %s has %zu prompts, %s has %zu\n", ref_dir, ref->n, dir, list->n);
    }
    return mismatches;
}

int cmd_validate_eval(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (argv[i][0] == '-') {
            fprintf(stderr, "modpo validate-eval: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    Error err;
    GenRecordList ref;
    if (gen_read_dir(argv[1], &ref, &err)) {
        fprintf(stderr, "modpo validate-eval: %s\n", err.msg);
        return 1;
    }
    int budget = SHOW_MISMATCHES, bad_dirs = 0;
    for (int i = 2; i < argc; i++) {
        GenRecordList list;
        if (gen_read_dir(argv[i], &list, &err)) {
            fprintf(stderr, "modpo validate-eval: %s\n", err.msg);
            bad_dirs++;
            continue;
        }
        size_t m = compare_dir(argv[1], &ref, argv[i], &list, &budget);
        if (m) printf("%s: %zu mismatch%s against %s\n", argv[i], m, m == 1 ? "" : "es", argv[1]);
        bad_dirs += m > 0;
        gen_list_free(&list);
    }
    if (bad_dirs == 0)
        printf("ok: %d %s the same %zu prompts in the same order\n", argc - 1,
               argc == 2 ? "directory holds" : "directories hold", ref.n);
    gen_list_free(&ref);
    return bad_dirs ? 1 : 0;
}
