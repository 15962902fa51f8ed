#define _GNU_SOURCE
#include "CLinux.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>

int clinux_errno(void) { return errno; }

int clinux_accept_nonblock(int fd) { return accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC); }

int clinux_queue_init(struct io_uring *ring, unsigned entries, unsigned *flags_used) {
    static const unsigned attempts[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN,
        0,
    };
    int ret = -EINVAL;
    for (unsigned i = 0; i < sizeof(attempts) / sizeof(attempts[0]); i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof(p));
        p.flags = attempts[i];
        ret = io_uring_queue_init_params(entries, ring, &p);
        if (ret == 0) {
            if (flags_used) *flags_used = attempts[i];
            return 0;
        }
        if (ret != -EINVAL) return ret;   // only an unknown flag is worth a retry
    }
    return ret;
}

struct io_uring_buf_ring *clinux_buf_ring_setup(struct io_uring *ring, unsigned entries,
                                                unsigned short bgid, int *err) {
    return clinux_buf_ring_setup_flags(ring, entries, bgid, 0, err);
}

struct io_uring_buf_ring *clinux_buf_ring_setup_flags(struct io_uring *ring, unsigned entries,
                                                      unsigned short bgid, unsigned short flags,
                                                      int *err) {
    size_t size = entries * sizeof(struct io_uring_buf);
    void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED) {
        *err = -errno;
        return NULL;
    }
    struct io_uring_buf_ring *br = mem;
    io_uring_buf_ring_init(br);
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)(uintptr_t)br;
    reg.ring_entries = entries;
    reg.bgid = bgid;
    reg.pad = flags;   // `flags` in kernel 6.12+'s struct io_uring_buf_reg
    int ret = io_uring_register_buf_ring(ring, &reg, 0);
    if (ret != 0) {
        munmap(mem, size);
        *err = ret;
        return NULL;
    }
    *err = 0;
    return br;
}

void clinux_buf_ring_free(struct io_uring *ring, struct io_uring_buf_ring *br,
                          unsigned entries, unsigned short bgid) {
    io_uring_unregister_buf_ring(ring, bgid);
    munmap(br, entries * sizeof(struct io_uring_buf));
}

void clinux_prep_recv_multishot_select(struct io_uring_sqe *sqe, int fd, unsigned short bgid) {
    io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = bgid;
}

void clinux_prep_recv_multishot_bundle(struct io_uring_sqe *sqe, int fd, unsigned short bgid, int bundle) {
    clinux_prep_recv_multishot_select(sqe, fd, bgid);
    if (bundle) sqe->ioprio |= IORING_RECVSEND_BUNDLE;
}

unsigned clinux_ring_features(struct io_uring *ring) { return ring->features; }

int clinux_uring_features(void) {
    struct io_uring ring;
    unsigned flags = 0;
    if (clinux_queue_init(&ring, 8, &flags) < 0) return 0;
    int out = 0;
    if (ring.features & IORING_FEAT_RECVSEND_BUNDLE) out |= CLINUX_FEATURE_RECV_BUNDLE;
    int err = 0;
    struct io_uring_buf_ring *br = clinux_buf_ring_setup_flags(&ring, 8, 0, IOU_PBUF_RING_INC, &err);
    if (br) {
        out |= CLINUX_FEATURE_BUF_INCREMENTAL;
        clinux_buf_ring_free(&ring, br, 8, 0);
    }
    if (io_uring_register_files_sparse(&ring, 8) == 0) {
        out |= CLINUX_FEATURE_FIXED_FILES;
        io_uring_unregister_files(&ring);
    }
    if (clinux_opcode_supported(&ring, CLINUX_OP_FIXED_FD_INSTALL)) out |= CLINUX_FEATURE_FD_INSTALL;
    io_uring_queue_exit(&ring);
    return out;
}

int clinux_probe(char *why, unsigned long why_len) {
    struct io_uring ring;
    unsigned flags = 0;
    int ret = clinux_queue_init(&ring, 8, &flags);
    if (ret < 0) {
        snprintf(why, why_len, "io_uring_setup failed: %s", strerror(-ret));
        return -1;
    }
    struct io_uring_probe *probe = io_uring_get_probe_ring(&ring);
    if (!probe) {
        snprintf(why, why_len, "io_uring probe unsupported (kernel too old)");
        io_uring_queue_exit(&ring);
        return -1;
    }
    static const struct { int op; const char *name; } needed[] = {
        {IORING_OP_ACCEPT, "ACCEPT"}, {IORING_OP_RECV, "RECV"}, {IORING_OP_SEND, "SEND"},
        {IORING_OP_READ, "READ"}, {IORING_OP_MSG_RING, "MSG_RING"},
    };
    for (unsigned i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
        if (!io_uring_opcode_supported(probe, needed[i].op)) {
            snprintf(why, why_len, "io_uring opcode %s unsupported", needed[i].name);
            io_uring_free_probe(probe);
            io_uring_queue_exit(&ring);
            return -1;
        }
    }
    io_uring_free_probe(probe);
    int err = 0;
    struct io_uring_buf_ring *br = clinux_buf_ring_setup(&ring, 8, 0, &err);
    if (!br) {
        snprintf(why, why_len, "provided-buffer rings unsupported: %s", strerror(-err));
        io_uring_queue_exit(&ring);
        return -1;
    }
    clinux_buf_ring_free(&ring, br, 8, 0);
    io_uring_queue_exit(&ring);
    return 0;
}

int clinux_opcode_supported(struct io_uring *ring, int op) {
    struct io_uring_probe *p = io_uring_get_probe_ring(ring);
    if (!p) return 0;
    int ok = io_uring_opcode_supported(p, op);
    io_uring_free_probe(p);
    return ok ? 1 : 0;
}

// Not in liburing 2.3's headers (kernel 6.12+): io_uring_getevents_arg's `pad` became
// `min_wait_usec`, honoured when the ring reports this feature.
#ifndef IORING_FEAT_MIN_TIMEOUT
#define IORING_FEAT_MIN_TIMEOUT (1U << 15)
#endif
// liburing's internal flag (int_flags.h) for "the ring fd is registered": then
// io_uring_enter takes the registered index and IORING_ENTER_REGISTERED_RING.
#define CLINUX_INT_FLAG_REG_RING 1

int clinux_min_wait_supported(struct io_uring *ring) {
    return (ring->features & IORING_FEAT_MIN_TIMEOUT) != 0;
}

// The two helpers below read liburing 2.3's private state (sq->sqe_head/sqe_tail, int_flags):
// liburing 2.3 has no public call that submits and waits with a minimum wait. liburing 2.4+
// defines IO_URING_VERSION_*; on those the private layout is not assumed: stop the build here
// rather than read fields that may have moved (2.8+ offers io_uring_submit_and_wait_min_timeout,
// the replacement to switch to).
#if defined(IO_URING_VERSION_MAJOR)
#if IO_URING_VERSION_MAJOR != 2 || IO_URING_VERSION_MINOR != 3
#error "clinux_submit_and_wait_batch relies on liburing 2.3 internals: port it to io_uring_submit_and_wait_min_timeout"
#endif
#endif

// liburing 2.3's __io_uring_flush_sq (not exported): publish the SQEs queued since the last
// submit and return how many the kernel has yet to consume.
static unsigned clinux_flush_sq(struct io_uring *ring) {
    struct io_uring_sq *sq = &ring->sq;
    unsigned tail = sq->sqe_tail;
    if (sq->sqe_head != tail) {
        sq->sqe_head = tail;
        io_uring_smp_store_release(sq->ktail, tail);
    }
    return tail - IO_URING_READ_ONCE(*sq->khead);
}

int clinux_submit_and_wait_batch(struct io_uring *ring, unsigned wait_nr, unsigned min_wait_usec,
                                 long long timeout_ns) {
    struct __kernel_timespec ts;
    struct io_uring_getevents_arg arg;
    memset(&arg, 0, sizeof(arg));
    arg.sigmask_sz = _NSIG / 8;
    arg.pad = min_wait_usec;   // min_wait_usec on 6.12+
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000LL;
        ts.tv_nsec = timeout_ns % 1000000000LL;
        arg.ts = (uint64_t)(uintptr_t)&ts;
    }
    unsigned flags = IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG;
    int fd = ring->ring_fd;
    if (ring->int_flags & CLINUX_INT_FLAG_REG_RING) {
        flags |= IORING_ENTER_REGISTERED_RING;
        fd = ring->enter_ring_fd;
    }
    unsigned submit = clinux_flush_sq(ring);
    int ret = (int)syscall(__NR_io_uring_enter, fd, submit, wait_nr, flags, &arg, sizeof(arg));
    return ret < 0 ? -errno : ret;
}

long clinux_pipe_open(int fds[2], long capacity) {
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return -errno;
    long got = fcntl(fds[1], F_SETPIPE_SZ, (int)capacity);
    if (got < capacity) {
        int e = got < 0 ? errno : ENOSPC;
        close(fds[0]);
        close(fds[1]);
        return -e;
    }
    return got;
}

long clinux_tee(int in, int out, size_t len) {
    ssize_t n = tee(in, out, len, SPLICE_F_NONBLOCK);
    return n < 0 ? -errno : n;
}

long clinux_splice(int in, int out, size_t len) {
    ssize_t n = splice(in, NULL, out, NULL, len, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    return n < 0 ? -errno : n;
}

void clinux_prep_recvmsg_multishot_select(struct io_uring_sqe *sqe, int fd, struct msghdr *mh,
                                          unsigned short bgid) {
    io_uring_prep_recvmsg_multishot(sqe, fd, mh, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = bgid;
}

int clinux_recvmsg_parse(void *buf, int len, struct msghdr *mh, uint32_t *ip, uint16_t *port,
                         uint8_t **payload, uint32_t *payload_len, int *truncated) {
    struct io_uring_recvmsg_out *o = io_uring_recvmsg_validate(buf, len, mh);
    if (!o || o->namelen < sizeof(struct sockaddr_in)) return -1;
    struct sockaddr_in *sa = io_uring_recvmsg_name(o);
    if (sa->sin_family != AF_INET) return -1;
    *ip = ntohl(sa->sin_addr.s_addr);
    *port = ntohs(sa->sin_port);
    *payload = io_uring_recvmsg_payload(o, mh);
    *payload_len = io_uring_recvmsg_payload_length(o, len, mh);
    *truncated = (o->flags & MSG_TRUNC) != 0;
    return 0;
}

int clinux_recvmmsg(int fd, struct mmsghdr *v, unsigned n) {
    int r = recvmmsg(fd, v, n, MSG_DONTWAIT, NULL);
    return r < 0 ? -errno : r;
}

int clinux_sendmmsg(int fd, struct mmsghdr *v, unsigned n) {
    int r = sendmmsg(fd, v, n, MSG_DONTWAIT);
    return r < 0 ? -errno : r;
}

size_t clinux_mmsghdr_size(void) { return sizeof(struct mmsghdr); }
struct msghdr *clinux_mmsghdr_at(struct mmsghdr *v, unsigned i) { return &v[i].msg_hdr; }
unsigned clinux_mmsghdr_len(struct mmsghdr *v, unsigned i) { return v[i].msg_len; }
