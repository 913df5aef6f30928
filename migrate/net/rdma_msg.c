/*
 * The RDMA transport's own messages (rdma_logic.h): the header of every
 * SEND, the bodies of its control messages, and the connection data
 * exchanged through rdma_cm.  Everything the peer wrote is checked here,
 * completely, before the transport acts on it: these bytes come from a
 * peer that may be buggy or hostile exactly as a TCP peer may.
 */
#include <stdlib.h>
#include <string.h>

#include "net_internal.h"
#include "rdma_logic.h"

static void put_be64(uint8_t *p, uint64_t v)
{
    vmt_put_be32(p, (uint32_t)(v >> 32));
    vmt_put_be32(p + 4, (uint32_t)v);
}

const char *vmt_rdma_msg_name(unsigned type)
{
    static const char *const names[] = {"?",      "DATA",    "CREDIT",  "FIN",
                                        "EXPOSE", "REG_REQ", "REG_ACK", "WRITE"};
    return type < VMT_ARRAY_SIZE(names) ? names[type] : "?";
}

/* Body size of the fixed-size messages; SIZE_MAX for DATA. */
static size_t body_size(unsigned type)
{
    switch (type) {
    case VMT_RDMA_MSG_CREDIT:
    case VMT_RDMA_MSG_FIN:
        return 0;
    case VMT_RDMA_MSG_EXPOSE:
        return 20;
    case VMT_RDMA_MSG_REG_REQ:
        return 8;
    case VMT_RDMA_MSG_REG_ACK:
        return 16;
    default:
        return SIZE_MAX;
    }
}

size_t vmt_rdma_msg_encode(const vmt_rdma_msg *m, uint8_t *out, size_t cap)
{
    size_t body = m->type == VMT_RDMA_MSG_DATA ? m->len : body_size(m->type);
    if (body == SIZE_MAX || cap < VMT_RDMA_MSG_HDR || body > cap - VMT_RDMA_MSG_HDR)
        return 0;
    out[0] = (uint8_t)m->type;
    out[1] = 0;
    vmt_put_be16(out + 2, m->grant);
    vmt_put_be16(out + 4, m->cgrant);
    vmt_put_be16(out + 6, 0);
    vmt_put_be32(out + 8, (uint32_t)body);
    uint8_t *b = out + VMT_RDMA_MSG_HDR;
    switch (m->type) {
    case VMT_RDMA_MSG_DATA:
        memcpy(b, m->data, body);
        break;
    case VMT_RDMA_MSG_EXPOSE:
        put_be64(b, m->region_len);
        put_be64(b + 8, m->chunk_bytes);
        vmt_put_be32(b + 16, m->max_chunks);
        break;
    case VMT_RDMA_MSG_REG_REQ:
        vmt_put_be32(b, m->chunk);
        vmt_put_be32(b + 4, m->release);
        break;
    case VMT_RDMA_MSG_REG_ACK:
        vmt_put_be32(b, m->chunk);
        vmt_put_be32(b + 4, m->rkey);
        put_be64(b + 8, m->addr);
        break;
    default:
        break;
    }
    return VMT_RDMA_MSG_HDR + body;
}

static int check_expose(vmt_rdma_msg *m)
{
    uint64_t page = VMT_NET_PAGE_SIZE;
    if (m->region_len == 0 || m->region_len % page || m->region_len > VMT_RDMA_MAX_EXPOSE)
        return vmt_error_set(VMT_EPROTO, "RDMA EXPOSE: bad range of %llu bytes",
                             (unsigned long long)m->region_len);
    if (m->chunk_bytes == 0 || m->chunk_bytes % page || m->chunk_bytes > m->region_len * 2)
        return vmt_error_set(VMT_EPROTO, "RDMA EXPOSE: bad chunk size %llu",
                             (unsigned long long)m->chunk_bytes);
    uint64_t chunks = (m->region_len + m->chunk_bytes - 1) / m->chunk_bytes;
    if (chunks > VMT_RDMA_MAX_CHUNKS)
        return vmt_error_set(VMT_EPROTO, "RDMA EXPOSE: %llu chunks (at most %u)",
                             (unsigned long long)chunks, VMT_RDMA_MAX_CHUNKS);
    if (m->max_chunks == 0 || m->max_chunks > chunks)
        return vmt_error_set(VMT_EPROTO, "RDMA EXPOSE: max_chunks %u of %llu chunks",
                             m->max_chunks, (unsigned long long)chunks);
    return 0;
}

/* Reads the body of a fixed-size message at b. */
static int decode_body(const uint8_t *b, vmt_rdma_msg *m)
{
    switch (m->type) {
    case VMT_RDMA_MSG_CREDIT:
        if (m->grant == 0 && m->cgrant == 0)
            return vmt_error_set(VMT_EPROTO, "RDMA CREDIT message returning no credit");
        return 0;
    case VMT_RDMA_MSG_EXPOSE:
        m->region_len = vmt_get_be64(b);
        m->chunk_bytes = vmt_get_be64(b + 8);
        m->max_chunks = vmt_get_be32(b + 16);
        return check_expose(m);
    case VMT_RDMA_MSG_REG_REQ:
        m->chunk = vmt_get_be32(b);
        m->release = vmt_get_be32(b + 4);
        if (m->chunk == VMT_RDMA_CHUNK_NONE || m->chunk == m->release)
            return vmt_error_set(VMT_EPROTO, "RDMA REG_REQ: chunk %u, release %u", m->chunk,
                                 m->release);
        return 0;
    case VMT_RDMA_MSG_REG_ACK:
        m->chunk = vmt_get_be32(b);
        m->rkey = vmt_get_be32(b + 4);
        m->addr = vmt_get_be64(b + 8);
        return 0;
    default:
        return 0;
    }
}

int vmt_rdma_msg_decode(const uint8_t *buf, size_t len, size_t max_data, vmt_rdma_msg *m)
{
    memset(m, 0, sizeof(*m));
    if (len < VMT_RDMA_MSG_HDR)
        return vmt_error_set(VMT_EPROTO, "RDMA message of %zu bytes (header is %u)", len,
                             VMT_RDMA_MSG_HDR);
    m->type = buf[0];
    m->grant = vmt_get_be16(buf + 2);
    m->cgrant = vmt_get_be16(buf + 4);
    uint32_t body = vmt_get_be32(buf + 8);
    if (m->type < VMT_RDMA_MSG_DATA || m->type > VMT_RDMA_MSG_REG_ACK)
        return vmt_error_set(VMT_EPROTO, "unknown RDMA message type %u", m->type);
    if (buf[1] != 0 || vmt_get_be16(buf + 6) != 0)
        return vmt_error_set(VMT_EPROTO, "RDMA %s with flags 0x%02x, reserved 0x%04x",
                             vmt_rdma_msg_name(m->type), buf[1], vmt_get_be16(buf + 6));
    if ((uint64_t)body != len - VMT_RDMA_MSG_HDR)
        return vmt_error_set(VMT_EPROTO, "RDMA %s says %u body bytes, %zu arrived",
                             vmt_rdma_msg_name(m->type), body, len - VMT_RDMA_MSG_HDR);
    if (m->type == VMT_RDMA_MSG_DATA) {
        if (body == 0 || body > max_data)
            return vmt_error_set(VMT_EPROTO, "RDMA DATA of %u bytes (1..%zu)", body, max_data);
        m->len = body;
        m->data = buf + VMT_RDMA_MSG_HDR;
        return 0;
    }
    if (body != body_size(m->type))
        return vmt_error_set(VMT_EPROTO, "RDMA %s with a body of %u bytes (%zu expected)",
                             vmt_rdma_msg_name(m->type), body, body_size(m->type));
    return decode_body(buf + VMT_RDMA_MSG_HDR, m);
}

/* ---- connection data ------------------------------------------------------ */

void vmt_rdma_hello_encode(const vmt_rdma_hello *h, uint8_t out[VMT_RDMA_HELLO_LEN])
{
    memset(out, 0, VMT_RDMA_HELLO_LEN);
    vmt_put_be32(out, VMT_RDMA_HELLO_MAGIC);
    vmt_put_be16(out + 4, VMT_RDMA_VERSION);
    vmt_put_be32(out + 8, h->window);
    vmt_put_be32(out + 12, h->buf_bytes);
    vmt_put_be32(out + 16, h->ctrl_window);
}

int vmt_rdma_hello_decode(const uint8_t *buf, size_t len, vmt_rdma_hello *h)
{
    memset(h, 0, sizeof(*h));
    if (!buf || len < VMT_RDMA_HELLO_LEN || vmt_get_be32(buf) != VMT_RDMA_HELLO_MAGIC)
        return vmt_error_set(VMT_EPROTO, "the RDMA peer is not a vmtree transport "
                                         "(no \"VMTR\" connection data)");
    unsigned version = vmt_get_be16(buf + 4);
    if (version != VMT_RDMA_VERSION)
        return vmt_error_set(VMT_EPROTO, "RDMA transport version %u (this side speaks %u)",
                             version, VMT_RDMA_VERSION);
    if (vmt_get_be16(buf + 6) != 0 || vmt_get_be32(buf + 20) != 0)
        return vmt_error_set(VMT_EPROTO, "RDMA connection data: reserved fields set");
    h->window = vmt_get_be32(buf + 8);
    h->buf_bytes = vmt_get_be32(buf + 12);
    h->ctrl_window = vmt_get_be32(buf + 16);
    if (h->ctrl_window < VMT_RDMA_CTRL_MIN || h->ctrl_window > VMT_RDMA_CTRL_MAX)
        return vmt_error_set(VMT_EPROTO, "RDMA peer control window of %u buffers (%u..%u)",
                             h->ctrl_window, VMT_RDMA_CTRL_MIN, VMT_RDMA_CTRL_MAX);
    if (h->window < VMT_RDMA_WINDOW_MIN || h->window > VMT_RDMA_WINDOW_MAX)
        return vmt_error_set(VMT_EPROTO, "RDMA peer window of %u buffers (%u..%u)", h->window,
                             VMT_RDMA_WINDOW_MIN, VMT_RDMA_WINDOW_MAX);
    if (h->buf_bytes < VMT_RDMA_BUF_MIN || h->buf_bytes > VMT_RDMA_BUF_MAX)
        return vmt_error_set(VMT_EPROTO, "RDMA peer buffers of %u bytes (%u..%u)", h->buf_bytes,
                             VMT_RDMA_BUF_MIN, VMT_RDMA_BUF_MAX);
    return 0;
}

/* ---- landed runs ------------------------------------------------------------ */

void vmt_rdma_landed_init(vmt_rdma_landed *l, size_t max_runs)
{
    memset(l, 0, sizeof(*l));
    l->max = max_runs ? max_runs : 1;
}

void vmt_rdma_landed_free(vmt_rdma_landed *l)
{
    free(l->runs);
    memset(l, 0, sizeof(*l));
}

static int landed_grow(vmt_rdma_landed *l)
{
    size_t ncap = l->cap ? l->cap * 2 : 64;
    if (ncap > l->max)
        ncap = l->max;
    vmt_page_run *n = vmt_mallocn(ncap, sizeof(*n));
    if (!n)
        return vmt_error_set(VMT_ENOMEM, "landed runs: out of memory");
    for (size_t i = 0; i < l->len; i++)
        n[i] = l->runs[(l->head + i) % l->cap];
    free(l->runs);
    l->runs = n;
    l->cap = ncap;
    l->head = 0;
    return 0;
}

int vmt_rdma_landed_push(vmt_rdma_landed *l, uint64_t pfn, uint64_t npages)
{
    if (l->len) {
        vmt_page_run *last = &l->runs[(l->head + l->len - 1) % l->cap];
        if (last->pfn + last->npages == pfn) {
            last->npages += npages;
            return 0;
        }
    }
    if (l->len == l->max)
        return vmt_error_set(VMT_ERANGE,
                             "%zu runs of landed pages not collected (the receiver does not "
                             "drain vmt_transport_bulk_landed)",
                             l->max);
    if (l->len == l->cap) {
        int rc = landed_grow(l);
        if (rc)
            return rc;
    }
    l->runs[(l->head + l->len) % l->cap] = (vmt_page_run){pfn, npages};
    l->len++;
    return 0;
}

size_t vmt_rdma_landed_pop(vmt_rdma_landed *l, vmt_page_run *out, size_t cap)
{
    size_t n = 0;
    while (n < cap && l->len) {
        out[n++] = l->runs[l->head];
        l->head = (l->head + 1) % l->cap;
        l->len--;
    }
    return n;
}
