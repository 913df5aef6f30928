/*
 * The store handle: open (lock, settings, packs, index, recovery), close,
 * commit, stats, and running jobs on the worker pool.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "internal.h"

#define INDEX_INTERVAL_DEFAULT (512ull << 20)

void vmt_store_open_opts_init(vmt_store_open_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->codec = -1;
    o->compare_on_dedup = -1;
}

/* ---- job errors and the pool ---- */

void dd_job_err_set(dd_job_err *je, int rc)
{
    int zero = 0;
    if (__atomic_compare_exchange_n(&je->rc, &zero, -1, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE)) {
        snprintf(je->msg, sizeof(je->msg), "%s", vmt_error_last());
        __atomic_store_n(&je->rc, rc ? rc : VMT_ERR, __ATOMIC_RELEASE);
    }
}

int dd_job_err_raise(const dd_job_err *je)
{
    int rc = __atomic_load_n(&je->rc, __ATOMIC_ACQUIRE);
    if (rc == 0)
        return 0;
    return vmt_error_set(rc, "%s", je->msg);
}

typedef struct run_ctx {
    dd_work_fn fn;
    void *arg;
    dd_scratch **scr;
} run_ctx;

static void run_thunk(void *a, unsigned w)
{
    run_ctx *rc = a;
    rc->fn(rc->arg, rc->scr[w], w);
}

static dd_scratch *spare_get(vmt_store *s)
{
    dd_scratch *sc = NULL;
    pthread_mutex_lock(&s->spare_mu);
    if (s->nspare > 0)
        sc = s->spare[--s->nspare];
    pthread_mutex_unlock(&s->spare_mu);
    if (!sc && dd_scratch_new(&sc, DD_WINDOW_ITEMS) != 0)
        return NULL;
    return sc;
}

static void spare_put(vmt_store *s, dd_scratch *sc)
{
    pthread_mutex_lock(&s->spare_mu);
    if (s->nspare < VMT_ARRAY_SIZE(s->spare)) {
        s->spare[s->nspare++] = sc;
        sc = NULL;
    }
    pthread_mutex_unlock(&s->spare_mu);
    dd_scratch_free(sc);
}

int dd_run(vmt_store *s, dd_scratch **scr, bool own, dd_work_fn fn, void *arg, size_t items)
{
    run_ctx rc = {fn, arg, scr};
    if (items > DD_CHUNK && s->nthreads > 1 && dd_pool_try_run(s->pool, run_thunk, &rc))
        return 0;
    if (own) {
        fn(arg, scr[0], 0);
        return 0;
    }
    dd_scratch *sc = spare_get(s);
    if (!sc)
        return VMT_ENOMEM;
    fn(arg, sc, 0);
    spare_put(s, sc);
    return 0;
}

/* ---- open ---- */

static int apply_opts(vmt_store *s, const vmt_store_open_opts *o)
{
    s->read_only = o->read_only;
    s->refs_only = o->refs_only;
    if (s->refs_only && !s->read_only)
        return vmt_error_set(VMT_EINVAL, "a store opened for refs only must be read-only");
    s->codec = o->codec >= 0 ? o->codec : (int)s->cfg.codec;
    s->zstd_level = o->zstd_level > 0 ? o->zstd_level : s->cfg.zstd_level;
    s->lz4_accel = o->lz4_accel > 0 ? o->lz4_accel : s->cfg.lz4_accel;
    s->compare = o->compare_on_dedup >= 0 ? o->compare_on_dedup != 0 : s->cfg.compare_on_dedup;
    s->verify_reads = o->verify_reads;
    s->index_interval = o->index_interval ? o->index_interval : INDEX_INTERVAL_DEFAULT;
    if (s->codec >= VMT_CODEC_COUNT || s->zstd_level > 19 || s->lz4_accel > 64)
        return vmt_error_set(VMT_EINVAL, "bad codec settings in open options");
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    s->nthreads = o->threads ? o->threads : (unsigned)(ncpu > 0 ? ncpu : 1);
    if (s->nthreads > 256)
        return vmt_error_set(VMT_EINVAL, "%u threads is more than 256", s->nthreads);
    return 0;
}

static int open_backend(vmt_store *s)
{
    int rc = dd_backend_open(s->dir, false, &s->be);
    if (rc == 0)
        rc = dd_config_load(s);
    return rc;
}

static int load_packs(vmt_store *s)
{
    uint32_t *nums = NULL;
    size_t n = 0;
    int rc = dd_pack_list(s, &nums, &n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        dd_pack *p;
        rc = dd_pack_open(s, nums[i], false, &p);
        if (rc == 0 && (rc = dd_pack_install(s, p)) != 0)
            dd_pack_close(p);
        if (rc == 0 && (p->bad || p->hdr_err))
            vmt_warn("store %s: %s", s->dir, p->why);
    }
    free(nums);
    return rc;
}

static int load_index(vmt_store *s)
{
    int rc = dd_idx_load(s);
    if (rc == 0) {
        rc = dd_recover(s, false);
    } else if (rc != VMT_ENOMEM) {
        if (rc != VMT_ENOENT || s->last_pack > 0)
            vmt_warn("store %s: rebuilding the index: %s", s->dir, vmt_error_last());
        rc = dd_recover(s, true);
        s->idx_all = true; /* a backend's own entries may be stale: rewrite them */
        if (rc == 0 && s->last_pack == 0)
            s->rec.index_rebuilt = false; /* a new store: nothing to rebuild */
    }
    if (rc == 0)
        dd_recover_report(s);
    return rc;
}

static int count_refs(void *ctx, const dd_entry *e)
{
    uint32_t *refs = ctx;
    refs[e->pack]++;
    return 0;
}

/* Deletes packs before the checkpoint that no entry uses: left over from a
 * gc interrupted after its new index was saved. */
static int remove_orphans(vmt_store *s)
{
    uint32_t *refs = vmt_callocn((size_t)s->last_pack + 1, sizeof(uint32_t));
    if (!refs)
        return VMT_ENOMEM;
    dd_index_foreach(&s->ix, count_refs, refs);
    int rc = 0;
    for (uint32_t i = 1; rc == 0 && i < s->indexed.pack; i++) {
        dd_pack *p = dd_pack_get(s, i);
        if (!p || refs[i] || p->bad || p->hdr_err)
            continue;
        rc = dd_pack_delete(s, i);
        s->rec.packs_removed++;
    }
    free(refs);
    if (rc == 0 && s->dir_dirty) {
        rc = dd_sync_packs_dir(s);
        s->dir_dirty = false;
    }
    return rc;
}

static int writer_setup(vmt_store *s)
{
    int rc = s->rec.index_rebuilt ? 0 : remove_orphans(s);
    dd_pack *last = dd_pack_get(s, s->last_pack);
    if (rc == 0 && last && s->last_pack == s->committed.pack && !last->bad && !last->torn &&
        !last->hdr_err) {
        rc = dd_pack_remap(s, last);
        if (rc == 0)
            s->active = last;
    }
    if (rc == 0 && (s->rec.index_rebuilt || s->rec.records_replayed || s->rec.packs_removed))
        rc = dd_idx_save(s);
    return rc;
}

static int make_workers(vmt_store *s)
{
    int rc = dd_pool_create(&s->pool, s->nthreads);
    if (rc != 0)
        return rc;
    s->scr = vmt_callocn(s->nthreads, sizeof(*s->scr));
    s->gscr = vmt_callocn(s->nthreads, sizeof(*s->gscr));
    if (!s->scr || !s->gscr)
        return VMT_ENOMEM;
    for (unsigned i = 0; i < s->nthreads; i++) {
        if ((rc = dd_scratch_new(&s->gscr[i], DD_WINDOW_ITEMS)) != 0)
            return rc;
        if (!s->read_only && (rc = dd_scratch_new(&s->scr[i], DD_WINDOW_ITEMS)) != 0)
            return rc;
    }
    return 0;
}

static vmt_store *store_new(const char *dir)
{
    vmt_store *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->dir = strdup(dir);
    pthread_rwlock_init(&s->layout, NULL);
    pthread_mutex_init(&s->wmu, NULL);
    pthread_mutex_init(&s->spare_mu, NULL);
    pthread_mutex_init(&s->view_mu, NULL);
    pthread_cond_init(&s->view_cv, NULL);
    if (!s->dir || dd_index_init(&s->ix, 0) != 0) {
        free(s->dir);
        free(s);
        return NULL;
    }
    return s;
}

static int open_steps(vmt_store *s, const vmt_store_open_opts *o)
{
    int rc = open_backend(s);
    if (rc == 0)
        rc = apply_opts(s, o);
    if (rc == 0 && !s->read_only)
        rc = s->be->ops->lock(s->be);
    if (rc == 0 && s->refs_only)
        return make_workers(s); /* refs need nothing more */
    if (rc == 0 && s->be->ops->reads_ahead)
        s->be->ops->reads_ahead(s->be);
    if (rc == 0)
        rc = dd_dicts_load(s);
    if (rc == 0)
        rc = load_packs(s);
    if (rc == 0)
        rc = load_index(s);
    if (rc == 0)
        dd_views_seal(s);
    if (rc == 0 && !s->read_only)
        rc = writer_setup(s);
    if (rc == 0)
        rc = make_workers(s);
    return rc;
}

int vmt_store_open(vmt_store **out, const char *dir, const vmt_store_open_opts *opts)
{
    vmt_store_open_opts def;
    if (!opts) {
        vmt_store_open_opts_init(&def);
        opts = &def;
    }
    *out = NULL;
    vmt_store *s = store_new(dir);
    if (!s)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    int rc = open_steps(s, opts);
    if (rc != 0) {
        rc = vmt_error_wrap(rc, "opening store %s", dir);
        s->sticky = rc; /* close must not save an index */
        vmt_store_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

/* ---- close ---- */

static void free_workers(vmt_store *s)
{
    dd_pool_destroy(s->pool);
    for (unsigned i = 0; i < s->nthreads; i++) {
        if (s->scr)
            dd_scratch_free(s->scr[i]);
        if (s->gscr)
            dd_scratch_free(s->gscr[i]);
    }
    free(s->scr);
    free(s->gscr);
    for (unsigned i = 0; i < s->nspare; i++)
        dd_scratch_free(s->spare[i]);
}

static void writer_close(vmt_store *s)
{
    if (s->sticky)
        return;
    if (dd_pos_cmp(s->indexed, s->committed) != 0 && dd_idx_save(s) != 0)
        vmt_warn("store %s: %s", s->dir, vmt_error_last());
    /* An empty pack this handle created and never committed into. */
    if (s->active && s->active->size == DD_PACK_HDR && s->active->num != s->committed.pack)
        dd_pack_delete(s, s->active->num);
}

void vmt_store_close(vmt_store *s)
{
    if (!s)
        return;
    if (!s->read_only && s->be)
        writer_close(s);
    free_workers(s);
    dd_views_free(s);
    for (uint32_t i = 0; i < s->packs_cap; i++)
        dd_pack_close(s->packs[i]);
    free(s->packs);
    dd_dicts_free(s);
    dd_index_free(&s->ix);
    if (s->be)
        s->be->ops->destroy(s->be); /* releases the writer lock */
    pthread_rwlock_destroy(&s->layout);
    pthread_mutex_destroy(&s->wmu);
    pthread_mutex_destroy(&s->spare_mu);
    pthread_mutex_destroy(&s->view_mu);
    pthread_cond_destroy(&s->view_cv);
    free(s->dir);
    free(s);
}

void vmt_store_recovery_info(const vmt_store *s, vmt_store_recovery *out)
{
    *out = s->rec;
}

const char *vmt_store_dir(const vmt_store *s)
{
    return s->dir;
}
