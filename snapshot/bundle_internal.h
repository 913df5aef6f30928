/*
 * Internals of bundles (docs/bundle-format.md): constants of the format, the
 * byte source the decoder reads from (a file or a buffer), and the decoder
 * shared by import and vmt_snap_bundle_check.  Never included outside
 * snapshot/.
 */
#ifndef VMTREE_BUNDLE_INTERNAL_H
#define VMTREE_BUNDLE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <xxhash.h>

#include "snap_internal.h"

#define BUNDLE_MAGIC "VMTBUNDL"
#define BUNDLE_END_MAGIC "VMTBEND" /* 8 bytes with its NUL */
#define BUNDLE_MAJOR 1u
#define BUNDLE_MINOR 0u
#define BUNDLE_HDR 32u     /* file header */
#define BUNDLE_OBJ_HDR 40u /* object record header */
#define BUNDLE_TRAILER 64u
#define BUNDLE_KIND_TRAILER 0xfeu
#define BUNDLE_KIND_OPTIONAL 0x80u /* kinds 0x80..0xfd: skipped by readers that lack them */
#define BUNDLE_CODEC_RAW 0u
#define BUNDLE_CODEC_LZ4 1u
#define BUNDLE_MAX_SNAPSHOTS (1u << 20)

/* Where the decoder reads from.  read() returns 0, or VMT_ECORRUPT when the
 * input ends first (a truncated bundle) or VMT_EIO. */
typedef struct bundle_src {
    int (*read)(void *ctx, void *buf, size_t n);
    uint64_t (*remaining)(void *ctx); /* bytes left to read */
    void *ctx;
} bundle_src;

/* Called for every object whose checksum and id were verified; `data` is
 * valid during the call only.  Non-zero stops the scan with that code. */
typedef int (*bundle_visit_fn)(void *ctx, vmt_obj_type type, const vmt_id *id, const void *data,
                               size_t len);

/* Progress in bytes of the input. */
typedef void (*bundle_progress_fn)(void *ctx, uint64_t done);

typedef struct bundle_scan_opts {
    bundle_visit_fn visit; /* may be NULL */
    void *visit_ctx;
    bundle_progress_fn progress; /* may be NULL */
    void *progress_ctx;
} bundle_scan_opts;

/*
 * Reads a whole bundle: the header (magic, version), every record (caps,
 * checksum, decompression, rehash against its id; snapshot records also
 * decoded), and the trailer (counts, last snapshot, checksum of the whole
 * file, nothing after it).  VMT_EUNSUPPORTED for a newer major version or
 * an unknown mandatory feature, VMT_ECORRUPT for anything damaged.
 */
int bundle_scan(const bundle_src *src, const bundle_scan_opts *o, vmt_snap_bundle_info *info);

static inline void bundle_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void bundle_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void bundle_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t bundle_get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}
static inline uint32_t bundle_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t bundle_get64(const uint8_t *p)
{
    return (uint64_t)bundle_get32(p) | (uint64_t)bundle_get32(p + 4) << 32;
}

/* The checksum of an object record: XXH3-64 of its payload seeded with the
 * XXH3-64 of the record header's first 32 bytes. */
static inline uint64_t bundle_obj_sum(const uint8_t *hdr, const void *payload, size_t len)
{
    return XXH3_64bits_withSeed(payload, len, XXH3_64bits(hdr, 32));
}

#endif
