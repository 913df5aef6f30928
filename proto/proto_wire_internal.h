/*
 * Internals shared by proto_wire_msg.c (encode, tables) and
 * proto_wire_dec.c (decode): the per-type table and the feature names.
 * Never included outside proto/.
 */
#ifndef VMTREE_PROTO_WIRE_INTERNAL_H
#define VMTREE_PROTO_WIRE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "proto_internal.h"
#include "wire.pb-c.h"

/* What proto/ knows of one control message type. */
typedef struct vmt_wire_kind {
    unsigned type;
    const char *name;
    const ProtobufCMessageDescriptor *desc;
    size_t max_len; /* largest payload accepted or produced */
    size_t budget;  /* bytes the parser may allocate for one message */
} vmt_wire_kind;

/* The table entry of a control message type; NULL when not one. */
const vmt_wire_kind *vmt_wire_kind_of(unsigned type);

/* Feature bits <-> names.  Unknown names are ignored. */
uint32_t vmt_wire_features_from_names(char *const *names, size_t n);
/* Fills names[] (at most VMT_WIRE_MAX_FEATURES) with the names of the known
 * bits of `features`; returns how many. */
size_t vmt_wire_features_to_names(uint32_t features, const char **names);

#endif
