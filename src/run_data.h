/* The data side of a run: the HelpSteer splits, the model's tokenizer, and
 * the tokenized pairs or SFT examples a stage trains and evaluates on. */
#ifndef MODPO_RUN_DATA_H
#define MODPO_RUN_DATA_H

#include "config.h"
#include "helpsteer.h"
#include "pairs.h"
#include "sequences.h"
#include "tokenizer.h"

typedef struct {
    Tokenizer *tok;
    HelpSteerData train, val;
} RunData;

/* Loads both splits and the tokenizer of model_dir. */
int run_data_load(RunData *d, const Config *cfg, const char *model_dir, Error *err);
void run_data_free(RunData *d);

typedef struct {
    PairSet train_set, val_set;
    PairSequences train, val;
} RunPairs;

/* Pairs of a dimension ("helpfulness", ...), tokenized and length-filtered. */
int run_pairs_build(const RunData *d, const Config *cfg, const char *dimension, RunPairs *p,
                    Error *err);
void run_pairs_free(RunPairs *p);

typedef struct {
    SftSet train_set, val_set;
    SftSequences train, val;
} RunSft;

/* SFT examples: the chosen side of data.sft_dimension's pairs. */
int run_sft_build(const RunData *d, const Config *cfg, RunSft *s, Error *err);
void run_sft_free(RunSft *s);

#endif
