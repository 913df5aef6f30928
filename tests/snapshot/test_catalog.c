/*
 * snapshot/catalog.c: the catalog's snapshot index and refs (compare-and-
 * swap), removal rules, GC roots, refusal of a newer format, consistency
 * after a writer is killed in the middle of its updates, and racing
 * writers in several processes losing nothing.  Runs against the SQLite
 * catalog of a directory store and, as test_catalog_rados, against the
 * refs catalog of a RADOS store (snap_fixture.h: fx_location).
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
    fx_location_free(tmp);
    tmp = fx_location("catalog");
    CU_ASSERT_PTR_NOT_NULL_FATAL(tmp);
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_open(&c, tmp), 0);
    return c;
}

static int teardown(void)
{
    fx_location_free(tmp);
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

static void check_wal(void);

static void test_new_catalog_records_its_format(void)
{
    vmt_catalog *c = open_fresh();
    CU_ASSERT_EQUAL(vmt_catalog_shared(c), fx_rados());
    if (fx_rados()) {
        /* The refs catalog marks its format in the store. */
        vmt_store *s = NULL;
        vmt_store_open_opts o;
        uint8_t v[8];
        size_t len = 0;
        uint64_t ver;
        vmt_store_open_opts_init(&o);
        o.read_only = true;
        CU_ASSERT_EQUAL_FATAL(vmt_store_open(&s, tmp, &o), 0);
        CU_ASSERT_EQUAL(vmt_store_ref_get(s, "cat.format", v, sizeof(v), &len, &ver), 0);
        CU_ASSERT_TRUE(len == 4 && v[0] == 1);
        vmt_store_close(s);
        CU_ASSERT_STRING_NOT_EQUAL(vmt_catalog_host(c), "");
    } else {
        CU_ASSERT_STRING_EQUAL(vmt_catalog_host(c), "");
    }
    vmt_catalog_close(c);
    if (!fx_rados())
        check_wal();
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

static void check_wal(void)
{
    char *mode = sql1("PRAGMA journal_mode");
    char *ver = sql1("SELECT value FROM meta WHERE key = 'schema_version'");
    CU_ASSERT_STRING_EQUAL(mode, "wal");
    CU_ASSERT_STRING_EQUAL(ver, "1");
    free(mode);
    free(ver);
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

    vmt_id h = fx_fake_id(60), gone = fx_fake_id(70), three = fx_fake_id(3);
    add(c, 1, NULL, 10, "a");
    add(c, 2, &a, 20, "b");
    add(c, 3, &a, 30, "removed");
    CU_ASSERT_EQUAL(vmt_catalog_remove_snapshot(c, &three), 0); /* not a root any more */
    CU_ASSERT_EQUAL(vmt_catalog_set_ref(c, "tag/a", &a, NULL), 0);
    CU_ASSERT_EQUAL(vmt_catalog_set_ref(c, "tag/x", &x, NULL), 0); /* not indexed */
    CU_ASSERT_EQUAL(vmt_catalog_set_ref(c, "vm/web/HEAD", &h, NULL), 0);
    CU_ASSERT_EQUAL(vmt_catalog_set_ref(c, "tag/gone", &gone, NULL), 0);
    CU_ASSERT_EQUAL(vmt_catalog_delete_ref(c, "tag/gone"), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_roots(c, &roots, &n), 0);
    CU_ASSERT_EQUAL_FATAL(n, 4);
    int found[4] = {0};
    for (size_t i = 0; i < n; i++) {
        vmt_id want[4] = {fx_fake_id(1), fx_fake_id(2), x, h};
        for (int k = 0; k < 4; k++)
            found[k] += vmt_id_equal(&roots[i], &want[k]);
    }
    CU_ASSERT_TRUE(found[0] == 1 && found[1] == 1 && found[2] == 1 && found[3] == 1);
    free(roots);
    vmt_catalog_close(c);
}

/* Opens the store at tmp read-only (refs need no writer lock). */
static vmt_store *store_ro(void)
{
    vmt_store *s = NULL;
    vmt_store_open_opts o;
    vmt_store_open_opts_init(&o);
    o.read_only = true;
    o.threads = 1;
    CU_ASSERT_EQUAL_FATAL(vmt_store_open(&s, tmp, &o), 0);
    return s;
}

/* The refs catalog: a newer format, a damaged entry, no store at all. */
static void newer_format_and_damage_refused_rados(void)
{
    vmt_catalog *c = open_fresh();
    add(c, 1, NULL, 10, "x");
    vmt_catalog_close(c);
    vmt_store *s = store_ro();
    uint8_t v[8];
    size_t len;
    uint64_t ver;
    CU_ASSERT_EQUAL_FATAL(vmt_store_ref_get(s, "cat.format", v, sizeof(v), &len, &ver), 0);
    const uint8_t newer[4] = {99, 0, 0, 0};
    CU_ASSERT_EQUAL_FATAL(vmt_store_ref_set(s, "cat.format", ver, newer, 4, NULL), 0);
    c = NULL;
    CU_ASSERT_EQUAL(vmt_catalog_open(&c, tmp), VMT_EUNSUPPORTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "99"));
    CU_ASSERT_PTR_NULL(c);
    const uint8_t one[4] = {1, 0, 0, 0};
    CU_ASSERT_EQUAL_FATAL(vmt_store_ref_set(s, "cat.format", ver + 1, one, 4, NULL), 0);
    /* A damaged index entry is named, not misread. */
    char key[64], hex[VMT_ID_HEX_LEN + 1];
    vmt_id id = fx_fake_id(1);
    vmt_id_to_hex(&id, hex);
    snprintf(key, sizeof(key), "cat.s.%s", hex);
    CU_ASSERT_EQUAL_FATAL(vmt_store_ref_get(s, key, NULL, 0, &len, &ver), VMT_ERANGE);
    CU_ASSERT_EQUAL_FATAL(vmt_store_ref_set(s, key, ver, "junk", 4, NULL), 0);
    vmt_store_close(s);
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_open(&c, tmp), 0);
    vmt_catalog_snap *snaps = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL(vmt_catalog_list_snapshots(c, &snaps, &n), VMT_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), key));
    vmt_catalog_close(c);
    /* No store in the namespace: nothing is created. */
    char *other = NULL;
    const char *q = strchr(tmp, '?');
    CU_ASSERT_FATAL(asprintf(&other, "%.*s-none%s", (int)(q - tmp), tmp, q) > 0);
    CU_ASSERT_EQUAL(vmt_catalog_open(&c, other), VMT_ENOENT);
    free(other);
}

static void test_newer_format_and_foreign_files_are_refused(void)
{
    if (fx_rados()) {
        newer_format_and_damage_refused_rados();
        return;
    }
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
static void writer(const char *dir, int ready_fd)
{
    vmt_catalog *c = NULL;
    if (vmt_catalog_open(&c, dir) != 0)
        _exit(2);
    /* Open (on RADOS that takes a while, more under ASan): the kill should
     * land among the updates, not before them. */
    if (write(ready_fd, "r", 1) != 1)
        _exit(4);
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

    if (!fx_rados()) {
        char *ok = sql1("PRAGMA integrity_check");
        CU_ASSERT_STRING_EQUAL(ok, "ok");
        free(ok);
    }
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_open(&c, tmp), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_list_vms(c, &vms, &n), 0);
    for (size_t i = 0; i < n; i++) {
        vmt_id head;
        char ref[128];
        /* SQLite: the VM row and its HEAD were written together, or not
         * at all.  Refs catalog: the registration claims the name first,
         * then HEAD is set; a kill in between leaves a registration
         * (of a dead process) whose HEAD is as it was: none for a new name. */
        if (!fx_rados())
            CU_ASSERT_TRUE(vms[i].has_head);
        if (!vms[i].has_head)
            continue;
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
        int pfd[2];
        char b;
        CU_ASSERT_FATAL(pipe(pfd) == 0);
        pid_t pid = fork();
        CU_ASSERT_FATAL(pid >= 0);
        if (pid == 0)
            writer(tmp, pfd[1]);
        close(pfd[1]);
        CU_ASSERT_EQUAL(read(pfd[0], &b, 1), 1); /* it opened the catalog */
        close(pfd[0]);
        struct timespec ts = {0, (long)(20000000 + fx_rand(&st) % 80000000)};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status = 0;
        waitpid(pid, &status, 0);
        CU_ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        check_consistent();
    }
    vmt_catalog *c2 = NULL;
    vmt_catalog_snap *v = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_open(&c2, tmp), 0);
    CU_ASSERT_EQUAL(vmt_catalog_list_snapshots(c2, &v, &n), 0);
    CU_ASSERT_TRUE(n > 0);
    free(v);
    vmt_catalog_close(c2);
}

/* Names with dots (the refs catalog writes them with '@' in its keys) and
 * the longest names come back as they were, in name order; a deleted tag
 * can be made again. */
static void test_names_with_dots_round_trip(void)
{
    vmt_catalog *c = open_fresh();
    vmt_id a = fx_fake_id(1), b = fx_fake_id(2), none, got;
    char longest[VMT_SNAP_NAME_MAX], ref[VMT_CATALOG_REF_MAX];
    memset(&none, 0, sizeof(none));
    memset(longest, '.', sizeof(longest) - 1);
    longest[0] = 'L';
    longest[sizeof(longest) - 1] = '\0';
    static const char *const tags[] = {"a.b", "a..b", "x.tmp", "a-b_c"};
    for (size_t i = 0; i < VMT_ARRAY_SIZE(tags); i++) {
        snprintf(ref, sizeof(ref), "tag/%s", tags[i]);
        CU_ASSERT_EQUAL(vmt_catalog_set_ref(c, ref, &a, &none), 0);
    }
    snprintf(ref, sizeof(ref), "vm/%s/HEAD", longest);
    CU_ASSERT_EQUAL(vmt_catalog_set_ref(c, ref, &b, NULL), 0);
    CU_ASSERT_EQUAL(vmt_catalog_resolve(c, longest, &got), 0);
    CU_ASSERT_TRUE(vmt_id_equal(&got, &b));
    CU_ASSERT_EQUAL(vmt_catalog_resolve(c, "a..b", &got), 0);
    CU_ASSERT_TRUE(vmt_id_equal(&got, &a));
    vmt_catalog_ref *refs = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_list_refs(c, &refs, &n), 0);
    CU_ASSERT_EQUAL_FATAL(n, 5);
    CU_ASSERT_STRING_EQUAL(refs[0].name, "tag/a-b_c");
    CU_ASSERT_STRING_EQUAL(refs[1].name, "tag/a..b");
    CU_ASSERT_STRING_EQUAL(refs[2].name, "tag/a.b");
    CU_ASSERT_STRING_EQUAL(refs[3].name, "tag/x.tmp");
    CU_ASSERT_STRING_EQUAL(refs[4].name, ref);
    free(refs);
    CU_ASSERT_EQUAL(vmt_catalog_delete_ref(c, "tag/a.b"), 0);
    CU_ASSERT_EQUAL(vmt_catalog_get_ref(c, "tag/a.b", &got), VMT_ENOENT);
    CU_ASSERT_EQUAL(vmt_catalog_set_ref(c, "tag/a.b", &b, &a), VMT_EBUSY); /* gone */
    CU_ASSERT_EQUAL(vmt_catalog_set_ref(c, "tag/a.b", &b, &none), 0);
    CU_ASSERT_EQUAL(vmt_catalog_get_ref(c, "tag/a.b", &got), 0);
    CU_ASSERT_TRUE(vmt_id_equal(&got, &b));
    vmt_catalog_close(c);
}

enum { RACERS = 3, RACE_STEPS = 20 };

/* The n whose fx_fake_id is id (n <= RACERS * RACE_STEPS), else -1. */
static int step_of(const vmt_id *id)
{
    for (int n = 0; n <= RACERS * RACE_STEPS; n++) {
        vmt_id f = fx_fake_id((uint64_t)n + 5000);
        if (vmt_id_equal(&f, id))
            return n;
    }
    return -1;
}

/* A racer: RACE_STEPS times, indexes a snapshot of its own and advances
 * the shared tag/counter by one with compare-and-swap, reading again after
 * each conflict.  Exits 0, or 10 + the step that failed. */
static void racer(const char *loc, int w)
{
    vmt_catalog *c = NULL;
    if (vmt_catalog_open(&c, loc) != 0)
        _exit(2);
    for (int i = 0; i < RACE_STEPS; i++) {
        vmt_snap_record r;
        vmt_id id = fx_fake_id((uint64_t)(w * 1000 + i + 1));
        rec(&r, NULL, (uint64_t)(w * 1000 + i), "racer");
        if (vmt_catalog_add_snapshot(c, &id, &r) != 0)
            _exit(10 + i);
        for (;;) {
            vmt_id cur, next;
            int n;
            if (vmt_catalog_get_ref(c, "tag/counter", &cur) != 0 || (n = step_of(&cur)) < 0)
                _exit(40 + i);
            next = fx_fake_id((uint64_t)n + 1 + 5000);
            int rc = vmt_catalog_set_ref(c, "tag/counter", &next, &cur);
            if (rc == 0)
                break;
            if (rc != VMT_EBUSY || !strstr(vmt_error_last(), "tag/counter"))
                _exit(70 + i);
        }
    }
    vmt_catalog_close(c);
    _exit(0);
}

/* Processes racing on one catalog lose nothing: every snapshot they index
 * is there and every compare-and-swap increment of the shared tag landed
 * exactly once.  A stale expect is refused with VMT_EBUSY naming the ref. */
static void test_racing_processes_lose_nothing(void)
{
    vmt_catalog *c = open_fresh();
    vmt_id zero = fx_fake_id(5000), none, cur, stale;
    memset(&none, 0, sizeof(none));
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_set_ref(c, "tag/counter", &zero, &none), 0);
    pid_t pids[RACERS];
    for (int w = 0; w < RACERS; w++) {
        pids[w] = fork();
        CU_ASSERT_FATAL(pids[w] >= 0);
        if (pids[w] == 0)
            racer(tmp, w);
    }
    for (int w = 0; w < RACERS; w++) {
        int st = 0;
        waitpid(pids[w], &st, 0);
        CU_ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            fprintf(stderr, "(racer %d: status %d) ", w, st);
    }
    CU_ASSERT_EQUAL(vmt_catalog_get_ref(c, "tag/counter", &cur), 0);
    CU_ASSERT_EQUAL(step_of(&cur), RACERS * RACE_STEPS);
    vmt_catalog_snap *v = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_list_snapshots(c, &v, &n), 0);
    CU_ASSERT_EQUAL(n, RACERS * RACE_STEPS);
    free(v);
    /* A writer that read the tag before another process moved it loses. */
    stale = cur;
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        vmt_catalog *o = NULL;
        vmt_id x = fx_fake_id(1);
        _exit(vmt_catalog_open(&o, tmp) == 0 &&
                      vmt_catalog_set_ref(o, "tag/counter", &x, &stale) == 0
                  ? 0
                  : 1);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    CU_ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CU_ASSERT_EQUAL(vmt_catalog_set_ref(c, "tag/counter", &zero, &stale), VMT_EBUSY);
    CU_ASSERT_PTR_NOT_NULL(strstr(vmt_error_last(), "ref tag/counter is at"));
    vmt_catalog_close(c);
}

int main(void)
{
    /* librados (the _rados variant) writes to sockets a forked child's exit
     * may close: an error it handles, not a signal that kills the suite. */
    signal(SIGPIPE, SIG_IGN);
    static const vmt_test_case cases[] = {
        {"new catalog records its format (SQLite: WAL, schema)",
         test_new_catalog_records_its_format},
        {"snapshots list oldest first with parent flags",
         test_snapshots_list_oldest_first_with_parent_flags},
        {"refs compare and swap and list by name", test_refs_compare_and_swap},
        {"remove snapshot is refused while referenced",
         test_remove_snapshot_is_refused_while_referenced},
        {"roots are every indexed snapshot and ref once",
         test_roots_are_every_indexed_snapshot_and_ref_once},
        {"newer format and foreign files are refused",
         test_newer_format_and_foreign_files_are_refused},
        {"killed writer leaves a consistent catalog",
         test_killed_writer_leaves_a_consistent_catalog},
        {"racing processes lose nothing", test_racing_processes_lose_nothing},
        {"names with dots round trip", test_names_with_dots_round_trip},
        {NULL, NULL},
    };
    return vmt_test_run("snapshot/catalog", cases, NULL, teardown);
}
