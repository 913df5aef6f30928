/*
 * verify: read every committed record of every pack, check its checksums,
 * decompress it and rehash it against its id; then check that every index
 * entry points at a record that passed.  Each damage is reported with its
 * pack and offset.
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

typedef struct vctx {
    vmt_store *s;
    const vmt_store_verify_opts *o;
    vmt_store_verify_stats *st;
    uint32_t pack;
    dd_scratch *sc;
    uint8_t *buf;
    uint64_t good_indexed; /* records that passed where the index says */
    uint64_t done, total;  /* bytes, for progress */
} vctx;

static void report(vctx *v, uint32_t pack, uint64_t off, const vmt_id *id, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void report(vctx *v, uint32_t pack, uint64_t off, const vmt_id *id, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    v->st->damaged++;
    if (!v->o->damage)
        return;
    vmt_store_damage d = {.pack = pack, .offset = off, .id_known = id != NULL, .what = what};
    if (id)
        d.id = *id;
    v->o->damage(v->o->damage_ctx, &d);
}

static void check_object(vctx *v, const dd_scan_item *it)
{
    const dd_rec_hdr *h = &it->h;
    vmt_id got;
    dd_entry e;
    pthread_rwlock_rdlock(&v->s->layout);
    const dd_dict *d = h->codec == VMT_CODEC_ZSTD_DICT ? dd_dict_get(v->s, h->dict) : NULL;
    int rc = dd_decompress(v->sc, h->codec, d, it->payload, h->stored_len, v->buf, h->raw_len);
    pthread_rwlock_unlock(&v->s->layout);
    if (rc != 0) {
        report(v, v->pack, it->off, &h->id, "%s", vmt_error_last());
        return;
    }
    vmt_id_of(v->buf, h->raw_len, &got);
    if (!vmt_id_equal(&got, &h->id)) {
        report(v, v->pack, it->off, &h->id, "content does not hash to its id");
        return;
    }
    v->st->objects_ok++;
    if (dd_index_lookup(&v->s->ix, &h->id, &e) && e.pack == v->pack && e.off == it->off)
        v->good_indexed++;
}

static int on_item(void *ctx, const dd_scan_item *it)
{
    vctx *v = ctx;
    dd_marker m;
    if (it->kind == DD_SCAN_GARBAGE) {
        report(v, v->pack, it->off, NULL, "%llu bytes hold no valid record",
               (unsigned long long)it->len);
    } else if (it->kind == DD_SCAN_TORN) {
        report(v, v->pack, it->off, NULL, "record truncated by the end of the pack");
    } else {
        v->st->records++;
        v->st->bytes += it->len;
        if (!it->payload_ok)
            report(v, v->pack, it->off, &it->h.id, "checksum mismatch");
        else if (it->h.type == DD_REC_COMMIT && dd_marker_decode(&it->h, it->payload, &m) != 0)
            report(v, v->pack, it->off, NULL, "bad commit marker: %s", vmt_error_last());
        else if (it->h.type != DD_REC_COMMIT)
            check_object(v, it);
    }
    v->done += it->len;
    if (v->o->progress && (v->st->records & 0x3fff) == 0)
        v->o->progress(v->o->progress_ctx, "verify", v->done, v->total);
    return 0;
}

static int verify_pack(vctx *v, dd_pack *p, uint64_t end)
{
    v->pack = p->num;
    v->st->packs++;
    if (p->bad || p->torn) {
        report(v, p->num, 0, NULL, "%s", p->why);
        return 0;
    }
    if (p->hdr_err)
        report(v, p->num, 0, NULL, "%s", p->why);
    dd_bfile *f;
    if (dd_pack_file(v->s, p->num, DD_BF_READ, &f) != 0) {
        report(v, p->num, 0, NULL, "cannot be opened any more");
        return 0;
    }
    int rc = dd_scan_pack(v->s->be, f, DD_PACK_HDR, end, on_item, v);
    v->s->be->ops->close(f);
    return rc;
}

/* Committed bytes of pack p. */
static uint64_t committed_end(const vmt_store *s, const dd_pack *p)
{
    if (p->num > s->committed.pack)
        return 0;
    return p->num == s->committed.pack ? VMT_MIN(p->size, s->committed.off) : p->size;
}

typedef struct icheck {
    vctx *v;
    dd_entry *bad;
    size_t n, cap;
    uint64_t expected;
} icheck;

static int count_committed(void *ctx, const dd_entry *e)
{
    icheck *ic = ctx;
    ic->expected += dd_pos_cmp((dd_pos){e->pack, e->off}, ic->v->s->committed) < 0;
    return 0;
}

static int collect_all(void *ctx, const dd_entry *e)
{
    icheck *ic = ctx;
    if (dd_pos_cmp((dd_pos){e->pack, e->off}, ic->v->s->committed) >= 0)
        return 0;
    if (ic->n == ic->cap) {
        size_t ncap = ic->cap ? ic->cap * 2 : 1024;
        dd_entry *nb = vmt_reallocn(ic->bad, ncap, sizeof(*nb));
        if (!nb)
            return VMT_ENOMEM;
        ic->bad = nb;
        ic->cap = ncap;
    }
    ic->bad[ic->n++] = *e;
    return 0;
}

/* Slow path, only when some entry did not meet a good record: find which. */
static int check_index(vctx *v)
{
    icheck ic = {.v = v};
    dd_index_foreach(&v->s->ix, count_committed, &ic);
    if (v->good_indexed >= ic.expected)
        return 0;
    int rc = dd_index_foreach(&v->s->ix, collect_all, &ic);
    pthread_rwlock_rdlock(&v->s->layout);
    for (size_t i = 0; rc == 0 && i < ic.n; i++) {
        const dd_entry *e = &ic.bad[i];
        if (dd_read_entry(v->s, v->sc, e, v->buf, true) != 0)
            report(v, e->pack, e->off, &e->id, "index entry unreadable: %s", vmt_error_last());
    }
    pthread_rwlock_unlock(&v->s->layout);
    free(ic.bad);
    return rc;
}

static int verify_all(vctx *v)
{
    vmt_store *s = v->s;
    int rc = 0;
    for (uint32_t i = 1; i <= s->last_pack; i++) {
        dd_pack *p = dd_pack_get(s, i);
        v->total += p ? committed_end(s, p) : 0;
    }
    for (uint32_t i = 1; rc == 0 && i <= s->last_pack; i++) {
        dd_pack *p = dd_pack_get(s, i);
        if (p && (i <= s->committed.pack || p->bad || p->hdr_err))
            rc = verify_pack(v, p, committed_end(s, p));
    }
    if (rc == 0)
        rc = check_index(v);
    if (v->o->progress)
        v->o->progress(v->o->progress_ctx, "verify", v->total, v->total);
    return rc;
}

int vmt_store_verify(vmt_store *s, const vmt_store_verify_opts *o, vmt_store_verify_stats *out)
{
    vmt_store_verify_opts def = {0};
    vmt_store_verify_stats st = {0};
    vctx v = {.s = s, .o = o ? o : &def, .st = &st};
    if (s->refs_only)
        return vmt_error_set(VMT_EINVAL, "store %s is open for refs only", s->dir);
    int rc = dd_scratch_new(&v.sc, 1);
    v.buf = malloc(VMT_STORE_OBJECT_MAX);
    if (rc == 0 && !v.buf)
        rc = vmt_error_set(VMT_ENOMEM, "out of memory");
    if (rc == 0) {
        pthread_mutex_lock(&s->wmu); /* no gc or put moves records meanwhile */
        rc = verify_all(&v);
        pthread_mutex_unlock(&s->wmu);
    }
    dd_scratch_free(v.sc);
    free(v.buf);
    if (out)
        *out = st;
    if (rc == 0 && st.damaged)
        rc = vmt_error_set(VMT_ECORRUPT, "store %s: %llu damaged records or regions", s->dir,
                           (unsigned long long)st.damaged);
    return rc;
}
