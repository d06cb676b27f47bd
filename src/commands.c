#include "commands.h"

#include <stddef.h>

const Command modpo_commands[] = {
    {"pipeline", cmd_pipeline, "the whole pipeline, resumable: SFT to the summary table"},
    {"sft", cmd_sft, "LoRA SFT, then merge: the SFT model"},
    {"dpo", cmd_dpo, "the margin adapter (DPO on the margin dimension)"},
    {"check-margin", cmd_check_margin, "sanity check of the margin adapter's implicit reward"},
    {"modpo", cmd_modpo, "MODPO for each w of the grid"},
    {"generate", cmd_generate, "responses of the SFT model and each MODPO policy"},
    {"score", cmd_score, "implicit reward and length per model; summary and plot"},
    {"validate-eval", cmd_validate_eval, "check generation dirs hold the same prompts in order"},
    {"preflight", cmd_preflight, "check a configuration and print it resolved"},
    {"data-stats", cmd_data_stats, "statistics of the HelpSteer data: rows, pairs, lengths"},
    {"tokenize", cmd_tokenize, "encode stdin to token ids (or --decode ids to text)"},
    {"init-model", cmd_init_model, "write a randomly initialised Llama model directory"},
    {"merge", cmd_merge, "fold a LoRA adapter into its base model"},
    {"devices", cmd_devices, "list the GPUs this build can use"},
    {NULL, NULL, NULL},
};
