/* cli/vmproc.c: named VM processes as a user meets them: run --name
 * [--detach], ps, status, pause, resume, stop, signals, names held by live
 * and dead processes. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_util.h"
#include "harness.h"

static char *cli, *counter, *hello, *tmpdir;
static char store[4096];

/* A fresh store directory per test (inside tmpdir). */
static const char *new_store(const char *tag)
{
    cli_kill_all(store);
    snprintf(store, sizeof(store), "%s/%s", tmpdir, tag);
    return store;
}

/* Starts counter as detached VM `name`; returns its pid (0 on failure). */
static long start(const char *name, const char *cmdline)
{
    char *out = NULL, *err = NULL;
    int st = cli_run(&out, &err, "run", counter, "--mem", "64M", "--name", name, "--detach",
                     "--store", store, "--cmdline", cmdline, "--json", NULL);
    uint64_t pid = 0;
    CU_ASSERT_EQUAL(st, 0);
    CU_ASSERT(cli_json_valid(out, true));
    CU_ASSERT(cli_json_u64(out, "pid", &pid));
    if (st != 0)
        fprintf(stderr, "\n  run --detach failed (%d): %s%s\n", st, out, err);
    free(out);
    free(err);
    return (long)pid;
}

static void detached_vm_is_listed_paused_resumed_and_stopped(void)
{
    new_store("basic");
    long pid = start("a", "every=1");
    CU_ASSERT_FATAL(pid > 0);
    char *out = NULL, *err = NULL;
    CU_ASSERT_EQUAL(cli_run(&out, NULL, "ps", "--store", store, "--json", NULL), 0);
    CU_ASSERT(cli_json_valid(out, true) && out[0] == '[');
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"name\":\"a\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"state\":\"running\""));
    free(out);
    CU_ASSERT(cli_wait_step(store, "a", 3, 0, 10000) >= 3);

    CU_ASSERT_EQUAL(cli_run(&out, NULL, "pause", "a", "--store", store, "--json", NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"state\":\"paused\""));
    free(out);
    char *c1 = cli_console(store, "a");
    usleep(300000);
    char *c2 = cli_console(store, "a");
    CU_ASSERT_EQUAL(strlen(c1), strlen(c2)); /* a paused guest prints nothing */
    uint64_t last = cli_counter_last(c2, 0);
    free(c1);
    free(c2);
    CU_ASSERT_EQUAL(cli_run(&out, NULL, "resume", "a", "--store", store, NULL), 0);
    CU_ASSERT_STRING_EQUAL(out, "a running\n");
    free(out);
    CU_ASSERT(cli_wait_step(store, "a", last + 3, 0, 10000) >= last + 3);

    CU_ASSERT_EQUAL(cli_run(&out, NULL, "status", "a", "--store", store, NULL), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "state      running"));
    free(out);
    CU_ASSERT_EQUAL(cli_run(&out, &err, "stop", "a", "--store", store, NULL), 0);
    CU_ASSERT_STRING_EQUAL(out, "a stopped\n");
    free(out);
    free(err);
    CU_ASSERT_EQUAL(cli_run(&out, NULL, "ps", "--store", store, "--json", NULL), 0);
    CU_ASSERT_STRING_EQUAL(out, "[]\n");
    free(out);
    char sock[4200];
    snprintf(sock, sizeof(sock), "%s/run/a.sock", store);
    CU_ASSERT_NOT_EQUAL(access(sock, F_OK), 0);
    /* The process is gone (reparented to init, reaped there). */
    for (int i = 0; i < 100 && kill((pid_t)pid, 0) == 0; i++)
        usleep(20000);
    CU_ASSERT_NOT_EQUAL(kill((pid_t)pid, 0), 0);
}

static void socket_and_run_directory_are_private(void)
{
    new_store("modes");
    CU_ASSERT_FATAL(start("a", "every=100") > 0);
    char path[4200];
    struct stat st;
    snprintf(path, sizeof(path), "%s/run", store);
    CU_ASSERT_EQUAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0700);
    snprintf(path, sizeof(path), "%s/run/a.sock", store);
    CU_ASSERT_EQUAL(stat(path, &st), 0);
    CU_ASSERT(S_ISSOCK(st.st_mode));
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "stop", "a", "--store", store, NULL), 0);
}

static void a_held_name_is_refused_and_a_dead_ones_socket_is_explained(void)
{
    new_store("names");
    long pid = start("a", "every=100");
    CU_ASSERT_FATAL(pid > 0);
    char *out = NULL, *err = NULL;
    int st = cli_run(&out, &err, "run", counter, "--name", "a", "--detach", "--store", store,
                     NULL);
    CU_ASSERT_EQUAL(st, 125);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "VM a is already running"));
    free(out);
    free(err);

    CU_ASSERT_EQUAL(kill((pid_t)pid, SIGKILL), 0);
    for (int i = 0; i < 100 && kill((pid_t)pid, 0) == 0; i++)
        usleep(20000);
    char want[128];
    snprintf(want, sizeof(want), "VM a is not running (its process %ld is gone)", pid);
    st = cli_run(&out, &err, "pause", "a", "--store", store, NULL);
    CU_ASSERT_EQUAL(st, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, want));
    if (!strstr(err, want))
        fprintf(stderr, "\n  expected '%s' in: %s\n", want, err);
    free(out);
    free(err);
    /* The stale registration was cleaned: the name is free again. */
    st = cli_run(&out, &err, "status", "a", "--store", store, NULL);
    CU_ASSERT_EQUAL(st, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "no VM named a is running"));
    free(out);
    free(err);
    CU_ASSERT(start("a", "every=100") > 0);
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "stop", "a", "--store", store, NULL), 0);
}

static void sigterm_stops_a_vm_cleanly(void)
{
    new_store("sigterm");
    long pid = start("a", "every=100");
    CU_ASSERT_FATAL(pid > 0);
    CU_ASSERT_EQUAL(kill((pid_t)pid, SIGTERM), 0);
    for (int i = 0; i < 250 && kill((pid_t)pid, 0) == 0; i++)
        usleep(20000);
    CU_ASSERT_NOT_EQUAL(kill((pid_t)pid, 0), 0);
    char path[4200];
    snprintf(path, sizeof(path), "%s/run/a.sock", store);
    CU_ASSERT_NOT_EQUAL(access(path, F_OK), 0);
    snprintf(path, sizeof(path), "%s/run/a.pid", store);
    CU_ASSERT_NOT_EQUAL(access(path, F_OK), 0);
    char *out = NULL;
    CU_ASSERT_EQUAL(cli_run(&out, NULL, "ps", "--store", store, "--json", NULL), 0);
    CU_ASSERT_STRING_EQUAL(out, "[]\n");
    free(out);
}

static void a_foreground_named_vm_exits_with_its_guest(void)
{
    new_store("fg");
    char *out = NULL, *err = NULL;
    int st = cli_run(&out, &err, "run", hello, "--name", "h", "--store", store, NULL);
    CU_ASSERT_EQUAL(st, 0);
    CU_ASSERT_STRING_EQUAL(out, "hello from vmtree guest\n");
    free(out);
    free(err);
    st = cli_run(&out, &err, "run", hello, "--name", "h", "--store", store, "--cmdline",
                 "status=7", NULL);
    CU_ASSERT_EQUAL(st, 7);
    free(out);
    free(err);
    char path[4200];
    snprintf(path, sizeof(path), "%s/run/h.sock", store);
    CU_ASSERT_NOT_EQUAL(access(path, F_OK), 0);
}

static void bad_names_and_options_are_refused(void)
{
    new_store("badopts");
    char *out = NULL, *err = NULL;
    CU_ASSERT_EQUAL(cli_run(&out, &err, "run", hello, "--name", "a/b", NULL), 125);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "--name 'a/b' may hold only"));
    free(out);
    free(err);
    CU_ASSERT_EQUAL(cli_run(&out, &err, "run", hello, "--detach", NULL), 125);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "need --name"));
    free(out);
    free(err);
    CU_ASSERT_EQUAL(cli_run(&out, &err, "pause", "--store", store, NULL), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "which VM?"));
    free(out);
    free(err);
    CU_ASSERT_EQUAL(cli_run(&out, &err, "stop", "nosuch", "--store", store, NULL), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "no VM named nosuch is running"));
    free(out);
    free(err);
}

static int setup(void)
{
    cli = vmt_test_cli_path();
    counter = vmt_test_guest_path("counter");
    hello = vmt_test_guest_path("hello");
    tmpdir = vmt_test_tmpdir("cli-vmproc");
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
    free(hello);
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
        {"a detached VM is listed, paused, resumed and stopped",
         detached_vm_is_listed_paused_resumed_and_stopped},
        {"socket and run directory are private", socket_and_run_directory_are_private},
        {"a held name is refused and a dead one's socket is explained",
         a_held_name_is_refused_and_a_dead_ones_socket_is_explained},
        {"SIGTERM stops a VM cleanly", sigterm_stops_a_vm_cleanly},
        {"a foreground named VM exits with its guest", a_foreground_named_vm_exits_with_its_guest},
        {"bad names and options are refused", bad_names_and_options_are_refused},
        {NULL, NULL},
    };
    return vmt_test_run("cli/vmproc", cases, setup, teardown);
}
