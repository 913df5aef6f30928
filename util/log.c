/* Leveled logging with a replaceable sink (see util.h). */
#include "vmtree/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};

static void stderr_sink(void *ctx, vmt_log_level level, const char *msg)
{
    (void)ctx;
    /* One fprintf per message so concurrent lines do not interleave. */
    fprintf(stderr, "vmtree: %s: %s\n", level_names[level], msg);
}

/* Process-wide logging configuration: set once at start-up (see util.h). */
static vmt_log_fn log_sink = stderr_sink;
static void *log_ctx;
static int log_level = -1; /* -1: not yet read from the environment */

int vmt_log_parse_level(const char *s, vmt_log_level *out)
{
    for (size_t i = 0; i < VMT_ARRAY_SIZE(level_names); i++) {
        if (s && strcmp(s, level_names[i]) == 0) {
            *out = (vmt_log_level)i;
            return 0;
        }
    }
    return vmt_error_set(VMT_EINVAL, "unknown log level '%s' (error|warn|info|debug|trace)",
                         s ? s : "");
}

vmt_log_level vmt_log_get_level(void)
{
    int lvl = __atomic_load_n(&log_level, __ATOMIC_RELAXED);
    if (lvl < 0) {
        vmt_log_level parsed = VMT_LOG_WARN;
        const char *env = getenv("VMTREE_LOG");
        if (env && vmt_log_parse_level(env, &parsed) != 0)
            parsed = VMT_LOG_WARN;
        lvl = (int)parsed;
        __atomic_store_n(&log_level, lvl, __ATOMIC_RELAXED);
    }
    return (vmt_log_level)lvl;
}

void vmt_log_set_level(vmt_log_level level)
{
    __atomic_store_n(&log_level, (int)level, __ATOMIC_RELAXED);
}

void vmt_log_set_sink(vmt_log_fn fn, void *ctx)
{
    log_sink = fn ? fn : stderr_sink;
    log_ctx = fn ? ctx : NULL;
}

void vmt_log(vmt_log_level level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    if ((int)level > (int)vmt_log_get_level())
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_sink(log_ctx, level, msg);
}
