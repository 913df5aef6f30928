/*
 * Migration addresses: "[scheme://]host:port" with scheme tcp or rdma.
 *
 * The parser is strict on purpose: an address typed on a command line that
 * means something else than the user thinks (a missing port, a bare IPv6
 * literal whose last group looks like a port, a trailing path) is refused
 * with a message naming the part that is wrong, rather than guessed at.
 */
#include <stdio.h>
#include <string.h>

#include "net_internal.h"

const char *vmt_net_scheme_name(vmt_net_scheme s)
{
    switch (s) {
    case VMT_NET_SCHEME_TCP:
        return "tcp";
    case VMT_NET_SCHEME_RDMA:
        return "rdma";
    }
    return "?";
}

/* Reads the scheme (if any) and returns where the host starts. */
static int parse_scheme(const char *text, vmt_net_addr *out, const char **rest)
{
    const char *sep = strstr(text, "://");
    *rest = text;
    out->scheme = VMT_NET_SCHEME_TCP;
    if (!sep)
        return 0;
    size_t n = (size_t)(sep - text);
    if (n == 3 && memcmp(text, "tcp", 3) == 0)
        out->scheme = VMT_NET_SCHEME_TCP;
    else if (n == 4 && memcmp(text, "rdma", 4) == 0)
        out->scheme = VMT_NET_SCHEME_RDMA;
    else
        return vmt_error_set(VMT_EINVAL, "address \"%s\": unknown scheme \"%.*s\" (tcp or rdma)",
                             text, (int)VMT_MIN(n, 32), text);
    *rest = sep + 3;
    return 0;
}

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '-' || c == '_';
}

static bool v6_char(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
           c == ':' || c == '.' || c == '%' || name_char(c);
}

/* Copies host chars [p, end) into out->host after checking them. */
static int take_host(const char *text, const char *p, const char *end, bool v6, vmt_net_addr *out)
{
    size_t n = (size_t)(end - p);
    if (n == 0)
        return vmt_error_set(VMT_EINVAL, "address \"%s\": no host", text);
    if (n >= sizeof(out->host))
        return vmt_error_set(VMT_EINVAL, "address \"%s\": host of %zu characters is too long",
                             text, n);
    for (const char *c = p; c < end; c++)
        if (!(v6 ? v6_char(*c) : name_char(*c)))
            return vmt_error_set(VMT_EINVAL, "address \"%s\": bad character '%c' in host", text,
                                 *c);
    if (v6 && !memchr(p, ':', n))
        return vmt_error_set(VMT_EINVAL, "address \"%s\": \"%.*s\" in brackets is not IPv6",
                             text, (int)n, p);
    memcpy(out->host, p, n);
    out->host[n] = '\0';
    return 0;
}

/* Splits host and port text; *port_at points after the ':'. */
static int split_host(const char *text, const char *p, vmt_net_addr *out, const char **port_at)
{
    if (*p == '[') {
        const char *close = strchr(p, ']');
        if (!close)
            return vmt_error_set(VMT_EINVAL, "address \"%s\": '[' without ']'", text);
        int rc = take_host(text, p + 1, close, true, out);
        if (rc)
            return rc;
        if (close[1] != ':')
            return vmt_error_set(VMT_EINVAL, "address \"%s\": no port after \"]\" (HOST:PORT)",
                                 text);
        *port_at = close + 2;
        return 0;
    }
    const char *colon = strchr(p, ':');
    if (!colon)
        return vmt_error_set(VMT_EINVAL, "address \"%s\": no port (HOST:PORT)", text);
    if (strchr(colon + 1, ':'))
        return vmt_error_set(VMT_EINVAL,
                             "address \"%s\": IPv6 address without brackets (write [ADDR]:PORT)",
                             text);
    int rc = take_host(text, p, colon, false, out);
    if (rc)
        return rc;
    *port_at = colon + 1;
    return 0;
}

static int parse_port(const char *text, const char *p, uint16_t *port)
{
    unsigned long v = 0;
    size_t n = 0;
    if (!*p)
        return vmt_error_set(VMT_EINVAL, "address \"%s\": empty port", text);
    for (; p[n] >= '0' && p[n] <= '9'; n++) {
        v = v * 10 + (unsigned long)(p[n] - '0');
        if (v > 65535)
            return vmt_error_set(VMT_EINVAL, "address \"%s\": port %s is out of range (0..65535)",
                                 text, p);
    }
    if (p[n] == '/')
        return vmt_error_set(VMT_EINVAL, "address \"%s\": nothing may follow the port (\"%s\")",
                             text, p + n);
    if (p[n] || n == 0)
        return vmt_error_set(VMT_EINVAL, "address \"%s\": port \"%s\" is not a number", text, p);
    *port = (uint16_t)v;
    return 0;
}

int vmt_net_addr_parse(const char *text, vmt_net_addr *out)
{
    const char *host, *port_at = NULL;

    memset(out, 0, sizeof(*out));
    if (!text || !*text)
        return vmt_error_set(VMT_EINVAL, "empty address (HOST:PORT or rdma://HOST:PORT)");
    if (strlen(text) > VMT_NET_HOST_MAX + 32)
        return vmt_error_set(VMT_EINVAL, "address of %zu characters is too long", strlen(text));
    int rc = parse_scheme(text, out, &host);
    if (rc == 0)
        rc = split_host(text, host, out, &port_at);
    if (rc == 0)
        rc = parse_port(text, port_at, &out->port);
    if (rc)
        memset(out, 0, sizeof(*out));
    return rc;
}

void vmt_net_addr_format(const vmt_net_addr *a, char *buf, size_t cap)
{
    bool v6 = strchr(a->host, ':') != NULL;
    snprintf(buf, cap, "%s://%s%s%s:%u", vmt_net_scheme_name(a->scheme), v6 ? "[" : "", a->host,
             v6 ? "]" : "", a->port);
}
