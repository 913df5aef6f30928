/*
 * vCPU threads and run control: the KVM_RUN loop, exit handling, pause and
 * resume (kick with a signal and immediate_exit), waiting for the VM to stop.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

#include "vmm_internal.h"

/*
 * The kick signal: a no-op handler installed once per process without
 * SA_RESTART, so that pthread_kill() makes KVM_RUN return EINTR.  This is the
 * one piece of process-wide state the VMM needs; it is set up idempotently.
 */
#define KICK_SIGNAL (SIGRTMIN + 5)
static pthread_once_t kick_once = PTHREAD_ONCE_INIT;

static void kick_handler(int sig)
{
    (void)sig;
}

static void install_kick(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = kick_handler;
    sigemptyset(&sa.sa_mask);
    sigaction(KICK_SIGNAL, &sa, NULL);
}

const char *vmt_exit_kind_name(vmt_exit_kind k)
{
    static const char *const names[] = {"running",  "exit-port", "hlt",     "shutdown",
                                        "internal", "unhandled", "stopped", "error"};
    return (unsigned)k < VMT_ARRAY_SIZE(names) ? names[k] : "?";
}

/* Kicks every started vCPU thread out of KVM_RUN; caller holds vm->lock. */
static void kick_all(vmt_vm *vm)
{
    for (unsigned i = 0; i < vm->nvcpus; i++) {
        vmm_vcpu *vc = &vm->vcpus[i];
        if (!vc->thread_started)
            continue;
        __atomic_store_n(&vc->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
        pthread_kill(vc->thread, KICK_SIGNAL);
    }
}

/* Records the first exit that stops the VM and tells every vCPU. */
static void stop_vm(vmm_vcpu *vc, vmt_exit_kind kind, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void stop_vm(vmm_vcpu *vc, vmt_exit_kind kind, int status, const char *fmt, ...)
{
    vmt_vm *vm = vc->vm;
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    bool have_regs = vmm_vcpu_get_regs(vc, &regs, &sregs) == 0;
    va_list ap;

    pthread_mutex_lock(&vm->lock);
    if (vm->exit.kind == VMT_EXIT_NONE) {
        vm->exit.kind = kind;
        vm->exit.status = status;
        vm->exit.vcpu = vc->idx;
        if (have_regs) {
            vm->exit.regs = regs;
            vm->exit.sregs = sregs;
        }
        va_start(ap, fmt);
        vsnprintf(vm->exit.reason, sizeof(vm->exit.reason), fmt, ap);
        va_end(ap);
        kick_all(vm);
        pthread_cond_broadcast(&vm->cond);
    }
    pthread_mutex_unlock(&vm->lock);
}

static void handle_event(vmm_vcpu *vc, uint32_t value)
{
    vmt_vm *vm = vc->vm;
    if (!vm->cfg.event)
        return;
    if (vm->cfg.event(vm->cfg.event_ctx, vm, vc->idx, value) == VMT_EVENT_PAUSE) {
        pthread_mutex_lock(&vm->lock);
        vm->pause_req = true;
        kick_all(vm);
        pthread_mutex_unlock(&vm->lock);
    }
}

static void handle_io(vmm_vcpu *vc)
{
    struct kvm_run *run = vc->run;
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    bool out = run->io.direction == KVM_EXIT_IO_OUT;
    uint16_t port = run->io.port;

    for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size) {
        if (port >= VMT_PORT_COM1 && port < VMT_PORT_COM1 + 8 && run->io.size == 1) {
            vmm_serial_io(&vc->vm->serial, port, out, data);
        } else if (port == VMT_PORT_EXIT && out) {
            stop_vm(vc, VMT_EXIT_PORT, data[0], "guest exited with status %u", data[0]);
        } else if (port == VMT_PORT_EVENT && out && run->io.size == 4) {
            uint32_t v;
            memcpy(&v, data, 4);
            handle_event(vc, v);
        } else if (!out) {
            memset(data, 0xff, run->io.size); /* nothing there: the bus floats high */
        } else {
            vmt_debug("vCPU %u: write to unemulated port 0x%x ignored", vc->idx, port);
        }
    }
}

/* Returns false when the thread should stop running the guest. */
static bool handle_exit(vmm_vcpu *vc)
{
    struct kvm_run *run = vc->run;
    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        handle_io(vc);
        return true;
    case KVM_EXIT_INTR:
        return true;
    case KVM_EXIT_DIRTY_RING_FULL:
        if (vmm_dirty_ring_full(vc) != 0) {
            stop_vm(vc, VMT_EXIT_ERROR, 0, "harvesting the dirty ring: %s", vmt_error_last());
            return false;
        }
        return true;
    case KVM_EXIT_HLT:
        stop_vm(vc, VMT_EXIT_HLT, 0, "vCPU %u halted with nothing to wake it", vc->idx);
        return false;
    case KVM_EXIT_SHUTDOWN:
        stop_vm(vc, VMT_EXIT_SHUTDOWN, 0, "vCPU %u shut down (triple fault)", vc->idx);
        return false;
    case KVM_EXIT_INTERNAL_ERROR:
        stop_vm(vc, VMT_EXIT_INTERNAL, 0, "vCPU %u: KVM internal error, suberror %u", vc->idx,
                run->internal.suberror);
        return false;
    case KVM_EXIT_FAIL_ENTRY:
        stop_vm(vc, VMT_EXIT_INTERNAL, 0, "vCPU %u: entry failed, hardware reason 0x%llx",
                vc->idx, (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
        return false;
    case KVM_EXIT_MMIO:
        stop_vm(vc, VMT_EXIT_UNHANDLED, 0, "vCPU %u: %s of %u bytes at unbacked address 0x%llx",
                vc->idx, run->mmio.is_write ? "write" : "read", run->mmio.len,
                (unsigned long long)run->mmio.phys_addr);
        return false;
    default:
        stop_vm(vc, VMT_EXIT_UNHANDLED, 0, "vCPU %u: unhandled KVM exit reason %u", vc->idx,
                run->exit_reason);
        return false;
    }
}

/* Parks while a pause is requested; returns false when the thread must end. */
static bool wait_runnable(vmm_vcpu *vc)
{
    vmt_vm *vm = vc->vm;
    pthread_mutex_lock(&vm->lock);
    /* Cleared under the lock: a pause that sets it after this is seen below
     * or makes KVM_RUN return at once. */
    vc->run->immediate_exit = 0;
    while (vm->pause_req && !vm->stop_req && vm->exit.kind == VMT_EXIT_NONE) {
        vc->parked = true;
        vm->nparked++;
        pthread_cond_broadcast(&vm->cond);
        pthread_cond_wait(&vm->cond, &vm->lock);
        vm->nparked--;
        vc->parked = false;
        vc->run->immediate_exit = 0;
    }
    bool go = !vm->stop_req && vm->exit.kind == VMT_EXIT_NONE;
    pthread_mutex_unlock(&vm->lock);
    return go;
}

/*
 * After a port I/O exit KVM completes the instruction (an IN's value into
 * RAX, RIP past it, the next iteration of a string op) only on the next
 * KVM_RUN.  When a pause is coming, do that now with immediate_exit set
 * (KVM completes, then returns EINTR without entering the guest), so the
 * state read or set while paused has no completion pending: a vCPU whose
 * state is replaced (an in-place rollback) must not later apply the old
 * instruction's completion to the new state.  False when the thread must
 * end.
 */
static bool complete_io(vmm_vcpu *vc)
{
    while (vc->run->exit_reason == KVM_EXIT_IO) {
        pthread_mutex_lock(&vc->vm->lock);
        bool pausing = vc->vm->pause_req;
        pthread_mutex_unlock(&vc->vm->lock);
        if (!pausing)
            return true;
        __atomic_store_n(&vc->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
        if (ioctl(vc->fd, KVM_RUN, 0) < 0)
            return true; /* EINTR: completed */
        if (!handle_exit(vc)) /* the completion needed another exit */
            return false;
    }
    return true;
}

void *vmm_vcpu_thread(void *arg)
{
    vmm_vcpu *vc = arg;
    sigset_t set;
    sigfillset(&set);
    sigdelset(&set, KICK_SIGNAL);
    pthread_sigmask(SIG_SETMASK, &set, NULL);

    while (wait_runnable(vc)) {
        if (ioctl(vc->fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            stop_vm(vc, VMT_EXIT_ERROR, 0, "KVM_RUN on vCPU %u: %s", vc->idx, strerror(errno));
            break;
        }
        if (!handle_exit(vc) || !complete_io(vc))
            break;
    }
    pthread_mutex_lock(&vc->vm->lock);
    vc->vm->nfinished++;
    pthread_cond_broadcast(&vc->vm->cond);
    pthread_mutex_unlock(&vc->vm->lock);
    return NULL;
}

int vmt_vm_start(vmt_vm *vm)
{
    pthread_once(&kick_once, install_kick);
    pthread_mutex_lock(&vm->lock);
    if (vm->running) {
        pthread_mutex_unlock(&vm->lock);
        return vmt_error_set(VMT_EBUSY, "the VM is already running");
    }
    vm->running = true;
    vm->nfinished = 0;
    vm->stop_req = false;
    vm->exit.kind = VMT_EXIT_NONE;
    int rc = 0;
    for (unsigned i = 0; i < vm->nvcpus; i++) {
        vmm_vcpu *vc = &vm->vcpus[i];
        int e = pthread_create(&vc->thread, NULL, vmm_vcpu_thread, vc);
        if (e) {
            rc = vmt_error_errno(VMT_ERR, e, "starting the thread of vCPU %u", i);
            break;
        }
        vc->thread_started = true;
    }
    pthread_mutex_unlock(&vm->lock);
    if (rc)
        vmt_vm_request_stop(vm);
    return rc;
}

static unsigned started_threads(const vmt_vm *vm)
{
    unsigned n = 0;
    for (unsigned i = 0; i < vm->nvcpus; i++)
        n += vm->vcpus[i].thread_started;
    return n;
}

int vmt_vm_pause(vmt_vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    vm->pause_req = true;
    kick_all(vm);
    unsigned want = started_threads(vm);
    while (vm->nparked + vm->nfinished < want)
        pthread_cond_wait(&vm->cond, &vm->lock);
    pthread_mutex_unlock(&vm->lock);
    return 0;
}

int vmt_vm_resume(vmt_vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    vm->pause_req = false;
    pthread_cond_broadcast(&vm->cond);
    pthread_mutex_unlock(&vm->lock);
    return 0;
}

bool vmt_vm_is_paused(vmt_vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    bool p = vm->pause_req;
    pthread_mutex_unlock(&vm->lock);
    return p;
}

int vmt_vm_wait(vmt_vm *vm, uint64_t timeout_ns, vmt_vm_exit *out)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    uint64_t t = (uint64_t)dl.tv_nsec + timeout_ns;
    dl.tv_sec += (time_t)(t / 1000000000ull);
    dl.tv_nsec = (long)(t % 1000000000ull);
    int rc = 0;
    pthread_mutex_lock(&vm->lock);
    while (vm->exit.kind == VMT_EXIT_NONE) {
        if (!timeout_ns) {
            pthread_cond_wait(&vm->cond, &vm->lock);
        } else if (pthread_cond_timedwait(&vm->cond, &vm->lock, &dl) == ETIMEDOUT) {
            rc = vmt_error_set(VMT_ETIMEDOUT, "the VM is still running");
            break;
        }
    }
    if (out)
        *out = vm->exit;
    pthread_mutex_unlock(&vm->lock);
    return rc;
}

int vmt_vm_request_stop(vmt_vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    if (!vm->running) {
        pthread_mutex_unlock(&vm->lock);
        return 0;
    }
    vm->stop_req = true;
    if (vm->exit.kind == VMT_EXIT_NONE) {
        vm->exit.kind = VMT_EXIT_STOPPED;
        snprintf(vm->exit.reason, sizeof(vm->exit.reason), "stopped on request");
    }
    kick_all(vm);
    pthread_cond_broadcast(&vm->cond);
    pthread_mutex_unlock(&vm->lock);
    for (unsigned i = 0; i < vm->nvcpus; i++) {
        vmm_vcpu *vc = &vm->vcpus[i];
        if (vc->thread_started) {
            pthread_join(vc->thread, NULL);
            vc->thread_started = false;
        }
    }
    pthread_mutex_lock(&vm->lock);
    vm->running = false;
    vm->pause_req = false;
    pthread_mutex_unlock(&vm->lock);
    return 0;
}
