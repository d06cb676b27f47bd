/* Every modpo command: `modpo NAME args...` calls cmd_NAME(argc, argv) with
 * argv[0] == NAME.  A command prints its own errors and returns the exit status. */
#ifndef MODPO_COMMANDS_H
#define MODPO_COMMANDS_H

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} Command;

int cmd_preflight(int argc, char **argv);
int cmd_data_stats(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_init_model(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_devices(int argc, char **argv);
int cmd_validate_eval(int argc, char **argv);
int cmd_sft(int argc, char **argv);
int cmd_dpo(int argc, char **argv);
int cmd_check_margin(int argc, char **argv);
int cmd_modpo(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_pipeline(int argc, char **argv);

extern const Command modpo_commands[];

#endif
