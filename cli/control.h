/*
 * The control protocol between `vmtree` commands and a running VM process
 * (docs/cli.md): one request and its replies over a unix stream socket.
 *
 * A frame is a 12-byte header then a body:
 *   "VMTC"  u8 version (1)  u8 type  u16 zero  u32 body length (LE, <= 65524)
 * and the body is lines "key=value\n": keys [a-z0-9_], 1..31 bytes; values
 * any bytes with '%', control bytes and 0x7f written as %XX; at most
 * VMT_CTL_MAX_FIELDS lines, no key twice.  The client sends one REQUEST
 * ("op=..."); the server answers with any number of PROGRESS frames and one
 * REPLY ("ok=1" or "error=VMT_E..." and "message=...").
 *
 * Everything here is pure (no I/O) except vmt_ctl_send/vmt_ctl_recv.  A
 * vmt_ctl_msg is plain data; functions are thread-safe on distinct messages.
 */
#ifndef VMTREE_CLI_CONTROL_H
#define VMTREE_CLI_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtree/util.h"

#define VMT_CTL_MAGIC "VMTC"
#define VMT_CTL_VERSION 1u
#define VMT_CTL_HDR 12u
#define VMT_CTL_FRAME_MAX 65536u
#define VMT_CTL_BODY_MAX (VMT_CTL_FRAME_MAX - VMT_CTL_HDR)
#define VMT_CTL_MAX_FIELDS 64u
#define VMT_CTL_KEY_MAX 31u

typedef enum vmt_ctl_type {
    VMT_CTL_REQUEST = 1,
    VMT_CTL_REPLY = 2,
    VMT_CTL_PROGRESS = 3,
} vmt_ctl_type;

typedef struct vmt_ctl_field {
    char key[VMT_CTL_KEY_MAX + 1];
    uint32_t off; /* value: text + off, NUL-terminated */
    uint32_t len; /* value bytes (it may hold NULs written as %00) */
} vmt_ctl_field;

/* A message: its type and fields, values stored in `text`. */
typedef struct vmt_ctl_msg {
    uint8_t type;
    uint32_t nfields;
    vmt_ctl_field fields[VMT_CTL_MAX_FIELDS];
    uint32_t used;     /* bytes of text in use */
    uint32_t body_len; /* bytes the fields take encoded */
    char text[VMT_CTL_BODY_MAX + VMT_CTL_MAX_FIELDS];
} vmt_ctl_msg;

/* Empties `m` and sets its type. */
void vmt_ctl_init(vmt_ctl_msg *m, vmt_ctl_type type);

/*
 * Adds a field (`len` bytes of value).  VMT_EINVAL for a bad or repeated
 * key, VMT_ERANGE when the field count or the encoded size would pass the
 * caps.
 */
int vmt_ctl_add(vmt_ctl_msg *m, const char *key, const void *value, size_t len);
int vmt_ctl_adds(vmt_ctl_msg *m, const char *key, const char *value);
int vmt_ctl_addf(vmt_ctl_msg *m, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The value of `key` (NUL-terminated, owned by m), or NULL when absent. */
const char *vmt_ctl_get(const vmt_ctl_msg *m, const char *key);
/* The value parsed as a decimal u64; VMT_ENOENT when absent, VMT_EPROTO when
 * malformed. */
int vmt_ctl_get_u64(const vmt_ctl_msg *m, const char *key, uint64_t *out);

/* Bytes the encoded frame takes (header included). */
size_t vmt_ctl_encoded_size(const vmt_ctl_msg *m);
/* Encodes the whole frame into buf; VMT_ERANGE when cap is short. */
int vmt_ctl_encode(const vmt_ctl_msg *m, uint8_t *buf, size_t cap, size_t *len);

/*
 * Checks a 12-byte header: magic, version (VMT_EUNSUPPORTED for another one,
 * naming both), type, reserved bytes, and the body length against the cap.
 * VMT_EPROTO for anything else wrong.
 */
int vmt_ctl_decode_header(const uint8_t *hdr, size_t len, uint8_t *type, uint32_t *body_len);
/* Parses a body of `len` bytes into m (type as given).  VMT_EPROTO on any
 * malformed line, escape, key, repeated key or too many fields. */
int vmt_ctl_decode_body(vmt_ctl_msg *m, uint8_t type, const uint8_t *body, size_t len);
/* Header and body in one buffer: the frame must be exactly `len` bytes. */
int vmt_ctl_decode(vmt_ctl_msg *m, const uint8_t *buf, size_t len);

/* Writes the frame to fd before `deadline_ns` (vmt_now_ns clock); EPIPE and
 * timeouts are VMT_EIO / VMT_ETIMEDOUT. */
int vmt_ctl_send(int fd, const vmt_ctl_msg *m, uint64_t deadline_ns);
/* Reads one frame before the deadline.  VMT_EIO with "connection closed" when
 * the peer closed before a full frame. */
int vmt_ctl_recv(int fd, vmt_ctl_msg *m, uint64_t deadline_ns);

/* A reply carrying an error: error=<vmt_strerror(code)>, message=<msg>. */
int vmt_ctl_reply_error(vmt_ctl_msg *m, int code, const char *msg);
/* Maps "VMT_E..." back to its code (VMT_ERR when unknown). */
int vmt_ctl_error_code(const char *name);

#endif
