/*
 * Writes the seed corpora of fuzz_proto_snaprecord and fuzz_snapshot_bundle
 * (fuzz/corpus/proto_snaprecord/, fuzz/corpus/snapshot_bundle/): records of
 * a few shapes and small real bundles exported from a temporary store.  Not
 * a test; rebuild the seeds after a format change with
 *   make snap_make_seeds && ./tests/snap_make_seeds ../fuzz/corpus
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmtree/snapshot.h"

static int write_file(const char *dir, const char *name, const void *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        perror(path);
        return 1;
    }
    return 0;
}

static void fill(vmt_id *id, uint8_t v)
{
    memset(id->b, v, sizeof(id->b));
}

static int record_seeds(const char *dir)
{
    vmt_snap_record r;
    uint8_t *buf = NULL;
    size_t len = 0;
    int bad = 0;

    memset(&r, 0, sizeof(r));
    fill(&r.map_root, 1);
    fill(&r.state, 2);
    r.mem_size = 2 << 20;
    r.vcpus = 1;
    bad |= vmt_snap_record_encode(&r, &buf, &len) || write_file(dir, "root", buf, len);
    free(buf);
    r.nparents = 2;
    fill(&r.parents[0], 3);
    fill(&r.parents[1], 4);
    r.mem_size = 1ull << 30;
    r.vcpus = 4;
    r.irqchip = true;
    strcpy(r.image, "/var/lib/vmtree/guests/kvstore.elf");
    strcpy(r.cmdline, "console=ttyS0 seed=7");
    strcpy(r.vm_name, "web-1");
    strcpy(r.message, "merge of two branches\nwith a second line");
    r.time_ns = 1790000000000000000ull;
    r.nonzero_pages = 1000;
    bad |= vmt_snap_record_encode(&r, &buf, &len) || write_file(dir, "merge", buf, len);
    free(buf);
    return bad;
}

/* A snapshot of 40 pages (text, zero, random, a repeat) in store s. */
static int make_snapshot(vmt_store *s, const vmt_id *parent, uint8_t salt, vmt_id *out)
{
    enum { N = 40 };
    static uint8_t mem[N][4096];
    vmt_map *m = NULL;
    vmt_snap_record r;
    vmt_id ids[N];
    const void *ptr[N];
    uint8_t *buf = NULL;
    size_t len = 0;

    for (int i = 0; i < N; i++) {
        for (int k = 0; k < 4096; k++)
            mem[i][k] = i % 4 == 0 ? 0 : i % 4 == 1 ? (uint8_t)("vmtree seed "[k % 12])
                                                    : (uint8_t)(k * 131 + i * 7 + salt);
        ptr[i] = mem[i];
    }
    memcpy(mem[N - 1], mem[1], 4096);
    memset(&r, 0, sizeof(r));
    vmt_store_obj o = {.data = "seed state", .len = 10, .type = VMT_OBJ_BLOB};
    int rc = vmt_store_put_pages(s, ptr, N, ids, NULL, NULL);
    rc = rc ? rc : vmt_map_new(&m, N);
    for (int i = 0; rc == 0 && i < N; i++)
        vmt_map_set(m, (uint64_t)i, &ids[i]);
    rc = rc ? rc : vmt_map_write(m, s, &r.map_root, NULL, NULL);
    rc = rc ? rc : vmt_store_put_many(s, &o, 1, &r.state, NULL, NULL);
    vmt_map_free(m);
    r.nparents = parent ? 1 : 0;
    if (parent)
        r.parents[0] = *parent;
    r.mem_size = N * 4096;
    r.vcpus = 1;
    strcpy(r.message, "seed");
    rc = rc ? rc : vmt_snap_record_encode(&r, &buf, &len);
    o = (vmt_store_obj){.data = buf, .len = len, .type = VMT_OBJ_SNAPSHOT};
    rc = rc ? rc : vmt_store_put_many(s, &o, 1, out, NULL, NULL);
    free(buf);
    return rc ? rc : vmt_store_commit(s);
}

static int bundle_seeds(const char *dir)
{
    char tmp[] = "/tmp/vmtree-seeds-XXXXXX", store[256], path[4200];
    vmt_store *s = NULL;
    vmt_id a, b;

    if (!mkdtemp(tmp))
        return 1;
    snprintf(store, sizeof(store), "%s/store", tmp);
    int rc = vmt_store_init(store, NULL);
    rc = rc ? rc : vmt_store_open(&s, store, NULL);
    rc = rc ? rc : make_snapshot(s, NULL, 1, &a);
    rc = rc ? rc : make_snapshot(s, &a, 2, &b);
    snprintf(path, sizeof(path), "%s/one", dir);
    rc = rc ? rc : vmt_snap_export(s, &a, false, path, NULL, NULL);
    snprintf(path, sizeof(path), "%s/chain", dir);
    rc = rc ? rc : vmt_snap_export(s, &b, true, path, NULL, NULL);
    if (rc)
        fprintf(stderr, "snap_make_seeds: %s\n", vmt_error_last());
    vmt_store_close(s);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    return system(cmd) != 0 || rc != 0;
}

int main(int argc, char **argv)
{
    char rec[4096], bun[4096];
    if (argc != 2) {
        fprintf(stderr, "usage: snap_make_seeds CORPUS_ROOT (fuzz/corpus)\n");
        return 2;
    }
    snprintf(rec, sizeof(rec), "%s/proto_snaprecord", argv[1]);
    snprintf(bun, sizeof(bun), "%s/snapshot_bundle", argv[1]);
    mkdir(rec, 0755);
    mkdir(bun, 0755);
    return record_seeds(rec) | bundle_seeds(bun);
}
