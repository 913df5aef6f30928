/*
 * Golden image receiver, part 1: pipelined Wants, and the negotiation walk
 * over the Merkle maps.
 *
 * The walk is breadth first from the roots of the snapshots the receiver
 * lacks.  A node it holds already stands for its whole subtree (a node is
 * only ever stored after everything below it), so it is neither fetched
 * nor descended into: only subtrees whose ids the receiver does not know
 * cross, as in git's have/want.  Fetched nodes stay in memory until their
 * subtree is stored; rx_plan works out, for each, the page Want after which
 * that is the case, and rx_store_ready stores them then, children first.
 */
#include <stdlib.h>
#include <string.h>

#include "golden_rx.h"

#define RX_MAX_WINDOW 16u

void rx_progress(rx *r, const char *phase, uint64_t done, uint64_t total)
{
    if (r->o->progress)
        r->o->progress(r->o->progress_ctx, phase, done, total);
}

static int send_want(rx *r, const vmt_id *ids, size_t n)
{
    vmt_golden_msg m = {.type = VMT_GOLDEN_WANT};
    m.u.want.seq = ++r->seq;
    m.u.want.ids = (void *)(uintptr_t)ids; /* vmt_id is 16 plain bytes */
    m.u.want.n = n;
    r->stats->wants++;
    return golden_send(r->s, &m);
}

/* One Objects message of the answer to Want `seq` (ids[base..base+count)),
 * `*pos` objects of which arrived before. */
static int take_objects(rx *r, const vmt_golden_msg *m, uint64_t seq, size_t base, size_t count,
                        size_t *pos, rx_obj_fn on_obj)
{
    /* An empty message that is not the last would let a provider stall the
     * receiver for ever: refused like any other mismatch. */
    if (m->u.objects.seq != seq || m->u.objects.n > count - *pos ||
        (m->u.objects.last && *pos + m->u.objects.n != count) ||
        (!m->u.objects.last && m->u.objects.n == 0)) {
        vmt_error_set(VMT_EPROTO, "the answer to Want %llu does not match it (seq %llu, "
                                  "%zu objects after %zu of %zu)",
                      (unsigned long long)seq, (unsigned long long)m->u.objects.seq,
                      m->u.objects.n, *pos, count);
        return golden_fail(r->s, VMT_EPROTO);
    }
    for (size_t i = 0; i < m->u.objects.n; i++, (*pos)++) {
        const vmt_golden_object *o = &m->u.objects.objs[i];
        r->stats->objects++;
        r->stats->object_bytes += o->raw_len;
        r->stats->payload_bytes += o->len;
        int rc = on_obj(r, base + *pos, o);
        if (rc)
            return golden_fail(r->s, rc);
    }
    return 0;
}

int rx_fetch(rx *r, const vmt_id *ids, size_t n, unsigned type, rx_obj_fn on_obj,
             rx_batch_fn on_batch)
{
    size_t per = r->o->want_ids, window = VMT_MIN(r->o->window, RX_MAX_WINDOW);
    size_t nwants = VMT_DIV_ROUND_UP(n, per), sent = 0, got = 0, pos = 0;
    uint64_t first = r->seq + 1;
    int rc = 0;

    (void)type;
    while (rc == 0 && got < nwants) {
        while (rc == 0 && sent < nwants && sent - got < window) {
            rc = send_want(r, ids + sent * per, VMT_MIN(per, n - sent * per));
            sent++;
        }
        vmt_golden_msg m;
        if (rc || (rc = golden_recv(r->s, &r->f, VMT_GOLDEN_OBJECTS, &m, r->o->timeout_ms)))
            break;
        size_t count = VMT_MIN(per, n - got * per);
        rc = take_objects(r, &m, first + got, got * per, count, &pos, on_obj);
        bool last = m.u.objects.last;
        vmt_golden_msg_clear(&m);
        if (rc == 0 && last) {
            if (on_batch && (rc = on_batch(r, first + got)) != 0)
                rc = golden_fail(r->s, rc);
            got++;
            pos = 0;
        }
    }
    return rc;
}

/* ---- the walk ------------------------------------------------------------- */

/* Levels of a map of n pages: the smallest d >= 1 with 256^d >= n. */
static unsigned map_depth(uint64_t n)
{
    unsigned d = 1;
    for (uint64_t cover = VMT_MAP_FANOUT; cover < n; cover *= VMT_MAP_FANOUT)
        d++;
    return d;
}

/* Children (pages or nodes) that the level-`level` nodes of the map cover. */
static uint64_t below(uint64_t npages, unsigned level)
{
    uint64_t n = npages;
    for (unsigned l = 0; l < level; l++)
        n = VMT_DIV_ROUND_UP(n, VMT_MAP_FANOUT);
    return n;
}

static int node_bad(const rx_want_node *w, const char *what)
{
    char hex[VMT_ID_HEX_LEN + 1];
    vmt_id_to_hex(&w->id, hex);
    return vmt_error_set(VMT_ECORRUPT, "map node %s received (level %u, index %llu): %s", hex,
                         w->level, (unsigned long long)w->idx, what);
}

/* The layout and place checks of a node that hashed to its id. */
static int check_node(const rx_want_node *w, const uint8_t *buf, size_t len)
{
    unsigned level;
    size_t count;
    if (vmt_store_mapnode_parse(buf, len, &level, &count) != 0)
        return node_bad(w, vmt_error_last());
    if (level != w->level)
        return node_bad(w, "its level is not the one its place needs");
    uint64_t nchild = below(w->npages, level);
    for (size_t i = 0; i < count; i++) {
        vmt_mapnode_entry e;
        vmt_store_mapnode_entry_at(buf, i, &e);
        if (w->idx * VMT_MAP_FANOUT + e.slot >= nchild || e.slot >= VMT_MAP_FANOUT)
            return node_bad(w, "a slot beyond the map");
    }
    return 0;
}

typedef struct walk {
    rx_want_node *cur, *next;
    size_t ncur, nnext, capnext;
} walk;

static int on_node(rx *r, size_t k, const vmt_golden_object *o)
{
    walk *wk = r->walk;
    const rx_want_node *w = &wk->cur[k];
    if (o->raw_len > VMT_MAPNODE_HDR + VMT_MAP_FANOUT * VMT_MAPNODE_ENTRY)
        return node_bad(w, "larger than a node of 256 entries");
    uint8_t *buf = malloc(o->raw_len);
    if (!buf)
        return vmt_error_set(VMT_ENOMEM, "golden: out of memory");
    int rc = golden_object_open(o, &w->id, VMT_OBJ_MAPNODE, buf);
    if (rc == 0)
        rc = check_node(w, buf, o->raw_len);
    if (rc == 0 && r->nnodes == r->capnodes) {
        size_t cap = r->capnodes ? r->capnodes * 2 : 256;
        rx_node *v = vmt_reallocn(r->nodes, cap, sizeof(*v));
        rc = v ? 0 : vmt_error_set(VMT_ENOMEM, "golden: out of memory");
        if (v) {
            r->nodes = v;
            r->capnodes = cap;
        }
    }
    if (rc) {
        free(buf);
        return rc;
    }
    r->nodes[r->nnodes++] = (rx_node){.id = w->id, .idx = w->idx, .npages = w->npages,
                                      .data = buf, .len = o->raw_len, .level = w->level};
    r->stats->nodes_fetched++;
    return 0;
}

static int push_next(walk *wk, const rx_want_node *n)
{
    if (wk->nnext == wk->capnext) {
        size_t cap = wk->capnext ? wk->capnext * 2 : 256;
        rx_want_node *v = vmt_reallocn(wk->next, cap, sizeof(*v));
        if (!v)
            return vmt_error_set(VMT_ENOMEM, "golden: out of memory");
        wk->next = v;
        wk->capnext = cap;
    }
    wk->next[wk->nnext++] = *n;
    return 0;
}

static int push_page(rx *r, const vmt_id *id)
{
    if (r->npages == r->cappages) {
        size_t cap = r->cappages ? r->cappages * 2 : 4096;
        vmt_id *v = vmt_reallocn(r->pages, cap, sizeof(*v));
        if (!v)
            return vmt_error_set(VMT_ENOMEM, "golden: out of memory");
        r->pages = v;
        r->cappages = cap;
    }
    r->pages[r->npages++] = *id;
    return 0;
}

/* Plans the children of fetched node `ni` the store lacks: nodes for the
 * next level, pages for the page phase. */
static int plan_children(rx *r, walk *wk, size_t ni)
{
    const rx_node *nd = &r->nodes[ni];
    vmt_id kids[VMT_MAP_FANOUT];
    uint32_t slots[VMT_MAP_FANOUT];
    bool have[VMT_MAP_FANOUT];
    size_t count = (nd->len - VMT_MAPNODE_HDR) / VMT_MAPNODE_ENTRY;

    if (count == 0 || count > VMT_MAP_FANOUT) /* check_node allows at most 256 */
        return 0;
    for (size_t i = 0; i < count; i++) {
        vmt_mapnode_entry e;
        vmt_store_mapnode_entry_at(nd->data, i, &e);
        kids[i] = e.child;
        slots[i] = e.slot;
    }
    int rc = vmt_store_has_many(r->st, kids, count, have);
    for (size_t i = 0; rc == 0 && i < count; i++) {
        bool added;
        if (have[i]) {
            if (nd->level > 0)
                r->stats->nodes_skipped++;
            else if (!vmt_id_is_zero_page(&kids[i]))
                r->stats->pages_present++;
            continue;
        }
        uint64_t val = nd->level > 0 ? RX_NODE_BIT : r->npages;
        if ((rc = golden_idmap_put(&r->seen, &kids[i], val, &added)) != 0 || !added)
            continue;
        if (nd->level == 0) {
            rc = push_page(r, &kids[i]);
            continue;
        }
        rx_want_node w = {.id = kids[i], .idx = nd->idx * VMT_MAP_FANOUT + slots[i],
                          .npages = nd->npages, .level = (uint8_t)(nd->level - 1)};
        rc = push_next(wk, &w);
    }
    return rc;
}

/* The roots the store lacks, as the first level of the walk. */
static int plan_roots(rx *r, walk *wk, const vmt_id *roots, const uint64_t *npages, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bool have, added;
        int rc = vmt_store_has_many(r->st, &roots[i], 1, &have);
        if (rc == 0 && have)
            r->stats->nodes_skipped++;
        if (rc == 0 && !have)
            rc = golden_idmap_put(&r->seen, &roots[i], RX_NODE_BIT, &added);
        if (rc == 0 && !have && added) {
            rx_want_node w = {.id = roots[i], .npages = npages[i],
                              .level = (uint8_t)(map_depth(npages[i]) - 1)};
            rc = push_next(wk, &w);
        }
        if (rc)
            return rc;
    }
    return 0;
}

int rx_walk(rx *r, const vmt_id *roots, const uint64_t *npages, size_t n)
{
    walk wk = {0};
    vmt_id *ids = NULL;
    int rc = plan_roots(r, &wk, roots, npages, n);

    while (rc == 0 && wk.nnext > 0) {
        free(wk.cur);
        wk.cur = wk.next;
        wk.ncur = wk.nnext;
        wk.next = NULL;
        wk.nnext = wk.capnext = 0;
        free(ids);
        ids = vmt_mallocn(wk.ncur, sizeof(vmt_id));
        if (!ids) {
            rc = vmt_error_set(VMT_ENOMEM, "golden: out of memory");
            break;
        }
        for (size_t i = 0; i < wk.ncur; i++)
            ids[i] = wk.cur[i].id;
        size_t first = r->nnodes;
        r->walk = &wk;
        rc = rx_fetch(r, ids, wk.ncur, VMT_OBJ_MAPNODE, on_node, NULL);
        r->walk = NULL;
        for (size_t i = first; rc == 0 && i < r->nnodes; i++)
            rc = plan_children(r, &wk, i);
        if (rc)
            rc = golden_fail(r->s, rc);
        rx_progress(r, "maps", r->nnodes, 0);
    }
    free(ids);
    free(wk.cur);
    free(wk.next);
    return rc;
}
