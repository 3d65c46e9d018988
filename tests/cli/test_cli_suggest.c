/*
 * test_cli_suggest.c -- the edit distance and "did you mean" of tools/cli_suggest.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cli.h"

static size_t dist(const char *a, const char *b)
{
    return cli_edit_distance(a, strlen(a), b, strlen(b));
}

static void test_distance(void **state)
{
    char longer[CLI_SUGGEST_MAX + 2];
    (void)state;
    assert_int_equal(dist("", ""), 0);
    assert_int_equal(dist("run", "run"), 0);
    assert_int_equal(dist("", "abc"), 3);
    assert_int_equal(dist("abc", ""), 3);
    assert_int_equal(dist("kitten", "sitting"), 3);
    assert_int_equal(dist("step", "steps"), 1);   /* insertion */
    assert_int_equal(dist("stepss", "steps"), 1); /* deletion */
    assert_int_equal(dist("stdps", "steps"), 1);  /* substitution */
    assert_int_equal(dist("rnu", "run"), 1);      /* adjacent transposition */
    assert_int_equal(dist("ca", "abc"), 3);       /* OSA: no edit of a moved pair */
    assert_int_equal(dist("peers", "seed"), 3);
    /* symmetric */
    assert_int_equal(dist("--checkpoint", "--chekcpoint-every"),
                     dist("--chekcpoint-every", "--checkpoint"));
    memset(longer, 'a', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    assert_true(dist(longer, "a") == (size_t)-1);
    longer[CLI_SUGGEST_MAX] = '\0';
    assert_int_equal(dist(longer, longer), 0);
}

static const char *suggest(const char *word, const char *const *cands)
{
    cli_suggest s;
    cli_suggest_init(&s, word, strlen(word));
    for (; *cands; cands++)
        cli_suggest_add(&s, *cands);
    return cli_suggest_result(&s);
}

static void test_suggest(void **state)
{
    static const char *const opts[] = {"--peers", "--seed", "--steps", "--step-ms",
                                       "--checkpoint-every", "--f", "--help", NULL};
    static const char *const cmds[] = {"run", "coordinator", "bench", "demo", "help", NULL};
    (void)state;
    assert_string_equal(suggest("--step", opts), "--steps");
    assert_string_equal(suggest("--stesp", opts), "--steps");
    assert_string_equal(suggest("--peer", opts), "--peers");
    assert_string_equal(suggest("-peers", opts), "--peers"); /* dashes do not count */
    assert_string_equal(suggest("--check", opts), "--checkpoint-every"); /* a prefix */
    assert_string_equal(suggest("--hlep", opts), "--help");
    assert_string_equal(suggest("--chekpoint-evry", opts), "--checkpoint-every");
    assert_string_equal(suggest("rnu", cmds), "run");
    assert_string_equal(suggest("bnech", cmds), "bench");
    assert_string_equal(suggest("coordinater", cmds), "coordinator");
    assert_string_equal(suggest("dmeo", cmds), "demo");
    /* Nothing close: no guess. */
    assert_null(suggest("--zzzz", opts));
    assert_null(suggest("--bogus", opts));
    assert_null(suggest("train", cmds));
    assert_null(suggest("", cmds));
    assert_null(suggest("--", opts));
    /* A one-letter option is not offered for any short word. */
    assert_null(suggest("--x", opts));
}

static void test_ties_first(void **state)
{
    static const char *const c[] = {"--abcx", "--abcy", NULL};
    static const char *const d[] = {"--abcy", "--abcx", NULL};
    (void)state;
    /* "--abcz" is one edit from both: the first in the table wins, so the answer is fixed. */
    assert_string_equal(suggest("--abcz", c), "--abcx");
    assert_string_equal(suggest("--abcz", d), "--abcy");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_distance),
        cmocka_unit_test(test_suggest),
        cmocka_unit_test(test_ties_first),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
