/*
 * TLS (tp_tls.c, tls_pki.c) beyond the contract: a server certificate from
 * another CA or for another name is refused with VMT_EAUTH and a reason;
 * mutual TLS refuses a client without a certificate and accepts one with;
 * a plain-TCP peer speaking garbage fails the handshake cleanly; config
 * errors name the file; TLS needs a socket transport.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net_fixture.h"

typedef struct side {
    vmt_listener *l;
    vmt_tls *tls;
    vmt_transport *t;
    bool raw;             /* accept only, no TLS */
} side;

static int server_side(void *arg)
{
    side *s = arg;
    vmt_transport *raw = NULL;
    int rc = vmt_listener_accept(s->l, &raw, NET_TIMEOUT_MS);
    if (rc || s->raw) {
        s->t = raw;
        return rc;
    }
    vmt_transport_set_timeout(raw, 3000);
    return vmt_transport_tls(&s->t, raw, s->tls, NULL);
}

/* Runs a handshake: server with `srv`, client with `cli` expecting `name`.
 * Returns the client's result; *srv_rc the server's. */
static int handshake(vmt_tls *srv, vmt_tls *cli, const char *name, int *srv_rc,
                     vmt_transport **ct, vmt_transport **st)
{
    side s = {.tls = srv};
    vmt_transport *raw = NULL, *c = NULL;
    net_thread th;
    CU_ASSERT_EQUAL_FATAL(vmt_tcp_listen(&s.l, "127.0.0.1", 0), 0);
    net_spawn(&th, server_side, &s);
    int rc = vmt_tcp_connect(&raw, "127.0.0.1", vmt_listener_port(s.l), NET_TIMEOUT_MS);
    if (rc == 0) {
        vmt_transport_set_timeout(raw, 3000);
        rc = vmt_transport_tls(&c, raw, cli, name);
    }
    char msg[512];
    snprintf(msg, sizeof(msg), "%s", vmt_error_last());
    *srv_rc = net_join(&th);
    vmt_listener_close(s.l);
    if (ct && st && rc == 0 && *srv_rc == 0) {
        *ct = c;
        *st = s.t;
    } else {
        vmt_transport_close(c);
        vmt_transport_close(s.t);
    }
    vmt_error_set(rc, "%s", msg);
    return rc;
}

static vmt_tls *tls_of(bool server, const char *dir, const char *cert, const char *key,
                       const char *ca)
{
    char c[4096], k[4096], a[4096];
    vmt_tls_config cfg = {.server = server};
    if (cert) {
        snprintf(c, sizeof(c), "%s/%s", dir, cert);
        snprintf(k, sizeof(k), "%s/%s", dir, key);
        cfg.cert_file = c;
        cfg.key_file = k;
    }
    if (ca) {
        snprintf(a, sizeof(a), "%s/%s", dir, ca);
        cfg.ca_file = a;
    }
    vmt_tls *t = NULL;
    int rc = vmt_tls_new(&t, &cfg);
    if (rc)
        fprintf(stderr, "vmt_tls_new: %s\n", vmt_error_last());
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    return t;
}

static void test_handshake_and_names(void)
{
    int srv;
    vmt_transport *c, *s;
    CU_ASSERT_EQUAL(handshake(net_tls_server(), net_tls_client(), "127.0.0.1", &srv, &c, &s), 0);
    CU_ASSERT_EQUAL_FATAL(srv, 0);
    CU_ASSERT(strncmp(vmt_transport_peer(c), "tls(tcp 127.0.0.1:", 18) == 0);
    uint8_t in[3];
    CU_ASSERT_EQUAL(vmt_transport_send(c, "abc", 3), 0);
    CU_ASSERT_EQUAL(vmt_transport_recv(s, in, 3), 0);
    CU_ASSERT(memcmp(in, "abc", 3) == 0);
    vmt_transport_close(c);
    vmt_transport_close(s);
    CU_ASSERT_EQUAL(handshake(net_tls_server(), net_tls_client(), "localhost", &srv, NULL, NULL),
                    0);
    /* The name checked is the one asked for; the certificate also names ::1. */
    CU_ASSERT_EQUAL(handshake(net_tls_server(), net_tls_client(), "[::1]", &srv, NULL, NULL),
                    0);
    CU_ASSERT_EQUAL(handshake(net_tls_server(), net_tls_client(), "127.0.0.2", &srv, NULL, NULL),
                    VMT_EAUTH);
}

static void test_wrong_name_refused(void)
{
    int srv;
    CU_ASSERT_EQUAL(handshake(net_tls_server(), net_tls_client(), "example.com", &srv, NULL,
                              NULL),
                    VMT_EAUTH);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "certificate was refused"));
    CU_ASSERT(srv != 0);
}

static void test_other_ca_refused(void)
{
    char *dir = vmt_test_tmpdir("net-pki2");
    CU_ASSERT_FATAL(dir != NULL);
    CU_ASSERT_EQUAL_FATAL(vmt_tls_write_test_pki(dir), 0);
    vmt_tls *other = tls_of(true, dir, "server.pem", "server.key", NULL);
    int srv;
    CU_ASSERT_EQUAL(handshake(other, net_tls_client(), "127.0.0.1", &srv, NULL, NULL),
                    VMT_EAUTH);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "server certificate was refused"));
    CU_ASSERT(srv != 0);
    vmt_tls_free(other);
    vmt_test_rmtree(dir);
    free(dir);
}

static void test_mutual_tls(void)
{
    const char *dir = net_pki_dir();
    vmt_tls *srv_tls = tls_of(true, dir, "server.pem", "server.key", "ca.pem");
    vmt_tls *cli_cert = tls_of(false, dir, "client.pem", "client.key", "ca.pem");
    int srv;
    int rc = handshake(srv_tls, net_tls_client(), "127.0.0.1", &srv, NULL, NULL);
    CU_ASSERT(srv != 0 || rc != 0); /* no client certificate: refused */
    CU_ASSERT(srv != 0);
    CU_ASSERT_EQUAL(handshake(srv_tls, cli_cert, "127.0.0.1", &srv, NULL, NULL), 0);
    CU_ASSERT_EQUAL(srv, 0);
    vmt_tls_free(srv_tls);
    vmt_tls_free(cli_cert);
}

static void test_garbage_peer_fails_cleanly(void)
{
    side s = {.tls = net_tls_server()};
    vmt_transport *c = NULL;
    net_thread th;
    CU_ASSERT_EQUAL_FATAL(vmt_tcp_listen(&s.l, "127.0.0.1", 0), 0);
    net_spawn(&th, server_side, &s);
    CU_ASSERT_EQUAL(vmt_tcp_connect(&c, "127.0.0.1", vmt_listener_port(s.l), NET_TIMEOUT_MS), 0);
    static const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    CU_ASSERT_EQUAL(vmt_transport_send(c, junk, sizeof(junk) - 1), 0);
    uint64_t t0 = vmt_now_ns();
    CU_ASSERT_EQUAL(net_join(&th), VMT_EIO);
    CU_ASSERT(vmt_now_ns() - t0 < 3000000000ull);
    vmt_transport_close(c);
    vmt_listener_close(s.l);
}

static void test_config_errors(void)
{
    vmt_tls *t = NULL;
    vmt_tls_config c = {.server = true};
    CU_ASSERT_EQUAL(vmt_tls_new(&t, &c), VMT_EINVAL);
    c = (vmt_tls_config){.server = false};
    CU_ASSERT_EQUAL(vmt_tls_new(&t, &c), VMT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "ca_file"));
    c = (vmt_tls_config){.server = false, .ca_file = "/nonexistent/ca.pem"};
    CU_ASSERT_EQUAL(vmt_tls_new(&t, &c), VMT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "CA file /nonexistent/ca.pem"));
    char cert[4096], key[4096];
    snprintf(cert, sizeof(cert), "%s", net_pki_file("server.pem"));
    snprintf(key, sizeof(key), "%s", net_pki_file("client.key")); /* not its key */
    c = (vmt_tls_config){.server = true, .cert_file = cert, .key_file = key};
    CU_ASSERT_EQUAL(vmt_tls_new(&t, &c), VMT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "mismatch"));
    CU_ASSERT_PTR_NULL(t);
    vmt_transport *a, *b, *out = NULL;
    CU_ASSERT_EQUAL_FATAL(vmt_transport_mem_pair(&a, &b, 0), 0);
    CU_ASSERT_EQUAL(vmt_transport_tls(&out, a, net_tls_client(), NULL), VMT_EINVAL);
    CU_ASSERT_PTR_NULL(out);
    vmt_transport_close(b); /* a was taken (and closed) */
}

static const vmt_test_case cases[] = {
    {"handshake, names and addresses", test_handshake_and_names},
    {"a certificate for another name is refused", test_wrong_name_refused},
    {"a certificate from another CA is refused", test_other_ca_refused},
    {"mutual TLS", test_mutual_tls},
    {"a garbage peer fails the handshake cleanly", test_garbage_peer_fails_cleanly},
    {"config errors", test_config_errors},
    {NULL, NULL},
};

int main(void)
{
    return vmt_test_run("tls", cases, NULL, NULL);
}
