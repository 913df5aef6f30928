/* Shared helpers of the snapshot/ suites (see snap_fixture.h). */
#include "snap_fixture.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "harness.h"

void fx_store_new(fx_store *f, const char *tag)
{
    memset(f, 0, sizeof(*f));
    f->tmp = vmt_test_tmpdir(tag);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f->tmp);
    CU_ASSERT_FATAL(asprintf(&f->dir, "%s/store", f->tmp) > 0);
    CU_ASSERT_EQUAL_FATAL(vmt_store_init(f->dir, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_store_open(&f->s, f->dir, NULL), 0);
}

void fx_store_reopen(fx_store *f)
{
    vmt_store_close(f->s);
    f->s = NULL;
    CU_ASSERT_EQUAL_FATAL(vmt_store_open(&f->s, f->dir, NULL), 0);
}

void fx_store_free(fx_store *f)
{
    vmt_store_close(f->s);
    vmt_test_rmtree(f->tmp);
    free(f->dir);
    free(f->tmp);
    memset(f, 0, sizeof(*f));
}

bool fx_rados(void)
{
    const char *b = getenv("VMTREE_TEST_BACKEND");
    return b && strcmp(b, "rados") == 0;
}

/* rados://POOL?Q -> rados://POOL/NS?Q with a namespace unique to this call,
 * holding a new store; exits VMT_TEST_SKIP without a cluster. */
static char *rados_location(const char *tag)
{
    static unsigned seq;
    const char *url = getenv("VMTREE_TEST_RADOS");
    const char *conf = url ? strstr(url, "conf=") : NULL;
    char path[4096], *loc = NULL;
    if (!url || !conf) {
        printf("SKIP: VMTREE_TEST_RADOS is not set (a cluster from scripts/ceph-cluster.sh)\n");
        exit(VMT_TEST_SKIP);
    }
    snprintf(path, sizeof(path), "%.*s", (int)strcspn(conf + 5, "&"), conf + 5);
    if (access(path, R_OK) != 0) {
        printf("SKIP: no Ceph test cluster (%s missing: ceph-mon/ceph-osd not installed? "
               "scripts/install-deps.sh --ceph)\n",
               path);
        exit(VMT_TEST_SKIP);
    }
    const char *q = strchr(url, '?');
    size_t plen = q ? (size_t)(q - url) : strlen(url);
    if (asprintf(&loc, "%.*s/%s-%ld-%u-%ld%s", (int)plen, url, tag, (long)getpid(), ++seq,
                 (long)(vmt_now_ns() % 1000000), q ? q : "") < 0)
        return NULL;
    int rc = vmt_store_init(loc, NULL);
    if (rc == VMT_EUNSUPPORTED) {
        printf("SKIP: %s\n", vmt_error_last());
        exit(VMT_TEST_SKIP);
    }
    if (rc != 0) {
        fprintf(stderr, "creating a store at %s: %s\n", loc, vmt_error_last());
        free(loc);
        return NULL;
    }
    return loc;
}

char *fx_location(const char *tag)
{
    return fx_rados() ? rados_location(tag) : vmt_test_tmpdir(tag);
}

void fx_location_free(char *loc)
{
    if (!loc)
        return;
    if (strncmp(loc, "rados://", 8) == 0) {
        if (vmt_store_remove(loc) != 0)
            fprintf(stderr, "(removing %s: %s) ", loc, vmt_error_last());
    } else {
        vmt_test_rmtree(loc);
    }
    free(loc);
}

uint64_t fx_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

vmt_id fx_fake_id(uint64_t n)
{
    vmt_id id;
    uint64_t st = n * 2654435761u + 12345, a = fx_rand(&st), b = fx_rand(&st);
    memcpy(id.b, &a, 8);
    memcpy(id.b + 8, &b, 8);
    return id;
}

void fx_page_random(uint8_t *p, uint64_t seed)
{
    uint64_t st = seed ^ 0x5bd1e995u;
    for (size_t i = 0; i < 4096; i += 8) {
        uint64_t v = fx_rand(&st);
        memcpy(p + i, &v, 8);
    }
}

void fx_page_text(uint8_t *p, uint64_t seed)
{
    static const char *const words[] = {"the ",    "snapshot ", "page ",   "store ",  "tree ",
                                        "vmtree ", "of ",       "memory ", "0x7fff ", "\n"};
    uint64_t st = seed;
    size_t i = 0;
    while (i < 4096) {
        const char *w = words[fx_rand(&st) % VMT_ARRAY_SIZE(words)];
        for (; *w && i < 4096; w++)
            p[i++] = (uint8_t)*w;
    }
}

/* Fills p from one of a few system files at a seed-chosen offset; false if none. */
static int file_page(uint8_t *p, uint64_t seed)
{
    static const char *const files[] = {"/usr/lib/x86_64-linux-gnu/libc.so.6",
                                        "/usr/lib/x86_64-linux-gnu/libsqlite3.so.0",
                                        "/usr/bin/cmake", "/usr/lib/x86_64-linux-gnu/libzstd.so.1"};
    const char *path = files[seed % VMT_ARRAY_SIZE(files)];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0)
        return 0;
    int ok = fstat(fd, &sb) == 0 && sb.st_size > 8192;
    if (ok) {
        off_t pages = sb.st_size / 4096 - 1;
        ok = pread(fd, p, 4096, (off_t)((seed / 7) % (uint64_t)pages) * 4096) == 4096;
    }
    close(fd);
    return ok;
}

void fx_fill_mixed(uint8_t *mem, uint64_t npages, uint64_t seed)
{
    uint64_t st = seed;
    for (uint64_t i = 0; i < npages; i++) {
        uint8_t *p = mem + i * 4096;
        uint64_t r = fx_rand(&st);
        switch (r % 8) {
        case 0:
        case 1:
            memset(p, 0, 4096);
            break;
        case 2:
            fx_page_random(p, r);
            break;
        case 3:
        case 4:
            fx_page_text(p, r);
            break;
        default:
            if (!file_page(p, r))
                fx_page_text(p, r);
        }
    }
}

vmt_id fx_store_memory(vmt_store *s, const uint8_t *mem, uint64_t npages)
{
    vmt_map *m = NULL;
    vmt_id root;
    enum { CHUNK = 1024 };
    const void *ptr[CHUNK];
    vmt_id ids[CHUNK];

    CU_ASSERT_EQUAL_FATAL(vmt_map_new(&m, npages), 0);
    for (uint64_t off = 0; off < npages; off += CHUNK) {
        size_t n = (size_t)VMT_MIN((uint64_t)CHUNK, npages - off);
        for (size_t i = 0; i < n; i++)
            ptr[i] = mem + (off + i) * 4096;
        CU_ASSERT_EQUAL_FATAL(vmt_store_put_pages(s, ptr, n, ids, NULL, NULL), 0);
        for (size_t i = 0; i < n; i++)
            vmt_map_set(m, off + i, &ids[i]);
    }
    CU_ASSERT_EQUAL_FATAL(vmt_map_write(m, s, &root, NULL, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_store_commit(s), 0);
    vmt_map_free(m);
    return root;
}

vmt_id fx_snapshot(vmt_store *s, const uint8_t *mem, uint64_t npages, const vmt_id *parent,
                   const char *tag)
{
    return fx_snapshot_at(s, mem, npages, parent, tag, 0);
}

vmt_id fx_snapshot_at(vmt_store *s, const uint8_t *mem, uint64_t npages, const vmt_id *parent,
                      const char *tag, uint64_t time_ns)
{
    vmt_snap_record *r = calloc(1, sizeof(*r));
    char blob[128];
    uint8_t *buf = NULL;
    size_t len = 0;
    vmt_id id;

    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    snprintf(blob, sizeof(blob), "state blob of %s", tag);
    vmt_store_obj o = {.data = blob, .len = strlen(blob), .type = VMT_OBJ_BLOB};
    r->map_root = fx_store_memory(s, mem, npages);
    CU_ASSERT_EQUAL_FATAL(vmt_store_put_many(s, &o, 1, &r->state, NULL, NULL), 0);
    if (parent) {
        r->nparents = 1;
        r->parents[0] = *parent;
    }
    r->mem_size = npages * 4096;
    r->vcpus = 1;
    r->time_ns = time_ns;
    snprintf(r->vm_name, sizeof(r->vm_name), "fx");
    snprintf(r->message, sizeof(r->message), "snapshot %s", tag);
    CU_ASSERT_EQUAL_FATAL(vmt_snap_record_encode(r, &buf, &len), 0);
    o = (vmt_store_obj){.data = buf, .len = len, .type = VMT_OBJ_SNAPSHOT};
    CU_ASSERT_EQUAL_FATAL(vmt_store_put_many(s, &o, 1, &id, NULL, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(vmt_store_commit(s), 0);
    free(buf);
    free(r);
    return id;
}

/* ---- bundles, byte by byte ---------------------------------------------- */

static void le(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

void fx_bundle_put(fx_bundle *b, const void *data, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        CU_ASSERT_PTR_NOT_NULL_FATAL(b->p);
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

void fx_bundle_header(fx_bundle *b, unsigned major, unsigned minor, uint64_t flags)
{
    uint8_t h[32] = {0};
    memcpy(h, "VMTBUNDL", 8);
    le(h + 8, major, 2);
    le(h + 10, minor, 2);
    le(h + 12, 32, 4);
    le(h + 16, flags, 8);
    le(h + 28, (uint32_t)XXH3_64bits(h, 28), 4);
    fx_bundle_put(b, h, sizeof(h));
}

void fx_bundle_record(fx_bundle *b, unsigned kind, unsigned codec, const vmt_id *id,
                      const void *payload, uint32_t plen, uint32_t raw_len)
{
    uint8_t h[40] = {0};
    h[0] = (uint8_t)kind;
    h[1] = (uint8_t)codec;
    le(h + 4, raw_len, 4);
    le(h + 8, plen, 4);
    memcpy(h + 16, id->b, 16);
    le(h + 32, XXH3_64bits_withSeed(payload, plen, XXH3_64bits(h, 32)), 8);
    fx_bundle_put(b, h, sizeof(h));
    fx_bundle_put(b, payload, plen);
    if (kind < 0x80) {
        b->objects++;
        if (kind == VMT_OBJ_SNAPSHOT) {
            b->snapshots++;
            b->last = *id;
        }
    }
}

vmt_id fx_bundle_object(fx_bundle *b, unsigned kind, const void *data, size_t len)
{
    vmt_id id;
    vmt_id_of(data, len, &id);
    fx_bundle_record(b, kind, 0, &id, data, (uint32_t)len, (uint32_t)len);
    return id;
}

void fx_bundle_trailer(fx_bundle *b)
{
    uint8_t t[64] = {0};
    t[0] = 0xfe;
    le(t + 8, b->objects, 8);
    le(t + 16, b->snapshots, 8);
    memcpy(t + 24, b->last.b, 16);
    fx_bundle_put(b, t, 48);
    le(t + 48, XXH3_64bits(b->p, b->n), 8);
    memcpy(t + 56, "VMTBEND", 8);
    fx_bundle_put(b, t + 48, 16);
}

void fx_bundle_free(fx_bundle *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

void fx_write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL_FATAL(fwrite(data, 1, n, f), n);
    CU_ASSERT_EQUAL_FATAL(fclose(f), 0);
}

uint8_t *fx_read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL_FATAL(fseek(f, 0, SEEK_END), 0);
    long len = ftell(f);
    CU_ASSERT_FATAL(len >= 0);
    rewind(f);
    uint8_t *p = malloc((size_t)len + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL_FATAL(fread(p, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return p;
}

void fx_ram_new(fx_ram *r, uint64_t pages)
{
    r->size = pages * 4096;
    r->fd = memfd_create("test-ram", MFD_CLOEXEC);
    CU_ASSERT_FATAL(r->fd >= 0);
    CU_ASSERT_EQUAL_FATAL(ftruncate(r->fd, (off_t)r->size), 0);
    r->p = mmap(NULL, r->size, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
    CU_ASSERT_FATAL(r->p != MAP_FAILED);
}

void fx_ram_free(fx_ram *r)
{
    munmap(r->p, r->size);
    close(r->fd);
}
