/* cli/json.c: the --json writer's nesting, commas and escaping. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "harness.h"
#include "json.h"

static char *text;
static size_t len;

static vmt_json *open_doc(vmt_json *j)
{
    FILE *f = open_memstream(&text, &len);
    vmt_json_init(j, f);
    return j;
}

static const char *close_doc(vmt_json *j)
{
    fclose(j->f);
    return text;
}

static void nesting_and_commas(void)
{
    vmt_json j;
    open_doc(&j);
    vmt_json_obj_begin(&j);
    vmt_json_kstr(&j, "a", "x");
    vmt_json_key(&j, "list");
    vmt_json_arr_begin(&j);
    vmt_json_u64(&j, 1);
    vmt_json_arr_begin(&j);
    vmt_json_arr_end(&j);
    vmt_json_obj_begin(&j);
    vmt_json_kbool(&j, "t", true);
    vmt_json_obj_end(&j);
    vmt_json_null(&j);
    vmt_json_arr_end(&j);
    vmt_json_ki64(&j, "neg", -5);
    vmt_json_kdouble(&j, "inf", INFINITY);
    vmt_json_obj_end(&j);
    CU_ASSERT_STRING_EQUAL(close_doc(&j),
                           "{\"a\":\"x\",\"list\":[1,[],{\"t\":true},null],\"neg\":-5,\"inf\":null}\n");
    CU_ASSERT(cli_json_valid(text, true));
    free(text);
}

static void strings_are_escaped_and_kept_valid_utf8(void)
{
    vmt_json j;
    open_doc(&j);
    vmt_json_arr_begin(&j);
    vmt_json_str(&j, "q\"b\\s\nn\tt\x01 \xc3\xa9 \xff \xe2\x82");
    vmt_json_str(&j, NULL);
    vmt_json_arr_end(&j);
    CU_ASSERT_STRING_EQUAL(close_doc(&j), "[\"q\\\"b\\\\s\\nn\\tt\\u0001 \xc3\xa9 \\ufffd "
                                          "\\ufffd\\ufffd\",null]\n");
    CU_ASSERT(cli_json_valid(text, true));
    free(text);
}

static void ids_print_as_hex(void)
{
    vmt_json j;
    vmt_id id;
    memset(&id, 0xab, sizeof(id));
    open_doc(&j);
    vmt_json_obj_begin(&j);
    vmt_json_kid(&j, "id", &id);
    vmt_json_obj_end(&j);
    CU_ASSERT_STRING_EQUAL(close_doc(&j), "{\"id\":\"abababababababababababababababab\"}\n");
    free(text);
}

static void the_checker_refuses_broken_json(void)
{
    CU_ASSERT(cli_json_valid("  {\"a\": [1, 2.5e3, \"x\"]}\n", true));
    CU_ASSERT(!cli_json_valid("{\"a\":1,}", true));
    CU_ASSERT(!cli_json_valid("{\"a\":1} x", true));
    CU_ASSERT(!cli_json_valid("[1 2]", true));
    CU_ASSERT(!cli_json_valid("\"just a string\"", true));
    CU_ASSERT(!cli_json_valid("", true));
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"nesting and commas", nesting_and_commas},
        {"strings are escaped and kept valid UTF-8", strings_are_escaped_and_kept_valid_utf8},
        {"ids print as hex", ids_print_as_hex},
        {"the checker refuses broken JSON", the_checker_refuses_broken_json},
        {NULL, NULL},
    };
    return vmt_test_run("cli/json", cases, NULL, NULL);
}
