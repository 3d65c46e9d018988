/* starling_train_config: options of the training engine from key/value text, each value
 * validated with a message naming the key (docs/training.md lists them). */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/optim.h"
#include "train/train_config.h"
#include "util/alloc.h"
#include "util/why.h"

STARLING_API int starling_train_config_create(starling_train_config **out)
{
    starling_train_config *c;
    if (!out)
        return STARLING_E_INVALID;
    *out = NULL;
    c = starling__calloc(1, sizeof *c);
    if (!c)
        return STARLING_E_NOMEM;
    c->algo = STARLING__ALGO_DILOCO;
    c->steps = 1000;
    c->inner_steps = 50;
    c->fragments = 4;
    c->tau = 5;
    c->alpha = 0.5;
    snprintf(c->compress, sizeof c->compress, "none");
    c->hidden[0] = 256;
    c->hidden[1] = 128;
    c->nhidden = 2;
    c->batch = 64;
    c->optimizer = STARLING__OPTIM_ADAMW;
    c->lr = 1e-3;
    c->clip = 0.0;
    c->outer_lr = STARLING__OUTER_LR_DEFAULT;
    c->outer_momentum = STARLING__OUTER_MOMENTUM_DEFAULT;
    c->seed = 1;
    c->noniid = 0.0;
    snprintf(c->data, sizeof c->data, "%s", "/usr/share/datasets/fashion-mnist");
    c->sync_every = 10;
    c->slow = 1.0;
    *out = c;
    return STARLING_OK;
}

STARLING_API void starling_train_config_destroy(starling_train_config *cfg) { starling__free(cfg); }

static const char *const attack_names[STARLING__ATTACK_COUNT] = {
    "none", "sign_flip", "noise", "alie", "ipm", "label_flip", "garbage"};

const char *starling__attack_name(int attack)
{
    return attack >= 0 && attack < STARLING__ATTACK_COUNT ? attack_names[attack] : "?";
}

double starling__train_config_attack_scale(const starling_train_config *cfg)
{
    if (cfg->attack_scale_set)
        return cfg->attack_scale;
    switch (cfg->attack) {
    case STARLING__ATTACK_SIGN_FLIP: return 10.0; /* see docs/training.md for why not 1 */
    case STARLING__ATTACK_NOISE: return 1.0;
    case STARLING__ATTACK_ALIE: return 1.0;
    case STARLING__ATTACK_IPM: return 0.1;
    case STARLING__ATTACK_GARBAGE: return 1e30;
    default: return 0.0;
    }
}

uint64_t starling__train_config_attack_start(const starling_train_config *cfg)
{
    if (cfg->attack_start_set)
        return cfg->attack_start;
    return cfg->attack == STARLING__ATTACK_GARBAGE ? cfg->steps / 2 : 0;
}

double starling__train_config_lr(const starling_train_config *cfg)
{
    if (cfg->lr_set)
        return cfg->lr;
    return cfg->optimizer == STARLING__OPTIM_SGD ? 0.05 : 1e-3;
}

/* Whole-string unsigned integer in [lo, hi]. */
static int parse_u64(const char *key, const char *v, uint64_t lo, uint64_t hi, uint64_t *out,
                     char *err, size_t errlen)
{
    char *end;
    unsigned long long x;
    errno = 0;
    if (!*v || *v == '-' || *v == '+' || *v == ' ')
        goto bad;
    x = strtoull(v, &end, 10);
    if (errno || *end || x < lo || x > hi)
        goto bad;
    *out = x;
    return STARLING_OK;
bad:
    starling__why(err, errlen, "%s: expected an integer in %llu..%llu, got \"%s\"", key,
            (unsigned long long)lo, (unsigned long long)hi, v);
    return STARLING_E_INVALID;
}

/* Whole-string finite number in [lo, hi] (lo excluded when lo_open). */
static int parse_double(const char *key, const char *v, double lo, int lo_open, double hi,
                        double *out, char *err, size_t errlen)
{
    char *end;
    double x;
    errno = 0;
    if (!*v || *v == ' ')
        goto bad;
    x = strtod(v, &end);
    if (errno || *end || !isfinite(x) || x > hi || x < lo || (lo_open && x == lo))
        goto bad;
    *out = x;
    return STARLING_OK;
bad:
    starling__why(err, errlen, "%s: expected a number in %s%g, %g], got \"%s\"", key, lo_open ? "(" : "[",
            lo, hi, v);
    return STARLING_E_INVALID;
}

/* round_deadline: off | auto | auto:F | SECONDS (docs/training.md, "Deadline rounds"). */
static int parse_round_deadline(const char *v, starling_train_config *c, char *err, size_t errlen)
{
    if (!strcmp(v, "off")) {
        c->deadline_s = c->deadline_factor = 0.0;
        return STARLING_OK;
    }
    if (!strcmp(v, "auto")) {
        c->deadline_s = 0.0;
        c->deadline_factor = STARLING__DEADLINE_FACTOR_DEFAULT;
        return STARLING_OK;
    }
    if (!strncmp(v, "auto:", 5)) {
        c->deadline_s = 0.0;
        return parse_double("round_deadline: auto:F", v + 5, 1.0, 0, 10.0, &c->deadline_factor, err,
                            errlen);
    }
    if (parse_double("round_deadline", v, 0.0, 1, 86400.0, &c->deadline_s, err, errlen)) {
        starling__why(err, errlen,
                      "round_deadline: expected off, auto, auto:F (F in [1, 10]) or seconds in "
                      "(0, 86400], got \"%s\"",
                      v);
        return STARLING_E_INVALID;
    }
    c->deadline_factor = 0.0;
    return STARLING_OK;
}

static int parse_hidden(const char *v, starling_train_config *c, char *err, size_t errlen)
{
    size_t w[STARLING__MLP_MAX_LAYERS - 1], n = 0;
    const char *p = v;
    if (!strcmp(v, "") || !strcmp(v, "none")) {
        c->nhidden = 0;
        return STARLING_OK;
    }
    for (;;) {
        char *end;
        unsigned long x;
        errno = 0;
        if (*p < '0' || *p > '9')
            goto bad;
        x = strtoul(p, &end, 10);
        if (errno || x < 1 || x > STARLING__MLP_MAX_WIDTH || n == sizeof w / sizeof w[0])
            goto bad;
        w[n++] = x;
        if (*end == '\0')
            break;
        if (*end != ',')
            goto bad;
        p = end + 1;
    }
    memcpy(c->hidden, w, n * sizeof w[0]);
    c->nhidden = n;
    return STARLING_OK;
bad:
    starling__why(err, errlen,
            "hidden: expected up to %d comma-separated widths in 1..%d (e.g. \"256,128\") or "
            "\"none\", got \"%s\"",
            STARLING__MLP_MAX_LAYERS - 1, STARLING__MLP_MAX_WIDTH, v);
    return STARLING_E_INVALID;
}

static int set_path(const char *key, const char *v, char *dst, size_t cap, int allow_empty,
                    char *err, size_t errlen)
{
    size_t n = strlen(v);
    if ((!allow_empty && n == 0) || n >= cap) {
        starling__why(err, errlen, "%s: expected a path of %s%zu bytes, got %zu bytes", key,
                allow_empty ? "0.." : "1..", cap - 1, n);
        return STARLING_E_INVALID;
    }
    memcpy(dst, v, n + 1);
    return STARLING_OK;
}

STARLING_API int starling_train_config_set(starling_train_config *cfg, const char *key,
                                           const char *value, char *err, size_t errlen)
{
    starling_train_config c;
    int rc = STARLING_OK;
    double d;
    if (err && errlen)
        err[0] = '\0';
    if (!cfg || !key || !value) {
        starling__why(err, errlen, "train config: NULL argument");
        return STARLING_E_INVALID;
    }
    c = *cfg; /* work on a copy: a refused value leaves the config unchanged */
#define U64(name, lo, hi) parse_u64(key, value, lo, hi, &c.name, err, errlen)
    if (!strcmp(key, "algo")) {
        if (!strcmp(value, "ddp"))
            c.algo = STARLING__ALGO_DDP;
        else if (!strcmp(value, "diloco"))
            c.algo = STARLING__ALGO_DILOCO;
        else if (!strcmp(value, "streaming"))
            c.algo = STARLING__ALGO_STREAMING;
        else {
            starling__why(err, errlen, "algo: expected ddp, diloco or streaming, got \"%s\"", value);
            rc = STARLING_E_INVALID;
        }
    } else if (!strcmp(key, "steps")) {
        rc = U64(steps, 1, 1000000000);
    } else if (!strcmp(key, "inner_steps")) {
        rc = U64(inner_steps, 1, 1000000);
    } else if (!strcmp(key, "fragments")) {
        rc = U64(fragments, 1, 64);
    } else if (!strcmp(key, "tau")) {
        rc = U64(tau, 0, 1000000);
    } else if (!strcmp(key, "alpha")) {
        rc = parse_double(key, value, 0.0, 0, 1.0, &c.alpha, err, errlen);
    } else if (!strcmp(key, "compress")) {
        starling_codec *codec = NULL;
        char why[160];
        if (strlen(value) >= sizeof c.compress) {
            starling__why(err, errlen, "compress: spec longer than %zu bytes", sizeof c.compress - 1);
            rc = STARLING_E_INVALID;
        } else if (starling_codec_create(&codec, value, why, sizeof why) != STARLING_OK) {
            starling__why(err, errlen, "compress: %s", why);
            rc = STARLING_E_INVALID;
        } else {
            snprintf(c.compress, sizeof c.compress, "%s", value);
            starling_codec_destroy(codec);
        }
    } else if (!strcmp(key, "hidden")) {
        rc = parse_hidden(value, &c, err, errlen);
    } else if (!strcmp(key, "batch")) {
        uint64_t b;
        rc = parse_u64(key, value, 1, 65536, &b, err, errlen);
        c.batch = (size_t)b;
    } else if (!strcmp(key, "optimizer")) {
        if (!strcmp(value, "adamw"))
            c.optimizer = STARLING__OPTIM_ADAMW;
        else if (!strcmp(value, "sgd"))
            c.optimizer = STARLING__OPTIM_SGD;
        else {
            starling__why(err, errlen, "optimizer: expected adamw or sgd, got \"%s\"", value);
            rc = STARLING_E_INVALID;
        }
    } else if (!strcmp(key, "lr")) {
        rc = parse_double(key, value, 0.0, 1, 10.0, &c.lr, err, errlen);
        c.lr_set = 1;
    } else if (!strcmp(key, "warmup")) {
        rc = U64(warmup, 0, 1000000000);
    } else if (!strcmp(key, "weight_decay")) {
        rc = parse_double(key, value, 0.0, 0, 1.0, &c.weight_decay, err, errlen);
        c.wd_set = 1;
    } else if (!strcmp(key, "clip")) {
        rc = parse_double(key, value, 0.0, 0, 1e9, &c.clip, err, errlen);
    } else if (!strcmp(key, "outer_lr")) {
        rc = parse_double(key, value, 0.0, 1, 10.0, &c.outer_lr, err, errlen);
    } else if (!strcmp(key, "outer_momentum")) {
        rc = parse_double(key, value, 0.0, 0, 0.999, &c.outer_momentum, err, errlen);
    } else if (!strcmp(key, "seed")) {
        rc = U64(seed, 0, UINT64_MAX);
    } else if (!strcmp(key, "noniid")) {
        rc = parse_double(key, value, 0.0, 0, 1e6, &d, err, errlen);
        c.noniid = d;
    } else if (!strcmp(key, "data")) {
        rc = set_path(key, value, c.data, sizeof c.data, 0, err, errlen);
    } else if (!strcmp(key, "eval_every")) {
        rc = U64(eval_every, 0, 1000000000);
    } else if (!strcmp(key, "eval_limit")) {
        rc = U64(eval_limit, 0, 1000000);
    } else if (!strcmp(key, "checkpoint_dir")) {
        rc = set_path(key, value, c.checkpoint_dir, sizeof c.checkpoint_dir, 1, err, errlen);
    } else if (!strcmp(key, "checkpoint_every")) {
        rc = U64(checkpoint_every, 0, 1000000000);
    } else if (!strcmp(key, "resume")) {
        rc = set_path(key, value, c.resume, sizeof c.resume, 1, err, errlen);
    } else if (!strcmp(key, "sync_every")) {
        rc = U64(sync_every, 1, 1000000);
    } else if (!strcmp(key, "aggregator")) {
        starling_aggregator *agg = NULL;
        char why[160];
        if (strlen(value) >= sizeof c.aggregator) {
            starling__why(err, errlen, "aggregator: spec longer than %zu bytes",
                          sizeof c.aggregator - 1);
            rc = STARLING_E_INVALID;
        } else if (!*value || !strcmp(value, "none")) {
            c.aggregator[0] = '\0';
        } else if (starling_aggregator_create(&agg, value, why, sizeof why) != STARLING_OK) {
            starling__why(err, errlen, "aggregator: %s", why);
            rc = STARLING_E_INVALID;
        } else {
            snprintf(c.aggregator, sizeof c.aggregator, "%s", value);
            starling_aggregator_destroy(agg);
        }
    } else if (!strcmp(key, "f")) {
        uint64_t f;
        rc = parse_u64(key, value, 0, 1000, &f, err, errlen);
        c.byz_f = (int)f;
    } else if (!strcmp(key, "attack")) {
        int a;
        for (a = 0; a < STARLING__ATTACK_COUNT && strcmp(value, attack_names[a]); a++)
            ;
        if (a == STARLING__ATTACK_COUNT) {
            starling__why(err, errlen,
                          "attack: expected none, sign_flip, noise, alie, ipm, label_flip or "
                          "garbage, got \"%s\"",
                          value);
            rc = STARLING_E_INVALID;
        }
        c.attack = a;
    } else if (!strcmp(key, "attack_scale")) {
        rc = parse_double(key, value, 0.0, 0, 1e38, &c.attack_scale, err, errlen);
        c.attack_scale_set = 1;
    } else if (!strcmp(key, "attack_start")) {
        rc = U64(attack_start, 0, 1000000000);
        c.attack_start_set = 1;
    } else if (!strcmp(key, "round_deadline")) {
        rc = parse_round_deadline(value, &c, err, errlen);
    } else if (!strcmp(key, "slow")) {
        rc = parse_double(key, value, 1.0, 0, 100.0, &c.slow, err, errlen);
    } else {
        starling__why(
            err, errlen,
            "unknown option \"%s\" (known: algo, steps, inner_steps, fragments, tau, alpha, "
            "compress, hidden, batch, optimizer, lr, warmup, weight_decay, clip, outer_lr, "
            "outer_momentum, seed, noniid, data, eval_every, eval_limit, checkpoint_dir, "
            "checkpoint_every, resume, sync_every, aggregator, f, attack, attack_scale, "
            "attack_start, round_deadline, slow)",
            key);
        rc = STARLING_E_INVALID;
    }
#undef U64
    if (rc == STARLING_OK)
        *cfg = c;
    return rc;
}
