#include "util/config.h"

#include <stdio.h>
#include <string.h>

#include "platform/net.h"
#include "util/alloc.h"

void starling__config_defaults(struct starling_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->timeout_ms = 3000;
    cfg->op_timeout_ms = 60000;
    cfg->streams = 1;
    cfg->min_peers = 1;
    cfg->chunk_bytes = 1u << 20;
    cfg->probe_bytes = 2u << 20;
    cfg->security = 1; /* "aead" */
    cfg->inbound = 1;
    cfg->shm = 1;
    strcpy(cfg->listen, "127.0.0.1:0");
}

const char *const starling__security_names[3] = {"none", "aead", "chacha20"};

int starling_config_create(starling_config **out)
{
    starling_config *cfg;
    if (!out)
        return STARLING_E_INVALID;
    *out = NULL;
    cfg = starling__malloc(sizeof *cfg);
    if (!cfg)
        return STARLING_E_NOMEM;
    starling__config_defaults(cfg);
    *out = cfg;
    return STARLING_OK;
}

void starling_config_destroy(starling_config *cfg) { starling__free(cfg); }

int starling_config_set_timeout_ms(starling_config *cfg, int timeout_ms)
{
    if (!cfg || timeout_ms < 100 || timeout_ms > 600000)
        return STARLING_E_INVALID;
    cfg->timeout_ms = timeout_ms;
    return STARLING_OK;
}

int starling_config_set_op_timeout_ms(starling_config *cfg, int op_timeout_ms)
{
    if (!cfg || op_timeout_ms < 100 || op_timeout_ms > 86400000)
        return STARLING_E_INVALID;
    cfg->op_timeout_ms = op_timeout_ms;
    return STARLING_OK;
}

int starling_config_set_streams(starling_config *cfg, int streams)
{
    if (!cfg || streams < 1 || streams > 16)
        return STARLING_E_INVALID;
    cfg->streams = streams;
    return STARLING_OK;
}

int starling_config_set_listen(starling_config *cfg, const char *host_port)
{
    char host[STARLING_HOST_MAX];
    int port;
    if (!cfg || !host_port || strlen(host_port) >= sizeof cfg->listen ||
        starling__addr_parse(host_port, host, &port) != STARLING_OK)
        return STARLING_E_INVALID;
    strcpy(cfg->listen, host_port);
    return STARLING_OK;
}

int starling_config_set_advertise(starling_config *cfg, const char *host)
{
    if (!cfg)
        return STARLING_E_INVALID;
    if (!host || !host[0]) {
        cfg->advertise[0] = '\0';
        return STARLING_OK;
    }
    if (!starling__host_valid(host) || starling__host_is_wildcard(host))
        return STARLING_E_INVALID;
    snprintf(cfg->advertise, sizeof cfg->advertise, "%s", host);
    return STARLING_OK;
}

int starling_config_set_standby_of(starling_config *cfg, const char *host_port)
{
    char host[STARLING_HOST_MAX];
    int port;
    if (!cfg)
        return STARLING_E_INVALID;
    if (!host_port || !host_port[0]) {
        cfg->standby_of[0] = '\0';
        return STARLING_OK;
    }
    if (strlen(host_port) >= sizeof cfg->standby_of ||
        starling__addr_parse(host_port, host, &port) != STARLING_OK || port == 0 ||
        starling__host_is_wildcard(host))
        return STARLING_E_INVALID;
    strcpy(cfg->standby_of, host_port);
    return STARLING_OK;
}

int starling_config_set_min_peers(starling_config *cfg, int min_peers)
{
    if (!cfg || min_peers < 1 || min_peers > STARLING__MEMBERS_MAX)
        return STARLING_E_INVALID;
    cfg->min_peers = min_peers;
    return STARLING_OK;
}

int starling_config_set_chunk_bytes(starling_config *cfg, size_t chunk_bytes)
{
    if (!cfg || chunk_bytes < 4096 || chunk_bytes > (64u << 20))
        return STARLING_E_INVALID;
    cfg->chunk_bytes = chunk_bytes;
    return STARLING_OK;
}

int starling_config_set_name(starling_config *cfg, const char *name)
{
    size_t n;
    if (!cfg || !name)
        return STARLING_E_INVALID;
    n = strlen(name);
    if (n >= sizeof cfg->name)
        return STARLING_E_INVALID;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
            return STARLING_E_INVALID;
    memcpy(cfg->name, name, n + 1);
    return STARLING_OK;
}

int starling_config_set_socket_buffer(starling_config *cfg, size_t bytes)
{
    if (!cfg || (bytes != 0 && (bytes < 4096 || bytes > (1u << 30))))
        return STARLING_E_INVALID;
    cfg->socket_buffer = bytes;
    return STARLING_OK;
}

int starling_config_set_ring_order(starling_config *cfg, const char *order)
{
    static const char *const names[] = {"join", "name", "measured"};
    if (!cfg || !order)
        return STARLING_E_INVALID;
    for (int i = 0; i < 3; i++)
        if (strcmp(order, names[i]) == 0) {
            cfg->ring_order = (starling__ring_order)i;
            return STARLING_OK;
        }
    return STARLING_E_INVALID;
}

int starling_config_set_security(starling_config *cfg, const char *mode)
{
    if (!cfg || !mode)
        return STARLING_E_INVALID;
    for (int i = 0; i < 3; i++)
        if (strcmp(mode, starling__security_names[i]) == 0) {
            cfg->security = i;
            return STARLING_OK;
        }
    return STARLING_E_INVALID;
}

int starling_config_set_inbound(starling_config *cfg, int inbound)
{
    if (!cfg || (inbound != 0 && inbound != 1))
        return STARLING_E_INVALID;
    cfg->inbound = inbound;
    return STARLING_OK;
}

int starling_config_set_shm(starling_config *cfg, int shm)
{
    if (!cfg || (shm != 0 && shm != 1))
        return STARLING_E_INVALID;
    cfg->shm = shm;
    return STARLING_OK;
}

int starling_config_set_probe_bytes(starling_config *cfg, size_t bytes)
{
    if (!cfg || bytes < STARLING__PROBE_MIN || bytes > STARLING__PROBE_MAX)
        return STARLING_E_INVALID;
    cfg->probe_bytes = bytes;
    return STARLING_OK;
}
