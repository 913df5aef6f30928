/*
 * Frames (net_frame.c): header round trips, every truncation and every
 * flipped byte of a frame refused, bad magic / version / type / flags and
 * oversized lengths refused from the header alone (before any payload byte
 * is read or memory allocated), refusals reaching the peer as ERROR frames,
 * the peer's ERROR frame turned into its code and message.
 */
#include <stdlib.h>
#include <string.h>

#include "net_fixture.h"
#include "net_internal.h"

static void raw_header(uint8_t h[20], uint32_t magic, uint16_t version, uint16_t type,
                       uint16_t flags, uint32_t len)
{
    vmt_put_be32(h, magic);
    vmt_put_be16(h + 4, version);
    vmt_put_be16(h + 6, type);
    vmt_put_be16(h + 8, flags);
    vmt_put_be16(h + 10, 0);
    vmt_put_be32(h + 12, len);
    vmt_put_be32(h + 16, 0);
}

/* A whole frame in memory: header + payload of `len` pattern bytes. */
static uint8_t *make_frame(unsigned type, size_t len, size_t *total)
{
    uint8_t *f = malloc(VMT_FRAME_HEADER_LEN + len);
    net_fill(f + VMT_FRAME_HEADER_LEN, len, type);
    vmt_frame_header_build(type, f + VMT_FRAME_HEADER_LEN, len, f);
    *total = VMT_FRAME_HEADER_LEN + len;
    return f;
}

static void test_header_round_trip(void)
{
    const unsigned types[] = {VMT_WIRE_HELLO, VMT_WIRE_STATE_BLOB, VMT_WIRE_ERROR,
                              VMT_WIRE_PAGE_BATCH};
    for (size_t i = 0; i < VMT_ARRAY_SIZE(types); i++) {
        size_t total;
        uint8_t *f = make_frame(types[i], 100, &total);
        CU_ASSERT(memcmp(f, "VMTW", 4) == 0);
        vmt_frame_header h;
        const uint8_t *p;
        size_t plen;
        CU_ASSERT_EQUAL(vmt_frame_parse(f, total, &h, &p, &plen), 0);
        CU_ASSERT_EQUAL(h.magic, VMT_FRAME_MAGIC);
        CU_ASSERT_EQUAL(h.version, VMT_FRAME_VERSION);
        CU_ASSERT_EQUAL(h.type, types[i]);
        CU_ASSERT_EQUAL(h.length, 100);
        CU_ASSERT_EQUAL(plen, 100);
        CU_ASSERT_PTR_EQUAL(p, f + VMT_FRAME_HEADER_LEN);
        free(f);
    }
}

static void test_every_truncation_is_refused(void)
{
    size_t total;
    uint8_t *f = make_frame(VMT_WIRE_PAGE_BATCH, 300, &total);
    for (size_t n = 0; n < total; n++) {
        vmt_frame_header h;
        const uint8_t *p;
        size_t plen;
        CU_ASSERT_EQUAL(vmt_frame_parse(f, n, &h, &p, &plen), VMT_ECORRUPT);
    }
    free(f);
}

static void test_every_flipped_byte_is_refused(void)
{
    size_t total;
    uint8_t *f = make_frame(VMT_WIRE_ROUND_END, 64, &total);
    for (size_t i = 0; i < total; i++) {
        for (unsigned bit = 0; bit < 8; bit++) {
            vmt_frame_header h;
            const uint8_t *p;
            size_t plen;
            f[i] ^= (uint8_t)(1u << bit);
            CU_ASSERT(vmt_frame_parse(f, total, &h, &p, &plen) != 0);
            f[i] ^= (uint8_t)(1u << bit);
        }
    }
    free(f);
}

static void test_header_checks_and_messages(void)
{
    uint8_t h[20];
    vmt_frame_header fh;

    memcpy(h, "GET / HTTP/1.1\r\nHost", 20);
    CU_ASSERT_EQUAL(vmt_frame_header_parse(h, &fh), VMT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "not a vmtree migration stream"));
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "GET "));
    raw_header(h, VMT_FRAME_MAGIC, 2, VMT_WIRE_HELLO, 0, 10);
    CU_ASSERT_EQUAL(vmt_frame_header_parse(h, &fh), VMT_EUNSUPPORTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "frame version 2"));
    raw_header(h, VMT_FRAME_MAGIC, 1, 99, 0, 10);
    CU_ASSERT_EQUAL(vmt_frame_header_parse(h, &fh), VMT_EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "unknown frame type 99"));
    raw_header(h, VMT_FRAME_MAGIC, 1, 0, 0, 0);
    CU_ASSERT_EQUAL(vmt_frame_header_parse(h, &fh), VMT_EPROTO);
    raw_header(h, VMT_FRAME_MAGIC, 1, VMT_WIRE_HELLO, 1, 10);
    CU_ASSERT_EQUAL(vmt_frame_header_parse(h, &fh), VMT_EPROTO);
    raw_header(h, VMT_FRAME_MAGIC, 1, VMT_WIRE_HELLO, 0, (uint32_t)vmt_wire_max_len(VMT_WIRE_HELLO) + 1);
    CU_ASSERT_EQUAL(vmt_frame_header_parse(h, &fh), VMT_ERANGE);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "exceeds its cap"));
    raw_header(h, VMT_FRAME_MAGIC, 1, VMT_WIRE_PAGE_BATCH, 0, UINT32_MAX);
    CU_ASSERT_EQUAL(vmt_frame_header_parse(h, &fh), VMT_ERANGE);
    raw_header(h, VMT_FRAME_MAGIC, 1, VMT_WIRE_PAGE_BATCH, 0, VMT_FRAME_MAX_PAYLOAD);
    CU_ASSERT_EQUAL(vmt_frame_header_parse(h, &fh), 0);
}

/* ---- over a transport ------------------------------------------------------ */

/* Sends raw bytes on a, receives a frame on b: the refusal code, and what
 * a then gets back (the peer's ERROR frame). */
static void refusal_over_pair(const void *raw, size_t len, int want, const char *text)
{
    vmt_transport *a, *b;
    vmt_frame f;
    CU_ASSERT_EQUAL_FATAL(vmt_transport_mem_pair(&a, &b, 0), 0);
    vmt_frame_init(&f);
    CU_ASSERT_EQUAL(vmt_transport_send(a, raw, len), 0);
    CU_ASSERT_EQUAL(vmt_frame_recv(b, &f, NET_TIMEOUT_MS), want);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), text));
    CU_ASSERT_EQUAL(f.cap, 0); /* nothing was allocated for the payload */
    /* The header alone was read: the stream is never read past it. */
    CU_ASSERT_EQUAL(vmt_transport_bytes_received(b), VMT_FRAME_HEADER_LEN);
    CU_ASSERT_EQUAL(vmt_transport_error(b), want);
    /* The peer learns why. */
    CU_ASSERT_EQUAL(vmt_frame_recv(a, &f, NET_TIMEOUT_MS), want);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "peer"));
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), text));
    vmt_frame_free(&f);
    vmt_transport_close(a);
    vmt_transport_close(b);
}

static void test_garbage_is_refused_with_an_error_frame(void)
{
    static const char garbage[] = "GET / HTTP/1.1\r\nHost: example\r\n\r\n";
    refusal_over_pair(garbage, sizeof(garbage) - 1, VMT_ECORRUPT, "not a vmtree migration");
}

static void test_oversized_length_refused_before_allocation(void)
{
    uint8_t raw[20 + 64];
    raw_header(raw, VMT_FRAME_MAGIC, 1, VMT_WIRE_PAGE_BATCH, 0, 1u << 30);
    memset(raw + 20, 0xab, 64);
    refusal_over_pair(raw, sizeof(raw), VMT_ERANGE, "exceeds its cap");
}

static void test_wrong_version_refused(void)
{
    uint8_t raw[20];
    raw_header(raw, VMT_FRAME_MAGIC, 7, VMT_WIRE_HELLO, 0, 0);
    refusal_over_pair(raw, sizeof(raw), VMT_EUNSUPPORTED, "frame version 7");
}

static void test_unknown_type_refused(void)
{
    uint8_t raw[20];
    raw_header(raw, VMT_FRAME_MAGIC, 1, 200, 0, 0);
    refusal_over_pair(raw, sizeof(raw), VMT_EPROTO, "unknown frame type 200");
}

static void test_corruption_in_transit_caught_by_checksum(void)
{
    vmt_transport *a0, *a, *b;
    vmt_fault_opts fo;
    vmt_frame f;
    uint8_t payload[1000];

    CU_ASSERT_EQUAL_FATAL(vmt_transport_mem_pair(&a0, &b, 0), 0);
    vmt_fault_opts_init(&fo);
    fo.flip_sent_at = VMT_FRAME_HEADER_LEN + 500;
    CU_ASSERT_EQUAL_FATAL(vmt_transport_fault(&a, a0, &fo), 0);
    net_fill(payload, sizeof(payload), 9);
    vmt_frame_init(&f);
    CU_ASSERT_EQUAL(vmt_frame_send(a, VMT_WIRE_PAGE_BATCH, payload, sizeof(payload)), 0);
    CU_ASSERT_EQUAL(vmt_frame_recv(b, &f, NET_TIMEOUT_MS), VMT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "checksum"));
    CU_ASSERT_EQUAL(f.type, 0); /* nothing handed out */
    CU_ASSERT_EQUAL(vmt_frame_recv(a, &f, NET_TIMEOUT_MS), VMT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "checksum"));
    vmt_frame_free(&f);
    vmt_transport_close(a);
    vmt_transport_close(b);
}

static const size_t frame_lens[] = {0, 1, 4095, 4096, 4097, 1u << 20, VMT_FRAME_MAX_PAYLOAD};

typedef struct seq_send {
    vmt_transport *t;
    uint8_t *buf;
} seq_send;

static int send_sequence(void *arg)
{
    seq_send *s = arg;
    for (size_t i = 0; i < VMT_ARRAY_SIZE(frame_lens); i++) {
        net_fill(s->buf, frame_lens[i], i);
        int rc = vmt_frame_send(s->t, VMT_WIRE_PAGE_BATCH, s->buf, frame_lens[i]);
        if (rc)
            return rc;
    }
    return 0;
}

static void test_frames_of_every_size_in_order(void)
{
    vmt_transport *a, *b;
    vmt_frame f;
    uint8_t *buf = malloc(VMT_FRAME_MAX_PAYLOAD + 1), *want = malloc(VMT_FRAME_MAX_PAYLOAD);
    CU_ASSERT_FATAL(buf && want);
    CU_ASSERT_EQUAL_FATAL(vmt_transport_socketpair(&a, &b), 0);
    vmt_frame_init(&f);
    seq_send s = {a, buf};
    net_thread th;
    net_spawn(&th, send_sequence, &s);
    for (size_t i = 0; i < VMT_ARRAY_SIZE(frame_lens); i++) {
        CU_ASSERT_EQUAL(vmt_frame_recv(b, &f, NET_TIMEOUT_MS), 0);
        CU_ASSERT_EQUAL(f.type, VMT_WIRE_PAGE_BATCH);
        CU_ASSERT_EQUAL(f.len, frame_lens[i]);
        net_fill(want, frame_lens[i], i);
        CU_ASSERT(f.len == frame_lens[i] && (!f.len || memcmp(f.payload, want, f.len) == 0));
    }
    CU_ASSERT_EQUAL(net_join(&th), 0);
    CU_ASSERT_EQUAL(vmt_frame_send(a, VMT_WIRE_PAGE_BATCH, buf, VMT_FRAME_MAX_PAYLOAD + 1),
                    VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_frame_send(a, VMT_WIRE_HELLO, buf, 5000), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_transport_error(a), 0); /* refused before sending anything */
    vmt_frame_free(&f);
    free(buf);
    free(want);
    vmt_transport_close(a);
    vmt_transport_close(b);
}

typedef struct big_send {
    vmt_transport *t;
    const uint8_t *buf;
} big_send;

static int send_big(void *arg)
{
    big_send *s = arg;
    return vmt_frame_send(s->t, VMT_WIRE_PAGE_BATCH, s->buf, VMT_FRAME_MAX_PAYLOAD);
}

static void test_largest_frame_over_tcp(void)
{
    vmt_transport *a, *b;
    vmt_frame f;
    uint8_t *buf = malloc(VMT_FRAME_MAX_PAYLOAD);
    CU_ASSERT_FATAL(buf != NULL);
    net_fill(buf, VMT_FRAME_MAX_PAYLOAD, 77);
    CU_ASSERT_EQUAL_FATAL(net_pair_tcp(&a, &b), 0);
    big_send s = {a, buf};
    net_thread th;
    net_spawn(&th, send_big, &s);
    vmt_frame_init(&f);
    CU_ASSERT_EQUAL(vmt_frame_recv(b, &f, NET_TIMEOUT_MS), 0);
    CU_ASSERT_EQUAL(f.len, VMT_FRAME_MAX_PAYLOAD);
    CU_ASSERT(f.len == VMT_FRAME_MAX_PAYLOAD && memcmp(f.payload, buf, f.len) == 0);
    CU_ASSERT_EQUAL(net_join(&th), 0);
    vmt_frame_free(&f);
    free(buf);
    vmt_transport_close(a);
    vmt_transport_close(b);
}

static void test_peer_error_frame_becomes_our_error(void)
{
    vmt_transport *a, *b;
    vmt_frame f;
    CU_ASSERT_EQUAL_FATAL(vmt_transport_mem_pair(&a, &b, 0), 0);
    vmt_error_set(VMT_EAUTH, "go away");
    CU_ASSERT_EQUAL(vmt_frame_refuse(a, VMT_EAUTH), VMT_EAUTH);
    CU_ASSERT_EQUAL(vmt_transport_error(a), VMT_EAUTH); /* not ECANCELED from the shutdown */
    vmt_frame_init(&f);
    CU_ASSERT_EQUAL(vmt_frame_recv(b, &f, NET_TIMEOUT_MS), VMT_EAUTH);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "go away"));
    CU_ASSERT_EQUAL(vmt_transport_error(b), VMT_EAUTH);
    vmt_frame_free(&f);
    vmt_transport_close(a);
    vmt_transport_close(b);
}

static void test_recv_timeout_is_not_sticky(void)
{
    vmt_transport *a, *b;
    vmt_frame f;
    CU_ASSERT_EQUAL_FATAL(vmt_transport_mem_pair(&a, &b, 0), 0);
    vmt_frame_init(&f);
    CU_ASSERT_EQUAL(vmt_frame_recv(b, &f, 50), VMT_ETIMEDOUT);
    CU_ASSERT_EQUAL(vmt_frame_send(a, VMT_WIRE_COMMIT, NULL, 0), 0);
    CU_ASSERT_EQUAL(vmt_frame_recv(b, &f, NET_TIMEOUT_MS), 0);
    CU_ASSERT_EQUAL(f.type, VMT_WIRE_COMMIT);
    CU_ASSERT_EQUAL(f.len, 0);
    vmt_frame_free(&f);
    vmt_transport_close(a);
    vmt_transport_close(b);
}

static const vmt_test_case cases[] = {
    {"header round trip", test_header_round_trip},
    {"every truncation is refused", test_every_truncation_is_refused},
    {"every flipped bit is refused", test_every_flipped_byte_is_refused},
    {"header checks and their messages", test_header_checks_and_messages},
    {"garbage refused with an ERROR frame", test_garbage_is_refused_with_an_error_frame},
    {"oversized length refused before allocation",
     test_oversized_length_refused_before_allocation},
    {"wrong frame version refused", test_wrong_version_refused},
    {"unknown type refused", test_unknown_type_refused},
    {"corruption in transit caught by the checksum",
     test_corruption_in_transit_caught_by_checksum},
    {"frames of several sizes in order; caps on send", test_frames_of_every_size_in_order},
    {"largest frame over TCP", test_largest_frame_over_tcp},
    {"peer ERROR frame becomes our error", test_peer_error_frame_becomes_our_error},
    {"receive timeout is not sticky", test_recv_timeout_is_not_sticky},
    {NULL, NULL},
};

int main(void)
{
    return vmt_test_run("net frame", cases, NULL, NULL);
}
