/*
 * cli/cmd_snap.c and the VM process's snapshot and rollback: rollback
 * continuity, branches, the tree commands over them (log, show, diff, tag,
 * rm, gc), all through build/bin/vmtree with real guests.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_util.h"
#include "harness.h"
#include "vmtree/store.h"

static char *cli, *counter, *tmpdir;
static char store[4096];
static counter_line lines[1 << 16], lines2[1 << 16];

static void new_store(const char *tag)
{
    cli_kill_all(store);
    snprintf(store, sizeof(store), "%s/%s", tmpdir, tag);
}

static bool start(const char *name, const char *cmdline)
{
    char *out = NULL, *err = NULL;
    int st = cli_run(&out, &err, "run", counter, "--mem", "64M", "--name", name, "--detach",
                     "--store", store, "--cmdline", cmdline, NULL);
    if (st != 0)
        fprintf(stderr, "\n  run %s failed (%d): %s%s\n", name, st, out, err);
    free(out);
    free(err);
    return st == 0;
}

/* Snapshots VM name; the new id into id[33]; *pages_new when not NULL. */
static bool snapshot(const char *name, char id[33], uint64_t *pages_new)
{
    char *out = NULL, *err = NULL;
    int st = cli_run(&out, &err, "snapshot", name, "-m", "test", "--store", store, "--json",
                     NULL);
    bool ok = st == 0 && cli_json_valid(out, true) && cli_json_str(out, "snap", id, 33) &&
              (!pages_new || cli_json_u64(out, "pages_new", pages_new));
    if (!ok)
        fprintf(stderr, "\n  snapshot %s failed (%d): %s%s\n", name, st, out, err);
    free(out);
    free(err);
    return ok;
}

static uint64_t stored_pages(void)
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
    return st.objects_by_type[VMT_OBJ_PAGE];
}

/* The byte offset just past the rollback marker in VM name's console. */
static size_t wait_marker(const char *name, unsigned timeout_ms)
{
    char *t = cli_wait_console(store, name, "rolled back to", 0, timeout_ms);
    if (!t)
        return 0;
    const char *m = strstr(t, "rolled back to");
    const char *nl = strchr(m, '\n');
    size_t off = nl ? (size_t)(nl + 1 - t) : 0;
    free(t);
    return off;
}

static void rollback_continues_exactly_from_the_snapshot(void)
{
    new_store("rollback");
    CU_ASSERT_FATAL(start("a", "buf=256 work=50000 every=1"));
    CU_ASSERT_FATAL(cli_wait_step(store, "a", 20, 0, 20000) >= 20);
    char *t = cli_console(store, "a");
    uint64_t before = cli_counter_last(t, 0);
    free(t);
    char snap_a[33];
    CU_ASSERT_FATAL(snapshot("a", snap_a, NULL));
    t = cli_console(store, "a");
    uint64_t after = cli_counter_last(t, 0);
    free(t);
    /* It runs on well past A, then goes back. */
    uint64_t end1 = cli_wait_step(store, "a", after + 200, 0, 30000);
    CU_ASSERT_FATAL(end1 >= after + 200);
    char *out = NULL, *err = NULL;
    CU_ASSERT_EQUAL_FATAL(cli_run(&out, &err, "rollback", "a", snap_a, "--store", store, NULL),
                          0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "a: rolled back to"));
    free(out);
    free(err);
    size_t mark = wait_marker("a", 10000);
    CU_ASSERT_FATAL(mark > 0);
    /* The first run as it was when the rollback came: the text before the
     * marker. */
    t = cli_console(store, "a");
    char *cut = strstr(t, "-- vmtree: rolled back");
    CU_ASSERT_FATAL(cut != NULL);
    *cut = '\0';
    size_t n1 = cli_counter_lines(t, 0, lines, sizeof(lines) / sizeof(lines[0]));
    free(t);
    uint64_t first_end = n1 ? lines[n1 - 1].step : 0;
    for (size_t i = 0; i < n1; i++)
        CU_ASSERT_EQUAL_FATAL(lines[i].step, i + 1); /* every step printed, in order */
    CU_ASSERT_FATAL(cli_wait_step(store, "a", after + 60, mark, 20000) >= after + 60);
    t = cli_console(store, "a");
    size_t n2 = cli_counter_lines(t, mark, lines2, sizeof(lines2) / sizeof(lines2[0]));
    free(t);
    CU_ASSERT_FATAL(n2 >= 50);
    uint64_t f = lines2[0].step;
    /* It went back to where A was taken, not to the boot, not nowhere. */
    CU_ASSERT(f >= before && f <= after + 2);
    CU_ASSERT(f + 100 < first_end);
    size_t compared = 0;
    for (size_t i = 0; i < n2; i++) {
        CU_ASSERT_EQUAL(lines2[i].step, f + i);
        if (lines2[i].step <= first_end && lines2[i].step >= 1) {
            CU_ASSERT_EQUAL(lines2[i].sum, lines[lines2[i].step - 1].sum);
            compared++;
        }
    }
    CU_ASSERT(compared >= 50);
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "stop", "a", "--store", store, NULL), 0);
}

/* Pauses VM name and returns its console's first and last full steps. */
static void pause_and_read(const char *name, uint64_t *first, uint64_t *last)
{
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "pause", name, "--store", store, NULL), 0);
    char *t = cli_console(store, name);
    size_t n = cli_counter_lines(t, 0, lines2, sizeof(lines2) / sizeof(lines2[0]));
    free(t);
    *first = n ? lines2[0].step : 0;
    *last = n ? lines2[n - 1].step : 0;
}

/* Each branch printed the same sums as the original VM for its steps. */
static void same_sums_as(const char *orig, const char *branch)
{
    char *t = cli_console(store, orig);
    size_t n1 = cli_counter_lines(t, 0, lines, sizeof(lines) / sizeof(lines[0]));
    free(t);
    t = cli_console(store, branch);
    size_t n2 = cli_counter_lines(t, 0, lines2, sizeof(lines2) / sizeof(lines2[0]));
    free(t);
    CU_ASSERT(n2 > 0);
    for (size_t i = 0; i < n2; i++) {
        CU_ASSERT_FATAL(lines2[i].step >= 1 && lines2[i].step <= n1);
        CU_ASSERT_EQUAL(lines2[i].sum, lines[lines2[i].step - 1].sum);
    }
}

static void branches_continue_and_the_store_grows_by_their_changes(void)
{
    enum { WORK = 4, SLACK = 16 }; /* pages a step may write; runtime pages */
    new_store("branch");
    CU_ASSERT_FATAL(start("a", "buf=16384 work=4 every=1"));
    CU_ASSERT_FATAL(cli_wait_step(store, "a", 5, 0, 30000) >= 5);
    uint64_t a_first, s_a;
    pause_and_read("a", &a_first, &s_a);
    char snap_a[33];
    CU_ASSERT_FATAL(snapshot("a", snap_a, NULL));
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "resume", "a", "--store", store, NULL), 0);
    uint64_t base = stored_pages();
    CU_ASSERT(base >= 4096); /* the 16 MiB of random words */

    static const char *const names[] = {"b", "c"};
    for (int i = 0; i < 2; i++)
        CU_ASSERT_FATAL(cli_run(NULL, NULL, "branch", snap_a, "--name", names[i], "--detach",
                                "--store", store, NULL) == 0);
    for (int i = 0; i < 2; i++) {
        CU_ASSERT_FATAL(cli_wait_step(store, names[i], s_a + 20, 0, 30000) >= s_a + 20);
        uint64_t first, last, pages_new = 0;
        pause_and_read(names[i], &first, &last);
        /* It continued from A: its first whole line is A's next step. */
        CU_ASSERT(first == s_a + 1 || first == s_a + 2);
        uint64_t p0 = stored_pages();
        char snap[33];
        CU_ASSERT_FATAL(snapshot(names[i], snap, &pages_new));
        uint64_t grown = stored_pages() - p0;
        CU_ASSERT_EQUAL(grown, pages_new);
        /* c computes what b did: where it stopped at b's step, its pages are
         * b's, and deduplication stores none of them again. */
        CU_ASSERT(i > 0 || grown >= 1);
        CU_ASSERT(grown <= WORK * (last - s_a + 1) + SLACK);
        CU_ASSERT(grown < base / 4);
        if (getenv("VMT_TEST_VERBOSE") || grown > WORK * (last - s_a + 1) + SLACK)
            fprintf(stderr, "\n  %s grew by %llu pages over %llu steps\n", names[i],
                    (unsigned long long)grown, (unsigned long long)(last - s_a));
    }
    uint64_t top = 0;
    for (int i = 0; i < 2; i++) {
        uint64_t f, l;
        pause_and_read(names[i], &f, &l);
        top = l > top ? l : top;
    }
    CU_ASSERT_FATAL(cli_wait_step(store, "a", top, 0, 30000) >= top);
    same_sums_as("a", "b");
    same_sums_as("a", "c");
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(cli_run(NULL, NULL, "stop", i ? names[i - 1] : "a", "--store", store,
                                NULL),
                        0);
}

static bool contains(const char *text, const char *needle)
{
    bool ok = text && strstr(text, needle);
    if (!ok)
        fprintf(stderr, "\n  expected '%s' in:\n%s\n", needle, text ? text : "(null)");
    return ok;
}

static void the_tree_shows_heads_tags_and_relative_names(void)
{
    char s1[33], s2[33], s3[33], sb[33], want[128];
    char *out = NULL, *err = NULL;
    new_store("tree");
    CU_ASSERT_FATAL(start("a", "buf=64 work=1000 every=100"));
    CU_ASSERT_FATAL(snapshot("a", s1, NULL) && snapshot("a", s2, NULL) &&
                    snapshot("a", s3, NULL));
    CU_ASSERT_FATAL(cli_run(NULL, NULL, "branch", "a~2", "--name", "b", "--detach", "--store",
                            store, NULL) == 0);
    /* b computes (and changes its buffer) before its snapshot. */
    char *t = cli_console(store, "b");
    uint64_t b0 = cli_counter_last(t, 0);
    free(t);
    CU_ASSERT(cli_wait_step(store, "b", b0 + 100, 0, 20000) >= b0 + 100);
    CU_ASSERT_FATAL(snapshot("b", sb, NULL));
    CU_ASSERT_EQUAL(cli_run(&out, NULL, "tag", "base", "a@HEAD~2", "--store", store, NULL), 0);
    free(out);

    CU_ASSERT_EQUAL(cli_run(&out, &err, "log", "--graph", "--store", store, NULL), 0);
    snprintf(want, sizeof(want), "%.12s (a HEAD)", s3);
    CU_ASSERT(contains(out, want));
    snprintf(want, sizeof(want), "%.12s (b HEAD)", sb);
    CU_ASSERT(contains(out, want));
    snprintf(want, sizeof(want), "%.12s (tag: base)", s1);
    CU_ASSERT(contains(out, want));
    CU_ASSERT(contains(out, "|/"));
    free(out);
    free(err);
    /* log b: b's line of descent only (b's snapshot, s1), not a's later ones. */
    CU_ASSERT_EQUAL(cli_run(&out, NULL, "log", "b", "--store", store, NULL), 0);
    snprintf(want, sizeof(want), "%.12s", sb);
    CU_ASSERT(contains(out, want));
    snprintf(want, sizeof(want), "%.12s", s1);
    CU_ASSERT(contains(out, want));
    snprintf(want, sizeof(want), "%.12s", s3);
    CU_ASSERT(strstr(out, want) == NULL);
    free(out);
    /* Relative names, tags and prefixes resolve to the same snapshot. */
    char prefix[9];
    snprintf(prefix, sizeof(prefix), "%.8s", s1);
    const char *names[] = {"a@HEAD~2", "a~2", "a^^", "b^", "base", s1, prefix};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char id[33] = "";
        CU_ASSERT_EQUAL(cli_run(&out, NULL, "show", names[i], "--store", store, "--json", NULL),
                        0);
        CU_ASSERT(cli_json_valid(out, true) && cli_json_str(out, "id", id, sizeof(id)));
        CU_ASSERT_STRING_EQUAL(id, s1);
        free(out);
    }
    CU_ASSERT_EQUAL(cli_run(&out, NULL, "diff", s1, sb, "--store", store, "--json", NULL), 0);
    uint64_t pages = 0;
    CU_ASSERT(cli_json_valid(out, true) && cli_json_u64(out, "pages", &pages) && pages > 0);
    free(out);
    CU_ASSERT_EQUAL(cli_run(&out, NULL, "diff", s1, s1, "--store", store, NULL), 0);
    CU_ASSERT(contains(out, "0 pages differ"));
    free(out);
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "stop", "a", "--store", store, NULL), 0);
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "stop", "b", "--store", store, NULL), 0);
}

static void removing_a_snapshot_keeps_its_children_whole(void)
{
    char s1[33], s2[33], s3[33], want[128];
    char *out = NULL, *err = NULL;
    new_store("rm");
    CU_ASSERT_FATAL(start("a", "buf=1024 work=2000 every=100"));
    CU_ASSERT_FATAL(snapshot("a", s1, NULL));
    usleep(100000);
    CU_ASSERT_FATAL(snapshot("a", s2, NULL));
    usleep(100000);
    CU_ASSERT_FATAL(snapshot("a", s3, NULL));
    /* A running VM's HEAD cannot go. */
    CU_ASSERT_EQUAL(cli_run(&out, &err, "rm", s3, "--force", "--store", store, NULL), 1);
    CU_ASSERT(contains(err, "HEAD of running VM a"));
    free(out);
    free(err);
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "stop", "a", "--store", store, NULL), 0);
    /* The middle one goes; its child still restores and verifies. */
    CU_ASSERT_EQUAL(cli_run(&out, &err, "rm", s2, "--store", store, "--json", NULL), 0);
    CU_ASSERT(cli_json_valid(out, true));
    snprintf(want, sizeof(want), "\"removed\":[\"%s\"]", s2);
    CU_ASSERT(contains(out, want));
    free(out);
    free(err);
    CU_ASSERT_EQUAL(cli_run(&out, NULL, "log", "--store", store, NULL), 0);
    CU_ASSERT(contains(out, "(parent removed)"));
    free(out);
    uint64_t reclaimed = 0;
    CU_ASSERT_EQUAL(cli_run(&out, &err, "gc", "--min-live", "1", "--store", store, "--json",
                            NULL),
                    0);
    CU_ASSERT(cli_json_valid(out, true) && cli_json_u64(out, "reclaimed_bytes", &reclaimed));
    CU_ASSERT(reclaimed > 0);
    free(out);
    free(err);
    CU_ASSERT_EQUAL(cli_run(&out, &err, "verify", "--store", store, NULL), 0);
    CU_ASSERT(contains(out, "ok"));
    free(out);
    free(err);
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "branch", s3, "--name", "b", "--detach", "--store",
                            store, NULL),
                    0);
    CU_ASSERT(cli_wait_step(store, "b", 1, 0, 20000) >= 1);
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "stop", "b", "--store", store, NULL), 0);
    /* A stopped VM's HEAD goes only with --force, which deletes the ref. */
    CU_ASSERT_EQUAL(cli_run(&out, &err, "rm", s1, "--store", store, NULL), 0);
    free(out);
    free(err);
    CU_ASSERT_EQUAL(cli_run(&out, &err, "rm", s3, "--store", store, NULL), 1);
    CU_ASSERT(contains(err, "--force"));
    free(out);
    free(err);
    CU_ASSERT_EQUAL(cli_run(&out, &err, "rm", s3, "--force", "--store", store, NULL), 0);
    CU_ASSERT(contains(out, "deleted ref vm/a/HEAD"));
    free(out);
    free(err);
    CU_ASSERT_EQUAL(cli_run(&out, NULL, "log", "--store", store, "--json", NULL), 0);
    CU_ASSERT_STRING_EQUAL(out, "[]\n");
    free(out);
}

/* Holds the store's writer lock in a child for `ms`; returns its pid once
 * it holds it. */
static pid_t hold_lock(unsigned ms)
{
    int pfd[2];
    CU_ASSERT_FATAL(pipe(pfd) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        vmt_store *s = NULL;
        char ok = vmt_store_open(&s, store, NULL) == 0 ? 'y' : 'n';
        if (write(pfd[1], &ok, 1) != 1)
            _exit(1);
        usleep(ms * 1000);
        vmt_store_close(s);
        _exit(0);
    }
    char c = 0;
    CU_ASSERT(read(pfd[0], &c, 1) == 1 && c == 'y');
    close(pfd[0]);
    close(pfd[1]);
    return pid;
}

static void writers_take_turns_on_the_store(void)
{
    char id[33], want[160];
    char *out = NULL, *err = NULL;
    new_store("lock");
    setenv("VMTREE_LOCK_WAIT", "1", 1); /* read by the VM process at its start */
    CU_ASSERT_FATAL(start("a", "buf=64 work=1000 every=1000"));
    unsetenv("VMTREE_LOCK_WAIT");
    /* Held briefly: the snapshot waits its turn and succeeds. */
    pid_t holder = hold_lock(300);
    CU_ASSERT(snapshot("a", id, NULL));
    waitpid(holder, NULL, 0);
    /* Held too long: a clear error naming the holder; the VM runs on. */
    holder = hold_lock(3000);
    CU_ASSERT_EQUAL(cli_run(&out, &err, "snapshot", "a", "--store", store, NULL), 1);
    snprintf(want, sizeof(want), "is open for writing by process %ld", (long)holder);
    CU_ASSERT(contains(err, want));
    CU_ASSERT(contains(err, "still busy after 1 s"));
    free(out);
    free(err);
    CU_ASSERT_EQUAL(cli_run(&out, NULL, "status", "a", "--store", store, NULL), 0);
    CU_ASSERT(contains(out, "state      running"));
    free(out);
    /* Readers never wait for the writer. */
    CU_ASSERT_EQUAL(cli_run(&out, NULL, "log", "--store", store, NULL), 0);
    snprintf(want, sizeof(want), "%.12s (a HEAD)", id);
    CU_ASSERT(contains(out, want));
    free(out);
    waitpid(holder, NULL, 0);
    CU_ASSERT(snapshot("a", id, NULL));
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "stop", "a", "--store", store, NULL), 0);
}

static int setup(void)
{
    cli = vmt_test_cli_path();
    counter = vmt_test_guest_path("counter");
    tmpdir = vmt_test_tmpdir("cli-snap");
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
        {"rollback continues exactly from the snapshot",
         rollback_continues_exactly_from_the_snapshot},
        {"branches continue and the store grows by their changes",
         branches_continue_and_the_store_grows_by_their_changes},
        {"the tree shows HEADs, tags and relative names",
         the_tree_shows_heads_tags_and_relative_names},
        {"removing a snapshot keeps its children whole",
         removing_a_snapshot_keeps_its_children_whole},
        {"writers take turns on the store", writers_take_turns_on_the_store},
        {NULL, NULL},
    };
    return vmt_test_run("cli/snap", cases, setup, teardown);
}
