/*
 * The vmtree command on a store several hosts share (rados://, the catalog
 * in the store's refs, a run directory per host): two processes act as two
 * hosts (VMTREE_HOST, VMTREE_RUN_DIR).  "Host 1" is a forked process that
 * stores snapshots through the library, tags one and registers a VM;
 * "host 2" is build/bin/vmtree, which sees them in log, show, tag and ps,
 * resolves prefixes, exports them bit-exact, refuses to touch host 1's VM
 * (naming host 1), serves the shared store to `vmtree pull` and takes a
 * `vmtree push` into another one, and removes, collects and verifies on it.
 * No KVM: snapshots are built from memory images as tests/snapshot does.
 * Runs against the Ceph test cluster (label rados); skips without it.
 */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_util.h"
#include "harness.h"
#include "snap_fixture.h"

extern char **environ;

enum { NPAGES = 512 };

static char *cli, *tmpdir, *url;
static char dirstore[4096], bundle[4096], run1[4096], run2[4096];
static vmt_id base_id, child_id;

/* The memory image of snapshot `which` (0 base, 1 child): deterministic. */
static uint8_t *image(int which)
{
    uint8_t *mem = malloc((size_t)NPAGES * 4096);
    CU_ASSERT_PTR_NOT_NULL_FATAL(mem);
    fx_fill_mixed(mem, NPAGES, 42);
    if (which == 1)
        for (uint64_t p = 0; p < NPAGES; p += 7)
            fx_page_random(mem + p * 4096, 1000 + p); /* the child changed these */
    return mem;
}

static void as_host(const char *host, const char *run)
{
    setenv("VMTREE_HOST", host, 1);
    setenv("VMTREE_RUN_DIR", run, 1);
}

/* Host 1, a process of its own: two snapshots, a tag, VM a registered
 * with HEAD on the child.  Writes the two ids to fd. */
static void host1(int fd)
{
    vmt_store *s = NULL;
    vmt_catalog *c = NULL;
    as_host("host1", run1);
    if (vmt_store_open(&s, url, NULL) != 0 || vmt_catalog_open_store(&c, s) != 0)
        _exit(2);
    uint8_t *m0 = image(0), *m1 = image(1);
    vmt_id ids[2];
    ids[0] = fx_snapshot_at(s, m0, NPAGES, NULL, "base on host1", 1000000000ull);
    ids[1] = fx_snapshot_at(s, m1, NPAGES, &ids[0], "child on host1", 2000000000ull);
    vmt_catalog_vm vm;
    memset(&vm, 0, sizeof(vm));
    snprintf(vm.name, sizeof(vm.name), "a");
    vm.pid = getpid();
    snprintf(vm.socket, sizeof(vm.socket), "%.900s/a.sock", run1);
    snprintf(vm.image, sizeof(vm.image), "/guests/counter.elf");
    vm.mem_size = (uint64_t)NPAGES * 4096;
    vm.vcpus = 1;
    vm.head = ids[1];
    vm.has_head = true;
    for (int i = 0; i < 2; i++) {
        vmt_snap_record r;
        if (vmt_snap_record_read(s, &ids[i], &r) != 0 || vmt_catalog_add_snapshot(c, &ids[i], &r))
            _exit(3);
    }
    if (vmt_catalog_set_ref(c, "tag/golden", &ids[1], NULL) != 0 ||
        vmt_catalog_register_vm(c, &vm) != 0)
        _exit(4);
    vmt_catalog_close(c);
    vmt_store_close(s);
    _exit(write(fd, ids, sizeof(ids)) == (ssize_t)sizeof(ids) ? 0 : 5);
}

static bool contains(const char *text, const char *needle)
{
    bool ok = text && strstr(text, needle);
    if (!ok)
        fprintf(stderr, "\n  expected '%s' in:\n%s\n", needle, text ? text : "(null)");
    return ok;
}

/* Runs vmtree as host 2 with --store URL appended (NULL-terminated
 * arguments); returns its exit status, printing what it said on failure
 * when `want_ok`. */
static int host2(char **out, char **err, const char *arg, ...)
{
    const char *args[32];
    size_t n = 0;
    va_list ap;
    va_start(ap, arg);
    for (const char *a = arg; a && n < 28; a = va_arg(ap, const char *))
        args[n++] = a;
    va_end(ap);
    args[n++] = "--store";
    args[n++] = url;
    args[n] = NULL;
    as_host("host2", run2);
    char *o = NULL, *e = NULL;
    int st = cli_runv(&o, &e, args);
    if (getenv("VMT_TEST_VERBOSE"))
        fprintf(stderr, "\n  vmtree %s -> %d\n%s%s", arg, st, o, e);
    if (out)
        *out = o;
    else
        free(o);
    if (err)
        *err = e;
    else
        free(e);
    return st;
}

/* Restores snapshot id of the store at loc into a memfd and compares it
 * with the memory image it was made from. */
static void restores_bit_exact(const char *loc, const vmt_id *id, int which)
{
    vmt_store *s = NULL;
    vmt_store_open_opts o;
    vmt_snap_record r;
    vmt_restore *rs = NULL;
    fx_ram ram;
    vmt_store_open_opts_init(&o);
    o.read_only = true;
    CU_ASSERT_EQUAL_FATAL(vmt_store_open(&s, loc, &o), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_snap_record_read(s, id, &r), 0);
    CU_ASSERT_EQUAL_FATAL(r.mem_size, (uint64_t)NPAGES * 4096);
    fx_ram_new(&ram, NPAGES);
    vmt_restore_opts ro = {.mode = VMT_RESTORE_EAGER, .threads = 2};
    CU_ASSERT_EQUAL_FATAL(vmt_restore_open(&rs, s, &r.map_root, ram.p, ram.fd, ram.size, &ro), 0);
    CU_ASSERT_EQUAL(vmt_restore_wait(rs, 0), 0);
    vmt_restore_free(rs);
    uint8_t *want = image(which);
    CU_ASSERT_EQUAL(memcmp(ram.p, want, ram.size), 0);
    free(want);
    fx_ram_free(&ram);
    vmt_store_close(s);
}

static void hex_of(const vmt_id *id, char hex[VMT_ID_HEX_LEN + 1])
{
    vmt_id_to_hex(id, hex);
}

/* Host 1 makes the snapshots, host 2 sees them by every name. */
static void a_second_host_sees_snapshots_tags_and_vms(void)
{
    int pfd[2];
    CU_ASSERT_FATAL(pipe(pfd) == 0);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0)
        host1(pfd[1]);
    close(pfd[1]);
    vmt_id ids[2];
    ssize_t got = read(pfd[0], ids, sizeof(ids));
    close(pfd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    CU_ASSERT_FATAL(WIFEXITED(st) && WEXITSTATUS(st) == 0 && got == (ssize_t)sizeof(ids));
    base_id = ids[0];
    child_id = ids[1];
    char hb[VMT_ID_HEX_LEN + 1], hc[VMT_ID_HEX_LEN + 1], prefix[9];
    hex_of(&base_id, hb);
    hex_of(&child_id, hc);
    char *out = NULL, *err = NULL;
    CU_ASSERT_EQUAL(host2(&out, NULL, "log", "--json", NULL), 0);
    CU_ASSERT(cli_json_valid(out, true));
    CU_ASSERT(contains(out, hb) && contains(out, hc) && contains(out, "golden"));
    CU_ASSERT(contains(out, "child on host1"));
    free(out);
    CU_ASSERT_EQUAL(host2(&out, NULL, "show", "golden", "--json", NULL), 0);
    CU_ASSERT(contains(out, hc) && contains(out, hb)); /* itself and its parent */
    free(out);
    snprintf(prefix, sizeof(prefix), "%.8s", hb);
    CU_ASSERT_EQUAL(host2(&out, NULL, "show", prefix, "--json", NULL), 0);
    char id[40] = "";
    CU_ASSERT(cli_json_str(out, "id", id, sizeof(id)) && strcmp(id, hb) == 0);
    free(out);
    CU_ASSERT_EQUAL(host2(&out, NULL, "show", "a~1", "--json", NULL), 0); /* VM a's HEAD^ */
    CU_ASSERT(cli_json_str(out, "id", id, sizeof(id)) && strcmp(id, hb) == 0);
    free(out);
    CU_ASSERT_EQUAL(host2(&out, NULL, "tag", "--json", NULL), 0);
    CU_ASSERT(contains(out, "golden") && contains(out, hc));
    free(out);
    /* A tag made on host 2 is seen by host 1 (the library, here). */
    CU_ASSERT_EQUAL(host2(NULL, NULL, "tag", "v2", prefix, NULL), 0);
    vmt_catalog *c = NULL;
    vmt_id v2;
    as_host("host1", run1);
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_open(&c, url), 0);
    CU_ASSERT_EQUAL(vmt_catalog_get_ref(c, "tag/v2", &v2), 0);
    CU_ASSERT(vmt_id_equal(&v2, &base_id));
    vmt_catalog_close(c);
    /* ps on host 2 lists host 1's VM with its host, and cannot ask it. */
    CU_ASSERT_EQUAL(host2(&out, NULL, "ps", NULL), 0);
    CU_ASSERT(contains(out, "HOST") && contains(out, "host1") && contains(out, "remote"));
    free(out);
    CU_ASSERT_EQUAL(host2(&out, NULL, "ps", "--json", NULL), 0);
    CU_ASSERT(cli_json_valid(out, true) && contains(out, "\"host\":\"host1\""));
    free(out);
    CU_ASSERT_NOT_EQUAL(host2(NULL, &err, "stop", "a", NULL), 0);
    CU_ASSERT(contains(err, "runs on host host1"));
    free(err);
}

/* What host 2 exports restores to host 1's bytes; both stores restore it. */
static void export_from_the_shared_store_is_bit_exact(void)
{
    char *out = NULL;
    CU_ASSERT_EQUAL_FATAL(host2(NULL, NULL, "export", "golden", bundle, "--with-ancestors", NULL),
                          0);
    CU_ASSERT_EQUAL_FATAL(cli_run(NULL, NULL, "store", "init", "--store", dirstore, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(
        cli_run(&out, NULL, "import", bundle, "--store", dirstore, "--json", NULL), 0);
    free(out);
    restores_bit_exact(dirstore, &child_id, 1);
    restores_bit_exact(dirstore, &base_id, 0);
    restores_bit_exact(url, &child_id, 1);
    /* And the other way: a bundle imported on host 2 lands in the shared
     * catalog (the ids are there already: the index gains nothing). */
    CU_ASSERT_EQUAL(host2(NULL, NULL, "import", bundle, NULL), 0);
}

/* rm, gc and verify on the shared store; the child stays whole. */
static void rm_gc_and_verify_work_on_the_shared_store(void)
{
    char *out = NULL, *err = NULL;
    char hb[VMT_ID_HEX_LEN + 1];
    hex_of(&base_id, hb);
    CU_ASSERT_NOT_EQUAL(host2(NULL, &err, "rm", hb, NULL), 0); /* tag v2 holds it */
    CU_ASSERT(contains(err, "tag/v2"));
    free(err);
    CU_ASSERT_EQUAL(host2(&out, NULL, "rm", hb, "--force", "--json", NULL), 0);
    CU_ASSERT(contains(out, "tag/v2") && contains(out, hb));
    free(out);
    char idkey[64];
    snprintf(idkey, sizeof(idkey), "\"id\":\"%s\"", hb);
    CU_ASSERT_EQUAL(host2(&out, NULL, "log", "--json", NULL), 0);
    CU_ASSERT(contains(out, "\"parent_present\":false") && !strstr(out, idkey));
    free(out);
    /* The child is a running VM's HEAD on host 1: kept, naming the host. */
    CU_ASSERT_EQUAL(host2(NULL, NULL, "tag", "-d", "golden", NULL), 0);
    CU_ASSERT_EQUAL(host2(NULL, NULL, "tag", "keep", "a", NULL), 0);
    CU_ASSERT_NOT_EQUAL(host2(NULL, &err, "rm", "a", "--force", NULL), 0);
    CU_ASSERT(contains(err, "running VM a") && contains(err, "on host host1"));
    free(err);
    /* The refusal deleted nothing, not even the tag it could have. */
    CU_ASSERT_EQUAL(host2(&out, NULL, "tag", "--json", NULL), 0);
    CU_ASSERT(contains(out, "keep"));
    free(out);
    CU_ASSERT_EQUAL(host2(&out, NULL, "gc", "--min-live", "1", "--json", NULL), 0);
    CU_ASSERT(cli_json_valid(out, true));
    free(out);
    CU_ASSERT_EQUAL(host2(&out, &err, "verify", "--json", NULL), 0);
    free(out);
    free(err);
    restores_bit_exact(url, &child_id, 1);
    /* Host 1 is gone for good: host 2 forgets its VM (without asking it),
     * the name is free, ps lists nothing remote, the HEAD stays. */
    CU_ASSERT_EQUAL(host2(&out, NULL, "stop", "a", "--forget", "--json", NULL), 0);
    CU_ASSERT(contains(out, "\"forgotten\":true") && contains(out, "host1"));
    free(out);
    CU_ASSERT_NOT_EQUAL(host2(NULL, &err, "stop", "a", "--forget", NULL), 0);
    CU_ASSERT(contains(err, "no VM named a"));
    free(err);
    CU_ASSERT_EQUAL(host2(&out, NULL, "ps", NULL), 0);
    CU_ASSERT(out && !strstr(out, "host1"));
    free(out);
    CU_ASSERT_EQUAL(host2(&out, NULL, "show", "a", "--json", NULL), 0);
    char hc[VMT_ID_HEX_LEN + 1];
    hex_of(&child_id, hc);
    CU_ASSERT(contains(out, hc));
    free(out);
}

/* `vmtree serve --once` of `store` as host 2 (pre-shared key psk); returns
 * its pid, *port the port it printed. */
static pid_t serve_once(const char *store, const char *psk, bool read_only, unsigned *port)
{
    int fds[2];
    pid_t pid;
    CU_ASSERT_FATAL(pipe(fds) == 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    const char *argv[] = {cli,   "serve", "--listen", "127.0.0.1:0",
                          "--once", "--store", store, "--psk",
                          psk,   read_only ? "--read-only" : NULL, NULL};
    as_host("host2", run2);
    CU_ASSERT_FATAL(posix_spawn(&pid, cli, &fa, NULL, (char *const *)argv, environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    char line[128];
    size_t n = 0;
    while (n + 1 < sizeof(line) && read(fds[0], line + n, 1) == 1 && line[n] != '\n')
        n++;
    line[n] = '\0';
    close(fds[0]);
    CU_ASSERT_FATAL(sscanf(line, "listening %u", port) == 1);
    return pid;
}

static int wait_status(pid_t pid)
{
    int st = 0;
    CU_ASSERT_EQUAL(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Golden images cross between a shared store and a directory store, both
 * ways, with only what the receiver lacks on the wire: the shared store
 * served to a pull, and a push received into another shared store. */
static void golden_images_move_into_and_out_of_the_shared_store(void)
{
    char psk[4096], dir2[4096], addr[64], *out = NULL, *err = NULL;
    unsigned port;
    snprintf(psk, sizeof(psk), "%s/psk", tmpdir);
    snprintf(dir2, sizeof(dir2), "%s/dir2", tmpdir);
    int fd = open(psk, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CU_ASSERT_FATAL(fd >= 0 && write(fd, "shared-store-golden-key-0123456789", 34) == 34);
    close(fd);

    /* Pull from the shared store into a new directory store. */
    pid_t srv = serve_once(url, psk, true, &port);
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    CU_ASSERT_EQUAL(cli_run(&out, &err, "pull", addr, "golden", "--as", "g1", "--psk", psk,
                            "--store", dir2, "--json", NULL),
                    0);
    CU_ASSERT(contains(out, "\"snapshots\":2"));
    free(out);
    free(err);
    CU_ASSERT_EQUAL(wait_status(srv), 0);
    restores_bit_exact(dir2, &child_id, 1);
    restores_bit_exact(dir2, &base_id, 0);

    /* Push from the directory store into another shared store (a second
     * namespace of the pool), tagged there. */
    char *url2 = fx_location("shared-push");
    CU_ASSERT_PTR_NOT_NULL_FATAL(url2);
    srv = serve_once(url2, psk, false, &port);
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    CU_ASSERT_EQUAL(cli_run(&out, &err, "push", "g1", addr, "--as", "pushed", "--psk", psk,
                            "--store", dir2, "--json", NULL),
                    0);
    free(out);
    free(err);
    CU_ASSERT_EQUAL(wait_status(srv), 0);
    restores_bit_exact(url2, &child_id, 1);
    restores_bit_exact(url2, &base_id, 0);
    as_host("host2", run2);
    CU_ASSERT_EQUAL(cli_run(&out, NULL, "show", "pushed", "--json", "--store", url2, NULL), 0);
    char hc[VMT_ID_HEX_LEN + 1], id[40] = "";
    hex_of(&child_id, hc);
    CU_ASSERT(cli_json_str(out, "id", id, sizeof(id)) && strcmp(id, hc) == 0);
    free(out);
    CU_ASSERT_EQUAL(cli_run(NULL, NULL, "verify", "--store", url2, NULL), 0);
    fx_location_free(url2);

    /* A pull never creates a shared store: a mistyped namespace is an
     * error naming `store init`, not a new empty store. */
    char missing[4096];
    const char *q = strchr(url, '?');
    snprintf(missing, sizeof(missing), "%.*s-typo%s", (int)(q - url), url, q);
    CU_ASSERT_NOT_EQUAL(cli_run(NULL, &err, "pull", "127.0.0.1:1", "golden", "--psk", psk,
                                "--store", missing, NULL),
                        0);
    CU_ASSERT(contains(err, "no store at") && contains(err, "store init"));
    free(err);
    vmt_store *probe = NULL;
    CU_ASSERT_EQUAL(vmt_store_open(&probe, missing, NULL), VMT_ENOENT);
    vmt_store_close(probe);
}

/* Reads one line from fd into buf within ms; false on timeout or end. */
static bool read_line(int fd, char *buf, size_t cap, int ms)
{
    size_t n = 0;
    uint64_t until = vmt_now_ns() + (uint64_t)ms * 1000000u;
    while (n + 1 < cap) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        uint64_t now = vmt_now_ns();
        if (now >= until || poll(&p, 1, (int)((until - now) / 1000000 + 1)) <= 0 ||
            read(fd, buf + n, 1) != 1)
            break;
        if (buf[n] == '\n') {
            buf[n] = '\0';
            return true;
        }
        n++;
    }
    buf[n] = '\0';
    return false;
}

/* `vmtree watch` on host 2 prints what host 1 changes, woken by the
 * catalog's notify: a snapshot added, a tag set, a tag deleted, each well
 * before its --recheck (60 s) could have found it. */
static void watch_prints_changes_of_another_host(void)
{
    int out[2], err[2];
    pid_t pid;
    CU_ASSERT_FATAL(pipe(out) == 0 && pipe(err) == 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    posix_spawn_file_actions_addclose(&fa, err[0]);
    const char *argv[] = {cli,        "watch", "--json", "--count", "3", "--timeout",
                          "120",      "--store", url,    NULL};
    as_host("host2", run2);
    CU_ASSERT_FATAL(posix_spawn(&pid, cli, &fa, NULL, (char *const *)argv, environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
    close(out[1]);
    close(err[1]);
    char line[2048];
    CU_ASSERT_FATAL(read_line(err[0], line, sizeof(line), 30000));
    CU_ASSERT_FATAL(contains(line, "watching"));

    /* Host 1 (the library, here): a snapshot, then a tag on it, then the
     * tag removed; each change printed within 10 s. */
    as_host("host1", run1);
    vmt_store *s = NULL;
    vmt_catalog *c = NULL;
    vmt_snap_record r;
    CU_ASSERT_EQUAL_FATAL(vmt_store_open(&s, url, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_catalog_open_store(&c, s), 0);
    uint8_t *m = image(1);
    m[0] ^= 0x5a; /* a snapshot not in the store yet */
    vmt_id id = fx_snapshot_at(s, m, NPAGES, &child_id, "watched", 3000000000ull);
    free(m);
    char hex[VMT_ID_HEX_LEN + 1];
    hex_of(&id, hex);
    CU_ASSERT_EQUAL_FATAL(vmt_snap_record_read(s, &id, &r), 0);
    uint64_t t0 = vmt_now_ns();
    CU_ASSERT_EQUAL(vmt_catalog_add_snapshot(c, &id, &r), 0);
    CU_ASSERT(read_line(out[0], line, sizeof(line), 10000));
    uint64_t first_ms = (vmt_now_ns() - t0) / 1000000;
    CU_ASSERT(contains(line, "\"change\":\"added\"") && contains(line, "\"snapshot\"") &&
              contains(line, hex) && contains(line, "watched"));
    t0 = vmt_now_ns();
    CU_ASSERT_EQUAL(vmt_catalog_set_ref(c, "tag/w1", &id, NULL), 0);
    CU_ASSERT(read_line(out[0], line, sizeof(line), 10000));
    uint64_t second_ms = (vmt_now_ns() - t0) / 1000000;
    CU_ASSERT(contains(line, "\"change\":\"set\"") && contains(line, "tag/w1") &&
              contains(line, hex));
    CU_ASSERT_EQUAL(vmt_catalog_delete_ref(c, "tag/w1"), 0);
    CU_ASSERT(read_line(out[0], line, sizeof(line), 10000));
    CU_ASSERT(contains(line, "\"change\":\"deleted\"") && contains(line, "tag/w1"));
    fprintf(stderr, "(printed %llu ms and %llu ms after the change) ",
            (unsigned long long)first_ms, (unsigned long long)second_ms);
    vmt_catalog_close(c);
    vmt_store_close(s);
    CU_ASSERT_EQUAL(wait_status(pid), 0); /* --count 3: it ends by itself */
    close(out[0]);
    close(err[0]);
    /* A directory store has no other host to watch: said so. */
    char *e = NULL;
    CU_ASSERT_NOT_EQUAL(cli_run(NULL, &e, "watch", "--store", dirstore, NULL), 0);
    CU_ASSERT(contains(e, "only a shared store"));
    free(e);
}

/* What still needs a directory store says so. */
static void migration_and_branch_from_are_refused(void)
{
    char *err = NULL;
    CU_ASSERT_NOT_EQUAL(host2(NULL, &err, "migrate", "a", "127.0.0.1:1", NULL), 0);
    CU_ASSERT(contains(err, "live migration") && contains(err, "shared RADOS store"));
    free(err);
    CU_ASSERT_EQUAL(
        host2(NULL, &err, "branch", "golden", "--name", "x", "--from", "127.0.0.1:1", NULL), 125);
    CU_ASSERT(contains(err, "not supported on the shared RADOS store") &&
              contains(err, "vmtree pull 127.0.0.1:1 golden"));
    free(err);
}

static int setup(void)
{
    setenv("VMTREE_TEST_BACKEND", "rados", 1);
    cli = vmt_test_cli_path();
    tmpdir = vmt_test_tmpdir("cli-shared");
    if (!cli || !tmpdir)
        return 1;
    cli_set_binary(cli);
    url = fx_location("shared"); /* exits 77 (SKIP, printed) without a cluster */
    snprintf(dirstore, sizeof(dirstore), "%s/dir", tmpdir);
    snprintf(bundle, sizeof(bundle), "%s/golden.vmtb", tmpdir);
    snprintf(run1, sizeof(run1), "%s/run-host1", tmpdir);
    snprintf(run2, sizeof(run2), "%s/run-host2", tmpdir);
    return url ? 0 : 1;
}

static int teardown(void)
{
    fx_location_free(url);
    if (!getenv("VMT_TEST_KEEP"))
        vmt_test_rmtree(tmpdir);
    free(tmpdir);
    free(cli);
    return 0;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    static const vmt_test_case cases[] = {
        {"a second host sees snapshots, tags and VMs", a_second_host_sees_snapshots_tags_and_vms},
        {"export from the shared store is bit-exact", export_from_the_shared_store_is_bit_exact},
        {"golden images move into and out of the shared store",
         golden_images_move_into_and_out_of_the_shared_store},
        {"watch prints the changes of another host", watch_prints_changes_of_another_host},
        {"rm, gc and verify work on the shared store", rm_gc_and_verify_work_on_the_shared_store},
        {"migration and branch --from are refused", migration_and_branch_from_are_refused},
        {NULL, NULL},
    };
    return vmt_test_run("cli/shared", cases, setup, teardown);
}
