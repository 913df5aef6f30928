/* The pack scanner: records, garbage runs with resynchronization, torn tails. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dd_test.h"
#include "internal.h"

typedef struct seen {
    int records, bad_payload, garbage, torn;
    uint64_t garbage_off, garbage_len, torn_off;
    uint64_t offs[16];
} seen;

static int collect(void *ctx, const dd_scan_item *it)
{
    seen *s = ctx;
    if (it->kind == DD_SCAN_RECORD) {
        if (s->records < 16)
            s->offs[s->records] = it->off;
        s->records++;
        s->bad_payload += !it->payload_ok;
    } else if (it->kind == DD_SCAN_GARBAGE) {
        s->garbage++;
        s->garbage_off = it->off;
        s->garbage_len = it->len;
    } else {
        s->torn++;
        s->torn_off = it->off;
    }
    return 0;
}

/* Writes a record of `len` bytes of `fill` at buf; returns its length. */
static size_t record(uint8_t *buf, size_t len, uint8_t fill)
{
    dd_rec_hdr h = {.type = VMT_OBJ_BLOB,
                    .codec = VMT_CODEC_RAW,
                    .raw_len = (uint32_t)len,
                    .stored_len = (uint32_t)len};
    memset(buf + DD_REC_HDR, fill, len);
    vmt_id_of(buf + DD_REC_HDR, len, &h.id);
    h.payload_sum = dd_sum32(buf + DD_REC_HDR, len);
    dd_rec_encode(buf, &h);
    return DD_REC_HDR + len;
}

/* Scans buf written as a file of a directory backend. */
static int scan_bytes(const uint8_t *buf, size_t len, seen *s)
{
    char dir[] = "/tmp/vmt-scan-XXXXXX";
    dd_backend *be;
    dd_bfile *f;
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    DDT_OK(dd_be_dir_open(dir, false, &be));
    DDT_OK(dd_backend_put(be, "scan", buf, len));
    DDT_OK(be->ops->open(be, "scan", DD_BF_READ, &f));
    memset(s, 0, sizeof(*s));
    int rc = dd_scan_pack(be, f, 0, len, collect, s);
    be->ops->close(f);
    DDT_OK(be->ops->remove(be, "scan"));
    be->ops->destroy(be);
    CU_ASSERT_EQUAL(rmdir(dir), 0);
    return rc;
}

static void test_records_then_garbage_then_records(void)
{
    static uint8_t buf[1 << 16];
    size_t off = 0;
    off += record(buf + off, 100, 1);
    off += record(buf + off, 5000, 2);
    size_t g = off;
    memset(buf + off, 0x5a, 777); /* garbage, with a stray magic inside */
    memcpy(buf + off + 300, "VMTR", 4);
    off += 777;
    size_t third = off;
    off += record(buf + off, 10, 3);
    seen s;
    DDT_OK(scan_bytes(buf, off, &s));
    CU_ASSERT_EQUAL(s.records, 3);
    CU_ASSERT_EQUAL(s.garbage, 1);
    CU_ASSERT_EQUAL(s.garbage_off, g);
    CU_ASSERT_EQUAL(s.garbage_len, 777);
    CU_ASSERT_EQUAL(s.offs[2], third);
    CU_ASSERT_EQUAL(s.torn, 0);
}

static void test_payload_damage_and_torn_tail(void)
{
    static uint8_t buf[1 << 16];
    size_t off = record(buf, 200, 1);
    size_t second = off;
    off += record(buf + off, 300, 2);
    buf[second + DD_REC_HDR + 5] ^= 1; /* payload damage: header still good */
    size_t last = off;
    off += record(buf + off, 4000, 3);
    seen s;
    DDT_OK(scan_bytes(buf, off - 1000, &s)); /* the last record is cut short */
    CU_ASSERT_EQUAL(s.records, 2);
    CU_ASSERT_EQUAL(s.bad_payload, 1);
    CU_ASSERT_EQUAL(s.torn, 1);
    CU_ASSERT_EQUAL(s.torn_off, last);
    DDT_OK(scan_bytes(buf, last + 20, &s)); /* half a header at the end */
    CU_ASSERT_EQUAL(s.records, 2);
    CU_ASSERT_EQUAL(s.garbage + s.torn, 1);
}

static void test_records_larger_than_the_read_chunk(void)
{
    size_t big = 9u << 20, off = 0;
    uint8_t *buf = malloc(2 * big + 200);
    off += record(buf, 50, 1);
    off += record(buf + off, big, 7);
    off += record(buf + off, big, 8);
    seen s;
    DDT_OK(scan_bytes(buf, off, &s));
    CU_ASSERT_EQUAL(s.records, 3);
    CU_ASSERT_EQUAL(s.bad_payload, 0);
    free(buf);
}

static void test_all_zero_region(void)
{
    static uint8_t buf[100000];
    seen s;
    DDT_OK(scan_bytes(buf, sizeof(buf), &s));
    CU_ASSERT_EQUAL(s.records, 0);
    CU_ASSERT_EQUAL(s.garbage, 1);
    CU_ASSERT_EQUAL(s.garbage_len, sizeof(buf));
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"records, garbage with a stray magic, records", test_records_then_garbage_then_records},
        {"payload damage and a torn tail", test_payload_damage_and_torn_tail},
        {"records larger than the read chunk", test_records_larger_than_the_read_chunk},
        {"an all-zero region is one garbage run", test_all_zero_region},
        {NULL, NULL},
    };
    return vmt_test_run("dedup/scan", cases, NULL, NULL);
}
