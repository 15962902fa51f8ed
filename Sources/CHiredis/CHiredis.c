#include "CHiredis.h"
#include <hiredis/hiredis.h>

_Static_assert(CHIREDIS_STRING == REDIS_REPLY_STRING, "reply type");
_Static_assert(CHIREDIS_ARRAY == REDIS_REPLY_ARRAY, "reply type");
_Static_assert(CHIREDIS_INTEGER == REDIS_REPLY_INTEGER, "reply type");
_Static_assert(CHIREDIS_NIL == REDIS_REPLY_NIL, "reply type");
_Static_assert(CHIREDIS_STATUS == REDIS_REPLY_STATUS, "reply type");
_Static_assert(CHIREDIS_ERROR == REDIS_REPLY_ERROR, "reply type");

chiredis_reader *chiredis_reader_new(void) { return (chiredis_reader *)redisReaderCreate(); }

void chiredis_reader_free(chiredis_reader *r) {
    if (r) redisReaderFree((redisReader *)r);
}

int chiredis_reader_feed(chiredis_reader *r, const void *buf, size_t len) {
    return redisReaderFeed((redisReader *)r, (const char *)buf, len) == REDIS_OK ? 0 : -1;
}

int chiredis_reader_next(chiredis_reader *r, chiredis_reply **out) {
    void *reply = NULL;
    *out = NULL;
    if (redisReaderGetReply((redisReader *)r, &reply) != REDIS_OK) {
        if (reply) freeReplyObject(reply);
        return -1;
    }
    if (!reply) return 0;
    *out = (chiredis_reply *)reply;
    return 1;
}

const char *chiredis_reader_error(const chiredis_reader *r) {
    const redisReader *rr = (const redisReader *)r;
    return rr->err ? rr->errstr : "";
}

int chiredis_reply_type(const chiredis_reply *reply) { return ((const redisReply *)reply)->type; }

long long chiredis_reply_integer(const chiredis_reply *reply) {
    const redisReply *r = (const redisReply *)reply;
    return r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
}

const char *chiredis_reply_str(const chiredis_reply *reply, size_t *len) {
    const redisReply *r = (const redisReply *)reply;
    if ((r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_ERROR) && r->str) {
        *len = r->len;
        return r->str;
    }
    *len = 0;
    return NULL;
}

size_t chiredis_reply_count(const chiredis_reply *reply) {
    const redisReply *r = (const redisReply *)reply;
    return r->type == REDIS_REPLY_ARRAY ? r->elements : 0;
}

const chiredis_reply *chiredis_reply_element(const chiredis_reply *reply, size_t i) {
    const redisReply *r = (const redisReply *)reply;
    if (r->type != REDIS_REPLY_ARRAY || i >= r->elements || !r->element) return NULL;
    return (const chiredis_reply *)r->element[i];
}

void chiredis_reply_free(chiredis_reply *reply) {
    if (reply) freeReplyObject(reply);
}
