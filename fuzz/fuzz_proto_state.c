/*
 * libFuzzer target for the state blob decoder (proto/).
 *
 * Oracle beyond "no crash, no leak, no UB": the decoder only returns its
 * documented codes, and whatever it accepts re-encodes and decodes again to
 * exactly the same structs (the decoder writes every byte of its output, so
 * memcmp is exact).  Seeds: fuzz/corpus/proto_state/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmtree/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct fuzz_bufs {
    vmt_vm_state vm, vm2;
    vmt_vcpu_state vcpus[VMT_VM_MAX_VCPUS];
    vmt_vcpu_state vcpus2[VMT_VM_MAX_VCPUS];
} fuzz_bufs;

static void check_reencode(fuzz_bufs *b, unsigned n)
{
    uint8_t *blob = NULL;
    size_t len = 0;
    unsigned n2 = 0;

    if (vmt_state_encode(&b->vm, b->vcpus, n, &blob, &len) != 0)
        __builtin_trap(); /* an accepted state must be encodable */
    if (vmt_state_decode(blob, len, &b->vm2, b->vcpus2, VMT_VM_MAX_VCPUS, &n2) != 0 || n2 != n)
        __builtin_trap();
    if (memcmp(&b->vm, &b->vm2, sizeof(b->vm)) != 0 ||
        memcmp(b->vcpus, b->vcpus2, n * sizeof(b->vcpus[0])) != 0)
        __builtin_trap();
    free(blob);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Large (2.8 MB): allocated once per process, not per input. */
    static fuzz_bufs *b;
    unsigned n = 0;

    if (!b && !(b = calloc(1, sizeof(*b))))
        return 0;
    int rc = vmt_state_decode(data, size, &b->vm, b->vcpus, VMT_VM_MAX_VCPUS, &n);
    switch (rc) {
    case 0:
        check_reencode(b, n);
        break;
    case VMT_ECORRUPT:
    case VMT_EUNSUPPORTED:
    case VMT_EINVAL: /* only for size 0 with data NULL */
        break;
    default:
        __builtin_trap();
    }
    return 0;
}
