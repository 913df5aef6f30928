/*
 * The STORE file (the store's settings, a small "key value" text file), the
 * default location, and creating a store.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define STORE_MAGIC_LINE "vmtree-store 1"
#define STORE_FILE_MAX 4096

void vmt_store_config_init(vmt_store_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->pack_size = VMT_STORE_PACK_DEFAULT;
    cfg->codec = VMT_CODEC_LZ4;
    cfg->zstd_level = 6; /* at 4 KiB, lower levels use much weaker match finders */
    cfg->lz4_accel = 1;
}

static int check_config(const vmt_store_config *c)
{
    if (c->pack_size < VMT_STORE_PACK_MIN || c->pack_size > VMT_STORE_PACK_MAX)
        return vmt_error_set(VMT_EINVAL, "pack size %llu outside [%llu, %llu]",
                             (unsigned long long)c->pack_size, VMT_STORE_PACK_MIN,
                             VMT_STORE_PACK_MAX);
    if ((int)c->codec < 0 || c->codec >= VMT_CODEC_COUNT)
        return vmt_error_set(VMT_EINVAL, "unknown codec %d", (int)c->codec);
    if (c->zstd_level < 1 || c->zstd_level > 19)
        return vmt_error_set(VMT_EINVAL, "zstd level %d outside [1, 19]", c->zstd_level);
    if (c->lz4_accel < 1 || c->lz4_accel > 64)
        return vmt_error_set(VMT_EINVAL, "lz4 acceleration %d outside [1, 64]", c->lz4_accel);
    return 0;
}

int vmt_store_default_dir(char *buf, size_t cap)
{
    const char *env = getenv(VMT_STORE_ENV);
    const char *xdg = getenv("XDG_DATA_HOME");
    const char *home = getenv("HOME");
    int n;
    if (env && *env)
        n = snprintf(buf, cap, "%s", env);
    else if (xdg && *xdg)
        n = snprintf(buf, cap, "%s/vmtree/store", xdg);
    else if (home && *home)
        n = snprintf(buf, cap, "%s/.local/share/vmtree/store", home);
    else
        return vmt_error_set(VMT_ENOENT, "no store directory: set %s or HOME", VMT_STORE_ENV);
    if (n < 0 || (size_t)n >= cap)
        return vmt_error_set(VMT_ERANGE, "store path too long");
    return 0;
}

static int format_config(char *buf, size_t cap, const vmt_store_config *c, const uint8_t uuid[16])
{
    vmt_id u;
    char hex[VMT_ID_HEX_LEN + 1];
    memcpy(u.b, uuid, 16);
    vmt_id_to_hex(&u, hex);
    int n = snprintf(buf, cap,
                     STORE_MAGIC_LINE "\nuuid %s\npack-size %llu\ncodec %s\nzstd-level %d\n"
                                      "lz4-accel %d\ncompare-on-dedup %d\n",
                     hex, (unsigned long long)c->pack_size, vmt_codec_name(c->codec), c->zstd_level,
                     c->lz4_accel, c->compare_on_dedup ? 1 : 0);
    return n > 0 && (size_t)n < cap ? n : -1;
}

/* An empty index, so that a store never written by a closing writer still
 * opens by replaying its packs rather than by "rebuilding" a lost index. */
static int save_empty_index(dd_backend *be, const char *dir, const uint8_t uuid[16])
{
    vmt_store tmp;
    memset(&tmp, 0, sizeof(tmp));
    tmp.be = be;
    tmp.dir = (char *)dir;
    memcpy(tmp.uuid, uuid, 16);
    int rc = dd_index_init(&tmp.ix, 0);
    if (rc == 0)
        rc = dd_idx_save(&tmp);
    dd_index_free(&tmp.ix);
    return rc;
}

static int init_in(dd_backend *be, const char *dir, const vmt_store_config *cfg)
{
    uint8_t uuid[16];
    char text[STORE_FILE_MAX];
    vmt_store_config cc = *cfg, *c = &cc;
    if (c->pack_size > be->pack_max) {
        /* The generic default is the local one; a backend with smaller
         * objects has its own.  An explicit size it cannot hold is refused. */
        if (c->pack_size != VMT_STORE_PACK_DEFAULT)
            return vmt_error_set(VMT_EINVAL, "pack-size %llu is more than a %s store's objects "
                                             "hold (at most %llu)", (unsigned long long)c->pack_size,
                                 be->ops->scheme, (unsigned long long)be->pack_max);
        c->pack_size = be->pack_default;
    }
    int rc = be->ops->init(be);
    if (rc != 0)
        return rc;
    if (getrandom(uuid, sizeof(uuid), 0) != (ssize_t)sizeof(uuid))
        return vmt_error_errno(VMT_EIO, errno, "getrandom");
    int n = format_config(text, sizeof(text), c, uuid);
    if (n < 0)
        return vmt_error_set(VMT_ERR, "internal: store file too long");
    rc = save_empty_index(be, dir, uuid);
    if (rc != 0)
        return rc;
    /* STORE is written last: its presence means the store is complete. */
    return dd_backend_put(be, DD_STORE_FILE, text, (size_t)n);
}

int vmt_store_init(const char *dir, const vmt_store_config *cfg)
{
    vmt_store_config def;
    if (!cfg) {
        vmt_store_config_init(&def);
        cfg = &def;
    }
    dd_backend *be = NULL;
    int rc = check_config(cfg);
    if (rc == 0)
        rc = dd_backend_open(dir, true, &be);
    if (rc != 0)
        return rc;
    rc = init_in(be, dir, cfg);
    be->ops->destroy(be);
    if (rc != 0)
        return vmt_error_wrap(rc, "creating a store in %s", dir);
    return 0;
}

/* ---- reading STORE ---- */

static int parse_int(const char *key, const char *val, long long min, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(val, &end, 10);
    if (errno || *end || end == val || v < min || v > max)
        return vmt_error_set(VMT_ECORRUPT, "store file: bad value '%s' for %s", val, key);
    *out = v;
    return 0;
}

static int parse_line(vmt_store *s, const char *key, const char *val, unsigned *seen)
{
    long long v = 0;
    int rc = 0;
    vmt_id u;
    if (!strcmp(key, "uuid")) {
        if ((rc = vmt_id_from_hex(val, &u)) != 0)
            return vmt_error_set(VMT_ECORRUPT, "store file: bad uuid");
        memcpy(s->uuid, u.b, 16);
        *seen |= 1;
    } else if (!strcmp(key, "pack-size")) {
        rc = parse_int(key, val, VMT_STORE_PACK_MIN, VMT_STORE_PACK_MAX, &v);
        s->cfg.pack_size = (uint64_t)v;
        *seen |= 2;
    } else if (!strcmp(key, "codec")) {
        if (vmt_codec_parse(val, &s->cfg.codec) != 0)
            return vmt_error_set(VMT_ECORRUPT, "store file: unknown codec '%s'", val);
    } else if (!strcmp(key, "zstd-level")) {
        rc = parse_int(key, val, 1, 19, &v);
        s->cfg.zstd_level = (int)v;
    } else if (!strcmp(key, "lz4-accel")) {
        rc = parse_int(key, val, 1, 64, &v);
        s->cfg.lz4_accel = (int)v;
    } else if (!strcmp(key, "compare-on-dedup")) {
        rc = parse_int(key, val, 0, 1, &v);
        s->cfg.compare_on_dedup = v != 0;
    } else {
        return vmt_error_set(VMT_EUNSUPPORTED, "store file: unknown setting '%s'", key);
    }
    return rc;
}

static int parse_config(vmt_store *s, char *text)
{
    unsigned seen = 0;
    char *save = NULL;
    char *line = strtok_r(text, "\n", &save);
    if (!line || strcmp(line, STORE_MAGIC_LINE) != 0)
        return vmt_error_set(VMT_ECORRUPT, "not a vmtree store file (or an unsupported version)");
    vmt_store_config_init(&s->cfg);
    while ((line = strtok_r(NULL, "\n", &save))) {
        char *sp = strchr(line, ' ');
        if (!sp)
            return vmt_error_set(VMT_ECORRUPT, "store file: malformed line '%s'", line);
        *sp = '\0';
        int rc = parse_line(s, line, sp + 1, &seen);
        if (rc != 0)
            return rc;
    }
    if (seen != 3)
        return vmt_error_set(VMT_ECORRUPT, "store file lacks uuid or pack-size");
    return 0;
}

int dd_config_load(vmt_store *s)
{
    char text[STORE_FILE_MAX + 1];
    uint8_t *data;
    size_t n;
    int rc = dd_backend_get(s->be, DD_STORE_FILE, STORE_FILE_MAX, &data, &n);
    if (rc == VMT_ENOENT)
        return vmt_error_set(VMT_ENOENT, "no store at %s (create one with 'vmtree store init')",
                             s->dir);
    if (rc != 0)
        return vmt_error_wrap(rc, "reading %s/%s", s->dir, DD_STORE_FILE);
    memcpy(text, data, n);
    free(data);
    text[n] = '\0';
    if (memchr(text, '\0', n))
        return vmt_error_set(VMT_ECORRUPT, "%s/%s holds binary data", s->dir, DD_STORE_FILE);
    rc = parse_config(s, text);
    if (rc != 0)
        return vmt_error_wrap(rc, "%s/%s", s->dir, DD_STORE_FILE);
    return 0;
}
