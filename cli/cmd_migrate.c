/* vmtree migrate NAME HOST:PORT: live migration of a VM process to a
 * `vmtree receive` (docs/cli.md, docs/migration.md).  The VM process does
 * the work (vmproc_mig.c); this command sends the request, shows the
 * progress and prints the report. */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "control.h"
#include "json.h"
#include "netopts.h"
#include "progress.h"

#define EXIT_IN_DOUBT 3

enum {
    OPT_DOWNTIME = 0x2001,
    OPT_BANDWIDTH,
    OPT_STREAMS,
    OPT_COMPRESS,
    OPT_NO_DEDUP,
    OPT_NO_XBZRLE,
    OPT_AUTO_CONVERGE,
    OPT_MAX_ROUNDS,
    OPT_TIMEOUT,
    OPT_PSK,
    OPT_TLS,
};

static void migrate_usage(FILE *f)
{
    fprintf(f, "usage: vmtree migrate NAME [tcp://|rdma://]HOST:PORT [--max-downtime MS]\n"
               "         [--bandwidth RATE]\n"
               "         [--streams N] [--compress none|lz4|zstd[:LEVEL]] [--no-dedup]\n"
               "         [--no-xbzrle] [--auto-converge] [--max-rounds N] [--timeout SEC]\n"
               "         [--psk FILE | --tls CERT,KEY,CA] [--store DIR] [--json] [--progress]\n\n"
               "Moves running VM NAME to the `vmtree receive` listening at HOST:PORT by\n"
               "pre-copy: its memory is copied while it runs, round after round of the pages\n"
               "it dirtied, until the rest fits the downtime limit; then it pauses, the last\n"
               "pages and its state are sent, and it resumes on the destination.  Only when\n"
               "the destination says it runs the VM does this VM process end.  Any failure\n"
               "before that leaves the VM running here as before.  rdma://HOST:PORT moves it\n"
               "over RDMA (librdmacm); where no RDMA device exists it is refused before\n"
               "anything is sent.\n\n"
               "  --max-downtime MS  the pause to aim at (default 300)\n"
               "  --bandwidth RATE   cap on the wire in bytes/s (K, M, G suffixes; or with\n"
               "                     \"bit\": 1Gbit = 1 Gibit/s); default unlimited\n"
               "  --streams N        parallel TCP streams, 1..16 (default 1)\n"
               "  --compress C       pages sent in full: none (default), lz4, zstd[:LEVEL]\n"
               "  --no-dedup         do not use the pages the destination holds already\n"
               "                     (the snapshot this VM runs from, if its store has it)\n"
               "  --no-xbzrle        resend dirtied pages in full, not as deltas\n"
               "  --auto-converge    throttle the VM when it dirties faster than the link\n"
               "  --max-rounds N     give up (VM runs on here) after N rounds (default 30)\n"
               "  --timeout SEC      for each network step (default 10)\n"
               "  --psk FILE         pre-shared key (16..1024 bytes, mode 0600) both sides know\n"
               "  --tls CERT,KEY,CA  TLS 1.3; CA verifies the destination; CERT,KEY optional\n"
               "                     (client certificate), e.g. ,,ca.pem\n"
               "  --progress         show the rounds even without a terminal\n"
               "  --store DIR        the store of VM NAME\n"
               "  --json             the report as one JSON object\n\n"
               "Exit status: 0 migrated; 1 failed, the VM runs on here; 3 in doubt: the\n"
               "destination may run the VM (no answer after the final step), so it stays\n"
               "paused here (`vmtree status` says fenced) until an operator who checked the\n"
               "destination runs `vmtree resume NAME --force` or `vmtree stop NAME`.\n");
}

typedef struct mig_args {
    vmt_ctl_msg *req;
    int bad; /* an option failed (printed) */
} mig_args;

static int add_u64_opt(mig_args *a, const char *key, const char *opt, const char *arg, uint64_t min,
                       uint64_t max, uint64_t scale)
{
    uint64_t v;
    if (vmt_parse_u64(arg, min, max, &v) != 0)
        return vmt_cli_fail("migrate", "%s: '%s' is not a number in %llu..%llu", opt, arg,
                            (unsigned long long)min, (unsigned long long)max);
    return vmt_ctl_addf(a->req, key, "%llu", (unsigned long long)(v * scale)) ? 1 : 0;
}

static int add_bandwidth(mig_args *a, const char *arg)
{
    char buf[64];
    uint64_t v;
    size_t l = strlen(arg);
    bool bits = l > 3 && !strcmp(arg + l - 3, "bit");
    if (l >= sizeof(buf))
        return vmt_cli_fail("migrate", "--bandwidth: '%s' is too long", arg);
    snprintf(buf, sizeof(buf), "%.*s", (int)(bits ? l - 3 : l), arg);
    if (vmt_parse_size(buf, &v) != 0 || v == 0)
        return vmt_cli_fail("migrate", "--bandwidth: '%s' is not a rate (e.g. 100M, 1Gbit)", arg);
    return vmt_ctl_addf(a->req, "bandwidth", "%llu", (unsigned long long)(bits ? v / 8 : v)) ? 1
                                                                                             : 0;
}

static int add_compress(mig_args *a, const char *arg)
{
    char name[8];
    const char *colon = strchr(arg, ':');
    size_t l = colon ? (size_t)(colon - arg) : strlen(arg);
    snprintf(name, sizeof(name), "%.*s", (int)VMT_MIN(l, sizeof(name) - 1), arg);
    if (strcmp(name, "none") && strcmp(name, "lz4") && strcmp(name, "zstd"))
        return vmt_cli_fail("migrate", "--compress: '%s' is not none, lz4 or zstd[:LEVEL]", arg);
    if (colon && strcmp(name, "zstd"))
        return vmt_cli_fail("migrate", "--compress: only zstd takes a level");
    if (vmt_ctl_adds(a->req, "compress", name))
        return 1;
    return colon ? add_u64_opt(a, "level", "--compress zstd:LEVEL", colon + 1, 1, 19, 1) : 0;
}

/* The key and TLS files are read by the VM process: check them here first
 * so a mistake is told before anything happens, and pass absolute paths. */
static int add_file(mig_args *a, const char *key, const char *path)
{
    char abs[PATH_MAX];
    if (!realpath(path, abs))
        return vmt_cli_fail("migrate", "%s: %s: no such file", key, path);
    return vmt_ctl_adds(a->req, key, abs) ? 1 : 0;
}

static int add_tls(mig_args *a, const char *spec)
{
    vmt_tls *t = NULL;
    if (vmt_cli_tls_new(spec, false, &t) != 0)
        return vmt_cli_fail("migrate", "%s", vmt_error_last());
    vmt_tls_free(t);
    char out[3 * PATH_MAX + 3] = "", part[PATH_MAX];
    const char *p = spec;
    for (int i = 0; i < 3; i++) {
        const char *comma = i < 2 ? strchr(p, ',') : NULL;
        size_t l = comma ? (size_t)(comma - p) : strlen(p);
        char abs[PATH_MAX] = "";
        snprintf(part, sizeof(part), "%.*s", (int)VMT_MIN(l, sizeof(part) - 1), p);
        if (part[0] && !realpath(part, abs))
            return vmt_cli_fail("migrate", "--tls: %s: no such file", part);
        strncat(out, abs, sizeof(out) - strlen(out) - 1);
        if (i < 2)
            strncat(out, ",", sizeof(out) - strlen(out) - 1);
        p = comma ? comma + 1 : p + l;
    }
    return vmt_ctl_adds(a->req, "tls", out) ? 1 : 0;
}

static int migrate_opt(void *ctx, int code, const char *arg)
{
    mig_args *a = ctx;
    switch (code) {
    case OPT_DOWNTIME:
        return add_u64_opt(a, "max_downtime_ms", "--max-downtime", arg, 1, 3600000, 1);
    case OPT_BANDWIDTH:
        return add_bandwidth(a, arg);
    case OPT_STREAMS:
        return add_u64_opt(a, "streams", "--streams", arg, 1, 16, 1);
    case OPT_COMPRESS:
        return add_compress(a, arg);
    case OPT_NO_DEDUP:
        return vmt_ctl_adds(a->req, "no_dedup", "1") ? 1 : 0;
    case OPT_NO_XBZRLE:
        return vmt_ctl_adds(a->req, "no_xbzrle", "1") ? 1 : 0;
    case OPT_AUTO_CONVERGE:
        return vmt_ctl_adds(a->req, "auto_converge", "1") ? 1 : 0;
    case OPT_MAX_ROUNDS:
        return add_u64_opt(a, "max_rounds", "--max-rounds", arg, 1, 10000, 1);
    case OPT_TIMEOUT:
        return add_u64_opt(a, "timeout_ms", "--timeout", arg, 1, 3600, 1000);
    case OPT_PSK: {
        uint8_t key[VMT_NET_PSK_MAX];
        size_t len;
        if (vmt_cli_read_psk(arg, key, sizeof(key), &len) != 0)
            return vmt_cli_fail("migrate", "%s", vmt_error_last());
        return add_file(a, "psk_file", arg);
    }
    case OPT_TLS:
        return add_tls(a, arg);
    default:
        return 1;
    }
}

static void print_report(const char *name, const char *addr, const vmt_ctl_msg *r)
{
    uint64_t total = 0, down = 0, rounds = 0, bytes = 0, sent = 0, zero = 0, ref = 0, delta = 0;
    vmt_ctl_get_u64(r, "total_us", &total);
    vmt_ctl_get_u64(r, "downtime_us", &down);
    vmt_ctl_get_u64(r, "rounds", &rounds);
    vmt_ctl_get_u64(r, "wire_bytes", &bytes);
    vmt_ctl_get_u64(r, "pages_sent", &sent);
    vmt_ctl_get_u64(r, "pages_zero", &zero);
    vmt_ctl_get_u64(r, "pages_ref", &ref);
    vmt_ctl_get_u64(r, "pages_delta", &delta);
    char b[32];
    vmt_cli_format_bytes(bytes, b, sizeof(b));
    printf("%s migrated to %s: %.1f ms, downtime %.2f ms, %llu rounds, %s on the wire "
           "(%llu pages: %llu zero, %llu by reference, %llu deltas)\n",
           name, addr, (double)total / 1000.0, (double)down / 1000.0, (unsigned long long)rounds, b,
           (unsigned long long)sent, (unsigned long long)zero, (unsigned long long)ref,
           (unsigned long long)delta);
    vmt_error_clear();
}

static bool psk_and_tls(const vmt_ctl_msg *req)
{
    return vmt_ctl_get(req, "psk_file") && vmt_ctl_get(req, "tls");
}

static int migrate_run(vmt_cli_common *c, const char *name, const char *addr, vmt_ctl_msg *req,
                       vmt_ctl_msg *rep)
{
    vmt_progress prog;
    if (vmt_cli_resolve_store(c) != 0)
        return vmt_cli_fail("migrate", "%s", vmt_error_last());
    if (vmt_ctl_adds(req, "addr", addr) != 0)
        return vmt_cli_fail("migrate", "%s", vmt_error_last());
    vmt_progress_init(&prog, "migrate", c->progress);
    int rc = vmt_cli_vm_request(c->store, name, req, rep, VMT_CLI_LONG_TIMEOUT_NS, &prog);
    if (rc == VMT_EINDOUBT)
        return vmt_cli_fail("migrate", "%s", vmt_error_last()), EXIT_IN_DOUBT;
    if (rc)
        return vmt_cli_fail("migrate", "%s", vmt_error_last());
    if (c->json) {
        vmt_json j;
        vmt_json_init(&j, stdout);
        vmt_cli_reply_json(&j, rep);
    } else {
        print_report(name, addr, rep);
    }
    return 0;
}

int vmt_cli_migrate(int argc, char **argv)
{
    static const struct option longopts[] = {
        VMT_CLI_COMMON_LONGOPTS,
        {"max-downtime", required_argument, NULL, OPT_DOWNTIME},
        {"bandwidth", required_argument, NULL, OPT_BANDWIDTH},
        {"streams", required_argument, NULL, OPT_STREAMS},
        {"compress", required_argument, NULL, OPT_COMPRESS},
        {"no-dedup", no_argument, NULL, OPT_NO_DEDUP},
        {"no-xbzrle", no_argument, NULL, OPT_NO_XBZRLE},
        {"auto-converge", no_argument, NULL, OPT_AUTO_CONVERGE},
        {"max-rounds", required_argument, NULL, OPT_MAX_ROUNDS},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"psk", required_argument, NULL, OPT_PSK},
        {"tls", required_argument, NULL, OPT_TLS},
        {NULL, 0, NULL, 0}};
    vmt_cli_common c = {.cmd = "migrate"};
    vmt_ctl_msg *req = malloc(sizeof(*req)), *rep = malloc(sizeof(*rep));
    if (!req || !rep) {
        free(req);
        free(rep);
        return vmt_cli_fail("migrate", "out of memory");
    }
    vmt_ctl_init(req, VMT_CTL_REQUEST);
    vmt_ctl_adds(req, "op", "migrate");
    mig_args a = {.req = req};
    const char *pos[2];
    int npos, prc = vmt_cli_parse(&c, argc, argv, NULL, longopts, migrate_opt, &a, pos, 2, &npos);
    int status = 1;
    if (prc < 0) {
        migrate_usage(stdout);
        status = 0;
    } else if (prc == 0 && npos != 2) {
        vmt_cli_fail("migrate", "usage: vmtree migrate NAME HOST:PORT [OPTIONS]");
    } else if (prc == 0 && psk_and_tls(req)) {
        vmt_cli_fail("migrate", "--psk and --tls: choose one");
    } else if (prc == 0) {
        status = migrate_run(&c, pos[0], pos[1], req, rep);
    }
    free(req);
    free(rep);
    return status;
}
