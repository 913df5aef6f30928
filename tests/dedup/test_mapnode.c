/* The map-node format that GC walks. */
#include <stdlib.h>
#include <string.h>

#include "dd_test.h"

static void test_round_trip(void)
{
    vmt_mapnode_entry e[3], back;
    uint8_t buf[128];
    size_t len, count;
    unsigned level;
    for (int i = 0; i < 3; i++) {
        e[i].slot = (uint32_t)(i * 10 + 1);
        vmt_id_of(&i, sizeof(i), &e[i].child);
    }
    DDT_OK(vmt_store_mapnode_encode(2, e, 3, buf, sizeof(buf), &len));
    CU_ASSERT_EQUAL(len, vmt_store_mapnode_size(3));
    CU_ASSERT_EQUAL(len, 12 + 3 * 20);
    DDT_OK(vmt_store_mapnode_parse(buf, len, &level, &count));
    CU_ASSERT_EQUAL(level, 2);
    CU_ASSERT_EQUAL(count, 3);
    vmt_store_mapnode_entry_at(buf, 2, &back);
    CU_ASSERT_EQUAL(back.slot, 21);
    CU_ASSERT(vmt_id_equal(&back.child, &e[2].child));
}

static void test_encode_rejects(void)
{
    vmt_mapnode_entry e[2] = {{5, {{0}}}, {5, {{0}}}};
    uint8_t buf[128];
    size_t len;
    CU_ASSERT_EQUAL(vmt_store_mapnode_encode(0, e, 2, buf, sizeof(buf), &len), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_store_mapnode_encode(16, e, 1, buf, sizeof(buf), &len), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_store_mapnode_encode(0, e, 1, buf, 20, &len), VMT_ERANGE);
}

static void test_parse_rejects_damage(void)
{
    vmt_mapnode_entry e[2] = {{1, {{1}}}, {2, {{2}}}};
    uint8_t buf[128];
    size_t len, count;
    unsigned level;
    DDT_OK(vmt_store_mapnode_encode(0, e, 2, buf, sizeof(buf), &len));
    CU_ASSERT_EQUAL(vmt_store_mapnode_parse(buf, len - 1, &level, &count), VMT_ECORRUPT);
    CU_ASSERT_EQUAL(vmt_store_mapnode_parse(buf, 5, &level, &count), VMT_ECORRUPT);
    buf[8] = 200; /* count no longer matches the length */
    CU_ASSERT_EQUAL(vmt_store_mapnode_parse(buf, len, &level, &count), VMT_ECORRUPT);
    buf[8] = 2;
    buf[12 + 20] = 0; /* second slot below the first */
    CU_ASSERT_EQUAL(vmt_store_mapnode_parse(buf, len, &level, &count), VMT_ECORRUPT);
    buf[0] ^= 1;
    CU_ASSERT_EQUAL(vmt_store_mapnode_parse(buf, len, &level, &count), VMT_ECORRUPT);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"map node round trip", test_round_trip},
        {"encode rejects bad nodes", test_encode_rejects},
        {"parse rejects damaged nodes", test_parse_rejects_damage},
        {NULL, NULL},
    };
    return vmt_test_run("dedup/mapnode", cases, NULL, NULL);
}
