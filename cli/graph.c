/*
 * The graph of `vmtree log --graph`: snapshots newest first, children before
 * their parent, one lane per line of descent, as `git log --graph` draws
 * it: "*" a snapshot, "|" a lane going on, "/" (and "_" across lanes) where
 * a child's lane joins its parent's.  Snapshots form a tree (the catalog
 * keeps first parents), so lanes only join, never split.
 */
#include <stdlib.h>
#include <string.h>

#include "graph.h"

typedef struct graph {
    const vmt_catalog_snap *s;
    size_t n;
    ptrdiff_t *parent;  /* index of the parent in s, -1 when none here */
    size_t *order;      /* emission order */
    ptrdiff_t *lanes;   /* per lane: the snapshot it waits for, -1 empty */
    size_t nlanes;
    char *line;
} graph;

static int cmp_id(const void *a, const void *b, void *ctx)
{
    const vmt_catalog_snap *s = ctx;
    return memcmp(s[*(const size_t *)a].id.b, s[*(const size_t *)b].id.b, sizeof(vmt_id));
}

/* Index of each snapshot's parent among s (by binary search on ids). */
static int link_parents(graph *g)
{
    size_t *byid = vmt_callocn(g->n ? g->n : 1, sizeof(size_t));
    if (!byid)
        return VMT_ENOMEM;
    for (size_t i = 0; i < g->n; i++)
        byid[i] = i;
    qsort_r(byid, g->n, sizeof(size_t), cmp_id, (void *)g->s);
    for (size_t i = 0; i < g->n; i++) {
        g->parent[i] = -1;
        if (!g->s[i].has_parent)
            continue;
        size_t lo = 0, hi = g->n;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            int c = memcmp(g->s[byid[mid]].id.b, g->s[i].parent.b, sizeof(vmt_id));
            if (c == 0) {
                g->parent[i] = (ptrdiff_t)byid[mid];
                break;
            }
            if (c < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
    }
    free(byid);
    return 0;
}

static bool newer(const vmt_catalog_snap *a, const vmt_catalog_snap *b)
{
    if (a->time_ns != b->time_ns)
        return a->time_ns > b->time_ns;
    return memcmp(a->id.b, b->id.b, sizeof(vmt_id)) > 0;
}

/* Newest first, every child before its parent (Kahn's algorithm). */
static int topo_order(graph *g)
{
    size_t *pending = vmt_callocn(g->n ? g->n : 1, sizeof(size_t));
    bool *ready = vmt_callocn(g->n ? g->n : 1, sizeof(bool));
    if (!pending || !ready) {
        free(pending);
        free(ready);
        return VMT_ENOMEM;
    }
    for (size_t i = 0; i < g->n; i++)
        if (g->parent[i] >= 0)
            pending[g->parent[i]]++;
    for (size_t i = 0; i < g->n; i++)
        ready[i] = pending[i] == 0;
    for (size_t k = 0; k < g->n; k++) {
        ptrdiff_t best = -1;
        for (size_t i = 0; i < g->n; i++)
            if (ready[i] && (best < 0 || newer(&g->s[i], &g->s[best])))
                best = (ptrdiff_t)i;
        if (best < 0)
            break; /* a cycle: cannot happen with content-addressed parents */
        ready[best] = false;
        g->order[k] = (size_t)best;
        ptrdiff_t p = g->parent[best];
        if (p >= 0 && --pending[p] == 0)
            ready[p] = true;
    }
    free(pending);
    free(ready);
    return 0;
}

/* Draws the lanes into g->line (trailing blanks trimmed). */
static void draw_lanes(graph *g, ptrdiff_t star)
{
    size_t w = 0;
    for (size_t i = 0; i < g->nlanes; i++) {
        g->line[w++] = (ptrdiff_t)i == star ? '*' : g->lanes[i] >= 0 ? '|' : ' ';
        g->line[w++] = ' ';
    }
    while (w > 0 && g->line[w - 1] == ' ')
        w--;
    g->line[w] = '\0';
}

/* The row where lane k joins lane col (k > col). */
static void draw_join(graph *g, size_t col, size_t k)
{
    draw_lanes(g, -1);
    size_t w = 2 * g->nlanes;
    memset(g->line + strlen(g->line), ' ', w - strlen(g->line));
    for (size_t p = 2 * col + 1; p + 1 < 2 * k; p++)
        g->line[p] = p % 2 == 0 && g->lanes[p / 2] >= 0 ? '|' : '_';
    g->line[2 * k - 1] = '/';
    g->line[2 * k] = ' ';
    while (w > 0 && g->line[w - 1] == ' ')
        w--;
    g->line[w] = '\0';
}

static size_t take_lane(graph *g)
{
    for (size_t i = 0; i < g->nlanes; i++)
        if (g->lanes[i] < 0)
            return i;
    return g->nlanes++;
}

static void emit(graph *g, size_t c, vmt_graph_row_fn row, void *ctx)
{
    ptrdiff_t col = -1;
    for (size_t i = 0; i < g->nlanes; i++) {
        if (g->lanes[i] != (ptrdiff_t)c)
            continue;
        if (col < 0) {
            col = (ptrdiff_t)i;
            continue;
        }
        draw_join(g, (size_t)col, i);
        g->lanes[i] = -1;
        row(ctx, g->line, NULL);
    }
    if (col < 0)
        col = (ptrdiff_t)take_lane(g);
    g->lanes[col] = (ptrdiff_t)c; /* drawn as '*' */
    draw_lanes(g, col);
    row(ctx, g->line, &g->s[c]);
    g->lanes[col] = g->parent[c];
    while (g->nlanes > 0 && g->lanes[g->nlanes - 1] < 0)
        g->nlanes--;
}

int vmt_graph_render(const vmt_catalog_snap *s, size_t n, vmt_graph_row_fn row, void *ctx)
{
    graph g = {.s = s, .n = n};
    size_t m = n ? n : 1;
    g.parent = vmt_callocn(m, sizeof(ptrdiff_t));
    g.order = vmt_callocn(m, sizeof(size_t));
    g.lanes = vmt_callocn(m + 1, sizeof(ptrdiff_t));
    g.line = vmt_callocn(2 * m + 4, 1);
    int rc = g.parent && g.order && g.lanes && g.line ? 0 : VMT_ENOMEM;
    if (rc == 0)
        rc = link_parents(&g);
    if (rc == 0)
        rc = topo_order(&g);
    for (size_t k = 0; rc == 0 && k < n; k++)
        emit(&g, g.order[k], row, ctx);
    free(g.parent);
    free(g.order);
    free(g.lanes);
    free(g.line);
    return rc ? vmt_error_set(rc, "out of memory drawing the graph") : 0;
}

int vmt_graph_order(const vmt_catalog_snap *s, size_t n, size_t *order)
{
    graph g = {.s = s, .n = n, .order = order};
    g.parent = vmt_callocn(n ? n : 1, sizeof(ptrdiff_t));
    int rc = g.parent ? link_parents(&g) : VMT_ENOMEM;
    if (rc == 0)
        rc = topo_order(&g);
    free(g.parent);
    return rc ? vmt_error_set(rc, "out of memory ordering snapshots") : 0;
}
