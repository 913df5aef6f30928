/*
 * cli/cmd_verify.c: `vmtree verify` finds a page damaged on disk and names
 * the snapshots that hold it; a VM is never restored from it.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_util.h"
#include "harness.h"
#include "vmtree/snapshot.h"

#define RECORD_HDR 40 /* docs/store.md: a pack record's header */

static char *cli, *counter, *tmpdir;
static char store[4096];

static bool snapshot(const char *name, char id[33])
{
    char *out = NULL;
    int st = cli_run(&out, NULL, "snapshot", name, "--store", store, "--json", NULL);
    bool ok = st == 0 && cli_json_str(out, "snap", id, 33);
    free(out);
    return ok;
}

/* A page both maps hold at one pfn, and one only A holds (changed in B). */
static void pick_pages(vmt_store *s, const char *ha, const char *hb, vmt_id *shared,
                       vmt_id *a_only)
{
    vmt_id a, b;
    vmt_snap_record *ra = malloc(sizeof(*ra)), *rb = malloc(sizeof(*rb));
    vmt_map *ma = NULL, *mb = NULL;
    CU_ASSERT_FATAL(ra && rb);
    CU_ASSERT_EQUAL_FATAL(vmt_id_from_hex(ha, &a), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_id_from_hex(hb, &b), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_snap_record_read(s, &a, ra), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_snap_record_read(s, &b, rb), 0);
    uint64_t n = ra->mem_size / VMT_PAGE_SIZE;
    CU_ASSERT_EQUAL_FATAL(vmt_map_load(&ma, s, &ra->map_root, n), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_map_load(&mb, s, &rb->map_root, n), 0);
    bool got_shared = false, got_a = false;
    for (uint64_t pfn = 0; pfn < n; pfn++) {
        const vmt_id *x = vmt_map_get(ma, pfn), *y = vmt_map_get(mb, pfn);
        if (vmt_id_is_zero_page(x) || vmt_id_is_zero_page(y))
            continue;
        if (!got_shared && vmt_id_equal(x, y)) {
            *shared = *x;
            got_shared = true;
        } else if (!got_a && !vmt_id_equal(x, y) && pfn >= 0x400) {
            *a_only = *x; /* in the counter's buffer: random, held nowhere else */
            got_a = true;
        }
    }
    CU_ASSERT_FATAL(got_shared && got_a);
    vmt_map_free(ma);
    vmt_map_free(mb);
    free(ra);
    free(rb);
}

/* Flips a byte in the middle of the object's stored payload. */
static void damage(vmt_store *s, const vmt_id *id)
{
    vmt_store_objinfo info;
    char path[4200];
    CU_ASSERT_EQUAL_FATAL(vmt_store_stat(s, id, &info), 0);
    snprintf(path, sizeof(path), "%s/packs/pack-%08u.vpk", store, info.pack);
    int fd = open(path, O_RDWR);
    CU_ASSERT_FATAL(fd >= 0);
    off_t at = (off_t)(info.offset + RECORD_HDR + info.stored_len / 2);
    unsigned char c;
    CU_ASSERT_EQUAL(pread(fd, &c, 1, at), 1);
    c ^= 0x5a;
    CU_ASSERT_EQUAL(pwrite(fd, &c, 1, at), 1);
    close(fd);
}

static bool contains(const char *text, const char *needle)
{
    bool ok = text && strstr(text, needle);
    if (!ok)
        fprintf(stderr, "\n  expected '%s' in:\n%s\n", needle, text ? text : "(null)");
    return ok;
}

static void verify_names_the_snapshots_holding_a_damaged_page(void)
{
    char a[33], b[33], line[256], hs[33], ha[33];
    char *out = NULL, *err = NULL;
    snprintf(store, sizeof(store), "%s/verify", tmpdir);
    CU_ASSERT_FATAL(cli_run(NULL, NULL, "run", counter, "--mem", "64M", "--name", "v",
                            "--detach", "--store", store, "--cmdline",
                            "buf=64 work=200 every=100", NULL) == 0);
    /* The buffer is filled and computing before A. */
    CU_ASSERT_FATAL(cli_wait_step(store, "v", 100, 0, 20000) >= 100);
    CU_ASSERT_FATAL(snapshot("v", a));
    usleep(200000);
    CU_ASSERT_FATAL(snapshot("v", b));
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "stop", "v", "--store", store, NULL), 0);
    CU_ASSERT_EQUAL(cli_run(&out, NULL, "verify", "--store", store, NULL), 0);
    CU_ASSERT(contains(out, "ok\n"));
    free(out);

    vmt_store *s = NULL;
    vmt_store_open_opts o;
    vmt_store_open_opts_init(&o);
    o.read_only = true;
    CU_ASSERT_EQUAL_FATAL(vmt_store_open(&s, store, &o), 0);
    vmt_id shared, a_only;
    pick_pages(s, a, b, &shared, &a_only);
    damage(s, &shared);
    damage(s, &a_only);
    vmt_store_close(s);
    vmt_id_to_hex(&shared, hs);
    vmt_id_to_hex(&a_only, ha);

    CU_ASSERT_EQUAL(cli_run(&out, &err, "verify", "--store", store, NULL), 1);
    snprintf(line, sizeof(line), "object %s", hs);
    CU_ASSERT(contains(out, line));
    snprintf(line, sizeof(line), "object %s", ha);
    CU_ASSERT(contains(out, line));
    /* The shared page: both snapshots; A's own page: A only. */
    const char *p = strstr(out, hs);
    const char *q = p ? strstr(p, "held by") : NULL;
    snprintf(line, sizeof(line), "held by 2 snapshots: %.12s %.12s", a, b);
    CU_ASSERT(q && !strncmp(q, line, strlen(line)));
    p = strstr(out, ha);
    q = p ? strstr(p, "held by") : NULL;
    snprintf(line, sizeof(line), "held by 1 snapshot: %.12s\n", a);
    CU_ASSERT(q && !strncmp(q, line, strlen(line)));
    free(out);
    free(err);

    CU_ASSERT_EQUAL(cli_run(&out, NULL, "verify", "--store", store, "--json", NULL), 1);
    CU_ASSERT(cli_json_valid(out, true));
    CU_ASSERT(contains(out, "\"ok\":false"));
    uint64_t damaged = 0;
    CU_ASSERT(cli_json_u64(out, "damaged", &damaged) && damaged == 2);
    free(out);

    /* Nothing is restored from a damaged page: a clear error instead. */
    CU_ASSERT_EQUAL(cli_run(&out, &err, "branch", a, "--name", "x", "--store", store, NULL),
                    125);
    CU_ASSERT(err && strlen(err) > 0 && strstr(err, "x"));
    free(out);
    free(err);
}

static int setup(void)
{
    cli = vmt_test_cli_path();
    counter = vmt_test_guest_path("counter");
    tmpdir = vmt_test_tmpdir("cli-verify");
    cli_set_binary(cli);
    snprintf(store, sizeof(store), "%s/none", tmpdir ? tmpdir : "/nonexistent");
    return tmpdir ? 0 : 1;
}

static int teardown(void)
{
    cli_kill_all(store);
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
        {"verify names the snapshots holding a damaged page",
         verify_names_the_snapshots_holding_a_damaged_page},
        {NULL, NULL},
    };
    return vmt_test_run("cli/verify", cases, setup, teardown);
}
