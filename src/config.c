#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <libconfig.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "config_schema.h"

extern const char embedded_tiny_cfg[];

const char *conf_embedded_default(void) { return embedded_tiny_cfg; }

static void train_defaults(TrainConfig *t)
{
    t->steps = 1000;
    t->learning_rate = 1e-4;
    t->weight_decay = 0.05;
    strcpy(t->scheduler, "cosine");
    t->warmup_ratio = 0.1;
    t->warmup_steps = 0;
    t->batch_size = 1;
    t->grad_accum = 8;
    t->max_grad_norm = 1.0;
    t->eval_steps = 200;
    t->eval_size = 256;
    t->save_steps = 200;
    t->save_total_limit = 2;
    t->log_steps = 10;
}

void conf_defaults(Config *c)
{
    memset(c, 0, sizeof *c);
    strcpy(c->output_root, "runs");
    strcpy(c->run_tag, "default");
    c->seed = 42;
    strcpy(c->device, "cpu");
    strcpy(c->optimizer, "auto");
    strcpy(c->model_path, "models/tiny");
    strcpy(c->model_preset, "tiny");
    strcpy(c->train_path, "data/helpsteer-sample/train.jsonl.gz");
    strcpy(c->validation_path, "data/helpsteer-sample/validation.jsonl.gz");
    strcpy(c->prompt_template, "\n\nHuman:\n{raw_prompt}\n\nAssistant:\n");
    c->max_length = 512;
    strcpy(c->sft_dimension, "helpfulness");
    strcpy(c->margin_dimension, "verbosity");
    strcpy(c->modpo_dimension, "helpfulness");
    c->lora_r = 16;
    c->lora_alpha = 32;
    strcpy(c->lora_targets[0], "q_proj");
    strcpy(c->lora_targets[1], "v_proj");
    c->n_lora_targets = 2;
    train_defaults(&c->sft);
    train_defaults(&c->dpo);
    train_defaults(&c->modpo);
    c->dpo_beta = 0.1;
    strcpy(c->dpo_loss, "sigmoid");
    c->modpo_beta = 0.1;
    c->margin_beta = -0.1;
    strcpy(c->modpo_loss, "sigmoid");
    const double grid[] = {0.1, 0.2, 0.4, 0.6, 0.8, 0.9};
    memcpy(c->w, grid, sizeof grid);
    c->n_w = 6;
    c->check_size = 256;
    c->min_accuracy = -1;
    c->eval_size = 300;
    c->gen_max_length = 4096;
    c->max_input_length = 1536;
    c->max_new_tokens = 2560;
    c->gen_batch_size = 8;
    c->temperature = 1.0;
    c->top_k = 50;
    c->top_p = 1.0;
    c->repetition_penalty = 1.0;
    c->dist_ranks_per_w = 0;
    strcpy(c->source, "defaults");
}

/* ---- problem lists ---------------------------------------------------- */

static int add_problem(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int add_problem(char *buf, size_t size, const char *fmt, ...)
{
    if (!buf || size == 0) return 1;
    size_t used = strnlen(buf, size);
    if (used + 1 >= size) return 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + used, size - used, fmt, ap);
    va_end(ap);
    used = strnlen(buf, size);
    if (used + 1 < size) { buf[used] = '\n'; buf[used + 1] = '\0'; }
    return 1;
}

/* ---- typed access to the fields ---------------------------------------- */

static void *field(Config *c, const KeySpec *k) { return (char *)c + k->offset; }
static const void *cfield(const Config *c, const KeySpec *k) { return (const char *)c + k->offset; }
static int *list_count(Config *c, const KeySpec *k) { return (int *)((char *)c + k->count_offset); }

static int choice_allowed(const char *choices, const char *value)
{
    size_t n = strlen(value);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, value, n) == 0) return 1;
        p += len + (bar ? 1 : 0);
    }
    return 0;
}

static void describe_range(const KeySpec *k, char *out, size_t size)
{
    if (k->type == KEY_INT) {
        if (k->lo >= 1) snprintf(out, size, "a positive integer");
        else snprintf(out, size, "an integer >= %g", k->lo);
    } else if (k->lo <= -1e299 && k->hi >= 1e299) {
        snprintf(out, size, "any number");
    } else if (k->hi >= 1e299) {
        snprintf(out, size, "a number %s %g", k->lo_open ? ">" : ">=", k->lo);
    } else {
        snprintf(out, size, "a number in %s%g, %g%s", k->lo_open ? "(" : "[", k->lo, k->hi,
                 k->hi_open ? ")" : "]");
    }
}

static int in_range(const KeySpec *k, double v)
{
    if (isnan(v)) return 0;
    if (k->lo_open ? !(v > k->lo) : !(v >= k->lo)) return 0;
    if (k->hi_open ? !(v < k->hi) : !(v <= k->hi)) return 0;
    return 1;
}

/* Stores a number after checking the key's range; `where` prefixes messages. */
static int store_number(Config *c, const KeySpec *k, double v, int index, const char *where,
                        Error *err)
{
    if (!in_range(k, v)) {
        char allowed[128];
        describe_range(k, allowed, sizeof allowed);
        if (index >= 0)
            return error_set(err, "%skey '%s' element %d: %g is out of range; allowed: %s", where,
                             k->path, index, v, allowed);
        return error_set(err, "%skey '%s': %g is out of range; allowed: %s", where, k->path, v,
                         allowed);
    }
    if (k->type == KEY_INT) *(int *)field(c, k) = (int)v;
    else if (k->type == KEY_FLOAT) *(double *)field(c, k) = v;
    else ((double *)field(c, k))[index] = v;
    return 0;
}

static int store_string(Config *c, const KeySpec *k, const char *s, int index, const char *where,
                        Error *err)
{
    if ((k->type == KEY_CHOICE || k->type == KEY_CHOICE_LIST) && !choice_allowed(k->choices, s))
        return error_set(err, "%skey '%s': '%s' is not allowed; allowed: %s", where, k->path, s,
                         k->choices);
    if (strlen(s) >= k->size)
        return error_set(err, "%skey '%s': value longer than %zu bytes", where, k->path, k->size - 1);
    char *dst = (char *)field(c, k) + (index > 0 ? (size_t)index * k->size : 0);
    strcpy(dst, s);
    return 0;
}

/* ---- reading a libconfig file ------------------------------------------ */

static const char *type_word(int t)
{
    switch (t) {
    case CONFIG_TYPE_INT: case CONFIG_TYPE_INT64: return "an integer";
    case CONFIG_TYPE_FLOAT: return "a float";
    case CONFIG_TYPE_STRING: return "a string";
    case CONFIG_TYPE_BOOL: return "a boolean";
    case CONFIG_TYPE_ARRAY: case CONFIG_TYPE_LIST: return "a list";
    case CONFIG_TYPE_GROUP: return "a group";
    default: return "something else";
    }
}

static const char *expected_word(KeyType t)
{
    switch (t) {
    case KEY_INT: return "an integer";
    case KEY_FLOAT: return "a number";
    case KEY_BOOL: return "true or false";
    case KEY_STRING: case KEY_CHOICE: return "a string";
    default: return "a list like [a, b]";
    }
}

static int is_number(const config_setting_t *s)
{
    int t = config_setting_type(s);
    return t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64 || t == CONFIG_TYPE_FLOAT;
}

static double setting_number(const config_setting_t *s)
{
    return config_setting_type(s) == CONFIG_TYPE_FLOAT ? config_setting_get_float(s)
                                                        : (double)config_setting_get_int64(s);
}

static int read_list(Config *c, const KeySpec *k, const config_setting_t *s, const char *where,
                     Error *err)
{
    int t = config_setting_type(s);
    if (t != CONFIG_TYPE_ARRAY && t != CONFIG_TYPE_LIST)
        return error_set(err, "%skey '%s': expected %s, got %s", where, k->path,
                         expected_word(k->type), type_word(t));
    int n = config_setting_length(s);
    if (n == 0) return error_set(err, "%skey '%s': the list is empty", where, k->path);
    if (n > CONFIG_MAX_LIST)
        return error_set(err, "%skey '%s': at most %d elements", where, k->path, CONFIG_MAX_LIST);
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        if (k->type == KEY_FLOAT_LIST) {
            if (!is_number(e))
                return error_set(err, "%skey '%s' element %d: expected a number, got %s", where,
                                 k->path, i, type_word(config_setting_type(e)));
            if (store_number(c, k, setting_number(e), i, where, err)) return -1;
        } else {
            if (config_setting_type(e) != CONFIG_TYPE_STRING)
                return error_set(err, "%skey '%s' element %d: expected a string, got %s", where,
                                 k->path, i, type_word(config_setting_type(e)));
            if (store_string(c, k, config_setting_get_string(e), i, where, err)) return -1;
        }
    }
    *list_count(c, k) = n;
    return 0;
}

static int read_setting(Config *c, const KeySpec *k, const config_setting_t *s, const char *where,
                        Error *err)
{
    int t = config_setting_type(s);
    switch (k->type) {
    case KEY_INT:
        if (t != CONFIG_TYPE_INT && t != CONFIG_TYPE_INT64)
            break;
        return store_number(c, k, (double)config_setting_get_int64(s), -1, where, err);
    case KEY_FLOAT:
        if (!is_number(s)) break;
        return store_number(c, k, setting_number(s), -1, where, err);
    case KEY_BOOL:
        if (t != CONFIG_TYPE_BOOL) break;
        *(bool *)field(c, k) = config_setting_get_bool(s) != 0;
        return 0;
    case KEY_STRING: case KEY_CHOICE:
        if (t != CONFIG_TYPE_STRING) break;
        return store_string(c, k, config_setting_get_string(s), -1, where, err);
    default:
        return read_list(c, k, s, where, err);
    }
    return error_set(err, "%skey '%s': expected %s, got %s", where, k->path,
                     expected_word(k->type), type_word(t));
}

static void setting_location(const config_setting_t *s, const char *file, char *out, size_t size)
{
    const char *f = config_setting_source_file(s);
    snprintf(out, size, "%s:%u: ", f ? f : file, config_setting_source_line(s));
}

/* Walks every setting of the file and reads it, or reports it as unknown. */
static void read_group(Config *c, const config_setting_t *group, const char *prefix,
                       const char *file, char *problems, size_t psize, int *n_problems)
{
    int n = config_setting_length(group);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
        const char *name = config_setting_name(s);
        char path[256], where[CONFIG_STR_MAX + 32];
        snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", name ? name : "?");
        setting_location(s, file, where, sizeof where);
        const KeySpec *k = config_schema_find(path);
        if (config_setting_type(s) == CONFIG_TYPE_GROUP && !k) {
            if (*prefix == '\0') {
                read_group(c, s, path, file, problems, psize, n_problems);
                continue;
            }
        }
        if (!k) {
            *n_problems += add_problem(problems, psize, "%sunknown key '%s' (see `modpo --help-config`)",
                                       where, path);
            continue;
        }
        Error err;
        if (read_setting(c, k, s, where, &err)) {
            *n_problems += add_problem(problems, psize, "%s", err.msg);
            continue;
        }
        c->explicit_keys[k - config_schema] = 1;
    }
}

int conf_load(Config *cfg, const char *path, char *problems, size_t psize)
{
    config_t lc;
    config_init(&lc);
    int ok = path ? config_read_file(&lc, path) : config_read_string(&lc, embedded_tiny_cfg);
    const char *name = path ? path : "<embedded conf/tiny.cfg>";
    if (!ok) {
        const char *f = config_error_file(&lc);
        add_problem(problems, psize, "%s:%d: %s", f ? f : name, config_error_line(&lc),
                    config_error_text(&lc));
        if (config_error_type(&lc) == CONFIG_ERR_FILE_IO)
            add_problem(problems, psize, "%s: cannot read the file: %s", name, strerror(errno));
        config_destroy(&lc);
        return 1;
    }
    snprintf(cfg->source, sizeof cfg->source, "%s", name);
    int n_problems = 0;
    read_group(cfg, config_root_setting(&lc), "", name, problems, psize, &n_problems);
    config_destroy(&lc);
    return n_problems;
}

/* ---- --set overrides -------------------------------------------------- */

static int parse_number(const char *s, double *out)
{
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    while (isspace((unsigned char)*end)) end++;
    return errno == 0 && end != s && *end == '\0';
}

static int set_list(Config *c, const KeySpec *k, const char *value, const char *where, Error *err)
{
    char buf[CONFIG_STR_MAX];
    snprintf(buf, sizeof buf, "%s", value);
    char *p = buf;
    if (*p == '[') { p++; char *e = strrchr(p, ']'); if (e) *e = '\0'; }
    int n = 0;
    for (char *tok = strtok(p, ","); tok; tok = strtok(NULL, ",")) {
        while (isspace((unsigned char)*tok)) tok++;
        char *e = tok + strlen(tok);
        while (e > tok && isspace((unsigned char)e[-1])) *--e = '\0';
        if (*tok == '"' && e > tok + 1 && e[-1] == '"') { tok++; e[-1] = '\0'; }
        if (n >= CONFIG_MAX_LIST)
            return error_set(err, "%skey '%s': at most %d elements", where, k->path, CONFIG_MAX_LIST);
        if (k->type == KEY_FLOAT_LIST) {
            double v;
            if (!parse_number(tok, &v))
                return error_set(err, "%skey '%s' element %d: '%s' is not a number", where, k->path, n, tok);
            if (store_number(c, k, v, n, where, err)) return -1;
        } else if (store_string(c, k, tok, n, where, err)) {
            return -1;
        }
        n++;
    }
    if (n == 0) return error_set(err, "%skey '%s': the list is empty", where, k->path);
    *list_count(c, k) = n;
    return 0;
}

int conf_set(Config *c, const char *assignment, Error *err)
{
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return error_set(err, "--set %s: expected key=value", assignment);
    char key[256];
    snprintf(key, sizeof key, "%.*s", (int)(eq - assignment), assignment);
    const char *value = eq + 1;
    char where[300];
    snprintf(where, sizeof where, "--set %s: ", key);
    const KeySpec *k = config_schema_find(key);
    if (!k) return error_set(err, "%sunknown key '%s' (see `modpo --help-config`)", where, key);
    double v;
    switch (k->type) {
    case KEY_INT:
        if (!parse_number(value, &v) || v != floor(v))
            return error_set(err, "%skey '%s': expected an integer, got '%s'", where, key, value);
        if (store_number(c, k, v, -1, where, err)) return -1;
        break;
    case KEY_FLOAT:
        if (!parse_number(value, &v))
            return error_set(err, "%skey '%s': expected a number, got '%s'", where, key, value);
        if (store_number(c, k, v, -1, where, err)) return -1;
        break;
    case KEY_BOOL:
        if (strcmp(value, "true") == 0) *(bool *)field(c, k) = true;
        else if (strcmp(value, "false") == 0) *(bool *)field(c, k) = false;
        else return error_set(err, "%skey '%s': expected true or false, got '%s'", where, key, value);
        break;
    case KEY_STRING: case KEY_CHOICE:
        if (store_string(c, k, value, -1, where, err)) return -1;
        break;
    default:
        if (set_list(c, k, value, where, err)) return -1;
    }
    c->explicit_keys[k - config_schema] = 1;
    return 0;
}

/* ---- validation -------------------------------------------------------- */

static int validate_strict(const Config *c, char *problems, size_t psize)
{
    int n = 0;
    for (size_t i = 0; i < config_schema_len; i++)
        if (config_schema[i].strict_required && !c->explicit_keys[i])
            n += add_problem(problems, psize,
                             "%s: key '%s' must be set explicitly (run.strict = true)", c->source,
                             config_schema[i].path);
    return n;
}

int conf_validate(const Config *c, char *problems, size_t psize)
{
    int n = 0;
    if (c->strict) n += validate_strict(c, problems, psize);
    if (c->output_root[0] == '\0')
        n += add_problem(problems, psize, "%s: key 'run.output_root' must not be empty", c->source);
    if (c->run_tag[0] == '\0' || strchr(c->run_tag, '/'))
        n += add_problem(problems, psize, "%s: key 'run.run_tag' must be a non-empty name without '/'",
                         c->source);
    if (!strstr(c->prompt_template, "{raw_prompt}"))
        n += add_problem(problems, psize,
                         "%s: key 'data.prompt_template' must contain the placeholder {raw_prompt}",
                         c->source);
    if (c->max_input_length > c->gen_max_length)
        n += add_problem(problems, psize,
                         "%s: key 'generate.max_input_length' (%d) must be <= generate.max_length (%d)",
                         c->source, c->max_input_length, c->gen_max_length);
    for (int i = 0; i < c->n_w; i++)
        for (int j = 0; j < i; j++)
            if (c->w[i] == c->w[j])
                n += add_problem(problems, psize, "%s: key 'modpo.w': %g appears twice", c->source, c->w[i]);
    for (int i = 0; i < c->n_lora_targets; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(c->lora_targets[i], c->lora_targets[j]) == 0)
                n += add_problem(problems, psize, "%s: key 'lora.targets': '%s' appears twice",
                                 c->source, c->lora_targets[i]);
    if (c->margin_beta == 0)
        n += add_problem(problems, psize,
                         "%s: key 'modpo.margin_beta' must be non-zero (> 0: cost, < 0: reward)", c->source);
    return n;
}

/* ---- writing ------------------------------------------------------------ */

static void write_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        switch (*s) {
        case '"': fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\t': fputs("\\t", out); break;
        case '\r': fputs("\\r", out); break;
        case '\f': fputs("\\f", out); break;
        default:
            if ((unsigned char)*s < 0x20) fprintf(out, "\\x%02x", (unsigned char)*s);
            else fputc(*s, out);
        }
    }
    fputc('"', out);
}

/* A float that libconfig reads back as a float, with every bit kept. */
static void write_float(FILE *out, double v)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%.17g", v);
    fputs(buf, out);
    if (!strpbrk(buf, ".eEn")) fputs(".0", out);
}

static void write_value(FILE *out, const Config *c, const KeySpec *k)
{
    const void *p = cfield(c, k);
    int n = k->count_offset ? *(const int *)((const char *)c + k->count_offset) : 0;
    switch (k->type) {
    case KEY_INT: fprintf(out, "%d", *(const int *)p); break;
    case KEY_FLOAT: write_float(out, *(const double *)p); break;
    case KEY_BOOL: fputs(*(const bool *)p ? "true" : "false", out); break;
    case KEY_STRING: case KEY_CHOICE: write_string(out, (const char *)p); break;
    case KEY_FLOAT_LIST:
        fputc('[', out);
        for (int i = 0; i < n; i++) { if (i) fputs(", ", out); write_float(out, ((const double *)p)[i]); }
        fputc(']', out);
        break;
    case KEY_CHOICE_LIST:
        fputc('[', out);
        for (int i = 0; i < n; i++) {
            if (i) fputs(", ", out);
            write_string(out, (const char *)p + (size_t)i * k->size);
        }
        fputc(']', out);
        break;
    }
}

void conf_write(const Config *c, FILE *out)
{
    char section[64] = "";
    for (size_t i = 0; i < config_schema_len; i++) {
        const KeySpec *k = &config_schema[i];
        const char *dot = strchr(k->path, '.');
        int len = (int)(dot - k->path);
        if ((int)strlen(section) != len || strncmp(section, k->path, (size_t)len) != 0) {
            if (section[0]) fputs("};\n\n", out);
            snprintf(section, sizeof section, "%.*s", len, k->path);
            fprintf(out, "%s = {\n", section);
        }
        fprintf(out, "  %s = ", dot + 1);
        write_value(out, c, k);
        fputs(";\n", out);
    }
    if (section[0]) fputs("};\n", out);
}

void conf_describe_keys(FILE *out)
{
    Config d;
    conf_defaults(&d);
    for (size_t i = 0; i < config_schema_len; i++) {
        const KeySpec *k = &config_schema[i];
        fprintf(out, "  %-28s %s (default ", k->path, k->help);
        write_value(out, &d, k);
        fputs(")\n", out);
    }
}

static int matches_prefix(const char *path, const char *const *prefixes)
{
    for (; *prefixes; prefixes++) {
        size_t n = strlen(*prefixes);
        if (strncmp(path, *prefixes, n) == 0 && (path[n] == '\0' || path[n] == '.')) return 1;
    }
    return 0;
}

static void value_string(const Config *c, const KeySpec *k, char *out, size_t size)
{
    FILE *f = fmemopen(out, size, "w");
    if (!f) { snprintf(out, size, "?"); return; }
    write_value(f, c, k);
    fclose(f);
}

int conf_diff(const Config *saved, const Config *now, const char *const *prefixes, char *out,
              size_t size)
{
    int n = 0;
    if (out && size) out[0] = '\0';
    for (size_t i = 0; i < config_schema_len; i++) {
        const KeySpec *k = &config_schema[i];
        if (!matches_prefix(k->path, prefixes)) continue;
        char a[1024], b[1024];
        value_string(saved, k, a, sizeof a);
        value_string(now, k, b, sizeof b);
        if (strcmp(a, b) != 0)
            n += add_problem(out, size, "  %s: was %s, now %s", k->path, a, b);
    }
    return n;
}
