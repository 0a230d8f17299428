/*
 * shortio.c - LD_PRELOAD fault injector for stream-socket I/O.
 *
 * Makes every blocking send/write on a SOCK_STREAM socket transfer only a
 * few bytes (a "short write") and every blocking recv/read return only a few
 * bytes (a "short read"), and optionally makes calls fail with EINTR.  POSIX
 * allows all of this, and a program cannot tell it from a signal or from data
 * arriving in pieces, so a correct program is unaffected; a program that
 * ignores send()'s return value or assumes one recv() returns a whole message
 * fails in a deterministic, seed-reproducible way.
 *
 * Non-blocking calls (O_NONBLOCK on the socket, or MSG_DONTWAIT) pass through
 * untouched: there a short count means "the receive queue is drained" or "the
 * send buffer is full" (epoll(7)), and an event-driven program that trusts it
 * (edge-triggered epoll, asyncio, libuv) would wait for an event that never
 * comes.  Such programs meet real short counts instead: the harness sends in
 * fragments that leave only once the previous one was read, and reads slowly.
 *
 * Build:  gcc -shared -fPIC -O2 -Wall -Wextra -o libshortio.so shortio.c -ldl
 *
 * Environment (read once, in the constructor):
 *   GRADER_SHORTIO_SEED    unsigned integer PRNG seed.  If the variable is
 *                          absent the library is completely inert.  An
 *                          unparsable value falls back to 1.
 *   GRADER_SHORTIO_MAX     max bytes per capped call (default 7, >= 1).
 *                          A call of len >= 2 bytes moves 1 + rand % min(MAX,
 *                          len - 1) bytes: never the whole, whatever its size.
 *                          A 1-byte call passes through.
 *   GRADER_SHORTIO_EINTR   "1": an eligible call fails with EINTR with
 *                          probability 1/4, but never twice in a row in the
 *                          same thread (so retry loops make progress).
 *   GRADER_SHORTIO_WRITES  "0" disables capping of the write direction.
 *   GRADER_SHORTIO_READS   "0" disables capping of the read direction.
 *
 * Only fds that are sockets (fstat + S_ISSOCK, checked on every call, so fd
 * reuse is harmless) of type SOCK_STREAM are touched.  Datagram and
 * seqpacket sockets, pipes, files and ttys pass through unchanged, as do
 * zero-length requests and reads with MSG_WAITALL (whose contract is to
 * return the full length).  errno is preserved across the bookkeeping.
 */
#define _GNU_SOURCE
#undef _FORTIFY_SOURCE

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define SHORTIO_MAX_IOV 64

/* ------------------------------------------------------------------ */
/* Real functions                                                       */
/* ------------------------------------------------------------------ */

typedef ssize_t (*send_fn)(int, const void *, size_t, int);
typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*sendto_fn)(int, const void *, size_t, int, __CONST_SOCKADDR_ARG, socklen_t);
typedef ssize_t (*sendmsg_fn)(int, const struct msghdr *, int);
typedef ssize_t (*writev_fn)(int, const struct iovec *, int);
typedef ssize_t (*recv_fn)(int, void *, size_t, int);
typedef ssize_t (*read_fn)(int, void *, size_t);
typedef ssize_t (*recvfrom_fn)(int, void *, size_t, int, __SOCKADDR_ARG, socklen_t *);
typedef ssize_t (*recvmsg_fn)(int, struct msghdr *, int);
typedef ssize_t (*readv_fn)(int, const struct iovec *, int);
typedef ssize_t (*recv_chk_fn)(int, void *, size_t, size_t, int);
typedef ssize_t (*read_chk_fn)(int, void *, size_t, size_t);
typedef ssize_t (*recvfrom_chk_fn)(int, void *, size_t, size_t, int, __SOCKADDR_ARG, socklen_t *);

/* Fortify entry points (declared by <bits/socket2.h> / <bits/unistd.h> only
 * under _FORTIFY_SOURCE, so declare them here). */
ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags);
ssize_t __read_chk(int fd, void *buf, size_t nbytes, size_t buflen);
ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags,
                       __SOCKADDR_ARG addr, socklen_t *addr_len);

static void *real_send, *real_write, *real_sendto, *real_sendmsg, *real_writev;
static void *real_recv, *real_read, *real_recvfrom, *real_recvmsg, *real_readv;
static void *real_recv_chk, *real_read_chk, *real_recvfrom_chk;

static void *lookup(void **slot, const char *name)
{
    void *p = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (p == NULL) {
        p = dlsym(RTLD_NEXT, name);
        if (p != NULL)
            __atomic_store_n(slot, p, __ATOMIC_RELEASE);
    }
    return p;
}

/* Resolve lazily as well as in the constructor: other libraries'
 * constructors may do I/O before ours runs.  Racing resolvers store the
 * same value, so no lock is needed. */
static void *resolve(void **slot, const char *name)
{
    void *p = lookup(slot, name);
    if (p == NULL)
        abort(); /* cannot forward: the C library lacks the symbol */
    return p;
}

#define REAL(fn) (__extension__(fn##_fn)resolve(&real_##fn, #fn))
#define REAL_CHK(fn) (__extension__(fn##_chk_fn)resolve(&real_##fn##_chk, "__" #fn "_chk"))

/* ------------------------------------------------------------------ */
/* Configuration and PRNG                                               */
/* ------------------------------------------------------------------ */

static int g_enabled;       /* GRADER_SHORTIO_SEED present */
static size_t g_max = 7;    /* GRADER_SHORTIO_MAX */
static int g_eintr;         /* GRADER_SHORTIO_EINTR == "1" */
static int g_writes = 1;    /* GRADER_SHORTIO_WRITES != "0" */
static int g_reads = 1;     /* GRADER_SHORTIO_READS != "0" */
static uint64_t g_state;    /* splitmix64 state, advanced atomically */
static __thread int t_last_was_eintr;

/* splitmix64: the state is a counter, so one atomic add makes it
 * thread-safe and async-signal-safe (no mutex). */
static uint64_t next_rand(void)
{
    uint64_t z = __atomic_add_fetch(&g_state, 0x9E3779B97F4A7C15ULL, __ATOMIC_RELAXED);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end = NULL;
    unsigned long long v;

    if (s == NULL || *s == '\0' || *s == '-')
        return 0;
    errno = 0;
    v = strtoull(s, &end, 0);
    if (errno != 0 || end == s || *end != '\0')
        return 0;
    *out = (uint64_t)v;
    return 1;
}

__attribute__((constructor)) static void shortio_init(void)
{
    int saved_errno = errno;
    const char *seed_s = getenv("GRADER_SHORTIO_SEED");
    const char *s;
    uint64_t v;

    /* Pre-resolve so wrappers called from signal handlers never dlsym();
     * missing symbols (e.g. fortify entry points on other libcs) stay NULL
     * and only matter if something actually calls them. */
    (void)lookup(&real_send, "send");
    (void)lookup(&real_write, "write");
    (void)lookup(&real_sendto, "sendto");
    (void)lookup(&real_sendmsg, "sendmsg");
    (void)lookup(&real_writev, "writev");
    (void)lookup(&real_recv, "recv");
    (void)lookup(&real_read, "read");
    (void)lookup(&real_recvfrom, "recvfrom");
    (void)lookup(&real_recvmsg, "recvmsg");
    (void)lookup(&real_readv, "readv");
    (void)lookup(&real_recv_chk, "__recv_chk");
    (void)lookup(&real_read_chk, "__read_chk");
    (void)lookup(&real_recvfrom_chk, "__recvfrom_chk");

    if (seed_s != NULL) {
        uint64_t seed = 1;
        (void)parse_u64(seed_s, &seed);
        g_state = seed;

        if (parse_u64(getenv("GRADER_SHORTIO_MAX"), &v) && v >= 1 && v <= SIZE_MAX)
            g_max = (size_t)v;
        s = getenv("GRADER_SHORTIO_EINTR");
        g_eintr = s != NULL && strcmp(s, "1") == 0;
        s = getenv("GRADER_SHORTIO_WRITES");
        g_writes = !(s != NULL && strcmp(s, "0") == 0);
        s = getenv("GRADER_SHORTIO_READS");
        g_reads = !(s != NULL && strcmp(s, "0") == 0);

        __atomic_store_n(&g_enabled, 1, __ATOMIC_RELEASE);
    }
    errno = saved_errno;
}

/* ------------------------------------------------------------------ */
/* Decision logic                                                       */
/* ------------------------------------------------------------------ */

/* Is fd a SOCK_STREAM socket?  fstat every call so fd reuse is safe. */
static int is_stream_socket(int fd)
{
    struct stat st;
    int type = 0;
    socklen_t len = sizeof type;

    if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode))
        return 0;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0)
        return 0;
    return type == SOCK_STREAM;
}

static int is_nonblocking(int fd, int msg_flags)
{
    int fl;

    if (msg_flags & MSG_DONTWAIT)
        return 1;
    fl = fcntl(fd, F_GETFL);
    return fl != -1 && (fl & O_NONBLOCK);
}

enum { DIR_WRITE, DIR_READ };

/*
 * Decide what to do with one call of `len` bytes on `fd`.
 *   returns 0  -> pass through unchanged
 *   returns -1 -> fail with EINTR (errno already set)
 *   returns  n -> forward with the length capped to n (1 <= n < len)
 * errno is preserved unless -1 is returned.
 */
static ssize_t decide(int fd, size_t len, int dir, int msg_flags)
{
    int saved_errno;
    size_t n, limit;

    if (!__atomic_load_n(&g_enabled, __ATOMIC_ACQUIRE) || len == 0)
        return 0;
    if (dir == DIR_WRITE ? !g_writes : !g_reads)
        return 0;
    if (dir == DIR_READ && (msg_flags & MSG_WAITALL))
        return 0;

    saved_errno = errno;
    /* Only blocking calls: on a non-blocking socket (O_NONBLOCK, asked of the
     * kernel on every call, or MSG_DONTWAIT) a short count is a promise that
     * the queue is drained (read) or full (write), which edge-triggered epoll
     * users rely on; shortening it would create a hang Linux never could. */
    if (!is_stream_socket(fd) || is_nonblocking(fd, msg_flags)) {
        errno = saved_errno;
        return 0;
    }
    if (g_eintr) {
        if (t_last_was_eintr) {
            t_last_was_eintr = 0;
        } else if ((next_rand() >> 62) == 0) {
            t_last_was_eintr = 1;
            errno = EINTR;
            return -1;
        }
    }
    errno = saved_errno;

    /* A count of 1..min(MAX, len - 1): every call of two bytes or more is
     * cut short, whatever its size, so an ignored count always loses bytes. */
    if (len < 2)
        return 0;
    limit = len - 1 < g_max ? len - 1 : g_max;
    n = 1 + (size_t)(next_rand() % (uint64_t)limit);
    if (n > (size_t)SSIZE_MAX)
        n = (size_t)SSIZE_MAX;
    return (ssize_t)n;
}

static size_t iov_total(const struct iovec *iov, int iovcnt)
{
    size_t total = 0;
    int i;

    for (i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len > SIZE_MAX - total)
            return SIZE_MAX;
        total += iov[i].iov_len;
    }
    return total;
}

/* Copy at most SHORTIO_MAX_IOV entries of iov into out, truncated so the
 * total is at most cap bytes.  Returns the new count (>= 1). */
static int iov_cap(const struct iovec *iov, int iovcnt, size_t cap, struct iovec *out)
{
    int i, n = 0;

    for (i = 0; i < iovcnt && n < SHORTIO_MAX_IOV && cap > 0; i++) {
        out[n] = iov[i];
        if (out[n].iov_len > cap)
            out[n].iov_len = cap;
        cap -= out[n].iov_len;
        n++;
    }
    return n;
}

/* ------------------------------------------------------------------ */
/* Write direction                                                      */
/* ------------------------------------------------------------------ */

ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    ssize_t n = decide(fd, len, DIR_WRITE, flags);
    if (n < 0)
        return -1;
    return REAL(send)(fd, buf, n ? (size_t)n : len, flags);
}

ssize_t write(int fd, const void *buf, size_t len)
{
    ssize_t n = decide(fd, len, DIR_WRITE, 0);
    if (n < 0)
        return -1;
    return REAL(write)(fd, buf, n ? (size_t)n : len);
}

ssize_t sendto(int fd, const void *buf, size_t len, int flags, __CONST_SOCKADDR_ARG addr,
               socklen_t addr_len)
{
    ssize_t n = decide(fd, len, DIR_WRITE, flags);
    if (n < 0)
        return -1;
    return REAL(sendto)(fd, buf, n ? (size_t)n : len, flags, addr, addr_len);
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    struct iovec iov[SHORTIO_MAX_IOV];
    struct msghdr m;
    ssize_t n = 0;

    if (msg != NULL && msg->msg_iov != NULL && msg->msg_iovlen > 0 && msg->msg_iovlen <= IOV_MAX)
        n = decide(fd, iov_total(msg->msg_iov, (int)msg->msg_iovlen), DIR_WRITE, flags);
    if (n < 0)
        return -1;
    if (n == 0)
        return REAL(sendmsg)(fd, msg, flags);
    m = *msg;
    m.msg_iov = iov;
    m.msg_iovlen = (size_t)iov_cap(msg->msg_iov, (int)msg->msg_iovlen, (size_t)n, iov);
    return REAL(sendmsg)(fd, &m, flags);
}

ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
    struct iovec capped[SHORTIO_MAX_IOV];
    ssize_t n = 0;

    if (iov != NULL && iovcnt > 0 && iovcnt <= IOV_MAX)
        n = decide(fd, iov_total(iov, iovcnt), DIR_WRITE, 0);
    if (n < 0)
        return -1;
    if (n == 0)
        return REAL(writev)(fd, iov, iovcnt);
    return REAL(writev)(fd, capped, iov_cap(iov, iovcnt, (size_t)n, capped));
}

/* ------------------------------------------------------------------ */
/* Read direction                                                       */
/* ------------------------------------------------------------------ */

ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    ssize_t n = decide(fd, len, DIR_READ, flags);
    if (n < 0)
        return -1;
    return REAL(recv)(fd, buf, n ? (size_t)n : len, flags);
}

ssize_t read(int fd, void *buf, size_t len)
{
    ssize_t n = decide(fd, len, DIR_READ, 0);
    if (n < 0)
        return -1;
    return REAL(read)(fd, buf, n ? (size_t)n : len);
}

ssize_t recvfrom(int fd, void *buf, size_t len, int flags, __SOCKADDR_ARG addr, socklen_t *addr_len)
{
    ssize_t n = decide(fd, len, DIR_READ, flags);
    if (n < 0)
        return -1;
    return REAL(recvfrom)(fd, buf, n ? (size_t)n : len, flags, addr, addr_len);
}

ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    struct iovec iov[SHORTIO_MAX_IOV];
    struct msghdr m;
    ssize_t n = 0, r;

    if (msg != NULL && msg->msg_iov != NULL && msg->msg_iovlen > 0 && msg->msg_iovlen <= IOV_MAX)
        n = decide(fd, iov_total(msg->msg_iov, (int)msg->msg_iovlen), DIR_READ, flags);
    if (n < 0)
        return -1;
    if (n == 0)
        return REAL(recvmsg)(fd, msg, flags);
    m = *msg;
    m.msg_iov = iov;
    m.msg_iovlen = (size_t)iov_cap(msg->msg_iov, (int)msg->msg_iovlen, (size_t)n, iov);
    r = REAL(recvmsg)(fd, &m, flags);
    /* Propagate the kernel-written output fields back to the caller. */
    msg->msg_namelen = m.msg_namelen;
    msg->msg_controllen = m.msg_controllen;
    msg->msg_flags = m.msg_flags;
    return r;
}

ssize_t readv(int fd, const struct iovec *iov, int iovcnt)
{
    struct iovec capped[SHORTIO_MAX_IOV];
    ssize_t n = 0;

    if (iov != NULL && iovcnt > 0 && iovcnt <= IOV_MAX)
        n = decide(fd, iov_total(iov, iovcnt), DIR_READ, 0);
    if (n < 0)
        return -1;
    if (n == 0)
        return REAL(readv)(fd, iov, iovcnt);
    return REAL(readv)(fd, capped, iov_cap(iov, iovcnt, (size_t)n, capped));
}

/* Fortify variants: if len > buflen the call is a genuine overflow, so pass
 * it through untouched and let glibc abort as it would without us. */

ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags)
{
    ssize_t n = len > buflen ? 0 : decide(fd, len, DIR_READ, flags);
    if (n < 0)
        return -1;
    return REAL_CHK(recv)(fd, buf, n ? (size_t)n : len, buflen, flags);
}

ssize_t __read_chk(int fd, void *buf, size_t nbytes, size_t buflen)
{
    ssize_t n = nbytes > buflen ? 0 : decide(fd, nbytes, DIR_READ, 0);
    if (n < 0)
        return -1;
    return REAL_CHK(read)(fd, buf, n ? (size_t)n : nbytes, buflen);
}

ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags, __SOCKADDR_ARG addr,
                       socklen_t *addr_len)
{
    ssize_t n = len > buflen ? 0 : decide(fd, len, DIR_READ, flags);
    if (n < 0)
        return -1;
    return REAL_CHK(recvfrom)(fd, buf, n ? (size_t)n : len, buflen, flags, addr,
                                                addr_len);
}
