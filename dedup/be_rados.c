/*
 * The RADOS backend (docs/store-backends.md): the store's names are objects
 * of one pool and namespace, written through librados.
 *
 *   rados://POOL[/NAMESPACE][?conf=PATH][&id=CLIENT][&lock_timeout=S][&op_timeout=S]
 *                           [&cache=DIR|off][&cache_size=SIZE][&mem=SIZE]
 *
 * Packs are objects of pack-size bytes (several MiB: one object per page
 * would cost a round trip per page); an append is one compound write
 * operation (every piece or none).  A write is acknowledged only once it is
 * durable on the pool's replicas, so sync and sync_folder have nothing left
 * to do.  Small objects (STORE, index, dictionaries) are staged in memory
 * and replaced with one write_full, which RADOS applies atomically.  A
 * pack's read-only view is an anonymous mapping filled with one read at
 * open; writes through the handle are copied into it.  The writer lock is in
 * be_rados_lock.c.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <rados/librados.h>

#include "backend.h"
#include "be_rados.h"
#include "internal.h"

#define RADOS_IO_CHUNK (8u << 20)     /* bytes per read request */
#define RADOS_STAGE_MAX (96u << 20)   /* below osd_max_object_size (128 MiB) */
#define RADOS_OP_TIMEOUT_DEFAULT 30u  /* seconds before a stuck request fails */
/* Packs are objects: well below osd_max_object_size (128 MiB by default),
 * leaving room for a 16 MiB object past the seal and the markers. */
#define RADOS_PACK_MAX (64ull << 20)
#define RADOS_PACK_DEFAULT (16ull << 20)
#define RADOS_NOTIFY_MS 2000u /* how long a ref update waits for watchers' acks */

typedef struct dd_rados_notify dd_rados_notify; /* a bounded notify (rb_ref_cas) */
static void notify_drain(rados_be *b);

struct dd_bfile {
    rados_be *b;
    char name[DD_NAME_MAX];
    bool staged;      /* DD_BF_REPLACE: bytes collect in buf until publish */
    uint8_t *buf;     /* staged bytes */
    size_t len, cap;  /* staged length and capacity */
    uint64_t size;    /* object size: stat at open, then tracked (one writer) */
    uint8_t *view;    /* the latest view handed out by map (writes copy into it) */
    size_t view_len;
};

int dd_rados_err(int r, const char *what, const char *name)
{
    int code = r == -ENOENT ? VMT_ENOENT
               : r == -EEXIST ? VMT_EEXIST
               : r == -ETIMEDOUT ? VMT_ETIMEDOUT
               : r == -EBUSY ? VMT_EBUSY
                             : VMT_EIO;
    return vmt_error_errno(code, -r, "rados: %s %s", what, name);
}

/* An operation that got no answer within op_timeout fails with VMT_EIO
 * naming the object and the timeout.  The handle remembers it: such a write
 * may still land later, so close must not claim a clean release (the next
 * writer then fences this client before it writes; be_rados_lock.c). */
int dd_rados_fail(rados_be *b, int r, const char *what, const char *name)
{
    if (r != -ETIMEDOUT)
        return dd_rados_err(r, what, name);
    __atomic_store_n(&b->timed_out, 1, __ATOMIC_RELEASE);
    /* Fetches waiting for room in the bound on bytes in flight give up too
     * (be_rados_read.c): the requests ahead of them failed the same way. */
    pthread_mutex_lock(&b->fetch_mu);
    b->timeouts++;
    pthread_cond_broadcast(&b->fetch_cv);
    pthread_mutex_unlock(&b->fetch_mu);
    return vmt_error_set(VMT_EIO,
                         "rados: %s %s: no answer from the cluster within %u s (op_timeout; "
                         "is an OSD or a monitor down?)",
                         what, name, b->op_timeout);
}

/* ---- location parsing ---- */

typedef struct rados_loc {
    char pool[128], ns[128], conf[1024], id[64];
    unsigned lock_timeout, op_timeout;
    rados_read_cfg rd; /* cache=, cache_size=, mem= (be_rados_read.c) */
} rados_loc;

static int copy_field(char *dst, size_t cap, const char *src, size_t n, const char *what)
{
    if (n == 0 || n >= cap)
        return vmt_error_set(VMT_EINVAL, "rados location: %s is empty or longer than %zu bytes",
                             what, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
    return 0;
}

static int parse_seconds(const char *what, unsigned min, const char *v, size_t n, unsigned *out)
{
    char buf[16];
    uint64_t t;
    if (copy_field(buf, sizeof(buf), v, n, what) != 0 || vmt_parse_u64(buf, min, 3600, &t) != 0)
        return vmt_error_set(VMT_EINVAL, "rados location: %s is %u..3600 seconds", what, min);
    *out = (unsigned)t;
    return 0;
}

static int parse_query(rados_loc *l, const char *q)
{
    while (q && *q) {
        const char *amp = strchr(q, '&');
        size_t n = amp ? (size_t)(amp - q) : strlen(q);
        int rc;
        if (n > 5 && strncmp(q, "conf=", 5) == 0)
            rc = copy_field(l->conf, sizeof(l->conf), q + 5, n - 5, "conf");
        else if (n > 3 && strncmp(q, "id=", 3) == 0)
            rc = copy_field(l->id, sizeof(l->id), q + 3, n - 3, "id");
        else if (n > 13 && strncmp(q, "lock_timeout=", 13) == 0)
            rc = parse_seconds("lock_timeout", 3, q + 13, n - 13, &l->lock_timeout);
        else if (n > 11 && strncmp(q, "op_timeout=", 11) == 0)
            rc = parse_seconds("op_timeout", 1, q + 11, n - 11, &l->op_timeout);
        else if ((rc = dd_rados_read_param(&l->rd, q, n)) == 1)
            rc = vmt_error_set(VMT_EINVAL,
                               "rados location: unknown parameter '%.*s' (known: "
                               "conf=PATH, id=CLIENT, lock_timeout=SECONDS, "
                               "op_timeout=SECONDS, cache=DIR|off, cache_size=SIZE, mem=SIZE)",
                               (int)n, q);
        if (rc != 0)
            return rc;
        q = amp ? amp + 1 : NULL;
    }
    return 0;
}

static int parse_url(const char *url, rados_loc *l)
{
    memset(l, 0, sizeof(*l));
    const char *p = url + 8; /* after "rados://" */
    const char *q = strchr(p, '?');
    size_t plen = q ? (size_t)(q - p) : strlen(p);
    const char *sl = memchr(p, '/', plen);
    int rc = copy_field(l->pool, sizeof(l->pool), p, sl ? (size_t)(sl - p) : plen, "pool");
    if (rc == 0 && sl)
        rc = copy_field(l->ns, sizeof(l->ns), sl + 1, plen - (size_t)(sl + 1 - p), "namespace");
    if (rc == 0)
        rc = parse_query(l, q ? q + 1 : NULL);
    if (rc == 0 && !l->id[0])
        snprintf(l->id, sizeof(l->id), "admin");
    if (rc != 0)
        return vmt_error_wrap(rc, "%s (expected rados://POOL[/NAMESPACE][?conf=PATH][&id=CLIENT])",
                              url);
    return 0;
}

/* ---- connection ---- */

/*
 * rados_connect on a thread of its own.  librados draws the client's
 * address nonce from a random engine kept per thread and seeded on first
 * use, so a process forked from one that had connected draws the same
 * nonces as its parent: both then reach the cluster under one address, and
 * fencing one (an OSD blocklist entry) fences the other too (seen: a parent
 * that took the lock over from a child it had killed blocklisted itself,
 * ESHUTDOWN on every later request).  A new thread seeds a new engine.
 */
typedef struct connect_job {
    rados_t cluster;
    int r;
} connect_job;

static void *connect_thread(void *arg)
{
    connect_job *j = arg;
    j->r = rados_connect(j->cluster);
    return NULL;
}

static int connect_fresh(rados_t cluster)
{
    connect_job j = {.cluster = cluster, .r = -EIO};
    pthread_t t;
    if (pthread_create(&t, NULL, connect_thread, &j) != 0)
        return rados_connect(cluster); /* no thread: the nonce may repeat a parent's */
    pthread_join(t, NULL);
    return j.r;
}

/* A cluster handle and an ioctx on the location's pool and namespace, with
 * op_timeout set. */
static int connect_cluster(rados_be *b, const rados_loc *l, rados_t *cluster, rados_ioctx_t *io)
{
    int r = rados_create(cluster, l->id);
    if (r < 0)
        return dd_rados_err(r, "creating a cluster handle for client", l->id);
    r = rados_conf_read_file(*cluster, l->conf[0] ? l->conf : NULL);
    if (r < 0)
        return dd_rados_err(r, "reading the configuration", l->conf[0] ? l->conf : "(default search path)");
    rados_conf_parse_env(*cluster, NULL);
    /* A stopped OSD or monitor must fail a request, not hang it forever
     * (librados waits without limit by default). */
    char secs[16];
    snprintf(secs, sizeof(secs), "%u", b->op_timeout);
    const char *opts[] = {"rados_osd_op_timeout", "rados_mon_op_timeout", "client_mount_timeout"};
    for (size_t i = 0; i < VMT_ARRAY_SIZE(opts); i++) {
        if ((r = rados_conf_set(*cluster, opts[i], secs)) < 0)
            return dd_rados_err(r, "setting", opts[i]);
    }
    if ((r = connect_fresh(*cluster)) < 0)
        return dd_rados_err(r, "connecting to the cluster of", l->conf[0] ? l->conf : "(default conf)");
    if ((r = rados_ioctx_create(*cluster, l->pool, io)) < 0) {
        *io = NULL;
        if (r == -ENOENT)
            return vmt_error_set(VMT_ENOENT, "rados: pool %s does not exist (create it with "
                                             "'ceph osd pool create %s')", l->pool, l->pool);
        return dd_rados_err(r, "opening pool", l->pool);
    }
    rados_ioctx_set_namespace(*io, l->ns[0] ? l->ns : NULL);
    return 0;
}

/*
 * Whole-object fetches read through a second cluster handle: its own
 * connection to each OSD, so that a small read on the handle's own
 * connection (a lazy restore's fault) is not queued behind fetch replies on
 * the socket (docs/store-backends.md, "Reads").  It is connected by a
 * thread started at open (connecting costs 15-70 ms here, which a lazy
 * restore's first fetch, right after open, would otherwise wait for).
 * Without it (it could not connect), fetches share the handle's connection.
 */
static void connect_fetch(rados_be *b)
{
    rados_loc l;
    rados_t cluster = NULL;
    rados_ioctx_t io = NULL;
    int rc = parse_url(b->url, &l);
    if (rc == 0 && (rc = connect_cluster(b, &l, &cluster, &io)) != 0) {
        if (io)
            rados_ioctx_destroy(io);
        if (cluster)
            rados_shutdown(cluster);
        cluster = io = NULL;
    }
    if (rc != 0)
        vmt_warn("%s: fetching packs over the store's own connection: %s", b->url,
                 vmt_error_last());
    pthread_mutex_lock(&b->fconn_mu);
    b->fcluster = cluster;
    b->fio = io;
    b->fconn_done = true;
    pthread_cond_broadcast(&b->fconn_cv);
    pthread_mutex_unlock(&b->fconn_mu);
}

static void *connect_fetch_main(void *arg)
{
    connect_fetch(arg);
    return NULL;
}

rados_ioctx_t dd_rados_fetch_io(rados_be *b)
{
    pthread_mutex_lock(&b->fconn_mu);
    bool mine = !b->fconn_started;
    b->fconn_started = true; /* no thread (it could not start): this caller connects */
    pthread_mutex_unlock(&b->fconn_mu);
    if (mine)
        connect_fetch(b);
    pthread_mutex_lock(&b->fconn_mu);
    while (!b->fconn_done)
        pthread_cond_wait(&b->fconn_cv, &b->fconn_mu);
    rados_ioctx_t io = b->fio && !b->fio_off ? b->fio : b->io;
    pthread_mutex_unlock(&b->fconn_mu);
    return io;
}

/* ops->reads_ahead: the fetches' connection, made behind the caller
 * (dd_rados_fetch_io waits for it, or connects itself when this never
 * ran). */
static void rb_reads_ahead(dd_backend *base)
{
    rados_be *b = (rados_be *)base;
    pthread_mutex_lock(&b->fconn_mu);
    if (!b->fconn_started)
        b->fconn_thread = b->fconn_started =
            pthread_create(&b->fconn_thr, NULL, connect_fetch_main, b) == 0;
    pthread_mutex_unlock(&b->fconn_mu);
}

/* Seen: after an OSD stopped and came back, a second handle whose requests
 * had timed out kept timing out (the handle's own connection recovered),
 * so after a timeout the fetches go back to the handle's connection for
 * the rest of its life. */
void dd_rados_fetch_timed_out(rados_be *b, rados_ioctx_t io)
{
    pthread_mutex_lock(&b->fconn_mu);
    if (io == b->fio)
        b->fio_off = true;
    pthread_mutex_unlock(&b->fconn_mu);
}

/* ---- files ---- */

static int rb_open(dd_backend *base, const char *name, dd_bmode mode, dd_bfile **out)
{
    rados_be *b = (rados_be *)base;
    if (strlen(name) >= sizeof(((dd_bfile *)0)->name))
        return vmt_error_set(VMT_EINVAL, "rados: object name %s too long", name);
    int rc = 0;
    uint64_t size = 0;
    if (mode == DD_BF_READ || mode == DD_BF_WRITE) {
        time_t mtime;
        __atomic_add_fetch(&b->ctr.stats, 1, __ATOMIC_RELAXED);
        int r = rados_stat(b->io, name, &size, &mtime);
        if (r < 0)
            rc = r == -ENOENT ? vmt_error_set(VMT_ENOENT, "%s: %s does not exist", b->url, name)
                              : dd_rados_fail(b, r, "stat of", name);
    } else if (mode == DD_BF_CREATE) {
        rados_write_op_t op = rados_create_write_op();
        rados_write_op_create(op, LIBRADOS_CREATE_EXCLUSIVE, NULL);
        int r = rados_write_op_operate(op, b->io, name, NULL, 0);
        rados_release_write_op(op);
        if (r < 0)
            rc = dd_rados_fail(b, r, "creating", name);
    }
    if (rc != 0)
        return rc;
    dd_bfile *f = calloc(1, sizeof(*f));
    if (!f)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    f->b = b;
    f->staged = mode == DD_BF_REPLACE;
    f->size = size;
    snprintf(f->name, sizeof(f->name), "%s", name);
    *out = f;
    return 0;
}

/* The store has one writer, so the size seen at open plus this handle's
 * own writes is the size: no round trip. */
static int rb_size(dd_bfile *f, uint64_t *out)
{
    *out = f->staged ? f->len : f->size;
    return 0;
}

static int rb_pread(dd_bfile *f, void *buf, size_t len, uint64_t off, size_t *got)
{
    size_t n = 0;
    while (n < len) {
        size_t want = VMT_MIN(len - n, (size_t)RADOS_IO_CHUNK);
        __atomic_add_fetch(&f->b->ctr.reads, 1, __ATOMIC_RELAXED);
        int r = rados_read(f->b->io, f->name, (char *)buf + n, want, off + n);
        if (r < 0)
            return dd_rados_fail(f->b, r, "reading", f->name);
        n += (size_t)r;
        if ((size_t)r < want)
            break; /* the object's end */
    }
    *got = n;
    return 0;
}

static int stage(dd_bfile *f, const struct iovec *iov, int n, uint64_t off)
{
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += iov[i].iov_len;
    if (off > RADOS_STAGE_MAX || total > RADOS_STAGE_MAX - off)
        return vmt_error_set(VMT_ERANGE, "rados: %s would exceed %u MiB, the largest object this "
                                         "backend writes whole", f->name, RADOS_STAGE_MAX >> 20);
    size_t end = (size_t)off + total;
    if (end > f->cap) {
        size_t ncap = VMT_MAX(end, f->cap * 2);
        uint8_t *nb = realloc(f->buf, ncap);
        if (!nb)
            return vmt_error_set(VMT_ENOMEM, "out of memory staging %s", f->name);
        f->buf = nb;
        f->cap = ncap;
    }
    if (off > f->len)
        memset(f->buf + f->len, 0, (size_t)off - f->len);
    for (int i = 0; i < n; i++) {
        memcpy(f->buf + off, iov[i].iov_base, iov[i].iov_len);
        off += iov[i].iov_len;
    }
    f->len = VMT_MAX(f->len, end);
    return 0;
}

/* One compound operation: RADOS applies all the pieces or none. */
static int rb_pwritev(dd_bfile *f, const struct iovec *iov, int n, uint64_t off)
{
    if (f->staged)
        return stage(f, iov, n, off);
    int rc = dd_rados_may_write(f->b);
    if (rc != 0)
        return rc;
    rados_write_op_t op = rados_create_write_op();
    if (!op)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    uint64_t at = off;
    for (int i = 0; i < n; i++) {
        if (iov[i].iov_len > UINT_MAX) {
            rados_release_write_op(op);
            return vmt_error_set(VMT_ERANGE, "rados: a write piece of %zu bytes", iov[i].iov_len);
        }
        rados_write_op_write(op, iov[i].iov_base, iov[i].iov_len, at);
        at += iov[i].iov_len;
    }
    int r = rados_write_op_operate(op, f->b->io, f->name, NULL, 0);
    rados_release_write_op(op);
    if (r < 0)
        return dd_rados_fail(f->b, r, "writing", f->name);
    f->size = VMT_MAX(f->size, at);
    at = off;
    for (int i = 0; i < n && f->view; i++) {
        if (at + iov[i].iov_len <= f->view_len)
            memcpy(f->view + at, iov[i].iov_base, iov[i].iov_len);
        at += iov[i].iov_len;
    }
    return 0;
}

/* RADOS acknowledges a write once it is durable: nothing left to flush. */
static int rb_sync(dd_bfile *f)
{
    (void)f;
    return 0;
}

static int rb_truncate(dd_bfile *f, uint64_t len)
{
    if (dd_rados_may_write(f->b) != 0)
        return VMT_EBUSY;
    int r = rados_trunc(f->b->io, f->name, len);
    if (r < 0)
        return dd_rados_fail(f->b, r, "truncating", f->name);
    f->size = len;
    return 0;
}

static int rb_map(dd_bfile *f, size_t len, uint8_t **out)
{
    uint64_t size = 0;
    int rc = rb_size(f, &size);
    if (rc != 0)
        return rc;
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (m == MAP_FAILED)
        return vmt_error_errno(VMT_ENOMEM, errno, "rados: %zu bytes for a view of %s", len,
                               f->name);
    size_t want = (size_t)VMT_MIN(size, (uint64_t)len);
    rc = dd_rados_read_all(f->b, f->name, m, want);
    if (rc != 0) {
        munmap(m, len);
        return rc;
    }
    f->view = m;
    f->view_len = len;
    *out = m;
    return 0;
}

static void rb_unmap(dd_backend *b, uint8_t *p, size_t len)
{
    (void)b;
    if (p)
        munmap(p, len);
}

static void rb_close(dd_bfile *f)
{
    if (!f)
        return;
    free(f->buf);
    free(f);
}

static int rb_publish(dd_bfile *f)
{
    int rc = 0;
    if (!f->staged)
        rc = vmt_error_set(VMT_ERR, "internal: publish of a plain object");
    if (rc == 0)
        rc = dd_rados_may_write(f->b);
    if (rc == 0) {
        int r = rados_write_full(f->b->io, f->name, (const char *)f->buf, f->len);
        if (r < 0)
            rc = dd_rados_fail(f->b, r, "writing", f->name);
    }
    rb_close(f);
    return rc;
}

static int rb_remove(dd_backend *base, const char *name)
{
    rados_be *b = (rados_be *)base;
    if (dd_rados_may_write(b) != 0)
        return VMT_EBUSY;
    int r = rados_remove(b->io, name);
    return r < 0 && r != -ENOENT ? dd_rados_fail(b, r, "removing", name) : 0;
}

/* Lists the namespace; "." means every object, else the folder's. */
static int rb_list(dd_backend *base, const char *folder, dd_blist_fn fn, void *ctx)
{
    rados_be *b = (rados_be *)base;
    rados_list_ctx_t lc;
    size_t flen = strcmp(folder, ".") ? strlen(folder) : 0;
    int r = rados_nobjects_list_open(b->io, &lc);
    if (r < 0)
        return dd_rados_fail(b, r, "listing", b->url);
    int rc = 0;
    const char *entry;
    while (rc == 0 && (r = rados_nobjects_list_next(lc, &entry, NULL, NULL)) == 0) {
        if (!flen)
            rc = fn(ctx, entry);
        else if (strncmp(entry, folder, flen) == 0 && entry[flen] == '/')
            rc = fn(ctx, entry + flen + 1);
    }
    rados_nobjects_list_close(lc);
    if (rc == 0 && r < 0 && r != -ENOENT)
        rc = dd_rados_fail(b, r, "listing", b->url);
    return rc;
}

static int rb_sync_folder(dd_backend *b, const char *folder)
{
    (void)b;
    (void)folder;
    return 0; /* creations and removals are durable when acknowledged */
}

static int refuse_entry(void *ctx, const char *name)
{
    return vmt_error_set(VMT_EEXIST, "%s is not empty (found object '%s')", (const char *)ctx,
                         name);
}

static int rb_init(dd_backend *base)
{
    rados_be *b = (rados_be *)base;
    uint64_t size;
    time_t mtime;
    int r = rados_stat(b->io, DD_STORE_FILE, &size, &mtime);
    if (r == 0)
        return vmt_error_set(VMT_EEXIST, "%s already holds a store", b->url);
    if (r != -ENOENT)
        return dd_rados_fail(b, r, "stat of", DD_STORE_FILE);
    return rb_list(base, ".", refuse_entry, b->url);
}

static void rb_destroy(dd_backend *base)
{
    rados_be *b = (rados_be *)base;
    if (!b)
        return;
    dd_rados_unlock(b);
    dd_pcache_close(b->cache);
    if (b->fconn_thread)
        pthread_join(b->fconn_thr, NULL);
    if (b->fio)
        rados_ioctx_destroy(b->fio);
    if (b->fcluster)
        rados_shutdown(b->fcluster);
    if (b->io)
        rados_ioctx_destroy(b->io);
    if (b->cluster)
        rados_shutdown(b->cluster);
    notify_drain(b); /* no notify callback runs after shutdown */
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->fetch_mu);
    pthread_cond_destroy(&b->fetch_cv);
    pthread_mutex_destroy(&b->fconn_mu);
    pthread_cond_destroy(&b->fconn_cv);
    free(b->url);
    free(b);
}

static int rb_purge(dd_backend *base)
{
    rados_be *b = (rados_be *)base;
    int rc = dd_rados_idx_remove(b);
    dd_rados_unlock(b);
    if (rc == 0)
        rc = rb_remove(base, DD_LOCK_FILE);
    rb_destroy(base);
    return rc;
}

/*
 * A notify waited for at most op_timeout + the watchers' ack time.  librados
 * waits for a notify's completion without limit (the op timeouts do not
 * cover it): an OSD that stops mid-notify hung the ref update until the OSD
 * came back.  A notify given up on stays pending in librados; its waiter is
 * kept on the handle (the callback may still come) and freed after
 * rados_shutdown, when no callback can run.
 */
/* Under LeakSanitizer, what librados allocates for a notify is not
 * reported when the notify never ends: a process that closes its store
 * while an OSD is down leaves the op pending inside librados, which keeps
 * (and at rados_shutdown leaks) its state.  Not ours to free; everything
 * else librados allocates is still checked. */
#if defined(__SANITIZE_ADDRESS__)
#define RB_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RB_LSAN 1
#endif
#endif
#ifdef RB_LSAN
#include <sanitizer/lsan_interface.h>
#define RB_LSAN_OFF() __lsan_disable()
#define RB_LSAN_ON() __lsan_enable()
#else
#define RB_LSAN_OFF() ((void)0)
#define RB_LSAN_ON() ((void)0)
#endif

struct dd_rados_notify {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    dd_rados_notify *next; /* rados_be.abandoned */
};

static void notify_free(dd_rados_notify *w)
{
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

static void notify_drain(rados_be *b)
{
    while (b->abandoned) {
        dd_rados_notify *w = b->abandoned;
        b->abandoned = w->next;
        notify_free(w);
    }
}

static void notify_done(rados_completion_t c, void *arg)
{
    dd_rados_notify *w = arg;
    (void)c;
    pthread_mutex_lock(&w->mu);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void notify_bounded(rados_be *b, const char *name)
{
    rados_completion_t c = NULL;
    dd_rados_notify *w = calloc(1, sizeof(*w));
    if (!w)
        return;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    RB_LSAN_OFF();
    int r = rados_aio_create_completion2(w, notify_done, &c);
    if (r == 0)
        r = rados_aio_notify(b->io, name, c, NULL, 0, RADOS_NOTIFY_MS, NULL, NULL);
    RB_LSAN_ON();
    if (r < 0) {
        if (c)
            rados_aio_release(c);
        notify_free(w); /* never submitted: no callback */
        return;
    }
    unsigned secs = b->op_timeout + RADOS_NOTIFY_MS / 1000 + 1;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)secs;
    pthread_mutex_lock(&w->mu);
    while (!w->done && pthread_cond_timedwait(&w->cv, &w->mu, &until) == 0)
        ;
    bool done = w->done;
    pthread_mutex_unlock(&w->mu);
    rados_aio_release(c); /* librados keeps it until the op ends */
    if (done) {
        notify_free(w);
        return;
    }
    vmt_warn("%s: no answer to the notify of %s within %u s: its watchers may learn of the "
             "update late",
             b->url, name, secs);
    pthread_mutex_lock(&b->mu);
    w->next = b->abandoned;
    b->abandoned = w;
    pthread_mutex_unlock(&b->mu);
}

/* One compound op: the version check (exclusive create for the first) and
 * the new content, applied together or not at all. */
static int rb_ref_cas(dd_backend *base, const char *name, uint64_t expect, const uint8_t *rec,
                      size_t len)
{
    rados_be *b = (rados_be *)base;
    uint8_t exp[8];
    int cmp = 0;
    memcpy(exp, &expect, 8);
    rados_write_op_t op = rados_create_write_op();
    if (!op)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    if (expect == 0)
        rados_write_op_create(op, LIBRADOS_CREATE_EXCLUSIVE, NULL);
    else
        rados_write_op_cmpext(op, (const char *)exp, 8, 0, &cmp);
    rados_write_op_write_full(op, (const char *)rec, len);
    int r = rados_write_op_operate(op, b->io, name, NULL, 0);
    rados_release_write_op(op);
    /* cmpext reports a mismatch as -MAX_ERRNO - offset */
    if (r == -EEXIST || r == -ENOENT || r <= -4095)
        return VMT_EBUSY;
    if (r < 0)
        return dd_rados_fail(b, r, "updating", name);
    /* Watchers elsewhere learn of it (ref_watch).  The update stands
     * whatever the notify says: a dead watcher only costs its timeout. */
    notify_bounded(b, name);
    return 0;
}

static int rb_ref_notify(dd_backend *base, const char *name)
{
    notify_bounded((rados_be *)base, name);
    return 0;
}

typedef struct ref_watcher {
    rados_be *b;
    uint64_t cookie;
    void (*fn)(void *ctx);
    void *ctx;
    char oid[64];
} ref_watcher;

static void on_notify(void *arg, uint64_t notify_id, uint64_t handle, uint64_t notifier_id,
                      void *data, size_t len)
{
    ref_watcher *w = arg;
    (void)notifier_id;
    (void)data;
    (void)len;
    rados_notify_ack(w->b->io, w->oid, notify_id, handle, NULL, 0);
    w->fn(w->ctx);
}

static void on_watch_error(void *arg, uint64_t cookie, int err)
{
    ref_watcher *w = arg;
    (void)cookie;
    vmt_warn("%s: the watch of %s broke (%s); updates may be missed until watched again",
             w->b->url, w->oid, strerror(-err));
    w->fn(w->ctx); /* the caller reads the ref again */
}

static int rb_ref_watch(dd_backend *base, const char *name, void (*fn)(void *ctx), void *ctx,
                        void **handle)
{
    rados_be *b = (rados_be *)base;
    ref_watcher *w = calloc(1, sizeof(*w));
    if (!w)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    *w = (ref_watcher){.b = b, .fn = fn, .ctx = ctx};
    snprintf(w->oid, sizeof(w->oid), "%s", name);
    int r = rados_watch2(b->io, w->oid, &w->cookie, on_notify, on_watch_error, w);
    if (r < 0) {
        free(w);
        return dd_rados_fail(b, r, "watching", name);
    }
    *handle = w;
    return 0;
}

static void rb_ref_unwatch(dd_backend *base, void *handle)
{
    rados_be *b = (rados_be *)base;
    ref_watcher *w = handle;
    if (!w)
        return;
    rados_unwatch2(b->io, w->cookie);
    rados_watch_flush(b->cluster); /* no callback runs after this */
    free(w);
}

static const dd_backend_ops rados_ops = {
    .scheme = "rados",
    .init = rb_init,
    .open = rb_open,
    .size = rb_size,
    .pread = rb_pread,
    .pwritev = rb_pwritev,
    .sync = rb_sync,
    .truncate = rb_truncate,
    .map = rb_map,
    .unmap = rb_unmap,
    .publish = rb_publish,
    .close = rb_close,
    .remove = rb_remove,
    .list = rb_list,
    .sync_folder = rb_sync_folder,
    .lock = dd_rados_lock,
    .purge = rb_purge,
    .ref_cas = rb_ref_cas,
    .ref_watch = rb_ref_watch,
    .ref_unwatch = rb_ref_unwatch,
    .ref_notify = rb_ref_notify,
    .destroy = rb_destroy,
    .idx_shards = DD_RADOS_IDX_SHARDS,
    .idx_add = dd_rados_idx_add,
    .idx_load = dd_rados_idx_load,
    .map_sealed = dd_rados_map_sealed,
    .cache_counters = dd_rados_cache_counters,
    .read_at = dd_rados_read_at,
    .io_counters = dd_rados_io_counters,
    .reads_ahead = rb_reads_ahead,
};

int dd_be_rados_open(const char *url, bool create, dd_backend **out)
{
    rados_loc l;
    (void)create; /* the pool must exist either way; init checks it is empty */
    int rc = parse_url(url, &l);
    if (rc != 0)
        return rc;
    rados_be *b = calloc(1, sizeof(*b));
    if (!b || !(b->url = strdup(url))) {
        free(b);
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    }
    b->base.ops = &rados_ops;
    b->base.where = b->url;
    b->base.pack_max = RADOS_PACK_MAX;
    b->base.pack_default = RADOS_PACK_DEFAULT;
    b->base.lazy_views = true;
    b->lock_timeout = l.lock_timeout ? l.lock_timeout : RADOS_LOCK_TIMEOUT_DEFAULT;
    b->op_timeout = l.op_timeout ? l.op_timeout : RADOS_OP_TIMEOUT_DEFAULT;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    pthread_mutex_init(&b->fetch_mu, NULL);
    pthread_cond_init(&b->fetch_cv, NULL);
    pthread_mutex_init(&b->fconn_mu, NULL);
    pthread_cond_init(&b->fconn_cv, NULL);
    rc = connect_cluster(b, &l, &b->cluster, &b->io);
    if (rc == 0)
        b->connected = true;
    if (rc == 0)
        rc = dd_rados_read_setup(b, &l.rd, l.ns);
    if (rc != 0) {
        rb_destroy(&b->base);
        return rc;
    }
    *out = &b->base;
    return 0;
}
