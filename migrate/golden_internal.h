/*
 * Internals of the golden image transfer (golden_*.c): message helpers, an
 * id -> value hash map, the provider loop and the receiver.  Never included
 * outside migrate/.
 */
#ifndef VMTREE_GOLDEN_INTERNAL_H
#define VMTREE_GOLDEN_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtree/golden.h"
#include "vmtree/proto.h"

/* ---- messages (golden_wire.c) --------------------------------------------- */

/* Encodes and sends *m on stream 0. */
int golden_send(vmt_session *s, const vmt_golden_msg *m);

/* Receives the next frame on stream 0 within timeout_ms and decodes it;
 * it must be `expect` (or, with expect 0, any golden message): anything
 * else fails the session with VMT_EPROTO "expected X, got Y".  *f is the
 * caller's frame buffer (reused); release *m with vmt_golden_msg_clear. */
int golden_recv(vmt_session *s, vmt_frame *f, unsigned expect, vmt_golden_msg *m,
                uint32_t timeout_ms);

/* Ends the session because of this side's failure `rc` (its message is the
 * thread's): the peer gets an ERROR frame with it unless the session had
 * failed already.  Returns rc with its message kept. */
int golden_fail(vmt_session *s, int rc);

/* The snapshot `id` and its first parents still in `st`, newest first, at
 * most 1 + max_ancestors (and VMT_GOLDEN_MAX_SNAPS); *ids is the caller's.
 * VMT_ENOENT when `id` is not in the store. */
int golden_chain(vmt_store *st, const vmt_id *id, uint32_t max_ancestors, vmt_id **ids, size_t *n);

/* Checks and opens a received object: it must be `want` of type `type`,
 * decompress to exactly its raw length, and hash to its id.  dst holds at
 * least o->raw_len bytes.  VMT_ECORRUPT (naming the object) otherwise. */
int golden_object_open(const vmt_golden_object *o, const vmt_id *want, unsigned type, void *dst);

/* ---- an id -> value hash map (golden_wire.c) ------------------------------ */

typedef struct golden_idmap {
    vmt_id *keys;
    uint64_t *vals;
    uint8_t *used;
    size_t cap, n; /* cap a power of two, n < cap / 2 */
} golden_idmap;

void golden_idmap_init(golden_idmap *m);
void golden_idmap_free(golden_idmap *m);
/* Inserts id -> val unless present.  *added (may be NULL) says whether it
 * was inserted.  VMT_ENOMEM. */
int golden_idmap_put(golden_idmap *m, const vmt_id *id, uint64_t val, bool *added);
/* The value of id, or false when absent. */
bool golden_idmap_get(const golden_idmap *m, const vmt_id *id, uint64_t *val);

/* ---- client steps (golden_serve.c) ----------------------------------------- */

/* Sends a Request {op, name, max_ancestors}; VMT_EINVAL for a long name. */
int golden_send_request(vmt_session *s, unsigned op, const char *name, uint32_t max_anc);
/* Receives Snaps: the chain, newest first (*ids: caller frees). */
int golden_recv_snaps(vmt_session *s, uint32_t timeout_ms, vmt_id **ids, size_t *n);
/* Sends the receiver's Done {0, snap, counts}. */
int golden_send_done(vmt_session *s, const vmt_id *snap, const vmt_golden_stats *st);
/* Fills the session's byte counts and the duration since t0 into *st. */
void golden_finish_stats(vmt_session *s, vmt_golden_stats *st, uint64_t t0);

/* ---- the two roles -------------------------------------------------------- */

/* Provider: answers Wants from `st` until the receiver's Done, whose code is
 * returned (with its message as "peer: ..." when it is a failure). */
int golden_provide(vmt_session *s, vmt_store *st, const vmt_golden_opts *o,
                   vmt_golden_stats *stats);

/* Receiver: fetches what `st` lacks of the chain ids[0..n) (newest first),
 * stores and checks it, adds the chain to `c` (may be NULL) and sets
 * tag/AS_TAG (may be NULL).  Sends nothing at the end: the caller sends
 * Done (or fails the session). */
int golden_receive(vmt_session *s, vmt_store *st, vmt_catalog *c, const vmt_id *ids, size_t n,
                   const char *as_tag, const vmt_golden_opts *o, vmt_golden_stats *stats);

#endif
