/*
 * cli/cmd_bundle.c: `vmtree export` and `vmtree import` carry snapshots
 * between stores; damaged, truncated and newer-format bundles are refused
 * with a clear error and change nothing.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_util.h"
#include "harness.h"
#include "vmtree/store.h"

#define BUNDLE_MAJOR_AT 8 /* docs/bundle-format.md: u16 major version */

static char *cli, *counter, *tmpdir;
static char store1[4096], store2[4096], bundle[4096];

static bool contains(const char *text, const char *needle)
{
    bool ok = text && strstr(text, needle);
    if (!ok)
        fprintf(stderr, "\n  expected '%s' in:\n%s\n", needle, text ? text : "(null)");
    return ok;
}

static uint64_t objects(const char *store)
{
    vmt_store *s = NULL;
    vmt_store_open_opts o;
    vmt_store_stats st;
    vmt_store_open_opts_init(&o);
    o.read_only = true;
    o.threads = 1;
    memset(&st, 0, sizeof(st));
    CU_ASSERT_EQUAL(vmt_store_open(&s, store, &o), 0);
    CU_ASSERT_EQUAL(vmt_store_get_stats(s, &st), 0);
    vmt_store_close(s);
    return st.objects;
}

static void export_and_import_carry_snapshots_to_another_store(void)
{
    char s1[33], s2[33], id[33];
    char *out = NULL, *err = NULL;
    CU_ASSERT_FATAL(cli_run(NULL, NULL, "run", counter, "--mem", "64M", "--name", "a",
                            "--detach", "--store", store1, "--cmdline",
                            "buf=256 work=5000 every=10", NULL) == 0);
    for (int i = 0; i < 2; i++) {
        CU_ASSERT_EQUAL(cli_run(&out, NULL, "snapshot", "a", "--store", store1, "--json", NULL),
                        0);
        CU_ASSERT(cli_json_str(out, "snap", i ? s2 : s1, 33));
        free(out);
    }
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "stop", "a", "--store", store1, NULL), 0);
    uint64_t bytes = 0;
    CU_ASSERT_EQUAL(cli_run(&out, &err, "export", "a", bundle, "--with-ancestors", "--store",
                            store1, "--json", NULL),
                    0);
    CU_ASSERT(cli_json_valid(out, true) && cli_json_u64(out, "bytes", &bytes) && bytes > 0);
    free(out);
    free(err);

    CU_ASSERT_EQUAL(cli_run(&out, &err, "import", bundle, "--tag", "imp", "--store", store2,
                            "--json", NULL),
                    0);
    CU_ASSERT(cli_json_valid(out, true) && cli_json_str(out, "snapshot", id, sizeof(id)));
    CU_ASSERT_STRING_EQUAL(id, s2);
    CU_ASSERT(contains(out, s1));
    free(out);
    free(err);
    CU_ASSERT_EQUAL(cli_run(&out, NULL, "show", "imp~1", "--store", store2, "--json", NULL), 0);
    CU_ASSERT(cli_json_str(out, "id", id, sizeof(id)));
    CU_ASSERT_STRING_EQUAL(id, s1);
    free(out);
    /* Importing again stores nothing twice. */
    uint64_t before = objects(store2);
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "import", bundle, "--store", store2, NULL), 0);
    CU_ASSERT_EQUAL(objects(store2), before);
    /* A VM runs from the imported snapshot. */
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "branch", "imp", "--name", "b", "--detach", "--store",
                            store2, NULL),
                    0);
    CU_ASSERT(cli_wait_step(store2, "b", 10, 0, 20000) >= 10);
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "stop", "b", "--store", store2, NULL), 0);
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "verify", "--store", store2, NULL), 0);
}

/* Copies the bundle to `path`, then lets `edit` change it. */
static void copy_bundle(const char *path, off_t at, unsigned char xor_with, off_t truncate_to)
{
    char *out = NULL;
    const char *cp[] = {"/bin/cp", bundle, path, NULL};
    CU_ASSERT_EQUAL_FATAL(vmt_test_spawn((char *const *)cp, &out, NULL), 0);
    free(out);
    int fd = open(path, O_RDWR);
    CU_ASSERT_FATAL(fd >= 0);
    if (truncate_to >= 0)
        CU_ASSERT_EQUAL(ftruncate(fd, truncate_to), 0);
    if (at >= 0) {
        unsigned char c;
        CU_ASSERT_EQUAL(pread(fd, &c, 1, at), 1);
        c ^= xor_with;
        CU_ASSERT_EQUAL(pwrite(fd, &c, 1, at), 1);
    }
    close(fd);
}

/* Import must fail with `msg` and leave store2 as it was. */
static void refused(const char *path, const char *msg)
{
    char *out = NULL, *err = NULL, *log1 = NULL, *log2 = NULL;
    uint64_t before = objects(store2);
    CU_ASSERT_EQUAL(cli_run(&log1, NULL, "log", "--store", store2, "--json", NULL), 0);
    CU_ASSERT_EQUAL(cli_run(&out, &err, "import", path, "--store", store2, NULL), 1);
    CU_ASSERT(contains(err, msg));
    CU_ASSERT(contains(err, "vmtree: import: "));
    CU_ASSERT_EQUAL(objects(store2), before);
    CU_ASSERT_EQUAL(cli_run(&log2, NULL, "log", "--store", store2, "--json", NULL), 0);
    CU_ASSERT_STRING_EQUAL(log1, log2);
    free(out);
    free(err);
    free(log1);
    free(log2);
}

static void bad_bundles_are_refused_and_change_nothing(void)
{
    struct stat st;
    CU_ASSERT_EQUAL_FATAL(stat(bundle, &st), 0);
    char path[4200];
    snprintf(path, sizeof(path), "%s/damaged.vmtb", tmpdir);
    copy_bundle(path, st.st_size / 2, 0x40, -1);
    refused(path, path);
    snprintf(path, sizeof(path), "%s/newer.vmtb", tmpdir);
    copy_bundle(path, BUNDLE_MAJOR_AT, 0x03, -1); /* major 1 -> 2 */
    refused(path, "newer");
    snprintf(path, sizeof(path), "%s/truncated.vmtb", tmpdir);
    copy_bundle(path, -1, 0, st.st_size / 3);
    refused(path, path);
    snprintf(path, sizeof(path), "%s/absent.vmtb", tmpdir);
    refused(path, "absent.vmtb");
    refused(counter, "bundle"); /* not a bundle at all */
}

static int setup(void)
{
    cli = vmt_test_cli_path();
    counter = vmt_test_guest_path("counter");
    tmpdir = vmt_test_tmpdir("cli-bundle");
    cli_set_binary(cli);
    if (!tmpdir)
        return 1;
    snprintf(store1, sizeof(store1), "%s/one", tmpdir);
    snprintf(store2, sizeof(store2), "%s/two", tmpdir);
    snprintf(bundle, sizeof(bundle), "%s/a.vmtb", tmpdir);
    return 0;
}

static int teardown(void)
{
    cli_kill_all(store1);
    cli_kill_all(store2);
    if (!getenv("VMT_TEST_KEEP"))
        vmt_test_rmtree(tmpdir);
    free(tmpdir);
    free(cli);
    free(counter);
    return 0;
}

int main(void)
{
    const char *why = vmt_test_kvm_unavailable();
    if (why) {
        printf("SKIP: %s\n", why);
        return VMT_TEST_SKIP;
    }
    static const vmt_test_case cases[] = {
        {"export and import carry snapshots to another store",
         export_and_import_carry_snapshots_to_another_store},
        {"bad bundles are refused and change nothing", bad_bundles_are_refused_and_change_nothing},
        {NULL, NULL},
    };
    return vmt_test_run("cli/bundle", cases, setup, teardown);
}
