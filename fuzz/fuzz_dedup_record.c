/*
 * libFuzzer target for the page store's record decoder: the input is taken
 * as one record (header checks, payload checksum, decompression with every
 * codec, commit-marker and map-node decoding) and as pack contents for the
 * resynchronizing scanner.  Nothing may crash, leak or read out of bounds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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

static void scan(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz-pack", MFD_CLOEXEC);
    size_t items = 0;
    if (fd < 0)
        return;
    if (write(fd, data, size) == (ssize_t)size)
        (void)dd_scan_pack(fd, 0, size, count_items, &items);
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!out_buf) {
        out_buf = malloc(VMT_STORE_OBJECT_MAX);
        if (!out_buf || dd_scratch_new(&scratch, 1) != 0)
            abort();
    }
    decode_one(data, size);
    scan(data, size);
    return 0;
}
