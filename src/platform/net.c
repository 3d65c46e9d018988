/* SO_SNDBUFFORCE and SO_RCVBUFFORCE are Linux extensions. */
#define _DEFAULT_SOURCE

#include "platform/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
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

int starling__addr_parse(const char *host_port, char host[STARLING_HOST_MAX], int *port)
{
    const char *colon;
    size_t hlen;
    char *end;
    long p;
    struct in_addr a;
    char tmp[STARLING_HOST_MAX];

    if (!host_port)
        return STARLING_E_INVALID;
    colon = strrchr(host_port, ':');
    if (!colon || colon == host_port)
        return STARLING_E_INVALID;
    hlen = (size_t)(colon - host_port);
    if (hlen >= STARLING_HOST_MAX)
        return STARLING_E_INVALID;
    errno = 0;
    p = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end != '\0' || p < 0 || p > 65535)
        return STARLING_E_INVALID;
    memcpy(tmp, host_port, hlen);
    tmp[hlen] = '\0';
    if (strcmp(tmp, "localhost") == 0)
        strcpy(tmp, "127.0.0.1");
    if (inet_pton(AF_INET, tmp, &a) != 1)
        return STARLING_E_INVALID;
    memcpy(host, tmp, strlen(tmp) + 1);
    *port = (int)p;
    return STARLING_OK;
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return STARLING_E_OS;
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    return STARLING_OK;
}

static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int make_sockaddr(const char *host, int port, struct sockaddr_in *sa)
{
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
        return STARLING_E_INVALID;
    return STARLING_OK;
}

int starling__tcp_listen(const char *host, int port, int buf_bytes, int *fd_out,
                         int *port_out)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int one = 1, fd;

    if (make_sockaddr(host, port, &sa) != STARLING_OK)
        return STARLING_E_INVALID;
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return STARLING_E_OS;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    starling__sock_set_buffers(fd, buf_bytes);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 128) != 0 ||
        set_nonblock(fd) != STARLING_OK || getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return STARLING_E_OS;
    }
    *fd_out = fd;
    if (port_out)
        *port_out = ntohs(sa.sin_port);
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

int starling__tcp_connect(const char *host, int port, int buf_bytes, int timeout_ms,
                          int *fd_out)
{
    struct sockaddr_in sa;
    struct pollfd pfd;
    int fd, err = 0, r;
    socklen_t elen = sizeof err;

    if (make_sockaddr(host, port, &sa) != STARLING_OK)
        return STARLING_E_INVALID;
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return STARLING_E_OS;
    starling__sock_set_buffers(fd, buf_bytes);
    if (set_nonblock(fd) != STARLING_OK)
        goto fail;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
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

int starling__sock_local_host(int fd, char host[STARLING_HOST_MAX])
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    if (getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
        return STARLING_E_OS;
    if (!inet_ntop(AF_INET, &sa.sin_addr, host, STARLING_HOST_MAX))
        return STARLING_E_OS;
    return STARLING_OK;
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
