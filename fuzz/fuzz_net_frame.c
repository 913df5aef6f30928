/*
 * libFuzzer target for the migration protocol decoders of control traffic:
 * frames (header checks, length, checksum) and the control messages in
 * them, including HaveSet chunks into a bounded set.
 *
 * Input: a mode byte, then
 *   mode even: a whole frame as it arrives (vmt_frame_parse); a frame that
 *              passes is decoded as its control message;
 *   mode odd:  a type byte and a payload decoded as that message directly
 *              (the checksum would otherwise hide the decoders from the
 *              fuzzer).
 * Oracles beyond "no crash, no leak, no UB": only documented codes come
 * back; whatever decodes re-encodes, and decoding that again encodes to the
 * same bytes (decode is a projection); a parsed frame's payload lies inside
 * the input.  Seeds: fuzz/corpus/net_frame/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmtree/net.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_reencode(const vmt_wire_msg *m)
{
    uint8_t *b1 = NULL, *b2 = NULL;
    size_t l1 = 0, l2 = 0;
    vmt_wire_msg m2;

    if (vmt_wire_encode(m, &b1, &l1) != 0)
        __builtin_trap(); /* an accepted message must be encodable */
    if (vmt_wire_decode(m->type, b1, l1, &m2) != 0)
        __builtin_trap();
    if (vmt_wire_encode(&m2, &b2, &l2) != 0 || l1 != l2 || memcmp(b1, b2, l1) != 0)
        __builtin_trap();
    vmt_wire_msg_clear(&m2);
    free(b1);
    free(b2);
}

static void decode_message(unsigned type, const uint8_t *p, size_t len)
{
    vmt_wire_msg m;
    int rc = vmt_wire_decode(type, p, len, &m);
    if (rc == VMT_EPROTO || rc == VMT_ECORRUPT)
        return;
    if (rc != 0)
        __builtin_trap();
    check_reencode(&m);
    if (m.type == VMT_WIRE_HAVE_SET) {
        vmt_haveset *h = NULL;
        if (vmt_haveset_new(&h, 1u << 16) == 0) {
            rc = vmt_haveset_add_chunk(h, &m.u.have_set);
            if (rc != 0 && rc != VMT_ECORRUPT && rc != VMT_ERANGE)
                __builtin_trap();
            vmt_id id = {{0}};
            (void)vmt_haveset_contains(h, &id);
            vmt_haveset_free(h);
        }
    }
    vmt_wire_msg_clear(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 1) {
        if (size >= 2)
            decode_message(data[1], data + 2, size - 2);
        return 0;
    }
    vmt_frame_header h;
    const uint8_t *payload = NULL;
    size_t len = 0;
    int rc = vmt_frame_parse(data + 1, size - 1, &h, &payload, &len);
    switch (rc) {
    case 0:
        if (payload < data + 1 || payload + len > data + size)
            __builtin_trap();
        if (h.type != VMT_WIRE_PAGE_BATCH)
            decode_message(h.type, payload, len);
        break;
    case VMT_ECORRUPT:
    case VMT_EUNSUPPORTED:
    case VMT_EPROTO:
    case VMT_ERANGE:
        break;
    default:
        __builtin_trap();
    }
    return 0;
}
