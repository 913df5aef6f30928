/*
 * Sessions: N streams set up by one handshake, with one sticky error.
 *
 * Stream 0 is set up first and fixes the session (id, version, features,
 * number of streams); the other streams must present the same session id
 * and a free index, and each authenticates on its own.  After setup, a
 * failure on any stream fails the session: the first error is recorded and
 * every stream is shut down, so threads blocked on other streams wake with
 * an error instead of waiting for their timeouts.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net_internal.h"

#define SESSION_MSG_MAX 512

struct vmt_session {
    unsigned n;
    vmt_transport *tp[VMT_NET_MAX_STREAMS];
    vmt_frame rx[VMT_NET_MAX_STREAMS]; /* buffers of vmt_session_recv_msg */
    vmt_hs_result hs;
    uint64_t handshake_ns;
    pthread_mutex_t lock; /* guards msg and by_peer */
    _Atomic int err;
    bool by_peer; /* err is the peer's stated reason */
    char msg[SESSION_MSG_MAX];
};

void vmt_session_config_init(vmt_session_config *c)
{
    memset(c, 0, sizeof(*c));
    c->nstreams = 1;
    c->max_streams = VMT_NET_MAX_STREAMS;
    c->min_version = VMT_NET_PROTO_MIN;
    c->max_version = VMT_NET_PROTO_MAX;
    c->features = VMT_WIRE_FEAT_ALL;
    c->timeout_ms = VMT_NET_DEFAULT_TIMEOUT_MS;
}

static int check_config(const vmt_session_config *c, bool server)
{
    if (!c)
        return vmt_error_set(VMT_EINVAL, "session: no config");
    if (c->min_version == 0 || c->min_version > c->max_version || c->max_version > UINT16_MAX)
        return vmt_error_set(VMT_EINVAL, "session: version range %u..%u is not valid",
                             c->min_version, c->max_version);
    if (c->psk && (c->psk_len < VMT_NET_PSK_MIN || c->psk_len > VMT_NET_PSK_MAX))
        return vmt_error_set(VMT_EINVAL, "session: pre-shared key of %zu bytes (%u..%u)",
                             c->psk_len, VMT_NET_PSK_MIN, VMT_NET_PSK_MAX);
    if (server && !c->psk && !c->allow_unauthenticated)
        return vmt_error_set(VMT_EINVAL, "session: no pre-shared key configured; set "
                                         "allow_unauthenticated to accept any client");
    if (server && (c->max_streams == 0 || c->max_streams > VMT_NET_MAX_STREAMS))
        return vmt_error_set(VMT_EINVAL, "session: max_streams %u (1..%u)", c->max_streams,
                             VMT_NET_MAX_STREAMS);
    if (!server && (c->nstreams == 0 || c->nstreams > VMT_NET_MAX_STREAMS))
        return vmt_error_set(VMT_EINVAL, "session: %u streams (1..%u)", c->nstreams,
                             VMT_NET_MAX_STREAMS);
    if (c->timeout_ms == 0)
        return vmt_error_set(VMT_EINVAL, "session: timeout of 0 ms");
    return 0;
}

static vmt_session *session_new(void)
{
    vmt_session *s = calloc(1, sizeof(*s));
    if (!s) {
        vmt_error_set(VMT_ENOMEM, "session: out of memory");
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    for (unsigned i = 0; i < VMT_NET_MAX_STREAMS; i++)
        vmt_frame_init(&s->rx[i]);
    return s;
}

void vmt_session_close(vmt_session *s)
{
    if (!s)
        return;
    for (unsigned i = 0; i < VMT_NET_MAX_STREAMS; i++) {
        vmt_transport_close(s->tp[i]);
        vmt_frame_free(&s->rx[i]);
    }
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* Tells the peer on every stream still open why the session ends, before
 * any stream is shut down (best effort), so that the peer's threads learn
 * the reason whichever stream they read. */
static void tell_peer(vmt_session *s, int code, const char *msg)
{
    for (unsigned i = 0; i < s->n; i++)
        vmt_frame_tell(s->tp[i], code, msg);
}

/* Records the first failure (with the thread's message) and shuts every
 * stream down; the peer's stated reason (an ERROR frame, by_peer) replaces
 * a first failure that was only its consequence (EOF on another stream).
 * A failure of our own making (not I/O, not the peer's) is told to the
 * peer first.  Returns the session's error, re-setting its message. */
static int session_fail_as(vmt_session *s, int code, bool by_peer)
{
    char msg[SESSION_MSG_MAX];
    bool first_here = false;

    pthread_mutex_lock(&s->lock);
    int first = atomic_load(&s->err);
    if (!first || (by_peer && !s->by_peer)) {
        snprintf(s->msg, sizeof(s->msg), "%s", vmt_error_last());
        atomic_store(&s->err, code);
        first_here = !first;
        s->by_peer = by_peer;
        first = code;
    }
    snprintf(msg, sizeof(msg), "%s", s->msg);
    pthread_mutex_unlock(&s->lock);
    if (first_here && !by_peer && code != VMT_EIO)
        tell_peer(s, code, msg);
    for (unsigned i = 0; i < s->n; i++) {
        vmt_error_set(first, "%s", msg);
        vmt_transport_fail(s->tp[i], first);
        vmt_transport_shutdown(s->tp[i]);
    }
    return vmt_error_set(first, "%s", msg);
}

/* A failure on stream `stream`: by the peer when its transport says so. */
static int session_fail_on(vmt_session *s, unsigned stream, int code)
{
    return session_fail_as(s, code, vmt_transport_failed_by_peer(s->tp[stream]));
}

static int session_fail(vmt_session *s, int code)
{
    return session_fail_as(s, code, false);
}

/* The sticky error with its message, or 0; VMT_EINVAL for a bad stream. */
static int session_check(const vmt_session *s, unsigned stream)
{
    int err = atomic_load(&s->err);
    if (err) {
        pthread_mutex_lock((pthread_mutex_t *)&s->lock);
        vmt_error_set(err, "%s", s->msg);
        pthread_mutex_unlock((pthread_mutex_t *)&s->lock);
        return err;
    }
    if (stream >= s->n)
        return vmt_error_set(VMT_EINVAL, "session: stream %u of %u", stream, s->n);
    return 0;
}

/* ---- setup ------------------------------------------------------------- */

int vmt_session_client(vmt_session **out, const vmt_session_config *c, vmt_dial_fn dial,
                       void *ctx)
{
    uint8_t sid[VMT_WIRE_SESSION_ID_LEN];
    uint64_t t0 = vmt_now_ns();

    *out = NULL;
    int rc = check_config(c, false);
    if (rc || (rc = vmt_auth_random(sid, sizeof(sid))) != 0)
        return rc;
    vmt_session *s = session_new();
    if (!s)
        return VMT_ENOMEM;
    for (unsigned i = 0; i < c->nstreams && rc == 0; i++) {
        vmt_hs_result r;
        if ((rc = dial(ctx, i, &s->tp[i])) != 0)
            break;
        s->n = i + 1;
        vmt_transport_set_timeout(s->tp[i], c->timeout_ms);
        rc = vmt_hs_client(s->tp[i], c, sid, i, c->nstreams, &r);
        if (rc == 0 && i == 0)
            s->hs = r;
    }
    if (rc) {
        char msg[SESSION_MSG_MAX];
        snprintf(msg, sizeof(msg), "%s", vmt_error_last());
        if (s->hs.version) /* stream 0 is set up: tell the server why we give up */
            vmt_frame_tell(s->tp[0], rc == VMT_EIO ? VMT_ERR : rc, msg);
        rc = vmt_error_set(rc, "session setup: %s", msg);
        vmt_session_close(s);
        return rc;
    }
    s->handshake_ns = vmt_now_ns() - t0;
    *out = s;
    return 0;
}

/* How often the server looks at stream 0 while it waits for the others. */
#define SETUP_POLL_NS 100000000ull

/* While waiting for more streams: has the client given up on stream 0?
 * Nothing may arrive there before setup ends but its ERROR (or EOF). */
static int check_first_stream(vmt_session *s)
{
    vmt_frame f;
    vmt_frame_init(&f);
    int rc = vmt_frame_recv(s->tp[0], &f, 0);
    if (rc == 0) {
        vmt_error_set(VMT_EPROTO, "%s on stream 0 before the session was set up",
                      vmt_wire_type_name(f.type));
        rc = vmt_frame_refuse(s->tp[0], VMT_EPROTO);
    } else if (rc == VMT_ETIMEDOUT && !vmt_transport_error(s->tp[0])) {
        rc = 0; /* nothing: keep waiting */
    }
    vmt_frame_free(&f);
    return rc;
}

/* Accepts the next stream by `deadline`, watching stream 0 meanwhile. */
static int accept_watching(vmt_session *s, vmt_accept_fn accept, void *ctx, uint64_t deadline,
                           vmt_transport **t)
{
    for (;;) {
        uint64_t now = vmt_now_ns();
        uint64_t slice = deadline - now > SETUP_POLL_NS ? now + SETUP_POLL_NS : deadline;
        int rc = accept(ctx, now >= deadline ? deadline : slice, t);
        if (rc != VMT_ETIMEDOUT || vmt_now_ns() >= deadline)
            return rc;
        if ((rc = check_first_stream(s)) != 0)
            return rc;
    }
}

/* Accepts and authenticates one more stream of the session in s->hs. */
static int server_more(vmt_session *s, const vmt_session_config *c, vmt_accept_fn accept,
                       void *ctx, uint64_t deadline)
{
    vmt_transport *t = NULL;
    vmt_hs_result r;

    int rc = accept_watching(s, accept, ctx, deadline, &t);
    if (rc)
        return rc;
    vmt_transport_set_timeout(t, c->timeout_ms);
    if ((rc = vmt_hs_server(t, c, &s->hs, &r)) != 0) {
        vmt_transport_close(t);
        return rc;
    }
    if (r.stream_index >= s->hs.nstreams || s->tp[r.stream_index]) {
        vmt_error_set(VMT_EPROTO, "stream index %u is taken or out of range", r.stream_index);
        rc = vmt_frame_refuse(t, VMT_EPROTO);
        vmt_transport_close(t);
        return rc;
    }
    s->tp[r.stream_index] = t;
    return 0;
}

int vmt_session_server(vmt_session **out, const vmt_session_config *c, vmt_accept_fn accept,
                       void *ctx)
{
    uint64_t t0 = vmt_now_ns();

    *out = NULL;
    int rc = check_config(c, true);
    if (rc)
        return rc;
    vmt_session *s = session_new();
    if (!s)
        return VMT_ENOMEM;
    rc = accept(ctx, vmt_net_deadline(c->timeout_ms), &s->tp[0]);
    if (rc == 0) {
        s->n = 1;
        vmt_transport_set_timeout(s->tp[0], c->timeout_ms);
        rc = vmt_hs_server(s->tp[0], c, NULL, &s->hs);
    }
    /* The client dials the other streams right after the first one. */
    uint64_t deadline = vmt_net_deadline(c->timeout_ms);
    for (unsigned i = 1; rc == 0 && i < s->hs.nstreams; i++)
        rc = server_more(s, c, accept, ctx, deadline);
    if (rc) {
        rc = vmt_error_wrap(rc, "session setup");
        s->n = VMT_NET_MAX_STREAMS; /* close whatever was accepted */
        vmt_session_close(s);
        return rc;
    }
    s->n = s->hs.nstreams;
    s->handshake_ns = vmt_now_ns() - t0;
    *out = s;
    return 0;
}

/* ---- use ------------------------------------------------------------------ */

unsigned vmt_session_nstreams(const vmt_session *s)
{
    return s->n;
}

unsigned vmt_session_version(const vmt_session *s)
{
    return s->hs.version;
}

uint32_t vmt_session_features(const vmt_session *s)
{
    return s->hs.features;
}

vmt_transport *vmt_session_stream(vmt_session *s, unsigned index)
{
    return index < s->n ? s->tp[index] : NULL;
}

int vmt_session_error(const vmt_session *s)
{
    return atomic_load(&s->err);
}

void vmt_session_id(const vmt_session *s, uint8_t out[16])
{
    memcpy(out, s->hs.session_id, VMT_WIRE_SESSION_ID_LEN);
}

bool vmt_session_peer_ended(vmt_session *s, unsigned stream)
{
    pthread_mutex_lock(&s->lock);
    bool by_peer = s->by_peer;
    pthread_mutex_unlock(&s->lock);
    return by_peer || (stream < s->n && vmt_transport_peer_gone(s->tp[stream]));
}

int vmt_session_send(vmt_session *s, unsigned stream, const vmt_wire_msg *m)
{
    int rc = session_check(s, stream);
    if (rc)
        return rc;
    rc = vmt_frame_send_msg(s->tp[stream], m);
    if (rc == VMT_EINVAL && !vmt_transport_error(s->tp[stream]))
        return rc; /* the message did not encode: nothing was sent */
    return rc ? session_fail(s, rc) : 0;
}

int vmt_session_send_batch(vmt_session *s, unsigned stream, const void *payload, size_t len)
{
    int rc = session_check(s, stream);
    if (rc)
        return rc;
    rc = vmt_frame_send(s->tp[stream], VMT_WIRE_PAGE_BATCH, payload, len);
    if (rc == VMT_EINVAL && !vmt_transport_error(s->tp[stream]))
        return rc;
    return rc ? session_fail(s, rc) : 0;
}

int vmt_session_send_frame(vmt_session *s, unsigned stream, unsigned type, const void *payload,
                           size_t len)
{
    int rc = session_check(s, stream);
    if (rc)
        return rc;
    rc = vmt_frame_send(s->tp[stream], type, payload, len);
    if (rc == VMT_EINVAL && !vmt_transport_error(s->tp[stream]))
        return rc;
    return rc ? session_fail(s, rc) : 0;
}

int vmt_session_recv(vmt_session *s, unsigned stream, vmt_frame *f, uint32_t timeout_ms)
{
    int rc = session_check(s, stream);
    if (rc)
        return rc;
    rc = vmt_frame_recv(s->tp[stream], f, timeout_ms);
    if (rc == VMT_ETIMEDOUT && !vmt_transport_error(s->tp[stream]))
        return rc; /* nothing arrived yet; the stream is in step */
    return rc ? session_fail_on(s, stream, rc) : 0;
}

int vmt_session_recv_msg(vmt_session *s, unsigned stream, unsigned expect, vmt_wire_msg *m,
                         uint32_t timeout_ms)
{
    memset(m, 0, sizeof(*m));
    int rc = vmt_session_recv(s, stream, &s->rx[stream], timeout_ms);
    if (rc)
        return rc;
    vmt_frame *f = &s->rx[stream];
    if (f->type == VMT_WIRE_PAGE_BATCH || (expect && f->type != expect)) {
        vmt_error_set(VMT_EPROTO, "expected %s, got %s on stream %u",
                      expect ? vmt_wire_type_name(expect) : "a control message",
                      vmt_wire_type_name(f->type), stream);
        return session_fail(s, VMT_EPROTO);
    }
    rc = vmt_wire_decode(f->type, f->payload, f->len, m);
    if (rc)
        return session_fail(s, rc);
    return 0;
}

int vmt_session_abort(vmt_session *s, int code, const char *message)
{
    char text[VMT_WIRE_TEXT_MAX];

    /* Copied first: message may be vmt_error_last() itself. */
    snprintf(text, sizeof(text), "%s", message ? message : "aborted");
    vmt_error_set(code, "%s", text);
    return session_fail(s, code == VMT_EIO ? VMT_ERR : code);
}

void vmt_session_get_stats(const vmt_session *s, vmt_session_stats *st)
{
    memset(st, 0, sizeof(*st));
    for (unsigned i = 0; i < s->n; i++) {
        st->bytes_sent += vmt_transport_bytes_sent(s->tp[i]);
        st->bytes_received += vmt_transport_bytes_received(s->tp[i]);
    }
    st->handshake_ns = s->handshake_ns;
}

/* ---- over TCP ------------------------------------------------------------ */

typedef struct tcp_dial {
    const char *host;
    uint16_t port;
    const vmt_session_config *c;
} tcp_dial;

/* Adds TLS and the rate limit of the config around a TCP transport. */
static int wrap_stream(vmt_transport **t, const vmt_session_config *c, const char *peer_name)
{
    vmt_transport *w = NULL;
    int rc = 0;
    vmt_transport_set_timeout(*t, c->timeout_ms);
    if (c->tls) {
        rc = vmt_transport_tls(&w, *t, c->tls, peer_name);
        *t = w;
    }
    if (rc == 0 && c->rate) {
        rc = vmt_transport_rate(&w, *t, c->rate);
        *t = w;
    }
    return rc;
}

static int tcp_dial_fn(void *ctx, unsigned index, vmt_transport **out)
{
    tcp_dial *d = ctx;
    int rc = vmt_tcp_connect(out, d->host, d->port, d->c->timeout_ms);
    if (rc == 0)
        rc = wrap_stream(out, d->c, d->c->tls_peer_name ? d->c->tls_peer_name : d->host);
    if (rc == 0 && d->c->wrap)
        rc = d->c->wrap(d->c->wrap_ctx, index, out);
    return rc;
}

int vmt_session_connect(vmt_session **out, const char *host, uint16_t port,
                        const vmt_session_config *c)
{
    tcp_dial d = {host ? host : "127.0.0.1", port, c};
    *out = NULL;
    if (!c)
        return vmt_error_set(VMT_EINVAL, "session: no config");
    return vmt_session_client(out, c, tcp_dial_fn, &d);
}

typedef struct tcp_accept {
    vmt_listener *l;
    const vmt_session_config *c;
} tcp_accept;

static int tcp_accept_fn(void *ctx, uint64_t deadline, vmt_transport **out)
{
    tcp_accept *a = ctx;
    int rc = vmt_listener_accept(a->l, out, vmt_net_left_ms(deadline));
    if (rc == 0)
        rc = wrap_stream(out, a->c, NULL);
    return rc;
}

int vmt_session_accept(vmt_session **out, vmt_listener *l, const vmt_session_config *c)
{
    tcp_accept a = {l, c};
    *out = NULL;
    if (!c)
        return vmt_error_set(VMT_EINVAL, "session: no config");
    return vmt_session_server(out, c, tcp_accept_fn, &a);
}

/* ---- over a URL ----------------------------------------------------------- */

typedef struct url_dial {
    vmt_net_addr a;
    const vmt_session_config *c;
} url_dial;

static int rdma_dial_fn(void *ctx, unsigned index, vmt_transport **out)
{
    url_dial *d = ctx;
    (void)index;
    int rc = vmt_rdma_connect(out, d->a.host, d->a.port, d->c->timeout_ms);
    if (rc == 0)
        rc = wrap_stream(out, d->c, NULL); /* the rate limit; TLS was refused before */
    return rc;
}

int vmt_session_connect_url(vmt_session **out, const char *url, const vmt_session_config *c)
{
    url_dial d = {.c = c};

    *out = NULL;
    if (!c)
        return vmt_error_set(VMT_EINVAL, "session: no config");
    int rc = vmt_net_addr_parse(url, &d.a);
    if (rc)
        return rc;
    if (d.a.port == 0)
        return vmt_error_set(VMT_EINVAL, "address \"%s\": cannot connect to port 0", url);
    if (d.a.scheme == VMT_NET_SCHEME_TCP)
        return vmt_session_connect(out, d.a.host, d.a.port, c);
    if (c->tls)
        return vmt_error_set(VMT_EINVAL, "%s: TLS over rdma:// is not supported", url);
    /* Checked here too so that the refusal names the URL, before any stream. */
    if ((rc = vmt_rdma_probe()) != 0)
        return vmt_error_wrap(rc, "%s", url);
    return vmt_session_client(out, c, rdma_dial_fn, &d);
}

/* ---- bulk placement ------------------------------------------------------- */

int vmt_session_bulk_expose(vmt_session *s, void *ram, size_t len, const vmt_bulk_config *c)
{
    int rc = session_check(s, 0);
    if (rc)
        return rc;
    for (unsigned i = 0; i < s->n; i++)
        if (!vmt_transport_get_ops(s->tp[i])->bulk_expose)
            return vmt_error_set(VMT_EUNSUPPORTED, "stream %u (%s) has no bulk placement", i,
                                 vmt_transport_peer(s->tp[i]));
    for (unsigned i = 0; i < s->n; i++) {
        rc = vmt_transport_bulk_expose(s->tp[i], ram, len, c);
        if ((rc == VMT_EINVAL || rc == VMT_EEXIST) && i == 0)
            return rc; /* refused before anything was exposed (same answer on every stream) */
        if (rc)
            return session_fail(s, rc);
    }
    return 0;
}

bool vmt_session_bulk_can_place(vmt_session *s, unsigned stream)
{
    return session_check(s, stream) == 0 && vmt_transport_bulk_can_place(s->tp[stream]);
}

int vmt_session_bulk_place(vmt_session *s, unsigned stream, uint64_t pfn, const void *pages,
                           size_t npages)
{
    int rc = session_check(s, stream);
    if (rc)
        return rc;
    if (pfn > UINT64_MAX / VMT_NET_PAGE_SIZE || npages > SIZE_MAX / VMT_NET_PAGE_SIZE)
        return vmt_error_set(VMT_EINVAL, "bulk place: page %llu + %zu out of range",
                             (unsigned long long)pfn, npages);
    rc = vmt_transport_bulk_place(s->tp[stream], pfn * VMT_NET_PAGE_SIZE, pages,
                                  npages * VMT_NET_PAGE_SIZE);
    if ((rc == VMT_EINVAL || rc == VMT_EUNSUPPORTED) && !vmt_transport_error(s->tp[stream]))
        return rc; /* refused: nothing was written */
    return rc ? session_fail(s, rc) : 0;
}

int vmt_session_bulk_landed(vmt_session *s, unsigned stream, vmt_page_run *runs, size_t cap,
                            size_t *n)
{
    *n = 0;
    int rc = session_check(s, stream);
    if (rc)
        return rc;
    rc = vmt_transport_bulk_landed(s->tp[stream], runs, cap, n);
    if (rc == VMT_EUNSUPPORTED && !vmt_transport_error(s->tp[stream]))
        return rc;
    return rc ? session_fail(s, rc) : 0;
}
