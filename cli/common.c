/* What every vmtree command shares: options, the store location, names,
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

bool vmt_cli_store_shared(const char *store)
{
    return strncmp(store, "rados://", 8) == 0;
}

/* What still needs a directory store (docs/store-backends.md): live
 * migration has not been tried with source and destination on one shared
 * store.  Said plainly, whether the location came from --store or
 * $VMTREE_STORE.  (Golden images move into and out of a RADOS store like
 * any other: serve, pull and push work on it.) */
static int refuse_rados(const char *cmd, const char *where)
{
    static const char *const refused[][2] = {
        {"migrate", "live migration into or out of a shared RADOS store is not supported yet; "
                    "snapshot the VM and branch it on the other host instead"},
        {"receive", "live migration into or out of a shared RADOS store is not supported yet; "
                    "snapshot the VM and branch it on the other host instead"},
    };
    if (!vmt_cli_store_shared(where) || !cmd)
        return 0;
    for (size_t i = 0; i < VMT_ARRAY_SIZE(refused); i++)
        if (!strcmp(cmd, refused[i][0]))
            return vmt_error_set(VMT_EUNSUPPORTED, "store %s: %s (docs/store-backends.md)", where,
                                 refused[i][1]);
    return 0;
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
        return refuse_rados(c->cmd, c->store);
    }
    int rc = vmt_store_default_dir(c->store, sizeof(c->store));
    if (rc)
        return vmt_error_wrap(rc, "no store directory (give --store DIR or set %s)",
                              VMT_STORE_ENV);
    return refuse_rados(c->cmd, c->store);
}

/* A short, stable name for a store location: 16 hex digits of its id. */
static void location_hash(const char *store, char out[17])
{
    char hex[VMT_ID_HEX_LEN + 1];
    vmt_id id;
    vmt_id_of(store, strlen(store), &id);
    vmt_id_to_hex(&id, hex);
    memcpy(out, hex, 16);
    out[16] = '\0';
}

int vmt_cli_run_dir(const char *store, char *buf, size_t cap)
{
    char h[17];
    int n;
    if (!vmt_cli_store_shared(store)) {
        n = snprintf(buf, cap, "%s/run", store);
    } else if (getenv(VMT_CLI_RUN_DIR_ENV) && getenv(VMT_CLI_RUN_DIR_ENV)[0]) {
        n = snprintf(buf, cap, "%s", getenv(VMT_CLI_RUN_DIR_ENV));
    } else {
        const char *xdg = getenv("XDG_RUNTIME_DIR");
        location_hash(store, h);
        if (geteuid() == 0)
            n = snprintf(buf, cap, "/run/vmtree/%s", h);
        else if (xdg && xdg[0] == '/')
            n = snprintf(buf, cap, "%s/vmtree/%s", xdg, h);
        else
            n = snprintf(buf, cap, "/tmp/vmtree-%u/%s", (unsigned)geteuid(), h);
    }
    if (n < 0 || (size_t)n >= cap)
        return vmt_error_set(VMT_ERANGE, "the run directory of %s is longer than %zu bytes", store,
                             cap - 1);
    return 0;
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
    char dir[PATH_MAX];
    int rc = vmt_cli_run_dir(store, dir, sizeof(dir));
    if (rc)
        return rc;
    int n = snprintf(buf, cap, "%s/%s%s", dir, name, suffix);
    if (n < 0 || (size_t)n >= cap)
        return vmt_error_set(VMT_ERANGE, "path %s/%s%s is longer than %zu bytes", dir, name, suffix,
                             cap - 1);
    return 0;
}

/* mkdir -p of path's parents (mode 0700), for a RADOS store's run dir. */
static int make_parents(char *path)
{
    for (char *p = strchr(path + 1, '/'); p; p = strchr(p + 1, '/')) {
        *p = '\0';
        int r = mkdir(path, 0700);
        int e = errno;
        *p = '/';
        if (r != 0 && e != EEXIST)
            return vmt_error_errno(VMT_EIO, e, "creating %.*s", (int)(p - path), path);
    }
    return 0;
}

/* The /tmp/vmtree-UID parent of a fallback run directory must be ours and
 * private too. */
static int check_tmp_parent(const char *path)
{
    char parent[PATH_MAX];
    struct stat st;
    snprintf(parent, sizeof(parent), "%s", path);
    char *slash = strrchr(parent, '/');
    if (slash)
        *slash = '\0';
    if (lstat(parent, &st) != 0)
        return vmt_error_errno(VMT_EIO, errno, "%s", parent);
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077))
        return vmt_error_set(VMT_EINVAL,
                             "%s must be a directory of this user (uid %u) with mode 0700; set "
                             "VMTREE_RUN_DIR or XDG_RUNTIME_DIR",
                             parent, (unsigned)geteuid());
    return 0;
}

int vmt_cli_make_run_dir(const char *store)
{
    char path[PATH_MAX];
    struct stat st;
    int rc = vmt_cli_run_dir(store, path, sizeof(path));
    if (rc == 0 && vmt_cli_store_shared(store))
        rc = make_parents(path);
    if (rc)
        return rc;
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return vmt_error_errno(VMT_EIO, errno, "creating %s", path);
    if (stat(path, &st) != 0)
        return vmt_error_errno(VMT_EIO, errno, "%s", path);
    if (!S_ISDIR(st.st_mode))
        return vmt_error_set(VMT_EINVAL, "%s is not a directory", path);
    /* A shared store's run directory is per user (a directory store's is
     * inside the store, whose owner decides): one someone else owns (a
     * /tmp/vmtree-UID made by another user first) could be swapped. */
    if (vmt_cli_store_shared(store) && st.st_uid != geteuid())
        return vmt_error_set(VMT_EINVAL, "%s belongs to uid %u, not to this user (uid %u)", path,
                             (unsigned)st.st_uid, (unsigned)geteuid());
    if (vmt_cli_store_shared(store) && strncmp(path, "/tmp/vmtree-", 12) == 0 &&
        (rc = check_tmp_parent(path)) != 0)
        return rc;
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
