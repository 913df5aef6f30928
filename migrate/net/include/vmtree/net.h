/*
 * vmtree migrate/net: the network half of live migration (DESIGN.md §3):
 * transports, framing, the handshake (version negotiation, authentication),
 * multi-stream sessions, and the page encodings (zero, reference, XBZRLE
 * delta, raw, LZ4, zstd) with the destination's compact id set.  The wire
 * format is written down in docs/wire-protocol.md.
 *
 * Layers, bottom up:
 *   transport  a byte stream behind an ops table (TCP, socketpair, in-memory,
 *              TLS over TCP, RDMA, and wrappers: fault injection, rate limit);
 *              sticky errors; timeouts; optional bulk placement of pages
 *              (RDMA WRITE; docs/rdma.md).  Addresses as URLs (tcp://, rdma://).
 *   frame      {magic, version, type, flags, length, checksum} + payload;
 *              every header checked before its payload is read.
 *   session    N streams set up by one handshake: Hello/HelloAck (version
 *              negotiation), PSK challenge/response both ways; control
 *              messages (proto/, vmt_wire_msg) and page batches.
 *   batch      the compact binary page batch, its writer and reader.
 *   xbzrle     page deltas and the source's bounded cache of sent pages.
 *   haveset    the destination's ids as a Golomb-Rice coded set of prefixes.
 *
 * Conventions: functions return 0 or a negative VMT_E* code with a message
 * (vmt_error_last()).  Handles are opaque; *_close / *_free accept NULL.
 * Timeouts are in milliseconds; VMT_NET_FOREVER waits without limit and 0
 * does not wait.  Nothing here keeps global state: OpenSSL is initialised
 * by OpenSSL itself on first use (1.1+).
 */
#ifndef VMTREE_NET_H
#define VMTREE_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtree/proto.h"
#include "vmtree/store.h"
#include "vmtree/util.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VMT_NET_PAGE_SIZE 4096u
/* Protocol versions this build speaks (negotiated in Hello/HelloAck).
 * Version 2: two-phase completion (COMMIT, PREPARED, GO, ACK) and
 * VmConfig.base; version 1 (one-phase COMMIT/ACK) is no longer spoken. */
#define VMT_NET_PROTO_MIN 2u
#define VMT_NET_PROTO_MAX 2u
/* Streams per session. */
#define VMT_NET_MAX_STREAMS 16u
#define VMT_NET_DEFAULT_TIMEOUT_MS 10000u
#define VMT_NET_FOREVER UINT32_MAX
/* Pre-shared key length limits (bytes). */
#define VMT_NET_PSK_MIN 16u
#define VMT_NET_PSK_MAX 1024u

/* ==== transports ========================================================= */

/* A bidirectional byte stream (opaque).  Thread-safety: one thread may send
 * while another receives; two concurrent sends (or receives) on one
 * transport are not allowed.  vmt_transport_shutdown and
 * vmt_transport_error may be called from any thread at any time. */
typedef struct vmt_transport vmt_transport;

struct vmt_bulk_config;
struct vmt_page_run;

/*
 * A transport implementation.  `impl` is the implementation's state.
 * Deadlines are absolute vmt_now_ns() values; UINT64_MAX means none.
 *   send      writes all `len` bytes or fails: VMT_ETIMEDOUT (the deadline
 *             passed; some bytes may have gone), VMT_EIO.
 *   recv      reads 1..len bytes (*got); *got = 0 with return 0 means the
 *             peer closed the stream cleanly; VMT_ETIMEDOUT with *got = 0
 *             when nothing arrived by the deadline (the stream stays usable);
 *             VMT_EIO.
 *   shutdown  ends both directions at once and wakes any thread blocked in
 *             send or recv (which then fail); idempotent; thread-safe.
 *   close     releases `impl` (and an inner transport it owns); never fails.
 *   describe  writes a short peer description ("tcp 127.0.0.1:4000").
 *   bulk_*    optional (NULL: none), see "bulk placement" below; place
 *             returns VMT_EINVAL / VMT_EUNSUPPORTED only when it wrote
 *             nothing, expose VMT_EINVAL / VMT_EEXIST only when it changed
 *             nothing (the generic layer keeps those from being sticky).
 * Each sets the thread's error message on failure.  The generic layer adds
 * exact reads, timeouts, sticky errors and byte counts on top.
 */
typedef struct vmt_transport_ops {
    const char *name;
    int (*send)(void *impl, const void *buf, size_t len, uint64_t deadline_ns);
    int (*recv)(void *impl, void *buf, size_t len, size_t *got, uint64_t deadline_ns);
    void (*shutdown)(void *impl);
    void (*close)(void *impl);
    void (*describe)(void *impl, char *buf, size_t cap);
    /* Optional: true once the peer's end was reset (its socket closed with
     * data unread, or data sent to a closed socket).  Wrappers forward it;
     * a cut of this side's own making is not the peer's. */
    bool (*peer_gone)(void *impl);
    /* Optional bulk placement (NULL where a transport has none; see
     * "bulk placement" below): expose is the receiver's, place and
     * can_place the sender's, landed the receiver's. */
    int (*bulk_expose)(void *impl, void *base, size_t len, const struct vmt_bulk_config *c);
    bool (*bulk_can_place)(void *impl);
    int (*bulk_place)(void *impl, uint64_t offset, const void *src, size_t len,
                      uint64_t deadline_ns);
    int (*bulk_landed)(void *impl, struct vmt_page_run *runs, size_t cap, size_t *n);
} vmt_transport_ops;

/* Wraps an implementation.  Takes ownership of `impl` (closed through
 * ops->close also when this fails).  `ops` is borrowed and must outlive the
 * transport (normally static).  Errors: VMT_ENOMEM. */
int vmt_transport_new(vmt_transport **out, const vmt_transport_ops *ops, void *impl);

/* Closes and frees.  NULL is fine.  Not concurrently with other calls. */
void vmt_transport_close(vmt_transport *t);

/* Sends all of buf[0..len) within the transport's timeout.  Errors: the
 * sticky error, VMT_ETIMEDOUT, VMT_EIO.  Any failure is sticky. */
int vmt_transport_send(vmt_transport *t, const void *buf, size_t len);

/*
 * Receives exactly `len` bytes within `timeout_ms` (vmt_transport_recv uses
 * the transport's timeout).  Errors: VMT_EIO (also when the peer closed:
 * vmt_transport_eof() then says true and the message says "closed by
 * peer"), VMT_ETIMEDOUT.  A timeout before the first byte leaves the stream
 * usable; every other failure (a timeout in the middle, EOF, I/O) is sticky.
 */
int vmt_transport_recv(vmt_transport *t, void *buf, size_t len);
int vmt_transport_recv_timeout(vmt_transport *t, void *buf, size_t len, uint32_t timeout_ms);

/* Receives 1..len bytes (*got) within timeout_ms: as recv_timeout, but
 * returns what has arrived. */
int vmt_transport_recv_some(vmt_transport *t, void *buf, size_t len, size_t *got,
                            uint32_t timeout_ms);

/* The timeout of send and recv (initially VMT_NET_DEFAULT_TIMEOUT_MS). */
void vmt_transport_set_timeout(vmt_transport *t, uint32_t timeout_ms);
uint32_t vmt_transport_timeout(const vmt_transport *t);

/* Shuts the stream down (peer sees EOF, blocked calls here fail) and makes
 * VMT_ECANCELED the sticky error unless one is set.  Thread-safe. */
void vmt_transport_shutdown(vmt_transport *t);

/* Records `code` with the thread's current message as the sticky error
 * (for layers above that found the stream unusable) and returns code. */
int vmt_transport_fail(vmt_transport *t, int code);

/* The sticky error (0 while healthy); the message of a failed transport is
 * re-set on the calling thread by every later call.  Thread-safe. */
int vmt_transport_error(const vmt_transport *t);
/* True once a receive found the peer's clean close. */
bool vmt_transport_eof(const vmt_transport *t);
/* True once the peer's end is known closed: a clean close (eof) or a reset
 * coming from the peer's host.  Either means the peer's process no longer
 * holds the connection; a timeout or a failure of this side's own making
 * (shutdown, fault injection) is not.  Thread-safe. */
bool vmt_transport_peer_gone(const vmt_transport *t);
/* "tcp 127.0.0.1:4000", "tls(tcp [::1]:4000)", ...; valid until close. */
const char *vmt_transport_peer(const vmt_transport *t);
/* Bytes through the transport so far (payload, as the caller sees it). */
uint64_t vmt_transport_bytes_sent(const vmt_transport *t);
uint64_t vmt_transport_bytes_received(const vmt_transport *t);

/* ---- TCP ------------------------------------------------------------------ */

/* A listener (opaque): TCP (vmt_tcp_listen) or RDMA (vmt_rdma_listen,
 * vmt_listen_url).  accept from one thread at a time. */
typedef struct vmt_listener vmt_listener;

/*
 * Listens on host:port.  `host` is an IPv4 or IPv6 literal ("127.0.0.1",
 * "::1", "[::1]") or a name; NULL means "127.0.0.1".  Port 0 picks an
 * ephemeral port (vmt_listener_port tells which).  Errors: VMT_EINVAL (the
 * host does not resolve), VMT_EIO (bind/listen failed, e.g. port in use).
 */
int vmt_tcp_listen(vmt_listener **out, const char *host, uint16_t port);
uint16_t vmt_listener_port(const vmt_listener *l);
/* Waits up to timeout_ms for a connection.  The new transport has
 * TCP_NODELAY and large socket buffers.  Errors: VMT_ETIMEDOUT, VMT_EIO. */
int vmt_listener_accept(vmt_listener *l, vmt_transport **out, uint32_t timeout_ms);
void vmt_listener_close(vmt_listener *l);

/* Connects to host:port (literal or name, every address tried in turn)
 * within timeout_ms.  Errors: VMT_EINVAL (no such host), VMT_ETIMEDOUT,
 * VMT_EIO (refused, unreachable). */
int vmt_tcp_connect(vmt_transport **out, const char *host, uint16_t port, uint32_t timeout_ms);

/* ---- addresses and URLs --------------------------------------------------- */

typedef enum vmt_net_scheme {
    VMT_NET_SCHEME_TCP = 0,  /* "tcp://" or no scheme */
    VMT_NET_SCHEME_RDMA = 1, /* "rdma://": librdmacm, reliable-connected QP */
} vmt_net_scheme;

#define VMT_NET_HOST_MAX 256u

/* A parsed migration address. */
typedef struct vmt_net_addr {
    vmt_net_scheme scheme;
    char host[VMT_NET_HOST_MAX]; /* name or literal, IPv6 without brackets */
    uint16_t port;               /* 0 only where the text said 0 (listen: any) */
} vmt_net_addr;

/*
 * Parses "rdma://10.0.0.1:4000", "tcp://host:4000", "host:4000",
 * "[::1]:4000" or "rdma://[fe80::1%eth0]:4000".  The scheme is "tcp" or
 * "rdma" (lower case; none means tcp); the host is a name
 * ([A-Za-z0-9._-]), an IPv4 literal, or an IPv6 literal in brackets; the
 * port is decimal 0..65535 and required.  Nothing may follow the port.
 * Errors: VMT_EINVAL with a message naming the bad part ("unknown scheme
 * \"udp\"", "no port", "port 70000 is out of range", "IPv6 address
 * without brackets"); *out is zeroed then.  Pure; thread-safe.
 */
int vmt_net_addr_parse(const char *text, vmt_net_addr *out);

/* Writes "rdma://[::1]:4000" (brackets around IPv6) into buf; truncates. */
void vmt_net_addr_format(const vmt_net_addr *a, char *buf, size_t cap);

/* "tcp", "rdma"; "?" otherwise. */
const char *vmt_net_scheme_name(vmt_net_scheme s);

/*
 * Connects a transport to a URL (as vmt_net_addr_parse reads it) within
 * timeout_ms: TCP as vmt_tcp_connect, RDMA as vmt_rdma_connect.  Port 0 is
 * refused.  Errors: VMT_EINVAL (bad URL), VMT_EUNSUPPORTED (rdma:// without
 * an RDMA device: nothing was sent), and the transport's connect errors.
 */
int vmt_transport_connect_url(vmt_transport **out, const char *url, uint32_t timeout_ms);

/*
 * Listens on a URL: "tcp://127.0.0.1:0", "rdma://10.0.0.2:4000".  Port 0
 * picks an ephemeral port (vmt_listener_port).  vmt_listener_accept and
 * vmt_session_accept work on either kind.  Errors: VMT_EINVAL (bad URL),
 * VMT_EUNSUPPORTED (rdma:// without an RDMA device), VMT_EIO.
 */
int vmt_listen_url(vmt_listener **out, const char *url);

/* The listener's scheme (VMT_NET_SCHEME_TCP for vmt_tcp_listen's). */
vmt_net_scheme vmt_listener_scheme(const vmt_listener *l);

/* ---- RDMA (librdmacm / ibverbs) -------------------------------------------- */

/*
 * The RDMA transport (docs/rdma.md): one reliable-connected queue pair per
 * transport, set up through rdma_cm; the byte stream travels in SEND/RECV
 * messages through pools of registered buffers with credit-based flow
 * control; bulk placement (below) writes pages straight into the
 * receiver's registered memory with RDMA WRITE with immediate.  It keeps
 * the transport contract: ordered bytes, deadlines, sticky errors, clean
 * EOF after the peer's data, shutdown waking blocked calls.
 */

/* 0 when this host has at least one RDMA device; otherwise
 * VMT_EUNSUPPORTED with a message naming what is missing ("no RDMA device:
 * ibv_get_device_list found none (...)").  Opens nothing that stays open;
 * thread-safe. */
int vmt_rdma_probe(void);

/* Connects to an RDMA listener at host:port (resolved by rdma_cm, i.e. an
 * IP address on an RDMA-capable interface) within timeout_ms.  The device
 * check comes first: without a device this fails with VMT_EUNSUPPORTED
 * before any packet is sent.  Errors: VMT_EUNSUPPORTED, VMT_EINVAL (host
 * does not resolve), VMT_ETIMEDOUT, VMT_EIO (rejected, unreachable, the
 * peer is not a vmtree RDMA listener), VMT_EPROTO (bad connection data),
 * VMT_ENOMEM (registration failed: the message says which limit). */
int vmt_rdma_connect(vmt_transport **out, const char *host, uint16_t port, uint32_t timeout_ms);

/* Listens for RDMA connections on host:port (NULL host: any address).
 * Errors: VMT_EUNSUPPORTED (no device; checked first), VMT_EINVAL,
 * VMT_EIO (bind/listen failed). */
int vmt_rdma_listen(vmt_listener **out, const char *host, uint16_t port);

/* ---- bulk placement ------------------------------------------------------ */

/*
 * An optional path for page data beside the byte stream.  The receiver
 * exposes a memory range (guest RAM); the sender places page-aligned bytes
 * at offsets of it; the receiver learns which pages landed.  Placement is
 * ordered with the stream: bytes sent after a place call reach the
 * receiver only after the placed pages have landed and are listed by
 * landed().  A transport without it (TCP, TLS, the wrappers) answers
 * VMT_EUNSUPPORTED and callers send pages in frames instead.
 *
 * RDMA: the range is registered in chunks on demand (the sender asks for a
 * chunk before its first write into it), with at most max_pinned bytes
 * registered at once; when full, the least recently used chunk without
 * writes in flight is unregistered first.  Pages travel by RDMA WRITE with
 * immediate (the page index), which tells the receiver what landed.
 */
typedef struct vmt_bulk_config {
    size_t chunk_bytes; /* registration unit (page multiple; 0: 64 MiB) */
    size_t max_pinned;  /* most bytes registered at once (>= one chunk;
                           0: 1 GiB) */
} vmt_bulk_config;

/* A run of pages that landed: page indexes [pfn, pfn + npages). */
typedef struct vmt_page_run {
    uint64_t pfn;
    uint64_t npages;
} vmt_page_run;

/*
 * Receiver: exposes base[0..len) (page-aligned, len a page multiple and at
 * most 2^32 pages; borrowed until the transport is closed) and tells the
 * peer.  Once per transport.  Progress (registering chunks the sender asks
 * for) happens inside this side's receive calls, so the receiver keeps a
 * receive pending while the sender places.  Errors: VMT_EUNSUPPORTED (no
 * bulk path), VMT_EINVAL, VMT_EEXIST (exposed before), the stream's.
 */
int vmt_transport_bulk_expose(vmt_transport *t, void *base, size_t len,
                              const vmt_bulk_config *c);

/* Sender: true once the peer's exposed range is known (it arrives in
 * stream order, so after the first bytes the receiver sent after exposing). */
bool vmt_transport_bulk_can_place(vmt_transport *t);

/*
 * Sender: places src[0..len) at `offset` of the peer's range (both page
 * multiples, inside it) within the transport's timeout.  Returns when the
 * bytes are on their way (src may be reused).  Errors: VMT_EUNSUPPORTED
 * (no bulk path or nothing exposed), VMT_EINVAL, VMT_ETIMEDOUT, VMT_EIO;
 * failures are sticky.
 */
int vmt_transport_bulk_place(vmt_transport *t, uint64_t offset, const void *src, size_t len);

/* Receiver: moves up to cap runs that landed (in order) into runs; *n = 0
 * when none.  Errors: VMT_EUNSUPPORTED, the sticky error. */
int vmt_transport_bulk_landed(vmt_transport *t, vmt_page_run *runs, size_t cap, size_t *n);

/* ---- local pairs (tests) ------------------------------------------------- */

/* Two connected transports over a socketpair(AF_UNIX) (the TCP code path on
 * a local socket).  Errors: VMT_EIO, VMT_ENOMEM. */
int vmt_transport_socketpair(vmt_transport **a, vmt_transport **b);

/* Two connected in-memory transports, each direction a ring buffer of
 * `capacity` bytes (0: 256 KiB); no file descriptors.  Each end is closed
 * on its own; the other then sees EOF.  Errors: VMT_ENOMEM. */
int vmt_transport_mem_pair(vmt_transport **a, vmt_transport **b, size_t capacity);

/* ---- fault injection --------------------------------------------------- */

typedef struct vmt_fault_opts {
    uint64_t cut_after_sent;   /* cut once this many bytes were sent (UINT64_MAX: never) */
    uint64_t cut_after_recv;   /* cut once this many bytes were received */
    uint64_t flip_sent_at;     /* invert the bits of the sent byte at this offset */
} vmt_fault_opts;

/* All UINT64_MAX: a transparent wrapper. */
void vmt_fault_opts_init(vmt_fault_opts *o);

/*
 * Wraps `inner` (ownership taken, also on failure): bytes pass through
 * unchanged until a cut point, where exactly the bytes before it pass, then
 * the inner stream is shut down (the peer sees EOF or a reset) and the call
 * fails with VMT_EIO "fault injection: cut after N bytes ...".  Errors:
 * VMT_ENOMEM.
 */
int vmt_transport_fault(vmt_transport **out, vmt_transport *inner, const vmt_fault_opts *o);

/* ---- rate limiting ------------------------------------------------------ */

/* A token bucket shared by any number of transports (thread-safe). */
typedef struct vmt_ratelimit vmt_ratelimit;

/* `bytes_per_s` 0 means unlimited; `burst` 0 means max(64 KiB, rate/20)
 * (the bucket's depth: what may go at once after idling).  Errors: VMT_ENOMEM. */
int vmt_ratelimit_new(vmt_ratelimit **out, uint64_t bytes_per_s, uint64_t burst);
/* Changes the rate at any time (0: unlimited); thread-safe. */
void vmt_ratelimit_set(vmt_ratelimit *r, uint64_t bytes_per_s);
void vmt_ratelimit_free(vmt_ratelimit *r);

/* Wraps `inner` (ownership taken, also on failure) so that its sends draw
 * from `r` (borrowed; must outlive the transport).  A send that would have
 * to wait past the transport's deadline fails with VMT_ETIMEDOUT.  Receives
 * pass through.  Errors: VMT_ENOMEM. */
int vmt_transport_rate(vmt_transport **out, vmt_transport *inner, vmt_ratelimit *r);

/* ---- TLS (OpenSSL) ------------------------------------------------------ */

typedef struct vmt_tls_config {
    bool server;
    const char *cert_file; /* PEM: server required; client optional (mutual TLS) */
    const char *key_file;  /* PEM private key of cert_file */
    const char *ca_file;   /* PEM CA: client required (verifies the server);
                              server: set to require and verify client certs */
} vmt_tls_config;

/* A TLS context (OpenSSL SSL_CTX, TLS 1.3 only) shared by the connections
 * of one side; thread-safe. */
typedef struct vmt_tls vmt_tls;

/* Errors: VMT_EINVAL (a file missing or not matching, a required file not
 * given; the message names it), VMT_ENOMEM. */
int vmt_tls_new(vmt_tls **out, const vmt_tls_config *c);
void vmt_tls_free(vmt_tls *t);

/*
 * Runs the TLS handshake over `tcp` (a transport from vmt_tcp_connect,
 * vmt_listener_accept or vmt_transport_socketpair; ownership taken, also on
 * failure) within its timeout and returns the encrypted transport.  A client
 * checks the server's certificate against the CA and `peer_name` (a DNS
 * name or an IP literal; NULL: not checked).  `tls` is borrowed and must
 * outlive the transport.  Errors: VMT_EAUTH (certificate refused; the
 * message says why), VMT_EINVAL (tcp is not a socket transport),
 * VMT_ETIMEDOUT, VMT_EIO.
 */
int vmt_transport_tls(vmt_transport **out, vmt_transport *tcp, vmt_tls *tls,
                      const char *peer_name);

/*
 * Writes a throw-away PKI for tests, benchmarks and trials into `dir`
 * (must exist): ca.pem (self-signed CA), server.pem/server.key (for
 * "localhost", 127.0.0.1 and ::1) and client.pem/client.key, EC P-256,
 * valid for a day.  Errors: VMT_EIO, VMT_ERR (OpenSSL failed).
 */
int vmt_tls_write_test_pki(const char *dir);

/* ==== frames ============================================================== */

#define VMT_FRAME_MAGIC 0x564d5457u /* "VMTW" */
#define VMT_FRAME_VERSION 1u
#define VMT_FRAME_HEADER_LEN 20u
/* No frame carries more (a page batch's or state blob's worst case fits). */
#define VMT_FRAME_MAX_PAYLOAD ((16u << 20) + 4096u)

/* The frame header as plain values; on the wire big-endian, in this order. */
typedef struct vmt_frame_header {
    uint32_t magic;
    uint16_t version, type, flags, reserved;
    uint32_t length;   /* payload bytes */
    uint32_t checksum; /* XXH32 (seed 0) of header bytes 0..15 and the payload */
} vmt_frame_header;

/* The cap on a payload of `type`: the page batch's or proto/'s
 * (vmt_wire_max_len); 0 for unknown types. */
size_t vmt_frame_max_payload(unsigned type);

/* Fills h for a payload and writes the 20 header bytes (checksum included). */
void vmt_frame_header_build(unsigned type, const void *payload, size_t len,
                            uint8_t out[VMT_FRAME_HEADER_LEN]);

/*
 * Parses and checks 20 header bytes, in this order: magic (VMT_ECORRUPT
 * "not a vmtree migration stream"), version (VMT_EUNSUPPORTED), type
 * (VMT_EPROTO "unknown frame type"), flags and reserved (VMT_EPROTO: must be
 * 0 in version 1), length against the type's cap (VMT_ERANGE).  The
 * checksum is checked later with the payload (vmt_frame_verify).
 */
int vmt_frame_header_parse(const uint8_t in[VMT_FRAME_HEADER_LEN], vmt_frame_header *h);

/* Checks the checksum of a parsed header against its payload.
 * Errors: VMT_ECORRUPT. */
int vmt_frame_verify(const uint8_t hdr[VMT_FRAME_HEADER_LEN], const void *payload, size_t len);

/*
 * Parses one whole frame held in memory: header checks, exact length,
 * checksum.  *payload points into buf.  Errors: as above, VMT_ECORRUPT
 * (truncated or trailing bytes).  Thread-safe, pure.
 */
int vmt_frame_parse(const uint8_t *buf, size_t len, vmt_frame_header *h, const uint8_t **payload,
                    size_t *payload_len);

/* A received frame; its buffer is reused from one receive to the next. */
typedef struct vmt_frame {
    unsigned type;
    uint8_t *payload; /* owned; valid until the next receive or vmt_frame_free */
    size_t len;
    size_t cap;
} vmt_frame;

void vmt_frame_init(vmt_frame *f);
void vmt_frame_free(vmt_frame *f);

/* Sends one frame (header and payload).  Errors: the transport's. */
int vmt_frame_send(vmt_transport *t, unsigned type, const void *payload, size_t len);

/* Encodes and sends a control message. */
int vmt_frame_send_msg(vmt_transport *t, const vmt_wire_msg *m);

/*
 * Receives one frame within timeout_ms (for the header's first byte; the
 * rest within the transport's timeout).  The header is checked before the
 * payload is read (a bad magic, version, type or an oversized length is
 * refused before any byte of the payload is read or memory allocated), the
 * checksum after.  Any refusal is sent to the peer as an ERROR frame (best
 * effort), the stream is shut down and the error made sticky.  An ERROR
 * frame from the peer is returned as its code with the message "peer
 * <who>: <its message>".  Errors: those of vmt_frame_header_parse and
 * vmt_frame_verify, the transport's, VMT_ENOMEM.
 */
int vmt_frame_recv(vmt_transport *t, vmt_frame *f, uint32_t timeout_ms);

/* Tells the peer why this side gives up (an ERROR frame with `code` and the
 * thread's current message; best effort, short timeout), shuts the stream
 * down and makes `code` sticky.  Returns code. */
int vmt_frame_refuse(vmt_transport *t, int code);

/* ==== sessions ============================================================ */

/* A migration connection: N streams (opaque).  Stream 0 carries the control
 * messages; page batches may go on any.  Threads: each stream's sending side
 * and receiving side may each be used by one thread at a time; different
 * streams in parallel.  The first failure on any stream fails the whole
 * session (sticky; all its streams are shut down so blocked threads wake).
 * A failure of this side's own making (a refusal, a timeout, an abort) is
 * first told to the peer in an ERROR frame on every stream; the peer's
 * stated reason, when one arrives, replaces a failure that was only its
 * consequence (EOF on another stream). */
typedef struct vmt_session vmt_session;

/* Opens stream `index` of a new session (client side). */
typedef int (*vmt_dial_fn)(void *ctx, unsigned index, vmt_transport **out);
/* Waits for the next incoming stream (server side) until deadline_ns
 * (VMT_ETIMEDOUT then).  The server calls it with short deadlines while it
 * watches stream 0 for a client that gave up. */
typedef int (*vmt_accept_fn)(void *ctx, uint64_t deadline_ns, vmt_transport **out);

typedef struct vmt_session_config {
    unsigned nstreams;         /* client: streams to open, 1..VMT_NET_MAX_STREAMS */
    unsigned max_streams;      /* server: most streams accepted (<= VMT_NET_MAX_STREAMS) */
    const uint8_t *psk;        /* pre-shared key (borrowed) or NULL */
    size_t psk_len;            /* VMT_NET_PSK_MIN..VMT_NET_PSK_MAX */
    bool allow_unauthenticated; /* server: accept without PSK (e.g. TLS with client
                                  certificates, or tests); client: accept a server
                                  that asks for none */
    uint32_t min_version;      /* protocol versions offered (tests) */
    uint32_t max_version;
    uint32_t features;         /* VMT_WIRE_FEAT_* offered */
    uint32_t timeout_ms;       /* every handshake step and the streams' I/O */
    vmt_tls *tls;              /* TCP helpers: TLS on every stream (borrowed) */
    const char *tls_peer_name; /* client: name the server certificate must carry
                                  (NULL: the host connected to) */
    vmt_ratelimit *rate;       /* TCP helpers: sends of every stream (borrowed) */
    /* vmt_session_connect: wraps stream `index` after TLS and the rate limit
     * (fault injection in tests); replaces *t, ownership in and out. */
    int (*wrap)(void *ctx, unsigned index, vmt_transport **t);
    void *wrap_ctx;
} vmt_session_config;

/* Defaults: 1 stream, max 16, no key, versions VMT_NET_PROTO_MIN..MAX, all
 * features, 10 s. */
void vmt_session_config_init(vmt_session_config *c);

/*
 * Client side: dials stream 0, negotiates (Hello/HelloAck: the highest
 * common version; none is a VMT_EUNSUPPORTED refusal naming both ranges),
 * authenticates (PSK: both sides prove the key; a wrong key is VMT_EAUTH on
 * both sides), then dials and authenticates streams 1..nstreams-1 the same
 * way under the session id.  `c` and its pointers are borrowed for the
 * call; tls and rate must outlive the session.  Errors: VMT_EINVAL (bad
 * config), VMT_EUNSUPPORTED, VMT_EAUTH, VMT_EPROTO, VMT_ECORRUPT (the peer
 * sent bad frames), what dial returns, VMT_ETIMEDOUT, VMT_EIO.
 */
int vmt_session_client(vmt_session **out, const vmt_session_config *c, vmt_dial_fn dial,
                       void *ctx);

/*
 * Server side: accepts stream 0 and runs the handshake; a peer that sends
 * anything but a valid Hello, offers no common version or fails
 * authentication is refused with an ERROR frame before anything else is
 * read from it.  Then accepts the other streams the client announced,
 * each of which must present the session id and a free stream index.
 * Errors: as for the client.
 */
int vmt_session_server(vmt_session **out, const vmt_session_config *c, vmt_accept_fn accept,
                       void *ctx);

/* Both over TCP (+ TLS when c->tls, + rate limit when c->rate). */
int vmt_session_connect(vmt_session **out, const char *host, uint16_t port,
                        const vmt_session_config *c);
int vmt_session_accept(vmt_session **out, vmt_listener *l, const vmt_session_config *c);

/*
 * Client side over a URL (vmt_net_addr_parse): "tcp://h:p" or "h:p" as
 * vmt_session_connect; "rdma://h:p" dials every stream over RDMA (rate
 * limit as configured; TLS is refused: VMT_EINVAL "TLS over rdma:// is not
 * supported").  Without an RDMA device an rdma:// URL fails with
 * VMT_EUNSUPPORTED naming the missing device before any byte is sent.
 * vmt_session_accept serves either kind of listener.  Errors: those of
 * vmt_session_connect, VMT_EINVAL (bad URL), VMT_EUNSUPPORTED.
 */
int vmt_session_connect_url(vmt_session **out, const char *url, const vmt_session_config *c);

/*
 * Bulk placement through a session (see "bulk placement"): the session
 * layer uses it for a stream whose transport offers it and falls back to
 * page batches in frames otherwise.
 *   expose   destination: exposes `ram` on every stream; VMT_EUNSUPPORTED
 *            (and nothing exposed) when a stream has no bulk path.
 *   can_place  source: the stream's peer exposed memory.
 *   place    source: writes `npages` pages at page index pfn on `stream`;
 *            placed pages reach the destination before the stream's next
 *            frame (send the frame that refers to them afterwards).
 *   landed   destination: runs that landed on `stream` so far.
 * Errors: VMT_EUNSUPPORTED, VMT_EINVAL, the session's sticky error; a
 * failed place or landed fails the session.
 */
int vmt_session_bulk_expose(vmt_session *s, void *ram, size_t len, const vmt_bulk_config *c);
bool vmt_session_bulk_can_place(vmt_session *s, unsigned stream);
int vmt_session_bulk_place(vmt_session *s, unsigned stream, uint64_t pfn, const void *pages,
                           size_t npages);
int vmt_session_bulk_landed(vmt_session *s, unsigned stream, vmt_page_run *runs, size_t cap,
                            size_t *n);

/* Closes every stream and frees.  NULL is fine. */
void vmt_session_close(vmt_session *s);

unsigned vmt_session_nstreams(const vmt_session *s);
/* The session's 16-byte id (chosen by the client, VMT_WIRE_SESSION_ID_LEN). */
void vmt_session_id(const vmt_session *s, uint8_t out[16]);
/* The negotiated protocol version and features. */
unsigned vmt_session_version(const vmt_session *s);
uint32_t vmt_session_features(const vmt_session *s);
/* The stream's transport (for statistics); owned by the session. */
vmt_transport *vmt_session_stream(vmt_session *s, unsigned index);

/* Sends a control message / a page batch payload on `stream`.  Errors: the
 * session's sticky error, VMT_EINVAL (bad stream), the transport's. */
int vmt_session_send(vmt_session *s, unsigned stream, const vmt_wire_msg *m);
int vmt_session_send_batch(vmt_session *s, unsigned stream, const void *payload, size_t len);

/* Sends one frame of any known `type` (e.g. the golden image messages of
 * proto.h, already encoded) on `stream`.  Errors: as vmt_session_send. */
int vmt_session_send_frame(vmt_session *s, unsigned stream, unsigned type, const void *payload,
                           size_t len);

/* Receives the next frame of `stream` (any type) within timeout_ms.  An
 * ERROR frame from the peer fails the session with the peer's code and
 * message. */
int vmt_session_recv(vmt_session *s, unsigned stream, vmt_frame *f, uint32_t timeout_ms);

/*
 * Receives the next frame of `stream`, which must be the control message
 * `expect` (or any control message when expect is 0), and decodes it into
 * *m (release with vmt_wire_msg_clear).  Anything else is refused: the peer
 * gets an ERROR frame and the session fails with VMT_EPROTO "expected X,
 * got Y".
 */
int vmt_session_recv_msg(vmt_session *s, unsigned stream, unsigned expect, vmt_wire_msg *m,
                         uint32_t timeout_ms);

/* Gives up: sends ERROR {code, message} on every stream (best effort),
 * shuts every stream down, makes code the sticky error (unless the session
 * had failed already).  Returns the session's error. */
int vmt_session_abort(vmt_session *s, int code, const char *message);

/* The sticky error (0 while healthy).  Thread-safe. */
int vmt_session_error(const vmt_session *s);

/* After a failure: true when it came from the peer's side: its ERROR frame
 * (its stated reason), or its end of stream `stream` closed or reset
 * (vmt_transport_peer_gone).  False for timeouts and failures of this
 * side's own making.  Thread-safe. */
bool vmt_session_peer_ended(vmt_session *s, unsigned stream);

typedef struct vmt_session_stats {
    uint64_t bytes_sent, bytes_received; /* all streams, frames included */
    uint64_t handshake_ns;               /* setup of every stream */
} vmt_session_stats;
void vmt_session_get_stats(const vmt_session *s, vmt_session_stats *st);

/* ==== XBZRLE ============================================================== */

/*
 * A delta of a 4 KiB page against its previous version, as a sequence of
 * {unchanged-run uleb128, changed-run uleb128, changed bytes} (QEMU's
 * XBZRLE form); trailing unchanged bytes are implied.  An unchanged page is
 * an empty delta.
 */

/* Encodes new_page against old_page into out[0..cap).  Errors: VMT_ERANGE
 * when the delta needs more than cap bytes (send the page otherwise).
 * Pure; thread-safe. */
int vmt_xbzrle_encode(const uint8_t *old_page, const uint8_t *new_page, uint8_t *out, size_t cap,
                      size_t *out_len);

/* Checks a delta completely (runs within the page, no empty pairs, no
 * trailing bytes).  Errors: VMT_ECORRUPT.  Pure. */
int vmt_xbzrle_check(const uint8_t *delta, size_t len);

/* Applies a delta to `page` (holding the previous version) after checking
 * it; on error the page is untouched.  Errors: VMT_ECORRUPT. */
int vmt_xbzrle_decode(const uint8_t *delta, size_t len, uint8_t *page);

/* The source's cache of the last copy sent of each page, bounded in bytes,
 * evicting by the clock algorithm (opaque; one thread at a time). */
typedef struct vmt_xbzrle_cache vmt_xbzrle_cache;

/* Capacity in bytes (rounded down to pages; at least one page).
 * Errors: VMT_EINVAL (below a page), VMT_ENOMEM. */
int vmt_xbzrle_cache_new(vmt_xbzrle_cache **out, size_t capacity_bytes);
void vmt_xbzrle_cache_free(vmt_xbzrle_cache *c);
/* The cached copy of pfn (valid until the next put/drop/reset), or NULL. */
const uint8_t *vmt_xbzrle_cache_get(vmt_xbzrle_cache *c, uint64_t pfn);
/* Stores a copy of `page` as pfn's last sent version (evicting another
 * page when full).  Never fails. */
void vmt_xbzrle_cache_put(vmt_xbzrle_cache *c, uint64_t pfn, const uint8_t *page);
void vmt_xbzrle_cache_drop(vmt_xbzrle_cache *c, uint64_t pfn);
/* Forgets everything (after a failed send the peer's copies are unknown). */
void vmt_xbzrle_cache_reset(vmt_xbzrle_cache *c);

typedef struct vmt_xbzrle_cache_stats {
    size_t capacity_pages, pages;
    uint64_t hits, misses, evictions;
} vmt_xbzrle_cache_stats;
void vmt_xbzrle_cache_get_stats(const vmt_xbzrle_cache *c, vmt_xbzrle_cache_stats *st);

/* ==== the destination's id set ============================================ */

/* Default false-positive exponent: a page the destination lacks is taken as
 * present with probability at most 2^-32 (then sent as REF, answered with
 * WANT and resent in full: see docs/wire-protocol.md). */
#define VMT_HAVESET_FP_BITS 32u
/* Most encoded bytes per HaveSet chunk (below VMT_WIRE_HAVESET_MAX_BYTES). */
#define VMT_HAVESET_CHUNK_BYTES (4u << 20)

/* Called for each chunk, in order; its data is valid during the call. */
typedef int (*vmt_haveset_emit_fn)(void *ctx, const vmt_wire_have_set *chunk);

/*
 * Encodes the ids ids[0..n) (any order, duplicates fine; borrowed) as a
 * Golomb-Rice coded sorted set of their top k = ceil(log2 n) + fp_bits bits
 * (at most 64), in chunks of at most VMT_HAVESET_CHUNK_BYTES, emitting each.
 * n = 0 gives one empty last chunk.  fp_bits in 8..48 (0: default).
 * Errors: VMT_EINVAL, VMT_ENOMEM, what emit returns.  Thread-safe.
 */
int vmt_haveset_encode(const vmt_id *ids, size_t n, unsigned fp_bits, vmt_haveset_emit_fn emit,
                       void *ctx);

/* The decoded set (opaque); lookups are thread-safe once complete. */
typedef struct vmt_haveset vmt_haveset;

/* An empty set accepting at most max_ids ids over all chunks. */
int vmt_haveset_new(vmt_haveset **out, uint64_t max_ids);
void vmt_haveset_free(vmt_haveset *h);

/*
 * Adds a received chunk after checking it: the same prefix_bits as before,
 * first = the last value so far, count and total consistent, every value in
 * range and ascending, the bit stream exactly consumed.  On error the set is
 * unchanged.  Errors: VMT_ECORRUPT, VMT_ERANGE (beyond max_ids),
 * VMT_EPROTO (a chunk after the last), VMT_ENOMEM.
 */
int vmt_haveset_add_chunk(vmt_haveset *h, const vmt_wire_have_set *chunk);

/* True once the last chunk was added. */
bool vmt_haveset_complete(const vmt_haveset *h);
uint64_t vmt_haveset_count(const vmt_haveset *h);
/* True when the destination (probably) holds id: always for ids it holds,
 * with probability <= 2^-fp_bits for others. */
bool vmt_haveset_contains(const vmt_haveset *h, const vmt_id *id);

/* ==== page batches ======================================================== */

/* How one page travels (docs/wire-protocol.md). */
typedef enum vmt_page_enc {
    VMT_PAGE_ZERO = 0,  /* all zero; no bytes */
    VMT_PAGE_REF = 1,   /* the 16-byte id of a page the destination holds */
    VMT_PAGE_DELTA = 2, /* XBZRLE against the copy sent before */
    VMT_PAGE_RAW = 3,   /* 4096 bytes */
    VMT_PAGE_LZ4 = 4,   /* LZ4 block of the 4096 bytes */
    VMT_PAGE_ZSTD = 5,  /* zstd frame of the 4096 bytes */
} vmt_page_enc;
#define VMT_PAGE_ENC_COUNT 6

/* Compression of a whole batch's records. */
typedef enum vmt_batch_codec {
    VMT_BATCH_PLAIN = 0,
    VMT_BATCH_LZ4 = 1,
    VMT_BATCH_ZSTD = 2,
} vmt_batch_codec;

/* "zero", "ref", "delta", "raw", "lz4", "zstd"; "?" otherwise. */
const char *vmt_page_enc_name(int enc);

/* Pages per batch, and the largest delta / compressed page accepted. */
#define VMT_BATCH_MAX_PAGES 2048u
#define VMT_BATCH_MAX_PAYLOAD VMT_FRAME_MAX_PAYLOAD

typedef struct vmt_batch_opts {
    vmt_page_enc page_codec;     /* RAW, LZ4 or ZSTD for pages sent in full */
    vmt_batch_codec batch_codec; /* on top, for the whole batch */
    int level;                   /* zstd level (1..19) / LZ4 acceleration (1..64) */
    size_t delta_max;            /* a delta longer than this is not used (1..4095) */
} vmt_batch_opts;

/* RAW pages, plain batches, level 1, delta_max 2048. */
void vmt_batch_opts_init(vmt_batch_opts *o);

typedef struct vmt_batch_stats {
    uint64_t pages[VMT_PAGE_ENC_COUNT]; /* by encoding */
    uint64_t bytes[VMT_PAGE_ENC_COUNT]; /* record payload bytes by encoding */
    uint64_t delta_fallbacks;           /* deltas too long, sent otherwise */
    uint64_t batches, payload_bytes;    /* finished batches and their sizes */
} vmt_batch_stats;

/* Builds batches (opaque; one thread at a time). */
typedef struct vmt_batch_writer vmt_batch_writer;

/*
 * `cache` (may be NULL: no deltas) and `have` (may be NULL: no references)
 * are borrowed and must outlive the writer.  With a cache, every page added
 * is stored in it as the destination's future base, so the batches must
 * reach the destination in order (per round) or the cache be reset.
 * Errors: VMT_EINVAL (bad options), VMT_ENOMEM.
 */
int vmt_batch_writer_new(vmt_batch_writer **out, const vmt_batch_opts *o, vmt_xbzrle_cache *cache,
                         const vmt_haveset *have);
void vmt_batch_writer_free(vmt_batch_writer *w);

/* Starts an empty batch of round `round`. */
void vmt_batch_writer_begin(vmt_batch_writer *w, uint32_t round);

/*
 * Adds page `pfn` (4096 bytes at `page`, copied first so that a guest
 * writing it meanwhile cannot tear the encoding), choosing: ZERO; REF when
 * `have` holds its id; DELTA when the cache has a copy and the delta is
 * short; else the page codec (RAW when compression does not pay).
 * Errors: VMT_ERANGE (the batch holds VMT_BATCH_MAX_PAGES already).
 */
int vmt_batch_writer_add(vmt_batch_writer *w, uint64_t pfn, const void *page);
size_t vmt_batch_writer_count(const vmt_batch_writer *w);

/* Finishes the batch: *payload (owned by the writer, valid until the next
 * begin) is the frame payload.  Errors: VMT_ENOMEM, VMT_ERR (a codec failed). */
int vmt_batch_writer_finish(vmt_batch_writer *w, const uint8_t **payload, size_t *len);

/* Totals since the writer was made. */
const vmt_batch_stats *vmt_batch_writer_stats(const vmt_batch_writer *w);

/* One page record of a parsed batch; data points into the reader. */
typedef struct vmt_page_rec {
    uint64_t pfn;
    vmt_page_enc enc;
    const uint8_t *data; /* REF: the 16-byte id */
    size_t len;
} vmt_page_rec;

/* Parses batches (opaque; one thread at a time). */
typedef struct vmt_batch_reader vmt_batch_reader;

/* Pfns must lie in [0, npages).  Errors: VMT_EINVAL, VMT_ENOMEM. */
int vmt_batch_reader_new(vmt_batch_reader **out, uint64_t npages);
void vmt_batch_reader_free(vmt_batch_reader *r);

/*
 * Parses and checks a whole batch payload before anything is applied:
 * header, count (1..VMT_BATCH_MAX_PAGES), whole-batch decompression within
 * its declared size, every record's pfn (< npages), encoding and length
 * (ZERO 0, REF 16, RAW 4096, DELTA a valid delta, LZ4/ZSTD within their
 * bounds), no trailing bytes.  The payload is borrowed only during the
 * call.  Errors: VMT_ECORRUPT (the message names the record), VMT_ENOMEM.
 */
int vmt_batch_reader_parse(vmt_batch_reader *r, const uint8_t *payload, size_t len);
uint32_t vmt_batch_reader_round(const vmt_batch_reader *r);
size_t vmt_batch_reader_count(const vmt_batch_reader *r);
/* Record i of the parsed batch (i < count); valid until the next parse. */
const vmt_page_rec *vmt_batch_reader_rec(const vmt_batch_reader *r, size_t i);

/*
 * Writes the page of `rec` into page[0..4096): ZERO, RAW, LZ4, ZSTD fill it;
 * DELTA applies onto it (it must hold the version sent before); REF is the
 * caller's (look the id up in the store): VMT_EINVAL.  On error the page is
 * untouched.  Errors: VMT_ECORRUPT (does not decompress to exactly 4096
 * bytes), VMT_EINVAL.
 */
int vmt_batch_reader_apply(vmt_batch_reader *r, const vmt_page_rec *rec, void *page);

#ifdef __cplusplus
}
#endif
#endif
