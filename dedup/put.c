/*
 * Batch put.  A batch is cut into windows (DD_WINDOW_ITEMS objects or
 * DD_WINDOW_BYTES of content); each window goes through four phases:
 *   A. parallel: zero-page test, hash, index lookup (+ byte compare);
 *   B. serial:   reserve a pending index entry per new id (finds duplicates
 *                within the window);
 *   C. parallel: compress each new object into its worker's staging buffer
 *                as a finished record;
 *   D. serial:   lay the staged records out in the active pack (rolling to a
 *                new pack at the seal size), write them with one pwritev per
 *                pack, and point the pending entries at them.
 * Nothing on the per-object path allocates or makes a syscall; staging
 * buffers grow by doubling and are kept across calls.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

enum { ST_ZERO, ST_HIT, ST_CAND, ST_NEW, ST_DUP };

typedef struct put_item {
    const uint8_t *data;
    uint32_t len;
    uint8_t type, state, codec;
    uint16_t worker;
    uint32_t boff;   /* record offset in its worker's stage */
    uint32_t reclen; /* header + payload */
    uint32_t pack, off;
} put_item;

typedef struct put_job {
    vmt_store *s;
    put_item *it;
    vmt_id *ids; /* this window's part of the caller's array */
    size_t n;
    uint32_t *fresh; /* items in state ST_NEW */
    size_t nfresh;
    dd_codec_cfg cc;
    size_t next; /* atomic work counter */
    dd_job_err err;
} put_job;

/* Where the objects come from: an object array or a page pointer array. */
typedef struct put_src {
    const vmt_store_obj *objs;
    const void *const *pages;
} put_src;

void vmt_store_put_opts_init(vmt_store_put_opts *o)
{
    o->codec = -1;
    o->zstd_level = 0;
    o->lz4_accel = 0;
}

static bool take_chunk(put_job *j, size_t total, size_t *from, size_t *to)
{
    size_t c = __atomic_fetch_add(&j->next, DD_CHUNK, __ATOMIC_RELAXED);
    if (c >= total)
        return false;
    *from = c;
    *to = VMT_MIN(c + DD_CHUNK, total);
    return true;
}

/* Compares a dedup hit with the stored copy (compare_on_dedup). */
static int compare_stored(vmt_store *s, dd_scratch *sc, const dd_entry *e, const put_item *it)
{
    int rc = dd_scratch_tmp(sc, it->len);
    if (rc != 0)
        return rc;
    if (dd_meta_rlen(e->meta) != it->len)
        return vmt_error_set(VMT_ECORRUPT, "hash collision: stored object has another length");
    pthread_rwlock_rdlock(&s->layout);
    rc = dd_read_entry(s, sc, e, sc->tmp, false);
    pthread_rwlock_unlock(&s->layout);
    if (rc == 0 && memcmp(sc->tmp, it->data, it->len) != 0) {
        char hex[VMT_ID_HEX_LEN + 1];
        vmt_id_to_hex(&e->id, hex);
        rc = vmt_error_set(VMT_ECORRUPT,
                           "hash collision on %s: content differs from the stored "
                           "copy; refusing to deduplicate",
                           hex);
    }
    return rc;
}

static void classify(put_job *j, dd_scratch *sc, size_t i)
{
    put_item *it = &j->it[i];
    dd_entry e;
    if (it->len == VMT_STORE_PAGE_SIZE && dd_is_zero_page(it->data)) {
        j->ids[i] = vmt_id_zero_page();
        it->state = ST_ZERO;
        return;
    }
    vmt_id_of(it->data, it->len, &j->ids[i]);
    if (!dd_index_lookup(&j->s->ix, &j->ids[i], &e)) {
        it->state = ST_CAND;
        return;
    }
    it->state = ST_HIT;
    if (j->s->compare) {
        int rc = compare_stored(j->s, sc, &e, it);
        if (rc != 0)
            dd_job_err_set(&j->err, rc);
    }
}

static void phase_a(void *arg, dd_scratch *sc, unsigned w)
{
    put_job *j = arg;
    size_t from, to;
    (void)w;
    while (take_chunk(j, j->n, &from, &to)) {
        for (size_t i = from; i < to; i++)
            classify(j, sc, i);
    }
}

static int phase_b(put_job *j)
{
    j->nfresh = 0;
    for (size_t i = 0; i < j->n; i++) {
        put_item *it = &j->it[i];
        if (it->state != ST_CAND)
            continue;
        dd_entry e = {.id = j->ids[i], .pack = DD_PACK_PENDING, .off = (uint32_t)i}, old;
        bool existed;
        int rc = dd_index_insert(&j->s->ix, &e, &existed, &old);
        if (rc != 0)
            return rc;
        if (!existed) {
            it->state = ST_NEW;
            j->fresh[j->nfresh++] = (uint32_t)i;
            continue;
        }
        it->state = old.pack == DD_PACK_PENDING ? ST_DUP : ST_HIT;
        const put_item *first = &j->it[old.off];
        if (j->s->compare && old.pack == DD_PACK_PENDING &&
            (first->len != it->len || memcmp(first->data, it->data, it->len) != 0))
            return vmt_error_set(VMT_ECORRUPT, "hash collision between two objects of a batch");
    }
    return 0;
}

static int stage_one(put_job *j, dd_scratch *sc, unsigned w, size_t i)
{
    put_item *it = &j->it[i];
    size_t bound = dd_stored_bound(it->len);
    int rc = dd_scratch_reserve(sc, DD_REC_HDR + bound);
    if (rc != 0)
        return rc;
    uint8_t *rec = sc->stage + sc->stage_len;
    size_t slen;
    rc = dd_compress(sc, &j->cc, it->data, it->len, rec + DD_REC_HDR, bound, &it->codec, &slen);
    if (rc != 0)
        return rc;
    dd_rec_hdr h = {.type = it->type,
                    .codec = it->codec,
                    .id = j->ids[i],
                    .raw_len = it->len,
                    .stored_len = (uint32_t)slen};
    if (it->codec == VMT_CODEC_ZSTD_DICT)
        h.dict = (uint16_t)j->cc.dict->version;
    h.payload_sum = dd_sum32(rec + DD_REC_HDR, slen);
    dd_rec_encode(rec, &h);
    it->worker = (uint16_t)w;
    it->boff = (uint32_t)sc->stage_len;
    it->reclen = (uint32_t)(DD_REC_HDR + slen);
    sc->stage_len += it->reclen;
    sc->order[sc->norder++] = (uint32_t)i;
    return 0;
}

static void phase_c(void *arg, dd_scratch *sc, unsigned w)
{
    put_job *j = arg;
    size_t from, to;
    while (take_chunk(j, j->nfresh, &from, &to)) {
        for (size_t k = from; k < to; k++) {
            int rc = stage_one(j, sc, w, j->fresh[k]);
            if (rc != 0) {
                dd_job_err_set(&j->err, rc);
                return;
            }
        }
    }
}

/* ---- phase D: writing ---- */

static int write_staged(put_job *j)
{
    vmt_store *s = j->s;
    dd_appender ap = {.s = s};
    int rc = 0;
    for (unsigned w = 0; rc == 0 && w < s->nthreads; w++) {
        dd_scratch *sc = s->scr[w];
        for (size_t r = 0; rc == 0 && r < sc->norder; r++) {
            put_item *it = &j->it[sc->order[r]];
            dd_pos at;
            rc = dd_appender_add(&ap, sc->stage + it->boff, it->reclen, &at);
            it->pack = at.pack;
            it->off = (uint32_t)at.off;
        }
    }
    if (rc == 0)
        rc = dd_appender_flush(&ap);
    return rc;
}

static void publish(put_job *j)
{
    for (size_t k = 0; k < j->nfresh; k++) {
        size_t i = j->fresh[k];
        const put_item *it = &j->it[i];
        dd_entry e = {.id = j->ids[i],
                      .pack = it->pack,
                      .off = it->off,
                      .slen = it->reclen - DD_REC_HDR,
                      .meta = dd_meta(it->len, it->type, it->codec)};
        dd_index_update(&j->s->ix, &e);
    }
}

static void unreserve(put_job *j)
{
    for (size_t k = 0; k < j->nfresh; k++)
        dd_index_remove(&j->s->ix, &j->ids[j->fresh[k]]);
    j->nfresh = 0;
}

/* ---- windows ---- */

static void count(vmt_store *s, const put_job *j)
{
    dd_counters *c = &s->pc;
    for (size_t i = 0; i < j->n; i++) {
        const put_item *it = &j->it[i];
        c->put_objects++;
        c->put_bytes += it->len;
        c->zero_pages += it->state == ST_ZERO;
        c->dedup_hits += it->state == ST_HIT || it->state == ST_DUP;
        if (it->state == ST_NEW) {
            c->new_objects++;
            c->new_bytes += it->len;
        }
    }
}

static int run_window(put_job *j)
{
    vmt_store *s = j->s;
    memset(&j->err, 0, sizeof(j->err));
    j->next = 0;
    j->nfresh = 0;
    int rc = dd_run(s, s->scr, true, phase_a, j, j->n);
    if (rc == 0)
        rc = dd_job_err_raise(&j->err);
    if (rc == 0)
        rc = phase_b(j);
    for (unsigned w = 0; w < s->nthreads; w++)
        s->scr[w]->stage_len = s->scr[w]->norder = 0;
    j->next = 0;
    if (rc == 0)
        rc = dd_run(s, s->scr, true, phase_c, j, j->nfresh);
    if (rc == 0)
        rc = dd_job_err_raise(&j->err);
    if (rc == 0)
        rc = write_staged(j);
    if (rc != 0) {
        unreserve(j);
        return rc;
    }
    publish(j);
    count(s, j);
    return 0;
}

static void src_get(const put_src *src, size_t i, const uint8_t **data, size_t *len, unsigned *type)
{
    if (src->objs) {
        *data = src->objs[i].data;
        *len = src->objs[i].len;
        *type = (unsigned)src->objs[i].type;
    } else {
        *data = src->pages[i];
        *len = VMT_STORE_PAGE_SIZE;
        *type = VMT_OBJ_PAGE;
    }
}

static int validate(const put_src *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const uint8_t *data;
        size_t len;
        unsigned type;
        src_get(src, i, &data, &len, &type);
        if (!data || len == 0 || len > VMT_STORE_OBJECT_MAX)
            return vmt_error_set(VMT_EINVAL, "object %zu: %zu bytes at %p (need 1..%u)", i, len,
                                 (const void *)data, VMT_STORE_OBJECT_MAX);
        if (type < VMT_OBJ_PAGE || type > VMT_OBJ_TYPE_MAX)
            return vmt_error_set(VMT_EINVAL, "object %zu: unknown type %u", i, type);
    }
    return 0;
}

/* Fills the window from src[base..]; returns how many objects it took. */
static size_t fill(put_job *j, const put_src *src, size_t base, size_t n)
{
    size_t k = 0, bytes = 0;
    while (base + k < n && k < DD_WINDOW_ITEMS) {
        const uint8_t *data;
        size_t len;
        unsigned type;
        src_get(src, base + k, &data, &len, &type);
        if (k > 0 && bytes + len > DD_WINDOW_BYTES)
            break;
        j->it[k] = (put_item){.data = data, .len = (uint32_t)len, .type = (uint8_t)type};
        bytes += len;
        k++;
    }
    return k;
}

static int resolve_cfg(vmt_store *s, const vmt_store_put_opts *o, dd_codec_cfg *cc)
{
    int codec = o && o->codec >= 0 ? o->codec : s->codec;
    cc->zstd_level = o && o->zstd_level > 0 ? o->zstd_level : s->zstd_level;
    cc->lz4_accel = o && o->lz4_accel > 0 ? o->lz4_accel : s->lz4_accel;
    if (codec >= VMT_CODEC_COUNT || cc->zstd_level > 19 || cc->lz4_accel > 64)
        return vmt_error_set(VMT_EINVAL,
                             "bad codec settings (codec %d, zstd level %d, lz4 "
                             "acceleration %d)",
                             codec, cc->zstd_level, cc->lz4_accel);
    cc->codec = (uint8_t)codec;
    cc->dict = NULL;
    if (codec != VMT_CODEC_ZSTD_DICT)
        return 0;
    dd_dict *d = s->dict_last ? s->dicts[s->dict_last] : NULL;
    if (!d) {
        cc->codec = VMT_CODEC_ZSTD; /* no dictionary trained yet */
        return 0;
    }
    cc->dict = d;
    return dd_dict_prepare(d, cc->zstd_level);
}

static int put_locked(vmt_store *s, const put_src *src, size_t n, vmt_id *ids, bool *is_new,
                      const vmt_store_put_opts *o)
{
    put_job j = {.s = s};
    if (s->read_only)
        return vmt_error_set(VMT_EINVAL, "store %s is open read-only", s->dir);
    if (s->sticky)
        return vmt_error_set(s->sticky, "an earlier write to %s failed; reopen the store", s->dir);
    int rc = validate(src, n);
    if (rc == 0)
        rc = resolve_cfg(s, o, &j.cc);
    if (rc != 0)
        return rc;
    size_t cap = VMT_MIN(n, (size_t)DD_WINDOW_ITEMS);
    j.it = vmt_mallocn(cap, sizeof(put_item));
    j.fresh = vmt_mallocn(cap, sizeof(uint32_t));
    for (size_t base = 0; rc == 0 && base < n && j.it && j.fresh; base += j.n) {
        j.n = fill(&j, src, base, n);
        j.ids = ids + base;
        rc = run_window(&j);
        for (size_t i = 0; rc == 0 && is_new && i < j.n; i++)
            is_new[base + i] = j.it[i].state == ST_NEW;
    }
    if (!j.it || !j.fresh)
        rc = VMT_ENOMEM;
    free(j.it);
    free(j.fresh);
    return rc;
}

static int put_common(vmt_store *s, const put_src *src, size_t n, vmt_id *ids, bool *is_new,
                      const vmt_store_put_opts *o)
{
    if (n == 0)
        return 0;
    if (!ids)
        return vmt_error_set(VMT_EINVAL, "put: ids must not be NULL");
    pthread_mutex_lock(&s->wmu);
    int rc = put_locked(s, src, n, ids, is_new, o);
    pthread_mutex_unlock(&s->wmu);
    return rc;
}

int vmt_store_put_many(vmt_store *s, const vmt_store_obj *objs, size_t n, vmt_id *ids, bool *is_new,
                       const vmt_store_put_opts *opts)
{
    put_src src = {.objs = objs};
    if (n && !objs)
        return vmt_error_set(VMT_EINVAL, "put: objs must not be NULL");
    return put_common(s, &src, n, ids, is_new, opts);
}

int vmt_store_put_pages(vmt_store *s, const void *const *pages, size_t n, vmt_id *ids, bool *is_new,
                        const vmt_store_put_opts *opts)
{
    put_src src = {.pages = pages};
    if (n && !pages)
        return vmt_error_set(VMT_EINVAL, "put: pages must not be NULL");
    return put_common(s, &src, n, ids, is_new, opts);
}
