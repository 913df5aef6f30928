/*
 * Partial restore: RAM holding map A (except known-dirty pages) becomes map
 * B by rewriting only diff(A, B) ∪ dirty.
 *
 * Plan first, write after, so that every refusal (too many pages, a damaged
 * or missing map node) leaves RAM as it was:
 *   1. vmt_map_diff(A, B): the differing pages and their ids in B, in pfn
 *      order (only subtrees whose ids differ are read);
 *   2. merge with the dirty bitmap (ascending); a dirty page outside the
 *      diff has the same id in A and B, read from B's leaf: B's inner
 *      nodes, then only the leaves that hold such pages;
 *   3. write: non-zero pages in batches of RESTORE_BATCH (one
 *      vmt_store_get_pages into a bounce buffer, one pwrite per run of
 *      consecutive pages); zero pages by punching each run.
 * The bitmap scan is the only work proportional to RAM size: one bit per
 * page, 32 KiB for 1 GiB.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "restore_internal.h"

typedef struct pentry {
    uint64_t pfn;
    vmt_id id;
    bool known; /* id read (from the diff or a leaf) */
} pentry;

typedef struct plist {
    pentry *v;
    size_t n, cap;
} plist;

typedef struct partial {
    vmt_store *s;
    map_geom g;
    uint64_t max_pages;
    plist diff, set;
    int err; /* why on_diff stopped the walk */
    vmt_restore_partial_stats *st;
} partial;

static int push(plist *l, uint64_t pfn, const vmt_id *id)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        pentry *v = vmt_reallocn(l->v, cap, sizeof(*v));
        if (!v)
            return vmt_error_set(VMT_ENOMEM, "partial restore: out of memory");
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (pentry){.pfn = pfn, .id = id ? *id : (vmt_id){{0}}, .known = id != NULL};
    return 0;
}

static int on_diff(void *ctx, uint64_t pfn, const vmt_id *a, const vmt_id *b)
{
    partial *p = ctx;
    (void)a;
    if (p->max_pages && p->diff.n >= p->max_pages) {
        p->err = VMT_ERANGE; /* too many: stop the walk */
        return 1;
    }
    p->err = push(&p->diff, pfn, b);
    return p->err;
}

/* Moves the diff pages below `pfn` (all with UINT64_MAX) into the set. */
static int take_diff_below(partial *p, size_t *d, uint64_t pfn)
{
    for (; *d < p->diff.n && p->diff.v[*d].pfn < pfn; (*d)++)
        if (push(&p->set, p->diff.v[*d].pfn, &p->diff.v[*d].id) != 0)
            return VMT_ENOMEM;
    return 0;
}

/* The merged set: diff pages and dirty pages, ascending, each once. */
static int merge(partial *p, const uint64_t *dirty, uint64_t npages)
{
    size_t d = 0;
    uint64_t nwords = VMT_DIV_ROUND_UP(npages, 64);
    for (uint64_t w = 0; dirty && w < nwords; w++) {
        uint64_t bits = dirty[w];
        if (w == nwords - 1 && npages % 64)
            bits &= (1ull << (npages % 64)) - 1;
        for (; bits; bits &= bits - 1) {
            uint64_t pfn = w * 64 + (uint64_t)__builtin_ctzll(bits);
            p->st->pages_dirty++;
            if (take_diff_below(p, &d, pfn) != 0)
                return VMT_ENOMEM;
            bool in_diff = d < p->diff.n && p->diff.v[d].pfn == pfn;
            if (push(&p->set, pfn, in_diff ? &p->diff.v[d].id : NULL) != 0)
                return VMT_ENOMEM;
            d += in_diff;
            if (p->max_pages && p->set.n > p->max_pages)
                return VMT_ERANGE;
        }
    }
    if (take_diff_below(p, &d, UINT64_MAX) != 0)
        return VMT_ENOMEM;
    return p->max_pages && p->set.n > p->max_pages ? VMT_ERANGE : 0;
}

/* Reads B's leaves holding the pages of the set whose id is not known yet
 * (dirty pages outside the diff) and fills their ids in. */
static int fill_ids(partial *p, const vmt_id *to_root)
{
    vmt_id *lvl[MAP_MAX_DEPTH] = {NULL};
    uint64_t *leaves = NULL, nl = 0, nz = 0;
    vmt_id *pages = NULL;
    int rc = 0;
    for (size_t i = 0; i < p->set.n; i++)
        if (!p->set.v[i].known)
            nl++;
    if (nl == 0)
        return 0;
    for (unsigned l = 0; rc == 0 && l < p->g.depth; l++)
        if (!(lvl[l] = vmt_mallocn(p->g.nodes[l], sizeof(vmt_id))))
            rc = VMT_ENOMEM;
    /* calloc: only the pages of the leaves read are touched. */
    if (rc == 0 && (!(leaves = vmt_mallocn(nl, sizeof(uint64_t))) ||
                    !(pages = calloc(p->g.npages, sizeof(vmt_id)))))
        rc = VMT_ENOMEM;
    if (rc == 0)
        rc = map_read_inner(p->s, &p->g, to_root, lvl);
    nl = 0;
    for (size_t i = 0; rc == 0 && i < p->set.n; i++) {
        uint64_t leaf = p->set.v[i].pfn / VMT_MAP_FANOUT;
        if (!p->set.v[i].known && (nl == 0 || leaves[nl - 1] != leaf) &&
            !vmt_id_is_zero_page(&lvl[0][leaf]))
            leaves[nl++] = leaf; /* ascending: the set is */
    }
    p->st->nodes_read += nl;
    for (uint64_t k = 0; rc == 0 && k < nl; k += MAP_BATCH)
        rc = map_read_leaves(p->s, &p->g, lvl[0], leaves + k,
                             (size_t)VMT_MIN(nl - k, (uint64_t)MAP_BATCH), pages, &nz);
    for (size_t i = 0; rc == 0 && i < p->set.n; i++) {
        pentry *e = &p->set.v[i];
        if (e->known)
            continue;
        /* An empty leaf is all zero pages (never read, calloc'd ids are not
         * the zero-page id). */
        e->id = vmt_id_is_zero_page(&lvl[0][e->pfn / VMT_MAP_FANOUT]) ? vmt_id_zero_page()
                                                                      : pages[e->pfn];
        e->known = true;
    }
    for (unsigned l = 0; l < MAP_MAX_DEPTH; l++)
        free(lvl[l]);
    free(leaves);
    free(pages);
    return rc;
}

/* Punches (or, without a memfd, zeroes) pages [pfn, pfn + n). */
static int zero_run(uint8_t *ram, int fd, uint64_t pfn, uint64_t n)
{
    if (fd < 0) {
        memset(ram + pfn * VMT_PAGE_SIZE, 0, n * VMT_PAGE_SIZE);
        return 0;
    }
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(pfn * VMT_PAGE_SIZE),
                  (off_t)(n * VMT_PAGE_SIZE)) != 0)
        return vmt_error_errno(VMT_EIO, errno, "partial restore: emptying page %llu",
                               (unsigned long long)pfn);
    return 0;
}

typedef struct pwriter {
    partial *p;
    uint8_t *ram, *bounce;
    int fd;
    uint64_t pfn[RESTORE_BATCH];
    vmt_id ids[RESTORE_BATCH];
    void *dst[RESTORE_BATCH];
    size_t n;
} pwriter;

static int flush(pwriter *w)
{
    if (w->n == 0)
        return 0;
    for (size_t i = 0; i < w->n; i++)
        w->dst[i] = w->fd >= 0 ? w->bounce + i * VMT_PAGE_SIZE : w->ram + w->pfn[i] * VMT_PAGE_SIZE;
    w->p->st->ram_touched |= w->fd < 0;
    int rc = vmt_store_get_pages(w->p->s, w->ids, w->n, w->dst);
    if (rc == 0 && w->fd >= 0) {
        w->p->st->ram_touched = true;
        rc = restore_write_runs(w->fd, w->pfn, w->bounce, w->n);
    }
    w->n = 0;
    return rc;
}

static int write_set(partial *p, uint8_t *ram, int fd)
{
    pwriter *w = calloc(1, sizeof(*w));
    int rc = w && (fd < 0 || (w->bounce = vmt_mallocn(RESTORE_BATCH, VMT_PAGE_SIZE)))
                 ? 0
                 : vmt_error_set(VMT_ENOMEM, "partial restore: out of memory");
    if (w) {
        w->p = p;
        w->ram = ram;
        w->fd = fd;
    }
    for (size_t i = 0; rc == 0 && i < p->set.n;) {
        const pentry *e = &p->set.v[i];
        if (vmt_id_is_zero_page(&e->id)) {
            size_t run = 1;
            while (i + run < p->set.n && p->set.v[i + run].pfn == e->pfn + run &&
                   vmt_id_is_zero_page(&p->set.v[i + run].id))
                run++;
            p->st->ram_touched = true;
            rc = zero_run(ram, fd, e->pfn, run);
            p->st->pages_zeroed += run;
            i += run;
            continue;
        }
        w->pfn[w->n] = e->pfn;
        w->ids[w->n] = e->id;
        if (++w->n == RESTORE_BATCH)
            rc = flush(w);
        i++;
    }
    if (rc == 0 && w)
        rc = flush(w);
    if (w)
        free(w->bounce);
    free(w);
    return rc;
}

static int plan(partial *p, const vmt_id *from_root, const vmt_id *to_root, const uint64_t *dirty)
{
    uint64_t nodes = 0;
    int rc = vmt_map_diff(p->s, from_root, to_root, p->g.npages, on_diff, p, &nodes);
    p->st->nodes_read += nodes;
    p->st->pages_diff = p->diff.n;
    if (rc == VMT_ECANCELED && p->err == VMT_ERANGE)
        return vmt_error_set(VMT_ERANGE, "partial restore: more than %llu pages differ",
                             (unsigned long long)p->max_pages);
    if (rc)
        return rc == VMT_ECANCELED ? p->err : rc;
    rc = merge(p, dirty, p->g.npages);
    if (rc == VMT_ERANGE)
        return vmt_error_set(VMT_ERANGE, "partial restore: more than %llu pages differ",
                             (unsigned long long)p->max_pages);
    if (rc)
        return vmt_error_set(rc, "partial restore: out of memory");
    return fill_ids(p, to_root);
}

int vmt_restore_partial(vmt_store *s, const vmt_id *from_root, const vmt_id *to_root,
                        const uint64_t *dirty, uint8_t *ram, int ram_fd, uint64_t ram_size,
                        uint64_t max_pages, vmt_restore_partial_stats *st)
{
    vmt_restore_partial_stats local;
    partial p = {.s = s, .max_pages = max_pages, .st = st ? st : &local};
    memset(p.st, 0, sizeof(*p.st));
    if (!s || !from_root || !to_root || !ram)
        return vmt_error_set(VMT_EINVAL, "vmt_restore_partial: NULL argument");
    if (ram_size == 0 || ram_size % VMT_PAGE_SIZE || ((uintptr_t)ram % VMT_PAGE_SIZE))
        return vmt_error_set(VMT_EINVAL,
                             "partial restore: RAM of %llu bytes at %p is not "
                             "page-aligned",
                             (unsigned long long)ram_size, (const void *)ram);
    int rc = map_geom_init(&p.g, ram_size / VMT_PAGE_SIZE);
    uint64_t t0 = vmt_now_ns();
    if (rc == 0)
        rc = plan(&p, from_root, to_root, dirty);
    uint64_t t1 = vmt_now_ns();
    p.st->plan_ns = t1 - t0;
    p.st->pages_restored = p.set.n;
    if (rc == 0)
        rc = write_set(&p, ram, ram_fd);
    p.st->write_ns = vmt_now_ns() - t1;
    free(p.diff.v);
    free(p.set.v);
    return rc;
}
