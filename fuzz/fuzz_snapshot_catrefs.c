/*
 * libFuzzer target for the entry codecs of the catalog on store refs
 * (snapshot/catalog_refs.c, catalog_refs_vm.c): the bytes of cat.s.HEX
 * (a snapshot's index entry) and cat.v.NAME (a VM registration), which a
 * host reads from a pool other hosts write.
 *
 * Input: one selector byte (even: snapshot entry, odd: VM registration),
 * then the entry.  Oracle beyond "no crash, no leak, no UB": the decoder
 * returns 0 or VMT_ECORRUPT only; what it accepts has NUL-terminated texts
 * within their fields, and encodes back to exactly the input bytes (the
 * format is canonical: one encoding per entry).  Seeds:
 * fuzz/corpus/snapshot_catrefs/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../snapshot/catalog_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void snap_case(const uint8_t *p, size_t len)
{
    static vmt_snap_record *r;
    static uint8_t out[CAT_REFS_SNAP_ENTRY_MAX];
    vmt_catalog_snap s;
    if (!r && !(r = calloc(1, sizeof(*r))))
        return;
    int rc = cat_refs_snap_decode("fuzz", "cat.s.00112233445566778899aabbccddeeff", p, len, &s);
    if (rc == VMT_ECORRUPT)
        return;
    if (rc != 0 || memchr(s.vm_name, 0, sizeof(s.vm_name)) == NULL ||
        memchr(s.message, 0, sizeof(s.message)) == NULL || strchr(s.message, '\n'))
        __builtin_trap();
    memset(r, 0, sizeof(*r));
    r->nparents = s.has_parent;
    r->parents[0] = s.parent;
    r->time_ns = s.time_ns;
    r->mem_size = le64(p + 26); /* kept in the entry, not decoded */
    r->nonzero_pages = le64(p + 34);
    memcpy(r->vm_name, s.vm_name, sizeof(s.vm_name));
    memcpy(r->message, s.message, sizeof(s.message));
    size_t n = cat_refs_snap_encode(r, out);
    if (n != len || memcmp(out, p, len) != 0)
        __builtin_trap();
}

static void vm_case(const uint8_t *p, size_t len)
{
    static vmt_catalog_vm vm;
    static uint8_t out[CAT_REFS_VM_ENTRY_MAX];
    int rc = cat_refs_vm_decode("fuzz", "cat.v.vm@1", p, len, &vm);
    if (rc == VMT_ECORRUPT)
        return;
    if (rc != 0 || strcmp(vm.name, "vm.1") != 0 || vm.pid < 0 ||
        memchr(vm.host, 0, sizeof(vm.host)) == NULL ||
        memchr(vm.socket, 0, sizeof(vm.socket)) == NULL ||
        memchr(vm.image, 0, sizeof(vm.image)) == NULL)
        __builtin_trap();
    size_t n = cat_refs_vm_encode(&vm, vm.host, out);
    if (n != len || memcmp(out, p, len) != 0)
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size - 1 > VMT_STORE_REF_MAX)
        return 0; /* a ref holds at most VMT_STORE_REF_MAX bytes */
    /* A copy of exactly the entry's length, so ASan sees any over-read. */
    uint8_t *p = malloc(size - 1 ? size - 1 : 1);
    if (!p)
        return 0;
    memcpy(p, data + 1, size - 1);
    if (data[0] & 1)
        vm_case(p, size - 1);
    else
        snap_case(p, size - 1);
    free(p);
    return 0;
}
