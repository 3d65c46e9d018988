#include "platform/addr.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "starling.h"

/* A host as the API takes it: a name (letters, digits, '-', '_', '.'), a dotted quad, or
 * an IPv6 literal (hex digits, ':', '.', and a zone after '%'). Syntax only: whether it
 * resolves is known when it is used. */
int starling__host_valid(const char *host)
{
    size_t n = strlen(host);
    int colons = 0, zone = 0;

    if (n == 0 || n >= STARLING_HOST_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)host[i];
        if (ch == ':')
            colons++;
        else if (ch == '%' && !zone)
            zone = 1;
        else if (!(isalnum(ch) || ch == '-' || ch == '_' || ch == '.'))
            return 0;
    }
    if (zone && !colons)
        return 0;
    if (colons) { /* an IPv6 literal must be one */
        struct in6_addr a;
        char tmp[STARLING_HOST_MAX];
        memcpy(tmp, host, n + 1);
        tmp[strcspn(tmp, "%")] = '\0';
        return inet_pton(AF_INET6, tmp, &a) == 1;
    }
    return host[0] != '-' && host[0] != '.';
}

int starling__addr_parse(const char *host_port, char host[STARLING_HOST_MAX], int *port)
{
    const char *colon, *h;
    size_t hlen;
    char *end;
    long p;
    char tmp[STARLING_HOST_MAX];

    if (!host_port)
        return STARLING_E_INVALID;
    colon = strrchr(host_port, ':');
    if (!colon || colon == host_port)
        return STARLING_E_INVALID;
    h = host_port;
    hlen = (size_t)(colon - host_port);
    if (h[0] == '[') { /* "[V6]:PORT" */
        if (hlen < 3 || h[hlen - 1] != ']')
            return STARLING_E_INVALID;
        h++;
        hlen -= 2;
    } else if (memchr(h, ':', hlen) || memchr(h, ']', hlen)) {
        return STARLING_E_INVALID; /* an unbracketed IPv6 literal: its colons are ambiguous */
    }
    if (hlen >= STARLING_HOST_MAX)
        return STARLING_E_INVALID;
    errno = 0;
    p = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end != '\0' || !isdigit((unsigned char)colon[1]) ||
        p < 0 || p > 65535)
        return STARLING_E_INVALID;
    memcpy(tmp, h, hlen);
    tmp[hlen] = '\0';
    if (!starling__host_valid(tmp) || (host_port[0] == '[') != (strchr(tmp, ':') != NULL))
        return STARLING_E_INVALID;
    memcpy(host, tmp, hlen + 1);
    *port = (int)p;
    return STARLING_OK;
}

int starling__host_numeric(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    return inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
}

void starling__addr_format(const char *host, int port, char *buf, size_t n)
{
    snprintf(buf, n, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
}

int starling__host_is_wildcard(const char *host)
{
    return strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0;
}
