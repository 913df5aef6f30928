/*
 * Snapshot records: thin wrappers over proto/'s vmt_snaprec (which keeps
 * protobuf-c and the format to itself), reading records from the store, and
 * the GC children callback.
 */
#include <stdlib.h>
#include <string.h>

#include "snap_internal.h"
#include "vmtree/proto.h"

_Static_assert(VMT_SNAP_MAX_PARENTS == VMT_SNAPREC_MAX_PARENTS, "parents");
_Static_assert(VMT_SNAP_NAME_MAX == VMT_SNAPREC_NAME_MAX, "name size");
_Static_assert(VMT_SNAP_MESSAGE_MAX == VMT_SNAPREC_MESSAGE_MAX, "message size");
_Static_assert(VMT_SNAP_PATH_MAX == VMT_SNAPREC_PATH_MAX, "path size");
_Static_assert(sizeof(vmt_id) == VMT_SNAPREC_ID_LEN, "id size");
_Static_assert(sizeof(((vmt_snap_record *)0)->cmdline) == sizeof(((vmt_snaprec *)0)->cmdline),
               "cmdline size");

static void to_proto(const vmt_snap_record *r, vmt_snaprec *p)
{
    memset(p, 0, sizeof(*p));
    p->nparents = r->nparents;
    for (uint32_t i = 0; i < r->nparents && i < VMT_SNAP_MAX_PARENTS; i++)
        memcpy(p->parents[i], r->parents[i].b, VMT_SNAPREC_ID_LEN);
    memcpy(p->map_root, r->map_root.b, VMT_SNAPREC_ID_LEN);
    memcpy(p->state, r->state.b, VMT_SNAPREC_ID_LEN);
    p->mem_size = r->mem_size;
    p->vcpus = r->vcpus;
    p->irqchip = r->irqchip;
    memcpy(p->image, r->image, sizeof(p->image));
    memcpy(p->cmdline, r->cmdline, sizeof(p->cmdline));
    memcpy(p->vm_name, r->vm_name, sizeof(p->vm_name));
    memcpy(p->message, r->message, sizeof(p->message));
    p->time_ns = r->time_ns;
    p->nonzero_pages = r->nonzero_pages;
}

static void from_proto(const vmt_snaprec *p, vmt_snap_record *r)
{
    memset(r, 0, sizeof(*r));
    r->nparents = p->nparents;
    for (uint32_t i = 0; i < p->nparents && i < VMT_SNAP_MAX_PARENTS; i++)
        memcpy(r->parents[i].b, p->parents[i], VMT_SNAPREC_ID_LEN);
    memcpy(r->map_root.b, p->map_root, VMT_SNAPREC_ID_LEN);
    memcpy(r->state.b, p->state, VMT_SNAPREC_ID_LEN);
    r->mem_size = p->mem_size;
    r->vcpus = p->vcpus;
    r->irqchip = p->irqchip;
    memcpy(r->image, p->image, sizeof(r->image));
    memcpy(r->cmdline, p->cmdline, sizeof(r->cmdline));
    memcpy(r->vm_name, p->vm_name, sizeof(r->vm_name));
    memcpy(r->message, p->message, sizeof(r->message));
    r->time_ns = p->time_ns;
    r->nonzero_pages = p->nonzero_pages;
}

int vmt_snap_record_encode(const vmt_snap_record *r, uint8_t **out, size_t *len)
{
    if (!r || !out || !len)
        return vmt_error_set(VMT_EINVAL, "vmt_snap_record_encode: NULL argument");
    vmt_snaprec *p = malloc(sizeof(*p));
    if (!p)
        return vmt_error_set(VMT_ENOMEM, "snapshot record: out of memory");
    to_proto(r, p);
    int rc = vmt_snaprec_encode(p, out, len);
    free(p);
    return rc;
}

int vmt_snap_record_decode(const uint8_t *buf, size_t len, vmt_snap_record *r)
{
    if (!r || (!buf && len))
        return vmt_error_set(VMT_EINVAL, "vmt_snap_record_decode: NULL argument");
    vmt_snaprec *p = malloc(sizeof(*p));
    if (!p)
        return vmt_error_set(VMT_ENOMEM, "snapshot record: out of memory");
    int rc = vmt_snaprec_decode(buf, len, p);
    if (rc == 0)
        from_proto(p, r);
    else
        memset(r, 0, sizeof(*r));
    free(p);
    return rc;
}

int vmt_snap_record_read(vmt_store *s, const vmt_id *id, vmt_snap_record *r)
{
    char hex[VMT_ID_HEX_LEN + 1];
    void *data = NULL;
    size_t len = 0;
    vmt_obj_type type;

    if (!s || !id || !r)
        return vmt_error_set(VMT_EINVAL, "vmt_snap_record_read: NULL argument");
    vmt_id_to_hex(id, hex);
    int rc = vmt_store_get(s, id, &data, &len, &type);
    if (rc)
        return vmt_error_wrap(rc, "reading snapshot %s", hex);
    if (type != VMT_OBJ_SNAPSHOT)
        rc = vmt_error_set(VMT_EINVAL, "object %s is not a snapshot (type %d)", hex, (int)type);
    else if (len > VMT_SNAPREC_MAX_BYTES)
        rc = vmt_error_set(VMT_ECORRUPT, "snapshot %s: record of %zu bytes exceeds %u", hex, len,
                           VMT_SNAPREC_MAX_BYTES);
    else if ((rc = vmt_snap_record_decode(data, len, r)) != 0)
        vmt_error_wrap(rc, "snapshot %s", hex);
    free(data);
    return rc;
}

int vmt_snap_gc_children(void *ctx, vmt_obj_type type, const void *data, size_t len,
                         vmt_store_emit_fn emit, void *emit_ctx)
{
    (void)ctx;
    if (type != VMT_OBJ_SNAPSHOT)
        return 0; /* state blobs refer to nothing */
    vmt_snaprec *p = malloc(sizeof(*p));
    if (!p)
        return vmt_error_set(VMT_ENOMEM, "gc: out of memory");
    int rc = vmt_snaprec_decode(data, len, p);
    if (rc == 0) {
        vmt_id root, state;
        memcpy(root.b, p->map_root, sizeof(root.b));
        memcpy(state.b, p->state, sizeof(state.b));
        emit(emit_ctx, &root);
        emit(emit_ctx, &state);
    } else {
        vmt_error_wrap(rc, "gc: a snapshot record");
    }
    free(p);
    return rc;
}
