/*
 * Minimal glue around CUnit: one suite per test executable, a skip exit code
 * (77) that ctest reports as "skipped" with the printed reason, and helpers
 * shared by the suites (paths of built guests, temporary directories).
 */
#ifndef VMTREE_TEST_HARNESS_H
#define VMTREE_TEST_HARNESS_H

#include <CUnit/CUnit.h>
#include <stdbool.h>
#include <stddef.h>

#define VMT_TEST_SKIP 77

typedef struct vmt_test_case {
    const char *name;
    void (*fn)(void);
} vmt_test_case;

/*
 * Runs `cases` as one CUnit suite named `suite`; returns the process exit
 * status (0 all passed, 1 failures).  setup/teardown (may be NULL) run before
 * and after the suite; a non-zero setup fails the suite.
 */
int vmt_test_run(const char *suite, const vmt_test_case *cases, int (*setup)(void),
                 int (*teardown)(void));

/*
 * Returns NULL when /dev/kvm can be opened, or a reason it cannot.  Suites
 * labelled kvm print "SKIP: <reason>" and exit VMT_TEST_SKIP when non-NULL.
 */
const char *vmt_test_kvm_unavailable(void);

/* Path of a built guest image, e.g. "hello" -> $VMTREE_BUILD_DIR/guests/hello.elf
 * (static buffer per call site is not needed: returns a new string, caller frees). */
char *vmt_test_guest_path(const char *name);
/* Path of the vmtree CLI binary (caller frees). */
char *vmt_test_cli_path(void);

/* Creates a fresh temporary directory (caller frees the string; removes it
 * with vmt_test_rmtree). */
char *vmt_test_tmpdir(const char *tag);
void vmt_test_rmtree(const char *path);

/* Runs argv (argv[0] a path) capturing stdout+stderr into *out (caller frees);
 * returns the exit status, or -1 on failure to run, 128+sig when killed. */
int vmt_test_spawn(char *const argv[], char **out, size_t *out_len);

#endif
