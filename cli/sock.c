/* Unix stream sockets of the control protocol, with paths longer than
 * sun_path reached through the directory's /proc/self/fd entry. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"

/* Fills addr for `path`; *dirfd (or -1) must be closed after use. */
static int make_addr(const char *path, struct sockaddr_un *addr, int *dirfd)
{
    *dirfd = -1;
    memset(addr, 0, sizeof(*addr));
    addr->sun_family = AF_UNIX;
    if (strlen(path) < sizeof(addr->sun_path)) {
        memcpy(addr->sun_path, path, strlen(path) + 1);
        return 0;
    }
    char dir[PATH_MAX], base[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    snprintf(base, sizeof(base), "%s", path);
    *dirfd = open(dirname(dir), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (*dirfd < 0)
        return vmt_error_errno(VMT_EIO, errno, "opening the directory of %s", path);
    int n = snprintf(addr->sun_path, sizeof(addr->sun_path), "/proc/self/fd/%d/%s", *dirfd,
                     basename(base));
    if (n < 0 || (size_t)n >= sizeof(addr->sun_path)) {
        close(*dirfd);
        *dirfd = -1;
        return vmt_error_set(VMT_ERANGE, "socket name in %s is too long", path);
    }
    return 0;
}

int vmt_cli_unix_connect(const char *path, int *fd)
{
    struct sockaddr_un addr;
    int dirfd, rc = make_addr(path, &addr, &dirfd);
    if (rc)
        return rc;
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        rc = vmt_error_errno(VMT_EIO, errno, "socket");
    } else if (connect(s, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        int e = errno;
        rc = vmt_error_errno(e == ENOENT || e == ECONNREFUSED ? VMT_ENOENT : VMT_EIO, e,
                             "connecting to %s", path);
        close(s);
    } else {
        *fd = s;
    }
    if (dirfd >= 0)
        close(dirfd);
    return rc;
}

int vmt_cli_unix_listen(const char *path, int *fd)
{
    struct sockaddr_un addr;
    int dirfd, rc = make_addr(path, &addr, &dirfd);
    if (rc)
        return rc;
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s < 0) {
        rc = vmt_error_errno(VMT_EIO, errno, "socket");
        goto out;
    }
    /* The caller holds the name's lock: whatever socket is there is stale. */
    if (unlink(path) != 0 && errno != ENOENT) {
        rc = vmt_error_errno(VMT_EIO, errno, "removing the stale socket %s", path);
        goto out;
    }
    mode_t old = umask(0177); /* the socket is born 0600 */
    int b = bind(s, (struct sockaddr *)&addr, sizeof(addr));
    umask(old);
    if (b != 0 || listen(s, 16) != 0) {
        rc = vmt_error_errno(VMT_EIO, errno, "listening on %s", path);
        goto out;
    }
    *fd = s;
    s = -1;
out:
    if (s >= 0)
        close(s);
    if (dirfd >= 0)
        close(dirfd);
    return rc;
}
