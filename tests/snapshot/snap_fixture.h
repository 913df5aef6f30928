/*
 * Shared helpers of the snapshot/ suites: a fresh page store in a temporary
 * directory, deterministic page content (random, text-like, zero) and
 * synthetic ids.
 */
#ifndef VMTREE_TEST_SNAP_FIXTURE_H
#define VMTREE_TEST_SNAP_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtree/snapshot.h"

typedef struct fx_store {
    char *tmp; /* temporary directory (removed by fx_store_free) */
    char *dir; /* the store directory inside it */
    vmt_store *s;
} fx_store;

/* Creates and opens an empty store; CUnit-fatal on failure. */
void fx_store_new(fx_store *f, const char *tag);
/* Closes and reopens the store (dropping uncommitted puts). */
void fx_store_reopen(fx_store *f);
void fx_store_free(fx_store *f);

/*
 * Catalog suites run against both catalog backends (docs/store-backends.md):
 * with VMTREE_TEST_BACKEND=rados (the *_rados ctest variants) a location is
 * a fresh store in its own namespace of $VMTREE_TEST_RADOS, else a fresh
 * temporary directory.  Where the cluster or librados is missing the suite
 * prints why and exits VMT_TEST_SKIP.
 */
bool fx_rados(void);
/* A fresh location for vmt_catalog_open (caller frees with
 * fx_location_free, which removes what is there); NULL (said on stderr)
 * when it cannot be made.  No CUnit asserts: usable in a suite's setup. */
char *fx_location(const char *tag);
void fx_location_free(char *loc);

/* splitmix64 step. */
uint64_t fx_rand(uint64_t *state);
/* A synthetic id (not the hash of anything stored), never the zero page's. */
vmt_id fx_fake_id(uint64_t n);
/* 4096 bytes of incompressible content from `seed`. */
void fx_page_random(uint8_t *p, uint64_t seed);
/* 4096 bytes of compressible, text-like content from `seed`. */
void fx_page_text(uint8_t *p, uint64_t seed);

/*
 * Fills `npages` pages at `mem` with a mix of content: zero pages, random
 * pages, text pages and pages of real files (the first readable of a few
 * well-known system libraries, cycling).  Deterministic for a seed.
 */
void fx_fill_mixed(uint8_t *mem, uint64_t npages, uint64_t seed);

/* Guest-RAM stand-in: `pages` zero pages of a memfd mapped MAP_SHARED, as
 * hypervisor-glue provides them (restore targets). */
typedef struct fx_ram {
    int fd;
    uint8_t *p;
    uint64_t size;
} fx_ram;
void fx_ram_new(fx_ram *r, uint64_t pages);
void fx_ram_free(fx_ram *r);

/*
 * Puts the pages of mem into the store, builds their map, writes it and
 * commits; returns the root.  CUnit-fatal on failure.
 */
vmt_id fx_store_memory(vmt_store *s, const uint8_t *mem, uint64_t npages);

/*
 * Stores a whole snapshot of `mem` (pages, map, a stand-in state blob
 * unique to `tag`, the record naming `parent` if not NULL), commits, and
 * returns its id.  CUnit-fatal on failure.
 */
vmt_id fx_snapshot(vmt_store *s, const uint8_t *mem, uint64_t npages, const vmt_id *parent,
                   const char *tag);
/* The same with the record's time (fx_snapshot: 0). */
vmt_id fx_snapshot_at(vmt_store *s, const uint8_t *mem, uint64_t npages, const vmt_id *parent,
                      const char *tag, uint64_t time_ns);

/*
 * An independent writer of the bundle format (docs/bundle-format.md), for
 * crafting good and bad bundles byte by byte.
 */
typedef struct fx_bundle {
    uint8_t *p;
    size_t n, cap;
    uint64_t objects, snapshots;
    vmt_id last;
} fx_bundle;

/* Appends bytes (CUnit-fatal when out of memory). */
void fx_bundle_put(fx_bundle *b, const void *data, size_t n);
/* The 32-byte file header. */
void fx_bundle_header(fx_bundle *b, unsigned major, unsigned minor, uint64_t flags);
/* An object record with full control: kind, codec, id, payload, raw length. */
void fx_bundle_record(fx_bundle *b, unsigned kind, unsigned codec, const vmt_id *id,
                      const void *payload, uint32_t plen, uint32_t raw_len);
/* A raw object record of `kind` whose id is the hash of `data`; returns it. */
vmt_id fx_bundle_object(fx_bundle *b, unsigned kind, const void *data, size_t len);
/* The trailer with b's counts and last snapshot and the file checksum. */
void fx_bundle_trailer(fx_bundle *b);
void fx_bundle_free(fx_bundle *b);

/* Writes n bytes to a new file at path; CUnit-fatal on failure. */
void fx_write_file(const char *path, const void *data, size_t n);
/* Reads a whole file (caller frees); CUnit-fatal on failure. */
uint8_t *fx_read_file(const char *path, size_t *n);

#endif
