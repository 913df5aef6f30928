/*
 * Recovery at open: replays the log after the index checkpoint (or every
 * pack, when the index had to be rebuilt), indexing records that a commit
 * marker vouches for and dropping what follows the last marker.
 *
 * A commit writes its records, fdatasyncs them, then appends a marker and
 * fdatasyncs again (store.c), so a valid marker proves that every record
 * before it reached the disk: a bad record before a marker is damage that
 * happened later (counted, skipped), a bad record after the last marker is
 * an interrupted write (dropped).  See docs/store.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

typedef struct replay {
    vmt_store *s;
    dd_entry *pend; /* records since the last marker */
    size_t npend, cap;
    uint64_t pend_bad; /* bad records or garbage runs since the last marker */
    bool have_marker;
    dd_pos last; /* end of the last marker */
    dd_marker m;
    uint32_t cur; /* pack being scanned */
    uint64_t replayed, damaged;
} replay;

static int push(replay *r, const dd_scan_item *it)
{
    if (r->npend == r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 1024;
        dd_entry *np = vmt_reallocn(r->pend, ncap, sizeof(*np));
        if (!np)
            return VMT_ENOMEM;
        r->pend = np;
        r->cap = ncap;
    }
    dd_entry *e = &r->pend[r->npend++];
    e->id = it->h.id;
    e->pack = r->cur;
    e->off = (uint32_t)it->off;
    e->slen = it->h.stored_len;
    e->meta = dd_meta(it->h.raw_len, it->h.type, it->h.codec);
    return 0;
}

/* A marker: everything pending is committed.  The first copy of an id wins. */
static int accept(replay *r, const dd_scan_item *it, const dd_marker *m)
{
    for (size_t i = 0; i < r->npend; i++) {
        bool existed;
        int rc = dd_index_insert(&r->s->ix, &r->pend[i], &existed, NULL);
        if (rc != 0)
            return rc;
        r->replayed += !existed;
    }
    r->npend = 0;
    r->damaged += r->pend_bad;
    r->pend_bad = 0;
    r->have_marker = true;
    r->last = (dd_pos){r->cur, it->off + it->len};
    r->m = *m;
    return 0;
}

static int on_item(void *ctx, const dd_scan_item *it)
{
    replay *r = ctx;
    dd_marker m;
    if (it->kind != DD_SCAN_RECORD || !it->payload_ok || it->off > UINT32_MAX) {
        r->pend_bad++;
        return 0;
    }
    if (it->h.type != DD_REC_COMMIT)
        return push(r, it);
    if (dd_marker_decode(&it->h, it->payload, &m) != 0) {
        r->pend_bad++;
        return 0;
    }
    return accept(r, it, &m);
}

static int scan_one(vmt_store *s, replay *r, dd_pack *p, uint64_t from)
{
    if (p->torn)
        return 0; /* a pack whose creation never reached the disk */
    if (p->bad) {
        r->pend_bad++;
        return 0;
    }
    dd_bfile *f;
    int rc = dd_pack_file(s, p->num, DD_BF_READ, &f);
    if (rc != 0)
        return vmt_error_wrap(VMT_EIO, "opening pack %u", p->num);
    r->cur = p->num;
    rc = dd_scan_pack(s->be, f, VMT_MAX(from, (uint64_t)DD_PACK_HDR), p->size, on_item, r);
    s->be->ops->close(f);
    if (rc != 0)
        return vmt_error_wrap(rc, "replaying pack %u", p->num);
    return 0;
}

/* Bytes and packs past the commit point. */
static uint64_t bytes_after(vmt_store *s, dd_pos at)
{
    uint64_t n = 0;
    for (uint32_t i = VMT_MAX(at.pack, 1u); i <= s->last_pack; i++) {
        dd_pack *p = dd_pack_get(s, i);
        if (!p)
            continue;
        if (i == at.pack)
            n += p->size > at.off ? p->size - at.off : 0;
        else
            n += p->size;
    }
    return n;
}

static int truncate_pack(vmt_store *s, dd_pack *p, uint64_t off)
{
    dd_bfile *f;
    int rc = dd_pack_file(s, p->num, DD_BF_WRITE, &f);
    if (rc == 0) {
        if ((rc = s->be->ops->truncate(f, off)) == 0)
            rc = s->be->ops->sync(f);
        s->be->ops->close(f);
    }
    if (rc != 0)
        return vmt_error_wrap(VMT_EIO, "truncating pack %u", p->num);
    p->size = off;
    return 0;
}

/* Cuts the log back to s->committed: a writer's half of recovery. */
static int drop_tail(vmt_store *s)
{
    dd_pos at = s->committed;
    for (uint32_t i = at.pack + 1; i <= s->last_pack; i++) {
        dd_pack *p = dd_pack_get(s, i);
        if (p && (p->bad || p->hdr_err)) {
            vmt_warn("store %s: keeping the uncommitted tail: %s", s->dir, p->why);
            return 0;
        }
    }
    dd_pack *cp = dd_pack_get(s, at.pack);
    if (cp && !cp->bad && cp->size > at.off) {
        int rc = truncate_pack(s, cp, at.off);
        if (rc != 0)
            return rc;
    }
    uint32_t last = s->last_pack;
    for (uint32_t i = at.pack + 1; i <= last; i++) {
        if (!dd_pack_get(s, i))
            continue;
        int rc = dd_pack_delete(s, i);
        if (rc != 0)
            return rc;
        s->rec.packs_removed++;
    }
    s->last_pack = at.pack;
    while (s->last_pack > 0 && !dd_pack_get(s, s->last_pack))
        s->last_pack--;
    if (s->dir_dirty) {
        int rc = dd_sync_packs_dir(s);
        if (rc != 0)
            return rc;
        s->dir_dirty = false;
    }
    return 0;
}

void dd_recover_report(vmt_store *s)
{
    vmt_store_recovery *rc = &s->rec;
    if ((rc->records_dropped || rc->bytes_dropped) && s->read_only)
        vmt_info("store %s: ignoring %llu records after the last commit (a writer's work in "
                 "progress, or a crash)",
                 s->dir, (unsigned long long)rc->records_dropped);
    else if (rc->records_dropped || rc->bytes_dropped)
        vmt_warn("store %s: dropped %llu uncommitted records (%llu bytes) after the last commit",
                 s->dir, (unsigned long long)rc->records_dropped,
                 (unsigned long long)rc->bytes_dropped);
    if (rc->records_damaged)
        vmt_warn("store %s: %llu damaged records or regions skipped; run 'vmtree store verify'",
                 s->dir, (unsigned long long)rc->records_damaged);
    if (rc->index_rebuilt)
        vmt_warn("store %s: index rebuilt from %u packs (%llu objects)", s->dir, s->last_pack,
                 (unsigned long long)dd_index_count(&s->ix));
}

static int replay_all(vmt_store *s, replay *r, dd_pos start)
{
    for (uint32_t i = VMT_MAX(start.pack, 1u); i <= s->last_pack; i++) {
        dd_pack *p = dd_pack_get(s, i);
        if (!p)
            continue;
        int rc = scan_one(s, r, p, i == start.pack ? start.off : DD_PACK_HDR);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int dd_recover(vmt_store *s, bool rebuild)
{
    replay r = {.s = s};
    dd_pos start = s->committed;
    if (rebuild) {
        dd_index_clear(&s->ix);
        s->committed = start = (dd_pos){0, 0};
        s->gen = 0;
        memset(&s->cc, 0, sizeof(s->cc));
        s->rec.index_rebuilt = true;
    }
    int rc = replay_all(s, &r, start);
    if (rc == 0) {
        if (r.have_marker) {
            s->committed = r.last;
            s->gen = r.m.gen;
            s->cc = r.m.c;
        }
        s->pc = s->cc;
        s->rec.records_replayed = r.replayed;
        s->rec.records_damaged = r.damaged;
        s->rec.records_dropped = r.npend + r.pend_bad;
        s->rec.bytes_dropped = bytes_after(s, s->committed);
        if (!s->read_only)
            rc = drop_tail(s);
    }
    free(r.pend);
    return rc;
}
