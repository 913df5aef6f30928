/*
 * Sequential scan of a pack's records with pread (never through the
 * mapping, so a file truncated meanwhile gives short reads, not SIGBUS).
 * Where a header does not validate, the scan resynchronizes on the next
 * record magic whose header does, reporting the bytes between as garbage.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define SCAN_CHUNK (4u << 20)

typedef struct scanner {
    dd_backend *be;
    dd_bfile *f;
    uint64_t end;
    uint8_t *buf;
    size_t cap;
    uint64_t bstart; /* file offset of buf[0] */
    size_t blen;     /* valid bytes in buf */
} scanner;

/* Makes buf cover [pos, pos + need); need <= end - pos. */
static int ensure(scanner *sc, uint64_t pos, size_t need)
{
    if (pos >= sc->bstart && pos + need <= sc->bstart + sc->blen)
        return 0;
    if (pos >= sc->bstart && pos < sc->bstart + sc->blen) {
        size_t keep = (size_t)(sc->bstart + sc->blen - pos);
        memmove(sc->buf, sc->buf + (pos - sc->bstart), keep);
        sc->blen = keep;
    } else {
        sc->blen = 0;
    }
    sc->bstart = pos;
    size_t want = VMT_MAX(need, (size_t)SCAN_CHUNK);
    if (want > sc->end - pos)
        want = (size_t)(sc->end - pos);
    if (want > sc->cap) {
        uint8_t *nb = realloc(sc->buf, want);
        if (!nb)
            return vmt_error_set(VMT_ENOMEM, "out of memory scanning a pack");
        sc->buf = nb;
        sc->cap = want;
    }
    size_t got = 0;
    int rc = sc->be->ops->pread(sc->f, sc->buf + sc->blen, want - sc->blen, pos + sc->blen, &got);
    if (rc != 0)
        return rc;
    if (got < want - sc->blen)
        return vmt_error_set(VMT_EIO, "pack shrank while being read");
    sc->blen = want;
    return 0;
}

static int emit_range(dd_scan_fn fn, void *ctx, dd_scan_kind kind, uint64_t from, uint64_t to)
{
    if (to <= from)
        return 0;
    dd_scan_item it = {.kind = kind, .off = from, .len = to - from};
    return fn(ctx, &it);
}

/* Next offset after pos where the record magic starts, within the buffer;
 * else the last offset a magic split across the refill could start at. */
static uint64_t next_magic(const scanner *sc, uint64_t pos)
{
    static const uint8_t magic[4] = {'V', 'M', 'T', 'R'};
    uint64_t from = pos + 1;
    uint64_t bend = sc->bstart + sc->blen;
    if (from + 4 <= bend) {
        const uint8_t *p = memmem(sc->buf + (from - sc->bstart), (size_t)(bend - from), magic, 4);
        if (p)
            return sc->bstart + (uint64_t)(p - sc->buf);
    }
    return bend >= from + 3 ? bend - 3 : from;
}

static int scan_record(scanner *sc, uint64_t pos, const dd_rec_hdr *h, dd_scan_fn fn, void *ctx)
{
    size_t rl = dd_rec_len(h);
    int rc = ensure(sc, pos, rl);
    if (rc != 0)
        return rc;
    const uint8_t *pl = sc->buf + (pos - sc->bstart) + DD_REC_HDR;
    dd_scan_item it = {.kind = DD_SCAN_RECORD, .off = pos, .len = rl, .h = *h, .payload = pl};
    it.payload_ok = dd_sum32(pl, h->stored_len) == h->payload_sum;
    return fn(ctx, &it);
}

static int scan_loop(scanner *sc, uint64_t pos, dd_scan_fn fn, void *ctx)
{
    uint64_t garbage = UINT64_MAX; /* start of the current bad range */
    int rc = 0;
    while (rc == 0 && pos < sc->end) {
        dd_rec_hdr h;
        size_t need = (size_t)VMT_MIN((uint64_t)DD_REC_HDR, sc->end - pos);
        rc = ensure(sc, pos, need);
        if (rc != 0)
            break;
        if (need < DD_REC_HDR || dd_rec_decode(sc->buf + (pos - sc->bstart), need, &h) != 0) {
            if (garbage == UINT64_MAX)
                garbage = pos;
            pos = VMT_MIN(next_magic(sc, pos), sc->end);
            continue;
        }
        if (garbage != UINT64_MAX) {
            rc = emit_range(fn, ctx, DD_SCAN_GARBAGE, garbage, pos);
            garbage = UINT64_MAX;
            if (rc != 0)
                break;
        }
        if (pos + dd_rec_len(&h) > sc->end) {
            rc = emit_range(fn, ctx, DD_SCAN_TORN, pos, sc->end);
            pos = sc->end;
            break;
        }
        rc = scan_record(sc, pos, &h, fn, ctx);
        pos += dd_rec_len(&h);
    }
    if (rc == 0 && garbage != UINT64_MAX)
        rc = emit_range(fn, ctx, DD_SCAN_GARBAGE, garbage, sc->end);
    return rc;
}

int dd_scan_pack(dd_backend *be, dd_bfile *f, uint64_t start, uint64_t end, dd_scan_fn fn,
                 void *ctx)
{
    scanner sc = {.be = be, .f = f, .end = end, .bstart = start};
    if (start >= end)
        return 0;
    int rc = scan_loop(&sc, start, fn, ctx);
    free(sc.buf);
    return rc;
}
