/*
 * Garbage collection: mark from the caller's roots (through map nodes, and
 * through blobs and snapshot records with the caller's children callback),
 * then compact packs whose live fraction is below a threshold.
 *
 * Crash safety (docs/store.md): live records are copied into new packs and
 * committed; the index is updated in memory and saved durably; only then are
 * the old packs deleted.  A crash before the index is saved leaves the old
 * index pointing at the old packs (the copies are unindexed duplicates that a
 * later gc reclaims); a crash after it leaves orphaned old packs, which the
 * next writer open deletes.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define KIND_ANY (-1)
#define KIND_PAGE (-2)

typedef struct mark_item {
    vmt_id id;
    int kind; /* KIND_ANY, KIND_PAGE, or the map-node level expected */
} mark_item;

typedef struct gc_ctx {
    vmt_store *s;
    const vmt_store_gc_opts *o;
    vmt_store_gc_stats *st;
    mark_item *stack;
    size_t n, cap;
    uint8_t *buf; /* the object being walked */
    size_t buf_cap;
    int err;
} gc_ctx;

void vmt_store_gc_opts_init(vmt_store_gc_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->min_live = 0.5;
}

static void push(gc_ctx *g, const vmt_id *id, int kind)
{
    if (g->err || vmt_id_is_zero_page(id))
        return;
    if (g->n == g->cap) {
        size_t ncap = g->cap ? g->cap * 2 : 4096;
        mark_item *ns = vmt_reallocn(g->stack, ncap, sizeof(*ns));
        if (!ns) {
            g->err = VMT_ENOMEM;
            return;
        }
        g->stack = ns;
        g->cap = ncap;
    }
    g->stack[g->n++] = (mark_item){*id, kind};
}

static void emit(void *ctx, const vmt_id *child)
{
    push(ctx, child, KIND_ANY);
}

static int read_obj(gc_ctx *g, const dd_entry *e)
{
    size_t len = dd_meta_rlen(e->meta);
    if (len > g->buf_cap) {
        uint8_t *nb = realloc(g->buf, len);
        if (!nb)
            return vmt_error_set(VMT_ENOMEM, "out of memory");
        g->buf = nb;
        g->buf_cap = len;
    }
    return dd_read_entry(g->s, g->s->scr[0], e, g->buf, false);
}

static int walk_mapnode(gc_ctx *g, const dd_entry *e, int want_level)
{
    unsigned level;
    size_t count;
    char hex[VMT_ID_HEX_LEN + 1];
    vmt_id_to_hex(&e->id, hex);
    if (vmt_store_mapnode_parse(g->buf, dd_meta_rlen(e->meta), &level, &count) != 0 ||
        (want_level >= 0 && (int)level != want_level))
        return vmt_error_set(VMT_ECORRUPT, "map node %s is malformed or at the wrong level", hex);
    for (size_t i = 0; i < count; i++) {
        vmt_mapnode_entry me;
        vmt_store_mapnode_entry_at(g->buf, i, &me);
        push(g, &me.child, level == 0 ? KIND_PAGE : (int)level - 1);
    }
    return g->err;
}

/* Marks one object and queues its children. */
static int visit(gc_ctx *g, const mark_item *x)
{
    dd_entry e;
    int r = dd_index_mark(&g->s->ix, &x->id, &e);
    if (r < 0) {
        g->st->missing_objects++;
        return 0;
    }
    if (r == 0)
        return 0;
    g->st->live_objects++;
    g->st->live_bytes += DD_REC_HDR + (uint64_t)e.slen;
    unsigned type = dd_meta_type(e.meta);
    bool node = x->kind >= 0 || (x->kind == KIND_ANY && type == VMT_OBJ_MAPNODE);
    bool other =
        x->kind == KIND_ANY && (type == VMT_OBJ_BLOB || type == VMT_OBJ_SNAPSHOT) && g->o->children;
    if (!node && !other)
        return 0;
    int rc = read_obj(g, &e);
    if (rc == 0 && node)
        rc = walk_mapnode(g, &e, x->kind);
    else if (rc == 0)
        rc = g->o->children(g->o->children_ctx, (vmt_obj_type)type, g->buf, dd_meta_rlen(e.meta),
                            emit, g);
    return rc ? rc : g->err;
}

static int mark(gc_ctx *g, const vmt_id *roots, size_t nroots)
{
    for (size_t i = 0; i < nroots; i++)
        push(g, &roots[i], KIND_ANY);
    while (g->n > 0 && !g->err) {
        mark_item x = g->stack[--g->n];
        int rc = visit(g, &x);
        if (rc != 0)
            return vmt_error_wrap(rc, "gc stopped, nothing deleted");
        if (g->o->progress && (g->st->live_objects & 0xffff) == 0)
            g->o->progress(g->o->progress_ctx, "mark", g->st->live_objects, 0);
    }
    return g->err;
}

/* ---- sweep ---- */

typedef struct sweep {
    vmt_store *s;
    uint64_t *live; /* live record bytes per pack */
    uint64_t *dead; /* dead entries per pack */
    bool *doomed;
    dd_entry *copy; /* live entries of doomed packs, sorted by location */
    dd_pos *to;     /* where each was copied */
    size_t ncopy, cap;
    uint32_t np; /* packs [0, np) existed when gc began */
} sweep;

static int tally(void *ctx, const dd_entry *e)
{
    sweep *w = ctx;
    if (e->pack >= w->np)
        return 0;
    if (e->meta & DD_META_MARK)
        w->live[e->pack] += DD_REC_HDR + (uint64_t)e->slen;
    else
        w->dead[e->pack]++;
    return 0;
}

static int collect(void *ctx, const dd_entry *e)
{
    sweep *w = ctx;
    if (e->pack >= w->np || !(e->meta & DD_META_MARK) || !w->doomed[e->pack])
        return 0;
    if (w->ncopy == w->cap) {
        size_t ncap = w->cap ? w->cap * 2 : 1024;
        dd_entry *nc = vmt_reallocn(w->copy, ncap, sizeof(*nc));
        if (!nc)
            return VMT_ENOMEM;
        w->copy = nc;
        w->cap = ncap;
    }
    w->copy[w->ncopy++] = *e;
    return 0;
}

static int cmp_loc(const void *a, const void *b)
{
    const dd_entry *x = a, *y = b;
    if (x->pack != y->pack)
        return x->pack < y->pack ? -1 : 1;
    return (x->off > y->off) - (x->off < y->off);
}

/* Chooses packs to rewrite; returns how many. */
static size_t choose(sweep *w, const vmt_store_gc_opts *o, vmt_store_gc_stats *st)
{
    vmt_store *s = w->s;
    size_t n = 0;
    for (uint32_t i = 1; i < w->np; i++) {
        dd_pack *p = dd_pack_get(s, i);
        st->dead_objects += w->dead[i];
        if (!p || p->bad || p->torn || p->hdr_err || (p == s->active && p->size <= DD_PACK_HDR))
            continue;
        if (p->size <= DD_PACK_HDR) {
            w->doomed[i] = true; /* an empty pack */
            n++;
            continue;
        }
        double frac = (double)w->live[i] / (double)(p->size - DD_PACK_HDR);
        if (frac < o->min_live) {
            w->doomed[i] = true;
            n++;
        }
    }
    return n;
}

static bool record_ok(const dd_entry *e, const dd_pack *p, const uint8_t *rec, dd_rec_hdr *h)
{
    return (uint64_t)e->off + DD_REC_HDR + e->slen <= p->size &&
           dd_rec_decode(rec, DD_REC_HDR, h) == 0 && vmt_id_equal(&h->id, &e->id) &&
           h->stored_len == e->slen && dd_sum32(rec + DD_REC_HDR, h->stored_len) == h->payload_sum;
}

static int copy_one(sweep *w, dd_appender *ap, size_t k)
{
    const dd_entry *e = &w->copy[k];
    dd_pack *p = dd_pack_get(w->s, e->pack);
    const uint8_t *view = dd_pack_view(w->s, p);
    if (!view)
        return vmt_error_wrap(VMT_EIO, "gc reading pack %u", e->pack);
    dd_rec_hdr h;
    bool ok = record_ok(e, p, view + e->off, &h);
    /* A damaged local copy (the read cache) is replaced by the pack itself. */
    if (!ok && (view = dd_pack_refetch(w->s, p, view)) != NULL)
        ok = record_ok(e, p, view + e->off, &h);
    const uint8_t *rec = view ? view + e->off : NULL;
    if (!ok) {
        char hex[VMT_ID_HEX_LEN + 1];
        vmt_id_to_hex(&e->id, hex);
        return vmt_error_set(VMT_ECORRUPT,
                             "live object %s (pack %u, offset %u) is damaged; gc "
                             "stopped, nothing deleted",
                             hex, e->pack, e->off);
    }
    return dd_appender_add(ap, rec, dd_rec_len(&h), &w->to[k]);
}

static int copy_live(sweep *w, const vmt_store_gc_opts *o, vmt_store_gc_stats *st)
{
    vmt_store *s = w->s;
    dd_appender ap = {.s = s};
    if (w->ncopy)
        qsort(w->copy, w->ncopy, sizeof(*w->copy), cmp_loc);
    w->to = vmt_callocn(w->ncopy ? w->ncopy : 1, sizeof(dd_pos));
    if (!w->to)
        return VMT_ENOMEM;
    int rc = dd_active(s);
    if (rc == 0 && s->active->num < w->np && w->doomed[s->active->num])
        rc = dd_roll(s);
    for (size_t k = 0; rc == 0 && k < w->ncopy; k++) {
        rc = copy_one(w, &ap, k);
        st->bytes_copied += DD_REC_HDR + (uint64_t)w->copy[k].slen;
        if (o->progress && (k & 0xfff) == 0)
            o->progress(o->progress_ctx, "copy", k, w->ncopy);
    }
    if (rc == 0)
        rc = dd_appender_flush(&ap);
    return rc;
}

static bool relocate(void *ctx, dd_entry *e)
{
    sweep *w = ctx;
    bool marked = (e->meta & DD_META_MARK) != 0;
    e->meta &= ~DD_META_MARK;
    if (e->pack >= w->np || !w->doomed[e->pack])
        return true;
    if (!marked)
        return false;
    dd_entry *hit = w->ncopy ? bsearch(e, w->copy, w->ncopy, sizeof(*e), cmp_loc) : NULL;
    if (hit) {
        const dd_pos *to = &w->to[hit - w->copy];
        e->pack = to->pack;
        e->off = (uint32_t)to->off;
    }
    return true;
}

static int delete_doomed(sweep *w, const vmt_store_gc_opts *o, vmt_store_gc_stats *st)
{
    vmt_store *s = w->s;
    int rc = 0;
    for (uint32_t i = 1; rc == 0 && i < w->np; i++) {
        if (!w->doomed[i])
            continue;
        rc = dd_pack_delete(s, i);
        st->packs_deleted++;
        if (o->progress)
            o->progress(o->progress_ctx, "delete", st->packs_deleted, 0);
    }
    if (rc == 0)
        rc = dd_sync_packs_dir(s);
    s->dir_dirty = rc != 0;
    return rc;
}

/* Copies, commits, re-points the index, saves it, then deletes. */
static int compact(sweep *w, const vmt_store_gc_opts *o, vmt_store_gc_stats *st)
{
    vmt_store *s = w->s;
    int rc = dd_index_foreach(&s->ix, collect, w);
    if (rc == 0)
        rc = copy_live(w, o, st);
    if (rc == 0) {
        /* Always commit into the new active pack: the checkpoint saved with
         * the index must not lie in a pack about to be deleted. */
        if (!s->dirty_from)
            s->dirty_from = s->active->num;
        rc = dd_commit_locked(s);
    }
    if (rc != 0)
        return rc;
    rc = dd_index_edit(&s->ix, relocate, w);
    s->idx_all = true; /* the saved entries lose the dead ones, not only gain the moved */
    if (rc == 0)
        rc = dd_idx_save(s);
    if (rc == 0)
        s->since_index = 0;
    return rc == 0 ? delete_doomed(w, o, st) : rc;
}

static int sweep_all(vmt_store *s, const vmt_store_gc_opts *o, vmt_store_gc_stats *st)
{
    size_t np = (size_t)s->last_pack + 1;
    sweep w = {.s = s, .np = (uint32_t)np};
    w.live = vmt_callocn(np, sizeof(uint64_t));
    w.dead = vmt_callocn(np, sizeof(uint64_t));
    w.doomed = vmt_callocn(np, sizeof(bool));
    int rc = w.live && w.dead && w.doomed ? 0 : VMT_ENOMEM;
    if (rc == 0)
        rc = dd_index_foreach(&s->ix, tally, &w);
    size_t n = rc == 0 ? choose(&w, o, st) : 0;
    st->packs_rewritten = n;
    if (rc == 0 && n > 0 && !o->dry_run)
        rc = compact(&w, o, st);
    free(w.live);
    free(w.dead);
    free(w.doomed);
    free(w.copy);
    free(w.to);
    return rc;
}

static int gc_locked(vmt_store *s, const vmt_id *roots, size_t nroots, const vmt_store_gc_opts *o,
                     vmt_store_gc_stats *st)
{
    if (s->read_only)
        return vmt_error_set(VMT_EINVAL, "store %s is open read-only", s->dir);
    if (o->min_live < 0 || o->min_live > 1)
        return vmt_error_set(VMT_EINVAL, "gc: min_live %g outside [0, 1]", o->min_live);
    int rc = dd_commit_locked(s);
    if (rc != 0)
        return rc;
    st->disk_before = dd_disk_bytes(s);
    gc_ctx g = {.s = s, .o = o, .st = st};
    rc = mark(&g, roots, nroots);
    free(g.stack);
    free(g.buf);
    if (rc == 0)
        rc = sweep_all(s, o, st);
    dd_index_unmark_all(&s->ix);
    st->disk_after = dd_disk_bytes(s);
    return rc;
}

int vmt_store_gc(vmt_store *s, const vmt_id *roots, size_t nroots, const vmt_store_gc_opts *o,
                 vmt_store_gc_stats *out)
{
    vmt_store_gc_opts def;
    vmt_store_gc_stats st = {0};
    if (!o) {
        vmt_store_gc_opts_init(&def);
        o = &def;
    }
    if (nroots && !roots)
        return vmt_error_set(VMT_EINVAL, "gc: roots must not be NULL");
    pthread_mutex_lock(&s->wmu);
    int rc = gc_locked(s, roots, nroots, o, &st);
    pthread_mutex_unlock(&s->wmu);
    if (out)
        *out = st;
    return rc;
}
