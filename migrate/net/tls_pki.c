/*
 * A throw-away PKI for tests, benchmarks and trials (vmt_tls_write_test_pki):
 * a self-signed CA and a server and a client certificate signed by it, all
 * EC P-256 with SHA-256, valid from an hour ago for a day.  Made with the
 * OpenSSL API so that nothing depends on the openssl command being present.
 */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "net_internal.h"

static int pki_error(const char *what)
{
    char buf[256] = "";
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    return vmt_error_set(VMT_ERR, "test PKI: %s failed%s%s", what, buf[0] ? ": " : "", buf);
}

static int add_ext(X509 *issuer, X509 *cert, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (!ext)
        return pki_error("making an extension");
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : pki_error("adding an extension");
}

/* The extensions of a CA (ca = true) or of a leaf usable by both sides. */
static int add_exts(X509 *issuer, X509 *cert, bool ca)
{
    if (ca)
        return add_ext(issuer, cert, NID_basic_constraints, "critical,CA:TRUE") ||
               add_ext(issuer, cert, NID_key_usage, "critical,keyCertSign,cRLSign") ||
               add_ext(issuer, cert, NID_subject_key_identifier, "hash");
    return add_ext(issuer, cert, NID_basic_constraints, "critical,CA:FALSE") ||
           add_ext(issuer, cert, NID_key_usage, "critical,digitalSignature") ||
           add_ext(issuer, cert, NID_ext_key_usage, "serverAuth,clientAuth") ||
           add_ext(issuer, cert, NID_subject_alt_name,
                   "DNS:localhost,IP:127.0.0.1,IP:0:0:0:0:0:0:0:1") ||
           add_ext(issuer, cert, NID_authority_key_identifier, "keyid");
}

/* A certificate for `key` named `cn`, signed by issuer/issuer_key (NULL:
 * self-signed). */
static X509 *make_cert(EVP_PKEY *key, const char *cn, long serial, X509 *issuer,
                       EVP_PKEY *issuer_key)
{
    X509 *x = X509_new();
    if (!x)
        return NULL;
    X509_NAME *name = X509_get_subject_name(x);
    bool ok = X509_set_version(x, 2) && ASN1_INTEGER_set(X509_get_serialNumber(x), serial) &&
              X509_gmtime_adj(X509_getm_notBefore(x), -3600) &&
              X509_gmtime_adj(X509_getm_notAfter(x), 86400) && X509_set_pubkey(x, key) &&
              X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1,
                                         -1, 0) &&
              X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    if (ok)
        ok = add_exts(issuer ? issuer : x, x, issuer == NULL) == 0;
    if (ok)
        ok = X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0;
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

static int write_pem(const char *dir, const char *file, X509 *cert, EVP_PKEY *key)
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, file) >= sizeof(path))
        return vmt_error_set(VMT_EINVAL, "test PKI: path too long");
    FILE *f = fopen(path, "w");
    if (!f)
        return vmt_error_errno(VMT_EIO, errno, "test PKI: creating %s", path);
    if (key)
        (void)chmod(path, 0600);
    int ok = cert ? PEM_write_X509(f, cert) : PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    if (fclose(f) != 0 || !ok)
        return ok ? vmt_error_errno(VMT_EIO, errno, "test PKI: writing %s", path)
                  : pki_error("writing PEM");
    return 0;
}

/* Makes a key and a certificate signed by ca/ca_key and writes both. */
static int write_leaf(const char *dir, const char *base, long serial, X509 *ca, EVP_PKEY *ca_key)
{
    char cert_file[64], key_file[64];
    EVP_PKEY *key = EVP_EC_gen("P-256");
    if (!key)
        return pki_error("EC key generation");
    X509 *cert = make_cert(key, base, serial, ca, ca_key);
    int rc = cert ? 0 : pki_error("signing a certificate");
    snprintf(cert_file, sizeof(cert_file), "%s.pem", base);
    snprintf(key_file, sizeof(key_file), "%s.key", base);
    if (rc == 0)
        rc = write_pem(dir, cert_file, cert, NULL);
    if (rc == 0)
        rc = write_pem(dir, key_file, NULL, key);
    X509_free(cert);
    EVP_PKEY_free(key);
    return rc;
}

int vmt_tls_write_test_pki(const char *dir)
{
    EVP_PKEY *ca_key = EVP_EC_gen("P-256");
    if (!ca_key)
        return pki_error("EC key generation");
    X509 *ca = make_cert(ca_key, "vmtree test CA", 1, NULL, NULL);
    int rc = ca ? write_pem(dir, "ca.pem", ca, NULL) : pki_error("making the CA");
    if (rc == 0)
        rc = write_leaf(dir, "server", 2, ca, ca_key);
    if (rc == 0)
        rc = write_leaf(dir, "client", 3, ca, ca_key);
    X509_free(ca);
    EVP_PKEY_free(ca_key);
    return rc;
}
