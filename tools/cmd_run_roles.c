/*
 * cmd_run_roles.c -- the starting peers of `starling run` that behave differently from
 * the others: Byzantine ones (--byzantine K --attack NAME, with the aggregator the
 * honest ones use) and stragglers (--slow RANK:FACTOR). run_spawn_peer gives each its
 * extra training key.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cmd_run.h"

/* ------------------------------------------------------------ stragglers */

int run_parse_slow(const char *cmd, run_opts *o, const char *text)
{
    starling_train_config *tc = NULL;
    const char *factor;
    char *end, err[256];
    long rank;
    int ok;
    errno = 0;
    rank = strtol(text, &end, 10);
    if (end == text || *end != ':' || errno || rank < 0 || *text < '0' || *text > '9')
        return cli_usage_error(cmd, "--slow: expected RANK:FACTOR (e.g. 1:3), got '%s'", text);
    if (rank >= o->peers)
        return cli_usage_error(cmd, "--slow: RANK %ld is not a starting peer (0..%d)", rank,
                               o->peers - 1);
    factor = end + 1;
    /* The factor goes through the trainer's own check of the slow key. */
    if (starling_train_config_create(&tc) != STARLING_OK)
        return CLI_EXIT_FAIL;
    ok = strlen(factor) < 16 &&
         starling_train_config_set(tc, "slow", factor, err, sizeof err) == STARLING_OK;
    starling_train_config_destroy(tc);
    if (!ok)
        return cli_usage_error(cmd, "--slow: FACTOR in '%s' must be a number in [1, 100]", text);
    if (o->slow_set[rank][0])
        return cli_usage_error(cmd, "--slow: peer %ld is given twice", rank);
    snprintf(o->slow_set[rank], sizeof o->slow_set[rank], "slow=%s", factor);
    return 0;
}

/* ------------------------------------------------------------ Byzantine peers */

/* --byzantine K --attack NAME --aggregator SPEC [--f F] [--nnm]: fills o->byzantine,
 * o->attack_set and o->aggregator. The aggregator's requirement on (n, f) is checked for
 * the smallest membership the schedule leads to (the starting peers less the kills), by
 * aggregating that many zero vectors: the rule's own check, with its own message. */
int run_check_byzantine(const char *cmd, run_opts *o, long byz, const char *attack,
                        const char *agg_spec, long f, int nnm)
{
    starling_train_config *tc = NULL;
    starling_aggregator *agg = NULL;
    char err[256];
    float *zeros = NULL, out1;
    int n = o->peers - o->nkills, rc = CLI_EXIT_USAGE;

    if (byz > 0 && !attack)
        return cli_usage_error(cmd, "--byzantine needs --attack NAME");
    if (attack && byz == 0)
        return cli_usage_error(cmd, "--attack needs --byzantine K (K >= 1)");
    if (byz >= o->peers)
        return cli_usage_error(cmd, "--byzantine: K %ld must be below --peers %d", byz, o->peers);
    if ((f >= 0 || nnm) && !agg_spec)
        return cli_usage_error(cmd, "%s applies with --aggregator only", nnm ? "--nnm" : "--f");
    o->byzantine = (int)byz;
    if (attack) {
        if (starling_train_config_create(&tc) != STARLING_OK)
            return CLI_EXIT_FAIL;
        if (strcmp(attack, "none") == 0 ||
            starling_train_config_set(tc, "attack", attack, err, sizeof err) != STARLING_OK) {
            starling_train_config_destroy(tc);
            return cli_usage_error(cmd,
                                   "--attack: expected sign_flip, noise, alie, ipm, "
                                   "label_flip or garbage, got '%s'",
                                   attack);
        }
        starling_train_config_destroy(tc);
        snprintf(o->attack_set, sizeof o->attack_set, "attack=%s", attack);
    }
    if (!agg_spec)
        return 0;
    if (f < 0)
        f = byz;
    if (strlen(agg_spec) > 100)
        return cli_usage_error(cmd, "--aggregator: spec too long");
    if (nnm && strstr(agg_spec, "nnm+"))
        return cli_usage_error(cmd, "--nnm: the spec '%s' already has nnm+", agg_spec);
    {
        /* nnm+ goes after a bucketing prefix ("bucket:S[:seed=N]+"): the grammar's order. */
        const char *rest = agg_spec;
        if (nnm && strncmp(agg_spec, "bucket:", 7) == 0 && strchr(agg_spec, '+'))
            rest = strchr(agg_spec, '+') + 1;
        snprintf(o->aggregator, sizeof o->aggregator, "%.*s%s%s", (int)(rest - agg_spec), agg_spec,
                 nnm ? "nnm+" : "", rest);
    }
    if (starling_aggregator_create(&agg, o->aggregator, err, sizeof err) != STARLING_OK)
        return cli_usage_error(cmd, "--aggregator: %s", err);
    zeros = calloc((size_t)(n > 0 ? n : 1), sizeof *zeros);
    if (!zeros) {
        rc = CLI_EXIT_FAIL;
    } else if (starling_aggregate(agg, zeros, (size_t)n, 1, (int)f, &out1, err, sizeof err) !=
               STARLING_OK) {
        cli_usage_error(cmd, "--aggregator %s with --f %ld and %d peers%s: %s", o->aggregator, f, n,
                        o->nkills ? " (after the kills)" : "", err);
    } else {
        rc = 0;
    }
    free(zeros);
    starling_aggregator_destroy(agg);
    return rc;
}
