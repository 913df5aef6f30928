/* vmtree-bench: dispatches to the benchmark areas (see bench.h). */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmtree/util.h"

static const struct {
    const char *name;
    vmt_bench_area_fn fn;
    const char *what;
} areas[] = {
    {"vmm", vmt_bench_vmm, "boot to first output, pause/resume, dirty sync, dirtier rate"},
#ifdef VMT_BENCH_HAVE_STORE
    {"store", vmt_bench_store, "page store ingest, read-back, dictionary ratio"},
#endif
#ifdef VMT_BENCH_HAVE_STORE
    {"rados", vmt_bench_rados, "page store on RADOS vs a directory: ingest, open, read-back"},
#endif
#ifdef VMT_BENCH_HAVE_RESTORE
    {"restore", vmt_bench_restore, "restore into guest RAM: eager GB/s, lazy ready/complete"},
#endif
#ifdef VMT_BENCH_HAVE_SNAPSHOT
    {"snapshot", vmt_bench_snapshot, "snapshot pause/total, metadata, restore, store growth"},
#endif
#ifdef VMT_BENCH_HAVE_NET
    {"net", vmt_bench_net, "migration wire: page throughput by streams/encoding, handshakes"},
#endif
#ifdef VMT_BENCH_HAVE_GOLDEN
    {"golden", vmt_bench_golden, "golden image pull over loopback: into an empty store, "
                                 "next to a sibling"},
#endif
#ifdef VMT_BENCH_HAVE_MIGRATE
    {"migrate", vmt_bench_migrate, "live migration of a 1 GiB guest over loopback: idle, "
                                   "moderate, heavy; streams, codecs, 1 Gbit/s, dedup "
                                   "(--full: every combination)"},
#endif
};

void vmt_bench_emit(const char *bench, const char *metric, double value, const char *unit,
                    const char *extra)
{
    printf("{\"bench\":\"%s\",\"metric\":\"%s\",\"value\":%.6g,\"unit\":\"%s\"%s%s}\n", bench,
           metric, value, unit, extra ? "," : "", extra ? extra : "");
    fflush(stdout);
}

void vmt_bench_skip(const char *bench, const char *metric, const char *what, const char *reason)
{
    printf("{\"bench\":\"%s\",\"metric\":\"%s\",\"value\":0,\"unit\":\"\",\"skipped\":true,"
           "\"what\":\"%s\",\"reason\":\"",
           bench, metric, what);
    for (const char *p = reason; *p; p++) {
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if ((unsigned char)*p < 0x20)
            printf("\\u%04x", (unsigned char)*p);
        else
            putchar(*p);
    }
    printf("\"}\n");
    fflush(stdout);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double vmt_bench_median(double *v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

char *vmt_bench_guest(const vmt_bench_opts *o, const char *name)
{
    char *p = NULL;
    if (asprintf(&p, "%s/guests/%s.elf", o->build_dir, name) < 0)
        return NULL;
    return p;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: vmtree-bench AREA [--quick] [--runs N] [area options]\n"
               "Prints one JSON object per line: bench, metric, value, unit.\n\nareas:\n");
    for (size_t i = 0; i < VMT_ARRAY_SIZE(areas); i++)
        fprintf(f, "  %-8s %s\n", areas[i].name, areas[i].what);
    fprintf(f, "  all      every area in turn\n");
}

/* Finds the build directory from the binary's own path (build/bin/..). */
static char *default_build_dir(void)
{
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return strdup(".");
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = '\0';
    slash = strrchr(self, '/');
    if (slash)
        *slash = '\0';
    return strdup(self);
}

int main(int argc, char **argv)
{
    vmt_bench_opts o = {.runs = 5};
    const char *area = NULL;
    char *bd = default_build_dir();
    int rc = 0;

    o.build_dir = getenv("VMTREE_BUILD_DIR") ? getenv("VMTREE_BUILD_DIR") : bd;
    int i = 1;
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            free(bd);
            return 0;
        } else if (!strcmp(argv[i], "--quick")) {
            o.quick = true;
            o.runs = 3;
        } else if (!strcmp(argv[i], "--runs") && i + 1 < argc) {
            uint64_t r;
            if (vmt_parse_u64(argv[++i], 1, 1000, &r) != 0) {
                fprintf(stderr, "vmtree-bench: --runs: %s\n", vmt_error_last());
                free(bd);
                return 2;
            }
            o.runs = (unsigned)r;
        } else if (!area && argv[i][0] != '-') {
            area = argv[i];
        } else {
            break;
        }
    }
    o.argc = argc - i;
    o.argv = argv + i;
    if (!area) {
        usage(stderr);
        free(bd);
        return 2;
    }
    bool found = false;
    for (size_t a = 0; a < VMT_ARRAY_SIZE(areas); a++) {
        if (strcmp(area, "all") && strcmp(area, areas[a].name))
            continue;
        found = true;
        if (areas[a].fn(&o) != 0)
            rc = 1;
    }
    if (!found) {
        fprintf(stderr, "vmtree-bench: unknown area '%s'\n", area);
        usage(stderr);
        rc = 2;
    }
    free(bd);
    return rc;
}
