/*
 * Socket transports (tp_sock.c) beyond the contract: IPv4 and IPv6 literals
 * (with and without brackets) and names, ephemeral ports, refused and
 * unresolvable peers, accept timeouts, a port in use, and the socket
 * options every TCP transport gets (TCP_NODELAY, large buffers).
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>

#include "net_fixture.h"
#include "net_internal.h"

static void exchange(vmt_transport *a, vmt_transport *b)
{
    uint8_t in[5];
    CU_ASSERT_EQUAL(vmt_transport_send(a, "hello", 5), 0);
    CU_ASSERT_EQUAL(vmt_transport_recv(b, in, 5), 0);
    CU_ASSERT(memcmp(in, "hello", 5) == 0);
}

typedef struct acc {
    vmt_listener *l;
    vmt_transport *t;
} acc;

static int do_accept(void *arg)
{
    acc *a = arg;
    return vmt_listener_accept(a->l, &a->t, NET_TIMEOUT_MS);
}

/* Listens on `lhost`, connects to `chost`; checks the peer text. */
static void connect_via(const char *lhost, const char *chost, const char *peer_prefix)
{
    acc a = {0};
    vmt_transport *c = NULL;
    net_thread th;
    int rc = vmt_tcp_listen(&a.l, lhost, 0);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT(vmt_listener_port(a.l) != 0);
    net_spawn(&th, do_accept, &a);
    CU_ASSERT_EQUAL(vmt_tcp_connect(&c, chost, vmt_listener_port(a.l), NET_TIMEOUT_MS), 0);
    CU_ASSERT_EQUAL(net_join(&th), 0);
    if (c && a.t) {
        exchange(c, a.t);
        exchange(a.t, c);
        CU_ASSERT(strncmp(vmt_transport_peer(c), peer_prefix, strlen(peer_prefix)) == 0);
    }
    vmt_transport_close(c);
    vmt_transport_close(a.t);
    vmt_listener_close(a.l);
}

static void test_ipv4_literal(void)
{
    connect_via("127.0.0.1", "127.0.0.1", "tcp 127.0.0.1:");
    connect_via(NULL, NULL, "tcp 127.0.0.1:");
}

static void test_ipv6_literals(void)
{
    connect_via("::1", "::1", "tcp [::1]:");
    connect_via("[::1]", "[::1]", "tcp [::1]:");
}

static void test_host_name(void)
{
    connect_via("127.0.0.1", "localhost", "tcp 127.0.0.1:");
}

static void test_connection_refused(void)
{
    vmt_listener *l;
    vmt_transport *c = NULL;
    CU_ASSERT_EQUAL_FATAL(vmt_tcp_listen(&l, "127.0.0.1", 0), 0);
    uint16_t port = vmt_listener_port(l);
    vmt_listener_close(l); /* nobody listens there now */
    uint64_t t0 = vmt_now_ns();
    CU_ASSERT_EQUAL(vmt_tcp_connect(&c, "127.0.0.1", port, NET_TIMEOUT_MS), VMT_EIO);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "refused"));
    CU_ASSERT(vmt_now_ns() - t0 < 2000000000ull);
    CU_ASSERT_PTR_NULL(c);
}

static void test_bad_host(void)
{
    vmt_transport *c = NULL;
    vmt_listener *l = NULL;
    CU_ASSERT_EQUAL(vmt_tcp_connect(&c, "no-such-host.invalid", 1, 1000), VMT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "no-such-host.invalid"));
    CU_ASSERT_EQUAL(vmt_tcp_listen(&l, "300.1.2.3", 0), VMT_EINVAL);
    CU_ASSERT_PTR_NULL(l);
}

static void test_accept_timeout(void)
{
    vmt_listener *l;
    vmt_transport *t = NULL;
    CU_ASSERT_EQUAL_FATAL(vmt_tcp_listen(&l, "127.0.0.1", 0), 0);
    uint64_t t0 = vmt_now_ns();
    CU_ASSERT_EQUAL(vmt_listener_accept(l, &t, 100), VMT_ETIMEDOUT);
    uint64_t ms = (vmt_now_ns() - t0) / 1000000;
    CU_ASSERT(ms >= 90 && ms < 3000);
    vmt_listener_close(l);
}

static void test_port_in_use(void)
{
    vmt_listener *l, *l2 = NULL;
    CU_ASSERT_EQUAL_FATAL(vmt_tcp_listen(&l, "127.0.0.1", 0), 0);
    CU_ASSERT_EQUAL(vmt_tcp_listen(&l2, "127.0.0.1", vmt_listener_port(l)), VMT_EIO);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "listening on"));
    vmt_listener_close(l);
    vmt_listener_close(l2);
}

static void test_socket_options(void)
{
    vmt_transport *a, *b;
    CU_ASSERT_EQUAL_FATAL(net_pair_tcp(&a, &b), 0);
    vmt_transport *ends[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        int fd = vmt_sock_fd(ends[i]), v = 0;
        socklen_t len = sizeof(v);
        CU_ASSERT_FATAL(fd >= 0);
        CU_ASSERT_EQUAL(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len), 0);
        CU_ASSERT(v != 0);
        len = sizeof(v);
        CU_ASSERT_EQUAL(getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, &len), 0);
        CU_ASSERT(v >= 128 * 1024); /* asked 4 MiB; the kernel may cap it */
    }
    vmt_transport *m1, *m2;
    CU_ASSERT_EQUAL_FATAL(vmt_transport_mem_pair(&m1, &m2, 0), 0);
    CU_ASSERT_EQUAL(vmt_sock_fd(m1), -1);
    vmt_transport_close(m1);
    vmt_transport_close(m2);
    vmt_transport_close(a);
    vmt_transport_close(b);
}

static const vmt_test_case cases[] = {
    {"IPv4 literal and the default host", test_ipv4_literal},
    {"IPv6 literals with and without brackets", test_ipv6_literals},
    {"host name", test_host_name},
    {"connection refused", test_connection_refused},
    {"unresolvable host", test_bad_host},
    {"accept times out", test_accept_timeout},
    {"port in use", test_port_in_use},
    {"TCP_NODELAY and large buffers", test_socket_options},
    {NULL, NULL},
};

int main(void)
{
    return vmt_test_run("socket transports", cases, NULL, NULL);
}
