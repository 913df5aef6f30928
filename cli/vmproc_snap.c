/*
 * The VM process's work with the store: registration, VMs from snapshots,
 * snapshot and rollback requests.
 *
 * The store has one writer at a time, and several VM processes and commands
 * share it, so a VM process holds the store only while it works: a
 * snapshot opens it for writing, attaches vmt_vmsnap with the current HEAD,
 * takes, detaches and closes.  Dirty logging stays on for the VM's whole
 * life (started by the VM process, so attach leaves it on), so the pages
 * written between two snapshots wait in the log for the next take's first
 * sync; nothing is lost while no vmsnap is attached.  A failed take's
 * pages go back to the log at detach (migrate.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmproc.h"
#include "vmtree/migrate.h"

/* ---- the store and the catalog ------------------------------------------ */

int vmp_prepare_store(const vmproc_opts *o)
{
    vmt_store *s = NULL;
    vmt_store_open_opts so;
    vmt_store_open_opts_init(&so);
    so.read_only = true;
    so.threads = 1;
    int rc = vmt_store_open(&s, o->store, &so);
    vmt_store_close(s);
    if (rc != VMT_ENOENT)
        return rc;
    if (!o->init_store)
        return vmt_error_set(VMT_ENOENT,
                             "no store at %s (vmtree store init --store %s creates one)", o->store,
                             o->store);
    rc = vmt_store_init(o->store, NULL);
    if (rc)
        return vmt_error_wrap(rc, "creating the store");
    vmt_info("created the store %s", o->store);
    return 0;
}

static char *head_ref(const char *name, char *buf, size_t cap)
{
    snprintf(buf, cap, "vm/%s/HEAD", name);
    return buf;
}

/*
 * After VMT_EEXIST: replaces a registration of this host whose process is
 * gone.  We hold the name's lock in our run directory, so a process
 * registered from that directory is gone (its pid now names another
 * process).  On a shared store the run directory is per host and per
 * location spelling ($VMTREE_RUN_DIR, $XDG_RUNTIME_DIR, root or not), so a
 * live registration of this host from another directory (another socket
 * path) may well be running: it is refused, as is another host's.
 */
static int register_over(vmt_catalog *c, const vmt_catalog_vm *vm)
{
    char why[512];
    vmt_catalog_vm old;
    snprintf(why, sizeof(why), "%s", vmt_error_last());
    if (vmt_catalog_get_vm(c, vm->name, &old) != 0 || !vmt_catalog_vm_local(c, &old))
        return vmt_error_set(VMT_EEXIST, "%s", why);
    if (vmt_catalog_shared(c) && strcmp(old.socket, vm->socket) != 0)
        return vmt_error_set(VMT_EEXIST,
                             "%s, with its control socket %s: another run directory than this "
                             "command's %s (set VMTREE_RUN_DIR alike, or if that process is not "
                             "VM %s, `vmtree stop %s --forget` drops the registration)",
                             why, old.socket, vm->socket, vm->name, vm->name);
    vmt_catalog_unregister_vm(c, vm->name);
    return vmt_catalog_register_vm(c, vm);
}

int vmp_register(vmproc *p)
{
    vmt_catalog *c = NULL;
    vmt_catalog_vm vm;
    char ref[VMT_SNAP_NAME_MAX + 16];
    memset(&vm, 0, sizeof(vm));
    snprintf(vm.name, sizeof(vm.name), "%s", p->o->name);
    vm.pid = getpid();
    if (strlen(p->sock_path) >= sizeof(vm.socket))
        return vmt_error_set(VMT_ERANGE, "socket path %s is longer than %zu bytes", p->sock_path,
                             sizeof(vm.socket) - 1);
    memcpy(vm.socket, p->sock_path, strlen(p->sock_path) + 1);
    vm.head = p->head;
    vm.has_head = p->has_head;
    snprintf(vm.image, sizeof(vm.image), "%s", p->image);
    vm.mem_size = p->mem;
    vm.vcpus = p->vcpus;
    int rc = vmt_cli_catalog_open(p->o->store, &c);
    if (rc)
        return rc;
    rc = vmt_catalog_register_vm(c, &vm);
    if (rc == VMT_EEXIST)
        rc = register_over(c, &vm);
    head_ref(vm.name, ref, sizeof(ref));
    if (rc == 0 && p->has_head)
        rc = vmt_catalog_set_ref(c, ref, &p->head, NULL);
    else if (rc == 0 && vmt_catalog_delete_ref(c, ref) == VMT_ENOENT)
        vmt_error_clear();
    p->registered = rc == 0;
    vmt_catalog_close(c);
    return rc ? vmt_error_wrap(rc, "registering VM %s", vm.name) : 0;
}

void vmp_unregister(vmproc *p)
{
    vmt_catalog *c = NULL;
    vmt_catalog_vm vm;
    if (!p->registered)
        return;
    p->registered = false;
    /* Only our own registration: on a shared store, after `vmtree stop
     * NAME --forget` elsewhere, the name may be another host's by now. */
    if (vmt_cli_catalog_open(p->o->store, &c) == 0 && vmt_catalog_get_vm(c, p->o->name, &vm) == 0 &&
        vmt_catalog_vm_local(c, &vm) && vm.pid == (int64_t)getpid())
        vmt_catalog_unregister_vm(c, p->o->name);
    vmt_catalog_close(c);
}

/* ---- VMs from snapshots ---------------------------------------------------- */

static void restore_progress(void *ctx, uint64_t done, uint64_t total)
{
    vmp_progress(ctx, "restore", done, total);
}

static void setup_restore_progress(void *ctx, uint64_t done, uint64_t total)
{
    vmp_setup_progress(ctx, "restore", done, total);
}

/* Restores `snap` into a new VM (not started); *restore and *rs are set
 * for a lazy restore still loading (else NULL). */
static int restore_vm(vmproc *p, const vmt_id *snap, bool lazy, vmp_conn *conn, vmt_vm **vm,
                      vmt_restore **restore, vmt_store **rs)
{
    vmt_store *s = NULL;
    vmt_snap_record *rec = malloc(sizeof(*rec));
    /* Progress goes to the client of a rollback, or for a branch being set
     * up to its terminal (or the waiting parent when detaching). */
    vmt_restore_opts ro = {.mode = lazy ? VMT_RESTORE_LAZY : VMT_RESTORE_EAGER,
                           .progress = conn ? restore_progress : setup_restore_progress,
                           .progress_ctx = conn ? (void *)conn : (void *)p};
    /* A lazy restore's prefetchers outlive a rollback request and its
     * connection (a stack object of the request): no progress for them. */
    if (lazy && conn)
        ro.progress = NULL;
    *restore = NULL;
    *rs = NULL;
    int rc = rec ? vmt_cli_store_open(p->o->store, false, &s) : VMT_ENOMEM;
    if (rc == 0)
        rc = vmt_vm_from_snapshot(p->kvm, s, snap, &p->base, &ro, vm, restore, rec);
    if (rc == 0) {
        snprintf(p->image, sizeof(p->image), "%s", rec->image);
        snprintf(p->cmdline, sizeof(p->cmdline), "%s", rec->cmdline);
        p->mem = rec->mem_size;
        p->vcpus = rec->vcpus;
        p->irqchip = rec->irqchip;
        if (!lazy) {
            vmt_restore_free(*restore);
            *restore = NULL;
        }
    }
    if (rc == 0 && *restore)
        *rs = s;
    else
        vmt_store_close(s);
    free(rec);
    return rc;
}

int vmp_create_from_snapshot(vmproc *p)
{
    vmt_restore *r;
    vmt_store *s;
    int rc = restore_vm(p, &p->o->snap, p->o->lazy, NULL, &p->vm, &r, &s);
    if (rc)
        return rc;
    p->restore = r;
    p->restore_store = s;
    p->has_head = true;
    p->head = p->o->snap;
    return 0;
}

void vmp_restore_poll(vmproc *p, bool now)
{
    if (!p->restore)
        return;
    if (!now && vmt_restore_wait(p->restore, 1) != 0) {
        vmt_error_clear();
        return;
    }
    vmt_restore_free(p->restore);
    vmt_store_close(p->restore_store);
    p->restore = NULL;
    p->restore_store = NULL;
}

/* ---- snapshot ----------------------------------------------------------------- */

static void take_progress(void *ctx, unsigned round, uint64_t remaining, uint64_t sent)
{
    char phase[32];
    snprintf(phase, sizeof(phase), "round %u", round);
    vmp_progress(ctx, phase, sent, sent + remaining);
}

static int take(vmproc *p, vmp_conn *conn, const char *msg, vmt_id *id,
                vmt_snap_take_stats *st)
{
    vmt_store *s = NULL;
    vmt_catalog *c = NULL;
    vmt_vmsnap *vs = NULL;
    vmt_vmsnap_info info = {.vm_name = p->o->name, .image = p->image, .cmdline = p->cmdline};
    vmt_snap_take_opts to;
    vmt_snap_take_opts_init(&to);
    to.message = msg;
    to.progress = take_progress;
    to.progress_ctx = conn;
    int rc = vmt_cli_store_open(p->o->store, true, &s);
    /* Over the open store: a RADOS store's catalog then needs no second
     * store handle (opening one reads the whole index). */
    if (rc == 0)
        rc = vmt_cli_catalog_of(s, &c);
    if (rc == 0)
        rc = vmt_vmsnap_attach(&vs, s, c, p->vm, p->has_head ? &p->head : NULL, &info);
    if (rc == 0)
        rc = vmt_vmsnap_take(vs, &to, id, st);
    /* After a failed take, detach hands the pages it had collected from the
     * log back to it, so the next snapshot still saves them. */
    vmt_vmsnap_detach(vs);
    vmt_catalog_close(c);
    vmt_store_close(s);
    return rc;
}

int vmp_req_snapshot(vmproc *p, vmp_conn *conn, const vmt_ctl_msg *req, vmt_ctl_msg *reply)
{
    const char *msg = vmt_ctl_get(req, "message");
    vmt_snap_take_stats st;
    vmt_id id;
    char hex[VMT_ID_HEX_LEN + 1];
    memset(&st, 0, sizeof(st));
    if (msg && strlen(msg) >= VMT_SNAP_MESSAGE_MAX)
        return vmt_error_set(VMT_ERANGE, "the message is longer than %u bytes",
                             VMT_SNAP_MESSAGE_MAX - 1);
    int rc = take(p, conn, msg ? msg : "", &id, &st);
    if (rc)
        return vmt_error_wrap(rc, "snapshot of %s", p->o->name);
    p->has_head = true;
    p->head = id;
    p->snapshots++;
    vmt_id_to_hex(&id, hex);
    rc = vmt_ctl_adds(reply, "snap", hex);
    rc = rc ? rc : vmt_ctl_addf(reply, "pages_hashed", "%llu",
                                (unsigned long long)st.pages_hashed);
    rc = rc ? rc : vmt_ctl_addf(reply, "pages_new", "%llu", (unsigned long long)st.pages_new);
    rc = rc ? rc : vmt_ctl_addf(reply, "objects_new", "%llu",
                                (unsigned long long)st.objects_new);
    rc = rc ? rc : vmt_ctl_addf(reply, "rounds", "%u", st.precopy.rounds);
    rc = rc ? rc : vmt_ctl_addf(reply, "pause_us", "%llu",
                                (unsigned long long)(st.precopy.pause_ns / 1000));
    rc = rc ? rc : vmt_ctl_addf(reply, "total_us", "%llu",
                                (unsigned long long)(st.precopy.total_ns / 1000));
    return rc;
}

/* ---- rollback ----------------------------------------------------------------- */

/* Moves the HEAD ref to the snapshot the VM now runs from. */
static int set_head_ref(vmproc *p)
{
    vmt_catalog *c = NULL;
    char ref[VMT_SNAP_NAME_MAX + 16];
    int rc = vmt_cli_catalog_open(p->o->store, &c);
    if (rc == 0)
        rc = vmt_catalog_set_ref(c, head_ref(p->o->name, ref, sizeof(ref)), &p->head, NULL);
    vmt_catalog_close(c);
    return rc;
}

/* Replaces p->vm by `vm` (restored from `snap`) and starts it. */
static int replace_vm(vmproc *p, vmt_vm *vm, vmt_restore *r, vmt_store *rs, const vmt_id *snap)
{
    vmt_vm_request_stop(p->vm);
    vmt_vm_destroy(p->vm);
    vmp_restore_poll(p, true); /* the old VM's lazy restore, if any */
    p->vm = vm;
    p->restore = r;
    p->restore_store = rs;
    p->has_head = true;
    p->head = *snap;
    int rc = vmt_dirty_start(vm, 0);
    if (rc == 0)
        rc = set_head_ref(p);
    char text[64], sid[13];
    vmt_cli_short_id(snap, sid);
    snprintf(text, sizeof(text), "rolled back to %s", sid);
    vmp_console_marker(p, text);
    int src = vmt_vm_start(vm);
    return rc ? rc : src;
}

/* After an in-place rollback: p follows `snap`, the VM runs again (as
 * after any rollback, paused before or not), HEAD moves.  Adds running_us,
 * in_place and restore_us to the reply; t0: the request's arrival. */
static int finish_in_place(vmproc *p, const vmt_id *snap, const vmt_snap_record *rec,
                           uint64_t t0, vmt_ctl_msg *reply)
{
    snprintf(p->image, sizeof(p->image), "%s", rec->image);
    snprintf(p->cmdline, sizeof(p->cmdline), "%s", rec->cmdline);
    p->has_head = true;
    p->head = *snap;
    char text[64], sid[13];
    vmt_cli_short_id(snap, sid);
    snprintf(text, sizeof(text), "rolled back to %s", sid);
    vmp_console_marker(p, text);
    int rc = vmt_vm_resume(p->vm);
    uint64_t t_running = vmt_now_ns();
    /* The HEAD ref (a catalog transaction, fsynced) after the VM runs. */
    int hrc = set_head_ref(p);
    vmt_debug("rollback of %s: running after %llu us, HEAD ref %llu us", p->o->name,
              (unsigned long long)((t_running - t0) / 1000),
              (unsigned long long)((vmt_now_ns() - t_running) / 1000));
    if (rc == 0)
        rc = hrc;
    if (rc == 0)
        rc = vmt_ctl_addf(reply, "running_us", "%llu",
                          (unsigned long long)((t_running - t0) / 1000));
    if (rc == 0)
        rc = vmt_ctl_adds(reply, "in_place", "1");
    if (rc == 0)
        rc = vmt_ctl_addf(reply, "restore_us", "%llu",
                          (unsigned long long)((vmt_now_ns() - t0) / 1000));
    return rc;
}

/* A lazy rollback rewrites at most this many pages eagerly (~16 ms here);
 * beyond, a full lazy restore runs sooner. */
#define PARTIAL_LAZY_MAX 4096u

/* Why a partial rollback cannot be tried (NULL: it can). */
static const char *partial_refused(vmproc *p)
{
    if (!p->has_head)
        return "the VM has no HEAD";
    if (p->restore)
        vmp_restore_poll(p, false); /* frees it if it has completed */
    if (p->restore)
        return "an earlier lazy restore is still filling its RAM";
    return NULL;
}

/*
 * Rolls p->vm (paused) back to `snap` rewriting only the pages that differ
 * from HEAD or were written since (vmt_vm_restore_partial).  1: not tried
 * or refused with the VM untouched (the caller restores in full).  Else 0,
 * or the error that left the VM paused with its RAM lost.
 */
static int rollback_partial(vmproc *p, const vmt_id *snap, bool lazy, uint64_t t0,
                            vmt_ctl_msg *reply)
{
    const char *why = partial_refused(p);
    if (why) {
        vmt_debug("rollback of %s: in full, %s", p->o->name, why);
        return 1;
    }
    vmt_store *s = NULL;
    vmt_snap_record *rec = malloc(sizeof(*rec));
    vmt_inplace_stats ist;
    vmt_restore_partial_stats pst;
    vmt_partial_opts po = {.max_pages = lazy ? PARTIAL_LAZY_MAX : 0};
    memset(&ist, 0, sizeof(ist));
    memset(&pst, 0, sizeof(pst));
    uint64_t t_open = vmt_now_ns();
    int rc = rec ? vmt_cli_store_open(p->o->store, false, &s) : VMT_ENOMEM;
    uint64_t t_opened = vmt_now_ns();
    if (rc == 0)
        rc = vmt_vm_restore_partial(p->vm, s, &p->head, snap, &po, rec, &ist, &pst);
    vmt_store_close(s);
    vmt_debug("rollback of %s: request to store open %llu us, store open %llu us, partial "
              "restore %llu us",
              p->o->name, (unsigned long long)((t_open - t0) / 1000),
              (unsigned long long)((t_opened - t_open) / 1000),
              (unsigned long long)((vmt_now_ns() - t_opened) / 1000));
    if (rc && !ist.ram_replaced) {
        vmt_debug("rollback of %s: in full, %s", p->o->name, vmt_error_last());
        vmt_error_clear();
        free(rec);
        return 1;
    }
    if (rc) {
        p->has_head = false; /* RAM no longer head's: the next snapshot is full */
        free(rec);
        return rc;
    }
    rc = finish_in_place(p, snap, rec, t0, reply);
    free(rec);
    rc = rc ? rc : vmt_ctl_adds(reply, "partial", "1");
    rc = rc ? rc : vmt_ctl_addf(reply, "pages_restored", "%llu",
                                (unsigned long long)pst.pages_restored);
    rc = rc ? rc : vmt_ctl_addf(reply, "pages_diff", "%llu", (unsigned long long)pst.pages_diff);
    rc = rc ? rc : vmt_ctl_addf(reply, "pages_dirty", "%llu",
                                (unsigned long long)pst.pages_dirty);
    return rc;
}

/* Rolls p->vm back to `snap` in place (vmt_vm_restore_in_place) and
 * resumes it.  VMT_EINVAL: the snapshot's config differs (nothing touched;
 * the caller makes a new VM).  Else on failure the VM stays paused (its RAM
 * may be lost) and the error is returned.  t0: the request's arrival. */
static int rollback_in_place(vmproc *p, const vmt_id *snap, bool lazy, vmp_conn *conn,
                             bool was_paused, uint64_t t0, vmt_ctl_msg *reply)
{
    vmt_store *s = NULL;
    vmt_snap_record *rec = malloc(sizeof(*rec));
    vmt_inplace_stats ist;
    /* A lazy restore's prefetchers outlive the request and its connection:
     * no progress for them. */
    vmt_restore_opts ro = {.mode = lazy ? VMT_RESTORE_LAZY : VMT_RESTORE_EAGER,
                           .progress = lazy ? NULL : restore_progress, .progress_ctx = conn};
    vmt_restore *r = NULL, *old = p->restore;
    memset(&ist, 0, sizeof(ist));
    int rc = rec ? vmt_cli_store_open(p->o->store, false, &s) : VMT_ENOMEM;
    if (rc == 0)
        rc = vmt_vm_restore_in_place(p->vm, s, snap, &ro, &old, &r, rec, &ist);
    if (old != p->restore) { /* the earlier lazy restore was given up */
        vmt_store_close(p->restore_store);
        p->restore = NULL;
        p->restore_store = NULL;
    }
    if (rc) {
        vmt_store_close(s);
        free(rec);
        if (ist.ram_replaced)
            p->has_head = false; /* RAM no longer head's: the next snapshot is full */
        if (!ist.ram_replaced && rc != VMT_EINVAL && !was_paused)
            vmt_vm_resume(p->vm); /* untouched: as it was */
        return rc;
    }
    if (r) {
        p->restore = r;
        p->restore_store = s;
    } else {
        vmt_store_close(s);
    }
    vmt_debug("rollback in place (%s): restore %llu us (read %llu, check %llu, old restore "
              "%llu, ram %llu, state %llu, dirty %llu)",
              lazy ? "lazy" : "eager", (unsigned long long)(ist.total_ns / 1000),
              (unsigned long long)(ist.read_ns / 1000), (unsigned long long)(ist.check_ns / 1000),
              (unsigned long long)(ist.old_ns / 1000), (unsigned long long)(ist.ram_ns / 1000),
              (unsigned long long)(ist.state_ns / 1000),
              (unsigned long long)(ist.dirty_ns / 1000));
    rc = finish_in_place(p, snap, rec, t0, reply);
    free(rec);
    return rc;
}

int vmp_req_rollback(vmproc *p, vmp_conn *conn, const vmt_ctl_msg *req, vmt_ctl_msg *reply)
{
    uint64_t t0 = vmt_now_ns();
    const char *hex = vmt_ctl_get(req, "snap");
    const char *lazy = vmt_ctl_get(req, "lazy");
    bool is_lazy = lazy && !strcmp(lazy, "1");
    vmt_id id;
    vmt_vm *vm = NULL;
    vmt_restore *r = NULL;
    vmt_store *rs = NULL;
    if (!hex || vmt_id_from_hex(hex, &id) != 0)
        return vmt_error_set(VMT_EPROTO, "rollback needs snap=<32 hex digits>");
    bool was_paused = vmt_vm_is_paused(p->vm);
    vmt_vm_pause(p->vm);
    int rc = rollback_partial(p, &id, is_lazy, t0, reply);
    if (rc == 1)
        rc = rollback_in_place(p, &id, is_lazy, conn, was_paused, t0, reply);
    if (rc == 0)
        return 0;
    if (rc != VMT_EINVAL) {
        /* Past the checks the RAM is gone: the VM stays paused. */
        return vmt_error_wrap(rc, "rollback of %s", p->o->name);
    }
    vmt_debug("rollback of %s: %s; making a new VM", p->o->name, vmt_error_last());
    vmt_error_clear();
    rc = restore_vm(p, &id, is_lazy, conn, &vm, &r, &rs);
    if (rc) {
        if (!was_paused)
            vmt_vm_resume(p->vm);
        return vmt_error_wrap(rc, "rollback of %s", p->o->name);
    }
    rc = replace_vm(p, vm, r, rs, &id);
    if (rc)
        return vmt_error_wrap(rc, "rollback of %s", p->o->name);
    return vmt_ctl_addf(reply, "restore_us", "%llu",
                        (unsigned long long)((vmt_now_ns() - t0) / 1000));
}
