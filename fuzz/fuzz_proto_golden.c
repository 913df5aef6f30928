/*
 * libFuzzer target for the golden image negotiation messages
 * (proto/golden.proto: Request, Snaps, Want, Objects, Done; docs/golden.md).
 *
 * Input: a type byte (its value modulo 24 plus 40: the golden frame types
 * 40..63, the unassigned ones included) and the payload, decoded as that
 * message.  Oracles beyond "no crash, no leak, no UB": only documented codes
 * come back; every decoded id list and object honours its caps; whatever
 * decodes re-encodes, and decoding that again encodes to the same bytes
 * (decode is a projection).  Seeds: fuzz/corpus/proto_golden/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmtree/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_caps(const vmt_golden_msg *m)
{
    if (m->type == VMT_GOLDEN_WANT && (m->u.want.n == 0 || m->u.want.n > VMT_GOLDEN_WANT_MAX))
        __builtin_trap();
    if (m->type == VMT_GOLDEN_SNAPS && (m->u.snaps.n == 0 || m->u.snaps.n > VMT_GOLDEN_MAX_SNAPS))
        __builtin_trap();
    if (m->type != VMT_GOLDEN_OBJECTS)
        return;
    for (size_t i = 0; i < m->u.objects.n; i++) {
        const vmt_golden_object *o = &m->u.objects.objs[i];
        if (o->raw_len == 0 || o->raw_len > VMT_GOLDEN_OBJECT_MAX || o->len > o->raw_len ||
            (o->codec == VMT_GOLDEN_CODEC_RAW && o->len != o->raw_len))
            __builtin_trap();
        volatile uint8_t sink = 0;
        for (size_t k = 0; k < o->len; k += 512)
            sink ^= o->data[k]; /* the bytes are readable (ASan checks) */
        (void)sink;
    }
}

static void check_reencode(const vmt_golden_msg *m)
{
    uint8_t *b1 = NULL, *b2 = NULL;
    size_t l1 = 0, l2 = 0;
    vmt_golden_msg m2;

    if (vmt_golden_encode(m, &b1, &l1) != 0)
        __builtin_trap(); /* an accepted message must be encodable */
    if (vmt_golden_decode(m->type, b1, l1, &m2) != 0)
        __builtin_trap();
    if (vmt_golden_encode(&m2, &b2, &l2) != 0 || l1 != l2 || memcmp(b1, b2, l1) != 0)
        __builtin_trap();
    vmt_golden_msg_clear(&m2);
    free(b1);
    free(b2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vmt_golden_msg m;
    if (size < 1)
        return 0;
    unsigned type = VMT_GOLDEN_TYPE_FIRST + data[0] % 24u;
    int rc = vmt_golden_decode(type, data + 1, size - 1, &m);
    if (rc == 0) {
        check_caps(&m);
        check_reencode(&m);
    } else if (rc != VMT_ECORRUPT && rc != VMT_EPROTO && rc != VMT_ENOMEM) {
        __builtin_trap();
    }
    vmt_golden_msg_clear(&m);
    return 0;
}
