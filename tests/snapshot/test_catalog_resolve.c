/*
 * snapshot/catalog_resolve.c: every form of snapshot name resolves to the
 * right id (hex prefixes, tags, VM HEADs, NAME@HEAD, ~N and ^), unknown
 * names are VMT_ENOENT and ambiguous prefixes VMT_EINVAL naming candidates.
 * Over both catalog backends (test_catalog_resolve_rados: the refs catalog).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "snap_fixture.h"
#include "harness.h"

static char *tmp;
static vmt_catalog *cat;
static vmt_id ids[6];

/* A chain 0 <- 1 <- 2 <- 3, a sibling 4 of 2 (parent 1), and 5 whose
 * parent is not in the catalog.  0 and 1 share the prefix "abcd". */
static int setup(void)
{
    static const char *const hex[6] = {
        "abcd0000000000000000000000000000", "abcd1111111111111111111111111111",
        "22222222222222222222222222222222", "33333333333333333333333333333333",
        "44444444444444444444444444444444", "55555555555555555555555555555555"};
    static const int parent[6] = {-1, 0, 1, 2, 1, -2};
    tmp = fx_location("resolve");
    if (!tmp || vmt_catalog_open(&cat, tmp) != 0)
        return 1;
    for (int i = 0; i < 6; i++) {
        vmt_snap_record r;
        memset(&r, 0, sizeof(r));
        if (vmt_id_from_hex(hex[i], &ids[i]) != 0)
            return 1;
        if (parent[i] >= 0 || parent[i] == -2) {
            r.nparents = 1;
            r.parents[0] = parent[i] >= 0 ? ids[parent[i]] : fx_fake_id(1);
        }
        r.mem_size = 4096;
        r.vcpus = 1;
        r.time_ns = (uint64_t)i;
        if (vmt_catalog_add_snapshot(cat, &ids[i], &r) != 0)
            return 1;
    }
    vmt_catalog_vm vm;
    memset(&vm, 0, sizeof(vm));
    strcpy(vm.name, "web");
    vm.head = ids[3];
    vm.has_head = true;
    if (vmt_catalog_register_vm(cat, &vm) != 0 ||
        vmt_catalog_set_ref(cat, "tag/v1", &ids[1], NULL) != 0 ||
        vmt_catalog_set_ref(cat, "tag/web", &ids[4], NULL) != 0 ||
        vmt_catalog_set_ref(cat, "tag/5555", &ids[2], NULL) != 0)
        return 1;
    return 0;
}

static int teardown(void)
{
    vmt_catalog_close(cat);
    fx_location_free(tmp);
    return 0;
}

static void expect(const char *name, int want)
{
    vmt_id got;
    int rc = vmt_catalog_resolve(cat, name, &got);
    if (rc != 0)
        fprintf(stderr, "resolve %s: %s\n", name, vmt_error_last());
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_TRUE(vmt_id_equal(&got, &ids[want]));
}

static int fails(const char *name)
{
    vmt_id got;
    return vmt_catalog_resolve(cat, name, &got);
}

static void test_hex_prefixes_resolve_when_unique(void)
{
    expect("abcd0000000000000000000000000000", 0);
    expect("abcd1", 1);
    expect("ABCD1111", 1);
    expect("2222", 2);
    expect("33333333333333333333333333", 3);
    CU_ASSERT_EQUAL(fails("222"), VMT_ENOENT); /* fewer than 4 digits */
    CU_ASSERT_EQUAL(fails("9999"), VMT_ENOENT);
    CU_ASSERT_EQUAL(fails("abcd2"), VMT_ENOENT);
    CU_ASSERT_EQUAL(fails("222222222222222222222222222222222"), VMT_ENOENT); /* 33 */
}

static void test_ambiguous_prefix_lists_the_candidates(void)
{
    CU_ASSERT_EQUAL(fails("abcd"), VMT_EINVAL);
    const char *msg = vmt_error_last();
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "ambiguous"));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "abcd0000000000000000000000000000"));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "abcd1111111111111111111111111111"));
}

static void test_tags_and_vm_heads_resolve(void)
{
    expect("tag/v1", 1);
    expect("v1", 1);
    expect("vm/web/HEAD", 3);
    expect("web@HEAD", 3);
    expect("web", 3); /* a VM's HEAD wins over the tag of that name */
    expect("tag/web", 4);
    expect("5555", 2); /* a tag wins over an id prefix */
    expect("55555", 5);
    CU_ASSERT_EQUAL(fails("tag/nope"), VMT_ENOENT);
    CU_ASSERT_EQUAL(fails("nope@HEAD"), VMT_ENOENT);
    CU_ASSERT_EQUAL(fails("web@TAIL"), VMT_EINVAL);
    CU_ASSERT_EQUAL(fails("vm/web/TAIL"), VMT_EINVAL);
    CU_ASSERT_EQUAL(fails("nothing-here"), VMT_ENOENT);
    CU_ASSERT_EQUAL(fails(""), VMT_EINVAL);
}

static void test_relative_forms_walk_first_parents(void)
{
    expect("web^", 2);
    expect("web~1", 2);
    expect("web~", 2);
    expect("web~0", 3);
    expect("web~3", 0);
    expect("web^^", 1);
    expect("web~2^", 0);
    expect("tag/web^", 1); /* the sibling's parent */
    expect("4444~2", 0);
    expect("web@HEAD~2", 1);
    CU_ASSERT_EQUAL(fails("web~4"), VMT_ENOENT); /* beyond the root */
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "has no parent"));
    expect("5555^", 1);                            /* tag 5555 is snapshot 2 */
    CU_ASSERT_EQUAL(fails("55555^^"), VMT_ENOENT); /* parent not in catalog */
    CU_ASSERT_EQUAL(fails("~3"), VMT_EINVAL);
    CU_ASSERT_EQUAL(fails("^"), VMT_EINVAL);
    CU_ASSERT_EQUAL(fails("web~99999999999"), VMT_EINVAL);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"hex prefixes resolve when unique", test_hex_prefixes_resolve_when_unique},
        {"ambiguous prefix lists the candidates", test_ambiguous_prefix_lists_the_candidates},
        {"tags and VM heads resolve", test_tags_and_vm_heads_resolve},
        {"relative forms walk first parents", test_relative_forms_walk_first_parents},
        {NULL, NULL},
    };
    return vmt_test_run("snapshot/catalog_resolve", cases, setup, teardown);
}
