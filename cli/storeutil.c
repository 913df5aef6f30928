/* Opening the store and the catalog the way every command does: writers
 * take turns on the store's single writer lock (docs/cli.md). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* How long a writer waits for the lock: VMT_CLI_LOCK_WAIT_MS, or
 * $VMTREE_LOCK_WAIT seconds (0..3600). */
static uint64_t lock_wait_ms(void)
{
    const char *env = getenv("VMTREE_LOCK_WAIT");
    uint64_t s;
    if (env && vmt_parse_u64(env, 0, 3600, &s) == 0)
        return s * 1000;
    if (env)
        vmt_warn("VMTREE_LOCK_WAIT=%s is not 0..3600 seconds; waiting %u s", env,
                 VMT_CLI_LOCK_WAIT_MS / 1000);
    return VMT_CLI_LOCK_WAIT_MS;
}

int vmt_cli_store_open(const char *dir, bool writer, vmt_store **out)
{
    vmt_store_open_opts o;
    vmt_store_open_opts_init(&o);
    o.read_only = !writer;
    uint64_t start = vmt_now_ns(), wait_us = 2000, limit = writer ? lock_wait_ms() : 0;
    for (;;) {
        int rc = vmt_store_open(out, dir, &o);
        if (rc == 0)
            return 0;
        if (rc == VMT_ENOENT)
            return vmt_error_set(
                VMT_ENOENT,
                "no store at %s (vmtree store init --store %s creates one; so does "
                "vmtree run --name)",
                dir, dir);
        if (rc != VMT_EBUSY)
            return rc;
        uint64_t waited_ms = (vmt_now_ns() - start) / 1000000;
        if (waited_ms >= limit)
            return vmt_error_wrap(VMT_EBUSY, "still busy after %llu s",
                                  (unsigned long long)(limit / 1000));
        usleep((useconds_t)wait_us);
        wait_us = VMT_MIN(wait_us * 2, 100000u);
    }
}

int vmt_cli_catalog_open(const char *dir, vmt_catalog **out)
{
    char marker[PATH_MAX];
    /* docs/store.md: the STORE file, written last by init, marks a store.
     * Without this check, opening the catalog would create catalog.db in
     * whatever directory --store named. */
    snprintf(marker, sizeof(marker), "%s/STORE", dir);
    if (!vmt_cli_store_shared(dir) && access(marker, F_OK) != 0)
        return vmt_error_set(VMT_ENOENT,
                             "no store at %s (vmtree store init --store %s creates one; so does "
                             "vmtree run --name)",
                             dir, dir);
    /* A RADOS store's catalog opens the store (read-only) to reach its refs:
     * VMT_ENOENT when there is none. */
    int rc = vmt_catalog_open(out, dir);
    if (rc == VMT_ENOENT && vmt_cli_store_shared(dir))
        return vmt_error_set(VMT_ENOENT,
                             "no store at %s (vmtree store init --store %s creates one; so does "
                             "vmtree run --name)",
                             dir, dir);
    return rc ? vmt_error_wrap(rc, "opening the catalog of %s", dir) : 0;
}

int vmt_cli_catalog_of(vmt_store *s, vmt_catalog **out)
{
    int rc = vmt_catalog_open_store(out, s);
    return rc ? vmt_error_wrap(rc, "opening the catalog of %s", vmt_store_dir(s)) : 0;
}

int vmt_cli_resolve(vmt_catalog *c, const char *name, vmt_id *out)
{
    return vmt_catalog_resolve(c, name, out);
}

void vmt_cli_short_id(const vmt_id *id, char out[13])
{
    char hex[VMT_ID_HEX_LEN + 1];
    vmt_id_to_hex(id, hex);
    memcpy(out, hex, 12);
    out[12] = '\0';
}

int vmt_cli_vm_running(const char *store, vmt_catalog *cat, const char *name, long *pid, char *host,
                       size_t cap)
{
    vmt_catalog_vm vm;
    host[0] = '\0';
    int alive = vmt_cli_vm_alive(store, name, pid);
    if (alive != 0 || !vmt_catalog_shared(cat))
        return alive;
    if (vmt_catalog_get_vm(cat, name, &vm) != 0 || vmt_catalog_vm_local(cat, &vm)) {
        vmt_error_clear();
        return 0;
    }
    *pid = (long)vm.pid;
    snprintf(host, cap, "%s", vm.host);
    return 1;
}
