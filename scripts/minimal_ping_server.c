// The floor for the ping loads in scripts/bench.py: a minimal JSON-lines ping server in C.
//
// One thread, epoll (level-triggered), non-blocking sockets. Per line it finds the value of
// "type" (a plain scan, no full JSON parse) and answers like tcpserver does:
//   {"type":"hello",...}  -> {"type":"welcome","user":"pinger"}
//   {"type":"ping"}       -> {"type":"pong","ts":<wall ms>}
//   anything else         -> {"type":"error","code":"unsupported_type"}
// Replies to all the lines of one read go out in one send. No rate limits, no rooms, no
// stats: what remains is what any server pays per request (a read, a scan, a render, a send),
// so bench.py can report tcpserver's CPU per request against it.
//
// Build: cc -O2 -o minimal_ping_server scripts/minimal_ping_server.c
// Run:   minimal_ping_server PORT   (127.0.0.1; prints "ready" once listening)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_LINE 4096
#define OUT_CAP 65536

struct conn {
    int fd;
    size_t have;            // bytes of an unfinished line kept in `in`
    char in[MAX_LINE];
    size_t out_len, out_off; // unsent reply bytes (a slow reader)
    char *out;
    int watching_out;        // EPOLLOUT is set (only while a reply is partly unsent)
};

static long long wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// The value of "type" in one line: a pointer into the line and its length (0: none).
static const char *type_of(const char *line, size_t n, size_t *len) {
    const char *key = memmem(line, n, "\"type\"", 6);
    if (!key) return NULL;
    const char *p = key + 6, *end = line + n;
    while (p < end && (*p == ' ' || *p == ':')) p++;
    if (p >= end || *p != '"') return NULL;
    const char *v = ++p;
    while (p < end && *p != '"') p++;
    if (p >= end) return NULL;
    *len = (size_t)(p - v);
    return v;
}

static size_t answer(const char *line, size_t n, char *out) {
    size_t tlen = 0;
    const char *t = type_of(line, n, &tlen);
    if (t && tlen == 4 && memcmp(t, "ping", 4) == 0)
        return (size_t)sprintf(out, "{\"type\":\"pong\",\"ts\":%lld}\n", wall_ms());
    if (t && tlen == 5 && memcmp(t, "hello", 5) == 0)
        return (size_t)sprintf(out, "{\"type\":\"welcome\",\"user\":\"pinger\"}\n");
    return (size_t)sprintf(out, "{\"type\":\"error\",\"code\":\"unsupported_type\"}\n");
}

static void close_conn(int ep, struct conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->out);
    free(c);
}

// Sends what is pending; returns -1 when the connection is gone.
static int flush_out(int ep, struct conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w < 0 && errno == EAGAIN) break;
        if (w <= 0) return -1;
        c->out_off += (size_t)w;
    }
    int pending = c->out_off < c->out_len;
    if (!pending) c->out_off = c->out_len = 0;
    if (pending != c->watching_out) {   // epoll_ctl only when the state changes
        struct epoll_event ev = {.events = EPOLLIN | (pending ? EPOLLOUT : 0), .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->watching_out = pending;
    }
    return 0;
}

static int on_readable(int ep, struct conn *c) {
    static char buf[65536];
    ssize_t r = recv(c->fd, buf, sizeof buf, 0);
    if (r == 0 || (r < 0 && errno != EAGAIN)) return -1;
    if (r < 0) return 0;
    size_t start = 0;
    for (size_t i = 0; i < (size_t)r; i++) {
        if (buf[i] != '\n') continue;
        const char *line = buf + start;
        size_t n = i - start;
        if (c->have) {   // the line began in an earlier read
            if (c->have + n > MAX_LINE) return -1;
            memcpy(c->in + c->have, line, n);
            line = c->in;
            n += c->have;
            c->have = 0;
        }
        if (c->out_len + 128 > OUT_CAP) return -1;   // a client that never reads
        c->out_len += answer(line, n, c->out + c->out_len);
        start = i + 1;
    }
    if (start < (size_t)r) {
        size_t rest = (size_t)r - start;
        if (c->have + rest > MAX_LINE) return -1;
        memcpy(c->in + c->have, buf + start, rest);
        c->have += rest;
    }
    return c->out_len > c->out_off ? flush_out(ep, c) : 0;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s PORT\n", argv[0]); return 2; }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) { rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl); }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 4096) < 0) { perror("listen"); return 1; }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    printf("ready\n");
    fflush(stdout);
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { perror("epoll_wait"); return 1; }
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (!c) {   // the listener: accept all that wait
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct conn *nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    nc->out = malloc(OUT_CAP);
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            int rc = 0;
            if (events[i].events & EPOLLOUT) rc = flush_out(ep, c);
            if (rc == 0 && events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) rc = on_readable(ep, c);
            if (rc < 0) close_conn(ep, c);
        }
    }
}
