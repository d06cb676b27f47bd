/* The stage commands: modpo sft|dpo|check-margin|modpo|generate|score|pipeline.
 * Each parses the shared command line, runs its stage(s) and reports. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "dist/dist_world.h"
#include "run_layout.h"
#include "run_log.h"
#include "stages.h"

typedef struct {
    const char *name;
    const char *usage;
} StageHelp;

static const char common_options[] =
    "  --set key=value     override a configuration key (repeatable)\n"
    "  --force             continue a stage whose critical settings changed\n"
    "  --quiet             no progress lines\n"
    "  --recompute-frozen  (testing) recompute the frozen reference/margin passes every batch\n"
    "  --precompute-only   (modpo) only compute the cached reference/margin logps\n"
    "Under mpirun/srun every stage runs on all ranks (see docs/distributed.md).\n";

/* Parses the options every stage command shares; *model for generate. */
static int parse_options(const CliArgs *args, StageOptions *o, const char **model, const char *cmd)
{
    memset(o, 0, sizeof *o);
    for (int i = 0; i < args->n_rest; i++) {
        const char *a = args->rest[i];
        if (strcmp(a, "--force") == 0) o->force = true;
        else if (strcmp(a, "--quiet") == 0) o->quiet = true;
        else if (strcmp(a, "--recompute-frozen") == 0) o->recompute_frozen = true;
        else if (strcmp(a, "--precompute-only") == 0) o->precompute_only = true;
        else if (strcmp(a, "--stop-after-step") == 0 && i + 1 < args->n_rest) o->stop_after_step = atol(args->rest[++i]);
        else if (model && strcmp(a, "--model") == 0 && i + 1 < args->n_rest) *model = args->rest[++i];
        else {
            fprintf(stderr, "modpo %s: unknown option '%s' (see modpo %s --help)\n", cmd, a, cmd);
            return 2;
        }
    }
    return 0;
}

/* Everything the command writes to stderr also goes to ROOT/logs/. */
static RunLog *start_log(const Config *cfg, const char *command, const DistComm *comm)
{
    char root[RUN_PATH_MAX];
    run_root(cfg, root);
    RunLog *log = NULL;
    Error err;
    int rank = dist_size(comm) > 1 ? dist_rank(comm) : -1;
    if (run_log_start(root, command, rank, &log, &err))
        fprintf(stderr, "modpo %s: warning: no log file: %s\n", command, err.msg);
    return log;
}

typedef int (*StageFn)(const Config *cfg, const StageOptions *o, const char *model, Error *err);

/* The frame every stage command shares: config, options, errors, exit code. */
static int run_command(int argc, char **argv, const char *usage, bool takes_model, StageFn fn)
{
    Config *cfg = malloc(sizeof *cfg);
    if (!cfg) { fprintf(stderr, "modpo: out of memory\n"); return 1; }
    CliArgs args;
    int rc = cli_load_config(argc, argv, cfg, &args);
    if (rc == 0 && args.help) {
        printf("usage: modpo %s [CONFIG] [options]\n%s\noptions:\n%s", argv[0], usage, common_options);
        if (takes_model) printf("  --model NAME        only this model: sft or modpo-w<W>\n");
    } else if (rc == 0) {
        StageOptions o;
        const char *model = NULL;
        rc = parse_options(&args, &o, takes_model ? &model : NULL, argv[0]);
        Error err;
        DistComm world;
        /* MPI is initialised by main; without it (a caller that did not)
         * the stage runs as one process. */
        if (rc == 0 && dist_comm_world(&world, &err) == 0) o.comm = &world;
        /* Testing (tests/check_dist.c): this rank fails at once while the
         * others go on into the stage, to show the job aborts, not hangs. */
        const char *inject = getenv("MODPO_TEST_FAIL_RANK");
        bool fail_here = inject && *inject && atoi(inject) == dist_rank(o.comm);
        if (rc == 0 && fail_here)
            error_set(&err, "injected failure (MODPO_TEST_FAIL_RANK=%s)", inject);
        RunLog *log = rc == 0 ? start_log(cfg, argv[0], o.comm) : NULL;
        if (rc == 0 && (fail_here || fn(cfg, &o, model, &err))) {
            char prefix[64];
            snprintf(prefix, sizeof prefix, "modpo %s", argv[0]);
            run_log_stop(log, err.msg);
            log = NULL;
            dist_fail(prefix, err.msg, 1); /* aborts the job when other ranks run */
            rc = 1;
        }
        run_log_stop(log, NULL);
    }
    cli_args_free(&args);
    free(cfg);
    return rc;
}

static int do_sft(const Config *c, const StageOptions *o, const char *m, Error *e) { (void)m; return stage_sft(c, o, e); }
static int do_dpo(const Config *c, const StageOptions *o, const char *m, Error *e) { (void)m; return stage_dpo(c, o, e); }
static int do_check(const Config *c, const StageOptions *o, const char *m, Error *e) { (void)m; return stage_check_margin(c, o, e); }
static int do_score(const Config *c, const StageOptions *o, const char *m, Error *e) { (void)m; return stage_score(c, o, e); }

static int do_modpo(const Config *c, const StageOptions *o, const char *m, Error *e)
{
    (void)m;
    if (o->precompute_only) return stage_modpo_precompute(c, o, e);
    return stage_modpo_grid(c, o, e);
}

static int do_generate(const Config *c, const StageOptions *o, const char *m, Error *e)
{
    if (m) return stage_generate(c, m, o, e);
    if (stage_generate(c, "sft", o, e)) return -1;
    for (int i = 0; i < c->n_w; i++) {
        char name[64];
        modpo_stage_name(c->w[i], name, sizeof name);
        if (stage_generate(c, name, o, e)) return -1;
    }
    return 0;
}

static int do_pipeline(const Config *c, const StageOptions *o, const char *m, Error *e)
{
    (void)m;
    return stage_sft(c, o, e) || stage_dpo(c, o, e) ||
           stage_check_margin(c, o, e) || do_modpo(c, o, NULL, e) || do_generate(c, o, NULL, e) ||
           stage_score(c, o, e) ? -1 : 0;
}

int cmd_sft(int argc, char **argv)
{
    return run_command(argc, argv, "LoRA SFT on the chosen responses of data.sft_dimension's pairs,\n"
                       "keeping the best adapter by eval loss, then merged into the base: ROOT/sft-model.\n",
                       false, do_sft);
}

int cmd_dpo(int argc, char **argv)
{
    return run_command(argc, argv, "The margin adapter: DPO on data.margin_dimension's pairs from the SFT model.\n",
                       false, do_dpo);
}

int cmd_check_margin(int argc, char **argv)
{
    return run_command(argc, argv, "Accuracy and mean margin of the margin adapter's implicit reward on up to\n"
                       "margin.check_size validation pairs; margin.min_accuracy >= 0 makes it a gate.\n",
                       false, do_check);
}

int cmd_modpo(int argc, char **argv)
{
    return run_command(argc, argv, "MODPO for every w of modpo.w (one: --set modpo.w=0.4), with the frozen margin\n"
                       "adapter; margin_beta > 0 makes its preference a cost, < 0 a reward.\n",
                       false, do_modpo);
}

int cmd_generate(int argc, char **argv)
{
    return run_command(argc, argv, "Responses of the SFT model and of every MODPO policy to the first\n"
                       "generate.eval_size validation prompts: ROOT/gen/<model>/NNNNN-of-NNNNN.jsonl.\n",
                       true, do_generate);
}

int cmd_score(int argc, char **argv)
{
    return run_command(argc, argv, "Implicit margin reward and response length of every generation dir, the\n"
                       "summary table and the trade-off plot: ROOT/score/.\n",
                       false, do_score);
}

int cmd_pipeline(int argc, char **argv)
{
    return run_command(argc, argv, "The whole pipeline: SFT -> merge -> DPO -> check-margin -> MODPO for every w ->\n"
                       "generate -> validate -> score.  Rerun it after an interruption: finished stages\n"
                       "are skipped and an interrupted one resumes from its last checkpoint.\n",
                       false, do_pipeline);
}
