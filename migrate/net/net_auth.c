/*
 * Pre-shared-key authentication primitives: the MAC each side computes over
 * the handshake transcript, its constant-time comparison, and random nonces.
 *
 * MAC = HMAC-SHA256(key, label || u32 min_version || u32 max_version ||
 *                   u32 version || u32 features || session_id[16] ||
 *                   u32 stream_index || client_nonce[32] || server_nonce[32])
 * with label "vmtree-psk-client-v1" or "vmtree-psk-server-v1" (all integers
 * big-endian).  Distinct labels stop a reflection (a server echoing the
 * client's own MAC back); both nonces make each MAC fresh for this
 * connection; the negotiated version and features are covered so that a
 * man in the middle cannot downgrade them unnoticed.
 */
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <string.h>

#include "net_internal.h"

#define LABEL_CLIENT "vmtree-psk-client-v1"
#define LABEL_SERVER "vmtree-psk-server-v1"
#define LABEL_LEN 20u
#define TRANSCRIPT_LEN                                                                             \
    (LABEL_LEN + 4 * 4 + VMT_WIRE_SESSION_ID_LEN + 4 + 2 * VMT_WIRE_NONCE_LEN)

int vmt_auth_mac(const uint8_t *key, size_t key_len, bool server, const vmt_auth_transcript *tr,
                 uint8_t mac[VMT_WIRE_MAC_LEN])
{
    uint8_t buf[TRANSCRIPT_LEN];
    uint8_t *p = buf;
    unsigned int out_len = 0;

    _Static_assert(sizeof(LABEL_CLIENT) - 1 == LABEL_LEN, "label length");
    _Static_assert(sizeof(LABEL_SERVER) - 1 == LABEL_LEN, "label length");
    memcpy(p, server ? LABEL_SERVER : LABEL_CLIENT, LABEL_LEN);
    p += LABEL_LEN;
    const uint32_t words[4] = {tr->min_version, tr->max_version, tr->version, tr->features};
    for (size_t i = 0; i < 4; i++, p += 4)
        vmt_put_be32(p, words[i]);
    memcpy(p, tr->session_id, VMT_WIRE_SESSION_ID_LEN);
    p += VMT_WIRE_SESSION_ID_LEN;
    vmt_put_be32(p, tr->stream_index);
    p += 4;
    memcpy(p, tr->client_nonce, VMT_WIRE_NONCE_LEN);
    p += VMT_WIRE_NONCE_LEN;
    memcpy(p, tr->server_nonce, VMT_WIRE_NONCE_LEN);
    if (key_len > VMT_NET_PSK_MAX ||
        !HMAC(EVP_sha256(), key, (int)key_len, buf, sizeof(buf), mac, &out_len) ||
        out_len != VMT_WIRE_MAC_LEN) {
        ERR_clear_error();
        return vmt_error_set(VMT_ERR, "authentication: HMAC-SHA256 failed");
    }
    return 0;
}

bool vmt_auth_equal(const uint8_t *a, const uint8_t *b)
{
    return CRYPTO_memcmp(a, b, VMT_WIRE_MAC_LEN) == 0;
}

int vmt_auth_random(uint8_t *buf, size_t len)
{
    if (len > INT32_MAX || RAND_bytes(buf, (int)len) != 1) {
        ERR_clear_error();
        return vmt_error_set(VMT_ERR, "authentication: no random bytes (RAND_bytes failed)");
    }
    return 0;
}
