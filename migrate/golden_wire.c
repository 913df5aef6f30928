/*
 * Golden image transfer: the pieces both roles use — sending and receiving
 * golden messages on a session, checking a received object against its id,
 * listing a snapshot's chain, and a small id -> value hash map.
 */
#include <lz4.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden_internal.h"

void vmt_golden_opts_init(vmt_golden_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->max_ancestors = VMT_GOLDEN_ALL_ANCESTORS;
    o->commit_bytes = 64ull << 20;
    o->want_ids = 1024;
    o->window = 4;
    o->timeout_ms = 60000;
}

int golden_send(vmt_session *s, const vmt_golden_msg *m)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = vmt_golden_encode(m, &buf, &len);
    if (rc == 0)
        rc = vmt_session_send_frame(s, 0, m->type, buf, len);
    free(buf);
    return rc;
}

int golden_recv(vmt_session *s, vmt_frame *f, unsigned expect, vmt_golden_msg *m,
                uint32_t timeout_ms)
{
    memset(m, 0, sizeof(*m));
    int rc = vmt_session_recv(s, 0, f, timeout_ms);
    if (rc == VMT_ETIMEDOUT) {
        vmt_error_set(rc, "no message from the peer within %u ms", timeout_ms);
        return golden_fail(s, rc);
    }
    if (rc)
        return rc;
    bool golden = vmt_golden_max_len(f->type) != 0;
    if (!golden || (expect && f->type != expect)) {
        vmt_error_set(VMT_EPROTO, "expected %s, got %s",
                      expect ? vmt_wire_type_name(expect) : "a golden image message",
                      vmt_wire_type_name(f->type));
        return golden_fail(s, VMT_EPROTO);
    }
    rc = vmt_golden_decode(f->type, f->payload, f->len, m);
    return rc ? golden_fail(s, rc) : 0;
}

int golden_fail(vmt_session *s, int rc)
{
    char msg[VMT_WIRE_TEXT_MAX];
    if (vmt_session_error(s))
        return rc; /* already failed: the first error stands */
    snprintf(msg, sizeof(msg), "%s", vmt_error_last());
    vmt_session_abort(s, rc, msg);
    vmt_error_set(rc, "%s", msg);
    return rc;
}

int golden_chain(vmt_store *st, const vmt_id *id, uint32_t max_ancestors, vmt_id **ids, size_t *n)
{
    vmt_snap_record *r = malloc(sizeof(*r));
    uint64_t limit = VMT_MIN((uint64_t)max_ancestors + 1, (uint64_t)VMT_GOLDEN_MAX_SNAPS);
    vmt_id *v = vmt_mallocn((size_t)limit, sizeof(vmt_id));
    size_t k = 0;
    int rc = r && v ? 0 : vmt_error_set(VMT_ENOMEM, "golden: out of memory");

    vmt_id cur = *id;
    while (rc == 0 && k < limit) {
        rc = vmt_snap_record_read(st, &cur, r);
        if (rc == VMT_ENOENT && k > 0) { /* an ancestor deleted and collected */
            rc = 0;
            break;
        }
        if (rc)
            break;
        v[k++] = cur;
        if (r->nparents == 0)
            break;
        cur = r->parents[0];
    }
    free(r);
    if (rc) {
        free(v);
        return rc;
    }
    *ids = v;
    *n = k;
    return 0;
}

static int object_bad(const vmt_id *id, const char *what)
{
    char hex[VMT_ID_HEX_LEN + 1];
    vmt_id_to_hex(id, hex);
    return vmt_error_set(VMT_ECORRUPT, "object %s received: %s", hex, what);
}

int golden_object_open(const vmt_golden_object *o, const vmt_id *want, unsigned type, void *dst)
{
    vmt_id got;
    memcpy(got.b, o->id, sizeof(got.b));
    if (!vmt_id_equal(&got, want))
        return object_bad(want, "the provider sent another object in its place");
    if (o->type != type)
        return object_bad(want, "of the wrong type");
    if (o->codec == VMT_GOLDEN_CODEC_LZ4) {
        int n = LZ4_decompress_safe((const char *)o->data, dst, (int)o->len, (int)o->raw_len);
        if (n < 0 || (uint32_t)n != o->raw_len)
            return object_bad(want, "its LZ4 data does not decompress to its length");
    } else {
        memcpy(dst, o->data, o->raw_len);
    }
    vmt_id_of(dst, o->raw_len, &got);
    if (!vmt_id_equal(&got, want))
        return object_bad(want, "its content does not hash to its id (damaged in transit or "
                                "at the provider)");
    return 0;
}

/* ---- id map ---------------------------------------------------------------- */

void golden_idmap_init(golden_idmap *m)
{
    memset(m, 0, sizeof(*m));
}

void golden_idmap_free(golden_idmap *m)
{
    free(m->keys);
    free(m->vals);
    free(m->used);
    memset(m, 0, sizeof(*m));
}

/* Ids are hashes already: their first 8 bytes index the table. */
static size_t slot_of(const golden_idmap *m, const vmt_id *id)
{
    uint64_t h;
    memcpy(&h, id->b, sizeof(h));
    size_t i = (size_t)h & (m->cap - 1);
    while (m->used[i] && !vmt_id_equal(&m->keys[i], id))
        i = (i + 1) & (m->cap - 1);
    return i;
}

static int grow(golden_idmap *m)
{
    golden_idmap g;
    g.cap = m->cap ? m->cap * 2 : 1024;
    g.n = 0;
    g.keys = vmt_mallocn(g.cap, sizeof(vmt_id));
    g.vals = vmt_mallocn(g.cap, sizeof(uint64_t));
    g.used = calloc(g.cap, 1);
    if (!g.keys || !g.vals || !g.used) {
        golden_idmap_free(&g);
        return vmt_error_set(VMT_ENOMEM, "golden: out of memory (id map of %zu)", g.cap);
    }
    for (size_t i = 0; i < m->cap; i++)
        if (m->used[i])
            golden_idmap_put(&g, &m->keys[i], m->vals[i], NULL);
    golden_idmap_free(m);
    *m = g;
    return 0;
}

int golden_idmap_put(golden_idmap *m, const vmt_id *id, uint64_t val, bool *added)
{
    if ((m->n + 1) * 2 > m->cap) {
        int rc = grow(m);
        if (rc)
            return rc;
    }
    size_t i = slot_of(m, id);
    if (added)
        *added = !m->used[i];
    if (m->used[i])
        return 0;
    m->used[i] = 1;
    m->keys[i] = *id;
    m->vals[i] = val;
    m->n++;
    return 0;
}

bool golden_idmap_get(const golden_idmap *m, const vmt_id *id, uint64_t *val)
{
    if (m->cap == 0)
        return false;
    size_t i = slot_of(m, id);
    if (!m->used[i])
        return false;
    *val = m->vals[i];
    return true;
}
