/*
 * Writes the seed corpora of fuzz_net_frame (fuzz/corpus/net_frame/) and
 * fuzz_net_batch (fuzz/corpus/net_batch/): every control message as a
 * whole frame and as a bare payload, page batches of every encoding and
 * batch codec, XBZRLE deltas.  Not a test; rebuild the seeds after a format
 * change with
 *   make net_make_seeds && ./tests/net_make_seeds ../fuzz/corpus
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net_fixture.h"

#define PAGE VMT_NET_PAGE_SIZE

static int write_seed(const char *dir, const char *name, uint8_t mode, const void *a, size_t alen,
                      const void *b, size_t blen)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = fwrite(&mode, 1, 1, f) == 1 && (!alen || fwrite(a, 1, alen, f) == alen) &&
             (!blen || fwrite(b, 1, blen, f) == blen);
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* One message as a frame (mode 0) and as type + payload (mode 1). */
static int seed_msg(const char *dir, const char *name, const vmt_wire_msg *m)
{
    uint8_t *buf = NULL, hdr[VMT_FRAME_HEADER_LEN];
    size_t len = 0;
    char fname[128];
    if (vmt_wire_encode(m, &buf, &len) != 0)
        return -1;
    vmt_frame_header_build(m->type, buf, len, hdr);
    snprintf(fname, sizeof(fname), "frame_%s", name);
    int rc = write_seed(dir, fname, 0, hdr, sizeof(hdr), buf, len);
    uint8_t type = (uint8_t)m->type;
    snprintf(fname, sizeof(fname), "msg_%s", name);
    if (rc == 0)
        rc = write_seed(dir, fname, 1, &type, 1, buf, len);
    free(buf);
    return rc;
}

static int have_chunk(void *ctx, const vmt_wire_have_set *chunk)
{
    vmt_wire_msg m = {.type = VMT_WIRE_HAVE_SET};
    m.u.have_set = *chunk;
    return seed_msg(ctx, "have_set", &m);
}

static int frame_seeds(const char *dir)
{
    vmt_wire_msg m;
    vmt_id ids[50];
    uint64_t pfns[5] = {1, 2, 300, 4096, 1u << 20};
    uint8_t blob[100];
    int rc = 0;

    memset(&m, 0, sizeof(m));
    m.type = VMT_WIRE_HELLO;
    m.u.hello = (vmt_wire_hello){.min_version = 1, .max_version = 2,
                                 .features = VMT_WIRE_FEAT_ALL, .stream_index = 1, .nstreams = 4};
    net_fill(m.u.hello.nonce, 32, 1);
    strcpy(m.u.hello.software, "vmtree seed");
    rc |= seed_msg(dir, "hello", &m);
    memset(&m, 0, sizeof(m));
    m.type = VMT_WIRE_HELLO_ACK;
    m.u.hello_ack = (vmt_wire_hello_ack){1, VMT_WIRE_FEAT_LZ4, VMT_WIRE_AUTH_PSK};
    rc |= seed_msg(dir, "hello_ack", &m);
    m.type = VMT_WIRE_AUTH_CHALLENGE;
    net_fill(m.u.auth_challenge.nonce, 32, 2);
    rc |= seed_msg(dir, "auth_challenge", &m);
    m.type = VMT_WIRE_AUTH_RESPONSE;
    rc |= seed_msg(dir, "auth_response", &m);
    memset(&m, 0, sizeof(m));
    m.type = VMT_WIRE_VM_CONFIG;
    m.u.vm_config = (vmt_wire_vm_config){.mem_size = 1u << 20, .vcpus = 2, .irqchip = true,
                                         .npages = 256};
    strcpy(m.u.vm_config.image, "guests/counter.elf");
    strcpy(m.u.vm_config.vm_name, "seed");
    rc |= seed_msg(dir, "vm_config", &m);
    memset(&m, 0, sizeof(m));
    m.type = VMT_WIRE_ROUND_END;
    m.u.round_end = (vmt_wire_round_end){2, 100, 409600, 3, 1000000, 5};
    rc |= seed_msg(dir, "round_end", &m);
    m.type = VMT_WIRE_ROUND_START;
    m.u.round_start.round = 2;
    m.u.round_start.pages = 100;
    rc |= seed_msg(dir, "round_start", &m);
    m.type = VMT_WIRE_COMMIT;
    rc |= seed_msg(dir, "commit", &m);
    memset(&m, 0, sizeof(m));
    m.type = VMT_WIRE_STATE_BLOB;
    net_fill(blob, sizeof(blob), 3);
    m.u.state_blob.data = blob;
    m.u.state_blob.len = sizeof(blob);
    rc |= seed_msg(dir, "state_blob", &m);
    memset(&m, 0, sizeof(m));
    m.type = VMT_WIRE_ACK;
    m.u.ack.resumed = true;
    strcpy(m.u.ack.message, "running");
    rc |= seed_msg(dir, "ack", &m);
    m.type = VMT_WIRE_ERROR;
    m.u.error.code = VMT_EAUTH;
    strcpy(m.u.error.message, "authentication failed: wrong pre-shared key");
    rc |= seed_msg(dir, "error", &m);
    memset(&m, 0, sizeof(m));
    m.type = VMT_WIRE_WANT;
    m.u.want.pfns = pfns;
    m.u.want.n = 5;
    rc |= seed_msg(dir, "want", &m);
    net_fill(ids, sizeof(ids), 4);
    rc |= vmt_haveset_encode(ids, 50, 0, have_chunk, (void *)(uintptr_t)dir);
    return rc;
}

static int batch_seed(const char *dir, const char *name, vmt_page_enc codec, vmt_batch_codec bc)
{
    vmt_batch_opts o;
    vmt_batch_writer *w;
    vmt_xbzrle_cache *cache;
    uint8_t page[PAGE];
    const uint8_t *p;
    size_t len;
    vmt_batch_opts_init(&o);
    o.page_codec = codec;
    o.batch_codec = bc;
    if (vmt_xbzrle_cache_new(&cache, 16 * PAGE) || vmt_batch_writer_new(&w, &o, cache, NULL))
        return -1;
    for (uint64_t i = 0; i < 8; i++) { /* round 0: the cache fills */
        net_page(page, (unsigned)i % 4, i);
        vmt_batch_writer_add(w, i * 3, page);
    }
    vmt_batch_writer_begin(w, 1);
    for (uint64_t i = 0; i < 8; i++) { /* round 1: deltas */
        net_page(page, (unsigned)i % 4, i);
        page[i * 100] ^= 0x55;
        vmt_batch_writer_add(w, i * 3, page);
    }
    net_page(page, 2, 99);
    vmt_batch_writer_add(w, 4095, page);
    int rc = vmt_batch_writer_finish(w, &p, &len);
    if (rc == 0)
        rc = write_seed(dir, name, 0, p, len, NULL, 0);
    vmt_batch_writer_free(w);
    vmt_xbzrle_cache_free(cache);
    return rc;
}

static int batch_seeds(const char *dir)
{
    uint8_t a[PAGE], b[PAGE], d[PAGE];
    size_t len;
    int rc = batch_seed(dir, "batch_raw", VMT_PAGE_RAW, VMT_BATCH_PLAIN);
    rc |= batch_seed(dir, "batch_lz4", VMT_PAGE_LZ4, VMT_BATCH_PLAIN);
    rc |= batch_seed(dir, "batch_zstd", VMT_PAGE_ZSTD, VMT_BATCH_PLAIN);
    rc |= batch_seed(dir, "batch_whole_lz4", VMT_PAGE_RAW, VMT_BATCH_LZ4);
    rc |= batch_seed(dir, "batch_whole_zstd", VMT_PAGE_RAW, VMT_BATCH_ZSTD);
    net_page(a, 1, 5);
    memcpy(b, a, PAGE);
    for (size_t i = 0; i < PAGE; i += 397)
        b[i] ^= 0xff;
    b[PAGE - 1] ^= 1;
    if (vmt_xbzrle_encode(a, b, d, sizeof(d), &len) == 0)
        rc |= write_seed(dir, "delta_sparse", 1, d, len, NULL, 0);
    rc |= write_seed(dir, "delta_empty", 1, NULL, 0, NULL, 0);
    return rc;
}

int main(int argc, char **argv)
{
    char frame_dir[4096], batch_dir[4096];
    if (argc != 2) {
        fprintf(stderr, "usage: net_make_seeds CORPUS_DIR (containing net_frame/, net_batch/)\n");
        return 2;
    }
    snprintf(frame_dir, sizeof(frame_dir), "%s/net_frame", argv[1]);
    snprintf(batch_dir, sizeof(batch_dir), "%s/net_batch", argv[1]);
    if (frame_seeds(frame_dir) != 0 || batch_seeds(batch_dir) != 0) {
        fprintf(stderr, "net_make_seeds: %s\n", vmt_error_last());
        return 1;
    }
    return 0;
}
