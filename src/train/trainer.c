/* starling_trainer: the built-in model trained across a communicator's members with
 * data-parallel SGD or DiLoCo, surviving peer loss and joins (docs/training.md,
 * "Distributed training"). Only the public comm API is used for communication. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/dataset.h"
#include "data/prng.h"
#include "model/mlp.h"
#include "platform/clock.h"
#include "train/attack.h"
#include "train/checkpoint.h"
#include "train/optim.h"
#include "train/train_config.h"
#include "train/trainer_internal.h"
#include "util/alloc.h"
#include "util/log.h"
#include "util/why.h"

#define SYNTHETIC_DEFAULT_N 20000
#define DATA_STREAM_IID 0x11d0ull
#define DATA_STREAM_NONIID 0x2a1dull

/* ---------------------------------------------------------------- data */

/* 1 if dir holds any of the Fashion-MNIST files: then a missing one is an error, not a
 * reason to fall back to the synthetic set. */
static int any_fashion_file(const char *dir)
{
    static const char *const names[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
    char path[STARLING__TRAIN_PATH_MAX + 64];
    for (size_t i = 0; i < 8; i++) {
        snprintf(path, sizeof path, "%s/%s%s", dir, names[i / 2], i % 2 ? ".gz" : "");
        if (access(path, F_OK) == 0)
            return 1;
    }
    return 0;
}

static int load_data(starling_trainer *t, char *err, size_t errlen)
{
    const char *d = t->cfg.data;
    char why[512];
    size_t nsyn = 0;
    int rc;
    if (!strncmp(d, "synthetic", 9) && (d[9] == '\0' || d[9] == ':')) {
        nsyn = SYNTHETIC_DEFAULT_N;
        if (d[9] == ':') {
            char *end;
            unsigned long v = strtoul(d + 10, &end, 10);
            if (*end || v < 20 || v > 1000000) {
                starling__why(err, errlen, "data: \"synthetic:N\" needs N in 20..1000000, got \"%s\"", d);
                return STARLING_E_INVALID;
            }
            nsyn = v;
        }
    } else {
        rc = starling__dataset_load_fashion(&t->train, d, STARLING__SPLIT_TRAIN, why, sizeof why);
        if (rc == STARLING_OK)
            rc = starling__dataset_load_fashion(&t->test, d, STARLING__SPLIT_TEST, why, sizeof why);
        if (rc == STARLING_E_NOT_FOUND && any_fashion_file(d)) {
            starling__why(err, errlen, "data: %s (the directory holds only part of Fashion-MNIST)", why);
            return rc;
        }
        if (rc == STARLING_E_NOT_FOUND) {
            starling__dataset_free(&t->train);
            SLOG_INFO("Fashion-MNIST not found in %s (%s): using the synthetic data set", d, why);
            nsyn = SYNTHETIC_DEFAULT_N;
        } else if (rc != STARLING_OK) {
            starling__why(err, errlen, "data: %s", why);
            return rc;
        }
    }
    if (nsyn) {
        size_t ntest = nsyn / 2 < 10000 ? nsyn / 2 : 10000;
        rc = starling__dataset_synthetic(&t->train, nsyn, t->cfg.seed, STARLING__SPLIT_TRAIN, why,
                                         sizeof why);
        if (rc == STARLING_OK)
            rc = starling__dataset_synthetic(&t->test, ntest, t->cfg.seed, STARLING__SPLIT_TEST,
                                             why, sizeof why);
        if (rc != STARLING_OK) {
            starling__why(err, errlen, "data: %s", why);
            return rc;
        }
    }
    return STARLING_OK;
}

static void make_perm(starling_trainer *t, size_t n, uint64_t stream, uint64_t epoch)
{
    starling__prng r;
    if (t->perm_valid && t->perm_n == n && t->perm_epoch == epoch)
        return;
    starling__prng_seed(&r,
                        starling__prng_derive(starling__prng_derive(t->cfg.seed, stream), epoch));
    for (size_t i = 0; i < n; i++)
        t->perm[i] = (uint32_t)i;
    for (size_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
        size_t j = (size_t)starling__prng_below(&r, (uint64_t)i + 1);
        uint32_t tmp = t->perm[i];
        t->perm[i] = t->perm[j];
        t->perm[j] = tmp;
    }
    t->perm_n = n;
    t->perm_epoch = epoch;
    t->perm_valid = 1;
}

/* Recomputes the non-IID shard when (rank, size) changed. */
static int ensure_shard(starling_trainer *t, int rank, int size)
{
    char why[256];
    int rc;
    if (t->cfg.noniid <= 0.0 || (t->shard.idx && t->shard_rank == rank && t->shard_size == size))
        return STARLING_OK;
    starling__shard_free(&t->shard);
    t->perm_valid = 0;
    rc = starling__shard_dirichlet(&t->shard, &t->train, (size_t)rank, (size_t)size, t->cfg.noniid,
                                   1, t->cfg.seed, why, sizeof why);
    if (rc != STARLING_OK) {
        SLOG_ERROR("trainer: non-IID shard for rank %d of %d: %s", rank, size, why);
        return rc;
    }
    t->shard_rank = rank;
    t->shard_size = size;
    SLOG_DEBUG("trainer: rank %d of %d: non-IID shard of %zu samples", rank, size, t->shard.n);
    return STARLING_OK;
}

/* The mini-batch of (step, rank, size), a pure function of them and the seed.
 * IID: the data epochs are permutations of the whole set laid end to end; step s of a
 * group of R members consumes positions [s R B, (s + 1) R B), rank r the r-th block of B.
 * So a group's step sees exactly the batch of R B that one process would see with batch
 * R B, which is what makes DDP match the single process. Non-IID: the same over the
 * member's Dirichlet shard, B positions per step. */
static int fill_batch(starling_trainer *t, uint64_t step, int rank, int size, size_t b)
{
    size_t d = t->train.d;
    int rc = ensure_shard(t, rank, size);
    if (rc != STARLING_OK)
        return rc;
    for (size_t j = 0; j < b; j++) {
        uint32_t idx;
        if (t->cfg.noniid > 0.0) {
            uint64_t p = step * b + j, m = t->shard.n;
            make_perm(t, (size_t)m, DATA_STREAM_NONIID, p / m);
            idx = t->shard.idx[t->perm[p % m]];
        } else {
            uint64_t p = (step * (uint64_t)size + (uint64_t)rank) * b + j, m = t->train.n;
            make_perm(t, (size_t)m, DATA_STREAM_IID, p / m);
            idx = t->perm[p % m];
        }
        starling__dataset_gather(&t->train, &idx, 1, t->x + j * d, t->y + j);
    }
    starling__attack_labels(&t->byz, step, t->y, b, t->train.classes);
    return STARLING_OK;
}

/* ---------------------------------------------------------------- config */

static int prepare(starling_trainer *t, char *err, size_t errlen)
{
    const starling_train_config *c = &t->cfg;
    char why[256];
    starling_codec *codec = NULL;
    int rc;
    if (c->algo == STARLING__ALGO_STREAMING) {
        if (c->fragments > c->inner_steps) {
            starling__why(err, errlen, "fragments: %llu fragments need inner_steps >= fragments (%llu)",
                    (unsigned long long)c->fragments, (unsigned long long)c->inner_steps);
            return STARLING_E_INVALID;
        }
        if (c->tau * c->fragments > c->inner_steps) {
            starling__why(err, errlen,
                    "tau: %llu overlapped steps exceed inner_steps / fragments (%llu / %llu): a "
                    "fragment's sync must finish before the next fragment's starts",
                    (unsigned long long)c->tau, (unsigned long long)c->inner_steps,
                    (unsigned long long)c->fragments);
            return STARLING_E_INVALID;
        }
    }
    if ((c->deadline_s > 0.0 || c->deadline_factor > 0.0) && c->algo != STARLING__ALGO_DILOCO) {
        starling__why(err, errlen,
                      "round_deadline: deadline rounds are for algo diloco (ddp steps and "
                      "Streaming DiLoCo's fragments wait for every member)");
        return STARLING_E_INVALID;
    }
    if (c->warmup >= c->steps) {
        starling__why(err, errlen, "warmup: %llu steps must be fewer than steps (%llu)",
                (unsigned long long)c->warmup, (unsigned long long)c->steps);
        return STARLING_E_INVALID;
    }
    starling__optim_defaults(&t->opt, (starling__optim_kind)c->optimizer);
    if (c->wd_set)
        t->opt.weight_decay = (float)c->weight_decay;
    if (starling__optim_check(&t->opt, why, sizeof why) != STARLING_OK) {
        starling__why(err, errlen, "optimizer: %s", why);
        return STARLING_E_INVALID;
    }
    t->sched.kind = c->warmup ? STARLING__LR_WARMUP_COSINE : STARLING__LR_COSINE;
    t->sched.base_lr = (float)starling__train_config_lr(c);
    t->sched.min_lr = t->sched.base_lr * 0.1f;
    t->sched.warmup_steps = c->warmup;
    t->sched.total_steps = c->steps;
    if (starling__lr_check(&t->sched, why, sizeof why) != STARLING_OK) {
        starling__why(err, errlen, "lr: %s", why);
        return STARLING_E_INVALID;
    }
    rc = starling_codec_create(&codec, c->compress, why, sizeof why);
    if (rc != STARLING_OK) {
        starling__why(err, errlen, "compress: %s", why);
        return rc;
    }
    if (c->aggregator[0]) {
        /* The robust all-reduce is an all-gather: a sparse codec or error feedback (which
         * the all-gather refuses) cannot carry it. */
        const char *cs = starling_codec_spec(codec);
        if (strstr(cs, "topk") || strstr(cs, "randk") || strstr(cs, "+ef")) {
            starling__why(err, errlen,
                          "compress: \"%s\" cannot carry the robust all-reduce of aggregator "
                          "\"%s\" (dense codecs only: none, f16, bf16, int8, int4, fp4; no +ef)",
                          c->compress, c->aggregator);
            starling_codec_destroy(codec);
            return STARLING_E_INVALID;
        }
        rc = starling_aggregator_create(&t->agg, c->aggregator, why, sizeof why);
        if (rc != STARLING_OK) {
            starling__why(err, errlen, "aggregator: %s", why);
            starling_codec_destroy(codec);
            return rc;
        }
    }
    if ((rc = starling_callopts_create(&t->opts_sync)) != STARLING_OK ||
        (rc = starling_callopts_set_codec(t->opts_sync, codec)) != STARLING_OK ||
        (rc = starling_callopts_set_tag(t->opts_sync, TAG_SYNC)) != STARLING_OK ||
        (rc = starling_callopts_create(&t->opts_count)) != STARLING_OK ||
        (rc = starling_callopts_set_tag(t->opts_count, TAG_COUNT)) != STARLING_OK)
        starling__why(err, errlen, "trainer: call options: %s", starling_strerror(rc));
    if (rc == STARLING_OK && c->algo == STARLING__ALGO_STREAMING) {
        t->nfrags = (size_t)c->fragments;
        t->frags = starling__calloc(t->nfrags, sizeof *t->frags);
        if (!t->frags)
            rc = STARLING_E_NOMEM;
        for (size_t p = 0; p < t->nfrags && rc == STARLING_OK; p++) {
            t->frags[p].offset_step = p * c->inner_steps / c->fragments;
            if ((rc = starling_callopts_create(&t->frags[p].opts)) != STARLING_OK ||
                (rc = starling_callopts_set_codec(t->frags[p].opts, codec)) != STARLING_OK ||
                (rc = starling_callopts_set_tag(t->frags[p].opts, TAG_SYNC + 16 + p)) !=
                    STARLING_OK)
                break;
        }
        if (rc != STARLING_OK)
            starling__why(err, errlen, "trainer: fragments: %s", starling_strerror(rc));
    }
    starling_codec_destroy(codec);
    return rc;
}

/* The shared tensors, in registration (and checkpoint) order. */
static size_t shared_tensors(starling_trainer *t, starling__ckpt_tensor *out)
{
    if (trainer_is_diloco(t)) {
        out[0] = (starling__ckpt_tensor){"params", t->global, t->n, STARLING_F32};
        out[1] = (starling__ckpt_tensor){"outer_momentum", t->outer_mom, t->n, STARLING_F32};
        out[2] = (starling__ckpt_tensor){"phase", t->phase, 1, STARLING_I32};
        return 3;
    }
    out[0] = (starling__ckpt_tensor){"params", t->m->params, t->n, STARLING_F32};
    out[1] = (starling__ckpt_tensor){"optimizer", t->opt_state, t->opt_floats, STARLING_F32};
    return 2;
}

/* ---------------------------------------------------------------- create / destroy */

/* The member's attack (kind none for an honest member), on contributions of t->n floats. */
static int make_attacker(starling_trainer *t, char *err, size_t errlen)
{
    const starling_train_config *c = &t->cfg;
    double scale = starling__train_config_attack_scale(c);
    uint64_t start = starling__train_config_attack_start(c);
    int rc = starling__attacker_init(&t->byz, c->attack, scale, start, c->seed, t->n);
    if (rc == STARLING_E_NOMEM) {
        starling__why(err, errlen, "trainer: out of memory (attack buffers)");
        return rc;
    }
    if (rc != STARLING_OK) {
        starling__why(err, errlen, "attack: %s with scale %g cannot be set up",
                      starling__attack_name(c->attack), scale);
        return rc;
    }
    if (c->attack != STARLING__ATTACK_NONE)
        SLOG_INFO("trainer: Byzantine member: attack %s, scale %g, from step %llu",
                  starling__attack_name(c->attack), scale, (unsigned long long)start);
    return STARLING_OK;
}

STARLING_API int starling_trainer_create(starling_trainer **out, starling_comm *comm,
                                         const starling_train_config *cfg, char *err, size_t errlen)
{
    starling_trainer *t;
    size_t widths[STARLING__MLP_MAX_LAYERS + 1], nw = 0;
    starling__ckpt_tensor ts[4];
    size_t nts;
    char why[512];
    int rc;

    if (err && errlen)
        err[0] = '\0';
    if (!out || !comm || !cfg) {
        starling__why(err, errlen, "trainer: NULL argument");
        return STARLING_E_INVALID;
    }
    *out = NULL;
    t = starling__calloc(1, sizeof *t);
    if (!t) {
        starling__why(err, errlen, "trainer: out of memory");
        return STARLING_E_NOMEM;
    }
    t->comm = comm;
    t->cfg = *cfg;
    t->test_acc = -1.0;
    t->test_loss = -1.0;
    t->shard_rank = t->shard_size = -1;
    if ((rc = prepare(t, err, errlen)) != STARLING_OK)
        goto fail;
    if ((rc = load_data(t, err, errlen)) != STARLING_OK)
        goto fail;
    if (t->train.synthetic)
        SLOG_INFO("trainer: synthetic data set (%zu train, %zu test samples)", t->train.n,
                  t->test.n);
    widths[nw++] = t->train.d;
    for (size_t i = 0; i < cfg->nhidden; i++)
        widths[nw++] = cfg->hidden[i];
    widths[nw++] = t->train.classes;
    rc = starling__mlp_create(&t->m, widths, nw, cfg->batch, why, sizeof why);
    if (rc != STARLING_OK) {
        starling__why(err, errlen, "model: %s", why);
        goto fail;
    }
    t->n = t->m->nparams;
    starling__mlp_init_params(t->m, cfg->seed);
    t->opt_floats = starling__optim_state_floats(&t->opt, t->n);
    t->opt_state = starling__calloc(t->opt_floats ? t->opt_floats : 1, sizeof(float));
    t->red = starling__alloc_aligned(t->n * sizeof(float));
    t->x = starling__malloc(cfg->batch * t->train.d * sizeof(float));
    t->y = starling__malloc(cfg->batch);
    t->perm = starling__malloc(t->train.n * sizeof(uint32_t));
    rc = STARLING_E_NOMEM;
    if (!t->opt_state || !t->red || !t->x || !t->y || !t->perm)
        goto nomem;
    if ((rc = make_attacker(t, err, errlen)) != STARLING_OK)
        goto fail;
    rc = STARLING_E_NOMEM;
    if (trainer_is_diloco(t)) {
        t->global = starling__alloc_aligned(t->n * sizeof(float));
        t->outer_mom = starling__calloc(t->n, sizeof(float));
        t->delta = starling__alloc_aligned(t->n * sizeof(float));
        if (!t->global || !t->outer_mom || !t->delta)
            goto nomem;
        memcpy(t->global, t->m->params, t->n * sizeof(float));
    }
    for (size_t p = 0; p < t->nfrags; p++) { /* contiguous, sizes differ by at most one */
        t->frags[p].off = p * t->n / t->nfrags;
        t->frags[p].len = (p + 1) * t->n / t->nfrags - t->frags[p].off;
    }
    nts = shared_tensors(t, ts);
    if (cfg->resume[0]) {
        char path[STARLING__TRAIN_PATH_MAX + 32];
        uint64_t step = 0;
        snprintf(path, sizeof path, "%s/%s", cfg->resume, STARLING__CKPT_FILE);
        rc = starling__ckpt_read(path, (uint32_t)cfg->algo, &step, ts, nts, why, sizeof why);
        if (rc != STARLING_OK) {
            starling__why(err, errlen, "resume: %s", why);
            goto fail;
        }
        t->step = step;
        t->phase[0] = 0;
        SLOG_INFO("trainer: resumed from %s at step %llu", path, (unsigned long long)step);
    }
    for (size_t i = 0; i < nts; i++) {
        rc = starling_state_register(comm, ts[i].name, ts[i].data, ts[i].count, ts[i].dtype);
        if (rc != STARLING_OK) {
            starling__why(err, errlen, "trainer: registering shared tensor \"%s\": %s (%s)", ts[i].name,
                    starling_strerror(rc), starling_comm_errmsg(comm));
            for (size_t j = 0; j < i; j++)
                starling_state_unregister(comm, ts[j].name);
            goto fail;
        }
    }
    starling_state_set_step(comm, t->step);
    *out = t;
    return STARLING_OK;
nomem:
    starling__why(err, errlen, "trainer: out of memory");
fail:
    t->comm = NULL; /* nothing registered */
    starling_trainer_destroy(t);
    return rc;
}

STARLING_API void starling_trainer_destroy(starling_trainer *t)
{
    if (!t)
        return;
    if (t->comm) {
        starling__ckpt_tensor ts[4];
        size_t nts = shared_tensors(t, ts);
        for (size_t i = 0; i < nts; i++)
            starling_state_unregister(t->comm, ts[i].name);
    }
    for (size_t p = 0; p < t->nfrags; p++) {
        starling_request_free(t->frags[p].req);
        starling_callopts_destroy(t->frags[p].opts);
    }
    starling__free(t->frags);
    starling_callopts_destroy(t->opts_sync);
    starling_callopts_destroy(t->opts_count);
    starling__mlp_destroy(t->m);
    starling__dataset_free(&t->train);
    starling__dataset_free(&t->test);
    starling__shard_free(&t->shard);
    starling__free(t->global);
    starling__free(t->outer_mom);
    starling__free(t->delta);
    starling__free(t->opt_state);
    starling__free(t->red);
    starling__free(t->x);
    starling__free(t->y);
    starling__free(t->perm);
    starling__attacker_free(&t->byz);
    starling_aggregator_destroy(t->agg);
    starling__free(t);
}

/* ---------------------------------------------------------------- membership */

/* A state sync without a topology update: a member's first step (it became a member
 * just before, at the others' sync point) or after one. */
static int sync_state_only(starling_trainer *t)
{
    int changed = 0, rc = starling_sync_state(t->comm, &changed);
    if (rc == STARLING_OK) {
        t->step = starling_state_step(t->comm);
        if (changed)
            SLOG_INFO("trainer: rank %d received the shared state (step %llu)",
                      starling_comm_rank(t->comm), (unsigned long long)t->step);
    }
    return rc;
}

/* starling_update_topology (retried while a member of the forming epoch dies), then
 * starling_sync_state; the pair again if the sync itself loses a member. */
/* starling_update_topology, retried while a member of the forming epoch dies, until
 * RECOVER_MS have passed. */
static int update_topology_retrying(starling_trainer *t, int64_t deadline_ms)
{
    int rc;
    do
        rc = starling_update_topology(t->comm);
    while (rc == STARLING_E_PEER_LOST && starling__now_ms() < deadline_ms);
    return rc == STARLING_E_PEER_LOST ? STARLING_E_TIMEOUT : rc;
}

int starling__trainer_topology_and_sync(starling_trainer *t)
{
    int64_t deadline = starling__now_ms() + RECOVER_MS;
    int rc = STARLING_E_PEER_LOST;
    while (starling__now_ms() < deadline) {
        uint64_t before = starling_comm_epoch(t->comm);
        if ((rc = update_topology_retrying(t, deadline)) != STARLING_OK)
            return rc;
        if (starling_comm_epoch(t->comm) != before)
            SLOG_INFO("trainer: epoch %llu, %d members, rank %d",
                      (unsigned long long)starling_comm_epoch(t->comm), starling_comm_size(t->comm),
                      starling_comm_rank(t->comm));
        rc = sync_state_only(t);
        if (!trainer_is_fault(rc))
            return rc;
    }
    /* Members kept failing for RECOVER_MS: the run cannot settle. */
    return STARLING_E_TIMEOUT;
}

int starling__trainer_recover(starling_trainer *t, int rc_fault)
{
    t->recoveries++;
    SLOG_INFO("trainer: collective failed at step %llu (%s: %s); updating the topology",
              (unsigned long long)t->step, starling_strerror(rc_fault),
              starling_comm_errmsg(t->comm));
    return starling__trainer_topology_and_sync(t);
}

/* ---------------------------------------------------------------- checkpoints, eval */

STARLING_API int starling_trainer_checkpoint(starling_trainer *t, const char *dir)
{
    starling__ckpt_tensor ts[4];
    size_t nts;
    char why[512];
    int rc;
    if (!t || !dir || !*dir)
        return STARLING_E_INVALID;
    nts = shared_tensors(t, ts);
    rc = starling__ckpt_write(dir, (uint32_t)t->cfg.algo, starling_state_step(t->comm), ts, nts,
                              why, sizeof why);
    if (rc != STARLING_OK)
        SLOG_ERROR("trainer: %s", why);
    return rc;
}

void starling__trainer_maybe_checkpoint(starling_trainer *t, uint64_t prev_step)
{
    uint64_t k = t->cfg.checkpoint_every;
    if (!k || !t->cfg.checkpoint_dir[0] || starling_comm_rank(t->comm) != 0)
        return;
    if (prev_step / k == t->step / k)
        return;
    /* A failed write is logged; training goes on with the previous checkpoint on disk. */
    starling_trainer_checkpoint(t, t->cfg.checkpoint_dir);
}

STARLING_API int starling_trainer_evaluate(starling_trainer *t, double *accuracy, double *loss)
{
    double acc = 0.0, l = 0.0;
    float *own;
    int rc;
    if (!t)
        return STARLING_E_INVALID;
    own = t->m->params;
    if (trainer_is_diloco(t))
        t->m->params = t->global; /* forward only reads params */
    rc = starling__mlp_evaluate(t->m, &t->test, (size_t)t->cfg.eval_limit, t->x, t->y, &acc, &l);
    t->m->params = own;
    if (rc != STARLING_OK)
        return rc;
    t->test_acc = acc;
    t->test_loss = l;
    if (accuracy)
        *accuracy = acc;
    if (loss)
        *loss = l;
    return STARLING_OK;
}

/* ---------------------------------------------------------------- Byzantine members */

/* What this member sends in place of its honest contribution `g` (n floats: the ddp
 * gradient or the diloco pseudo-gradient) at the shared step t->step: g itself for an
 * honest member, else what its attack makes of it (train/attack.h). */
const float *starling__trainer_contribution(starling_trainer *t, const float *g)
{
    return starling__attack_contribution(&t->byz, g, 0, t->n, t->step,
                                         starling_comm_rank(t->comm));
}

/* After a sync: the ALIE attacker updates its spread estimate from its honest g and the
 * aggregate `red` all members received. */
void starling__trainer_contribution_learn(starling_trainer *t, const float *g)
{
    starling__attack_learn(&t->byz, g, t->red, 0, t->n);
}

/* The synchronising collective: the average, or with an aggregator the robust all-reduce
 * (same tag and codec). STARLING_E_CORRUPT from it (more than f contributions held NaN
 * or Inf) is the same on every member and leaves the epoch intact. */
int starling__trainer_sync_reduce(starling_trainer *t, const float *send)
{
    if (t->agg)
        return starling_robust_allreduce(t->comm, send, t->red, t->n, t->agg, t->cfg.byz_f,
                                         t->opts_sync);
    return starling_allreduce(t->comm, send, t->red, t->n, STARLING_F32, STARLING_AVG,
                              t->opts_sync);
}

/* ---------------------------------------------------------------- ddp */

/* A straggler (the `slow` key): the step's mini-batch and backward pass, begun at t0_ns,
 * take `slow` times as long, the rest spent asleep (the engine thread goes on). */
static void throttle(const starling_trainer *t, int64_t t0_ns)
{
    if (t->cfg.slow > 1.0)
        starling__sleep_ns((int64_t)((t->cfg.slow - 1.0) * (double)(starling__now_ns() - t0_ns)));
}

/* A member's first step: receive the run's state (a newcomer), recovering if a member
 * dies meanwhile. */
int starling__trainer_first_sync(starling_trainer *t)
{
    int rc = sync_state_only(t);
    if (trainer_is_fault(rc))
        rc = starling__trainer_recover(t, rc);
    if (rc == STARLING_OK)
        t->started = 1;
    return rc;
}

static int step_ddp(starling_trainer *t)
{
    int rc;
    float loss = 0.0f;
    if (!t->started) {
        if ((rc = starling__trainer_first_sync(t)) != STARLING_OK)
            return rc;
    } else if (t->step % t->cfg.sync_every == 0) {
        if ((rc = starling__trainer_topology_and_sync(t)) != STARLING_OK)
            return rc;
    }
    /* The whole step is the unit of retry: after a recovery the batch is recomputed for the
     * new (rank, size), so every member of the new epoch, newcomers included, does the same
     * step. */
    for (;;) {
        int64_t t0 = starling__now_ns();
        rc = fill_batch(t, t->step, starling_comm_rank(t->comm), starling_comm_size(t->comm),
                        t->cfg.batch);
        if (rc == STARLING_OK)
            rc = starling__mlp_forward_backward(t->m, t->x, t->y, t->cfg.batch, &loss);
        if (rc != STARLING_OK)
            return rc;
        throttle(t, t0);
        t->local_steps++;
        rc = starling__trainer_sync_reduce(t, starling__trainer_contribution(t, t->m->grads));
        if (rc == STARLING_OK || (rc == STARLING_E_CORRUPT && t->agg))
            break;
        if (!trainer_is_fault(rc) || (rc = starling__trainer_recover(t, rc)) != STARLING_OK)
            return rc;
    }
    t->loss = loss;
    if (rc == STARLING_E_CORRUPT) {
        SLOG_WARN("trainer: step %llu skipped: %s", (unsigned long long)t->step,
                  starling_comm_errmsg(t->comm));
        goto advance;
    }
    starling__trainer_contribution_learn(t, t->m->grads);
    if (t->cfg.clip > 0.0) {
        double norm = starling__clip_grad_norm(t->red, t->n, t->cfg.clip);
        if (!isfinite(norm)) {
            SLOG_WARN("trainer: non-finite gradient norm at step %llu, step skipped",
                      (unsigned long long)t->step);
            goto advance;
        }
    }
    t->opt.step = t->step; /* AdamW bias correction follows the shared step counter */
    rc = starling__optim_step(&t->opt, t->m->params, t->red, t->opt_state, t->n,
                              starling__lr_at(&t->sched, t->step));
    if (rc != STARLING_OK)
        return rc;
advance:
    t->step++;
    starling_state_set_step(t->comm, t->step);
    t->synced = 1;
    starling__trainer_maybe_checkpoint(t, t->step - 1);
    return STARLING_OK;
}

/* One step of the member's own optimizer on its working copy (diloco and streaming): a
 * mini-batch, forward and backward, clipping, the update. The caller advances t->step. */
int starling__trainer_inner_step(starling_trainer *t)
{
    float loss;
    int64_t t0 = starling__now_ns();
    int rc = fill_batch(t, t->step, starling_comm_rank(t->comm), starling_comm_size(t->comm),
                        t->cfg.batch);
    if (rc == STARLING_OK)
        rc = starling__mlp_forward_backward(t->m, t->x, t->y, t->cfg.batch, &loss);
    if (rc != STARLING_OK)
        return rc;
    throttle(t, t0);
    t->local_steps++;
    t->loss = loss;
    if (t->cfg.clip > 0.0 && !isfinite(starling__clip_grad_norm(t->m->grads, t->n, t->cfg.clip))) {
        SLOG_WARN("trainer: non-finite gradient norm at step %llu, inner step skipped",
                  (unsigned long long)t->step);
        return STARLING_OK;
    }
    return starling__optim_step(&t->opt, t->m->params, t->m->grads, t->opt_state, t->n,
                                starling__lr_at(&t->sched, t->step));
}

/* ---------------------------------------------------------------- step, stats */

STARLING_API int starling_trainer_step(starling_trainer *t, int *done)
{
    int rc;
    if (!t)
        return STARLING_E_INVALID;
    if (done)
        *done = 0;
    if (t->step >= t->cfg.steps) {
        if (done)
            *done = 1;
        return STARLING_OK;
    }
    if (starling_comm_epoch(t->comm) == 0) {
        /* Created before joining: join now, at the members' next synchronisation point. */
        if ((rc = update_topology_retrying(t, starling__now_ms() + RECOVER_MS)) != STARLING_OK)
            return rc;
    }
    t->synced = 0;
    if (t->cfg.algo == STARLING__ALGO_STREAMING)
        rc = starling__trainer_step_streaming(t);
    else
        rc = trainer_is_diloco(t) ? starling__trainer_step_diloco(t) : step_ddp(t);
    if (rc != STARLING_OK) {
        SLOG_ERROR("trainer: step %llu failed: %s (%s)", (unsigned long long)t->step,
                   starling_strerror(rc), starling_comm_errmsg(t->comm));
        return rc;
    }
    if (t->cfg.eval_every && (t->step % t->cfg.eval_every == 0 || t->step >= t->cfg.steps))
        if ((rc = starling_trainer_evaluate(t, NULL, NULL)) != STARLING_OK)
            return rc;
    if (done)
        *done = t->step >= t->cfg.steps;
    return STARLING_OK;
}

STARLING_API int starling_trainer_stats(const starling_trainer *t, starling_train_stats *out,
                                        size_t size)
{
    starling_train_stats s;
    if (!t || !out || size == 0)
        return STARLING_E_INVALID;
    memset(&s, 0, sizeof s);
    s.step = t->step;
    s.loss = t->loss;
    s.test_accuracy = t->test_acc;
    s.test_loss = t->test_loss;
    s.bytes_sent = starling_comm_bytes_sent(t->comm);
    s.epoch = starling_comm_epoch(t->comm);
    s.peers = starling_comm_size(t->comm);
    s.recoveries = t->recoveries;
    s.synced = t->synced;
    s.local_steps = t->local_steps;
    s.rounds_cut = t->rounds_cut;
    memcpy(out, &s, size < sizeof s ? size : sizeof s);
    return STARLING_OK;
}
