/* The training configuration behind the public starling_train_config handle, shared by
 * train_config.c (parsing and validation) and trainer.c. */
#ifndef STARLING_TRAIN_TRAIN_CONFIG_H
#define STARLING_TRAIN_TRAIN_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "model/mlp.h"
#include "starling.h"

typedef enum starling__algo {
    STARLING__ALGO_DDP = 0,
    STARLING__ALGO_DILOCO = 1,
    STARLING__ALGO_STREAMING = 2,
} starling__algo;

#define STARLING__TRAIN_PATH_MAX 1024

/* What a Byzantine member does to its contribution (docs/training.md, "Byzantine
 * members"). Order fixed: it is the index into the names in train_config.c. */
typedef enum starling__attack {
    STARLING__ATTACK_NONE = 0,
    STARLING__ATTACK_SIGN_FLIP,
    STARLING__ATTACK_NOISE,
    STARLING__ATTACK_ALIE,
    STARLING__ATTACK_IPM,
    STARLING__ATTACK_LABEL_FLIP,
    STARLING__ATTACK_GARBAGE,
    STARLING__ATTACK_COUNT
} starling__attack;

struct starling_train_config {
    starling__algo algo;
    uint64_t steps;       /* inner steps of the run in total */
    uint64_t inner_steps; /* H */
    uint64_t fragments;   /* P */
    uint64_t tau;
    double alpha;
    char compress[128];
    size_t hidden[STARLING__MLP_MAX_LAYERS - 1];
    size_t nhidden;
    size_t batch;
    int optimizer; /* starling__optim_kind */
    double lr;
    int lr_set;
    uint64_t warmup;
    double weight_decay;
    int wd_set;
    double clip;
    double outer_lr, outer_momentum;
    uint64_t seed;
    double noniid;
    char data[STARLING__TRAIN_PATH_MAX];
    uint64_t eval_every, eval_limit;
    char checkpoint_dir[STARLING__TRAIN_PATH_MAX];
    uint64_t checkpoint_every;
    char resume[STARLING__TRAIN_PATH_MAX];
    uint64_t sync_every;
    char aggregator[128]; /* spec for starling_aggregator_create; "" = plain average */
    int byz_f;            /* the f given to the aggregator */
    int attack;           /* starling__attack */
    double attack_scale;
    int attack_scale_set;
    uint64_t attack_start;
    int attack_start_set;
    /* DiLoCo deadline rounds: a fixed limit in seconds, or (deadline_factor > 0) that
     * factor times the fastest member's time for H inner steps in the last round; both
     * 0: off. */
    double deadline_s, deadline_factor;
    double slow; /* >= 1: each inner step takes this many times its compute (a straggler) */
};

#define STARLING__DEADLINE_FACTOR_DEFAULT 1.25

/* The effective learning rate: lr if set, else 1e-3 (adamw) or 0.05 (sgd). */
double starling__train_config_lr(const starling_train_config *cfg);

/* The attack's scale: attack_scale if set, else the attack's default. */
double starling__train_config_attack_scale(const starling_train_config *cfg);
/* The first step at which the attack is active: attack_start if set, else 0 (garbage:
 * steps / 2). */
uint64_t starling__train_config_attack_start(const starling_train_config *cfg);
const char *starling__attack_name(int attack);

#endif
