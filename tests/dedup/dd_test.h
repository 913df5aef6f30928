/*
 * Helpers shared by the dedup suites: temporary stores, deterministic page
 * content, real content from the OS and the test guests, file damage.
 */
#ifndef VMTREE_TESTS_DD_TEST_H
#define VMTREE_TESTS_DD_TEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "harness.h"
#include "vmtree/store.h"

/* Asserts rc == 0, printing the error message when not. */
#define DDT_OK(expr)                                                                               \
    do {                                                                                           \
        int ddt_rc_ = (expr);                                                                      \
        if (ddt_rc_ != 0)                                                                          \
            fprintf(stderr, "\n%s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #expr,                  \
                    vmt_strerror(ddt_rc_), vmt_error_last());                                      \
        CU_ASSERT_EQUAL_FATAL(ddt_rc_, 0);                                                         \
    } while (0)

/*
 * Creates a store in a new temporary location (cfg may be NULL); caller
 * frees the location and removes it with ddt_cleanup.  The location is a
 * temporary directory, or with VMTREE_TEST_BACKEND=rados a fresh namespace
 * of the pool $VMTREE_TEST_RADOS names (a cluster from
 * scripts/ceph-cluster.sh); when that cluster is not there the suite prints
 * why and exits VMT_TEST_SKIP.
 */
char *ddt_store(const char *tag, const vmt_store_config *cfg);
/* A new empty location on the suite's backend, without a store. */
char *ddt_location(const char *tag);
/* Same with a small pack size so that tests cross seals. */
char *ddt_store_small(const char *tag, uint64_t pack_size);
void ddt_cleanup(char *dir);

/* Opens with `threads` workers (read_only as asked); asserts success. */
vmt_store *ddt_open(const char *dir, bool read_only, unsigned threads);

/* Deterministic pages: compressible (text and structure) or random. */
void ddt_page(uint64_t seed, uint8_t *page);
void ddt_random_page(uint64_t seed, uint8_t *page);

/*
 * Real content: the test guests' ELF images where built, then files shipped
 * with the OS (/usr/bin, /usr/lib), up to `max` bytes, whole pages only, no
 * zero pages.  *name describes the corpus (static string).  Caller frees.
 * Makes no CUnit assertion, so suite setups may call it.
 */
size_t ddt_corpus(uint8_t **buf, size_t max, const char **name);

/* Whether the suite runs its stores on RADOS (VMTREE_TEST_BACKEND=rados). */
bool ddt_rados(void);

/* Objects of a store at any backend, by name ("STORE", "packs/pack-00000001.vpk"):
 * XOR byte `off` with `mask`; size (-1 when absent); replace the content. */
void ddt_obj_flip(const char *store, const char *name, uint64_t off, uint8_t mask);
long long ddt_obj_size(const char *store, const char *name);
void ddt_obj_write(const char *store, const char *name, const void *data, size_t len);
/* Object name of pack n (caller frees). */
char *ddt_pack_name(unsigned n);

/* Path of pack n of a directory store (caller frees). */
char *ddt_pack_path(const char *dir, unsigned n);
/* XORs byte `off` of a file with `mask`. */
void ddt_flip(const char *path, uint64_t off, uint8_t mask);
/* Total bytes of the pack objects of a store (any backend). */
uint64_t ddt_pack_bytes(const char *dir);
/* Writes len bytes to a file, replacing it. */
void ddt_write_file(const char *path, const void *data, size_t len);
long long ddt_file_size(const char *path);

#endif
