/*
 * vmtree-bench golden: pulling a golden image between two stores over TCP
 * on loopback (migrate/ vmtree/golden.h), server and client in this process
 * on two threads.
 *
 * The image: 1 GiB (--quick: 256 MiB) of pages of the files under
 * /usr/lib/x86_64-linux-gnu with every fourth page zero; its sibling is the
 * same image with 2 % of the pages (spread evenly) replaced by random bytes,
 * a separate snapshot (no parent link), as two images built from one base.
 *
 *   pull_empty     the golden image into an empty store: s, MB/s of
 *                  non-zero image bytes, bytes on the wire
 *   pull_sibling   the golden image into a store holding the sibling: s,
 *                  bytes on the wire, and their ratio to the differing bytes
 *   branch_from    a VM from a remote snapshot still arriving (vmt_golden_lazy,
 *                  what `vmtree branch --from` runs): a counter guest whose RAM
 *                  above 16 MiB holds the image, snapshotted while it runs;
 *                  into an empty store, the times from connecting to the VM
 *                  started (_running_s), to its first console line
 *                  (_first_output_s), and to the snapshot complete in the
 *                  store (_complete_s); the load average rides along
 *
 * Medians of --runs runs (default 3), each into a fresh store.
 * Options: --mem MiB, --dir DIR (stores; default $TMPDIR or /var/tmp).
 */
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "bench.h"
#include "vmtree/golden.h"
#include "vmtree/migrate.h"

#define PAGE 4096u
#define CORPUS_DIR "/usr/lib/x86_64-linux-gnu"

typedef struct gcfg {
    unsigned runs;
    uint64_t npages;
    const char *dir;
} gcfg;

/* ---- the image ------------------------------------------------------------ */


/* ---- snapshots in a store --------------------------------------------------- */

static int put_map(vmt_store *s, const uint8_t *img, uint64_t npages, vmt_id *root)
{
    enum { CHUNK = 4096 };
    const void **ptr = calloc(CHUNK, sizeof(*ptr));
    vmt_id *ids = calloc(CHUNK, sizeof(*ids));
    vmt_map *m = NULL;
    int rc = ptr && ids ? vmt_map_new(&m, npages) : VMT_ENOMEM;
    for (uint64_t off = 0; rc == 0 && off < npages; off += CHUNK) {
        size_t n = (size_t)VMT_MIN((uint64_t)CHUNK, npages - off);
        for (size_t i = 0; i < n; i++)
            ptr[i] = img + (off + i) * PAGE;
        rc = vmt_store_put_pages(s, ptr, n, ids, NULL, NULL);
        for (size_t i = 0; rc == 0 && i < n; i++)
            vmt_map_set(m, off + i, &ids[i]);
    }
    if (rc == 0)
        rc = vmt_map_write(m, s, root, NULL, NULL);
    vmt_map_free(m);
    free(ptr);
    free(ids);
    return rc;
}

/* A snapshot of img tagged `tag` (record, stand-in state blob, catalog). */
static int make_snap(vmt_store *s, vmt_catalog *c, const uint8_t *img, uint64_t npages,
                     const char *tag)
{
    vmt_snap_record *r = calloc(1, sizeof(*r));
    uint8_t *buf = NULL;
    size_t len = 0;
    vmt_id id;
    char ref[64];
    int rc = r ? put_map(s, img, npages, &r->map_root) : VMT_ENOMEM;
    vmt_store_obj o = {.data = tag, .len = strlen(tag), .type = VMT_OBJ_BLOB};
    if (rc == 0)
        rc = vmt_store_put_many(s, &o, 1, &r->state, NULL, NULL);
    if (rc == 0) {
        r->mem_size = npages * PAGE;
        r->vcpus = 1;
        snprintf(r->vm_name, sizeof(r->vm_name), "bench");
        rc = vmt_snap_record_encode(r, &buf, &len);
    }
    o = (vmt_store_obj){.data = buf, .len = len, .type = VMT_OBJ_SNAPSHOT};
    if (rc == 0)
        rc = vmt_store_put_many(s, &o, 1, &id, NULL, NULL);
    if (rc == 0)
        rc = vmt_store_commit(s);
    if (rc == 0)
        rc = vmt_catalog_add_snapshot(c, &id, r);
    snprintf(ref, sizeof(ref), "tag/%s", tag);
    if (rc == 0)
        rc = vmt_catalog_set_ref(c, ref, &id, NULL);
    free(buf);
    free(r);
    return rc;
}

/* ---- one pull over loopback ------------------------------------------------- */

typedef struct server {
    vmt_listener *l;
    const char *dir;
    pthread_t th;
    int rc;
} server;

static void *serve_main(void *arg)
{
    server *sv = arg;
    vmt_session_config c;
    vmt_session *s = NULL;
    vmt_session_config_init(&c);
    c.allow_unauthenticated = true;
    sv->rc = vmt_session_accept(&s, sv->l, &c);
    vmt_golden_server_opts so = {.store_dir = sv->dir};
    vmt_golden_opts_init(&so.xfer);
    if (sv->rc == 0)
        sv->rc = vmt_golden_serve(s, &so, NULL, NULL, NULL);
    vmt_session_close(s);
    return NULL;
}

static int pull(const char *src, vmt_store *dst, vmt_catalog *c, const char *name,
                vmt_golden_stats *st)
{
    server sv = {.dir = src};
    vmt_session_config cfg;
    vmt_session *s = NULL;
    int rc = vmt_tcp_listen(&sv.l, "127.0.0.1", 0);
    if (rc)
        return rc;
    if (pthread_create(&sv.th, NULL, serve_main, &sv) != 0) {
        vmt_listener_close(sv.l);
        return VMT_ERR;
    }
    vmt_session_config_init(&cfg);
    cfg.allow_unauthenticated = true;
    rc = vmt_session_connect(&s, "127.0.0.1", vmt_listener_port(sv.l), &cfg);
    if (rc == 0)
        rc = vmt_golden_pull(s, dst, c, name, NULL, NULL, NULL, st);
    vmt_session_close(s);
    pthread_join(sv.th, NULL);
    vmt_listener_close(sv.l);
    return rc ? rc : sv.rc;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

/* Pulls `first` (untimed, may be NULL) then `name` (timed) into a fresh store. */
static int run_once(const gcfg *g, const char *src, const char *first, vmt_golden_stats *st)
{
    char dir[4096];
    vmt_store *s = NULL;
    vmt_catalog *c = NULL;
    vmt_golden_stats pre;
    snprintf(dir, sizeof(dir), "%s/dst", g->dir);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    int rc = vmt_store_init(dir, NULL);
    if (rc == 0)
        rc = vmt_store_open(&s, dir, NULL);
    if (rc == 0)
        rc = vmt_catalog_open(&c, dir);
    if (rc == 0 && first)
        rc = pull(src, s, c, first, &pre);
    if (rc == 0)
        rc = pull(src, s, c, "golden", st);
    vmt_catalog_close(c);
    vmt_store_close(s);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}

/* ---- measurements ----------------------------------------------------------- */

static void emit(const gcfg *g, const char *metric, double v, const char *unit)
{
    char extra[128];
    snprintf(extra, sizeof(extra), "\"mem_mib\":%llu,\"runs\":%u",
             (unsigned long long)(g->npages * PAGE >> 20), g->runs);
    vmt_bench_emit("golden", metric, v, unit, extra);
}

/* Medians of g->runs pulls of "golden" (after `first`, when not NULL). */
static int measure(const gcfg *g, const char *src, const char *first, const char *what,
                   uint64_t ref_bytes)
{
    double secs[16], bytes[16];
    unsigned runs = VMT_MIN(g->runs, 16u);
    for (unsigned i = 0; i < runs; i++) {
        vmt_golden_stats st;
        if (run_once(g, src, first, &st) != 0) {
            fprintf(stderr, "vmtree-bench golden: %s: %s\n", what, vmt_error_last());
            return -1;
        }
        secs[i] = (double)st.ns / 1e9;
        bytes[i] = (double)st.wire_received + (double)st.wire_sent;
    }
    double s = vmt_bench_median(secs, runs), b = vmt_bench_median(bytes, runs);
    char m[64];
    snprintf(m, sizeof(m), "%s_s", what);
    emit(g, m, s, "s");
    snprintf(m, sizeof(m), "%s_wire_bytes", what);
    emit(g, m, b, "bytes");
    snprintf(m, sizeof(m), first ? "%s_wire_per_differing_byte" : "%s_wire_per_nonzero_byte",
             what);
    emit(g, m, b / (double)ref_bytes, "ratio");
    if (!first) {
        snprintf(m, sizeof(m), "%s_nonzero_MBps", what);
        emit(g, m, (double)ref_bytes / s / 1e6, "MB/s");
    }
    return 0;
}

static int parse_args(const vmt_bench_opts *o, gcfg *g)
{
    uint64_t mib = o->quick ? 256 : 1024;
    g->runs = o->runs ? o->runs : 3;
    g->dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
    for (int i = 0; i < o->argc; i++) {
        if (strcmp(o->argv[i], "--mem") == 0 && i + 1 < o->argc &&
            vmt_parse_u64(o->argv[i + 1], 16, 16384, &mib) == 0) {
            i++;
        } else if (strcmp(o->argv[i], "--dir") == 0 && i + 1 < o->argc) {
            g->dir = o->argv[++i];
        } else {
            fprintf(stderr, "vmtree-bench golden: unknown option %s\n", o->argv[i]);
            return -1;
        }
    }
    g->npages = mib << 8;
    return 0;
}

/* The source store: "golden" and "sibling" (2 % of its pages changed).
 * *nonzero and *differing receive their byte counts. */
static int make_source(const gcfg *g, const char *src, uint64_t *nonzero, uint64_t *differing)
{
    uint8_t *img = malloc(g->npages * PAGE);
    vmt_store *s = NULL;
    vmt_catalog *c = NULL;
    int rc = img && vmt_bench_fill_image(img, g->npages, CORPUS_DIR) == 0 ? 0 : -1;
    if (rc)
        fprintf(stderr, "vmtree-bench golden: cannot build the image from %s\n", CORPUS_DIR);
    if (rc == 0 && (vmt_store_init(src, NULL) || vmt_store_open(&s, src, NULL) ||
                    vmt_catalog_open(&c, src) || make_snap(s, c, img, g->npages, "golden")))
        rc = -1;
    *nonzero = *differing = 0;
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (uint64_t p = 0; rc == 0 && p < g->npages; p++) {
        uint8_t *pg = img + p * PAGE;
        bool zero = pg[0] == 0 && memcmp(pg, pg + 1, PAGE - 1) == 0;
        *nonzero += zero ? 0 : PAGE;
        if (p % 50 != 7)
            continue;
        for (unsigned k = 0; k < PAGE; k += 8) { /* splitmix64: incompressible */
            uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            z ^= z >> 31;
            memcpy(pg + k, &z, 8);
        }
        *differing += PAGE;
    }
    if (rc == 0 && make_snap(s, c, img, g->npages, "sibling"))
        rc = -1;
    if (rc && vmt_error_last()[0])
        fprintf(stderr, "vmtree-bench golden: source store: %s\n", vmt_error_last());
    vmt_catalog_close(c);
    vmt_store_close(s);
    free(img);
    return rc;
}

/* ---- branch --from ------------------------------------------------------------- */

#define BR_BASE_PAGE 4096u /* the image from 16 MiB up */

/* The source store at src: a counter VM whose RAM above 16 MiB holds the
 * image, snapshotted while it prints; tagged "vm". */
static int make_vm_source(const vmt_bench_opts *o, const gcfg *g, const char *src, vmt_kvm *kvm)
{
    vmt_store *s = NULL;
    vmt_catalog *c = NULL;
    vmt_vm *vm = NULL;
    vmt_vmsnap *vs = NULL;
    vmt_console_buf *con = NULL;
    vmt_vm_config cfg;
    vmt_id id;
    const char *cmd = "buf=64 work=20000 every=1";
    char *path = vmt_bench_guest(o, "counter");
    vmt_vmsnap_info info = {.vm_name = "vm", .image = path, .cmdline = cmd};
    vmt_vm_config_init(&cfg);
    cfg.mem_size = g->npages * PAGE;
    cfg.console = vmt_console_buf_sink;
    int rc = vmt_console_buf_new(&con);
    cfg.console_ctx = con;
    rc = rc ? rc : vmt_store_init(src, NULL);
    rc = rc ? rc : vmt_store_open(&s, src, NULL);
    rc = rc ? rc : vmt_catalog_open(&c, src);
    rc = rc ? rc : vmt_vm_create(&vm, kvm, &cfg);
    rc = rc ? rc : vmt_vm_load_elf(vm, path, cmd);
    if (rc == 0 && vmt_bench_fill_image(vmt_vm_ram(vm, NULL) + (size_t)BR_BASE_PAGE * PAGE,
                                        g->npages - BR_BASE_PAGE, CORPUS_DIR) != 0)
        rc = vmt_error_set(VMT_ERR, "cannot build the image from %s", CORPUS_DIR);
    rc = rc ? rc : vmt_vmsnap_attach(&vs, s, c, vm, NULL, &info);
    if (rc == 0)
        vmt_vm_mark_dirty(vm, BR_BASE_PAGE, g->npages - BR_BASE_PAGE);
    rc = rc ? rc : vmt_vm_start(vm);
    if (rc == 0 && vmt_console_buf_wait(con, "counter: step 3 ", 0, 60ull * 1000000000ull) < 0)
        rc = vmt_error_set(VMT_ETIMEDOUT, "the counter did not start");
    rc = rc ? rc : vmt_vmsnap_take(vs, NULL, &id, NULL);
    rc = rc ? rc : vmt_catalog_set_ref(c, "tag/vm", &id, NULL);
    vmt_vmsnap_detach(vs);
    vmt_vm_destroy(vm);
    vmt_console_buf_free(con);
    vmt_catalog_close(c);
    vmt_store_close(s);
    free(path);
    return rc;
}

typedef struct br_times {
    double running, output, complete;
} br_times;

/* One branch from the server on src into a fresh store. */
static int branch_once(const gcfg *g, const char *src, vmt_kvm *kvm, br_times *t)
{
    char dir[4096];
    server sv = {.dir = src};
    vmt_store *s = NULL;
    vmt_session *ss = NULL;
    vmt_golden_lazy *gl = NULL;
    vmt_console_buf *con = NULL;
    vmt_vm *vm = NULL;
    vmt_vm_config base;
    vmt_session_config cfg;
    snprintf(dir, sizeof(dir), "%s/bdst", g->dir);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    int rc = vmt_store_init(dir, NULL);
    rc = rc ? rc : vmt_store_open(&s, dir, NULL);
    rc = rc ? rc : vmt_console_buf_new(&con);
    rc = rc ? rc : vmt_tcp_listen(&sv.l, "127.0.0.1", 0);
    bool started = rc == 0 && pthread_create(&sv.th, NULL, serve_main, &sv) == 0;
    rc = rc ? rc : started ? 0 : VMT_ERR;
    vmt_vm_config_init(&base);
    base.console = vmt_console_buf_sink;
    base.console_ctx = con;
    vmt_session_config_init(&cfg);
    cfg.allow_unauthenticated = true;
    uint64_t t0 = vmt_now_ns();
    rc = rc ? rc : vmt_session_connect(&ss, "127.0.0.1", vmt_listener_port(sv.l), &cfg);
    rc = rc ? rc : vmt_golden_lazy_open(&gl, ss, s, kvm, &base, "vm", NULL, 1, &vm, NULL, NULL);
    rc = rc ? rc : vmt_vm_start(vm);
    t->running = (double)(vmt_now_ns() - t0) / 1e9;
    if (rc == 0 && vmt_console_buf_wait(con, "counter: step", 0, 60ull * 1000000000ull) < 0)
        rc = vmt_error_set(VMT_ETIMEDOUT, "the branched VM printed nothing");
    t->output = (double)(vmt_now_ns() - t0) / 1e9;
    int p = 0;
    while (rc == 0 && (p = vmt_golden_lazy_poll(gl, NULL, NULL)) == 0)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    rc = rc ? rc : p < 0 ? p : 0;
    t->complete = (double)(vmt_now_ns() - t0) / 1e9;
    vmt_vm_destroy(vm);
    vmt_golden_lazy_close(gl);
    vmt_session_close(ss);
    if (started)
        pthread_join(sv.th, NULL);
    vmt_listener_close(sv.l);
    vmt_console_buf_free(con);
    vmt_store_close(s);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}

static int measure_branch(const vmt_bench_opts *o, const gcfg *g)
{
    char src[4200];
    double run[16], out[16], comp[16], load[3] = {0, 0, 0};
    unsigned runs = VMT_MIN(g->runs, 16u);
    vmt_kvm *kvm = NULL;
    snprintf(src, sizeof(src), "%s/bsrc", g->dir);
    int rc = vmt_kvm_open(&kvm);
    rc = rc ? rc : make_vm_source(o, g, src, kvm);
    for (unsigned i = 0; rc == 0 && i < runs; i++) {
        br_times t;
        rc = branch_once(g, src, kvm, &t);
        run[i] = t.running;
        out[i] = t.output;
        comp[i] = t.complete;
    }
    vmt_kvm_close(kvm);
    if (rc) {
        fprintf(stderr, "vmtree-bench golden: branch_from: %s\n", vmt_error_last());
        return -1;
    }
    if (getloadavg(load, 3) < 0)
        load[0] = -1;
    char extra[160];
    snprintf(extra, sizeof(extra), "\"mem_mib\":%llu,\"runs\":%u,\"load1\":%.2f",
             (unsigned long long)(g->npages * PAGE >> 20), runs, load[0]);
    vmt_bench_emit("golden", "branch_from_running_s", vmt_bench_median(run, runs), "s", extra);
    vmt_bench_emit("golden", "branch_from_first_output_s", vmt_bench_median(out, runs), "s",
                   extra);
    vmt_bench_emit("golden", "branch_from_complete_s", vmt_bench_median(comp, runs), "s", extra);
    return 0;
}

int vmt_bench_golden(const vmt_bench_opts *o)
{
    gcfg g = {0};
    char *tmp = NULL, src[4200];
    uint64_t nonzero = 0, differing = 0;
    int rc = parse_args(o, &g);
    if (rc == 0 && (asprintf(&tmp, "%s/vmtree-bench-golden-XXXXXX", g.dir) < 0 || !mkdtemp(tmp)))
        rc = -1;
    if (rc == 0) {
        g.dir = tmp;
        snprintf(src, sizeof(src), "%s/src", tmp);
        rc = make_source(&g, src, &nonzero, &differing);
    }
    if (rc == 0)
        rc = measure(&g, src, NULL, "pull_empty", nonzero);
    if (rc == 0)
        rc = measure(&g, src, "sibling", "pull_sibling", differing);
    if (rc == 0)
        rc = measure_branch(o, &g);
    if (tmp)
        nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(tmp);
    return rc ? 1 : 0;
}
