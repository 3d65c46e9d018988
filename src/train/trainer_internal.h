/* The trainer's state, shared by trainer.c (data, set-up, ddp, recovery, the public
 * calls), diloco.c (DiLoCo rounds) and streaming.c (Streaming DiLoCo's fragments). */
#ifndef STARLING_TRAIN_TRAINER_INTERNAL_H
#define STARLING_TRAIN_TRAINER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "data/dataset.h"
#include "model/mlp.h"
#include "starling.h"
#include "train/attack.h"
#include "train/optim.h"
#include "train/train_config.h"

#define TAG_SYNC 0x5354524e00000001ull  /* gradients (ddp) or pseudo-gradients (diloco) */
#define TAG_COUNT 0x5354524e00000002ull /* contributors of a DiLoCo round after a recovery */
/* Topology updates that keep failing (members dying one after another while the next
 * epoch forms) are retried until this long has passed; each call is itself bounded by the
 * communicator's op timeout, so a recovery returns within RECOVER_MS + one op timeout. */
#define RECOVER_MS 120000

/* Streaming DiLoCo: one fragment of the flat parameter vector and its sync in flight. */
typedef struct stream_frag {
    size_t off, len;         /* floats */
    uint64_t offset_step;    /* issued when step % H == offset_step */
    starling_callopts *opts; /* the codec, tag per fragment (error feedback is per tag) */
    starling_request *req;
    int in_flight;
    int issue_rc; /* an all-reduce refused at issue is reported at its completion */
    uint64_t issue_step;
} stream_frag;

struct starling_trainer {
    starling_comm *comm;
    starling_train_config cfg;
    starling__mlp *m;
    size_t n; /* parameters */
    starling__dataset train, test;

    /* Shared state. ddp: m->params and opt_state. diloco: global and outer_mom (+phase);
     * m->params is then the member's working copy, opt_state its inner optimizer state. */
    float *global;
    float *outer_mom;
    int32_t phase[1]; /* diloco: 1 while a round's pseudo-gradient all-reduce is under way */
    float *opt_state;
    size_t opt_floats;
    float *red; /* reduced gradient / pseudo-gradient */
    float *delta;
    starling__optim opt;
    starling__lr_schedule sched;
    starling_callopts *opts_sync, *opts_count;
    stream_frag *frags;
    size_t nfrags;

    float *x;
    uint8_t *y;

    /* data order: a permutation per data epoch, recomputed when the epoch changes */
    uint32_t *perm;
    size_t perm_n;
    uint64_t perm_epoch;
    int perm_valid;
    starling__shard shard; /* non-IID only */
    int shard_rank, shard_size;

    uint64_t step; /* inner steps done by the run */
    uint64_t last_ckpt_step;
    int started;
    double loss;
    double test_acc, test_loss;
    int recoveries;
    int synced;

    /* Byzantine robustness (docs/training.md, "Byzantine members"). */
    starling_aggregator *agg; /* NULL: the synchronising all-reduce averages */
    starling__attacker byz;   /* kind STARLING__ATTACK_NONE for an honest member */

    /* DiLoCo deadline rounds (diloco.c, docs/training.md "Deadline rounds"). */
    int64_t round_start_ns;
    uint64_t round_steps;             /* inner steps this member did in the current round */
    double round_inner_s;             /* their time, the straggler's sleep included */
    double fastest_round_s;           /* auto: the fastest member's time for H inner steps in the
                                       * last round (equal on every member), 0 before it is known */
    uint64_t local_steps, rounds_cut; /* starling_train_stats */
};

static inline int trainer_is_diloco(const starling_trainer *t)
{
    return t->cfg.algo != STARLING__ALGO_DDP;
}

static inline int trainer_is_fault(int rc)
{
    return rc == STARLING_E_PEER_LOST || rc == STARLING_E_MISMATCH;
}

/* trainer.c, for diloco.c and streaming.c */
/* A topology update and a state sync, retried while members keep failing (RECOVER_MS). */
int starling__trainer_topology_and_sync(starling_trainer *t);
/* After a collective failed with rc_fault (trainer_is_fault): the same, counted. */
int starling__trainer_recover(starling_trainer *t, int rc_fault);
/* A member's first step: the run's state (a newcomer), recovering meanwhile if needed. */
int starling__trainer_first_sync(starling_trainer *t);
/* One step of the member's own optimizer on its working copy; the caller advances step. */
int starling__trainer_inner_step(starling_trainer *t);
void starling__trainer_maybe_checkpoint(starling_trainer *t, uint64_t prev_step);
/* What this member sends for its honest contribution g (n floats), and what an ALIE
 * attacker learns after the sync. */
const float *starling__trainer_contribution(starling_trainer *t, const float *g);
void starling__trainer_contribution_learn(starling_trainer *t, const float *g);
/* The synchronising collective: the average, or the robust all-reduce. */
int starling__trainer_sync_reduce(starling_trainer *t, const float *send);

/* diloco.c, streaming.c: one step of each algorithm (starling_trainer_step). */
int starling__trainer_step_diloco(starling_trainer *t);
int starling__trainer_step_streaming(starling_trainer *t);

#endif
