// CHiredis: the thin C layer over hiredis (Debian 12 ships 0.14.1) for the cluster link.
// Only the RESP reply parser (redisReader) is used: it turns a byte stream into reply trees and
// reports malformed input as an error instead of crashing. hiredis itself stays private to
// CHiredis.c (replies are opaque here), so its headers never meet Swift's Glibc module.
// Commands are formatted in Swift, straight into the link's pipeline buffer.
#ifndef CHIREDIS_H
#define CHIREDIS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct chiredis_reader chiredis_reader;
typedef struct chiredis_reply chiredis_reply;

/// Reply types (the values of hiredis' REDIS_REPLY_*).
enum {
    CHIREDIS_STRING = 1,
    CHIREDIS_ARRAY = 2,
    CHIREDIS_INTEGER = 3,
    CHIREDIS_NIL = 4,
    CHIREDIS_STATUS = 5,
    CHIREDIS_ERROR = 6,
};

/// A new RESP reader, or NULL when out of memory.
chiredis_reader *chiredis_reader_new(void);
void chiredis_reader_free(chiredis_reader *r);
/// Appends received bytes. Returns 0, or -1 when the reader is in an error state.
int chiredis_reader_feed(chiredis_reader *r, const void *buf, size_t len);
/// The next complete reply: 1 with `*out` set (free it with chiredis_reply_free), 0 when more
/// bytes are needed, -1 on a protocol error (the reader is then unusable; see _error).
int chiredis_reader_next(chiredis_reader *r, chiredis_reply **out);
/// The reader's error text (empty when none).
const char *chiredis_reader_error(const chiredis_reader *r);

int chiredis_reply_type(const chiredis_reply *reply);
long long chiredis_reply_integer(const chiredis_reply *reply);
/// Bytes of a STRING, STATUS or ERROR reply (NULL and 0 otherwise).
const char *chiredis_reply_str(const chiredis_reply *reply, size_t *len);
/// Elements of an ARRAY reply (0 otherwise).
size_t chiredis_reply_count(const chiredis_reply *reply);
/// Element `i` of an ARRAY reply, or NULL when out of range / not an array.
const chiredis_reply *chiredis_reply_element(const chiredis_reply *reply, size_t i);
/// Frees a top-level reply from chiredis_reader_next (and its elements).
void chiredis_reply_free(chiredis_reply *reply);

#ifdef __cplusplus
}
#endif
#endif
