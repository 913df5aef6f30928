/*
 * dedup internals: the in-memory index from object id to record location.
 * 64 shards (chosen by the id's first byte), each an open-addressing table
 * with linear probing and backward-shift deletion under its own rwlock, so
 * lookups from many threads scale and a writer inserts without stopping them.
 * Entries are 32 bytes; ids are uniform hashes, so id bytes 8..15 serve as
 * the slot hash.
 */
#ifndef VMTREE_DEDUP_INDEX_H
#define VMTREE_DEDUP_INDEX_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtree/store.h"

#define DD_SHARDS 64u
#define DD_PACK_PENDING 0xffffffffu /* entry reserved by a put in progress */
#define DD_META_MARK (1u << 31)     /* GC mark bit */

/* One index entry; pack == 0 marks an empty slot. */
typedef struct dd_entry {
    vmt_id id;
    uint32_t pack; /* pack number, or DD_PACK_PENDING (off = batch item) */
    uint32_t off;  /* record offset in the pack */
    uint32_t slen; /* stored payload bytes */
    uint32_t meta; /* raw_len (bits 0-24) | type (25-27) | codec (28-29) | mark (31) */
} dd_entry;

static inline uint32_t dd_meta(uint32_t raw_len, unsigned type, unsigned codec)
{
    return raw_len | (uint32_t)type << 25 | (uint32_t)codec << 28;
}
static inline uint32_t dd_meta_rlen(uint32_t m)
{
    return m & 0x1ffffffu;
}
static inline unsigned dd_meta_type(uint32_t m)
{
    return (m >> 25) & 7u;
}
static inline unsigned dd_meta_codec(uint32_t m)
{
    return (m >> 28) & 3u;
}

typedef struct dd_shard {
    pthread_rwlock_t lock;
    dd_entry *slots;
    size_t cap; /* power of two */
    size_t count;
} dd_shard;

typedef struct dd_index {
    dd_shard sh[DD_SHARDS];
} dd_index;

/* Creates empty shards sized for about `expect` entries in all. */
int dd_index_init(dd_index *ix, size_t expect);
void dd_index_free(dd_index *ix);
/* Drops every entry (keeps capacity).  Caller excludes other users. */
void dd_index_clear(dd_index *ix);

/* Copies the entry for id into *out (if non-NULL); false when absent or
 * pending. */
bool dd_index_lookup(dd_index *ix, const vmt_id *id, dd_entry *out);

/*
 * Inserts e unless its id is present (pending included); then *old gets the
 * present entry and *existed is true.  VMT_ENOMEM when growing fails.
 */
int dd_index_insert(dd_index *ix, const dd_entry *e, bool *existed, dd_entry *old);

/* Replaces the entry with e's id by e; false when absent. */
bool dd_index_update(dd_index *ix, const dd_entry *e);

/* Removes the entry for id; false when absent. */
bool dd_index_remove(dd_index *ix, const vmt_id *id);

/*
 * Sets the GC mark on id's entry: returns 1 when newly marked (and copies
 * the entry to *out), 0 when already marked, -1 when absent.
 */
int dd_index_mark(dd_index *ix, const vmt_id *id, dd_entry *out);

/* Clears every GC mark, in place. */
void dd_index_unmark_all(dd_index *ix);

size_t dd_index_count(dd_index *ix);

/*
 * Calls fn for every non-pending entry, one shard at a time under its read
 * lock (fn must not call back into the index).  Stops early and returns fn's
 * non-zero result.
 */
typedef int (*dd_index_visit_fn)(void *ctx, const dd_entry *e);
int dd_index_foreach(dd_index *ix, dd_index_visit_fn fn, void *ctx);

/*
 * Rewrites every entry in place through fn, one shard at a time under its
 * write lock: fn returns false to delete the entry; fn sees each entry
 * exactly once.  Used by GC's sweep.  VMT_ENOMEM (shards done so far stay
 * edited).
 */
typedef bool (*dd_index_edit_fn)(void *ctx, dd_entry *e);
int dd_index_edit(dd_index *ix, dd_index_edit_fn fn, void *ctx);

#endif
