/*
 * Golden image receiver, part 2: what the walk planned arrives and is
 * stored, in an order that keeps the store consistent at every commit:
 *
 *   1. the records of the snapshots the store lacks (kept in memory);
 *   2. the walk (golden_fetch.c) fetches the map nodes it lacks;
 *   3. pages, Want by Want; after each answer the nodes whose subtree is
 *      now complete are stored, children first; a commit every
 *      commit_bytes.  A failure commits what arrived whole and checked, so
 *      the next transfer does not ask for it again;
 *   4. the state blobs it lacks;
 *   5. each new snapshot is checked complete in the store (map, pages,
 *      state); only then are the records stored and committed, and the
 *      chain added to the catalog, oldest first.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden_rx.h"

/* ---- planning when nodes can be stored ----------------------------------- */

typedef struct order_key {
    uint64_t ready;
    uint8_t level;
    size_t idx;
} order_key;

static int cmp_key(const void *a, const void *b)
{
    const order_key *x = a, *y = b;
    if (x->ready != y->ready)
        return x->ready < y->ready ? -1 : 1;
    if (x->level != y->level)
        return x->level < y->level ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* The latest Want seq a child of node `nd` arrives in (0: held already). */
static uint64_t node_ready(const rx *r, const golden_idmap *idx, const rx_node *nd)
{
    size_t count = (nd->len - VMT_MAPNODE_HDR) / VMT_MAPNODE_ENTRY;
    uint64_t ready = 0, v;
    for (size_t i = 0; i < count; i++) {
        vmt_mapnode_entry e;
        vmt_store_mapnode_entry_at(nd->data, i, &e);
        if (nd->level == 0) {
            if (golden_idmap_get(&r->seen, &e.child, &v) && !(v & RX_NODE_BIT))
                ready = VMT_MAX(ready, r->page_base + v / r->o->want_ids + 1);
        } else if (golden_idmap_get(idx, &e.child, &v)) {
            ready = VMT_MAX(ready, r->nodes[v].ready);
        }
    }
    return ready;
}

int rx_plan(rx *r)
{
    golden_idmap idx;
    order_key *keys = vmt_mallocn(r->nnodes ? r->nnodes : 1, sizeof(*keys));
    r->order = vmt_mallocn(r->nnodes ? r->nnodes : 1, sizeof(size_t));
    int rc = keys && r->order ? 0 : vmt_error_set(VMT_ENOMEM, "golden: out of memory");

    golden_idmap_init(&idx);
    r->page_base = r->seq;
    for (size_t i = 0; rc == 0 && i < r->nnodes; i++)
        rc = golden_idmap_put(&idx, &r->nodes[i].id, i, NULL);
    /* Children sit one level below their parent: levels in ascending order
     * see every child's ready before its parent needs it. */
    for (unsigned l = 0; rc == 0 && l <= VMT_MAPNODE_MAX_LEVEL; l++)
        for (size_t i = 0; i < r->nnodes; i++)
            if (r->nodes[i].level == l)
                r->nodes[i].ready = node_ready(r, &idx, &r->nodes[i]);
    for (size_t i = 0; rc == 0 && i < r->nnodes; i++)
        keys[i] = (order_key){r->nodes[i].ready, r->nodes[i].level, i};
    if (rc == 0) {
        qsort(keys, r->nnodes, sizeof(*keys), cmp_key);
        for (size_t i = 0; i < r->nnodes; i++)
            r->order[i] = keys[i].idx;
    }
    golden_idmap_free(&idx);
    free(keys);
    return rc;
}

int rx_store_ready(rx *r, uint64_t seq)
{
    enum { BATCH = 256 };
    vmt_store_obj objs[BATCH];
    vmt_id ids[BATCH];

    while (r->stored < r->nnodes && r->nodes[r->order[r->stored]].ready <= seq) {
        size_t n = 0, first = r->stored;
        /* A child comes before its parent in `order` (its ready is at most
         * the parent's; ties go by level), so a batch holding both puts the
         * child first; both are in the same commit anyway. */
        while (n < BATCH && r->stored < r->nnodes && r->nodes[r->order[r->stored]].ready <= seq) {
            rx_node *nd = &r->nodes[r->order[r->stored++]];
            objs[n++] = (vmt_store_obj){nd->data, nd->len, VMT_OBJ_MAPNODE};
            r->since_commit += nd->len;
        }
        int rc = vmt_store_put_many(r->st, objs, n, ids, NULL, NULL);
        if (rc)
            return vmt_error_wrap(rc, "golden: storing map nodes");
        for (size_t i = first; i < r->stored; i++) {
            free(r->nodes[r->order[i]].data);
            r->nodes[r->order[i]].data = NULL;
        }
    }
    return 0;
}

/* ---- pages ------------------------------------------------------------------ */

static int on_page(rx *r, size_t k, const vmt_golden_object *o)
{
    uint8_t *dst = r->slab + r->slab_n * (size_t)VMT_STORE_PAGE_SIZE;
    int rc = golden_object_open(o, &r->pages[k], VMT_OBJ_PAGE, dst);
    if (rc == 0)
        r->slab_n++;
    return rc;
}

static int flush_pages(rx *r)
{
    const void *ptr[VMT_GOLDEN_WANT_MAX];
    vmt_id *ids = (vmt_id *)(r->slab + (size_t)r->o->want_ids * VMT_STORE_PAGE_SIZE);
    if (r->slab_n == 0)
        return 0;
    for (size_t i = 0; i < r->slab_n; i++)
        ptr[i] = r->slab + i * (size_t)VMT_STORE_PAGE_SIZE;
    int rc = vmt_store_put_pages(r->st, ptr, r->slab_n, ids, NULL, NULL);
    if (rc)
        return vmt_error_wrap(rc, "golden: storing pages");
    r->stats->pages_fetched += r->slab_n;
    r->pages_done += r->slab_n;
    r->since_commit += r->slab_n * (uint64_t)VMT_STORE_PAGE_SIZE;
    r->slab_n = 0;
    return 0;
}

int rx_commit(rx *r)
{
    int rc = vmt_store_commit(r->st);
    if (rc)
        return vmt_error_wrap(rc, "golden: committing");
    r->stats->commits++;
    r->since_commit = 0;
    return 0;
}

static int on_page_batch(rx *r, uint64_t seq)
{
    int rc = flush_pages(r);
    if (rc == 0)
        rc = rx_store_ready(r, seq);
    if (rc == 0 && r->since_commit >= r->o->commit_bytes)
        rc = rx_commit(r);
    rx_progress(r, "objects", r->pages_done, r->npages);
    return rc;
}

/* After failure `rc`: keeps what arrived whole and checked (pages, complete
 * subtrees), so that the next transfer does not fetch it again.  Returns rc
 * with the failure's message. */
static int salvage(rx *r, int rc)
{
    char msg[512];
    snprintf(msg, sizeof(msg), "%s", vmt_error_last());
    if (r->slab && flush_pages(r) == 0 && vmt_store_commit(r->st) == 0)
        r->stats->commits++;
    return vmt_error_set(rc, "%s", msg);
}

static int fetch_pages(rx *r)
{
    size_t slab = (size_t)r->o->want_ids * (VMT_STORE_PAGE_SIZE + sizeof(vmt_id));
    r->slab = malloc(slab);
    if (!r->slab)
        return vmt_error_set(VMT_ENOMEM, "golden: out of memory");
    int rc = rx_store_ready(r, 0);
    if (rc == 0 && r->npages)
        rc = rx_fetch(r, r->pages, r->npages, VMT_OBJ_PAGE, on_page, on_page_batch);
    if (rc == 0)
        rc = rx_store_ready(r, UINT64_MAX - 1);
    if (rc == 0 && r->stored != r->nnodes)
        rc = vmt_error_set(VMT_ERR, "golden: %zu map nodes were never complete",
                           r->nnodes - r->stored);
    return rc;
}

/* ---- blobs and records ------------------------------------------------------ */

static int on_record(rx *r, size_t k, const vmt_golden_object *o)
{
    rx_recs *rs = r->walk;
    if (o->raw_len > VMT_SNAPREC_MAX_BYTES)
        return vmt_error_set(VMT_ECORRUPT, "a snapshot record of %u bytes received", o->raw_len);
    rs->bytes[k] = malloc(o->raw_len);
    if (!rs->bytes[k])
        return vmt_error_set(VMT_ENOMEM, "golden: out of memory");
    rs->len[k] = o->raw_len;
    int rc = golden_object_open(o, &rs->ids[k], VMT_OBJ_SNAPSHOT, rs->bytes[k]);
    if (rc == 0)
        rc = vmt_snap_record_decode(rs->bytes[k], o->raw_len, &rs->recs[k]);
    return rc ? vmt_error_wrap(rc, "golden: snapshot record received") : 0;
}

static int on_blob(rx *r, size_t k, const vmt_golden_object *o)
{
    const vmt_id *want = &((const vmt_id *)r->walk)[k];
    vmt_id id;
    void *buf = malloc(o->raw_len);
    if (!buf)
        return vmt_error_set(VMT_ENOMEM, "golden: out of memory");
    int rc = golden_object_open(o, want, VMT_OBJ_BLOB, buf);
    if (rc == 0)
        rc = vmt_store_put_many(r->st, &(vmt_store_obj){buf, o->raw_len, VMT_OBJ_BLOB}, 1, &id,
                                NULL, NULL);
    free(buf);
    return rc;
}

/* Fetches the state blobs of the new snapshots that the store lacks. */
int rx_fetch_blobs(rx *r, const rx_recs *rs)
{
    vmt_id *want = vmt_mallocn(rs->n ? rs->n : 1, sizeof(vmt_id));
    size_t n = 0;
    int rc = want ? 0 : vmt_error_set(VMT_ENOMEM, "golden: out of memory");
    for (size_t i = 0; rc == 0 && i < rs->n; i++) {
        bool have, added;
        rc = vmt_store_has_many(r->st, &rs->recs[i].state, 1, &have);
        if (rc == 0 && !have)
            rc = golden_idmap_put(&r->seen, &rs->recs[i].state, 0, &added);
        if (rc == 0 && !have && added)
            want[n++] = rs->recs[i].state;
    }
    r->walk = want;
    if (rc == 0 && n)
        rc = rx_fetch(r, want, n, VMT_OBJ_BLOB, on_blob, NULL);
    r->walk = NULL;
    free(want);
    return rc;
}

/* Snapshot i's map, pages and state blob are all in the store. */
static int check_complete(rx *r, const vmt_id *id, const vmt_snap_record *rec)
{
    char hex[VMT_ID_HEX_LEN + 1];
    vmt_map *m = NULL;
    enum { CHUNK = 1024 };
    vmt_id ids[CHUNK];
    bool present[CHUNK];

    int rc = vmt_map_load(&m, r->st, &rec->map_root, rec->mem_size / VMT_STORE_PAGE_SIZE);
    uint64_t np = m ? vmt_map_pages(m) : 0;
    for (uint64_t off = 0; rc == 0 && off < np; off += CHUNK) {
        size_t n = (size_t)VMT_MIN((uint64_t)CHUNK, np - off);
        for (size_t i = 0; i < n; i++)
            ids[i] = *vmt_map_get(m, off + i);
        rc = vmt_store_has_many(r->st, ids, n, present);
        for (size_t i = 0; rc == 0 && i < n; i++)
            if (!present[i])
                rc = vmt_error_set(VMT_ECORRUPT, "page %llu is missing",
                                   (unsigned long long)(off + i));
    }
    if (rc == 0 && (rc = vmt_store_has_many(r->st, &rec->state, 1, present)) == 0 && !present[0])
        rc = vmt_error_set(VMT_ECORRUPT, "its state blob is missing");
    vmt_map_free(m);
    vmt_id_to_hex(id, hex);
    return rc ? vmt_error_wrap(rc, "golden: snapshot %s is incomplete after the transfer", hex)
              : 0;
}

/* Stores the new records, oldest first, after checking each snapshot. */
int rx_store_records(rx *r, const rx_recs *rs)
{
    for (size_t i = rs->n; i-- > 0;) {
        int rc = check_complete(r, &rs->ids[i], &rs->recs[i]);
        vmt_id got;
        if (rc == 0)
            rc = vmt_store_put_many(r->st,
                                    &(vmt_store_obj){rs->bytes[i], rs->len[i], VMT_OBJ_SNAPSHOT},
                                    1, &got, NULL, NULL);
        if (rc)
            return rc;
    }
    return rx_commit(r);
}

/* Which of the chain the store lacks, and their records from the provider. */
int rx_fetch_records(rx *r, const vmt_id *ids, size_t n, rx_recs *rs)
{
    bool *have = calloc(n, sizeof(bool));
    rs->ids = vmt_mallocn(n, sizeof(vmt_id));
    rs->bytes = vmt_callocn(n, sizeof(uint8_t *));
    rs->len = vmt_callocn(n, sizeof(uint32_t));
    rs->recs = vmt_callocn(n, sizeof(vmt_snap_record));
    int rc = have && rs->ids && rs->bytes && rs->len && rs->recs
                 ? vmt_store_has_many(r->st, ids, n, have)
                 : vmt_error_set(VMT_ENOMEM, "golden: out of memory");
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (!have[i])
            rs->ids[rs->n++] = ids[i];
    free(have);
    r->stats->snapshots = n;
    r->stats->snapshots_new = rs->n;
    r->walk = rs;
    if (rc == 0 && rs->n)
        rc = rx_fetch(r, rs->ids, rs->n, VMT_OBJ_SNAPSHOT, on_record, NULL);
    r->walk = NULL;
    return rc;
}

void rx_free_recs(rx_recs *rs)
{
    for (size_t i = 0; rs->bytes && i < rs->n; i++)
        free(rs->bytes[i]);
    free(rs->bytes);
    free(rs->len);
    free(rs->recs);
    free(rs->ids);
}

/* Adds the chain to the catalog, oldest first, and sets the tag. */
int rx_catalog_chain(rx *r, vmt_catalog *c, const vmt_id *ids, size_t n, const char *as_tag)
{
    vmt_snap_record *rec = malloc(sizeof(*rec));
    int rc = rec ? 0 : vmt_error_set(VMT_ENOMEM, "golden: out of memory");
    for (size_t i = n; rc == 0 && c && i-- > 0;) {
        rc = vmt_snap_record_read(r->st, &ids[i], rec);
        if (rc == 0)
            rc = vmt_catalog_add_snapshot(c, &ids[i], rec);
    }
    free(rec);
    if (rc == 0 && c && as_tag && as_tag[0]) {
        char ref[VMT_CATALOG_REF_MAX];
        snprintf(ref, sizeof(ref), "tag/%s", as_tag);
        rc = vmt_catalog_set_ref(c, ref, &ids[0], NULL);
    }
    return rc ? vmt_error_wrap(rc, "golden: recording the snapshots in the catalog") : 0;
}

static int receive_objects(rx *r, const rx_recs *rs)
{
    vmt_id *roots = vmt_mallocn(rs->n ? rs->n : 1, sizeof(vmt_id));
    uint64_t *np = vmt_mallocn(rs->n ? rs->n : 1, sizeof(uint64_t));
    int rc = roots && np ? 0 : vmt_error_set(VMT_ENOMEM, "golden: out of memory");
    for (size_t i = 0; rc == 0 && i < rs->n; i++) {
        roots[i] = rs->recs[i].map_root;
        np[i] = rs->recs[i].mem_size / VMT_STORE_PAGE_SIZE;
    }
    if (rc == 0)
        rc = rx_walk(r, roots, np, rs->n);
    free(roots);
    free(np);
    if (rc == 0)
        rc = rx_plan(r);
    if (rc == 0)
        rc = fetch_pages(r);
    if (rc == 0)
        rc = rx_fetch_blobs(r, rs);
    return rc;
}

int golden_receive(vmt_session *s, vmt_store *st, vmt_catalog *c, const vmt_id *ids, size_t n,
                   const char *as_tag, const vmt_golden_opts *o, vmt_golden_stats *stats)
{
    rx r = {.s = s, .st = st, .o = o, .stats = stats};
    rx_recs rs = {0};
    uint64_t t0 = vmt_now_ns();

    vmt_frame_init(&r.f);
    golden_idmap_init(&r.seen);
    int rc = rx_fetch_records(&r, ids, n, &rs);
    if (rc == 0)
        rc = receive_objects(&r, &rs);
    if (rc == 0) {
        rx_progress(&r, "check", 0, rs.n);
        rc = rx_store_records(&r, &rs);
    }
    if (rc)
        rc = salvage(&r, rc);
    if (rc == 0)
        rc = rx_catalog_chain(&r, c, ids, n, as_tag);
    for (size_t i = 0; i < r.nnodes; i++)
        free(r.nodes[i].data);
    free(r.nodes);
    free(r.order);
    free(r.pages);
    free(r.slab);
    rx_free_recs(&rs);
    golden_idmap_free(&r.seen);
    vmt_frame_free(&r.f);
    stats->ns = vmt_now_ns() - t0;
    return rc;
}
