/*
 * cli/vmproc_snap.c: `vmtree rollback` of a running VM with a HEAD rewrites
 * only the pages that differ (the reply says partial and how many pages),
 * and the counter continues exactly: to HEAD, then to an older snapshot
 * from the new HEAD, eager and --lazy.  Right after `vmtree branch --lazy`
 * (a lazy restore that may still be filling RAM) a rollback is still exact,
 * whichever way it goes.  All through build/bin/vmtree with real guests.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_util.h"
#include "harness.h"

static char *cli, *counter, *tmpdir;
static char store[4096];
static counter_line lines[1 << 16], lines2[1 << 16];

static bool start(const char *name, const char *mem, const char *cmdline)
{
    char *out = NULL, *err = NULL;
    int st = cli_run(&out, &err, "run", counter, "--mem", mem, "--name", name, "--detach",
                     "--store", store, "--cmdline", cmdline, NULL);
    if (st != 0)
        fprintf(stderr, "\n  run %s failed (%d): %s%s\n", name, st, out, err);
    free(out);
    free(err);
    return st == 0;
}

static bool snapshot(const char *name, char id[33])
{
    char *out = NULL, *err = NULL;
    int st = cli_run(&out, &err, "snapshot", name, "--store", store, "--json", NULL);
    bool ok = st == 0 && cli_json_str(out, "snap", id, 33);
    if (!ok)
        fprintf(stderr, "\n  snapshot %s failed (%d): %s%s\n", name, st, out, err);
    free(out);
    free(err);
    return ok;
}

/* Rolls `name` back to `snap`; the reply's JSON in *out (caller frees). */
static bool rollback(const char *name, const char *snap, bool lazy, char **out)
{
    char *err = NULL;
    int st = lazy ? cli_run(out, &err, "rollback", name, snap, "--lazy", "--json", "--store", store,
                            NULL)
                  : cli_run(out, &err, "rollback", name, snap, "--json", "--store", store, NULL);
    if (st != 0)
        fprintf(stderr, "\n  rollback %s %s failed (%d): %s%s\n", name, snap, st, *out, err);
    free(err);
    return st == 0 && cli_json_valid(*out, true);
}

/* The console offset past the n-th rollback marker (1-based), 0 if none. */
static size_t marker_end(const char *name, unsigned n)
{
    char *t = cli_wait_console(store, name, "rolled back to", 0, 10000);
    const char *m = t;
    for (unsigned i = 0; m && i < n; i++) {
        m = strstr(m, "rolled back to");
        if (m && i + 1 < n)
            m++;
    }
    const char *nl = m ? strchr(m, '\n') : NULL;
    size_t off = nl ? (size_t)(nl + 1 - t) : 0;
    free(t);
    return off;
}

/* The sums printed after offset `from` are those of the same steps before
 * offset `upto` (the first run); the first step is in (lo, hi]. */
static void continues_exactly(const char *name, size_t upto, size_t from, uint64_t lo, uint64_t hi)
{
    CU_ASSERT_FATAL(cli_wait_step(store, name, hi + 40, from, 20000) >= hi + 40);
    char *t = cli_console(store, name);
    size_t n2 = cli_counter_lines(t, from, lines2, sizeof(lines2) / sizeof(lines2[0]));
    t[upto] = '\0';
    size_t n1 = cli_counter_lines(t, 0, lines, sizeof(lines) / sizeof(lines[0]));
    free(t);
    CU_ASSERT_FATAL(n2 >= 30 && n1 > 0);
    CU_ASSERT(lines2[0].step > lo && lines2[0].step <= hi + 2);
    size_t compared = 0;
    for (size_t i = 0; i < n2; i++)
        for (size_t k = 0; k < n1; k++)
            if (lines[k].step == lines2[i].step) {
                CU_ASSERT_EQUAL(lines2[i].sum, lines[k].sum);
                compared++;
                break;
            }
    if (compared < 30)
        fprintf(stderr, "\n  %zu lines compared (first %llu, lo %llu hi %llu)\n", compared,
                (unsigned long long)lines2[0].step, (unsigned long long)lo, (unsigned long long)hi);
    CU_ASSERT(compared >= 30);
}

static uint64_t last_step(const char *name)
{
    char *t = cli_console(store, name);
    uint64_t s = cli_counter_last(t, 0);
    free(t);
    return s;
}

static void partial_rollbacks_continue_exactly(void)
{
    snprintf(store, sizeof(store), "%s/partial", tmpdir);
    CU_ASSERT_FATAL(start("a", "256M", "buf=256 work=50000 every=1"));
    CU_ASSERT_FATAL(cli_wait_step(store, "a", 10, 0, 20000) >= 10);
    char s1[33], s2[33];
    uint64_t lo1 = last_step("a");
    CU_ASSERT_FATAL(snapshot("a", s1));
    uint64_t hi1 = last_step("a");
    CU_ASSERT_FATAL(cli_wait_step(store, "a", hi1 + 100, 0, 20000) >= hi1 + 100);
    uint64_t lo2 = last_step("a");
    CU_ASSERT_FATAL(snapshot("a", s2));
    uint64_t hi2 = last_step("a");
    CU_ASSERT_FATAL(cli_wait_step(store, "a", hi2 + 100, 0, 20000) >= hi2 + 100);
    /* To HEAD: only what the guest wrote since. */
    char *out = NULL;
    CU_ASSERT_FATAL(rollback("a", s2, false, &out));
    uint64_t restored = 0, diff = 1, pages = 65536;
    CU_ASSERT(cli_json_u64(out, "partial", &(uint64_t){0}));
    CU_ASSERT(cli_json_u64(out, "pages_restored", &restored));
    CU_ASSERT(cli_json_u64(out, "pages_diff", &diff));
    CU_ASSERT_EQUAL(diff, 0);
    CU_ASSERT(restored > 0 && restored < pages / 16);
    free(out);
    size_t m1 = marker_end("a", 1);
    CU_ASSERT_FATAL(m1 > 0);
    continues_exactly("a", m1, m1, lo2, hi2);
    /* From HEAD s2 back to s1, lazily asked: still partial (few pages). */
    out = NULL;
    CU_ASSERT_FATAL(rollback("a", s1, true, &out));
    CU_ASSERT(cli_json_u64(out, "partial", &(uint64_t){0}));
    CU_ASSERT(cli_json_u64(out, "pages_diff", &diff));
    CU_ASSERT(diff > 0);
    free(out);
    size_t m2 = marker_end("a", 2);
    CU_ASSERT_FATAL(m2 > m1);
    continues_exactly("a", m1, m2, lo1, hi1);
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "stop", "a", "--store", store, NULL), 0);
}

/* A lazy branch of a VM with much RAM in use, rolled back at once: the
 * earlier lazy restore may still be loading (then the rollback is a full
 * one) or not (partial); either way the counter continues exactly. */
static void rollback_right_after_a_lazy_branch(void)
{
    snprintf(store, sizeof(store), "%s/lazy", tmpdir);
    /* buf (KiB): 64 MiB of words the counter keeps in use. */
    CU_ASSERT_FATAL(start("a", "512M", "buf=65536 work=4 every=1"));
    CU_ASSERT_FATAL(cli_wait_step(store, "a", 5, 0, 60000) >= 5);
    char s1[33];
    CU_ASSERT_FATAL(cli_run(NULL, NULL, "pause", "a", "--store", store, NULL) == 0);
    uint64_t at = last_step("a");
    CU_ASSERT_FATAL(snapshot("a", s1));
    CU_ASSERT_FATAL(cli_run(NULL, NULL, "resume", "a", "--store", store, NULL) == 0);
    CU_ASSERT_FATAL(cli_wait_step(store, "a", at + 40, 0, 60000) >= at + 40);
    CU_ASSERT_FATAL(cli_run(NULL, NULL, "branch", s1, "--name", "b", "--lazy", "--detach",
                            "--store", store, NULL) == 0);
    char *out = NULL;
    CU_ASSERT_FATAL(rollback("b", s1, true, &out));
    free(out);
    size_t m = marker_end("b", 1);
    CU_ASSERT_FATAL(m > 0);
    /* The first run is a's console: compare b after the marker with it. */
    CU_ASSERT_FATAL(cli_wait_step(store, "b", at + 40, m, 60000) >= at + 40);
    char *ta = cli_console(store, "a"), *tb = cli_console(store, "b");
    size_t n1 = cli_counter_lines(ta, 0, lines, sizeof(lines) / sizeof(lines[0]));
    size_t n2 = cli_counter_lines(tb, m, lines2, sizeof(lines2) / sizeof(lines2[0]));
    free(ta);
    free(tb);
    CU_ASSERT_FATAL(n2 >= 30);
    CU_ASSERT(lines2[0].step == at + 1 || lines2[0].step == at + 2);
    for (size_t i = 0; i < n2; i++) {
        CU_ASSERT_FATAL(lines2[i].step >= 1 && lines2[i].step <= n1);
        CU_ASSERT_EQUAL(lines2[i].sum, lines[lines2[i].step - 1].sum);
    }
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "stop", "b", "--store", store, NULL), 0);
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "stop", "a", "--store", store, NULL), 0);
}

static int setup(void)
{
    cli = vmt_test_cli_path();
    counter = vmt_test_guest_path("counter");
    tmpdir = vmt_test_tmpdir("cli-rbpart");
    cli_set_binary(cli);
    snprintf(store, sizeof(store), "%s/none", tmpdir ? tmpdir : "/nonexistent");
    return tmpdir ? 0 : 1;
}

static int teardown(void)
{
    char path[4200];
    static const char *const stores[] = {"partial", "lazy"};
    for (size_t i = 0; tmpdir && i < 2; i++) {
        snprintf(path, sizeof(path), "%s/%s", tmpdir, stores[i]);
        cli_kill_all(path);
    }
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
        {"partial rollbacks continue exactly", partial_rollbacks_continue_exactly},
        {"rollback right after a lazy branch", rollback_right_after_a_lazy_branch},
        {NULL, NULL},
    };
    return vmt_test_run("cli/rollback_partial", cases, setup, teardown);
}
