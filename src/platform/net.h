/* Thin POSIX socket layer: the only place that knows about sockaddr and errno. */
#ifndef STARLING_PLATFORM_NET_H
#define STARLING_PLATFORM_NET_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define STARLING_HOST_MAX 64

/* Parses "HOST:PORT" (IPv4 dotted quad or "localhost"; port 0..65535).
 * Returns 0, or STARLING_E_INVALID with nothing written. */
int starling__addr_parse(const char *host_port, char host[STARLING_HOST_MAX], int *port);

/* Non-blocking listening socket with SO_REUSEADDR. *port_out gets the bound port.
 * buf_bytes > 0: the socket buffers of every accepted connection (see below). */
int starling__tcp_listen(const char *host, int port, int buf_bytes, int *fd_out,
                         int *port_out);
/* Accepts one connection (non-blocking, TCP_NODELAY); STARLING_E_TIMEOUT if none ready. */
int starling__tcp_accept(int lfd, int *fd_out);
/* Connects with a deadline; the returned socket is non-blocking with TCP_NODELAY.
 * buf_bytes > 0: its socket buffers, set before the connection is made (so that TCP's
 * window scale can use them). */
int starling__tcp_connect(const char *host, int port, int buf_bytes, int timeout_ms,
                          int *fd_out);
/* Local address of a connected socket as dotted quad. */
int starling__sock_local_host(int fd, char host[STARLING_HOST_MAX]);
/* Sets both socket buffers to `bytes` (0 leaves the kernel's autotuning alone): beyond
 * net.core.[rw]mem_max with SO_*BUFFORCE when the process may, else as far as the
 * kernel allows. Returns the smaller buffer granted, as the kernel reports it (Linux
 * counts its bookkeeping too: twice the payload room asked for), or 0 if not set. */
int starling__sock_set_buffers(int fd, int bytes);
void starling__sock_close(int fd);

/* Non-blocking I/O: returns bytes moved (>0), 0 if it would block, or a negative
 * starling code (STARLING_E_CLOSED on orderly EOF, STARLING_E_OS on error). */
ssize_t starling__sock_send(int fd, const void *buf, size_t n);
ssize_t starling__sock_recv(int fd, void *buf, size_t n);

/* Blocking helpers with a deadline (used by handshakes outside the event loops). */
int starling__sock_send_all(int fd, const void *buf, size_t n, int64_t deadline_ms);
int starling__sock_recv_all(int fd, void *buf, size_t n, int64_t deadline_ms);
#endif
