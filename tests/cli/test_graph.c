/* cli/graph.c: the lanes of `vmtree log --graph`. */
#include <stdlib.h>
#include <string.h>

#include "graph.h"
#include "harness.h"

static char out[4096];

static void row(void *ctx, const char *graph, const vmt_catalog_snap *s)
{
    (void)ctx;
    size_t n = strlen(out);
    snprintf(out + n, sizeof(out) - n, "%s%s%s\n", graph, s ? " " : "", s ? s->message : "");
}

/* Snapshot i: id byte i, time i, message "m<i>", parent p (-1: none). */
static void snap(vmt_catalog_snap *s, int i, int p)
{
    memset(s, 0, sizeof(*s));
    s->id.b[0] = (uint8_t)(i + 1);
    s->time_ns = (uint64_t)i;
    snprintf(s->message, sizeof(s->message), "m%d", i);
    if (p >= 0) {
        s->has_parent = true;
        s->parent_present = true;
        s->parent.b[0] = (uint8_t)(p + 1);
    }
}

static const char *render(vmt_catalog_snap *s, size_t n)
{
    out[0] = '\0';
    CU_ASSERT_EQUAL(vmt_graph_render(s, n, row, NULL), 0);
    return out;
}

static void a_chain_is_one_lane(void)
{
    vmt_catalog_snap s[3];
    snap(&s[0], 0, -1);
    snap(&s[1], 1, 0);
    snap(&s[2], 2, 1);
    CU_ASSERT_STRING_EQUAL(render(s, 3), "* m2\n* m1\n* m0\n");
}

static void siblings_join_their_parent(void)
{
    vmt_catalog_snap s[4];
    snap(&s[0], 0, -1);
    snap(&s[1], 1, 0); /* older child */
    snap(&s[2], 2, 0); /* newer child */
    snap(&s[3], 3, 1); /* grandchild via the older child */
    CU_ASSERT_STRING_EQUAL(render(s, 4), "* m3\n"
                                         "| * m2\n"
                                         "* | m1\n"
                                         "|/\n"
                                         "* m0\n");
}

static void a_join_across_a_lane_uses_underscores(void)
{
    vmt_catalog_snap s[5];
    snap(&s[0], 0, -1);
    snap(&s[1], 1, 0);
    snap(&s[2], 2, 1);
    snap(&s[3], 3, 0); /* another child of m0 */
    snap(&s[4], 4, 1); /* another child of m1 */
    CU_ASSERT_STRING_EQUAL(render(s, 5), "* m4\n"
                                         "| * m3\n"
                                         "| | * m2\n"
                                         "|_|/\n"
                                         "* | m1\n"
                                         "|/\n"
                                         "* m0\n");
}

static void children_come_before_parents_whatever_the_clock(void)
{
    vmt_catalog_snap s[2];
    snap(&s[0], 0, -1);
    snap(&s[1], 1, 0);
    s[0].time_ns = 100; /* the parent claims to be newer */
    CU_ASSERT_STRING_EQUAL(render(s, 2), "* m1\n* m0\n");
    size_t order[2];
    CU_ASSERT_EQUAL(vmt_graph_order(s, 2, order), 0);
    CU_ASSERT_EQUAL(order[0], 1);
    CU_ASSERT_EQUAL(order[1], 0);
}

static void a_removed_parent_ends_the_lane(void)
{
    vmt_catalog_snap s[2];
    snap(&s[0], 0, 7); /* parent not listed (removed) */
    snap(&s[1], 1, 0);
    CU_ASSERT_STRING_EQUAL(render(s, 2), "* m1\n* m0\n");
    CU_ASSERT_STRING_EQUAL(render(s, 0), "");
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"a chain is one lane", a_chain_is_one_lane},
        {"siblings join their parent", siblings_join_their_parent},
        {"a join across a lane uses underscores", a_join_across_a_lane_uses_underscores},
        {"children come before parents whatever the clock",
         children_come_before_parents_whatever_the_clock},
        {"a removed parent ends the lane", a_removed_parent_ends_the_lane},
        {NULL, NULL},
    };
    return vmt_test_run("cli/graph", cases, NULL, NULL);
}
