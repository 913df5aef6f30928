/* vmtree serve / pull / push: golden images between hosts' stores
 * (migrate/ vmtree/golden.h, docs/golden.md).  Only what the other store
 * lacks crosses; everything is verified against its id before it is stored. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json.h"
#include "netopts.h"
#include "progress.h"
#include "vmtree/golden.h"

/* Options shared by the three commands. */
typedef struct net_opts {
    const char *cmd;
    const char *psk_file, *tls; /* --psk FILE, --tls CERT,KEY,CA (client: CA alone is fine) */
    const char *as_tag;         /* --as NAME */
    const char *listen;         /* serve: --listen ADDR:PORT */
    bool read_only, once, no_ancestors;
    uint8_t psk[VMT_NET_PSK_MAX];
    size_t psk_len;
    char tls_files[3][1024];
    vmt_tls *tls_ctx;
    const char *rate;           /* serve: --rate BYTES a second */
    vmt_ratelimit *rate_ctx;
} net_opts;

#define OPT_PSK 0x2001
#define OPT_TLS 0x2002
#define OPT_AS 0x2003
#define OPT_LISTEN 0x2004
#define OPT_RO 0x2005
#define OPT_ONCE 0x2006
#define OPT_NOANC 0x2007
#define OPT_RATE 0x2008

static const char net_help[] =
    "  --psk FILE    authenticate with the pre-shared key in FILE (16..1024 bytes;\n"
    "                both sides must hold it)\n"
    "  --tls CERT,KEY,CA  TLS 1.3; a client may give only CA (the server's CA)\n"
    "  --store DIR   the store (default: $VMTREE_STORE, else ~/.local/share/vmtree/store)\n"
    "  --progress    show progress on stderr even when it is not a terminal\n";

static int net_opt(void *ctx, int code, const char *arg)
{
    net_opts *n = ctx;
    switch (code) {
    case OPT_PSK: n->psk_file = arg; return 0;
    case OPT_TLS: n->tls = arg; return 0;
    case OPT_AS:
        if (vmt_cli_check_name("--as", arg))
            return vmt_cli_fail(n->cmd, "%s", vmt_error_last());
        n->as_tag = arg;
        return 0;
    case OPT_LISTEN: n->listen = arg; return 0;
    case OPT_RO: n->read_only = true; return 0;
    case OPT_ONCE: n->once = true; return 0;
    case OPT_NOANC: n->no_ancestors = true; return 0;
    case OPT_RATE: n->rate = arg; return 0;
    default: return 1;
    }
}

static int read_psk(net_opts *n)
{
    FILE *f = fopen(n->psk_file, "rb");
    if (!f)
        return vmt_error_errno(VMT_EIO, errno, "--psk %s", n->psk_file);
    n->psk_len = fread(n->psk, 1, sizeof(n->psk), f);
    bool more = fgetc(f) != EOF;
    fclose(f);
    while (n->psk_len && (n->psk[n->psk_len - 1] == '\n' || n->psk[n->psk_len - 1] == '\r'))
        n->psk_len--; /* a key written with echo */
    if (more || n->psk_len < VMT_NET_PSK_MIN)
        return vmt_error_set(VMT_EINVAL, "--psk %s: a key has %u..%u bytes", n->psk_file,
                             VMT_NET_PSK_MIN, VMT_NET_PSK_MAX);
    return 0;
}

static int make_tls(net_opts *n, bool server)
{
    char buf[3 * 1024];
    snprintf(buf, sizeof(buf), "%s", n->tls);
    char *parts[3] = {NULL, NULL, NULL}, *save = NULL;
    int k = 0;
    for (char *t = strtok_r(buf, ",", &save); t && k < 3; t = strtok_r(NULL, ",", &save)) {
        snprintf(n->tls_files[k], sizeof(n->tls_files[k]), "%s", t);
        parts[k] = n->tls_files[k];
        k++;
    }
    vmt_tls_config c = {.server = server};
    if (k == 3) {
        c.cert_file = parts[0];
        c.key_file = parts[1];
        c.ca_file = parts[2];
    } else if (k == 1 && !server) {
        c.ca_file = parts[0];
    } else {
        return vmt_error_set(VMT_EINVAL, "--tls takes CERT,KEY,CA%s", server ? "" : " or CA");
    }
    return vmt_tls_new(&n->tls_ctx, &c);
}

/* The session settings from the options. */
static int net_config(net_opts *n, bool server, vmt_session_config *c)
{
    vmt_session_config_init(c);
    c->timeout_ms = 60000;
    int rc = n->psk_file ? read_psk(n) : 0;
    if (rc == 0 && n->tls)
        rc = make_tls(n, server);
    if (rc)
        return rc;
    c->tls = n->tls_ctx;
    if (n->psk_file) {
        c->psk = n->psk;
        c->psk_len = n->psk_len;
    } else {
        c->allow_unauthenticated = true; /* no key: TLS, or a trusted network */
    }
    return 0;
}

static void print_stats(bool json, const char *what, const vmt_id *id, const vmt_golden_stats *st)
{
    char sid[13], sz[32];
    vmt_cli_short_id(id, sid);
    if (!json) {
        vmt_cli_format_bytes(st->wire_received + st->wire_sent, sz, sizeof(sz));
        printf("%s %s: %llu of %llu snapshots new, %llu objects (%llu pages, %llu map nodes), "
               "%s on the wire, %.2f s\n",
               what, sid, (unsigned long long)st->snapshots_new, (unsigned long long)st->snapshots,
               (unsigned long long)st->objects, (unsigned long long)st->pages_fetched,
               (unsigned long long)st->nodes_fetched, sz, (double)st->ns / 1e9);
        return;
    }
    vmt_json j;
    vmt_json_init(&j, stdout);
    vmt_json_obj_begin(&j);
    vmt_json_kstr(&j, "op", what);
    vmt_json_kid(&j, "snapshot", id);
    vmt_json_ku64(&j, "snapshots", st->snapshots);
    vmt_json_ku64(&j, "snapshots_new", st->snapshots_new);
    vmt_json_ku64(&j, "objects", st->objects);
    vmt_json_ku64(&j, "object_bytes", st->object_bytes);
    vmt_json_ku64(&j, "payload_bytes", st->payload_bytes);
    vmt_json_ku64(&j, "pages_fetched", st->pages_fetched);
    vmt_json_ku64(&j, "pages_present", st->pages_present);
    vmt_json_ku64(&j, "nodes_fetched", st->nodes_fetched);
    vmt_json_ku64(&j, "nodes_skipped", st->nodes_skipped);
    vmt_json_ku64(&j, "wire_sent", st->wire_sent);
    vmt_json_ku64(&j, "wire_received", st->wire_received);
    vmt_json_ku64(&j, "ns", st->ns);
    vmt_json_obj_end(&j);
    fflush(stdout);
}

/* ---- pull / push -------------------------------------------------------------- */

static void client_usage(FILE *f, bool pull)
{
    fprintf(f,
            "usage: vmtree %s [--as NAME] [--no-ancestors] [--psk FILE | --tls ...]\n"
            "                   [--store DIR] [--json] [--progress]\n\n"
            "%s\n"
            "Only the objects the receiving store lacks cross: the two sides walk the\n"
            "snapshots' Merkle maps and skip every subtree the receiver holds.  Every\n"
            "object is checked against its id before it is stored.  An interrupted\n"
            "transfer keeps what arrived; running it again continues from there.\n\n"
            "  --as NAME     tag the snapshot as NAME in the receiving store\n"
            "  --no-ancestors  only the snapshot, not its ancestors\n"
            "%s"
            "  --json        {op, snapshot, snapshots_new, objects, pages_fetched, wire_*, ns}\n",
            pull ? "pull HOST:PORT SNAP" : "push SNAP HOST:PORT",
            pull ? "Copies snapshot SNAP (as the server names it) and its ancestors from the\n"
                   "store served at HOST:PORT (`vmtree serve`) into the local store."
                 : "Copies snapshot SNAP and its ancestors from the local store into the store\n"
                   "served at HOST:PORT (`vmtree serve`, not --read-only).",
            net_help);
}

static const struct option client_longopts[] = {
    VMT_CLI_COMMON_LONGOPTS,
    {"psk", required_argument, NULL, OPT_PSK},
    {"tls", required_argument, NULL, OPT_TLS},
    {"as", required_argument, NULL, OPT_AS},
    {"no-ancestors", no_argument, NULL, OPT_NOANC},
    {NULL, 0, NULL, 0}};

/* Opens the local store (created for a pull when missing) and connects. */
static int client_open(vmt_cli_common *c, net_opts *n, const char *addr, bool pull, vmt_store **st,
                       vmt_catalog **cat, vmt_session **s)
{
    vmt_session_config cfg;
    char host[256];
    uint16_t port;
    int rc = vmt_cli_parse_hostport(addr, host, sizeof(host), &port, false);
    rc = rc ? rc : vmt_cli_resolve_store(c);
    rc = rc ? rc : vmt_cli_store_open(c->store, pull, st);
    /* A pull creates a missing directory store, never a RADOS one: a
     * mistyped namespace of a pool many hosts share would otherwise
     * become a new, empty store. */
    if (rc == VMT_ENOENT && pull && !vmt_cli_store_shared(c->store) &&
        (rc = vmt_store_init(c->store, NULL)) == 0)
        rc = vmt_cli_store_open(c->store, true, st);
    rc = rc ? rc : vmt_cli_catalog_of(*st, cat);
    rc = rc ? rc : net_config(n, false, &cfg);
    rc = rc ? rc : vmt_session_connect(s, host, port, &cfg);
    return rc;
}

static int client_cmd(int argc, char **argv, bool pull)
{
    const char *name = pull ? "pull" : "push";
    vmt_cli_common c = {.cmd = name};
    net_opts n = {.cmd = name};
    const char *pos[2];
    int npos, prc = vmt_cli_parse(&c, argc, argv, NULL, client_longopts, net_opt, &n, pos, 2,
                                  &npos);
    if (prc)
        return prc < 0 ? (client_usage(stdout, pull), 0) : 1;
    if (npos != 2)
        return vmt_cli_fail(name, "usage: vmtree %s", pull ? "pull HOST:PORT SNAP [--as NAME]"
                                                           : "push SNAP HOST:PORT [--as NAME]");
    vmt_store *st = NULL;
    vmt_catalog *cat = NULL;
    vmt_session *s = NULL;
    vmt_golden_opts o;
    vmt_golden_stats stats;
    vmt_id id;
    vmt_progress prog;
    vmt_golden_opts_init(&o);
    o.max_ancestors = n.no_ancestors ? 0 : VMT_GOLDEN_ALL_ANCESTORS;
    vmt_progress_init(&prog, name, c.progress);
    o.progress = vmt_progress_store_cb;
    o.progress_ctx = &prog;
    int rc = client_open(&c, &n, pull ? pos[0] : pos[1], pull, &st, &cat, &s);
    if (rc == 0 && pull)
        rc = vmt_golden_pull(s, st, cat, pos[1], n.as_tag, &o, &id, &stats);
    if (rc == 0 && !pull && (rc = vmt_cli_resolve(cat, pos[0], &id)) == 0)
        rc = vmt_golden_push(s, st, &id, n.as_tag, &o, &stats);
    vmt_progress_end(&prog);
    vmt_session_close(s);
    vmt_catalog_close(cat);
    vmt_store_close(st);
    vmt_tls_free(n.tls_ctx);
    if (rc)
        return vmt_cli_fail(name, "%s", vmt_error_last());
    print_stats(c.json, pull ? "pulled" : "pushed", &id, &stats);
    return 0;
}

int vmt_cli_pull(int argc, char **argv)
{
    return client_cmd(argc, argv, true);
}

int vmt_cli_push(int argc, char **argv)
{
    return client_cmd(argc, argv, false);
}

/* ---- serve ---------------------------------------------------------------------- */

static void serve_usage(FILE *f)
{
    fprintf(f,
            "usage: vmtree serve --listen ADDR:PORT [--read-only] [--once]\n"
            "                    [--psk FILE | --tls CERT,KEY,CA] [--store DIR] [--json]\n\n"
            "Serves the store to `vmtree pull` and `vmtree push` on ADDR:PORT, one\n"
            "connection at a time.  Each request opens the store for itself: a pull\n"
            "read-only (it sees the last commit), a push as the writer.  Without --psk\n"
            "or --tls anyone who reaches the port may read (and without --read-only,\n"
            "write) the store.\n\n"
            "  --listen ADDR:PORT  where to listen (port 0: any; the port is printed)\n"
            "  --read-only   refuse pushes\n"
            "  --once        serve one connection, then exit with its status\n"
            "  --rate BYTES  send at most BYTES a second (K, M, G suffixes): to share a\n"
            "                link, or to watch `branch --from` run before its pages\n"
            "%s"
            "  --json        one JSON line per request served\n",
            net_help);
}

static void serve_report(bool json, unsigned op, int rc, const vmt_id *id,
                         const vmt_golden_stats *st)
{
    const char *what = op == VMT_GOLDEN_OP_PUSH ? "push" : op == VMT_GOLDEN_OP_PULL ? "pull" : "?";
    char sid[13], sz[32];
    if (rc) {
        fprintf(stderr, "vmtree: serve: %s: %s\n", what, vmt_error_last());
        return;
    }
    if (op == VMT_GOLDEN_OP_PUSH || json) { /* a push: this side received */
        print_stats(json, op == VMT_GOLDEN_OP_PUSH ? "served push" : "served pull", id, st);
        return;
    }
    vmt_cli_short_id(id, sid);
    vmt_cli_format_bytes(st->wire_sent, sz, sizeof(sz));
    printf("served pull %s: %llu objects sent in %llu wants, %s on the wire, %.2f s\n", sid,
           (unsigned long long)st->objects, (unsigned long long)st->wants, sz,
           (double)st->ns / 1e9);
    fflush(stdout);
}

/* The session's accept: the connection the loop accepted first (wrapped in
 * TLS when configured), then the listener. */
typedef struct pre_accept {
    vmt_listener *l;
    vmt_transport *first;
    vmt_tls *tls;
    vmt_ratelimit *rate;
} pre_accept;

static int pre_accept_fn(void *ctx, uint64_t deadline_ns, vmt_transport **out)
{
    pre_accept *a = ctx;
    vmt_transport *t = a->first;
    a->first = NULL;
    if (!t) {
        uint64_t now = vmt_now_ns();
        uint32_t ms = deadline_ns == UINT64_MAX ? VMT_NET_FOREVER
                      : deadline_ns > now ? (uint32_t)VMT_MIN((deadline_ns - now) / 1000000u + 1,
                                                              (uint64_t)UINT32_MAX - 1)
                                          : 0;
        int rc = vmt_listener_accept(a->l, &t, ms);
        if (rc)
            return rc;
    }
    if (a->rate) {
        int rc = vmt_transport_rate(&t, t, a->rate);
        if (rc)
            return rc;
    }
    if (!a->tls) {
        *out = t;
        return 0;
    }
    return vmt_transport_tls(out, t, a->tls, NULL);
}

/* Serves connections one at a time (one with --once); the last status. */
static int serve_loop(const vmt_cli_common *c, const net_opts *n, const vmt_session_config *cfg,
                      vmt_listener *l)
{
    vmt_golden_server_opts so = {.store_dir = c->store, .read_only = n->read_only};
    vmt_golden_opts_init(&so.xfer);
    int last = 0;
    do {
        vmt_session *s = NULL;
        vmt_golden_stats st;
        vmt_id id;
        unsigned op = 0;
        memset(&id, 0, sizeof(id));
        memset(&st, 0, sizeof(st));
        pre_accept pa = {.l = l, .tls = n->tls_ctx, .rate = n->rate_ctx};
        /* Waits for a client without limit; the handshake then has its timeout. */
        last = vmt_listener_accept(l, &pa.first, VMT_NET_FOREVER);
        if (last == 0)
            last = vmt_session_server(&s, cfg, pre_accept_fn, &pa);
        vmt_transport_close(pa.first);
        if (last == 0)
            last = vmt_golden_serve(s, &so, &op, &id, &st);
        else
            fprintf(stderr, "vmtree: serve: refused a connection: %s\n", vmt_error_last());
        if (s)
            serve_report(c->json, op, last, &id, &st);
        vmt_session_close(s);
    } while (!n->once);
    return last;
}

int vmt_cli_serve(int argc, char **argv)
{
    static const struct option longopts[] = {
        VMT_CLI_COMMON_LONGOPTS,
        {"psk", required_argument, NULL, OPT_PSK},
        {"tls", required_argument, NULL, OPT_TLS},
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"read-only", no_argument, NULL, OPT_RO},
        {"once", no_argument, NULL, OPT_ONCE},
        {"rate", required_argument, NULL, OPT_RATE},
        {NULL, 0, NULL, 0}};
    vmt_cli_common c = {.cmd = "serve"};
    net_opts n = {.cmd = "serve"};
    int npos, prc = vmt_cli_parse(&c, argc, argv, NULL, longopts, net_opt, &n, NULL, 0, &npos);
    if (prc)
        return prc < 0 ? (serve_usage(stdout), 0) : 1;
    if (!n.listen)
        return vmt_cli_fail("serve", "where? (usage: vmtree serve --listen ADDR:PORT)");
    vmt_session_config cfg;
    vmt_listener *l = NULL;
    char host[256];
    uint16_t port;
    vmt_store *probe = NULL;
    vmt_store_open_opts oo;
    vmt_store_open_opts_init(&oo);
    oo.read_only = true;
    int rc = vmt_cli_resolve_store(&c);
    rc = rc ? rc : vmt_store_open(&probe, c.store, &oo); /* the store must exist */
    vmt_store_close(probe);
    rc = rc ? rc : net_config(&n, true, &cfg);
    rc = rc ? rc : vmt_cli_parse_hostport(n.listen, host, sizeof(host), &port, true);
    uint64_t rate = 0;
    if (rc == 0 && n.rate && (vmt_parse_size(n.rate, &rate) != 0 || rate == 0))
        rc = vmt_error_set(VMT_EINVAL, "--rate %s: not a number of bytes", n.rate);
    rc = rc ? rc : (rate ? vmt_ratelimit_new(&n.rate_ctx, rate, 0) : 0);
    rc = rc ? rc : vmt_tcp_listen(&l, host, port);
    if (rc) {
        vmt_ratelimit_free(n.rate_ctx);
        vmt_tls_free(n.tls_ctx);
        return vmt_cli_fail("serve", "%s", vmt_error_last());
    }
    fprintf(stderr, "vmtree: serving %s on %s:%u%s\n", c.store, host, vmt_listener_port(l),
            n.read_only ? " (read-only)" : "");
    printf("listening %u\n", vmt_listener_port(l));
    fflush(stdout);
    int last = serve_loop(&c, &n, &cfg, l);
    vmt_listener_close(l);
    vmt_ratelimit_free(n.rate_ctx);
    vmt_tls_free(n.tls_ctx);
    return last ? 1 : 0;
}
