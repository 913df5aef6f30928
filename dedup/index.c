/* The sharded in-memory index (see index.h). */
#include "index.h"

#include <stdlib.h>
#include <string.h>

#include "record.h"

#define MIN_CAP 64u

static inline dd_shard *shard_of(dd_index *ix, const vmt_id *id)
{
    return &ix->sh[id->b[0] % DD_SHARDS];
}

static inline size_t home_slot(const dd_shard *s, const vmt_id *id)
{
    return (size_t)dd_get64(id->b + 8) & (s->cap - 1);
}

static size_t cap_for(size_t n)
{
    size_t cap = MIN_CAP;
    /* Keep the load factor at or below 5/8 after n inserts. */
    while (cap / 8 * 5 < n)
        cap *= 2;
    return cap;
}

int dd_index_init(dd_index *ix, size_t expect)
{
    size_t per = cap_for(expect / DD_SHARDS + 1);
    memset(ix, 0, sizeof(*ix));
    for (size_t i = 0; i < DD_SHARDS; i++) {
        dd_shard *s = &ix->sh[i];
        s->slots = vmt_callocn(per, sizeof(dd_entry));
        if (!s->slots) {
            dd_index_free(ix);
            return VMT_ENOMEM;
        }
        s->cap = per;
        pthread_rwlock_init(&s->lock, NULL);
    }
    return 0;
}

void dd_index_free(dd_index *ix)
{
    for (size_t i = 0; i < DD_SHARDS; i++) {
        if (ix->sh[i].slots) {
            free(ix->sh[i].slots);
            pthread_rwlock_destroy(&ix->sh[i].lock);
        }
        ix->sh[i].slots = NULL;
    }
}

void dd_index_clear(dd_index *ix)
{
    for (size_t i = 0; i < DD_SHARDS; i++) {
        memset(ix->sh[i].slots, 0, ix->sh[i].cap * sizeof(dd_entry));
        ix->sh[i].count = 0;
    }
}

/* Returns the slot holding id, or the empty slot where it would go. */
static size_t probe(const dd_shard *s, const vmt_id *id, bool *found)
{
    size_t mask = s->cap - 1;
    for (size_t i = home_slot(s, id);; i = (i + 1) & mask) {
        const dd_entry *e = &s->slots[i];
        if (e->pack == 0) {
            *found = false;
            return i;
        }
        if (memcmp(e->id.b, id->b, 16) == 0) {
            *found = true;
            return i;
        }
    }
}

bool dd_index_lookup(dd_index *ix, const vmt_id *id, dd_entry *out)
{
    dd_shard *s = shard_of(ix, id);
    bool found;
    pthread_rwlock_rdlock(&s->lock);
    size_t i = probe(s, id, &found);
    if (found && s->slots[i].pack == DD_PACK_PENDING)
        found = false;
    if (found && out)
        *out = s->slots[i];
    pthread_rwlock_unlock(&s->lock);
    return found;
}

static int grow(dd_shard *s)
{
    size_t ncap = s->cap * 2;
    dd_entry *old = s->slots;
    size_t ocap = s->cap;
    dd_entry *slots = vmt_callocn(ncap, sizeof(dd_entry));
    if (!slots)
        return VMT_ENOMEM;
    s->slots = slots;
    s->cap = ncap;
    for (size_t i = 0; i < ocap; i++) {
        bool found;
        if (old[i].pack == 0)
            continue;
        s->slots[probe(s, &old[i].id, &found)] = old[i];
    }
    free(old);
    return 0;
}

int dd_index_insert(dd_index *ix, const dd_entry *e, bool *existed, dd_entry *old)
{
    dd_shard *s = shard_of(ix, &e->id);
    bool found;
    int rc = 0;
    pthread_rwlock_wrlock(&s->lock);
    if ((s->count + 1) > s->cap / 8 * 5)
        rc = grow(s);
    if (rc == 0) {
        size_t i = probe(s, &e->id, &found);
        *existed = found;
        if (found && old)
            *old = s->slots[i];
        if (!found) {
            s->slots[i] = *e;
            s->count++;
        }
    }
    pthread_rwlock_unlock(&s->lock);
    return rc;
}

bool dd_index_update(dd_index *ix, const dd_entry *e)
{
    dd_shard *s = shard_of(ix, &e->id);
    bool found;
    pthread_rwlock_wrlock(&s->lock);
    size_t i = probe(s, &e->id, &found);
    if (found)
        s->slots[i] = *e;
    pthread_rwlock_unlock(&s->lock);
    return found;
}

/* Backward-shift deletion keeps probe chains intact without tombstones. */
static void delete_at(dd_shard *s, size_t hole)
{
    size_t mask = s->cap - 1;
    for (size_t j = (hole + 1) & mask; s->slots[j].pack != 0; j = (j + 1) & mask) {
        size_t h = home_slot(s, &s->slots[j].id);
        /* Move j into the hole when its home is not in (hole, j]. */
        if (((j - h) & mask) >= ((j - hole) & mask)) {
            s->slots[hole] = s->slots[j];
            hole = j;
        }
    }
    memset(&s->slots[hole], 0, sizeof(dd_entry));
    s->count--;
}

bool dd_index_remove(dd_index *ix, const vmt_id *id)
{
    dd_shard *s = shard_of(ix, id);
    bool found;
    pthread_rwlock_wrlock(&s->lock);
    size_t i = probe(s, id, &found);
    if (found)
        delete_at(s, i);
    pthread_rwlock_unlock(&s->lock);
    return found;
}

int dd_index_mark(dd_index *ix, const vmt_id *id, dd_entry *out)
{
    dd_shard *s = shard_of(ix, id);
    bool found;
    int r = -1;
    pthread_rwlock_wrlock(&s->lock);
    size_t i = probe(s, id, &found);
    if (found && s->slots[i].pack != DD_PACK_PENDING) {
        r = (s->slots[i].meta & DD_META_MARK) ? 0 : 1;
        s->slots[i].meta |= DD_META_MARK;
        if (out)
            *out = s->slots[i];
    }
    pthread_rwlock_unlock(&s->lock);
    return r;
}

void dd_index_unmark_all(dd_index *ix)
{
    for (size_t i = 0; i < DD_SHARDS; i++) {
        dd_shard *s = &ix->sh[i];
        pthread_rwlock_wrlock(&s->lock);
        for (size_t j = 0; j < s->cap; j++)
            s->slots[j].meta &= ~DD_META_MARK;
        pthread_rwlock_unlock(&s->lock);
    }
}

size_t dd_index_count(dd_index *ix)
{
    size_t n = 0;
    for (size_t i = 0; i < DD_SHARDS; i++) {
        pthread_rwlock_rdlock(&ix->sh[i].lock);
        n += ix->sh[i].count;
        pthread_rwlock_unlock(&ix->sh[i].lock);
    }
    return n;
}

int dd_index_foreach(dd_index *ix, dd_index_visit_fn fn, void *ctx)
{
    for (size_t i = 0; i < DD_SHARDS; i++) {
        dd_shard *s = &ix->sh[i];
        int rc = 0;
        pthread_rwlock_rdlock(&s->lock);
        for (size_t j = 0; j < s->cap && rc == 0; j++) {
            if (s->slots[j].pack != 0 && s->slots[j].pack != DD_PACK_PENDING)
                rc = fn(ctx, &s->slots[j]);
        }
        pthread_rwlock_unlock(&s->lock);
        if (rc)
            return rc;
    }
    return 0;
}

int dd_index_edit(dd_index *ix, dd_index_edit_fn fn, void *ctx)
{
    for (size_t i = 0; i < DD_SHARDS; i++) {
        dd_shard *s = &ix->sh[i];
        /* Rebuild into a fresh table so fn sees every entry exactly once
         * (deleting in place would shift entries across the scan point). */
        dd_entry *fresh = vmt_callocn(s->cap, sizeof(dd_entry));
        if (!fresh)
            return VMT_ENOMEM;
        pthread_rwlock_wrlock(&s->lock);
        dd_entry *old = s->slots;
        s->slots = fresh;
        s->count = 0;
        for (size_t j = 0; j < s->cap; j++) {
            bool found;
            if (old[j].pack == 0 || !fn(ctx, &old[j]))
                continue;
            s->slots[probe(s, &old[j].id, &found)] = old[j];
            s->count++;
        }
        pthread_rwlock_unlock(&s->lock);
        free(old);
    }
    return 0;
}
