/* The client side of the control protocol: one request to a VM process,
 * with timeouts and the diagnosis of VMs whose process is gone. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "control.h"
#include "progress.h"

void vmt_cli_vm_cleanup(const char *store, const char *name)
{
    char pidp[PATH_MAX], sockp[PATH_MAX];
    if (vmt_cli_run_path(store, name, ".pid", pidp, sizeof(pidp)) ||
        vmt_cli_run_path(store, name, ".sock", sockp, sizeof(sockp)))
        return;
    /* Holding the name's lock keeps a VM process that starts right now from
     * having its fresh socket removed. */
    int fd = open(pidp, O_RDWR | O_CLOEXEC);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fd >= 0 && fcntl(fd, F_SETLK, &fl) != 0) {
        close(fd);
        return; /* a live process holds the name again */
    }
    unlink(sockp);
    vmt_catalog *c = NULL;
    vmt_catalog_vm vm;
    /* Only a registration of this host can be tested (and dropped) here. */
    if (vmt_catalog_open(&c, store) == 0 && vmt_catalog_get_vm(c, name, &vm) == 0 &&
        vmt_catalog_vm_local(c, &vm) && (vm.pid <= 0 || kill((pid_t)vm.pid, 0) != 0))
        vmt_catalog_unregister_vm(c, name);
    vmt_catalog_close(c);
    vmt_error_clear();
    if (fd >= 0) {
        unlink(pidp);
        close(fd);
    }
}

/* Why nothing answers on VM name's socket: the error to report. */
static int diagnose(const char *store, const char *name, const char *what)
{
    long pid = 0;
    int alive = vmt_cli_vm_alive(store, name, &pid);
    if (alive < 0)
        return alive;
    if (alive == 1)
        return vmt_error_set(VMT_EIO, "VM %s (process %ld) %s", name, pid, what);
    if (pid <= 0) {
        vmt_catalog *c = NULL;
        vmt_catalog_vm vm;
        bool remote = false;
        if (vmt_catalog_open(&c, store) == 0 && vmt_catalog_get_vm(c, name, &vm) == 0) {
            pid = (long)vm.pid;
            remote = !vmt_catalog_vm_local(c, &vm);
        }
        vmt_catalog_close(c);
        if (remote)
            return vmt_error_set(VMT_EBUSY,
                                 "VM %s runs on host %s (process %ld): run this command "
                                 "there (if that host is gone for good, `vmtree stop %s "
                                 "--forget` drops its registration)",
                                 name, vm.host, pid, name);
    }
    if (pid > 0) {
        vmt_cli_vm_cleanup(store, name);
        return vmt_error_set(VMT_ENOENT, "VM %s is not running (its process %ld is gone)", name,
                             pid);
    }
    return vmt_error_set(VMT_ENOENT, "no VM named %s is running (vmtree ps lists them)", name);
}

/* Connects, retrying for a moment while a live VM process sets up. */
static int connect_vm(const char *store, const char *name, int *fd)
{
    char sockp[PATH_MAX];
    int rc = vmt_cli_run_path(store, name, ".sock", sockp, sizeof(sockp));
    if (rc)
        return rc;
    for (int i = 0; i < 40; i++) {
        rc = vmt_cli_unix_connect(sockp, fd);
        if (rc != VMT_ENOENT)
            return rc;
        long pid;
        if (vmt_cli_vm_alive(store, name, &pid) != 1)
            break;
        usleep(50000);
    }
    return diagnose(store, name, "does not answer on its control socket");
}

static void show_progress(vmt_progress *prog, const vmt_ctl_msg *m)
{
    uint64_t done = 0, total = 0;
    const char *phase = vmt_ctl_get(m, "phase");
    vmt_ctl_get_u64(m, "done", &done);
    vmt_ctl_get_u64(m, "total", &total);
    vmt_progress_update(prog, phase ? phase : "", done, total);
}

static int exchange(int fd, const char *store, const char *name, const vmt_ctl_msg *req,
                    vmt_ctl_msg *reply, uint64_t timeout_ns, vmt_progress *prog)
{
    uint64_t deadline = vmt_now_ns() + timeout_ns;
    int rc = vmt_ctl_send(fd, req, vmt_now_ns() + VMT_CLI_QUICK_TIMEOUT_NS);
    while (rc == 0) {
        rc = vmt_ctl_recv(fd, reply, deadline);
        if (rc == 0 && reply->type == VMT_CTL_REPLY)
            break;
        if (rc == 0 && reply->type == VMT_CTL_PROGRESS && prog)
            show_progress(prog, reply);
        else if (rc == 0 && reply->type != VMT_CTL_PROGRESS)
            rc = vmt_error_set(VMT_EPROTO, "VM %s sent a request frame", name);
    }
    if (prog)
        vmt_progress_end(prog);
    if (rc == VMT_ETIMEDOUT)
        return vmt_error_set(VMT_ETIMEDOUT, "VM %s did not answer within %llu s", name,
                             (unsigned long long)(timeout_ns / 1000000000ull));
    if (rc == VMT_EIO || rc == VMT_EPROTO) {
        long pid;
        if (vmt_cli_vm_alive(store, name, &pid) != 1)
            return diagnose(store, name, "");
        return vmt_error_wrap(rc, "talking to VM %s", name);
    }
    return rc;
}

int vmt_cli_vm_request(const char *store, const char *name, const vmt_ctl_msg *req,
                       vmt_ctl_msg *reply, uint64_t timeout_ns, vmt_progress *prog)
{
    int fd = -1;
    int rc = vmt_cli_check_name("VM name", name);
    if (rc == 0)
        rc = connect_vm(store, name, &fd);
    if (rc)
        return rc;
    rc = exchange(fd, store, name, req, reply, timeout_ns, prog);
    close(fd);
    if (rc)
        return rc;
    const char *err = vmt_ctl_get(reply, "error");
    if (err) {
        const char *msg = vmt_ctl_get(reply, "message");
        return vmt_error_set(vmt_ctl_error_code(err), "%s", msg ? msg : err);
    }
    return 0;
}
