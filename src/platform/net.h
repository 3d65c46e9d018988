/* Thin POSIX socket layer: the only place that knows about sockaddr and errno. */
#ifndef STARLING_PLATFORM_NET_H
#define STARLING_PLATFORM_NET_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "platform/addr.h"

/* The first address `host` resolves to, as numeric text (blocks in the resolver). */
int starling__host_resolve_first(const char *host, char out[STARLING_HOST_MAX], char *why,
                                 size_t wl);
/* Every function below that takes `why` (may be NULL) writes one line there on failure:
 * "connect to 127.0.0.1:7002: Connection refused", "resolve vm: Name or service not
 * known". Names are resolved with getaddrinfo (/etc/hosts, then DNS as nsswitch.conf
 * says; a DNS lookup may take the resolver's own timeout, resolv.conf). */

/* Non-blocking listening socket with SO_REUSEADDR on the first address `host` resolves
 * to ("::" also takes IPv4 where the system allows). *port_out gets the bound port.
 * buf_bytes > 0: the socket buffers of every accepted connection (see below). Errors:
 * STARLING_E_INVALID (bad or unknown host), STARLING_E_OS (errno set). */
int starling__tcp_listen(const char *host, int port, int buf_bytes, int *fd_out,
                         int *port_out, char *why, size_t wl);
/* Accepts one connection (non-blocking, TCP_NODELAY); STARLING_E_TIMEOUT if none ready. */
int starling__tcp_accept(int lfd, int *fd_out);
/* Connects with a deadline to each address `host` resolves to in turn, until one
 * answers; the returned socket is non-blocking with TCP_NODELAY. buf_bytes > 0: its
 * socket buffers, set before the connection is made (so that TCP's window scale can use
 * them). Errors: STARLING_E_INVALID (bad or unknown host), STARLING_E_TIMEOUT,
 * STARLING_E_OS (refused, unreachable...; errno set). */
int starling__tcp_connect(const char *host, int port, int buf_bytes, int timeout_ms,
                          int *fd_out, char *why, size_t wl);
/* Local address of a socket as numeric text (a v4-mapped IPv6 address as the dotted quad). */
int starling__sock_local_host(int fd, char host[STARLING_HOST_MAX]);
/* The same for the other end of a connected socket. */
int starling__sock_peer_host(int fd, char host[STARLING_HOST_MAX]);
/* Sets both socket buffers to `bytes` (0 leaves the kernel's autotuning alone): beyond
 * net.core.[rw]mem_max with SO_*BUFFORCE when the process may, else as far as the
 * kernel allows. Returns the smaller buffer granted, as the kernel reports it (Linux
 * counts its bookkeeping too: twice the payload room asked for), or 0 if not set. */
int starling__sock_set_buffers(int fd, int bytes);
/* Caps the bytes a TCP socket holds not yet sent (TCP_NOTSENT_LOWAT): it takes more, and
 * polls writable, only below that. Best effort (ignored where unsupported). */
void starling__sock_set_unsent_max(int fd, int bytes);
void starling__sock_close(int fd);

/* Non-blocking I/O: returns bytes moved (>0), 0 if it would block, or a negative
 * starling code (STARLING_E_CLOSED on orderly EOF, STARLING_E_OS on error). */
ssize_t starling__sock_send(int fd, const void *buf, size_t n);
ssize_t starling__sock_recv(int fd, void *buf, size_t n);

/* Blocking helpers with a deadline (used by handshakes outside the event loops). */
int starling__sock_send_all(int fd, const void *buf, size_t n, int64_t deadline_ms);
int starling__sock_recv_all(int fd, void *buf, size_t n, int64_t deadline_ms);
#endif
