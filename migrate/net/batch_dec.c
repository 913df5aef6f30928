/*
 * The page batch reader (format in batch_enc.c and docs/wire-protocol.md).
 *
 * Parsing checks the whole batch before the caller applies any page: every
 * varint, the count, the declared uncompressed size against what `count`
 * records can take, every pfn against the guest's page count, and every
 * record's length against its encoding (an XBZRLE delta is walked in full).
 * Only decompression of single pages is left to apply time, into a scratch
 * page, so a failing page leaves the guest page untouched.
 */
#include <lz4.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "net_internal.h"

#define PAGE VMT_NET_PAGE_SIZE
#define REC_MIN 3u /* pfn, encoding, length: one byte each */
#define REC_MAX (VMT_VARINT_MAX + 1 + 2 + PAGE)
/* Window limit for zstd frames: the largest batch fits in 2^24 bytes. */
#define ZSTD_WINDOW_LOG_MAX 24

struct vmt_batch_reader {
    uint64_t npages;
    vmt_page_rec *recs; /* VMT_BATCH_MAX_PAGES */
    size_t count;
    uint32_t round;
    uint8_t *raw; /* decompressed records */
    size_t raw_cap;
    ZSTD_DCtx *dctx;
    uint8_t page[PAGE];
};

const char *vmt_page_enc_name(int enc)
{
    static const char *const names[VMT_PAGE_ENC_COUNT] = {"zero", "ref", "delta",
                                                          "raw",  "lz4", "zstd"};
    return enc >= 0 && enc < VMT_PAGE_ENC_COUNT ? names[enc] : "?";
}

size_t vmt_batch_enc_max(vmt_page_enc enc)
{
    switch (enc) {
    case VMT_PAGE_ZERO:
        return 0;
    case VMT_PAGE_REF:
        return sizeof(((vmt_id *)0)->b);
    case VMT_PAGE_RAW:
        return PAGE;
    default:
        return PAGE - 1; /* a delta or compressed page shorter than the page */
    }
}

int vmt_batch_reader_new(vmt_batch_reader **out, uint64_t npages)
{
    *out = NULL;
    if (npages == 0)
        return vmt_error_set(VMT_EINVAL, "batch reader: no pages");
    vmt_batch_reader *r = calloc(1, sizeof(*r));
    if (!r)
        return vmt_error_set(VMT_ENOMEM, "batch reader: out of memory");
    r->npages = npages;
    r->recs = calloc(VMT_BATCH_MAX_PAGES, sizeof(*r->recs));
    r->dctx = ZSTD_createDCtx();
    if (!r->recs || !r->dctx ||
        ZSTD_isError(ZSTD_DCtx_setParameter(r->dctx, ZSTD_d_windowLogMax, ZSTD_WINDOW_LOG_MAX))) {
        vmt_batch_reader_free(r);
        return vmt_error_set(VMT_ENOMEM, "batch reader: out of memory");
    }
    *out = r;
    return 0;
}

void vmt_batch_reader_free(vmt_batch_reader *r)
{
    if (!r)
        return;
    ZSTD_freeDCtx(r->dctx);
    free(r->recs);
    free(r->raw);
    free(r);
}

uint32_t vmt_batch_reader_round(const vmt_batch_reader *r)
{
    return r->round;
}

size_t vmt_batch_reader_count(const vmt_batch_reader *r)
{
    return r->count;
}

const vmt_page_rec *vmt_batch_reader_rec(const vmt_batch_reader *r, size_t i)
{
    return i < r->count ? &r->recs[i] : NULL;
}

static int bad(size_t rec, const char *what)
{
    return vmt_error_set(VMT_ECORRUPT, "page batch record %zu: %s", rec, what);
}

/* Parses record i from body[*pos..len). */
static int parse_record(vmt_batch_reader *r, const uint8_t *body, size_t len, size_t *pos,
                        size_t i)
{
    uint64_t pfn, n;
    vmt_page_rec *rec = &r->recs[i];

    if (!vmt_varint_get(body, len, pos, &pfn) || *pos >= len)
        return bad(i, "truncated");
    if (pfn >= r->npages)
        return vmt_error_set(VMT_ECORRUPT, "page batch record %zu: pfn %llu beyond the %llu pages",
                             i, (unsigned long long)pfn, (unsigned long long)r->npages);
    uint8_t enc = body[(*pos)++];
    if (enc >= VMT_PAGE_ENC_COUNT)
        return vmt_error_set(VMT_ECORRUPT, "page batch record %zu: unknown encoding %u", i, enc);
    if (!vmt_varint_get(body, len, pos, &n))
        return bad(i, "truncated length");
    size_t max = vmt_batch_enc_max((vmt_page_enc)enc);
    bool exact = enc == VMT_PAGE_ZERO || enc == VMT_PAGE_REF || enc == VMT_PAGE_RAW;
    if (n > max || (exact && n != max) ||
        ((enc == VMT_PAGE_LZ4 || enc == VMT_PAGE_ZSTD) && n == 0))
        return vmt_error_set(VMT_ECORRUPT, "page batch record %zu: %s page of %llu bytes", i,
                             vmt_page_enc_name(enc), (unsigned long long)n);
    if (n > len - *pos)
        return bad(i, "data truncated");
    rec->pfn = pfn;
    rec->enc = (vmt_page_enc)enc;
    rec->data = body + *pos;
    rec->len = (size_t)n;
    *pos += (size_t)n;
    if (enc == VMT_PAGE_DELTA && vmt_xbzrle_check(rec->data, rec->len) != 0)
        return vmt_error_wrap(VMT_ECORRUPT, "page batch record %zu (pfn %llu)", i,
                              (unsigned long long)pfn);
    return 0;
}

/* Decompresses the records of a compressed batch into r->raw. */
static int inflate_body(vmt_batch_reader *r, unsigned codec, const uint8_t *src, size_t len,
                        uint64_t raw_len, uint64_t count)
{
    if (raw_len < count * REC_MIN || raw_len > count * REC_MAX)
        return vmt_error_set(VMT_ECORRUPT, "page batch: %llu uncompressed bytes cannot hold "
                                           "%llu records",
                             (unsigned long long)raw_len, (unsigned long long)count);
    if (raw_len > r->raw_cap) {
        uint8_t *p = realloc(r->raw, (size_t)raw_len);
        if (!p)
            return vmt_error_set(VMT_ENOMEM, "batch reader: out of memory");
        r->raw = p;
        r->raw_cap = (size_t)raw_len;
    }
    size_t got;
    if (codec == VMT_BATCH_LZ4) {
        int n = len > INT32_MAX ? -1
                                : LZ4_decompress_safe((const char *)src, (char *)r->raw, (int)len,
                                                      (int)raw_len);
        got = n < 0 ? SIZE_MAX : (size_t)n;
    } else {
        got = ZSTD_decompressDCtx(r->dctx, r->raw, (size_t)raw_len, src, len);
        if (ZSTD_isError(got))
            got = SIZE_MAX;
    }
    if (got != raw_len)
        return vmt_error_set(VMT_ECORRUPT, "page batch: %s body does not decompress to %llu "
                                           "bytes",
                             codec == VMT_BATCH_LZ4 ? "LZ4" : "zstd", (unsigned long long)raw_len);
    return 0;
}

/* Parses the header; *body and *body_len: the (decompressed) records. */
static int parse_header(vmt_batch_reader *r, const uint8_t *p, size_t len, const uint8_t **body,
                        size_t *body_len, uint64_t *count)
{
    size_t pos = 1;
    uint64_t round, raw_len = 0;

    if (len < 1 + 1 + 1 + REC_MIN)
        return vmt_error_set(VMT_ECORRUPT, "page batch of %zu bytes is truncated", len);
    unsigned codec = p[0] & VMT_BATCH_CODEC_MASK;
    if ((p[0] & ~VMT_BATCH_CODEC_MASK) || codec > VMT_BATCH_ZSTD)
        return vmt_error_set(VMT_ECORRUPT, "page batch: unknown flags 0x%02x", p[0]);
    if (!vmt_varint_get(p, len, &pos, &round) || !vmt_varint_get(p, len, &pos, count) ||
        (codec && !vmt_varint_get(p, len, &pos, &raw_len)))
        return vmt_error_set(VMT_ECORRUPT, "page batch: truncated header");
    if (round > UINT32_MAX || *count == 0 || *count > VMT_BATCH_MAX_PAGES)
        return vmt_error_set(VMT_ECORRUPT, "page batch: round %llu / %llu pages out of range",
                             (unsigned long long)round, (unsigned long long)*count);
    r->round = (uint32_t)round;
    if (codec == VMT_BATCH_PLAIN) {
        *body = p + pos;
        *body_len = len - pos;
        return 0;
    }
    int rc = inflate_body(r, codec, p + pos, len - pos, raw_len, *count);
    *body = r->raw;
    *body_len = (size_t)raw_len;
    return rc;
}

int vmt_batch_reader_parse(vmt_batch_reader *r, const uint8_t *payload, size_t len)
{
    const uint8_t *body = NULL;
    size_t body_len = 0, pos = 0;
    uint64_t count = 0;

    r->count = 0;
    if (!payload && len)
        return vmt_error_set(VMT_EINVAL, "page batch: NULL payload");
    int rc = parse_header(r, payload, len, &body, &body_len, &count);
    for (size_t i = 0; rc == 0 && i < count; i++)
        rc = parse_record(r, body, body_len, &pos, i);
    if (rc == 0 && pos != body_len)
        rc = vmt_error_set(VMT_ECORRUPT, "page batch: %zu bytes after the last record",
                           body_len - pos);
    if (rc == 0)
        r->count = (size_t)count;
    return rc;
}

int vmt_batch_reader_apply(vmt_batch_reader *r, const vmt_page_rec *rec, void *page)
{
    size_t got = SIZE_MAX;

    switch (rec->enc) {
    case VMT_PAGE_ZERO:
        memset(page, 0, PAGE);
        return 0;
    case VMT_PAGE_RAW:
        memcpy(page, rec->data, PAGE);
        return 0;
    case VMT_PAGE_DELTA:
        return vmt_xbzrle_decode(rec->data, rec->len, page);
    case VMT_PAGE_LZ4: {
        int n = LZ4_decompress_safe((const char *)rec->data, (char *)r->page, (int)rec->len, PAGE);
        got = n < 0 ? SIZE_MAX : (size_t)n;
        break;
    }
    case VMT_PAGE_ZSTD:
        got = ZSTD_decompressDCtx(r->dctx, r->page, PAGE, rec->data, rec->len);
        break;
    default:
        return vmt_error_set(VMT_EINVAL, "page %llu is a reference: resolve its id in the store",
                             (unsigned long long)rec->pfn);
    }
    if (got != PAGE)
        return vmt_error_set(VMT_ECORRUPT, "page %llu: %s data does not decompress to a page",
                             (unsigned long long)rec->pfn, vmt_page_enc_name(rec->enc));
    memcpy(page, r->page, PAGE);
    return 0;
}
