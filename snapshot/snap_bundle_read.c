/*
 * The bundle decoder (docs/bundle-format.md), reading from any bundle_src:
 * a file for import, a buffer for vmt_snap_bundle_check and the fuzzer.
 *
 * Nothing read is trusted before it is checked: every length is capped
 * (objects at VMT_STORE_OBJECT_MAX, and never beyond what the input still
 * holds) before a buffer is sized for it; the checksum of a record is
 * verified before its payload is decompressed; the decompressed content is
 * rehashed against its id before anyone sees it; the trailer's checksum
 * covers every byte of the file.
 */
#include <lz4.h>
#include <stdlib.h>
#include <string.h>

#include "bundle_internal.h"

typedef struct scan {
    const bundle_src *src;
    const bundle_scan_opts *o;
    XXH3_state_t *sum; /* over every byte read so far */
    uint64_t offset;
    uint8_t *payload, *raw;
    size_t payload_cap, raw_cap;
    uint64_t objects, snapshots;
    vmt_id last;
    bool have_last;
} scan;

static int rd(scan *s, void *buf, size_t n)
{
    int rc = s->src->read(s->src->ctx, buf, n);
    if (rc == VMT_ECORRUPT)
        return vmt_error_set(rc, "bundle: truncated at byte %llu", (unsigned long long)s->offset);
    if (rc)
        return rc;
    XXH3_64bits_update(s->sum, buf, n);
    s->offset += n;
    return 0;
}

static int corrupt(const scan *s, const char *what)
{
    return vmt_error_set(VMT_ECORRUPT, "bundle: %s (at byte %llu)", what,
                         (unsigned long long)s->offset);
}

/* Grows *buf to at least n bytes (n is capped by the caller). */
static int reserve(uint8_t **buf, size_t *cap, size_t n)
{
    if (n <= *cap)
        return 0;
    uint8_t *p = realloc(*buf, n);
    if (!p)
        return vmt_error_set(VMT_ENOMEM, "bundle: out of memory for %zu bytes", n);
    *buf = p;
    *cap = n;
    return 0;
}

static int read_header(scan *s, vmt_snap_bundle_info *info)
{
    uint8_t h[BUNDLE_HDR];
    int rc = rd(s, h, sizeof(h));
    if (rc)
        return rc;
    if (memcmp(h, BUNDLE_MAGIC, 8) != 0)
        return corrupt(s, "not a vmtree bundle (bad magic)");
    info->major = bundle_get16(h + 8);
    info->minor = bundle_get16(h + 10);
    /* The first 16 bytes never change, so a newer major is recognised as such. */
    if (info->major > BUNDLE_MAJOR)
        return vmt_error_set(VMT_EUNSUPPORTED,
                             "bundle format %u.%u is newer than this reader (%u.%u); a newer "
                             "vmtree is needed",
                             info->major, info->minor, BUNDLE_MAJOR, BUNDLE_MINOR);
    if (info->major == 0)
        return corrupt(s, "format version 0");
    if (bundle_get32(h + 12) != BUNDLE_HDR)
        return corrupt(s, "header size is not 32");
    if ((uint32_t)XXH3_64bits(h, 28) != bundle_get32(h + 28))
        return corrupt(s, "header checksum mismatch");
    if (bundle_get64(h + 16) != 0)
        return vmt_error_set(VMT_EUNSUPPORTED,
                             "bundle requires features 0x%llx unknown to this reader",
                             (unsigned long long)bundle_get64(h + 16));
    if (bundle_get32(h + 24) != 0)
        return corrupt(s, "reserved header bytes are not zero");
    return 0;
}

/* Checks one object record header; *kind, *raw_len, *stored_len out. */
static int check_obj_hdr(scan *s, const uint8_t *h, uint32_t *raw_len, uint32_t *stored_len)
{
    unsigned kind = h[0], codec = h[1];
    *raw_len = bundle_get32(h + 4);
    *stored_len = bundle_get32(h + 8);
    bool optional = kind >= BUNDLE_KIND_OPTIONAL && kind < BUNDLE_KIND_TRAILER;
    if (!optional && (kind < VMT_OBJ_PAGE || kind > VMT_OBJ_TYPE_MAX))
        return corrupt(s, "unknown record kind");
    if (codec != BUNDLE_CODEC_RAW && codec != BUNDLE_CODEC_LZ4)
        return corrupt(s, "unknown codec");
    if (bundle_get16(h + 2) != 0 || bundle_get32(h + 12) != 0)
        return corrupt(s, "reserved record bytes are not zero");
    if (*raw_len == 0 || *raw_len > VMT_STORE_OBJECT_MAX)
        return corrupt(s, "object length out of range");
    if (*stored_len == 0 || *stored_len > *raw_len ||
        (codec == BUNDLE_CODEC_RAW && *stored_len != *raw_len))
        return corrupt(s, "stored length out of range");
    if (s->src->remaining(s->src->ctx) < *stored_len)
        return vmt_error_set(VMT_ECORRUPT, "bundle: truncated in a record at byte %llu",
                             (unsigned long long)s->offset);
    return 0;
}

/* Decompresses (if needed) and rehashes the payload; *data/len out. */
static int unpack(scan *s, const uint8_t *h, uint32_t raw_len, uint32_t stored_len,
                  const uint8_t **data)
{
    vmt_id want, got;
    memcpy(want.b, h + 16, 16);
    *data = s->payload;
    if (h[1] == BUNDLE_CODEC_LZ4) {
        int rc = reserve(&s->raw, &s->raw_cap, raw_len);
        if (rc)
            return rc;
        int n = LZ4_decompress_safe((const char *)s->payload, (char *)s->raw, (int)stored_len,
                                    (int)raw_len);
        if (n != (int)raw_len)
            return corrupt(s, "object does not decompress to its length");
        *data = s->raw;
    }
    if (h[0] >= BUNDLE_KIND_OPTIONAL)
        return 0; /* optional records carry no object id */
    vmt_id_of(*data, raw_len, &got);
    if (!vmt_id_equal(&want, &got))
        return corrupt(s, "object content does not hash to its id");
    if (vmt_id_is_zero_page(&got))
        return corrupt(s, "the zero page is never stored in a bundle");
    return 0;
}

static int visit(scan *s, const uint8_t *h, const uint8_t *data, uint32_t len)
{
    vmt_id id;
    memcpy(id.b, h + 16, 16);
    if (h[0] >= BUNDLE_KIND_OPTIONAL)
        return 0;
    s->objects++;
    if (h[0] == VMT_OBJ_SNAPSHOT) {
        vmt_snap_record r;
        int rc = vmt_snap_record_decode(data, len, &r);
        if (rc)
            return vmt_error_wrap(rc, "bundle: snapshot record at byte %llu",
                                  (unsigned long long)s->offset);
        if (++s->snapshots > BUNDLE_MAX_SNAPSHOTS)
            return corrupt(s, "too many snapshots");
        s->last = id;
        s->have_last = true;
    }
    if (!s->o->visit)
        return 0;
    return s->o->visit(s->o->visit_ctx, (vmt_obj_type)h[0], &id, data, len);
}

static int read_object(scan *s, const uint8_t *h)
{
    uint32_t raw_len, stored_len;
    const uint8_t *data;
    int rc = check_obj_hdr(s, h, &raw_len, &stored_len);
    if (rc == 0)
        rc = reserve(&s->payload, &s->payload_cap, stored_len);
    if (rc == 0)
        rc = rd(s, s->payload, stored_len);
    if (rc)
        return rc;
    if (bundle_obj_sum(h, s->payload, stored_len) != bundle_get64(h + 32))
        return corrupt(s, "record checksum mismatch");
    if ((rc = unpack(s, h, raw_len, stored_len, &data)) != 0)
        return rc;
    return visit(s, h, data, raw_len);
}

static int read_trailer(scan *s, const uint8_t *first, vmt_snap_bundle_info *info)
{
    uint8_t t[BUNDLE_TRAILER];
    memcpy(t, first, BUNDLE_OBJ_HDR);
    int rc = rd(s, t + BUNDLE_OBJ_HDR, 48 - BUNDLE_OBJ_HDR);
    if (rc)
        return rc;
    uint64_t sum = XXH3_64bits_digest(s->sum); /* every byte before the sum field */
    if ((rc = rd(s, t + 48, 16)) != 0)
        return rc;
    if (bundle_get64(t + 48) != sum)
        return corrupt(s, "file checksum mismatch");
    if (memcmp(t + 56, BUNDLE_END_MAGIC, 8) != 0 || t[1] || t[2] || t[3] || bundle_get32(t + 4) ||
        bundle_get64(t + 40))
        return corrupt(s, "malformed trailer");
    if (s->src->remaining(s->src->ctx) != 0)
        return corrupt(s, "bytes after the trailer");
    if (bundle_get64(t + 8) != s->objects || bundle_get64(t + 16) != s->snapshots)
        return corrupt(s, "trailer counts do not match the records");
    memcpy(info->last.b, t + 24, 16);
    if (!s->have_last || !vmt_id_equal(&info->last, &s->last))
        return corrupt(s, "the last snapshot is not the one the trailer names");
    info->objects = s->objects;
    info->snapshots = s->snapshots;
    info->bytes = s->offset;
    return 0;
}

static int scan_records(scan *s, vmt_snap_bundle_info *info)
{
    uint8_t h[BUNDLE_OBJ_HDR];
    for (;;) {
        int rc = rd(s, h, BUNDLE_OBJ_HDR);
        if (rc)
            return rc;
        if (h[0] == BUNDLE_KIND_TRAILER)
            return read_trailer(s, h, info);
        if ((rc = read_object(s, h)) != 0)
            return rc;
        if (s->o->progress)
            s->o->progress(s->o->progress_ctx, s->offset);
    }
}

int bundle_scan(const bundle_src *src, const bundle_scan_opts *o, vmt_snap_bundle_info *info)
{
    scan s = {.src = src, .o = o};
    vmt_snap_bundle_info tmp;

    if (!info)
        info = &tmp;
    memset(info, 0, sizeof(*info));
    s.sum = XXH3_createState();
    if (!s.sum)
        return vmt_error_set(VMT_ENOMEM, "bundle: out of memory");
    XXH3_64bits_reset(s.sum);
    int rc = read_header(&s, info);
    if (rc == 0)
        rc = scan_records(&s, info);
    XXH3_freeState(s.sum);
    free(s.payload);
    free(s.raw);
    return rc;
}

/* ---- from memory ---------------------------------------------------------- */

typedef struct mem_src {
    const uint8_t *p;
    size_t len, pos;
} mem_src;

static int mem_read(void *ctx, void *buf, size_t n)
{
    mem_src *m = ctx;
    if (n > m->len - m->pos)
        return VMT_ECORRUPT;
    memcpy(buf, m->p + m->pos, n);
    m->pos += n;
    return 0;
}

static uint64_t mem_remaining(void *ctx)
{
    const mem_src *m = ctx;
    return m->len - m->pos;
}

int vmt_snap_bundle_check(const void *buf, size_t len, vmt_snap_bundle_info *info)
{
    mem_src m = {.p = buf, .len = len};
    bundle_src src = {.read = mem_read, .remaining = mem_remaining, .ctx = &m};
    bundle_scan_opts o = {.visit = NULL};

    if (!buf && len)
        return vmt_error_set(VMT_EINVAL, "vmt_snap_bundle_check: NULL buffer");
    return bundle_scan(&src, &o, info);
}
