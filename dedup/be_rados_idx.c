/*
 * The RADOS backend's index entries: omap of 256 shard objects
 * "index.00" .. "index.ff", chosen by the id's first byte, so no object's
 * omap grows past Ceph's large-omap warning (200k keys) before ~50 million
 * objects.  Keys are the id in hex (32 characters, so `rados listomapkeys`
 * is readable); values the 16 bytes pack, offset, stored length, meta of an
 * index-file entry (docs/store.md).  idxfile.c decides what to write and
 * when; the header with the checkpoint stays in the object "index".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "be_rados.h"
#include "internal.h"

#define OMAP_BATCH 1024u /* keys per operation */
#define HEXLEN 32u

static void shard_name(char buf[16], unsigned shard)
{
    snprintf(buf, 16, "index.%02x", shard);
}

static void to_hex(const uint8_t *id, char out[HEXLEN + 1])
{
    static const char d[] = "0123456789abcdef";
    for (unsigned i = 0; i < 16; i++) {
        out[2 * i] = d[id[i] >> 4];
        out[2 * i + 1] = d[id[i] & 15];
    }
    out[HEXLEN] = '\0';
}

/* Digit values of lowercase hex; 16 for anything else.  Opening decodes
 * every key of the index (a profile of opening 32k entries had the
 * branchy version at ~9% of the client's CPU). */
static const uint8_t hexval[256] = {
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6, ['6'] = 7, ['7'] = 8,
    ['8'] = 9, ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
}; /* value + 1, so that 0 marks a non-digit */

static int from_hex(const char *s, size_t n, uint8_t id[16])
{
    unsigned bad = n != HEXLEN;
    for (unsigned i = 0; !bad && i < 16; i++) {
        unsigned hi = hexval[(uint8_t)s[2 * i]], lo = hexval[(uint8_t)s[2 * i + 1]];
        bad = !hi || !lo;
        id[i] = (uint8_t)((hi - 1) << 4 | (lo - 1));
    }
    return bad ? -1 : 0;
}

/* Sets n entries (32-byte records) in one operation. */
static int set_batch(rados_be *b, const char *oid, const uint8_t *recs, size_t n)
{
    char keys[OMAP_BATCH][HEXLEN + 1];
    const char *kp[OMAP_BATCH], *vp[OMAP_BATCH];
    size_t kl[OMAP_BATCH], vl[OMAP_BATCH];
    for (size_t i = 0; i < n; i++) {
        to_hex(recs + 32 * i, keys[i]);
        kp[i] = keys[i];
        vp[i] = (const char *)recs + 32 * i + 16;
        kl[i] = HEXLEN;
        vl[i] = 16;
    }
    rados_write_op_t op = rados_create_write_op();
    if (!op)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    rados_write_op_omap_set2(op, kp, vp, kl, vl, n);
    int r = rados_write_op_operate(op, b->io, oid, NULL, 0);
    rados_release_write_op(op);
    return r < 0 ? dd_rados_fail(b, r, "writing index entries to", oid) : 0;
}

static int cmp_rec(const void *a, const void *b)
{
    return memcmp(a, b, 16);
}

/* Removes the keys of oid that recs (sorted) does not hold. */
static int prune(rados_be *b, const char *oid, const uint8_t *recs, size_t n)
{
    char after[HEXLEN + 1] = "", dead[OMAP_BATCH][HEXLEN + 1];
    unsigned char more = 1;
    int rc = 0;
    while (rc == 0 && more) {
        rados_omap_iter_t it = NULL;
        int prval = 0;
        size_t nd = 0;
        rados_read_op_t rop = rados_create_read_op();
        rados_read_op_omap_get_keys2(rop, after, OMAP_BATCH, &it, &more, &prval);
        int r = rados_read_op_operate(rop, b->io, oid, 0);
        char *key, *val;
        size_t klen, vlen;
        while (r == 0 && prval == 0 && rados_omap_get_next2(it, &key, &val, &klen, &vlen) == 0 &&
               key) {
            uint8_t id[16];
            snprintf(after, sizeof(after), "%.*s", (int)VMT_MIN(klen, (size_t)HEXLEN), key);
            if (from_hex(key, klen, id) != 0 || !n || !bsearch(id, recs, n, 32, cmp_rec))
                snprintf(dead[nd++], HEXLEN + 1, "%s", after);
        }
        if (it)
            rados_omap_get_end(it);
        rados_release_read_op(rop);
        if (r == -ENOENT)
            return 0; /* no shard object yet: nothing to prune */
        if (r < 0 || prval < 0)
            return dd_rados_fail(b, r < 0 ? r : prval, "listing index entries of", oid);
        if (nd) {
            const char *kp[OMAP_BATCH];
            size_t kl[OMAP_BATCH];
            for (size_t i = 0; i < nd; i++) {
                kp[i] = dead[i];
                kl[i] = strlen(dead[i]);
            }
            rados_write_op_t op = rados_create_write_op();
            rados_write_op_omap_rm_keys2(op, kp, kl, nd);
            r = rados_write_op_operate(op, b->io, oid, NULL, 0);
            rados_release_write_op(op);
            if (r < 0)
                rc = dd_rados_fail(b, r, "removing index entries from", oid);
        }
    }
    return rc;
}

int dd_rados_idx_add(dd_backend *base, unsigned shard, uint8_t *recs, size_t n, bool replace)
{
    rados_be *b = (rados_be *)base;
    char oid[16];
    int rc = dd_rados_may_write(b);
    shard_name(oid, shard);
    /* Every live id keeps an entry at every moment: new entries are set
     * first (overwriting moved ones), dead ones removed after. */
    for (size_t i = 0; rc == 0 && i < n; i += OMAP_BATCH)
        rc = set_batch(b, oid, recs + 32 * i, VMT_MIN((size_t)OMAP_BATCH, n - i));
    if (rc == 0 && replace) {
        if (n > 1)
            qsort(recs, n, 32, cmp_rec);
        rc = prune(b, oid, recs, n);
    }
    return rc;
}

/* Calls fn for each entry of one page of shard's omap; `after` gets the
 * last key (where the next page starts). */
static int consume(unsigned shard, rados_omap_iter_t it, char after[HEXLEN + 1],
                   dd_idx_load_fn fn, void *ctx)
{
    char *key, *val;
    size_t klen, vlen;
    int rc = 0;
    while (rc == 0 && rados_omap_get_next2(it, &key, &val, &klen, &vlen) == 0 && key) {
        uint8_t rec[32];
        if (from_hex(key, klen, rec) != 0 || vlen != 16 || rec[0] % DD_RADOS_IDX_SHARDS != shard)
            return vmt_error_set(VMT_ECORRUPT, "index.%02x: a malformed index entry", shard);
        memcpy(rec + 16, val, 16);
        memcpy(after, key, HEXLEN); /* from_hex checked klen == HEXLEN */
        after[HEXLEN] = '\0';
        rc = fn(ctx, rec);
    }
    return rc;
}

/*
 * Loading: a window of LOAD_WINDOW page reads in flight at once
 * (rados_aio_read_op_operate).  A slot whose page had more keys asks for the
 * shard's next page; otherwise it takes the next shard not yet asked for.
 * Opening pays about 256 / LOAD_WINDOW round trips for a small index, not
 * 256; a shard of many pages is read page after page, beside the others.
 */
#define LOAD_WINDOW 64u

typedef struct shard_read {
    unsigned shard;
    char after[HEXLEN + 1]; /* the page starts after this key ("" first) */
    rados_read_op_t op;
    rados_completion_t c;
    rados_omap_iter_t it;
    unsigned char more;
    int prval;
} shard_read;

static void slot_release(shard_read *r)
{
    if (r->it)
        rados_omap_get_end(r->it);
    if (r->c)
        rados_aio_release(r->c);
    if (r->op)
        rados_release_read_op(r->op);
    r->it = NULL;
    r->c = NULL;
    r->op = NULL;
}

/* Asks for the page of r->shard after r->after. */
static int slot_issue(rados_be *b, shard_read *r)
{
    char oid[16];
    shard_name(oid, r->shard);
    r->more = 0;
    r->prval = 0;
    r->op = rados_create_read_op();
    if (!r->op)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    rados_read_op_omap_get_vals2(r->op, r->after, NULL, OMAP_BATCH, &r->it, &r->more, &r->prval);
    int e = rados_aio_create_completion2(NULL, NULL, &r->c);
    if (e == 0)
        e = rados_aio_read_op_operate(r->op, b->io, r->c, oid, 0);
    if (e < 0) {
        slot_release(r); /* never submitted: nothing to wait for */
        return dd_rados_err(e, "reading index entries of", oid);
    }
    return 0;
}

/* Waits for r's page and hands its entries to fn; *again when the shard
 * has more pages (r->after then names where the next one starts). */
static int slot_finish(rados_be *b, shard_read *r, dd_idx_load_fn fn, void *ctx, bool *again)
{
    char oid[16];
    shard_name(oid, r->shard);
    *again = false;
    rados_aio_wait_for_complete(r->c);
    int ret = rados_aio_get_return_value(r->c), rc = 0;
    if (ret == -ENOENT && !r->after[0])
        rc = 0; /* a shard nothing was ever saved to */
    else if (ret < 0 || r->prval < 0)
        rc = dd_rados_fail(b, ret < 0 ? ret : r->prval, "reading index entries of", oid);
    else if ((rc = consume(r->shard, r->it, r->after, fn, ctx)) == 0)
        *again = r->more != 0;
    slot_release(r);
    return rc;
}

/* Every slot issued is waited for, also after an error (librados writes
 * into the slot until its completion). */
static void drain(shard_read *slots, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        if (slots[i].c)
            rados_aio_wait_for_complete(slots[i].c);
        slot_release(&slots[i]);
    }
}

int dd_rados_idx_load(dd_backend *base, dd_idx_load_fn fn, void *ctx)
{
    rados_be *b = (rados_be *)base;
    shard_read *slots = calloc(LOAD_WINDOW, sizeof(*slots));
    if (!slots)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    unsigned next = 0, busy = 0;
    int rc = 0;
    for (; rc == 0 && next < VMT_MIN(LOAD_WINDOW, DD_RADOS_IDX_SHARDS); next++) {
        slots[next].shard = next;
        if ((rc = slot_issue(b, &slots[next])) == 0)
            busy++;
    }
    /* Slots are finished in turn, round the window: the oldest request
     * first, so a wait is for the page most likely to be there. */
    for (unsigned i = 0; rc == 0 && busy; i = (i + 1) % LOAD_WINDOW) {
        shard_read *r = &slots[i];
        bool again;
        if (!r->c)
            continue;
        busy--;
        rc = slot_finish(b, r, fn, ctx, &again);
        if (rc == 0 && !again && next < DD_RADOS_IDX_SHARDS) {
            r->shard = next++;
            r->after[0] = '\0';
            again = true;
        }
        if (rc == 0 && again && (rc = slot_issue(b, r)) == 0)
            busy++;
    }
    drain(slots, LOAD_WINDOW);
    free(slots);
    return rc;
}

static int remove_shard(void *ctx, const char *name)
{
    rados_be *b = ctx;
    if (strncmp(name, "index.", 6) != 0 || strlen(name) != 8)
        return 0;
    int r = rados_remove(b->io, name);
    return r < 0 && r != -ENOENT ? dd_rados_fail(b, r, "removing", name) : 0;
}

int dd_rados_idx_remove(rados_be *b)
{
    return b->base.ops->list(&b->base, ".", remove_shard, b);
}
