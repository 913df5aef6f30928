/*
 * Every vmtree command as a user meets it: --help on each, --json output
 * that parses on each whose output is data, and clear one-line errors for
 * unknown and ambiguous snapshot names.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_util.h"
#include "harness.h"
#include "vmtree/snapshot.h"

static char *cli, *counter, *tmpdir;
static char store[4096];

static bool contains(const char *text, const char *needle)
{
    bool ok = text && strstr(text, needle);
    if (!ok)
        fprintf(stderr, "\n  expected '%s' in:\n%s\n", needle, text ? text : "(null)");
    return ok;
}

static void every_command_has_help(void)
{
    char *out = NULL;
    CU_ASSERT_EQUAL_FATAL(cli_run(&out, NULL, "--help", NULL), 0);
    const char *p = strstr(out, "commands:\n");
    CU_ASSERT_FATAL(p != NULL);
    int n = 0;
    for (p = strchr(p, '\n') + 1; p && !strncmp(p, "  ", 2); p = strchr(p, '\n'), p = p ? p + 1 : p) {
        char name[32], want[64];
        if (sscanf(p, " %31s", name) != 1)
            break;
        char *help = NULL, *err = NULL;
        int st = cli_run(&help, &err, name, "--help", NULL);
        snprintf(want, sizeof(want), "usage: vmtree %s",
                 !strcmp(name, "logs") ? "console" : name);
        CU_ASSERT_EQUAL(st, 0);
        CU_ASSERT(!strncmp(help, want, strlen(want)));
        CU_ASSERT(strlen(help) > 100); /* says what it does, not only the synopsis */
        if (st != 0 || strncmp(help, want, strlen(want)))
            fprintf(stderr, "\n  %s --help (%d): %s%s\n", name, st, help, err);
        free(help);
        free(err);
        n++;
    }
    CU_ASSERT(n >= 20);
    free(out);
}

/* Runs a command that must succeed with one JSON object or array on
 * stdout and nothing on stderr; returns stdout (caller frees). */
static char *json_ok(const char *const *args)
{
    char *out = NULL, *err = NULL;
    int st = cli_runv(&out, &err, args);
    bool ok = st == 0 && cli_json_valid(out, true) && err[0] == '\0';
    CU_ASSERT(ok);
    if (!ok)
        fprintf(stderr, "\n  %s --json (%d): [%s] [%s]\n", args[0], st, out, err);
    free(err);
    return out;
}

#define JSON(...)                                                                                  \
    do {                                                                                           \
        const char *a_[] = {__VA_ARGS__, "--store", store, "--json", NULL};                       \
        free(json_ok(a_));                                                                         \
    } while (0)

static void every_data_command_prints_valid_json(void)
{
    char bundle[4200], store2[4200], id[33];
    snprintf(store, sizeof(store), "%s/json", tmpdir);
    snprintf(store2, sizeof(store2), "%s/json2", tmpdir);
    snprintf(bundle, sizeof(bundle), "%s/b.vmtb", tmpdir);
    JSON("run", counter, "--mem", "64M", "--name", "a", "--detach", "--cmdline", "every=1000");
    JSON("ps");
    JSON("status", "a");
    JSON("pause", "a");
    JSON("resume", "a");
    const char *snap[] = {"snapshot", "a", "-m", "one \"quoted\"\nline", "--store", store,
                          "--json", NULL};
    char *out = json_ok(snap);
    CU_ASSERT(cli_json_str(out, "snap", id, sizeof(id)));
    free(out);
    JSON("snapshot", "a");
    JSON("branch", "a~1", "--name", "b", "--detach");
    JSON("rollback", "a", "a~1");
    JSON("snapshot", "a");
    JSON("log");
    JSON("log", "--graph");
    JSON("log", "a");
    JSON("show", "a");
    JSON("diff", id, "a");
    JSON("tag", "first", id);
    JSON("tag");
    JSON("export", "a", bundle, "--with-ancestors");
    const char *imp[] = {"import", bundle, "--store", store2, "--json", NULL};
    free(json_ok(imp));
    JSON("stop", "b");
    JSON("rm", id, "--force"); /* tagged, and stopped b's HEAD */
    JSON("gc", "--dry-run");
    JSON("verify");
    JSON("stop", "a");
    char *help = NULL;
    cli_run(&help, NULL, "--help", NULL);
    if (help && strstr(help, "\n  store "))
        JSON("store", "stats");
    free(help);
}

static void unknown_and_ambiguous_names_are_clear_errors(void)
{
    char *out = NULL, *err = NULL;
    snprintf(store, sizeof(store), "%s/names", tmpdir);
    /* Two snapshots whose ids share the prefix abcd (catalog entries only). */
    CU_ASSERT_EQUAL_FATAL(cli_run(NULL, NULL, "run", counter, "--name", "a", "--detach",
                                  "--store", store, "--cmdline", "every=1000", NULL),
                          0);
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "stop", "a", "--store", store, NULL), 0);
    vmt_catalog *c = NULL;
    vmt_snap_record *r = calloc(1, sizeof(*r));
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_open(&c, store), 0);
    for (int i = 0; i < 2; i++) {
        vmt_id id;
        memset(&id, i, sizeof(id));
        id.b[0] = 0xab;
        id.b[1] = 0xcd;
        snprintf(r->vm_name, sizeof(r->vm_name), "fake");
        r->mem_size = 64 << 20;
        CU_ASSERT_EQUAL(vmt_catalog_add_snapshot(c, &id, r), 0);
    }
    vmt_catalog_close(c);
    free(r);

    static const struct {
        const char *args[5];
        const char *says;
    } cases[] = {
        {{"show", "abcd"}, "ambiguous"},
        {{"show", "nosuch"}, "nosuch"},
        {{"show", "a@HEAD"}, "no HEAD"},
        {{"show", "x@HEAD~"}, "x"},
        {{"diff", "abcd0000", "abcd"}, "abcd0000"},
        {{"rollback", "a", "abcd"}, "ambiguous"},
        {{"branch", "ffff", "--name", "x"}, "ffff"},
        {{"log", "nosuch~2"}, "nosuch"},
        {{"export", "nosuch", "/dev/null"}, "nosuch"},
        {{"tag", "t", "nosuch"}, "nosuch"},
        {{"rm", "abcd"}, "ambiguous"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *args[8];
        size_t n = 0;
        for (; n < 5 && cases[i].args[n]; n++)
            args[n] = cases[i].args[n];
        args[n++] = "--store";
        args[n++] = store;
        args[n] = NULL;
        int st = cli_runv(&out, &err, args);
        CU_ASSERT(st == 1 || st == 125);
        CU_ASSERT(contains(err, cases[i].says));
        /* One line, prefixed with the command. */
        CU_ASSERT(err && strchr(err, '\n') == err + strlen(err) - 1);
        CU_ASSERT(err && !strncmp(err, "vmtree: ", 8));
        free(out);
        free(err);
    }
}

static int setup(void)
{
    cli = vmt_test_cli_path();
    counter = vmt_test_guest_path("counter");
    tmpdir = vmt_test_tmpdir("cli-help");
    cli_set_binary(cli);
    snprintf(store, sizeof(store), "%s/none", tmpdir ? tmpdir : "/nonexistent");
    return tmpdir ? 0 : 1;
}

static int teardown(void)
{
    char other[4200];
    snprintf(other, sizeof(other), "%s/json", tmpdir);
    cli_kill_all(other);
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
        {"every command has --help", every_command_has_help},
        {"every data command prints valid JSON", every_data_command_prints_valid_json},
        {"unknown and ambiguous names are clear errors",
         unknown_and_ambiguous_names_are_clear_errors},
        {NULL, NULL},
    };
    return vmt_test_run("cli/help", cases, setup, teardown);
}
