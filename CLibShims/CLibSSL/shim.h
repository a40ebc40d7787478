// OpenSSL (libssl-dev) for the TLS module. The static inlines wrap what Swift cannot call:
// function-like macros (SSL_set_tlsext_host_name, BIO_*) and variadic key generation.
#include <arpa/inet.h>
#include <string.h>
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

static inline void clibssl_append(char *buf, size_t cap, size_t *used, const char *data, size_t len) {
    if (cap == 0 || *used >= cap - 1) return;
    size_t room = cap - 1 - *used;
    size_t n = len < room ? len : room;
    memcpy(buf + *used, data, n);
    *used += n;
    buf[*used] = 0;
}

/// The peer's leaf certificate's subjectAltNames of one kind (DNS names, or IP addresses when
/// `want_ip`), joined with ", " into `buf` (NUL-terminated, cut at `cap`), for Go-style
/// "certificate is valid for …" messages. Returns how many there were; -1 without a certificate.
/// The chain is read because a client that failed verification has not stored the peer yet.
static inline int clibssl_peer_alt_names(SSL *ssl, int want_ip, char *buf, size_t cap) {
    X509 *leaf = NULL;
    STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);
    if (chain != NULL && sk_X509_num(chain) > 0) leaf = sk_X509_value(chain, 0);
    if (leaf == NULL) leaf = SSL_get0_peer_certificate(ssl);
    if (cap > 0) buf[0] = 0;
    if (leaf == NULL) return -1;
    GENERAL_NAMES *names = (GENERAL_NAMES *)X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    if (names == NULL) return 0;
    int count = 0;
    size_t used = 0;
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *name = sk_GENERAL_NAME_value(names, i);
        char text[INET6_ADDRSTRLEN];
        const char *item = NULL;
        size_t length = 0;
        if (!want_ip && name->type == GEN_DNS) {
            item = (const char *)ASN1_STRING_get0_data(name->d.dNSName);
            length = (size_t)ASN1_STRING_length(name->d.dNSName);
        } else if (want_ip && name->type == GEN_IPADD) {
            int n = ASN1_STRING_length(name->d.iPAddress);
            const unsigned char *bytes = ASN1_STRING_get0_data(name->d.iPAddress);
            if ((n == 4 || n == 16) && inet_ntop(n == 4 ? AF_INET : AF_INET6, bytes, text, sizeof text) != NULL) {
                item = text;
                length = strlen(text);
            }
        }
        if (item == NULL) continue;
        if (count > 0) clibssl_append(buf, cap, &used, ", ", 2);
        clibssl_append(buf, cap, &used, item, length);
        count++;
    }
    GENERAL_NAMES_free(names);
    return count;
}
