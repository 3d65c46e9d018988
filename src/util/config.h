/* The configuration object behind starling_config (values copied into handles). */
#ifndef STARLING_UTIL_CONFIG_H
#define STARLING_UTIL_CONFIG_H
#include <stddef.h>

#include "starling.h"

struct starling_config {
    int timeout_ms;
    int op_timeout_ms;
    int streams;
    int min_peers;
    size_t chunk_bytes;
    char listen[80];
    char name[64];
};

/* Fills `cfg` with the documented defaults. */
void starling__config_defaults(struct starling_config *cfg);
#endif
