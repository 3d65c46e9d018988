/*
 * cli_suggest.c -- "did you mean": the known option or command nearest a mistyped one.
 *
 * Pure functions of their arguments (no I/O), so tests/cli/test_cli_suggest.c checks them
 * alone. A suggestion is offered only when it is close: a wrong guess is worse than none.
 */
#include <string.h>

#include "cli.h"

size_t cli_edit_distance(const char *a, size_t alen, const char *b, size_t blen)
{
    /* Three rows of the dynamic-programming table: the transposition case looks two rows
     * back (optimal string alignment: Damerau's distance without repeated edits of one
     * substring, which is all a typo needs). */
    size_t rows[3][CLI_SUGGEST_MAX + 1];
    size_t *prev2 = rows[0], *prev = rows[1], *cur = rows[2];
    size_t i, j;

    if (alen > CLI_SUGGEST_MAX || blen > CLI_SUGGEST_MAX)
        return (size_t)-1;
    for (j = 0; j <= blen; j++)
        prev[j] = j;
    for (i = 1; i <= alen; i++) {
        size_t *t;
        cur[0] = i;
        for (j = 1; j <= blen; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t v = prev[j - 1] + cost;
            if (prev[j] + 1 < v)
                v = prev[j] + 1;
            if (cur[j - 1] + 1 < v)
                v = cur[j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                prev2[j - 2] + 1 < v)
                v = prev2[j - 2] + 1;
            cur[j] = v;
        }
        t = prev2;
        prev2 = prev;
        prev = cur;
        cur = t;
    }
    return prev[blen];
}

static const char *skip_dashes(const char *s, size_t *len)
{
    while (*len > 0 && *s == '-') {
        s++;
        (*len)--;
    }
    return s;
}

/* How many edits still read as a typo of a word this long: none for one or two
 * characters ("--x" is not "--f"), else one, or one in three characters for long words
 * ("--stpes" -> "--steps", "--chekpoint-evry" -> "--checkpoint-every"). */
static size_t max_edits(size_t len)
{
    if (len < 3)
        return 0;
    return len / 3 > 1 ? len / 3 : 1;
}

/* Scores are in half edits: a word that starts a longer name ("--check" for
 * "--checkpoint-every") scores half an edit worse than the loosest typo, so it is
 * accepted, but a real typo of another name wins over it. */
#define PREFIX_SCORE(len) (2 * max_edits(len) + 1)

void cli_suggest_init(cli_suggest *s, const char *word, size_t len)
{
    s->word = skip_dashes(word, &len);
    s->len = len;
    s->best = NULL;
    s->best_score = (size_t)-1;
}

void cli_suggest_add(cli_suggest *s, const char *candidate)
{
    size_t clen = strlen(candidate);
    const char *c = skip_dashes(candidate, &clen);
    size_t score;

    if (s->len == 0 || clen == 0)
        return;
    score = cli_edit_distance(s->word, s->len, c, clen);
    score = score == (size_t)-1 ? score : 2 * score;
    if (s->len >= 3 && s->len < clen && memcmp(s->word, c, s->len) == 0 &&
        PREFIX_SCORE(s->len) < score)
        score = PREFIX_SCORE(s->len);
    if (score < s->best_score) {
        s->best_score = score;
        s->best = candidate;
    }
}

const char *cli_suggest_result(const cli_suggest *s)
{
    if (!s->best || s->best_score > PREFIX_SCORE(s->len))
        return NULL;
    return s->best;
}
