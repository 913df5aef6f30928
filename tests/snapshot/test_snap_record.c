/*
 * snapshot/snap_record.c (and proto/proto_snap.c under it): snapshot records
 * round-trip exactly, hostile bytes are refused with the documented codes,
 * records are read back from the store, and the GC children callback keeps
 * a snapshot's map and state but not its parents.
 */
#include <stdlib.h>
#include <string.h>

#include "snap_fixture.h"
#include "harness.h"

static fx_store fx;

static void sample(vmt_snap_record *r)
{
    memset(r, 0, sizeof(*r));
    r->nparents = 2;
    r->parents[0] = fx_fake_id(1);
    r->parents[1] = fx_fake_id(2);
    r->map_root = fx_fake_id(3);
    r->state = fx_fake_id(4);
    r->mem_size = 256ull << 20;
    r->vcpus = 4;
    r->irqchip = true;
    strcpy(r->image, "/var/lib/vmtree/guests/kvstore.elf");
    strcpy(r->cmdline, "console=ttyS0 mode=fast");
    strcpy(r->vm_name, "web-1.test_A");
    memset(r->message, 'm', sizeof(r->message) - 1); /* the longest message */
    r->message[0] = '\n';
    r->time_ns = 1790000000123456789ull;
    r->nonzero_pages = 12345;
}

/* ---- a minimal protobuf writer for hand-made records -------------------- */

typedef struct wbuf {
    uint8_t p[16384];
    size_t n;
} wbuf;

static void put_varint(wbuf *b, uint64_t v)
{
    do {
        uint8_t c = (uint8_t)(v & 0x7f);
        v >>= 7;
        b->p[b->n++] = (uint8_t)(c | (v ? 0x80 : 0));
    } while (v);
}

static void put_uint(wbuf *b, unsigned field, uint64_t v)
{
    put_varint(b, (uint64_t)field << 3);
    put_varint(b, v);
}

static void put_bytes(wbuf *b, unsigned field, const void *d, size_t n)
{
    put_varint(b, (uint64_t)field << 3 | 2);
    put_varint(b, n);
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

/* A record body with the given id length and message. */
static void body(wbuf *b, size_t id_len, const char *msg, size_t msg_len, unsigned nparents)
{
    uint8_t id[32] = {1, 2, 3};
    for (unsigned i = 0; i < nparents; i++)
        put_bytes(b, 1, id, 16);
    put_bytes(b, 2, id, id_len);
    put_bytes(b, 3, id, 16);
    put_uint(b, 4, 1 << 20);
    put_uint(b, 5, 1);
    put_bytes(b, 10, msg, msg_len);
}

/* The frame: header {major, minor, features...} and the body. */
static void frame(wbuf *out, unsigned major, const char *feature, const wbuf *rec)
{
    wbuf h = {.n = 0};
    put_uint(&h, 1, major);
    put_uint(&h, 2, 7);
    if (feature)
        put_bytes(&h, 3, feature, strlen(feature));
    out->n = 0;
    put_bytes(out, 1, h.p, h.n);
    put_bytes(out, 2, rec->p, rec->n);
}

static int decode_wbuf(const wbuf *w)
{
    vmt_snap_record r;
    return vmt_snap_record_decode(w->p, w->n, &r);
}

/* ---- tests -------------------------------------------------------------- */

static void test_record_round_trips_exactly(void)
{
    vmt_snap_record *r = malloc(sizeof(*r)), *d = malloc(sizeof(*d));
    uint8_t *buf = NULL, *buf2 = NULL;
    size_t len = 0, len2 = 0;

    sample(r);
    CU_ASSERT_EQUAL_FATAL(vmt_snap_record_encode(r, &buf, &len), 0);
    CU_ASSERT_TRUE(len > sizeof(r->message) - 1);
    CU_ASSERT_EQUAL_FATAL(vmt_snap_record_decode(buf, len, d), 0);
    CU_ASSERT_EQUAL(memcmp(r, d, sizeof(*r)), 0);
    /* Deterministic: the same record gives the same bytes (and id). */
    CU_ASSERT_EQUAL_FATAL(vmt_snap_record_encode(d, &buf2, &len2), 0);
    CU_ASSERT_EQUAL_FATAL(len, len2);
    CU_ASSERT_EQUAL(memcmp(buf, buf2, len), 0);
    /* A root snapshot: no parents, empty texts. */
    free(buf);
    memset(r, 0, sizeof(*r));
    r->mem_size = 4096;
    r->vcpus = 1;
    CU_ASSERT_EQUAL_FATAL(vmt_snap_record_encode(r, &buf, &len), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_snap_record_decode(buf, len, d), 0);
    CU_ASSERT_EQUAL(memcmp(r, d, sizeof(*r)), 0);
    free(buf);
    free(buf2);
    free(r);
    free(d);
}

static void test_truncated_and_garbage_records_are_corrupt(void)
{
    vmt_snap_record *r = malloc(sizeof(*r));
    uint8_t *buf = NULL;
    size_t len = 0;
    int accepted = 0;

    sample(r);
    CU_ASSERT_EQUAL_FATAL(vmt_snap_record_encode(r, &buf, &len), 0);
    for (size_t cut = 0; cut < len; cut++) {
        int rc = vmt_snap_record_decode(buf, cut, r);
        CU_ASSERT_TRUE(rc == VMT_ECORRUPT);
        accepted += rc == 0;
    }
    CU_ASSERT_EQUAL(accepted, 0);
    uint64_t st = 5;
    for (int i = 0; i < 2000; i++) {
        uint8_t g[64];
        for (size_t j = 0; j < sizeof(g); j++)
            g[j] = (uint8_t)fx_rand(&st);
        int rc = vmt_snap_record_decode(g, 1 + i % sizeof(g), r);
        CU_ASSERT_TRUE(rc == VMT_ECORRUPT || rc == VMT_EUNSUPPORTED);
    }
    free(buf);
    free(r);
}

static void test_newer_major_or_unknown_feature_is_unsupported(void)
{
    wbuf rec = {.n = 0}, w;

    body(&rec, 16, "hi", 2, 1);
    frame(&w, 1, NULL, &rec);
    CU_ASSERT_EQUAL(decode_wbuf(&w), 0);
    frame(&w, 2, NULL, &rec);
    CU_ASSERT_EQUAL(decode_wbuf(&w), VMT_EUNSUPPORTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "2.7 is newer"));
    /* The body of a newer major is not even parsed. */
    wbuf junk = {.n = 3, .p = {0xff, 0xff, 0xff}};
    frame(&w, 3, NULL, &junk);
    CU_ASSERT_EQUAL(decode_wbuf(&w), VMT_EUNSUPPORTED);
    frame(&w, 1, "delta-maps", &rec);
    CU_ASSERT_EQUAL(decode_wbuf(&w), VMT_EUNSUPPORTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "delta-maps"));
    frame(&w, 0, NULL, &rec);
    CU_ASSERT_EQUAL(decode_wbuf(&w), VMT_ECORRUPT);
}

static void test_fields_beyond_their_caps_are_corrupt(void)
{
    static char big[VMT_SNAP_MESSAGE_MAX];
    wbuf rec, w;

    memset(big, 'x', sizeof(big));
    rec.n = 0;
    body(&rec, 16, big, sizeof(big) - 1, 0);
    frame(&w, 1, NULL, &rec);
    CU_ASSERT_EQUAL(decode_wbuf(&w), 0); /* 4095 bytes fit */
    rec.n = 0;
    body(&rec, 16, big, sizeof(big), 0);
    frame(&w, 1, NULL, &rec);
    CU_ASSERT_EQUAL(decode_wbuf(&w), VMT_ECORRUPT);
    rec.n = 0;
    body(&rec, 15, "m", 1, 0);
    frame(&w, 1, NULL, &rec);
    CU_ASSERT_EQUAL(decode_wbuf(&w), VMT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "map_root"));
    rec.n = 0;
    body(&rec, 16, "m", 1, 3);
    frame(&w, 1, NULL, &rec);
    CU_ASSERT_EQUAL(decode_wbuf(&w), VMT_ECORRUPT);
    rec.n = 0;
    body(&rec, 16, "a\0b", 3, 0);
    frame(&w, 1, NULL, &rec);
    CU_ASSERT_EQUAL(decode_wbuf(&w), VMT_ECORRUPT);
    rec.n = 0;
    body(&rec, 16, "m", 1, 0);
    put_bytes(&rec, 9, "bad name!", 9);
    frame(&w, 1, NULL, &rec);
    CU_ASSERT_EQUAL(decode_wbuf(&w), VMT_ECORRUPT);
}

static void test_encode_refuses_invalid_records(void)
{
    vmt_snap_record *r = malloc(sizeof(*r));
    uint8_t *buf = NULL;
    size_t len;

    sample(r);
    r->nparents = 3;
    CU_ASSERT_EQUAL(vmt_snap_record_encode(r, &buf, &len), VMT_EINVAL);
    sample(r);
    r->vcpus = 0;
    CU_ASSERT_EQUAL(vmt_snap_record_encode(r, &buf, &len), VMT_EINVAL);
    sample(r);
    memset(r->vm_name, 'a', sizeof(r->vm_name)); /* not terminated */
    CU_ASSERT_EQUAL(vmt_snap_record_encode(r, &buf, &len), VMT_EINVAL);
    sample(r);
    strcpy(r->vm_name, "a/b");
    CU_ASSERT_EQUAL(vmt_snap_record_encode(r, &buf, &len), VMT_EINVAL);
    sample(r);
    r->mem_size = 4097;
    CU_ASSERT_EQUAL(vmt_snap_record_encode(r, &buf, &len), VMT_EINVAL);
    CU_ASSERT_PTR_NULL(buf);
    free(r);
}

static vmt_id put_record(const vmt_snap_record *r, vmt_obj_type type)
{
    uint8_t *buf = NULL;
    size_t len;
    vmt_id id;
    CU_ASSERT_EQUAL_FATAL(vmt_snap_record_encode(r, &buf, &len), 0);
    vmt_store_obj o = {.data = buf, .len = len, .type = type};
    CU_ASSERT_EQUAL_FATAL(vmt_store_put_many(fx.s, &o, 1, &id, NULL, NULL), 0);
    free(buf);
    return id;
}

static void test_records_are_read_back_from_the_store(void)
{
    vmt_snap_record *r = malloc(sizeof(*r)), *d = malloc(sizeof(*d));
    vmt_id missing = fx_fake_id(5);

    fx_store_new(&fx, "record");
    sample(r);
    vmt_id id = put_record(r, VMT_OBJ_SNAPSHOT);
    CU_ASSERT_EQUAL(vmt_store_commit(fx.s), 0);
    CU_ASSERT_EQUAL(vmt_snap_record_read(fx.s, &id, d), 0);
    CU_ASSERT_EQUAL(memcmp(r, d, sizeof(*r)), 0);
    CU_ASSERT_EQUAL(vmt_snap_record_read(fx.s, &missing, d), VMT_ENOENT);
    r->time_ns++;
    vmt_id blob = put_record(r, VMT_OBJ_BLOB);
    CU_ASSERT_EQUAL(vmt_snap_record_read(fx.s, &blob, d), VMT_EINVAL);
    fx_store_free(&fx);
    free(r);
    free(d);
}

typedef struct emitted {
    vmt_id ids[8];
    int n;
} emitted;

static void emit(void *ctx, const vmt_id *id)
{
    emitted *e = ctx;
    if (e->n < 8)
        e->ids[e->n] = *id;
    e->n++;
}

static void test_gc_children_are_map_and_state_not_parents(void)
{
    vmt_snap_record *r = malloc(sizeof(*r));
    uint8_t *buf = NULL;
    size_t len;
    emitted e = {.n = 0};

    sample(r);
    CU_ASSERT_EQUAL_FATAL(vmt_snap_record_encode(r, &buf, &len), 0);
    CU_ASSERT_EQUAL(vmt_snap_gc_children(NULL, VMT_OBJ_SNAPSHOT, buf, len, emit, &e), 0);
    CU_ASSERT_EQUAL_FATAL(e.n, 2);
    CU_ASSERT_TRUE(vmt_id_equal(&e.ids[0], &r->map_root));
    CU_ASSERT_TRUE(vmt_id_equal(&e.ids[1], &r->state));
    e.n = 0;
    CU_ASSERT_EQUAL(vmt_snap_gc_children(NULL, VMT_OBJ_BLOB, buf, len, emit, &e), 0);
    CU_ASSERT_EQUAL(e.n, 0);
    CU_ASSERT_EQUAL(vmt_snap_gc_children(NULL, VMT_OBJ_SNAPSHOT, buf, len / 2, emit, &e),
                    VMT_ECORRUPT);
    CU_ASSERT_EQUAL(e.n, 0);
    free(buf);
    free(r);
}

/* A snapshot of `mem` whose record names `parent` (NULL: none). */
static vmt_id make_snapshot(const uint8_t *mem, uint64_t npages, const vmt_id *parent,
                            vmt_id *state)
{
    vmt_snap_record r;
    static const char blob[] = "state blob stand-in";
    char sb[64];
    snprintf(sb, sizeof(sb), "%s %p", blob, (const void *)mem);
    vmt_store_obj o = {.data = sb, .len = strlen(sb), .type = VMT_OBJ_BLOB};
    memset(&r, 0, sizeof(r));
    r.map_root = fx_store_memory(fx.s, mem, npages);
    CU_ASSERT_EQUAL_FATAL(vmt_store_put_many(fx.s, &o, 1, &r.state, NULL, NULL), 0);
    *state = r.state;
    r.nparents = parent ? 1 : 0;
    if (parent)
        r.parents[0] = *parent;
    r.mem_size = npages * 4096;
    r.vcpus = 1;
    vmt_id id = put_record(&r, VMT_OBJ_SNAPSHOT);
    CU_ASSERT_EQUAL_FATAL(vmt_store_commit(fx.s), 0);
    return id;
}

static void test_gc_from_a_child_frees_what_only_the_parent_held(void)
{
    const uint64_t n = 600;
    uint8_t *a = malloc(n * 4096), *b = malloc(n * 4096);
    vmt_id pstate, cstate;
    vmt_store_gc_opts o;
    vmt_store_gc_stats gs;

    fx_store_new(&fx, "record");
    for (uint64_t i = 0; i < n; i++)
        fx_page_random(a + i * 4096, i);
    memcpy(b, a, n * 4096);
    fx_page_random(b + 10 * 4096, 1000001); /* the child changed page 10 */
    vmt_id parent = make_snapshot(a, n, NULL, &pstate);
    vmt_id child = make_snapshot(b, n, &parent, &cstate);
    vmt_store_gc_opts_init(&o);
    o.children = vmt_snap_gc_children;
    o.min_live = 1.0; /* rewrite every pack that has dead records */
    CU_ASSERT_EQUAL_FATAL(vmt_store_gc(fx.s, &child, 1, &o, &gs), 0);
    CU_ASSERT_EQUAL(gs.missing_objects, 0);
    vmt_id old_page, new_page;
    vmt_id_of(a + 10 * 4096, 4096, &old_page);
    vmt_id_of(b + 10 * 4096, 4096, &new_page);
    vmt_id probe[5] = {parent, pstate, old_page, new_page, cstate};
    bool present[5];
    CU_ASSERT_EQUAL(vmt_store_has_many(fx.s, probe, 5, present), 0);
    CU_ASSERT_FALSE(present[0]); /* the parent record */
    CU_ASSERT_FALSE(present[1]); /* its state */
    CU_ASSERT_FALSE(present[2]); /* the page only it had */
    CU_ASSERT_TRUE(present[3]);
    CU_ASSERT_TRUE(present[4]);
    vmt_map *m = NULL;
    vmt_snap_record r;
    CU_ASSERT_EQUAL(vmt_snap_record_read(fx.s, &child, &r), 0);
    CU_ASSERT_EQUAL(vmt_map_load(&m, fx.s, &r.map_root, n), 0);
    vmt_map_free(m);
    CU_ASSERT_EQUAL(vmt_store_verify(fx.s, NULL, NULL), 0);
    fx_store_free(&fx);
    free(a);
    free(b);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"record round trips exactly", test_record_round_trips_exactly},
        {"truncated and garbage records are corrupt",
         test_truncated_and_garbage_records_are_corrupt},
        {"newer major or unknown feature is unsupported",
         test_newer_major_or_unknown_feature_is_unsupported},
        {"fields beyond their caps are corrupt", test_fields_beyond_their_caps_are_corrupt},
        {"encode refuses invalid records", test_encode_refuses_invalid_records},
        {"records are read back from the store", test_records_are_read_back_from_the_store},
        {"gc children are map and state, not parents",
         test_gc_children_are_map_and_state_not_parents},
        {"gc from a child frees what only the parent held",
         test_gc_from_a_child_frees_what_only_the_parent_held},
        {NULL, NULL},
    };
    return vmt_test_run("snapshot/record", cases, NULL, NULL);
}
