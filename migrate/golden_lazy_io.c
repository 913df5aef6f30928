/*
 * A VM from a snapshot still arriving, part 2: the lazy restore's source
 * (vmt_restore_source), which reads what the store holds and fetches the
 * rest over the golden session.
 *
 * The restore's threads (the fault thread and the prefetchers) call it
 * concurrently.  Each page request that needs the network becomes one Want:
 * sent under send_mu and queued in seq order, so the queue is the order the
 * provider answers in (it answers Wants in order).  One receiver thread
 * reads the Objects messages, checks each page against the id its Want
 * asked for at that position, copies it into the caller's buffer, stores
 * it, and wakes the caller once its Want is answered.  A fault may wait
 * behind the prefetch Wants already sent: at most one per prefetcher, of
 * LAZY_WANT_PAGES pages (a prefetcher sends its next one after the answer).  The first failure
 * fails every Want in flight and every later one, which stops the restore.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden_lazy.h"

/* Pages per Want: 128 KiB, which a fault may have to wait behind. */
#define LAZY_WANT_PAGES 32u

/* ---- failure -------------------------------------------------------------- */

void lazy_io_fail(vmt_golden_lazy *g, int rc)
{
    char msg[512];
    snprintf(msg, sizeof(msg), "%s", vmt_error_last());
    pthread_mutex_lock(&g->mu);
    if (!g->err) {
        g->err = rc;
        snprintf(g->errmsg, sizeof(g->errmsg), "%s", msg);
    }
    for (lazy_req *q = g->head; q; q = q->next) {
        q->rc = g->err;
        q->done = true;
    }
    g->head = g->tail = NULL;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    vmt_error_set(rc, "%s", msg);
    golden_fail(g->r.s, rc); /* tells the provider why, and wakes a blocked receive */
}

int lazy_io_error(vmt_golden_lazy *g)
{
    pthread_mutex_lock(&g->mu);
    int rc = g->err;
    if (rc)
        vmt_error_set(rc, "%s", g->errmsg);
    pthread_mutex_unlock(&g->mu);
    return rc;
}

/* ---- the receiver thread ----------------------------------------------------- */

/* Checks, places and stores the pages of one Objects message for q. */
static int take_pages(vmt_golden_lazy *g, lazy_req *q, const vmt_golden_msg *m)
{
    vmt_store_obj objs[64];
    size_t nobj = m->u.objects.n;
    if (m->u.objects.seq != q->seq || nobj > q->n - q->got ||
        (m->u.objects.last && q->got + nobj != q->n) || (!m->u.objects.last && nobj == 0))
        return vmt_error_set(VMT_EPROTO,
                             "the answer to Want %llu does not match it (seq %llu, "
                             "%zu objects after %zu of %zu)",
                             (unsigned long long)q->seq, (unsigned long long)m->u.objects.seq, nobj,
                             q->got, q->n);
    for (size_t i = 0; i < nobj;) {
        size_t k = 0;
        for (; k < 64 && i < nobj; k++, i++) {
            const vmt_golden_object *o = &m->u.objects.objs[i];
            if (o->raw_len != VMT_STORE_PAGE_SIZE || o->type != VMT_OBJ_PAGE)
                return vmt_error_set(VMT_ECORRUPT, "a page of %u bytes (type %u) received",
                                     o->raw_len, o->type);
            int rc = golden_object_open(o, &q->ids[q->got], VMT_OBJ_PAGE, q->dst[q->got]);
            if (rc)
                return rc;
            objs[k] = (vmt_store_obj){q->dst[q->got], VMT_STORE_PAGE_SIZE, VMT_OBJ_PAGE};
            q->got++;
            pthread_mutex_lock(&g->mu);
            g->st.objects++;
            g->st.pages_fetched++;
            g->st.object_bytes += o->raw_len;
            g->st.payload_bytes += o->len;
            pthread_mutex_unlock(&g->mu);
        }
        vmt_id ids[64];
        int rc = vmt_store_put_many(g->r.st, objs, k, ids, NULL, NULL);
        if (rc)
            return vmt_error_wrap(rc, "golden: storing pages that arrived");
        g->since_commit += k * VMT_STORE_PAGE_SIZE;
    }
    return 0;
}

/* Commits every commit_bytes, so that a crash loses little of what arrived. */
static int maybe_commit(vmt_golden_lazy *g)
{
    if (g->since_commit < g->o.commit_bytes)
        return 0;
    int rc = vmt_store_commit(g->r.st);
    if (rc)
        return vmt_error_wrap(rc, "golden: committing");
    g->since_commit = 0;
    pthread_mutex_lock(&g->mu);
    g->st.commits++;
    pthread_mutex_unlock(&g->mu);
    return 0;
}

/* The oldest Want in flight, waiting for one; NULL when stopping. */
static lazy_req *next_req(vmt_golden_lazy *g)
{
    pthread_mutex_lock(&g->mu);
    while (!g->head && !g->stopping && !g->err)
        pthread_cond_wait(&g->cv, &g->mu);
    lazy_req *q = g->err ? NULL : g->head;
    g->cur = q; /* its caller waits until the receiver is done with it */
    pthread_mutex_unlock(&g->mu);
    return q;
}

static void release_req(vmt_golden_lazy *g)
{
    pthread_mutex_lock(&g->mu);
    g->cur = NULL;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void answered(vmt_golden_lazy *g, lazy_req *q)
{
    pthread_mutex_lock(&g->mu);
    if (g->head == q) { /* else lazy_io_fail took it meanwhile */
        g->head = q->next;
        if (!g->head)
            g->tail = NULL;
        q->rc = 0;
        q->done = true;
        pthread_cond_broadcast(&g->cv);
    }
    pthread_mutex_unlock(&g->mu);
}

static void *rx_main(void *arg)
{
    vmt_golden_lazy *g = arg;
    vmt_frame f;
    vmt_frame_init(&f);
    for (;;) {
        lazy_req *q = next_req(g);
        if (!q)
            break;
        vmt_golden_msg m;
        int rc = golden_recv(g->r.s, &f, VMT_GOLDEN_OBJECTS, &m, g->o.timeout_ms);
        bool last = rc == 0 && m.u.objects.last;
        if (rc == 0)
            rc = take_pages(g, q, &m);
        vmt_golden_msg_clear(&m);
        if (rc == 0 && last)
            answered(g, q);
        if (rc == 0)
            rc = maybe_commit(g);
        if (rc)
            lazy_io_fail(g, vmt_error_wrap(rc, "golden: pages of the snapshot"));
        release_req(g);
        if (rc)
            break;
    }
    vmt_frame_free(&f);
    return NULL;
}

/* ---- the restore's source ------------------------------------------------------ */

/* Sends one Want for ids[0..n) and waits for its answer into dst. */
static int fetch_remote(vmt_golden_lazy *g, const vmt_id *ids, size_t n, void *const *dst)
{
    lazy_req q = {.ids = ids, .dst = dst, .n = n};
    vmt_golden_msg m = {.type = VMT_GOLDEN_WANT};
    int rc;

    pthread_mutex_lock(&g->send_mu);
    pthread_mutex_lock(&g->mu);
    rc = g->err;
    if (rc == 0) {
        q.seq = ++g->seq;
        if (g->tail)
            g->tail->next = &q;
        else
            g->head = &q;
        g->tail = &q;
        g->st.wants++;
        pthread_cond_broadcast(&g->cv);
    }
    pthread_mutex_unlock(&g->mu);
    if (rc == 0) {
        m.u.want.seq = q.seq;
        m.u.want.ids = (void *)(uintptr_t)ids; /* vmt_id is 16 plain bytes */
        m.u.want.n = n;
        if ((rc = golden_send(g->r.s, &m)) != 0)
            lazy_io_fail(g, rc);
    }
    pthread_mutex_unlock(&g->send_mu);
    atomic_fetch_add(&g->fetches, 1);
    pthread_mutex_lock(&g->mu);
    /* Queued, it is answered or failed with the queue; either way the
     * receiver may still be writing into it until it lets go (cur). */
    while ((q.seq && !q.done) || g->cur == &q)
        pthread_cond_wait(&g->cv, &g->mu);
    if (!q.seq)
        q.rc = g->err; /* failed before it was queued */
    pthread_mutex_unlock(&g->mu);
    return q.rc ? lazy_io_error(g) : 0;
}

/* Pages: those the store holds from it, the others from the provider. */
static int src_pages(void *ctx, const vmt_id *ids, size_t n, void *const *dst)
{
    vmt_golden_lazy *g = ctx;
    enum { MAXN = 1024 };
    if (n == 0)
        return 0;
    if (n > MAXN) /* the restore asks for at most RESTORE_BATCH */
        return vmt_error_set(VMT_EINVAL, "golden: %zu pages asked at once", n);
    bool *have = malloc(n * sizeof(bool));
    vmt_id *lid = vmt_mallocn(n, sizeof(vmt_id)), *rid = vmt_mallocn(n, sizeof(vmt_id));
    void **ld = vmt_mallocn(n, sizeof(void *)), **rd = vmt_mallocn(n, sizeof(void *));
    size_t nl = 0, nr = 0;
    int rc = have && lid && rid && ld && rd ? lazy_io_error(g)
                                            : vmt_error_set(VMT_ENOMEM, "golden: out of memory");
    if (rc == 0)
        rc = vmt_store_has_many(g->r.st, ids, n, have);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (have[i]) {
            lid[nl] = ids[i];
            ld[nl++] = dst[i];
        } else {
            rid[nr] = ids[i];
            rd[nr++] = dst[i];
        }
    }
    if (rc == 0 && nl)
        rc = vmt_store_get_pages(g->r.st, lid, nl, ld);
    /* Small Wants, one at a time: a fault's Want waits behind at most one
     * of each prefetcher's (the provider answers in order). */
    for (size_t off = 0; rc == 0 && off < nr; off += LAZY_WANT_PAGES)
        rc = fetch_remote(g, rid + off, VMT_MIN(nr - off, (size_t)LAZY_WANT_PAGES), rd + off);
    free(have);
    free(lid);
    free(rid);
    free(ld);
    free(rd);
    return rc;
}

/* Map nodes: the fetched ones from memory, the others from the store. */
static int src_nodes(void *ctx, vmt_store_get_item *items, size_t n)
{
    vmt_golden_lazy *g = ctx;
    int first = 0;
    for (size_t i = 0; i < n; i++) {
        vmt_store_get_item *it = &items[i];
        uint64_t k;
        if (golden_idmap_get(&g->node_idx, &it->id, &k) && g->r.nodes[k].data) {
            const rx_node *nd = &g->r.nodes[k];
            it->len = nd->len;
            it->type = VMT_OBJ_MAPNODE;
            it->rc = it->cap < nd->len ? VMT_ERANGE : 0;
            if (it->rc == 0)
                memcpy(it->buf, nd->data, nd->len);
            else
                vmt_error_set(VMT_ERANGE, "golden: a map node of %u bytes", nd->len);
        } else {
            vmt_store_get_many(g->r.st, it, 1);
        }
        if (it->rc && !first)
            first = it->rc;
    }
    return first;
}

int lazy_io_start(vmt_golden_lazy *g)
{
    g->src = (vmt_restore_source){.get_nodes = src_nodes, .get_pages = src_pages, .ctx = g};
    g->seq = g->r.seq; /* Wants go on from the walk's */
    if (pthread_create(&g->rx_thr, NULL, rx_main, g) != 0)
        return vmt_error_set(VMT_ERR, "golden: cannot start the receiver thread");
    g->rx_started = true;
    return 0;
}

void lazy_io_stop(vmt_golden_lazy *g)
{
    if (!g->rx_started)
        return;
    pthread_mutex_lock(&g->mu);
    g->stopping = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->rx_thr, NULL);
    g->rx_started = false;
}
