/*
 * zstd dictionaries trained from the store's own pages.  Each version is a
 * file dicts/dict-NNNNN.zdict (40-byte header: magic, version, length,
 * XXH3-64 of the content, store uuid; then the zstd dictionary), written
 * durably before any record uses it and never rewritten.  Records name the
 * version they need, so every version stays loadable.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zdict.h>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "internal.h"

#define DICT_MAGIC "VMTDICT1"
#define DICT_HDR 40u
#define MIN_SAMPLES 64u

void vmt_store_dict_opts_init(vmt_store_dict_opts *o)
{
    o->dict_size = 112u << 10;
    o->max_samples = 16384;
}

dd_dict *dd_dict_get(vmt_store *s, unsigned version)
{
    return version < s->dicts_cap ? s->dicts[version] : NULL;
}

static bool parse_name(const char *name, unsigned *v)
{
    char check[32];
    unsigned x;
    if (sscanf(name, "dict-%5u.zdict", &x) != 1 || x == 0 || x > DD_DICT_MAX_VERSION)
        return false;
    snprintf(check, sizeof(check), "dict-%05u.zdict", x);
    if (strcmp(check, name) != 0)
        return false;
    *v = x;
    return true;
}

static int install(vmt_store *s, dd_dict *d)
{
    pthread_rwlock_wrlock(&s->layout);
    if (d->version >= s->dicts_cap) {
        unsigned ncap = VMT_MAX(s->dicts_cap * 2, d->version + 8);
        dd_dict **nd = vmt_reallocn(s->dicts, ncap, sizeof(*nd));
        if (!nd) {
            pthread_rwlock_unlock(&s->layout);
            return VMT_ENOMEM;
        }
        memset(nd + s->dicts_cap, 0, (ncap - s->dicts_cap) * sizeof(*nd));
        s->dicts = nd;
        s->dicts_cap = ncap;
    }
    s->dicts[d->version] = d;
    if (d->version > s->dict_last)
        s->dict_last = d->version;
    pthread_rwlock_unlock(&s->layout);
    return 0;
}

static int check_file(vmt_store *s, const uint8_t *buf, size_t n, unsigned v, size_t *len)
{
    if (n < DICT_HDR || memcmp(buf, DICT_MAGIC, 8) != 0)
        return vmt_error_set(VMT_ECORRUPT, "not a dictionary file");
    *len = dd_get32(buf + 12);
    if (dd_get32(buf + 8) != v || *len == 0 || *len > DD_DICT_MAX_LEN || *len != n - DICT_HDR)
        return vmt_error_set(VMT_ECORRUPT, "dictionary header does not match the file");
    if (memcmp(buf + 24, s->uuid, 16) != 0)
        return vmt_error_set(VMT_ECORRUPT, "dictionary of another store");
    if (dd_get64(buf + 16) != XXH3_64bits(buf + DICT_HDR, *len))
        return vmt_error_set(VMT_ECORRUPT, "dictionary checksum mismatch");
    return 0;
}

static int load_one(vmt_store *s, const char *name, unsigned v)
{
    char path[64];
    uint8_t *buf;
    size_t n;
    snprintf(path, sizeof(path), DD_DICTS_DIR "/%s", name);
    int rc = dd_backend_get(s->be, path, DICT_HDR + DD_DICT_MAX_LEN, &buf, &n);
    if (rc != 0)
        return rc;
    size_t len = 0;
    rc = check_file(s, buf, n, v, &len);
    uint8_t *data = rc == 0 ? malloc(len) : NULL;
    if (rc == 0 && !data)
        rc = vmt_error_set(VMT_ENOMEM, "out of memory");
    if (data)
        memcpy(data, buf + DICT_HDR, len);
    free(buf);
    dd_dict *d = NULL;
    if (rc == 0)
        rc = dd_dict_new(&d, v, data, len);
    if (rc == 0 && (rc = install(s, d)) != 0)
        dd_dict_free(d);
    return rc;
}

typedef struct dict_lister {
    vmt_store *s;
    bool load;
    unsigned max;
} dict_lister;

static int list_one(void *ctx, const char *name)
{
    dict_lister *l = ctx;
    unsigned v;
    if (!parse_name(name, &v))
        return 0;
    l->max = VMT_MAX(l->max, v);
    /* A damaged dictionary only fails the records that need it. */
    if (l->load && load_one(l->s, name, v) != 0)
        vmt_warn("store %s: dictionary %u unusable: %s", l->s->dir, v, vmt_error_last());
    return 0;
}

/* Lists dictionary versions; *max gets the highest file version. */
static int for_each_dict(vmt_store *s, bool load, unsigned *max)
{
    dict_lister l = {.s = s, .load = load};
    int rc = s->be->ops->list(s->be, DD_DICTS_DIR, list_one, &l);
    *max = l.max;
    if (rc != 0)
        return vmt_error_wrap(rc, "listing the dictionaries of %s", s->dir);
    return 0;
}

int dd_dicts_load(vmt_store *s)
{
    unsigned max;
    return for_each_dict(s, true, &max);
}

void dd_dicts_free(vmt_store *s)
{
    for (unsigned i = 0; i < s->dicts_cap; i++)
        dd_dict_free(s->dicts[i]);
    free(s->dicts);
    s->dicts = NULL;
    s->dicts_cap = 0;
}

/* ---- training ---- */

typedef struct sampler {
    dd_entry *e;
    size_t n, cap;
    size_t seen, step;
} sampler;

static int count_pages(void *ctx, const dd_entry *e)
{
    sampler *sm = ctx;
    sm->seen += dd_meta_type(e->meta) == VMT_OBJ_PAGE;
    return 0;
}

static int pick(void *ctx, const dd_entry *e)
{
    sampler *sm = ctx;
    if (dd_meta_type(e->meta) != VMT_OBJ_PAGE)
        return 0;
    if (sm->seen++ % sm->step == 0 && sm->n < sm->cap)
        sm->e[sm->n++] = *e;
    return 0;
}

/* Reads the sampled pages into one buffer for ZDICT. */
static int read_samples(vmt_store *s, const sampler *sm, uint8_t **buf, size_t **sizes)
{
    size_t total = 0;
    for (size_t i = 0; i < sm->n; i++)
        total += dd_meta_rlen(sm->e[i].meta);
    *buf = malloc(total ? total : 1);
    *sizes = vmt_mallocn(sm->n, sizeof(size_t));
    if (!*buf || !*sizes)
        return vmt_error_set(VMT_ENOMEM, "out of memory for %zu training samples", sm->n);
    size_t off = 0;
    int rc = 0;
    pthread_rwlock_rdlock(&s->layout);
    for (size_t i = 0; rc == 0 && i < sm->n; i++) {
        (*sizes)[i] = dd_meta_rlen(sm->e[i].meta);
        rc = dd_read_entry(s, s->scr[0], &sm->e[i], *buf + off, false);
        off += (*sizes)[i];
    }
    pthread_rwlock_unlock(&s->layout);
    return rc;
}

static int save_dict(vmt_store *s, unsigned v, const uint8_t *dict, size_t len)
{
    char name[32];
    uint8_t *file = malloc(DICT_HDR + len);
    if (!file)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    memcpy(file, DICT_MAGIC, 8);
    dd_put32(file + 8, v);
    dd_put32(file + 12, (uint32_t)len);
    dd_put64(file + 16, XXH3_64bits(dict, len));
    memcpy(file + 24, s->uuid, 16);
    memcpy(file + DICT_HDR, dict, len);
    snprintf(name, sizeof(name), DD_DICTS_DIR "/dict-%05u.zdict", v);
    int rc = dd_backend_put(s->be, name, file, DICT_HDR + len);
    free(file);
    return rc;
}

/* Installs a copy of a freshly saved dictionary as the newest. */
static int install_copy(vmt_store *s, unsigned v, const uint8_t *dict, size_t len)
{
    uint8_t *copy = malloc(len);
    dd_dict *d = NULL;
    if (!copy)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    memcpy(copy, dict, len);
    int rc = dd_dict_new(&d, v, copy, len);
    if (rc == 0 && (rc = install(s, d)) != 0)
        dd_dict_free(d);
    return rc;
}

static int train(vmt_store *s, const vmt_store_dict_opts *o, sampler *sm, unsigned *version)
{
    uint8_t *buf = NULL, *dict = NULL;
    size_t *sizes = NULL, len = 0;
    unsigned max = 0;
    int rc = read_samples(s, sm, &buf, &sizes);
    if (rc == 0 && !(dict = malloc(o->dict_size)))
        rc = vmt_error_set(VMT_ENOMEM, "out of memory");
    if (rc == 0) {
        len = ZDICT_trainFromBuffer(dict, o->dict_size, buf, sizes, (unsigned)sm->n);
        if (ZDICT_isError(len))
            rc = vmt_error_set(VMT_EINVAL, "dictionary training failed: %s",
                               ZDICT_getErrorName(len));
    }
    if (rc == 0)
        rc = for_each_dict(s, false, &max);
    if (rc == 0 && max >= DD_DICT_MAX_VERSION)
        rc = vmt_error_set(VMT_ERANGE, "dictionary versions exhausted");
    if (rc == 0)
        rc = save_dict(s, max + 1, dict, len);
    if (rc == 0)
        rc = install_copy(s, max + 1, dict, len);
    if (rc == 0 && version)
        *version = max + 1;
    free(buf);
    free(sizes);
    free(dict);
    return rc;
}

static int train_locked(vmt_store *s, const vmt_store_dict_opts *o, unsigned *version)
{
    sampler sm = {0};
    if (s->read_only)
        return vmt_error_set(VMT_EINVAL, "store %s is open read-only", s->dir);
    if (o->dict_size < 1024 || o->dict_size > DD_DICT_MAX_LEN || o->max_samples == 0)
        return vmt_error_set(VMT_EINVAL, "dictionary size must be in [1 KiB, 1 MiB]");
    dd_index_foreach(&s->ix, count_pages, &sm);
    if (sm.seen < MIN_SAMPLES)
        return vmt_error_set(VMT_EINVAL, "the store holds %zu pages; training needs %u", sm.seen,
                             MIN_SAMPLES);
    sm.cap = VMT_MIN(sm.seen, o->max_samples);
    sm.step = VMT_DIV_ROUND_UP(sm.seen, sm.cap);
    sm.seen = 0;
    sm.e = vmt_mallocn(sm.cap, sizeof(dd_entry));
    if (!sm.e)
        return VMT_ENOMEM;
    dd_index_foreach(&s->ix, pick, &sm);
    int rc = train(s, o, &sm, version);
    free(sm.e);
    return rc;
}

int vmt_store_train_dict(vmt_store *s, const vmt_store_dict_opts *o, unsigned *version)
{
    vmt_store_dict_opts def;
    if (!o) {
        vmt_store_dict_opts_init(&def);
        o = &def;
    }
    pthread_mutex_lock(&s->wmu);
    int rc = train_locked(s, o, version);
    pthread_mutex_unlock(&s->wmu);
    return rc;
}
