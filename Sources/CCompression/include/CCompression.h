// CCompression: the thin C layer over liblz4 and libzstd for Primitives/Compression.swift.
// Swift calls the libraries' functions directly; this header adds only what Swift cannot
// import cleanly: the ZSTD_CONTENTSIZE_* sentinels (macros with arithmetic).
//
// No _GNU_SOURCE and no system headers beyond what lz4.h/zstd.h pull in (stddef.h,
// limits.h), so nothing here can disagree with Swift's Glibc module.
#ifndef CCOMPRESSION_H
#define CCOMPRESSION_H

#include <stddef.h>
#include <lz4.h>
#include <zstd.h>

#ifdef __cplusplus
extern "C" {
#endif

/// ZSTD_getFrameContentSize's "frame has no content-size field" result.
static inline unsigned long long ccompression_zstd_contentsize_unknown(void) {
    return ZSTD_CONTENTSIZE_UNKNOWN;
}

/// ZSTD_getFrameContentSize's "not a valid frame header" result.
static inline unsigned long long ccompression_zstd_contentsize_error(void) {
    return ZSTD_CONTENTSIZE_ERROR;
}

/// LZ4_MAX_INPUT_SIZE: the largest block LZ4 compresses or decompresses.
static inline int ccompression_lz4_max_input_size(void) { return LZ4_MAX_INPUT_SIZE; }

#ifdef __cplusplus
}
#endif

#endif
