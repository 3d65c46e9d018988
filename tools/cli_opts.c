/*
 * cli_opts.c -- the option parser every subcommand of `starling` goes through, and the
 * --help it generates from the same table.
 *
 * One table per command (name, value placeholder, one line of help, where the value
 * goes) is both the parser's input and the help's text, so the help cannot list an
 * option the parser refuses or miss one it accepts.
 */
#include <ctype.h>
#include <string.h>

#include "cli.h"

#define HELP_WIDTH 79   /* wrap the help text before this column */
#define HELP_COLUMN 28  /* where option help starts; longer option names wrap below */
#define MAX_OPTS 64

int cli_is_help(const char *arg)
{
    return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

static const cli_opt *find_opt(const cli_cmd *c, const char *name, size_t name_len)
{
    size_t k;
    for (k = 0; k < c->nopts; k++)
        if (strlen(c->opts[k].name) == name_len && memcmp(c->opts[k].name, name, name_len) == 0)
            return &c->opts[k];
    return NULL;
}

static int unknown_option(const cli_cmd *c, const char *arg, size_t len)
{
    cli_suggest s;
    const char *near;
    size_t k;

    cli_suggest_init(&s, arg, len);
    for (k = 0; k < c->nopts; k++)
        cli_suggest_add(&s, c->opts[k].name);
    cli_suggest_add(&s, "--help");
    near = cli_suggest_result(&s);
    if (near)
        return cli_usage_error(c->name, "unknown option '%.*s' (did you mean '%s'?)", (int)len,
                               arg, near);
    return cli_usage_error(c->name, "unknown option '%.*s'", (int)len, arg);
}

/* "-1", "-0.5", "-.5": a value, never an option (ranges are checked later). */
static int is_negative_number(const char *s)
{
    return s[0] == '-' && (isdigit((unsigned char)s[1]) ||
                           (s[1] == '.' && isdigit((unsigned char)s[2])));
}

int cli_parse_opts(const cli_cmd *c, int argc, char **argv, int first)
{
    unsigned char given[MAX_OPTS];
    int i;

    if (c->nopts > MAX_OPTS)
        return cli_usage_error(c->name, "internal error: too many options");
    memset(given, 0, sizeof given);
    for (i = first; i < argc; i++) {
        const char *arg = argv[i], *eq, *val;
        const cli_opt *o;
        size_t name_len;

        if (cli_is_help(arg)) {
            cli_print_help(c, stdout);
            return CLI_HELP_SHOWN;
        }
        if (arg[0] == '-' && arg[1] != '\0' && arg[1] != '-' && !is_negative_number(arg))
            return unknown_option(c, arg, strcspn(arg, "="));
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
            return cli_usage_error(c->name, "unexpected argument '%s'", arg);
        eq = strchr(arg, '=');
        name_len = eq ? (size_t)(eq - arg) : strlen(arg);
        o = find_opt(c, arg, name_len);
        if (!o)
            return unknown_option(c, arg, name_len);
        if (o->seen) {
            if (eq)
                return cli_usage_error(c->name, "option %s takes no value", o->name);
            if (given[o - c->opts]++)
                return cli_usage_error(c->name, "option %s given twice", o->name);
            *o->seen = 1;
            continue;
        }
        if (eq) {
            val = eq + 1;
        } else if (i + 1 >= argc) {
            return cli_usage_error(c->name, "option '%s' needs a value", o->name);
        } else if (strncmp(argv[i + 1], "--", 2) == 0) {
            /* "--peers --steps 10": the value was forgotten; taking "--steps" as the
             * value would silently drop an option. */
            return cli_usage_error(c->name, "option '%s' needs a value (got %s'%s')", o->name,
                                   argv[i + 1][2] ? "option " : "", argv[i + 1]);
        } else {
            val = argv[++i];
        }
        if (val[0] == '\0')
            return cli_usage_error(c->name, "option %s needs a non-empty value", o->name);
        if (o->list) {
            if (o->list->n >= o->list->max)
                return cli_usage_error(c->name, "option %s given more than %d times", o->name,
                                       o->list->max);
            o->list->items[o->list->n++] = val;
        } else {
            if (given[o - c->opts]++)
                return cli_usage_error(c->name, "option %s given twice", o->name);
            *o->value = val;
        }
    }
    return 0;
}

/* Prints `text` from column `col` on, wrapping at HELP_WIDTH with continuation lines
 * starting at `indent`. Returns the column reached. */
static size_t put_wrapped(FILE *out, const char *text, size_t col, size_t indent)
{
    const char *p = text;
    while (*p) {
        size_t word = strcspn(p, " ");
        if (col > indent && col + 1 + word > HELP_WIDTH) {
            fprintf(out, "\n%*s", (int)indent, "");
            col = indent;
        } else if (col > indent) {
            fputc(' ', out);
            col++;
        }
        fwrite(p, 1, word, out);
        col += word;
        p += word;
        while (*p == ' ')
            p++;
    }
    return col;
}

static void put_option(FILE *out, const char *left, const char *help, const char *tail)
{
    size_t col = (size_t)fprintf(out, "  %s", left);
    if (col + 2 > HELP_COLUMN) {
        fprintf(out, "\n%*s", HELP_COLUMN, "");
    } else {
        fprintf(out, "%*s", (int)(HELP_COLUMN - col), "");
    }
    col = put_wrapped(out, help, HELP_COLUMN, HELP_COLUMN);
    if (tail)
        put_wrapped(out, tail, col, HELP_COLUMN);
    fputc('\n', out);
}

void cli_print_help(const cli_cmd *c, FILE *out)
{
    size_t k;

    fprintf(out, "usage: starling %s%s%s\n\n", c->name, c->synopsis[0] ? " " : "", c->synopsis);
    fputs(c->about, out);
    fputs("\noptions:\n", out);
    for (k = 0; k < c->nopts; k++) {
        const cli_opt *o = &c->opts[k];
        char left[96];
        snprintf(left, sizeof left, "%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        put_option(out, left, o->help, o->list ? "(repeatable)" : NULL);
    }
    put_option(out, "-h, --help", "print this help and exit", NULL);
    if (c->notes) {
        fputc('\n', out);
        fputs(c->notes, out);
    }
}
