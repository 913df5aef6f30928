/* Helpers shared by the migrate/net suites (see net_fixture.h). */
#include "net_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- content ------------------------------------------------------------- */

uint64_t net_rand(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

void net_fill(void *p, size_t n, uint64_t seed)
{
    uint8_t *b = p;
    uint64_t s = seed * 0x2545f4914f6cdd1dull + 1;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v = net_rand(&s);
        memcpy(b + i, &v, 8);
    }
    for (; i < n; i++)
        b[i] = (uint8_t)net_rand(&s);
}

void net_page(uint8_t *page, unsigned kind, uint64_t seed)
{
    static const char words[] = "the quick brown fox jumps over the lazy dog; vmtree migrates "
                                "pages of memory between hosts over tcp. ";
    uint64_t s = seed + 1;

    switch (kind % 4) {
    case 0:
        memset(page, 0, VMT_NET_PAGE_SIZE);
        break;
    case 1:
        for (size_t i = 0; i < VMT_NET_PAGE_SIZE; i++)
            page[i] = (uint8_t)words[(i + net_rand(&s) % 3) % (sizeof(words) - 1)];
        break;
    case 2:
        net_fill(page, VMT_NET_PAGE_SIZE, seed);
        break;
    default:
        memset(page, 0, VMT_NET_PAGE_SIZE);
        for (int i = 0; i < 16; i++) {
            uint64_t v = net_rand(&s);
            memcpy(page + (v % (VMT_NET_PAGE_SIZE / 8)) * 8, &v, 8);
        }
        break;
    }
}

/* ---- PKI ------------------------------------------------------------------ */

static char *pki_dir;
static vmt_tls *tls_srv, *tls_cli;
static vmt_ratelimit *buckets[256];
static size_t nbuckets;
static pthread_mutex_t fixture_lock = PTHREAD_MUTEX_INITIALIZER;
static bool cleanup_registered;

static void fixture_cleanup(void)
{
    vmt_tls_free(tls_srv);
    vmt_tls_free(tls_cli);
    for (size_t i = 0; i < nbuckets; i++)
        vmt_ratelimit_free(buckets[i]);
    if (pki_dir) {
        vmt_test_rmtree(pki_dir);
        free(pki_dir);
    }
}

const char *net_pki_dir(void)
{
    pthread_mutex_lock(&fixture_lock);
    if (!pki_dir) {
        pki_dir = vmt_test_tmpdir("net-pki");
        if (!pki_dir || vmt_tls_write_test_pki(pki_dir) != 0) {
            fprintf(stderr, "test PKI: %s\n", vmt_error_last());
            abort();
        }
        if (!cleanup_registered)
            atexit(fixture_cleanup);
        cleanup_registered = true;
    }
    pthread_mutex_unlock(&fixture_lock);
    return pki_dir;
}

const char *net_pki_file(const char *name)
{
    static _Thread_local char path[4096];
    snprintf(path, sizeof(path), "%s/%s", net_pki_dir(), name);
    return path;
}

vmt_tls *net_tls_server(void)
{
    char cert[4096], key[4096];
    snprintf(cert, sizeof(cert), "%s", net_pki_file("server.pem"));
    snprintf(key, sizeof(key), "%s", net_pki_file("server.key"));
    pthread_mutex_lock(&fixture_lock);
    if (!tls_srv) {
        vmt_tls_config c = {.server = true, .cert_file = cert, .key_file = key};
        if (vmt_tls_new(&tls_srv, &c) != 0) {
            fprintf(stderr, "TLS server: %s\n", vmt_error_last());
            abort();
        }
    }
    pthread_mutex_unlock(&fixture_lock);
    return tls_srv;
}

vmt_tls *net_tls_client(void)
{
    char ca[4096];
    snprintf(ca, sizeof(ca), "%s", net_pki_file("ca.pem"));
    pthread_mutex_lock(&fixture_lock);
    if (!tls_cli) {
        vmt_tls_config c = {.server = false, .ca_file = ca};
        if (vmt_tls_new(&tls_cli, &c) != 0) {
            fprintf(stderr, "TLS client: %s\n", vmt_error_last());
            abort();
        }
    }
    pthread_mutex_unlock(&fixture_lock);
    return tls_cli;
}

/* ---- threads ------------------------------------------------------------- */

static void *thread_main(void *arg)
{
    net_thread *t = arg;
    t->rc = t->fn(t->arg);
    if (t->rc)
        snprintf(t->msg, sizeof(t->msg), "%s", vmt_error_last());
    return NULL;
}

void net_spawn(net_thread *t, int (*fn)(void *arg), void *arg)
{
    t->fn = fn;
    t->arg = arg;
    t->rc = 0;
    t->msg[0] = '\0';
    if (pthread_create(&t->tid, NULL, thread_main, t) != 0)
        abort();
}

int net_join(net_thread *t)
{
    pthread_join(t->tid, NULL);
    return t->rc;
}

/* ---- transport pairs ----------------------------------------------------- */

typedef struct accept_job {
    vmt_listener *l;
    vmt_transport *t;
    bool tls;
} accept_job;

static int accept_fn(void *arg)
{
    accept_job *j = arg;
    int rc = vmt_listener_accept(j->l, &j->t, NET_TIMEOUT_MS);
    if (rc == 0 && j->tls) {
        vmt_transport *raw = j->t;
        j->t = NULL;
        rc = vmt_transport_tls(&j->t, raw, net_tls_server(), NULL);
    }
    return rc;
}

/* Listens on host, connects from here while a thread accepts. */
static int pair_over(const char *host, bool tls, vmt_transport **a, vmt_transport **b)
{
    vmt_listener *l = NULL;
    net_thread th;
    accept_job job = {0};

    *a = *b = NULL;
    int rc = vmt_tcp_listen(&l, host, 0);
    if (rc)
        return rc;
    job.l = l;
    job.tls = tls;
    net_spawn(&th, accept_fn, &job);
    rc = vmt_tcp_connect(a, host, vmt_listener_port(l), NET_TIMEOUT_MS);
    if (rc == 0 && tls) {
        vmt_transport *raw = *a;
        *a = NULL;
        rc = vmt_transport_tls(a, raw, net_tls_client(), host);
    }
    int arc = net_join(&th);
    vmt_listener_close(l);
    if (rc || arc) {
        vmt_transport_close(*a);
        vmt_transport_close(job.t);
        *a = NULL;
        if (!rc)
            vmt_error_set(arc, "accept side: %s", th.msg);
        return rc ? rc : arc;
    }
    *b = job.t;
    return 0;
}

int net_pair_tcp(vmt_transport **a, vmt_transport **b)
{
    return pair_over("127.0.0.1", false, a, b);
}

int net_pair_tcp6(vmt_transport **a, vmt_transport **b)
{
    return pair_over("::1", false, a, b);
}

int net_pair_socketpair(vmt_transport **a, vmt_transport **b)
{
    return vmt_transport_socketpair(a, b);
}

int net_pair_mem(vmt_transport **a, vmt_transport **b)
{
    return vmt_transport_mem_pair(a, b, 0);
}

int net_pair_tls(vmt_transport **a, vmt_transport **b)
{
    return pair_over("127.0.0.1", true, a, b);
}

static vmt_ratelimit *new_bucket(void)
{
    vmt_ratelimit *r = NULL;
    if (vmt_ratelimit_new(&r, NET_RATE_BPS, 0) != 0)
        abort();
    pthread_mutex_lock(&fixture_lock);
    if (nbuckets == VMT_ARRAY_SIZE(buckets))
        abort();
    if (!cleanup_registered)
        atexit(fixture_cleanup);
    cleanup_registered = true;
    buckets[nbuckets++] = r;
    pthread_mutex_unlock(&fixture_lock);
    return r;
}

int net_pair_rate(vmt_transport **a, vmt_transport **b)
{
    vmt_transport *ra = NULL, *rb = NULL;
    int rc = net_pair_tcp(&ra, &rb);
    if (rc)
        return rc;
    rc = vmt_transport_rate(a, ra, new_bucket());
    if (rc) {
        vmt_transport_close(rb);
        return rc;
    }
    rc = vmt_transport_rate(b, rb, new_bucket());
    if (rc) {
        vmt_transport_close(*a);
        *a = NULL;
    }
    return rc;
}

int net_pair_fault(vmt_transport **a, vmt_transport **b)
{
    vmt_transport *ra = NULL, *rb = NULL;
    vmt_fault_opts o;
    vmt_fault_opts_init(&o);
    int rc = net_pair_tcp(&ra, &rb);
    if (rc)
        return rc;
    rc = vmt_transport_fault(a, ra, &o);
    if (rc) {
        vmt_transport_close(rb);
        return rc;
    }
    rc = vmt_transport_fault(b, rb, &o);
    if (rc) {
        vmt_transport_close(*a);
        *a = NULL;
    }
    return rc;
}

const char *net_rdma_addr(void)
{
    const char *a = getenv("VMTREE_RDMA_ADDR");
    return a && *a ? a : "127.0.0.1";
}

typedef struct rdma_accept_job {
    vmt_listener *l;
    vmt_transport *t;
} rdma_accept_job;

static int rdma_accept_fn(void *arg)
{
    rdma_accept_job *j = arg;
    return vmt_listener_accept(j->l, &j->t, NET_TIMEOUT_MS);
}

int net_pair_rdma(vmt_transport **a, vmt_transport **b)
{
    vmt_listener *l = NULL;
    rdma_accept_job job = {0};
    net_thread th;

    *a = *b = NULL;
    int rc = vmt_rdma_listen(&l, net_rdma_addr(), 0);
    if (rc)
        return rc;
    job.l = l;
    net_spawn(&th, rdma_accept_fn, &job);
    rc = vmt_rdma_connect(a, net_rdma_addr(), vmt_listener_port(l), NET_TIMEOUT_MS);
    int arc = net_join(&th);
    vmt_listener_close(l);
    if (rc || arc) {
        vmt_transport_close(*a);
        vmt_transport_close(job.t);
        *a = NULL;
        if (!rc)
            vmt_error_set(arc, "accept side: %s", th.msg);
        return rc ? rc : arc;
    }
    *b = job.t;
    return 0;
}

/* ---- session pairs ------------------------------------------------------- */

typedef struct server_job {
    vmt_listener *l;
    const vmt_session_config *c;
    vmt_session *s;
} server_job;

static int server_fn(void *arg)
{
    server_job *j = arg;
    return vmt_session_accept(&j->s, j->l, j->c);
}

int net_session_pair_tcp(net_session_pair *p, const vmt_session_config *client,
                         const vmt_session_config *server)
{
    vmt_listener *l = NULL;
    net_thread th;

    memset(p, 0, sizeof(*p));
    int rc = vmt_tcp_listen(&l, "127.0.0.1", 0);
    if (rc)
        return rc;
    server_job job = {l, server, NULL};
    net_spawn(&th, server_fn, &job);
    p->client_rc = vmt_session_connect(&p->client, "127.0.0.1", vmt_listener_port(l), client);
    if (p->client_rc)
        snprintf(p->client_msg, sizeof(p->client_msg), "%s", vmt_error_last());
    p->server_rc = net_join(&th);
    snprintf(p->server_msg, sizeof(p->server_msg), "%s", th.msg);
    p->server = job.s;
    vmt_listener_close(l);
    return p->client_rc ? p->client_rc : p->server_rc;
}

void net_session_pair_close(net_session_pair *p)
{
    vmt_session_close(p->client);
    vmt_session_close(p->server);
    p->client = p->server = NULL;
}

/* ---- sessions over in-memory streams ------------------------------------------ */

void net_mem_link_init(net_mem_link *l, size_t capacity)
{
    memset(l, 0, sizeof(*l));
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->cond, NULL);
    l->capacity = capacity;
}

int net_mem_dial(void *ctx, unsigned index, vmt_transport **out)
{
    net_mem_link *l = ctx;
    vmt_transport *peer = NULL;
    (void)index;
    int rc = vmt_transport_mem_pair(out, &peer, l->capacity);
    if (rc)
        return rc;
    pthread_mutex_lock(&l->lock);
    l->pending[l->n++] = peer;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->lock);
    return 0;
}

int net_mem_accept(void *ctx, uint64_t deadline, vmt_transport **out)
{
    net_mem_link *l = ctx;
    pthread_mutex_lock(&l->lock);
    while (l->taken == l->n && vmt_now_ns() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&l->cond, &l->lock, &ts);
    }
    int rc = l->taken < l->n ? 0 : vmt_error_set(VMT_ETIMEDOUT, "no stream");
    if (rc == 0)
        *out = l->pending[l->taken++];
    pthread_mutex_unlock(&l->lock);
    return rc;
}
