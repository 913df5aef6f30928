/*
 * The index over a backend that keeps the entries itself (RADOS: omap of
 * shard objects, be_rados_idx.c).  The object "index" keeps the header of
 * docs/store.md — checkpoint, generation, counters — with flag DD_IDX_OMAP
 * and no entries.  A save adds the entries committed since the last save
 * (or, after gc or a rebuild, rewrites every shard), and only then replaces
 * the header.  Crash-safe at every step: entries name committed records
 * only, so shard entries beyond the header's checkpoint are records the
 * replay would find anyway (the first copy wins); a rewrite sets the new
 * entries before removing dead ones, and gc deletes packs only after the
 * whole save.
 */
#include <stdlib.h>
#include <string.h>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "internal.h"

typedef struct shard_buf {
    uint8_t *recs;
    size_t n, cap;
} shard_buf;

typedef struct omap_saver {
    vmt_store *s;
    shard_buf *sh;
    unsigned nsh;
} omap_saver;

static int collect(void *ctx, const dd_entry *e)
{
    omap_saver *w = ctx;
    dd_pos at = {e->pack, e->off};
    if (dd_pos_cmp(at, w->s->committed) >= 0)
        return 0; /* not committed: the next open drops its record */
    if (!w->s->idx_all && dd_pos_cmp(at, w->s->indexed) < 0)
        return 0; /* saved before */
    shard_buf *b = &w->sh[e->id.b[0] % w->nsh];
    if (b->n == b->cap) {
        size_t ncap = b->cap ? b->cap * 2 : 256;
        uint8_t *nr = vmt_reallocn(b->recs, ncap, 32);
        if (!nr)
            return vmt_error_set(VMT_ENOMEM, "out of memory saving the index");
        b->recs = nr;
        b->cap = ncap;
    }
    dd_idx_put_entry(b->recs + 32 * b->n++, e);
    return 0;
}

/* The header object: flags DD_IDX_OMAP, no entries, the empty checksum. */
static int save_header(vmt_store *s)
{
    uint8_t h[DD_IDX_HDR + 8];
    dd_idx_encode_header(h, s, 0, DD_IDX_OMAP);
    dd_put64(h + DD_IDX_HDR, XXH3_64bits(NULL, 0));
    return dd_backend_put(s->be, DD_INDEX_FILE, h, sizeof(h));
}

int dd_idxomap_save(vmt_store *s)
{
    const dd_backend_ops *ops = s->be->ops;
    omap_saver w = {.s = s, .nsh = ops->idx_shards};
    w.sh = vmt_callocn(w.nsh, sizeof(*w.sh));
    if (!w.sh)
        return vmt_error_set(VMT_ENOMEM, "out of memory saving the index");
    int rc = dd_index_foreach(&s->ix, collect, &w);
    for (unsigned i = 0; rc == 0 && i < w.nsh; i++) {
        if (w.sh[i].n || s->idx_all)
            rc = ops->idx_add(s->be, i, w.sh[i].recs, w.sh[i].n, s->idx_all);
    }
    for (unsigned i = 0; i < w.nsh; i++)
        free(w.sh[i].recs);
    free(w.sh);
    if (rc == 0)
        rc = save_header(s); /* last: the checkpoint covers what the shards hold */
    if (rc != 0)
        return vmt_error_wrap(rc, "saving the index of %s", s->dir);
    s->indexed = s->committed;
    s->idx_all = false;
    return 0;
}

static int insert_one(void *ctx, const uint8_t rec[32])
{
    return dd_idx_insert(ctx, rec);
}

int dd_idxomap_load(vmt_store *s)
{
    return s->be->ops->idx_load(s->be, insert_one, s);
}
