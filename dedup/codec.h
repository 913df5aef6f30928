/*
 * dedup internals: per-worker codec state and the codec choice for one
 * object (raw where compression does not pay, lz4, zstd, zstd with a
 * dictionary).  A dd_scratch belongs to one thread at a time; a dd_dict is
 * read-only once loaded and shared by all workers (zstd's CDict and DDict
 * are safe to share).
 */
#ifndef VMTREE_DEDUP_CODEC_H
#define VMTREE_DEDUP_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <zstd.h>

#include "vmtree/store.h"

#define DD_DICT_MAX_LEN (1u << 20)
#define DD_DICT_MAX_VERSION 65535u

/* A loaded dictionary. */
typedef struct dd_dict {
    unsigned version;
    uint8_t *data;
    size_t len;
    ZSTD_DDict *ddict;
    ZSTD_CDict *cdict; /* made by the writer for cdict_level, serially */
    int cdict_level;
} dd_dict;

/* Builds the decompression side of a dictionary (takes ownership of data). */
int dd_dict_new(dd_dict **out, unsigned version, uint8_t *data, size_t len);
void dd_dict_free(dd_dict *d);
/* Makes d->cdict for `level` unless it exists already.  Not thread-safe. */
int dd_dict_prepare(dd_dict *d, int level);

/* The codec settings for one put. */
typedef struct dd_codec_cfg {
    uint8_t codec; /* vmt_codec actually used (ZSTD_DICT only with dict) */
    int zstd_level;
    int lz4_accel;
    const dd_dict *dict; /* for VMT_CODEC_ZSTD_DICT, prepared at zstd_level */
} dd_codec_cfg;

/* One worker's scratch: codec states and its staging buffer. */
typedef struct dd_scratch {
    void *lz4; /* LZ4 extState */
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    int cctx_level; /* level the cctx is set to; -1 after a dict */
    const void *cctx_dict;
    uint8_t *stage; /* records compressed by this worker in this window */
    size_t stage_len, stage_cap;
    uint32_t *order; /* batch item of each record in stage, in order */
    size_t norder, order_cap;
    uint8_t *tmp; /* decompression scratch */
    size_t tmp_cap;
    /* Error reporting from worker threads: first failure's message. */
} dd_scratch;

/* Allocates a scratch for windows of up to `items` objects. */
int dd_scratch_new(dd_scratch **out, size_t items);
void dd_scratch_free(dd_scratch *sc);
/* Makes sc->stage hold at least `need` more bytes (doubling). */
int dd_scratch_reserve(dd_scratch *sc, size_t need);
/* Makes sc->tmp hold at least `need` bytes. */
int dd_scratch_tmp(dd_scratch *sc, size_t need);

/*
 * Compresses len bytes of src into dst (cap >= dd_stored_bound(len)) with
 * cfg's codec, falling back to raw when the result would not save at least
 * 1/16.  *codec and *slen receive what was stored.
 */
int dd_compress(dd_scratch *sc, const dd_codec_cfg *cfg, const void *src, size_t len, uint8_t *dst,
                size_t cap, uint8_t *codec, size_t *slen);

/*
 * Decompresses slen bytes into exactly rlen bytes at dst.  dict is needed
 * for VMT_CODEC_ZSTD_DICT (NULL: VMT_ECORRUPT).  VMT_ECORRUPT when the data
 * does not decode to exactly rlen bytes.
 */
int dd_decompress(dd_scratch *sc, unsigned codec, const dd_dict *dict, const uint8_t *src,
                  size_t slen, void *dst, size_t rlen);

#endif
