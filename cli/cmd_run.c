/* vmtree run: boot a guest image with its console on stdout. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "vmproc.h"
#include "vmtree/vmm.h"

#define EXIT_VMTREE_ERROR 125 /* vmtree itself failed: bad input, KVM */
#define EXIT_GUEST_CRASH 126  /* triple fault, internal error, unhandled exit */
#define EXIT_TIMEOUT 124

typedef struct run_opts {
    const char *image;
    const char *cmdline;
    uint64_t mem;
    unsigned vcpus;
    bool irqchip;
    bool dirty_report;
    uint64_t dirty_interval_ms;
    vmt_dirty_mode dirty_mode;
    bool huge_pages;
    uint64_t timeout_s;
    const char *name; /* --name: a VM process with a control socket */
    bool detach;
    vmt_cli_common common;
} run_opts;

static void run_usage(FILE *f)
{
    fprintf(f,
            "usage: vmtree run GUEST.elf [--mem SIZE] [--vcpus N] [--cmdline STR]\n"
            "                  [--dirty-report[=MS]] [--dirty-mode bitmap|ring]\n"
            "                  [--irqchip] [--huge-pages] [--timeout SEC]\n"
            "       vmtree run GUEST.elf --name NAME [--detach] [--store DIR] [--json]\n"
            "                  [--mem SIZE] [--vcpus N] [--cmdline STR] [--dirty-mode M]\n\n"
            "Boots an ELF64 guest in 64-bit long mode (Linux 64-bit boot protocol) with\n"
            "its COM1 console on stdout, and exits with the guest's exit-port status.\n\n"
            "With --name the VM runs as a named VM process of the store (created if\n"
            "missing) that `vmtree snapshot|rollback|pause|resume|stop|status NAME`\n"
            "talk to through its control socket RUN/NAME.sock; `vmtree ps`\n"
            "lists it.  SIGTERM or SIGINT stop it cleanly.  RUN is STORE/run; for a\n"
            "rados:// store, shared by several hosts, it is this host's own\n"
            "$VMTREE_RUN_DIR (else $XDG_RUNTIME_DIR/vmtree/HASH, /run/vmtree/HASH as\n"
            "root), and the name is registered with this host ($VMTREE_HOST, else the\n"
            "hostname): a name another host runs is refused, naming that host.\n\n"
            "  --name NAME       run as VM process NAME ([A-Za-z0-9._-], 1..63)\n"
            "  --detach          with --name: run in the background, the console in\n"
            "                    RUN/NAME.console (vmtree console NAME); prints\n"
            "                    the name and process id once the VM runs\n"
            "  --store DIR       the store (default: $VMTREE_STORE, else\n"
            "                    ~/.local/share/vmtree/store)\n"
            "  --json            with --detach: print {name, pid, store} as JSON\n"
            "  --mem SIZE        guest RAM, multiple of 2M, 2M..64G (default 256M)\n"
            "  --vcpus N         virtual CPUs (default 1)\n"
            "  --cmdline STR     command line passed to the guest (boot_params)\n"
            "  --dirty-report[=MS]  track dirty pages and print a line to stderr every MS\n"
            "                    milliseconds (default 200) and a summary at the end\n"
            "  --dirty-mode M    bitmap (KVM_GET/CLEAR_DIRTY_LOG, default) or ring\n"
            "  --irqchip         create the in-kernel irqchip and PIT\n"
            "  --huge-pages      back guest RAM with 2 MiB pages where the host allows\n"
            "                    (THP for shared memory: 'advise' or 'always'); restores\n"
            "                    into it go about twice as fast (docs/snapshot.md)\n"
            "  --timeout SEC     stop the guest after SEC seconds (exit status 124)\n\n"
            "Exit status: the guest's status; 124 timeout; 125 vmtree failed (bad\n"
            "input, KVM unavailable); 126 the guest crashed (triple fault, KVM error).\n");
}

/* The options of a named VM process (vmt_cli_run with --name). */
static int named_opt(run_opts *o, int c, const char *arg)
{
    if (c == 'N') {
        if (vmt_cli_check_name("--name", arg) != 0)
            return vmt_cli_fail("run", "%s", vmt_error_last());
        o->name = arg;
    } else if (c == 'D') {
        o->detach = true;
    } else {
        vmt_cli_common_opt(&o->common, c, arg);
    }
    return 0;
}

static int check_named(const run_opts *o)
{
    if (!o->name && (o->detach || o->common.store_opt || o->common.json))
        return vmt_cli_fail("run", "--detach, --store and --json need --name");
    if (o->name && (o->dirty_report || o->timeout_s))
        return vmt_cli_fail("run", "--dirty-report and --timeout work only without --name");
    return 0;
}

static int parse_run_opts(int argc, char **argv, run_opts *o)
{
    static const struct option longopts[] = {
        {"mem", required_argument, NULL, 'm'},  {"vcpus", required_argument, NULL, 'c'},
        {"cmdline", required_argument, NULL, 'l'},
        {"dirty-report", optional_argument, NULL, 'd'},
        {"dirty-mode", required_argument, NULL, 'M'},
        {"irqchip", no_argument, NULL, 'i'},     {"timeout", required_argument, NULL, 't'},
        {"huge-pages", no_argument, NULL, 'H'},
        {"name", required_argument, NULL, 'N'},  {"detach", no_argument, NULL, 'D'},
        VMT_CLI_COMMON_LONGOPTS,                 {NULL, 0, NULL, 0},
    };
    uint64_t v;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+h", longopts, NULL)) != -1 || optind < argc) {
        if (c == -1) { /* a positional argument among the options */
            if (o->image)
                return vmt_cli_fail("run", "unexpected argument '%s'", argv[optind]);
            o->image = argv[optind++];
            continue;
        }
        switch (c) {
        case 'm':
            if (vmt_parse_size(optarg, &o->mem) != 0)
                return vmt_cli_fail("run", "--mem: %s", vmt_error_last());
            break;
        case 'c':
            if (vmt_parse_u64(optarg, 1, VMT_VM_MAX_VCPUS, &v) != 0)
                return vmt_cli_fail("run", "--vcpus: %s", vmt_error_last());
            o->vcpus = (unsigned)v;
            break;
        case 'l': o->cmdline = optarg; break;
        case 'd':
            o->dirty_report = true;
            if (optarg && vmt_parse_u64(optarg, 1, 3600000, &o->dirty_interval_ms) != 0)
                return vmt_cli_fail("run", "--dirty-report: %s", vmt_error_last());
            break;
        case 'M':
            if (vmt_cli_parse_dirty_mode(optarg, &o->dirty_mode) != 0)
                return vmt_cli_fail("run", "%s", vmt_error_last());
            break;
        case 'i': o->irqchip = true; break;
        case 'H': o->huge_pages = true; break;
        case 't':
            if (vmt_parse_u64(optarg, 1, 86400, &o->timeout_s) != 0)
                return vmt_cli_fail("run", "--timeout: %s", vmt_error_last());
            break;
        case 'h': run_usage(stdout); return -1;
        case 'N':
        case 'D':
        case VMT_CLI_OPT_STORE:
        case VMT_CLI_OPT_JSON:
        case VMT_CLI_OPT_PROGRESS:
            if (named_opt(o, c, optarg) != 0)
                return 1;
            break;
        default:
            return vmt_cli_fail("run", "unknown option '%s' (see vmtree run --help)",
                                argv[optind - 1]);
        }
    }
    if (!o->image)
        return vmt_cli_fail("run", "no guest image given (see vmtree run --help)");
    return check_named(o);
}

/* vmtree run --name: a VM process (vmproc.c). */
static int run_named(run_opts *o)
{
    o->common.cmd = "run";
    if (vmt_cli_resolve_store(&o->common) != 0)
        return vmt_cli_fail("run", "%s", vmt_error_last()), EXIT_VMTREE_ERROR;
    vmproc_opts vo = {
        .cmd = "run",
        .store = o->common.store,
        .name = o->name,
        .image = o->image,
        .cmdline = o->cmdline,
        .mem = o->mem,
        .vcpus = o->vcpus,
        .irqchip = o->irqchip,
        .dirty_mode = o->dirty_mode,
        .huge_pages = o->huge_pages,
        .detach = o->detach,
        .json = o->common.json,
        .init_store = true,
    };
    return vmt_vmproc_main(&vo);
}

static void print_crash(const vmt_vm_exit *ex)
{
    const struct kvm_regs *r = &ex->regs;
    const struct kvm_sregs *s = &ex->sregs;
    fprintf(stderr, "vmtree: run: guest stopped: %s\n", ex->reason);
    fprintf(stderr,
            "  rip %016llx rsp %016llx rflags %016llx\n"
            "  rax %016llx rbx %016llx rcx %016llx rdx %016llx\n"
            "  rsi %016llx rdi %016llx rbp %016llx\n"
            "  cr0 %016llx cr2 %016llx cr3 %016llx cr4 %016llx efer %llx cs %04x\n",
            r->rip, r->rsp, r->rflags, r->rax, r->rbx, r->rcx, r->rdx, r->rsi, r->rdi, r->rbp,
            s->cr0, s->cr2, s->cr3, s->cr4, s->efer, s->cs.selector);
}

typedef struct dirty_report {
    uint64_t *bm;
    uint64_t nbits;
    uint64_t total_syncs, total_pages, max_pages;
    uint64_t t0, last;
} dirty_report;

static void report_tick(vmt_vm *vm, dirty_report *dr)
{
    uint64_t n = 0;
    memset(dr->bm, 0, VMT_DIV_ROUND_UP(dr->nbits, 64) * sizeof(uint64_t));
    uint64_t t = vmt_now_ns();
    if (vmt_dirty_sync(vm, dr->bm, dr->nbits, &n) != 0) {
        fprintf(stderr, "vmtree: run: dirty sync: %s\n", vmt_error_last());
        return;
    }
    uint64_t cost = vmt_now_ns() - t;
    double dt = (double)(t - dr->last) / 1e9;
    dr->last = t;
    dr->total_syncs++;
    dr->total_pages += n;
    dr->max_pages = VMT_MAX(dr->max_pages, n);
    fprintf(stderr, "dirty: t=%.2fs pages=%llu (%.1f MiB) rate=%.0f pages/s sync=%.0f us\n",
            (double)(t - dr->t0) / 1e9, (unsigned long long)n,
            (double)n * VMT_PAGE_SIZE / (1 << 20), dt > 0 ? (double)n / dt : 0,
            (double)cost / 1e3);
}

static int wait_loop(vmt_vm *vm, const run_opts *o, dirty_report *dr, vmt_vm_exit *ex)
{
    uint64_t start = vmt_now_ns();
    uint64_t tick = (o->dirty_report ? o->dirty_interval_ms : 1000) * 1000000ull;
    for (;;) {
        int rc = vmt_vm_wait(vm, tick, ex);
        if (rc == 0)
            return 0;
        if (o->dirty_report)
            report_tick(vm, dr);
        if (o->timeout_s && vmt_now_ns() - start >= o->timeout_s * 1000000000ull) {
            vmt_vm_request_stop(vm);
            return EXIT_TIMEOUT;
        }
    }
}

static int finish(vmt_vm *vm, const run_opts *o, dirty_report *dr, int waited,
                  const vmt_vm_exit *ex)
{
    if (o->dirty_report) {
        report_tick(vm, dr);
        fprintf(stderr, "dirty: summary: %llu syncs, %llu page reports, peak %llu pages, mode %s\n",
                (unsigned long long)dr->total_syncs, (unsigned long long)dr->total_pages,
                (unsigned long long)dr->max_pages,
                o->dirty_mode == VMT_DIRTY_RING ? "ring" : "bitmap");
    }
    if (waited == EXIT_TIMEOUT) {
        fprintf(stderr, "vmtree: run: stopped the guest after %llu s (--timeout)\n",
                (unsigned long long)o->timeout_s);
        return EXIT_TIMEOUT;
    }
    switch (ex->kind) {
    case VMT_EXIT_PORT: return ex->status;
    case VMT_EXIT_HLT: fprintf(stderr, "vmtree: run: %s\n", ex->reason); return 0;
    default: print_crash(ex); return EXIT_GUEST_CRASH;
    }
}

int vmt_cli_run(int argc, char **argv)
{
    run_opts o = {.mem = 256ull << 20, .vcpus = 1, .dirty_interval_ms = 200};
    int prc = parse_run_opts(argc, argv, &o);
    if (prc)
        return prc < 0 ? 0 : EXIT_VMTREE_ERROR;
    if (o.name)
        return run_named(&o);

    vmt_kvm *kvm = NULL;
    vmt_vm *vm = NULL;
    dirty_report dr = {0};
    vmt_vm_exit ex = {0};
    int status = EXIT_VMTREE_ERROR;
    vmt_vm_config cfg;
    vmt_vm_config_init(&cfg);
    cfg.mem_size = o.mem;
    cfg.vcpus = o.vcpus;
    cfg.irqchip = o.irqchip;
    cfg.dirty_mode = o.dirty_mode;
    cfg.huge_pages = o.huge_pages;
    cfg.console = vmt_console_to_fd;
    cfg.console_ctx = (void *)(intptr_t)STDOUT_FILENO;

    if (vmt_kvm_open(&kvm) != 0 || vmt_vm_create(&vm, kvm, &cfg) != 0 ||
        vmt_vm_load_elf(vm, o.image, o.cmdline) != 0) {
        vmt_cli_fail("run", "%s", vmt_error_last());
        goto out;
    }
    if (o.dirty_report) {
        dr.nbits = vmt_vm_ram_pages(vm);
        dr.bm = calloc(VMT_DIV_ROUND_UP(dr.nbits, 64), sizeof(uint64_t));
        if (!dr.bm || vmt_dirty_start(vm, 0) != 0) {
            vmt_cli_fail("run", "dirty tracking: %s", dr.bm ? vmt_error_last() : "out of memory");
            goto out;
        }
        dr.t0 = dr.last = vmt_now_ns();
    }
    if (vmt_vm_start(vm) != 0) {
        vmt_cli_fail("run", "%s", vmt_error_last());
        goto out;
    }
    int waited = wait_loop(vm, &o, &dr, &ex);
    vmt_vm_request_stop(vm);
    status = finish(vm, &o, &dr, waited, &ex);
out:
    free(dr.bm);
    vmt_vm_destroy(vm);
    vmt_kvm_close(kvm);
    return status;
}
