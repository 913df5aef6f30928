/*
 * Bundle import, in two passes over the file so that a damaged bundle
 * leaves no trace:
 *   1. verify: the whole bundle is decoded and checked (bundle_scan) and
 *      the ids of its snapshots are noted; nothing is put.
 *   2. import: decoded and checked again (the file may have changed in
 *      between) while the objects are put in batches; then every imported
 *      snapshot is checked to be complete in the store (its map, every
 *      page, its state blob), and only then is the store committed and the
 *      snapshots added to the catalog, parent first.
 * Any failure before the commit returns without committing: the puts stay
 * pending in the handle and are dropped when it is closed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bundle_internal.h"

#define IMPORT_BATCH_OBJS 4096u
#define IMPORT_BATCH_BYTES (32u << 20)

typedef struct file_src {
    FILE *f;
    uint64_t size, pos;
} file_src;

static int file_read(void *ctx, void *buf, size_t n)
{
    file_src *fs = ctx;
    if (n > fs->size - fs->pos)
        return VMT_ECORRUPT;
    if (fread(buf, 1, n, fs->f) != n)
        return ferror(fs->f) ? vmt_error_errno(VMT_EIO, errno, "import: reading the bundle")
                             : VMT_ECORRUPT;
    fs->pos += n;
    return 0;
}

static uint64_t file_remaining(void *ctx)
{
    const file_src *fs = ctx;
    return fs->size - fs->pos;
}

typedef struct importer {
    vmt_store *s;
    vmt_id *snaps; /* in bundle order: parents first */
    size_t nsnaps;
    /* The put batch: objects copied into slab. */
    vmt_store_obj objs[IMPORT_BATCH_OBJS];
    vmt_id ids[IMPORT_BATCH_OBJS];
    uint8_t *slab;
    size_t nobj, used;
    vmt_store_progress_fn progress;
    void *pctx;
    const char *phase;
    uint64_t total;
} importer;

static void on_bytes(void *ctx, uint64_t done)
{
    importer *im = ctx;
    if (im->progress)
        im->progress(im->pctx, im->phase, done, im->total);
}

static int note_snapshot(void *ctx, vmt_obj_type type, const vmt_id *id, const void *data,
                         size_t len)
{
    importer *im = ctx;
    (void)data;
    (void)len;
    if (type != VMT_OBJ_SNAPSHOT)
        return 0;
    vmt_id *v = vmt_reallocn(im->snaps, im->nsnaps + 1, sizeof(vmt_id));
    if (!v)
        return VMT_ENOMEM;
    im->snaps = v;
    im->snaps[im->nsnaps++] = *id;
    return 0;
}

static int flush_puts(importer *im)
{
    if (im->nobj == 0)
        return 0;
    /* Each object was rehashed against its id by the decoder already. */
    int rc = vmt_store_put_many(im->s, im->objs, im->nobj, im->ids, NULL, NULL);
    im->nobj = im->used = 0;
    return rc ? vmt_error_wrap(rc, "import: storing objects") : 0;
}

static int put_object(void *ctx, vmt_obj_type type, const vmt_id *id, const void *data, size_t len)
{
    importer *im = ctx;
    (void)id;
    if (im->nobj == IMPORT_BATCH_OBJS || len > IMPORT_BATCH_BYTES - im->used) {
        int rc = flush_puts(im);
        if (rc)
            return rc;
    }
    if (len > IMPORT_BATCH_BYTES) /* a large blob: on its own */
        return vmt_store_put_many(im->s, &(vmt_store_obj){data, len, type}, 1, im->ids, NULL, NULL);
    memcpy(im->slab + im->used, data, len);
    im->objs[im->nobj++] = (vmt_store_obj){.data = im->slab + im->used, .len = len, .type = type};
    /* Keep every object 16-byte aligned, as pages in RAM are. */
    im->used = VMT_MIN((size_t)IMPORT_BATCH_BYTES, (im->used + len + 15) & ~(size_t)15);
    return 0;
}

static int run_pass(importer *im, file_src *fs, bundle_visit_fn fn, const char *phase,
                    vmt_snap_bundle_info *info)
{
    bundle_src src = {.read = file_read, .remaining = file_remaining, .ctx = fs};
    bundle_scan_opts o = {.visit = fn, .visit_ctx = im, .progress = on_bytes, .progress_ctx = im};

    rewind(fs->f);
    fs->pos = 0;
    im->phase = phase;
    return bundle_scan(&src, &o, info);
}

/* Every page of the map at `root` (npages) is in the store. */
static int check_pages(importer *im, const vmt_map *m)
{
    enum { CHUNK = 1024 };
    vmt_id ids[CHUNK];
    bool present[CHUNK];
    uint64_t np = vmt_map_pages(m);

    for (uint64_t off = 0; off < np; off += CHUNK) {
        size_t n = (size_t)VMT_MIN((uint64_t)CHUNK, np - off);
        for (size_t i = 0; i < n; i++)
            ids[i] = *vmt_map_get(m, off + i);
        int rc = vmt_store_has_many(im->s, ids, n, present);
        for (size_t i = 0; rc == 0 && i < n; i++)
            if (!present[i])
                rc = vmt_error_set(VMT_ECORRUPT,
                                   "page %llu is neither in the bundle nor in "
                                   "the store",
                                   (unsigned long long)(off + i));
        if (rc)
            return rc;
    }
    return 0;
}

/* The snapshot's map, pages and state are all in the store now. */
static int check_complete(importer *im, const vmt_id *id)
{
    char hex[VMT_ID_HEX_LEN + 1];
    vmt_snap_record *r = malloc(sizeof(*r));
    vmt_map *m = NULL;
    bool present = false;

    if (!r)
        return vmt_error_set(VMT_ENOMEM, "import: out of memory");
    int rc = vmt_snap_record_read(im->s, id, r);
    if (rc == 0)
        rc = vmt_map_load(&m, im->s, &r->map_root, r->mem_size / VMT_PAGE_SIZE);
    if (rc == 0)
        rc = check_pages(im, m);
    if (rc == 0 && (rc = vmt_store_has_many(im->s, &r->state, 1, &present)) == 0 && !present)
        rc = vmt_error_set(VMT_ECORRUPT, "its state blob is missing");
    vmt_map_free(m);
    free(r);
    if (rc == VMT_ENOENT)
        rc = VMT_ECORRUPT; /* the bundle lacks something the snapshot needs */
    vmt_id_to_hex(id, hex);
    return rc ? vmt_error_wrap(rc, "import: snapshot %s is incomplete", hex) : 0;
}

static int add_to_catalog(importer *im, vmt_catalog *c)
{
    vmt_snap_record *r = malloc(sizeof(*r));
    int rc = r ? 0 : vmt_error_set(VMT_ENOMEM, "import: out of memory");
    for (size_t i = 0; rc == 0 && c && i < im->nsnaps; i++) {
        rc = vmt_snap_record_read(im->s, &im->snaps[i], r);
        if (rc == 0)
            rc = vmt_catalog_add_snapshot(c, &im->snaps[i], r);
    }
    free(r);
    return rc;
}

static int import_file(importer *im, vmt_catalog *c, file_src *fs)
{
    vmt_snap_bundle_info a, b;
    int rc = run_pass(im, fs, note_snapshot, "verify", &a);
    if (rc == 0)
        rc = run_pass(im, fs, put_object, "import", &b);
    if (rc == 0)
        rc = flush_puts(im);
    if (rc == 0 && (b.objects != a.objects || !vmt_id_equal(&a.last, &b.last)))
        rc = vmt_error_set(VMT_ECORRUPT, "import: the bundle changed while it was read");
    for (size_t i = 0; rc == 0 && i < im->nsnaps; i++)
        rc = check_complete(im, &im->snaps[i]);
    if (rc == 0)
        rc = vmt_store_commit(im->s);
    if (rc == 0)
        rc = add_to_catalog(im, c);
    return rc;
}

int vmt_snap_import(vmt_store *s, vmt_catalog *c, const char *path, vmt_id **ids, size_t *n,
                    vmt_store_progress_fn progress, void *progress_ctx)
{
    struct stat sb;
    importer *im;
    file_src fs = {0};

    if (!s || !path || !ids || !n)
        return vmt_error_set(VMT_EINVAL, "vmt_snap_import: NULL argument");
    fs.f = fopen(path, "rb");
    if (!fs.f)
        return vmt_error_errno(errno == ENOENT ? VMT_ENOENT : VMT_EIO, errno, "import: opening %s",
                               path);
    if (fstat(fileno(fs.f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(fs.f);
        return vmt_error_set(VMT_EINVAL, "import: %s is not a regular file", path);
    }
    fs.size = (uint64_t)sb.st_size;
    im = calloc(1, sizeof(*im));
    if (im)
        im->slab = malloc(IMPORT_BATCH_BYTES);
    int rc = im && im->slab ? 0 : vmt_error_set(VMT_ENOMEM, "import: out of memory");
    if (rc == 0) {
        im->s = s;
        im->progress = progress;
        im->pctx = progress_ctx;
        im->total = fs.size;
        setvbuf(fs.f, NULL, _IOFBF, 1 << 20);
        rc = import_file(im, c, &fs);
    }
    if (rc)
        vmt_error_wrap(rc, "importing %s", path);
    if (rc == 0) {
        *ids = im->snaps;
        *n = im->nsnaps;
        im->snaps = NULL;
    }
    fclose(fs.f);
    if (im) {
        free(im->slab);
        free(im->snaps);
    }
    free(im);
    return rc;
}
