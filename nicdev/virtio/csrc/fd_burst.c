/* Frames to and from a non-blocking file descriptor in bursts: one call
 * from Python per burst, the system calls here.
 *
 * A TAP gives one frame per read() and takes one per write(); a datagram
 * socket one per datagram, moved with recvmmsg/sendmmsg. Reads go into a
 * pool the caller preallocated, `max_frames` slots of `slot_size` bytes,
 * with each frame's length in `lengths`; writes take the frames end to end
 * in one buffer with their lengths. Nothing here allocates. */
#define _GNU_SOURCE
#include "fd_burst.h"

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

/* recvmmsg/sendmmsg work on at most this many datagrams per system call. */
#define MNET_MMSG_BATCH 64

/* Read frames until the descriptor has none (EAGAIN) or the pool is full.
 * Returns how many; *err is 0, or the errno of a read that failed otherwise
 * (the frames before it are good). A read of more than `slot_size` bytes
 * cannot happen: read() is given the slot size, and a TAP truncates. */
uint32_t mnet_fd_read_burst(int fd, uint8_t *pool, uint32_t slot_size, uint32_t max_frames, uint32_t *lengths,
                            int *err)
{
    uint32_t n = 0;
    *err = 0;
    while (n < max_frames) {
        ssize_t got = read(fd, pool + (size_t)n * slot_size, slot_size);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                *err = errno;
            break;
        }
        lengths[n++] = (uint32_t)got;
    }
    return n;
}

/* Write n frames, one write() each, frame i the lengths[i] bytes after
 * frame i-1 in `buf`. errs[i] is 0 or the errno that frame failed with;
 * a failure does not stop the burst (as one write per frame would not).
 * Returns the frames written. */
uint32_t mnet_fd_write_burst(int fd, const char *buf, const uint32_t *lengths, uint32_t n, int *errs)
{
    uint32_t written = 0;
    size_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        ssize_t put;
        do
            put = write(fd, buf + off, lengths[i]);
        while (put < 0 && errno == EINTR);
        errs[i] = put < 0 ? errno : 0;
        written += put >= 0;
        off += lengths[i];
    }
    return written;
}

/* 1 if the sender `from` (as recvmmsg filled it, `from_len` bytes) is the
 * address packed in `remote`: the same IPv4 or IPv6 address and port, or
 * the same unix socket path. */
static int same_sender(const struct sockaddr_storage *from, socklen_t from_len, const char *remote,
                       uint32_t remote_len)
{
    sa_family_t family;
    if (remote_len < sizeof(sa_family_t) || from_len < sizeof(sa_family_t))
        return 0;
    memcpy(&family, remote, sizeof family);
    if (from->ss_family != family)
        return 0;
    if (family == AF_INET) {
        struct sockaddr_in want;
        const struct sockaddr_in *got = (const struct sockaddr_in *)from;
        if (remote_len < sizeof want || from_len < sizeof *got)
            return 0;
        memcpy(&want, remote, sizeof want);
        return got->sin_port == want.sin_port && got->sin_addr.s_addr == want.sin_addr.s_addr;
    }
    if (family == AF_INET6) {
        struct sockaddr_in6 want;
        const struct sockaddr_in6 *got = (const struct sockaddr_in6 *)from;
        if (remote_len < sizeof want || from_len < sizeof *got)
            return 0;
        memcpy(&want, remote, sizeof want);
        return got->sin6_port == want.sin6_port && !memcmp(&got->sin6_addr, &want.sin6_addr, sizeof want.sin6_addr);
    }
    if (family == AF_UNIX) {
        /* Paths compared up to their NUL; an unbound sender has none. */
        const char *got_path = ((const struct sockaddr_un *)from)->sun_path;
        size_t got_max = from_len - offsetof(struct sockaddr_un, sun_path);
        size_t want_len = strnlen(remote + offsetof(struct sockaddr_un, sun_path),
                                  remote_len - offsetof(struct sockaddr_un, sun_path));
        if (from_len <= offsetof(struct sockaddr_un, sun_path) || want_len == 0)
            return 0;
        return strnlen(got_path, got_max) == want_len &&
               !memcmp(got_path, remote + offsetof(struct sockaddr_un, sun_path), want_len);
    }
    return 0;
}

/* recvmmsg into the pool until the socket has nothing (EAGAIN) or the pool
 * is full. from_remote[i] says whether datagram i came from `remote` (a
 * packed sockaddr). A datagram longer than `slot_size` is cut there (the
 * caller makes the slot one byte larger than any frame, so that length
 * means "too large"). *err as for mnet_fd_read_burst. */
uint32_t mnet_dgram_recv_burst(int fd, uint8_t *pool, uint32_t slot_size, uint32_t max_frames, uint32_t *lengths,
                               uint8_t *from_remote, const char *remote, uint32_t remote_len, int *err)
{
    struct mmsghdr msgs[MNET_MMSG_BATCH];
    struct iovec iovs[MNET_MMSG_BATCH];
    struct sockaddr_storage from[MNET_MMSG_BATCH];
    uint32_t n = 0;
    *err = 0;
    while (n < max_frames) {
        uint32_t want = max_frames - n < MNET_MMSG_BATCH ? max_frames - n : MNET_MMSG_BATCH;
        for (uint32_t i = 0; i < want; i++) {
            iovs[i].iov_base = pool + (size_t)(n + i) * slot_size;
            iovs[i].iov_len = slot_size;
            memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
            msgs[i].msg_hdr.msg_iov = &iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &from[i];
            msgs[i].msg_hdr.msg_namelen = sizeof from[i];
        }
        int got = recvmmsg(fd, msgs, want, MSG_DONTWAIT, NULL);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                *err = errno;
            break;
        }
        for (int i = 0; i < got; i++) {
            lengths[n + i] = msgs[i].msg_len;
            from_remote[n + i] = (uint8_t)same_sender(&from[i], msgs[i].msg_hdr.msg_namelen, remote, remote_len);
        }
        n += (uint32_t)got;
        if ((uint32_t)got < want)
            break;              /* the socket is empty for now */
    }
    return n;
}

/* sendmmsg n datagrams to `remote` (a packed sockaddr, `remote_len` bytes),
 * datagram i the lengths[i] bytes after datagram i-1 in `buf`. errs[i] as
 * for mnet_fd_write_burst: a datagram the kernel refuses is skipped and the
 * rest still go. Returns the datagrams sent. */
uint32_t mnet_dgram_send_burst(int fd, const char *buf, const uint32_t *lengths, uint32_t n, const char *remote,
                               uint32_t remote_len, int *errs)
{
    struct mmsghdr msgs[MNET_MMSG_BATCH];
    struct iovec iovs[MNET_MMSG_BATCH];
    uint32_t sent = 0, i = 0;
    size_t off = 0;
    while (i < n) {
        uint32_t want = n - i < MNET_MMSG_BATCH ? n - i : MNET_MMSG_BATCH;
        size_t o = off;
        for (uint32_t k = 0; k < want; k++) {
            iovs[k].iov_base = (void *)(buf + o);
            iovs[k].iov_len = lengths[i + k];
            o += lengths[i + k];
            memset(&msgs[k].msg_hdr, 0, sizeof msgs[k].msg_hdr);
            msgs[k].msg_hdr.msg_iov = &iovs[k];
            msgs[k].msg_hdr.msg_iovlen = 1;
            msgs[k].msg_hdr.msg_name = (void *)remote;
            msgs[k].msg_hdr.msg_namelen = remote_len;
        }
        int got = sendmmsg(fd, msgs, want, MSG_DONTWAIT);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            /* The first datagram of this batch failed: note why, go past it. */
            errs[i] = got < 0 ? errno : EAGAIN;
            off += lengths[i];
            i++;
            continue;
        }
        for (int k = 0; k < got; k++) {
            errs[i] = 0;
            off += lengths[i];
            i++;
        }
        sent += (uint32_t)got;
    }
    return sent;
}
