/*
 * vmtree migrate/: the pre-copy engine and what drives VMs through it
 * (DESIGN.md §2-§3).  One engine copies a running VM's pages and state to a
 * sink: the local store (a snapshot of a running VM is a pre-copy
 * "migration into the store", so the VM pauses only for the last dirty set)
 * or, later, a TCP/RDMA peer.  The decision when to stop copying while the
 * VM runs is a policy callback; the engine is mechanism only.
 *
 * Also here, because they drive both the VMM and the store: attaching the
 * snapshot machinery to a running VM, and creating a VM from a snapshot.
 *
 * Threading: handles are used from one thread at a time; the VM keeps
 * running on its own vCPU threads meanwhile.  Errors: 0 or a negative
 * VMT_E* with vmt_error_last().
 */
#ifndef VMTREE_MIGRATE_H
#define VMTREE_MIGRATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtree/snapshot.h"
#include "vmtree/store.h"
#include "vmtree/util.h"
#include "vmtree/vmm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- sinks -------------------------------------------------------------- */

/* The VM being copied, told to the sink before any page (a peer creates
 * its VM from this). */
typedef struct vmt_precopy_info {
    uint64_t mem_size;        /* bytes of guest RAM */
    uint32_t vcpus;
    bool irqchip;             /* in-kernel irqchip + PIT */
    uint64_t npages;          /* RAM pages: pfns lie in [0, npages) */
} vmt_precopy_info;

/*
 * Where the engine sends a VM: the local store (vmt_vmsnap_take), a network
 * peer, or a test double.  Calls come from the engine's thread, in this
 * order: begin, pages (any number, any round), state (once, VM paused),
 * commit; or abort after any failure.
 *
 * Every function but abort returns 0 or a VMT_E* code with the message set;
 * the first failure ends the copy and abort is then called (also when begin
 * itself failed), and nothing else after it; a failure of the engine before
 * begin calls nothing of the sink.  Page data points into guest
 * RAM and is valid only during the call; while the VM runs the guest may be
 * writing the very page being read (a torn copy), which is harmless because
 * such a page is dirty again and is sent once more in a later round, but a
 * sink that derives a name from the bytes (a hash) must hash and keep the
 * same bytes, i.e. copy first.  A page may be sent several times in one
 * copy; the last time wins.  Zero pages are sent like any other: whether to
 * send them compactly is the sink's business.
 */
typedef struct vmt_sink_ops {
    int (*begin)(void *sink, const vmt_precopy_info *info);
    /* n pages of one round: pfns[i] is the RAM page index of data[i]. */
    int (*pages)(void *sink, unsigned round, const uint64_t *pfns, const uint8_t *const *data,
                 size_t n);
    /* The state blob (proto/), sent once while the VM is paused. */
    int (*state)(void *sink, const uint8_t *blob, size_t len);
    /* Everything was sent: make it durable / have the peer take over.
     * Only after this returns 0 has the copy succeeded.  VMT_EINDOUBT: the
     * peer may have taken over (its answer was lost), so the engine leaves
     * the VM paused even though the copy failed; the caller must then find
     * out (or ask an operator) before resuming it. */
    int (*commit)(void *sink);
    /* The copy failed or was given up: drop what was received.  Never fails. */
    void (*abort)(void *sink);
    /* Optional (NULL: 4096 per page): bytes the sink has produced so far
     * (e.g. on the wire after compression), for the round statistics. */
    uint64_t (*bytes)(void *sink);
    unsigned flags;           /* VMT_SINK_* */
} vmt_sink_ops;

/*
 * The sink holds all it needs once state() has returned, so the VM may run
 * on during commit (the engine resumes it, if it paused it, before calling
 * commit).  Right for the local store, whose commit only makes durable what
 * it already holds; wrong for a migration peer, since then the VM would run
 * on both sides.  A commit that fails afterwards still fails the copy.
 */
#define VMT_SINK_RESUME_BEFORE_COMMIT 1u

/* A sink and its ops table, as passed around by value. */
typedef struct vmt_sink {
    const vmt_sink_ops *ops;
    void *ctx;
} vmt_sink;

/* ---- the engine --------------------------------------------------------- */

/* What one round did, passed by value to the policy. */
typedef struct vmt_round_stats {
    unsigned round;          /* 0 = the first */
    uint64_t pages_sent;     /* this round */
    uint64_t bytes;          /* this round, as the sink reports or 4096 * pages */
    uint64_t ns;             /* duration of the round */
    uint64_t dirty_pages;    /* dirtied during the round: the next round's set */
    double bandwidth;        /* bytes/s this round */
    double dirty_rate;       /* pages/s dirtied during the round */
} vmt_round_stats;

typedef enum vmt_policy_decision {
    VMT_POLICY_CONTINUE = 0,   /* another round while the VM runs */
    VMT_POLICY_STOP_AND_COPY,  /* pause and send the rest */
    VMT_POLICY_ABORT,          /* give up cleanly; the VM keeps running */
} vmt_policy_decision;

typedef vmt_policy_decision (*vmt_policy_fn)(void *ctx, vmt_round_stats r);

/* A policy for snapshots: stop once the dirty set is at most `pause_pages`
 * or after `max_rounds` rounds while the VM runs (then stop-and-copy anyway;
 * 0 counts as 1).  Never aborts.  ctx NULL: stop after the first round. */
typedef struct vmt_simple_policy {
    uint64_t pause_pages;
    unsigned max_rounds;
} vmt_simple_policy;
vmt_policy_decision vmt_simple_policy_fn(void *ctx /* vmt_simple_policy* */, vmt_round_stats r);

typedef void (*vmt_precopy_progress_fn)(void *ctx, unsigned round, uint64_t remaining,
                                        uint64_t sent);

typedef struct vmt_precopy_opts {
    vmt_policy_fn policy;     /* required */
    void *policy_ctx;
    vmt_precopy_progress_fn progress; /* may be NULL */
    void *progress_ctx;
    size_t batch_pages;       /* pages per sink->pages call (0: 256; at most 65536) */
    /* The VM's config for the sink's begin, when the caller knows it (from a
     * snapshot record or an earlier run); NULL: the engine reads it, which
     * needs the VM paused for a moment (see vmt_precopy_run).  Borrowed. */
    const vmt_precopy_info *info;
    /* Optional (one bit per RAM page, owned by the caller): every page a
     * dirty sync reported during the copy is ORed in, so a caller can give
     * them back to the log when the copy fails. */
    uint64_t *dirtied;
} vmt_precopy_opts;

typedef struct vmt_precopy_stats {
    unsigned rounds;          /* including the paused one */
    uint64_t pages_sent;      /* total, all rounds */
    uint64_t pause_ns;        /* from the pause to the sink's commit returning, or with
                                 VMT_SINK_RESUME_BEFORE_COMMIT to the resume */
    uint64_t commit_ns;       /* in the sink's commit */
    uint64_t total_ns;
    uint64_t state_bytes;
} vmt_precopy_stats;

/*
 * Copies `vm` to the sink.  Dirty logging must be on (vmt_dirty_start).
 * `pending` (one bit per RAM page, at least vmt_vm_ram_pages bits, owned by
 * the caller) holds the pages to send in round 0; the engine ORs in a fresh
 * dirty sync and clears bits as the sink accepts them.  Each round sends
 * the set and then syncs the pages dirtied meanwhile into `pending`; the
 * policy sees the round's stats and decides.  On STOP_AND_COPY the VM is
 * paused, the last dirty set and the state blob are sent, and the sink
 * commits; on ABORT the sink is aborted and VMT_ECANCELED returned.
 *
 * The sink's begin is told the VM's config: o->info, else, as KVM state
 * can be read only from a paused VM, the engine pauses a running VM for the
 * moment of vmt_vm_get_state before round 0 to learn whether it has an
 * irqchip.  (o->info must match the VM's size and vCPUs: VMT_EINVAL.)
 *
 * On success the VM is left PAUSED (the caller resumes it, or stops it
 * after a migration) unless the sink has VMT_SINK_RESUME_BEFORE_COMMIT,
 * with which it is left as it was found; pending is then empty.  On failure the engine resumes
 * the VM if it paused it (except after a commit that failed with
 * VMT_EINDOUBT: then it stays paused), the pages not yet accepted by the sink are left
 * set in `pending` (pages the sink accepted are the sink's to account for),
 * and sink->abort has been called.  `stats` (may be NULL) is filled in both
 * cases.  Errors: VMT_EINVAL (no policy, logging off), VMT_ECANCELED (the
 * policy gave up), or what the VMM, proto/ or the sink returned.
 */
int vmt_precopy_run(vmt_vm *vm, uint64_t *pending, const vmt_sink_ops *ops, void *sink,
                    const vmt_precopy_opts *o, vmt_precopy_stats *stats);

/* ---- snapshots of running VMs -------------------------------------------- */

/* The snapshot side of one running VM: its HEAD map in memory and the pages
 * dirtied since HEAD (dirty logging stays on while attached). */
typedef struct vmt_vmsnap vmt_vmsnap;

typedef struct vmt_vmsnap_info {
    const char *vm_name;      /* recorded in snapshots; HEAD ref "vm/NAME/HEAD";
                                 [A-Za-z0-9._-], 1..63 bytes */
    const char *image;        /* NULL: "" or, with a head, the head's */
    const char *cmdline;      /* NULL: "" or, with a head, the head's */
} vmt_vmsnap_info;

/*
 * Attaches to `vm` (started or not).  `head` NULL: a freshly booted VM (the
 * first snapshot saves every non-zero page and has no parent; holes of its
 * RAM memfd are taken as zero pages without reading them, so a VM made by
 * vmt_vm_from_snapshot, lazily restored RAM above all, must be attached with
 * its snapshot as head).  Else the snapshot it was restored from (its record
 * is read and its map loaded; only pages dirtied afterwards are saved;
 * attach right after vmt_vm_from_snapshot, before the VM runs, or with the
 * HEAD of its last snapshot while dirty logging stayed on in between: see
 * vmt_vmsnap_detach).  Starts dirty logging unless
 * it is on already (then it is left on at detach).  Reads the HEAD ref as
 * it is now: each take moves it only if nobody else has moved it since.
 * Borrows store, catalog and vm, which must outlive the handle; info's
 * strings are copied.  Errors: VMT_EINVAL (bad name, the head's memory size
 * differs from the VM's), VMT_ENOENT / VMT_ECORRUPT (head unreadable),
 * VMT_ENOMEM.
 */
int vmt_vmsnap_attach(vmt_vmsnap **out, vmt_store *s, vmt_catalog *c, vmt_vm *vm,
                      const vmt_id *head, const vmt_vmsnap_info *info);
/* Detaches (NULL is fine).  Stops dirty logging if attach started it; else
 * hands the pages dirty since HEAD that no snapshot saved (after a failed
 * take, or a fresh VM never snapshotted) back to the VMM's dirty log, so a
 * later attach to the same VM still saves them. */
void vmt_vmsnap_detach(vmt_vmsnap *vs);
/* The current HEAD; false when none yet. */
bool vmt_vmsnap_head(const vmt_vmsnap *vs, vmt_id *out);

/*
 * Puts a sink between the engine and `inner` (fault injection in tests,
 * tracing, a tee): returns the sink the engine is to write to, which must
 * forward every call to inner (or fail instead of forwarding; abort must
 * always be forwarded).  Called once per take.
 */
typedef vmt_sink (*vmt_sink_interpose_fn)(void *ctx, vmt_sink inner);

typedef struct vmt_snap_take_opts {
    const char *message;      /* NULL: "" */
    unsigned max_rounds;      /* rounds while the VM runs (default 8) */
    uint64_t pause_pages;     /* pause once a round leaves at most this (default 32) */
    vmt_precopy_progress_fn progress;
    void *progress_ctx;
    size_t batch_pages;       /* pages per store batch (default 1024) */
    vmt_sink_interpose_fn interpose; /* NULL: the engine writes to the store sink */
    void *interpose_ctx;
} vmt_snap_take_opts;

void vmt_snap_take_opts_init(vmt_snap_take_opts *o);

typedef struct vmt_snap_take_stats {
    vmt_precopy_stats precopy;
    uint64_t pages_hashed;    /* non-zero pages given to the store (all rounds) */
    uint64_t pages_zero;      /* pages found zero (mapped to the zero id, not stored) */
    uint64_t pages_new;       /* pages the store did not hold */
    uint64_t nodes_new, node_bytes; /* map nodes written */
    uint64_t record_bytes;    /* the snapshot record */
    uint64_t objects_new;     /* everything new: pages, nodes, blob, record */
} vmt_snap_take_stats;

/*
 * Takes a snapshot through the engine with the store as sink: pages dirtied
 * since HEAD are hashed and stored while the VM runs; the VM pauses only for
 * the last dirty set, the state, the map nodes and the commit.  Then the
 * snapshot is in the catalog, the VM's HEAD ref moves to it, and the VM is
 * resumed unless it was paused before the call.  On failure the VM keeps
 * running (or stays paused if it was), HEAD stays, and the next snapshot
 * still saves every page dirtied since HEAD.  `o`, `out` and `stats` may be
 * NULL.  Errors: VMT_EBUSY (the HEAD ref was moved by someone else), and
 * whatever the engine, the store or the catalog returned.
 */
int vmt_vmsnap_take(vmt_vmsnap *vs, const vmt_snap_take_opts *o, vmt_id *out,
                    vmt_snap_take_stats *stats);

/* ---- VMs from snapshots ------------------------------------------------- */

/*
 * Creates a VM from snapshot `snap`: its config from the record (console,
 * event and dirty mode from `base`, may be NULL), RAM filled eagerly or
 * lazily (snapshot/ restore; `ro` NULL: eager with default threads), vCPU
 * and VM state from the state blob.  The VM is not started.  *restore
 * (lazy: must outlive the VM's use of RAM until vmt_restore_wait; eager:
 * finished) is the caller's to free after the VM; `restore` may be NULL
 * only for an eager restore (it is then freed here).  `record` (may be
 * NULL) receives the snapshot's record.  On failure nothing is left to free.
 * Errors: VMT_ENOENT (no such snapshot), VMT_ECORRUPT (record, blob or map
 * damaged or inconsistent), and what the VMM and restore return.
 */
int vmt_vm_from_snapshot(vmt_kvm *kvm, vmt_store *s, const vmt_id *snap,
                         const vmt_vm_config *base, const vmt_restore_opts *ro, vmt_vm **vm,
                         vmt_restore **restore, vmt_snap_record *record);

/* ---- live migration over TCP (mig_source.c, mig_dest.c) ------------------ */

/* migrate/net's types (vmtree/net.h). */
typedef struct vmt_listener vmt_listener;
typedef struct vmt_session vmt_session;
typedef struct vmt_transport vmt_transport;
typedef struct vmt_tls vmt_tls;
typedef struct vmt_session_config vmt_session_config;

/* Where a migration stands, for a live display (once per round and a few
 * times a second within a round). */
typedef struct vmt_migrate_progress {
    unsigned round;           /* 0 = the first */
    uint64_t remaining;       /* pages still to send in this round */
    uint64_t sent;            /* pages sent so far, all rounds */
    double bandwidth;         /* bytes/s of the last finished round (0: none yet) */
    double dirty_rate;        /* pages/s dirtied during the last round */
    double expected_downtime_ms; /* if stop-and-copy began now */
    unsigned throttle_pct;    /* auto-converge: share of time the VM is held */
} vmt_migrate_progress;

typedef void (*vmt_migrate_progress_fn)(void *ctx, const vmt_migrate_progress *p);

/* Wraps stream `index`'s transport once it is connected (fault injection in
 * tests): replaces *t (ownership passes in and out). */
typedef int (*vmt_migrate_wrap_fn)(void *ctx, unsigned index, vmt_transport **t);

typedef enum vmt_migrate_compress {
    VMT_MIGRATE_COMPRESS_NONE = 0,
    VMT_MIGRATE_COMPRESS_LZ4,
    VMT_MIGRATE_COMPRESS_ZSTD,
} vmt_migrate_compress;

typedef struct vmt_migrate_opts {
    unsigned streams;         /* TCP streams (0: 1; at most 16) */
    vmt_migrate_compress compress;
    int compress_level;       /* zstd level 1..19 / LZ4 acceleration (0: 1) */
    bool xbzrle;              /* deltas of resent pages (default true) */
    const uint8_t *psk;       /* pre-shared key (borrowed) or NULL */
    size_t psk_len;
    uint32_t max_downtime_ms; /* the pause the policy aims at (0: 300) */
    uint64_t bandwidth;       /* bytes/s on the wire (0: unlimited) */
    unsigned max_rounds;      /* rounds while the VM runs before giving up (0: 30) */
    uint32_t timeout_ms;      /* every network step, the ACK included (0: 10000) */
    bool auto_converge;       /* throttle the vCPUs when the dirty rate outruns the link */
    bool dedup;               /* use the destination's have-set: pages it holds travel
                                 as their id (default true) */
    const vmt_id *base;       /* the snapshot the VM runs from (its HEAD), announced so the
                                 destination can offer that snapshot's pages; may be NULL */
    const char *vm_name;      /* the name the destination gives the VM (NULL: "vm") */
    const char *image;        /* informational (NULL: "") */
    vmt_tls *tls;             /* TLS on every stream (borrowed), or NULL */
    const char *tls_peer_name;/* name the server certificate must carry (NULL: the host) */
    vmt_migrate_progress_fn progress;
    void *progress_ctx;
    vmt_migrate_wrap_fn wrap; /* tests: fault injection on the source's streams */
    void *wrap_ctx;
    unsigned query_attempts;  /* after VMT_EINDOUBT: ask the destination (a new session,
                                 QUERY) this many times, 0.5 s apart, what became of the
                                 VM (default 3; 0: never) */
    bool lazy_ram;            /* RAM still being filled by a lazy restore: holes of its
                                 memfd are pages yet to arrive, not zero, so every page
                                 is read (through the restore's fault handling) */
    vmt_session *session;     /* tests: an established session to use instead of
                                 connecting (borrowed, not closed; e.g. over in-memory
                                 streams, whose bulk placement stands in for RDMA's) */
} vmt_migrate_opts;

void vmt_migrate_opts_init(vmt_migrate_opts *o);

#define VMT_MIGRATE_MAX_ROUND_STATS 64

typedef struct vmt_migrate_report {
    bool acked;               /* the destination resumed the VM */
    bool in_doubt;            /* error VMT_EINDOUBT: the VM was left paused */
    int error;                /* 0 or the VMT_E* code returned */
    char why[256];            /* on failure: what failed */
    uint64_t total_ns;        /* the call, connection included */
    uint64_t setup_ns;        /* connect + handshake of every stream */
    uint64_t downtime_ns;     /* the VM paused: pause to ACK received */
    unsigned rounds;          /* including the paused one */
    uint64_t pages_sent;
    uint64_t pages_by_enc[6]; /* ZERO, REF, DELTA, RAW, LZ4, ZSTD (vmt_page_enc) */
    uint64_t wire_bytes;      /* sent + received, frames included */
    double throughput;        /* wire bytes / s over the whole call */
    unsigned nround_stats;    /* rounds while running, as the policy saw them */
    double dirty_rate[VMT_MIGRATE_MAX_ROUND_STATS];   /* pages/s dirtied per round */
    double bandwidth[VMT_MIGRATE_MAX_ROUND_STATS];    /* bytes/s sent per round */
    unsigned throttle_pct;    /* auto-converge: the highest throttle applied */
    uint64_t have_ids;        /* ids in the destination's have-set */
    uint64_t pages_placed;    /* pages written by bulk placement (RDMA WRITE), not in batches */
} vmt_migrate_report;

/*
 * Migrates the running (or paused) `vm` to a vmt_migrate_receive at
 * host_port ("HOST:PORT", "tcp://HOST:PORT" or "rdma://HOST:PORT"; see
 * vmt_net_addr_parse) with the pre-copy engine: rounds while the VM
 * runs until the dirty set fits max_downtime at the measured bandwidth
 * (stop-and-copy), or VMT_ECANCELED after max_rounds.  Starts dirty
 * logging if it is off (and stops it again); if it was on (a VM whose
 * pages since its HEAD wait in the log), every page the log held and every
 * page dirtied during the copy are given back to the log on failure, so a
 * later snapshot still saves them.  Completion is two-phase (COMMIT,
 * PREPARED, GO, ACK).  On success (ACK: the destination's VM runs) the VM
 * is left PAUSED: the caller must never resume it, only destroy it.  On a
 * failure before GO could have reached the destination, and on failures
 * the destination itself announced (ERROR, its end closed or reset), the
 * VM runs on as it was found and rep->why says why.  VMT_EINDOUBT (with
 * rep->in_doubt): GO left but no answer came (a timeout, a local failure),
 * and a QUERY to the destination (o->query_attempts) could not settle it
 * either, so the destination may run the VM: it stays PAUSED here and only
 * an operator who checked the destination may resume it.  A query that
 * settles it makes the call succeed (the VM runs there) or fail with the
 * VM resumed here (the destination recorded it as discarded, so it can no
 * longer start it).  `o` and `rep` may be NULL.
 */
int vmt_migrate_send(vmt_vm *vm, const char *host_port, const vmt_migrate_opts *o,
                     vmt_migrate_report *rep);

/* What the source announced in VM_CONFIG. */
typedef struct vmt_migrate_incoming {
    uint64_t mem_size;
    unsigned vcpus;
    bool irqchip;
    char vm_name[64];
    char image[1024];
    bool has_base;
    vmt_id base;              /* the snapshot the VM runs from at the source */
} vmt_migrate_incoming;

/* Called once VM_CONFIG arrived, before anything is created: return 0 to go
 * on, or an error (with its message) to refuse the migration; the source is
 * told the message and its VM runs on. */
typedef int (*vmt_migrate_config_fn)(void *ctx, const vmt_migrate_incoming *in);

typedef struct vmt_migrate_recv_opts {
    const uint8_t *psk;       /* required key (borrowed) or NULL: none */
    size_t psk_len;
    unsigned max_streams;     /* 0: 16 */
    uint32_t timeout_ms;      /* accept and every step (0: 10000) */
    const vmt_vm_config *base;/* console, events, dirty mode of the new VM (may be NULL) */
    vmt_tls *tls;             /* TLS on every stream (borrowed), or NULL */
    vmt_store *store;         /* the destination's store (borrowed, may be NULL): when it
                                 holds the announced base snapshot, that snapshot's page ids
                                 go to the source and pages arrive as references to them */
    vmt_migrate_config_fn on_config;
    void *config_ctx;
    const char *outcome_dir;  /* a directory for the outcome records that settle a
                                 completion the source could not see, and that answer
                                 its QUERY (docs/migration.md); NULL: no records, a
                                 QUERY is refused */
} vmt_migrate_recv_opts;

/* What a receive did (all fields set also on failure, as far as it got). */
typedef struct vmt_migrate_recv_report {
    vmt_migrate_incoming in;
    uint64_t pages;           /* page records applied, all rounds */
    uint64_t refs;            /* of those: references resolved from the store */
    uint64_t wants;           /* references the store could not resolve (resent) */
    uint64_t have_ids;        /* ids announced in the have-set */
    uint64_t total_ns;        /* the session's first message to the VM running */
    bool query;               /* the session was a QUERY, answered; no VM (*out NULL) */
    bool query_running;       /* ... answered "the VM runs here" */
} vmt_migrate_recv_report;

/* The session configuration vmt_migrate_receive_session expects (key, TLS,
 * streams, timeout from `o`), for vmt_session_accept. */
void vmt_migrate_recv_session_config(const vmt_migrate_recv_opts *o, vmt_session_config *sc);

/*
 * Receives one migration over an accepted session `s` (borrowed; the caller
 * closes it afterwards): creates the VM from VM_CONFIG (after o->on_config
 * agreed), sends the have-set, fills RAM from the page batches (references
 * from o->store, WANT for any it cannot resolve), sets the state, answers
 * COMMIT with PREPARED and waits for GO: only then starts the VM and sends
 * ACK.  Before returning it waits (up to the timeout) for the source to
 * close, so that its close never overtakes the ACK.  *out is then the
 * running VM (the caller's).  On any failure before GO arrived the VM is
 * destroyed (nothing runs) and the error returned; after GO the VM runs
 * whatever happens to the ACK.  With o->outcome_dir, GO first records the
 * session as running (and a session a QUERY recorded as discarded is not
 * started), and a session that opens with QUERY is answered from the
 * records: 0 with *out NULL and rep->query set.  `rep` may be NULL.
 */
int vmt_migrate_receive_session(vmt_kvm *kvm, vmt_session *s, const vmt_migrate_recv_opts *o,
                                vmt_vm **out, vmt_migrate_recv_report *rep);

/* Accepts one session on `l` (vmt_tcp_listen) and receives over it. */
int vmt_migrate_receive(vmt_kvm *kvm, vmt_listener *l, const vmt_migrate_recv_opts *o,
                        vmt_vm **out);

/* ---- rolling a VM back in place ------------------------------------------ */

/* Where an in-place rollback spent its time (ns). */
typedef struct vmt_inplace_stats {
    uint64_t read_ns;         /* record and state blob from the store */
    uint64_t check_ns;        /* the config check (reads the VM-wide state) */
    uint64_t old_ns;          /* the earlier lazy restore (*old) stopped and freed */
    uint64_t ram_ns;          /* vmt_restore_open: holes punched, lazy: uffd armed */
    uint64_t state_ns;        /* VM and vCPU state set */
    uint64_t dirty_ns;        /* the dirty log emptied */
    uint64_t total_ns;
    bool ram_replaced;        /* the checks passed and the RAM was given up */
} vmt_inplace_stats;

/*
 * Rolls the PAUSED (or not yet started) `vm` back to snapshot `snap` without
 * making a new VM: its own RAM is refilled through vmt_restore_open (holes
 * punched first; `ro` as for vmt_vm_from_snapshot, NULL: eager) and the VM
 * and vCPU state are set from the state blob.  The VM is left paused; the
 * caller resumes it (a lazy restore serves faults meanwhile; *restore as
 * for vmt_vm_from_snapshot, the store must stay open while it lives).
 *
 * The record's config (memory size, vCPUs, irqchip) must be the VM's, else
 * VMT_EINVAL with the VM untouched (the caller makes a new VM instead);
 * VMT_ENOENT / VMT_ECORRUPT for a missing or damaged record or blob also
 * leave it untouched.  Only then is `*old` (may be NULL: a lazy restore
 * still serving this VM's RAM from an earlier restore) freed and set NULL.
 * A failure after that (a map or page unreadable, the VMM refusing the
 * state) leaves the VM's RAM undefined: it must not be resumed.
 *
 * Dirty log: if logging is on it is emptied, so that afterwards it reports
 * exactly the pages the guest writes after the rollback (the restore's own
 * fills, eager copies and lazy UFFDIO_COPY/ZEROPAGE, are host writes and
 * never reported).  A vmt_vmsnap must then be (re)attached with `snap` as
 * its head.  `record` and `stats` may be NULL.
 */
int vmt_vm_restore_in_place(vmt_vm *vm, vmt_store *s, const vmt_id *snap,
                            const vmt_restore_opts *ro, vmt_restore **old,
                            vmt_restore **restore, vmt_snap_record *record,
                            vmt_inplace_stats *stats);

/* Options of a partial rollback (vmt_vm_restore_partial). */
typedef struct vmt_partial_opts {
    /* Pages dirty since `head` that the VM's dirty log no longer reports (a
     * vmt_vmsnap's collected set), one bit per RAM page; NULL: the log has
     * them all (the VM process: logging on since head, nothing attached). */
    const uint64_t *since_head;
    /* Refuse (VMT_ERANGE, VM untouched) when more pages differ: a full
     * lazy restore is then quicker to running.  0: no limit. */
    uint64_t max_pages;
} vmt_partial_opts;

/*
 * Rolls the PAUSED `vm` back to snapshot `snap` in place by rewriting only
 * the pages that can differ between its memory and `snap`: the pages
 * written since the VM was at snapshot `head` (its dirty log, plus
 * o->since_head) and the pages whose ids differ between head's and snap's
 * maps (vmt_restore_partial: only differing subtrees are read).  The cost
 * follows those pages, not the size of RAM or how much of it is populated.
 * The VM and vCPU state are then set from snap's state blob; the VM is left
 * paused with an empty dirty log, so it reports what the guest writes after
 * the rollback.
 *
 * The caller guarantees that the VM's RAM is head's map except those dirty
 * pages: dirty logging has been on since the VM was at head (restored from
 * it, or paused for the take that made it), and no restore is filling its
 * RAM (a lazy one must have completed and been freed).
 *
 * Refusals leave the VM untouched and its dirty log as it was (pages taken
 * from it are handed back), so the caller can fall back to
 * vmt_vm_restore_in_place: VMT_EINVAL when snap's config (memory size,
 * vCPUs, irqchip) or head's memory size is not the VM's or dirty logging
 * is off; VMT_ERANGE beyond o->max_pages; VMT_ENOENT / VMT_ECORRUPT for a
 * missing or damaged record, blob or map.  A failure after that (a page
 * unreadable, the VMM refusing the state) sets stats->ram_replaced: the
 * VM's RAM is undefined and it must not be resumed.  `o`, `record`,
 * `stats` and `pst` may be NULL.
 */
int vmt_vm_restore_partial(vmt_vm *vm, vmt_store *s, const vmt_id *head, const vmt_id *snap,
                           const vmt_partial_opts *o, vmt_snap_record *record,
                           vmt_inplace_stats *stats, vmt_restore_partial_stats *pst);

#ifdef __cplusplus
}
#endif
#endif
