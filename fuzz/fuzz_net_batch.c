/*
 * libFuzzer target for the page decoders: page batches (header, whole-batch
 * LZ4/zstd, records, per-page LZ4/zstd, XBZRLE) and bare XBZRLE deltas.
 *
 * Input: a mode byte, then
 *   mode even: a PAGE_BATCH payload for a guest of 4096 pages; every record
 *              of a batch that parses is applied to a page;
 *   mode odd:  an XBZRLE delta applied to a page.
 * Oracles beyond "no crash, no leak, no UB": only documented codes; a
 * parsed batch has 1..VMT_BATCH_MAX_PAGES records whose pfns are below the
 * guest's page count and whose data lies inside the input or the reader;
 * a DELTA record that parsed always applies (parse walked it); a refused
 * delta leaves the page untouched; an accepted delta, re-encoded against
 * the same base, gives a delta producing the same page.
 * Seeds: fuzz/corpus/net_batch/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmtree/net.h"

#define NPAGES 4096u
#define PAGE VMT_NET_PAGE_SIZE

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void base_page(uint8_t *page)
{
    for (size_t i = 0; i < PAGE; i++)
        page[i] = (uint8_t)(i * 31 + 7);
}

static void fuzz_delta(const uint8_t *d, size_t len)
{
    static uint8_t page[PAGE], before[PAGE], again[PAGE], delta[PAGE + 64];
    size_t dlen = 0;

    base_page(page);
    memcpy(before, page, PAGE);
    int rc = vmt_xbzrle_decode(d, len, page);
    if (rc == VMT_ECORRUPT) {
        if (memcmp(page, before, PAGE) != 0)
            __builtin_trap(); /* a refused delta must not touch the page */
        return;
    }
    if (rc != 0)
        __builtin_trap();
    if (vmt_xbzrle_encode(before, page, delta, sizeof(delta), &dlen) != 0)
        return; /* a delta beyond the cap is a fallback, not an error */
    memcpy(again, before, PAGE);
    if (vmt_xbzrle_decode(delta, dlen, again) != 0 || memcmp(again, page, PAGE) != 0)
        __builtin_trap();
}

static void fuzz_batch(const uint8_t *p, size_t len)
{
    static vmt_batch_reader *r;
    static uint8_t page[PAGE];

    if (!r && vmt_batch_reader_new(&r, NPAGES) != 0)
        return;
    int rc = vmt_batch_reader_parse(r, p, len);
    if (rc == VMT_ECORRUPT)
        return;
    if (rc != 0)
        __builtin_trap();
    size_t n = vmt_batch_reader_count(r);
    if (n == 0 || n > VMT_BATCH_MAX_PAGES)
        __builtin_trap();
    for (size_t i = 0; i < n; i++) {
        const vmt_page_rec *rec = vmt_batch_reader_rec(r, i);
        if (!rec || rec->pfn >= NPAGES || rec->enc >= VMT_PAGE_ENC_COUNT)
            __builtin_trap();
        base_page(page);
        rc = vmt_batch_reader_apply(r, rec, page);
        if (rec->enc == VMT_PAGE_REF ? rc != VMT_EINVAL
                                     : (rc != 0 && (rc != VMT_ECORRUPT ||
                                                    rec->enc == VMT_PAGE_DELTA)))
            __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 1)
        fuzz_delta(data + 1, size - 1);
    else
        fuzz_batch(data + 1, size - 1);
    return 0;
}
