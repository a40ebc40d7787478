// OpenSSL (libssl-dev) for the TLS module. The static inlines wrap what Swift cannot call:
// function-like macros (SSL_set_tlsext_host_name, BIO_*) and variadic key generation.
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

static inline int clibssl_set_sni(SSL *ssl, const char *name) {
    return (int)SSL_set_tlsext_host_name(ssl, name);
}

static inline long clibssl_set_mode_release_buffers(SSL *ssl) {
    return SSL_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
}

/// A P-256 key and a self-signed X.509v3 certificate for `cn` with the given subjectAltName
/// ("DNS:localhost,IP:127.0.0.1"), valid from now for `seconds`. 1 on success.
static inline int clibssl_self_signed(const char *cn, const char *san, long seconds,
                                      EVP_PKEY **key_out, X509 **cert_out) {
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *cert = X509_new();
    X509_EXTENSION *ext = NULL;
    int ok = key != NULL && cert != NULL
        && X509_set_version(cert, 2)
        && ASN1_INTEGER_set(X509_get_serialNumber(cert), 1)
        && X509_gmtime_adj(X509_getm_notBefore(cert), -60) != NULL
        && X509_gmtime_adj(X509_getm_notAfter(cert), seconds) != NULL
        && X509_set_pubkey(cert, key)
        && X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_ASC,
                                      (const unsigned char *)cn, -1, -1, 0)
        && X509_set_issuer_name(cert, X509_get_subject_name(cert));
    if (ok && san != NULL && san[0] != 0) {
        ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, (char *)san);
        ok = ext != NULL && X509_add_ext(cert, ext, -1);
        X509_EXTENSION_free(ext);
    }
    ok = ok && X509_sign(cert, key, EVP_sha256()) > 0;
    if (!ok) {
        EVP_PKEY_free(key);
        X509_free(cert);
        return 0;
    }
    *key_out = key;
    *cert_out = cert;
    return 1;
}

static inline int clibssl_ctx_min_tls12(SSL_CTX *ctx) {
    return (int)SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
}
