/*
 * A small streaming JSON writer for `--json` output: objects, arrays,
 * strings (escaped; invalid UTF-8 bytes become U+FFFD), integers, booleans.
 * Nesting and commas are tracked for the caller; one document per writer,
 * ended with a newline when the outermost value closes.  Not thread-safe.
 */
#ifndef VMTREE_CLI_JSON_H
#define VMTREE_CLI_JSON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "vmtree/store.h"

#define VMT_JSON_MAX_DEPTH 32

typedef struct vmt_json {
    FILE *f;
    int depth;
    bool has_items[VMT_JSON_MAX_DEPTH]; /* a value was written at this depth */
    bool after_key;
} vmt_json;

void vmt_json_init(vmt_json *j, FILE *f);
void vmt_json_obj_begin(vmt_json *j);
void vmt_json_obj_end(vmt_json *j);
void vmt_json_arr_begin(vmt_json *j);
void vmt_json_arr_end(vmt_json *j);
/* The key of the next value inside an object. */
void vmt_json_key(vmt_json *j, const char *key);
void vmt_json_str(vmt_json *j, const char *s);
void vmt_json_strn(vmt_json *j, const char *s, size_t len);
void vmt_json_u64(vmt_json *j, uint64_t v);
void vmt_json_i64(vmt_json *j, int64_t v);
void vmt_json_double(vmt_json *j, double v);
void vmt_json_bool(vmt_json *j, bool v);
void vmt_json_null(vmt_json *j);
/* The id as 32 hex digits. */
void vmt_json_id(vmt_json *j, const vmt_id *id);

/* key + value in one call. */
void vmt_json_kstr(vmt_json *j, const char *key, const char *s);
void vmt_json_ku64(vmt_json *j, const char *key, uint64_t v);
void vmt_json_ki64(vmt_json *j, const char *key, int64_t v);
void vmt_json_kbool(vmt_json *j, const char *key, bool v);
void vmt_json_kid(vmt_json *j, const char *key, const vmt_id *id);
void vmt_json_kdouble(vmt_json *j, const char *key, double v);

#endif
