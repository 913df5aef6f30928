/* Codec choice and per-worker codec state (see codec.h). */
#include "codec.h"

#include <lz4.h>
#include <stdlib.h>
#include <string.h>

#include "record.h"

int dd_dict_new(dd_dict **out, unsigned version, uint8_t *data, size_t len)
{
    dd_dict *d = calloc(1, sizeof(*d));
    if (!d) {
        free(data);
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    }
    d->version = version;
    d->data = data;
    d->len = len;
    d->ddict = ZSTD_createDDict(data, len);
    if (!d->ddict) {
        dd_dict_free(d);
        return vmt_error_set(VMT_ECORRUPT, "dictionary %u cannot be loaded", version);
    }
    *out = d;
    return 0;
}

void dd_dict_free(dd_dict *d)
{
    if (!d)
        return;
    ZSTD_freeDDict(d->ddict);
    ZSTD_freeCDict(d->cdict);
    free(d->data);
    free(d);
}

int dd_dict_prepare(dd_dict *d, int level)
{
    if (d->cdict && d->cdict_level == level)
        return 0;
    ZSTD_freeCDict(d->cdict);
    d->cdict = ZSTD_createCDict(d->data, d->len, level);
    d->cdict_level = level;
    if (!d->cdict)
        return vmt_error_set(VMT_ENOMEM, "cannot prepare dictionary %u", d->version);
    return 0;
}

int dd_scratch_new(dd_scratch **out, size_t items)
{
    dd_scratch *sc = calloc(1, sizeof(*sc));
    if (!sc)
        return vmt_error_set(VMT_ENOMEM, "out of memory");
    sc->lz4 = malloc((size_t)LZ4_sizeofState());
    sc->cctx = ZSTD_createCCtx();
    sc->dctx = ZSTD_createDCtx();
    sc->order = vmt_callocn(items ? items : 1, sizeof(uint32_t));
    sc->order_cap = items;
    sc->cctx_level = 0;
    if (!sc->lz4 || !sc->cctx || !sc->dctx || !sc->order) {
        dd_scratch_free(sc);
        return vmt_error_set(VMT_ENOMEM, "out of memory for codec state");
    }
    /* Records carry lengths and checksums: frames need neither. */
    ZSTD_CCtx_setParameter(sc->cctx, ZSTD_c_contentSizeFlag, 0);
    ZSTD_CCtx_setParameter(sc->cctx, ZSTD_c_checksumFlag, 0);
    ZSTD_CCtx_setParameter(sc->cctx, ZSTD_c_dictIDFlag, 0);
    ZSTD_DCtx_setParameter(sc->dctx, ZSTD_d_windowLogMax, 25);
    *out = sc;
    return 0;
}

void dd_scratch_free(dd_scratch *sc)
{
    if (!sc)
        return;
    free(sc->lz4);
    ZSTD_freeCCtx(sc->cctx);
    ZSTD_freeDCtx(sc->dctx);
    free(sc->stage);
    free(sc->order);
    free(sc->tmp);
    free(sc);
}

static int grow_buf(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : (1u << 20);
    while (ncap < need) {
        if (vmt_mul_overflow(ncap, 2, &ncap))
            return vmt_error_set(VMT_ERANGE, "buffer of %zu bytes too large", need);
    }
    uint8_t *nb = realloc(*buf, ncap);
    if (!nb)
        return vmt_error_set(VMT_ENOMEM, "out of memory growing a buffer to %zu bytes", ncap);
    *buf = nb;
    *cap = ncap;
    return 0;
}

int dd_scratch_reserve(dd_scratch *sc, size_t need)
{
    size_t total;
    if (vmt_add_overflow(sc->stage_len, need, &total))
        return vmt_error_set(VMT_ERANGE, "staging size overflows");
    return grow_buf(&sc->stage, &sc->stage_cap, total);
}

int dd_scratch_tmp(dd_scratch *sc, size_t need)
{
    return grow_buf(&sc->tmp, &sc->tmp_cap, need);
}

/* Points the cctx at plain zstd `level` or at a CDict, only on change. */
static void set_zstd(dd_scratch *sc, int level, const ZSTD_CDict *cdict)
{
    if (cdict) {
        if (sc->cctx_dict != cdict) {
            ZSTD_CCtx_refCDict(sc->cctx, cdict);
            sc->cctx_dict = cdict;
            sc->cctx_level = -1;
        }
        return;
    }
    if (sc->cctx_dict) {
        ZSTD_CCtx_refCDict(sc->cctx, NULL);
        sc->cctx_dict = NULL;
    }
    if (sc->cctx_level != level) {
        ZSTD_CCtx_setParameter(sc->cctx, ZSTD_c_compressionLevel, level);
        sc->cctx_level = level;
    }
}

static size_t try_compress(dd_scratch *sc, const dd_codec_cfg *cfg, const void *src, size_t len,
                           uint8_t *dst, size_t cap)
{
    int n;
    size_t z;
    switch (cfg->codec) {
    case VMT_CODEC_LZ4:
        n = LZ4_compress_fast_extState(sc->lz4, src, (char *)dst, (int)len, (int)cap,
                                       cfg->lz4_accel);
        return n > 0 ? (size_t)n : 0;
    case VMT_CODEC_ZSTD:
    case VMT_CODEC_ZSTD_DICT:
        set_zstd(sc, cfg->zstd_level, cfg->codec == VMT_CODEC_ZSTD_DICT ? cfg->dict->cdict : NULL);
        z = ZSTD_compress2(sc->cctx, dst, cap, src, len);
        return ZSTD_isError(z) ? 0 : z;
    default:
        return 0;
    }
}

int dd_compress(dd_scratch *sc, const dd_codec_cfg *cfg, const void *src, size_t len, uint8_t *dst,
                size_t cap, uint8_t *codec, size_t *slen)
{
    size_t n = 0;
    if (cap < len)
        return vmt_error_set(VMT_ERANGE, "compression buffer too small");
    if (cfg->codec != VMT_CODEC_RAW)
        n = try_compress(sc, cfg, src, len, dst, cap);
    if (n == 0 || n > len - len / 16) {
        memcpy(dst, src, len);
        *codec = VMT_CODEC_RAW;
        *slen = len;
        return 0;
    }
    *codec = cfg->codec;
    *slen = n;
    return 0;
}

int dd_decompress(dd_scratch *sc, unsigned codec, const dd_dict *dict, const uint8_t *src,
                  size_t slen, void *dst, size_t rlen)
{
    size_t got = 0;
    int n;
    switch (codec) {
    case VMT_CODEC_RAW:
        if (slen == rlen)
            memcpy(dst, src, rlen);
        got = slen;
        break;
    case VMT_CODEC_LZ4:
        n = LZ4_decompress_safe((const char *)src, dst, (int)slen, (int)rlen);
        got = n < 0 ? 0 : (size_t)n;
        break;
    case VMT_CODEC_ZSTD:
        got = ZSTD_decompressDCtx(sc->dctx, dst, rlen, src, slen);
        break;
    case VMT_CODEC_ZSTD_DICT:
        if (!dict)
            return vmt_error_set(VMT_ECORRUPT, "record needs a dictionary that is missing");
        got = ZSTD_decompress_usingDDict(sc->dctx, dst, rlen, src, slen, dict->ddict);
        break;
    default:
        return vmt_error_set(VMT_ECORRUPT, "unknown codec %u", codec);
    }
    if (ZSTD_isError(got) || got != rlen)
        return vmt_error_set(VMT_ECORRUPT, "%s payload does not decode to %zu bytes",
                             vmt_codec_name((int)codec), rlen);
    return 0;
}
