/*
 * Golden image transfer, the three entry points: pull and push (client
 * side) and serve (one request on an accepted session).
 *
 *   pull:  C: Request{pull, name}  ->  S: Snaps{chain}
 *          C (receiver) Wants / S (provider) Objects ...  C: Done
 *   push:  C: Request{push, tag}, Snaps{chain}
 *          S (receiver) Wants / C (provider) Objects ...  S: Done
 *
 * Either side may end the session with an ERROR frame saying why; the
 * receiver then has committed whatever arrived whole (docs/golden.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden_internal.h"

void golden_finish_stats(vmt_session *s, vmt_golden_stats *st, uint64_t t0)
{
    vmt_session_stats ss;
    vmt_session_get_stats(s, &ss);
    st->wire_sent = ss.bytes_sent;
    st->wire_received = ss.bytes_received;
    st->ns = vmt_now_ns() - t0;
}

static int send_snaps(vmt_session *s, const vmt_id *ids, size_t n)
{
    vmt_golden_msg m = {.type = VMT_GOLDEN_SNAPS};
    m.u.snaps.ids = (void *)(uintptr_t)ids; /* vmt_id is 16 plain bytes */
    m.u.snaps.n = n;
    return golden_send(s, &m);
}

/* Receives the Snaps message: the chain, newest first (*ids the caller's). */
int golden_recv_snaps(vmt_session *s, uint32_t timeout_ms, vmt_id **ids, size_t *n)
{
    vmt_frame f;
    vmt_golden_msg m;
    vmt_frame_init(&f);
    int rc = golden_recv(s, &f, VMT_GOLDEN_SNAPS, &m, timeout_ms);
    if (rc == 0) {
        *ids = vmt_mallocn(m.u.snaps.n, sizeof(vmt_id));
        if (*ids) {
            memcpy(*ids, m.u.snaps.ids, m.u.snaps.n * sizeof(vmt_id));
            *n = m.u.snaps.n;
        } else {
            rc = golden_fail(s, vmt_error_set(VMT_ENOMEM, "golden: out of memory"));
        }
    }
    vmt_golden_msg_clear(&m);
    vmt_frame_free(&f);
    return rc;
}

int golden_send_done(vmt_session *s, const vmt_id *snap, const vmt_golden_stats *st)
{
    vmt_golden_msg m = {.type = VMT_GOLDEN_DONE};
    m.u.done.has_snapshot = true;
    memcpy(m.u.done.snapshot, snap->b, sizeof(snap->b));
    m.u.done.objects = st->objects;
    m.u.done.bytes = st->object_bytes;
    return golden_send(s, &m);
}

int golden_send_request(vmt_session *s, unsigned op, const char *name, uint32_t max_anc)
{
    vmt_golden_msg m = {.type = VMT_GOLDEN_REQUEST};
    if (strlen(name) >= sizeof(m.u.request.name))
        return vmt_error_set(VMT_EINVAL, "golden: name \"%.32s...\" is too long", name);
    m.u.request.op = op;
    m.u.request.max_ancestors = max_anc;
    snprintf(m.u.request.name, sizeof(m.u.request.name), "%s", name);
    return golden_send(s, &m);
}

int vmt_golden_pull(vmt_session *s, vmt_store *st, vmt_catalog *c, const char *name,
                    const char *as_tag, const vmt_golden_opts *o, vmt_id *out,
                    vmt_golden_stats *stats)
{
    vmt_golden_opts def;
    vmt_golden_stats local;
    vmt_id *ids = NULL;
    size_t n = 0;
    uint64_t t0 = vmt_now_ns();

    if (!o) {
        vmt_golden_opts_init(&def);
        o = &def;
    }
    stats = stats ? stats : &local;
    memset(stats, 0, sizeof(*stats));
    int rc = golden_send_request(s, VMT_GOLDEN_OP_PULL, name, o->max_ancestors);
    if (rc == 0)
        rc = golden_recv_snaps(s, o->timeout_ms, &ids, &n);
    if (rc == 0) {
        rc = golden_receive(s, st, c, ids, n, as_tag, o, stats);
        rc = rc ? golden_fail(s, rc) : golden_send_done(s, &ids[0], stats);
    }
    if (rc == 0 && out)
        *out = ids[0];
    free(ids);
    golden_finish_stats(s, stats, t0);
    return rc;
}

int vmt_golden_push(vmt_session *s, vmt_store *st, const vmt_id *id, const char *as_tag,
                    const vmt_golden_opts *o, vmt_golden_stats *stats)
{
    vmt_golden_opts def;
    vmt_golden_stats local;
    vmt_id *ids = NULL;
    size_t n = 0;
    uint64_t t0 = vmt_now_ns();

    if (!o) {
        vmt_golden_opts_init(&def);
        o = &def;
    }
    stats = stats ? stats : &local;
    memset(stats, 0, sizeof(*stats));
    int rc = golden_chain(st, id, o->max_ancestors, &ids, &n);
    if (rc == 0)
        rc = golden_send_request(s, VMT_GOLDEN_OP_PUSH, as_tag ? as_tag : "", o->max_ancestors);
    if (rc == 0)
        rc = send_snaps(s, ids, n);
    if (rc == 0) {
        stats->snapshots = n;
        rc = golden_provide(s, st, o, stats);
    }
    free(ids);
    golden_finish_stats(s, stats, t0);
    return rc;
}

/* ---- the server side --------------------------------------------------------- */

static int serve_pull(vmt_session *s, const vmt_golden_server_opts *so, const char *name,
                      uint32_t max_anc, vmt_id *snap, vmt_golden_stats *stats)
{
    vmt_store_open_opts oo;
    vmt_store *st = NULL;
    vmt_catalog *c = NULL;
    vmt_id *ids = NULL;
    size_t n = 0;

    vmt_store_open_opts_init(&oo);
    oo.read_only = true;
    int rc = vmt_store_open(&st, so->store_dir, &oo);
    if (rc == 0)
        rc = vmt_catalog_open_store(&c, st);
    if (rc == 0 && (rc = vmt_catalog_resolve(c, name, snap)) != 0)
        rc = vmt_error_wrap(rc, "pull of \"%s\"", name);
    if (rc == 0)
        rc = golden_chain(st, snap, max_anc, &ids, &n);
    if (rc)
        rc = golden_fail(s, rc);
    if (rc == 0)
        rc = send_snaps(s, ids, n);
    if (rc == 0) {
        stats->snapshots = n;
        rc = golden_provide(s, st, &so->xfer, stats);
    }
    free(ids);
    vmt_catalog_close(c);
    vmt_store_close(st);
    return rc;
}

/* Tag names as the catalog takes them: [A-Za-z0-9._-], 1..63 bytes, not
 * starting with '.' or '-'. */
static bool tag_valid(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n >= VMT_SNAP_NAME_MAX || t[0] == '.' || t[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", t[i]))
            return false;
    return true;
}

static int serve_push(vmt_session *s, const vmt_golden_server_opts *so, const char *tag,
                      vmt_id *snap, vmt_golden_stats *stats)
{
    vmt_store *st = NULL;
    vmt_catalog *c = NULL;
    vmt_id *ids = NULL;
    size_t n = 0;

    if (so->read_only)
        return golden_fail(s, vmt_error_set(VMT_EAUTH, "this server is read-only: push refused"));
    if (tag[0] && !tag_valid(tag))
        return golden_fail(s, vmt_error_set(VMT_EINVAL, "push: bad tag name \"%s\"", tag));
    int rc = vmt_store_open(&st, so->store_dir, NULL);
    if (rc == 0)
        rc = vmt_catalog_open_store(&c, st);
    if (rc)
        rc = golden_fail(s, rc);
    if (rc == 0)
        rc = golden_recv_snaps(s, so->xfer.timeout_ms, &ids, &n);
    if (rc == 0) {
        rc = golden_receive(s, st, c, ids, n, tag, &so->xfer, stats);
        rc = rc ? golden_fail(s, rc) : golden_send_done(s, &ids[0], stats);
    }
    if (rc == 0)
        *snap = ids[0];
    free(ids);
    vmt_catalog_close(c);
    vmt_store_close(st);
    return rc;
}

int vmt_golden_serve(vmt_session *s, const vmt_golden_server_opts *so, unsigned *op, vmt_id *snap,
                     vmt_golden_stats *stats)
{
    vmt_golden_stats local;
    vmt_frame f;
    vmt_golden_msg m;
    vmt_id id;
    uint64_t t0 = vmt_now_ns();

    stats = stats ? stats : &local;
    memset(stats, 0, sizeof(*stats));
    memset(&id, 0, sizeof(id));
    vmt_frame_init(&f);
    int rc = golden_recv(s, &f, VMT_GOLDEN_REQUEST, &m, so->xfer.timeout_ms);
    vmt_frame_free(&f);
    if (rc)
        return rc;
    if (op)
        *op = m.u.request.op;
    if (m.u.request.op == VMT_GOLDEN_OP_PULL)
        rc = serve_pull(s, so, m.u.request.name, m.u.request.max_ancestors, &id, stats);
    else
        rc = serve_push(s, so, m.u.request.name, &id, stats);
    vmt_golden_msg_clear(&m);
    if (snap)
        *snap = id;
    golden_finish_stats(s, stats, t0);
    return rc;
}
