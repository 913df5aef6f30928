/*
 * vmtree store init|stats|verify|gc|train-dict: the page store's commands
 * (docs/store.md).  argv[0] is "store".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "vmtree/store.h"
#include "vmtree/util.h"

#define EXIT_USAGE 2

typedef struct opts {
    const char *store, *roots, *codec;
    bool json, progress, help, dry_run, compare;
    uint64_t pack_size, dict_size, samples;
    int zstd_level, lz4_accel;
    double min_live;
} opts;

static const char *const usage_text =
    "usage: vmtree store COMMAND [options]\n"
    "\n"
    "commands:\n"
    "  init         create a store\n"
    "  stats        objects, bytes, dedup and compression ratios\n"
    "  verify       check every record; list damage; exit 1 if any\n"
    "  gc           delete what the roots do not reach (--roots FILE)\n"
    "  train-dict   train a zstd dictionary from the store's pages\n"
    "\n"
    "common options:\n"
    "  --store DIR  the store (default $" VMT_STORE_ENV ", else\n"
    "               $XDG_DATA_HOME/vmtree/store or ~/.local/share/vmtree/store)\n"
    "  --json       print the result as one JSON object\n"
    "  --help       help for a command\n";

static const char *const help_init =
    "usage: vmtree store init [--store DIR] [--pack-size SIZE] [--codec raw|lz4|zstd|zstd-dict]\n"
    "                         [--zstd-level N] [--lz4-accel N] [--compare-on-dedup]\n"
    "Creates an empty store.  --pack-size seals packs at SIZE (1M..1G, default 128M);\n"
    "--compare-on-dedup byte-compares every dedup hit (for stores shared between\n"
    "tenants: xxHash is not collision-resistant against crafted pages).\n";
static const char *const help_stats =
    "usage: vmtree store stats [--store DIR] [--json]\n"
    "Prints objects by type, logical/stored/disk bytes, compression per codec,\n"
    "and lifetime dedup counters as of the last commit; on rados://, also this\n"
    "handle's pack reads and local read cache counters (--json: always).\n";
static const char *const help_verify =
    "usage: vmtree store verify [--store DIR] [--json] [--progress]\n"
    "Reads every committed record, checks checksums, decompresses and rehashes it\n"
    "against its id, and checks the index.  Lists each damage with pack and\n"
    "offset; exits 1 if anything is damaged.  Runs beside a writer.\n";
static const char *const help_gc =
    "usage: vmtree store gc --roots FILE [--store DIR] [--min-live F] [--dry-run]\n"
    "                       [--json] [--progress]\n"
    "Marks everything reachable from the ids in FILE (32 hex digits per line,\n"
    "'#' comments), through map nodes, and rewrites packs whose live fraction\n"
    "is below F (default 0.5).  Crash-safe.  Needs the writer lock.\n";
static const char *const help_train =
    "usage: vmtree store train-dict [--store DIR] [--size SIZE] [--samples N] [--json]\n"
    "Trains a zstd dictionary (default 112K) from up to N pages (default 16384)\n"
    "of the store; puts with codec zstd-dict use the newest one.\n";

static int want_arg(const char *cmd, int argc, char **argv, int i)
{
    if (i + 1 >= argc) {
        vmt_cli_fail(cmd, "%s needs a value", argv[i]);
        return -1;
    }
    return 0;
}

static int parse_num(const char *cmd, const char *s, uint64_t min, uint64_t max, uint64_t *v)
{
    if (vmt_parse_u64(s, min, max, v) != 0) {
        vmt_cli_fail(cmd, "%s", vmt_error_last());
        return -1;
    }
    return 0;
}

static int parse_value(const char *cmd, const char *flag, const char *val, opts *o)
{
    uint64_t v;
    char *end;
    if (!strcmp(flag, "--store"))
        o->store = val;
    else if (!strcmp(flag, "--roots"))
        o->roots = val;
    else if (!strcmp(flag, "--codec"))
        o->codec = val;
    else if (!strcmp(flag, "--pack-size") || !strcmp(flag, "--size")) {
        if (vmt_parse_size(val, &v) != 0) {
            vmt_cli_fail(cmd, "%s: %s", flag, vmt_error_last());
            return -1;
        }
        *(!strcmp(flag, "--size") ? &o->dict_size : &o->pack_size) = v;
    } else if (!strcmp(flag, "--samples")) {
        return parse_num(cmd, val, 1, 1u << 24, &o->samples);
    } else if (!strcmp(flag, "--zstd-level") || !strcmp(flag, "--lz4-accel")) {
        if (parse_num(cmd, val, 1, 64, &v) != 0)
            return -1;
        *(!strcmp(flag, "--zstd-level") ? &o->zstd_level : &o->lz4_accel) = (int)v;
    } else if (!strcmp(flag, "--min-live")) {
        o->min_live = strtod(val, &end);
        if (*end || end == val || o->min_live < 0 || o->min_live > 1) {
            vmt_cli_fail(cmd, "--min-live wants a fraction in [0, 1]");
            return -1;
        }
    } else {
        vmt_cli_fail(cmd, "unknown option '%s' (try --help)", flag);
        return -1;
    }
    return 0;
}

static bool takes_value(const char *flag)
{
    static const char *const with[] = {"--store",      "--roots",     "--codec",
                                       "--pack-size",  "--size",      "--samples",
                                       "--zstd-level", "--lz4-accel", "--min-live"};
    for (size_t i = 0; i < VMT_ARRAY_SIZE(with); i++) {
        if (!strcmp(flag, with[i]))
            return true;
    }
    return false;
}

static int parse_opts(const char *cmd, int argc, char **argv, opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h"))
            o->help = true;
        else if (!strcmp(a, "--json"))
            o->json = true;
        else if (!strcmp(a, "--progress"))
            o->progress = true;
        else if (!strcmp(a, "--dry-run"))
            o->dry_run = true;
        else if (!strcmp(a, "--compare-on-dedup"))
            o->compare = true;
        else if (takes_value(a)) {
            if (want_arg(cmd, argc, argv, i) != 0 || parse_value(cmd, a, argv[i + 1], o) != 0)
                return -1;
            i++;
        } else {
            vmt_cli_fail(cmd, "unknown argument '%s' (try --help)", a);
            return -1;
        }
    }
    return 0;
}

static const char *store_dir(const char *cmd, const opts *o, char *buf, size_t cap)
{
    if (o->store)
        return o->store;
    if (vmt_store_default_dir(buf, cap) != 0) {
        vmt_cli_fail(cmd, "%s", vmt_error_last());
        return NULL;
    }
    return buf;
}

static int open_store(const char *cmd, const opts *o, bool ro, vmt_store **s)
{
    char buf[4096];
    vmt_store_open_opts oo;
    const char *dir = store_dir(cmd, o, buf, sizeof(buf));
    if (!dir)
        return -1;
    vmt_store_open_opts_init(&oo);
    oo.read_only = ro;
    if (vmt_store_open(s, dir, &oo) != 0) {
        vmt_cli_fail(cmd, "%s", vmt_error_last());
        return -1;
    }
    return 0;
}

/* ---- progress on stderr ---- */

static void progress(void *ctx, const char *phase, uint64_t done, uint64_t total)
{
    (void)ctx;
    if (total)
        fprintf(stderr, "\r%s: %3.0f%% (%llu MiB of %llu MiB)   ", phase,
                100.0 * (double)done / (double)total, (unsigned long long)(done >> 20),
                (unsigned long long)(total >> 20));
    else
        fprintf(stderr, "\r%s: %llu   ", phase, (unsigned long long)done);
    fflush(stderr);
}

static bool show_progress(const opts *o)
{
    return o->progress || isatty(STDERR_FILENO);
}

static void progress_end(const opts *o)
{
    if (show_progress(o))
        fputc('\n', stderr);
}

/* Prints s as a JSON string (quotes, backslashes and controls escaped). */
static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

/* ---- init ---- */

static int cmd_init(const opts *o)
{
    char buf[4096];
    vmt_store_config cfg;
    const char *dir = store_dir("store init", o, buf, sizeof(buf));
    if (!dir)
        return 1;
    vmt_store_config_init(&cfg);
    if (o->pack_size)
        cfg.pack_size = o->pack_size;
    if (o->codec && vmt_codec_parse(o->codec, &cfg.codec) != 0)
        return vmt_cli_fail("store init", "%s", vmt_error_last());
    if (o->zstd_level)
        cfg.zstd_level = o->zstd_level;
    if (o->lz4_accel)
        cfg.lz4_accel = o->lz4_accel;
    cfg.compare_on_dedup = o->compare;
    if (vmt_store_init(dir, &cfg) != 0)
        return vmt_cli_fail("store init", "%s", vmt_error_last());
    if (o->json) {
        printf("{\"store\":");
        json_str(dir);
        printf(",\"created\":true}\n");
    } else
        printf("created store %s\n", dir);
    return 0;
}

/* ---- stats ---- */

static const char *const type_names[] = {"", "pages", "map_nodes", "blobs", "snapshots"};

static void stats_json(const vmt_store_stats *st, const char *dir)
{
    printf("{\"store\":");
    json_str(dir);
    printf(",\"objects\":%llu,", (unsigned long long)st->objects);
    for (int t = 1; t <= VMT_OBJ_TYPE_MAX; t++)
        printf("\"%s\":%llu,", type_names[t], (unsigned long long)st->objects_by_type[t]);
    printf("\"logical_bytes\":%llu,\"stored_bytes\":%llu,\"disk_bytes\":%llu,\"packs\":%llu,"
           "\"compression_ratio\":%.4f,\"dedup_ratio\":%.4f,\"dict_version\":%u,\"codecs\":{",
           (unsigned long long)st->logical_bytes, (unsigned long long)st->stored_bytes,
           (unsigned long long)st->disk_bytes, (unsigned long long)st->packs, st->compression_ratio,
           st->dedup_ratio, st->dict_version);
    for (int c = 0; c < VMT_CODEC_COUNT; c++) {
        const vmt_store_codec_stats *cs = &st->codec[c];
        printf("%s\"%s\":{\"objects\":%llu,\"logical_bytes\":%llu,\"stored_bytes\":%llu,"
               "\"ratio\":%.4f}",
               c ? "," : "", vmt_codec_name(c), (unsigned long long)cs->objects,
               (unsigned long long)cs->logical_bytes, (unsigned long long)cs->stored_bytes,
               cs->stored_bytes ? (double)cs->logical_bytes / (double)cs->stored_bytes : 0.0);
    }
    printf("},\"put_objects\":%llu,\"put_bytes\":%llu,\"zero_pages\":%llu,\"dedup_hits\":%llu,"
           "\"new_objects\":%llu,\"new_bytes\":%llu,",
           (unsigned long long)st->put_objects, (unsigned long long)st->put_bytes,
           (unsigned long long)st->zero_pages, (unsigned long long)st->dedup_hits,
           (unsigned long long)st->new_objects, (unsigned long long)st->new_bytes);
    printf("\"pack_fetches\":%llu,\"pack_cache_hits\":%llu,\"pack_cache_fills\":%llu,"
           "\"pack_cache_evicted\":%llu,\"pack_cache_damaged\":%llu,\"pack_views_dropped\":%llu,"
           "\"pack_view_bytes\":%llu,\"pack_ranged_reads\":%llu}\n",
           (unsigned long long)st->pack_fetches, (unsigned long long)st->pack_cache_hits,
           (unsigned long long)st->pack_cache_fills, (unsigned long long)st->pack_cache_evicted,
           (unsigned long long)st->pack_cache_damaged, (unsigned long long)st->pack_views_dropped,
           (unsigned long long)st->pack_view_bytes, (unsigned long long)st->pack_ranged_reads);
}

/* The read counters of vmt_store_stats (this handle's; all zero on a
 * directory store, which reads its packs in place). */
static void stats_reads_text(const vmt_store_stats *st)
{
    printf("pack reads      %llu fetched, %llu from the read cache, %llu records read alone\n",
           (unsigned long long)st->pack_fetches, (unsigned long long)st->pack_cache_hits,
           (unsigned long long)st->pack_ranged_reads);
    printf("read cache      %llu filled, %llu evicted, %llu damaged copies fetched again\n",
           (unsigned long long)st->pack_cache_fills, (unsigned long long)st->pack_cache_evicted,
           (unsigned long long)st->pack_cache_damaged);
    printf("pack views      %llu bytes mapped, %llu dropped to stay under mem=\n",
           (unsigned long long)st->pack_view_bytes, (unsigned long long)st->pack_views_dropped);
}

static void stats_text(const vmt_store_stats *st, const char *dir)
{
    printf("store           %s\n", dir);
    printf("objects         %llu (", (unsigned long long)st->objects);
    for (int t = 1; t <= VMT_OBJ_TYPE_MAX; t++)
        printf("%s%llu %s", t > 1 ? ", " : "", (unsigned long long)st->objects_by_type[t],
               type_names[t]);
    printf(")\nlogical bytes   %llu\nstored bytes    %llu\ndisk bytes      %llu in %llu packs\n",
           (unsigned long long)st->logical_bytes, (unsigned long long)st->stored_bytes,
           (unsigned long long)st->disk_bytes, (unsigned long long)st->packs);
    printf("compression     %.3fx\ndedup           %.3fx (%llu hits, %llu zero pages)\n",
           st->compression_ratio, st->dedup_ratio, (unsigned long long)st->dedup_hits,
           (unsigned long long)st->zero_pages);
    for (int c = 0; c < VMT_CODEC_COUNT; c++) {
        const vmt_store_codec_stats *cs = &st->codec[c];
        if (cs->objects)
            printf("  %-10s    %llu objects, %.3fx\n", vmt_codec_name(c),
                   (unsigned long long)cs->objects,
                   (double)cs->logical_bytes / (double)cs->stored_bytes);
    }
    if (st->dict_version)
        printf("dictionary      version %u\n", st->dict_version);
    if (strncmp(dir, "rados://", 8) == 0)
        stats_reads_text(st);
}

static int cmd_stats(const opts *o)
{
    vmt_store *s;
    vmt_store_stats st;
    if (open_store("store stats", o, true, &s) != 0)
        return 1;
    vmt_store_get_stats(s, &st);
    if (o->json)
        stats_json(&st, vmt_store_dir(s));
    else
        stats_text(&st, vmt_store_dir(s));
    vmt_store_close(s);
    return 0;
}

/* ---- verify ---- */

typedef struct damage_list {
    bool json;
    unsigned n;
} damage_list;

static void on_damage(void *ctx, const vmt_store_damage *d)
{
    damage_list *dl = ctx;
    char hex[VMT_ID_HEX_LEN + 1] = "-";
    if (d->id_known)
        vmt_id_to_hex(&d->id, hex);
    if (dl->json) {
        printf("%s{\"pack\":%u,\"offset\":%llu,\"id\":\"%s\",\"what\":", dl->n ? "," : "", d->pack,
               (unsigned long long)d->offset, hex);
        json_str(d->what);
        printf("}");
    } else {
        printf("damaged: pack %u offset %llu id %s: %s\n", d->pack, (unsigned long long)d->offset,
               hex, d->what);
    }
    dl->n++;
}

static int cmd_verify(const opts *o)
{
    vmt_store *s;
    vmt_store_verify_stats st;
    damage_list dl = {.json = o->json};
    vmt_store_verify_opts vo = {.damage = on_damage, .damage_ctx = &dl};
    if (show_progress(o))
        vo.progress = progress;
    if (open_store("store verify", o, true, &s) != 0)
        return 1;
    if (o->json) {
        printf("{\"store\":");
        json_str(vmt_store_dir(s));
        printf(",\"damage\":[");
    }
    int rc = vmt_store_verify(s, &vo, &st);
    if (vo.progress)
        progress_end(o);
    if (o->json)
        printf("],\"packs\":%llu,\"records\":%llu,\"objects_ok\":%llu,\"damaged\":%llu,"
               "\"ok\":%s}\n",
               (unsigned long long)st.packs, (unsigned long long)st.records,
               (unsigned long long)st.objects_ok, (unsigned long long)st.damaged,
               rc == 0 ? "true" : "false");
    else
        printf("%llu packs, %llu records, %llu objects ok, %llu damaged\n",
               (unsigned long long)st.packs, (unsigned long long)st.records,
               (unsigned long long)st.objects_ok, (unsigned long long)st.damaged);
    if (rc != 0 && rc != VMT_ECORRUPT)
        vmt_cli_fail("store verify", "%s", vmt_error_last());
    vmt_store_close(s);
    return rc == 0 ? 0 : 1;
}

/* ---- gc ---- */

static int read_roots(const char *path, vmt_id **ids, size_t *n)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0, have = 0, lineno = 0;
    if (!f)
        return vmt_error_errno(VMT_EIO, errno, "opening %s", path);
    *ids = NULL;
    int rc = 0;
    while (rc == 0 && getline(&line, &cap, f) > 0) {
        lineno++;
        char *t = line + strspn(line, " \t");
        t[strcspn(t, " \t\r\n#")] = '\0';
        if (!*t)
            continue;
        if (*n == have) {
            have = have ? have * 2 : 256;
            vmt_id *nv = vmt_reallocn(*ids, have, sizeof(**ids));
            if (!nv) {
                rc = VMT_ENOMEM;
                break;
            }
            *ids = nv;
        }
        if (vmt_id_from_hex(t, &(*ids)[*n]) != 0)
            rc =
                vmt_error_set(VMT_EINVAL, "%s:%zu: '%s' is not a 32-digit hex id", path, lineno, t);
        (*n)++;
    }
    free(line);
    fclose(f);
    return rc;
}

static void gc_report(const opts *o, const vmt_store_gc_stats *st)
{
    if (o->json) {
        printf("{\"live_objects\":%llu,\"live_bytes\":%llu,\"dead_objects\":%llu,"
               "\"missing_objects\":%llu,\"packs_rewritten\":%llu,\"packs_deleted\":%llu,"
               "\"bytes_copied\":%llu,\"disk_before\":%llu,\"disk_after\":%llu,\"dry_run\":%s}\n",
               (unsigned long long)st->live_objects, (unsigned long long)st->live_bytes,
               (unsigned long long)st->dead_objects, (unsigned long long)st->missing_objects,
               (unsigned long long)st->packs_rewritten, (unsigned long long)st->packs_deleted,
               (unsigned long long)st->bytes_copied, (unsigned long long)st->disk_before,
               (unsigned long long)st->disk_after, o->dry_run ? "true" : "false");
        return;
    }
    printf("%llu live objects, %llu dead, %llu missing\n", (unsigned long long)st->live_objects,
           (unsigned long long)st->dead_objects, (unsigned long long)st->missing_objects);
    printf("%s%llu packs rewritten, %llu deleted; %llu -> %llu bytes on disk\n",
           o->dry_run ? "(dry run) " : "", (unsigned long long)st->packs_rewritten,
           (unsigned long long)st->packs_deleted, (unsigned long long)st->disk_before,
           (unsigned long long)st->disk_after);
}

static int cmd_gc(const opts *o)
{
    vmt_store *s;
    vmt_id *roots = NULL;
    size_t n = 0;
    vmt_store_gc_opts go;
    vmt_store_gc_stats st;
    if (!o->roots)
        return vmt_cli_fail("store gc", "--roots FILE is required (an empty file drops all)");
    if (read_roots(o->roots, &roots, &n) != 0) {
        free(roots);
        return vmt_cli_fail("store gc", "%s", vmt_error_last());
    }
    vmt_store_gc_opts_init(&go);
    go.dry_run = o->dry_run;
    if (o->min_live >= 0)
        go.min_live = o->min_live;
    if (show_progress(o))
        go.progress = progress;
    int rc = open_store("store gc", o, false, &s) != 0 ? 1 : 0;
    if (rc == 0) {
        rc = vmt_store_gc(s, roots, n, &go, &st);
        if (go.progress)
            progress_end(o);
        if (rc == 0)
            gc_report(o, &st);
        else
            vmt_cli_fail("store gc", "%s", vmt_error_last());
        vmt_store_close(s);
    }
    free(roots);
    return rc == 0 ? 0 : 1;
}

/* ---- train-dict ---- */

static int cmd_train(const opts *o)
{
    vmt_store *s;
    vmt_store_dict_opts d;
    unsigned v;
    vmt_store_dict_opts_init(&d);
    if (o->dict_size)
        d.dict_size = (size_t)o->dict_size;
    if (o->samples)
        d.max_samples = (size_t)o->samples;
    if (open_store("store train-dict", o, false, &s) != 0)
        return 1;
    int rc = vmt_store_train_dict(s, &d, &v);
    if (rc != 0)
        vmt_cli_fail("store train-dict", "%s", vmt_error_last());
    else if (o->json)
        printf("{\"dict_version\":%u}\n", v);
    else
        printf("trained dictionary version %u\n", v);
    vmt_store_close(s);
    return rc == 0 ? 0 : 1;
}

/* ---- dispatch ---- */

static const struct {
    const char *name;
    int (*fn)(const opts *o);
} commands[] = {
    {"init", cmd_init}, {"stats", cmd_stats},      {"verify", cmd_verify},
    {"gc", cmd_gc},     {"train-dict", cmd_train},
};

static const char *help_for(const char *name)
{
    if (!strcmp(name, "init"))
        return help_init;
    if (!strcmp(name, "stats"))
        return help_stats;
    if (!strcmp(name, "verify"))
        return help_verify;
    if (!strcmp(name, "gc"))
        return help_gc;
    return help_train;
}

int vmt_cli_store(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    for (size_t i = 0; i < VMT_ARRAY_SIZE(commands); i++) {
        if (strcmp(argv[1], commands[i].name))
            continue;
        opts o = {.min_live = -1};
        char cmd[64];
        snprintf(cmd, sizeof(cmd), "store %s", commands[i].name);
        if (parse_opts(cmd, argc - 1, argv + 1, &o) != 0)
            return EXIT_USAGE;
        if (o.help) {
            fputs(help_for(commands[i].name), stdout);
            return 0;
        }
        return commands[i].fn(&o);
    }
    vmt_cli_fail("store", "unknown command '%s'", argv[1]);
    fputs(usage_text, stderr);
    return EXIT_USAGE;
}
