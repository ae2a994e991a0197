/*
 * powercut.so: an LD_PRELOAD shim that records, for every write to a regular file
 * under $POWERCUT_DIR, what that write overwrote, and every sync of such a file, in
 * an undo log at $POWERCUT_LOG. After the process is killed (kill -9 keeps the page
 * cache, so every write is in the files), the test replays the log backwards to put
 * the files in a state a power cut could have left: each write since the file's last
 * sync kept, dropped or torn. See README.md in this folder for the model.
 *
 * Build: cc -shared -fPIC -O2 -o powercut.so powercut.c -ldl
 *
 * Log records, in native byte order, each appended with one write(2):
 *   u64 record length (all of it, this field included)
 *   u8  kind: 'W' (a write) or 'S' (a sync)
 *   u32 path length, then the path (as /proc/self/fd gives it)
 *   'W': u64 offset, u64 file size before the write, u64 length of the write,
 *        u64 n, then the n bytes the write overwrote (n is 0 past the old end)
 *   'S': u64 the log's length when the sync began: it covers the writes recorded
 *        before that point, from any process; an empty path (a `syncfs`) covers
 *        those of every file
 * A last record cut short by the kill is ignored by the replay; its write had not
 * started, because the record is written first.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off64_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_syncfs)(int);

/* Held from a write's record to the end of the write itself, so the log's order is
 * the order of the writes. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int log_fd = -1;
static const char *dir;
static size_t dir_len;

__attribute__((constructor)) static void init(void) {
    real_write = dlsym(RTLD_NEXT, "write");
    real_pwrite = dlsym(RTLD_NEXT, "pwrite");
    real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    real_writev = dlsym(RTLD_NEXT, "writev");
    real_pwritev = dlsym(RTLD_NEXT, "pwritev");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_syncfs = dlsym(RTLD_NEXT, "syncfs");
    const char *log = getenv("POWERCUT_LOG");
    dir = getenv("POWERCUT_DIR");
    if (!log || !dir || !*dir)
        return;
    dir_len = strlen(dir);
    log_fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (log_fd < 0) {
        perror("powercut: cannot open $POWERCUT_LOG");
        abort();
    }
}

/* Whether fd is a regular file under $POWERCUT_DIR; its path goes to `path`. */
static int watched(int fd, char *path, uint32_t *path_len, struct stat *st) {
    if (log_fd < 0 || fstat(fd, st) != 0 || !S_ISREG(st->st_mode))
        return 0;
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, PATH_MAX);
    if (n <= 0 || (size_t)n <= dir_len || memcmp(path, dir, dir_len) != 0 || path[dir_len] != '/')
        return 0;
    *path_len = (uint32_t)n;
    return 1;
}

static void put(char **at, const void *v, size_t n) {
    memcpy(*at, v, n);
    *at += n;
}

/* Appends a record with one write; a log that cannot be written makes the test
 * meaningless, so it stops the process loudly. */
static void append(const char *rec, size_t len) {
    if (real_write(log_fd, rec, len) != (ssize_t)len) {
        perror("powercut: cannot append to $POWERCUT_LOG");
        abort();
    }
}

/* Records what the write of `len` bytes at `offset` (-1: the file position, or its
 * end under O_APPEND) will overwrite. Called with the lock held; the size is read
 * again under it, in case another thread wrote to the file meanwhile. */
static void record_write(int fd, const char *path, uint32_t path_len, struct stat *st,
                         off_t offset, size_t len) {
    if (fstat(fd, st) != 0) {
        perror("powercut: cannot stat a written file");
        abort();
    }
    if (offset < 0)
        offset = (fcntl(fd, F_GETFL) & O_APPEND) ? st->st_size : lseek(fd, 0, SEEK_CUR);
    uint64_t old_size = (uint64_t)st->st_size;
    uint64_t old_len = old_size > (uint64_t)offset ? old_size - (uint64_t)offset : 0;
    if (old_len > len)
        old_len = len;
    size_t head = 8 + 1 + 4 + path_len + 8 * 4;
    uint64_t total = head + old_len;
    char *rec = malloc(total);
    if (!rec) {
        perror("powercut: malloc");
        abort();
    }
    char *at = rec;
    uint64_t off = (uint64_t)offset, n = len;
    put(&at, &total, 8);
    put(&at, "W", 1);
    put(&at, &path_len, 4);
    put(&at, path, path_len);
    put(&at, &off, 8);
    put(&at, &old_size, 8);
    put(&at, &n, 8);
    put(&at, &old_len, 8);
    if (old_len > 0) {
        /* A second descriptor without O_DIRECT reads any range, aligned or not. */
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        int rfd = open(link, O_RDONLY | O_CLOEXEC);
        if (rfd < 0 || pread(rfd, at, old_len, offset) != (ssize_t)old_len) {
            perror("powercut: cannot read what a write overwrites");
            abort();
        }
        close(rfd);
    }
    append(rec, total);
    free(rec);
}

static void record_sync(const char *path, uint32_t path_len, uint64_t upto) {
    char rec[8 + 1 + 4 + PATH_MAX + 8];
    char *at = rec;
    uint64_t total = 8 + 1 + 4 + path_len + 8;
    put(&at, &total, 8);
    put(&at, "S", 1);
    put(&at, &path_len, 4);
    put(&at, path, path_len);
    put(&at, &upto, 8);
    append(rec, total);
}

/* Before a write of `len` bytes at `offset` (-1: the file position) to fd: when fd is
 * watched, takes the lock and records what the write will overwrite. Returns whether
 * it did; `written` then lets the lock go once the write itself is done. */
static int recording(int fd, off_t offset, size_t len) {
    char path[PATH_MAX];
    uint32_t path_len;
    struct stat st;
    if (!watched(fd, path, &path_len, &st))
        return 0;
    pthread_mutex_lock(&lock);
    record_write(fd, path, path_len, &st, offset, len);
    return 1;
}

static ssize_t written(int recorded, ssize_t r) {
    if (recorded)
        pthread_mutex_unlock(&lock);
    return r;
}

ssize_t write(int fd, const void *buf, size_t len) {
    int recorded = recording(fd, -1, len);
    return written(recorded, real_write(fd, buf, len));
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t offset) {
    int recorded = recording(fd, offset, len);
    return written(recorded, real_pwrite(fd, buf, len, offset));
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off64_t offset) {
    int recorded = recording(fd, offset, len);
    return written(recorded, real_pwrite64(fd, buf, len, offset));
}

static size_t iov_len(const struct iovec *iov, int n) {
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += iov[i].iov_len;
    return len;
}

ssize_t writev(int fd, const struct iovec *iov, int n) {
    int recorded = recording(fd, -1, iov_len(iov, n));
    return written(recorded, real_writev(fd, iov, n));
}

ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t offset) {
    int recorded = recording(fd, offset, iov_len(iov, n));
    return written(recorded, real_pwritev(fd, iov, n, offset));
}

/* A sync covers the writes recorded before it began; it is recorded only once it
 * has succeeded. With `every`, it covers every file (`syncfs`; the watched files are
 * all on the filesystem of the state folder), whatever fd is. */
static int synced(int fd, int (*real)(int), int every) {
    char path[PATH_MAX];
    uint32_t path_len = 0;
    struct stat st;
    if (every ? log_fd < 0 : !watched(fd, path, &path_len, &st))
        return real(fd);
    struct stat log_st;
    pthread_mutex_lock(&lock);
    int known = fstat(log_fd, &log_st) == 0;
    pthread_mutex_unlock(&lock);
    if (!known) {
        perror("powercut: cannot stat $POWERCUT_LOG");
        abort();
    }
    int r = real(fd);
    if (r == 0) {
        pthread_mutex_lock(&lock);
        record_sync(path, path_len, (uint64_t)log_st.st_size);
        pthread_mutex_unlock(&lock);
    }
    return r;
}

int fsync(int fd) { return synced(fd, real_fsync, 0); }

int fdatasync(int fd) { return synced(fd, real_fdatasync, 0); }

int syncfs(int fd) { return synced(fd, real_syncfs, 1); }
