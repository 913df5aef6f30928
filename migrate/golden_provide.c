/*
 * Golden image transfer, the provider: answers the receiver's Wants from its
 * store until the receiver says Done.  The provider keeps no state between
 * Wants: the receiver drives the walk and decides what it lacks, so a
 * provider serves a pull and a push the same way.
 *
 * Each Want is answered in order with Objects messages of at most
 * PROVIDE_BATCH_BYTES of content each, every object LZ4-compressed when that
 * pays; the last message of an answer says last.  An object the store does
 * not hold (or cannot read) ends the session with the reason.
 */
#include <lz4.h>
#include <stdlib.h>
#include <string.h>

#include "golden_internal.h"

/* Content read from the store and sent per Objects message. */
#define PROVIDE_BATCH_BYTES (2u << 20)

typedef struct provider {
    vmt_session *s;
    vmt_store *st;
    vmt_golden_stats *stats;
    vmt_store_get_item items[VMT_GOLDEN_WANT_MAX];
    vmt_golden_object objs[VMT_GOLDEN_WANT_MAX];
    uint8_t *raw, *z;
    size_t raw_cap, z_cap;
} provider;

static int reserve(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    uint8_t *p = realloc(*buf, need);
    if (!p)
        return vmt_error_set(VMT_ENOMEM, "golden: out of memory (%zu bytes)", need);
    *buf = p;
    *cap = need;
    return 0;
}

/* Sizes and types of want ids [from, n): fills items[] until the batch
 * holds PROVIDE_BATCH_BYTES (at least one object); returns how many. */
static int plan_batch(provider *p, const uint8_t (*ids)[VMT_GOLDEN_ID_LEN], size_t from, size_t n,
                      size_t *count, size_t *bytes)
{
    size_t k = 0, total = 0;
    for (size_t i = from; i < n; i++, k++) {
        vmt_store_objinfo info;
        vmt_id id;
        memcpy(id.b, ids[i], sizeof(id.b));
        int rc = vmt_store_stat(p->st, &id, &info);
        if (rc) {
            char hex[VMT_ID_HEX_LEN + 1];
            vmt_id_to_hex(&id, hex);
            return vmt_error_set(rc == VMT_ENOENT ? VMT_ENOENT : rc,
                                 "object %s is not in this store", hex);
        }
        if (k > 0 && total + info.raw_len > PROVIDE_BATCH_BYTES)
            break;
        p->items[k] = (vmt_store_get_item){.id = id, .cap = info.raw_len};
        total += info.raw_len;
    }
    *count = k;
    *bytes = total;
    return 0;
}

/* Reads the planned objects and fills objs[] (compressed where it pays). */
static int load_batch(provider *p, size_t count, size_t bytes)
{
    /* The sum of each object's LZ4 bound. */
    size_t zneed = bytes + bytes / 255 + 16 * count + 64;
    int rc = reserve(&p->raw, &p->raw_cap, bytes);
    if (rc == 0)
        rc = reserve(&p->z, &p->z_cap, zneed);
    if (rc)
        return rc;
    size_t off = 0;
    for (size_t i = 0; i < count; i++) {
        p->items[i].buf = p->raw + off;
        off += p->items[i].cap;
    }
    if ((rc = vmt_store_get_many(p->st, p->items, count)) != 0)
        return vmt_error_wrap(rc, "golden: reading objects to send");
    size_t zoff = 0;
    for (size_t i = 0; i < count; i++) {
        vmt_store_get_item *it = &p->items[i];
        vmt_golden_object *o = &p->objs[i];
        memcpy(o->id, it->id.b, sizeof(o->id));
        o->type = it->type;
        o->raw_len = (uint32_t)it->len;
        int z = LZ4_compress_default(it->buf, (char *)p->z + zoff, (int)it->len,
                                     (int)(p->z_cap - zoff));
        if (z > 0 && (size_t)z < it->len) {
            o->codec = VMT_GOLDEN_CODEC_LZ4;
            o->data = p->z + zoff;
            o->len = (size_t)z;
            zoff += (size_t)z;
        } else {
            o->codec = VMT_GOLDEN_CODEC_RAW;
            o->data = it->buf;
            o->len = it->len;
        }
        p->stats->payload_bytes += o->len;
        p->stats->object_bytes += o->raw_len;
    }
    p->stats->objects += count;
    return 0;
}

static int answer_want(provider *p, const vmt_golden_msg *w)
{
    size_t n = w->u.want.n;
    p->stats->wants++;
    for (size_t i = 0; i < n;) {
        size_t count = 0, bytes = 0;
        int rc = plan_batch(p, (const void *)w->u.want.ids, i, n, &count, &bytes);
        if (rc == 0)
            rc = load_batch(p, count, bytes);
        if (rc)
            return golden_fail(p->s, rc);
        i += count;
        vmt_golden_msg m = {.type = VMT_GOLDEN_OBJECTS};
        m.u.objects.seq = w->u.want.seq;
        m.u.objects.objs = p->objs;
        m.u.objects.n = count;
        m.u.objects.last = i == n;
        if ((rc = golden_send(p->s, &m)) != 0)
            return rc;
    }
    return 0;
}

static int on_done(const vmt_golden_msg *m)
{
    if (m->u.done.code == 0)
        return 0;
    return vmt_error_set(m->u.done.code, "peer: %s", m->u.done.message);
}

int golden_provide(vmt_session *s, vmt_store *st, const vmt_golden_opts *o,
                   vmt_golden_stats *stats)
{
    provider *p = calloc(1, sizeof(*p));
    vmt_frame f;
    int rc = p ? 0 : vmt_error_set(VMT_ENOMEM, "golden: out of memory");

    vmt_frame_init(&f);
    if (p) {
        p->s = s;
        p->st = st;
        p->stats = stats;
    }
    for (bool done = false; rc == 0 && !done;) {
        vmt_golden_msg m;
        rc = golden_recv(s, &f, 0, &m, o->timeout_ms);
        if (rc)
            break;
        if (m.type == VMT_GOLDEN_WANT) {
            rc = answer_want(p, &m);
        } else if (m.type == VMT_GOLDEN_DONE) {
            rc = on_done(&m);
            done = true;
        } else {
            vmt_error_set(VMT_EPROTO, "expected GOLDEN_WANT or GOLDEN_DONE, got %s",
                          vmt_wire_type_name(m.type));
            rc = golden_fail(s, VMT_EPROTO);
        }
        vmt_golden_msg_clear(&m);
    }
    vmt_frame_free(&f);
    if (p) {
        free(p->raw);
        free(p->z);
        free(p);
    }
    return rc;
}
