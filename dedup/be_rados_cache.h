/*
 * dedup internals: the local read cache of a RADOS store
 * (docs/store-backends.md, "The local read cache").
 *
 * A directory of whole sealed packs, one file per pack version, named by a
 * key that hashes everything the bytes depend on (cluster, pool, namespace,
 * object name, store uuid, length).  Files appear atomically (tmp +
 * rename) and are never written in place; several processes may share the
 * directory.  Least recently used files (mtime, touched at every use) are
 * removed when the directory grows past its bound.
 *
 * Thread-safety: every function may be called from any thread; the handle
 * holds only settings and atomic counters.
 */
#ifndef VMTREE_DEDUP_BE_RADOS_CACHE_H
#define VMTREE_DEDUP_BE_RADOS_CACHE_H

#include <stddef.h>
#include <stdint.h>

#define DD_PCACHE_KEY_LEN 32u /* hex digits */
#define DD_PCACHE_SIZE_DEFAULT (2ull << 30)
#define DD_PCACHE_SIZE_MIN (1ull << 20)

typedef struct dd_pcache dd_pcache;

/* Opens (creating it 0700 when absent) cache directory dir bounded to
 * max_bytes. */
int dd_pcache_open(const char *dir, uint64_t max_bytes, dd_pcache **out);
void dd_pcache_close(dd_pcache *c); /* accepts NULL */
const char *dd_pcache_dir(const dd_pcache *c);

/* The file name of one version of an object: hex of XXH3-128 over scope
 * (the backend's identity), name, len and tag. */
void dd_pcache_key(const char *scope, const char *name, uint64_t len, const uint8_t tag[16],
                   char key[DD_PCACHE_KEY_LEN + 1]);

/* Maps the cached copy of key read-only when it holds exactly len bytes
 * and marks it used; VMT_ENOENT when there is none (a file of another size
 * is removed).  Released with munmap(*out, len). */
int dd_pcache_map(dd_pcache *c, const char *key, size_t len, uint8_t **out);

/* Stores len bytes as key (replacing any copy), then removes the least
 * recently used files while the directory holds more than its bound.
 * Objects larger than the bound are not stored (returns 0). */
int dd_pcache_put(dd_pcache *c, const char *key, const void *data, size_t len);

/*
 * Fetching straight into the cache: dd_pcache_begin creates a tmp file of
 * len bytes (blocks reserved: a full disk fails here, not as a SIGBUS when
 * the mapping is written) mapped read-write at *map; the caller fills the
 * mapping, then dd_pcache_commit publishes it as key (the mapping stays
 * valid, read-only, until munmap(*map, len)) or dd_pcache_abort removes it
 * and unmaps.  Saves the copy and the write() of dd_pcache_put.
 */
typedef struct dd_pcache_fill {
    char tmp[96], name[64];
    uint8_t *map;
    size_t len;
} dd_pcache_fill;
int dd_pcache_begin(dd_pcache *c, const char *key, size_t len, dd_pcache_fill *f);
int dd_pcache_commit(dd_pcache *c, dd_pcache_fill *f);
void dd_pcache_abort(dd_pcache *c, dd_pcache_fill *f);

/* Removes key's copy (absent: not an error). */
void dd_pcache_drop(dd_pcache *c, const char *key);

/* Files written, and files removed to stay under the bound, by this handle. */
void dd_pcache_counters(const dd_pcache *c, uint64_t *fills, uint64_t *evicted);

#endif
