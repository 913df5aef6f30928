/*
 * A VM from a snapshot still arriving (vmtree branch --from; docs/golden.md
 * §6), part 1: open, poll, close, and the VM.
 *
 *   open   Request {pull, name, no ancestors}; Snaps; the record (unless
 *          the store holds the snapshot already); the walk: the map nodes
 *          the store lacks, kept in memory; the state blob, stored (a blob
 *          stands for nothing below it).  Then the VM: created from the
 *          record, RAM restored lazily through golden_lazy_io.c's source,
 *          state set from the blob.  The caller starts it.
 *   poll   once the restore says every page is in RAM, every page is in
 *          the store too (a page is stored before it is placed): the
 *          nodes are stored children first, the snapshot is checked
 *          complete, its record stored and committed, as a pull does.
 *   close  a transfer that did not complete is ended (the provider is told
 *          why); the pages that arrived are committed.
 *
 * The VM and its state mirror vmt_vm_from_snapshot (vmrestore.c), which
 * reads its record from the store: here the record arrives first and is
 * only stored once the snapshot is complete.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden_lazy.h"
#include "migrate_internal.h"
#include "vmtree/proto.h"

/* ---- the VM ----------------------------------------------------------------- */

static int make_vm(vmt_golden_lazy *g, vmt_kvm *kvm, const vmt_vm_config *base,
                   unsigned prefetchers, vmt_vm **vm)
{
    vmt_vm *v = NULL;
    int rc = mig_vm_create(kvm, &g->rec, base, &v);
    if (rc)
        return rc;
    uint64_t size;
    uint8_t *ram = vmt_vm_ram(v, &size);
    vmt_restore_opts ro = {.mode = VMT_RESTORE_LAZY, .threads = prefetchers, .source = &g->src};
    rc = vmt_restore_open(&g->restore, g->r.st, &g->rec.map_root, ram, vmt_vm_ram_fd(v), size, &ro);
    if (rc)
        vmt_error_wrap(rc, "restoring guest RAM");
    if (rc == 0)
        rc = mig_state_apply_record(v, g->r.st, &g->rec);
    if (rc) {
        vmt_vm_destroy(v); /* before the restore: a lazy one serves its RAM */
        return rc;
    }
    *vm = v;
    return 0;
}

/* ---- open --------------------------------------------------------------------- */

/* The record (fetched, or from the store), the nodes, the state blob. */
static int fetch_meta(vmt_golden_lazy *g, const char *name)
{
    vmt_id *ids = NULL;
    size_t n = 0;
    int rc = golden_send_request(g->r.s, VMT_GOLDEN_OP_PULL, name, 0);
    if (rc == 0)
        rc = golden_recv_snaps(g->r.s, g->o.timeout_ms, &ids, &n);
    if (rc == 0) {
        g->snap = ids[0];
        rc = rx_fetch_records(&g->r, ids, 1, &g->rs);
    }
    free(ids);
    if (rc == 0 && g->rs.n == 0) /* complete here already: nothing to fetch */
        return vmt_snap_record_read(g->r.st, &g->snap, &g->rec);
    if (rc)
        return rc;
    g->rec = g->rs.recs[0];
    uint64_t np = g->rec.mem_size / VMT_STORE_PAGE_SIZE;
    rc = rx_walk(&g->r, &g->rec.map_root, &np, 1);
    g->pages_missing = g->r.npages;
    if (rc == 0)
        rc = rx_fetch_blobs(&g->r, &g->rs);
    for (size_t i = 0; rc == 0 && i < g->r.nnodes; i++)
        rc = golden_idmap_put(&g->node_idx, &g->r.nodes[i].id, i, NULL);
    return rc;
}

static int lazy_new(vmt_golden_lazy **out, vmt_session *s, vmt_store *st, const vmt_golden_opts *o)
{
    vmt_golden_lazy *g = calloc(1, sizeof(*g));
    if (!g)
        return vmt_error_set(VMT_ENOMEM, "golden: out of memory");
    if (o)
        g->o = *o;
    else
        vmt_golden_opts_init(&g->o);
    g->o.max_ancestors = 0;
    g->t0 = vmt_now_ns();
    g->r = (rx){.s = s, .st = st, .o = &g->o, .stats = &g->st};
    vmt_frame_init(&g->r.f);
    golden_idmap_init(&g->r.seen);
    golden_idmap_init(&g->node_idx);
    if (pthread_mutex_init(&g->mu, NULL) || pthread_mutex_init(&g->send_mu, NULL) ||
        pthread_cond_init(&g->cv, NULL)) {
        free(g);
        return vmt_error_set(VMT_ERR, "golden: cannot initialise a lock");
    }
    g->locks = true;
    *out = g;
    return 0;
}

int vmt_golden_lazy_open(vmt_golden_lazy **out, vmt_session *s, vmt_store *st, vmt_kvm *kvm,
                         const vmt_vm_config *base, const char *name, const vmt_golden_opts *o,
                         unsigned prefetchers, vmt_vm **vm, vmt_id *snap, vmt_snap_record *rec)
{
    vmt_golden_lazy *g = NULL;
    *out = NULL;
    *vm = NULL;
    int rc = lazy_new(&g, s, st, o);
    if (rc)
        return rc;
    rc = fetch_meta(g, name);
    if (rc == 0)
        rc = lazy_io_start(g);
    if (rc == 0)
        rc = make_vm(g, kvm, base, prefetchers, vm);
    if (rc) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", vmt_error_last());
        golden_fail(s, rc);
        vmt_golden_lazy_close(g);
        return vmt_error_set(rc, "%s", msg);
    }
    g->open_ns = vmt_now_ns() - g->t0;
    if (snap)
        *snap = g->snap;
    if (rec)
        *rec = g->rec;
    *out = g;
    return 0;
}

/* ---- completion ------------------------------------------------------------------- */

/* Every page is in the store: the nodes (children first), the record, the
 * catalog, and Done to the provider. */
static int finish(vmt_golden_lazy *g, vmt_catalog *c, const char *as_tag)
{
    lazy_io_stop(g);
    vmt_restore_free(g->restore); /* complete: the range is unregistered */
    g->restore = NULL;
    int rc = rx_plan(&g->r);
    if (rc == 0)
        rc = rx_store_ready(&g->r, UINT64_MAX - 1);
    if (rc == 0 && g->r.stored != g->r.nnodes)
        rc = vmt_error_set(VMT_ERR, "golden: %zu map nodes were never complete",
                           g->r.nnodes - g->r.stored);
    if (rc == 0)
        rc = rx_store_records(&g->r, &g->rs);
    if (rc == 0)
        rc = rx_catalog_chain(&g->r, c, &g->snap, 1, as_tag);
    g->complete_ns = vmt_now_ns() - g->t0;
    golden_finish_stats(g->r.s, &g->st, g->t0);
    if (rc == 0)
        rc = golden_send_done(g->r.s, &g->snap, &g->st);
    return rc ? golden_fail(g->r.s, rc) : 0;
}

int vmt_golden_lazy_poll(vmt_golden_lazy *g, vmt_catalog *c, const char *as_tag)
{
    if (g->state < 0)
        return vmt_error_set(g->state, "%s", g->errmsg);
    if (g->state > 0)
        return 1;
    int rc = lazy_io_error(g);
    if (rc == 0) {
        rc = vmt_restore_wait(g->restore, 1);
        if (rc == VMT_ETIMEDOUT) {
            vmt_error_clear();
            return 0;
        }
    }
    if (rc == 0)
        rc = finish(g, c, as_tag);
    if (rc == 0) {
        g->state = 1;
        return 1;
    }
    snprintf(g->errmsg, sizeof(g->errmsg), "%s", vmt_error_last());
    g->state = rc;
    return rc;
}

void vmt_golden_lazy_get_stats(vmt_golden_lazy *g, vmt_golden_lazy_stats *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&g->mu);
    out->xfer = g->st;
    pthread_mutex_unlock(&g->mu);
    vmt_session_stats ss;
    vmt_session_get_stats(g->r.s, &ss);
    out->xfer.wire_sent = ss.bytes_sent;
    out->xfer.wire_received = ss.bytes_received;
    out->pages_missing = g->pages_missing;
    out->fetches = atomic_load(&g->fetches);
    out->open_ns = g->open_ns;
    out->complete_ns = g->complete_ns;
    out->complete = g->state == 1;
}

/* ---- close -------------------------------------------------------------------------- */

void vmt_golden_lazy_close(vmt_golden_lazy *g)
{
    if (!g)
        return;
    if (g->state != 1 && g->rx_started && lazy_io_error(g) == 0) {
        vmt_error_set(VMT_ECANCELED, "the VM ended before its snapshot had arrived");
        lazy_io_fail(g, VMT_ECANCELED);
    }
    lazy_io_stop(g);
    vmt_restore_free(g->restore); /* after the VM: nothing reads its RAM */
    /* What arrived whole is kept: pages only (a node needs its subtree). */
    if (g->state != 1 && vmt_store_commit(g->r.st) != 0)
        vmt_warn("golden: committing the pages that arrived: %s", vmt_error_last());
    for (size_t i = 0; i < g->r.nnodes; i++)
        free(g->r.nodes[i].data);
    free(g->r.nodes);
    free(g->r.order);
    free(g->r.pages);
    free(g->r.slab);
    rx_free_recs(&g->rs);
    golden_idmap_free(&g->r.seen);
    golden_idmap_free(&g->node_idx);
    vmt_frame_free(&g->r.f);
    if (g->locks) {
        pthread_mutex_destroy(&g->mu);
        pthread_mutex_destroy(&g->send_mu);
        pthread_cond_destroy(&g->cv);
    }
    free(g);
}
