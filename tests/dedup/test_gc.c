/* Garbage collection: marking through map nodes and the children callback,
 * disk shrinking after roots are dropped, live objects still reading. */
#include <stdlib.h>
#include <string.h>

#include "dd_test.h"

enum { SNAP_PAGES = 2000 };

/* One "snapshot": SNAP_PAGES pages under a two-level map, plus a blob. */
typedef struct snap {
    uint64_t seed;
    vmt_id pages[SNAP_PAGES];
    vmt_id root;
} snap;

static void put_map(vmt_store *s, snap *sn)
{
    enum { FAN = 256 };
    size_t nleaves = (SNAP_PAGES + FAN - 1) / FAN;
    vmt_mapnode_entry *e = malloc(FAN * sizeof(*e));
    vmt_mapnode_entry top[16];
    uint8_t *buf = malloc(vmt_store_mapnode_size(FAN));
    for (size_t l = 0; l < nleaves; l++) {
        size_t n = 0, len;
        for (size_t i = l * FAN; i < SNAP_PAGES && i < (l + 1) * FAN; i++)
            e[n++] = (vmt_mapnode_entry){(uint32_t)(i - l * FAN), sn->pages[i]};
        DDT_OK(vmt_store_mapnode_encode(0, e, n, buf, vmt_store_mapnode_size(FAN), &len));
        vmt_store_obj o = {buf, len, VMT_OBJ_MAPNODE};
        top[l].slot = (uint32_t)l;
        DDT_OK(vmt_store_put_many(s, &o, 1, &top[l].child, NULL, NULL));
    }
    size_t len;
    DDT_OK(vmt_store_mapnode_encode(1, top, nleaves, buf, vmt_store_mapnode_size(FAN), &len));
    vmt_store_obj o = {buf, len, VMT_OBJ_MAPNODE};
    DDT_OK(vmt_store_put_many(s, &o, 1, &sn->root, NULL, NULL));
    free(e);
    free(buf);
}

static void make_snap(vmt_store *s, snap *sn, uint64_t seed)
{
    uint8_t *buf = malloc(SNAP_PAGES * VMT_STORE_PAGE_SIZE);
    const void **p = malloc(SNAP_PAGES * sizeof(*p));
    sn->seed = seed;
    for (size_t i = 0; i < SNAP_PAGES; i++) {
        if (i % 10 == 0)
            memset(buf + i * VMT_STORE_PAGE_SIZE, 0, VMT_STORE_PAGE_SIZE); /* zero pages */
        else
            ddt_page(seed + i, buf + i * VMT_STORE_PAGE_SIZE);
        p[i] = buf + i * VMT_STORE_PAGE_SIZE;
    }
    DDT_OK(vmt_store_put_pages(s, p, SNAP_PAGES, sn->pages, NULL, NULL));
    put_map(s, sn);
    DDT_OK(vmt_store_commit(s));
    free(buf);
    free(p);
}

static int bad_pages(vmt_store *s, const snap *sn)
{
    uint8_t page[VMT_STORE_PAGE_SIZE], want[VMT_STORE_PAGE_SIZE];
    void *dst[1] = {page};
    int bad = 0;
    for (size_t i = 0; i < SNAP_PAGES; i++) {
        if (i % 10 == 0)
            memset(want, 0, sizeof(want));
        else
            ddt_page(sn->seed + i, want);
        if (vmt_store_get_pages(s, &sn->pages[i], 1, dst) != 0 || memcmp(page, want, 4096))
            bad++;
    }
    return bad;
}

static void test_dropped_roots_shrink_disk(void)
{
    char *dir = ddt_store_small("gc1", 1u << 20);
    vmt_store *s = ddt_open(dir, false, 2);
    snap *sn = calloc(4, sizeof(*sn));
    for (int i = 0; i < 4; i++)
        make_snap(s, &sn[i], (uint64_t)i * 1000000);
    uint64_t before = ddt_pack_bytes(dir);
    vmt_id roots[2] = {sn[1].root, sn[3].root};
    vmt_store_gc_stats st;
    DDT_OK(vmt_store_gc(s, roots, 2, NULL, &st));
    uint64_t after = ddt_pack_bytes(dir);
    CU_ASSERT(after < before * 6 / 10);
    CU_ASSERT_EQUAL(st.missing_objects, 0);
    CU_ASSERT(st.packs_deleted > 0);
    CU_ASSERT(st.live_objects >= 2 * (SNAP_PAGES * 9 / 10));
    CU_ASSERT_EQUAL(bad_pages(s, &sn[1]), 0);
    CU_ASSERT_EQUAL(bad_pages(s, &sn[3]), 0);
    DDT_OK(vmt_store_verify(s, NULL, NULL));
    vmt_store_close(s);
    /* Durable: a fresh open sees the same, from the saved index. */
    s = ddt_open(dir, false, 2);
    vmt_store_recovery rec;
    vmt_store_recovery_info(s, &rec);
    CU_ASSERT_FALSE(rec.index_rebuilt);
    CU_ASSERT_EQUAL(bad_pages(s, &sn[1]), 0);
    CU_ASSERT_EQUAL(bad_pages(s, &sn[3]), 0);
    CU_ASSERT(bad_pages(s, &sn[0]) > SNAP_PAGES / 2); /* most of it is gone */
    DDT_OK(vmt_store_verify(s, NULL, NULL));
    /* No roots at all: everything goes. */
    DDT_OK(vmt_store_gc(s, NULL, 0, NULL, &st));
    CU_ASSERT(ddt_pack_bytes(dir) < 64 * 1024);
    vmt_store_close(s);
    free(sn);
    ddt_cleanup(dir);
}

static void test_dry_run_changes_nothing(void)
{
    char *dir = ddt_store_small("gc2", 1u << 20);
    vmt_store *s = ddt_open(dir, false, 2);
    snap *sn = calloc(2, sizeof(*sn));
    make_snap(s, &sn[0], 1);
    make_snap(s, &sn[1], 50000);
    uint64_t before = ddt_pack_bytes(dir);
    vmt_store_gc_opts o;
    vmt_store_gc_opts_init(&o);
    o.dry_run = true;
    vmt_store_gc_stats st;
    DDT_OK(vmt_store_gc(s, &sn[0].root, 1, &o, &st));
    CU_ASSERT(st.packs_rewritten > 0);
    CU_ASSERT(st.dead_objects > 0);
    CU_ASSERT_EQUAL(ddt_pack_bytes(dir), before);
    CU_ASSERT_EQUAL(bad_pages(s, &sn[1]), 0);
    /* Marks were cleared: a real gc afterwards marks afresh. */
    DDT_OK(vmt_store_gc(s, &sn[0].root, 1, NULL, &st));
    CU_ASSERT_EQUAL(bad_pages(s, &sn[0]), 0);
    vmt_store_close(s);
    free(sn);
    ddt_cleanup(dir);
}

typedef struct blob_ref {
    vmt_id child;
    int calls;
} blob_ref;

static int children(void *ctx, vmt_obj_type type, const void *data, size_t len,
                    vmt_store_emit_fn emit, void *ectx)
{
    blob_ref *br = ctx;
    br->calls++;
    if (type == VMT_OBJ_SNAPSHOT && len == sizeof(vmt_id))
        emit(ectx, data); /* a "snapshot record" naming one map root */
    return 0;
}

static void test_children_callback_and_missing(void)
{
    char *dir = ddt_store_small("gc3", 1u << 20);
    vmt_store *s = ddt_open(dir, false, 2);
    snap *sn = calloc(1, sizeof(*sn));
    make_snap(s, sn, 9);
    vmt_store_obj rec = {&sn->root, sizeof(vmt_id), VMT_OBJ_SNAPSHOT};
    vmt_id rid, ghost;
    DDT_OK(vmt_store_put_many(s, &rec, 1, &rid, NULL, NULL));
    vmt_id_of("nothing", 7, &ghost);
    vmt_id roots[2] = {rid, ghost};
    blob_ref br = {0};
    vmt_store_gc_opts o;
    vmt_store_gc_opts_init(&o);
    o.children = children;
    o.children_ctx = &br;
    o.min_live = 1.0; /* rewrite every pack with any garbage */
    vmt_store_gc_stats st;
    DDT_OK(vmt_store_gc(s, roots, 2, &o, &st));
    CU_ASSERT_EQUAL(br.calls, 1);
    CU_ASSERT_EQUAL(st.missing_objects, 1);
    CU_ASSERT_EQUAL(st.dead_objects, 0);
    CU_ASSERT_EQUAL(bad_pages(s, sn), 0);
    vmt_store_close(s);
    free(sn);
    ddt_cleanup(dir);
}

static void test_damaged_map_node_stops_gc(void)
{
    char *dir = ddt_store_small("gc4", 1u << 20);
    vmt_store *s = ddt_open(dir, false, 2);
    snap *sn = calloc(2, sizeof(*sn));
    make_snap(s, &sn[0], 1);
    make_snap(s, &sn[1], 70000);
    vmt_store_objinfo info;
    DDT_OK(vmt_store_stat(s, &sn[0].root, &info));
    vmt_store_close(s);
    char *pack = ddt_pack_name(info.pack);
    ddt_obj_flip(dir, pack, info.offset + 45, 0x20);
    uint64_t before = ddt_pack_bytes(dir);
    s = ddt_open(dir, false, 2);
    vmt_store_gc_stats st;
    CU_ASSERT_EQUAL(vmt_store_gc(s, &sn[0].root, 1, NULL, &st), VMT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "nothing deleted"));
    CU_ASSERT_EQUAL(ddt_pack_bytes(dir), before);
    CU_ASSERT_EQUAL(bad_pages(s, &sn[1]), 0);
    vmt_store_close(s);
    free(pack);
    free(sn);
    ddt_cleanup(dir);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"dropped roots shrink the disk, live objects read", test_dropped_roots_shrink_disk},
        {"a dry run changes nothing", test_dry_run_changes_nothing},
        {"the children callback, and missing roots", test_children_callback_and_missing},
        {"a damaged map node stops gc before deleting", test_damaged_map_node_stops_gc},
        {NULL, NULL},
    };
    return vmt_test_run("dedup/gc", cases, NULL, NULL);
}
