/*
 * libFuzzer target for the snapshot record decoder (proto/proto_snap.c).
 *
 * Oracle beyond "no crash, no leak, no UB": the decoder returns only its
 * documented codes, and whatever it accepts re-encodes, deterministically,
 * to bytes that decode to exactly the same record (the decoder writes every
 * byte of its output, so memcmp is exact).  Seeds: fuzz/corpus/proto_snaprecord/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmtree/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_reencode(const vmt_snaprec *r, vmt_snaprec *r2)
{
    uint8_t *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;

    if (vmt_snaprec_encode(r, &a, &alen) != 0)
        __builtin_trap(); /* an accepted record must be encodable */
    if (vmt_snaprec_decode(a, alen, r2) != 0 || memcmp(r, r2, sizeof(*r)) != 0)
        __builtin_trap();
    if (vmt_snaprec_encode(r2, &b, &blen) != 0 || blen != alen || memcmp(a, b, alen) != 0)
        __builtin_trap(); /* encoding is deterministic */
    free(a);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* ~10 KB each: allocated once per process. */
    static vmt_snaprec *r, *r2;

    if (!r && !(r = calloc(1, sizeof(*r))))
        return 0;
    if (!r2 && !(r2 = calloc(1, sizeof(*r2))))
        return 0;
    int rc = vmt_snaprec_decode(data, size, r);
    switch (rc) {
    case 0:
        check_reencode(r, r2);
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
