/*
 * dedup/codec.c on real guest memory: the RAM of running test guests
 * (kvstore's hash table, dirtier's text-filled region) round-trips through
 * every codec bit-exact, and compression pays on it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dd_test.h"
#include "fixture.h"

/* Boots `guest`, waits for `marker` on its console, pauses, and copies its
 * non-zero RAM pages into *pages (caller frees); returns the page count. */
static size_t guest_pages(const char *guest, const char *cmdline, const char *marker,
                          uint8_t **pages)
{
    fx_guest g;
    vmt_vm_config cfg;
    vmt_vm_config_init(&cfg);
    cfg.mem_size = 64ull << 20;
    *pages = NULL;
    if (fx_boot(&g, guest, cmdline, &cfg) != 0 || vmt_vm_start(g.vm) != 0)
        return 0;
    size_t n = 0;
    if (vmt_console_buf_wait(g.con, marker, 0, 60 * FX_SEC) > 0 && vmt_vm_pause(g.vm) == 0) {
        uint64_t size;
        const uint8_t *ram = vmt_vm_ram(g.vm, &size);
        static const uint8_t zero[VMT_STORE_PAGE_SIZE];
        *pages = malloc(size);
        for (uint64_t off = 0; *pages && off < size; off += VMT_STORE_PAGE_SIZE)
            if (memcmp(ram + off, zero, VMT_STORE_PAGE_SIZE) != 0)
                memcpy(*pages + VMT_STORE_PAGE_SIZE * n++, ram + off, VMT_STORE_PAGE_SIZE);
    }
    fx_free(&g);
    return n;
}

/* Puts n pages with `codec` (a dictionary trained first for zstd-dict) and
 * reads them back through a fresh read-only handle. */
static void round_trip(const uint8_t *pages, size_t n, int codec)
{
    char *dir = ddt_store("codec-guest", NULL);
    vmt_store *s = ddt_open(dir, false, 2);
    const void **p = malloc(n * sizeof(*p));
    void **dst = malloc(n * sizeof(*dst));
    vmt_id *ids = malloc(n * sizeof(*ids));
    uint8_t *out = malloc(n * VMT_STORE_PAGE_SIZE);
    for (size_t i = 0; i < n; i++) {
        p[i] = pages + i * VMT_STORE_PAGE_SIZE;
        dst[i] = out + i * VMT_STORE_PAGE_SIZE;
    }
    vmt_store_put_opts po;
    vmt_store_put_opts_init(&po);
    if (codec == VMT_CODEC_ZSTD_DICT) {
        DDT_OK(vmt_store_put_pages(s, p, n, ids, NULL, NULL));
        DDT_OK(vmt_store_train_dict(s, NULL, NULL));
        vmt_store_close(s);
        ddt_cleanup(dir);
        dir = ddt_store("codec-guest", NULL);
        s = ddt_open(dir, false, 2); /* a dictionary is per store: train again */
        DDT_OK(vmt_store_put_pages(s, p, n, ids, NULL, NULL));
        DDT_OK(vmt_store_train_dict(s, NULL, NULL));
    }
    po.codec = codec;
    DDT_OK(vmt_store_put_pages(s, p, n, ids, NULL, &po));
    DDT_OK(vmt_store_commit(s));
    vmt_store_stats st;
    DDT_OK(vmt_store_get_stats(s, &st));
    if (codec != VMT_CODEC_RAW && codec != VMT_CODEC_ZSTD_DICT)
        CU_ASSERT(st.compression_ratio > 1.2);
    vmt_store_close(s);
    s = ddt_open(dir, true, 2);
    DDT_OK(vmt_store_get_pages(s, ids, n, dst));
    CU_ASSERT_EQUAL(memcmp(out, pages, n * VMT_STORE_PAGE_SIZE), 0);
    DDT_OK(vmt_store_verify(s, NULL, NULL));
    vmt_store_close(s);
    free(p);
    free(dst);
    free(ids);
    free(out);
    ddt_cleanup(dir);
}

static void every_codec(const char *guest, const char *cmdline, const char *marker)
{
    uint8_t *pages;
    size_t n = guest_pages(guest, cmdline, marker, &pages);
    CU_ASSERT_FATAL(n >= 256);
    for (int codec = VMT_CODEC_RAW; codec < VMT_CODEC_COUNT; codec++)
        round_trip(pages, n, codec);
    free(pages);
}

static void kvstore_memory_round_trips_through_every_codec(void)
{
    every_codec("kvstore", "keys=65536 every=20000", "kvstore: ops 60000 ");
}

static void dirtier_text_memory_round_trips_through_every_codec(void)
{
    every_codec("dirtier", "base=16M pages=2048 fill=text passes=3 mark=1 end=spin",
                "dirtier: pass 3");
}

int main(void)
{
    fx_require_kvm();
    static const vmt_test_case cases[] = {
        {"kvstore memory round-trips through every codec",
         kvstore_memory_round_trips_through_every_codec},
        {"dirtier text memory round-trips through every codec",
         dirtier_text_memory_round_trips_through_every_codec},
        {NULL, NULL},
    };
    return vmt_test_run("dedup/codec-guest", cases, fx_setup, fx_teardown);
}
