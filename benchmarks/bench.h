/*
 * vmtree-bench: one runner for every area (`vmtree-bench AREA [--quick]`),
 * printing one JSON object per line with at least bench, metric, value and
 * unit.  Figures are medians of several runs; --quick shortens them.
 */
#ifndef VMTREE_BENCH_H
#define VMTREE_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct vmt_bench_opts {
    bool quick;        /* short run: fewer repetitions, smaller sizes */
    unsigned runs;     /* repetitions for medians (default 5, quick 3) */
    const char *build_dir; /* where guests/ lives */
    int argc;          /* area-specific arguments after AREA */
    char **argv;
} vmt_bench_opts;

/* Prints {"bench":..,"metric":..,"value":..,"unit":..[,extra]} on one line.
 * `extra` is NULL or a JSON fragment without braces ("\"mem_mib\":256"). */
void vmt_bench_emit(const char *bench, const char *metric, double value, const char *unit,
                    const char *extra);

/* Prints {"bench":..,"metric":..,"value":0,"unit":"","skipped":true,
 * "what":..,"reason":..} for a measurement that cannot run here (the reason
 * JSON-escaped). */
void vmt_bench_skip(const char *bench, const char *metric, const char *what, const char *reason);

/* Fills npages pages of img with the pages of the regular files under dir
 * (real, partly compressible content), every fourth page zero.  Returns 0,
 * or -1 (printed) when dir holds too little (bench_corpus.c). */
int vmt_bench_fill_image(uint8_t *img, uint64_t npages, const char *dir);

/* Median of n doubles (reorders the array). */
double vmt_bench_median(double *v, size_t n);

/* Path of a built guest image (caller frees). */
char *vmt_bench_guest(const vmt_bench_opts *o, const char *name);

/* Each area returns 0 on success; failures print to stderr. */
typedef int (*vmt_bench_area_fn)(const vmt_bench_opts *o);

int vmt_bench_vmm(const vmt_bench_opts *o);
int vmt_bench_store(const vmt_bench_opts *o);
int vmt_bench_restore(const vmt_bench_opts *o);
int vmt_bench_snapshot(const vmt_bench_opts *o);
int vmt_bench_net(const vmt_bench_opts *o);
int vmt_bench_golden(const vmt_bench_opts *o);
int vmt_bench_migrate(const vmt_bench_opts *o);
/* Part of `net`: bare transport and bulk placement throughput, TCP and RDMA. */
int vmt_bench_net_transports(const vmt_bench_opts *o, const char *rdma_addr);
int vmt_bench_rados(const vmt_bench_opts *o);
/* Part of `rados`: eager and lazy restore from RADOS (with and without the
 * read cache) against a directory store; dir holds the temporary stores. */
/* syncfs() of the file system holding dir (bench_rados.c). */
void vmt_bench_syncdir(const char *dir);
int vmt_bench_rados_restore(const vmt_bench_opts *o, const char *dir, const char *url,
                            unsigned runs, double load);

#ifdef VMT_BENCH_HAVE_RESTORE
#include "vmtree/snapshot.h"
/* Puts npages pages of img and their map into s, commits; *root the map
 * (bench_snapshot_restore.c). */
int vmt_bench_store_image(vmt_store *s, const uint8_t *img, uint64_t npages, vmt_id *root);
#endif

#endif
