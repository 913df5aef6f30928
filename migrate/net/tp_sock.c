/*
 * Socket transports: TCP (connect, listen, accept) and socketpair.
 *
 * Sockets are non-blocking; every wait is a poll() bounded by the caller's
 * deadline, so no call can hang past it.  shutdown(2) from another thread
 * wakes a poll on the same socket (it becomes readable at EOF and writable
 * with an error), which is how a session stops streams blocked in I/O.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net_internal.h"

/* Socket buffers asked for (the kernel caps them at net.core.*mem_max). */
#define SOCK_BUF_BYTES (4 << 20)

typedef struct sock_impl {
    int fd;
    atomic_bool reset; /* the peer's host reset the connection */
    char desc[96];
} sock_impl;

typedef struct tcp_listener {
    int fd;
    uint16_t port;
} tcp_listener;

static int sock_send(void *impl, const void *buf, size_t len, uint64_t deadline)
{
    sock_impl *s = impl;
    const uint8_t *p = buf;
    size_t done = 0;

    while (done < len) {
        ssize_t n = send(s->fd, p + done, len - done, MSG_NOSIGNAL);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == ECONNRESET || errno == EPIPE))
            atomic_store(&s->reset, true);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return vmt_error_errno(VMT_EIO, errno, "send failed after %zu of %zu bytes", done,
                                   len);
        struct pollfd pfd = {.fd = s->fd, .events = POLLOUT};
        int pr = poll(&pfd, 1, vmt_net_poll_ms(deadline));
        if (pr < 0 && errno != EINTR)
            return vmt_error_errno(VMT_EIO, errno, "poll");
        if (pr == 0)
            return vmt_error_set(VMT_ETIMEDOUT, "timed out sending (%zu of %zu bytes sent)", done,
                                 len);
    }
    return 0;
}

static int sock_recv(void *impl, void *buf, size_t len, size_t *got, uint64_t deadline)
{
    sock_impl *s = impl;

    *got = 0;
    for (;;) {
        ssize_t n = recv(s->fd, buf, len, 0);
        if (n >= 0) {
            *got = (size_t)n; /* 0: the peer closed */
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno == ECONNRESET || errno == EPIPE) {
            atomic_store(&s->reset, true);
            return vmt_error_set(VMT_EIO, "connection reset by peer");
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return vmt_error_errno(VMT_EIO, errno, "recv");
        struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, vmt_net_poll_ms(deadline));
        if (pr < 0 && errno != EINTR)
            return vmt_error_errno(VMT_EIO, errno, "poll");
        if (pr == 0)
            return vmt_error_set(VMT_ETIMEDOUT, "timed out waiting for data");
    }
}

static bool sock_peer_gone(void *impl)
{
    sock_impl *s = impl;
    return atomic_load(&s->reset);
}

static void sock_shutdown(void *impl)
{
    sock_impl *s = impl;
    shutdown(s->fd, SHUT_RDWR);
}

static void sock_close(void *impl)
{
    sock_impl *s = impl;
    if (!s)
        return;
    if (s->fd >= 0)
        close(s->fd);
    free(s);
}

static void sock_describe(void *impl, char *buf, size_t cap)
{
    sock_impl *s = impl;
    snprintf(buf, cap, "%s", s->desc);
}

static const vmt_transport_ops sock_ops = {
    .name = "socket",
    .send = sock_send,
    .recv = sock_recv,
    .shutdown = sock_shutdown,
    .peer_gone = sock_peer_gone,
    .close = sock_close,
    .describe = sock_describe,
};

int vmt_sock_fd(vmt_transport *t)
{
    if (!t || vmt_transport_get_ops(t) != &sock_ops)
        return -1;
    return ((sock_impl *)vmt_transport_get_impl(t))->fd;
}

/* "tcp 127.0.0.1:4000" / "tcp [::1]:4000" for a socket address. */
static void addr_text(const struct sockaddr *sa, char *buf, size_t cap)
{
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
        snprintf(buf, cap, "tcp %s:%u", host, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
        snprintf(buf, cap, "tcp [%s]:%u", host, port);
    } else {
        snprintf(buf, cap, "socket");
    }
}

static void tune_tcp(int fd)
{
    int one = 1, bytes = SOCK_BUF_BYTES;
    /* Best effort: a kernel refusing a size still gives a working socket. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
    (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
}

/* Wraps a connected non-blocking fd (ownership taken). */
static int sock_wrap(vmt_transport **out, int fd, const char *desc)
{
    sock_impl *s = calloc(1, sizeof(*s));
    if (!s) {
        close(fd);
        return vmt_error_set(VMT_ENOMEM, "transport: out of memory");
    }
    s->fd = fd;
    snprintf(s->desc, sizeof(s->desc), "%s", desc);
    return vmt_transport_new(out, &sock_ops, s);
}

int vmt_transport_socketpair(vmt_transport **a, vmt_transport **b)
{
    int fds[2];

    *a = *b = NULL;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0)
        return vmt_error_errno(VMT_EIO, errno, "socketpair");
    int rc = sock_wrap(a, fds[0], "socketpair end 0");
    if (rc) {
        close(fds[1]);
        return rc;
    }
    rc = sock_wrap(b, fds[1], "socketpair end 1");
    if (rc) {
        vmt_transport_close(*a);
        *a = NULL;
    }
    return rc;
}

/* Resolves host:port; "[::1]" brackets are removed.  NULL host: 127.0.0.1. */
static int resolve(const char *host, uint16_t port, bool passive, struct addrinfo **res)
{
    char name[256], serv[8];
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};

    if (!host)
        host = "127.0.0.1";
    size_t len = strlen(host);
    if (len >= sizeof(name))
        return vmt_error_set(VMT_EINVAL, "host name of %zu bytes is too long", len);
    if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
        memcpy(name, host + 1, len - 2);
        name[len - 2] = '\0';
    } else {
        memcpy(name, host, len + 1);
    }
    snprintf(serv, sizeof(serv), "%u", port);
    hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
    int gai = getaddrinfo(name, serv, &hints, res);
    if (gai != 0)
        return vmt_error_set(VMT_EINVAL, "cannot resolve \"%s\": %s", host, gai_strerror(gai));
    return 0;
}

/* Waits for a non-blocking connect to finish; 0 when connected. */
static int connect_wait(int fd, uint64_t deadline, const char *what)
{
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    int pr;
    do {
        pr = poll(&pfd, 1, vmt_net_poll_ms(deadline));
    } while (pr < 0 && errno == EINTR);
    if (pr == 0)
        return vmt_error_set(VMT_ETIMEDOUT, "connecting to %s timed out", what);
    int err = 0;
    socklen_t elen = sizeof(err);
    if (pr < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0)
        err = errno;
    if (err)
        return vmt_error_errno(VMT_EIO, err, "connecting to %s", what);
    return 0;
}

static int connect_one(const struct addrinfo *ai, uint64_t deadline, int *fd_out)
{
    char what[96];
    addr_text(ai->ai_addr, what, sizeof(what));
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
    if (fd < 0)
        return vmt_error_errno(VMT_EIO, errno, "socket");
    tune_tcp(fd);
    int rc = 0;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (errno == EINPROGRESS)
            rc = connect_wait(fd, deadline, what);
        else
            rc = vmt_error_errno(VMT_EIO, errno, "connecting to %s", what);
    }
    if (rc) {
        close(fd);
        return rc;
    }
    *fd_out = fd;
    return 0;
}

int vmt_tcp_connect(vmt_transport **out, const char *host, uint16_t port, uint32_t timeout_ms)
{
    struct addrinfo *res = NULL;
    uint64_t deadline = vmt_net_deadline(timeout_ms);
    int fd = -1, rc;

    *out = NULL;
    if ((rc = resolve(host, port, false, &res)) != 0)
        return rc;
    rc = vmt_error_set(VMT_EIO, "no address for %s", host ? host : "127.0.0.1");
    for (const struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next)
        rc = connect_one(ai, deadline, &fd);
    freeaddrinfo(res);
    if (fd < 0)
        return rc;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char desc[96] = "tcp ?";
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
        addr_text((struct sockaddr *)&ss, desc, sizeof(desc));
    return sock_wrap(out, fd, desc);
}

static int listen_one(const struct addrinfo *ai, int *fd_out)
{
    int one = 1;
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
    if (fd < 0)
        return vmt_error_errno(VMT_EIO, errno, "socket");
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 64) != 0) {
        char what[96];
        int err = errno;
        addr_text(ai->ai_addr, what, sizeof(what));
        close(fd);
        return vmt_error_errno(VMT_EIO, err, "listening on %s", what);
    }
    *fd_out = fd;
    return 0;
}

static int tcp_accept(void *impl, vmt_transport **out, uint64_t deadline);
static void tcp_listener_close(void *impl);

static const vmt_listener_ops tcp_listener_ops = {
    .scheme = VMT_NET_SCHEME_TCP,
    .accept = tcp_accept,
    .close = tcp_listener_close,
};

int vmt_tcp_listen(vmt_listener **out, const char *host, uint16_t port)
{
    struct addrinfo *res = NULL;
    int fd = -1, rc;

    *out = NULL;
    if ((rc = resolve(host, port, true, &res)) != 0)
        return rc;
    for (const struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next)
        rc = listen_one(ai, &fd);
    freeaddrinfo(res);
    if (fd < 0)
        return rc;
    tcp_listener *l = calloc(1, sizeof(*l));
    if (!l) {
        close(fd);
        return vmt_error_set(VMT_ENOMEM, "listener: out of memory");
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        l->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    l->fd = fd;
    return vmt_listener_new(out, &tcp_listener_ops, l, l->port);
}

static int tcp_accept(void *impl, vmt_transport **out, uint64_t deadline)
{
    tcp_listener *l = impl;
    struct sockaddr_storage ss;

    for (;;) {
        socklen_t sl = sizeof(ss);
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            char desc[96];
            tune_tcp(fd);
            addr_text((struct sockaddr *)&ss, desc, sizeof(desc));
            return sock_wrap(out, fd, desc);
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return vmt_error_errno(VMT_EIO, errno, "accept on port %u", l->port);
        struct pollfd pfd = {.fd = l->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, vmt_net_poll_ms(deadline));
        if (pr < 0 && errno != EINTR)
            return vmt_error_errno(VMT_EIO, errno, "poll");
        if (pr == 0)
            return vmt_error_set(VMT_ETIMEDOUT, "no connection on port %u in time", l->port);
    }
}

static void tcp_listener_close(void *impl)
{
    tcp_listener *l = impl;
    if (!l)
        return;
    close(l->fd);
    free(l);
}
