/*
 * proto/proto_golden.c: the golden image messages round-trip, and every
 * cap and check of the decoder refuses what breaks it (bytes built by hand
 * from golden.proto's field numbers, an encoder independent of protobuf-c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "vmtree/proto.h"

/* ---- a tiny protobuf writer ------------------------------------------------ */

typedef struct pb {
    uint8_t b[1 << 17];
    size_t n;
} pb;

static void varint(pb *p, uint64_t v)
{
    do {
        uint8_t c = v & 0x7f;
        v >>= 7;
        p->b[p->n++] = (uint8_t)(c | (v ? 0x80 : 0));
    } while (v);
}

static void f_var(pb *p, unsigned no, uint64_t v)
{
    varint(p, (uint64_t)no << 3);
    varint(p, v);
}

static void f_len(pb *p, unsigned no, const void *d, size_t len)
{
    varint(p, (uint64_t)no << 3 | 2);
    varint(p, len);
    memcpy(p->b + p->n, d, len);
    p->n += len;
}

static int dec(unsigned type, const pb *p, vmt_golden_msg *m)
{
    return vmt_golden_decode(type, p->b, p->n, m);
}

static const uint8_t id1[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

static void test_round_trip(void)
{
    uint8_t ids[3][16], page[4096];
    memset(ids, 7, sizeof(ids));
    memset(page, 0x5a, sizeof(page));
    vmt_golden_object objs[2] = {
        {.type = 1, .codec = VMT_GOLDEN_CODEC_RAW, .raw_len = 4096, .data = page, .len = 4096},
        {.type = 3, .codec = VMT_GOLDEN_CODEC_LZ4, .raw_len = 9000, .data = page, .len = 10},
    };
    memcpy(objs[0].id, id1, 16);
    vmt_golden_msg in[5] = {{.type = VMT_GOLDEN_REQUEST}, {.type = VMT_GOLDEN_SNAPS},
                            {.type = VMT_GOLDEN_WANT}, {.type = VMT_GOLDEN_OBJECTS},
                            {.type = VMT_GOLDEN_DONE}};
    in[0].u.request.op = VMT_GOLDEN_OP_PUSH;
    strcpy(in[0].u.request.name, "golden-1");
    in[0].u.request.max_ancestors = 3;
    in[1].u.snaps.ids = ids;
    in[1].u.snaps.n = 2;
    in[2].u.want.ids = ids;
    in[2].u.want.n = 3;
    in[2].u.want.seq = 99;
    in[3].u.objects.objs = objs;
    in[3].u.objects.n = 2;
    in[3].u.objects.seq = 99;
    in[3].u.objects.last = true;
    in[4].u.done.code = VMT_ECORRUPT;
    strcpy(in[4].u.done.message, "bad \x01 object");
    for (int i = 0; i < 5; i++) {
        uint8_t *buf = NULL;
        size_t len = 0;
        vmt_golden_msg out;
        CU_ASSERT_EQUAL_FATAL(vmt_golden_encode(&in[i], &buf, &len), 0);
        CU_ASSERT(len <= vmt_golden_max_len(in[i].type));
        CU_ASSERT_EQUAL_FATAL(vmt_golden_decode(in[i].type, buf, len, &out), 0);
        CU_ASSERT_EQUAL(out.type, in[i].type);
        free(buf);
        switch (i) {
        case 0:
            CU_ASSERT_EQUAL(out.u.request.op, VMT_GOLDEN_OP_PUSH);
            CU_ASSERT_STRING_EQUAL(out.u.request.name, "golden-1");
            CU_ASSERT_EQUAL(out.u.request.max_ancestors, 3);
            break;
        case 1:
            CU_ASSERT_EQUAL(out.u.snaps.n, 2);
            CU_ASSERT_EQUAL(memcmp(out.u.snaps.ids, ids, 32), 0);
            break;
        case 2:
            CU_ASSERT_EQUAL(out.u.want.n, 3);
            CU_ASSERT_EQUAL(out.u.want.seq, 99);
            break;
        case 3:
            CU_ASSERT_EQUAL(out.u.objects.n, 2);
            CU_ASSERT(out.u.objects.last);
            CU_ASSERT_EQUAL(memcmp(out.u.objects.objs[0].id, id1, 16), 0);
            CU_ASSERT_EQUAL(memcmp(out.u.objects.objs[0].data, page, 4096), 0);
            CU_ASSERT_EQUAL(out.u.objects.objs[1].raw_len, 9000);
            CU_ASSERT_EQUAL(out.u.objects.objs[1].len, 10);
            break;
        default:
            CU_ASSERT_EQUAL(out.u.done.code, VMT_ECORRUPT);
            CU_ASSERT_STRING_EQUAL(out.u.done.message, "bad ? object"); /* printable */
            CU_ASSERT_FALSE(out.u.done.has_snapshot);
        }
        vmt_golden_msg_clear(&out);
    }
}

static void test_encoder_refuses(void)
{
    uint8_t *buf = NULL;
    size_t len;
    vmt_golden_msg m = {.type = VMT_GOLDEN_WANT};
    CU_ASSERT_EQUAL(vmt_golden_encode(&m, &buf, &len), VMT_EINVAL); /* no ids */
    m = (vmt_golden_msg){.type = VMT_GOLDEN_REQUEST};
    CU_ASSERT_EQUAL(vmt_golden_encode(&m, &buf, &len), VMT_EINVAL); /* op 0 */
    m = (vmt_golden_msg){.type = 12};
    CU_ASSERT_EQUAL(vmt_golden_encode(&m, &buf, &len), VMT_EINVAL); /* not golden */
    vmt_golden_object o = {.type = 1, .raw_len = 4096, .len = 100, .data = id1};
    m = (vmt_golden_msg){.type = VMT_GOLDEN_OBJECTS};
    m.u.objects.objs = &o;
    m.u.objects.n = 1;
    CU_ASSERT_EQUAL(vmt_golden_encode(&m, &buf, &len), VMT_EINVAL); /* raw len mismatch */
    CU_ASSERT_PTR_NULL(buf);
}

/* One object {id, type, codec, raw_len, data of dlen bytes} in an Objects. */
static void objects_with(pb *p, size_t idlen, uint64_t type, uint64_t codec, uint64_t raw_len,
                         size_t dlen)
{
    static uint8_t data[8192];
    pb o = {.n = 0};
    f_len(&o, 1, id1, idlen);
    f_var(&o, 2, type);
    f_var(&o, 3, codec);
    f_var(&o, 4, raw_len);
    f_len(&o, 5, data, dlen);
    p->n = 0;
    f_var(p, 1, 1);
    f_len(p, 2, o.b, o.n);
    f_var(p, 3, 1);
}

static void test_decoder_refuses(void)
{
    static pb p;
    vmt_golden_msg m;

    objects_with(&p, 16, 1, 0, 4096, 4096);
    CU_ASSERT_EQUAL(dec(VMT_GOLDEN_OBJECTS, &p, &m), 0); /* the good one */
    vmt_golden_msg_clear(&m);
    struct {
        size_t idlen;
        uint64_t type, codec, raw_len;
        size_t dlen;
    } bad[] = {
        {15, 1, 0, 4096, 4096},       /* short id */
        {16, 0, 0, 4096, 4096},       /* type 0 */
        {16, 5, 0, 4096, 4096},       /* type 5 */
        {16, 1, 2, 4096, 4096},       /* codec 2 */
        {16, 1, 0, 4095, 4095},       /* a page not 4096 */
        {16, 3, 0, 100, 99},          /* raw shorter than raw_len */
        {16, 3, 1, 100, 101},         /* LZ4 longer than raw_len */
        {16, 3, 1, 100, 0},           /* LZ4 empty */
        {16, 3, 0, 0, 0},             /* empty object */
        {16, 3, 1, (16u << 20) + 1, 10}, /* beyond the object cap */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        objects_with(&p, bad[i].idlen, bad[i].type, bad[i].codec, bad[i].raw_len, bad[i].dlen);
        CU_ASSERT_EQUAL(dec(VMT_GOLDEN_OBJECTS, &p, &m), VMT_ECORRUPT);
        CU_ASSERT_EQUAL(m.type, 0); /* nothing left to free */
        vmt_golden_msg_clear(&m);
    }

    /* Id lists: empty, a 17-byte id, too many. */
    p.n = 0;
    f_var(&p, 1, 5);
    CU_ASSERT_EQUAL(dec(VMT_GOLDEN_WANT, &p, &m), VMT_ECORRUPT);
    f_len(&p, 2, id1, 16);
    f_len(&p, 2, (const uint8_t[17]){0}, 17);
    CU_ASSERT_EQUAL(dec(VMT_GOLDEN_WANT, &p, &m), VMT_ECORRUPT);
    p.n = 0;
    for (unsigned i = 0; i < VMT_GOLDEN_MAX_SNAPS; i++)
        f_len(&p, 1, id1, 16);
    CU_ASSERT_EQUAL(dec(VMT_GOLDEN_SNAPS, &p, &m), 0); /* the most it takes */
    vmt_golden_msg_clear(&m);
    f_len(&p, 1, id1, 16);
    CU_ASSERT_EQUAL(dec(VMT_GOLDEN_SNAPS, &p, &m), VMT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "4097 ids"));

    /* Request: unknown op, a name of 256 bytes. */
    char name[300];
    memset(name, 'a', sizeof(name));
    p.n = 0;
    f_var(&p, 1, 3);
    CU_ASSERT_EQUAL(dec(VMT_GOLDEN_REQUEST, &p, &m), VMT_ECORRUPT);
    p.n = 0;
    f_var(&p, 1, 1);
    f_len(&p, 2, name, 256);
    CU_ASSERT_EQUAL(dec(VMT_GOLDEN_REQUEST, &p, &m), VMT_ECORRUPT);

    /* Done: a positive code, a snapshot of 8 bytes; an unknown negative
     * code reads as VMT_ERR. */
    p.n = 0;
    f_var(&p, 1, 5);
    CU_ASSERT_EQUAL(dec(VMT_GOLDEN_DONE, &p, &m), VMT_ECORRUPT);
    p.n = 0;
    f_len(&p, 3, id1, 8);
    CU_ASSERT_EQUAL(dec(VMT_GOLDEN_DONE, &p, &m), VMT_ECORRUPT);
    p.n = 0;
    f_var(&p, 1, (uint64_t)(int64_t)-99);
    CU_ASSERT_EQUAL_FATAL(dec(VMT_GOLDEN_DONE, &p, &m), 0);
    CU_ASSERT_EQUAL(m.u.done.code, VMT_ERR);
    vmt_golden_msg_clear(&m);

    /* Garbage, truncation, wrong type, oversized. */
    p.n = 0;
    f_len(&p, 2, id1, 16);
    p.n -= 3;
    CU_ASSERT_EQUAL(dec(VMT_GOLDEN_WANT, &p, &m), VMT_ECORRUPT);
    CU_ASSERT_EQUAL(vmt_golden_decode(13, p.b, p.n, &m), VMT_EPROTO);
    CU_ASSERT_EQUAL(vmt_golden_decode(45, p.b, p.n, &m), VMT_EPROTO);
    CU_ASSERT_EQUAL(vmt_golden_decode(VMT_GOLDEN_REQUEST, p.b, 4096, &m), VMT_ECORRUPT);
    CU_ASSERT_EQUAL(vmt_golden_max_len(VMT_GOLDEN_OBJECTS), VMT_GOLDEN_OBJECTS_MAX_LEN);
    CU_ASSERT_EQUAL(vmt_golden_max_len(45), 0);
    CU_ASSERT_STRING_EQUAL(vmt_wire_type_name(VMT_GOLDEN_WANT), "GOLDEN_WANT");
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"every message round-trips", test_round_trip},
        {"the encoder refuses what is out of range", test_encoder_refuses},
        {"the decoder refuses every broken rule", test_decoder_refuses},
        {NULL, NULL},
    };
    return vmt_test_run("proto_golden", cases, NULL, NULL);
}
