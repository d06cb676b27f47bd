#include "commands.h"

#include <stddef.h>

const Command modpo_commands[] = {
    {"preflight", cmd_preflight, "check a configuration and print it resolved"},
    {"data-stats", cmd_data_stats, "statistics of the HelpSteer data: rows, pairs, lengths"},
    {"tokenize", cmd_tokenize, "encode stdin to token ids (or --decode ids to text)"},
    {"init-model", cmd_init_model, "write a randomly initialised Llama model directory"},
    {"merge", cmd_merge, "fold a LoRA adapter into its base model"},
    {"devices", cmd_devices, "list the GPUs this build can use"},
    {NULL, NULL, NULL},
};
