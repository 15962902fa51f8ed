#include "CCrypto.h"
#include <dlfcn.h>
#include <pthread.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

// libcrypto is opened on first use, not linked: linked, its relocations and data cost a server
// that never sees a WebSocket or a voice token ~1.9 MB of RSS at idle (1.4 MB of libcrypto
// pages, the rest anonymous). The calls below go through pointers resolved once.
static struct {
    __typeof__(&SHA1) sha1;
    __typeof__(&HMAC) hmac;
    __typeof__(&EVP_sha256) sha256;
    __typeof__(&EVP_sha1) evp_sha1;
    __typeof__(&EVP_md5) md5;
    __typeof__(&EVP_Digest) digest;
    __typeof__(&EVP_EncodeBlock) encode;
    __typeof__(&EVP_DecodeBlock) decode;
    __typeof__(&CRYPTO_memcmp) memcmp;
    int ok;
} lc;
static pthread_once_t lc_once = PTHREAD_ONCE_INIT;

static void lc_load(void) {
    void *h = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
    if (!h) h = dlopen("libcrypto.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) return;
    lc.sha1 = (__typeof__(lc.sha1))dlsym(h, "SHA1");
    lc.hmac = (__typeof__(lc.hmac))dlsym(h, "HMAC");
    lc.sha256 = (__typeof__(lc.sha256))dlsym(h, "EVP_sha256");
    lc.evp_sha1 = (__typeof__(lc.evp_sha1))dlsym(h, "EVP_sha1");
    lc.md5 = (__typeof__(lc.md5))dlsym(h, "EVP_md5");
    lc.digest = (__typeof__(lc.digest))dlsym(h, "EVP_Digest");
    lc.encode = (__typeof__(lc.encode))dlsym(h, "EVP_EncodeBlock");
    lc.decode = (__typeof__(lc.decode))dlsym(h, "EVP_DecodeBlock");
    lc.memcmp = (__typeof__(lc.memcmp))dlsym(h, "CRYPTO_memcmp");
    lc.ok = lc.sha1 && lc.hmac && lc.sha256 && lc.evp_sha1 && lc.md5 && lc.digest && lc.encode
        && lc.decode && lc.memcmp;
}

int ccrypto_available(void) {
    pthread_once(&lc_once, lc_load);
    return lc.ok;
}

#define NEED(fail) do { if (!ccrypto_available()) return (fail); } while (0)

int ccrypto_sha1(const void *data, size_t len, uint8_t out[20]) {
    NEED(-1);
    return lc.sha1((const unsigned char *)data, len, out) ? 0 : -1;
}

int ccrypto_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len, uint8_t out[32]) {
    NEED(-1);
    unsigned int n = 32;
    return lc.hmac(lc.sha256(), key, (int)key_len, (const unsigned char *)data, len, out, &n) && n == 32 ? 0 : -1;
}

int ccrypto_hmac_sha1(const void *key, size_t key_len, const void *data, size_t len, uint8_t out[20]) {
    NEED(-1);
    unsigned int n = 20;
    return lc.hmac(lc.evp_sha1(), key, (int)key_len, (const unsigned char *)data, len, out, &n) && n == 20 ? 0 : -1;
}

int ccrypto_md5(const void *data, size_t len, uint8_t out[16]) {
    NEED(-1);
    unsigned int n = 16;
    return lc.digest(data, len, out, &n, lc.md5(), NULL) && n == 16 ? 0 : -1;
}

size_t ccrypto_base64_encode(const void *data, size_t len, char *out) {
    NEED(0);
    return (size_t)lc.encode((unsigned char *)out, (const unsigned char *)data, (int)len);
}

int ccrypto_equal(const void *a, const void *b, size_t len) {
    NEED(0);   // unavailable: nothing compares equal
    return lc.memcmp(a, b, len) == 0 ? 1 : 0;
}

size_t ccrypto_base64url_encode(const void *data, size_t len, char *out) {
    NEED(0);
    size_t n = (size_t)lc.encode((unsigned char *)out, (const unsigned char *)data, (int)len);
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
    NEED(-1);
    int n = lc.decode(out, (const unsigned char *)buf, (int)(len + pad));
    if (n < 0) return -1;
    return (long)n - (long)pad;   // EVP_DecodeBlock counts the padding's zero bytes
}
