/*
 * TLS over a socket transport (OpenSSL, TLS 1.3 only).
 *
 * The SSL object works on the socket's non-blocking fd.  OpenSSL forbids
 * using one SSL object from two threads at once, while a transport allows a
 * sender and a receiver in parallel; so each SSL call runs under a mutex and
 * is non-blocking, and the waiting (poll for readable/writable until the
 * deadline) happens outside the mutex.  Neither direction can then block
 * the other, and a shutdown of the socket wakes both.
 *
 * A peer closing without close_notify reads as a plain EOF
 * (SSL_OP_IGNORE_UNEXPECTED_EOF): the migration protocol detects truncation
 * itself (every frame is length-checked and the exchange ends with Ack).
 */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "net_internal.h"

struct vmt_tls {
    SSL_CTX *ctx;
    bool server;
};

typedef struct tls_impl {
    vmt_transport *inner; /* the socket transport, owned */
    int fd;
    SSL *ssl;
    pthread_mutex_t lock; /* every SSL_* call on ssl */
    atomic_bool shut;
} tls_impl;

/* The OpenSSL error queue as one message (and cleared). */
static int ssl_error(int code, const char *what)
{
    char buf[256] = "";
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return vmt_error_set(code, "%s%s%s", what, buf[0] ? ": " : "", buf);
}

/* ssl_error with "what <file>" as the context. */
static int file_error(const char *what, const char *file)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "TLS: %s %s", what, file);
    return ssl_error(VMT_EINVAL, buf);
}

static int ctx_files(SSL_CTX *ctx, const vmt_tls_config *c)
{
    if (c->cert_file || c->key_file) {
        if (!c->cert_file || !c->key_file)
            return vmt_error_set(VMT_EINVAL, "TLS: a certificate needs both cert_file and "
                                             "key_file");
        if (SSL_CTX_use_certificate_chain_file(ctx, c->cert_file) != 1)
            return file_error("cannot load certificate", c->cert_file);
        if (SSL_CTX_use_PrivateKey_file(ctx, c->key_file, SSL_FILETYPE_PEM) != 1)
            return file_error("cannot load private key", c->key_file);
        if (SSL_CTX_check_private_key(ctx) != 1)
            return file_error("the private key does not match the certificate", c->key_file);
    }
    if (c->ca_file && SSL_CTX_load_verify_locations(ctx, c->ca_file, NULL) != 1)
        return file_error("cannot load CA file", c->ca_file);
    return 0;
}

int vmt_tls_new(vmt_tls **out, const vmt_tls_config *c)
{
    *out = NULL;
    if (c->server && !c->cert_file)
        return vmt_error_set(VMT_EINVAL, "TLS server: cert_file and key_file are required");
    if (!c->server && !c->ca_file)
        return vmt_error_set(VMT_EINVAL, "TLS client: ca_file is required to verify the server");
    vmt_tls *t = calloc(1, sizeof(*t));
    if (!t)
        return vmt_error_set(VMT_ENOMEM, "TLS: out of memory");
    t->server = c->server;
    t->ctx = SSL_CTX_new(c->server ? TLS_server_method() : TLS_client_method());
    if (!t->ctx) {
        free(t);
        return ssl_error(VMT_ENOMEM, "TLS: SSL_CTX_new");
    }
    SSL_CTX_set_min_proto_version(t->ctx, TLS1_3_VERSION);
    SSL_CTX_set_options(t->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(t->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (c->server)
        SSL_CTX_set_num_tickets(t->ctx, 0); /* no resumption: nothing after the handshake */
    int rc = ctx_files(t->ctx, c);
    if (rc) {
        vmt_tls_free(t);
        return rc;
    }
    if (!c->server || c->ca_file)
        SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    *out = t;
    return 0;
}

void vmt_tls_free(vmt_tls *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    free(t);
}

/* Waits for the fd to become readable (want_write false) or writable. */
static int tls_wait(tls_impl *ti, bool want_write, uint64_t deadline, const char *what)
{
    if (atomic_load(&ti->shut))
        return vmt_error_set(VMT_EIO, "TLS stream shut down");
    struct pollfd pfd = {.fd = ti->fd, .events = want_write ? POLLOUT : POLLIN};
    int pr = poll(&pfd, 1, vmt_net_poll_ms(deadline));
    if (pr < 0 && errno != EINTR)
        return vmt_error_errno(VMT_EIO, errno, "poll");
    if (pr == 0)
        return vmt_error_set(VMT_ETIMEDOUT, "timed out %s", what);
    return 0;
}

/* One non-blocking SSL call under the lock; returns its result, *err the
 * SSL_get_error code. */
typedef int (*ssl_call_fn)(SSL *ssl, void *buf, int len);

static int call_ssl(tls_impl *ti, ssl_call_fn fn, void *buf, int len, int *err)
{
    pthread_mutex_lock(&ti->lock);
    ERR_clear_error();
    errno = 0;
    int r = fn(ti->ssl, buf, len);
    int saved = errno;
    *err = r > 0 ? SSL_ERROR_NONE : SSL_get_error(ti->ssl, r);
    if (*err == SSL_ERROR_SSL || *err == SSL_ERROR_SYSCALL) {
        if (ERR_peek_error())
            ssl_error(VMT_EIO, "TLS");
        else if (saved)
            vmt_error_errno(VMT_EIO, saved, "TLS");
        else
            vmt_error_set(VMT_EIO, "TLS: connection closed in the middle of a record");
    }
    pthread_mutex_unlock(&ti->lock);
    return r;
}

/* OpenSSL writes to the socket with write(2), which raises SIGPIPE once the
 * stream is shut down or reset (the socket transport uses MSG_NOSIGNAL
 * instead).  The signal is blocked on this thread around the write and a
 * SIGPIPE it raised is consumed, so a library never kills its process. */
static int ssl_write_fn(SSL *ssl, void *buf, int len)
{
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    int r = SSL_write(ssl, buf, len);
    if (!sigismember(&old, SIGPIPE)) {
        int saved = errno;
        struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_set, NULL, &zero) > 0) {
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        errno = saved;
    }
    return r;
}

static int ssl_read_fn(SSL *ssl, void *buf, int len)
{
    return SSL_read(ssl, buf, len);
}

static int tls_send(void *impl, const void *buf, size_t len, uint64_t deadline)
{
    tls_impl *ti = impl;
    const uint8_t *p = buf;
    size_t done = 0;

    while (done < len) {
        int err, n = (int)VMT_MIN(len - done, (size_t)1 << 30);
        int r = call_ssl(ti, ssl_write_fn, (void *)(uintptr_t)(p + done), n, &err);
        if (r > 0) {
            done += (size_t)r;
            continue;
        }
        if (err != SSL_ERROR_WANT_WRITE && err != SSL_ERROR_WANT_READ)
            return vmt_error_wrap(VMT_EIO, "TLS send failed after %zu of %zu bytes", done, len);
        int rc = tls_wait(ti, err == SSL_ERROR_WANT_WRITE, deadline, "sending");
        if (rc)
            return rc;
    }
    return 0;
}

static int tls_recv(void *impl, void *buf, size_t len, size_t *got, uint64_t deadline)
{
    tls_impl *ti = impl;

    *got = 0;
    for (;;) {
        int err, n = (int)VMT_MIN(len, (size_t)1 << 30);
        int r = call_ssl(ti, ssl_read_fn, buf, n, &err);
        if (r > 0) {
            *got = (size_t)r;
            return 0;
        }
        if (err == SSL_ERROR_ZERO_RETURN)
            return 0; /* close_notify or EOF: the peer closed */
        if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
            return vmt_error_wrap(VMT_EIO, "TLS receive failed");
        int rc = tls_wait(ti, err == SSL_ERROR_WANT_WRITE, deadline, "waiting for data");
        if (rc)
            return rc;
    }
}

static void tls_shutdown(void *impl)
{
    tls_impl *ti = impl;
    atomic_store(&ti->shut, true);
    shutdown(ti->fd, SHUT_RDWR);
}

static void tls_close(void *impl)
{
    tls_impl *ti = impl;
    if (!ti)
        return;
    if (ti->ssl && !atomic_load(&ti->shut)) {
        /* close_notify, best effort and without waiting */
        SSL_shutdown(ti->ssl);
    }
    SSL_free(ti->ssl);
    ERR_clear_error();
    pthread_mutex_destroy(&ti->lock);
    vmt_transport_close(ti->inner);
    free(ti);
}

static void tls_describe(void *impl, char *buf, size_t cap)
{
    tls_impl *ti = impl;
    snprintf(buf, cap, "tls(%s)", vmt_transport_peer(ti->inner));
}

static bool tls_peer_gone(void *impl)
{
    tls_impl *ti = impl;
    return vmt_transport_peer_gone(ti->inner);
}

static const vmt_transport_ops tls_ops = {
    .peer_gone = tls_peer_gone,
    .name = "tls",
    .send = tls_send,
    .recv = tls_recv,
    .shutdown = tls_shutdown,
    .close = tls_close,
    .describe = tls_describe,
};

/* Tells the client's SSL which name or address the server must prove. */
static int set_peer_name(SSL *ssl, const char *name)
{
    char bare[256];
    size_t len = strlen(name);
    if (len >= sizeof(bare))
        return vmt_error_set(VMT_EINVAL, "TLS: peer name too long");
    if (len >= 2 && name[0] == '[' && name[len - 1] == ']') {
        memcpy(bare, name + 1, len - 2);
        bare[len - 2] = '\0';
    } else {
        memcpy(bare, name, len + 1);
    }
    ASN1_OCTET_STRING *ip = a2i_IPADDRESS(bare);
    if (ip) {
        ASN1_OCTET_STRING_free(ip);
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), bare) != 1)
            return ssl_error(VMT_EINVAL, "TLS: bad peer address");
        return 0;
    }
    if (SSL_set1_host(ssl, bare) != 1 || SSL_set_tlsext_host_name(ssl, bare) != 1)
        return ssl_error(VMT_EINVAL, "TLS: bad peer name");
    return 0;
}

/* Why a handshake failed: the certificate check if that is what failed. */
static int handshake_error(tls_impl *ti, bool server)
{
    long v = SSL_get_verify_result(ti->ssl);
    if (v != X509_V_OK) {
        ERR_clear_error();
        return vmt_error_set(VMT_EAUTH, "TLS handshake: the %s certificate was refused: %s",
                             server ? "client" : "server", X509_verify_cert_error_string(v));
    }
    return vmt_error_wrap(VMT_EIO, "TLS handshake failed");
}

static int ssl_handshake_fn(SSL *ssl, void *buf, int len)
{
    (void)buf;
    (void)len;
    return SSL_do_handshake(ssl);
}

static int run_handshake(tls_impl *ti, bool server, uint64_t deadline)
{
    for (;;) {
        int err;
        int r = call_ssl(ti, ssl_handshake_fn, NULL, 0, &err);
        if (r == 1)
            return 0;
        if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
            return handshake_error(ti, server);
        int rc = tls_wait(ti, err == SSL_ERROR_WANT_WRITE, deadline, "in the TLS handshake");
        if (rc)
            return rc;
    }
}

static int tls_setup(tls_impl *ti, vmt_tls *tls, const char *peer_name)
{
    ti->ssl = SSL_new(tls->ctx);
    if (!ti->ssl)
        return ssl_error(VMT_ENOMEM, "TLS: SSL_new");
    if (SSL_set_fd(ti->ssl, ti->fd) != 1)
        return ssl_error(VMT_EIO, "TLS: SSL_set_fd");
    if (tls->server) {
        SSL_set_accept_state(ti->ssl);
        return 0;
    }
    SSL_set_connect_state(ti->ssl);
    return peer_name ? set_peer_name(ti->ssl, peer_name) : 0;
}

int vmt_transport_tls(vmt_transport **out, vmt_transport *tcp, vmt_tls *tls,
                      const char *peer_name)
{
    *out = NULL;
    int fd = vmt_sock_fd(tcp);
    if (fd < 0) {
        vmt_transport_close(tcp);
        return vmt_error_set(VMT_EINVAL, "TLS needs a socket transport");
    }
    tls_impl *ti = calloc(1, sizeof(*ti));
    if (!ti) {
        vmt_transport_close(tcp);
        return vmt_error_set(VMT_ENOMEM, "TLS: out of memory");
    }
    ti->inner = tcp;
    ti->fd = fd;
    pthread_mutex_init(&ti->lock, NULL);
    uint32_t timeout = vmt_transport_timeout(tcp);
    int rc = tls_setup(ti, tls, peer_name);
    if (rc == 0)
        rc = run_handshake(ti, tls->server, vmt_net_deadline(timeout));
    if (rc) {
        rc = vmt_error_wrap(rc, "%s", vmt_transport_peer(tcp));
        atomic_store(&ti->shut, true); /* no close_notify after a failed handshake */
        tls_close(ti);
        return rc;
    }
    rc = vmt_transport_new(out, &tls_ops, ti);
    if (rc == 0)
        vmt_transport_set_timeout(*out, timeout);
    return rc;
}
