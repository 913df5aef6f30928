/*
 * snapshot/catalog.c: the SQLite catalog's schema, snapshot index and refs
 * (compare-and-swap), removal rules, GC roots, refusal of a newer schema,
 * and consistency after a writer is killed in the middle of its updates.
 */
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "snap_fixture.h"
#include "harness.h"

static char *tmp;

static vmt_catalog *open_fresh(void)
{
    vmt_catalog *c = NULL;
    vmt_test_rmtree(tmp);
    free(tmp);
    tmp = vmt_test_tmpdir("catalog");
    CU_ASSERT_PTR_NOT_NULL_FATAL(tmp);
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_open(&c, tmp), 0);
    return c;
}

static int teardown(void)
{
    vmt_test_rmtree(tmp);
    free(tmp);
    return 0;
}

static void rec(vmt_snap_record *r, const vmt_id *parent, uint64_t t, const char *msg)
{
    memset(r, 0, sizeof(*r));
    r->nparents = parent ? 1 : 0;
    if (parent)
        r->parents[0] = *parent;
    r->mem_size = 1 << 20;
    r->vcpus = 1;
    r->time_ns = t;
    strcpy(r->vm_name, "vm1");
    snprintf(r->message, sizeof(r->message), "%s", msg);
}

static void add(vmt_catalog *c, uint64_t n, const vmt_id *parent, uint64_t t, const char *msg)
{
    vmt_snap_record r;
    vmt_id id = fx_fake_id(n);
    rec(&r, parent, t, msg);
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_add_snapshot(c, &id, &r), 0);
}

/* Runs one SQL statement on catalog.db directly; returns the first column. */
static char *sql1(const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    char path[512], *out = NULL;
    snprintf(path, sizeof(path), "%s/catalog.db", tmp);
    CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    CU_ASSERT_EQUAL_FATAL(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    int src = sqlite3_step(st);
    CU_ASSERT_TRUE(src == SQLITE_ROW || src == SQLITE_DONE);
    if (src == SQLITE_ROW && sqlite3_column_text(st, 0))
        out = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return out;
}

static void test_new_catalog_uses_wal_and_records_its_schema(void)
{
    vmt_catalog *c = open_fresh();
    char *mode = sql1("PRAGMA journal_mode");
    char *ver = sql1("SELECT value FROM meta WHERE key = 'schema_version'");
    CU_ASSERT_STRING_EQUAL(mode, "wal");
    CU_ASSERT_STRING_EQUAL(ver, "1");
    free(mode);
    free(ver);
    vmt_catalog_close(c);
    /* Reopening an existing catalog works and keeps its content. */
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_open(&c, tmp), 0);
    add(c, 1, NULL, 10, "x");
    vmt_catalog_close(c);
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_open(&c, tmp), 0);
    vmt_catalog_snap *v = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL(vmt_catalog_list_snapshots(c, &v, &n), 0);
    CU_ASSERT_EQUAL(n, 1);
    free(v);
    vmt_catalog_close(c);
}

static void test_snapshots_list_oldest_first_with_parent_flags(void)
{
    vmt_catalog *c = open_fresh();
    vmt_id a = fx_fake_id(1), b = fx_fake_id(2), gone = fx_fake_id(99);
    vmt_catalog_snap *v = NULL;
    size_t n = 0;

    add(c, 3, &gone, 30, "orphan");
    add(c, 1, NULL, 10, "first line\nsecond line");
    add(c, 2, &a, 20, "child");
    add(c, 2, &a, 20, "child"); /* adding twice is harmless */
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_list_snapshots(c, &v, &n), 0);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    CU_ASSERT_TRUE(vmt_id_equal(&v[0].id, &a));
    CU_ASSERT_FALSE(v[0].has_parent);
    CU_ASSERT_STRING_EQUAL(v[0].message, "first line");
    CU_ASSERT_STRING_EQUAL(v[0].vm_name, "vm1");
    CU_ASSERT_EQUAL(v[0].time_ns, 10);
    CU_ASSERT_TRUE(vmt_id_equal(&v[1].id, &b));
    CU_ASSERT_TRUE(v[1].has_parent && v[1].parent_present);
    CU_ASSERT_TRUE(vmt_id_equal(&v[1].parent, &a));
    CU_ASSERT_TRUE(v[2].has_parent);
    CU_ASSERT_FALSE(v[2].parent_present);
    free(v);
    vmt_catalog_close(c);
}

static void test_refs_compare_and_swap(void)
{
    vmt_catalog *c = open_fresh();
    vmt_id a = fx_fake_id(1), b = fx_fake_id(2), none, got;

    memset(&none, 0, sizeof(none));
    CU_ASSERT_EQUAL(vmt_catalog_get_ref(c, "tag/v1", &got), VMT_ENOENT);
    CU_ASSERT_EQUAL(vmt_catalog_set_ref(c, "tag/v1", &a, &b), VMT_EBUSY); /* absent */
    CU_ASSERT_EQUAL(vmt_catalog_set_ref(c, "tag/v1", &a, &none), 0);      /* create */
    CU_ASSERT_EQUAL(vmt_catalog_set_ref(c, "tag/v1", &b, &none), VMT_EBUSY);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "exists already"));
    CU_ASSERT_EQUAL(vmt_catalog_set_ref(c, "tag/v1", &b, &b), VMT_EBUSY); /* stale expect */
    CU_ASSERT_EQUAL(vmt_catalog_get_ref(c, "tag/v1", &got), 0);
    CU_ASSERT_TRUE(vmt_id_equal(&got, &a));
    CU_ASSERT_EQUAL(vmt_catalog_set_ref(c, "tag/v1", &b, &a), 0);
    CU_ASSERT_EQUAL(vmt_catalog_get_ref(c, "tag/v1", &got), 0);
    CU_ASSERT_TRUE(vmt_id_equal(&got, &b));
    CU_ASSERT_EQUAL(vmt_catalog_set_ref(c, "vm/web/HEAD", &a, NULL), 0); /* overwrite mode */
    CU_ASSERT_EQUAL(vmt_catalog_set_ref(c, "vm/web/HEAD", &b, NULL), 0);
    vmt_catalog_ref *refs = NULL;
    size_t nrefs = 0;
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_list_refs(c, &refs, &nrefs), 0);
    CU_ASSERT_EQUAL_FATAL(nrefs, 2);
    CU_ASSERT_STRING_EQUAL(refs[0].name, "tag/v1");
    CU_ASSERT_TRUE(vmt_id_equal(&refs[0].id, &b));
    CU_ASSERT_STRING_EQUAL(refs[1].name, "vm/web/HEAD");
    CU_ASSERT_TRUE(vmt_id_equal(&refs[1].id, &b));
    free(refs);
    CU_ASSERT_EQUAL(vmt_catalog_delete_ref(c, "tag/v1"), 0);
    CU_ASSERT_EQUAL(vmt_catalog_delete_ref(c, "tag/v1"), VMT_ENOENT);
    static const char *const bad[] = {"v1",          "tag/",     "tag/a b",    "vm/web",
                                      "vm/web/head", "vm//HEAD", "heads/main", "tag/x/y"};
    for (size_t i = 0; i < VMT_ARRAY_SIZE(bad); i++)
        CU_ASSERT_EQUAL(vmt_catalog_set_ref(c, bad[i], &a, NULL), VMT_EINVAL);
    vmt_catalog_close(c);
}

static void test_remove_snapshot_is_refused_while_referenced(void)
{
    vmt_catalog *c = open_fresh();
    vmt_id a = fx_fake_id(1), b = fx_fake_id(2);
    vmt_catalog_snap *v = NULL;
    size_t n = 0;

    add(c, 1, NULL, 10, "base");
    add(c, 2, &a, 20, "child");
    CU_ASSERT_EQUAL(vmt_catalog_set_ref(c, "tag/release", &a, NULL), 0);
    CU_ASSERT_EQUAL(vmt_catalog_set_ref(c, "vm/web/HEAD", &a, NULL), 0);
    CU_ASSERT_EQUAL(vmt_catalog_remove_snapshot(c, &a), VMT_EBUSY);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "tag/release"));
    CU_ASSERT_EQUAL(vmt_catalog_delete_ref(c, "tag/release"), 0);
    CU_ASSERT_EQUAL(vmt_catalog_remove_snapshot(c, &a), VMT_EBUSY);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "vm/web/HEAD"));
    CU_ASSERT_EQUAL(vmt_catalog_set_ref(c, "vm/web/HEAD", &b, NULL), 0);
    CU_ASSERT_EQUAL(vmt_catalog_remove_snapshot(c, &a), 0);
    CU_ASSERT_EQUAL(vmt_catalog_remove_snapshot(c, &a), VMT_ENOENT);
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_list_snapshots(c, &v, &n), 0);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_TRUE(v[0].has_parent);
    CU_ASSERT_FALSE(v[0].parent_present);
    free(v);
    vmt_catalog_close(c);
}

static void test_roots_are_every_indexed_snapshot_and_ref_once(void)
{
    vmt_catalog *c = open_fresh();
    vmt_id a = fx_fake_id(1), x = fx_fake_id(50);
    vmt_id *roots = NULL;
    size_t n = 0;

    add(c, 1, NULL, 10, "a");
    add(c, 2, &a, 20, "b");
    CU_ASSERT_EQUAL(vmt_catalog_set_ref(c, "tag/a", &a, NULL), 0);
    CU_ASSERT_EQUAL(vmt_catalog_set_ref(c, "tag/x", &x, NULL), 0); /* not indexed */
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_roots(c, &roots, &n), 0);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    int found[3] = {0};
    for (size_t i = 0; i < n; i++) {
        vmt_id want[3] = {fx_fake_id(1), fx_fake_id(2), x};
        for (int k = 0; k < 3; k++)
            found[k] += vmt_id_equal(&roots[i], &want[k]);
    }
    CU_ASSERT_TRUE(found[0] == 1 && found[1] == 1 && found[2] == 1);
    free(roots);
    vmt_catalog_close(c);
}

static void test_newer_schema_and_foreign_files_are_refused(void)
{
    vmt_catalog *c = open_fresh();
    vmt_catalog_close(c);
    free(sql1("UPDATE meta SET value = 99 WHERE key = 'schema_version'"));
    c = NULL;
    CU_ASSERT_EQUAL(vmt_catalog_open(&c, tmp), VMT_EUNSUPPORTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "99"));
    CU_ASSERT_PTR_NULL(c);
    /* A file that is not SQLite at all. */
    char path[512];
    snprintf(path, sizeof(path), "%s/catalog.db", tmp);
    unlink(path);
    snprintf(path, sizeof(path), "%s/catalog.db-wal", tmp);
    unlink(path);
    snprintf(path, sizeof(path), "%s/catalog.db", tmp);
    FILE *f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    for (int i = 0; i < 200; i++)
        fputs("this is not a database file, just text. ", f);
    fclose(f);
    CU_ASSERT_EQUAL(vmt_catalog_open(&c, tmp), VMT_ECORRUPT);
    CU_ASSERT_EQUAL(vmt_catalog_open(&c, "/nonexistent/dir"), VMT_EIO);
}

/* The writer killed below: adds snapshot i, then registers VM ki with
 * HEAD i (two statements in one transaction), forever. */
static void writer(const char *dir)
{
    vmt_catalog *c = NULL;
    if (vmt_catalog_open(&c, dir) != 0)
        _exit(2);
    for (uint64_t i = 0;; i++) {
        vmt_snap_record r;
        vmt_catalog_vm vm;
        vmt_id id = fx_fake_id(i + 1000);
        rec(&r, NULL, i, "killed writer");
        memset(&vm, 0, sizeof(vm));
        snprintf(vm.name, sizeof(vm.name), "k%llu", (unsigned long long)(i % 50));
        vm.head = id;
        vm.has_head = true;
        vm.vcpus = 1;
        if (vmt_catalog_add_snapshot(c, &id, &r) != 0 || vmt_catalog_register_vm(c, &vm) != 0)
            _exit(3);
    }
}

static void check_consistent(void)
{
    vmt_catalog *c = NULL;
    vmt_catalog_vm *vms = NULL;
    size_t n = 0;

    char *ok = sql1("PRAGMA integrity_check");
    CU_ASSERT_STRING_EQUAL(ok, "ok");
    free(ok);
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_open(&c, tmp), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_list_vms(c, &vms, &n), 0);
    for (size_t i = 0; i < n; i++) {
        vmt_id head;
        char ref[128];
        /* The VM row and its HEAD were written together, or not at all. */
        CU_ASSERT_TRUE(vms[i].has_head);
        snprintf(ref, sizeof(ref), "vm/%s/HEAD", vms[i].name);
        CU_ASSERT_EQUAL(vmt_catalog_get_ref(c, ref, &head), 0);
        CU_ASSERT_EQUAL(vmt_catalog_resolve(c, vms[i].name, &head), 0);
    }
    free(vms);
    /* Still writable: no lock or journal left behind. */
    vmt_id id = fx_fake_id(7);
    CU_ASSERT_EQUAL(vmt_catalog_set_ref(c, "tag/after-kill", &id, NULL), 0);
    CU_ASSERT_EQUAL(vmt_catalog_delete_ref(c, "tag/after-kill"), 0);
    vmt_catalog_close(c);
}

static void test_killed_writer_leaves_a_consistent_catalog(void)
{
    vmt_catalog *c = open_fresh();
    vmt_catalog_close(c);
    uint64_t st = (uint64_t)time(NULL);
    for (int round = 0; round < 6; round++) {
        pid_t pid = fork();
        CU_ASSERT_FATAL(pid >= 0);
        if (pid == 0)
            writer(tmp);
        struct timespec ts = {0, (long)(20000000 + fx_rand(&st) % 80000000)};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status = 0;
        waitpid(pid, &status, 0);
        CU_ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        check_consistent();
    }
    char *count = sql1("SELECT count(*) FROM snapshots");
    CU_ASSERT_TRUE(count && atoi(count) > 0);
    free(count);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"new catalog uses WAL and records its schema",
         test_new_catalog_uses_wal_and_records_its_schema},
        {"snapshots list oldest first with parent flags",
         test_snapshots_list_oldest_first_with_parent_flags},
        {"refs compare and swap and list by name", test_refs_compare_and_swap},
        {"remove snapshot is refused while referenced",
         test_remove_snapshot_is_refused_while_referenced},
        {"roots are every indexed snapshot and ref once",
         test_roots_are_every_indexed_snapshot_and_ref_once},
        {"newer schema and foreign files are refused",
         test_newer_schema_and_foreign_files_are_refused},
        {"killed writer leaves a consistent catalog",
         test_killed_writer_leaves_a_consistent_catalog},
        {NULL, NULL},
    };
    return vmt_test_run("snapshot/catalog", cases, NULL, teardown);
}
