/* Record, marker and pack-header layouts (see record.h, docs/store.md). */
#include <string.h>

#include "record.h"

#include <lz4.h>
#include <stdio.h>
#include <zstd.h>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>
#if defined(__x86_64__)
#include <xxh_x86dispatch.h> /* XXH3 with AVX2/AVX-512 chosen at run time */
#endif

/* ---- ids ---- */

void vmt_id_of(const void *data, size_t len, vmt_id *out)
{
    XXH128_hash_t h = XXH3_128bits(data, len);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    memcpy(out->b, c.digest, sizeof(out->b));
}

/* xxh128sum of 4096 zero bytes; test_record checks it against vmt_id_of. */
static const vmt_id zero_page_id = {{0x3e, 0xe8, 0xdc, 0x4f, 0x9e, 0x7e, 0xe4, 0x95, 0x93, 0xd7,
                                     0x6f, 0xe1, 0x48, 0xc6, 0x89, 0xba}};

vmt_id vmt_id_zero_page(void)
{
    return zero_page_id;
}

bool vmt_id_is_zero_page(const vmt_id *id)
{
    return memcmp(id->b, zero_page_id.b, sizeof(id->b)) == 0;
}

bool vmt_id_equal(const vmt_id *a, const vmt_id *b)
{
    return memcmp(a->b, b->b, sizeof(a->b)) == 0;
}

void vmt_id_to_hex(const vmt_id *id, char out[VMT_ID_HEX_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof(id->b); i++) {
        out[2 * i] = digits[id->b[i] >> 4];
        out[2 * i + 1] = digits[id->b[i] & 15];
    }
    out[VMT_ID_HEX_LEN] = '\0';
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int vmt_id_from_hex(const char *s, vmt_id *out)
{
    vmt_id id;
    for (size_t i = 0; i < sizeof(id.b); i++) {
        int hi = s ? hex_val(s[2 * i]) : -1;
        int lo = hi >= 0 ? hex_val(s[2 * i + 1]) : -1;
        if (hi < 0 || lo < 0)
            return vmt_error_set(VMT_EINVAL, "'%s' is not a 32-digit hex object id", s ? s : "");
    }
    if (s[VMT_ID_HEX_LEN] != '\0')
        return vmt_error_set(VMT_EINVAL, "'%s' is not a 32-digit hex object id", s);
    for (size_t i = 0; i < sizeof(id.b); i++)
        id.b[i] = (uint8_t)(hex_val(s[2 * i]) << 4 | hex_val(s[2 * i + 1]));
    *out = id;
    return 0;
}

/* ---- codecs by name ---- */

static const char *const codec_names[VMT_CODEC_COUNT] = {"raw", "lz4", "zstd", "zstd-dict"};

const char *vmt_codec_name(int codec)
{
    if (codec < 0 || codec >= VMT_CODEC_COUNT)
        return "?";
    return codec_names[codec];
}

int vmt_codec_parse(const char *name, vmt_codec *out)
{
    for (int i = 0; i < VMT_CODEC_COUNT; i++) {
        if (name && strcmp(name, codec_names[i]) == 0) {
            *out = (vmt_codec)i;
            return 0;
        }
    }
    return vmt_error_set(VMT_EINVAL, "unknown codec '%s' (raw|lz4|zstd|zstd-dict)",
                         name ? name : "");
}

/* ---- records ---- */

uint32_t dd_sum32(const void *p, size_t n)
{
    return (uint32_t)XXH3_64bits(p, n);
}

size_t dd_stored_bound(size_t raw_len)
{
    size_t a = (size_t)LZ4_compressBound((int)raw_len);
    size_t b = ZSTD_compressBound(raw_len);
    return VMT_MAX(VMT_MAX(a, b), raw_len);
}

void dd_rec_encode(uint8_t out[DD_REC_HDR], const dd_rec_hdr *h)
{
    dd_put32(out, DD_REC_MAGIC);
    out[4] = h->type;
    out[5] = h->codec;
    dd_put16(out + 6, h->dict);
    memcpy(out + 8, h->id.b, 16);
    dd_put32(out + 24, h->raw_len);
    dd_put32(out + 28, h->stored_len);
    dd_put32(out + 32, h->payload_sum);
    dd_put32(out + 36, dd_sum32(out, 36));
}

static int check_fields(const dd_rec_hdr *h)
{
    bool obj = h->type >= VMT_OBJ_PAGE && h->type <= VMT_OBJ_TYPE_MAX;
    if (!obj && h->type != DD_REC_COMMIT)
        return vmt_error_set(VMT_ECORRUPT, "record has unknown type %u", h->type);
    if (h->codec >= VMT_CODEC_COUNT)
        return vmt_error_set(VMT_ECORRUPT, "record has unknown codec %u", h->codec);
    if ((h->codec == VMT_CODEC_ZSTD_DICT) != (h->dict != 0))
        return vmt_error_set(VMT_ECORRUPT, "record's dictionary version %u does not fit codec %s",
                             h->dict, vmt_codec_name(h->codec));
    if (h->raw_len == 0 || h->raw_len > VMT_STORE_OBJECT_MAX)
        return vmt_error_set(VMT_ECORRUPT, "record length %u outside [1, %u]", h->raw_len,
                             VMT_STORE_OBJECT_MAX);
    if (h->stored_len == 0 || h->stored_len > dd_stored_bound(h->raw_len))
        return vmt_error_set(VMT_ECORRUPT, "record stored length %u impossible for %u bytes",
                             h->stored_len, h->raw_len);
    if (h->codec == VMT_CODEC_RAW && h->stored_len != h->raw_len)
        return vmt_error_set(VMT_ECORRUPT, "raw record with stored length %u != %u", h->stored_len,
                             h->raw_len);
    if (h->type == DD_REC_COMMIT && (h->codec != VMT_CODEC_RAW || h->raw_len != DD_MARKER_LEN))
        return vmt_error_set(VMT_ECORRUPT, "malformed commit marker");
    return 0;
}

int dd_rec_decode(const uint8_t *p, size_t avail, dd_rec_hdr *h)
{
    if (avail < DD_REC_HDR)
        return vmt_error_set(VMT_ECORRUPT, "truncated record header (%zu of %u bytes)", avail,
                             DD_REC_HDR);
    if (dd_get32(p) != DD_REC_MAGIC)
        return vmt_error_set(VMT_ECORRUPT, "bad record magic 0x%08x", dd_get32(p));
    if (dd_get32(p + 36) != dd_sum32(p, 36))
        return vmt_error_set(VMT_ECORRUPT, "record header checksum mismatch");
    h->type = p[4];
    h->codec = p[5];
    h->dict = dd_get16(p + 6);
    memcpy(h->id.b, p + 8, 16);
    h->raw_len = dd_get32(p + 24);
    h->stored_len = dd_get32(p + 28);
    h->payload_sum = dd_get32(p + 32);
    return check_fields(h);
}

/* ---- commit markers ---- */

void dd_marker_encode(uint8_t out[DD_REC_HDR + DD_MARKER_LEN], const dd_marker *m)
{
    uint8_t *pl = out + DD_REC_HDR;
    const uint64_t v[8] = {m->gen,          m->c.put_objects, m->c.put_bytes, m->c.zero_pages,
                           m->c.dedup_hits, m->c.new_objects, m->c.new_bytes, 0};
    for (size_t i = 0; i < 8; i++)
        dd_put64(pl + 8 * i, v[i]);
    dd_rec_hdr h = {.type = DD_REC_COMMIT,
                    .codec = VMT_CODEC_RAW,
                    .raw_len = DD_MARKER_LEN,
                    .stored_len = DD_MARKER_LEN};
    dd_put64(h.id.b, m->gen);
    h.payload_sum = dd_sum32(pl, DD_MARKER_LEN);
    dd_rec_encode(out, &h);
}

int dd_marker_decode(const dd_rec_hdr *h, const uint8_t *payload, dd_marker *m)
{
    if (h->type != DD_REC_COMMIT || h->raw_len != DD_MARKER_LEN)
        return vmt_error_set(VMT_ECORRUPT, "not a commit marker");
    m->gen = dd_get64(payload);
    m->c.put_objects = dd_get64(payload + 8);
    m->c.put_bytes = dd_get64(payload + 16);
    m->c.zero_pages = dd_get64(payload + 24);
    m->c.dedup_hits = dd_get64(payload + 32);
    m->c.new_objects = dd_get64(payload + 40);
    m->c.new_bytes = dd_get64(payload + 48);
    if (dd_get64(h->id.b) != m->gen)
        return vmt_error_set(VMT_ECORRUPT, "commit marker generation mismatch");
    return 0;
}

/* ---- pack headers ---- */

void dd_pack_hdr_encode(uint8_t out[DD_PACK_HDR], uint32_t num, const uint8_t uuid[16])
{
    memcpy(out, DD_PACK_MAGIC, 8);
    dd_put32(out + 8, DD_PACK_VERSION);
    dd_put32(out + 12, num);
    memcpy(out + 16, uuid, 16);
    dd_put32(out + 32, 0);
    dd_put32(out + 36, dd_sum32(out, 36));
}

int dd_pack_hdr_check(const uint8_t *p, size_t avail, uint32_t num, const uint8_t uuid[16])
{
    if (avail < DD_PACK_HDR)
        return vmt_error_set(VMT_ECORRUPT, "pack shorter than its %u-byte header", DD_PACK_HDR);
    if (memcmp(p, DD_PACK_MAGIC, 8) != 0)
        return vmt_error_set(VMT_ECORRUPT, "not a pack file (bad magic)");
    if (dd_get32(p + 36) != dd_sum32(p, 36))
        return vmt_error_set(VMT_ECORRUPT, "pack header checksum mismatch");
    if (dd_get32(p + 8) != DD_PACK_VERSION)
        return vmt_error_set(VMT_EUNSUPPORTED, "pack format version %u unsupported",
                             dd_get32(p + 8));
    if (dd_get32(p + 12) != num)
        return vmt_error_set(VMT_ECORRUPT, "pack header says number %u, file name %u",
                             dd_get32(p + 12), num);
    if (memcmp(p + 16, uuid, 16) != 0)
        return vmt_error_set(VMT_ECORRUPT, "pack belongs to another store (uuid mismatch)");
    return 0;
}

/* ---- pages ---- */

bool dd_is_zero_page(const void *p)
{
    /* Loads through memcpy: callers may pass unaligned pages (bundles,
     * network buffers); the compiler turns them into plain 8-byte loads. */
    const unsigned char *b = p;
    uint64_t first, last;
    memcpy(&first, b, 8);
    memcpy(&last, b + 4088, 8);
    if (first | last)
        return false;
    /* One cache line per step: the OR of 8 words vectorizes; exit early. */
    for (size_t i = 0; i < 4096; i += 64) {
        uint64_t w[8];
        memcpy(w, b + i, sizeof(w));
        if (w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7])
            return false;
    }
    return true;
}
