/* Helpers shared by the dedup suites (see dd_test.h). */
#include "dd_test.h"
#include "backend.h"

#include <dirent.h>
#include <fcntl.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool ddt_rados(void)
{
    const char *b = getenv("VMTREE_TEST_BACKEND");
    return b && strcmp(b, "rados") == 0;
}

/* The pool location of the test cluster; exits VMT_TEST_SKIP without one. */
static const char *rados_base(void)
{
    const char *url = getenv("VMTREE_TEST_RADOS");
    const char *conf = url ? strstr(url, "conf=") : NULL;
    char path[4096];
    if (!url || !conf) {
        printf("SKIP: VMTREE_TEST_RADOS is not set (a cluster from scripts/ceph-cluster.sh)\n");
        exit(VMT_TEST_SKIP);
    }
    snprintf(path, sizeof(path), "%.*s", (int)strcspn(conf + 5, "&"), conf + 5);
    if (access(path, R_OK) != 0) {
        printf("SKIP: no Ceph test cluster (%s missing: ceph-mon/ceph-osd not installed? "
               "scripts/install-deps.sh --ceph)\n", path);
        exit(VMT_TEST_SKIP);
    }
    dd_backend *be = NULL;
    if (dd_backend_open(url, false, &be) == VMT_EUNSUPPORTED) {
        printf("SKIP: %s\n", vmt_error_last());
        exit(VMT_TEST_SKIP);
    }
    if (be)
        be->ops->destroy(be);
    return url;
}

/* rados://POOL?Q -> rados://POOL/NS?Q with a namespace unique to this call. */
static char *rados_store(const char *tag)
{
    static unsigned seq;
    const char *base = rados_base();
    const char *q = strchr(base, '?');
    size_t plen = q ? (size_t)(q - base) : strlen(base);
    char *url = NULL;
    CU_ASSERT_FATAL(asprintf(&url, "%.*s/%s-%ld-%u-%ld%s", (int)plen, base, tag, (long)getpid(),
                             ++seq, (long)vmt_now_ns() % 1000000, q ? q : "") > 0);
    return url;
}

char *ddt_location(const char *tag)
{
    char *dir = ddt_rados() ? rados_store(tag) : vmt_test_tmpdir(tag);
    CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
    return dir;
}

char *ddt_store(const char *tag, const vmt_store_config *cfg)
{
    char *dir = ddt_location(tag);
    DDT_OK(vmt_store_init(dir, cfg));
    return dir;
}

static dd_backend *be_open(const char *store)
{
    dd_backend *be = NULL;
    DDT_OK(dd_backend_open(store, false, &be));
    return be;
}

static int remove_one(void *ctx, const char *name)
{
    dd_backend *be = ctx;
    return be->ops->remove(be, name);
}

void ddt_obj_flip(const char *store, const char *name, uint64_t off, uint8_t mask)
{
    dd_backend *be = be_open(store);
    dd_bfile *f;
    uint8_t b;
    size_t got = 0;
    DDT_OK(be->ops->open(be, name, DD_BF_WRITE, &f));
    DDT_OK(be->ops->pread(f, &b, 1, off, &got));
    CU_ASSERT_EQUAL_FATAL(got, 1);
    b ^= mask;
    struct iovec iov = {&b, 1};
    DDT_OK(be->ops->pwritev(f, &iov, 1, off));
    be->ops->close(f);
    be->ops->destroy(be);
}

long long ddt_obj_size(const char *store, const char *name)
{
    dd_backend *be = be_open(store);
    dd_bfile *f;
    uint64_t size = 0;
    long long r = -1;
    if (be->ops->open(be, name, DD_BF_READ, &f) == 0) {
        if (be->ops->size(f, &size) == 0)
            r = (long long)size;
        be->ops->close(f);
    }
    be->ops->destroy(be);
    return r;
}

void ddt_obj_write(const char *store, const char *name, const void *data, size_t len)
{
    dd_backend *be = be_open(store);
    DDT_OK(dd_backend_put(be, name, data, len));
    be->ops->destroy(be);
}

char *ddt_pack_name(unsigned n)
{
    char *p = NULL;
    CU_ASSERT_FATAL(asprintf(&p, "packs/pack-%08u.vpk", n) > 0);
    return p;
}

char *ddt_store_small(const char *tag, uint64_t pack_size)
{
    vmt_store_config cfg;
    vmt_store_config_init(&cfg);
    cfg.pack_size = pack_size;
    return ddt_store(tag, &cfg);
}

void ddt_cleanup(char *dir)
{
    if (dd_backend_is_rados(dir)) {
        dd_backend *be = be_open(dir);
        /* Removing while listing: collect nothing, RADOS lists a snapshot
         * of the namespace's objects as it goes and tolerates removals. */
        DDT_OK(be->ops->list(be, ".", remove_one, be));
        be->ops->destroy(be);
    } else {
        vmt_test_rmtree(dir);
    }
    free(dir);
}

vmt_store *ddt_open(const char *dir, bool read_only, unsigned threads)
{
    vmt_store_open_opts o;
    vmt_store *s = NULL;
    vmt_store_open_opts_init(&o);
    o.read_only = read_only;
    o.threads = threads;
    DDT_OK(vmt_store_open(&s, dir, &o));
    return s;
}

static uint64_t mix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void ddt_page(uint64_t seed, uint8_t *page)
{
    static const char *words[] = {"vmtree ", "snapshot ",   "page ",   "store ",  "kernel ",
                                  "memory ", "0x0000ff00 ", "struct ", "return ", "\n"};
    uint64_t x = seed * 2654435761u + 1;
    size_t off = 0;
    /* A unique header, then text-like filler: compresses about 3x. */
    memcpy(page, &seed, sizeof(seed));
    off = sizeof(seed);
    while (off < VMT_STORE_PAGE_SIZE) {
        const char *w = words[mix(&x) % 10];
        size_t n = strlen(w);
        if (n > VMT_STORE_PAGE_SIZE - off)
            n = VMT_STORE_PAGE_SIZE - off;
        memcpy(page + off, w, n);
        off += n;
    }
}

void ddt_random_page(uint64_t seed, uint8_t *page)
{
    uint64_t x = seed ^ 0x5555aaaa5555aaaaull;
    for (size_t i = 0; i < VMT_STORE_PAGE_SIZE; i += 8) {
        uint64_t v = mix(&x);
        memcpy(page + i, &v, 8);
    }
}

static size_t append_file(uint8_t *buf, size_t len, size_t max, const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return len; /* symlinks repeat their target */
    FILE *f = fopen(path, "rb");
    if (!f)
        return len;
    uint8_t page[VMT_STORE_PAGE_SIZE];
    while (len + VMT_STORE_PAGE_SIZE <= max && fread(page, 1, sizeof(page), f) == sizeof(page)) {
        bool zero = true;
        for (size_t i = 0; i < sizeof(page) && zero; i++)
            zero = page[i] == 0;
        if (zero)
            continue;
        memcpy(buf + len, page, sizeof(page));
        len += sizeof(page);
    }
    fclose(f);
    return len;
}

size_t ddt_corpus(uint8_t **out, size_t max, const char **name)
{
    static const char *patterns[] = {"/usr/bin/*", "/usr/lib/x86_64-linux-gnu/*.so*",
                                     "/usr/share/common-licenses/*"};
    uint8_t *buf = malloc(max);
    size_t len = 0;
    char *guests = NULL;
    const char *bd = getenv("VMTREE_BUILD_DIR");
    *out = buf;
    if (!buf)
        return 0; /* usable from suite setup: no CUnit assertions here */
    *name = "OS files (/usr/bin, /usr/lib)";
    if (bd && asprintf(&guests, "%s/guests/*.elf", bd) > 0) {
        glob_t g;
        if (glob(guests, 0, NULL, &g) == 0) {
            for (size_t i = 0; i < g.gl_pathc; i++)
                len = append_file(buf, len, max, g.gl_pathv[i]);
            *name = "test guest images + OS files";
            globfree(&g);
        }
        free(guests);
    }
    for (size_t p = 0; p < sizeof(patterns) / sizeof(patterns[0]) && len < max; p++) {
        glob_t g;
        if (glob(patterns[p], 0, NULL, &g) != 0)
            continue;
        for (size_t i = 0; i < g.gl_pathc && len + VMT_STORE_PAGE_SIZE <= max; i++)
            len = append_file(buf, len, max, g.gl_pathv[i]);
        globfree(&g);
    }
    *out = buf;
    return len;
}

char *ddt_pack_path(const char *dir, unsigned n)
{
    char *p = NULL;
    CU_ASSERT_FATAL(asprintf(&p, "%s/packs/pack-%08u.vpk", dir, n) > 0);
    return p;
}

void ddt_flip(const char *path, uint64_t off, uint8_t mask)
{
    int fd = open(path, O_RDWR);
    uint8_t b;
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(pread(fd, &b, 1, (off_t)off) == 1);
    b ^= mask;
    CU_ASSERT_FATAL(pwrite(fd, &b, 1, (off_t)off) == 1);
    close(fd);
}

typedef struct sizes {
    dd_backend *be;
    uint64_t n;
} sizes;

static int add_size(void *ctx, const char *name)
{
    sizes *z = ctx;
    char full[300];
    dd_bfile *f;
    uint64_t size = 0;
    snprintf(full, sizeof(full), "packs/%s", name);
    if (name[0] != '.' && z->be->ops->open(z->be, full, DD_BF_READ, &f) == 0) {
        if (z->be->ops->size(f, &size) == 0)
            z->n += size;
        z->be->ops->close(f);
    }
    return 0;
}

uint64_t ddt_pack_bytes(const char *dir)
{
    sizes z = {.be = be_open(dir)};
    DDT_OK(z.be->ops->list(z.be, "packs", add_size, &z));
    z.be->ops->destroy(z.be);
    return z.n;
}

void ddt_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(fwrite(data, 1, len, f), len);
    fclose(f);
}

long long ddt_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}
