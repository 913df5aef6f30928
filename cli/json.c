/* The --json writer (json.h). */
#include "json.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

void vmt_json_init(vmt_json *j, FILE *f)
{
    memset(j, 0, sizeof(*j));
    j->f = f;
}

/* Writes the separator a new value needs at the current depth. */
static void pre_value(vmt_json *j)
{
    if (j->after_key) {
        j->after_key = false;
        return;
    }
    if (j->depth > 0 && j->has_items[j->depth])
        fputc(',', j->f);
    j->has_items[j->depth] = true;
}

static void post_value(vmt_json *j)
{
    if (j->depth == 0)
        fputc('\n', j->f);
}

static void open_(vmt_json *j, char c)
{
    pre_value(j);
    fputc(c, j->f);
    if (j->depth + 1 < VMT_JSON_MAX_DEPTH)
        j->depth++;
    j->has_items[j->depth] = false;
}

static void close_(vmt_json *j, char c)
{
    fputc(c, j->f);
    if (j->depth > 0)
        j->depth--;
    post_value(j);
}

void vmt_json_obj_begin(vmt_json *j)
{
    open_(j, '{');
}

void vmt_json_obj_end(vmt_json *j)
{
    close_(j, '}');
}

void vmt_json_arr_begin(vmt_json *j)
{
    open_(j, '[');
}

void vmt_json_arr_end(vmt_json *j)
{
    close_(j, ']');
}

/* Length of a valid UTF-8 sequence at s (n bytes available), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t len;
    uint32_t cp;
    if (s[0] < 0x80)
        return 1;
    if ((s[0] & 0xe0) == 0xc0)
        len = 2, cp = s[0] & 0x1f;
    else if ((s[0] & 0xf0) == 0xe0)
        len = 3, cp = s[0] & 0x0f;
    else if ((s[0] & 0xf8) == 0xf0)
        len = 4, cp = s[0] & 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

static void write_string(FILE *f, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    fputc('"', f);
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t l = utf8_len(s + i, n - i);
        if (c == '"' || c == '\\') {
            fputc('\\', f);
            fputc(c, f);
        } else if (c == '\n') {
            fputs("\\n", f);
        } else if (c == '\t') {
            fputs("\\t", f);
        } else if (c < 0x20 || c == 0x7f) {
            fprintf(f, "\\u%04x", c);
        } else if (l == 0) {
            fputs("\\ufffd", f);
            l = 1;
        } else {
            fwrite(s + i, 1, l, f);
        }
        i += l ? l : 1;
    }
    fputc('"', f);
}

void vmt_json_key(vmt_json *j, const char *key)
{
    pre_value(j);
    write_string(j->f, key, strlen(key));
    fputc(':', j->f);
    j->after_key = true;
}

void vmt_json_strn(vmt_json *j, const char *s, size_t len)
{
    pre_value(j);
    write_string(j->f, s, len);
    post_value(j);
}

void vmt_json_str(vmt_json *j, const char *s)
{
    if (!s) {
        vmt_json_null(j);
        return;
    }
    vmt_json_strn(j, s, strlen(s));
}

void vmt_json_u64(vmt_json *j, uint64_t v)
{
    pre_value(j);
    fprintf(j->f, "%" PRIu64, v);
    post_value(j);
}

void vmt_json_i64(vmt_json *j, int64_t v)
{
    pre_value(j);
    fprintf(j->f, "%" PRId64, v);
    post_value(j);
}

void vmt_json_double(vmt_json *j, double v)
{
    pre_value(j);
    if (isfinite(v))
        fprintf(j->f, "%.6g", v);
    else
        fputs("null", j->f);
    post_value(j);
}

void vmt_json_bool(vmt_json *j, bool v)
{
    pre_value(j);
    fputs(v ? "true" : "false", j->f);
    post_value(j);
}

void vmt_json_null(vmt_json *j)
{
    pre_value(j);
    fputs("null", j->f);
    post_value(j);
}

void vmt_json_id(vmt_json *j, const vmt_id *id)
{
    char hex[VMT_ID_HEX_LEN + 1];
    vmt_id_to_hex(id, hex);
    vmt_json_str(j, hex);
}

void vmt_json_kstr(vmt_json *j, const char *key, const char *s)
{
    vmt_json_key(j, key);
    vmt_json_str(j, s);
}

void vmt_json_ku64(vmt_json *j, const char *key, uint64_t v)
{
    vmt_json_key(j, key);
    vmt_json_u64(j, v);
}

void vmt_json_ki64(vmt_json *j, const char *key, int64_t v)
{
    vmt_json_key(j, key);
    vmt_json_i64(j, v);
}

void vmt_json_kbool(vmt_json *j, const char *key, bool v)
{
    vmt_json_key(j, key);
    vmt_json_bool(j, v);
}

void vmt_json_kid(vmt_json *j, const char *key, const vmt_id *id)
{
    vmt_json_key(j, key);
    vmt_json_id(j, id);
}

void vmt_json_kdouble(vmt_json *j, const char *key, double v)
{
    vmt_json_key(j, key);
    vmt_json_double(j, v);
}
