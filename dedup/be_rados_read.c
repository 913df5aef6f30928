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

#define READ_PIECE (4u << 20) /* bytes per read request of a whole-object fetch */
#define READ_PIECES_MAX 32u   /* requests in flight at once */
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

int dd_rados_read_all(rados_be *b, const char *name, uint8_t *buf, size_t len)
{
    rados_completion_t comp[READ_PIECES_MAX];
    size_t npieces = (len + READ_PIECE - 1) / READ_PIECE, got = 0;
    int rc = 0;
    for (size_t first = 0; rc == 0 && first < npieces; first += READ_PIECES_MAX) {
        size_t k = VMT_MIN(npieces - first, (size_t)READ_PIECES_MAX), sent = 0;
        for (; sent < k; sent++) {
            size_t off = (first + sent) * READ_PIECE, want = VMT_MIN(len - off, (size_t)READ_PIECE);
            int r = rados_aio_create_completion2(NULL, NULL, &comp[sent]);
            if (r == 0 &&
                (r = rados_aio_read(b->io, name, comp[sent], (char *)buf + off, want, off)) < 0)
                rados_aio_release(comp[sent]);
            if (r < 0) {
                rc = dd_rados_fail(b, r, "reading", name);
                break;
            }
        }
        for (size_t i = 0; i < sent; i++) {
            rados_aio_wait_for_complete(comp[i]);
            int r = rados_aio_get_return_value(comp[i]);
            rados_aio_release(comp[i]);
            if (r < 0 && rc == 0)
                rc = dd_rados_fail(b, r, "reading", name);
            got += r > 0 ? (size_t)r : 0;
        }
    }
    if (rc == 0 && got != len)
        rc = vmt_error_set(VMT_EIO, "rados: %s holds %zu bytes, fewer than the %zu expected", name,
                           got, len);
    return rc;
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
