/*
 * The two-host flow with real guests (needs /dev/kvm and the Ceph test
 * cluster; skips, printing why, without either): VM a runs counter on
 * "host 1" against a rados:// store and is snapshotted there; "host 2"
 * (another VMTREE_HOST and run directory, the same store) cannot take the
 * name a (the error names host 1), branches a's HEAD as b, and b's console
 * continues the counter sequence exactly: the steps after the snapshot,
 * with the same checksums a printed for them.  No copy between hosts: b
 * reads a's pages from the shared store.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_util.h"
#include "harness.h"
#include "snap_fixture.h"

static char *cli, *counter, *tmpdir, *url;
static char run1[4096], run2[4096];
static counter_line lines_a[1 << 16], lines_b[1 << 16];

static void as_host(int host)
{
    setenv("VMTREE_HOST", host == 1 ? "host1" : "host2", 1);
    setenv("VMTREE_RUN_DIR", host == 1 ? run1 : run2, 1);
}

/* vmtree ARGS... --store URL as host `host`; prints what it said when the
 * status is not `want` (-1: any non-zero). */
static int on(int host, int want, char **err, const char *const *args)
{
    const char *v[24];
    size_t n = 0;
    while (args[n] && n < 20) {
        v[n] = args[n];
        n++;
    }
    v[n++] = "--store";
    v[n++] = url;
    v[n] = NULL;
    as_host(host);
    char *o = NULL, *e = NULL;
    int st = cli_runv(&o, &e, v);
    bool ok = want < 0 ? st != 0 : st == want;
    if (!ok)
        fprintf(stderr, "\n  host%d: vmtree %s -> %d\n%s%s", host, args[0], st, o, e);
    free(o);
    if (err)
        *err = e;
    else
        free(e);
    return st;
}

/* Pauses VM name (on its host) and reads its console's counter lines. */
static size_t pause_and_read(int host, const char *name, counter_line *lines, size_t max)
{
    on(host, 0, NULL, (const char *[]){"pause", name, NULL});
    as_host(host);
    char *t = cli_console(url, name);
    size_t n = cli_counter_lines(t, 0, lines, max);
    free(t);
    return n;
}

static void a_branch_on_another_host_continues_the_counter(void)
{
    const size_t max = sizeof(lines_a) / sizeof(lines_a[0]);
    char *out = NULL, *err = NULL;
    as_host(1);
    CU_ASSERT_FATAL(on(1, 0, NULL,
                       (const char *[]){"run", counter, "--mem", "64M", "--name", "a", "--detach",
                                        "--cmdline", "buf=16384 work=4 every=1", NULL}) == 0);
    as_host(1);
    CU_ASSERT_FATAL(cli_wait_step(url, "a", 5, 0, 30000) >= 5);
    size_t na = pause_and_read(1, "a", lines_a, max);
    CU_ASSERT_FATAL(na > 0);
    uint64_t s_a = lines_a[na - 1].step;
    CU_ASSERT_FATAL(
        on(1, 0, NULL, (const char *[]){"snapshot", "a", "-m", "taken on host1", NULL}) == 0);
    CU_ASSERT_EQUAL(on(1, 0, NULL, (const char *[]){"resume", "a", NULL}), 0);

    /* Host 2 cannot run a second VM a: host 1's registration holds it. */
    CU_ASSERT_NOT_EQUAL(
        on(2, -1, &err,
           (const char *[]){"run", counter, "--mem", "64M", "--name", "a", "--detach", NULL}),
        0);
    CU_ASSERT(err && strstr(err, "host1"));
    free(err);

    /* Host 2 branches a's HEAD from the shared store. */
    CU_ASSERT_FATAL(
        on(2, 0, NULL, (const char *[]){"branch", "a", "--name", "b", "--detach", NULL}) == 0);
    as_host(2);
    CU_ASSERT_FATAL(cli_wait_step(url, "b", s_a + 20, 0, 30000) >= s_a + 20);
    size_t nb = pause_and_read(2, "b", lines_b, max);
    CU_ASSERT_FATAL(nb >= 10);
    /* It continued from the snapshot: its first whole line is a's next
     * step (or the one after, if the first line was cut), then every step
     * in order. */
    CU_ASSERT(lines_b[0].step == s_a + 1 || lines_b[0].step == s_a + 2);
    for (size_t i = 1; i < nb; i++)
        CU_ASSERT_EQUAL(lines_b[i].step, lines_b[0].step + i);
    /* ... with the sums a printed for the same steps (a runs on to there). */
    uint64_t top = lines_b[nb - 1].step;
    as_host(1);
    CU_ASSERT_FATAL(cli_wait_step(url, "a", top, 0, 30000) >= top);
    na = pause_and_read(1, "a", lines_a, max);
    CU_ASSERT_FATAL(na >= top);
    for (size_t i = 0; i < nb; i++)
        CU_ASSERT_EQUAL(lines_b[i].sum, lines_a[lines_b[i].step - 1].sum);

    /* Each host's ps shows both, the other's as remote. */
    as_host(2);
    const char *ps[] = {"ps", "--store", url, NULL};
    CU_ASSERT_EQUAL(cli_runv(&out, NULL, ps), 0);
    CU_ASSERT(out && strstr(out, "host1") && strstr(out, "host2"));
    free(out);
    CU_ASSERT_EQUAL(on(2, 0, NULL, (const char *[]){"stop", "b", NULL}), 0);
    CU_ASSERT_EQUAL(on(1, 0, NULL, (const char *[]){"stop", "a", NULL}), 0);
}

static int setup(void)
{
    setenv("VMTREE_TEST_BACKEND", "rados", 1);
    cli = vmt_test_cli_path();
    counter = vmt_test_guest_path("counter");
    tmpdir = vmt_test_tmpdir("cli-shared-vm");
    if (!cli || !counter || !tmpdir)
        return 1;
    cli_set_binary(cli);
    snprintf(run1, sizeof(run1), "%s/run-host1", tmpdir);
    snprintf(run2, sizeof(run2), "%s/run-host2", tmpdir);
    url = fx_location("sharedvm"); /* exits 77 (SKIP, printed) without a cluster */
    return url ? 0 : 1;
}

static int teardown(void)
{
    as_host(1);
    cli_kill_all(url);
    as_host(2);
    cli_kill_all(url);
    fx_location_free(url);
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
    signal(SIGPIPE, SIG_IGN);
    static const vmt_test_case cases[] = {
        {"a branch on another host continues the counter",
         a_branch_on_another_host_continues_the_counter},
        {NULL, NULL},
    };
    return vmt_test_run("cli/shared_vm", cases, setup, teardown);
}
