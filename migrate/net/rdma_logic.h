/*
 * The parts of the RDMA transport that need no device (docs/rdma.md): the
 * messages carried in SEND/RECV buffers and in the rdma_cm connection data,
 * the credit accounting, and the memory-registration planner.  Pure code,
 * compiled and unit-tested on every machine (tests/net/test_net_rdma.c,
 * fuzz/fuzz_net_rdmamsg.c).  Never installed.
 */
#ifndef VMTREE_RDMA_LOGIC_H
#define VMTREE_RDMA_LOGIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtree/net.h"

/* ==== messages ============================================================ */

/*
 * Every SEND carries one message: a 12-byte header, big-endian,
 *   u8 type, u8 flags (0), u16 data grant, u16 control grant (receive
 *   buffers of each class the sender reposted since its last grant:
 *   credits returned), u16 reserved (0), u32 length (body bytes)
 * and the body.  A message fills at most one receive buffer.
 */
#define VMT_RDMA_MSG_HDR 12u

typedef enum vmt_rdma_msg_type {
    VMT_RDMA_MSG_DATA = 1,    /* body: stream bytes (1..buffer - header) */
    VMT_RDMA_MSG_CREDIT = 2,  /* no body; a grant >= 1 */
    VMT_RDMA_MSG_FIN = 3,     /* no body: the sender closed its stream cleanly */
    VMT_RDMA_MSG_EXPOSE = 4,  /* receiver exposes memory: u64 len, u64 chunk, u32 max_chunks */
    VMT_RDMA_MSG_REG_REQ = 5, /* sender: u32 chunk to register, u32 chunk to release (or NONE) */
    VMT_RDMA_MSG_REG_ACK = 6, /* receiver: u32 chunk, u32 rkey, u64 remote address */
    VMT_RDMA_MSG_WRITE = 7,   /* not a SEND: an RDMA WRITE with immediate (credit accounting) */
} vmt_rdma_msg_type;

#define VMT_RDMA_CHUNK_NONE UINT32_MAX
/* Most chunks an exposed range may have (the chunk table is indexed). */
#define VMT_RDMA_MAX_CHUNKS (1u << 20)
/* Exposed ranges: at most 2^32 pages (the immediate carries the page index). */
#define VMT_RDMA_MAX_EXPOSE ((uint64_t)VMT_NET_PAGE_SIZE << 32)

typedef struct vmt_rdma_msg {
    unsigned type;
    uint16_t grant, cgrant; /* data and control credits returned */
    uint32_t len;        /* DATA: body bytes */
    const uint8_t *data; /* DATA: body (points into the buffer decoded) */
    uint64_t region_len, chunk_bytes; /* EXPOSE */
    uint32_t max_chunks;              /* EXPOSE */
    uint32_t chunk, release, rkey;    /* REG_REQ (chunk, release), REG_ACK (chunk, rkey) */
    uint64_t addr;                    /* REG_ACK */
} vmt_rdma_msg;

/* Encodes m into out[0..cap) (cap >= header + body); returns the bytes
 * used, or 0 when it does not fit (DATA bodies are copied from m->data). */
size_t vmt_rdma_msg_encode(const vmt_rdma_msg *m, uint8_t *out, size_t cap);

/*
 * Decodes a received message of `len` bytes after checking everything: a
 * known type, flags and reserved 0, length exactly len - header and at
 * most max_data for DATA (at least 1), the fixed body size of the others,
 * CREDIT with a grant, EXPOSE with a page-aligned range within VMT_RDMA_MAX_EXPOSE, a
 * page-aligned chunk size, at most VMT_RDMA_MAX_CHUNKS chunks and
 * max_chunks in 1..chunks; REG_REQ not releasing the chunk it asks for.
 * Errors: VMT_EPROTO (the message names what).  Pure.
 */
int vmt_rdma_msg_decode(const uint8_t *buf, size_t len, size_t max_data, vmt_rdma_msg *m);

const char *vmt_rdma_msg_name(unsigned type);

/*
 * The connection data of rdma_connect / rdma_accept (private data, 24
 * bytes): "VMTR", u16 version (1), u16 flags (0), u32 window (receive
 * buffers for data), u32 buf_bytes (size of each buffer), u32 ctrl_window
 * (receive buffers for control messages; all are posted on one queue),
 * u32 reserved (0).
 */
#define VMT_RDMA_HELLO_LEN 24u
#define VMT_RDMA_HELLO_MAGIC 0x564d5452u /* "VMTR" */
#define VMT_RDMA_VERSION 1u
#define VMT_RDMA_WINDOW_MIN 4u
#define VMT_RDMA_WINDOW_MAX 1024u
#define VMT_RDMA_CTRL_MIN 2u
#define VMT_RDMA_CTRL_MAX 256u
#define VMT_RDMA_BUF_MIN 4096u
#define VMT_RDMA_BUF_MAX (1u << 20)

typedef struct vmt_rdma_hello {
    uint32_t window, buf_bytes, ctrl_window;
} vmt_rdma_hello;

void vmt_rdma_hello_encode(const vmt_rdma_hello *h, uint8_t out[VMT_RDMA_HELLO_LEN]);
/* Errors: VMT_EPROTO (not a vmtree peer, another version, a window or
 * buffer size out of range).  `len` is what arrived (may be longer: IB
 * pads private data). */
int vmt_rdma_hello_decode(const uint8_t *buf, size_t len, vmt_rdma_hello *h);

/* ==== credits ============================================================= */

/*
 * Credit-based flow control of one connection.  A credit is the right to
 * send one message into one of the peer's posted receive buffers (a SEND
 * without one is a receiver-not-ready error that ends the connection).
 * Buffers are accounted in two classes, because they are released
 * differently: DATA buffers (stream bytes) are held until the application
 * reads them, CONTROL buffers (CREDIT, FIN, EXPOSE, REG_*, and those an
 * RDMA WRITE with immediate consumes) are reposted as soon as the message
 * is handled.  Credit
 * returns travel in control messages, so they flow even while every data
 * buffer holds unread bytes, as TCP's acknowledgements do.
 *
 * Reposted buffers are owed to the peer and returned as the grants of the
 * next message (piggybacked), or in a CREDIT message once a class's
 * threshold is owed, or at once when the peer may have none of a class
 * left.  The last control credit is spent only by a message that returns
 * control credits (or FIN, the very last), so the two sides can never be
 * stuck at zero waiting for each other; the control threshold is at least
 * 2, so CREDIT messages cannot ping-pong.  One thread at a time.
 */
typedef enum vmt_rdma_class {
    VMT_RDMA_CLASS_DATA = 0,
    VMT_RDMA_CLASS_CTRL = 1,
} vmt_rdma_class;

typedef struct vmt_rdma_pool {
    uint32_t window, threshold;
    uint32_t credits;  /* messages of this class this side may still send */
    uint32_t owed;     /* buffers reposted here, not yet granted to the peer */
    uint64_t granted;  /* to the peer in total, the initial window included */
    uint64_t received; /* messages of this class from the peer */
} vmt_rdma_pool;

typedef struct vmt_rdma_credit {
    vmt_rdma_pool pool[2];
    uint64_t credit_msgs; /* explicit CREDIT messages sent (statistics) */
} vmt_rdma_credit;

/* The class a message type consumes. */
vmt_rdma_class vmt_rdma_msg_class(unsigned type);

/* Both sides start with the windows as credits.  Thresholds: data
 * window / 4 (at least 1), control window / 2 (at least 2).  Windows:
 * data >= 1, control >= 2. */
void vmt_rdma_credit_init(vmt_rdma_credit *c, uint32_t data_window, uint32_t ctrl_window);

/* May a message of `type` be sent now? */
bool vmt_rdma_credit_can_send(const vmt_rdma_credit *c, unsigned type);

/* Takes one credit of the type's class; fills the grants to put in the
 * message (all that is owed, at most UINT16_MAX each; none for WRITE). */
void vmt_rdma_credit_take(vmt_rdma_credit *c, unsigned type, uint16_t *grant, uint16_t *cgrant);

/* A message of `type` from the peer consumed one of our buffers.  Errors:
 * VMT_EPROTO (the peer sent more than it was granted). */
int vmt_rdma_credit_on_receive(vmt_rdma_credit *c, unsigned type);

/* The peer returned credits.  Errors: VMT_EPROTO (more than it could
 * owe: credits would exceed the window). */
int vmt_rdma_credit_on_grant(vmt_rdma_credit *c, uint32_t grant, uint32_t cgrant);

/* This side reposted n receive buffers of class k (now owed to the peer). */
void vmt_rdma_credit_reposted(vmt_rdma_credit *c, vmt_rdma_class k, uint32_t n);

/* Should an explicit CREDIT message go now (and may it)? */
bool vmt_rdma_credit_should_return(const vmt_rdma_credit *c);

/* ==== memory-registration planner ========================================= */

/*
 * The sender's plan of which chunks of the receiver's exposed range are
 * registered.  Touching a chunk that is not registered needs a
 * registration; when max_chunks are registered already, the least recently
 * used chunk without writes in flight is released in the same request.
 * The receiver registers and releases exactly as asked and refuses a
 * request beyond max_chunks, so the pinned total is bounded on both sides.
 * One thread at a time.
 */
typedef struct vmt_rdma_mrplan vmt_rdma_mrplan;

typedef enum vmt_rdma_plan_kind {
    VMT_RDMA_PLAN_HIT = 0,   /* registered: write */
    VMT_RDMA_PLAN_MISS = 1,  /* ask for it (releasing `evict` unless NONE) */
    VMT_RDMA_PLAN_BUSY = 2,  /* full and every chunk has writes in flight: wait */
} vmt_rdma_plan_kind;

typedef struct vmt_rdma_plan {
    vmt_rdma_plan_kind kind;
    uint32_t chunk, evict;
} vmt_rdma_plan;

typedef struct vmt_rdma_mrplan_stats {
    uint64_t hits, registrations, evictions;
    uint32_t registered;     /* chunks now */
    uint64_t pinned_bytes;   /* bytes now */
    uint64_t peak_pinned;    /* most bytes at once */
} vmt_rdma_mrplan_stats;

/* A plan for a range of region_len bytes in chunks of chunk_bytes (page
 * multiples; the last chunk may be short), at most max_chunks registered.
 * Errors: VMT_EINVAL, VMT_ENOMEM. */
int vmt_rdma_mrplan_new(vmt_rdma_mrplan **out, uint64_t region_len, uint64_t chunk_bytes,
                        uint32_t max_chunks);
void vmt_rdma_mrplan_free(vmt_rdma_mrplan *p);

uint32_t vmt_rdma_mrplan_nchunks(const vmt_rdma_mrplan *p);
/* The chunk holding byte `offset` (offset < region_len), and its extent. */
uint32_t vmt_rdma_mrplan_chunk_of(const vmt_rdma_mrplan *p, uint64_t offset);
void vmt_rdma_mrplan_extent(const vmt_rdma_mrplan *p, uint32_t chunk, uint64_t *off,
                            uint64_t *len);

/* What writing into `chunk` needs now (no state changes). */
vmt_rdma_plan vmt_rdma_mrplan_touch(const vmt_rdma_mrplan *p, uint32_t chunk);
/* A HIT was used: chunk becomes the most recently used. */
void vmt_rdma_mrplan_used(vmt_rdma_mrplan *p, uint32_t chunk);
/* A MISS was carried out: evict (unless NONE) released, chunk registered
 * with the receiver's rkey and address (most recently used). */
void vmt_rdma_mrplan_registered(vmt_rdma_mrplan *p, uint32_t chunk, uint32_t evict, uint32_t rkey,
                                uint64_t addr);
bool vmt_rdma_mrplan_is_registered(const vmt_rdma_mrplan *p, uint32_t chunk);
/* The receiver's rkey and address of a registered chunk. */
void vmt_rdma_mrplan_key(const vmt_rdma_mrplan *p, uint32_t chunk, uint32_t *rkey,
                         uint64_t *addr);
/* Writes into chunk in flight: +1 when posted, -1 when completed. */
void vmt_rdma_mrplan_busy(vmt_rdma_mrplan *p, uint32_t chunk, int delta);
void vmt_rdma_mrplan_get_stats(const vmt_rdma_mrplan *p, vmt_rdma_mrplan_stats *st);

/* ==== landed pages (receiver) ============================================= */

/* A bounded FIFO of page runs that landed; adjacent runs are merged. */
typedef struct vmt_rdma_landed {
    vmt_page_run *runs;
    size_t head, len, cap, max;
} vmt_rdma_landed;

void vmt_rdma_landed_init(vmt_rdma_landed *l, size_t max_runs);
void vmt_rdma_landed_free(vmt_rdma_landed *l);
/* Errors: VMT_ERANGE (max_runs undrained runs), VMT_ENOMEM. */
int vmt_rdma_landed_push(vmt_rdma_landed *l, uint64_t pfn, uint64_t npages);
size_t vmt_rdma_landed_pop(vmt_rdma_landed *l, vmt_page_run *out, size_t cap);

#endif
