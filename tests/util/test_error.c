/* util/error.c, alloc.c, log.c: thread-local messages, checked allocation, log levels. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "vmtree/util.h"

static void message_is_set_and_wrapped(void)
{
    CU_ASSERT_EQUAL(vmt_error_set(VMT_EIO, "disk %d failed", 3), VMT_EIO);
    CU_ASSERT_STRING_EQUAL(vmt_error_last(), "disk 3 failed");
    CU_ASSERT_EQUAL(vmt_error_wrap(VMT_EIO, "opening %s", "x"), VMT_EIO);
    CU_ASSERT_STRING_EQUAL(vmt_error_last(), "opening x: disk 3 failed");
    vmt_error_errno(VMT_EIO, 2, "open y");
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "open y: No such file"));
    vmt_error_clear();
    CU_ASSERT_STRING_EQUAL(vmt_error_last(), "");
    CU_ASSERT_STRING_EQUAL(vmt_strerror(VMT_ECORRUPT), "VMT_ECORRUPT");
}

static void *other_thread(void *arg)
{
    (void)arg;
    vmt_error_set(VMT_EINVAL, "from the other thread");
    return NULL;
}

static void messages_are_per_thread(void)
{
    pthread_t t;
    vmt_error_set(VMT_EIO, "mine");
    pthread_create(&t, NULL, other_thread, NULL);
    pthread_join(t, NULL);
    CU_ASSERT_STRING_EQUAL(vmt_error_last(), "mine");
}

static void checked_allocation_refuses_overflow(void)
{
    CU_ASSERT_PTR_NULL(vmt_mallocn(SIZE_MAX / 2, 4));
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "overflows"));
    CU_ASSERT_PTR_NULL(vmt_callocn(SIZE_MAX / 8 + 1, 16));
    void *p = vmt_callocn(16, 16);
    CU_ASSERT_PTR_NOT_NULL(p);
    CU_ASSERT_EQUAL(((unsigned char *)p)[255], 0);
    free(p);
    size_t out;
    CU_ASSERT_TRUE(vmt_mul_overflow(SIZE_MAX, 2, &out));
    CU_ASSERT_FALSE(vmt_add_overflow(1, 2, &out));
    CU_ASSERT_EQUAL(out, 3);
}

static int captured;
static void capture(void *ctx, vmt_log_level lvl, const char *msg)
{
    (void)ctx;
    (void)lvl;
    if (strstr(msg, "visible"))
        captured++;
    if (strstr(msg, "hidden"))
        captured += 100;
}

static void log_level_filters(void)
{
    vmt_log_level l;
    CU_ASSERT_EQUAL(vmt_log_parse_level("debug", &l), 0);
    CU_ASSERT_EQUAL(l, VMT_LOG_DEBUG);
    CU_ASSERT_EQUAL(vmt_log_parse_level("loud", &l), VMT_EINVAL);
    vmt_log_set_sink(capture, NULL);
    vmt_log_set_level(VMT_LOG_WARN);
    vmt_warn("visible %d", 1);
    vmt_debug("hidden %d", 2);
    vmt_log_set_sink(NULL, NULL);
    CU_ASSERT_EQUAL(captured, 1);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"message_is_set_and_wrapped", message_is_set_and_wrapped},
        {"messages_are_per_thread", messages_are_per_thread},
        {"checked_allocation_refuses_overflow", checked_allocation_refuses_overflow},
        {"log_level_filters", log_level_filters},
        {NULL, NULL},
    };
    return vmt_test_run("util_error", cases, NULL, NULL);
}
