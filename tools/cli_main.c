/*
 * cli_main.c -- entry point of the `starling` program: dispatch to subcommands.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* The commands main dispatches to. Hidden ones are the children that bench, demo and run
 * start (the same binary, via /proc/self/exe): not listed, but parsed and helped alike. */
typedef struct cli_command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary; /* NULL: hidden */
} cli_command;

static const cli_command commands[] = {
    {"run", cmd_run, "the main job: train the built-in model on N local peers"},
    {"coordinator", cmd_coordinator, "the control plane of a run, listening on HOST:PORT"},
    {"bench", cmd_bench, "time all-reduces (allreduce, latency) or one codec (codec SPEC)"},
    {"demo", cmd_demo, "fault-tolerance walk-through: all-reduces, a death, a join"},
    {"bench-peer", cmd_bench_peer, NULL},
    {"demo-peer", cmd_demo_peer, NULL},
    {"run-peer", cmd_run_peer, NULL},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

void cli_usage(FILE *out)
{
    size_t k;
    fputs("usage: starling <command> [options]\n"
          "\n"
          "Fault-tolerant distributed training on ordinary networks (see README.md).\n"
          "\n"
          "commands:\n",
          out);
    for (k = 0; k < NCOMMANDS; k++)
        if (commands[k].summary)
            fprintf(out, "  %-13s %s\n", commands[k].name, commands[k].summary);
    fputs("  help [CMD]    this text, or the options of CMD\n"
          "  --version     print the version\n"
          "\n"
          "'starling CMD --help' (or 'starling help CMD') lists the options of CMD, their\n"
          "defaults and what the command writes.\n",
          out);
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "starling%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    /* The command's own help: "bench codec" -> 'starling bench codec --help'. */
    if (cmd)
        fprintf(stderr, "\nrun 'starling %s --help' for usage\n", cmd);
    else
        fputs("\nrun 'starling --help' for usage\n", stderr);
    return CLI_EXIT_USAGE;
}

static int print_version(void)
{
    printf("starling %s (library %s, protocol %d)\n", STARLING_VERSION_STRING,
           starling_version_string(), STARLING_PROTOCOL_VERSION);
    return CLI_EXIT_OK;
}

static const cli_command *find_command(const char *name)
{
    size_t k;
    for (k = 0; k < NCOMMANDS; k++)
        if (strcmp(commands[k].name, name) == 0)
            return &commands[k];
    return NULL;
}

static int unknown_command(const char *name)
{
    cli_suggest s;
    const char *near;
    size_t k;

    if (name[0] == '-') {
        cli_suggest_init(&s, name, strlen(name));
        cli_suggest_add(&s, "--help");
        cli_suggest_add(&s, "--version");
        near = cli_suggest_result(&s);
        if (near)
            return cli_usage_error(NULL, "unknown option '%s' (did you mean '%s'?)", name, near);
        return cli_usage_error(NULL, "unknown option '%s'", name);
    }
    cli_suggest_init(&s, name, strlen(name));
    for (k = 0; k < NCOMMANDS; k++)
        if (commands[k].summary)
            cli_suggest_add(&s, commands[k].name);
    cli_suggest_add(&s, "help");
    cli_suggest_add(&s, "version");
    near = cli_suggest_result(&s);
    if (near)
        return cli_usage_error(NULL, "unknown command '%s' (did you mean '%s'?)", name, near);
    return cli_usage_error(NULL, "unknown command '%s'", name);
}

/* A subcommand's exit status: CLI_HELP_SHOWN (the parser printed --help) is success. */
static int run_command(const cli_command *c, int argc, char **argv)
{
    int rc = c->fn(argc, argv);
    return rc == CLI_HELP_SHOWN ? CLI_EXIT_OK : rc;
}

/* `starling help CMD [WORD...]` runs `starling CMD [WORD...] --help`. */
static int help_command(int argc, char **argv)
{
    const cli_command *c;
    char *args[8];
    int k, n = 0;

    if (argc == 2) {
        cli_usage(stdout);
        return CLI_EXIT_OK;
    }
    c = find_command(argv[2]);
    if (!c)
        return unknown_command(argv[2]);
    if (argc > 5)
        return cli_usage_error("help", "expected 'starling help CMD', e.g. 'starling help run'");
    args[n++] = argv[0];
    for (k = 2; k < argc; k++)
        args[n++] = argv[k];
    args[n++] = (char *)"--help";
    args[n] = NULL;
    return run_command(c, n, args);
}

int main(int argc, char **argv)
{
    const cli_command *c;
    const char *cmd;

    if (argc < 2) {
        cli_usage(stderr);
        return CLI_EXIT_USAGE;
    }
    cmd = argv[1];
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0)
        return argc == 2 ? print_version() : cli_usage_error(NULL, "'%s' takes no arguments", cmd);
    if (strcmp(cmd, "help") == 0)
        return help_command(argc, argv);
    if (cli_is_help(cmd)) {
        cli_usage(stdout);
        return CLI_EXIT_OK;
    }
    c = find_command(cmd);
    if (!c)
        return unknown_command(cmd);
    return run_command(c, argc, argv);
}
