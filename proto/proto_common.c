/*
 * The bounded protobuf-c allocator and small helpers shared by the encoder,
 * the decoders and describe.
 *
 * protobuf-c sizes its allocations from the input (counts of repeated fields,
 * lengths of bytes), and a tiny wire element can become a large struct (an
 * empty Msr message is 2 bytes on the wire and ~40 in memory).  Capping the
 * blob size alone therefore does not bound memory; this budget does.
 */
#include "proto_internal.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* Each block starts with its size, padded so the payload stays aligned for
 * any type. */
typedef union budget_hdr {
    size_t size;
    max_align_t align;
} budget_hdr;

static void *budget_alloc(void *data, size_t size)
{
    vmt_pb_budget *b = data;
    size_t total;

    if (vmt_add_overflow(size, sizeof(budget_hdr), &total) || total > b->limit - b->used) {
        b->over = true;
        return NULL;
    }
    budget_hdr *h = malloc(total);
    if (!h) {
        b->oom = true;
        return NULL;
    }
    h->size = total;
    b->used += total;
    return h + 1;
}

static void budget_free(void *data, void *p)
{
    vmt_pb_budget *b = data;

    if (!p)
        return;
    budget_hdr *h = (budget_hdr *)p - 1;
    b->used -= h->size;
    free(h);
}

void vmt_proto_budget_init(vmt_pb_budget *b, size_t limit)
{
    memset(b, 0, sizeof(*b));
    b->pb.alloc = budget_alloc;
    b->pb.free = budget_free;
    b->pb.allocator_data = b;
    b->limit = limit;
}

int vmt_proto_unpack_error(const vmt_pb_budget *b, const char *what)
{
    if (b->oom)
        return vmt_error_set(VMT_ENOMEM, "state blob: out of memory decoding %s", what);
    if (b->over)
        return vmt_error_set(VMT_ECORRUPT,
                             "state blob: %s needs more than %zu bytes of memory to decode", what,
                             b->limit);
    return vmt_error_set(VMT_ECORRUPT,
                         "state blob: %s is not valid protobuf (truncated or damaged)", what);
}

int vmt_proto_too_wide(const char *where, const char *field, uint64_t v, uint64_t max)
{
    return vmt_error_set(VMT_ECORRUPT, "state blob: %s.%s = %llu exceeds %llu", where, field,
                         (unsigned long long)v, (unsigned long long)max);
}

int vmt_proto_missing(const char *where, const char *field)
{
    return vmt_error_set(VMT_ECORRUPT, "state blob: %s.%s is missing", where, field);
}

int vmt_proto_bad_count(const char *where, const char *field, size_t n, size_t want)
{
    return vmt_error_set(VMT_ECORRUPT, "state blob: %s.%s has %zu entries, expected %zu", where,
                         field, n, want);
}

void vmt_proto_printable(char *dst, size_t cap, const char *s, size_t len)
{
    size_t n = 0;

    if (cap == 0)
        return;
    for (size_t i = 0; i < len && n + 1 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[n++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (n < len && cap >= 4) {
        n = VMT_MIN(n, cap - 4);
        memcpy(dst + n, "...", 3);
        n += 3;
    }
    dst[n] = '\0';
}
