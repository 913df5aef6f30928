/* A guest under test: a VM with its console in a buffer and its events
 * recorded, shared by the hypervisor-glue suites. */
#ifndef VMTREE_TEST_VMM_FIXTURE_H
#define VMTREE_TEST_VMM_FIXTURE_H

#include <pthread.h>

#include "vmtree/vmm.h"

#define FX_SEC 1000000000ull
#define FX_MAX_EVENTS 4096
#define DIRTIER_READY 0xffffffffu
#define DIRTIER_DONE 0xfffffffeu

typedef struct fx_guest {
    vmt_vm *vm;
    vmt_console_buf *con;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned nevents;
    uint32_t events[FX_MAX_EVENTS];
    unsigned event_vcpu[FX_MAX_EVENTS];
    bool pause_on_event;
} fx_guest;

/* The suite's KVM handle (opened by fx_setup). */
extern vmt_kvm *fx_kvm;
int fx_setup(void);
int fx_teardown(void);
/* Exits 77 with the reason printed when /dev/kvm is unusable. */
void fx_require_kvm(void);

/* Creates a VM and loads guests/<name>.elf; not started.  cfg may be NULL
 * (defaults: 256 MiB, 1 vCPU, bitmap mode). */
int fx_boot(fx_guest *g, const char *name, const char *cmdline, const vmt_vm_config *cfg);
void fx_free(fx_guest *g);
/* Waits until at least n events were seen; false on timeout. */
bool fx_wait_events(fx_guest *g, unsigned n, uint64_t timeout_ns);
/* Waits until an event with `value` was seen from `count` distinct vCPUs. */
bool fx_wait_value(fx_guest *g, uint32_t value, unsigned count, uint64_t timeout_ns);
/* Bitmap helpers. */
uint64_t *fx_bitmap(const fx_guest *g);
bool fx_test_bit(const uint64_t *bm, uint64_t bit);
uint64_t fx_count_range(const uint64_t *bm, uint64_t from, uint64_t to);

#endif
