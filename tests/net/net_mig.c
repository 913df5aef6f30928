/*
 * A reference implementation of the migration exchange of
 * docs/wire-protocol.md, small enough to read in one go, used by the suites
 * to drive sessions end to end:
 *
 *   source                                destination
 *   VM_CONFIG                  ->
 *                              <-         HAVE_SET chunks (optional)
 *   per round: ROUND_START     ->         (stream 0)
 *              PAGE_BATCH...   ->         (round robin over the streams)
 *              ROUND_END       ->         (on every stream)
 *                              <-         WANT (pages to resend in full)
 *              [PAGE_BATCH... ROUND_END on stream 0, then WANT again]
 *   STATE_BLOB, COMMIT         ->
 *                              <-         PREPARED
 *   GO                         ->
 *                              <-         ACK
 *
 * The destination reads every stream on its own thread during a round and
 * applies the round's pages only from that round (the barrier of the
 * protocol), so deltas always find their base.
 */
#include "net_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE VMT_NET_PAGE_SIZE

/* ---- setup ---------------------------------------------------------------- */

int net_mig_init(net_mig *m, uint64_t npages, unsigned rounds, uint64_t seed)
{
    memset(m, 0, sizeof(*m));
    if (rounds == 0 || rounds > 4)
        return VMT_EINVAL;
    m->npages = npages;
    m->rounds = rounds;
    m->batch_pages = 64;
    vmt_batch_opts_init(&m->bopts);
    size_t bytes = (size_t)npages * PAGE;
    size_t nheld = (size_t)npages / 5 + 1;
    m->own = calloc(1, bytes * (rounds + 1) + nheld * PAGE + rounds * npages);
    if (!m->own)
        return VMT_ENOMEM;
    uint8_t *p = m->own;
    for (unsigned r = 0; r < rounds; r++, p += bytes)
        m->ram[r] = p;
    m->dst = p;
    p += bytes;
    uint8_t *held = p;
    p += nheld * PAGE;
    for (uint64_t i = 0; i < npages; i++)
        net_page(m->ram[0] + i * PAGE, (unsigned)(i % 4), seed + i);
    for (unsigned r = 1; r < rounds; r++, p += npages) {
        m->dirty[r] = (bool *)p;
        memcpy(m->ram[r], m->ram[r - 1], bytes);
        for (uint64_t i = 0; i < npages; i++) {
            if ((i + r) % 3)
                continue;
            m->dirty[r][i] = true;
            uint8_t *pg = m->ram[r] + i * PAGE;
            pg[(i * 37 + r * 101) % PAGE] ^= (uint8_t)(0x5a + r);
            pg[(i * 53 + r * 7) % PAGE] += 1;
        }
    }
    /* The destination holds a copy of every fifth page of round 0. */
    for (size_t h = 0; h < nheld; h++)
        memcpy(held + h * PAGE, m->ram[0] + ((h * 5) % npages) * PAGE, PAGE);
    m->held = held;
    m->nheld = nheld;
    for (size_t i = 0; i < sizeof(m->state); i++)
        m->state[i] = (uint8_t)(i * 7 + 3);
    return 0;
}

void net_mig_free(net_mig *m)
{
    free(m->own);
    m->own = NULL;
}

bool net_mig_dst_matches(const net_mig *m)
{
    return memcmp(m->dst, m->ram[m->rounds - 1], (size_t)m->npages * PAGE) == 0;
}

bool net_mig_dst_plausible(const net_mig *m)
{
    static const uint8_t zero[PAGE];
    for (uint64_t i = 0; i < m->npages; i++) {
        const uint8_t *d = m->dst + i * PAGE;
        bool ok = memcmp(d, zero, PAGE) == 0;
        for (unsigned r = 0; r < m->rounds && !ok; r++)
            ok = memcmp(d, m->ram[r] + i * PAGE, PAGE) == 0;
        if (!ok)
            return false;
    }
    return true;
}

/* ---- source ---------------------------------------------------------------- */

typedef struct src {
    vmt_session *s;
    net_mig *m;
    vmt_batch_writer *w;
    unsigned n, next;
    uint32_t round;
    uint64_t pages[VMT_NET_MAX_STREAMS], bytes[VMT_NET_MAX_STREAMS];
    uint64_t batches[VMT_NET_MAX_STREAMS];
    uint64_t total_pages;
} src;

/* Sends the writer's batch on `stream` (UINT32_MAX: the next one). */
static int src_flush(src *c, vmt_batch_writer *w, unsigned stream)
{
    const uint8_t *p;
    size_t len;
    size_t count = vmt_batch_writer_count(w);
    if (count == 0)
        return 0;
    int rc = vmt_batch_writer_finish(w, &p, &len);
    if (stream == UINT32_MAX)
        stream = c->next++ % c->n;
    if (rc == 0)
        rc = vmt_session_send_batch(c->s, stream, p, len);
    c->pages[stream] += count;
    c->bytes[stream] += len;
    c->batches[stream]++;
    c->total_pages += count;
    vmt_batch_writer_begin(w, c->round);
    return rc;
}

static int src_round_end(src *c, unsigned first, unsigned end)
{
    for (unsigned k = first; k < end; k++) {
        vmt_wire_msg msg = {.type = VMT_WIRE_ROUND_END};
        msg.u.round_end.round = c->round;
        msg.u.round_end.pages = c->pages[k];
        msg.u.round_end.bytes = c->bytes[k];
        msg.u.round_end.batches = c->batches[k];
        int rc = vmt_session_send(c->s, k, &msg);
        if (rc)
            return rc;
        c->pages[k] = c->bytes[k] = c->batches[k] = 0;
    }
    return 0;
}

static int src_add(src *c, vmt_batch_writer *w, uint64_t pfn, unsigned stream)
{
    int rc = vmt_batch_writer_add(w, pfn, c->m->ram[c->round] + pfn * PAGE);
    if (rc == 0 && vmt_batch_writer_count(w) >= c->m->batch_pages)
        rc = src_flush(c, w, stream);
    return rc;
}

/* Answers WANTs by resending the pages in full on stream 0. */
static int src_wants(src *c, vmt_batch_writer *full)
{
    for (;;) {
        vmt_wire_msg msg;
        int rc = vmt_session_recv_msg(c->s, 0, VMT_WIRE_WANT, &msg, NET_TIMEOUT_MS);
        if (rc)
            return rc;
        size_t n = msg.u.want.n;
        c->m->wanted += n;
        vmt_batch_writer_begin(full, c->round);
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = msg.u.want.pfns[i] < c->m->npages ? src_add(c, full, msg.u.want.pfns[i], 0)
                                                    : VMT_EPROTO;
        vmt_wire_msg_clear(&msg);
        if (n == 0 || rc)
            return rc;
        if ((rc = src_flush(c, full, 0)) != 0 || (rc = src_round_end(c, 0, 1)) != 0)
            return rc;
    }
}

static int src_round(src *c, vmt_batch_writer *full)
{
    vmt_wire_msg msg = {.type = VMT_WIRE_ROUND_START};
    msg.u.round_start.round = c->round;
    int rc = vmt_session_send(c->s, 0, &msg);
    vmt_batch_writer_begin(c->w, c->round);
    for (uint64_t pfn = 0; rc == 0 && pfn < c->m->npages; pfn++)
        if (c->round == 0 || c->m->dirty[c->round][pfn])
            rc = src_add(c, c->w, pfn, UINT32_MAX);
    if (rc == 0)
        rc = src_flush(c, c->w, UINT32_MAX);
    if (rc == 0)
        rc = src_round_end(c, 0, c->n);
    return rc ? rc : src_wants(c, full);
}

static int src_haveset(vmt_session *s, vmt_haveset **have)
{
    int rc = vmt_haveset_new(have, 1u << 24);
    while (rc == 0 && !vmt_haveset_complete(*have)) {
        vmt_wire_msg msg;
        rc = vmt_session_recv_msg(s, 0, VMT_WIRE_HAVE_SET, &msg, NET_TIMEOUT_MS);
        if (rc == 0) {
            rc = vmt_haveset_add_chunk(*have, &msg.u.have_set);
            vmt_wire_msg_clear(&msg);
        }
    }
    return rc;
}

static int src_finish(src *c)
{
    vmt_wire_msg msg = {.type = VMT_WIRE_STATE_BLOB};
    msg.u.state_blob.data = c->m->state;
    msg.u.state_blob.len = sizeof(c->m->state);
    int rc = vmt_session_send(c->s, 0, &msg);
    if (rc)
        return rc;
    msg = (vmt_wire_msg){.type = VMT_WIRE_COMMIT};
    msg.u.commit.pages = c->total_pages;
    if ((rc = vmt_session_send(c->s, 0, &msg)) != 0 ||
        (rc = vmt_session_recv_msg(c->s, 0, VMT_WIRE_PREPARED, &msg, NET_TIMEOUT_MS)) != 0)
        return rc;
    msg = (vmt_wire_msg){.type = VMT_WIRE_GO};
    msg.u.commit.pages = c->total_pages;
    if ((rc = vmt_session_send(c->s, 0, &msg)) != 0 ||
        (rc = vmt_session_recv_msg(c->s, 0, VMT_WIRE_ACK, &msg, NET_TIMEOUT_MS)) != 0)
        return rc;
    c->m->acked = msg.u.ack.resumed;
    return 0;
}

int net_mig_source(vmt_session *s, net_mig *m)
{
    src c = {.s = s, .m = m, .n = vmt_session_nstreams(s)};
    vmt_haveset *have = NULL;
    vmt_xbzrle_cache *cache = NULL;
    vmt_batch_writer *full = NULL;
    vmt_wire_msg msg = {.type = VMT_WIRE_VM_CONFIG};

    msg.u.vm_config.mem_size = m->npages * PAGE;
    msg.u.vm_config.vcpus = 1;
    msg.u.vm_config.npages = m->npages;
    snprintf(msg.u.vm_config.vm_name, sizeof(msg.u.vm_config.vm_name), "test");
    int rc = vmt_session_send(s, 0, &msg);
    if (rc == 0 && m->use_haveset)
        rc = src_haveset(s, &have);
    if (rc == 0 && m->xbzrle) /* half the RAM: evictions happen */
        rc = vmt_xbzrle_cache_new(&cache, (size_t)(m->npages / 2 + 1) * PAGE);
    if (rc == 0)
        rc = vmt_batch_writer_new(&c.w, &m->bopts, cache, have);
    if (rc == 0)
        rc = vmt_batch_writer_new(&full, &m->bopts, cache, NULL);
    for (unsigned r = 0; rc == 0 && r < m->rounds; r++) {
        c.round = r;
        rc = src_round(&c, full);
    }
    if (rc == 0)
        rc = src_finish(&c);
    if (c.w)
        m->stats = *vmt_batch_writer_stats(c.w);
    vmt_batch_writer_free(full);
    vmt_batch_writer_free(c.w);
    vmt_xbzrle_cache_free(cache);
    vmt_haveset_free(have);
    return rc;
}

/* ---- destination ------------------------------------------------------------ */

typedef struct held_ent {
    vmt_id id;
    size_t idx;
} held_ent;

typedef struct dst_shared {
    net_mig *m;
    vmt_session *s;
    held_ent *held;
    size_t nheld;
    pthread_mutex_t lock; /* want */
    uint64_t want[1024];
    size_t nwant;
} dst_shared;

typedef struct dst_stream {
    dst_shared *sh;
    unsigned k;
    uint32_t round;
    vmt_batch_reader *rd;
    vmt_frame f;
} dst_stream;

static int cmp_held(const void *a, const void *b)
{
    return memcmp(&((const held_ent *)a)->id, &((const held_ent *)b)->id, sizeof(vmt_id));
}

static int dst_ref(dst_stream *d, const vmt_page_rec *rec, uint8_t *page)
{
    held_ent key;
    memcpy(key.id.b, rec->data, sizeof(key.id.b));
    held_ent *h = bsearch(&key, d->sh->held, d->sh->nheld, sizeof(*h), cmp_held);
    if (h) {
        memcpy(page, d->sh->m->held + h->idx * PAGE, PAGE);
        return 0;
    }
    pthread_mutex_lock(&d->sh->lock);
    int rc = 0;
    if (d->sh->nwant < VMT_ARRAY_SIZE(d->sh->want))
        d->sh->want[d->sh->nwant++] = rec->pfn;
    else
        rc = vmt_error_set(VMT_ERANGE, "too many unknown references");
    pthread_mutex_unlock(&d->sh->lock);
    return rc;
}

static int dst_batch(dst_stream *d, uint64_t *pages)
{
    int rc = vmt_batch_reader_parse(d->rd, d->f.payload, d->f.len);
    if (rc == 0 && vmt_batch_reader_round(d->rd) != d->round)
        rc = vmt_error_set(VMT_EPROTO, "batch of round %u during round %u",
                           vmt_batch_reader_round(d->rd), d->round);
    size_t n = rc ? 0 : vmt_batch_reader_count(d->rd);
    for (size_t i = 0; i < n && rc == 0; i++) {
        const vmt_page_rec *rec = vmt_batch_reader_rec(d->rd, i);
        uint8_t *page = d->sh->m->dst + rec->pfn * PAGE;
        rc = rec->enc == VMT_PAGE_REF ? dst_ref(d, rec, page)
                                      : vmt_batch_reader_apply(d->rd, rec, page);
    }
    *pages += n;
    return rc;
}

/* Reads stream k until its ROUND_END of the current round. */
static int dst_read_round(void *arg)
{
    dst_stream *d = arg;
    uint64_t pages = 0;
    for (;;) {
        int rc = vmt_session_recv(d->sh->s, d->k, &d->f, NET_TIMEOUT_MS);
        if (rc)
            return rc;
        if (d->f.type == VMT_WIRE_PAGE_BATCH) {
            if ((rc = dst_batch(d, &pages)) != 0)
                return vmt_session_abort(d->sh->s, rc, vmt_error_last());
            continue;
        }
        vmt_wire_msg msg;
        rc = d->f.type == VMT_WIRE_ROUND_END
                 ? vmt_wire_decode(d->f.type, d->f.payload, d->f.len, &msg)
                 : vmt_error_set(VMT_EPROTO, "unexpected %s in a round",
                                 vmt_wire_type_name(d->f.type));
        if (rc == 0 && (msg.u.round_end.round != d->round || msg.u.round_end.pages != pages))
            rc = vmt_error_set(VMT_EPROTO, "ROUND_END of round %u with %llu pages; got %llu",
                               msg.u.round_end.round, (unsigned long long)msg.u.round_end.pages,
                               (unsigned long long)pages);
        return rc ? vmt_session_abort(d->sh->s, rc, vmt_error_last()) : 0;
    }
}

/* One round: every stream on its own thread until its ROUND_END, then the
 * WANT exchange on stream 0. */
static int dst_round(dst_shared *sh, dst_stream *ds, uint32_t round)
{
    unsigned n = vmt_session_nstreams(sh->s);
    net_thread th[VMT_NET_MAX_STREAMS];
    for (unsigned k = 0; k < n; k++)
        ds[k].round = round;
    for (unsigned k = 1; k < n; k++)
        net_spawn(&th[k], dst_read_round, &ds[k]);
    int rc = dst_read_round(&ds[0]);
    for (unsigned k = 1; k < n; k++) {
        int trc = net_join(&th[k]);
        if (!rc && trc)
            rc = vmt_error_set(trc, "%s", th[k].msg);
    }
    while (rc == 0) {
        vmt_wire_msg msg = {.type = VMT_WIRE_WANT};
        msg.u.want.round = round;
        msg.u.want.pfns = sh->want;
        msg.u.want.n = sh->nwant;
        size_t asked = sh->nwant;
        sh->nwant = 0;
        if ((rc = vmt_session_send(sh->s, 0, &msg)) != 0 || asked == 0)
            break;
        rc = dst_read_round(&ds[0]);
    }
    return rc;
}

static int dst_emit(void *ctx, const vmt_wire_have_set *chunk)
{
    vmt_wire_msg msg = {.type = VMT_WIRE_HAVE_SET};
    msg.u.have_set = *chunk;
    return vmt_session_send(ctx, 0, &msg);
}

/* Announces the held pages (and the extra ones) and indexes the held. */
static int dst_setup(dst_shared *sh)
{
    net_mig *m = sh->m;
    size_t nann = m->nheld + m->nextra;
    vmt_id *ann = calloc(nann + 1, sizeof(*ann));
    sh->held = calloc(m->nheld + 1, sizeof(*sh->held));
    if (!ann || !sh->held) {
        free(ann);
        return VMT_ENOMEM;
    }
    for (size_t i = 0; i < m->nheld; i++) {
        vmt_id_of(m->held + i * PAGE, PAGE, &sh->held[i].id);
        sh->held[i].idx = i;
        ann[i] = sh->held[i].id;
    }
    for (size_t i = 0; i < m->nextra; i++)
        vmt_id_of(m->extra + i * PAGE, PAGE, &ann[m->nheld + i]);
    sh->nheld = m->nheld;
    qsort(sh->held, sh->nheld, sizeof(*sh->held), cmp_held);
    int rc = m->use_haveset ? vmt_haveset_encode(ann, nann, 0, dst_emit, sh->s) : 0;
    free(ann);
    return rc;
}

static int dst_loop(dst_shared *sh, dst_stream *ds)
{
    for (;;) {
        vmt_wire_msg msg;
        int rc = vmt_session_recv_msg(sh->s, 0, 0, &msg, NET_TIMEOUT_MS);
        if (rc)
            return rc;
        switch (msg.type) {
        case VMT_WIRE_ROUND_START:
            rc = dst_round(sh, ds, msg.u.round_start.round);
            break;
        case VMT_WIRE_STATE_BLOB:
            memcpy(sh->m->got_state, msg.u.state_blob.data,
                   VMT_MIN(msg.u.state_blob.len, sizeof(sh->m->got_state)));
            break;
        case VMT_WIRE_COMMIT:
            msg = (vmt_wire_msg){.type = VMT_WIRE_PREPARED};
            rc = vmt_session_send(sh->s, 0, &msg);
            if (rc == 0)
                rc = vmt_session_recv_msg(sh->s, 0, VMT_WIRE_GO, &msg, NET_TIMEOUT_MS);
            msg = (vmt_wire_msg){.type = VMT_WIRE_ACK};
            msg.u.ack.resumed = true;
            if (rc == 0)
                rc = vmt_session_send(sh->s, 0, &msg);
            sh->m->committed = rc == 0;
            return rc;
        default:
            vmt_error_set(VMT_EPROTO, "unexpected %s", vmt_wire_type_name(msg.type));
            rc = vmt_session_abort(sh->s, VMT_EPROTO, vmt_error_last());
        }
        vmt_wire_msg_clear(&msg);
        if (rc)
            return rc;
    }
}

int net_mig_dest(vmt_session *s, net_mig *m)
{
    dst_shared sh = {.m = m, .s = s};
    dst_stream ds[VMT_NET_MAX_STREAMS];
    unsigned n = vmt_session_nstreams(s);
    vmt_wire_msg msg;
    int rc = 0;

    pthread_mutex_init(&sh.lock, NULL);
    memset(ds, 0, sizeof(ds));
    for (unsigned k = 0; k < n && rc == 0; k++) {
        ds[k].sh = &sh;
        ds[k].k = k;
        vmt_frame_init(&ds[k].f);
        rc = vmt_batch_reader_new(&ds[k].rd, m->npages);
    }
    if (rc == 0)
        rc = vmt_session_recv_msg(s, 0, VMT_WIRE_VM_CONFIG, &msg, NET_TIMEOUT_MS);
    if (rc == 0 && msg.u.vm_config.npages != m->npages)
        rc = vmt_session_abort(s, VMT_EINVAL, "wrong VM size");
    if (rc == 0)
        rc = dst_setup(&sh);
    if (rc == 0)
        rc = dst_loop(&sh, ds);
    for (unsigned k = 0; k < n; k++) {
        vmt_batch_reader_free(ds[k].rd);
        vmt_frame_free(&ds[k].f);
    }
    free(sh.held);
    pthread_mutex_destroy(&sh.lock);
    return rc;
}
