/*
 * The SQLite catalog's registered VMs.  A VM's HEAD lives in the refs table
 * ("vm/NAME/HEAD"), the one source of truth; the vms table holds the
 * process that runs it (pid, control socket) and its config.  A name is
 * held while its registered process is alive (kill(pid, 0)); a
 * registration left by a dead process is replaced.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog_internal.h"

#define VM_COLUMNS                                                                                 \
    "SELECT v.name, v.pid, v.socket, v.image, v.mem_size, v.vcpus, r.id FROM vms v "               \
    "LEFT JOIN refs r ON r.name = 'vm/' || v.name || '/HEAD'"

/* VMT_EEXIST when `name` is registered to another live process. */
static int check_holder(vmt_catalog *c, const vmt_catalog_vm *vm)
{
    sqlite3_stmt *st;
    int rc = cat_prepare(c, "SELECT pid FROM vms WHERE name = ?1", &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, vm->name, -1, SQLITE_TRANSIENT);
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        int64_t pid = sqlite3_column_int64(st, 0);
        if (pid != vm->pid && cat_pid_alive(pid))
            rc = vmt_error_set(VMT_EEXIST, "VM %s is running (pid %lld)", vm->name, (long long)pid);
    } else if (src != SQLITE_DONE) {
        rc = cat_error(c, src, "looking up a VM");
    }
    sqlite3_finalize(st);
    return rc;
}

static int upsert_vm(vmt_catalog *c, const vmt_catalog_vm *vm)
{
    sqlite3_stmt *st;
    int rc = cat_prepare(c, "INSERT OR REPLACE INTO vms VALUES (?1, ?2, ?3, ?4, ?5, ?6)", &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, vm->name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, vm->pid);
    sqlite3_bind_text(st, 3, vm->socket, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, vm->image, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 5, (int64_t)vm->mem_size);
    sqlite3_bind_int64(st, 6, vm->vcpus);
    int src = sqlite3_step(st);
    sqlite3_finalize(st);
    return src == SQLITE_DONE ? 0 : cat_error(c, src, "registering a VM");
}

static int set_head(vmt_catalog *c, const vmt_catalog_vm *vm)
{
    char ref[CATALOG_REF_MAX];
    cat_head_ref(ref, vm->name);
    return cat_sql_upsert_ref(c, ref, &vm->head);
}

int cat_sql_register_vm(vmt_catalog *c, const vmt_catalog_vm *vm)
{
    int rc;
    if ((rc = cat_begin(c)) != 0)
        return rc;
    rc = check_holder(c, vm);
    if (rc == 0)
        rc = upsert_vm(c, vm);
    if (rc == 0 && vm->has_head)
        rc = set_head(c, vm);
    return cat_end(c, rc);
}

static int read_vm_row(sqlite3_stmt *st, vmt_catalog_vm *vm)
{
    memset(vm, 0, sizeof(*vm));
    cat_column_text(st, 0, vm->name, sizeof(vm->name));
    vm->pid = sqlite3_column_int64(st, 1);
    cat_column_text(st, 2, vm->socket, sizeof(vm->socket));
    cat_column_text(st, 3, vm->image, sizeof(vm->image));
    vm->mem_size = (uint64_t)sqlite3_column_int64(st, 4);
    int64_t vcpus = sqlite3_column_int64(st, 5);
    if (vcpus < 0 || vcpus > UINT32_MAX)
        return vmt_error_set(VMT_ECORRUPT, "catalog: VM %s has %lld vCPUs", vm->name,
                             (long long)vcpus);
    vm->vcpus = (uint32_t)vcpus;
    if (sqlite3_column_type(st, 6) == SQLITE_NULL)
        return 0;
    vm->has_head = true;
    return cat_column_id(st, 6, &vm->head);
}

static int vm_row(sqlite3_stmt *st, void *e)
{
    return read_vm_row(st, e);
}

int cat_sql_get_vm(vmt_catalog *c, const char *name, vmt_catalog_vm *out)
{
    sqlite3_stmt *st;
    int rc = cat_prepare(c, VM_COLUMNS " WHERE v.name = ?1", &st);
    if (rc)
        return rc;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW)
        rc = read_vm_row(st, out);
    else if (src == SQLITE_DONE)
        rc = cat_no_vm(name);
    else
        rc = cat_error(c, src, "reading a VM");
    sqlite3_finalize(st);
    return rc;
}

int cat_sql_list_vms(vmt_catalog *c, vmt_catalog_vm **out, size_t *n)
{
    void *v = NULL;
    int rc = cat_collect(c, VM_COLUMNS " ORDER BY v.name", sizeof(vmt_catalog_vm), vm_row,
                         "listing VMs", &v, n);
    if (rc == 0)
        *out = v;
    return rc;
}

int cat_sql_unregister_vm(vmt_catalog *c, const char *name)
{
    int rc = cat_sql_delete_named(c, "DELETE FROM vms WHERE name = ?1", name, "unregistering a VM");
    return rc == VMT_ENOENT ? cat_no_vm(name) : rc;
}
