/* vmtree store init|stats|verify|gc|train-dict (cli/cmd_store.c, through
 * the vmt_cli library, or compiled in with a stand-in for vmt_cli_fail). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "dd_test.h"

#ifndef DD_HAVE_VMT_CLI
int vmt_cli_fail(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "vmtree: %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}
#endif

/* Runs `vmtree store ARGS...` in a child; returns its status, output in out. */
static int run(char *out, size_t cap, const char *a1, const char *a2, const char *a3,
               const char *a4, const char *a5)
{
    int fds[2];
    CU_ASSERT_FATAL(pipe(fds) == 0);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        char *argv[] = {"store", (char *)a1, (char *)a2, (char *)a3, (char *)a4, (char *)a5, NULL};
        int argc = 1;
        while (argv[argc])
            argc++;
        int rc = vmt_cli_store(argc, argv);
        fflush(stdout);
        _exit(rc);
    }
    close(fds[1]);
    size_t len = 0;
    ssize_t n;
    while (len + 1 < cap && (n = read(fds[0], out + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    out[len] = '\0';
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_every_command_has_help(void)
{
    static char out[1 << 14];
    const char *cmds[] = {"init", "stats", "verify", "gc", "train-dict"};
    for (size_t i = 0; i < 5; i++) {
        CU_ASSERT_EQUAL(run(out, sizeof(out), cmds[i], "--help", NULL, NULL, NULL), 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "usage: vmtree store"));
    }
    CU_ASSERT_EQUAL(run(out, sizeof(out), "--help", NULL, NULL, NULL, NULL), 0);
    CU_ASSERT_EQUAL(run(out, sizeof(out), "frobnicate", NULL, NULL, NULL, NULL), 2);
    CU_ASSERT_EQUAL(run(out, sizeof(out), "stats", "--bogus", NULL, NULL, NULL), 2);
}

static void test_init_stats_verify_gc(void)
{
    static char out[1 << 16];
    char *dir = vmt_test_tmpdir("cli");
    char *store = NULL, *roots = NULL;
    if (ddt_rados())
        store = ddt_location("cli"); /* the same commands on a RADOS store */
    else
        CU_ASSERT_FATAL(asprintf(&store, "%s/s", dir) > 0);
    CU_ASSERT_FATAL(asprintf(&roots, "%s/roots", dir) > 0);
    CU_ASSERT_EQUAL(run(out, sizeof(out), "init", "--store", store, "--pack-size", "1M"), 0);
    CU_ASSERT_EQUAL(run(out, sizeof(out), "init", "--store", store, NULL, NULL), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "already holds a store"));

    vmt_store *s = ddt_open(store, false, 2);
    enum { N = 600 };
    uint8_t *buf = malloc(N * VMT_STORE_PAGE_SIZE);
    const void *p[N];
    vmt_id ids[N];
    for (int i = 0; i < N; i++) {
        ddt_page((uint64_t)i, buf + i * VMT_STORE_PAGE_SIZE);
        p[i] = buf + i * VMT_STORE_PAGE_SIZE;
    }
    DDT_OK(vmt_store_put_pages(s, p, N, ids, NULL, NULL));
    DDT_OK(vmt_store_commit(s));
    vmt_store_close(s);

    CU_ASSERT_EQUAL(run(out, sizeof(out), "stats", "--store", store, "--json", NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"objects\":600,"));
    /* The read counters of vmt_store_stats: opening for stats reads no
     * pack (RADOS fetches lazily; a directory maps in place). */
    static const char *const counters[] = {
        "\"pack_fetches\":0,", "\"pack_cache_hits\":0,", "\"pack_cache_fills\":0,",
        "\"pack_cache_evicted\":0,", "\"pack_cache_damaged\":0,", "\"pack_views_dropped\":0,",
        "\"pack_view_bytes\":", "\"pack_ranged_reads\":0}"};
    for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++)
        if (!strstr(out, counters[i])) {
            fprintf(stderr, "\nno %s in: %s\n", counters[i], out);
            CU_FAIL("a read counter is missing from stats --json");
        }
    CU_ASSERT_EQUAL(run(out, sizeof(out), "stats", "--store", store, NULL, NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "objects         600 ("));
    if (ddt_rados()) {
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "pack reads      0 fetched, 0 from the read cache"));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "read cache      0 filled, 0 evicted"));
    } else {
        CU_ASSERT_PTR_NULL(strstr(out, "pack reads")); /* nothing to say on a directory */
    }
    CU_ASSERT_EQUAL(run(out, sizeof(out), "verify", "--store", store, NULL, NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "600 objects ok, 0 damaged"));

    /* Keep the first 10 pages only. */
    FILE *f = fopen(roots, "w");
    fprintf(f, "# roots\n\n");
    for (int i = 0; i < 10; i++) {
        char hex[VMT_ID_HEX_LEN + 1];
        vmt_id_to_hex(&ids[i], hex);
        fprintf(f, "%s\n", hex);
    }
    fclose(f);
    CU_ASSERT_EQUAL(run(out, sizeof(out), "gc", "--store", store, "--roots", roots), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "10 live objects, 590 dead"));
    CU_ASSERT_EQUAL(run(out, sizeof(out), "verify", "--store", store, "--json", NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"ok\":true"));

    /* Damage one kept page: verify lists it and fails. */
    s = ddt_open(store, true, 1);
    vmt_store_objinfo info;
    DDT_OK(vmt_store_stat(s, &ids[3], &info));
    vmt_store_close(s);
    char *pack = ddt_pack_name(info.pack);
    ddt_obj_flip(store, pack, info.offset + 60, 0x40);
    CU_ASSERT_EQUAL(run(out, sizeof(out), "verify", "--store", store, NULL, NULL), 1);
    char want[64];
    snprintf(want, sizeof(want), "damaged: pack %u offset %llu", info.pack,
             (unsigned long long)info.offset);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, want));

    f = fopen(roots, "w");
    fprintf(f, "not-an-id\n");
    fclose(f);
    CU_ASSERT_EQUAL(run(out, sizeof(out), "gc", "--store", store, "--roots", roots), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, ":1: 'not-an-id'"));
    free(pack);
    free(buf);
    if (ddt_rados())
        ddt_cleanup(store);
    else
        free(store);
    free(roots);
    ddt_cleanup(dir);
}

/* Commands that still need a directory store (live migration:
 * docs/store-backends.md) refuse a RADOS store with the reason,
 * instead of failing somewhere inside; the catalog commands work on it
 * (tests/cli/test_cmd_shared.c). */
static void test_other_commands_refuse_rados(void)
{
    char *cli = vmt_test_cli_path(), *out = NULL;
    size_t len = 0;
    if (access(cli, X_OK) != 0) {
        printf("(no %s: skipped) ", cli);
        free(cli);
        return;
    }
    char *argv[] = {cli, "migrate", "a", "127.0.0.1:1", "--store",
                    "rados://pool/ns?conf=/nonexistent", NULL};
    CU_ASSERT_NOT_EQUAL(vmt_test_spawn(argv, &out, &len), 0);
    CU_ASSERT_PTR_NOT_NULL(out && strstr(out, "live migration into or out of a shared RADOS"));
    free(out);
    free(cli);
}

int main(void)
{
    static const vmt_test_case cases[] = {
        {"every command has --help", test_every_command_has_help},
        {"init, stats, verify, gc", test_init_stats_verify_gc},
        {"other commands refuse a RADOS store", test_other_commands_refuse_rados},
        {NULL, NULL},
    };
    return vmt_test_run("dedup/cmd_store", cases, NULL, NULL);
}
