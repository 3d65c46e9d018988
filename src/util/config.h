/* The configuration object behind starling_config (values copied into handles). */
#ifndef STARLING_UTIL_CONFIG_H
#define STARLING_UTIL_CONFIG_H
#include <stddef.h>

#include "starling.h"

/* How the coordinator orders the ring (starling_config_set_ring_order). */
typedef enum starling__ring_order {
    STARLING__ORDER_JOIN = 0,
    STARLING__ORDER_NAME = 1,
    STARLING__ORDER_MEASURED = 2
} starling__ring_order;

struct starling_config {
    int timeout_ms;
    int op_timeout_ms;
    int streams;
    int min_peers;
    size_t chunk_bytes;
    char listen[80];
    char advertise[64]; /* "": the default (starling_config_set_advertise) */
    char name[64];
    size_t socket_buffer; /* 0: the kernel's autotuning */
    starling__ring_order ring_order;
    size_t probe_bytes;
    int inbound;  /* accepts inbound connections (starling_config_set_inbound) */
    int shm;      /* same-host ring links over shared memory (starling_config_set_shm) */
    int security; /* index into starling__security_names: the wire's STARLING_SEC_* value */
    char standby_of[80]; /* coordinator: "" (active), or the active's HOST:PORT */
};

/* Security modes by wire value (proto/msg.h STARLING_SEC_NONE, _AEAD, _CHACHA). */
extern const char *const starling__security_names[3];

/* The most members an epoch may have: STARLING_MAX_PEERS of proto/msg.h (coord.c checks
 * that the two agree; util cannot include proto). */
#define STARLING__MEMBERS_MAX 8192

#define STARLING__PROBE_MIN (64u << 10)
#define STARLING__PROBE_MAX (256u << 20)

/* Fills `cfg` with the documented defaults. */
void starling__config_defaults(struct starling_config *cfg);
#endif
