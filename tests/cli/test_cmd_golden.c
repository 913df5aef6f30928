/*
 * cli/cmd_golden.c: `vmtree serve`, `pull` and `push` between stores over
 * TCP on 127.0.0.1, each side its own vmtree process, with a real counter
 * guest: a VM branched from a pulled snapshot continues the computation
 * exactly (its sums equal the original VM's at the same steps).
 */
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_util.h"
#include "harness.h"
#include "vmtree/util.h"

extern char **environ;

static char *cli, *counter, *tmpdir;
static char store1[4096], store2[4096], store3[4096], store4[4096], store5[4096], psk[4096],
    badpsk[4096];

static bool contains(const char *text, const char *needle)
{
    bool ok = text && strstr(text, needle);
    if (!ok)
        fprintf(stderr, "\n  expected '%s' in:\n%s\n", needle, text ? text : "(null)");
    return ok;
}

/* A `vmtree serve --once` process; its port is read from its stdout. */
typedef struct server {
    pid_t pid;
    int out;
    unsigned port;
} server;

static void server_start_rate(server *sv, const char *store, const char *key, bool read_only,
                              const char *rate)
{
    int fds[2];
    CU_ASSERT_FATAL(pipe(fds) == 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    const char *argv[] = {cli,   "serve", "--listen", "127.0.0.1:0", "--once", "--store",
                          store, "--psk", key,        "--rate",      rate,     read_only ? "--read-only" : NULL,
                          NULL};
    CU_ASSERT_FATAL(posix_spawn(&sv->pid, cli, &fa, NULL, (char *const *)argv, environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    sv->out = fds[0];
    char line[128];
    size_t n = 0;
    while (n + 1 < sizeof(line) && read(sv->out, line + n, 1) == 1 && line[n] != '\n')
        n++;
    line[n] = '\0';
    CU_ASSERT_FATAL(sscanf(line, "listening %u", &sv->port) == 1);
}

static void server_start(server *sv, const char *store, const char *key, bool read_only)
{
    server_start_rate(sv, store, key, read_only, "1G");
}

/* Waits for the server's exit; returns its status. */
static int server_wait(server *sv)
{
    int st = 0;
    CU_ASSERT_EQUAL(waitpid(sv->pid, &st, 0), sv->pid);
    close(sv->out);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void addr(const server *sv, char *buf, size_t cap)
{
    snprintf(buf, cap, "127.0.0.1:%u", sv->port);
}

/* Every step both consoles printed has the same sum; returns how many. */
static size_t same_sums(const char *a, const char *b)
{
    static counter_line la[100000], lb[100000];
    size_t na = cli_counter_lines(a, 0, la, 100000), nb = cli_counter_lines(b, 0, lb, 100000);
    size_t common = 0;
    for (size_t i = 0, j = 0; i < na && j < nb;) {
        if (la[i].step < lb[j].step) {
            i++;
        } else if (la[i].step > lb[j].step) {
            j++;
        } else {
            CU_ASSERT_EQUAL(la[i].sum, lb[j].sum);
            common++;
            i++;
            j++;
        }
    }
    return common;
}

static void pull_then_branch_continues_the_guest(void)
{
    char s1[33], s2[33], id[33], where[64];
    char *out = NULL, *err = NULL;
    server sv;
    uint64_t v = 0;
    CU_ASSERT_FATAL(cli_run(NULL, NULL, "run", counter, "--mem", "64M", "--name", "a",
                            "--detach", "--store", store1, "--cmdline",
                            "buf=256 work=5000 every=10", NULL) == 0);
    CU_ASSERT(cli_wait_step(store1, "a", 20, 0, 20000) >= 20);
    for (int i = 0; i < 2; i++) {
        CU_ASSERT_EQUAL(cli_run(&out, NULL, "snapshot", "a", "--store", store1, "--json", NULL),
                        0);
        CU_ASSERT(cli_json_str(out, "snap", i ? s2 : s1, 33));
        free(out);
    }
    char *c0 = cli_console(store1, "a");
    CU_ASSERT(cli_wait_step(store1, "a", cli_counter_last(c0, 0) + 50, 0, 20000) > 0);
    free(c0);
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "stop", "a", "--store", store1, NULL), 0);

    server_start(&sv, store1, psk, true);
    addr(&sv, where, sizeof(where));
    CU_ASSERT_EQUAL(cli_run(&out, &err, "pull", where, "a", "--as", "g", "--psk", psk, "--store",
                            store2, "--json", NULL),
                    0);
    CU_ASSERT(cli_json_valid(out, true));
    CU_ASSERT(cli_json_str(out, "snapshot", id, sizeof(id)));
    CU_ASSERT_STRING_EQUAL(id, s2);
    CU_ASSERT(cli_json_u64(out, "snapshots_new", &v) && v == 2);
    CU_ASSERT(cli_json_u64(out, "pages_fetched", &v) && v > 0);
    free(out);
    free(err);
    CU_ASSERT_EQUAL(server_wait(&sv), 0);
    CU_ASSERT_EQUAL(cli_run(&out, NULL, "show", "g~1", "--store", store2, "--json", NULL), 0);
    CU_ASSERT(cli_json_str(out, "id", id, sizeof(id)));
    CU_ASSERT_STRING_EQUAL(id, s1);
    free(out);

    /* The pulled snapshot runs: the counter goes on exactly as it did. */
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "branch", "g", "--name", "b", "--detach", "--store",
                            store2, NULL),
                    0);
    char *ca = cli_console(store1, "a");
    uint64_t last_a = cli_counter_last(ca, 0);
    CU_ASSERT(cli_wait_step(store2, "b", last_a, 0, 30000) >= last_a);
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "stop", "b", "--store", store2, NULL), 0);
    char *cb = cli_console(store2, "b");
    CU_ASSERT(same_sums(ca, cb) >= 3);
    free(ca);
    free(cb);
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "verify", "--store", store2, NULL), 0);
}

static void push_read_only_and_wrong_key(void)
{
    char where[64];
    char *out = NULL, *err = NULL;
    server sv;
    CU_ASSERT_EQUAL_FATAL(cli_run(NULL, NULL, "store", "init", "--store", store3, NULL), 0);

    /* A read-only server refuses a push; the pusher says why. */
    server_start(&sv, store3, psk, true);
    addr(&sv, where, sizeof(where));
    CU_ASSERT_EQUAL(cli_run(&out, &err, "push", "a", where, "--psk", psk, "--store", store1,
                            NULL),
                    1);
    CU_ASSERT(contains(err, "read-only"));
    free(out);
    free(err);
    CU_ASSERT_EQUAL(server_wait(&sv), 1);

    /* A wrong key is refused on both sides. */
    server_start(&sv, store3, psk, false);
    addr(&sv, where, sizeof(where));
    CU_ASSERT_EQUAL(cli_run(&out, &err, "push", "a", where, "--psk", badpsk, "--store", store1,
                            NULL),
                    1);
    CU_ASSERT(contains(err, "wrong pre-shared key"));
    free(out);
    free(err);
    CU_ASSERT_EQUAL(server_wait(&sv), 1);

    server_start(&sv, store3, psk, false);
    addr(&sv, where, sizeof(where));
    CU_ASSERT_EQUAL(cli_run(&out, &err, "push", "a", where, "--as", "p", "--psk", psk, "--store",
                            store1, "--json", NULL),
                    0);
    free(out);
    free(err);
    CU_ASSERT_EQUAL(server_wait(&sv), 0);
    CU_ASSERT_EQUAL(cli_run(&out, NULL, "log", "--store", store3, NULL), 0);
    CU_ASSERT(contains(out, "tag: p"));
    free(out);
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "verify", "--store", store3, NULL), 0);

    /* Bad arguments. */
    CU_ASSERT_EQUAL(cli_run(NULL, &err, "pull", "nohostport", "a", "--store", store2, NULL), 1);
    CU_ASSERT(contains(err, "HOST:PORT"));
    free(err);
    CU_ASSERT_EQUAL(cli_run(NULL, &err, "serve", "--store", store1, NULL), 1);
    CU_ASSERT(contains(err, "--listen"));
    free(err);
}

/* `vmtree status NAME --json` in store has "restore":"loading". */
static bool loading(const char *store, const char *name)
{
    char *out = NULL, st[16] = "";
    bool ok = cli_run(&out, NULL, "status", name, "--store", store, "--json", NULL) == 0 &&
              cli_json_str(out, "restore", st, sizeof(st)) && !strcmp(st, "loading");
    free(out);
    return ok;
}

/* Waits until VM name's restore is done; false on timeout or when it is gone. */
static bool wait_done(const char *store, const char *name, unsigned timeout_ms)
{
    for (unsigned t = 0; t < timeout_ms; t += 100) {
        char *out = NULL, st[16] = "";
        int rc = cli_run(&out, NULL, "status", name, "--store", store, "--json", NULL);
        bool done = rc == 0 && cli_json_str(out, "restore", st, sizeof(st)) && !strcmp(st, "done");
        free(out);
        if (rc != 0 || done)
            return done;
        usleep(100000);
    }
    return false;
}

/* branch --from: the VM runs while its snapshot still arrives (from a
 * server sending 8 KiB a second), continues the original computation
 * exactly, and once the snapshot is in the store it is HEAD and the VM is
 * an ordinary branch (it can snapshot). */
static void branch_from_runs_while_arriving(void)
{
    char where[64], head[33], want[33];
    char *out = NULL, *err = NULL;
    server sv;
    CU_ASSERT_EQUAL_FATAL(cli_run(&out, NULL, "show", "a", "--store", store1, "--json", NULL), 0);
    CU_ASSERT(cli_json_str(out, "id", want, sizeof(want)));
    free(out);
    server_start_rate(&sv, store1, psk, true, "8K");
    addr(&sv, where, sizeof(where));
    uint64_t t0 = vmt_now_ns();
    CU_ASSERT_EQUAL_FATAL(cli_run(NULL, &err, "branch", "--from", where, "a", "--name", "c",
                                  "--detach", "--psk", psk, "--store", store4, NULL),
                          0);
    free(err);
    fprintf(stderr, "\n  branch --from: running after %.0f ms\n", (vmt_now_ns() - t0) / 1e6);
    CU_ASSERT(loading(store4, "c"));
    /* Not a snapshot before its parent is in the store. */
    CU_ASSERT_NOT_EQUAL(cli_run(NULL, &err, "snapshot", "c", "--store", store4, NULL), 0);
    CU_ASSERT(contains(err, "still arriving"));
    free(err);
    char *ca = cli_console(store1, "a");
    uint64_t last_a = cli_counter_last(ca, 0);
    CU_ASSERT(wait_done(store4, "c", 60000));
    CU_ASSERT(cli_wait_step(store4, "c", last_a, 0, 30000) >= last_a);
    CU_ASSERT_EQUAL(server_wait(&sv), 0);
    CU_ASSERT_EQUAL(cli_run(&out, NULL, "status", "c", "--store", store4, "--json", NULL), 0);
    CU_ASSERT(cli_json_str(out, "head", head, sizeof(head)));
    CU_ASSERT_STRING_EQUAL(head, want);
    free(out);
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "snapshot", "c", "--store", store4, NULL), 0);
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "stop", "c", "--store", store4, NULL), 0);
    char *cc = cli_console(store4, "c");
    CU_ASSERT(same_sums(ca, cc) >= 3);
    CU_ASSERT(contains(cc, "arrived from"));
    free(ca);
    free(cc);
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "verify", "--store", store4, NULL), 0);
}

/* The server dies while the pages arrive: the VM process stops with the
 * reason on its console and the store verifies, without the snapshot. */
static void branch_from_server_killed(void)
{
    char where[64], want[33];
    char *out = NULL, *err = NULL;
    server sv;
    CU_ASSERT_EQUAL_FATAL(cli_run(&out, NULL, "show", "a", "--store", store1, "--json", NULL), 0);
    CU_ASSERT(cli_json_str(out, "id", want, sizeof(want)));
    free(out);
    server_start_rate(&sv, store1, psk, true, "2K");
    addr(&sv, where, sizeof(where));
    CU_ASSERT_EQUAL_FATAL(cli_run(NULL, &err, "branch", "--from", where, "a", "--name", "d",
                                  "--detach", "--psk", psk, "--store", store5, NULL),
                          0);
    free(err);
    CU_ASSERT(loading(store5, "d"));
    kill(sv.pid, SIGKILL);
    CU_ASSERT_EQUAL(server_wait(&sv), 128 + SIGKILL);
    CU_ASSERT(!wait_done(store5, "d", 30000)); /* it ends instead */
    CU_ASSERT_NOT_EQUAL(cli_run(NULL, NULL, "status", "d", "--store", store5, NULL), 0);
    char *cd = cli_console(store5, "d");
    CU_ASSERT(contains(cd, "stopped arriving"));
    free(cd);
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "verify", "--store", store5, NULL), 0);
    CU_ASSERT_NOT_EQUAL(cli_run(NULL, NULL, "show", want, "--store", store5, NULL), 0);
}

/* A 32-byte key and a newline (as `echo` writes it); 0 or -1. */
static int write_key(const char *path, char c)
{
    char key[40];
    memset(key, c, 32);
    key[32] = '\n';
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return -1;
    int ok = write(fd, key, 33) == 33;
    close(fd);
    return ok ? 0 : -1;
}

static int setup(void)
{
    cli = vmt_test_cli_path();
    counter = vmt_test_guest_path("counter");
    tmpdir = vmt_test_tmpdir("cli-golden");
    cli_set_binary(cli);
    if (!tmpdir)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    snprintf(store1, sizeof(store1), "%s/one", tmpdir);
    snprintf(store2, sizeof(store2), "%s/two", tmpdir);
    snprintf(store3, sizeof(store3), "%s/three", tmpdir);
    snprintf(store4, sizeof(store4), "%s/four", tmpdir);
    snprintf(store5, sizeof(store5), "%s/five", tmpdir);
    snprintf(psk, sizeof(psk), "%s/psk", tmpdir);
    snprintf(badpsk, sizeof(badpsk), "%s/badpsk", tmpdir);
    return write_key(psk, 'k') || write_key(badpsk, 'x') ? 1 : 0;
}

static int teardown(void)
{
    cli_kill_all(store1);
    cli_kill_all(store2);
    cli_kill_all(store4);
    cli_kill_all(store5);
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
        {"pull, then a branch continues the guest", pull_then_branch_continues_the_guest},
        {"push; read-only server, wrong key, bad arguments", push_read_only_and_wrong_key},
        {"branch --from runs while its snapshot arrives", branch_from_runs_while_arriving},
        {"branch --from: the server killed midway", branch_from_server_killed},
        {NULL, NULL},
    };
    return vmt_test_run("cli/golden", cases, setup, teardown);
}
