/* The control protocol's codec and framed socket I/O (control.h). */
#include "control.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void vmt_ctl_init(vmt_ctl_msg *m, vmt_ctl_type type)
{
    m->type = (uint8_t)type;
    m->nfields = 0;
    m->used = 0;
    m->body_len = 0;
}

static bool key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

static bool needs_escape(uint8_t c)
{
    return c < 0x20 || c == 0x7f || c == '%';
}

static bool valid_key(const char *k, size_t len)
{
    if (len == 0 || len > VMT_CTL_KEY_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!key_char(k[i]))
            return false;
    return true;
}

static const vmt_ctl_field *find(const vmt_ctl_msg *m, const char *key)
{
    for (uint32_t i = 0; i < m->nfields; i++)
        if (!strcmp(m->fields[i].key, key))
            return &m->fields[i];
    return NULL;
}

int vmt_ctl_add(vmt_ctl_msg *m, const char *key, const void *value, size_t len)
{
    size_t klen = strlen(key);
    if (!valid_key(key, klen))
        return vmt_error_set(VMT_EINVAL, "control message key '%.40s' is not [a-z0-9_]{1,31}",
                             key);
    if (find(m, key))
        return vmt_error_set(VMT_EINVAL, "control message key '%s' given twice", key);
    if (m->nfields >= VMT_CTL_MAX_FIELDS)
        return vmt_error_set(VMT_ERANGE, "control message has more than %u fields",
                             VMT_CTL_MAX_FIELDS);
    const uint8_t *v = value;
    size_t enc = klen + 2;
    for (size_t i = 0; i < len && enc <= VMT_CTL_BODY_MAX; i++)
        enc += needs_escape(v[i]) ? 3 : 1;
    if (len > VMT_CTL_BODY_MAX || enc > VMT_CTL_BODY_MAX - m->body_len)
        return vmt_error_set(VMT_ERANGE, "control message field '%s' would pass the %u-byte cap",
                             key, VMT_CTL_BODY_MAX);
    vmt_ctl_field *f = &m->fields[m->nfields++];
    memcpy(f->key, key, klen + 1);
    f->off = m->used;
    f->len = (uint32_t)len;
    memcpy(m->text + m->used, value, len);
    m->text[m->used + len] = '\0';
    m->used += (uint32_t)len + 1;
    m->body_len += (uint32_t)enc;
    return 0;
}

int vmt_ctl_adds(vmt_ctl_msg *m, const char *key, const char *value)
{
    return vmt_ctl_add(m, key, value, strlen(value));
}

int vmt_ctl_addf(vmt_ctl_msg *m, const char *key, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return vmt_error_set(VMT_ERANGE, "control message field '%s' is too long", key);
    return vmt_ctl_add(m, key, buf, (size_t)n);
}

const char *vmt_ctl_get(const vmt_ctl_msg *m, const char *key)
{
    const vmt_ctl_field *f = find(m, key);
    return f ? m->text + f->off : NULL;
}

int vmt_ctl_get_u64(const vmt_ctl_msg *m, const char *key, uint64_t *out)
{
    const char *v = vmt_ctl_get(m, key);
    if (!v)
        return vmt_error_set(VMT_ENOENT, "control message lacks '%s'", key);
    if (vmt_parse_u64(v, 0, UINT64_MAX, out) != 0)
        return vmt_error_set(VMT_EPROTO, "control message field '%s' is not a number", key);
    return 0;
}

size_t vmt_ctl_encoded_size(const vmt_ctl_msg *m)
{
    return VMT_CTL_HDR + m->body_len;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

int vmt_ctl_encode(const vmt_ctl_msg *m, uint8_t *buf, size_t cap, size_t *len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t need = vmt_ctl_encoded_size(m);
    if (cap < need)
        return vmt_error_set(VMT_ERANGE, "control frame of %zu bytes does not fit %zu", need, cap);
    memcpy(buf, VMT_CTL_MAGIC, 4);
    buf[4] = VMT_CTL_VERSION;
    buf[5] = m->type;
    buf[6] = buf[7] = 0;
    put_le32(buf + 8, m->body_len);
    uint8_t *p = buf + VMT_CTL_HDR;
    for (uint32_t i = 0; i < m->nfields; i++) {
        const vmt_ctl_field *f = &m->fields[i];
        const uint8_t *v = (const uint8_t *)m->text + f->off;
        size_t kl = strlen(f->key);
        memcpy(p, f->key, kl);
        p += kl;
        *p++ = '=';
        for (uint32_t j = 0; j < f->len; j++) {
            if (needs_escape(v[j])) {
                *p++ = '%';
                *p++ = (uint8_t)hex[v[j] >> 4];
                *p++ = (uint8_t)hex[v[j] & 15];
            } else {
                *p++ = v[j];
            }
        }
        *p++ = '\n';
    }
    *len = (size_t)(p - buf);
    return 0;
}

int vmt_ctl_decode_header(const uint8_t *hdr, size_t len, uint8_t *type, uint32_t *body_len)
{
    if (len < VMT_CTL_HDR)
        return vmt_error_set(VMT_EPROTO, "control frame of %zu bytes is shorter than its header",
                             len);
    if (memcmp(hdr, VMT_CTL_MAGIC, 4) != 0)
        return vmt_error_set(VMT_EPROTO, "not a vmtree control frame (bad magic)");
    if (hdr[4] != VMT_CTL_VERSION)
        return vmt_error_set(VMT_EUNSUPPORTED,
                             "control protocol version %u is not this vmtree's (%u)", hdr[4],
                             VMT_CTL_VERSION);
    if (hdr[5] < VMT_CTL_REQUEST || hdr[5] > VMT_CTL_PROGRESS || hdr[6] || hdr[7])
        return vmt_error_set(VMT_EPROTO, "control frame of unknown type %u", hdr[5]);
    uint32_t n = (uint32_t)hdr[8] | (uint32_t)hdr[9] << 8 | (uint32_t)hdr[10] << 16 |
                 (uint32_t)hdr[11] << 24;
    if (n > VMT_CTL_BODY_MAX)
        return vmt_error_set(VMT_EPROTO, "control frame body of %u bytes passes the %u cap", n,
                             VMT_CTL_BODY_MAX);
    *type = hdr[5];
    *body_len = n;
    return 0;
}

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decodes one "key=value" line (without its '\n') into a new field. */
static int decode_line(vmt_ctl_msg *m, const uint8_t *line, size_t len)
{
    const uint8_t *eq = memchr(line, '=', len);
    if (!eq)
        return vmt_error_set(VMT_EPROTO, "control line without '='");
    size_t kl = (size_t)(eq - line);
    if (!valid_key((const char *)line, kl))
        return vmt_error_set(VMT_EPROTO, "control line with a bad key");
    char key[VMT_CTL_KEY_MAX + 1];
    memcpy(key, line, kl);
    key[kl] = '\0';
    if (find(m, key))
        return vmt_error_set(VMT_EPROTO, "control message repeats key '%s'", key);
    if (m->nfields >= VMT_CTL_MAX_FIELDS)
        return vmt_error_set(VMT_EPROTO, "control message has more than %u fields",
                             VMT_CTL_MAX_FIELDS);
    vmt_ctl_field *f = &m->fields[m->nfields];
    uint8_t *out = (uint8_t *)m->text + m->used;
    size_t n = 0;
    for (const uint8_t *p = eq + 1; p < line + len; p++) {
        if (*p == '%') {
            int hi = p + 2 < line + len ? hexval(p[1]) : -1;
            int lo = hi >= 0 ? hexval(p[2]) : -1;
            if (lo < 0)
                return vmt_error_set(VMT_EPROTO, "control value with a bad %%XX escape");
            out[n++] = (uint8_t)(hi << 4 | lo);
            p += 2;
        } else if (needs_escape(*p)) {
            return vmt_error_set(VMT_EPROTO, "control value with an unescaped control byte");
        } else {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    /* The canonical encoding's size (an input may escape more than needed). */
    size_t enc = kl + 2;
    for (size_t i = 0; i < n; i++)
        enc += needs_escape(out[i]) ? 3 : 1;
    memcpy(f->key, key, kl + 1);
    f->off = m->used;
    f->len = (uint32_t)n;
    m->used += (uint32_t)n + 1;
    m->body_len += (uint32_t)enc;
    m->nfields++;
    return 0;
}

int vmt_ctl_decode_body(vmt_ctl_msg *m, uint8_t type, const uint8_t *body, size_t len)
{
    vmt_ctl_init(m, (vmt_ctl_type)type);
    if (len > VMT_CTL_BODY_MAX)
        return vmt_error_set(VMT_EPROTO, "control body of %zu bytes passes the cap", len);
    size_t at = 0;
    while (at < len) {
        const uint8_t *nl = memchr(body + at, '\n', len - at);
        if (!nl)
            return vmt_error_set(VMT_EPROTO, "control body does not end with a newline");
        size_t ll = (size_t)(nl - (body + at));
        int rc = decode_line(m, body + at, ll);
        if (rc)
            return rc;
        at += ll + 1;
    }
    return 0;
}

int vmt_ctl_decode(vmt_ctl_msg *m, const uint8_t *buf, size_t len)
{
    uint8_t type;
    uint32_t blen;
    int rc = vmt_ctl_decode_header(buf, len, &type, &blen);
    if (rc)
        return rc;
    if (len - VMT_CTL_HDR != blen)
        return vmt_error_set(VMT_EPROTO, "control frame of %zu bytes announces a %u-byte body",
                             len, blen);
    return vmt_ctl_decode_body(m, type, buf + VMT_CTL_HDR, blen);
}

/* Waits until fd is ready for `events` or the deadline passes. */
static int wait_fd(int fd, short events, uint64_t deadline_ns)
{
    for (;;) {
        uint64_t now = vmt_now_ns();
        if (now >= deadline_ns)
            return vmt_error_set(VMT_ETIMEDOUT, "timed out on the control socket");
        struct pollfd p = {.fd = fd, .events = events};
        uint64_t ms = (deadline_ns - now + 999999) / 1000000;
        int n = poll(&p, 1, ms > 60000 ? 60000 : (int)ms);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return vmt_error_errno(VMT_EIO, errno, "poll on the control socket");
    }
}

static int write_all(int fd, const uint8_t *p, size_t n, uint64_t deadline_ns)
{
    while (n) {
        int rc = wait_fd(fd, POLLOUT, deadline_ns);
        if (rc)
            return rc;
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (w < 0)
            return vmt_error_errno(VMT_EIO, errno, "writing to the control socket");
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, uint8_t *p, size_t n, uint64_t deadline_ns)
{
    while (n) {
        int rc = wait_fd(fd, POLLIN, deadline_ns);
        if (rc)
            return rc;
        ssize_t r = recv(fd, p, n, MSG_DONTWAIT);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r < 0)
            return vmt_error_errno(VMT_EIO, errno, "reading the control socket");
        if (r == 0)
            return vmt_error_set(VMT_EIO, "connection closed");
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int vmt_ctl_send(int fd, const vmt_ctl_msg *m, uint64_t deadline_ns)
{
    size_t cap = vmt_ctl_encoded_size(m), len;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return vmt_error_set(VMT_ENOMEM, "out of memory for a control frame");
    int rc = vmt_ctl_encode(m, buf, cap, &len);
    if (!rc)
        rc = write_all(fd, buf, len, deadline_ns);
    free(buf);
    return rc;
}

int vmt_ctl_recv(int fd, vmt_ctl_msg *m, uint64_t deadline_ns)
{
    uint8_t *buf = malloc(VMT_CTL_FRAME_MAX);
    if (!buf)
        return vmt_error_set(VMT_ENOMEM, "out of memory for a control frame");
    uint8_t type = 0;
    uint32_t blen = 0;
    int rc = read_all(fd, buf, VMT_CTL_HDR, deadline_ns);
    if (!rc)
        rc = vmt_ctl_decode_header(buf, VMT_CTL_HDR, &type, &blen);
    if (!rc)
        rc = read_all(fd, buf + VMT_CTL_HDR, blen, deadline_ns);
    if (!rc)
        rc = vmt_ctl_decode_body(m, type, buf + VMT_CTL_HDR, blen);
    free(buf);
    return rc;
}

int vmt_ctl_reply_error(vmt_ctl_msg *m, int code, const char *msg)
{
    vmt_ctl_init(m, VMT_CTL_REPLY);
    int rc = vmt_ctl_adds(m, "error", vmt_strerror(code));
    if (!rc)
        rc = vmt_ctl_add(m, "message", msg, VMT_MIN(strlen(msg), 4096));
    return rc;
}

int vmt_ctl_error_code(const char *name)
{
    for (int c = VMT_ERR; c >= VMT_ELAST; c--)
        if (name && !strcmp(vmt_strerror(c), name))
            return c;
    return VMT_ERR;
}
