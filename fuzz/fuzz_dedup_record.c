/*
 * libFuzzer target for the page store's record decoder: the input is taken
 * as one record (header checks, payload checksum, decompression with every
 * codec, commit-marker and map-node decoding) and as pack contents for the
 * resynchronizing scanner.  Nothing may crash, leak or read out of bounds.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../dedup/internal.h"

static uint8_t *out_buf; /* one object's worth, allocated once */
static dd_scratch *scratch;

static void decode_one(const uint8_t *data, size_t size)
{
    dd_rec_hdr h;
    dd_marker m;
    unsigned level;
    size_t count;
    if (dd_rec_decode(data, size, &h) != 0 || dd_rec_len(&h) > size)
        return;
    const uint8_t *pl = data + DD_REC_HDR;
    (void)dd_sum32(pl, h.stored_len); /* the fuzzer cannot forge it: decode anyway */
    if (h.type == DD_REC_COMMIT) {
        (void)dd_marker_decode(&h, pl, &m);
        return;
    }
    if (dd_decompress(scratch, h.codec, NULL, pl, h.stored_len, out_buf, h.raw_len) == 0 &&
        h.type == VMT_OBJ_MAPNODE &&
        vmt_store_mapnode_parse(out_buf, h.raw_len, &level, &count) == 0) {
        for (size_t i = 0; i < count; i++) {
            vmt_mapnode_entry e;
            vmt_store_mapnode_entry_at(out_buf, i, &e);
        }
    }
}

static int count_items(void *ctx, const dd_scan_item *it)
{
    (*(size_t *)ctx)++;
    if (it->kind == DD_SCAN_RECORD && it->len < DD_REC_HDR)
        abort(); /* a record shorter than its header was reported */
    return 0;
}

/* The pack scanner reads through the store's backend: a directory backend
 * in a private temporary directory, one object rewritten per input (no
 * fsync: it is never published). */
static dd_backend *be;

static void scan(const uint8_t *data, size_t size)
{
    dd_bfile *f = NULL;
    size_t items = 0;
    struct iovec iov = {.iov_base = (void *)(uintptr_t)data, .iov_len = size};
    if (be->ops->open(be, "fuzz-pack", DD_BF_WRITE, &f) != 0)
        return;
    if (be->ops->truncate(f, 0) == 0 && (size == 0 || be->ops->pwritev(f, &iov, 1, 0) == 0))
        (void)dd_scan_pack(be, f, 0, size, count_items, &items);
    be->ops->close(f);
}

static char dir[] = "/tmp/vmtree-fuzz-pack-XXXXXX";

static void remove_dir(void)
{
    char path[sizeof(dir) + 16];
    snprintf(path, sizeof(path), "%s/fuzz-pack", dir);
    unlink(path);
    rmdir(dir);
}

static void open_backend(void)
{
    dd_bfile *f = NULL;
    if (!mkdtemp(dir) || atexit(remove_dir) != 0 || dd_be_dir_open(dir, true, &be) != 0 ||
        be->ops->open(be, "fuzz-pack", DD_BF_CREATE, &f) != 0)
        abort();
    be->ops->close(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!out_buf) {
        out_buf = malloc(VMT_STORE_OBJECT_MAX);
        if (!out_buf || dd_scratch_new(&scratch, 1) != 0)
            abort();
        open_backend();
    }
    decode_one(data, size);
    scan(data, size);
    return 0;
}
