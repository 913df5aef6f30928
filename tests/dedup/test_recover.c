/* Recovery at open: uncommitted records are dropped and reported, torn and
 * garbage pack files give clear errors and never a crash. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dd_test.h"

static void put_range(vmt_store *s, uint64_t from, size_t n, vmt_id *ids)
{
    uint8_t *buf = malloc(n * VMT_STORE_PAGE_SIZE);
    const void **p = malloc(n * sizeof(*p));
    for (size_t i = 0; i < n; i++) {
        ddt_page(from + i, buf + i * VMT_STORE_PAGE_SIZE);
        p[i] = buf + i * VMT_STORE_PAGE_SIZE;
    }
    DDT_OK(vmt_store_put_pages(s, p, n, ids, NULL, NULL));
    free(buf);
    free(p);
}

static int read_range(vmt_store *s, uint64_t from, size_t n, const vmt_id *ids)
{
    uint8_t page[VMT_STORE_PAGE_SIZE], want[VMT_STORE_PAGE_SIZE];
    void *dst[1] = {page};
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        ddt_page(from + i, want);
        if (vmt_store_get_pages(s, &ids[i], 1, dst) != 0 || memcmp(page, want, sizeof(page)))
            bad++;
    }
    return bad;
}

static void test_uncommitted_puts_are_dropped_and_reported(void)
{
    char *dir = ddt_store_small("rec1", 1u << 20);
    vmt_id a[500], b[700];
    vmt_store *s = ddt_open(dir, false, 2);
    put_range(s, 0, 500, a);
    DDT_OK(vmt_store_commit(s));
    put_range(s, 1000, 700, b); /* crosses a seal, never committed */
    vmt_store_close(s);
    long long before = (long long)ddt_pack_bytes(dir);
    s = ddt_open(dir, false, 2);
    vmt_store_recovery rec;
    vmt_store_recovery_info(s, &rec);
    CU_ASSERT_EQUAL(rec.records_dropped, 700);
    CU_ASSERT(rec.bytes_dropped > 0);
    CU_ASSERT(rec.packs_removed >= 1);
    CU_ASSERT_EQUAL(read_range(s, 0, 500, a), 0);
    bool has[700];
    DDT_OK(vmt_store_has_many(s, b, 700, has));
    for (int i = 0; i < 700; i++)
        CU_ASSERT_FALSE(has[i]);
    CU_ASSERT((long long)ddt_pack_bytes(dir) < before); /* the tail was cut */
    DDT_OK(vmt_store_verify(s, NULL, NULL));
    /* The store goes on normally after the cut. */
    put_range(s, 1000, 700, b);
    DDT_OK(vmt_store_commit(s));
    vmt_store_close(s);
    s = ddt_open(dir, true, 1);
    CU_ASSERT_EQUAL(read_range(s, 1000, 700, b), 0);
    DDT_OK(vmt_store_verify(s, NULL, NULL));
    vmt_store_close(s);
    ddt_cleanup(dir);
}

static void test_torn_tail_after_commit(void)
{
    char *dir = ddt_store("rec2", NULL);
    vmt_id a[100];
    vmt_store *s = ddt_open(dir, false, 1);
    put_range(s, 0, 100, a);
    DDT_OK(vmt_store_commit(s));
    vmt_store_close(s);
    char *pack = ddt_pack_path(dir, 1);
    long long size = ddt_file_size(pack);
    /* Half a record header, then zeros, as a crash mid-write may leave. */
    int fd = open(pack, O_WRONLY | O_APPEND);
    static const uint8_t torn[300] = {'V', 'M', 'T', 'R', 1, 1};
    CU_ASSERT(write(fd, torn, sizeof(torn)) == (ssize_t)sizeof(torn));
    close(fd);
    s = ddt_open(dir, false, 1);
    CU_ASSERT_EQUAL(ddt_file_size(pack), size);
    CU_ASSERT_EQUAL(read_range(s, 0, 100, a), 0);
    DDT_OK(vmt_store_verify(s, NULL, NULL));
    vmt_store_close(s);
    free(pack);
    ddt_cleanup(dir);
}

static void test_empty_and_garbage_pack_files(void)
{
    char *dir = ddt_store("rec3", NULL);
    vmt_id a[50];
    vmt_store *s = ddt_open(dir, false, 1);
    put_range(s, 0, 50, a);
    DDT_OK(vmt_store_commit(s));
    vmt_store_close(s);
    /* An empty newest pack (a creation cut short) is removed quietly. */
    char *p2 = ddt_pack_path(dir, 2), *p3 = ddt_pack_path(dir, 3);
    ddt_write_file(p2, "", 0);
    s = ddt_open(dir, false, 1);
    CU_ASSERT_EQUAL(ddt_file_size(p2), -1);
    CU_ASSERT_EQUAL(read_range(s, 0, 50, a), 0);
    vmt_store_close(s);
    /* A garbage file with a pack's name is kept, reported, never served. */
    uint8_t junk[10000];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (uint8_t)(i * 7 + 3);
    ddt_write_file(p3, junk, sizeof(junk));
    s = ddt_open(dir, false, 1);
    CU_ASSERT_EQUAL(read_range(s, 0, 50, a), 0);
    vmt_store_verify_stats vs;
    CU_ASSERT_EQUAL(vmt_store_verify(s, NULL, &vs), VMT_ECORRUPT);
    CU_ASSERT(vs.damaged >= 1);
    vmt_id more[10];
    put_range(s, 5000, 10, more); /* writes go to a fresh pack after it */
    DDT_OK(vmt_store_commit(s));
    vmt_store_close(s);
    CU_ASSERT_EQUAL(ddt_file_size(p3), (long long)sizeof(junk));
    s = ddt_open(dir, true, 1);
    CU_ASSERT_EQUAL(read_range(s, 5000, 10, more), 0);
    vmt_store_close(s);
    free(p2);
    free(p3);
    ddt_cleanup(dir);
}

static void test_truncated_sealed_pack(void)
{
    char *dir = ddt_store_small("rec4", 1u << 20);
    vmt_id a[1000];
    vmt_store *s = ddt_open(dir, false, 2);
    put_range(s, 0, 1000, a);
    DDT_OK(vmt_store_commit(s));
    vmt_store_close(s);
    char *p1 = ddt_pack_path(dir, 1);
    long long size = ddt_file_size(p1);
    CU_ASSERT_EQUAL(truncate(p1, size / 2), 0);
    s = ddt_open(dir, false, 2); /* the index no longer fits: rebuilt */
    vmt_store_recovery rec;
    vmt_store_recovery_info(s, &rec);
    CU_ASSERT_TRUE(rec.index_rebuilt);
    CU_ASSERT(rec.records_damaged >= 1);
    /* Objects in the lost half are missing, the others read back. */
    int missing = read_range(s, 0, 1000, a);
    CU_ASSERT(missing > 0 && missing < 1000);
    vmt_store_verify_stats vs;
    CU_ASSERT_EQUAL(vmt_store_verify(s, NULL, &vs), VMT_ECORRUPT);
    vmt_store_close(s);
    free(p1);
    ddt_cleanup(dir);
}

static void test_packs_of_another_store_are_refused(void)
{
    char *d1 = ddt_store("rec5a", NULL), *d2 = ddt_store("rec5b", NULL);
    vmt_id a[20];
    vmt_store *s = ddt_open(d1, false, 1);
    put_range(s, 0, 20, a);
    DDT_OK(vmt_store_commit(s));
    vmt_store_close(s);
    char *src = ddt_pack_path(d1, 1), *dst = ddt_pack_path(d2, 1), *cmd = NULL;
    CU_ASSERT_FATAL(asprintf(&cmd, "cp %s %s", src, dst) > 0);
    CU_ASSERT_EQUAL(system(cmd), 0);
    s = ddt_open(d2, true, 1);
    vmt_store_verify_stats vs;
    CU_ASSERT_EQUAL(vmt_store_verify(s, NULL, &vs), VMT_ECORRUPT);
    vmt_store_close(s);
    free(src);
    free(dst);
    free(cmd);
    ddt_cleanup(d1);
    ddt_cleanup(d2);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"uncommitted puts are dropped and reported",
         test_uncommitted_puts_are_dropped_and_reported},
        {"a torn tail after the last commit is cut", test_torn_tail_after_commit},
        {"empty and garbage pack files", test_empty_and_garbage_pack_files},
        {"a truncated sealed pack", test_truncated_sealed_pack},
        {"packs of another store are refused", test_packs_of_another_store_are_refused},
        {NULL, NULL},
    };
    return vmt_test_run("dedup/recover", cases, NULL, NULL);
}
