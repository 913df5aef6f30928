/*
 * dedup internals: the byte layouts of pack records, pack headers and
 * commit markers (docs/store.md), with encoders and checked decoders.
 * Everything here is pure: no I/O, no state, thread-safe.
 */
#ifndef VMTREE_DEDUP_RECORD_H
#define VMTREE_DEDUP_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "vmtree/store.h"

/* ---- little-endian helpers ---- */

static inline uint16_t dd_get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}
static inline uint32_t dd_get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v; /* x86-64 and every supported host are little-endian */
}
static inline uint64_t dd_get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
static inline void dd_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void dd_put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}
static inline void dd_put64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the store's on-disk helpers assume a little-endian host"
#endif

/* ---- records ---- */

#define DD_REC_MAGIC 0x52544d56u /* "VMTR" */
#define DD_REC_HDR 40u
#define DD_REC_COMMIT 15u /* record type of a commit marker */
#define DD_MARKER_LEN 64u /* payload of a commit marker */

/* A decoded record header. */
typedef struct dd_rec_hdr {
    uint8_t type;  /* vmt_obj_type or DD_REC_COMMIT */
    uint8_t codec; /* vmt_codec */
    uint16_t dict; /* dictionary version for VMT_CODEC_ZSTD_DICT, else 0 */
    vmt_id id;
    uint32_t raw_len;
    uint32_t stored_len;
    uint32_t payload_sum; /* dd_sum32 of the stored bytes */
} dd_rec_hdr;

/* Low 32 bits of XXH3-64: the checksum of headers and stored bytes. */
uint32_t dd_sum32(const void *p, size_t n);

/* Largest stored payload for raw_len bytes of content (any codec). */
size_t dd_stored_bound(size_t raw_len);

/* Writes the 40-byte header (magic, fields, header checksum). */
void dd_rec_encode(uint8_t out[DD_REC_HDR], const dd_rec_hdr *h);

/*
 * Decodes and checks a header at p (avail bytes readable): magic, header
 * checksum, type, codec, lengths within caps and consistent.  VMT_ECORRUPT
 * with a message on any failure.
 */
int dd_rec_decode(const uint8_t *p, size_t avail, dd_rec_hdr *h);

/* Total record length (header + payload). */
static inline size_t dd_rec_len(const dd_rec_hdr *h)
{
    return DD_REC_HDR + (size_t)h->stored_len;
}

/* ---- commit markers ---- */

/* Lifetime counters, persisted in markers and the index file. */
typedef struct dd_counters {
    uint64_t put_objects, put_bytes, zero_pages, dedup_hits, new_objects, new_bytes;
} dd_counters;

typedef struct dd_marker {
    uint64_t gen;
    dd_counters c;
} dd_marker;

/* Builds a whole marker record (header + payload) into out. */
void dd_marker_encode(uint8_t out[DD_REC_HDR + DD_MARKER_LEN], const dd_marker *m);

/* Decodes a marker payload whose header dd_rec_decode accepted. */
int dd_marker_decode(const dd_rec_hdr *h, const uint8_t *payload, dd_marker *m);

/* ---- pack headers ---- */

#define DD_PACK_MAGIC "VMTPACK1"
#define DD_PACK_HDR 40u
#define DD_PACK_VERSION 1u
#define DD_PACK_NUM_MAX 0xffffffu /* pack numbers are 24-bit in the index */

void dd_pack_hdr_encode(uint8_t out[DD_PACK_HDR], uint32_t num, const uint8_t uuid[16]);

/* Checks magic, version, checksum, number and store uuid; VMT_ECORRUPT. */
int dd_pack_hdr_check(const uint8_t *p, size_t avail, uint32_t num, const uint8_t uuid[16]);

/* ---- pages ---- */

/* True when the 4096 bytes at p are all zero (word loop, early exit). */
bool dd_is_zero_page(const void *p);

#endif
