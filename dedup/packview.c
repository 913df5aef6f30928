/*
 * Views of packs on a backend that fetches them (RADOS: be->lazy_views;
 * docs/store-backends.md, "The local read cache").
 *
 * A pack's view is fetched at its first read.  A sealed pack (no byte below
 * its size changes again) comes through the backend's map_sealed, which may
 * map it from a local cache file instead of asking the cluster; a record
 * that fails its checks in such a copy makes the pack be fetched again
 * from the cluster (dd_pack_refetch), so a damaged cache file costs a fetch,
 * never a wrong or failed read.
 *
 * Memory is bounded by be->view_max: after a read batch (and after a
 * commit), the least recently used views are unmapped until the rest fits;
 * an unmapped pack is fetched again (or mapped from the cache) at its next
 * read.  Views are unmapped only with wmu and layout held exclusively, so
 * no reader is in one; a view replaced under readers (refetch) is retired
 * and unmapped at the next trim or at close.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/*
 * Packs before the commit position never change again (the writer moved on
 * to a later pack; gc only deletes).  Neither do the first committed.off
 * bytes of the pack holding the last commit marker: commits only move
 * forward and recovery truncates after the last marker.  So a read-only
 * handle views that pack up to its commit position only, and can take that
 * prefix from the cache too: a later handle that sees a later commit asks
 * for a longer prefix, which is another cache key.
 */
void dd_views_seal(vmt_store *s)
{
    for (uint32_t i = 1; i <= s->committed.pack && i < s->packs_cap; i++) {
        dd_pack *p = s->packs[i];
        if (!p || p->map || (i == s->committed.pack && !s->read_only))
            continue;
        p->sealed = true;
        if (i == s->committed.pack)
            p->map_len = (size_t)VMT_MIN((uint64_t)p->map_len, s->committed.off);
    }
}

void dd_views_tick(vmt_store *s)
{
    if (s->be->lazy_views)
        __atomic_add_fetch(&s->epoch, 1, __ATOMIC_RELAXED);
}

static void touch(vmt_store *s, dd_pack *p)
{
    uint64_t e = __atomic_load_n(&s->epoch, __ATOMIC_RELAXED);
    if (__atomic_load_n(&p->used, __ATOMIC_RELAXED) != e)
        __atomic_store_n(&p->used, e, __ATOMIC_RELAXED);
}

/* The pack's bytes from the backend: map_sealed for a sealed pack (mode:
 * DD_MAP_*), else open + map.  *how: DD_VIEW_*. */
static int fetch(vmt_store *s, dd_pack *p, int mode, uint8_t **m, unsigned *how)
{
    const dd_backend_ops *ops = s->be->ops;
    char name[40];
    dd_bfile *f;
    if (p->sealed && ops->map_sealed) {
        dd_pack_name(name, p->num);
        int rc = ops->map_sealed(s->be, name, p->map_len, s->uuid, mode, m, how);
        if (rc == 0 && (*how & DD_VIEW_LOCAL) &&
            dd_pack_hdr_check(*m, p->map_len, p->num, s->uuid) != 0) {
            ops->unmap(s->be, *m, p->map_len);
            if (mode == DD_MAP_LOCAL)
                return VMT_ENOENT; /* the DD_MAP_ANY fetch after it says why */
            vmt_warn("store %s: the cached copy of pack %u is damaged (%s); fetching it again",
                     s->dir, p->num, vmt_error_last());
            __atomic_add_fetch(&s->n_damaged, 1, __ATOMIC_RELAXED);
            rc = ops->map_sealed(s->be, name, p->map_len, s->uuid, DD_MAP_FRESH, m, how);
        }
        if (rc == 0)
            __atomic_add_fetch(*how & DD_VIEW_LOCAL ? &s->n_hit : &s->n_fetch, 1, __ATOMIC_RELAXED);
        return rc;
    }
    if (mode == DD_MAP_LOCAL)
        return VMT_ENOENT;
    int rc = dd_pack_file(s, p->num, DD_BF_READ, &f);
    if (rc != 0)
        return rc;
    rc = ops->map(f, p->map_len, m);
    ops->close(f);
    *how = DD_VIEW_FETCHED;
    if (rc == 0)
        __atomic_add_fetch(&s->n_fetch, 1, __ATOMIC_RELAXED);
    return rc;
}

/* Waits until nobody fetches p's view, then marks it fetched by the caller
 * when its view is still `expect`; returns the current view.  With `failed`:
 * when the fetch waited for failed, the caller does not fetch again (on a
 * stopped OSD that would cost a second op_timeout: seen, 8 s for a batch
 * read with 4 s timeouts) and gets that failure's code (*failed, with the
 * error set); a later read tries again. */
static uint8_t *claim(vmt_store *s, dd_pack *p, const uint8_t *expect, bool *mine, bool *local,
                      int *failed)
{
    pthread_mutex_lock(&s->view_mu);
    uint32_t fails = p->fetch_fails;
    bool waited = false;
    while (p->fetching) {
        waited = true;
        pthread_cond_wait(&s->view_cv, &s->view_mu);
    }
    uint8_t *cur = p->map;
    *local = (p->how & DD_VIEW_LOCAL) != 0;
    *mine = cur == expect && (!expect || *local);
    if (failed && *mine && waited && p->fetch_fails != fails) {
        *mine = false;
        *failed = vmt_error_set(p->fetch_rc, "%s", p->fetch_why);
    }
    p->fetching = *mine;
    pthread_mutex_unlock(&s->view_mu);
    return cur;
}

/* Ends the caller's fetch: installs m when rc is 0, retiring the view it
 * replaces; else records the failure (rc, and this thread's error). */
static void install(vmt_store *s, dd_pack *p, int rc, uint8_t *m, unsigned how, dd_retired *r)
{
    pthread_mutex_lock(&s->view_mu);
    if (rc != 0)
        m = NULL;
    if (m && p->map) {
        *r = (dd_retired){.next = s->retired, .map = p->map, .len = p->map_len};
        s->retired = r;
    } else if (m) {
        __atomic_add_fetch(&s->view_bytes, p->map_len, __ATOMIC_RELAXED);
    }
    if (m) {
        p->how = how;
        __atomic_store_n(&p->map, m, __ATOMIC_RELEASE);
    } else { /* the failing fetch's thread: its error is the last one set */
        p->fetch_fails++;
        p->fetch_rc = rc;
        snprintf(p->fetch_why, sizeof(p->fetch_why), "%s", vmt_error_last());
    }
    p->fetching = false;
    pthread_cond_broadcast(&s->view_cv);
    pthread_mutex_unlock(&s->view_mu);
}

const uint8_t *dd_pack_view(vmt_store *s, dd_pack *p)
{
    uint8_t *m = __atomic_load_n(&p->map, __ATOMIC_ACQUIRE);
    unsigned how = 0;
    bool mine, local;
    if (m) {
        touch(s, p);
        return m;
    }
    if (p->bad || p->torn) {
        vmt_error_set(VMT_EIO, "%s", p->why);
        return NULL;
    }
    /* One reader fetches; the others wait for its view (a pack is several
     * MiB: fetching it twice costs a round trip and the bandwidth). */
    int failed = 0;
    m = claim(s, p, NULL, &mine, &local, &failed);
    if (failed)
        return NULL;
    if (mine) {
        int rc = fetch(s, p, DD_MAP_ANY, &m, &how);
        install(s, p, rc, m, how, NULL);
        if (rc != 0)
            return NULL;
    }
    touch(s, p);
    return m;
}

const uint8_t *dd_pack_refetch(vmt_store *s, dd_pack *p, const uint8_t *old)
{
    uint8_t *m = NULL;
    unsigned how = 0;
    bool mine, local;
    dd_retired *r = malloc(sizeof(*r));
    uint8_t *cur = r ? claim(s, p, old, &mine, &local, NULL) : NULL;
    if (!r || !mine) {
        free(r);
        /* Another reader replaced it already, or the damage is in the store. */
        return cur != old ? cur : NULL;
    }
    vmt_warn("store %s: a record of pack %u's cached copy fails its checks; fetching the pack "
             "again",
             s->dir, p->num);
    __atomic_add_fetch(&s->n_damaged, 1, __ATOMIC_RELAXED);
    int rc = fetch(s, p, DD_MAP_FRESH, &m, &how);
    install(s, p, rc, m, how, r);
    if (rc != 0) {
        free(r);
        return NULL;
    }
    return m;
}

/* ---- a small read of a pack not fetched yet ---- */

typedef struct bg_fetch {
    vmt_store *s;
    dd_pack *p;
} bg_fetch;

/* Fetches a pack claimed by dd_pack_view_nowait, behind its caller. */
static void *bg_main(void *arg)
{
    bg_fetch *b = arg;
    vmt_store *s = b->s;
    dd_pack *p = b->p;
    uint8_t *m = NULL;
    unsigned how = 0;
    free(b);
    int rc = fetch(s, p, DD_MAP_ANY, &m, &how); /* a failure: the next full read says why */
    install(s, p, rc, m, how, NULL);
    pthread_mutex_lock(&s->view_mu);
    s->bg--;
    pthread_cond_broadcast(&s->view_cv);
    pthread_mutex_unlock(&s->view_mu);
    return NULL;
}

static bool start_bg(vmt_store *s, dd_pack *p)
{
    bg_fetch *b = malloc(sizeof(*b));
    pthread_attr_t a;
    pthread_t t;
    bool ok = false;
    if (!b || pthread_attr_init(&a) != 0) {
        free(b);
        return false;
    }
    *b = (bg_fetch){s, p};
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_mutex_lock(&s->view_mu);
    s->bg++;
    pthread_mutex_unlock(&s->view_mu);
    ok = pthread_create(&t, &a, bg_main, b) == 0;
    pthread_attr_destroy(&a);
    if (!ok) {
        free(b);
        pthread_mutex_lock(&s->view_mu);
        s->bg--;
        pthread_mutex_unlock(&s->view_mu);
    }
    return ok;
}

const uint8_t *dd_pack_view_nowait(vmt_store *s, dd_pack *p, bool *inflight, bool *owner)
{
    uint8_t *m = __atomic_load_n(&p->map, __ATOMIC_ACQUIRE);
    unsigned how = 0;
    *inflight = *owner = false;
    if (m || p->bad || p->torn)
        return dd_pack_view(s, p);
    pthread_mutex_lock(&s->view_mu);
    m = p->map;
    bool busy = p->fetching;
    if (!m && !busy)
        p->fetching = true;
    pthread_mutex_unlock(&s->view_mu);
    if (m || busy) {
        *inflight = !m;
        return m ? dd_pack_view(s, p) : NULL;
    }
    /* Ours to fetch: a local copy at once, else after the caller's record
     * (dd_pack_fetch_behind; started before it, the pack's pieces would be
     * queued ahead of the record at the OSD). */
    if (fetch(s, p, DD_MAP_LOCAL, &m, &how) != 0) {
        *inflight = *owner = true;
        return NULL;
    }
    install(s, p, 0, m, how, NULL);
    touch(s, p);
    return m;
}

void dd_pack_fetch_behind(vmt_store *s, dd_pack *p)
{
    uint8_t *m = NULL;
    unsigned how = 0;
    if (start_bg(s, p))
        return;
    int rc = fetch(s, p, DD_MAP_ANY, &m, &how);
    install(s, p, rc, m, how, NULL);
}

void dd_views_wait(vmt_store *s)
{
    pthread_mutex_lock(&s->view_mu);
    while (s->bg)
        pthread_cond_wait(&s->view_cv, &s->view_mu);
    pthread_mutex_unlock(&s->view_mu);
}

static void free_retired(vmt_store *s)
{
    pthread_mutex_lock(&s->view_mu);
    dd_retired *r = s->retired;
    s->retired = NULL;
    pthread_mutex_unlock(&s->view_mu);
    while (r) {
        dd_retired *next = r->next;
        s->be->ops->unmap(s->be, r->map, r->len);
        free(r);
        r = next;
    }
}

void dd_views_free(vmt_store *s)
{
    if (!s->be)
        return;
    dd_views_wait(s);
    free_retired(s);
}

static int by_use(const void *a, const void *b)
{
    const dd_pack *x = *(dd_pack *const *)a, *y = *(dd_pack *const *)b;
    if (x->used != y->used)
        return x->used < y->used ? -1 : 1;
    return (x->num > y->num) - (x->num < y->num);
}

/* Under wmu and layout exclusively: no reader is in any view. */
static void trim_views(vmt_store *s)
{
    dd_pack **v = vmt_callocn(s->packs_cap ? s->packs_cap : 1, sizeof(*v));
    size_t n = 0;
    uint64_t total = 0, max = s->be->view_max;
    if (!v)
        return;
    for (uint32_t i = 0; i < s->packs_cap; i++) {
        dd_pack *p = s->packs[i];
        /* The writer's packs: those it no longer writes (synced, closed,
         * before the commit) are sealed and can be fetched again. */
        if (!p || !p->map || p->f || p == s->active)
            continue;
        if (!s->read_only && p->num < s->committed.pack)
            p->sealed = true;
        v[n++] = p;
        total += p->map_len;
    }
    qsort(v, n, sizeof(*v), by_use);
    for (size_t i = 0; i < n && total > max; i++) {
        dd_pack *p = v[i];
        s->be->ops->unmap(s->be, p->map, p->map_len);
        total -= p->map_len;
        p->map = NULL;
        if (!p->how) /* the writer's own view, longer than the pack */
            p->map_len = (size_t)p->size;
        p->how = 0;
        __atomic_add_fetch(&s->n_dropped, 1, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&s->view_bytes, total, __ATOMIC_RELAXED);
    free(v);
}

void dd_views_trim_locked(vmt_store *s)
{
    if (!s->be->lazy_views || !s->be->view_max)
        return;
    /* Readers or fetches behind them at work: the end of a batch tries
     * again.  (Fetches behind start only inside a batch: none can begin
     * while layout is held exclusively.) */
    if (pthread_rwlock_trywrlock(&s->layout) != 0)
        return;
    pthread_mutex_lock(&s->view_mu);
    unsigned bg = s->bg;
    pthread_mutex_unlock(&s->view_mu);
    if (bg) {
        pthread_rwlock_unlock(&s->layout);
        return;
    }
    free_retired(s);
    trim_views(s);
    pthread_rwlock_unlock(&s->layout);
}

void dd_views_trim(vmt_store *s)
{
    if (!s->be->lazy_views || !s->be->view_max)
        return;
    bool retired = __atomic_load_n(&s->retired, __ATOMIC_RELAXED) != NULL;
    if (__atomic_load_n(&s->view_bytes, __ATOMIC_RELAXED) <= s->be->view_max && !retired)
        return;
    /* A writer at work trims at its commit. */
    if (pthread_mutex_trylock(&s->wmu) != 0)
        return;
    dd_views_trim_locked(s);
    pthread_mutex_unlock(&s->wmu);
}
