/*
 * Snapshots of running VMs: the HEAD map kept in memory, the "dirty since
 * HEAD" set, and vmt_vmsnap_take = the pre-copy engine writing into the
 * store sink (docs/precopy.md, "The snapshot flow").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migrate_internal.h"

#define DEFAULT_MAX_ROUNDS 8u
#define DEFAULT_PAUSE_PAGES 32u
#define DEFAULT_STORE_BATCH 1024u

static int check_name(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n >= VMT_SNAP_NAME_MAX)
        return vmt_error_set(VMT_EINVAL, "a VM name of 1..%u characters is required",
                             VMT_SNAP_NAME_MAX - 1);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return vmt_error_set(VMT_EINVAL, "VM name '%s': only A-Z a-z 0-9 . _ - are allowed",
                                 name);
    }
    return 0;
}

/* The HEAD ref's current value; the zero id where it does not exist. */
static int read_ref(vmt_vmsnap *vs)
{
    int rc = vmt_catalog_get_ref(vs->cat, vs->ref, &vs->ref_expect);
    if (rc == VMT_ENOENT) {
        memset(&vs->ref_expect, 0, sizeof(vs->ref_expect));
        vmt_error_clear();
        return 0;
    }
    return rc ? vmt_error_wrap(rc, "reading %s", vs->ref) : 0;
}

/* Loads HEAD's map (restored VM) or starts from an empty one (fresh VM,
 * every page dirty since there is no HEAD). */
static int load_head(vmt_vmsnap *vs, const vmt_id *head, const vmt_vmsnap_info *info)
{
    if (!head) {
        memset(vs->since_head, 0xff, vs->nwords * sizeof(uint64_t));
        if (vs->npages % 64)
            vs->since_head[vs->nwords - 1] = (1ull << (vs->npages % 64)) - 1;
        return vmt_map_new(&vs->map, vs->npages);
    }
    vmt_snap_record *r = malloc(sizeof(*r));
    if (!r)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    int rc = vmt_snap_record_read(vs->store, head, r);
    if (rc == 0 && r->mem_size != vs->npages * VMT_PAGE_SIZE)
        rc = vmt_error_set(VMT_EINVAL, "snapshot is of a %llu MiB VM, this VM has %llu MiB",
                           (unsigned long long)(r->mem_size >> 20),
                           (unsigned long long)((vs->npages * VMT_PAGE_SIZE) >> 20));
    if (rc == 0)
        rc = vmt_map_load(&vs->map, vs->store, &r->map_root, vs->npages);
    if (rc == 0) {
        vs->has_head = true;
        vs->head = *head;
        vs->info = (vmt_precopy_info){.mem_size = r->mem_size, .vcpus = r->vcpus,
                                      .irqchip = r->irqchip, .npages = vs->npages};
        vs->info_known = r->vcpus == vmt_vm_vcpus(vs->vm);
        if (!info->image)
            snprintf(vs->image, sizeof(vs->image), "%s", r->image);
        if (!info->cmdline)
            snprintf(vs->cmdline, sizeof(vs->cmdline), "%s", r->cmdline);
    }
    free(r);
    return rc;
}

static int copy_info(vmt_vmsnap *vs, const vmt_vmsnap_info *info)
{
    int rc = check_name(info->vm_name);
    if (rc)
        return rc;
    snprintf(vs->name, sizeof(vs->name), "%s", info->vm_name);
    snprintf(vs->ref, sizeof(vs->ref), "vm/%s/HEAD", info->vm_name);
    if (info->image && strlen(info->image) >= sizeof(vs->image))
        return vmt_error_set(VMT_ERANGE, "image path longer than %zu bytes",
                             sizeof(vs->image) - 1);
    if (info->cmdline && strlen(info->cmdline) >= sizeof(vs->cmdline))
        return vmt_error_set(VMT_ERANGE, "command line longer than %zu bytes",
                             sizeof(vs->cmdline) - 1);
    snprintf(vs->image, sizeof(vs->image), "%s", info->image ? info->image : "");
    snprintf(vs->cmdline, sizeof(vs->cmdline), "%s", info->cmdline ? info->cmdline : "");
    return 0;
}

int vmt_vmsnap_attach(vmt_vmsnap **out, vmt_store *s, vmt_catalog *c, vmt_vm *vm,
                      const vmt_id *head, const vmt_vmsnap_info *info)
{
    *out = NULL;
    if (!s || !c || !vm || !info)
        return vmt_error_set(VMT_EINVAL, "attach: store, catalog, vm and info are required");
    vmt_vmsnap *vs = calloc(1, sizeof(*vs));
    if (!vs)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    vs->store = s;
    vs->cat = c;
    vs->vm = vm;
    vs->npages = vmt_vm_ram_pages(vm);
    vs->nwords = VMT_DIV_ROUND_UP(vs->npages, 64);
    vs->since_head = vmt_callocn(vs->nwords, sizeof(uint64_t));
    int rc = vs->since_head ? copy_info(vs, info) : VMT_ENOMEM;
    if (rc == 0)
        rc = mig_store_sink_init(&vs->sink, vs);
    if (rc == 0)
        rc = load_head(vs, head, info);
    if (rc == 0)
        rc = read_ref(vs);
    if (rc == 0 && !vmt_dirty_active(vm)) {
        rc = vmt_dirty_start(vm, 0);
        vs->own_logging = rc == 0;
    }
    if (rc) {
        vmt_vmsnap_detach(vs);
        return rc;
    }
    *out = vs;
    return 0;
}

/* Gives the pages dirty since HEAD that no snapshot saved back to the
 * VMM's dirty log, so that the next attach to this VM sees them. */
static void hand_back_dirty(vmt_vmsnap *vs)
{
    for (uint64_t w = 0; w < vs->nwords; w++) {
        uint64_t bits = vs->since_head[w];
        while (bits) { /* one call per run of set bits */
            unsigned b = (unsigned)__builtin_ctzll(bits);
            uint64_t x = bits >> b;
            unsigned run = ~x ? (unsigned)__builtin_ctzll(~x) : 64u;
            vmt_vm_mark_dirty(vs->vm, w * 64 + b, run);
            bits &= run >= 64 ? 0 : ~(((1ull << run) - 1) << b);
        }
    }
}

void vmt_vmsnap_detach(vmt_vmsnap *vs)
{
    if (!vs)
        return;
    if (vs->own_logging)
        vmt_dirty_stop(vs->vm);
    else if (vs->since_head && vmt_dirty_active(vs->vm))
        hand_back_dirty(vs);
    mig_store_sink_fini(&vs->sink);
    vmt_map_free(vs->map);
    free(vs->since_head);
    free(vs);
}

bool vmt_vmsnap_head(const vmt_vmsnap *vs, vmt_id *out)
{
    if (!vs || !vs->has_head)
        return false;
    if (out)
        *out = vs->head;
    return true;
}

void vmt_snap_take_opts_init(vmt_snap_take_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->max_rounds = DEFAULT_MAX_ROUNDS;
    o->pause_pages = DEFAULT_PAUSE_PAGES;
    o->batch_pages = DEFAULT_STORE_BATCH;
}

static void fill_stats(const mig_store_sink *k, const vmt_precopy_stats *pst,
                       vmt_snap_take_stats *st)
{
    st->precopy = *pst;
    st->pages_hashed = k->pages_hashed;
    st->pages_zero = k->pages_zero;
    st->pages_new = k->pages_new;
    st->nodes_new = k->nodes_new;
    st->node_bytes = k->node_bytes;
    st->record_bytes = k->record_bytes;
    st->objects_new = k->objects_new;
}

int vmt_vmsnap_take(vmt_vmsnap *vs, const vmt_snap_take_opts *o, vmt_id *out,
                    vmt_snap_take_stats *stats)
{
    vmt_snap_take_opts def;
    if (!vs)
        return vmt_error_set(VMT_EINVAL, "take: no attached VM");
    if (!o) {
        vmt_snap_take_opts_init(&def);
        o = &def;
    }
    vmt_simple_policy pol = {.pause_pages = o->pause_pages, .max_rounds = o->max_rounds};
    vmt_precopy_opts po = {
        .policy = vmt_simple_policy_fn,
        .policy_ctx = &pol,
        .progress = o->progress,
        .progress_ctx = o->progress_ctx,
        .batch_pages = o->batch_pages ? o->batch_pages : DEFAULT_STORE_BATCH,
        .info = vs->info_known ? &vs->info : NULL,
    };
    mig_store_sink_prepare(&vs->sink, o->message);
    vmt_sink sink = {.ops = &mig_store_sink_ops, .ctx = &vs->sink};
    if (o->interpose)
        sink = o->interpose(o->interpose_ctx, sink);
    bool was_paused = vmt_vm_is_paused(vs->vm);
    vmt_precopy_stats pst;
    int rc = vmt_precopy_run(vs->vm, vs->since_head, sink.ops, sink.ctx, &po, &pst);
    if (rc == 0 && !was_paused)
        vmt_vm_resume(vs->vm);
    if (rc)
        vs->info_known = false; /* should it have been wrong, read it afresh */
    if (stats)
        fill_stats(&vs->sink, &pst, stats);
    if (rc == 0 && out)
        *out = vs->head;
    return rc;
}
