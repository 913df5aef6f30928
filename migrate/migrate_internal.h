/* Internals of migrate/ shared between its files: the attached snapshot
 * state of a VM and the store sink that writes into it. */
#ifndef VMTREE_MIGRATE_INTERNAL_H
#define VMTREE_MIGRATE_INTERNAL_H

#include "vmtree/migrate.h"

/*
 * Holes of guest RAM's memfd (ramhole.c): a hole reads as zero, and reading
 * it through the mapping would allocate and clear a page (shmem allocates
 * on read faults), growing the VM by every page never touched.  One extent
 * (hole or data) is cached; ask in ascending order, and forget the extent
 * when the memory may have changed (a new round: a page written before
 * the round's dirty sync is data already; one written after it is dirty
 * again and comes back in the next round).
 */
typedef struct mig_ram_holes {
    int fd;                   /* RAM's memfd for SEEK_DATA, -1: not usable */
    uint64_t lo, hi;          /* the cached extent [lo, hi) of RAM offsets */
    bool hole;                /* ... is a hole (else data) */
} mig_ram_holes;

void mig_ram_holes_init(mig_ram_holes *h, vmt_vm *vm);
void mig_ram_holes_forget(mig_ram_holes *h);
/* True when the page at RAM offset `off` is a hole. */
bool mig_ram_hole(mig_ram_holes *h, uint64_t off);

/* ---- VM state (vmstate_io.c) --------------------------------------------- */

/* Decodes a state blob of `vcpus` vCPUs into new *vst and *cpus (caller
 * frees both; NULL on failure).  Errors: VMT_ECORRUPT, VMT_ENOMEM. */
int mig_state_decode(const void *blob, size_t len, unsigned vcpus, vmt_vm_state **vst,
                     vmt_vcpu_state **cpus);
/* The same for record r's state object in the store. */
int mig_state_read(vmt_store *s, const vmt_snap_record *r, vmt_vm_state **vst,
                   vmt_vcpu_state **cpus);
/* Sets VM and vCPU state into a VM that is not running. */
int mig_state_set(vmt_vm *vm, const vmt_vm_state *vst, const vmt_vcpu_state *cpus, unsigned n);
/* Decode and set, from a blob or from record r's state object. */
int mig_state_apply_blob(vmt_vm *vm, unsigned vcpus, const void *blob, size_t len);
int mig_state_apply_record(vmt_vm *vm, vmt_store *s, const vmt_snap_record *r);
/* A VM of record r's config (console, events, dirty mode from base, may be NULL). */
int mig_vm_create(vmt_kvm *kvm, const vmt_snap_record *r, const vmt_vm_config *base,
                  vmt_vm **vm);

/* A map entry as it was before this take changed it. */
typedef struct mig_undo {
    uint64_t pfn;
    vmt_id old;
} mig_undo;

/*
 * The store sink (sink_store.c): hashes and puts the pages it is given into
 * the store, points the VM's map at them, and at commit writes the map,
 * the record, commits the store and moves the HEAD ref.  abort rolls the
 * map back to HEAD's and gives every page it received back to the "dirty
 * since HEAD" set, so nothing dirtied since HEAD is forgotten.
 */
typedef struct mig_store_sink {
    vmt_vmsnap *vs;
    const char *message;      /* borrowed for one take */
    uint64_t *sent;           /* pages received during this take */
    uint64_t *changed;        /* pages whose map entry this take changed */
    mig_undo *undo;           /* old map entries, one per changed page */
    size_t nundo, undo_cap;
    uint8_t *copy;            /* stable copies of one batch (the guest runs) */
    const void **ptrs;
    vmt_id *ids;
    bool *is_new;
    size_t *idx;
    size_t cap;               /* pages the batch arrays hold */
    mig_ram_holes holes;      /* RAM's holes: zero pages never read */
    unsigned ext_round;       /* the round the cached extent was seen in */
    vmt_precopy_info info;
    bool have_state;
    vmt_id state_id;
    vmt_snap_record rec;      /* built at commit */
    vmt_id snap_id;
    uint64_t pages_hashed, pages_zero, pages_new, nodes_new, node_bytes, record_bytes,
        objects_new;
} mig_store_sink;

struct vmt_vmsnap {
    vmt_store *store;
    vmt_catalog *cat;
    vmt_vm *vm;
    uint64_t npages, nwords;
    vmt_map *map;             /* HEAD's map (during a take: plus what was received) */
    uint64_t *since_head;     /* pages that may differ from HEAD's map */
    bool has_head;
    vmt_id head;
    vmt_id ref_expect;        /* the HEAD ref as last seen; zero id: absent */
    bool own_logging;         /* attach started dirty logging */
    bool info_known;          /* the VM's config, from the head's record or */
    vmt_precopy_info info;    /* an earlier take (spares the engine a pause) */
    char ref[VMT_SNAP_NAME_MAX + 16];
    char name[VMT_SNAP_NAME_MAX];
    char image[VMT_SNAP_PATH_MAX];
    char cmdline[VMT_BOOT_CMDLINE_MAX];
    mig_store_sink sink;
};

extern const vmt_sink_ops mig_store_sink_ops;

/* Sets up / frees the sink of an attached VM (sizes from vs). */
int mig_store_sink_init(mig_store_sink *k, vmt_vmsnap *vs);
void mig_store_sink_fini(mig_store_sink *k);
/* Readies the sink for one take. */
void mig_store_sink_prepare(mig_store_sink *k, const char *message);

/* Bitmap helpers. */
static inline bool mig_test_bit(const uint64_t *bm, uint64_t bit)
{
    return (bm[bit / 64] >> (bit % 64)) & 1;
}

static inline void mig_set_bit(uint64_t *bm, uint64_t bit)
{
    bm[bit / 64] |= 1ull << (bit % 64);
}

#endif
