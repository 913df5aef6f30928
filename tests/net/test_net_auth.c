/*
 * PSK primitives (net_auth.c): the MAC is exactly HMAC-SHA256 over the
 * transcript laid out as docs/wire-protocol.md says (computed here
 * independently with OpenSSL), differs between the two directions, and
 * changes with every field; comparison and nonces.
 */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

#include "net_fixture.h"
#include "net_internal.h"

static const uint8_t key[] = "0123456789abcdef-test-key";

typedef struct tr_data {
    uint8_t sid[16], nc[32], ns[32];
    vmt_auth_transcript tr;
} tr_data;

static void make_tr(tr_data *d)
{
    net_fill(d->sid, 16, 1);
    net_fill(d->nc, 32, 2);
    net_fill(d->ns, 32, 3);
    d->tr = (vmt_auth_transcript){.min_version = 1, .max_version = 3, .version = 2,
                                  .features = 0x1f, .session_id = d->sid, .stream_index = 5,
                                  .client_nonce = d->nc, .server_nonce = d->ns};
}

static void be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void test_mac_matches_the_documented_layout(void)
{
    tr_data d;
    uint8_t buf[200], want[32], got[32];
    unsigned int len = 0;
    make_tr(&d);
    for (int server = 0; server < 2; server++) {
        size_t n = 0;
        const char *label = server ? "vmtree-psk-server-v1" : "vmtree-psk-client-v1";
        memcpy(buf, label, 20);
        n = 20;
        be32(buf + n, 1);
        be32(buf + n + 4, 3);
        be32(buf + n + 8, 2);
        be32(buf + n + 12, 0x1f);
        n += 16;
        memcpy(buf + n, d.sid, 16);
        n += 16;
        be32(buf + n, 5);
        n += 4;
        memcpy(buf + n, d.nc, 32);
        memcpy(buf + n + 32, d.ns, 32);
        n += 64;
        CU_ASSERT_PTR_NOT_NULL(
            HMAC(EVP_sha256(), key, (int)sizeof(key) - 1, buf, n, want, &len));
        CU_ASSERT_EQUAL(len, 32);
        CU_ASSERT_EQUAL(vmt_auth_mac(key, sizeof(key) - 1, server, &d.tr, got), 0);
        CU_ASSERT(memcmp(got, want, 32) == 0);
    }
}

static void test_directions_differ(void)
{
    tr_data d;
    uint8_t c[32], s[32];
    make_tr(&d);
    CU_ASSERT_EQUAL(vmt_auth_mac(key, sizeof(key) - 1, false, &d.tr, c), 0);
    CU_ASSERT_EQUAL(vmt_auth_mac(key, sizeof(key) - 1, true, &d.tr, s), 0);
    CU_ASSERT_FALSE(vmt_auth_equal(c, s));
}

static void test_every_field_changes_the_mac(void)
{
    tr_data d;
    uint8_t base[32], m[32];
    make_tr(&d);
    CU_ASSERT_EQUAL(vmt_auth_mac(key, sizeof(key) - 1, false, &d.tr, base), 0);
    uint32_t *words[] = {&d.tr.min_version, &d.tr.max_version, &d.tr.version, &d.tr.features,
                         &d.tr.stream_index};
    for (size_t i = 0; i < VMT_ARRAY_SIZE(words); i++) {
        (*words[i])++;
        CU_ASSERT_EQUAL(vmt_auth_mac(key, sizeof(key) - 1, false, &d.tr, m), 0);
        CU_ASSERT_FALSE(vmt_auth_equal(base, m));
        (*words[i])--;
    }
    uint8_t *bytes[] = {d.sid, d.nc, d.ns, d.sid + 15, d.nc + 31, d.ns + 31};
    for (size_t i = 0; i < VMT_ARRAY_SIZE(bytes); i++) {
        *bytes[i] ^= 1;
        CU_ASSERT_EQUAL(vmt_auth_mac(key, sizeof(key) - 1, false, &d.tr, m), 0);
        CU_ASSERT_FALSE(vmt_auth_equal(base, m));
        *bytes[i] ^= 1;
    }
    uint8_t other[] = "0123456789abcdef-test-kez";
    CU_ASSERT_EQUAL(vmt_auth_mac(other, sizeof(other) - 1, false, &d.tr, m), 0);
    CU_ASSERT_FALSE(vmt_auth_equal(base, m));
    CU_ASSERT_EQUAL(vmt_auth_mac(key, sizeof(key) - 1, false, &d.tr, m), 0);
    CU_ASSERT_TRUE(vmt_auth_equal(base, m));
}

static void test_random_nonces_differ(void)
{
    uint8_t a[32], b[32];
    CU_ASSERT_EQUAL(vmt_auth_random(a, sizeof(a)), 0);
    CU_ASSERT_EQUAL(vmt_auth_random(b, sizeof(b)), 0);
    CU_ASSERT(memcmp(a, b, 32) != 0);
}

static const vmt_test_case cases[] = {
    {"MAC matches the documented layout", test_mac_matches_the_documented_layout},
    {"client and server MACs differ", test_directions_differ},
    {"every transcript field and the key change the MAC", test_every_field_changes_the_mac},
    {"random nonces differ", test_random_nonces_differ},
    {NULL, NULL},
};

int main(void)
{
    return vmt_test_run("psk auth", cases, NULL, NULL);
}
