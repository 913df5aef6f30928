/*
 * The RADOS backend's read path for sealed packs (docs/store-backends.md,
 * "The local read cache"): a whole pack is fetched with its pieces in
 * flight at once, and kept in the local read cache (be_rados_cache.c) when
 * the location has one, so that a later handle or process on this host maps
 * the local file instead of asking the cluster again.
 *
 * Location settings (query parameters, or the environment):
 *   cache=DIR | $VMTREE_RADOS_CACHE        the cache directory (cache=off: none)
 *   cache_size=SIZE | $VMTREE_RADOS_CACHE_SIZE   its bound (default 2 GiB)
 *   mem=SIZE                               views of sealed packs kept mapped
 *                                          by one handle (default 1 GiB)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <rados/librados.h>

#include "be_rados.h"
#include "internal.h"

/*
 * Whole-object fetches (a pack's view) are read in pieces of FETCH_PIECE
 * bytes, all fetches of a handle together keeping at most
 * FETCH_INFLIGHT_MAX bytes in flight (one piece at least), over a second
 * cluster handle (dd_rados_fetch_io).  A small read (read_at: a lazy
 * restore's fault) goes past that bound on the handle's own connection: at
 * the OSD it waits behind at most that many bytes of the same pack, and
 * its answer is not queued behind fetch replies on the socket (before: up
 * to 32 pieces of 4 MiB on one connection, plus a stat: a fault on a cold
 * host waited for most of the prefetched packs; docs/store-backends.md).
 */
#define FETCH_PIECE (1u << 20)
#define FETCH_INFLIGHT_MAX (2u << 20)
#define FETCH_PIECES_MAX 2u       /* one fetch's pieces in flight: FETCH_INFLIGHT_MAX / FETCH_PIECE */
#define READ_AT_CHUNK (8u << 20) /* bytes per request of read_at */
#define MEM_DEFAULT (1ull << 30)
#define MEM_MIN (1ull << 20)

static int parse_size_field(const char *what, const char *v, size_t n, uint64_t min, uint64_t *out)
{
    char buf[32];
    if (n == 0 || n >= sizeof(buf))
        return vmt_error_set(VMT_EINVAL, "rados location: %s is empty or too long", what);
    memcpy(buf, v, n);
    buf[n] = '\0';
    if (vmt_parse_size(buf, out) != 0 || *out < min)
        return vmt_error_set(VMT_EINVAL,
                             "rados location: %s=%s is not a size of at least %llu "
                             "bytes (e.g. 512M, 4G)",
                             what, buf, (unsigned long long)min);
    return 0;
}

int dd_rados_read_param(rados_read_cfg *c, const char *kv, size_t n)
{
    if (n > 6 && strncmp(kv, "cache=", 6) == 0) {
        if (n - 6 >= sizeof(c->cache))
            return vmt_error_set(VMT_EINVAL,
                                 "rados location: cache directory longer than %zu "
                                 "bytes",
                                 sizeof(c->cache) - 1);
        c->cache_off = n == 9 && strncmp(kv + 6, "off", 3) == 0;
        memcpy(c->cache, kv + 6, n - 6);
        c->cache[n - 6] = '\0';
        return 0;
    }
    if (n > 11 && strncmp(kv, "cache_size=", 11) == 0)
        return parse_size_field("cache_size", kv + 11, n - 11, DD_PCACHE_SIZE_MIN, &c->cache_size);
    if (n > 4 && strncmp(kv, "mem=", 4) == 0)
        return parse_size_field("mem", kv + 4, n - 4, MEM_MIN, &c->mem);
    return 1;
}

/* The location's settings over the environment's. */
static int cache_settings(const rados_read_cfg *c, const char **dir, uint64_t *size)
{
    const char *env = getenv("VMTREE_RADOS_CACHE"), *esize = getenv("VMTREE_RADOS_CACHE_SIZE");
    *dir = c->cache_off ? NULL : c->cache[0] ? c->cache : env && *env ? env : NULL;
    *size = c->cache_size;
    if (*dir && !*size && esize && *esize &&
        (vmt_parse_size(esize, size) != 0 || *size < DD_PCACHE_SIZE_MIN))
        return vmt_error_set(VMT_EINVAL,
                             "$VMTREE_RADOS_CACHE_SIZE=%s is not a size of at least "
                             "1 MiB",
                             esize);
    if (!*size)
        *size = DD_PCACHE_SIZE_DEFAULT;
    return 0;
}

int dd_rados_read_setup(rados_be *b, const rados_read_cfg *c, const char *ns)
{
    const char *dir;
    uint64_t size;
    char fsid[64] = "";
    b->base.view_max = c->mem ? c->mem : MEM_DEFAULT;
    int rc = cache_settings(c, &dir, &size);
    if (rc != 0 || !dir)
        return rc;
    int r = rados_cluster_fsid(b->cluster, fsid, sizeof(fsid));
    if (r < 0)
        return dd_rados_err(r, "reading the cluster id of", b->url);
    /* Everything a pack's bytes depend on but its name and the store's uuid
     * (which the key adds): one cache directory may serve many clusters,
     * pools and namespaces. */
    snprintf(b->scope, sizeof(b->scope), "%s/%lld/%s", fsid, (long long)rados_ioctx_get_id(b->io),
             ns);
    rc = dd_pcache_open(dir, size, &b->cache);
    return rc == 0 ? 0 : vmt_error_wrap(rc, "%s", b->url);
}

static bool fits(const rados_be *b, size_t want)
{
    return b->fetch_inflight == 0 || b->fetch_inflight + want <= FETCH_INFLIGHT_MAX;
}

/*
 * Room for `want` more bytes of fetch requests in flight: waits for it when
 * the caller has none in flight itself (`wait`; a caller with requests in
 * flight waits for its own oldest instead, so no caller holds room while
 * waiting for more).  false without room, or when a request of this handle
 * timed out while it waited (*timed_out: the cluster stopped answering,
 * and the requests ahead of it failed).
 */
static bool take_room(rados_be *b, size_t want, bool wait, bool *timed_out)
{
    pthread_mutex_lock(&b->fetch_mu);
    unsigned seen = b->timeouts;
    while (wait && !fits(b, want) && b->timeouts == seen)
        pthread_cond_wait(&b->fetch_cv, &b->fetch_mu);
    *timed_out = b->timeouts != seen;
    bool ok = !*timed_out && fits(b, want);
    if (ok) {
        b->fetch_inflight += want;
        if (b->fetch_inflight > b->ctr.fetch_peak)
            b->ctr.fetch_peak = b->fetch_inflight;
    }
    pthread_mutex_unlock(&b->fetch_mu);
    return ok;
}

static void give_room(rados_be *b, size_t n)
{
    pthread_mutex_lock(&b->fetch_mu);
    b->fetch_inflight -= n;
    pthread_cond_broadcast(&b->fetch_cv);
    pthread_mutex_unlock(&b->fetch_mu);
}

/* One piece of a fetch in flight. */
typedef struct piece {
    rados_completion_t c;
    rados_ioctx_t io;
    size_t len;
} piece;

static int send_piece(rados_be *b, rados_ioctx_t io, const char *name, uint8_t *buf, size_t off,
                      piece *pc)
{
    __atomic_add_fetch(&b->ctr.fetch_reads, 1, __ATOMIC_RELAXED);
    int r = rados_aio_create_completion2(NULL, NULL, &pc->c);
    pc->io = io;
    if (r == 0 && (r = rados_aio_read(io, name, pc->c, (char *)buf + off, pc->len, off)) < 0)
        rados_aio_release(pc->c);
    return r < 0 ? dd_rados_fail(b, r, "reading", name) : 0;
}

/* Waits for a piece; adds its bytes to *got, or sets *rc (when 0) to its
 * failure.  A timeout is recorded before the room is given back, so that
 * fetches waiting for room fail with it instead of sending requests that
 * would wait out the timeout again. */
static void wait_piece(rados_be *b, const char *name, piece *pc, size_t *got, int *rc)
{
    rados_aio_wait_for_complete(pc->c);
    int r = rados_aio_get_return_value(pc->c);
    rados_aio_release(pc->c);
    if (r == -ETIMEDOUT)
        dd_rados_fetch_timed_out(b, pc->io);
    if (r < 0 && (*rc == 0 || r == -ETIMEDOUT)) {
        int e = dd_rados_fail(b, r, "reading", name);
        *rc = *rc ? *rc : e;
    }
    *got += r > 0 ? (size_t)r : 0;
    give_room(b, pc->len);
}

int dd_rados_read_all(rados_be *b, const char *name, uint8_t *buf, size_t len)
{
    piece ring[FETCH_PIECES_MAX];
    size_t off = 0, got = 0, head = 0, n = 0;
    rados_ioctx_t io = dd_rados_fetch_io(b);
    int rc = 0;
    while (n > 0 || (rc == 0 && off < len)) {
        bool timed_out = false;
        if (rc == 0 && off < len && n < FETCH_PIECES_MAX) {
            piece *pc = &ring[(head + n) % FETCH_PIECES_MAX];
            pc->len = VMT_MIN(len - off, (size_t)FETCH_PIECE);
            if (take_room(b, pc->len, n == 0, &timed_out)) {
                if ((rc = send_piece(b, io, name, buf, off, pc)) != 0) {
                    give_room(b, pc->len);
                    continue;
                }
                n++;
                off += pc->len;
                continue;
            }
            if (timed_out) {
                rc = dd_rados_fail(b, -ETIMEDOUT, "reading", name);
                continue;
            }
        }
        wait_piece(b, name, &ring[head], &got, &rc);
        head = (head + 1) % FETCH_PIECES_MAX;
        n--;
    }
    if (rc == 0 && got != len)
        rc = vmt_error_set(VMT_EIO, "rados: %s holds %zu bytes, fewer than the %zu expected", name,
                           got, len);
    return rc;
}

/* One read request per call (a record is far below READ_AT_CHUNK), no
 * stat, and outside the bound on fetches: a fault queues behind at most
 * FETCH_INFLIGHT_MAX bytes of them. */
int dd_rados_read_at(dd_backend *base, const char *name, void *buf, size_t len, uint64_t off,
                     size_t *got)
{
    rados_be *b = (rados_be *)base;
    size_t n = 0;
    while (n < len) {
        size_t want = VMT_MIN(len - n, (size_t)READ_AT_CHUNK);
        __atomic_add_fetch(&b->ctr.reads, 1, __ATOMIC_RELAXED);
        int r = rados_read(b->io, name, (char *)buf + n, want, off + n);
        if (r == -ENOENT)
            return vmt_error_set(VMT_ENOENT, "%s: %s does not exist", b->url, name);
        if (r < 0)
            return dd_rados_fail(b, r, "reading", name);
        n += (size_t)r;
        if ((size_t)r < want)
            break; /* the object's end */
    }
    *got = n;
    return 0;
}

void dd_rados_io_counters(dd_backend *base, dd_bio_counters *out)
{
    rados_be *b = (rados_be *)base;
    out->reads = __atomic_load_n(&b->ctr.reads, __ATOMIC_RELAXED);
    out->fetch_reads = __atomic_load_n(&b->ctr.fetch_reads, __ATOMIC_RELAXED);
    out->stats = __atomic_load_n(&b->ctr.stats, __ATOMIC_RELAXED);
    pthread_mutex_lock(&b->fetch_mu);
    out->fetch_peak = b->ctr.fetch_peak;
    pthread_mutex_unlock(&b->fetch_mu);
}

/* The object's bytes in a new anonymous mapping. */
static int fetch(rados_be *b, const char *name, size_t len, uint8_t **out)
{
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return vmt_error_errno(VMT_ENOMEM, errno, "rados: %zu bytes for a view of %s", len, name);
    int rc = dd_rados_read_all(b, name, m, len);
    if (rc != 0) {
        munmap(m, len);
        return rc;
    }
    *out = m;
    return 0;
}

int dd_rados_map_sealed(dd_backend *base, const char *name, size_t len, const uint8_t tag[16],
                        int mode, uint8_t **out, unsigned *how)
{
    rados_be *b = (rados_be *)base;
    char key[DD_PCACHE_KEY_LEN + 1];
    if (b->cache) {
        dd_pcache_key(b->scope, name, len, tag, key);
        int rc = mode == DD_MAP_FRESH ? VMT_ENOENT : dd_pcache_map(b->cache, key, len, out);
        if (rc == 0) {
            *how = DD_VIEW_LOCAL;
            return 0;
        }
        if (rc != VMT_ENOENT)
            vmt_warn("%s (fetching from the cluster instead)", vmt_error_last());
    }
    if (mode == DD_MAP_LOCAL)
        return VMT_ENOENT;
    /* Straight into a new cache file (one copy less than a write), else into
     * memory and then written. */
    dd_pcache_fill fill;
    if (b->cache && dd_pcache_begin(b->cache, key, len, &fill) == 0) {
        int rc = dd_rados_read_all(b, name, fill.map, len);
        if (rc != 0) {
            dd_pcache_abort(b->cache, &fill);
            return rc;
        }
        if (dd_pcache_commit(b->cache, &fill) != 0 &&
            !__atomic_exchange_n(&b->cache_warned, 1, __ATOMIC_RELAXED))
            vmt_warn("%s (reading on without caching)", vmt_error_last());
        *out = fill.map;
        *how = DD_VIEW_FETCHED;
        return 0;
    }
    int rc = fetch(b, name, len, out);
    if (rc != 0)
        return rc;
    *how = DD_VIEW_FETCHED;
    /* Reads go on without a cache that cannot be written (full disk): said
     * once per handle, not once per pack. */
    if (b->cache && dd_pcache_put(b->cache, key, *out, len) != 0 &&
        !__atomic_exchange_n(&b->cache_warned, 1, __ATOMIC_RELAXED))
        vmt_warn("%s (reading on without caching)", vmt_error_last());
    return 0;
}

void dd_rados_cache_counters(dd_backend *base, uint64_t *fills, uint64_t *evicted)
{
    rados_be *b = (rados_be *)base;
    *fills = *evicted = 0;
    if (b->cache)
        dd_pcache_counters(b->cache, fills, evicted);
}
