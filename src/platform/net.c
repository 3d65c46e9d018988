/* SO_SNDBUFFORCE and SO_RCVBUFFORCE are Linux extensions. */
#define _DEFAULT_SOURCE

#include "platform/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "platform/clock.h"
#include "starling.h"
#include "util/why.h"

static int resolve(const char *host, int port, int passive, struct addrinfo **res, char *why,
                   size_t wl);

int starling__host_resolve_first(const char *host, char out[STARLING_HOST_MAX], char *why,
                                 size_t wl)
{
    struct addrinfo *res;
    int r;
    if (!starling__host_valid(host))
        return starling__refuse(&(starling__why_buf){why, wl},
                                "'%s' is not a host name or address", host);
    if ((r = resolve(host, 0, 0, &res, why, wl)) != STARLING_OK)
        return r;
    r = getnameinfo(res->ai_addr, res->ai_addrlen, out, STARLING_HOST_MAX, NULL, 0,
                    NI_NUMERICHOST);
    freeaddrinfo(res);
    return r == 0 ? STARLING_OK : STARLING_E_OS;
}

/* getaddrinfo for TCP; a name goes through nsswitch (/etc/hosts, then DNS). */
static int resolve(const char *host, int port, int passive, struct addrinfo **res, char *why,
                   size_t wl)
{
    struct addrinfo hints;
    char service[8];
    int r;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
    snprintf(service, sizeof service, "%d", port);
    r = getaddrinfo(host, service, &hints, res);
    if (r == 0)
        return STARLING_OK;
    if (why)
        starling__why(why, wl, "resolve %s: %s", host,
                      r == EAI_SYSTEM ? strerror(errno) : gai_strerror(r));
    return r == EAI_MEMORY ? STARLING_E_NOMEM : r == EAI_AGAIN ? STARLING_E_TIMEOUT
                                                               : STARLING_E_INVALID;
}

static void os_why(char *why, size_t wl, const char *what, const char *host, int port, int e)
{
    char addr[STARLING_HOST_MAX + 8];
    if (!why)
        return;
    starling__addr_format(host, port, addr, sizeof addr);
    starling__why(why, wl, "%s %s: %s", what, addr, strerror(e));
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return STARLING_E_OS;
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    return STARLING_OK;
}

void starling__sock_set_unsent_max(int fd, int bytes)
{
#ifdef TCP_NOTSENT_LOWAT
    setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &bytes, sizeof bytes);
#else
    (void)fd;
    (void)bytes;
#endif
}

static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int starling__tcp_listen(const char *host, int port, int buf_bytes, int *fd_out,
                         int *port_out, char *why, size_t wl)
{
    struct addrinfo *res;
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    int one = 1, zero = 0, fd, r;

    if (!starling__host_valid(host)) {
        if (why)
            starling__why(why, wl, "listen: '%s' is not a host name or address", host);
        return STARLING_E_INVALID;
    }
    if ((r = resolve(host, port, starling__host_is_wildcard(host), &res, why, wl)) != STARLING_OK)
        return r;
    fd = socket(res->ai_family, SOCK_STREAM, 0);
    if (fd < 0) {
        r = errno;
        freeaddrinfo(res);
        os_why(why, wl, "listen on", host, port, r);
        errno = r;
        return STARLING_E_OS;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (res->ai_family == AF_INET6 && strcmp(host, "::") == 0) /* IPv4 too, where allowed */
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    starling__sock_set_buffers(fd, buf_bytes);
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 128) != 0 ||
        set_nonblock(fd) != STARLING_OK || getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        int e = errno;
        freeaddrinfo(res);
        close(fd);
        os_why(why, wl, "listen on", host, port, e);
        errno = e;
        return STARLING_E_OS;
    }
    freeaddrinfo(res);
    *fd_out = fd;
    if (port_out)
        *port_out = sa.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&sa)->sin6_port)
                                             : ntohs(((struct sockaddr_in *)&sa)->sin_port);
    return STARLING_OK;
}

int starling__tcp_accept(int lfd, int *fd_out)
{
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
                errno == ECONNABORTED)
                   ? STARLING_E_TIMEOUT
                   : STARLING_E_OS;
    if (set_nonblock(fd) != STARLING_OK) {
        close(fd);
        return STARLING_E_OS;
    }
    set_nodelay(fd);
    *fd_out = fd;
    return STARLING_OK;
}

/* One connection attempt to one address: STARLING_OK, STARLING_E_TIMEOUT or
 * STARLING_E_OS (errno set). */
static int connect_one(const struct addrinfo *ai, int buf_bytes, int timeout_ms, int *fd_out)
{
    struct pollfd pfd;
    int fd, err = 0, r;
    socklen_t elen = sizeof err;

    fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd < 0)
        return STARLING_E_OS;
    starling__sock_set_buffers(fd, buf_bytes);
    if (set_nonblock(fd) != STARLING_OK)
        goto fail;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (errno != EINPROGRESS)
            goto fail;
        pfd.fd = fd;
        pfd.events = POLLOUT;
        do {
            r = poll(&pfd, 1, timeout_ms);
        } while (r < 0 && errno == EINTR);
        if (r == 0) {
            close(fd);
            return STARLING_E_TIMEOUT;
        }
        if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0)
            goto fail;
        if (err) {
            errno = err;
            goto fail;
        }
    }
    set_nodelay(fd);
    *fd_out = fd;
    return STARLING_OK;
fail:
    r = errno;
    close(fd);
    errno = r;
    return STARLING_E_OS;
}

int starling__tcp_connect(const char *host, int port, int buf_bytes, int timeout_ms,
                          int *fd_out, char *why, size_t wl)
{
    struct addrinfo *res, *ai;
    int64_t deadline = starling__now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    int r, e = 0, left;

    if (!starling__host_valid(host)) {
        if (why)
            starling__why(why, wl, "connect: '%s' is not a host name or address", host);
        return STARLING_E_INVALID;
    }
    if ((r = resolve(host, port, 0, &res, why, wl)) != STARLING_OK)
        return r;
    /* Each address in the resolver's order; a timeout on one leaves the rest of the time
     * to the others (an equal share each), so that a dead first address does not use it all. */
    r = STARLING_E_OS;
    for (ai = res; ai; ai = ai->ai_next) {
        int n = 0;
        for (const struct addrinfo *x = ai; x; x = x->ai_next)
            n++;
        left = starling__ms_until(deadline);
        r = connect_one(ai, buf_bytes, n > 1 ? left / n : left, fd_out);
        if (r == STARLING_OK)
            break;
        e = r == STARLING_E_OS ? errno : ETIMEDOUT;
        if (starling__ms_until(deadline) == 0)
            break;
    }
    freeaddrinfo(res);
    if (r == STARLING_OK)
        return STARLING_OK;
    os_why(why, wl, "connect to", host, port, e);
    errno = e;
    return r;
}

static int sock_host(int fd, int peer, char host[STARLING_HOST_MAX])
{
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&sa;

    if ((peer ? getpeername(fd, (struct sockaddr *)&sa, &len)
              : getsockname(fd, (struct sockaddr *)&sa, &len)) != 0)
        return STARLING_E_OS;
    if (sa.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
        struct in_addr a4;
        memcpy(&a4, &s6->sin6_addr.s6_addr[12], 4);
        return inet_ntop(AF_INET, &a4, host, STARLING_HOST_MAX) ? STARLING_OK : STARLING_E_OS;
    }
    if (getnameinfo((struct sockaddr *)&sa, len, host, STARLING_HOST_MAX, NULL, 0,
                    NI_NUMERICHOST) != 0)
        return STARLING_E_OS;
    return STARLING_OK;
}

int starling__sock_local_host(int fd, char host[STARLING_HOST_MAX])
{
    return sock_host(fd, 0, host);
}

int starling__sock_peer_host(int fd, char host[STARLING_HOST_MAX])
{
    return sock_host(fd, 1, host);
}

static int set_buffer(int fd, int opt, int force_opt, int bytes)
{
    int got = 0;
    socklen_t len = sizeof got;
    if (setsockopt(fd, SOL_SOCKET, force_opt, &bytes, sizeof bytes) != 0)
        setsockopt(fd, SOL_SOCKET, opt, &bytes, sizeof bytes);
    if (getsockopt(fd, SOL_SOCKET, opt, &got, &len) != 0)
        return 0;
    return got;
}

int starling__sock_set_buffers(int fd, int bytes)
{
    int snd, rcv;
    if (bytes <= 0)
        return 0;
    snd = set_buffer(fd, SO_SNDBUF, SO_SNDBUFFORCE, bytes);
    rcv = set_buffer(fd, SO_RCVBUF, SO_RCVBUFFORCE, bytes);
    return snd < rcv ? snd : rcv;
}

void starling__sock_close(int fd)
{
    if (fd >= 0)
        close(fd);
}

ssize_t starling__sock_send(int fd, const void *buf, size_t n)
{
    ssize_t r;
    do {
        r = send(fd, buf, n, MSG_NOSIGNAL);
    } while (r < 0 && errno == EINTR);
    if (r >= 0)
        return r;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return 0;
    return (errno == EPIPE || errno == ECONNRESET) ? STARLING_E_CLOSED : STARLING_E_OS;
}

ssize_t starling__sock_recv(int fd, void *buf, size_t n)
{
    ssize_t r;
    do {
        r = recv(fd, buf, n, 0);
    } while (r < 0 && errno == EINTR);
    if (r > 0)
        return r;
    if (r == 0)
        return n ? STARLING_E_CLOSED : 0;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return 0;
    return errno == ECONNRESET ? STARLING_E_CLOSED : STARLING_E_OS;
}

static int wait_fd(int fd, short events, int64_t deadline_ms)
{
    struct pollfd pfd = {fd, events, 0};
    int r;
    do {
        r = poll(&pfd, 1, starling__ms_until(deadline_ms));
    } while (r < 0 && errno == EINTR);
    if (r == 0)
        return STARLING_E_TIMEOUT;
    return r < 0 ? STARLING_E_OS : STARLING_OK;
}

int starling__sock_send_all(int fd, const void *buf, size_t n, int64_t deadline_ms)
{
    const char *p = buf;
    while (n) {
        ssize_t r = starling__sock_send(fd, p, n);
        if (r < 0)
            return (int)r;
        if (r == 0) {
            int w = wait_fd(fd, POLLOUT, deadline_ms);
            if (w)
                return w;
            continue;
        }
        p += r;
        n -= (size_t)r;
    }
    return STARLING_OK;
}

int starling__sock_recv_all(int fd, void *buf, size_t n, int64_t deadline_ms)
{
    char *p = buf;
    while (n) {
        ssize_t r = starling__sock_recv(fd, p, n);
        if (r < 0)
            return (int)r;
        if (r == 0) {
            int w = wait_fd(fd, POLLIN, deadline_ms);
            if (w)
                return w;
            continue;
        }
        p += r;
        n -= (size_t)r;
    }
    return STARLING_OK;
}
