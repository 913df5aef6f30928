/* Helpers shared by the migrate/ suites: a temporary store with its
 * catalog, VMs restored from snapshots with the fixture's console and event
 * recording, the counter's checksum lines, the dirtier's invariant, and a
 * fault-injecting sink to put in front of the store sink. */
#ifndef VMTREE_TEST_MIGFX_H
#define VMTREE_TEST_MIGFX_H

#include "fixture.h"
#include "vmtree/migrate.h"

/* ---- store + catalog ---------------------------------------------------- */

typedef struct migfx_store {
    char *dir;
    vmt_store *s;
    vmt_catalog *c;
} migfx_store;

/* A new store (and catalog) in a fresh temporary directory. */
int migfx_store_open(migfx_store *st);
/* Closes and removes it. */
void migfx_store_close(migfx_store *st);
/* Objects in the store now. */
uint64_t migfx_store_objects(migfx_store *st);

/* ---- guests ---------------------------------------------------------------- */

/* Boots `name` in a VM of mem_size bytes (not started). */
int migfx_boot(fx_guest *g, const char *name, const char *cmdline, uint64_t mem_size);
/* A VM from snapshot `id` with console and events recorded as fx_boot does
 * (not started); *restore as vmt_vm_from_snapshot returns it. */
int migfx_restore(fx_guest *g, vmt_store *s, const vmt_id *id, vmt_restore_mode mode,
                  vmt_restore **restore, vmt_snap_record *rec);
/* The same into a VM whose RAM asks for 2 MiB pages (vmt_vm_config.huge_pages). */
int migfx_restore_huge(fx_guest *g, vmt_store *s, const vmt_id *id, vmt_restore_mode mode,
                       bool huge_pages, vmt_restore **restore, vmt_snap_record *rec);
/* fx_free, then frees the restore handle (may be NULL). */
void migfx_free(fx_guest *g, vmt_restore *restore);
/* Attaches with vm_name `name` (image/cmdline recorded as given). */
int migfx_attach(vmt_vmsnap **vs, migfx_store *st, fx_guest *g, const vmt_id *head,
                 const char *name);
/* Takes a snapshot with `max_rounds` and `pause_pages`; prints the error. */
int migfx_take(vmt_vmsnap *vs, unsigned max_rounds, uint64_t pause_pages, vmt_id *id,
               vmt_snap_take_stats *stats);
/* Waits for the guest's n-th event and makes sure the pause it asked for is
 * complete. */
bool migfx_wait_event_paused(fx_guest *g, unsigned n, uint64_t timeout_ns);
/* A guest a migration will fill (its VM comes from the destination): lock,
 * condition (monotonic clock) and console buffer; 0 or -1. */
int migfx_incoming(fx_guest *g);
/* The destination's VM config: defaults, console into g's buffer. */
void migfx_incoming_config(fx_guest *g, vmt_vm_config *cfg);

/* Events seen so far. */
unsigned migfx_events(fx_guest *g);

/* ---- counter -------------------------------------------------------------- */

typedef struct migfx_line {
    uint64_t step;
    uint64_t sum;
} migfx_line;

/* The complete "counter: step N sum X" lines of `text` (a line counts only
 * when it starts at the beginning of text or after a newline and ends in
 * one).  *out is malloc'd (caller frees); returns how many. */
size_t migfx_counter_lines(const char *text, migfx_line **out);
/* The highest step printed so far (0 when none). */
uint64_t migfx_counter_step(fx_guest *g);
/* Waits until a counter line with step >= `step` has been printed. */
bool migfx_wait_step(fx_guest *g, uint64_t step, uint64_t timeout_ns);
/*
 * Every complete counter line of `restored` must equal the line of the same
 * step in `orig` (which must have it).  Returns the number of lines
 * compared, or -1 after printing the first mismatch.  *first (may be NULL)
 * receives the restored run's first step.
 */
long migfx_counter_compare(const char *orig, const char *restored, uint64_t *first);
/*
 * A counter VM eagerly restored from `snap` (*rec gets its record; may be
 * NULL) runs until step at + 10 (30 s at most); returns migfx_counter_compare
 * of its output against `orig`, or -1 when it could not be restored or run.
 */
long migfx_restore_compare(vmt_store *s, const vmt_id *snap, const char *orig, uint64_t at,
                           vmt_snap_record *rec);

/* ---- dirtier ------------------------------------------------------------ */

/*
 * QEMU's migration-test invariant on the first bytes of the region's pages
 * (each of `slices` vCPU slices separately): all equal except that the
 * pages before the writer's cursor are one higher (mod 256).  Returns true,
 * or false with the reason in why.
 */
bool migfx_dirtier_invariant(const uint8_t *ram, uint64_t base, uint64_t pages, unsigned slices,
                             char *why, size_t cap);

/* ---- fault injection -------------------------------------------------------- */

enum { MIGFX_OP_NONE, MIGFX_OP_PAGES, MIGFX_OP_STATE, MIGFX_OP_COMMIT };

/* A sink that forwards to `inner` and fails the `nth` call (1-based) of
 * `op` instead (pages: counting only calls of rounds >= min_round).
 * on_round (may be NULL) is called before the first page of each round is
 * forwarded (also the paused round's: it must not wait for the guest then),
 * so that a running guest can dirty pages meanwhile. */
typedef struct migfx_faulty {
    int op;
    unsigned nth, min_round;
    void (*on_round)(void *ctx, unsigned round);
    void *on_round_ctx;
    vmt_sink inner;
    vmt_sink_ops ops; /* ours, with the inner sink's flags */
    unsigned counted, aborts, max_round;
    bool fired;
    unsigned rounds_seen;
} migfx_faulty;

/* vmt_snap_take_opts.interpose for a migfx_faulty (ctx). */
vmt_sink migfx_faulty_interpose(void *ctx, vmt_sink inner);

#endif
