/*
 * The index file: every committed entry of the in-memory index up to a
 * checkpoint in the log, so that opening reads one file instead of scanning
 * every pack.  Layout (docs/store.md): a 128-byte header, 32-byte entries,
 * an XXH3-64 of the entries.  Any mismatch makes open rebuild from packs.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "internal.h"

#define IDX_MAGIC "VMTIDX01"
#define IDX_VERSION 1u
#define IDX_HDR 128u
#define IDX_ENTRY 32u
#define IDX_BUF (1u << 20)

typedef struct idx_writer {
    vmt_store *s;
    dd_bfile *f;
    uint8_t *buf;
    size_t len;
    uint64_t off, count;
    XXH3_state_t *xs;
    int err;
} idx_writer;

static int flush(idx_writer *w)
{
    if (w->len == 0 || w->err)
        return w->err;
    struct iovec iov = {w->buf, w->len};
    w->err = w->s->be->ops->pwritev(w->f, &iov, 1, w->off);
    XXH3_64bits_update(w->xs, w->buf, w->len);
    w->off += w->len;
    w->len = 0;
    return w->err;
}

void dd_idx_put_entry(uint8_t *p, const dd_entry *e)
{
    memcpy(p, e->id.b, 16);
    dd_put32(p + 16, e->pack);
    dd_put32(p + 20, e->off);
    dd_put32(p + 24, e->slen);
    dd_put32(p + 28, e->meta & ~DD_META_MARK);
}

static int visit_save(void *ctx, const dd_entry *e)
{
    idx_writer *w = ctx;
    dd_pos at = {e->pack, e->off};
    if (dd_pos_cmp(at, w->s->committed) >= 0)
        return 0; /* not committed: the next open drops its record */
    if (w->len + IDX_ENTRY > IDX_BUF && flush(w) != 0)
        return w->err;
    dd_idx_put_entry(w->buf + w->len, e);
    w->len += IDX_ENTRY;
    w->count++;
    return 0;
}

void dd_idx_encode_header(uint8_t *h, const vmt_store *s, uint64_t count, uint32_t flags)
{
    memset(h, 0, IDX_HDR);
    memcpy(h, IDX_MAGIC, 8);
    dd_put32(h + 8, IDX_VERSION);
    dd_put32(h + 12, flags);
    memcpy(h + 16, s->uuid, 16);
    dd_put64(h + 32, count);
    dd_put32(h + 40, s->committed.pack);
    dd_put64(h + 48, s->committed.off);
    dd_put64(h + 56, s->gen);
    const uint64_t c[6] = {s->cc.put_objects, s->cc.put_bytes,   s->cc.zero_pages,
                           s->cc.dedup_hits,  s->cc.new_objects, s->cc.new_bytes};
    for (size_t i = 0; i < 6; i++)
        dd_put64(h + 64 + 8 * i, c[i]);
    dd_put64(h + 120, XXH3_64bits(h, 120));
}

static int write_tmp(vmt_store *s, dd_bfile *f)
{
    uint8_t hdr[IDX_HDR], tail[8];
    idx_writer w = {.s = s, .f = f, .off = IDX_HDR};
    w.buf = malloc(IDX_BUF);
    w.xs = XXH3_createState();
    if (!w.buf || !w.xs) {
        free(w.buf);
        XXH3_freeState(w.xs);
        return vmt_error_set(VMT_ENOMEM, "out of memory writing the index");
    }
    XXH3_64bits_reset(w.xs);
    int rc = dd_index_foreach(&s->ix, visit_save, &w);
    if (rc == 0)
        rc = flush(&w);
    if (rc == 0) {
        dd_put64(tail, XXH3_64bits_digest(w.xs));
        dd_idx_encode_header(hdr, s, w.count, 0);
        struct iovec t = {tail, 8}, h = {hdr, IDX_HDR};
        rc = s->be->ops->pwritev(f, &t, 1, w.off);
        if (rc == 0)
            rc = s->be->ops->pwritev(f, &h, 1, 0);
    }
    free(w.buf);
    XXH3_freeState(w.xs);
    return rc;
}

int dd_idx_save(vmt_store *s)
{
    if (s->be->ops->idx_add)
        return dd_idxomap_save(s);
    dd_bfile *f;
    int rc = s->be->ops->open(s->be, DD_INDEX_FILE, DD_BF_REPLACE, &f);
    if (rc == 0) {
        rc = write_tmp(s, f);
        if (rc == 0)
            rc = s->be->ops->publish(f); /* durable, then atomically in place */
        else
            s->be->ops->close(f);
    }
    if (rc != 0)
        return vmt_error_wrap(rc, "saving the index of %s", s->dir);
    s->indexed = s->committed;
    return 0;
}

/* ---- loading ---- */

static int check_entry(vmt_store *s, const dd_entry *e)
{
    unsigned type = dd_meta_type(e->meta), codec = dd_meta_codec(e->meta);
    uint32_t rlen = dd_meta_rlen(e->meta);
    if (type < VMT_OBJ_PAGE || type > VMT_OBJ_TYPE_MAX || rlen == 0 ||
        rlen > VMT_STORE_OBJECT_MAX || e->slen == 0 || e->slen > dd_stored_bound(rlen) ||
        (e->meta & DD_META_MARK) || (codec == VMT_CODEC_RAW && e->slen != rlen))
        return vmt_error_set(VMT_ECORRUPT, "index entry with impossible fields");
    dd_pack *p = dd_pack_get(s, e->pack);
    if (!p || (uint64_t)e->off + DD_REC_HDR + e->slen > p->size || e->off < DD_PACK_HDR)
        return vmt_error_set(VMT_ECORRUPT, "index entry points outside pack %u", e->pack);
    return 0;
}

/* Reads exactly len bytes at off. */
static int read_at(vmt_store *s, dd_bfile *f, void *buf, size_t len, uint64_t off)
{
    size_t got = 0;
    int rc = s->be->ops->pread(f, buf, len, off, &got);
    if (rc == 0 && got != len)
        rc = vmt_error_set(VMT_ECORRUPT, "index truncated while being read");
    return rc;
}

int dd_idx_insert(vmt_store *s, const uint8_t *p)
{
    dd_entry e;
    bool existed;
    memcpy(e.id.b, p, 16);
    e.pack = dd_get32(p + 16);
    e.off = dd_get32(p + 20);
    e.slen = dd_get32(p + 24);
    e.meta = dd_get32(p + 28);
    int rc = check_entry(s, &e);
    if (rc == 0)
        rc = dd_index_insert(&s->ix, &e, &existed, NULL);
    if (rc == 0 && existed)
        rc = vmt_error_set(VMT_ECORRUPT, "index lists an id twice");
    return rc;
}

static int load_entries(vmt_store *s, dd_bfile *f, uint64_t count, XXH3_state_t *xs)
{
    uint8_t *buf = malloc(IDX_BUF);
    if (!buf)
        return vmt_error_set(VMT_ENOMEM, "out of memory loading the index");
    uint64_t off = IDX_HDR, left = count;
    int rc = 0;
    while (rc == 0 && left > 0) {
        size_t n = (size_t)VMT_MIN(left, (uint64_t)(IDX_BUF / IDX_ENTRY));
        if ((rc = read_at(s, f, buf, n * IDX_ENTRY, off)) != 0)
            break;
        XXH3_64bits_update(xs, buf, n * IDX_ENTRY);
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = dd_idx_insert(s, buf + i * IDX_ENTRY);
        off += n * IDX_ENTRY;
        left -= n;
    }
    free(buf);
    return rc;
}

static int check_header(vmt_store *s, const uint8_t *h, uint64_t fsize, uint64_t *count)
{
    uint64_t body;
    if (memcmp(h, IDX_MAGIC, 8) != 0 || dd_get64(h + 120) != XXH3_64bits(h, 120))
        return vmt_error_set(VMT_ECORRUPT, "index header damaged");
    if (dd_get32(h + 8) != IDX_VERSION || memcmp(h + 16, s->uuid, 16) != 0)
        return vmt_error_set(VMT_ECORRUPT, "index of another version or store");
    *count = dd_get64(h + 32);
    if (vmt_mul_overflow_u64(*count, IDX_ENTRY, &body) || body != fsize - IDX_HDR - 8)
        return vmt_error_set(VMT_ECORRUPT, "index size does not match its %llu entries",
                             (unsigned long long)*count);
    dd_pos cp = {dd_get32(h + 40), dd_get64(h + 48)};
    dd_pack *p = dd_pack_get(s, cp.pack);
    if (cp.pack != 0 && (!p || p->bad || cp.off > p->size || cp.off < DD_PACK_HDR))
        return vmt_error_set(VMT_ECORRUPT, "index checkpoint %u:%llu lies beyond the packs",
                             cp.pack, (unsigned long long)cp.off);
    s->committed = s->indexed = cp;
    s->gen = dd_get64(h + 56);
    uint64_t *c[6] = {&s->cc.put_objects, &s->cc.put_bytes,   &s->cc.zero_pages,
                      &s->cc.dedup_hits,  &s->cc.new_objects, &s->cc.new_bytes};
    for (size_t i = 0; i < 6; i++)
        *c[i] = dd_get64(h + 64 + 8 * i);
    return 0;
}

static int load_file(vmt_store *s, dd_bfile *f)
{
    uint64_t size = 0;
    uint8_t h[IDX_HDR], tail[8];
    uint64_t count = 0;
    int rc = s->be->ops->size(f, &size);
    if (rc != 0)
        return rc;
    if (size < IDX_HDR + 8)
        return vmt_error_set(VMT_ECORRUPT, "index truncated (%llu bytes)",
                             (unsigned long long)size);
    if ((rc = read_at(s, f, h, IDX_HDR, 0)) != 0)
        return rc;
    rc = check_header(s, h, size, &count);
    if (rc != 0)
        return rc;
    dd_index_free(&s->ix);
    if (dd_index_init(&s->ix, (size_t)count) != 0)
        return VMT_ENOMEM;
    XXH3_state_t *xs = XXH3_createState();
    if (!xs)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    XXH3_64bits_reset(xs);
    rc = load_entries(s, f, count, xs);
    if (rc == 0 && (read_at(s, f, tail, 8, size - 8) != 0 || dd_get64(tail) != XXH3_64bits_digest(xs)))
        rc = vmt_error_set(VMT_ECORRUPT, "index checksum mismatch");
    XXH3_freeState(xs);
    if (rc == 0 && (dd_get32(h + 12) & DD_IDX_OMAP)) {
        if (count != 0 || !s->be->ops->idx_load)
            return vmt_error_set(VMT_ECORRUPT, "index flags entries kept by a %s backend",
                                 s->be->ops->idx_load ? "sharded" : "different");
        rc = dd_idxomap_load(s);
    }
    return rc;
}

int dd_idx_load(vmt_store *s)
{
    dd_bfile *f;
    int rc = s->be->ops->open(s->be, DD_INDEX_FILE, DD_BF_READ, &f);
    if (rc == VMT_ENOENT)
        return vmt_error_set(VMT_ENOENT, "%s/%s is missing", s->dir, DD_INDEX_FILE);
    if (rc != 0)
        return rc;
    rc = load_file(s, f);
    s->be->ops->close(f);
    if (rc != 0)
        return vmt_error_wrap(rc, "%s/%s", s->dir, DD_INDEX_FILE);
    return 0;
}
