/*
 * Batch get, has and stat.  Reads come straight from the packs' mappings:
 * check the record header against the index entry, check the payload
 * checksum, decompress into the caller's buffer.  A batch holds the layout
 * lock shared, so no pack is unmapped under it, and runs on the worker pool.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int damaged(const dd_entry *e, const char *what)
{
    char hex[VMT_ID_HEX_LEN + 1];
    vmt_id_to_hex(&e->id, hex);
    return vmt_error_set(VMT_ECORRUPT, "object %s (pack %u, offset %u) is damaged: %s", hex,
                         e->pack, e->off, what);
}

static int check_header(const dd_entry *e, const uint8_t *rec, dd_rec_hdr *h)
{
    if (dd_rec_decode(rec, DD_REC_HDR, h) != 0)
        return damaged(e, vmt_error_last());
    if (!vmt_id_equal(&h->id, &e->id) || h->type != dd_meta_type(e->meta) ||
        h->codec != dd_meta_codec(e->meta) || h->raw_len != dd_meta_rlen(e->meta) ||
        h->stored_len != e->slen)
        return damaged(e, "the record there does not match the index");
    return 0;
}

/* Checks and decodes the record at rec into dst. */
static int read_record(vmt_store *s, dd_scratch *sc, const dd_entry *e, const uint8_t *rec,
                       void *dst, bool rehash)
{
    dd_rec_hdr h;
    int rc = check_header(e, rec, &h);
    if (rc != 0)
        return rc;
    if (dd_sum32(rec + DD_REC_HDR, h.stored_len) != h.payload_sum)
        return damaged(e, "checksum mismatch");
    const dd_dict *d = h.codec == VMT_CODEC_ZSTD_DICT ? dd_dict_get(s, h.dict) : NULL;
    if (h.codec == VMT_CODEC_ZSTD_DICT && !d)
        return damaged(e, "its dictionary is missing or damaged");
    rc = dd_decompress(sc, h.codec, d, rec + DD_REC_HDR, h.stored_len, dst, h.raw_len);
    if (rc != 0)
        return damaged(e, vmt_error_last());
    if (rehash) {
        vmt_id got;
        vmt_id_of(dst, h.raw_len, &got);
        if (!vmt_id_equal(&got, &e->id))
            return damaged(e, "content does not hash to its id");
    }
    return 0;
}

/* The record alone, read from the backend (its pack is being fetched). */
static int read_ranged(vmt_store *s, dd_scratch *sc, const dd_entry *e, void *dst, bool rehash)
{
    size_t len = DD_REC_HDR + (size_t)e->slen, got = 0;
    uint8_t *buf = malloc(len);
    char name[40];
    dd_pack_name(name, e->pack);
    int rc = buf ? dd_backend_read_at(s->be, name, buf, len, e->off, &got) : VMT_ENOMEM;
    if (rc == 0 && got != len)
        rc = damaged(e, "the record lies beyond the end of its pack");
    if (rc == 0)
        rc = read_record(s, sc, e, buf, dst, rehash);
    free(buf);
    __atomic_add_fetch(&s->n_ranged, 1, __ATOMIC_RELAXED);
    return rc;
}

static int read_entry(vmt_store *s, dd_scratch *sc, const dd_entry *e, void *dst, bool rehash,
                      bool small)
{
    dd_pack *p = dd_pack_get(s, e->pack);
    bool inflight = false, owner = false;
    if (!p || p->bad || p->torn)
        return damaged(e, p ? p->why : "its pack is missing");
    uint64_t size = __atomic_load_n(&p->size, __ATOMIC_ACQUIRE);
    uint64_t end = (uint64_t)e->off + DD_REC_HDR + e->slen;
    if (end > size || end > p->map_len)
        return damaged(e, "the record lies beyond the end of its pack");
    const uint8_t *view = small && s->be->lazy_views ? dd_pack_view_nowait(s, p, &inflight, &owner)
                                                     : dd_pack_view(s, p);
    if (!view && inflight) {
        int rc = read_ranged(s, sc, e, dst, rehash);
        if (owner)
            dd_pack_fetch_behind(s, p);
        return rc;
    }
    if (!view)
        return vmt_error_wrap(VMT_EIO, "reading pack %u", e->pack);
    int rc = read_record(s, sc, e, view + e->off, dst, rehash);
    /* A damaged local copy (the read cache) is replaced by the pack itself. */
    if (rc == VMT_ECORRUPT && (view = dd_pack_refetch(s, p, view)) != NULL)
        rc = read_record(s, sc, e, view + e->off, dst, rehash);
    return rc;
}

int dd_read_entry(vmt_store *s, dd_scratch *sc, const dd_entry *e, void *dst, bool rehash)
{
    return read_entry(s, sc, e, dst, rehash, false);
}

typedef struct get_job {
    vmt_store *s;
    vmt_store_get_item *items; /* either items ... */
    const vmt_id *ids;         /* ... or ids and dst */
    void *const *dst;
    size_t n, next;
    dd_job_err err;
} get_job;

static int not_found(const vmt_id *id)
{
    char hex[VMT_ID_HEX_LEN + 1];
    vmt_id_to_hex(id, hex);
    return vmt_error_set(VMT_ENOENT, "object %s is not in the store", hex);
}

/* Reads one object; fills len/type.  Zero page: zeros. */
static int get_one(get_job *j, dd_scratch *sc, const vmt_id *id, void *buf, size_t cap, size_t *len,
                   vmt_obj_type *type)
{
    dd_entry e;
    if (vmt_id_is_zero_page(id)) {
        *len = VMT_STORE_PAGE_SIZE;
        *type = VMT_OBJ_PAGE;
        if (cap < VMT_STORE_PAGE_SIZE)
            return vmt_error_set(VMT_ERANGE, "buffer of %zu bytes for a 4096-byte page", cap);
        memset(buf, 0, VMT_STORE_PAGE_SIZE);
        return 0;
    }
    if (!dd_index_lookup(&j->s->ix, id, &e))
        return not_found(id);
    *len = dd_meta_rlen(e.meta);
    *type = (vmt_obj_type)dd_meta_type(e.meta);
    if (cap < *len)
        return vmt_error_set(VMT_ERANGE, "buffer of %zu bytes for a %zu-byte object", cap, *len);
    return read_entry(j->s, sc, &e, buf, j->s->verify_reads, j->n <= DD_SMALL_BATCH);
}

static void get_range(get_job *j, dd_scratch *sc, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        int rc;
        if (__atomic_load_n(&j->err.rc, __ATOMIC_ACQUIRE) == VMT_EIO) {
            /* The backend failed (a pack could not be fetched: a RADOS
             * request timed out): the rest of the batch would wait out the
             * same failure object by object. */
            if (j->items)
                j->items[i].rc = VMT_EIO;
            continue;
        }
        if (j->items) {
            vmt_store_get_item *it = &j->items[i];
            rc = get_one(j, sc, &it->id, it->buf, it->cap, &it->len, &it->type);
            it->rc = rc;
        } else {
            size_t len;
            vmt_obj_type type;
            rc = get_one(j, sc, &j->ids[i], j->dst[i], VMT_STORE_PAGE_SIZE, &len, &type);
            if (rc == 0 && len != VMT_STORE_PAGE_SIZE)
                rc = vmt_error_set(VMT_ERANGE, "object %zu is %zu bytes, not a page", i, len);
        }
        if (rc != 0)
            dd_job_err_set(&j->err, rc);
    }
}

static void get_work(void *arg, dd_scratch *sc, unsigned w)
{
    get_job *j = arg;
    (void)w;
    for (;;) {
        size_t c = __atomic_fetch_add(&j->next, DD_CHUNK, __ATOMIC_RELAXED);
        if (c >= j->n)
            break;
        get_range(j, sc, c, VMT_MIN(c + DD_CHUNK, j->n));
    }
}

static int run_get(get_job *j)
{
    if (j->n == 0)
        return 0;
    dd_views_tick(j->s);
    pthread_rwlock_rdlock(&j->s->layout);
    int rc = dd_run(j->s, j->s->gscr, false, get_work, j, j->n);
    pthread_rwlock_unlock(&j->s->layout);
    dd_views_trim(j->s);
    return rc ? rc : dd_job_err_raise(&j->err);
}

int vmt_store_get_many(vmt_store *s, vmt_store_get_item *items, size_t n)
{
    get_job j = {.s = s, .items = items, .n = n};
    if (n && !items)
        return vmt_error_set(VMT_EINVAL, "get: items must not be NULL");
    return run_get(&j);
}

int vmt_store_get_pages(vmt_store *s, const vmt_id *ids, size_t n, void *const *dst)
{
    get_job j = {.s = s, .ids = ids, .dst = dst, .n = n};
    if (n && (!ids || !dst))
        return vmt_error_set(VMT_EINVAL, "get: ids and dst must not be NULL");
    return run_get(&j);
}

int vmt_store_get(vmt_store *s, const vmt_id *id, void **data, size_t *len, vmt_obj_type *type)
{
    dd_entry e;
    size_t need = VMT_STORE_PAGE_SIZE;
    if (!vmt_id_is_zero_page(id)) {
        if (!dd_index_lookup(&s->ix, id, &e))
            return not_found(id);
        need = dd_meta_rlen(e.meta);
    }
    vmt_store_get_item it = {.id = *id, .cap = need};
    it.buf = malloc(need);
    if (!it.buf)
        return vmt_error_set(VMT_ENOMEM, "out of memory for a %zu-byte object", need);
    int rc = vmt_store_get_many(s, &it, 1);
    if (rc != 0) {
        free(it.buf);
        return rc;
    }
    *data = it.buf;
    *len = it.len;
    if (type)
        *type = it.type;
    return 0;
}

int vmt_store_has_many(vmt_store *s, const vmt_id *ids, size_t n, bool *present)
{
    if (n && (!ids || !present))
        return vmt_error_set(VMT_EINVAL, "has: ids and present must not be NULL");
    for (size_t i = 0; i < n; i++)
        present[i] = vmt_id_is_zero_page(&ids[i]) || dd_index_lookup(&s->ix, &ids[i], NULL);
    return 0;
}

int vmt_store_stat(vmt_store *s, const vmt_id *id, vmt_store_objinfo *out)
{
    dd_entry e;
    if (vmt_id_is_zero_page(id) || !dd_index_lookup(&s->ix, id, &e))
        return not_found(id);
    out->type = (vmt_obj_type)dd_meta_type(e.meta);
    out->codec = (vmt_codec)dd_meta_codec(e.meta);
    out->raw_len = dd_meta_rlen(e.meta);
    out->stored_len = e.slen;
    out->pack = e.pack;
    out->offset = e.off;
    return 0;
}
