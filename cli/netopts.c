/* Pre-shared key files and TLS triples for migrate / receive (netopts.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "netopts.h"

int vmt_cli_read_psk(const char *path, uint8_t *key, size_t cap, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return vmt_error_errno(VMT_EIO, errno, "key file %s", path);
    struct stat st;
    if (fstat(fd, &st) != 0 || (st.st_mode & 077)) {
        close(fd);
        return vmt_error_set(VMT_EINVAL, "key file %s is readable by others (chmod 600 it)", path);
    }
    uint8_t buf[VMT_NET_PSK_MAX + 2];
    ssize_t n = read(fd, buf, sizeof(buf));
    int e = errno;
    close(fd);
    if (n < 0)
        return vmt_error_errno(VMT_EIO, e, "reading key file %s", path);
    size_t l = (size_t)n;
    if (l > 0 && buf[l - 1] == '\n')
        l--;
    if (l < VMT_NET_PSK_MIN || l > VMT_NET_PSK_MAX || l > cap)
        return vmt_error_set(VMT_ERANGE, "key file %s: the key must be %u..%u bytes", path,
                             VMT_NET_PSK_MIN, VMT_NET_PSK_MAX);
    memcpy(key, buf, l);
    *len = l;
    return 0;
}

int vmt_cli_tls_new(const char *spec, bool server, vmt_tls **out)
{
    char buf[3 * 1024];
    char *parts[3] = {NULL, NULL, NULL};
    if (strlen(spec) >= sizeof(buf))
        return vmt_error_set(VMT_EINVAL, "--tls: too long");
    snprintf(buf, sizeof(buf), "%s", spec);
    char *p = buf;
    for (int i = 0; i < 3; i++) {
        char *comma = i < 2 ? strchr(p, ',') : NULL;
        if (i < 2 && !comma)
            return vmt_error_set(VMT_EINVAL, "--tls wants CERT,KEY,CA (parts may be empty)");
        if (comma)
            *comma = '\0';
        parts[i] = *p ? p : NULL;
        p = comma ? comma + 1 : p + strlen(p);
    }
    if (server && (!parts[0] || !parts[1]))
        return vmt_error_set(VMT_EINVAL, "--tls: the receiving side needs CERT and KEY");
    if (!server && !parts[2])
        return vmt_error_set(VMT_EINVAL, "--tls: the sending side needs the CA that signed "
                                         "the destination's certificate");
    vmt_tls_config c = {
        .server = server, .cert_file = parts[0], .key_file = parts[1], .ca_file = parts[2]};
    return vmt_tls_new(out, &c);
}

/* "HOST:PORT", "[V6]:PORT" -> host (in buf) and port (0 only for a
 * listener: any port). */
int vmt_cli_parse_hostport(const char *s, char *host, size_t cap, uint16_t *port, bool listen)
{
    const char *colon = strrchr(s, ':');
    uint64_t p;
    if (!colon || colon == s || vmt_parse_u64(colon + 1, listen ? 0 : 1, 65535, &p) != 0)
        return vmt_error_set(VMT_EINVAL, "\"%s\" is not HOST:PORT", s);
    size_t n = (size_t)(colon - s);
    if (s[0] == '[' && n >= 2 && s[n - 1] == ']') {
        s++;
        n -= 2;
    }
    if (n == 0 || n >= cap)
        return vmt_error_set(VMT_EINVAL, "\"%s\": bad host", s);
    memcpy(host, s, n);
    host[n] = '\0';
    *port = (uint16_t)p;
    return 0;
}
