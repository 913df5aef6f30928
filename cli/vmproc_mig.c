/*
 * The VM process's side of `vmtree migrate`: the request's options become
 * vmt_migrate_opts, progress goes back to the command as PROGRESS frames,
 * and the report as the reply.  On success the caller ends this process
 * (the destination runs the VM); after VMT_EINDOUBT the VM stays paused and
 * fenced: `vmtree resume` refuses without --force.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netopts.h"
#include "vmproc.h"
#include "vmtree/migrate.h"

static void mig_progress(void *ctx, const vmt_migrate_progress *pr)
{
    char phase[160];
    int n = snprintf(phase, sizeof(phase), "round %u", pr->round);
    if (pr->bandwidth > 0 && n > 0 && (size_t)n < sizeof(phase))
        n += snprintf(phase + n, sizeof(phase) - (size_t)n,
                      ", %.1f MB/s, dirty %.0f pages/s, downtime ~%.1f ms", pr->bandwidth / 1e6,
                      pr->dirty_rate, pr->expected_downtime_ms);
    if (pr->throttle_pct && n > 0 && (size_t)n < sizeof(phase))
        snprintf(phase + n, sizeof(phase) - (size_t)n, ", throttled %u%%", pr->throttle_pct);
    vmp_progress(ctx, phase, pr->sent, pr->sent + pr->remaining);
}

static int get_u64(const vmt_ctl_msg *req, const char *key, uint64_t max, uint64_t *v)
{
    if (!vmt_ctl_get(req, key))
        return 0;
    int rc = vmt_ctl_get_u64(req, key, v);
    if (rc == 0 && *v > max)
        rc = vmt_error_set(VMT_ERANGE, "%s: %llu is more than %llu", key, (unsigned long long)*v,
                           (unsigned long long)max);
    return rc;
}

static bool flag(const vmt_ctl_msg *req, const char *key)
{
    const char *v = vmt_ctl_get(req, key);
    return v && !strcmp(v, "1");
}

/* The request's fields (the command checked them once already). */
static int parse_opts(const vmt_ctl_msg *req, vmt_migrate_opts *o)
{
    const char *comp = vmt_ctl_get(req, "compress");
    uint64_t streams = o->streams, down = o->max_downtime_ms, rounds = o->max_rounds,
             tmo = o->timeout_ms, level = 0;
    int rc = get_u64(req, "streams", VMT_NET_MAX_STREAMS, &streams);
    rc = rc ? rc : get_u64(req, "max_downtime_ms", 3600000, &down);
    rc = rc ? rc : get_u64(req, "max_rounds", 10000, &rounds);
    rc = rc ? rc : get_u64(req, "timeout_ms", 3600000, &tmo);
    rc = rc ? rc : get_u64(req, "bandwidth", UINT64_MAX, &o->bandwidth);
    rc = rc ? rc : get_u64(req, "level", 64, &level);
    o->streams = (unsigned)streams;
    o->max_downtime_ms = (uint32_t)down;
    o->max_rounds = (unsigned)rounds;
    o->timeout_ms = (uint32_t)tmo;
    o->compress_level = (int)level;
    if (rc)
        return rc;
    if (!comp || !strcmp(comp, "none"))
        o->compress = VMT_MIGRATE_COMPRESS_NONE;
    else if (!strcmp(comp, "lz4"))
        o->compress = VMT_MIGRATE_COMPRESS_LZ4;
    else if (!strcmp(comp, "zstd"))
        o->compress = VMT_MIGRATE_COMPRESS_ZSTD;
    else
        return vmt_error_set(VMT_EINVAL, "compress: '%s' is not none, lz4 or zstd", comp);
    o->dedup = !flag(req, "no_dedup");
    o->xbzrle = !flag(req, "no_xbzrle");
    o->auto_converge = flag(req, "auto_converge");
    return 0;
}

static int add_report(vmt_ctl_msg *r, const vmt_migrate_report *rep)
{
    static const char *const enc[VMT_PAGE_ENC_COUNT] = {"zero", "ref", "delta",
                                                        "raw",  "lz4", "zstd"};
    int rc = vmt_ctl_addf(r, "total_us", "%llu", (unsigned long long)(rep->total_ns / 1000));
    rc = rc ? rc
            : vmt_ctl_addf(r, "downtime_us", "%llu", (unsigned long long)(rep->downtime_ns / 1000));
    rc = rc ? rc : vmt_ctl_addf(r, "setup_us", "%llu", (unsigned long long)(rep->setup_ns / 1000));
    rc = rc ? rc : vmt_ctl_addf(r, "rounds", "%u", rep->rounds);
    rc = rc ? rc : vmt_ctl_addf(r, "pages_sent", "%llu", (unsigned long long)rep->pages_sent);
    for (unsigned e = 0; rc == 0 && e < VMT_PAGE_ENC_COUNT; e++) {
        char key[24];
        snprintf(key, sizeof(key), "pages_%s", enc[e]);
        rc = vmt_ctl_addf(r, key, "%llu", (unsigned long long)rep->pages_by_enc[e]);
    }
    rc = rc ? rc : vmt_ctl_addf(r, "wire_bytes", "%llu", (unsigned long long)rep->wire_bytes);
    rc = rc ? rc : vmt_ctl_addf(r, "throughput", "%llu", (unsigned long long)rep->throughput);
    rc = rc ? rc : vmt_ctl_addf(r, "have_ids", "%llu", (unsigned long long)rep->have_ids);
    rc = rc ? rc : vmt_ctl_addf(r, "throttle_pct", "%u", rep->throttle_pct);
    char rates[1024] = "";
    size_t at = 0;
    for (unsigned i = 0; i < rep->nround_stats && at + 24 < sizeof(rates); i++)
        at += (size_t)snprintf(rates + at, sizeof(rates) - at, "%s%.0f", i ? "," : "",
                               rep->dirty_rate[i]);
    return rc ? rc : vmt_ctl_adds(r, "dirty_rates", rates);
}

/* Loads the key and TLS files the request names into o (freed by caller). */
static int load_auth(const vmt_ctl_msg *req, vmt_migrate_opts *o, uint8_t *key, vmt_tls **tls)
{
    const char *psk = vmt_ctl_get(req, "psk_file"), *t = vmt_ctl_get(req, "tls");
    size_t len = 0;
    int rc = 0;
    if (psk && (rc = vmt_cli_read_psk(psk, key, VMT_NET_PSK_MAX, &len)) == 0) {
        o->psk = key;
        o->psk_len = len;
    }
    if (rc == 0 && t && (rc = vmt_cli_tls_new(t, false, tls)) == 0)
        o->tls = *tls;
    return rc;
}

int vmp_req_migrate(vmproc *p, vmp_conn *c, const vmt_ctl_msg *req, vmt_ctl_msg *reply)
{
    const char *addr = vmt_ctl_get(req, "addr");
    if (!addr)
        return vmt_error_set(VMT_EINVAL, "migrate: no destination address");
    if (p->fenced)
        return vmt_error_set(VMT_EINDOUBT, "VM %s is fenced after a migration in doubt (%s)",
                             p->o->name, p->fence_why);
    vmt_migrate_opts o;
    vmt_migrate_opts_init(&o);
    uint8_t key[VMT_NET_PSK_MAX];
    vmt_tls *tls = NULL;
    int rc = parse_opts(req, &o);
    if (rc == 0)
        rc = load_auth(req, &o, key, &tls);
    if (rc) {
        vmt_tls_free(tls);
        return rc;
    }
    o.base = p->has_head ? &p->head : NULL;
    o.lazy_ram = p->restore != NULL; /* pages of a lazy restore still arriving */
    o.vm_name = p->o->name;
    o.image = p->image;
    o.progress = mig_progress;
    o.progress_ctx = c;
    vmt_migrate_report rep;
    rc = vmt_migrate_send(p->vm, addr, &o, &rep);
    vmt_tls_free(tls);
    if (rc == VMT_EINDOUBT) {
        p->fenced = true;
        snprintf(p->fence_why, sizeof(p->fence_why), "migration to %.200s: %s", addr, rep.why);
        vmp_console_marker(p, "fenced: migration in doubt, paused");
    }
    if (rc)
        return vmt_error_set(rc, "migrating %s to %s: %s", p->o->name, addr, rep.why);
    p->migrated = true;
    char marker[300];
    snprintf(marker, sizeof(marker), "migrated to %s (downtime %.1f ms)", addr,
             (double)rep.downtime_ns / 1e6);
    vmp_console_marker(p, marker);
    return add_report(reply, &rep);
}
