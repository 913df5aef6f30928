/*
 * The page batch writer.  A batch payload (docs/wire-protocol.md):
 *
 *   u8      flags     bits 0-1: whole-batch codec (0 plain, 1 LZ4, 2 zstd)
 *   varint  round
 *   varint  count     1..VMT_BATCH_MAX_PAGES
 *   [varint raw_len]  only when compressed: size of the records uncompressed
 *   records           plain, or one LZ4 block / zstd frame of raw_len bytes
 *
 *   record: varint pfn, u8 encoding, varint length, length bytes
 *
 * Per page the writer takes the cheapest form it can prove: ZERO, REF to an
 * id the destination holds, DELTA against the copy the destination has (the
 * XBZRLE cache), else the page codec, falling back to RAW whenever
 * compression does not shrink the page.  Records are built after a gap
 * at the front of the buffer so that a plain batch's header is written in
 * front of them without a copy.
 */
#include <lz4.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "net_internal.h"

#define PAGE VMT_NET_PAGE_SIZE
/* Room for the batch header: a flag byte and three varints. */
#define HDR_ROOM (1 + 3 * VMT_VARINT_MAX)
/* The largest record: pfn, encoding, length and a raw page. */
#define REC_MAX (VMT_VARINT_MAX + 1 + 2 + PAGE)

struct vmt_batch_writer {
    vmt_batch_opts o;
    vmt_xbzrle_cache *cache;
    const vmt_haveset *have;
    ZSTD_CCtx *cctx;
    uint8_t *buf; /* HDR_ROOM, then the records */
    size_t len, cap;
    uint8_t *out; /* header + compressed records */
    size_t out_cap;
    size_t count;
    uint32_t round;
    vmt_batch_stats st;
    uint8_t page[PAGE];
    uint8_t tmp[PAGE];
};

void vmt_batch_opts_init(vmt_batch_opts *o)
{
    o->page_codec = VMT_PAGE_RAW;
    o->batch_codec = VMT_BATCH_PLAIN;
    o->level = 1;
    o->delta_max = 2048;
}

static int check_opts(const vmt_batch_opts *o)
{
    if (o->page_codec != VMT_PAGE_RAW && o->page_codec != VMT_PAGE_LZ4 &&
        o->page_codec != VMT_PAGE_ZSTD)
        return vmt_error_set(VMT_EINVAL, "batch: page codec must be raw, lz4 or zstd");
    if ((unsigned)o->batch_codec > VMT_BATCH_ZSTD)
        return vmt_error_set(VMT_EINVAL, "batch: unknown batch codec %d", (int)o->batch_codec);
    if (o->level < 1 || o->level > 64 || (o->level > 19 && (o->page_codec == VMT_PAGE_ZSTD ||
                                                            o->batch_codec == VMT_BATCH_ZSTD)))
        return vmt_error_set(VMT_EINVAL, "batch: level %d (zstd 1..19, LZ4 1..64)", o->level);
    if (o->delta_max == 0 || o->delta_max >= PAGE)
        return vmt_error_set(VMT_EINVAL, "batch: delta_max %zu (1..4095)", o->delta_max);
    return 0;
}

int vmt_batch_writer_new(vmt_batch_writer **out, const vmt_batch_opts *o, vmt_xbzrle_cache *cache,
                         const vmt_haveset *have)
{
    vmt_batch_opts def;

    *out = NULL;
    if (!o) {
        vmt_batch_opts_init(&def);
        o = &def;
    }
    int rc = check_opts(o);
    if (rc)
        return rc;
    vmt_batch_writer *w = calloc(1, sizeof(*w));
    if (!w)
        return vmt_error_set(VMT_ENOMEM, "batch writer: out of memory");
    w->o = *o;
    w->cache = cache;
    w->have = have;
    w->cap = HDR_ROOM + 64 * REC_MAX;
    w->buf = malloc(w->cap);
    w->cctx = ZSTD_createCCtx();
    if (!w->buf || !w->cctx) {
        vmt_batch_writer_free(w);
        return vmt_error_set(VMT_ENOMEM, "batch writer: out of memory");
    }
    vmt_batch_writer_begin(w, 0);
    *out = w;
    return 0;
}

void vmt_batch_writer_free(vmt_batch_writer *w)
{
    if (!w)
        return;
    ZSTD_freeCCtx(w->cctx);
    free(w->buf);
    free(w->out);
    free(w);
}

void vmt_batch_writer_begin(vmt_batch_writer *w, uint32_t round)
{
    w->round = round;
    w->count = 0;
    w->len = HDR_ROOM;
}

size_t vmt_batch_writer_count(const vmt_batch_writer *w)
{
    return w->count;
}

const vmt_batch_stats *vmt_batch_writer_stats(const vmt_batch_writer *w)
{
    return &w->st;
}

static bool page_is_zero(const uint8_t *p)
{
    static const uint8_t zero8[8];
    return memcmp(p, zero8, 8) == 0 && memcmp(p, p + 8, PAGE - 8) == 0;
}

/* Compresses w->page with the page codec into w->tmp; RAW when it does not
 * shrink.  *data and *len: what the record carries. */
static vmt_page_enc compress_page(vmt_batch_writer *w, const uint8_t **data, size_t *len)
{
    *data = w->page;
    *len = PAGE;
    if (w->o.page_codec == VMT_PAGE_LZ4) {
        int n = LZ4_compress_fast((const char *)w->page, (char *)w->tmp, PAGE, PAGE - 1,
                                  w->o.level);
        if (n > 0) {
            *data = w->tmp;
            *len = (size_t)n;
            return VMT_PAGE_LZ4;
        }
    } else if (w->o.page_codec == VMT_PAGE_ZSTD) {
        size_t n = ZSTD_compressCCtx(w->cctx, w->tmp, PAGE - 1, w->page, PAGE, w->o.level);
        if (!ZSTD_isError(n)) {
            *data = w->tmp;
            *len = n;
            return VMT_PAGE_ZSTD;
        }
    }
    return VMT_PAGE_RAW;
}

/* Chooses the encoding of w->page (pfn) and where its bytes are. */
static vmt_page_enc choose(vmt_batch_writer *w, uint64_t pfn, vmt_id *id, const uint8_t **data,
                           size_t *len)
{
    *data = NULL;
    *len = 0;
    if (page_is_zero(w->page))
        return VMT_PAGE_ZERO;
    if (w->have) {
        vmt_id_of(w->page, PAGE, id);
        if (vmt_haveset_contains(w->have, id)) {
            *data = id->b;
            *len = sizeof(id->b);
            return VMT_PAGE_REF;
        }
    }
    const uint8_t *old = w->cache ? vmt_xbzrle_cache_get(w->cache, pfn) : NULL;
    if (old) {
        if (vmt_xbzrle_encode(old, w->page, w->tmp, w->o.delta_max, len) == 0) {
            *data = w->tmp;
            return VMT_PAGE_DELTA;
        }
        w->st.delta_fallbacks++;
    }
    return compress_page(w, data, len);
}

static int grow(vmt_batch_writer *w)
{
    if (w->cap - w->len >= REC_MAX)
        return 0;
    size_t cap = VMT_MIN(w->cap * 2, (size_t)HDR_ROOM + VMT_BATCH_MAX_PAGES * REC_MAX);
    uint8_t *p = realloc(w->buf, cap);
    if (!p)
        return vmt_error_set(VMT_ENOMEM, "batch writer: out of memory");
    w->buf = p;
    w->cap = cap;
    return 0;
}

int vmt_batch_writer_add(vmt_batch_writer *w, uint64_t pfn, const void *page)
{
    vmt_id id;
    const uint8_t *data;
    size_t len;

    if (w->count >= VMT_BATCH_MAX_PAGES)
        return vmt_error_set(VMT_ERANGE, "batch: full (%u pages)", VMT_BATCH_MAX_PAGES);
    int rc = grow(w);
    if (rc)
        return rc;
    memcpy(w->page, page, PAGE); /* one stable copy: the guest may be writing it */
    vmt_page_enc enc = choose(w, pfn, &id, &data, &len);
    uint8_t *p = w->buf + w->len;
    size_t n = vmt_varint_put(p, pfn);
    p[n++] = (uint8_t)enc;
    n += vmt_varint_put(p + n, len);
    if (len)
        memcpy(p + n, data, len);
    w->len += n + len;
    w->count++;
    w->st.pages[enc]++;
    w->st.bytes[enc] += len;
    if (w->cache) {
        /* The cache mirrors what the destination will hold for pfn. */
        if (enc == VMT_PAGE_ZERO)
            vmt_xbzrle_cache_drop(w->cache, pfn);
        else
            vmt_xbzrle_cache_put(w->cache, pfn, w->page);
    }
    return 0;
}

static size_t put_header(uint8_t *p, uint8_t flags, uint32_t round, size_t count, size_t raw)
{
    size_t n = 0;
    p[n++] = flags;
    n += vmt_varint_put(p + n, round);
    n += vmt_varint_put(p + n, count);
    if (flags & VMT_BATCH_CODEC_MASK)
        n += vmt_varint_put(p + n, raw);
    return n;
}

/* Compresses the records into w->out behind the header. */
static int finish_compressed(vmt_batch_writer *w, const uint8_t **payload, size_t *len)
{
    const uint8_t *rec = w->buf + HDR_ROOM;
    size_t raw = w->len - HDR_ROOM;
    size_t bound = w->o.batch_codec == VMT_BATCH_LZ4 ? (size_t)LZ4_compressBound((int)raw)
                                                     : ZSTD_compressBound(raw);
    if (w->out_cap < HDR_ROOM + bound) {
        uint8_t *o = realloc(w->out, HDR_ROOM + bound);
        if (!o)
            return vmt_error_set(VMT_ENOMEM, "batch writer: out of memory");
        w->out = o;
        w->out_cap = HDR_ROOM + bound;
    }
    size_t h = put_header(w->out, (uint8_t)w->o.batch_codec, w->round, w->count, raw);
    size_t n;
    if (w->o.batch_codec == VMT_BATCH_LZ4) {
        int r = LZ4_compress_fast((const char *)rec, (char *)w->out + h, (int)raw, (int)bound,
                                  w->o.level);
        if (r <= 0)
            return vmt_error_set(VMT_ERR, "batch: LZ4 compression failed");
        n = (size_t)r;
    } else {
        n = ZSTD_compressCCtx(w->cctx, w->out + h, bound, rec, raw, w->o.level);
        if (ZSTD_isError(n))
            return vmt_error_set(VMT_ERR, "batch: zstd: %s", ZSTD_getErrorName(n));
    }
    *payload = w->out;
    *len = h + n;
    return 0;
}

int vmt_batch_writer_finish(vmt_batch_writer *w, const uint8_t **payload, size_t *len)
{
    uint8_t hdr[HDR_ROOM];

    if (w->count == 0)
        return vmt_error_set(VMT_EINVAL, "batch: no pages");
    int rc = 0;
    if (w->o.batch_codec == VMT_BATCH_PLAIN) {
        size_t h = put_header(hdr, 0, w->round, w->count, 0);
        memcpy(w->buf + HDR_ROOM - h, hdr, h);
        *payload = w->buf + HDR_ROOM - h;
        *len = w->len - HDR_ROOM + h;
    } else {
        rc = finish_compressed(w, payload, len);
    }
    if (rc == 0) {
        w->st.batches++;
        w->st.payload_bytes += *len;
    }
    return rc;
}
