/*
 * The progress display of long work (export, import, verify, gc, restore),
 * on stderr: a line redrawn in place at most 10 times a second on a
 * terminal, or with --progress elsewhere one line a second.  Disabled, every
 * call does nothing.  Not thread-safe: the callbacks must come from one
 * thread at a time (they do: the store and restore report from the caller's
 * thread or serialize their reports).
 */
#ifndef VMTREE_CLI_PROGRESS_H
#define VMTREE_CLI_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct vmt_progress {
    const char *what;  /* command name, printed first */
    bool on, tty, drawn;
    uint64_t last_ns;
    char phase[48];
} vmt_progress;

/* Enabled when `force` or stderr is a terminal. */
void vmt_progress_init(vmt_progress *p, const char *what, bool force);
/* Reports units done of total (0: unknown) in a phase. */
void vmt_progress_update(vmt_progress *p, const char *phase, uint64_t done, uint64_t total);
/* Ends the display (clears the line on a terminal). */
void vmt_progress_end(vmt_progress *p);

/* Adapters with the store's and restore's callback signatures (ctx = vmt_progress*). */
void vmt_progress_store_cb(void *ctx, const char *phase, uint64_t done, uint64_t total);
void vmt_progress_pages_cb(void *ctx, uint64_t done, uint64_t total);

#endif
