/*
 * Helpers of the vmtree command's end-to-end suites: run build/bin/vmtree
 * with stdout and stderr apart, read a detached VM's console, check and
 * pick apart --json output, parse the counter guest's lines.
 */
#ifndef VMTREE_TEST_CLI_UTIL_H
#define VMTREE_TEST_CLI_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Runs vmtree with the NULL-terminated arguments; *out and *err (may be
 * NULL) receive stdout and stderr (caller frees).  Returns the exit status,
 * 128+sig when killed, -1 when it could not run. */
int cli_run(char **out, char **err, const char *arg, ...) __attribute__((sentinel));
/* The same with an argv array (NULL-terminated, without argv[0]). */
int cli_runv(char **out, char **err, const char *const *args);

/* Set once by each suite's setup: the CLI binary. */
void cli_set_binary(const char *path);

/* The console text of detached VM name (caller frees; "" when none).  The
 * run directory of a rados:// store is $VMTREE_RUN_DIR (set it). */
char *cli_console(const char *store, const char *name);
/* Waits until the console holds `needle` at or after byte `from`, up to
 * timeout_ms; returns the console text (caller frees) or NULL on timeout. */
char *cli_wait_console(const char *store, const char *name, const char *needle, size_t from,
                       unsigned timeout_ms);

/* Counter lines "counter: step N sum HEX" in text[from..]: complete lines
 * only.  Returns how many were stored (at most max). */
typedef struct counter_line {
    uint64_t step, sum;
} counter_line;
size_t cli_counter_lines(const char *text, size_t from, counter_line *out, size_t max);
/* The highest step printed in text[from..] (0 when none). */
uint64_t cli_counter_last(const char *text, size_t from);
/* Waits until VM name's console shows a step >= `step` after byte `from`;
 * returns that step or 0 on timeout. */
uint64_t cli_wait_step(const char *store, const char *name, uint64_t step, size_t from,
                       unsigned timeout_ms);

/* True when text is exactly one JSON value (object or array when
 * `container`), with whitespace around. */
bool cli_json_valid(const char *text, bool container);
/* The first "key": NUMBER / "key": "STRING" in text (no nesting awareness). */
bool cli_json_u64(const char *text, const char *key, uint64_t *out);
bool cli_json_str(const char *text, const char *key, char *buf, size_t cap);

/* SIGKILLs every VM process left in the store's run directory. */
void cli_kill_all(const char *store);

#endif
