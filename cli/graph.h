/* The lane graph of `vmtree log --graph` (graph.c).  Pure; thread-safe. */
#ifndef VMTREE_CLI_GRAPH_H
#define VMTREE_CLI_GRAPH_H

#include <stddef.h>

#include "vmtree/snapshot.h"

/* One output row: the graph part, and the snapshot on it (NULL for a row
 * that only joins lanes).  `graph` is valid during the call. */
typedef void (*vmt_graph_row_fn)(void *ctx, const char *graph, const vmt_catalog_snap *snap);

/* Draws s[0..n) newest first, children before parents.  Parents that are
 * not among s end their lane. */
int vmt_graph_render(const vmt_catalog_snap *s, size_t n, vmt_graph_row_fn row, void *ctx);

/* The same order without drawing: order[k] = index into s. */
int vmt_graph_order(const vmt_catalog_snap *s, size_t n, size_t *order);

#endif
