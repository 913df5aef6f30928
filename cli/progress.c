/* Progress display on stderr (progress.h). */
#include "progress.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "vmtree/util.h"

void vmt_progress_init(vmt_progress *p, const char *what, bool force)
{
    memset(p, 0, sizeof(*p));
    p->what = what;
    p->tty = isatty(STDERR_FILENO) == 1;
    p->on = force || p->tty;
}

void vmt_progress_update(vmt_progress *p, const char *phase, uint64_t done, uint64_t total)
{
    if (!p->on)
        return;
    uint64_t now = vmt_now_ns();
    bool new_phase = strncmp(p->phase, phase ? phase : "", sizeof(p->phase) - 1) != 0;
    bool last = total && done >= total;
    uint64_t gap = p->tty ? 100000000ull : 1000000000ull;
    if (!new_phase && !last && p->drawn && now - p->last_ns < gap)
        return;
    snprintf(p->phase, sizeof(p->phase), "%s", phase ? phase : "");
    p->last_ns = now;
    p->drawn = true;
    char line[160];
    if (total)
        snprintf(line, sizeof(line), "%s: %s %llu/%llu (%.0f%%)", p->what, p->phase,
                 (unsigned long long)done, (unsigned long long)total,
                 100.0 * (double)done / (double)total);
    else
        snprintf(line, sizeof(line), "%s: %s %llu", p->what, p->phase,
                 (unsigned long long)done);
    if (p->tty)
        fprintf(stderr, "\r\033[K%s", line);
    else
        fprintf(stderr, "%s\n", line);
    fflush(stderr);
}

void vmt_progress_end(vmt_progress *p)
{
    if (p->on && p->tty && p->drawn)
        fputs("\r\033[K", stderr);
    p->drawn = false;
}

void vmt_progress_store_cb(void *ctx, const char *phase, uint64_t done, uint64_t total)
{
    vmt_progress_update(ctx, phase, done, total);
}

void vmt_progress_pages_cb(void *ctx, uint64_t done, uint64_t total)
{
    vmt_progress_update(ctx, "pages", done, total);
}
