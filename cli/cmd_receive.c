/*
 * vmtree receive --listen ADDR:PORT: the destination of live migrations.
 *
 * The command owns the listening socket and never accepts on it itself: a
 * forked worker waits for the next migration, runs its handshake, says
 * "accepted" and becomes the VM process of the arriving VM (vmproc.c,
 * vmt_vmproc_incoming) with its own console and control socket in the
 * store, detached like `run --detach`.  Only one worker accepts at a time;
 * with --persistent the next one is forked as soon as the previous has its
 * connection, so a bad client (garbage, a wrong key) costs only its worker.
 * Forking before KVM is touched keeps each VM in a process of its own.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "json.h"
#include "netopts.h"
#include "vmproc.h"
#include "vmtree/migrate.h"

#define MAX_WORKERS 64

enum { OPT_LISTEN = 0x2101, OPT_PERSISTENT, OPT_NAME, OPT_PSK, OPT_TLS, OPT_TIMEOUT, OPT_INIT, OPT_HUGE };

typedef struct recv_opts {
    const char *listen, *name, *psk_file, *tls_spec;
    bool persistent, init_store, huge_pages;
    uint64_t timeout_s;
    vmt_cli_common common;
} recv_opts;

typedef struct recv_state {
    recv_opts *o;
    vmt_listener *l;
    vmt_tls *tls;
    uint8_t key[VMT_NET_PSK_MAX];
    size_t key_len;
    vmt_net_addr addr;
} recv_state;

static void receive_usage(FILE *f)
{
    fprintf(
        f, "usage: vmtree receive --listen [tcp://|rdma://]ADDR:PORT [--persistent] [--name NAME]\n"
           "         [--psk FILE | --tls CERT,KEY,CA] [--timeout SEC] [--store DIR]\n"
           "         [--init] [--huge-pages] [--json]\n\n"
           "Waits for a live migration (`vmtree migrate NAME HOST:PORT` on the source)\n"
           "and runs the arriving VM as a detached VM process of the store, under the\n"
           "name the source gave it: `vmtree ps|status|console|snapshot|migrate|stop`\n"
           "work on it as on any.  Prints \"listening on ADDR:PORT\" first (port 0\n"
           "picks a free one), then a line for each migration.  When the store holds\n"
           "the snapshot the VM runs from, the pages of that snapshot are not sent\n"
           "again.  Without --persistent it exits after the first migration (0 when\n"
           "the VM arrived); the VM runs on.\n\n"
           "  --listen ADDR:PORT  where to listen (IPv4, [IPv6] or a name); rdma://ADDR:PORT\n"
           "                    listens on an RDMA device (refused where none exists)\n"
           "  --persistent      keep receiving migrations until SIGINT/SIGTERM\n"
           "  --name NAME       run the VM under this name instead of the source's\n"
           "  --psk FILE        require this pre-shared key (16..1024 bytes, mode 0600)\n"
           "  --tls CERT,KEY,CA TLS 1.3 with this certificate; with CA, clients must\n"
           "                    present a certificate it signed\n"
           "  --timeout SEC     for each network step (default 10)\n"
           "  --store DIR       the store the VM is registered in\n"
           "  --init            create the store when missing\n"
           "  --huge-pages      arriving VMs get guest RAM on 2 MiB pages where the host\n"
           "                    allows (pages land with one fault per 2 MiB)\n"
           "  --json            one JSON object per event\n");
}

static int receive_opt(void *ctx, int code, const char *arg)
{
    recv_opts *o = ctx;
    switch (code) {
    case OPT_LISTEN:
        o->listen = arg;
        return 0;
    case OPT_PERSISTENT:
        o->persistent = true;
        return 0;
    case OPT_INIT:
        o->init_store = true;
        return 0;
    case OPT_HUGE:
        o->huge_pages = true;
        return 0;
    case OPT_NAME:
        o->name = arg;
        return vmt_cli_check_name("--name", arg) ? vmt_cli_fail("receive", "%s", vmt_error_last())
                                                 : 0;
    case OPT_PSK:
        o->psk_file = arg;
        return 0;
    case OPT_TLS:
        o->tls_spec = arg;
        return 0;
    case OPT_TIMEOUT:
        if (vmt_parse_u64(arg, 1, 3600, &o->timeout_s) == 0)
            return 0;
        return vmt_cli_fail("receive", "--timeout: '%s' is not 1..3600 seconds", arg);
    default:
        return 1;
    }
}

/* ---- the worker -------------------------------------------------------------- */

typedef struct worker_accept {
    recv_state *st;
    int fd; /* to the command: "accepted" once a client connects */
    bool first_done;
} worker_accept;

/* Stream 0 waits as long as it takes (the command may wait for hours);
 * the other streams within the handshake's deadline. */
static int worker_accept_fn(void *ctx, uint64_t deadline_ns, vmt_transport **out)
{
    worker_accept *w = ctx;
    int rc;
    if (!w->first_done) {
        while ((rc = vmt_listener_accept(w->st->l, out, 1000)) == VMT_ETIMEDOUT) {
            if (getppid() == 1)
                return vmt_error_set(VMT_ECANCELED, "the receiving command is gone");
        }
        w->first_done = rc == 0;
        if (rc == 0 && write(w->fd, "accepted\n", 9) != 9)
            vmt_debug("telling the command: %s", strerror(errno));
    } else {
        uint64_t now = vmt_now_ns();
        uint32_t ms = deadline_ns > now ? (uint32_t)((deadline_ns - now) / 1000000) : 0;
        rc = vmt_listener_accept(w->st->l, out, ms);
    }
    if (rc == 0 && w->st->tls) {
        vmt_transport *t = NULL;
        rc = vmt_transport_tls(&t, *out, w->st->tls, NULL);
        *out = t;
    }
    return rc;
}

/* Detaches like `run --detach`: own session, no terminal, stderr to a log. */
static void worker_detach(const char *store)
{
    char logp[PATH_MAX];
    setsid();
    int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
    int log = vmt_cli_run_path(store, "receive", ".log", logp, sizeof(logp)) == 0
                  ? open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600)
                  : -1;
    if (nul >= 0) {
        dup2(nul, STDIN_FILENO);
        dup2(nul, STDOUT_FILENO);
        dup2(log >= 0 ? log : nul, STDERR_FILENO);
    }
}

static int worker_main(recv_state *st, int fd)
{
    worker_accept wa = {.st = st, .fd = fd};
    vmt_session_config sc;
    vmt_migrate_recv_opts ro = {.psk = st->key_len ? st->key : NULL,
                                .psk_len = st->key_len,
                                .timeout_ms = (uint32_t)(st->o->timeout_s * 1000)};
    vmt_migrate_recv_session_config(&ro, &sc);
    vmt_session *s = NULL;
    int rc = vmt_session_server(&s, &sc, worker_accept_fn, &wa);
    vmt_listener_close(st->l); /* this process never accepts again */
    if (rc) {
        char line[1100];
        int n = snprintf(line, sizeof(line), "error %s\n", vmt_error_last());
        if (n > 0 && write(fd, line, VMT_MIN((size_t)n, sizeof(line) - 1)) < 0)
            vmt_debug("telling the command: %s", strerror(errno));
        return 1;
    }
    vmt_store *store = NULL;
    if (vmt_cli_store_open(st->o->common.store, false, &store) != 0) {
        vmt_info("no store to resolve pages from: %s", vmt_error_last());
        vmt_error_clear();
    }
    vmproc_opts vo = {.cmd = "receive",
                      .store = st->o->common.store,
                      .name = st->o->name,
                      .detach = true,
                      .dirty_mode = VMT_DIRTY_BITMAP,
                      .huge_pages = st->o->huge_pages,
                      .timeout_ms = ro.timeout_ms};
    return vmt_vmproc_incoming(&vo, s, store, fd);
}

/* ---- the command ------------------------------------------------------------------ */

typedef struct worker {
    pid_t pid;
    int fd;        /* its pipe; -1 once done */
    bool accepted; /* it has its connection: the next one may be forked */
    bool done;     /* it reported its result */
    char buf[1200];
    size_t len;
} worker;

static int fork_worker(recv_state *st, worker *w)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0)
        return vmt_error_errno(VMT_EIO, errno, "pipe");
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(pfd[0]);
        close(pfd[1]);
        return vmt_error_errno(VMT_EIO, errno, "fork");
    }
    if (pid == 0) {
        close(pfd[0]);
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        worker_detach(st->o->common.store);
        _exit(worker_main(st, pfd[1]));
    }
    close(pfd[1]);
    *w = (worker){.pid = pid, .fd = pfd[0]};
    return 0;
}

static void emit(const recv_opts *o, const char *event, const char *k1, const char *v1,
                 const char *text)
{
    if (o->common.json) {
        vmt_json j;
        vmt_json_init(&j, stdout);
        vmt_json_obj_begin(&j);
        vmt_json_kstr(&j, "event", event);
        if (k1)
            vmt_json_kstr(&j, k1, v1);
        vmt_json_obj_end(&j);
    } else if (!strcmp(event, "arrived")) {
        printf("%s\n", text);
    } else {
        fprintf(stderr, "vmtree: receive: %s\n", text);
    }
    fflush(stdout);
}

/* One line from a worker: "accepted", "ok PID NAME PAGES REFS HAVE MS",
 * "error MSG".  Returns 1 for a success, -1 for a failure, 0 otherwise. */
static int worker_line(const recv_opts *o, worker *w, char *line)
{
    if (!strcmp(line, "accepted")) {
        w->accepted = true;
        return 0;
    }
    char text[1400];
    w->done = true;
    if (!strncmp(line, "query ", 6)) { /* not a migration: keep waiting for one */
        snprintf(text, sizeof(text),
                 "answered a source's query: the migration it could not "
                 "see the end of %s here",
                 !strcmp(line + 6, "running") ? "runs" : "was discarded");
        emit(o, "query", "outcome", line + 6, text);
        return 0;
    }
    if (!strncmp(line, "ok ", 3)) {
        long pid = 0;
        char name[64] = "?";
        unsigned long long pages = 0, refs = 0, have = 0;
        double ms = 0;
        sscanf(line + 3, "%ld %63s %llu %llu %llu %lf", &pid, name, &pages, &refs, &have, &ms);
        snprintf(text, sizeof(text),
                 "%s arrived, running as process %ld (%llu pages, %llu from this store, "
                 "%.1f ms)",
                 name, pid, pages, refs, ms);
        emit(o, "arrived", "name", name, text);
        return 1;
    }
    snprintf(text, sizeof(text), "migration failed: %s",
             !strncmp(line, "error ", 6) ? line + 6 : line);
    emit(o, "failed", "error", !strncmp(line, "error ", 6) ? line + 6 : line, text);
    return -1;
}

/* Reads what a worker wrote; returns as worker_line, or -1 when it ended
 * without a result. */
static int worker_read(const recv_opts *o, worker *w)
{
    ssize_t n = read(w->fd, w->buf + w->len, sizeof(w->buf) - 1 - w->len);
    if (n <= 0) {
        close(w->fd);
        w->fd = -1;
        w->accepted = true;
        if (w->done)
            return 0;
        if (w->len == 0) {
            emit(o, "failed", "error", "the receiving process ended without a word",
                 "migration failed: the receiving process ended without a word");
            return -1;
        }
        w->buf[w->len] = '\0';
        w->len = 0;
        return worker_line(o, w, w->buf);
    }
    w->len += (size_t)n;
    int result = 0;
    char *nl;
    while ((nl = memchr(w->buf, '\n', w->len))) {
        *nl = '\0';
        int r = worker_line(o, w, w->buf);
        result = r ? r : result;
        w->len -= (size_t)(nl + 1 - w->buf);
        memmove(w->buf, nl + 1, w->len);
    }
    if (w->len == sizeof(w->buf) - 1)
        w->len = 0; /* a line too long: dropped */
    return result;
}

static int open_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    return fd < 0 ? vmt_error_errno(VMT_EIO, errno, "signalfd") : fd;
}

/* Forks workers one at a time and reports their results until stopped
 * (persistent) or until the first migration ended.  Returns the status. */
static int receive_loop(recv_state *st)
{
    worker ws[MAX_WORKERS];
    size_t nw = 0;
    int sfd = open_signals(), status = -1;
    if (sfd < 0)
        return vmt_cli_fail("receive", "%s", vmt_error_last());
    while (status < 0) {
        bool accepting = false, open = false, busy = false;
        for (size_t i = 0; i < nw; i++) {
            accepting |= ws[i].fd >= 0 && !ws[i].accepted;
            busy |= ws[i].fd >= 0 && ws[i].accepted && !ws[i].done;
            open |= ws[i].fd >= 0;
        }
        /* Persistent: always one worker waiting.  Otherwise one at a time
         * until a migration ended (a query answered is not one). */
        if (!accepting && (st->o->persistent || !busy)) {
            if (nw == MAX_WORKERS) { /* forget finished workers */
                size_t k = 0;
                for (size_t i = 0; i < nw; i++)
                    if (ws[i].fd >= 0)
                        ws[k++] = ws[i];
                nw = k;
            }
            if (nw < MAX_WORKERS && fork_worker(st, &ws[nw]) == 0)
                nw++;
            else
                vmt_cli_fail("receive", "%s", vmt_error_last());
            open = true;
        }
        if (!open) { /* not persistent: the one worker is done */
            status = 1;
            break;
        }
        struct pollfd pf[MAX_WORKERS + 1];
        size_t map[MAX_WORKERS], np = 0;
        pf[np++] = (struct pollfd){.fd = sfd, .events = POLLIN};
        for (size_t i = 0; i < nw; i++)
            if (ws[i].fd >= 0) {
                map[np - 1] = i;
                pf[np++] = (struct pollfd){.fd = ws[i].fd, .events = POLLIN};
            }
        if (poll(pf, np, 1000) < 0 && errno != EINTR)
            break;
        while (waitpid(-1, NULL, WNOHANG) > 0) {
        }
        if (pf[0].revents & POLLIN) {
            status = 0;
            break;
        }
        for (size_t k = 1; k < np; k++) {
            if (!(pf[k].revents & (POLLIN | POLLHUP)))
                continue;
            int r = worker_read(st->o, &ws[map[k - 1]]);
            if (r != 0 && !st->o->persistent)
                status = r > 0 ? 0 : 1;
        }
    }
    for (size_t i = 0; i < nw; i++) /* a worker still waiting for a client */
        if (ws[i].fd >= 0 && !ws[i].accepted)
            kill(ws[i].pid, SIGTERM);
    close(sfd);
    return status;
}

static int receive_setup(recv_state *st)
{
    recv_opts *o = st->o;
    if (!o->listen)
        return vmt_error_set(VMT_EINVAL, "--listen ADDR:PORT is required");
    if (o->psk_file && o->tls_spec)
        return vmt_error_set(VMT_EINVAL, "--psk and --tls: choose one");
    int rc = vmt_net_addr_parse(o->listen, &st->addr);
    if (!rc && o->tls_spec && st->addr.scheme == VMT_NET_SCHEME_RDMA)
        rc = vmt_error_set(VMT_EINVAL, "--tls over rdma:// is not supported");
    if (!rc)
        rc = vmt_cli_resolve_store(&o->common);
    if (!rc) {
        vmproc_opts vo = {.store = o->common.store, .init_store = o->init_store};
        rc = vmp_prepare_store(&vo);
    }
    if (!rc && o->psk_file)
        rc = vmt_cli_read_psk(o->psk_file, st->key, sizeof(st->key), &st->key_len);
    if (!rc && o->tls_spec)
        rc = vmt_cli_tls_new(o->tls_spec, true, &st->tls);
    if (!rc)
        rc = vmt_cli_make_run_dir(o->common.store);
    if (!rc)
        rc = vmt_listen_url(&st->l, o->listen);
    return rc;
}

int vmt_cli_receive(int argc, char **argv)
{
    static const struct option longopts[] = {VMT_CLI_COMMON_LONGOPTS,
                                             {"listen", required_argument, NULL, OPT_LISTEN},
                                             {"persistent", no_argument, NULL, OPT_PERSISTENT},
                                             {"name", required_argument, NULL, OPT_NAME},
                                             {"psk", required_argument, NULL, OPT_PSK},
                                             {"tls", required_argument, NULL, OPT_TLS},
                                             {"timeout", required_argument, NULL, OPT_TIMEOUT},
                                             {"init", no_argument, NULL, OPT_INIT},
                                             {"huge-pages", no_argument, NULL, OPT_HUGE},
                                             {NULL, 0, NULL, 0}};
    recv_opts o = {.timeout_s = 10, .common = {.cmd = "receive"}};
    const char *pos[1];
    int npos,
        prc = vmt_cli_parse(&o.common, argc, argv, NULL, longopts, receive_opt, &o, pos, 0, &npos);
    if (prc)
        return prc < 0 ? (receive_usage(stdout), 0) : 1;
    recv_state st = {.o = &o};
    if (receive_setup(&st) != 0) {
        vmt_tls_free(st.tls);
        return vmt_cli_fail("receive", "%s", vmt_error_last());
    }
    char addr[300];
    st.addr.port = vmt_listener_port(st.l);
    vmt_net_addr_format(&st.addr, addr, sizeof(addr));
    if (!strncmp(addr, "tcp://", 6)) /* HOST:PORT, as `vmtree migrate` takes it */
        memmove(addr, addr + 6, strlen(addr + 6) + 1);
    char text[400];
    snprintf(text, sizeof(text), "listening on %s", addr);
    if (o.common.json)
        emit(&o, "listening", "addr", addr, text);
    else
        printf("%s\n", text);
    fflush(stdout);
    int status = receive_loop(&st);
    vmt_listener_close(st.l);
    vmt_tls_free(st.tls);
    return status;
}
