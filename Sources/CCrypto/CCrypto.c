#include "CCrypto.h"
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

int ccrypto_sha1(const void *data, size_t len, uint8_t out[20]) {
    return SHA1((const unsigned char *)data, len, out) ? 0 : -1;
}

int ccrypto_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len, uint8_t out[32]) {
    unsigned int n = 32;
    return HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)data, len, out, &n) && n == 32 ? 0 : -1;
}

int ccrypto_hmac_sha1(const void *key, size_t key_len, const void *data, size_t len, uint8_t out[20]) {
    unsigned int n = 20;
    return HMAC(EVP_sha1(), key, (int)key_len, (const unsigned char *)data, len, out, &n) && n == 20 ? 0 : -1;
}

int ccrypto_md5(const void *data, size_t len, uint8_t out[16]) {
    unsigned int n = 16;
    return EVP_Digest(data, len, out, &n, EVP_md5(), NULL) && n == 16 ? 0 : -1;
}

size_t ccrypto_base64_encode(const void *data, size_t len, char *out) {
    return (size_t)EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)data, (int)len);
}

int ccrypto_equal(const void *a, const void *b, size_t len) {
    return CRYPTO_memcmp(a, b, len) == 0 ? 1 : 0;
}

size_t ccrypto_base64url_encode(const void *data, size_t len, char *out) {
    size_t n = (size_t)EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)data, (int)len);
    while (n > 0 && out[n - 1] == '=') n--;
    for (size_t i = 0; i < n; i++) {
        if (out[i] == '+') out[i] = '-';
        else if (out[i] == '/') out[i] = '_';
    }
    out[n] = 0;
    return n;
}

long ccrypto_base64url_decode(const char *text, size_t len, uint8_t *out) {
    // A fixed buffer: tokens are short, and the relay calls this per join packet.
    char buf[348];
    if (len > 344 || len % 4 == 1) return -1;
    size_t pad = (4 - len % 4) % 4;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '-') c = '+';
        else if (c == '_') c = '/';
        else if (c == '+' || c == '/' || c == '=') return -1;   // not the url alphabet
        buf[i] = c;
    }
    for (size_t i = 0; i < pad; i++) buf[len + i] = '=';
    int n = EVP_DecodeBlock(out, (const unsigned char *)buf, (int)(len + pad));
    if (n < 0) return -1;
    return (long)n - (long)pad;   // EVP_DecodeBlock counts the padding's zero bytes
}
