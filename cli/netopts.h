/* Network options shared by `vmtree migrate` (its VM process) and
 * `vmtree receive`: a pre-shared key file and a TLS triple. */
#ifndef VMTREE_CLI_NETOPTS_H
#define VMTREE_CLI_NETOPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmtree/net.h"

/*
 * Reads a pre-shared key from `path`: its bytes, one trailing newline
 * dropped, VMT_NET_PSK_MIN..VMT_NET_PSK_MAX of them.  A key readable by
 * others than its owner is refused (as ssh does).  Errors name the file:
 * VMT_EIO, VMT_ERANGE (length), VMT_EINVAL (mode).
 */
int vmt_cli_read_psk(const char *path, uint8_t *key, size_t cap, size_t *len);

/*
 * A TLS context from "CERT,KEY,CA" (server: CERT and KEY required, CA
 * optional to require client certificates; client: CA required, CERT and
 * KEY optional for mutual TLS; empty parts allowed: ",,ca.pem").
 * Errors: VMT_EINVAL naming the missing part or file.
 */
int vmt_cli_tls_new(const char *spec, bool server, vmt_tls **out);

/* "HOST:PORT" or "[V6]:PORT" -> host (into host[cap]) and port (0 only
 * for a listener: any port).  VMT_EINVAL naming the string. */
int vmt_cli_parse_hostport(const char *s, char *host, size_t cap, uint16_t *port, bool listen);

#endif
