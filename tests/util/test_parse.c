/* util/parse.c: sizes and integers from user input. */
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "vmtree/util.h"

static void sizes_with_suffixes_parse(void)
{
    uint64_t v = 0;
    CU_ASSERT_EQUAL(vmt_parse_size("256M", &v), 0);
    CU_ASSERT_EQUAL(v, 256ull << 20);
    CU_ASSERT_EQUAL(vmt_parse_size("1G", &v), 0);
    CU_ASSERT_EQUAL(v, 1ull << 30);
    CU_ASSERT_EQUAL(vmt_parse_size("4kib", &v), 0);
    CU_ASSERT_EQUAL(v, 4096);
    CU_ASSERT_EQUAL(vmt_parse_size("12345", &v), 0);
    CU_ASSERT_EQUAL(v, 12345);
    CU_ASSERT_EQUAL(vmt_parse_size("2T", &v), 0);
    CU_ASSERT_EQUAL(v, 2ull << 40);
}

static void bad_sizes_are_refused(void)
{
    uint64_t v = 7;
    CU_ASSERT_EQUAL(vmt_parse_size("", &v), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_parse_size("-1M", &v), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_parse_size("12Q", &v), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_parse_size("M", &v), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_parse_size("99999999999999999999", &v), VMT_ERANGE);
    CU_ASSERT_EQUAL(vmt_parse_size("20000000000T", &v), VMT_ERANGE);
    CU_ASSERT_EQUAL(v, 7);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "too large"));
}

static void integers_respect_bounds(void)
{
    uint64_t v = 0;
    CU_ASSERT_EQUAL(vmt_parse_u64("5", 1, 10, &v), 0);
    CU_ASSERT_EQUAL(v, 5);
    CU_ASSERT_EQUAL(vmt_parse_u64("0", 1, 10, &v), VMT_ERANGE);
    CU_ASSERT_EQUAL(vmt_parse_u64("11", 1, 10, &v), VMT_ERANGE);
    CU_ASSERT_EQUAL(vmt_parse_u64("1x", 1, 10, &v), VMT_EINVAL);
    CU_ASSERT_EQUAL(vmt_parse_u64(" 1", 1, 10, &v), VMT_EINVAL);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"sizes_with_suffixes_parse", sizes_with_suffixes_parse},
        {"bad_sizes_are_refused", bad_sizes_are_refused},
        {"integers_respect_bounds", integers_respect_bounds},
        {NULL, NULL},
    };
    return vmt_test_run("util_parse", cases, NULL, NULL);
}
