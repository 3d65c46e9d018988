/* Address syntax: HOST:PORT and [V6]:PORT parsing and formatting. Nothing here touches a
 * socket or the resolver, so the wire decoders (and their fuzzers) can use it alone. */
#ifndef STARLING_PLATFORM_ADDR_H
#define STARLING_PLATFORM_ADDR_H
#include <stddef.h>

#define STARLING_HOST_MAX 64

/* Parses "HOST:PORT" or "[V6]:PORT" (port 0..65535) into host (brackets dropped) and
 * port. HOST: a name (at most 63 bytes of letters, digits, '-', '_', '.'), a dotted quad,
 * or an IPv6 literal in brackets (a zone "%eth0" allowed). Syntax only: nothing is looked
 * up. Returns 0, or STARLING_E_INVALID with nothing written. */
int starling__addr_parse(const char *host_port, char host[STARLING_HOST_MAX], int *port);
/* Whether `host` (no brackets, no port) has the syntax starling__addr_parse accepts. */
int starling__host_valid(const char *host);
/* Whether `host` is a numeric IPv4 or IPv6 address (no zone). */
int starling__host_numeric(const char *host);
/* "HOST:PORT", or "[HOST]:PORT" for an IPv6 literal. */
void starling__addr_format(const char *host, int port, char *buf, size_t n);
/* "0.0.0.0" or "::". */
int starling__host_is_wildcard(const char *host);
#endif
