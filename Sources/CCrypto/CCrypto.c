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

size_t ccrypto_base64_encode(const void *data, size_t len, char *out) {
    return (size_t)EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)data, (int)len);
}

int ccrypto_equal(const void *a, const void *b, size_t len) {
    return CRYPTO_memcmp(a, b, len) == 0 ? 1 : 0;
}
