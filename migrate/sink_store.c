/*
 * The store sink: the pre-copy engine's writer into the local page store
 * (a snapshot of a running VM is a migration into the store).  Pages are
 * copied out of guest RAM before hashing (the guest may be writing them:
 * the id must name the bytes stored), zero pages become the zero id without
 * a put, and the VM's map in memory is pointed at the new ids.  commit
 * writes the changed map nodes, the record, commits the store and moves the
 * HEAD ref; abort undoes the map changes and returns every page received
 * to the "dirty since HEAD" set.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "migrate_internal.h"

int mig_store_sink_init(mig_store_sink *k, vmt_vmsnap *vs)
{
    memset(k, 0, sizeof(*k));
    k->vs = vs;
    k->sent = vmt_callocn(vs->nwords, sizeof(uint64_t));
    k->changed = vmt_callocn(vs->nwords, sizeof(uint64_t));
    if (!k->sent || !k->changed)
        return vmt_error_set(VMT_ENOMEM, "out of memory for the snapshot bitmaps");
    return 0;
}

static void free_batch(mig_store_sink *k)
{
    free(k->copy);
    free(k->ptrs);
    free(k->ids);
    free(k->is_new);
    free(k->idx);
    k->copy = NULL;
    k->ptrs = NULL;
    k->ids = NULL;
    k->is_new = NULL;
    k->idx = NULL;
    k->cap = 0;
}

void mig_store_sink_fini(mig_store_sink *k)
{
    free_batch(k);
    free(k->sent);
    free(k->changed);
    free(k->undo);
    memset(k, 0, sizeof(*k));
}

static void forget_take(mig_store_sink *k)
{
    memset(k->sent, 0, k->vs->nwords * sizeof(uint64_t));
    memset(k->changed, 0, k->vs->nwords * sizeof(uint64_t));
    k->nundo = 0;
}

void mig_store_sink_prepare(mig_store_sink *k, const char *message)
{
    forget_take(k);
    k->message = message ? message : "";
    k->have_state = false;
    k->pages_hashed = k->pages_zero = k->pages_new = 0;
    k->nodes_new = k->node_bytes = k->record_bytes = k->objects_new = 0;
}

static int grow_batch(mig_store_sink *k, size_t n)
{
    if (n <= k->cap)
        return 0;
    free_batch(k);
    size_t bytes;
    if (vmt_mul_overflow(n, VMT_PAGE_SIZE, &bytes))
        return vmt_error_set(VMT_ERANGE, "batch of %zu pages is too large", n);
    if (posix_memalign((void **)&k->copy, 64, bytes) != 0)
        k->copy = NULL;
    k->ptrs = vmt_mallocn(n, sizeof(*k->ptrs));
    k->ids = vmt_mallocn(n, sizeof(*k->ids));
    k->is_new = vmt_mallocn(n, sizeof(*k->is_new));
    k->idx = vmt_mallocn(n, sizeof(*k->idx));
    if (!k->copy || !k->ptrs || !k->ids || !k->is_new || !k->idx) {
        free_batch(k);
        return vmt_error_set(VMT_ENOMEM, "out of memory for a batch of %zu pages", n);
    }
    k->cap = n;
    return 0;
}

static bool page_is_zero(const uint8_t *p)
{
    const uint64_t *w = (const uint64_t *)(const void *)p;
    if (w[0] | w[VMT_PAGE_SIZE / 8 - 1])
        return false;
    for (size_t i = 0; i < VMT_PAGE_SIZE / 8; i += 8) {
        if (w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7])
            return false;
    }
    return true;
}

/* Points page pfn of the map at id, remembering its old entry once. */
static int map_page(mig_store_sink *k, uint64_t pfn, const vmt_id *id)
{
    vmt_vmsnap *vs = k->vs;
    mig_set_bit(k->sent, pfn);
    const vmt_id *cur = vmt_map_get(vs->map, pfn);
    if (vmt_id_equal(cur, id))
        return 0;
    if (!mig_test_bit(k->changed, pfn)) {
        if (k->nundo == k->undo_cap) {
            size_t cap = k->undo_cap ? k->undo_cap * 2 : 4096;
            mig_undo *u = vmt_reallocn(k->undo, cap, sizeof(*u));
            if (!u)
                return VMT_ENOMEM;
            k->undo = u;
            k->undo_cap = cap;
        }
        k->undo[k->nundo++] = (mig_undo){.pfn = pfn, .old = *cur};
        mig_set_bit(k->changed, pfn);
    }
    vmt_map_set(vs->map, pfn, id);
    return 0;
}

static int sink_begin(void *ctx, const vmt_precopy_info *info)
{
    mig_store_sink *k = ctx;
    if (info->npages != k->vs->npages)
        return vmt_error_set(VMT_EINVAL, "store sink: the VM has %llu pages, its map %llu",
                             (unsigned long long)info->npages,
                             (unsigned long long)k->vs->npages);
    k->info = *info;
    k->vs->info = *info;
    k->vs->info_known = true;
    mig_ram_holes_init(&k->holes, k->vs->vm);
    k->ext_round = UINT_MAX;
    return 0;
}

static int sink_pages(void *ctx, unsigned round, const uint64_t *pfns, const uint8_t *const *data,
                      size_t n)
{
    mig_store_sink *k = ctx;
    vmt_id zero = vmt_id_zero_page();
    int rc = grow_batch(k, n);
    if (rc)
        return rc;
    /* An extent seen after this round's dirty sync stays right for the
     * round: a page written before the sync is data already; one written
     * after it is dirty again and comes back next round. */
    if (round != k->ext_round) {
        k->ext_round = round;
        mig_ram_holes_forget(&k->holes);
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (pfns[i] >= k->vs->npages)
            return vmt_error_set(VMT_EINVAL, "store sink: page %llu is past RAM",
                                 (unsigned long long)pfns[i]);
        if (mig_ram_hole(&k->holes, pfns[i] * VMT_PAGE_SIZE) || page_is_zero(data[i])) {
            if ((rc = map_page(k, pfns[i], &zero)) != 0)
                return rc;
            k->pages_zero++;
            continue;
        }
        uint8_t *c = k->copy + m * VMT_PAGE_SIZE;
        memcpy(c, data[i], VMT_PAGE_SIZE);
        k->ptrs[m] = c;
        k->idx[m++] = i;
    }
    if (m && (rc = vmt_store_put_pages(k->vs->store, k->ptrs, m, k->ids, k->is_new, NULL)) != 0)
        return vmt_error_wrap(rc, "storing %zu pages", m);
    for (size_t j = 0; j < m; j++) {
        if ((rc = map_page(k, pfns[k->idx[j]], &k->ids[j])) != 0)
            return rc;
        k->pages_new += k->is_new[j];
        k->objects_new += k->is_new[j];
    }
    k->pages_hashed += m;
    return 0;
}

static int sink_state(void *ctx, const uint8_t *blob, size_t len)
{
    mig_store_sink *k = ctx;
    vmt_store_obj obj = {.data = blob, .len = len, .type = VMT_OBJ_BLOB};
    bool is_new = false;
    int rc = vmt_store_put_many(k->vs->store, &obj, 1, &k->state_id, &is_new, NULL);
    if (rc)
        return vmt_error_wrap(rc, "storing the state blob");
    k->objects_new += is_new;
    k->have_state = true;
    return 0;
}

static uint64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Fills the record of the new snapshot. */
static void build_record(mig_store_sink *k, const vmt_id *root)
{
    vmt_vmsnap *vs = k->vs;
    vmt_snap_record *r = &k->rec;
    memset(r, 0, sizeof(*r));
    if (vs->has_head) {
        r->nparents = 1;
        r->parents[0] = vs->head;
    }
    r->map_root = *root;
    r->state = k->state_id;
    r->mem_size = k->info.mem_size;
    r->vcpus = k->info.vcpus;
    r->irqchip = k->info.irqchip;
    snprintf(r->image, sizeof(r->image), "%s", vs->image);
    snprintf(r->cmdline, sizeof(r->cmdline), "%s", vs->cmdline);
    snprintf(r->vm_name, sizeof(r->vm_name), "%s", vs->name);
    snprintf(r->message, sizeof(r->message), "%s", k->message);
    r->time_ns = wall_ns();
    r->nonzero_pages = vmt_map_nonzero(vs->map);
}

/* Writes the map nodes and the record; *id names the snapshot. */
static int put_objects(mig_store_sink *k)
{
    vmt_vmsnap *vs = k->vs;
    vmt_id root;
    uint64_t nn = 0, nb = 0;
    int rc = vmt_map_write(vs->map, vs->store, &root, &nn, &nb);
    if (rc)
        return vmt_error_wrap(rc, "writing the memory map");
    k->nodes_new += nn;
    k->node_bytes += nb;
    k->objects_new += nn;
    build_record(k, &root);
    uint8_t *buf = NULL;
    size_t len = 0;
    if ((rc = vmt_snap_record_encode(&k->rec, &buf, &len)) != 0)
        return vmt_error_wrap(rc, "encoding the snapshot record");
    vmt_store_obj obj = {.data = buf, .len = len, .type = VMT_OBJ_SNAPSHOT};
    bool is_new = false;
    rc = vmt_store_put_many(vs->store, &obj, 1, &k->snap_id, &is_new, NULL);
    free(buf);
    if (rc)
        return vmt_error_wrap(rc, "storing the snapshot record");
    k->record_bytes = len;
    k->objects_new += is_new;
    return 0;
}

/* Makes the snapshot durable, indexes it and moves HEAD to it. */
static int sink_commit(void *ctx)
{
    mig_store_sink *k = ctx;
    vmt_vmsnap *vs = k->vs;
    if (!k->have_state)
        return vmt_error_set(VMT_EINVAL, "store sink: commit before the state blob");
    int rc = put_objects(k);
    if (rc)
        return rc;
    if ((rc = vmt_store_commit(vs->store)) != 0)
        return vmt_error_wrap(rc, "committing the store");
    if ((rc = vmt_catalog_add_snapshot(vs->cat, &k->snap_id, &k->rec)) != 0)
        return vmt_error_wrap(rc, "adding the snapshot to the catalog");
    if ((rc = vmt_catalog_set_ref(vs->cat, vs->ref, &k->snap_id, &vs->ref_expect)) != 0) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", vmt_error_last());
        vmt_catalog_remove_snapshot(vs->cat, &k->snap_id); /* best effort: gc takes it */
        return vmt_error_set(rc, "moving %s: %s", vs->ref, msg);
    }
    vs->head = k->snap_id;
    vs->has_head = true;
    vs->ref_expect = k->snap_id;
    forget_take(k); /* the map is HEAD's now */
    return 0;
}

/* Back to HEAD: the map entries this take changed, and the pages it
 * received are dirty since HEAD again. */
static void sink_abort(void *ctx)
{
    mig_store_sink *k = ctx;
    vmt_vmsnap *vs = k->vs;
    for (size_t i = k->nundo; i > 0; i--)
        vmt_map_set(vs->map, k->undo[i - 1].pfn, &k->undo[i - 1].old);
    for (uint64_t w = 0; w < vs->nwords; w++)
        vs->since_head[w] |= k->sent[w];
    forget_take(k);
}

const vmt_sink_ops mig_store_sink_ops = {
    .begin = sink_begin,
    .pages = sink_pages,
    .state = sink_state,
    .commit = sink_commit,
    .abort = sink_abort,
    /* Once the last pages and the state are in the store's hands, the
     * snapshot no longer depends on the VM: it runs on while the map, the
     * record, the store and the catalog are written and synced. */
    .flags = VMT_SINK_RESUME_BEFORE_COMMIT,
};
