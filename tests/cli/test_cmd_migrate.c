/*
 * vmtree migrate / vmtree receive end to end: VM processes on /dev/kvm,
 * real TCP on 127.0.0.1, two stores standing for two hosts.  A counter
 * migrated between processes continues its checksum sequence; a persistent
 * receiver refuses garbage and a wrong key (the source runs on) and then
 * takes the VM; a receiving process killed mid-migration, and a source
 * killed mid-migration, leave exactly one VM running (or, for the dead
 * source, none half-received); the VM's base snapshot held at the
 * destination makes its pages travel as references.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli_util.h"
#include "harness.h"

static char *cli, *counter, *dirtier, *tmpdir;
static char storeA[4096], storeB[4096];

static void new_stores(const char *tag)
{
    cli_kill_all(storeA);
    cli_kill_all(storeB);
    snprintf(storeA, sizeof(storeA), "%s/%s-a", tmpdir, tag);
    snprintf(storeB, sizeof(storeB), "%s/%s-b", tmpdir, tag);
}

/* Starts `image` as detached VM `name` in store A; returns its pid. */
static long start(const char *image, const char *name, const char *cmdline)
{
    char *out = NULL, *err = NULL;
    int st = cli_run(&out, &err, "run", image, "--mem", "32M", "--name", name, "--detach",
                     "--store", storeA, "--cmdline", cmdline, "--json", NULL);
    uint64_t pid = 0;
    CU_ASSERT_EQUAL(st, 0);
    CU_ASSERT(cli_json_u64(out, "pid", &pid));
    if (st != 0)
        fprintf(stderr, "\n  run --detach failed (%d): %s%s\n", st, out, err);
    free(out);
    free(err);
    return (long)pid;
}

/* A running `vmtree receive`: its pid, port and output file. */
typedef struct receiver {
    pid_t pid;
    unsigned port;
    char out[4200];
    char addr[64];
} receiver;

static bool receiver_start(receiver *r, const char *extra1, const char *extra2, const char *extra3)
{
    snprintf(r->out, sizeof(r->out), "%s.recv.out", storeB);
    unlink(r->out); /* never read an earlier receiver's port */
    r->pid = fork();
    if (r->pid == 0) {
        int fd = open(r->out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        const char *argv[12] = {cli,      "receive", "--listen", "127.0.0.1:0", "--store", storeB,
                                "--init", extra1,    extra2,     extra3,        NULL};
        execv(cli, (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) {
        FILE *f = fopen(r->out, "r");
        char line[256] = "";
        if (f && fgets(line, sizeof(line), f) &&
            sscanf(line, "listening on 127.0.0.1:%u", &r->port) == 1) {
            fclose(f);
            snprintf(r->addr, sizeof(r->addr), "127.0.0.1:%u", r->port);
            return true;
        }
        if (f)
            fclose(f);
        usleep(20000);
    }
    return false;
}

/* Waits for the receiver to exit (up to 20 s); its exit status or -1. */
static int receiver_wait(receiver *r)
{
    for (int i = 0; i < 2000; i++) {
        int st;
        if (waitpid(r->pid, &st, WNOHANG) == r->pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(10000);
    }
    kill(r->pid, SIGKILL);
    waitpid(r->pid, NULL, 0);
    return -1;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf = calloc(1, 65536);
    if (f && buf)
        buf[fread(buf, 1, 65535, f)] = '\0';
    if (f)
        fclose(f);
    return buf;
}

/* The pid of a child process of `parent` (the receiver's worker), or 0. */
static pid_t child_of(pid_t parent)
{
    DIR *d = opendir("/proc");
    pid_t found = 0;
    for (struct dirent *de; d && (de = readdir(d)) && !found;) {
        char path[300], buf[512];
        long pid = strtol(de->d_name, NULL, 10);
        if (pid <= 0)
            continue;
        snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (fgets(buf, sizeof(buf), f)) {
            char *rp = strrchr(buf, ')');
            long ppid = 0;
            if (rp && sscanf(rp + 2, "%*c %ld", &ppid) == 1 && ppid == parent)
                found = (pid_t)pid;
        }
        fclose(f);
    }
    if (d)
        closedir(d);
    return found;
}

static bool vm_state(const char *store, const char *name, const char *state)
{
    char *out = NULL;
    int st = cli_run(&out, NULL, "status", name, "--store", store, "--json", NULL);
    char want[64];
    snprintf(want, sizeof(want), "\"state\":\"%s\"", state);
    bool ok = st == 0 && out && strstr(out, want);
    free(out);
    return ok;
}

/* ---- a counter moves and continues exactly ---------------------------------------- */

static void counter_migrates_and_continues_exactly(void)
{
    new_stores("counter");
    CU_ASSERT_FATAL(start(counter, "ref", "every=1") > 0);
    CU_ASSERT_FATAL(start(counter, "c", "every=1") > 0);
    CU_ASSERT_FATAL(cli_wait_step(storeA, "c", 10, 0, 20000) >= 10);
    receiver r;
    CU_ASSERT_FATAL(receiver_start(&r, NULL, NULL, NULL));
    char *out = NULL, *err = NULL;
    int st = cli_run(&out, &err, "migrate", "c", r.addr, "--store", storeA, "--json", "--streams",
                     "2", "--compress", "lz4", NULL);
    if (st)
        printf("\n  migrate: %s", err);
    CU_ASSERT_EQUAL_FATAL(st, 0);
    CU_ASSERT(cli_json_valid(out, true));
    uint64_t down = 0, rounds = 0;
    CU_ASSERT(cli_json_u64(out, "downtime_us", &down));
    CU_ASSERT(cli_json_u64(out, "rounds", &rounds));
    CU_ASSERT(rounds >= 2);
    printf("\n  %s", out);
    free(out);
    free(err);
    CU_ASSERT_EQUAL(receiver_wait(&r), 0);
    char *rout = slurp(r.out);
    CU_ASSERT_PTR_NOT_NULL(strstr(rout, "c arrived, running as process"));
    free(rout);

    /* The source process is gone; the destination runs the VM. */
    usleep(200000);
    CU_ASSERT_NOT_EQUAL(cli_run(NULL, NULL, "status", "c", "--store", storeA, NULL), 0);
    CU_ASSERT(vm_state(storeB, "c", "running"));
    char *src = cli_console(storeA, "c");
    uint64_t last = cli_counter_last(src, 0);
    CU_ASSERT(strstr(src, "-- vmtree: migrated to ") != NULL);
    CU_ASSERT(cli_wait_step(storeB, "c", last + 20, 0, 20000) >= last + 20);
    CU_ASSERT(cli_wait_step(storeA, "ref", last + 25, 0, 20000) >= last + 25);
    char *dst = cli_console(storeB, "c"), *ref = cli_console(storeA, "ref");
    counter_line dl[4096], rl[8192];
    size_t nd = cli_counter_lines(dst, 0, dl, 4096), nr = cli_counter_lines(ref, 0, rl, 8192);
    size_t matched = 0;
    CU_ASSERT_FATAL(nd > 10);
    CU_ASSERT(dl[0].step > last && dl[0].step <= last + 2);
    for (size_t i = 0; i < nd; i++)
        for (size_t k = 0; k < nr; k++)
            if (rl[k].step == dl[i].step) {
                CU_ASSERT_EQUAL(rl[k].sum, dl[i].sum);
                matched++;
            }
    CU_ASSERT(matched >= 15);
    printf("  source stopped at step %llu; %zu destination steps match the reference\n",
           (unsigned long long)last, matched);
    free(src);
    free(dst);
    free(ref);
}

/* ---- a persistent receiver: garbage, a wrong key, then the VM ------------------------- */

static void write_key(const char *path, const char *key)
{
    FILE *f = fopen(path, "w");
    fputs(key, f);
    fclose(f);
    chmod(path, 0600);
}

static void send_raw(unsigned port, const void *junk, size_t len)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
        if (write(fd, junk, len) < 0)
            perror("write");
        char buf[256];
        struct timeval tv = {2, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        while (read(fd, buf, sizeof(buf)) > 0) {
        }
    }
    close(fd);
}

static void persistent_receiver_refuses_garbage_and_a_wrong_key(void)
{
    new_stores("persist");
    char key[4200], bad[4200];
    snprintf(key, sizeof(key), "%s/persist.key", tmpdir);
    snprintf(bad, sizeof(bad), "%s/persist.bad", tmpdir);
    write_key(key, "correct horse battery staple 42\n");
    write_key(bad, "incorrect horse battery staple 7\n");
    CU_ASSERT_FATAL(start(counter, "p", "every=1") > 0);
    receiver r;
    CU_ASSERT_FATAL(receiver_start(&r, "--persistent", "--psk", key));
    unsigned port = r.port;
    /* Garbage; a frame of another version; a frame claiming 4 GiB. */
    const char junk[] = "GET / HTTP/1.0\r\n\r\n................................";
    const uint8_t version9[20] = {'V', 'M', 'T', 'W', 0, 9, 0, 1, 0, 0, 0, 0, 0, 0, 0, 16};
    const uint8_t huge[20] = {'V', 'M', 'T', 'W', 0, 1, 0, 1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff};
    send_raw(port, junk, sizeof(junk));
    send_raw(port, version9, sizeof(version9));
    send_raw(port, huge, sizeof(huge));
    char *out = NULL, *err = NULL;
    int st = cli_run(&out, &err, "migrate", "p", r.addr, "--store", storeA, "--psk", bad, NULL);
    CU_ASSERT_EQUAL(st, 1);
    CU_ASSERT(strstr(err, "key") != NULL || strstr(err, "auth") != NULL);
    printf("\n  wrong key: %s", err);
    free(out);
    free(err);
    CU_ASSERT(vm_state(storeA, "p", "running")); /* the source runs on */

    st = cli_run(&out, &err, "migrate", "p", r.addr, "--store", storeA, "--psk", key, NULL);
    if (st)
        printf("  migrate: %s", err);
    CU_ASSERT_EQUAL(st, 0);
    free(out);
    free(err);
    usleep(300000);
    CU_ASSERT(vm_state(storeB, "p", "running"));
    char *log = slurp(r.out);
    printf("  receiver said:\n%s", log);
    CU_ASSERT(strstr(log, "not a vmtree migration stream") != NULL);
    CU_ASSERT(strstr(log, "version") != NULL);
    CU_ASSERT(strstr(log, "4294967295") != NULL || strstr(log, "exceeds") != NULL);
    CU_ASSERT(strstr(log, "wrong pre-shared key") != NULL);
    CU_ASSERT(strstr(log, "p arrived") != NULL);
    free(log);
    CU_ASSERT(waitpid(r.pid, NULL, WNOHANG) == 0); /* still up */
    kill(r.pid, SIGTERM);
    CU_ASSERT_EQUAL(receiver_wait(&r), 0);
}

/* ---- killed midway ---------------------------------------------------------------------- */

#define SLOW "base=8388608 pages=4096 fill=random spin=20000 event=0"

/* `vmtree migrate d` to r at 4 MB/s in the background (its stdout dropped). */
static pid_t slow_migrate(const receiver *r)
{
    pid_t mig = fork();
    if (mig == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        const char *argv[] = {cli,    "migrate",     "d",  r->addr, "--store",
                              storeA, "--bandwidth", "4M", NULL};
        execv(cli, (char *const *)argv);
        _exit(127);
    }
    return mig;
}

static void killed_destination_or_source_leaves_one_vm(void)
{
    new_stores("kill");
    long spid = start(dirtier, "d", SLOW);
    CU_ASSERT_FATAL(spid > 0);
    usleep(300000);
    receiver r;
    CU_ASSERT_FATAL(receiver_start(&r, NULL, NULL, NULL));
    pid_t mig = slow_migrate(&r);
    usleep(1200000);
    pid_t worker = child_of(r.pid);
    CU_ASSERT_FATAL(worker > 0);
    kill(worker, SIGKILL); /* the destination dies in round 0 */
    int st = 0;
    waitpid(mig, &st, 0);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    receiver_wait(&r);
    CU_ASSERT(vm_state(storeA, "d", "running"));
    char *o = NULL;
    CU_ASSERT_EQUAL(cli_run(&o, NULL, "ps", "--store", storeB, "--json", NULL), 0);
    CU_ASSERT(o && strstr(o, "\"name\"") == NULL);
    free(o);

    /* Again, and this time the source dies midway. */
    CU_ASSERT_FATAL(receiver_start(&r, NULL, NULL, NULL));
    mig = slow_migrate(&r);
    usleep(1200000);
    kill((pid_t)spid, SIGKILL);
    waitpid(mig, &st, 0);
    CU_ASSERT_EQUAL(receiver_wait(&r), 1);
    char *log = slurp(r.out);
    CU_ASSERT(strstr(log, "migration failed") != NULL);
    printf("\n  source killed: %s", log);
    free(log);
    CU_ASSERT_EQUAL(cli_run(&o, NULL, "ps", "--store", storeB, "--json", NULL), 0);
    CU_ASSERT(o && strstr(o, "\"name\"") == NULL); /* nothing half-received runs */
    free(o);
}

/* ---- rdma:// where no device exists -------------------------------------------------- */

static bool rdma_device_present(void)
{
    DIR *d = opendir("/sys/class/infiniband");
    bool any = false;
    for (struct dirent *de; d && (de = readdir(d));)
        any |= de->d_name[0] != '.';
    if (d)
        closedir(d);
    return any;
}

static void rdma_without_a_device_is_refused_and_the_vm_runs_on(void)
{
    if (rdma_device_present()) {
        printf("\n  skipped: this host has an RDMA device (the refusal path does not apply)\n");
        return;
    }
    new_stores("rdma");
    CU_ASSERT_FATAL(start(counter, "r", "every=1") > 0);
    char *out = NULL, *err = NULL;
    CU_ASSERT_EQUAL(
        cli_run(&out, &err, "migrate", "r", "rdma://127.0.0.1:7999", "--store", storeA, NULL), 1);
    CU_ASSERT(err && strstr(err, "no RDMA device") != NULL);
    printf("\n  %s", err);
    free(out);
    free(err);
    CU_ASSERT(vm_state(storeA, "r", "running"));
    CU_ASSERT_EQUAL(cli_run(&out, &err, "receive", "--listen", "rdma://127.0.0.1:7999", "--store",
                            storeB, "--init", NULL),
                    1);
    CU_ASSERT(err && strstr(err, "no RDMA device") != NULL);
    free(out);
    free(err);
}

static int setup(void)
{
    cli = vmt_test_cli_path();
    counter = vmt_test_guest_path("counter");
    dirtier = vmt_test_guest_path("dirtier");
    tmpdir = vmt_test_tmpdir("cli-migrate");
    cli_set_binary(cli);
    snprintf(storeA, sizeof(storeA), "%s/none-a", tmpdir ? tmpdir : "/nonexistent");
    snprintf(storeB, sizeof(storeB), "%s/none-b", tmpdir ? tmpdir : "/nonexistent");
    return tmpdir ? 0 : 1;
}

static int teardown(void)
{
    cli_kill_all(storeA);
    cli_kill_all(storeB);
    if (!getenv("VMT_TEST_KEEP"))
        vmt_test_rmtree(tmpdir);
    free(tmpdir);
    free(cli);
    free(counter);
    free(dirtier);
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
        {"a counter migrates between processes and continues exactly",
         counter_migrates_and_continues_exactly},
        {"a persistent receiver refuses garbage and a wrong key, then takes the VM",
         persistent_receiver_refuses_garbage_and_a_wrong_key},
        {"a killed destination or source leaves one VM",
         killed_destination_or_source_leaves_one_vm},
        {"rdma:// without a device is refused and the VM runs on",
         rdma_without_a_device_is_refused_and_the_vm_runs_on},
        {NULL, NULL},
    };
    return vmt_test_run("cli/migrate", cases, setup, teardown);
}
