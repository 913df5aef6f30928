/*
 * Migration control messages (proto/proto_wire_msg.c, proto_wire_dec.c):
 * every type round-trips exactly; encoder caps; hostile payloads built byte
 * by byte (an independent protobuf writer) refused by field name: wrong
 * fixed lengths, texts and arrays beyond their caps, bad versions, values
 * out of range; unknown fields and unknown feature names ignored (forward
 * compatibility); non-control types refused.
 */
#include <stdlib.h>
#include <string.h>

#include "net_fixture.h"
#include "net_internal.h"

/* ---- an independent protobuf writer -------------------------------------- */

typedef struct pb {
    uint8_t b[1 << 20];
    size_t n;
} pb;

static void pb_varint(pb *p, unsigned field, uint64_t v)
{
    p->n += vmt_varint_put(p->b + p->n, (uint64_t)field << 3);
    p->n += vmt_varint_put(p->b + p->n, v);
}

static void pb_bytes(pb *p, unsigned field, const void *data, size_t len)
{
    p->n += vmt_varint_put(p->b + p->n, ((uint64_t)field << 3) | 2);
    p->n += vmt_varint_put(p->b + p->n, len);
    memmove(p->b + p->n, data, len);
    p->n += len;
}

static pb *pb_new(void)
{
    pb *p = calloc(1, sizeof(*p));
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    return p;
}

/* ---- round trips ---------------------------------------------------------- */

static void round_trip(const vmt_wire_msg *m, vmt_wire_msg *out)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(vmt_wire_encode(m, &buf, &len), 0);
    CU_ASSERT(len <= vmt_wire_max_len(m->type));
    CU_ASSERT_EQUAL_FATAL(vmt_wire_decode(m->type, buf, len, out), 0);
    CU_ASSERT_EQUAL(out->type, m->type);
    free(buf);
}

static void test_handshake_messages_round_trip(void)
{
    vmt_wire_msg m, o;
    memset(&m, 0, sizeof(m));
    m.type = VMT_WIRE_HELLO;
    m.u.hello = (vmt_wire_hello){.min_version = 1, .max_version = 7, .features = 0x15,
                                 .stream_index = 2, .nstreams = 4};
    net_fill(m.u.hello.session_id, 16, 1);
    net_fill(m.u.hello.nonce, 32, 2);
    strcpy(m.u.hello.software, "vmtree test");
    round_trip(&m, &o);
    CU_ASSERT(memcmp(&o.u.hello, &m.u.hello, sizeof(m.u.hello)) == 0);

    memset(&m, 0, sizeof(m));
    m.type = VMT_WIRE_HELLO_ACK;
    m.u.hello_ack = (vmt_wire_hello_ack){3, VMT_WIRE_FEAT_ALL, VMT_WIRE_AUTH_PSK};
    round_trip(&m, &o);
    CU_ASSERT(memcmp(&o.u.hello_ack, &m.u.hello_ack, sizeof(m.u.hello_ack)) == 0);

    memset(&m, 0, sizeof(m));
    m.type = VMT_WIRE_AUTH_CHALLENGE;
    net_fill(m.u.auth_challenge.nonce, 32, 3);
    round_trip(&m, &o);
    CU_ASSERT(memcmp(o.u.auth_challenge.nonce, m.u.auth_challenge.nonce, 32) == 0);

    m.type = VMT_WIRE_AUTH_RESPONSE;
    net_fill(m.u.auth_response.mac, 32, 4);
    round_trip(&m, &o);
    CU_ASSERT(memcmp(o.u.auth_response.mac, m.u.auth_response.mac, 32) == 0);
}

static void test_migration_messages_round_trip(void)
{
    vmt_wire_msg m, o;
    memset(&m, 0, sizeof(m));
    m.type = VMT_WIRE_VM_CONFIG;
    m.u.vm_config.mem_size = 256u << 20;
    m.u.vm_config.npages = 65536;
    m.u.vm_config.vcpus = 2;
    m.u.vm_config.irqchip = true;
    strcpy(m.u.vm_config.image, "/images/golden.elf");
    strcpy(m.u.vm_config.vm_name, "web-1");
    round_trip(&m, &o);
    CU_ASSERT(memcmp(&o.u.vm_config, &m.u.vm_config, sizeof(m.u.vm_config)) == 0);

    memset(&m, 0, sizeof(m));
    m.type = VMT_WIRE_ROUND_END;
    m.u.round_end = (vmt_wire_round_end){5, 1000, 4096000, 4, 123456789, 77};
    round_trip(&m, &o);
    CU_ASSERT(memcmp(&o.u.round_end, &m.u.round_end, sizeof(m.u.round_end)) == 0);

    m.type = VMT_WIRE_ROUND_START;
    m.u.round_start.round = 9;
    m.u.round_start.pages = 1234;
    round_trip(&m, &o);
    CU_ASSERT(o.u.round_start.round == 9 && o.u.round_start.pages == 1234);

    m.type = VMT_WIRE_COMMIT;
    m.u.commit.pages = 5;
    m.u.commit.bytes = 6;
    round_trip(&m, &o);
    CU_ASSERT(o.u.commit.pages == 5 && o.u.commit.bytes == 6);

    memset(&m, 0, sizeof(m));
    m.type = VMT_WIRE_ACK;
    m.u.ack.resumed = true;
    strcpy(m.u.ack.message, "running");
    round_trip(&m, &o);
    CU_ASSERT(o.u.ack.resumed && strcmp(o.u.ack.message, "running") == 0);

    m.type = VMT_WIRE_ERROR;
    m.u.error.code = VMT_EAUTH;
    strcpy(m.u.error.message, "wrong key\n\x01");
    round_trip(&m, &o);
    CU_ASSERT_EQUAL(o.u.error.code, VMT_EAUTH);
    CU_ASSERT_STRING_EQUAL(o.u.error.message, "wrong key??"); /* printable only */
}

static void test_array_messages_round_trip(void)
{
    vmt_wire_msg m, o;
    static uint8_t blob[VMT_STATE_MAX_BYTES];
    uint64_t pfns[VMT_WIRE_WANT_MAX];

    memset(&m, 0, sizeof(m));
    m.type = VMT_WIRE_STATE_BLOB;
    net_fill(blob, sizeof(blob), 5);
    m.u.state_blob.data = blob;
    m.u.state_blob.len = sizeof(blob); /* the largest state blob fits */
    round_trip(&m, &o);
    CU_ASSERT_EQUAL(o.u.state_blob.len, sizeof(blob));
    CU_ASSERT(memcmp(o.u.state_blob.data, blob, sizeof(blob)) == 0);
    vmt_wire_msg_clear(&o);
    CU_ASSERT_PTR_NULL(o.u.state_blob.data);

    m.type = VMT_WIRE_WANT;
    for (size_t i = 0; i < VMT_WIRE_WANT_MAX; i++)
        pfns[i] = i * 977;
    m.u.want.round = 2;
    m.u.want.pfns = pfns;
    m.u.want.n = VMT_WIRE_WANT_MAX;
    round_trip(&m, &o);
    CU_ASSERT_EQUAL(o.u.want.n, VMT_WIRE_WANT_MAX);
    CU_ASSERT(memcmp(o.u.want.pfns, pfns, sizeof(pfns)) == 0);
    vmt_wire_msg_clear(&o);

    m.type = VMT_WIRE_HAVE_SET;
    m.u.have_set = (vmt_wire_have_set){.count = 3, .total = 10, .first = 99, .prefix_bits = 40,
                                       .rice_bits = 30, .last = true, .data = blob, .len = 1000};
    round_trip(&m, &o);
    CU_ASSERT(o.u.have_set.count == 3 && o.u.have_set.total == 10 && o.u.have_set.first == 99 &&
              o.u.have_set.prefix_bits == 40 && o.u.have_set.rice_bits == 30 &&
              o.u.have_set.last && o.u.have_set.len == 1000);
    CU_ASSERT(memcmp(o.u.have_set.data, blob, 1000) == 0);
    vmt_wire_msg_clear(&o);
    vmt_wire_msg_clear(NULL);
}

/* ---- encoder caps ------------------------------------------------------------ */

static void test_encoder_refuses_beyond_caps(void)
{
    vmt_wire_msg m;
    uint8_t *buf = NULL;
    size_t len;
    memset(&m, 0, sizeof(m));
    m.type = VMT_WIRE_ACK;
    memset(m.u.ack.message, 'x', sizeof(m.u.ack.message)); /* not terminated */
    CU_ASSERT_EQUAL(vmt_wire_encode(&m, &buf, &len), VMT_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "ack.message"));
    memset(&m, 0, sizeof(m));
    m.type = VMT_WIRE_STATE_BLOB;
    m.u.state_blob.data = (uint8_t *)"x";
    m.u.state_blob.len = VMT_STATE_MAX_BYTES + 1;
    CU_ASSERT_EQUAL(vmt_wire_encode(&m, &buf, &len), VMT_EINVAL);
    m.type = VMT_WIRE_WANT;
    m.u.want.n = VMT_WIRE_WANT_MAX + 1;
    m.u.want.pfns = (uint64_t *)(uintptr_t)"12345678";
    CU_ASSERT_EQUAL(vmt_wire_encode(&m, &buf, &len), VMT_EINVAL);
    m.type = VMT_WIRE_PAGE_BATCH;
    CU_ASSERT_EQUAL(vmt_wire_encode(&m, &buf, &len), VMT_EINVAL);
    m.type = (vmt_wire_type)0;
    CU_ASSERT_EQUAL(vmt_wire_encode(&m, &buf, &len), VMT_EINVAL);
    CU_ASSERT_PTR_NULL(buf);
}

/* ---- hostile payloads ----------------------------------------------------------- */

static void refused(unsigned type, const pb *p, int want, const char *text)
{
    vmt_wire_msg o;
    CU_ASSERT_EQUAL(vmt_wire_decode(type, p->b, p->n, &o), want);
    if (text)
        CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), text));
}

/* A valid Hello body without the fields given as skip. */
static void hello_body(pb *p, uint32_t minv, uint32_t maxv, size_t sid_len, size_t nonce_len)
{
    uint8_t bytes[64] = {0};
    p->n = 0;
    pb_varint(p, 1, minv);
    pb_varint(p, 2, maxv);
    pb_bytes(p, 4, bytes, sid_len);
    pb_varint(p, 5, 0);
    pb_varint(p, 6, 1);
    pb_bytes(p, 7, bytes, nonce_len);
}

static void test_hostile_hello(void)
{
    pb *p = pb_new();
    vmt_wire_msg o;
    hello_body(p, 1, 1, 16, 32);
    CU_ASSERT_EQUAL(vmt_wire_decode(VMT_WIRE_HELLO, p->b, p->n, &o), 0);
    hello_body(p, 1, 1, 15, 32);
    refused(VMT_WIRE_HELLO, p, VMT_ECORRUPT, "session_id has 15 bytes");
    hello_body(p, 1, 1, 16, 33);
    refused(VMT_WIRE_HELLO, p, VMT_ECORRUPT, "nonce has 33 bytes");
    hello_body(p, 0, 1, 16, 32);
    refused(VMT_WIRE_HELLO, p, VMT_ECORRUPT, "version range");
    hello_body(p, 3, 2, 16, 32);
    refused(VMT_WIRE_HELLO, p, VMT_ECORRUPT, "version range");
    hello_body(p, 1, 70000, 16, 32);
    refused(VMT_WIRE_HELLO, p, VMT_ECORRUPT, "version range");
    hello_body(p, 1, 1, 16, 32);
    pb_varint(p, 5, 1); /* stream 1 of 1 */
    refused(VMT_WIRE_HELLO, p, VMT_ECORRUPT, "stream 1 of 1");
    hello_body(p, 1, 1, 16, 32);
    for (int i = 0; i < 33; i++)
        pb_bytes(p, 3, "lz4", 3);
    refused(VMT_WIRE_HELLO, p, VMT_ECORRUPT, "33 features");
    hello_body(p, 1, 1, 16, 32);
    char name[40];
    memset(name, 'f', sizeof(name));
    pb_bytes(p, 3, name, sizeof(name));
    refused(VMT_WIRE_HELLO, p, VMT_ECORRUPT, "feature 0 has 40 bytes");
    hello_body(p, 1, 1, 16, 32);
    char sw[300];
    memset(sw, 's', sizeof(sw));
    pb_bytes(p, 8, sw, sizeof(sw));
    refused(VMT_WIRE_HELLO, p, VMT_ECORRUPT, "software has 300 bytes");
    /* beyond the type's cap as a whole */
    p->n = 0;
    pb_bytes(p, 99, p->b + 100, 5000);
    refused(VMT_WIRE_HELLO, p, VMT_ECORRUPT, "exceeds its cap");
    /* not protobuf */
    memset(p->b, 0xff, 10);
    p->n = 10;
    refused(VMT_WIRE_HELLO, p, VMT_ECORRUPT, "not valid protobuf");
    free(p);
}

static void test_unknown_fields_and_features_ignored(void)
{
    pb *p = pb_new();
    vmt_wire_msg o;
    hello_body(p, 1, 2, 16, 32);
    pb_bytes(p, 3, "lz4", 3);
    pb_bytes(p, 3, "quantum-teleport", 16);
    pb_varint(p, 60, 12345);         /* a field from a future version */
    pb_bytes(p, 61, "future", 6);
    CU_ASSERT_EQUAL_FATAL(vmt_wire_decode(VMT_WIRE_HELLO, p->b, p->n, &o), 0);
    CU_ASSERT_EQUAL(o.u.hello.features, VMT_WIRE_FEAT_LZ4);
    CU_ASSERT_EQUAL(o.u.hello.max_version, 2);
    free(p);
}

static void test_hostile_other_messages(void)
{
    pb *p = pb_new();
    p->n = 0;
    pb_varint(p, 1, 4096 * 10);
    pb_varint(p, 2, 1);
    pb_varint(p, 6, 11); /* npages does not match */
    refused(VMT_WIRE_VM_CONFIG, p, VMT_ECORRUPT, "npages");
    p->n = 0;
    pb_varint(p, 1, 4097);
    pb_varint(p, 2, 1);
    refused(VMT_WIRE_VM_CONFIG, p, VMT_ECORRUPT, "mem_size");
    p->n = 0;
    pb_varint(p, 1, 4096);
    pb_varint(p, 2, 100000);
    pb_varint(p, 6, 1);
    refused(VMT_WIRE_VM_CONFIG, p, VMT_ECORRUPT, "vcpus");
    p->n = 0;
    pb_varint(p, 1, 0);
    refused(VMT_WIRE_ERROR, p, VMT_ECORRUPT, "not an error");
    p->n = 0;
    pb_varint(p, 1, (uint64_t)(int64_t)-999); /* unknown (future) code */
    vmt_wire_msg o;
    CU_ASSERT_EQUAL(vmt_wire_decode(VMT_WIRE_ERROR, p->b, p->n, &o), 0);
    CU_ASSERT_EQUAL(o.u.error.code, VMT_ERR);
    p->n = 0;
    pb_varint(p, 2, 0); /* prefix_bits 0 */
    refused(VMT_WIRE_HAVE_SET, p, VMT_ECORRUPT, "prefix_bits");
    p->n = 0;
    pb_varint(p, 2, 40);
    pb_varint(p, 3, 40); /* rice_bits = prefix_bits */
    refused(VMT_WIRE_HAVE_SET, p, VMT_ECORRUPT, "rice_bits");
    p->n = 0;
    pb_varint(p, 1, 5);
    pb_varint(p, 2, 40);
    pb_varint(p, 7, 4); /* count > total */
    refused(VMT_WIRE_HAVE_SET, p, VMT_ECORRUPT, "count exceeds total");
    p->n = 0; /* an AuthResponse without its MAC */
    refused(VMT_WIRE_AUTH_RESPONSE, p, VMT_ECORRUPT, "mac has 0 bytes");
    pb_varint(p, 1, 1); /* the MAC field with the wrong wire type */
    refused(VMT_WIRE_AUTH_RESPONSE, p, VMT_ECORRUPT, "not valid protobuf");
    /* a Want of more pfns than its cap (packed, 1 byte each) */
    p->n = 0;
    uint8_t *ones = malloc(VMT_WIRE_WANT_MAX + 1);
    memset(ones, 1, VMT_WIRE_WANT_MAX + 1);
    pb_bytes(p, 2, ones, VMT_WIRE_WANT_MAX + 1);
    refused(VMT_WIRE_WANT, p, VMT_ECORRUPT, NULL);
    free(ones);
    p->n = 0;
    refused(VMT_WIRE_PAGE_BATCH, p, VMT_EPROTO, "not a control message");
    refused(99, p, VMT_EPROTO, "not a control message");
    free(p);
}

static void test_names_and_caps(void)
{
    CU_ASSERT_STRING_EQUAL(vmt_wire_type_name(VMT_WIRE_HELLO), "HELLO");
    CU_ASSERT_STRING_EQUAL(vmt_wire_type_name(VMT_WIRE_PAGE_BATCH), "PAGE_BATCH");
    CU_ASSERT_STRING_EQUAL(vmt_wire_type_name(77), "UNKNOWN");
    CU_ASSERT_EQUAL(vmt_wire_max_len(77), 0);
    CU_ASSERT_EQUAL(vmt_wire_max_len(VMT_WIRE_PAGE_BATCH), 0);
    for (unsigned t = 1; t <= VMT_WIRE_WANT; t++) {
        CU_ASSERT(vmt_wire_max_len(t) > 0);
        CU_ASSERT(vmt_wire_max_len(t) <= VMT_FRAME_MAX_PAYLOAD);
    }
}

static const vmt_test_case cases[] = {
    {"handshake messages round-trip", test_handshake_messages_round_trip},
    {"migration messages round-trip", test_migration_messages_round_trip},
    {"array messages round-trip at their caps", test_array_messages_round_trip},
    {"encoder refuses beyond caps", test_encoder_refuses_beyond_caps},
    {"hostile Hello refused by field", test_hostile_hello},
    {"unknown fields and features ignored", test_unknown_fields_and_features_ignored},
    {"hostile messages of other types refused", test_hostile_other_messages},
    {"type names and caps", test_names_and_caps},
    {NULL, NULL},
};

int main(void)
{
    return vmt_test_run("wire messages", cases, NULL, NULL);
}
