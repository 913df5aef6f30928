/*
 * libFuzzer target for the bundle decoder (snapshot/snap_bundle_read.c),
 * reading from memory through vmt_snap_bundle_check.
 *
 * Each input is checked twice: as it is (the first line of defence: magic,
 * version, caps and checksums), and after "repair": the checksums of the
 * header, of every record and of the file, and the ids of raw records, are
 * recomputed as a writer would, so that mutated bundles get past the
 * checksums and exercise what lies behind them (LZ4 decompression, id
 * checks, snapshot record decoding, trailer counts).  Oracle: no crash, no
 * leak, no UB, only the documented codes, and an accepted bundle's info
 * agrees with its size.  Seeds: fuzz/corpus/snapshot_bundle/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "vmtree/snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Recomputes what a writer computes; leaves everything else as it is. */
static void repair(uint8_t *p, size_t n)
{
    if (n < 32)
        return;
    uint32_t h = (uint32_t)XXH3_64bits(p, 28);
    memcpy(p + 28, &h, 4); /* little-endian host */
    size_t off = 32;
    while (off + 40 <= n) {
        if (p[off] == 0xfe) {
            if (off + 56 <= n)
                put64(p + off + 48, XXH3_64bits(p, off + 48));
            return;
        }
        uint8_t *rec = p + off;
        uint32_t plen = get32(rec + 8);
        if (plen > n - off - 40)
            return;
        if (rec[1] == 0 && rec[0] >= 1 && rec[0] <= 4) {
            vmt_id id;
            vmt_id_of(rec + 40, plen, &id);
            memcpy(rec + 16, id.b, 16);
        }
        put64(rec + 32, XXH3_64bits_withSeed(rec + 40, plen, XXH3_64bits(rec, 32)));
        off += 40 + (size_t)plen;
    }
}

static void check(const uint8_t *p, size_t n)
{
    vmt_snap_bundle_info info;
    int rc = vmt_snap_bundle_check(p, n, &info);
    switch (rc) {
    case 0:
        if (info.bytes != n || info.snapshots == 0 || info.snapshots > info.objects)
            __builtin_trap();
        break;
    case VMT_ECORRUPT:
    case VMT_EUNSUPPORTED:
    case VMT_ENOMEM:
        break;
    default:
        __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check(data, size);
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    repair(copy, size);
    check(copy, size);
    free(copy);
    return 0;
}
