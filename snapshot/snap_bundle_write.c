/*
 * Bundle export (docs/bundle-format.md).
 *
 * First the list of objects is collected, oldest snapshot first: for each
 * snapshot its map (depth first, pages before the leaf that names them,
 * children before their parent), its state blob, then its record.  A set
 * of ids already listed makes each object appear once; since ids name
 * content, a map node already listed means its whole subtree is, so a
 * child snapshot adds only the subtrees it changed.  Then the objects are
 * read (pages in batches) and written, each LZ4-compressed where that pays,
 * to PATH.tmp-PID, which is fsynced and renamed over PATH.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <lz4.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bundle_internal.h"

#define EXPORT_PAGE_BATCH 256u

/* ---- a set of ids ----------------------------------------------------- */

typedef struct idset {
    vmt_id *v;
    uint8_t *used;
    size_t cap, n; /* cap: a power of two */
} idset;

static uint64_t id_hash(const vmt_id *id)
{
    uint64_t h;
    memcpy(&h, id->b, sizeof(h)); /* ids are hashes already */
    return h;
}

static int idset_grow(idset *s)
{
    idset g = {.cap = s->cap ? s->cap * 2 : 4096};
    g.v = vmt_mallocn(g.cap, sizeof(vmt_id));
    g.used = calloc(g.cap, 1);
    if (!g.v || !g.used) {
        free(g.v);
        free(g.used);
        return vmt_error_set(VMT_ENOMEM, "export: out of memory");
    }
    for (size_t i = 0; i < s->cap; i++) {
        if (!s->used[i])
            continue;
        size_t j = id_hash(&s->v[i]) & (g.cap - 1);
        while (g.used[j])
            j = (j + 1) & (g.cap - 1);
        g.used[j] = 1;
        g.v[j] = s->v[i];
    }
    g.n = s->n;
    free(s->v);
    free(s->used);
    *s = g;
    return 0;
}

/* 1 when added, 0 when present already, < 0 on error. */
static int idset_add(idset *s, const vmt_id *id)
{
    if ((s->n + 1) * 2 > s->cap && idset_grow(s) != 0)
        return VMT_ENOMEM;
    size_t j = id_hash(id) & (s->cap - 1);
    for (; s->used[j]; j = (j + 1) & (s->cap - 1))
        if (vmt_id_equal(&s->v[j], id))
            return 0;
    s->used[j] = 1;
    s->v[j] = *id;
    s->n++;
    return 1;
}

/* ---- collecting ----------------------------------------------------------- */

typedef struct objref {
    vmt_id id;
    vmt_obj_type type;
} objref;

typedef struct exporter {
    vmt_store *s;
    idset seen;
    objref *list;
    size_t n, cap;
    vmt_id *chain; /* snapshots, oldest first */
    size_t nchain;
    FILE *f;
    XXH3_state_t *sum;
    uint8_t *cbuf, *pages;
    int err; /* sticky write error */
    vmt_store_progress_fn progress;
    void *pctx;
} exporter;

static int list_push(exporter *e, const vmt_id *id, vmt_obj_type type)
{
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 1024;
        objref *v = vmt_reallocn(e->list, cap, sizeof(*v));
        if (!v)
            return VMT_ENOMEM;
        e->list = v;
        e->cap = cap;
    }
    e->list[e->n++] = (objref){.id = *id, .type = type};
    return 0;
}

/* Lists id once; *added says whether it is new. */
static int list_once(exporter *e, const vmt_id *id, vmt_obj_type type)
{
    int rc = idset_add(&e->seen, id);
    if (rc <= 0)
        return rc;
    return list_push(e, id, type);
}

static int read_node(exporter *e, const map_geom *g, const vmt_id *id, unsigned level, uint64_t idx,
                     vmt_mapnode_entry *ent, size_t *count)
{
    void *buf = NULL;
    size_t len = 0;
    vmt_obj_type type;
    int rc = vmt_store_get(e->s, id, &buf, &len, &type);
    if (rc == 0)
        rc = map_node_check(g, id, type, buf, len, level, idx, count);
    for (size_t i = 0; rc == 0 && i < *count; i++)
        vmt_store_mapnode_entry_at(buf, i, &ent[i]);
    free(buf);
    return rc;
}

static int walk_node(exporter *e, const map_geom *g, const vmt_id *id, unsigned level, uint64_t idx)
{
    vmt_mapnode_entry ent[VMT_MAP_FANOUT];
    size_t count = 0;

    int rc = idset_add(&e->seen, id);
    if (rc <= 0)
        return rc; /* listed already, and with it its whole subtree */
    if ((rc = read_node(e, g, id, level, idx, ent, &count)) != 0)
        return rc;
    for (size_t i = 0; rc == 0 && i < count; i++) {
        if (vmt_id_is_zero_page(&ent[i].child))
            continue;
        if (level == 0)
            rc = list_once(e, &ent[i].child, VMT_OBJ_PAGE);
        else
            rc = walk_node(e, g, &ent[i].child, level - 1, idx * VMT_MAP_FANOUT + ent[i].slot);
    }
    return rc ? rc : list_push(e, id, VMT_OBJ_MAPNODE);
}

static int collect_snapshot(exporter *e, const vmt_id *id)
{
    vmt_snap_record *r = malloc(sizeof(*r));
    map_geom g;
    if (!r)
        return vmt_error_set(VMT_ENOMEM, "export: out of memory");
    int rc = vmt_snap_record_read(e->s, id, r);
    if (rc == 0)
        rc = map_geom_init(&g, r->mem_size / VMT_PAGE_SIZE);
    if (rc == 0)
        rc = walk_node(e, &g, &r->map_root, g.depth - 1, 0);
    if (rc == 0)
        rc = list_once(e, &r->state, VMT_OBJ_BLOB);
    if (rc == 0)
        rc = list_once(e, id, VMT_OBJ_SNAPSHOT);
    free(r);
    return rc;
}

/* The snapshot and (with_ancestors) its first parents still stored, oldest first. */
static int collect_chain(exporter *e, const vmt_id *id, bool with_ancestors)
{
    vmt_snap_record *r = malloc(sizeof(*r));
    vmt_id cur = *id;
    int rc = r ? 0 : vmt_error_set(VMT_ENOMEM, "export: out of memory");

    while (rc == 0) {
        vmt_id *v = vmt_reallocn(e->chain, e->nchain + 1, sizeof(vmt_id));
        if (!v) {
            rc = VMT_ENOMEM;
            break;
        }
        e->chain = v;
        e->chain[e->nchain++] = cur;
        bool present = false;
        if ((rc = vmt_snap_record_read(e->s, &cur, r)) != 0 || !with_ancestors ||
            r->nparents == 0 || e->nchain >= BUNDLE_MAX_SNAPSHOTS)
            break;
        if ((rc = vmt_store_has_many(e->s, &r->parents[0], 1, &present)) != 0 || !present)
            break;
        cur = r->parents[0];
    }
    free(r);
    for (size_t i = 0; rc == 0 && i < e->nchain / 2; i++) {
        vmt_id t = e->chain[i];
        e->chain[i] = e->chain[e->nchain - 1 - i];
        e->chain[e->nchain - 1 - i] = t;
    }
    return rc;
}

/* ---- writing -------------------------------------------------------------- */

static void out(exporter *e, const void *buf, size_t n)
{
    if (e->err)
        return;
    if (fwrite(buf, 1, n, e->f) != n) {
        e->err = vmt_error_errno(VMT_EIO, errno, "export: writing the bundle");
        return;
    }
    XXH3_64bits_update(e->sum, buf, n);
}

static void write_header(exporter *e)
{
    uint8_t h[BUNDLE_HDR] = {0};
    memcpy(h, BUNDLE_MAGIC, 8);
    bundle_put16(h + 8, BUNDLE_MAJOR);
    bundle_put16(h + 10, BUNDLE_MINOR);
    bundle_put32(h + 12, BUNDLE_HDR);
    bundle_put32(h + 28, (uint32_t)XXH3_64bits(h, 28));
    out(e, h, sizeof(h));
}

static void write_object(exporter *e, vmt_obj_type type, const vmt_id *id, const void *data,
                         size_t len)
{
    uint8_t h[BUNDLE_OBJ_HDR] = {0};
    int n = LZ4_compress_default(data, (char *)e->cbuf, (int)len, LZ4_compressBound((int)len));
    bool lz4 = n > 0 && (size_t)n < len;
    const void *payload = lz4 ? (const void *)e->cbuf : data;
    size_t plen = lz4 ? (size_t)n : len;

    h[0] = (uint8_t)type;
    h[1] = lz4 ? BUNDLE_CODEC_LZ4 : BUNDLE_CODEC_RAW;
    bundle_put32(h + 4, (uint32_t)len);
    bundle_put32(h + 8, (uint32_t)plen);
    memcpy(h + 16, id->b, 16);
    bundle_put64(h + 32, bundle_obj_sum(h, payload, plen));
    out(e, h, sizeof(h));
    out(e, payload, plen);
}

static void write_trailer(exporter *e)
{
    uint8_t t[BUNDLE_TRAILER] = {0};
    t[0] = BUNDLE_KIND_TRAILER;
    bundle_put64(t + 8, e->n);
    bundle_put64(t + 16, e->nchain);
    memcpy(t + 24, e->chain[e->nchain - 1].b, 16);
    out(e, t, 48);
    bundle_put64(t + 48, XXH3_64bits_digest(e->sum));
    memcpy(t + 56, BUNDLE_END_MAGIC, 8);
    out(e, t + 48, 16);
}

/* Writes list[i..) while it holds pages (up to a batch); returns the count. */
static size_t write_pages(exporter *e, size_t i)
{
    vmt_id ids[EXPORT_PAGE_BATCH] = {{{0}}};
    void *dst[EXPORT_PAGE_BATCH] = {0};
    size_t n = 0;
    for (; i + n < e->n && n < EXPORT_PAGE_BATCH && e->list[i + n].type == VMT_OBJ_PAGE; n++) {
        ids[n] = e->list[i + n].id;
        dst[n] = e->pages + n * VMT_PAGE_SIZE;
    }
    int rc = vmt_store_get_pages(e->s, ids, n, dst);
    if (rc) {
        e->err = vmt_error_wrap(rc, "export: reading pages");
        return n;
    }
    for (size_t k = 0; k < n; k++)
        write_object(e, VMT_OBJ_PAGE, &ids[k], dst[k], VMT_PAGE_SIZE);
    return n;
}

static void write_other(exporter *e, const objref *o)
{
    void *data = NULL;
    size_t len = 0;
    int rc = vmt_store_get(e->s, &o->id, &data, &len, NULL);
    if (rc == 0 && (len == 0 || len > VMT_STORE_OBJECT_MAX))
        rc = vmt_error_set(VMT_ECORRUPT, "export: object of %zu bytes", len);
    if (rc)
        e->err = vmt_error_wrap(rc, "export: reading an object");
    else
        write_object(e, o->type, &o->id, data, len);
    free(data);
}

static void write_objects(exporter *e)
{
    size_t i = 0, next_report = 0;
    while (i < e->n && !e->err) {
        if (e->list[i].type == VMT_OBJ_PAGE) {
            i += write_pages(e, i);
        } else {
            write_other(e, &e->list[i]);
            i++;
        }
        if (e->progress && i >= next_report) {
            e->progress(e->pctx, "export", i, e->n);
            next_report = i + 4096;
        }
    }
}

/* Makes the written file durable and gives it its name. */
static int finish_file(exporter *e, const char *tmp, const char *path)
{
    if (e->err)
        return e->err;
    if (fflush(e->f) != 0 || fsync(fileno(e->f)) != 0)
        return vmt_error_errno(VMT_EIO, errno, "export: flushing %s", tmp);
    if (rename(tmp, path) != 0)
        return vmt_error_errno(VMT_EIO, errno, "export: renaming %s to %s", tmp, path);
    char *dup = strdup(path);
    int dfd = dup ? open(dirname(dup), O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (dfd >= 0) {
        (void)fsync(dfd); /* the rename itself */
        close(dfd);
    }
    free(dup);
    return 0;
}

static int write_bundle(exporter *e, const char *path)
{
    char *tmp = NULL;
    if (asprintf(&tmp, "%s.tmp-%ld", path, (long)getpid()) < 0)
        return vmt_error_set(VMT_ENOMEM, "export: out of memory");
    e->f = fopen(tmp, "wbx");
    if (!e->f) {
        int rc = vmt_error_errno(VMT_EIO, errno, "export: creating %s", tmp);
        free(tmp);
        return rc;
    }
    setvbuf(e->f, NULL, _IOFBF, 1 << 20);
    XXH3_64bits_reset(e->sum);
    write_header(e);
    write_objects(e);
    write_trailer(e);
    int rc = finish_file(e, tmp, path);
    if (fclose(e->f) != 0 && rc == 0)
        rc = vmt_error_errno(VMT_EIO, errno, "export: closing %s", tmp);
    e->f = NULL;
    if (rc)
        unlink(tmp);
    free(tmp);
    return rc;
}

int vmt_snap_export(vmt_store *s, const vmt_id *id, bool with_ancestors, const char *path,
                    vmt_store_progress_fn progress, void *progress_ctx)
{
    exporter e = {.s = s, .progress = progress, .pctx = progress_ctx};

    if (!s || !id || !path)
        return vmt_error_set(VMT_EINVAL, "vmt_snap_export: NULL argument");
    e.sum = XXH3_createState();
    e.cbuf = malloc((size_t)LZ4_compressBound(VMT_STORE_OBJECT_MAX));
    e.pages = vmt_mallocn(EXPORT_PAGE_BATCH, VMT_PAGE_SIZE);
    int rc = e.sum && e.cbuf && e.pages ? 0 : vmt_error_set(VMT_ENOMEM, "export: out of memory");
    if (rc == 0)
        rc = collect_chain(&e, id, with_ancestors);
    for (size_t i = 0; rc == 0 && i < e.nchain; i++)
        rc = collect_snapshot(&e, &e.chain[i]);
    if (rc == 0)
        rc = write_bundle(&e, path);
    if (rc == 0 && progress)
        progress(progress_ctx, "export", e.n, e.n);
    XXH3_freeState(e.sum);
    free(e.cbuf);
    free(e.pages);
    free(e.list);
    free(e.chain);
    free(e.seen.v);
    free(e.seen.used);
    return rc;
}
