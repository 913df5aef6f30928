/* What every vmtree command shares: options, the store directory, names,
 * run-directory paths and the liveness test of VM processes. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "vmtree/store.h"

int vmt_cli_fail(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "vmtree: %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return 1;
}

int vmt_cli_common_opt(vmt_cli_common *c, int code, const char *arg)
{
    switch (code) {
    case VMT_CLI_OPT_STORE: c->store_opt = arg; return 1;
    case VMT_CLI_OPT_JSON: c->json = true; return 1;
    case VMT_CLI_OPT_PROGRESS: c->progress = true; return 1;
    case VMT_CLI_OPT_HELP: c->help = true; return 1;
    default: return 0;
    }
}

int vmt_cli_parse(vmt_cli_common *c, int argc, char **argv, const char *shortopts,
                  const struct option *longopts, vmt_cli_opt_fn on_opt, void *ctx,
                  const char **pos, int maxpos, int *npos)
{
    char optstring[32];
    int code;
    snprintf(optstring, sizeof(optstring), "+h%s", shortopts ? shortopts : "");
    *npos = 0;
    optind = 1;
    opterr = 0;
    while ((code = getopt_long(argc, argv, optstring, longopts, NULL)) != -1 || optind < argc) {
        if (code == -1) {
            if (*npos >= maxpos)
                return vmt_cli_fail(c->cmd, "unexpected argument '%s' (see vmtree %s --help)",
                                    argv[optind], c->cmd);
            pos[(*npos)++] = argv[optind++];
            continue;
        }
        if (code == '?') {
            const char *bad = argv[optind - 1];
            bool is_long = !strncmp(bad, "--", 2);
            bool known = is_long ? optopt != 0 : strchr(optstring + 1, optopt) != NULL;
            if (known)
                return vmt_cli_fail(c->cmd, "option '%s' needs a value (see vmtree %s --help)",
                                    bad, c->cmd);
            if (is_long)
                return vmt_cli_fail(c->cmd, "unknown option '%s' (see vmtree %s --help)", bad,
                                    c->cmd);
            return vmt_cli_fail(c->cmd, "unknown option '-%c' (see vmtree %s --help)", optopt,
                                c->cmd);
        }
        if (vmt_cli_common_opt(c, code, optarg))
            continue;
        if (!on_opt || on_opt(ctx, code, optarg) != 0) {
            if (!on_opt)
                return vmt_cli_fail(c->cmd, "unknown option '%s'", argv[optind - 1]);
            return 1;
        }
    }
    return c->help ? -1 : 0;
}

/* The catalog of refs and the VM run directories live beside a directory
 * store; a RADOS store has neither yet (issue 8): said plainly, whether the
 * location came from --store or $VMTREE_STORE. */
static int refuse_rados(const char *where)
{
    if (strncmp(where, "rados://", 8) != 0)
        return 0;
    return vmt_error_set(VMT_EUNSUPPORTED,
                         "store %s: a RADOS store works with 'vmtree store' commands only so "
                         "far; snapshots, VMs and tags need the catalog in RADOS "
                         "(docs/store-backends.md)",
                         where);
}

int vmt_cli_resolve_store(vmt_cli_common *c)
{
    if (c->store_opt) {
        if (!c->store_opt[0])
            return vmt_error_set(VMT_EINVAL, "--store: empty directory name");
        if (strlen(c->store_opt) >= sizeof(c->store))
            return vmt_error_set(VMT_ERANGE, "--store: path longer than %zu bytes",
                                 sizeof(c->store) - 1);
        snprintf(c->store, sizeof(c->store), "%s", c->store_opt);
        return refuse_rados(c->store);
    }
    int rc = vmt_store_default_dir(c->store, sizeof(c->store));
    if (rc)
        return vmt_error_wrap(rc, "no store directory (give --store DIR or set %s)",
                              VMT_STORE_ENV);
    return refuse_rados(c->store);
}

int vmt_cli_check_name(const char *what, const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 63)
        return vmt_error_set(VMT_EINVAL, "%s '%.70s' must be 1 to 63 characters", what, name);
    if (name[0] == '.' || name[0] == '-')
        return vmt_error_set(VMT_EINVAL, "%s '%s' must not start with '%c'", what, name, name[0]);
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
        if (!ok)
            return vmt_error_set(VMT_EINVAL,
                                 "%s '%s' may hold only letters, digits, '.', '_' and '-'", what,
                                 name);
    }
    return 0;
}

int vmt_cli_run_path(const char *store, const char *name, const char *suffix, char *buf,
                     size_t cap)
{
    int n = snprintf(buf, cap, "%s/run/%s%s", store, name, suffix);
    if (n < 0 || (size_t)n >= cap)
        return vmt_error_set(VMT_ERANGE, "path %s/run/%s%s is longer than %zu bytes", store, name,
                             suffix, cap - 1);
    return 0;
}

int vmt_cli_make_run_dir(const char *store)
{
    char path[PATH_MAX];
    struct stat st;
    int n = snprintf(path, sizeof(path), "%s/run", store);
    if (n < 0 || (size_t)n >= sizeof(path))
        return vmt_error_set(VMT_ERANGE, "store path %s is too long", store);
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return vmt_error_errno(VMT_EIO, errno, "creating %s", path);
    if (stat(path, &st) != 0)
        return vmt_error_errno(VMT_EIO, errno, "%s", path);
    if (!S_ISDIR(st.st_mode))
        return vmt_error_set(VMT_EINVAL, "%s is not a directory", path);
    if ((st.st_mode & 077) && chmod(path, 0700) != 0)
        return vmt_error_errno(VMT_EIO, errno, "making %s private (mode 0700)", path);
    return 0;
}

int vmt_cli_vm_alive(const char *store, const char *name, long *pid)
{
    char path[PATH_MAX], buf[32];
    *pid = 0;
    int rc = vmt_cli_run_path(store, name, ".pid", path, sizeof(path));
    if (rc)
        return rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : vmt_error_errno(VMT_EIO, errno, "opening %s", path);
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    *pid = strtol(buf, NULL, 10);
    /* F_GETLK only asks: it never takes the lock, so it cannot make a
     * starting VM process believe its name is held. */
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(fd, F_GETLK, &fl) != 0) {
        rc = vmt_error_errno(VMT_EIO, errno, "testing the lock of %s", path);
        close(fd);
        return rc;
    }
    close(fd);
    if (fl.l_type == F_UNLCK)
        return 0;
    *pid = fl.l_pid;
    return 1;
}

void vmt_cli_format_time(uint64_t ns, char *buf, size_t cap)
{
    time_t t = (time_t)(ns / 1000000000ull);
    struct tm tm;
    if (!localtime_r(&t, &tm) || !strftime(buf, cap, "%Y-%m-%d %H:%M:%S", &tm))
        snprintf(buf, cap, "?");
}

void vmt_cli_format_bytes(uint64_t bytes, char *buf, size_t cap)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    unsigned u = 0;
    while (v >= 1024 && u + 1 < VMT_ARRAY_SIZE(units)) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, cap, "%llu B", (unsigned long long)bytes);
    else
        snprintf(buf, cap, "%.1f %s", v, units[u]);
}

int vmt_cli_parse_dirty_mode(const char *s, vmt_dirty_mode *out)
{
    if (!strcmp(s, "bitmap"))
        *out = VMT_DIRTY_BITMAP;
    else if (!strcmp(s, "ring"))
        *out = VMT_DIRTY_RING;
    else
        return vmt_error_set(VMT_EINVAL, "--dirty-mode: '%s' is not bitmap or ring", s);
    return 0;
}
