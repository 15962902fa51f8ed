// CCrypto: the thin C layer over OpenSSL's libcrypto for the few primitives the server needs
// (WebSocket handshake: SHA-1 + Base64; voice tokens: HMAC-SHA256, constant-time compare).
// No crypto is written here: every function forwards to libcrypto.
#ifndef CCRYPTO_H
#define CCRYPTO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// 1 when libcrypto could be opened (on first use; every call below needs it), else 0.
int ccrypto_available(void);

/// SHA-1 of `len` bytes into `out` (20 bytes). Returns 0, or -1 on failure.
int ccrypto_sha1(const void *data, size_t len, uint8_t out[20]);

/// HMAC-SHA256 of `len` bytes with `key` into `out` (32 bytes). Returns 0, or -1 on failure.
int ccrypto_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len, uint8_t out[32]);

/// HMAC-SHA1 (TURN's MESSAGE-INTEGRITY and REST-API passwords; the bench's TURN client) into
/// `out` (20 bytes). Returns 0, or -1 on failure.
int ccrypto_hmac_sha1(const void *key, size_t key_len, const void *data, size_t len, uint8_t out[20]);

/// MD5 (TURN's long-term credential key, RFC 5389 section 15.4) into `out` (16 bytes).
/// Returns 0, or -1 on failure.
int ccrypto_md5(const void *data, size_t len, uint8_t out[16]);

/// Standard Base64 (with padding) of `len` bytes into `out`, which must hold 4*ceil(len/3)+1
/// bytes (a NUL is written after the text). Returns the text's length.
size_t ccrypto_base64_encode(const void *data, size_t len, char *out);

/// Base64url (RFC 4648 section 5, no padding) of `len` bytes into `out`, which must hold
/// 4*ceil(len/3)+1 bytes. Libcrypto encodes; this only swaps the alphabet and drops padding.
/// Returns the text's length.
size_t ccrypto_base64url_encode(const void *data, size_t len, char *out);

/// Decodes unpadded base64url `text` (at most 344 characters) into `out` (room for
/// 3*ceil(len/4) bytes). Returns the byte count, or -1 when the text is not base64url.
/// Libcrypto decodes; this only swaps the alphabet and restores padding.
long ccrypto_base64url_decode(const char *text, size_t len, uint8_t *out);

/// 1 when the two `len`-byte buffers are equal, compared in constant time (CRYPTO_memcmp).
int ccrypto_equal(const void *a, const void *b, size_t len);

#ifdef __cplusplus
}
#endif
#endif
