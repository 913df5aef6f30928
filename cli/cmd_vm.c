/* vmtree ps | status | pause | resume | stop | console: the commands that
 * talk to VM processes and need nothing of the snapshot tree. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "control.h"
#include "json.h"

/* Reply fields printed as JSON strings even when they look like numbers. */
static bool string_field(const char *key)
{
    static const char *const keys[] = {"name",  "image",   "cmdline", "head",        "snap", "host",
                                       "state", "console", "restore", "dirty_rates", NULL};
    for (int i = 0; keys[i]; i++)
        if (!strcmp(keys[i], key))
            return true;
    return false;
}

void vmt_cli_reply_json(vmt_json *j, const vmt_ctl_msg *m)
{
    vmt_json_obj_begin(j);
    for (uint32_t i = 0; i < m->nfields; i++) {
        const char *k = m->fields[i].key, *v = m->text + m->fields[i].off;
        uint64_t n;
        if (!strcmp(k, "ok"))
            continue;
        if (!string_field(k) && vmt_parse_u64(v, 0, UINT64_MAX, &n) == 0)
            vmt_json_ku64(j, k, n);
        else
            vmt_json_kstr(j, k, v);
    }
    vmt_json_obj_end(j);
    vmt_error_clear();
}

/* ---- ps ------------------------------------------------------------------ */

static void ps_usage(FILE *f)
{
    fprintf(f, "usage: vmtree ps [--store DIR] [--json]\n\n"
               "Lists the running VMs of the store: name, process, state, the snapshot\n"
               "each runs from (HEAD), memory, vCPUs and uptime.  VMs whose process\n"
               "died are cleaned up and not listed.  On a store several hosts share\n"
               "(rados://) a HOST column says where each runs; VMs of other hosts are\n"
               "listed from the catalog with state \"remote\" (this host cannot ask them).\n\n"
               "  --store DIR   the store (default: $VMTREE_STORE, else\n"
               "                ~/.local/share/vmtree/store)\n"
               "  --json        one JSON array of objects\n");
}

static void ps_header(bool shared)
{
    if (shared)
        printf("%-16s %-16s ", "NAME", "HOST");
    else
        printf("%-16s ", "NAME");
    printf("%-8s %-8s %-12s %10s %5s %9s  %s\n", "PID", "STATE", "HEAD", "MEMORY", "VCPUS",
           "UPTIME", "IMAGE");
}

static void ps_row(const vmt_ctl_msg *m)
{
    const char *head = vmt_ctl_get(m, "head");
    const char *image = vmt_ctl_get(m, "image");
    const char *host = vmt_ctl_get(m, "host");
    const char *base = image && strrchr(image, '/') ? strrchr(image, '/') + 1 : image;
    uint64_t mem = 0, vcpus = 0, up = 0;
    char mems[32], ups[32] = "-";
    vmt_ctl_get_u64(m, "mem", &mem);
    vmt_ctl_get_u64(m, "vcpus", &vcpus);
    if (vmt_ctl_get_u64(m, "uptime_ms", &up) == 0)
        snprintf(ups, sizeof(ups), "%llus", (unsigned long long)(up / 1000));
    vmt_cli_format_bytes(mem, mems, sizeof(mems));
    printf("%-16s ", vmt_ctl_get(m, "name"));
    if (host)
        printf("%-16s ", host);
    printf("%-8s %-8s %-12.12s %10s %5llu %9s  %s\n", vmt_ctl_get(m, "pid"),
           vmt_ctl_get(m, "state"), head ? head : "-", mems, (unsigned long long)vcpus, ups,
           base ? base : "");
    vmt_error_clear();
}

/* A VM that another host registered in a shared catalog, as a status
 * reply (what this host knows of it). */
static void remote_status(const vmt_catalog_vm *vm, vmt_ctl_msg *m)
{
    char hex[VMT_ID_HEX_LEN + 1];
    vmt_ctl_init(m, VMT_CTL_REPLY);
    vmt_ctl_adds(m, "name", vm->name);
    vmt_ctl_adds(m, "host", vm->host);
    vmt_ctl_addf(m, "pid", "%lld", (long long)vm->pid);
    vmt_ctl_adds(m, "state", "remote");
    if (vm->has_head) {
        vmt_id_to_hex(&vm->head, hex);
        vmt_ctl_adds(m, "head", hex);
    }
    vmt_ctl_addf(m, "mem", "%llu", (unsigned long long)vm->mem_size);
    vmt_ctl_addf(m, "vcpus", "%u", vm->vcpus);
    vmt_ctl_adds(m, "image", vm->image);
}

/* The names with a pid file in STORE/run (caller frees each and the array). */
static int list_names(const char *store, char ***out, size_t *n)
{
    char path[PATH_MAX];
    *out = NULL;
    *n = 0;
    int rc = vmt_cli_run_dir(store, path, sizeof(path));
    if (rc)
        return rc;
    DIR *d = opendir(path);
    if (!d)
        return errno == ENOENT ? 0 : vmt_error_errno(VMT_EIO, errno, "reading %s", path);
    size_t cap = 0;
    for (struct dirent *de; (de = readdir(d));) {
        size_t l = strlen(de->d_name);
        if (l <= 4 || strcmp(de->d_name + l - 4, ".pid"))
            continue;
        if (*n == cap) {
            char **nn = vmt_reallocn(*out, cap ? cap * 2 : 16, sizeof(char *));
            if (!nn)
                break;
            *out = nn;
            cap = cap ? cap * 2 : 16;
        }
        (*out)[(*n)++] = strndup(de->d_name, l - 4);
    }
    closedir(d);
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Prints (or adds to the JSON array) the VMs other hosts registered in
 * the shared catalog c. */
static void ps_remote(vmt_catalog *c, vmt_json *j, bool json, vmt_ctl_msg *m)
{
    vmt_catalog_vm *vms = NULL;
    size_t n = 0;
    if (vmt_catalog_list_vms(c, &vms, &n) != 0) {
        vmt_cli_fail("ps", "%s", vmt_error_last());
        n = 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (vmt_catalog_vm_local(c, &vms[i]))
            continue;
        remote_status(&vms[i], m);
        if (json)
            vmt_cli_reply_json(j, m);
        else
            ps_row(m);
    }
    free(vms);
}

int vmt_cli_ps(int argc, char **argv)
{
    static const struct option longopts[] = {VMT_CLI_COMMON_LONGOPTS, {NULL, 0, NULL, 0}};
    vmt_cli_common c = {.cmd = "ps"};
    const char *pos[1];
    char host[VMT_CATALOG_HOST_MAX];
    int npos, prc = vmt_cli_parse(&c, argc, argv, NULL, longopts, NULL, NULL, pos, 0, &npos);
    if (prc)
        return prc < 0 ? (ps_usage(stdout), 0) : 1;
    if (vmt_cli_resolve_store(&c))
        return vmt_cli_fail("ps", "%s", vmt_error_last());
    char **names;
    size_t n;
    if (list_names(c.store, &names, &n))
        return vmt_cli_fail("ps", "%s", vmt_error_last());
    if (n)
        qsort(names, n, sizeof(char *), cmp_str);
    bool shared = vmt_cli_store_shared(c.store);
    /* A shared store's catalog, opened once: this host's name for the rows
     * of its VMs, then the other hosts' VMs. */
    vmt_catalog *cat = NULL;
    if (shared && vmt_cli_catalog_open(c.store, &cat) != 0)
        vmt_cli_fail("ps", "%s", vmt_error_last());
    snprintf(host, sizeof(host), "%s", cat ? vmt_catalog_host(cat) : "");
    vmt_ctl_msg *req = malloc(sizeof(*req)), *rep = malloc(sizeof(*rep));
    vmt_json j;
    vmt_json_init(&j, stdout);
    if (c.json)
        vmt_json_arr_begin(&j);
    else
        ps_header(shared);
    for (size_t i = 0; req && rep && i < n; i++) {
        vmt_ctl_init(req, VMT_CTL_REQUEST);
        vmt_ctl_adds(req, "op", "status");
        int rc = names[i] ? vmt_cli_vm_request(c.store, names[i], req, rep,
                                               VMT_CLI_QUICK_TIMEOUT_NS, NULL)
                          : VMT_ENOMEM;
        if (rc == 0 && shared)
            vmt_ctl_adds(rep, "host", host);
        if (rc == 0 && c.json)
            vmt_cli_reply_json(&j, rep);
        else if (rc == 0)
            ps_row(rep);
        else if (rc != VMT_ENOENT)
            vmt_cli_fail("ps", "%s", vmt_error_last());
        free(names[i]);
    }
    if (cat && rep)
        ps_remote(cat, &j, c.json, rep);
    vmt_catalog_close(cat);
    if (c.json)
        vmt_json_arr_end(&j);
    free(names);
    free(req);
    free(rep);
    return 0;
}

/* ---- status, pause, resume, stop ------------------------------------------ */

typedef struct simple_cmd {
    const char *name, *op, *summary, *done;
} simple_cmd;

static const simple_cmd simple_cmds[] = {
    {"status", "status", "Prints the state of VM NAME: process, state, HEAD, memory, console.",
     NULL},
    {"pause", "pause", "Pauses every vCPU of VM NAME (its process keeps serving requests).",
     "paused"},
    {"resume", "resume",
     "Resumes VM NAME after pause.  A VM fenced after a migration in doubt (the\n"
     "destination may run it) resumes only with --force: check the destination\n"
     "first, or two copies run.\n\n"
     "  --force       resume a fenced VM",
     "running"},
    {"stop", "stop",
     "Stops VM NAME: its guest ends, the process unregisters the name, removes\n"
     "its socket and exits.  Its snapshots and HEAD ref stay.\n\n"
     "  --forget      do not contact the VM: drop its registration from the\n"
     "                catalog.  For a shared (rados://) store whose VM's host is\n"
     "                gone for good: while that host lives, it may still run it",
     "stopped"},
};

static void simple_usage(const simple_cmd *sc, FILE *f)
{
    fprintf(f,
            "usage: vmtree %s NAME [--store DIR] [--json]\n\n%s\n\n"
            "  --store DIR   the store (default: $VMTREE_STORE, else\n"
            "                ~/.local/share/vmtree/store)\n"
            "  --json        print the VM's state as a JSON object\n",
            sc->name, sc->summary);
}

static void print_status(const vmt_ctl_msg *m)
{
    for (uint32_t i = 0; i < m->nfields; i++)
        if (strcmp(m->fields[i].key, "ok"))
            printf("%-10s %s\n", m->fields[i].key, m->text + m->fields[i].off);
}

/* `stop` returns once the VM's process has exited (its name lock is free),
 * so that what follows (rm of its HEAD, a new VM of that name) sees it gone. */
static int wait_gone(const char *store, const char *name)
{
    long pid = 0;
    for (int i = 0; i < 1000; i++) {
        if (vmt_cli_vm_alive(store, name, &pid) != 1)
            return 0;
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    return vmt_error_set(VMT_ETIMEDOUT, "VM %s accepted stop but its process %ld is still "
                                        "running after 10 s", name, pid);
}

typedef struct simple_flags {
    bool force, forget;
} simple_flags;

static int set_flag(void *ctx, int code, const char *arg)
{
    simple_flags *f = ctx;
    (void)arg;
    if (code == 'F')
        f->force = true;
    else if (code == 'G')
        f->forget = true;
    else
        return 1;
    return 0;
}

/* stop --forget: drops the registration of a VM that no host of this one
 * can stop (its host is gone), never one running here. */
static int forget(const vmt_cli_common *c, const char *name)
{
    vmt_catalog *cat = NULL;
    vmt_catalog_vm vm;
    long pid = 0;
    int rc = vmt_cli_catalog_open(c->store, &cat);
    if (rc == 0)
        rc = vmt_catalog_get_vm(cat, name, &vm);
    if (rc == 0 && vmt_catalog_vm_local(cat, &vm) && vmt_cli_vm_alive(c->store, name, &pid) == 1)
        rc = vmt_error_set(VMT_EBUSY, "VM %s runs on this host (process %ld): vmtree stop %s", name,
                           pid, name);
    if (rc == 0)
        rc = vmt_catalog_unregister_vm(cat, name);
    vmt_catalog_close(cat);
    if (rc)
        return vmt_cli_fail("stop", "%s", vmt_error_last());
    if (c->json) {
        vmt_json j;
        vmt_json_init(&j, stdout);
        vmt_json_obj_begin(&j);
        vmt_json_kstr(&j, "name", name);
        vmt_json_kstr(&j, "host", vm.host);
        vmt_json_ki64(&j, "pid", vm.pid);
        vmt_json_kbool(&j, "forgotten", true);
        vmt_json_obj_end(&j);
    } else {
        printf("%s forgotten (registered%s%s, process %lld); its HEAD stays\n", name,
               vm.host[0] ? " on host " : "", vm.host, (long long)vm.pid);
    }
    return 0;
}

static int simple(const simple_cmd *sc, int argc, char **argv)
{
    static const struct option longopts[] = {VMT_CLI_COMMON_LONGOPTS, {NULL, 0, NULL, 0}};
    static const struct option resume_longopts[] = {
        VMT_CLI_COMMON_LONGOPTS, {"force", no_argument, NULL, 'F'}, {NULL, 0, NULL, 0}};
    static const struct option stop_longopts[] = {
        VMT_CLI_COMMON_LONGOPTS, {"forget", no_argument, NULL, 'G'}, {NULL, 0, NULL, 0}};
    bool is_resume = !strcmp(sc->op, "resume"), is_stop = !strcmp(sc->op, "stop");
    simple_flags fl = {false, false};
    vmt_cli_common c = {.cmd = sc->name};
    const char *pos[1];
    int npos, prc = vmt_cli_parse(&c, argc, argv, NULL,
                                  is_resume ? resume_longopts
                                  : is_stop ? stop_longopts
                                            : longopts,
                                  set_flag, &fl, pos, 1, &npos);
    bool force = fl.force;
    if (prc)
        return prc < 0 ? (simple_usage(sc, stdout), 0) : 1;
    if (npos != 1)
        return vmt_cli_fail(sc->name, "which VM? (usage: vmtree %s NAME)", sc->name);
    if (vmt_cli_resolve_store(&c))
        return vmt_cli_fail(sc->name, "%s", vmt_error_last());
    if (fl.forget)
        return forget(&c, pos[0]);
    vmt_ctl_msg *req = malloc(sizeof(*req)), *rep = malloc(sizeof(*rep));
    int rc = req && rep ? 0 : vmt_error_set(VMT_ENOMEM, "out of memory");
    if (rc == 0) {
        vmt_ctl_init(req, VMT_CTL_REQUEST);
        vmt_ctl_adds(req, "op", sc->op);
        if (force)
            vmt_ctl_adds(req, "force", "1");
        rc = vmt_cli_vm_request(c.store, pos[0], req, rep, VMT_CLI_QUICK_TIMEOUT_NS, NULL);
    }
    if (rc == 0 && !strcmp(sc->op, "stop"))
        rc = wait_gone(c.store, pos[0]);
    if (rc == 0 && c.json) {
        vmt_json j;
        vmt_json_init(&j, stdout);
        vmt_cli_reply_json(&j, rep);
    } else if (rc == 0 && sc->done) {
        printf("%s %s\n", pos[0], sc->done);
    } else if (rc == 0) {
        print_status(rep);
    }
    free(req);
    free(rep);
    return rc ? vmt_cli_fail(sc->name, "%s", vmt_error_last()) : 0;
}

int vmt_cli_status(int argc, char **argv)
{
    return simple(&simple_cmds[0], argc, argv);
}

int vmt_cli_pause(int argc, char **argv)
{
    return simple(&simple_cmds[1], argc, argv);
}

int vmt_cli_resume(int argc, char **argv)
{
    return simple(&simple_cmds[2], argc, argv);
}

int vmt_cli_stop(int argc, char **argv)
{
    return simple(&simple_cmds[3], argc, argv);
}

/* ---- console --------------------------------------------------------------- */

static void console_usage(FILE *f)
{
    fprintf(f, "usage: vmtree console NAME [--follow] [--store DIR]\n\n"
               "Prints the console output of VM NAME, started with --detach (it is kept in\n"
               "RUN/NAME.console while the VM runs; RUN: see vmtree run --help).\n"
               "Only a VM of this host: another host's console is on that host.\n"
               "`vmtree logs` is the same.\n\n"
               "  -f, --follow  keep printing new output until the VM stops\n"
               "  --store DIR   the store\n");
}

static int set_follow(void *ctx, int code, const char *arg)
{
    (void)arg;
    if (code != 'f')
        return 1;
    *(bool *)ctx = true;
    return 0;
}

/* Copies what fd holds past *off to stdout; false once stdout is gone (a
 * reader that closed the pipe: SIGPIPE is ignored, see main.c). */
static bool copy_new(int fd, off_t *off)
{
    char buf[65536];
    ssize_t n;
    while ((n = pread(fd, buf, sizeof(buf), *off)) > 0) {
        if (fwrite(buf, 1, (size_t)n, stdout) != (size_t)n)
            return false;
        *off += n;
    }
    return fflush(stdout) == 0;
}

/* On a shared store: whether another host runs VM name (its host into
 * host); its console file is on that host. */
static bool remote_host(const char *store, const char *name, char *host, size_t cap)
{
    vmt_catalog *c = NULL;
    long pid;
    bool remote = vmt_cli_store_shared(store) && vmt_cli_catalog_open(store, &c) == 0 &&
                  vmt_cli_vm_running(store, c, name, &pid, host, cap) == 1 && host[0];
    vmt_catalog_close(c);
    vmt_error_clear();
    return remote;
}

int vmt_cli_console(int argc, char **argv)
{
    static const struct option longopts[] = {
        VMT_CLI_COMMON_LONGOPTS, {"follow", no_argument, NULL, 'f'}, {NULL, 0, NULL, 0}};
    vmt_cli_common c = {.cmd = argv[0]};
    bool follow = false;
    const char *pos[1];
    int npos, prc = vmt_cli_parse(&c, argc, argv, "f", longopts, set_follow, &follow, pos, 1,
                                  &npos);
    if (prc)
        return prc < 0 ? (console_usage(stdout), 0) : 1;
    if (npos != 1)
        return vmt_cli_fail(c.cmd, "which VM? (usage: vmtree %s NAME)", c.cmd);
    char path[PATH_MAX], host[VMT_CATALOG_HOST_MAX];
    if (vmt_cli_resolve_store(&c) || vmt_cli_check_name("VM name", pos[0]) ||
        vmt_cli_run_path(c.store, pos[0], ".console", path, sizeof(path)))
        return vmt_cli_fail(c.cmd, "%s", vmt_error_last());
    int fd = open(path, O_RDONLY | O_CLOEXEC), e = errno;
    if (fd < 0 && e == ENOENT && remote_host(c.store, pos[0], host, sizeof(host)))
        return vmt_cli_fail(c.cmd, "VM %s runs on host %s: its console is there", pos[0], host);
    if (fd < 0)
        return vmt_cli_fail(c.cmd, "VM %s has no console file %s (only VMs started with "
                                   "--detach keep one): %s",
                            pos[0], path, strerror(e));
    off_t off = 0;
    bool out_ok = copy_new(fd, &off);
    long pid;
    while (out_ok && follow && vmt_cli_vm_alive(c.store, pos[0], &pid) == 1) {
        usleep(100000);
        out_ok = copy_new(fd, &off);
    }
    if (out_ok)
        copy_new(fd, &off);
    close(fd);
    return 0;
}
