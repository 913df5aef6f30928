/*
 * The catalog's public functions: each checks its arguments and calls the
 * backend (catalog_internal.h) the location chose:
 *   a directory   SQLite, STORE_DIR/catalog.db (catalog_sql*.c)
 *   rados://...   the store's own refs, shared by every host (catalog_refs*.c)
 * and the small rules both share (ref names, compare-and-swap messages).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "catalog_internal.h"

/* ---- shared rules -------------------------------------------------------- */

bool cat_ref_valid(const char *ref)
{
    char name[VMT_SNAP_NAME_MAX];
    size_t n = strnlen(ref, CATALOG_REF_MAX);

    if (n >= CATALOG_REF_MAX)
        return false;
    if (strncmp(ref, "tag/", 4) == 0)
        return snap_name_valid(ref + 4);
    if (strncmp(ref, "vm/", 3) != 0 || n < 3 + 5 || strcmp(ref + n - 5, "/HEAD") != 0 ||
        n - 8 >= sizeof(name))
        return false;
    memcpy(name, ref + 3, n - 8);
    name[n - 8] = '\0';
    return snap_name_valid(name);
}

static bool cat_id_is_null(const vmt_id *id)
{
    static const vmt_id none;
    return memcmp(id, &none, sizeof(none)) == 0;
}

int cat_check_expect(const char *ref, const vmt_id *have, const vmt_id *expect)
{
    char want[VMT_ID_HEX_LEN + 1], cur[VMT_ID_HEX_LEN + 1];

    if (!have) {
        if (cat_id_is_null(expect))
            return 0;
        vmt_id_to_hex(expect, want);
        return vmt_error_set(VMT_EBUSY, "ref %s does not exist (expected it at %s)", ref, want);
    }
    if (vmt_id_equal(have, expect))
        return 0;
    vmt_id_to_hex(have, cur);
    if (cat_id_is_null(expect))
        return vmt_error_set(VMT_EBUSY, "ref %s exists already (at %s)", ref, cur);
    vmt_id_to_hex(expect, want);
    return vmt_error_set(VMT_EBUSY, "ref %s is at %s, expected %s", ref, cur, want);
}

int cat_no_snapshot(const vmt_id *id)
{
    char hex[VMT_ID_HEX_LEN + 1];
    vmt_id_to_hex(id, hex);
    return vmt_error_set(VMT_ENOENT, "snapshot %s is not in the catalog", hex);
}

int cat_no_vm(const char *name)
{
    return vmt_error_set(VMT_ENOENT, "no VM named %.64s", name);
}

void cat_head_ref(char ref[CATALOG_REF_MAX], const char *vm)
{
    snprintf(ref, CATALOG_REF_MAX, "vm/%s/HEAD", vm);
}

int cat_check_unreferenced(const vmt_catalog_ref *refs, size_t n, const vmt_id *id)
{
    char hex[VMT_ID_HEX_LEN + 1];
    const char *first = NULL;
    for (size_t i = 0; i < n; i++)
        if (vmt_id_equal(&refs[i].id, id) && (!first || strcmp(refs[i].name, first) < 0))
            first = refs[i].name;
    if (!first)
        return 0;
    vmt_id_to_hex(id, hex);
    return vmt_error_set(VMT_EBUSY, "snapshot %s is still referenced by %s", hex, first);
}

bool cat_pid_alive(int64_t pid)
{
    if (pid <= 0 || pid > INT32_MAX)
        return false;
    return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

/* ---- opening ------------------------------------------------------------ */

static bool is_rados(const char *location)
{
    return strncmp(location, "rados://", 8) == 0;
}

/* $VMTREE_HOST, else the hostname (cut at 63 bytes). */
static int local_host(char host[VMT_CATALOG_HOST_MAX])
{
    const char *env = getenv("VMTREE_HOST");
    if (env && *env) {
        if (strlen(env) >= VMT_CATALOG_HOST_MAX || !snap_name_valid(env))
            return vmt_error_set(VMT_EINVAL,
                                 "VMTREE_HOST='%.80s': 1..%d letters, digits, '.', '_' or '-'", env,
                                 VMT_CATALOG_HOST_MAX - 1);
        snprintf(host, VMT_CATALOG_HOST_MAX, "%s", env);
        return 0;
    }
    char buf[256] = "";
    if (gethostname(buf, sizeof(buf) - 1) != 0 || !buf[0])
        return vmt_error_errno(VMT_EIO, errno, "reading the hostname (set VMTREE_HOST)");
    snprintf(host, VMT_CATALOG_HOST_MAX, "%s", buf);
    return 0;
}

/* Opens the backend for `location` into a new handle; `s` (may be NULL) is
 * an open store of that location to borrow. */
static int open_at(vmt_catalog **out, const char *location, vmt_store *s)
{
    vmt_catalog *c = calloc(1, sizeof(*c));
    if (!c)
        return vmt_error_set(VMT_ENOMEM, "catalog: out of memory");
    int rc;
    if (!is_rados(location)) {
        rc = cat_sql_open(c, location);
    } else {
        rc = local_host(c->host);
        c->store = s;
        if (rc == 0 && !s) {
            vmt_store_open_opts o;
            vmt_store_open_opts_init(&o);
            o.read_only = true;
            o.refs_only = true; /* the catalog is refs: no packs, no index */
            o.threads = 1;
            rc = vmt_store_open(&c->store, location, &o);
            c->own_store = rc == 0;
        }
        if (rc == 0)
            rc = cat_refs_open(c);
    }
    if (rc) {
        vmt_catalog_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

int vmt_catalog_open(vmt_catalog **out, const char *location)
{
    if (!out || !location)
        return vmt_error_set(VMT_EINVAL, "vmt_catalog_open: NULL argument");
    return open_at(out, location, NULL);
}

int vmt_catalog_open_store(vmt_catalog **out, vmt_store *s)
{
    if (!out || !s)
        return vmt_error_set(VMT_EINVAL, "vmt_catalog_open_store: NULL argument");
    return open_at(out, vmt_store_dir(s), s);
}

void vmt_catalog_close(vmt_catalog *c)
{
    if (!c)
        return;
    if (c->ops)
        c->ops->close(c);
    else
        sqlite3_close_v2(c->db); /* a SQLite open that failed before choosing */
    if (c->own_store)
        vmt_store_close(c->store);
    free(c->path);
    free(c);
}

bool vmt_catalog_shared(const vmt_catalog *c)
{
    return c && c->ops == &cat_refs_ops;
}

const char *vmt_catalog_host(const vmt_catalog *c)
{
    return c ? c->host : "";
}

bool vmt_catalog_vm_local(const vmt_catalog *c, const vmt_catalog_vm *vm)
{
    return !vmt_catalog_shared(c) || !vm->host[0] || strcmp(vm->host, c->host) == 0;
}

/* ---- watching for changes ---------------------------------------------- */

/* After an update that succeeded: a shared catalog wakes its watchers on
 * every host (vmt_catalog_watch_start).  The update stands whatever the
 * notify does; a watcher that does not answer learns late (bounded). */
static int changed(vmt_catalog *c, int rc)
{
    if (rc == 0 && vmt_catalog_shared(c) && vmt_store_ref_notify(c->store, CAT_FORMAT_KEY) != 0)
        vmt_error_clear();
    return rc;
}

struct vmt_catalog_watch {
    vmt_store_ref_watch *w;
    vmt_catalog_change_fn fn;
    void *ctx;
};

static void watch_fired(void *arg, const char *name)
{
    vmt_catalog_watch *w = arg;
    (void)name;
    w->fn(w->ctx);
}

int vmt_catalog_watch_start(vmt_catalog *c, vmt_catalog_change_fn fn, void *ctx,
                            vmt_catalog_watch **out)
{
    if (!c || !fn || !out)
        return vmt_error_set(VMT_EINVAL, "vmt_catalog_watch_start: NULL argument");
    if (!vmt_catalog_shared(c))
        return vmt_error_set(VMT_EUNSUPPORTED,
                             "catalog %s: watching for changes needs a shared store "
                             "(rados://); a directory store has one host",
                             c->path);
    vmt_catalog_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    w->fn = fn;
    w->ctx = ctx;
    int rc = vmt_store_ref_watch_start(c->store, CAT_FORMAT_KEY, watch_fired, w, &w->w);
    if (rc) {
        free(w);
        return vmt_error_wrap(rc, "catalog %s: watching for changes", c->path);
    }
    *out = w;
    return 0;
}

void vmt_catalog_watch_stop(vmt_catalog_watch *w)
{
    if (!w)
        return;
    vmt_store_ref_watch_stop(w->w);
    free(w);
}

/* ---- snapshots ---------------------------------------------------------- */

int vmt_catalog_add_snapshot(vmt_catalog *c, const vmt_id *id, const vmt_snap_record *r)
{
    if (!c || !id || !r)
        return vmt_error_set(VMT_EINVAL, "vmt_catalog_add_snapshot: NULL argument");
    if (!memchr(r->vm_name, '\0', sizeof(r->vm_name)) ||
        !memchr(r->message, '\0', sizeof(r->message)))
        return vmt_error_set(VMT_EINVAL, "catalog: record text is not NUL-terminated");
    return changed(c, c->ops->add_snapshot(c, id, r));
}

int vmt_catalog_remove_snapshot(vmt_catalog *c, const vmt_id *id)
{
    if (!c || !id)
        return vmt_error_set(VMT_EINVAL, "vmt_catalog_remove_snapshot: NULL argument");
    return changed(c, c->ops->remove_snapshot(c, id));
}

int vmt_catalog_list_snapshots(vmt_catalog *c, vmt_catalog_snap **out, size_t *n)
{
    if (!c || !out || !n)
        return vmt_error_set(VMT_EINVAL, "vmt_catalog_list_snapshots: NULL argument");
    return c->ops->list_snapshots(c, out, n);
}

/* ---- refs --------------------------------------------------------------- */

static int check_ref(const char *ref)
{
    if (!cat_ref_valid(ref))
        return vmt_error_set(VMT_EINVAL, "\"%.80s\" is not a ref (tag/NAME or vm/NAME/HEAD)", ref);
    return 0;
}

int vmt_catalog_get_ref(vmt_catalog *c, const char *ref, vmt_id *out)
{
    if (!c || !ref || !out)
        return vmt_error_set(VMT_EINVAL, "vmt_catalog_get_ref: NULL argument");
    int rc = check_ref(ref);
    return rc ? rc : c->ops->get_ref(c, ref, out);
}

int vmt_catalog_set_ref(vmt_catalog *c, const char *ref, const vmt_id *id, const vmt_id *expect)
{
    if (!c || !ref || !id)
        return vmt_error_set(VMT_EINVAL, "vmt_catalog_set_ref: NULL argument");
    int rc = check_ref(ref);
    return rc ? rc : changed(c, c->ops->set_ref(c, ref, id, expect));
}

int vmt_catalog_delete_ref(vmt_catalog *c, const char *ref)
{
    if (!c || !ref)
        return vmt_error_set(VMT_EINVAL, "vmt_catalog_delete_ref: NULL argument");
    int rc = check_ref(ref);
    return rc ? rc : changed(c, c->ops->delete_ref(c, ref));
}

int vmt_catalog_list_refs(vmt_catalog *c, vmt_catalog_ref **out, size_t *n)
{
    if (!c || !out || !n)
        return vmt_error_set(VMT_EINVAL, "vmt_catalog_list_refs: NULL argument");
    return c->ops->list_refs(c, out, n);
}

/* ---- VMs ---------------------------------------------------------------- */

static int vm_check(const vmt_catalog_vm *vm)
{
    if (!memchr(vm->name, '\0', sizeof(vm->name)) || !snap_name_valid(vm->name))
        return vmt_error_set(VMT_EINVAL,
                             "\"%.64s\" is not a valid VM name ([A-Za-z0-9._-], "
                             "1..%u bytes)",
                             memchr(vm->name, '\0', sizeof(vm->name)) ? vm->name : "",
                             VMT_SNAP_NAME_MAX - 1);
    if (!memchr(vm->socket, '\0', sizeof(vm->socket)) ||
        !memchr(vm->image, '\0', sizeof(vm->image)) || !memchr(vm->host, '\0', sizeof(vm->host)))
        return vmt_error_set(VMT_EINVAL, "VM %s: socket, image or host is not NUL-terminated",
                             vm->name);
    if (vm->pid < 0)
        return vmt_error_set(VMT_EINVAL, "VM %s: negative pid", vm->name);
    return 0;
}

int vmt_catalog_register_vm(vmt_catalog *c, const vmt_catalog_vm *vm)
{
    if (!c || !vm)
        return vmt_error_set(VMT_EINVAL, "vmt_catalog_register_vm: NULL argument");
    int rc = vm_check(vm);
    return rc ? rc : changed(c, c->ops->register_vm(c, vm));
}

int vmt_catalog_get_vm(vmt_catalog *c, const char *name, vmt_catalog_vm *out)
{
    if (!c || !name || !out)
        return vmt_error_set(VMT_EINVAL, "vmt_catalog_get_vm: NULL argument");
    if (!snap_name_valid(name))
        return cat_no_vm(name);
    return c->ops->get_vm(c, name, out);
}

int vmt_catalog_list_vms(vmt_catalog *c, vmt_catalog_vm **out, size_t *n)
{
    if (!c || !out || !n)
        return vmt_error_set(VMT_EINVAL, "vmt_catalog_list_vms: NULL argument");
    return c->ops->list_vms(c, out, n);
}

int vmt_catalog_unregister_vm(vmt_catalog *c, const char *name)
{
    if (!c || !name)
        return vmt_error_set(VMT_EINVAL, "vmt_catalog_unregister_vm: NULL argument");
    if (!snap_name_valid(name))
        return cat_no_vm(name);
    return changed(c, c->ops->unregister_vm(c, name));
}
