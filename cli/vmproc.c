/* The VM process: setup, the main loop serving the control socket, and the
 * requests that need no store (vmproc.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "json.h"
#include "vmproc.h"
#include "vmtree/migrate.h"
#include "vmtree/net.h"

#define EXIT_VMTREE_ERROR 125
#define EXIT_GUEST_CRASH 126
#define REQUEST_READ_NS (5ull * 1000000000ull)
#define REPLY_WRITE_NS (5ull * 1000000000ull)

/* ---- console ------------------------------------------------------------ */

static void console_sink(void *ctx, const char *buf, size_t len)
{
    vmp_console *c = ctx;
    if (len == 0)
        return;
    vmt_console_to_fd((void *)(intptr_t)c->fd, buf, len);
    atomic_store(&c->last, (unsigned char)buf[len - 1]);
}

void vmp_console_marker(vmproc *p, const char *text)
{
    char line[256];
    bool fresh = atomic_load(&p->con.last) == '\n' || atomic_load(&p->con.last) == 0;
    int n = snprintf(line, sizeof(line), "%s-- vmtree: %s --\n", fresh ? "" : "\n", text);
    if (n > 0)
        console_sink(&p->con, line, VMT_MIN((size_t)n, sizeof(line) - 1));
}

/* ---- the name lock -------------------------------------------------------- */

/* Locks STORE/run/NAME.pid for this process's life (the liveness test of
 * vmt_cli_vm_alive).  Retries briefly: a cleaner may hold it a moment. */
static int claim_name(vmproc *p)
{
    for (int attempt = 0; attempt < 40; attempt++) {
        int fd = open(p->pid_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0)
            return vmt_error_errno(VMT_EIO, errno, "opening %s", p->pid_path);
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        struct stat a, b;
        if (fcntl(fd, F_SETLK, &fl) == 0) {
            /* The file may have been removed by its last holder meanwhile. */
            if (fstat(fd, &a) == 0 && stat(p->pid_path, &b) == 0 && a.st_ino == b.st_ino) {
                char buf[32];
                int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
                if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)n, 0) != n) {
                    close(fd);
                    return vmt_error_errno(VMT_EIO, errno, "writing %s", p->pid_path);
                }
                p->pid_fd = fd;
                return 0;
            }
        } else if (errno != EAGAIN && errno != EACCES) {
            int e = errno;
            close(fd);
            return vmt_error_errno(VMT_EIO, e, "locking %s", p->pid_path);
        }
        close(fd);
        long pid = 0;
        if (vmt_cli_vm_alive(p->o->store, p->o->name, &pid) == 1 && pid != getpid())
            return vmt_error_set(VMT_EBUSY, "VM %s is already running (process %ld)",
                                 p->o->name, pid);
        usleep(25000);
    }
    return vmt_error_set(VMT_EBUSY, "could not lock %s", p->pid_path);
}

/* ---- setup ------------------------------------------------------------------ */

static int open_console(vmproc *p)
{
    p->con.fd = STDOUT_FILENO;
    if (!p->o->detach)
        return 0;
    int fd = open(p->console_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return vmt_error_errno(VMT_EIO, errno, "creating %s", p->console_path);
    p->con.fd = fd;
    return 0;
}

static int boot_vm(vmproc *p)
{
    vmt_vm_config cfg = p->base;
    cfg.mem_size = p->o->mem;
    cfg.vcpus = p->o->vcpus;
    cfg.irqchip = p->o->irqchip;
    int rc = vmt_vm_create(&p->vm, p->kvm, &cfg);
    if (!rc)
        rc = vmt_vm_load_elf(p->vm, p->o->image, p->o->cmdline);
    if (rc)
        return rc;
    char *abs = realpath(p->o->image, NULL);
    snprintf(p->image, sizeof(p->image), "%s", abs ? abs : p->o->image);
    free(abs);
    snprintf(p->cmdline, sizeof(p->cmdline), "%s", p->o->cmdline ? p->o->cmdline : "");
    p->mem = p->o->mem;
    p->vcpus = p->o->vcpus;
    p->irqchip = p->o->irqchip;
    return 0;
}

/* Blocks the stop signals (before any vCPU thread exists, so they inherit
 * the mask) and reads them through a signalfd. */
static int open_signals(vmproc *p)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
        return vmt_error_errno(VMT_EIO, errno, "blocking signals");
    p->sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (p->sig_fd < 0)
        return vmt_error_errno(VMT_EIO, errno, "signalfd");
    return 0;
}

/* The name's files (run paths), its lock, and the console. */
static int setup_identity(vmproc *p)
{
    int rc = vmt_cli_make_run_dir(p->o->store);
    if (!rc)
        rc = claim_name(p);
    return rc ? rc : open_console(p);
}

/* Signals, the config every VM here gets, and /dev/kvm. */
static int setup_vmm(vmproc *p)
{
    int rc = open_signals(p);
    if (rc)
        return rc;
    vmt_vm_config_init(&p->base);
    p->base.dirty_mode = p->o->dirty_mode;
    p->base.huge_pages = p->o->huge_pages;
    p->base.console = console_sink;
    p->base.console_ctx = &p->con;
    return vmt_kvm_open(&p->kvm);
}

/* Dirty log, the VM started unless it runs (before the catalog's fsynced
 * transactions, tens of ms), catalog, control socket. */
static int setup_serve(vmproc *p)
{
    int rc = vmt_dirty_active(p->vm) ? 0 : vmt_dirty_start(p->vm, 0);
    if (!rc && !p->running)
        rc = vmt_vm_start(p->vm);
    p->running = rc == 0;
    p->started_ns = vmt_now_ns();
    if (!rc)
        rc = vmp_register(p);
    if (!rc)
        rc = vmt_cli_unix_listen(p->sock_path, &p->listen_fd);
    return rc;
}

static int setup(vmproc *p)
{
    int rc = setup_identity(p);
    if (!rc)
        rc = setup_vmm(p);
    if (rc)
        return rc;
    rc = p->o->from_addr       ? vmp_create_from_remote(p)
         : p->o->from_snapshot ? vmp_create_from_snapshot(p)
                               : boot_vm(p);
    return rc ? rc : setup_serve(p);
}

static void teardown(vmproc *p)
{
    if (p->vm)
        vmt_vm_request_stop(p->vm);
    vmt_vm_destroy(p->vm);
    p->vm = NULL;
    vmp_restore_poll(p, true); /* the VM is gone: nothing reads its RAM */
    vmp_remote_close(p);
    vmt_kvm_close(p->kvm);
    p->kvm = NULL;
    if (p->listen_fd >= 0) {
        unlink(p->sock_path);
        close(p->listen_fd);
        p->listen_fd = -1;
    }
    vmp_unregister(p);
    if (p->pid_fd >= 0) {
        unlink(p->pid_path); /* while still holding the lock: see claim_name */
        close(p->pid_fd);
        p->pid_fd = -1;
    }
    if (p->sig_fd >= 0)
        close(p->sig_fd);
    p->sig_fd = -1;
    if (p->con.fd != STDOUT_FILENO && p->con.fd >= 0)
        close(p->con.fd);
    p->con.fd = -1;
}

/* ---- requests ------------------------------------------------------------------ */

void vmp_progress(vmp_conn *c, const char *phase, uint64_t done, uint64_t total)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    uint64_t now = vmt_now_ns();
    vmt_ctl_msg *m = NULL;
    if (now - c->last_progress_ns < 200000000ull && done < total)
        goto out;
    c->last_progress_ns = now;
    if (!(m = malloc(sizeof(*m))))
        goto out;
    vmt_ctl_init(m, VMT_CTL_PROGRESS);
    if (!vmt_ctl_adds(m, "phase", phase) && !vmt_ctl_addf(m, "done", "%llu",
                                                          (unsigned long long)done) &&
        !vmt_ctl_addf(m, "total", "%llu", (unsigned long long)total))
        vmt_ctl_send(c->fd, m, vmt_now_ns() + REPLY_WRITE_NS); /* best effort */
out:
    free(m);
    pthread_mutex_unlock(&c->mu);
}

static const char *state_name(vmproc *p)
{
    if (p->stop)
        return "stopping";
    if (p->fenced)
        return "fenced";
    return vmt_vm_is_paused(p->vm) ? "paused" : "running";
}

/* A VM whose migration is in doubt may run at the destination: it resumes
 * here only when the operator says so. */
static int req_resume(vmproc *p, const vmt_ctl_msg *req)
{
    const char *force = vmt_ctl_get(req, "force");
    if (p->fenced && !(force && !strcmp(force, "1")))
        return vmt_error_set(VMT_EINDOUBT,
                             "VM %s is fenced: %s.  Check the destination; `vmtree resume %s "
                             "--force` resumes it here, `vmtree stop %s` ends it",
                             p->o->name, p->fence_why, p->o->name, p->o->name);
    int rc = vmt_vm_resume(p->vm);
    if (rc == 0 && p->fenced) {
        vmp_console_marker(p, "resumed by the operator after a migration in doubt");
        p->fenced = false;
    }
    return rc;
}

static int req_status(vmproc *p, vmt_ctl_msg *r)
{
    char hex[VMT_ID_HEX_LEN + 1];
    int rc = vmt_ctl_adds(r, "name", p->o->name);
    rc = rc ? rc : vmt_ctl_addf(r, "pid", "%ld", (long)getpid());
    rc = rc ? rc : vmt_ctl_adds(r, "state", state_name(p));
    rc = rc ? rc : vmt_ctl_adds(r, "image", p->image);
    rc = rc ? rc : vmt_ctl_adds(r, "cmdline", p->cmdline);
    rc = rc ? rc : vmt_ctl_addf(r, "mem", "%llu", (unsigned long long)p->mem);
    rc = rc ? rc : vmt_ctl_addf(r, "vcpus", "%u", p->vcpus);
    rc = rc ? rc : vmt_ctl_addf(r, "snapshots", "%u", p->snapshots);
    rc = rc ? rc : vmt_ctl_addf(r, "uptime_ms", "%llu",
                                (unsigned long long)((vmt_now_ns() - p->started_ns) / 1000000));
    rc = rc ? rc : vmt_ctl_adds(r, "console", p->o->detach ? p->console_path : "stdout");
    rc = rc ? rc : vmt_ctl_adds(r, "restore", p->restore || p->remote ? "loading" : "done");
    if (!rc && p->has_head) {
        vmt_id_to_hex(&p->head, hex);
        rc = vmt_ctl_adds(r, "head", hex);
    }
    return rc;
}

/* Stops the VM and withdraws the name before answering, so that the name
 * can be taken again as soon as the client has its reply. */
static void stop_now(vmproc *p)
{
    p->stop = true;
    vmt_vm_request_stop(p->vm);
    if (p->listen_fd >= 0) {
        unlink(p->sock_path);
        close(p->listen_fd);
        p->listen_fd = -1;
    }
    vmp_unregister(p);
}

static int dispatch(vmproc *p, vmp_conn *c, const vmt_ctl_msg *req, vmt_ctl_msg *reply)
{
    const char *op = vmt_ctl_get(req, "op");
    if (!op)
        return vmt_error_set(VMT_EPROTO, "request without op");
    if (!strcmp(op, "status"))
        return 0;
    if (!strcmp(op, "pause"))
        return vmt_vm_pause(p->vm);
    if (!strcmp(op, "resume"))
        return req_resume(p, req);
    if (!strcmp(op, "stop")) {
        stop_now(p);
        p->status = 0;
        return 0;
    }
    if (p->remote && (!strcmp(op, "snapshot") || !strcmp(op, "rollback") ||
                      !strcmp(op, "migrate")))
        return vmp_remote_busy(p, op);
    if (!strcmp(op, "snapshot"))
        return vmp_req_snapshot(p, c, req, reply);
    if (!strcmp(op, "rollback"))
        return vmp_req_rollback(p, c, req, reply);
    if (!strcmp(op, "migrate")) {
        int rc = vmp_req_migrate(p, c, req, reply);
        if (rc == 0) { /* the destination runs it: this copy ends, paused */
            stop_now(p);
            p->status = 0;
        }
        return rc;
    }
    return vmt_error_set(VMT_EINVAL, "unknown request '%.40s'", op);
}

static bool peer_allowed(int fd)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return false;
    return cred.uid == geteuid() || cred.uid == 0;
}

static void serve_one(vmproc *p, int fd)
{
    vmt_ctl_msg *req = malloc(sizeof(*req)), *reply = malloc(sizeof(*reply));
    vmp_conn conn = {.fd = fd, .mu = PTHREAD_MUTEX_INITIALIZER};
    if (!req || !reply || !peer_allowed(fd))
        goto out;
    int rc = vmt_ctl_recv(fd, req, vmt_now_ns() + REQUEST_READ_NS);
    if (rc == 0 && req->type != VMT_CTL_REQUEST)
        rc = vmt_error_set(VMT_EPROTO, "expected a request frame");
    vmt_ctl_init(reply, VMT_CTL_REPLY);
    if (rc == 0)
        rc = dispatch(p, &conn, req, reply);
    if (rc == 0 && p->vm && !p->stop)
        rc = req_status(p, reply);
    if (rc == 0 && p->stop && p->migrated)
        rc = vmt_ctl_adds(reply, "state", "migrated");
    if (rc == 0)
        rc = vmt_ctl_adds(reply, "ok", "1");
    if (rc)
        vmt_ctl_reply_error(reply, rc, vmt_error_last());
    vmt_ctl_send(fd, reply, vmt_now_ns() + REPLY_WRITE_NS);
out:
    free(req);
    free(reply);
}

static void accept_all(vmproc *p)
{
    for (;;) {
        int fd = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            return;
        serve_one(p, fd);
        close(fd);
        if (p->listen_fd < 0)
            return;
    }
}

/* ---- the main loop --------------------------------------------------------------- */

static int exit_status(vmproc *p, const vmt_vm_exit *ex)
{
    switch (ex->kind) {
    case VMT_EXIT_PORT: return ex->status;
    case VMT_EXIT_HLT: return 0;
    case VMT_EXIT_STOPPED: return p->status;
    default:
        fprintf(stderr, "vmtree: %s: guest stopped: %s\n", p->o->name, ex->reason);
        return EXIT_GUEST_CRASH;
    }
}

static void main_loop(vmproc *p)
{
    while (!p->stop) {
        struct pollfd fds[2] = {{.fd = p->listen_fd, .events = POLLIN},
                                {.fd = p->sig_fd, .events = POLLIN}};
        int n = poll(fds, 2, 50);
        if (n > 0 && (fds[1].revents & POLLIN)) {
            struct signalfd_siginfo si;
            if (read(p->sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                vmt_info("%s: signal %u: stopping", p->o->name, si.ssi_signo);
                p->status = 0;
                break;
            }
        }
        if (n > 0 && (fds[0].revents & POLLIN))
            accept_all(p);
        vmp_restore_poll(p, false);
        vmp_remote_poll(p);
        vmt_vm_exit ex;
        if (p->vm && vmt_vm_wait(p->vm, 1, &ex) == 0) {
            p->status = exit_status(p, &ex);
            break;
        }
    }
}

/* ---- detaching --------------------------------------------------------------------- */

void vmp_setup_progress(vmproc *p, const char *phase, uint64_t done, uint64_t total)
{
    if (p->ready_fd < 0) {
        vmt_progress_update(&p->prog, phase, done, total);
        return;
    }
    uint64_t now = vmt_now_ns();
    if (now - p->ready_progress_ns < 100000000ull && done < total)
        return;
    p->ready_progress_ns = now;
    char line[128];
    int n = snprintf(line, sizeof(line), "progress %llu %llu %s\n", (unsigned long long)done,
                     (unsigned long long)total, phase);
    if (n > 0 && write(p->ready_fd, line, (size_t)n) < 0)
        vmt_debug("progress to the parent: %s", strerror(errno));
}

static void report_ready(vmproc *p, int rc)
{
    if (p->ready_fd < 0) {
        if (rc)
            vmt_cli_fail(p->o->cmd, "%s: %s", p->o->name, vmt_error_last());
        return;
    }
    char buf[1200];
    int n = rc ? snprintf(buf, sizeof(buf), "error %s\n", vmt_error_last())
               : snprintf(buf, sizeof(buf), "ok %ld\n", (long)getpid());
    if (n > 0 && write(p->ready_fd, buf, VMT_MIN((size_t)n, sizeof(buf) - 1)) < 0)
        vmt_warn("%s: reporting readiness: %s", p->o->name, strerror(errno));
    close(p->ready_fd);
    p->ready_fd = -1;
}

/* Reads the child's lines: "progress DONE TOTAL PHASE" any number of
 * times, then "ok PID" or "error MESSAGE".  The last line into buf. */
static void read_child(const vmproc_opts *o, int rfd, char *buf, size_t cap)
{
    vmt_progress prog;
    size_t len = 0;
    vmt_progress_init(&prog, o->cmd, o->progress);
    buf[0] = '\0';
    for (;;) {
        char *nl = memchr(buf, '\n', len);
        if (nl && !strncmp(buf, "progress ", 9)) {
            unsigned long long done = 0, total = 0;
            char phase[32] = "";
            *nl = '\0';
            if (sscanf(buf + 9, "%llu %llu %31s", &done, &total, phase) >= 2)
                vmt_progress_update(&prog, phase, done, total);
            len -= (size_t)(nl + 1 - buf);
            memmove(buf, nl + 1, len);
            continue;
        }
        if (nl || len + 1 >= cap)
            break;
        ssize_t n = read(rfd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    vmt_progress_end(&prog);
}

/* The parent of a detached VM: waits for the child's word, prints it. */
static int parent_wait(const vmproc_opts *o, int rfd, pid_t child)
{
    char buf[1200];
    read_child(o, rfd, buf, sizeof(buf));
    close(rfd);
    if (strncmp(buf, "ok ", 3) != 0) {
        int st;
        waitpid(child, &st, WNOHANG);
        return vmt_cli_fail(o->cmd, "%s: %s", o->name,
                            !strncmp(buf, "error ", 6) ? buf + 6
                                                       : "the VM process ended before the VM ran"),
               EXIT_VMTREE_ERROR;
    }
    if (o->json) {
        vmt_json j;
        vmt_json_init(&j, stdout);
        vmt_json_obj_begin(&j);
        vmt_json_kstr(&j, "name", o->name);
        vmt_json_ku64(&j, "pid", strtoull(buf + 3, NULL, 10));
        vmt_json_kstr(&j, "store", o->store);
        vmt_json_obj_end(&j);
    } else {
        printf("%s running, process %s\n", o->name, buf + 3);
    }
    return 0;
}

/* Forks; the child detaches from the terminal and returns 0 with *ready_fd;
 * the parent returns 1 with *status. */
static int daemonize(const vmproc_opts *o, int *ready_fd, int *status)
{
    char logp[PATH_MAX];
    int pfd[2];
    if (vmt_cli_make_run_dir(o->store) ||
        vmt_cli_run_path(o->store, o->name, ".log", logp, sizeof(logp)))
        return -1;
    if (pipe2(pfd, O_CLOEXEC) != 0)
        return vmt_error_errno(VMT_EIO, errno, "pipe"), -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return vmt_error_errno(VMT_EIO, errno, "fork"), -1;
    if (pid > 0) {
        close(pfd[1]);
        *status = parent_wait(o, pfd[0], pid);
        return 1;
    }
    close(pfd[0]);
    setsid();
    int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
    int log = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (nul >= 0) {
        dup2(nul, STDIN_FILENO);
        dup2(nul, STDOUT_FILENO);
        dup2(log >= 0 ? log : nul, STDERR_FILENO);
    }
    *ready_fd = pfd[1];
    return 0;
}

/* ---- a VM arriving by migration -------------------------------------------- */

typedef struct incoming_ctx {
    vmproc *p;
    vmproc_opts *o;           /* the process's own copy: gets the name */
    char name[VMT_SNAP_NAME_MAX];
} incoming_ctx;

/* VM_CONFIG arrived: take the VM's name here before anything is created,
 * so a name in use refuses the migration (the source runs on). */
static int incoming_config(void *ctx, const vmt_migrate_incoming *in)
{
    incoming_ctx *ic = ctx;
    vmproc *p = ic->p;
    const char *name = ic->o->name ? ic->o->name : in->vm_name;
    int rc = vmt_cli_check_name("VM name", name);
    if (rc)
        return rc;
    snprintf(ic->name, sizeof(ic->name), "%s", name);
    ic->o->name = ic->name;
    if (vmt_cli_run_path(p->o->store, name, ".sock", p->sock_path, sizeof(p->sock_path)) ||
        vmt_cli_run_path(p->o->store, name, ".pid", p->pid_path, sizeof(p->pid_path)) ||
        vmt_cli_run_path(p->o->store, name, ".console", p->console_path, sizeof(p->console_path)))
        return VMT_ERANGE;
    if ((rc = setup_identity(p)) != 0)
        return vmt_error_wrap(rc, "on the destination");
    snprintf(p->image, sizeof(p->image), "%s", in->image);
    p->mem = in->mem_size;
    p->vcpus = in->vcpus;
    p->irqchip = in->irqchip;
    vmp_console_marker(p, "arriving by live migration");
    return 0;
}

/* Tells the waiting `vmtree receive` how it went: "ok PID NAME PAGES REFS
 * HAVE MS" or "error MESSAGE". */
static void report_incoming(vmproc *p, int rc, const vmt_migrate_recv_report *rep)
{
    char buf[1200];
    int n = rc        ? snprintf(buf, sizeof(buf), "error %s\n", vmt_error_last())
            : rep->query ? snprintf(buf, sizeof(buf), "query %s\n",
                                    rep->query_running ? "running" : "discarded")
               : snprintf(buf, sizeof(buf), "ok %ld %s %llu %llu %llu %.3f\n", (long)getpid(),
                          p->o->name, (unsigned long long)rep->pages,
                          (unsigned long long)rep->refs, (unsigned long long)rep->have_ids,
                          (double)rep->total_ns / 1e6);
    if (p->ready_fd >= 0 && n > 0 &&
        write(p->ready_fd, buf, VMT_MIN((size_t)n, sizeof(buf) - 1)) < 0)
        vmt_warn("reporting the migration: %s", strerror(errno));
    if (p->ready_fd >= 0)
        close(p->ready_fd);
    p->ready_fd = -1;
}

int vmt_vmproc_incoming(vmproc_opts *o, vmt_session *s, vmt_store *store, int ready_fd)
{
    vmproc p = {.o = o, .pid_fd = -1, .listen_fd = -1, .sig_fd = -1, .ready_fd = ready_fd};
    incoming_ctx ic = {.p = &p, .o = o};
    vmt_migrate_recv_report rep;
    memset(&rep, 0, sizeof(rep));
    p.con.fd = -1;
    int rc = setup_vmm(&p);
    if (rc == 0) {
        char outcomes[PATH_MAX];
        bool have_dir =
            vmt_cli_run_path(o->store, "migrations", "", outcomes, sizeof(outcomes)) == 0 &&
            (mkdir(outcomes, 0700) == 0 || errno == EEXIST);
        vmt_migrate_recv_opts ro = {.timeout_ms = o->timeout_ms, .base = &p.base,
                                    .store = store, .on_config = incoming_config,
                                    .config_ctx = &ic,
                                    .outcome_dir = have_dir ? outcomes : NULL};
        rc = vmt_migrate_receive_session(p.kvm, s, &ro, &p.vm, &rep);
        p.running = rc == 0 && p.vm;
    }
    vmt_session_close(s);
    vmt_store_close(store);
    if (rc == 0 && rep.query) { /* a source asked about an earlier migration */
        report_incoming(&p, 0, &rep);
        teardown(&p);
        return 0;
    }
    if (rc == 0)
        rc = setup_serve(&p);
    report_incoming(&p, rc, &rep);
    if (rc == 0)
        main_loop(&p);
    teardown(&p);
    return rc ? EXIT_VMTREE_ERROR : p.status;
}

int vmt_vmproc_main(const vmproc_opts *o)
{
    vmproc p = {.o = o, .pid_fd = -1, .listen_fd = -1, .sig_fd = -1, .ready_fd = -1};
    int status = EXIT_VMTREE_ERROR;
    vmt_progress_init(&p.prog, o->cmd, o->progress);
    if (vmp_prepare_store(o) ||
        vmt_cli_run_path(o->store, o->name, ".sock", p.sock_path, sizeof(p.sock_path)) ||
        vmt_cli_run_path(o->store, o->name, ".pid", p.pid_path, sizeof(p.pid_path)) ||
        vmt_cli_run_path(o->store, o->name, ".console", p.console_path, sizeof(p.console_path)))
        return vmt_cli_fail(o->cmd, "%s", vmt_error_last()), EXIT_VMTREE_ERROR;
    if (o->detach) {
        int d = daemonize(o, &p.ready_fd, &status);
        if (d < 0)
            return vmt_cli_fail(o->cmd, "%s", vmt_error_last()), EXIT_VMTREE_ERROR;
        if (d > 0)
            return status;
    }
    int rc = setup(&p);
    vmt_progress_end(&p.prog);
    report_ready(&p, rc);
    if (rc == 0)
        main_loop(&p);
    status = rc ? EXIT_VMTREE_ERROR : p.status;
    teardown(&p);
    if (o->detach)
        exit(status); /* the detached child never returns into the command */
    return status;
}
