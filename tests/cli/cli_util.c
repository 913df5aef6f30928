/* Helpers of the vmtree command's end-to-end suites (cli_util.h). */
#include "cli_util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *cli_binary = "vmtree";

void cli_set_binary(const char *path)
{
    cli_binary = path;
}

typedef struct sink {
    char *buf;
    size_t len, cap;
} sink;

static void sink_add(sink *s, const char *p, size_t n)
{
    if (s->len + n + 1 > s->cap) {
        size_t cap = (s->len + n + 1) * 2;
        char *nb = realloc(s->buf, cap);
        if (!nb)
            return;
        s->buf = nb;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    s->buf[s->len] = '\0';
}

/* Reads both pipes until both close. */
static void drain(int ofd, int efd, sink *o, sink *e)
{
    struct pollfd p[2] = {{.fd = ofd, .events = POLLIN}, {.fd = efd, .events = POLLIN}};
    int open_ = 2;
    while (open_ > 0) {
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        for (int i = 0; i < 2; i++) {
            if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char buf[8192];
            ssize_t n = read(p[i].fd, buf, sizeof(buf));
            if (n > 0) {
                sink_add(i ? e : o, buf, (size_t)n);
            } else if (n == 0 || errno != EINTR) {
                close(p[i].fd);
                p[i].fd = -1;
                open_--;
            }
        }
    }
}

int cli_runv(char **out, char **err, const char *const *args)
{
    int op[2], ep[2];
    size_t n = 0;
    while (args[n])
        n++;
    const char **argv = calloc(n + 2, sizeof(char *));
    if (!argv || pipe(op) != 0 || pipe(ep) != 0)
        return -1;
    argv[0] = cli_binary;
    memcpy(argv + 1, args, n * sizeof(char *));
    pid_t pid = fork();
    if (pid == 0) {
        dup2(op[1], 1);
        dup2(ep[1], 2);
        close(op[0]);
        close(ep[0]);
        close(op[1]);
        close(ep[1]);
        execv(cli_binary, (char *const *)argv);
        _exit(127);
    }
    close(op[1]);
    close(ep[1]);
    sink o = {0}, e = {0};
    sink_add(&o, "", 0);
    sink_add(&e, "", 0);
    drain(op[0], ep[0], &o, &e);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    free(argv);
    if (out)
        *out = o.buf;
    else
        free(o.buf);
    if (err)
        *err = e.buf;
    else
        free(e.buf);
    if (pid < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : -1;
}

int cli_run(char **out, char **err, const char *arg, ...)
{
    const char *args[64];
    size_t n = 0;
    va_list ap;
    va_start(ap, arg);
    for (const char *a = arg; a && n < 63; a = va_arg(ap, const char *))
        args[n++] = a;
    va_end(ap);
    args[n] = NULL;
    return cli_runv(out, err, args);
}

/* The run directory as the CLI picks it (cli/common.c): a RADOS store's is
 * $VMTREE_RUN_DIR in these suites, which always set it. */
static void run_dir(const char *store, char *buf, size_t cap)
{
    const char *env = getenv("VMTREE_RUN_DIR");
    if (strncmp(store, "rados://", 8) == 0 && env)
        snprintf(buf, cap, "%s", env);
    else
        snprintf(buf, cap, "%s/run", store);
}

char *cli_console(const char *store, const char *name)
{
    char path[4096], dir[4000];
    run_dir(store, dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/%s.console", dir, name);
    FILE *f = fopen(path, "r");
    sink s = {0};
    sink_add(&s, "", 0);
    if (!f)
        return s.buf;
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        sink_add(&s, buf, n);
    fclose(f);
    return s.buf;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

char *cli_wait_console(const char *store, const char *name, const char *needle, size_t from,
                       unsigned timeout_ms)
{
    uint64_t end = now_ms() + timeout_ms;
    for (;;) {
        char *t = cli_console(store, name);
        if (t && strlen(t) >= from && strstr(t + from, needle))
            return t;
        free(t);
        if (now_ms() >= end)
            return NULL;
        usleep(20000);
    }
}

size_t cli_counter_lines(const char *text, size_t from, counter_line *out, size_t max)
{
    size_t n = 0;
    const char *p = text + from;
    /* Only lines that start at a line start and end with a newline. */
    if (from > 0 && text[from - 1] != '\n') {
        p = strchr(p, '\n');
        p = p ? p + 1 : text + strlen(text);
    }
    while (*p && n < max) {
        const char *nl = strchr(p, '\n');
        if (!nl)
            break;
        unsigned long long step, sum;
        char tail;
        if (sscanf(p, "counter: step %llu sum %16llx%c", &step, &sum, &tail) == 3 &&
            tail == '\n') {
            out[n].step = step;
            out[n].sum = sum;
            n++;
        }
        p = nl + 1;
    }
    return n;
}

uint64_t cli_counter_last(const char *text, size_t from)
{
    static counter_line lines[1 << 16];
    size_t n = cli_counter_lines(text, from, lines, sizeof(lines) / sizeof(lines[0]));
    return n ? lines[n - 1].step : 0;
}

uint64_t cli_wait_step(const char *store, const char *name, uint64_t step, size_t from,
                       unsigned timeout_ms)
{
    uint64_t end = now_ms() + timeout_ms;
    for (;;) {
        char *t = cli_console(store, name);
        uint64_t last = t && strlen(t) >= from ? cli_counter_last(t, from) : 0;
        free(t);
        if (last >= step)
            return last;
        if (now_ms() >= end)
            return 0;
        usleep(20000);
    }
}

/* ---- a strict JSON checker ---- */

static const char *ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

static const char *value(const char *p, int depth);

static const char *string(const char *p)
{
    if (*p++ != '"')
        return NULL;
    while (*p && *p != '"') {
        if ((unsigned char)*p < 0x20)
            return NULL;
        if (*p == '\\') {
            p++;
            if (*p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (!isxdigit((unsigned char)p[i]))
                        return NULL;
                p += 4;
            } else if (!strchr("\"\\/bfnrt", *p) || !*p) {
                return NULL;
            }
        }
        p++;
    }
    return *p == '"' ? p + 1 : NULL;
}

static const char *number(const char *p)
{
    const char *s = p;
    if (*p == '-')
        p++;
    if (!isdigit((unsigned char)*p))
        return NULL;
    while (isdigit((unsigned char)*p))
        p++;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return NULL;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!isdigit((unsigned char)*p))
            return NULL;
        while (isdigit((unsigned char)*p))
            p++;
    }
    return p > s ? p : NULL;
}

static const char *container(const char *p, int depth, char close)
{
    p = ws(p + 1);
    if (*p == close)
        return p + 1;
    for (;;) {
        if (close == '}') {
            p = string(ws(p));
            if (!p || *(p = ws(p)) != ':')
                return NULL;
            p++;
        }
        p = value(p, depth + 1);
        if (!p)
            return NULL;
        p = ws(p);
        if (*p == close)
            return p + 1;
        if (*p != ',')
            return NULL;
        p++;
    }
}

static const char *value(const char *p, int depth)
{
    p = ws(p);
    if (depth > 64)
        return NULL;
    switch (*p) {
    case '{': return container(p, depth, '}');
    case '[': return container(p, depth, ']');
    case '"': return string(p);
    case 't': return strncmp(p, "true", 4) ? NULL : p + 4;
    case 'f': return strncmp(p, "false", 5) ? NULL : p + 5;
    case 'n': return strncmp(p, "null", 4) ? NULL : p + 4;
    default: return number(p);
    }
}

bool cli_json_valid(const char *text, bool want_container)
{
    if (!text)
        return false;
    const char *s = ws(text);
    if (want_container && *s != '{' && *s != '[')
        return false;
    const char *p = value(s, 0);
    return p && *ws(p) == '\0';
}

static const char *find_key(const char *text, const char *key)
{
    char pat[128];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *p = text ? strstr(text, pat) : NULL;
    return p ? ws(p + strlen(pat)) : NULL;
}

bool cli_json_u64(const char *text, const char *key, uint64_t *out)
{
    const char *p = find_key(text, key);
    if (!p || !isdigit((unsigned char)*p))
        return false;
    *out = strtoull(p, NULL, 10);
    return true;
}

bool cli_json_str(const char *text, const char *key, char *buf, size_t cap)
{
    const char *p = find_key(text, key);
    if (!p || *p != '"')
        return false;
    const char *e = strchr(p + 1, '"');
    if (!e || (size_t)(e - p - 1) >= cap)
        return false;
    memcpy(buf, p + 1, (size_t)(e - p - 1));
    buf[e - p - 1] = '\0';
    return true;
}

void cli_kill_all(const char *store)
{
    char path[4096];
    run_dir(store, path, sizeof(path));
    DIR *d = opendir(path);
    if (!d)
        return;
    for (struct dirent *de; (de = readdir(d));) {
        size_t l = strlen(de->d_name);
        if (l < 5 || strcmp(de->d_name + l - 4, ".pid"))
            continue;
        char pp[4352];
        snprintf(pp, sizeof(pp), "%s/%s", path, de->d_name);
        int fd = open(pp, O_RDONLY);
        if (fd < 0)
            continue;
        /* Only a live holder of the name's lock: never a stale pid. */
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        if (fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK && fl.l_pid > 1)
            kill(fl.l_pid, SIGKILL);
        close(fd);
    }
    closedir(d);
}
