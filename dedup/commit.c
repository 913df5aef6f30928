/*
 * Commit (the fsync order of docs/store.md) and store statistics.
 *
 *   1. fdatasync every pack sealed since the last commit, then close its fd;
 *   2. fsync the packs directory if a pack file was created or removed;
 *   3. fdatasync the active pack: every record of the commit is on disk;
 *   4. append the commit marker (generation, lifetime counters);
 *   5. fdatasync the active pack again: the commit is durable.
 * Step 3 before step 4 is what lets recovery trust a valid marker: nothing
 * before it can be a torn write.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

static int sync_sealed(vmt_store *s)
{
    for (uint32_t i = s->dirty_from; i && i < s->active->num; i++) {
        dd_pack *p = dd_pack_get(s, i);
        if (!p || !p->f)
            continue;
        int rc = s->be->ops->sync(p->f);
        if (rc != 0)
            return vmt_error_wrap(rc, "pack %u", i);
        s->be->ops->close(p->f);
        p->f = NULL;
    }
    if (s->dir_dirty) {
        int rc = dd_sync_packs_dir(s);
        if (rc != 0)
            return rc;
        s->dir_dirty = false;
    }
    return 0;
}

static int write_marker(vmt_store *s)
{
    uint8_t rec[DD_REC_HDR + DD_MARKER_LEN];
    dd_marker m = {.gen = s->gen + 1, .c = s->pc};
    dd_marker_encode(rec, &m);
    struct iovec iov = {rec, sizeof(rec)};
    int rc = dd_append(s, &iov, 1, sizeof(rec));
    if (rc == 0)
        rc = s->be->ops->sync(s->active->f);
    if (rc != 0)
        return rc;
    s->gen = m.gen;
    s->cc = s->pc;
    s->committed = (dd_pos){s->active->num, s->active->size};
    s->dirty_from = 0;
    return 0;
}

int dd_commit_locked(vmt_store *s)
{
    if (s->read_only)
        return vmt_error_set(VMT_EINVAL, "store %s is open read-only", s->dir);
    if (s->sticky)
        return vmt_error_set(s->sticky, "an earlier write to %s failed; reopen the store", s->dir);
    if (!s->dirty_from && memcmp(&s->cc, &s->pc, sizeof(s->cc)) == 0)
        return 0;
    int rc = dd_active(s);
    if (rc != 0)
        return rc;
    if (!dd_fits(s, DD_REC_HDR + DD_MARKER_LEN, 0) && (rc = dd_roll(s)) != 0)
        return rc;
    rc = sync_sealed(s);
    if (rc == 0 && s->dirty_from)
        rc = s->be->ops->sync(s->active->f);
    if (rc == 0)
        rc = write_marker(s);
    if (rc != 0)
        return dd_fail_sticky(s, vmt_error_wrap(rc, "commit to %s", s->dir));
    if (s->since_index >= s->index_interval) {
        if (dd_idx_save(s) != 0)
            vmt_warn("store %s: %s (the commit itself is durable)", s->dir, vmt_error_last());
        else
            s->since_index = 0;
    }
    dd_views_trim_locked(s); /* sealed packs' views beyond the memory bound */
    return 0;
}

int vmt_store_commit(vmt_store *s)
{
    pthread_mutex_lock(&s->wmu);
    int rc = dd_commit_locked(s);
    pthread_mutex_unlock(&s->wmu);
    return rc;
}

/* ---- stats ---- */

static int add_entry(void *ctx, const dd_entry *e)
{
    vmt_store_stats *st = ctx;
    unsigned type = dd_meta_type(e->meta), codec = dd_meta_codec(e->meta);
    uint64_t rlen = dd_meta_rlen(e->meta);
    st->objects++;
    if (type <= VMT_OBJ_TYPE_MAX)
        st->objects_by_type[type]++;
    st->logical_bytes += rlen;
    st->stored_bytes += DD_REC_HDR + (uint64_t)e->slen;
    st->codec[codec].objects++;
    st->codec[codec].logical_bytes += rlen;
    st->codec[codec].stored_bytes += e->slen;
    return 0;
}

int vmt_store_get_stats(vmt_store *s, vmt_store_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (s->refs_only)
        return vmt_error_set(VMT_EINVAL, "store %s is open for refs only", s->dir);
    dd_index_foreach(&s->ix, add_entry, out);
    pthread_rwlock_rdlock(&s->layout);
    for (uint32_t i = 0; i < s->packs_cap; i++)
        out->packs += s->packs[i] != NULL;
    out->dict_version = s->dict_last;
    pthread_rwlock_unlock(&s->layout);
    out->disk_bytes = dd_disk_bytes(s);
    pthread_mutex_lock(&s->wmu);
    dd_counters c = s->cc;
    pthread_mutex_unlock(&s->wmu);
    out->put_objects = c.put_objects;
    out->put_bytes = c.put_bytes;
    out->zero_pages = c.zero_pages;
    out->dedup_hits = c.dedup_hits;
    out->new_objects = c.new_objects;
    out->new_bytes = c.new_bytes;
    out->pack_fetches = __atomic_load_n(&s->n_fetch, __ATOMIC_RELAXED);
    out->pack_cache_hits = __atomic_load_n(&s->n_hit, __ATOMIC_RELAXED);
    out->pack_cache_damaged = __atomic_load_n(&s->n_damaged, __ATOMIC_RELAXED);
    out->pack_views_dropped = __atomic_load_n(&s->n_dropped, __ATOMIC_RELAXED);
    out->pack_ranged_reads = __atomic_load_n(&s->n_ranged, __ATOMIC_RELAXED);
    out->pack_view_bytes = __atomic_load_n(&s->view_bytes, __ATOMIC_RELAXED);
    if (s->be->ops->cache_counters)
        s->be->ops->cache_counters(s->be, &out->pack_cache_fills, &out->pack_cache_evicted);
    if (s->be->ops->io_counters) {
        dd_bio_counters io = {0};
        s->be->ops->io_counters(s->be, &io);
        out->backend_reads = io.reads;
        out->backend_fetch_reads = io.fetch_reads;
        out->backend_stats = io.stats;
        out->backend_fetch_peak = io.fetch_peak;
    }
    out->compression_ratio =
        out->stored_bytes ? (double)out->logical_bytes / (double)out->stored_bytes : 1.0;
    out->dedup_ratio = c.new_bytes ? (double)c.put_bytes / (double)c.new_bytes : 1.0;
    return 0;
}
