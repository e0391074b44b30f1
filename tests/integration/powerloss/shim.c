/* The power-loss shim: an LD_PRELOAD library that lets a test undo, after the process died, every write to a file
 * under one directory that was not made durable.
 *
 * Environment (the shim does nothing unless RAFTKV_POWERLOSS_DIR is set):
 *   RAFTKV_POWERLOSS_DIR      files under this directory are tracked (a node's data directory)
 *   RAFTKV_POWERLOSS_JOURNAL  directory for the undo journals (one per process; must exist; not under the above)
 *   RAFTKV_POWERLOSS_IGNORE   colon-separated file names never tracked (lock.mdb: LMDB rebuilds it at open)
 *   RAFTKV_POWERLOSS_SYNC_DELAY_US  a slow disk: every fsync/fdatasync of a tracked file returns (and counts as done)
 *                             only this many microseconds after it would have (default 0)
 *
 * It never buffers or delays anything: every write goes straight to the file (LMDB reads its data through a shared
 * mmap, which must see it). Before each write to a tracked file it appends an undo record to its journal (the file's
 * identity, the offset, the bytes there before, the file size before, and the bytes written), and only then writes.
 * The journal is written with plain write(2): it sits in the page cache, so kill -9 does not lose it; only the
 * simulated power loss, applied afterwards by the test (tests/integration/powerloss/__init__.py), "loses" data.
 *
 * What makes a write durable, as on Linux:
 *   - fsync/fdatasync that succeeds on any fd of the file: every write to that file (inode) journaled before the
 *     call started, by this process or an earlier one (marker S);
 *   - a write on an O_SYNC/O_DSYNC fd, or pwritev2 with RWF_SYNC/RWF_DSYNC, that succeeds: that write (marker D);
 *   - sync(2) / syncfs(2): every write journaled before the call started (marker A).
 * Not durable: sync_file_range (no metadata, no device flush: no integrity guarantee) and msync (writable shared
 * maps of tracked files are reported as unsupported anyway, so nothing tracked is written through a map).
 *
 * Intercepted: open/open64/openat/openat64/creat/creat64 (and the _FORTIFY_SOURCE __open_2 family), close,
 * close_range, dup/dup2/dup3, fcntl/fcntl64 (F_DUPFD*, F_SETFL's O_APPEND), write/pwrite/pwrite64, writev,
 * pwritev/pwritev64/pwritev2/pwritev64v2, ftruncate/ftruncate64, truncate/truncate64, fallocate/fallocate64,
 * posix_fallocate/posix_fallocate64, sendfile/sendfile64, copy_file_range, splice (emulated with read + write when
 * the target is tracked), fsync, fdatasync, sync, syncfs, mmap/mmap64, fopen/fopen64/fdopen/freopen.
 * O_TRUNC at open is done as open without it, then a journaled ftruncate(0).
 * What it cannot journal makes it write an X record, and the reverter refuses to pretend: writable MAP_SHARED maps
 * of tracked files, stdio streams writing them, fallocate modes that move data, fds above MAX_FDS.
 * Not modelled: namespace operations (create, rename, unlink, mkdir) are kept as they are, even without a directory
 * fsync; io_uring and POSIX aio are not intercepted (the daemon uses neither).
 *
 * Journal format (little endian): a 40-byte header "RKPLJNL1", u32 version (1), u32 pid, u64 CLOCK_REALTIME ns,
 * u64 CLOCK_MONOTONIC ns, u64 0; then records, each a 24-byte header (u8 type, 7 zero bytes, u64 payload length,
 * u64 CLOCK_MONOTONIC ns when the record was appended: for W and T before the change is made, for R, D, S and A
 * after the call returned) and the payload. The timestamps let the reverter cut the power at any earlier instant
 * (Python's time.monotonic_ns() reads the same clock):
 *   'N' dev ino, path                              a tracked file was opened under this path (for messages)
 *   'W' seq dev ino off len old_size old_len, old bytes [old_len], new bytes [len]
 *   'T' seq dev ino old_size new_size old_len, old bytes [new_size, new_size + old_len)    size change
 *   'R' seq result(i64)                            the W (or T) did not do what it was journaled as: bytes written
 *                                                  (a short write), or -1 (failed)
 *   'D' seq                                        that write reached the disk (O_DSYNC fd, RWF_DSYNC)
 *   'S' dev ino upto                               fsync/fdatasync of the file: records seq < upto are durable
 *   'A' dev upto                                   sync (dev 0: every file) / syncfs (that file system)
 *   'X' dev ino, message                           something was written that could not be journaled
 * seq counts this process's W and T records from 1. A record cut short at the end (the process was killed while
 * appending it) is ignored: its data write had not started. */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef RWF_DSYNC
#define RWF_DSYNC 0x00000002
#endif
#ifndef RWF_SYNC
#define RWF_SYNC 0x00000004
#endif
#ifndef RWF_APPEND
#define RWF_APPEND 0x00000010
#endif

#define EXPORT __attribute__((visibility("default")))
#define MAX_FDS 65536
#define MAX_IGNORED 16

/* -- the real functions ----------------------------------------------------------------------------------------- */
static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_close)(int);
static int (*real_close_range)(unsigned int, unsigned int, int);
static int (*real_dup)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);
static int (*real_fcntl)(int, int, ...);
static int (*real_fcntl64)(int, int, ...);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off64_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t (*real_pwritev64)(int, const struct iovec *, int, off64_t);
static ssize_t (*real_pwritev2)(int, const struct iovec *, int, off_t, int);
static ssize_t (*real_pwritev64v2)(int, const struct iovec *, int, off64_t, int);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off64_t);
static int (*real_truncate)(const char *, off_t);
static int (*real_truncate64)(const char *, off64_t);
static int (*real_fallocate)(int, int, off_t, off_t);
static int (*real_fallocate64)(int, int, off64_t, off64_t);
static int (*real_posix_fallocate)(int, off_t, off_t);
static int (*real_posix_fallocate64)(int, off64_t, off64_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static void (*real_sync)(void);
static int (*real_syncfs)(int);
static void *(*real_mmap)(void *, size_t, int, int, int, off_t);
static void *(*real_mmap64)(void *, size_t, int, int, int, off64_t);
static FILE *(*real_fopen)(const char *, const char *);
static FILE *(*real_fopen64)(const char *, const char *);
static FILE *(*real_fdopen)(int, const char *);
static FILE *(*real_freopen)(const char *, const char *, FILE *);

/* -- state ------------------------------------------------------------------------------------------------------ */
struct fdinfo {
    uint8_t tracked; /* read without the lock on the fast path (atomically); everything else under it */
    uint8_t dsync;   /* opened O_SYNC / O_DSYNC: every successful write is durable */
    uint8_t append;  /* O_APPEND: writes go to the end */
    uint64_t dev, ino;
};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int active;
static char track_dir[PATH_MAX];
static size_t track_len;
static char journal_dir[PATH_MAX];
static char ignored[MAX_IGNORED][NAME_MAX + 1];
static int n_ignored;
static struct fdinfo fds[MAX_FDS];
static int jfd = -1;       /* this process's journal, opened at the first record */
static pid_t jpid;         /* the process that opened jfd (a forked child starts its own journal) */
static uint64_t next_seq = 1;
static struct timespec sync_delay; /* RAFTKV_POWERLOSS_SYNC_DELAY_US */

static void die(const char *what) {
    char buf[512];
    int n = snprintf(buf, sizeof buf, "raftkv power-loss shim: %s (errno %d: %s); aborting so that no write goes "
                     "unjournaled\n", what, errno, strerror(errno));
    if (n > 0 && real_write) real_write(2, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
    abort();
}

static void *sym(const char *name, int required) {
    void *p = dlsym(RTLD_NEXT, name);
    if (!p && required) {
        static const char msg[] = "raftkv power-loss shim: a libc function is missing\n";
        ssize_t (*w)(int, const void *, size_t) = dlsym(RTLD_NEXT, "write");
        if (w) w(2, msg, sizeof msg - 1);
        abort();
    }
    return p;
}

static void child_after_fork(void) {
    /* A forked child writes its own journal: it must not interleave records with its parent's. */
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    memcpy(&lock, &fresh, sizeof lock);
    if (jfd >= 0) real_close(jfd);
    jfd = -1;
    next_seq = 1;
}

static void init(void) {
    real_open = sym("open", 1);
    real_open64 = sym("open64", 0);
    real_openat = sym("openat", 1);
    real_openat64 = sym("openat64", 0);
    real_close = sym("close", 1);
    real_close_range = sym("close_range", 0);
    real_dup = sym("dup", 1);
    real_dup2 = sym("dup2", 1);
    real_dup3 = sym("dup3", 0);
    real_fcntl = sym("fcntl", 1);
    real_fcntl64 = sym("fcntl64", 0);
    real_write = sym("write", 1);
    real_pwrite = sym("pwrite", 1);
    real_pwrite64 = sym("pwrite64", 0);
    real_writev = sym("writev", 1);
    real_pwritev = sym("pwritev", 0);
    real_pwritev64 = sym("pwritev64", 0);
    real_pwritev2 = sym("pwritev2", 0);
    real_pwritev64v2 = sym("pwritev64v2", 0);
    real_ftruncate = sym("ftruncate", 1);
    real_ftruncate64 = sym("ftruncate64", 0);
    real_truncate = sym("truncate", 1);
    real_truncate64 = sym("truncate64", 0);
    real_fallocate = sym("fallocate", 0);
    real_fallocate64 = sym("fallocate64", 0);
    real_posix_fallocate = sym("posix_fallocate", 0);
    real_posix_fallocate64 = sym("posix_fallocate64", 0);
    real_fsync = sym("fsync", 1);
    real_fdatasync = sym("fdatasync", 1);
    real_sync = sym("sync", 1);
    real_syncfs = sym("syncfs", 0);
    real_mmap = sym("mmap", 1);
    real_mmap64 = sym("mmap64", 0);
    real_fopen = sym("fopen", 1);
    real_fopen64 = sym("fopen64", 0);
    real_fdopen = sym("fdopen", 1);
    real_freopen = sym("freopen", 1);
    if (!real_open64) real_open64 = real_open;
    if (!real_openat64) real_openat64 = real_openat;
    if (!real_fcntl64) real_fcntl64 = real_fcntl;
    if (!real_pwrite64) real_pwrite64 = (ssize_t(*)(int, const void *, size_t, off64_t))real_pwrite;
    if (!real_ftruncate64) real_ftruncate64 = (int (*)(int, off64_t))real_ftruncate;
    if (!real_truncate64) real_truncate64 = (int (*)(const char *, off64_t))real_truncate;
    if (!real_fopen64) real_fopen64 = real_fopen;

    const char *dir = getenv("RAFTKV_POWERLOSS_DIR");
    const char *jdir = getenv("RAFTKV_POWERLOSS_JOURNAL");
    if (!dir || !*dir) return;
    if (!jdir || !*jdir) {
        errno = EINVAL;
        die("RAFTKV_POWERLOSS_DIR is set but RAFTKV_POWERLOSS_JOURNAL is not");
    }
    if (!realpath(dir, track_dir)) {
        if (strlen(dir) >= sizeof track_dir) die("RAFTKV_POWERLOSS_DIR is too long");
        strcpy(track_dir, dir); /* not there yet: taken as written (must be absolute) */
    }
    track_len = strlen(track_dir);
    while (track_len > 1 && track_dir[track_len - 1] == '/') track_dir[--track_len] = 0;
    if (strlen(jdir) >= sizeof journal_dir) die("RAFTKV_POWERLOSS_JOURNAL is too long");
    strcpy(journal_dir, jdir);
    const char *ign = getenv("RAFTKV_POWERLOSS_IGNORE");
    while (ign && *ign && n_ignored < MAX_IGNORED) {
        const char *end = strchr(ign, ':');
        size_t n = end ? (size_t)(end - ign) : strlen(ign);
        if (n > 0 && n <= NAME_MAX) {
            memcpy(ignored[n_ignored], ign, n);
            ignored[n_ignored][n] = 0;
            n_ignored++;
        }
        ign = end ? end + 1 : NULL;
    }
    const char *delay = getenv("RAFTKV_POWERLOSS_SYNC_DELAY_US");
    if (delay && *delay) {
        long long us = atoll(delay);
        sync_delay.tv_sec = (time_t)(us / 1000000);
        sync_delay.tv_nsec = (long)(us % 1000000) * 1000;
    }
    pthread_atfork(NULL, NULL, child_after_fork);
    active = 1;
}

static inline void ensure(void) { pthread_once(&once, init); }

static inline int is_tracked(int fd) {
    return active && fd >= 0 && fd < MAX_FDS && __atomic_load_n(&fds[fd].tracked, __ATOMIC_ACQUIRE);
}

/* -- the journal (callers hold the lock) ------------------------------------------------------------------------ */
static uint64_t now_ns(clockid_t clk) {
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void write_all(int fd, struct iovec *iov, int cnt) {
    while (cnt > 0) {
        ssize_t n = real_writev(fd, iov, cnt);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("cannot write the journal");
        }
        while (cnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
}

static void journal_open(void) {
    if (jfd >= 0 && jpid == getpid()) return;
    char path[PATH_MAX];
    uint64_t rt = now_ns(CLOCK_REALTIME), mono = now_ns(CLOCK_MONOTONIC);
    pid_t pid = getpid();
    if (snprintf(path, sizeof path, "%s/journal-%020llu-%d.bin", journal_dir, (unsigned long long)rt, (int)pid) >=
        (int)sizeof path)
        die("the journal path is too long");
    int fd = real_open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) die("cannot create the journal (does RAFTKV_POWERLOSS_JOURNAL exist?)");
    unsigned char hdr[40] = "RKPLJNL1";
    uint32_t version = 1, upid = (uint32_t)pid;
    uint64_t zero = 0;
    memcpy(hdr + 8, &version, 4);
    memcpy(hdr + 12, &upid, 4);
    memcpy(hdr + 16, &rt, 8);
    memcpy(hdr + 24, &mono, 8);
    memcpy(hdr + 32, &zero, 8);
    struct iovec v = {hdr, sizeof hdr};
    write_all(fd, &v, 1);
    jfd = fd;
    jpid = pid;
    next_seq = 1;
}

/* One record: the header, then up to three payload pieces. */
static void journal(char type, const void *p1, size_t n1, const void *p2, size_t n2, const void *p3, size_t n3) {
    journal_open();
    unsigned char hdr[24] = {0};
    uint64_t len = n1 + n2 + n3, ts = now_ns(CLOCK_MONOTONIC);
    hdr[0] = (unsigned char)type;
    memcpy(hdr + 8, &len, 8);
    memcpy(hdr + 16, &ts, 8);
    struct iovec v[4] = {{hdr, 24}, {(void *)p1, n1}, {(void *)p2, n2}, {(void *)p3, n3}};
    write_all(jfd, v, 4);
}

static void journal_unsupported(uint64_t dev, uint64_t ino, const char *msg) {
    uint64_t f[2] = {dev, ino};
    journal('X', f, sizeof f, msg, strlen(msg), NULL, 0);
}

/* -- which files are tracked ------------------------------------------------------------------------------------ */
/* Whether fd is a regular file under the tracked directory (and not ignored); fills st. */
static int classify(int fd, struct stat *st, char *path, size_t pathsz) {
    if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) return 0;
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, pathsz - 1);
    if (n <= 0) return 0;
    path[n] = 0;
    if ((size_t)n <= track_len || strncmp(path, track_dir, track_len) != 0 || path[track_len] != '/') return 0;
    const char *base = strrchr(path, '/') + 1;
    for (int i = 0; i < n_ignored; i++)
        if (strcmp(base, ignored[i]) == 0) return 0;
    return 1;
}

static int pread_all(int fd, unsigned char *buf, size_t n, off_t off) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, buf + done, n - done, off + (off_t)done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        done += (size_t)r;
    }
    return 0;
}

/* The bytes at [off, off + n) of fd's file; through a read-only reopen of it when fd is write-only. */
static int read_all(int fd, unsigned char *buf, size_t n, off_t off) {
    if (pread_all(fd, buf, n, off) == 0) return 0;
    if (errno != EBADF) return -1;
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    int rfd = real_open(link, O_RDONLY | O_CLOEXEC);
    if (rfd < 0) return -1;
    int r = pread_all(rfd, buf, n, off);
    int e = errno;
    real_close(rfd);
    errno = e;
    return r;
}

/* A size change about to happen (caller holds the lock): journal it; returns its seq. */
static uint64_t journal_truncate(int fd, uint64_t dev, uint64_t ino, off_t new_size) {
    struct stat st;
    if (fstat(fd, &st) != 0) die("fstat of a tracked file failed");
    uint64_t old_size = (uint64_t)st.st_size, nsz = (uint64_t)new_size;
    uint64_t old_len = nsz < old_size ? old_size - nsz : 0;
    unsigned char *old = old_len ? malloc(old_len) : NULL;
    if (old_len && (!old || read_all(fd, old, old_len, new_size) != 0)) die("cannot read the bytes a truncate drops");
    uint64_t seq = next_seq++;
    uint64_t f[6] = {seq, dev, ino, old_size, nsz, old_len};
    journal('T', f, sizeof f, old, old_len, NULL, 0);
    free(old);
    return seq;
}

static void journal_result(uint64_t seq, int64_t result) {
    uint64_t f[2];
    f[0] = seq;
    memcpy(&f[1], &result, 8);
    journal('R', f, sizeof f, NULL, 0, NULL, 0);
}

static void track(int fd, int flags) {
    struct stat st;
    char path[PATH_MAX];
    if (!classify(fd, &st, path, sizeof path)) return;
    pthread_mutex_lock(&lock);
    if (fd >= MAX_FDS) {
        journal_unsupported(st.st_dev, st.st_ino, "a tracked file got an fd above MAX_FDS: its writes escape");
    } else {
        fds[fd].dsync = (flags & (O_DSYNC | O_SYNC)) != 0;
        fds[fd].append = (flags & O_APPEND) != 0;
        fds[fd].dev = st.st_dev;
        fds[fd].ino = st.st_ino;
        __atomic_store_n(&fds[fd].tracked, 1, __ATOMIC_RELEASE);
        uint64_t f[2] = {st.st_dev, st.st_ino};
        journal('N', f, sizeof f, path, strlen(path), NULL, 0);
    }
    pthread_mutex_unlock(&lock);
}

static void untrack(int fd) {
    if (fd >= 0 && fd < MAX_FDS) __atomic_store_n(&fds[fd].tracked, 0, __ATOMIC_RELEASE);
}

static void copy_tracking(int from, int to) {
    if (to < 0 || to >= MAX_FDS || from == to) return;
    pthread_mutex_lock(&lock);
    if (is_tracked(from)) {
        fds[to] = fds[from];
        fds[to].tracked = 0;
        __atomic_store_n(&fds[to].tracked, 1, __ATOMIC_RELEASE);
    } else {
        untrack(to);
    }
    pthread_mutex_unlock(&lock);
}

/* What open does after the real open: track the fd, and do a stripped O_TRUNC as a journaled ftruncate. */
static int after_open(int fd, int flags, int truncate_it) {
    if (fd < 0) return fd;
    int saved = errno;
    track(fd, flags);
    if (truncate_it) {
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
            int r;
            if (is_tracked(fd)) {
                pthread_mutex_lock(&lock);
                uint64_t seq = journal_truncate(fd, fds[fd].dev, fds[fd].ino, 0);
                r = real_ftruncate(fd, 0);
                if (r != 0) journal_result(seq, -1);
                pthread_mutex_unlock(&lock);
            } else {
                r = real_ftruncate(fd, 0);
            }
            if (r != 0) {
                int e = errno;
                untrack(fd);
                real_close(fd);
                errno = e;
                return -1;
            }
        }
    }
    errno = saved;
    return fd;
}

/* O_TRUNC is stripped (and redone by after_open) for opens that can write; O_RDONLY|O_TRUNC is left alone. */
static int strip_trunc(int flags) {
    return active && (flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY;
}

static int needs_mode(int flags) { return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE; }

/* -- open ------------------------------------------------------------------------------------------------------- */
#define OPEN_BODY(call)                                      \
    ensure();                                                \
    mode_t mode = 0;                                         \
    if (needs_mode(flags)) {                                 \
        va_list ap;                                          \
        va_start(ap, flags);                                 \
        mode = (mode_t)va_arg(ap, int);                      \
        va_end(ap);                                          \
    }                                                        \
    int tr = strip_trunc(flags);                             \
    int fd = call;                                           \
    return active ? after_open(fd, flags, tr) : fd;

EXPORT int open(const char *path, int flags, ...) { OPEN_BODY(real_open(path, tr ? flags & ~O_TRUNC : flags, mode)) }
EXPORT int open64(const char *path, int flags, ...) {
    OPEN_BODY(real_open64(path, tr ? flags & ~O_TRUNC : flags, mode))
}
EXPORT int openat(int dirfd, const char *path, int flags, ...) {
    OPEN_BODY(real_openat(dirfd, path, tr ? flags & ~O_TRUNC : flags, mode))
}
EXPORT int openat64(int dirfd, const char *path, int flags, ...) {
    OPEN_BODY(real_openat64(dirfd, path, tr ? flags & ~O_TRUNC : flags, mode))
}
EXPORT int creat(const char *path, mode_t mode) { return open(path, O_CREAT | O_WRONLY | O_TRUNC, mode); }
EXPORT int creat64(const char *path, mode_t mode) { return open64(path, O_CREAT | O_WRONLY | O_TRUNC, mode); }
/* _FORTIFY_SOURCE's checked variants (open without a mode). */
EXPORT int __open_2(const char *path, int flags) { return open(path, flags); }
EXPORT int __open64_2(const char *path, int flags) { return open64(path, flags); }
EXPORT int __openat_2(int dirfd, const char *path, int flags) { return openat(dirfd, path, flags); }
EXPORT int __openat64_2(int dirfd, const char *path, int flags) { return openat64(dirfd, path, flags); }

/* -- fd bookkeeping --------------------------------------------------------------------------------------------- */
EXPORT int close(int fd) {
    ensure();
    if (active && fd >= 0 && fd == jfd && jpid == getpid()) {
        errno = EBADF; /* not the caller's fd: ours */
        return -1;
    }
    untrack(fd); /* before the close: once closed, another thread may get this number from open */
    return real_close(fd);
}

EXPORT int close_range(unsigned int first, unsigned int last, int flags) {
    ensure();
    if (!real_close_range) {
        errno = ENOSYS;
        return -1;
    }
    if (active && !(flags & 4 /* CLOSE_RANGE_CLOEXEC */))
        for (unsigned int fd = first; fd <= last && fd < MAX_FDS; fd++) untrack((int)fd);
    return real_close_range(first, last, flags);
}

EXPORT int dup(int fd) {
    ensure();
    int r = real_dup(fd);
    if (active && r >= 0) copy_tracking(fd, r);
    return r;
}

/* Keeps the journal out of the way of a dup2/dup3 onto its number (the caller believes that number is free). */
static void move_journal_from(int fd2) {
    if (!active || fd2 < 0) return;
    pthread_mutex_lock(&lock);
    if (fd2 == jfd && jpid == getpid()) {
        int moved = real_fcntl(jfd, F_DUPFD_CLOEXEC, 1000);
        if (moved < 0) die("cannot move the journal's fd");
        real_close(jfd);
        jfd = moved;
    }
    pthread_mutex_unlock(&lock);
}

EXPORT int dup2(int fd, int fd2) {
    ensure();
    move_journal_from(fd2);
    int r = real_dup2(fd, fd2);
    if (active && r >= 0) copy_tracking(fd, r);
    return r;
}

EXPORT int dup3(int fd, int fd2, int flags) {
    ensure();
    if (!real_dup3) {
        errno = ENOSYS;
        return -1;
    }
    move_journal_from(fd2);
    int r = real_dup3(fd, fd2, flags);
    if (active && r >= 0) copy_tracking(fd, r);
    return r;
}

static int after_fcntl(int fd, int cmd, long arg, int r) {
    if (!active || r < 0) return r;
    if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) {
        copy_tracking(fd, r);
    } else if (cmd == F_SETFL && is_tracked(fd)) {
        pthread_mutex_lock(&lock);
        fds[fd].append = (arg & O_APPEND) != 0; /* Linux ignores O_DSYNC / O_SYNC in F_SETFL */
        pthread_mutex_unlock(&lock);
    }
    return r;
}

/* The third argument is an int or a pointer; passing it on as a pointer-sized value is what every x86-64 and
 * aarch64 fcntl interposer does. */
EXPORT int fcntl(int fd, int cmd, ...) {
    ensure();
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    return after_fcntl(fd, cmd, (long)arg, real_fcntl(fd, cmd, arg));
}

EXPORT int fcntl64(int fd, int cmd, ...) {
    ensure();
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    return after_fcntl(fd, cmd, (long)arg, real_fcntl64(fd, cmd, arg));
}

/* -- writes ----------------------------------------------------------------------------------------------------- */
struct pending {
    uint64_t seq;
    uint64_t len;
    int dsync;
};

/* Journal a write about to happen (caller holds the lock and has checked the fd is tracked). off < 0: at the fd's
 * position; append: at the end. */
static void begin_write(int fd, const struct iovec *iov, int cnt, off_t off, int append, int dsync, struct pending *p) {
    uint64_t len = 0;
    for (int i = 0; i < cnt; i++) len += iov[i].iov_len;
    struct stat st;
    if (fstat(fd, &st) != 0) die("fstat of a tracked file failed");
    uint64_t old_size = (uint64_t)st.st_size;
    if (append || fds[fd].append) {
        off = (off_t)old_size;
    } else if (off < 0) {
        off = lseek(fd, 0, SEEK_CUR);
        if (off < 0) die("lseek of a tracked file failed");
    }
    uint64_t uoff = (uint64_t)off;
    uint64_t old_len = uoff < old_size ? (old_size - uoff < len ? old_size - uoff : len) : 0;
    unsigned char *old = old_len ? malloc(old_len) : NULL;
    unsigned char *new = len ? malloc(len) : NULL;
    if ((old_len && !old) || (len && !new)) die("out of memory");
    if (old_len && read_all(fd, old, old_len, off) != 0) die("cannot read the bytes a write replaces");
    uint64_t at = 0;
    for (int i = 0; i < cnt; i++) {
        memcpy(new + at, iov[i].iov_base, iov[i].iov_len);
        at += iov[i].iov_len;
    }
    p->seq = next_seq++;
    p->len = len;
    p->dsync = dsync || fds[fd].dsync;
    uint64_t f[7] = {p->seq, fds[fd].dev, fds[fd].ino, uoff, len, old_size, old_len};
    journal('W', f, sizeof f, old, old_len, new, len);
    free(old);
    free(new);
}

static void end_write(const struct pending *p, ssize_t r) {
    if (r < 0 || (uint64_t)r != p->len) journal_result(p->seq, r < 0 ? -1 : (int64_t)r);
    if (r > 0 && p->dsync) journal('D', &p->seq, 8, NULL, 0, NULL, 0);
}

/* Runs `call` (which must set `ssize_t r`) journaled, if fd is tracked and the write is not empty. */
#define WRITE_BODY(fd, iov, cnt, off, append, dsync, call)                    \
    do {                                                                     \
        int _e;                                                              \
        struct pending _p;                                                   \
        pthread_mutex_lock(&lock);                                           \
        if (!is_tracked(fd)) {                                               \
            pthread_mutex_unlock(&lock);                                     \
            call;                                                            \
            return r;                                                        \
        }                                                                    \
        begin_write(fd, iov, cnt, off, append, dsync, &_p);                  \
        call;                                                                \
        _e = errno;                                                          \
        end_write(&_p, r);                                                   \
        pthread_mutex_unlock(&lock);                                         \
        errno = _e;                                                          \
        return r;                                                            \
    } while (0)

EXPORT ssize_t write(int fd, const void *buf, size_t n) {
    ensure();
    if (!is_tracked(fd) || n == 0) return real_write(fd, buf, n);
    struct iovec v = {(void *)buf, n};
    ssize_t r;
    WRITE_BODY(fd, &v, 1, -1, 0, 0, r = real_write(fd, buf, n));
}

EXPORT ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    ensure();
    if (!is_tracked(fd) || n == 0) return real_pwrite(fd, buf, n, off);
    struct iovec v = {(void *)buf, n};
    ssize_t r;
    /* Linux pwrite on an O_APPEND fd appends, like write. */
    WRITE_BODY(fd, &v, 1, off, 0, 0, r = real_pwrite(fd, buf, n, off));
}

EXPORT ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off) {
    ensure();
    if (!is_tracked(fd) || n == 0) return real_pwrite64(fd, buf, n, off);
    struct iovec v = {(void *)buf, n};
    ssize_t r;
    WRITE_BODY(fd, &v, 1, off, 0, 0, r = real_pwrite64(fd, buf, n, off));
}

static size_t iov_total(const struct iovec *iov, int cnt) {
    size_t n = 0;
    for (int i = 0; i < cnt && iov; i++) n += iov[i].iov_len;
    return n;
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    ensure();
    if (!is_tracked(fd) || cnt <= 0 || iov_total(iov, cnt) == 0) return real_writev(fd, iov, cnt);
    ssize_t r;
    WRITE_BODY(fd, iov, cnt, -1, 0, 0, r = real_writev(fd, iov, cnt));
}

static ssize_t no_fn(void) {
    errno = ENOSYS;
    return -1;
}

EXPORT ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    ensure();
    if (!real_pwritev) return no_fn();
    if (!is_tracked(fd) || cnt <= 0 || iov_total(iov, cnt) == 0) return real_pwritev(fd, iov, cnt, off);
    ssize_t r;
    WRITE_BODY(fd, iov, cnt, off, 0, 0, r = real_pwritev(fd, iov, cnt, off));
}

EXPORT ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off64_t off) {
    ensure();
    if (!real_pwritev64) return no_fn();
    if (!is_tracked(fd) || cnt <= 0 || iov_total(iov, cnt) == 0) return real_pwritev64(fd, iov, cnt, off);
    ssize_t r;
    WRITE_BODY(fd, iov, cnt, off, 0, 0, r = real_pwritev64(fd, iov, cnt, off));
}

/* pwritev2: offset -1 means the fd's position; RWF_APPEND appends; RWF_DSYNC / RWF_SYNC make it durable. */
EXPORT ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags) {
    ensure();
    if (!real_pwritev2) return no_fn();
    if (!is_tracked(fd) || cnt <= 0 || iov_total(iov, cnt) == 0) return real_pwritev2(fd, iov, cnt, off, flags);
    ssize_t r;
    WRITE_BODY(fd, iov, cnt, off, (flags & RWF_APPEND) != 0, (flags & (RWF_DSYNC | RWF_SYNC)) != 0,
               r = real_pwritev2(fd, iov, cnt, off, flags));
}

EXPORT ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off64_t off, int flags) {
    ensure();
    if (!real_pwritev64v2) return no_fn();
    if (!is_tracked(fd) || cnt <= 0 || iov_total(iov, cnt) == 0) return real_pwritev64v2(fd, iov, cnt, off, flags);
    ssize_t r;
    WRITE_BODY(fd, iov, cnt, off, (flags & RWF_APPEND) != 0, (flags & (RWF_DSYNC | RWF_SYNC)) != 0,
               r = real_pwritev64v2(fd, iov, cnt, off, flags));
}

/* sendfile, copy_file_range and splice into a tracked file: one chunk read from the source, then written through
 * the journaled write path (a short count is what these calls may return anyway). */
static ssize_t copy_into(int in_fd, off64_t *in_off, int out_fd, off64_t *out_off, size_t len) {
    size_t chunk = len < (1u << 20) ? len : (1u << 20);
    if (chunk == 0) return 0;
    char *buf = malloc(chunk);
    if (!buf) {
        errno = ENOMEM;
        return -1;
    }
    ssize_t n = in_off ? pread(in_fd, buf, chunk, *in_off) : read(in_fd, buf, chunk);
    if (n <= 0) {
        free(buf);
        return n;
    }
    ssize_t w = out_off ? pwrite64(out_fd, buf, (size_t)n, *out_off) : write(out_fd, buf, (size_t)n);
    int e = errno;
    free(buf);
    if (w > 0) {
        if (in_off) *in_off += w;
        else if (w < n) lseek(in_fd, (off_t)(w - n), SEEK_CUR); /* give back what was read but not written */
        if (out_off) *out_off += w;
    }
    errno = e;
    return w;
}

static ssize_t (*real_sendfile)(int, int, off_t *, size_t);
static ssize_t (*real_sendfile64)(int, int, off64_t *, size_t);
static ssize_t (*real_copy_file_range)(int, off64_t *, int, off64_t *, size_t, unsigned int);
static ssize_t (*real_splice)(int, off64_t *, int, off64_t *, size_t, unsigned int);

EXPORT ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t count) {
    ensure();
    if (!is_tracked(out_fd)) {
        if (!real_sendfile) real_sendfile = sym("sendfile", 1);
        return real_sendfile(out_fd, in_fd, offset, count);
    }
    return copy_into(in_fd, (off64_t *)offset, out_fd, NULL, count);
}

EXPORT ssize_t sendfile64(int out_fd, int in_fd, off64_t *offset, size_t count) {
    ensure();
    if (!is_tracked(out_fd)) {
        if (!real_sendfile64) real_sendfile64 = sym("sendfile64", 1);
        return real_sendfile64(out_fd, in_fd, offset, count);
    }
    return copy_into(in_fd, offset, out_fd, NULL, count);
}

EXPORT ssize_t copy_file_range(int in_fd, off64_t *in_off, int out_fd, off64_t *out_off, size_t len,
                               unsigned int flags) {
    ensure();
    if (!is_tracked(out_fd)) {
        if (!real_copy_file_range) real_copy_file_range = sym("copy_file_range", 1);
        return real_copy_file_range(in_fd, in_off, out_fd, out_off, len, flags);
    }
    return copy_into(in_fd, in_off, out_fd, out_off, len);
}

EXPORT ssize_t splice(int in_fd, off64_t *in_off, int out_fd, off64_t *out_off, size_t len, unsigned int flags) {
    ensure();
    if (!is_tracked(out_fd)) {
        if (!real_splice) real_splice = sym("splice", 1);
        return real_splice(in_fd, in_off, out_fd, out_off, len, flags);
    }
    return copy_into(in_fd, in_off, out_fd, out_off, len);
}

/* -- size changes ----------------------------------------------------------------------------------------------- */
static int journaled_ftruncate(int fd, uint64_t dev, uint64_t ino, off64_t len) {
    pthread_mutex_lock(&lock);
    uint64_t seq = journal_truncate(fd, dev, ino, (off_t)len);
    int r = real_ftruncate64(fd, len);
    int e = errno;
    if (r != 0) journal_result(seq, -1);
    pthread_mutex_unlock(&lock);
    errno = e;
    return r;
}

EXPORT int ftruncate(int fd, off_t len) {
    ensure();
    if (!is_tracked(fd) || len < 0) return real_ftruncate(fd, len);
    return journaled_ftruncate(fd, fds[fd].dev, fds[fd].ino, len);
}

EXPORT int ftruncate64(int fd, off64_t len) {
    ensure();
    if (!is_tracked(fd) || len < 0) return real_ftruncate64(fd, len);
    return journaled_ftruncate(fd, fds[fd].dev, fds[fd].ino, len);
}

static int path_truncate(const char *path, off64_t len) {
    int fd = real_open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return real_truncate64(path, len); /* for the right errno */
    struct stat st;
    char p[PATH_MAX];
    int r;
    if (len >= 0 && classify(fd, &st, p, sizeof p)) r = journaled_ftruncate(fd, st.st_dev, st.st_ino, len);
    else r = real_ftruncate64(fd, len);
    int e = errno;
    real_close(fd);
    errno = e;
    return r;
}

EXPORT int truncate(const char *path, off_t len) {
    ensure();
    return active ? path_truncate(path, len) : real_truncate(path, len);
}

EXPORT int truncate64(const char *path, off64_t len) {
    ensure();
    return active ? path_truncate(path, len) : real_truncate64(path, len);
}

/* Growing allocation (mode 0, posix_fallocate) is a size change; KEEP_SIZE alone changes nothing visible;
 * PUNCH_HOLE and ZERO_RANGE write zeros; the rest (COLLAPSE_RANGE, INSERT_RANGE) move data: unsupported. */
static int journaled_fallocate(int fd, int mode, off64_t off, off64_t len, int posix) {
    int keep = (mode & FALLOC_FL_KEEP_SIZE) != 0;
    int other = mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE);
    int r, e;
    pthread_mutex_lock(&lock);
    if (!is_tracked(fd)) {
        pthread_mutex_unlock(&lock);
        return posix ? real_posix_fallocate64(fd, off, len) : real_fallocate64(fd, mode, off, len);
    }
    if (other || off < 0 || len <= 0) {
        if (other) journal_unsupported(fds[fd].dev, fds[fd].ino, "fallocate mode that moves data");
        pthread_mutex_unlock(&lock);
        return posix ? real_posix_fallocate64(fd, off, len) : real_fallocate64(fd, mode, off, len);
    }
    struct stat st;
    if (fstat(fd, &st) != 0) die("fstat of a tracked file failed");
    if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
        off64_t end = off + len;
        if (keep && end > st.st_size) end = st.st_size;
        if (end <= off) {
            pthread_mutex_unlock(&lock);
            return real_fallocate64(fd, mode, off, len);
        }
        void *zeros = calloc(1, (size_t)(end - off));
        if (!zeros) die("out of memory");
        struct iovec v = {zeros, (size_t)(end - off)};
        struct pending p;
        begin_write(fd, &v, 1, off, 0, 0, &p);
        free(zeros);
        r = real_fallocate64(fd, mode, off, len);
        e = errno;
        p.dsync = 0;
        end_write(&p, r == 0 ? (ssize_t)p.len : -1);
    } else if (!keep && off + len > st.st_size) {
        uint64_t seq = journal_truncate(fd, fds[fd].dev, fds[fd].ino, (off_t)(off + len));
        r = posix ? real_posix_fallocate64(fd, off, len) : real_fallocate64(fd, mode, off, len);
        e = posix ? r : errno;
        if (r != 0) journal_result(seq, -1);
    } else {
        r = posix ? real_posix_fallocate64(fd, off, len) : real_fallocate64(fd, mode, off, len);
        e = posix ? r : errno;
    }
    pthread_mutex_unlock(&lock);
    if (!posix) errno = e;
    return r;
}

static void need_fallocate(void) {
    if (!real_fallocate64) real_fallocate64 = real_fallocate ? (int (*)(int, int, off64_t, off64_t))real_fallocate
                                                             : sym("fallocate64", 1);
    if (!real_posix_fallocate64)
        real_posix_fallocate64 = real_posix_fallocate ? (int (*)(int, off64_t, off64_t))real_posix_fallocate
                                                      : sym("posix_fallocate64", 1);
}

EXPORT int fallocate(int fd, int mode, off_t off, off_t len) {
    ensure();
    need_fallocate();
    return journaled_fallocate(fd, mode, off, len, 0);
}

EXPORT int fallocate64(int fd, int mode, off64_t off, off64_t len) {
    ensure();
    need_fallocate();
    return journaled_fallocate(fd, mode, off, len, 0);
}

EXPORT int posix_fallocate(int fd, off_t off, off_t len) {
    ensure();
    need_fallocate();
    return journaled_fallocate(fd, 0, off, len, 1);
}

EXPORT int posix_fallocate64(int fd, off64_t off, off64_t len) {
    ensure();
    need_fallocate();
    return journaled_fallocate(fd, 0, off, len, 1);
}

/* -- durability ------------------------------------------------------------------------------------------------- */
static int synced(int fd, int (*fn)(int)) {
    if (!is_tracked(fd)) return fn(fd);
    pthread_mutex_lock(&lock);
    uint64_t f[3] = {fds[fd].dev, fds[fd].ino, next_seq}; /* what was journaled before the call started */
    pthread_mutex_unlock(&lock);
    int r = fn(fd);
    if (r == 0) {
        int e = errno;
        if (sync_delay.tv_sec || sync_delay.tv_nsec) {
            struct timespec left = sync_delay;
            while (nanosleep(&left, &left) != 0 && errno == EINTR) {
            }
        }
        pthread_mutex_lock(&lock);
        journal('S', f, sizeof f, NULL, 0, NULL, 0);
        pthread_mutex_unlock(&lock);
        errno = e;
    }
    return r;
}

EXPORT int fsync(int fd) {
    ensure();
    return synced(fd, real_fsync);
}

EXPORT int fdatasync(int fd) {
    ensure();
    return synced(fd, real_fdatasync);
}

EXPORT void sync(void) {
    ensure();
    if (!active) {
        real_sync();
        return;
    }
    pthread_mutex_lock(&lock);
    uint64_t f[2] = {0, next_seq};
    pthread_mutex_unlock(&lock);
    real_sync();
    int e = errno;
    pthread_mutex_lock(&lock);
    journal('A', f, sizeof f, NULL, 0, NULL, 0);
    pthread_mutex_unlock(&lock);
    errno = e;
}

EXPORT int syncfs(int fd) {
    ensure();
    if (!real_syncfs) return (int)no_fn();
    struct stat st;
    if (!active || fstat(fd, &st) != 0) return real_syncfs(fd);
    pthread_mutex_lock(&lock);
    uint64_t f[2] = {st.st_dev ? st.st_dev : 1, next_seq};
    pthread_mutex_unlock(&lock);
    int r = real_syncfs(fd);
    if (r == 0) {
        int e = errno;
        pthread_mutex_lock(&lock);
        journal('A', f, sizeof f, NULL, 0, NULL, 0);
        pthread_mutex_unlock(&lock);
        errno = e;
    }
    return r;
}

/* -- what cannot be journaled ----------------------------------------------------------------------------------- */
static void check_map(int fd, int prot, int flags) {
    if (!is_tracked(fd) || !(prot & PROT_WRITE) || !(flags & MAP_SHARED)) return;
    pthread_mutex_lock(&lock);
    journal_unsupported(fds[fd].dev, fds[fd].ino, "a writable MAP_SHARED map of a tracked file");
    pthread_mutex_unlock(&lock);
}

EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    ensure();
    check_map(fd, prot, flags);
    return real_mmap(addr, len, prot, flags, fd, off);
}

EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off64_t off) {
    ensure();
    check_map(fd, prot, flags);
    return real_mmap64 ? real_mmap64(addr, len, prot, flags, fd, off) : real_mmap(addr, len, prot, flags, fd, off);
}

/* stdio writes through glibc's internal write, which the shim cannot see. */
static FILE *check_stream(FILE *f, const char *mode) {
    if (!active || !f || !mode || !(strchr(mode, 'w') || strchr(mode, 'a') || strchr(mode, '+'))) return f;
    struct stat st;
    char p[PATH_MAX];
    int fd = fileno(f);
    if (fd >= 0 && classify(fd, &st, p, sizeof p)) {
        pthread_mutex_lock(&lock);
        journal_unsupported(st.st_dev, st.st_ino, "a tracked file written through a stdio stream");
        pthread_mutex_unlock(&lock);
    }
    return f;
}

EXPORT FILE *fopen(const char *path, const char *mode) {
    ensure();
    return check_stream(real_fopen(path, mode), mode);
}

EXPORT FILE *fopen64(const char *path, const char *mode) {
    ensure();
    return check_stream(real_fopen64(path, mode), mode);
}

EXPORT FILE *fdopen(int fd, const char *mode) {
    ensure();
    return check_stream(real_fdopen(fd, mode), mode);
}

EXPORT FILE *freopen(const char *path, const char *mode, FILE *stream) {
    ensure();
    return check_stream(real_freopen(path, mode, stream), mode);
}
