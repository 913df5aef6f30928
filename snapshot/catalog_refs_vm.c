/*
 * VM registrations of the refs catalog (catalog_refs.c): one ref
 * cat.v.N per VM name, holding the host that runs it, its pid there, its
 * control socket (a path on that host), image and config.  The name is
 * claimed by the compare-and-swap that writes the registration, so of two
 * hosts registering one name at once exactly one wins; the HEAD ref is set
 * after that (a crash in between leaves a registration of a dead process,
 * which the next registration replaces, and the HEAD as it was).
 *
 * Liveness: this host can test only its own processes (kill(pid, 0)).  A
 * registration by another host counts as live: that host unregisters it
 * when its VM stops.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog_internal.h"

#define VM_ENTRY_VERSION 1u
#define VM_FIXED (1 + 8 + 8 + 4)
_Static_assert(VM_FIXED == 21 && CAT_REFS_VM_ENTRY_MAX <= VMT_STORE_REF_MAX,
               "a VM registration fits one ref");

static size_t put_str(uint8_t *p, const char *s, size_t lenbytes)
{
    size_t n = strlen(s);
    p[0] = (uint8_t)n;
    if (lenbytes == 2)
        p[1] = (uint8_t)(n >> 8);
    memcpy(p + lenbytes, s, n);
    return lenbytes + n;
}

size_t cat_refs_vm_encode(const vmt_catalog_vm *vm, const char *host, uint8_t *p)
{
    uint64_t fields[2] = {(uint64_t)vm->pid, vm->mem_size};
    p[0] = VM_ENTRY_VERSION;
    for (int f = 0; f < 2; f++)
        for (int i = 0; i < 8; i++)
            p[1 + 8 * f + i] = (uint8_t)(fields[f] >> (8 * i));
    for (int i = 0; i < 4; i++)
        p[17 + i] = (uint8_t)(vm->vcpus >> (8 * i));
    size_t o = VM_FIXED;
    o += put_str(p + o, host, 1);
    o += put_str(p + o, vm->socket, 2);
    o += put_str(p + o, vm->image, 2);
    return o;
}

/* Reads a string of lenbytes-byte length at *o into dst[cap]; false when
 * it runs past len or does not fit. */
static bool get_str(const uint8_t *p, size_t len, size_t *o, size_t lenbytes, char *dst, size_t cap)
{
    if (*o + lenbytes > len)
        return false;
    size_t n = p[*o] | (lenbytes == 2 ? (size_t)p[*o + 1] << 8 : 0);
    *o += lenbytes;
    if (n >= cap || *o + n > len || memchr(p + *o, 0, n))
        return false;
    memcpy(dst, p + *o, n);
    dst[n] = '\0';
    *o += n;
    return true;
}

int cat_refs_vm_decode(const char *where, const char *key, const uint8_t *p, size_t len,
                       vmt_catalog_vm *vm)
{
    uint64_t fields[2] = {0, 0};
    uint32_t vcpus = 0;
    size_t o = VM_FIXED;
    memset(vm, 0, sizeof(*vm));
    bool ok = len >= VM_FIXED && p[0] == VM_ENTRY_VERSION &&
              cat_key_name(key, CAT_VM_PREFIX, vm->name, sizeof(vm->name));
    for (int f = 0; ok && f < 2; f++)
        for (int i = 0; i < 8; i++)
            fields[f] |= (uint64_t)p[1 + 8 * f + i] << (8 * i);
    for (int i = 0; ok && i < 4; i++)
        vcpus |= (uint32_t)p[17 + i] << (8 * i);
    ok = ok && get_str(p, len, &o, 1, vm->host, sizeof(vm->host)) &&
         get_str(p, len, &o, 2, vm->socket, sizeof(vm->socket)) &&
         get_str(p, len, &o, 2, vm->image, sizeof(vm->image)) && o == len && fields[0] <= INT64_MAX;
    if (!ok)
        return vmt_error_set(VMT_ECORRUPT, "catalog %s: VM registration %s is damaged (%zu bytes)",
                             where, key, len);
    vm->pid = (int64_t)fields[0];
    vm->mem_size = fields[1];
    vm->vcpus = vcpus;
    return 0;
}

/* Reads the registration at key: *present false for none (or a tombstone). */
static int read_vm(vmt_catalog *c, const char *key, vmt_catalog_vm *vm, bool *present,
                   uint64_t *ver)
{
    uint8_t buf[VMT_STORE_REF_MAX];
    size_t len;
    int rc = cat_rget(c, key, buf, sizeof(buf), &len, ver);
    *present = rc == 0 && len > 0;
    return *present ? cat_refs_vm_decode(c->path, key, buf, len, vm) : rc;
}

/* VMT_EEXIST when `old` holds the name against a registration by
 * (host, pid). */
static int check_holder(const vmt_catalog_vm *old, const char *host, int64_t pid)
{
    if (strcmp(old->host, host) != 0)
        return vmt_error_set(VMT_EEXIST,
                             "VM %s is registered on host %s (pid %lld): it runs there, and only "
                             "that host can tell whether it still does",
                             old->name, old->host, (long long)old->pid);
    if (old->pid != pid && cat_pid_alive(old->pid))
        return vmt_error_set(VMT_EEXIST, "VM %s is running on host %s (pid %lld)", old->name, host,
                             (long long)old->pid);
    return 0;
}

int cat_refs_register_vm(vmt_catalog *c, const vmt_catalog_vm *vm)
{
    char key[CAT_KEY_MAX], ref[CATALOG_REF_MAX];
    uint8_t entry[VMT_STORE_REF_MAX];
    const char *host = vm->host[0] ? vm->host : c->host;
    size_t elen = cat_refs_vm_encode(vm, host, entry);
    cat_key(key, CAT_VM_PREFIX, vm->name);
    int rc = VMT_EBUSY;
    for (unsigned t = 0; rc == VMT_EBUSY && t < CAT_CAS_TRIES; t++) {
        vmt_catalog_vm old;
        bool present;
        uint64_t ver;
        rc = read_vm(c, key, &old, &present, &ver);
        if (rc == 0 && present)
            rc = check_holder(&old, host, vm->pid);
        if (rc == 0)
            rc = cat_rset(c, key, ver, entry, elen);
    }
    if (rc == VMT_EBUSY)
        return cat_conflict(c, key);
    if (rc || !vm->has_head)
        return rc;
    cat_head_ref(ref, vm->name);
    return c->ops->set_ref(c, ref, &vm->head, NULL);
}

/* The VM's HEAD (vm/N/HEAD) into vm->head / has_head. */
static int read_head(vmt_catalog *c, vmt_catalog_vm *vm)
{
    char ref[CATALOG_REF_MAX];
    cat_head_ref(ref, vm->name);
    int rc = c->ops->get_ref(c, ref, &vm->head);
    vm->has_head = rc == 0;
    if (rc == VMT_ENOENT) {
        vmt_error_clear();
        return 0;
    }
    return rc;
}

int cat_refs_get_vm(vmt_catalog *c, const char *name, vmt_catalog_vm *out)
{
    char key[CAT_KEY_MAX];
    bool present;
    uint64_t ver;
    cat_key(key, CAT_VM_PREFIX, name);
    int rc = read_vm(c, key, out, &present, &ver);
    if (rc == 0 && !present)
        rc = cat_no_vm(name);
    return rc ? rc : read_head(c, out);
}

static int cmp_vm(const void *a, const void *b)
{
    return strcmp(((const vmt_catalog_vm *)a)->name, ((const vmt_catalog_vm *)b)->name);
}

/* cat_read_fn: the registration at key and its HEAD. */
static int read_vm_key(vmt_catalog *c, const char *key, void *elem, bool *present)
{
    uint64_t ver;
    int rc = read_vm(c, key, elem, present, &ver);
    return rc == 0 && *present ? read_head(c, elem) : rc;
}

int cat_refs_list_vms(vmt_catalog *c, vmt_catalog_vm **out, size_t *n)
{
    void *v = NULL;
    int rc = cat_read_keys(c, CAT_VM_PREFIX, sizeof(vmt_catalog_vm), read_vm_key, &v, n);
    if (rc)
        return rc;
    qsort(v, *n, sizeof(vmt_catalog_vm), cmp_vm);
    *out = v;
    return 0;
}

int cat_refs_unregister_vm(vmt_catalog *c, const char *name)
{
    char key[CAT_KEY_MAX];
    cat_key(key, CAT_VM_PREFIX, name);
    for (unsigned t = 0; t < CAT_CAS_TRIES; t++) {
        vmt_catalog_vm old;
        bool present;
        uint64_t ver;
        int rc = read_vm(c, key, &old, &present, &ver);
        if (rc == 0 && !present)
            rc = cat_no_vm(name);
        if (rc == 0)
            rc = cat_rset(c, key, ver, NULL, 0);
        if (rc != VMT_EBUSY)
            return rc;
    }
    return cat_conflict(c, key);
}
