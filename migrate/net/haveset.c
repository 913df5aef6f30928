/*
 * The destination's id set (HaveSet): which page ids the destination holds,
 * sent compactly so that round 0 skips them.
 *
 * Form: a Golomb-Rice coded set (as in BIP 158).  Each 128-bit id is cut to
 * its top k = ceil(log2 n) + fp bits (ids are uniform hashes, so prefixes
 * are uniform too); the prefixes are sorted and deduplicated, and each gap
 * to the previous one is written as a unary quotient (gap >> r ones and a
 * zero) and r remainder bits, MSB first, with r = k - bitlen(m) for m
 * distinct prefixes.  That costs about fp + 2 bits per id: 4.2 bytes at the
 * default fp = 32, against 16 for the ids themselves (which, being random,
 * no general compressor shrinks).
 *
 * False positives: an id the destination lacks matches a prefix with
 * probability at most n / 2^k <= 2^-fp.  The source then sends a REF the
 * destination cannot resolve; the destination asks for that page in a WANT
 * and the source sends it in full (docs/wire-protocol.md), so a false
 * positive costs a round trip, never correctness.
 *
 * Large sets travel in chunks; each chunk restarts the gaps from `first`,
 * the last value of the chunk before, so chunks are checked and appended
 * one by one and the decoded array stays sorted for binary search.
 */
#include <stdlib.h>
#include <string.h>

#include "net_internal.h"

struct vmt_haveset {
    uint64_t *v; /* sorted, distinct prefixes */
    size_t n, cap;
    uint64_t max_ids, total;
    unsigned k, r;
    bool started, complete;
};

static unsigned bitlen64(uint64_t v)
{
    return v ? 64u - (unsigned)__builtin_clzll(v) : 0u;
}

static unsigned ceil_log2(uint64_t n)
{
    return n <= 1 ? 0u : bitlen64(n - 1);
}

static uint64_t prefix_of(const vmt_id *id, unsigned k)
{
    uint64_t v = vmt_get_be64(id->b);
    return k >= 64 ? v : v >> (64 - k);
}

static uint64_t mask_of(unsigned k)
{
    return k >= 64 ? UINT64_MAX : (1ull << k) - 1;
}

/* ---- sorting (LSD radix, 16 bits a pass over the k significant bits) ----- */

#define RADIX_BITS 16u
#define RADIX (1u << RADIX_BITS)

static int sort_unique(uint64_t *v, size_t n, unsigned k, size_t *m)
{
    uint64_t *tmp = vmt_mallocn(n, sizeof(*tmp));
    size_t *count = vmt_callocn(RADIX + 1, sizeof(*count));
    uint64_t *src = v, *dst = tmp;
    if (!tmp || !count) {
        free(tmp);
        free(count);
        return VMT_ENOMEM;
    }
    for (unsigned shift = 0; shift < k; shift += RADIX_BITS) {
        memset(count, 0, (RADIX + 1) * sizeof(*count));
        for (size_t i = 0; i < n; i++)
            count[((src[i] >> shift) & (RADIX - 1)) + 1]++;
        for (size_t d = 0; d < RADIX; d++)
            count[d + 1] += count[d];
        for (size_t i = 0; i < n; i++)
            dst[count[(src[i] >> shift) & (RADIX - 1)]++] = src[i];
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != v)
        memcpy(v, src, n * sizeof(*v));
    free(tmp);
    free(count);
    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        if (w == 0 || v[i] != v[w - 1])
            v[w++] = v[i];
    *m = w;
    return 0;
}

/* ---- encoding ------------------------------------------------------------ */

typedef struct bitw {
    uint8_t *buf; /* zeroed; bits are ORed in */
    size_t cap;   /* bytes */
    uint64_t bits;
} bitw;

static void put_ones(bitw *w, uint64_t q)
{
    for (; q && (w->bits & 7); q--, w->bits++)
        w->buf[w->bits >> 3] |= (uint8_t)(0x80u >> (w->bits & 7));
    size_t bytes = (size_t)(q >> 3);
    memset(w->buf + (w->bits >> 3), 0xff, bytes);
    w->bits += (uint64_t)bytes * 8;
    for (q &= 7; q; q--, w->bits++)
        w->buf[w->bits >> 3] |= (uint8_t)(0x80u >> (w->bits & 7));
}

/* Appends the low n bits of v (n <= 64), MSB first, a byte at a time. */
static void put_bits(bitw *w, uint64_t v, unsigned n)
{
    while (n) {
        unsigned room = 8 - (unsigned)(w->bits & 7);
        unsigned take = n < room ? n : room;
        unsigned chunk = (unsigned)(v >> (n - take)) & ((1u << take) - 1);
        w->buf[w->bits >> 3] |= (uint8_t)(chunk << (room - take));
        w->bits += take;
        n -= take;
    }
}

typedef struct enc_state {
    vmt_wire_have_set chunk;
    bitw w;
    vmt_haveset_emit_fn emit;
    void *ctx;
} enc_state;

static int flush(enc_state *e, bool last, uint64_t next_first)
{
    e->chunk.data = e->w.buf;
    e->chunk.len = (size_t)((e->w.bits + 7) / 8);
    e->chunk.last = last;
    int rc = e->emit(e->ctx, &e->chunk);
    memset(e->w.buf, 0, e->w.cap);
    e->w.bits = 0;
    e->chunk.count = 0;
    e->chunk.first = next_first;
    return rc;
}

static int encode_sorted(enc_state *e, const uint64_t *v, size_t m)
{
    uint64_t prev = 0, limit = (uint64_t)VMT_HAVESET_CHUNK_BYTES * 8;
    unsigned r = e->chunk.rice_bits;

    for (size_t i = 0; i < m; i++) {
        uint64_t gap = v[i] - prev, q = gap >> r, need = q + 1 + r;
        if (need > (uint64_t)(e->w.cap - VMT_HAVESET_CHUNK_BYTES) * 8)
            return vmt_error_set(VMT_ERANGE, "have-set: ids too unevenly spread to encode");
        if (e->chunk.count && e->w.bits + need > limit) {
            int rc = flush(e, false, prev);
            if (rc)
                return rc;
        }
        put_ones(&e->w, q);
        put_bits(&e->w, 0, 1);
        put_bits(&e->w, gap & mask_of(r), r);
        e->chunk.count++;
        prev = v[i];
    }
    return flush(e, true, prev);
}

int vmt_haveset_encode(const vmt_id *ids, size_t n, unsigned fp_bits, vmt_haveset_emit_fn emit,
                       void *ctx)
{
    enc_state e = {.emit = emit, .ctx = ctx};
    size_t m = 0;
    unsigned fp = fp_bits ? fp_bits : VMT_HAVESET_FP_BITS;

    if (fp < 8 || fp > 48 || (n && !ids) || !emit)
        return vmt_error_set(VMT_EINVAL, "have-set: fp_bits %u (8..48) or NULL argument", fp);
    unsigned k = VMT_MIN(64u, ceil_log2(n) + fp);
    uint64_t *v = n ? vmt_mallocn(n, sizeof(*v)) : NULL;
    if (n && !v)
        return VMT_ENOMEM;
    for (size_t i = 0; i < n; i++)
        v[i] = prefix_of(&ids[i], k);
    int rc = n ? sort_unique(v, n, k, &m) : 0;
    /* Slack past the chunk size: one element is written whole. */
    e.w.cap = (size_t)VMT_WIRE_HAVESET_MAX_BYTES;
    e.w.buf = rc ? NULL : calloc(1, e.w.cap);
    if (rc == 0 && !e.w.buf)
        rc = vmt_error_set(VMT_ENOMEM, "have-set: out of memory");
    if (rc == 0) {
        e.chunk.prefix_bits = k;
        e.chunk.rice_bits = m ? k - bitlen64(m) : 0; /* < k as bitlen(m) >= 1 */
        e.chunk.total = m;
        rc = encode_sorted(&e, v, m);
    }
    free(e.w.buf);
    free(v);
    return rc;
}

/* ---- decoding ------------------------------------------------------------ */

int vmt_haveset_new(vmt_haveset **out, uint64_t max_ids)
{
    *out = calloc(1, sizeof(**out));
    if (!*out)
        return vmt_error_set(VMT_ENOMEM, "have-set: out of memory");
    (*out)->max_ids = max_ids;
    return 0;
}

void vmt_haveset_free(vmt_haveset *h)
{
    if (!h)
        return;
    free(h->v);
    free(h);
}

typedef struct bitr {
    const uint8_t *p;
    uint64_t pos, end; /* bits */
} bitr;

/* Reads one unary quotient of at most max_q ones, a byte at a time. */
static int get_unary(bitr *b, uint64_t max_q, uint64_t *q)
{
    uint64_t n = 0;
    for (;;) {
        if (b->pos >= b->end)
            return vmt_error_set(VMT_ECORRUPT, "have-set: bit stream truncated");
        unsigned off = (unsigned)(b->pos & 7);
        unsigned avail = (unsigned)VMT_MIN((uint64_t)(8 - off), b->end - b->pos);
        uint8_t byte = (uint8_t)(b->p[b->pos >> 3] << off); /* unread bits on top */
        unsigned ones = byte == 0xff ? 8u : (unsigned)__builtin_clz((uint8_t)~byte) - 24u;
        if (ones >= avail) {
            n += avail;
            b->pos += avail;
        } else {
            n += ones;
            b->pos += ones + 1; /* and the terminating zero */
        }
        if (n > max_q)
            return vmt_error_set(VMT_ECORRUPT, "have-set: a gap passes the end of the range");
        if (ones < avail) {
            *q = n;
            return 0;
        }
    }
}

/* Reads n bits (n < 64), MSB first, a byte at a time. */
static int get_bits(bitr *b, unsigned n, uint64_t *v)
{
    if (b->end - b->pos < n)
        return vmt_error_set(VMT_ECORRUPT, "have-set: bit stream truncated");
    uint64_t x = 0;
    while (n) {
        unsigned off = (unsigned)(b->pos & 7), room = 8 - off;
        unsigned take = n < room ? n : room;
        unsigned byte = b->p[b->pos >> 3];
        x = (x << take) | ((byte >> (room - take)) & ((1u << take) - 1));
        b->pos += take;
        n -= take;
    }
    *v = x;
    return 0;
}

/* Decodes c's values into dst[0..count) after h's existing n values. */
static int decode_chunk(const vmt_haveset *h, const vmt_wire_have_set *c, uint64_t *dst)
{
    bitr b = {c->data, 0, (uint64_t)c->len * 8};
    uint64_t prev = c->first, mask = mask_of(c->prefix_bits);
    unsigned r = c->rice_bits;

    for (uint64_t i = 0; i < c->count; i++) {
        uint64_t q = 0, rem = 0;
        int rc = get_unary(&b, (mask - prev) >> r, &q);
        if (rc || (rc = get_bits(&b, r, &rem)) != 0)
            return rc;
        uint64_t gap = (q << r) | rem;
        if (gap > mask - prev)
            return vmt_error_set(VMT_ECORRUPT, "have-set: value %llu passes the range",
                                 (unsigned long long)i);
        if (gap == 0 && (h->n || i))
            return vmt_error_set(VMT_ECORRUPT, "have-set: values not strictly ascending");
        prev += gap;
        dst[i] = prev;
    }
    /* The stream must end within the last byte, padded with zeros. */
    if ((b.end - b.pos) >= 8 || (b.pos & 7 && (c->data[b.pos >> 3] & (0xffu >> (b.pos & 7)))))
        return vmt_error_set(VMT_ECORRUPT, "have-set: %llu stray bits after the values",
                             (unsigned long long)(b.end - b.pos));
    return 0;
}

/* Checks a chunk's header against the set so far. */
static int check_chunk(const vmt_haveset *h, const vmt_wire_have_set *c)
{
    if (h->complete)
        return vmt_error_set(VMT_EPROTO, "have-set: a chunk after the last one");
    if (c->prefix_bits == 0 || c->prefix_bits > 64 || c->rice_bits >= c->prefix_bits ||
        (c->len && !c->data))
        return vmt_error_set(VMT_ECORRUPT, "have-set: bad chunk parameters");
    if (!h->started && c->total > h->max_ids)
        return vmt_error_set(VMT_ERANGE, "have-set of %llu ids exceeds the limit of %llu",
                             (unsigned long long)c->total, (unsigned long long)h->max_ids);
    uint64_t last = h->n ? h->v[h->n - 1] : 0;
    if (h->started && (c->prefix_bits != h->k || c->rice_bits != h->r || c->total != h->total))
        return vmt_error_set(VMT_ECORRUPT, "have-set: chunk parameters changed");
    if (c->first != last)
        return vmt_error_set(VMT_ECORRUPT, "have-set: chunk starts at %llu, not %llu",
                             (unsigned long long)c->first, (unsigned long long)last);
    if (c->count > c->total - h->n || c->count > (uint64_t)c->len * 8 / (c->rice_bits + 1))
        return vmt_error_set(VMT_ECORRUPT, "have-set: chunk of %llu values does not fit",
                             (unsigned long long)c->count);
    if (c->last && h->n + c->count != c->total)
        return vmt_error_set(VMT_ECORRUPT, "have-set: last chunk leaves %llu of %llu values",
                             (unsigned long long)(h->n + c->count), (unsigned long long)c->total);
    return 0;
}

int vmt_haveset_add_chunk(vmt_haveset *h, const vmt_wire_have_set *c)
{
    int rc = check_chunk(h, c);
    if (rc)
        return rc;
    size_t need = h->n + (size_t)c->count;
    if (need > h->cap) {
        size_t cap = VMT_MAX(need, VMT_MIN(h->cap * 2, (size_t)c->total));
        uint64_t *v = vmt_reallocn(h->v, cap, sizeof(*v));
        if (!v)
            return VMT_ENOMEM;
        h->v = v;
        h->cap = cap;
    }
    if ((rc = decode_chunk(h, c, h->v + h->n)) != 0)
        return rc;
    h->n = need;
    h->k = c->prefix_bits;
    h->r = c->rice_bits;
    h->total = c->total;
    h->started = true;
    h->complete = c->last;
    return 0;
}

bool vmt_haveset_complete(const vmt_haveset *h)
{
    return h->complete;
}

uint64_t vmt_haveset_count(const vmt_haveset *h)
{
    return h->n;
}

bool vmt_haveset_contains(const vmt_haveset *h, const vmt_id *id)
{
    if (!h->started || h->n == 0)
        return false;
    uint64_t p = prefix_of(id, h->k);
    size_t lo = 0, hi = h->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (h->v[mid] < p)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < h->n && h->v[lo] == p;
}
