/*
 * Shared helpers of the migrate/net suites: connected transport pairs of
 * every kind (real TCP on 127.0.0.1 with ephemeral ports, TLS with a test
 * PKI made at run time), deterministic content, and a small reference
 * implementation of the migration exchange (source and destination) used to
 * drive sessions end to end, with and without injected faults.
 */
#ifndef VMTREE_NET_FIXTURE_H
#define VMTREE_NET_FIXTURE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "harness.h"
#include "vmtree/net.h"

/* Timeout used by fixture transports and sessions (ms). */
#define NET_TIMEOUT_MS 5000u

/* ---- content ------------------------------------------------------------- */

/* Fills p[0..n) with a pattern derived from seed (xorshift). */
void net_fill(void *p, size_t n, uint64_t seed);
uint64_t net_rand(uint64_t *state);

/* A page of "realistic" content by kind: 0 zero, 1 text-like, 2 random,
 * 3 sparse (mostly zero with a few words set). */
void net_page(uint8_t *page, unsigned kind, uint64_t seed);

/* ---- transport pairs ----------------------------------------------------- */

/* Makes a connected pair; a is the "client" end. */
typedef int (*net_pair_fn)(vmt_transport **a, vmt_transport **b);

int net_pair_tcp(vmt_transport **a, vmt_transport **b);
int net_pair_tcp6(vmt_transport **a, vmt_transport **b);
int net_pair_socketpair(vmt_transport **a, vmt_transport **b);
int net_pair_mem(vmt_transport **a, vmt_transport **b);
int net_pair_tls(vmt_transport **a, vmt_transport **b);
/* TCP with both ends' sends limited to NET_RATE_BPS (one bucket per end). */
int net_pair_rate(vmt_transport **a, vmt_transport **b);
#define NET_RATE_BPS (400ull << 20)
/* TCP with both ends wrapped in a transparent fault wrapper (no cut). */
int net_pair_fault(vmt_transport **a, vmt_transport **b);
/* RDMA over rdma_cm on $VMTREE_RDMA_ADDR (default 127.0.0.1; it must be an
 * address of an RDMA-capable interface).  VMT_EUNSUPPORTED without a device. */
int net_pair_rdma(vmt_transport **a, vmt_transport **b);
/* The address net_pair_rdma listens on. */
const char *net_rdma_addr(void);

/* The test PKI (made once per process in a temporary directory, removed at
 * exit) and TLS contexts over it. */
const char *net_pki_dir(void);
/* Path of a file of the PKI (static buffer per call; copy it). */
const char *net_pki_file(const char *name);
vmt_tls *net_tls_server(void);
vmt_tls *net_tls_client(void);

/* ---- threads ------------------------------------------------------------- */

typedef struct net_thread {
    pthread_t tid;
    int (*fn)(void *arg);
    void *arg;
    int rc;
    char msg[512]; /* the thread's vmt_error_last() when fn failed */
} net_thread;

/* Runs fn(arg) on a new thread; net_join returns its result. */
void net_spawn(net_thread *t, int (*fn)(void *arg), void *arg);
int net_join(net_thread *t);

/* ---- sessions ------------------------------------------------------------ */

/* Sessions over in-memory streams (which offer bulk placement): the client
 * dials with net_mem_dial, each dial making a pair whose other end the
 * server's net_mem_accept takes.  Initialise with net_mem_link_init. */
typedef struct net_mem_link {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    vmt_transport *pending[VMT_NET_MAX_STREAMS];
    unsigned n, taken;
    size_t capacity; /* ring bytes per direction (0: the default) */
} net_mem_link;

void net_mem_link_init(net_mem_link *l, size_t capacity);
int net_mem_dial(void *ctx /* net_mem_link* */, unsigned index, vmt_transport **out);
int net_mem_accept(void *ctx /* net_mem_link* */, uint64_t deadline, vmt_transport **out);

/* A server session accepted on a thread while the client connects here. */
typedef struct net_session_pair {
    vmt_session *client, *server;
    int client_rc, server_rc;
    char client_msg[512], server_msg[512];
} net_session_pair;

/* Sets up both sides over TCP on 127.0.0.1 (port 0).  Each config may
 * carry its own key, versions, TLS.  Fills p; both sessions are NULL on a
 * side's failure.  Returns 0 when both succeeded. */
int net_session_pair_tcp(net_session_pair *p, const vmt_session_config *client,
                         const vmt_session_config *server);
void net_session_pair_close(net_session_pair *p);

/* ---- the reference migration exchange ------------------------------------ */

typedef struct net_mig {
    uint64_t npages;
    unsigned rounds;             /* >= 1; round r > 0 resends dirty[r] pages */
    size_t batch_pages;          /* pages per batch */
    vmt_batch_opts bopts;
    bool xbzrle;                 /* source keeps a cache (deltas) */
    bool use_haveset;            /* destination announces what it holds */
    /* Source RAM per round: ram[r] is the content at round r (npages pages). */
    uint8_t *ram[4];
    bool *dirty[4];              /* pages sent in round r (r >= 1) */
    /* Destination: pages it holds (by content), and its RAM. */
    const uint8_t *held;         /* nheld pages */
    size_t nheld;
    /* Pages announced in the HaveSet but not held (false positives). */
    const uint8_t *extra;
    size_t nextra;
    uint64_t wanted;             /* pages the destination asked for again */
    uint8_t *dst;                /* npages pages, initially zero */
    uint8_t state[256];          /* the "state blob" */
    /* Results. */
    uint8_t got_state[256];
    bool committed;              /* destination saw COMMIT and acknowledged */
    bool acked;                  /* source saw ACK */
    vmt_batch_stats stats;       /* source's batch statistics */
    uint8_t *own;                /* what net_mig_init allocated */
} net_mig;

/* Runs the source / destination side of the exchange on a session. */
int net_mig_source(vmt_session *s, net_mig *m);
int net_mig_dest(vmt_session *s, net_mig *m);

/* Allocates ram/dirty/dst for rounds and fills realistic content; pages of
 * later rounds differ from the round before in a few bytes (dirty). */
int net_mig_init(net_mig *m, uint64_t npages, unsigned rounds, uint64_t seed);
void net_mig_free(net_mig *m);

/* True when every destination page equals the source's last version. */
bool net_mig_dst_matches(const net_mig *m);
/* True when every destination page equals zero or some version the
 * source had (nothing partial or foreign was applied). */
bool net_mig_dst_plausible(const net_mig *m);

#endif
