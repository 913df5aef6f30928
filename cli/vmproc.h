/*
 * A VM process: one running VM with a name, served on a control socket in
 * the store (STORE/run/NAME.sock), its liveness lock STORE/run/NAME.pid and,
 * when detached, its console in STORE/run/NAME.console (docs/cli.md).
 *
 * vmproc.c: setup, the main loop, status/pause/resume/stop.
 * vmproc_snap.c: what needs the store: registration in the catalog, the
 * VM from a snapshot (branch), snapshot and rollback requests.
 * Single-threaded apart from the VM's vCPU threads (console callback).
 */
#ifndef VMTREE_CLI_VMPROC_H
#define VMTREE_CLI_VMPROC_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cli.h"
#include "control.h"
#include "progress.h"
#include "vmtree/store.h"
#include "vmtree/vmm.h"

typedef struct vmproc_opts {
    const char *cmd;          /* "run" or "branch", for messages */
    const char *store;        /* resolved store directory */
    const char *name;
    const char *image;        /* boot this image; NULL with from_snapshot */
    const char *cmdline;
    uint64_t mem;
    unsigned vcpus;
    bool irqchip;
    vmt_dirty_mode dirty_mode;
    bool huge_pages;          /* --huge-pages: 2 MiB pages for guest RAM */
    bool detach, json;
    bool progress;            /* show restore progress even without a terminal */
    bool from_snapshot;       /* branch: restore snap instead of booting */
    vmt_id snap;
    bool lazy;                /* lazy restore for branch and rollback */
    bool init_store;          /* create the store when missing */
    const char *from_addr;    /* branch --from HOST:PORT: snap_name arrives from there */
    const char *snap_name;    /* the snapshot as that server names it */
    const char *psk_file;     /* --psk FILE, --tls CERT,KEY,CA or CA (may be NULL) */
    const char *tls;
    uint32_t timeout_ms;      /* incoming: every network step */
} vmproc_opts;

/* The console sink: stdout or the console file; tracks the last byte so a
 * marker line can start on a fresh line. */
typedef struct vmp_console {
    int fd;
    atomic_int last;
} vmp_console;

typedef struct vmproc {
    const vmproc_opts *o;
    char sock_path[PATH_MAX], pid_path[PATH_MAX], console_path[PATH_MAX];
    int pid_fd, listen_fd, sig_fd, ready_fd;
    vmp_console con;
    vmt_kvm *kvm;
    vmt_vm *vm;
    vmt_vm_config base;       /* console, dirty mode: what every VM here gets */
    char image[1024];
    char cmdline[VMT_BOOT_CMDLINE_MAX];
    uint64_t mem;
    unsigned vcpus;
    bool irqchip;
    bool has_head;
    vmt_id head;
    unsigned snapshots;       /* taken by this process */
    uint64_t started_ns;
    bool registered;          /* in the catalog */
    void *restore;            /* vmt_restore* of a lazy restore still loading */
    void *restore_store;      /* vmt_store* it reads */
    void *remote;             /* branch --from: the snapshot still arriving (vmproc_remote.c) */
    vmt_progress prog;        /* foreground: progress of the first restore */
    uint64_t ready_progress_ns; /* detached: last progress line to the parent */
    bool running;             /* the VM was started */
    bool fenced;              /* a migration is in doubt: stays paused (fence_why) */
    char fence_why[600];
    bool migrated;            /* the destination runs it now */
    bool stop;                /* leave the main loop */
    int status;               /* the process's exit status */
} vmproc;

/* One connection being served: where PROGRESS frames go. */
typedef struct vmp_conn {
    int fd;
    pthread_mutex_t mu;       /* progress may come from worker threads */
    uint64_t last_progress_ns;
} vmp_conn;

/* Runs VM process `o` (in the foreground, or detached: the parent returns
 * once the child reports the VM running).  Returns the exit status. */
int vmt_vmproc_main(const vmproc_opts *o);

/*
 * The VM process of a VM arriving by live migration over the accepted
 * session `s` (owned: closed once the receive ended).  o->name NULL: the
 * name the source announced; o->store is where the VM registers, and
 * `store` (owned, closed with the session; may be NULL) resolves
 * references to the pages of its base snapshot.  Reports
 * "ok PID NAME PAGES REFS HAVE MS" or "error MESSAGE" on ready_fd (closed
 * then), and serves the VM like vmt_vmproc_main until it ends.  Returns the
 * exit status.
 */
struct vmt_session;
int vmt_vmproc_incoming(vmproc_opts *o, struct vmt_session *s, vmt_store *store, int ready_fd);

/* Sends a PROGRESS frame (rate-limited to 5 a second, and the last one). */
void vmp_progress(vmp_conn *c, const char *phase, uint64_t done, uint64_t total);
/* Progress of setup work (the restore of a branch): on stderr in the
 * foreground, to the waiting parent when detaching. */
void vmp_setup_progress(vmproc *p, const char *phase, uint64_t done, uint64_t total);
/* Writes "-- vmtree: <text> --" to the console on a line of its own. */
void vmp_console_marker(vmproc *p, const char *text);

/* ---- vmproc_snap.c --------------------------------------------------------- */

/* Checks that the store exists, creating it when o->init_store. */
int vmp_prepare_store(const vmproc_opts *o);
/* Registers p's name in the catalog and sets or clears its HEAD ref. */
int vmp_register(vmproc *p);
void vmp_unregister(vmproc *p);
/* Creates p->vm from the snapshot o->snap (not started). */
int vmp_create_from_snapshot(vmproc *p);
/* Frees a lazy restore once it has loaded every page, or at once with
 * `now` (only after the VM using its RAM is destroyed). */
void vmp_restore_poll(vmproc *p, bool now);
/* Requests: fill `reply`; return 0 or an error (with its message). */
int vmp_req_snapshot(vmproc *p, vmp_conn *c, const vmt_ctl_msg *req, vmt_ctl_msg *reply);
int vmp_req_rollback(vmproc *p, vmp_conn *c, const vmt_ctl_msg *req, vmt_ctl_msg *reply);

/* ---- vmproc_remote.c: branch --from ------------------------------------------ */

/* Creates p->vm (not started) from o->snap_name at o->from_addr, its RAM
 * arriving while it runs; HEAD is set once the snapshot is complete. */
int vmp_create_from_remote(vmproc *p);
/* Advances the transfer: on completion sets HEAD; on failure stops the VM
 * process with the reason (a VM must not run on without its pages). */
void vmp_remote_poll(vmproc *p);
/* Ends a transfer still running (after the VM is destroyed). */
void vmp_remote_close(vmproc *p);
/* The refusal of `op` while the snapshot is still arriving. */
int vmp_remote_busy(vmproc *p, const char *op);

/* ---- vmproc_mig.c ------------------------------------------------------------- */

/* Migrates the VM to req's addr; 0 once the destination runs it (the
 * caller then ends this process), else the VM runs on (or stays paused,
 * fenced, after VMT_EINDOUBT). */
int vmp_req_migrate(vmproc *p, vmp_conn *c, const vmt_ctl_msg *req, vmt_ctl_msg *reply);

#endif
