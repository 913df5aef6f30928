/*
 * libFuzzer target for the control protocol decoder (cli/control.c).
 *
 * Oracle beyond "no crash, no leak, no UB": the decoder returns only its
 * documented codes, and whatever it accepts re-encodes to a frame that
 * decodes to the same fields (values compared byte for byte, NULs and
 * escapes included), and a field is found by its key.
 * Seeds: fuzz/corpus/cli_control/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void same(const vmt_ctl_msg *a, const vmt_ctl_msg *b)
{
    if (a->type != b->type || a->nfields != b->nfields)
        __builtin_trap();
    for (uint32_t i = 0; i < a->nfields; i++) {
        const vmt_ctl_field *fa = &a->fields[i], *fb = &b->fields[i];
        if (strcmp(fa->key, fb->key) || fa->len != fb->len ||
            memcmp(a->text + fa->off, b->text + fb->off, fa->len))
            __builtin_trap();
        if (vmt_ctl_get(a, fa->key) != a->text + fa->off)
            __builtin_trap();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vmt_ctl_msg *m = malloc(sizeof(*m)), *m2 = malloc(sizeof(*m2));
    uint8_t *buf = malloc(VMT_CTL_FRAME_MAX);
    if (!m || !m2 || !buf)
        __builtin_trap();
    int rc = vmt_ctl_decode(m, data, size);
    if (rc != 0 && rc != VMT_EPROTO && rc != VMT_EUNSUPPORTED)
        __builtin_trap();
    if (rc == 0) {
        size_t len = 0;
        if (vmt_ctl_encode(m, buf, VMT_CTL_FRAME_MAX, &len) != 0 ||
            len != vmt_ctl_encoded_size(m) || vmt_ctl_decode(m2, buf, len) != 0)
            __builtin_trap();
        same(m, m2);
    }
    /* The body decoder alone, on the same bytes, must hold up too. */
    rc = vmt_ctl_decode_body(m, VMT_CTL_REQUEST, data, size > VMT_CTL_BODY_MAX ? 0 : size);
    if (rc != 0 && rc != VMT_EPROTO)
        __builtin_trap();
    free(m);
    free(m2);
    free(buf);
    return 0;
}
