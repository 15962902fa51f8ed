// CLinux: the thin C layer over liburing. Swift imports liburing's static inline helpers
// (io_uring_prep_*, io_uring_cqe_*) directly; this header adds only what is awkward or
// impossible from Swift: ring set-up with feature fallback, provided-buffer-ring set-up
// (liburing 2.3 has no io_uring_setup_buf_ring), anonymous-union SQE fields, and the probe.
#ifndef CLINUX_H
#define CLINUX_H

// The system headers come first, without _GNU_SOURCE, so their declarations match the ones
// Swift's Glibc module has; liburing.h defines _GNU_SOURCE, but by then the include guards
// keep these headers from being read again with different definitions.
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <signal.h>
#include <inttypes.h>
#include <time.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <errno.h>
#include <stdbool.h>
#include <malloc.h>
#include <liburing.h>

#ifdef __cplusplus
extern "C" {
#endif

/// glibc's malloc_trim(0): free heap memory of every arena goes back to the system (Swift's
/// Glibc module does not import <malloc.h>).
static inline int clinux_malloc_trim(void) { return malloc_trim(0); }

/// Set up `ring` for a single reactor thread. Tries SINGLE_ISSUER|DEFER_TASKRUN first (kernel
/// 6.1+), then SINGLE_ISSUER|COOP_TASKRUN, then no flags. Returns 0 or -errno; `*flags_used`
/// receives the setup flags that were accepted.
int clinux_queue_init(struct io_uring *ring, unsigned entries, unsigned *flags_used);

/// Allocate (page-aligned, mmap) and register a provided-buffer ring of `entries` slots
/// (a power of two) for group `bgid`. Returns NULL and sets `*err` to -errno on failure.
struct io_uring_buf_ring *clinux_buf_ring_setup(struct io_uring *ring, unsigned entries,
                                                unsigned short bgid, int *err);

/// clinux_buf_ring_setup with registration flags (IOU_PBUF_RING_INC, kernel 6.12+; older kernels
/// refuse any flag with -EINVAL).
struct io_uring_buf_ring *clinux_buf_ring_setup_flags(struct io_uring *ring, unsigned entries,
                                                      unsigned short bgid, unsigned short flags,
                                                      int *err);

/// Unregister and unmap a ring created by clinux_buf_ring_setup.
void clinux_buf_ring_free(struct io_uring *ring, struct io_uring_buf_ring *br,
                          unsigned entries, unsigned short bgid);

/// Multishot recv that selects its buffer from provided-buffer group `bgid`.
void clinux_prep_recv_multishot_select(struct io_uring_sqe *sqe, int fd, unsigned short bgid);

/// The same, with IORING_RECVSEND_BUNDLE when `bundle` is set (kernel 6.10+): one completion
/// may then cover several consecutive buffers of the group.
void clinux_prep_recv_multishot_bundle(struct io_uring_sqe *sqe, int fd, unsigned short bgid, int bundle);

// Not in liburing 2.3's headers; defined here so the code builds against 2.3 and probed at run
// time (docs/architecture.md, "io_uring techniques").
#ifndef IORING_RECVSEND_BUNDLE
#define IORING_RECVSEND_BUNDLE (1U << 4)
#endif
#ifndef IORING_FEAT_RECVSEND_BUNDLE
#define IORING_FEAT_RECVSEND_BUNDLE (1U << 14)
#endif
#ifndef IOU_PBUF_RING_INC
#define IOU_PBUF_RING_INC 2
#endif
#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE (1U << 4)
#endif

/// What `clinux_uring_features` reports (bits).
#define CLINUX_FEATURE_RECV_BUNDLE 1
#define CLINUX_FEATURE_BUF_INCREMENTAL 2
#define CLINUX_FEATURE_FIXED_FILES 4
/// IORING_OP_FIXED_FD_INSTALL (6.8): a real fd for a socket accepted straight into the table.
#define CLINUX_FEATURE_FD_INSTALL 8

/// Not in liburing 2.3 (kernel 6.8): an opcode that installs a fixed file as a normal fd
/// (close-on-exec) and completes with that fd. An enum value upstream, so a define of our own.
#define CLINUX_OP_FIXED_FD_INSTALL 54

static inline void clinux_prep_fixed_fd_install(struct io_uring_sqe *sqe, int fixed_index) {
    io_uring_prep_rw(CLINUX_OP_FIXED_FD_INSTALL, sqe, fixed_index, NULL, 0, 0);
    sqe->flags = IOSQE_FIXED_FILE;
    sqe->rw_flags = 0;   // install_fd_flags: 0 = O_CLOEXEC
}

/// A single-shot accept straight into a free slot of the fixed-file table (the completion's
/// result is the slot), with the peer's address written to `addr`. SOCK_CLOEXEC is refused
/// for direct descriptors (they have no fd), so only SOCK_NONBLOCK is passed.
static inline void clinux_prep_accept_direct_alloc(struct io_uring_sqe *sqe, int fd,
                                                   struct sockaddr *addr, socklen_t *len) {
    // liburing 2.3 stores file_index + 1 (0 means "not direct"): ALLOC - 1 stores ALLOC.
    io_uring_prep_accept_direct(sqe, fd, addr, len, SOCK_NONBLOCK, IORING_FILE_INDEX_ALLOC - 1);
}

/// The optional io_uring techniques this kernel offers, probed on a scratch ring: recv bundles
/// (IORING_FEAT_RECVSEND_BUNDLE), incremental provided buffers (a buffer ring registered with
/// IOU_PBUF_RING_INC), a sparse fixed-file table, IORING_OP_FIXED_FD_INSTALL. Returns CLINUX_FEATURE_* bits (0 when no ring).
int clinux_uring_features(void);

/// The ring's IORING_FEAT_* bits.
unsigned clinux_ring_features(struct io_uring *ring);

/// Checks that this kernel can run the io_uring reactor: ring creation with the flags above,
/// and the opcodes ACCEPT, RECV, SEND, READ, MSG_RING, plus provided-buffer rings.
/// Returns 0 when usable; otherwise -1 and writes a reason into `why`.
int clinux_probe(char *why, unsigned long why_len);

/// 1 when this ring's kernel supports opcode `op` (IORING_REGISTER_PROBE), else 0.
int clinux_opcode_supported(struct io_uring *ring, int op);

/// 1 when the kernel honours a minimum wait in io_uring_getevents_arg (IORING_FEAT_MIN_TIMEOUT,
/// kernel 6.12+), else 0.
int clinux_min_wait_supported(struct io_uring *ring);

/// Submits what is queued and waits in one io_uring_enter: until `wait_nr` completions are
/// ready, or — once `min_wait_usec` has passed — until at least one is, or until `timeout_ns`
/// (< 0: no limit). Needs clinux_min_wait_supported. Returns the number submitted or -errno
/// (-ETIME when the timeout passed).
int clinux_submit_and_wait_batch(struct io_uring *ring, unsigned wait_nr, unsigned min_wait_usec,
                                 long long timeout_ns);

/// accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC): accept4 is a GNU extension that
/// Swift's Glibc module (built without _GNU_SOURCE) does not declare.
int clinux_accept_nonblock(int fd);

/// pipe2(O_NONBLOCK | O_CLOEXEC) into fds[0] (read end) and fds[1] (write end), then
/// F_SETPIPE_SZ to at least `capacity` bytes. Returns the pipe's capacity in bytes, or -errno
/// (the pipe is closed again when it cannot be made that large: unprivileged users have a
/// per-user budget of pipe pages, fs/pipe-user-pages-soft).
long clinux_pipe_open(int fds[2], long capacity);

/// tee(in, out, len, SPLICE_F_NONBLOCK): duplicates up to `len` bytes at the head of pipe `in`
/// into pipe `out` by reference (no copy, `in` keeps them). Returns bytes or -errno.
long clinux_tee(int in, int out, size_t len);

/// splice(in, NULL, out, NULL, len, SPLICE_F_NONBLOCK | SPLICE_F_MOVE): moves up to `len`
/// bytes from pipe `in` to `out` (a socket: its pages are attached to the socket buffer, not
/// copied; it must be O_NONBLOCK for the call not to wait for room). Returns bytes or -errno.
long clinux_splice(int in, int out, size_t len);

// UDP (the voice relay, Sources/VoiceRelay).

/// Multishot recvmsg on a datagram socket, each datagram into a buffer of provided-buffer
/// group `bgid` (laid out as struct io_uring_recvmsg_out, the source address, the payload).
/// `mh` gives only msg_namelen / msg_controllen and must outlive the request.
void clinux_prep_recvmsg_multishot_select(struct io_uring_sqe *sqe, int fd, struct msghdr *mh,
                                          unsigned short bgid);

/// Takes apart one multishot recvmsg buffer of `len` bytes (the CQE's res): the IPv4 source
/// (host byte order), the payload and its length, and whether the datagram was cut to fit.
/// Returns 0, or -1 when the buffer is not a valid recvmsg_out or the source is not IPv4.
int clinux_recvmsg_parse(void *buf, int len, struct msghdr *mh, uint32_t *ip, uint16_t *port,
                         uint8_t **payload, uint32_t *payload_len, int *truncated);

/// recvmmsg(fd, v, n, MSG_DONTWAIT) / sendmmsg(fd, v, n, MSG_DONTWAIT): GNU calls Swift's
/// Glibc module does not declare. Return the message count or -errno.
int clinux_recvmmsg(int fd, struct mmsghdr *v, unsigned n);
int clinux_sendmmsg(int fd, struct mmsghdr *v, unsigned n);

/// sizeof(struct mmsghdr), for Swift to allocate arrays of the (incomplete to it) type.
size_t clinux_mmsghdr_size(void);
/// The i-th element's msghdr and its msg_len field.
struct msghdr *clinux_mmsghdr_at(struct mmsghdr *v, unsigned i);
unsigned clinux_mmsghdr_len(struct mmsghdr *v, unsigned i);

/// errno of the calling thread (Swift's errno accessor is Glibc-specific; keep one place).
int clinux_errno(void);

#ifdef __cplusplus
}
#endif
#endif
