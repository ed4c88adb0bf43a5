/*
 * files — open file descriptors survive checkpoint/restore.
 *
 *   files --out F --ready F [--tmpdir DIR]
 *
 * Creates in DIR (default /tmp) cryo-files-<pid>-{data,rw,log,high} and holds:
 *   rdonly   data, O_RDONLY, offset 1234
 *   rdwr     rw,   O_RDWR, offset 4096+7
 *   append   log,  O_WRONLY|O_APPEND (one line written before the checkpoint)
 *   cloexec  data, O_RDONLY|O_CLOEXEC, offset 100
 *   high     high, O_RDWR dup2'ed to fd 100 (original closed), offset 77
 *   null     /dev/null O_WRONLY; zero: /dev/zero O_RDONLY; urandom: /dev/urandom O_RDONLY
 * After SIGTERM, for each: the fd is open at the same number, readlink of
 * /proc/self/fd/N, st_dev/st_ino/st_rdev, offset, F_GETFL and FD_CLOEXEC are as at setup
 * (and as specified above); reads at the offsets return the expected bytes, a write
 * through rdwr lands at its offset, the append fd appends at the end, /dev/zero reads
 * zeros, /dev/urandom reads, /dev/null accepts writes. The whole set of open fds
 * (/proc/self/fd, including 0-2) must be unchanged.
 * stdout: a line is written to fd 1 before the checkpoint and another after restore;
 * if fd 1 is a regular file its offset must still be where the first line left it and
 * must grow by exactly the second line. (Unlinked files are not tested.)
 * The files are left in DIR.
 */
#include "zdtm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FILE_SIZE 16384
#define HIGH_FD 100
#define MAX_FDS 256

struct desc {
    const char *name;
    int fd;
    off_t want_off;    /* -1: don't care (devices) */
    int want_acc, want_append, want_cloexec;
    /* recorded at setup */
    char link[PATH_MAX];
    off_t off;
    int fl, fdfl;
    struct stat st;
};

static char dir[PATH_MAX];
static const char before_line[] = "before checkpoint\n", after_line[] = "after restore\n";

static void path_of(char *buf, const char *what)
{
    snprintf(buf, PATH_MAX + 64, "%s/cryo-files-%d-%s", dir, (int)getpid(), what);
}

/* File content: FILE_SIZE pseudo-random bytes, seeded by the file's role. */
static void content(unsigned char *buf, uint64_t seed)
{
    zdtm_fill(buf, FILE_SIZE, seed);
}

static void make_file(const char *what, uint64_t seed)
{
    char path[PATH_MAX + 64];
    unsigned char buf[FILE_SIZE];
    path_of(path, what);
    content(buf, seed);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, buf, sizeof(buf)) != sizeof(buf) || close(fd))
        zdtm_die("create %s: %s", path, strerror(errno));
}

static int open_at(const char *path, int flags, off_t off)
{
    int fd = open(path, flags, 0644);
    if (fd < 0)
        zdtm_die("open %s: %s", path, strerror(errno));
    if (off && lseek(fd, off, SEEK_SET) != off)
        zdtm_die("lseek %s: %s", path, strerror(errno));
    return fd;
}

static void record(struct desc *d)
{
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", d->fd);
    ssize_t n = readlink(proc, d->link, sizeof(d->link) - 1);
    if (n < 0)
        zdtm_die("readlink %s: %s", proc, strerror(errno));
    d->link[n] = 0;
    d->off = lseek(d->fd, 0, SEEK_CUR);
    d->fl = fcntl(d->fd, F_GETFL);
    d->fdfl = fcntl(d->fd, F_GETFD);
    if (fstat(d->fd, &d->st))
        zdtm_die("fstat %s: %s", d->name, strerror(errno));
    /* The setup itself must match the specification, or the test is meaningless. */
    if ((d->want_off >= 0 && d->off != d->want_off) || (d->fl & O_ACCMODE) != d->want_acc ||
        !!(d->fl & O_APPEND) != d->want_append || !!(d->fdfl & FD_CLOEXEC) != d->want_cloexec)
        zdtm_die("%s: unexpected setup state", d->name);
}

static void check_desc(const struct desc *d)
{
    char proc[64], link[PATH_MAX];
    struct stat st, pst;
    int fdfl = fcntl(d->fd, F_GETFD);
    if (fdfl < 0) {
        zdtm_fail("%s: fd %d is not open: %s", d->name, d->fd, strerror(errno));
        return;
    }
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", d->fd);
    ssize_t n = readlink(proc, link, sizeof(link) - 1);
    link[n < 0 ? 0 : n] = 0;
    if (strcmp(link, d->link))
        zdtm_fail("%s: fd %d is \"%s\", expected \"%s\"", d->name, d->fd, link, d->link);
    if (fstat(d->fd, &st))
        zdtm_fail("%s: fstat: %s", d->name, strerror(errno));
    else if (st.st_dev != d->st.st_dev || st.st_ino != d->st.st_ino || st.st_rdev != d->st.st_rdev)
        zdtm_fail("%s: fd %d refers to another file (dev/ino/rdev changed)", d->name, d->fd);
    else if (S_ISREG(st.st_mode) && (stat(d->link, &pst) || pst.st_ino != st.st_ino || pst.st_dev != st.st_dev))
        zdtm_fail("%s: fd %d is not the file at %s", d->name, d->fd, d->link);
    off_t off = lseek(d->fd, 0, SEEK_CUR);
    if (off != d->off)
        zdtm_fail("%s: fd %d offset %lld, expected %lld", d->name, d->fd, (long long)off, (long long)d->off);
    int fl = fcntl(d->fd, F_GETFL);
    if (fl != d->fl)
        zdtm_fail("%s: fd %d F_GETFL %#o, expected %#o", d->name, d->fd, fl, d->fl);
    if (fdfl != d->fdfl)
        zdtm_fail("%s: fd %d F_GETFD %#x, expected %#x", d->name, d->fd, fdfl, d->fdfl);
}

/* Reads n bytes at the current offset, which must equal the file's content there. */
static void check_read(const struct desc *d, uint64_t seed, size_t n)
{
    unsigned char want[FILE_SIZE], got[64];
    content(want, seed);
    ssize_t r = read(d->fd, got, n);
    if (r != (ssize_t)n)
        zdtm_fail("%s: read %zd of %zu bytes: %s", d->name, r, n, r < 0 ? strerror(errno) : "short");
    else if (memcmp(got, want + d->off, n))
        zdtm_fail("%s: wrong bytes read at offset %lld", d->name, (long long)d->off);
}

/* The fd numbers and targets listed in /proc/self/fd, one "N -> target\n" each. */
static void list_fds(char *out, size_t len)
{
    DIR *dp = opendir("/proc/self/fd");
    struct dirent *e;
    int fds[MAX_FDS], n = 0;
    out[0] = 0;
    if (!dp)
        return;
    while ((e = readdir(dp)) && n < MAX_FDS) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] != '.' && fd != dirfd(dp))
            fds[n++] = fd;
    }
    closedir(dp);
    for (int i = 1; i < n; i++) /* sort: readdir order is not guaranteed */
        for (int j = i; j > 0 && fds[j - 1] > fds[j]; j--) {
            int t = fds[j];
            fds[j] = fds[j - 1];
            fds[j - 1] = t;
        }
    for (int i = 0; i < n; i++) {
        char proc[64], link[PATH_MAX];
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fds[i]);
        ssize_t r = readlink(proc, link, sizeof(link) - 1);
        link[r < 0 ? 0 : r] = 0;
        size_t used = strlen(out);
        snprintf(out + used, len - used, "%d -> %s\n", fds[i], link);
    }
}

int main(int argc, char **argv)
{
    const char *tmpdir = "/tmp";
    const struct zdtm_opt opts[] = {
        { "tmpdir", ZDTM_STR, &tmpdir, "DIR   where the test files are created (default /tmp)" },
        { 0 },
    };
    zdtm_init(argc, argv, opts, "file descriptors (paths, offsets, flags, devices, stdout) survive C/R");
    if (!realpath(tmpdir, dir))
        zdtm_die("realpath %s: %s", tmpdir, strerror(errno));

    char data[PATH_MAX + 64], rw[PATH_MAX + 64], log[PATH_MAX + 64], high[PATH_MAX + 64];
    path_of(data, "data");
    path_of(rw, "rw");
    path_of(log, "log");
    path_of(high, "high");
    make_file("data", 1);
    make_file("rw", 2);
    make_file("high", 3);

    struct desc d[] = {
        { .name = "rdonly", .want_off = 1234, .want_acc = O_RDONLY },
        { .name = "rdwr", .want_off = 4096 + 7, .want_acc = O_RDWR },
        { .name = "append", .want_off = sizeof(before_line) - 1, .want_acc = O_WRONLY, .want_append = 1 },
        { .name = "cloexec", .want_off = 100, .want_acc = O_RDONLY, .want_cloexec = 1 },
        { .name = "high", .want_off = 77, .want_acc = O_RDWR },
        { .name = "null", .want_off = -1, .want_acc = O_WRONLY },
        { .name = "zero", .want_off = -1, .want_acc = O_RDONLY },
        { .name = "urandom", .want_off = -1, .want_acc = O_RDONLY },
    };
    enum { RDONLY, RDWR, APPEND, CLOEXEC, HIGH, DNULL, DZERO, URANDOM, N };
    d[RDONLY].fd = open_at(data, O_RDONLY, 1234);
    d[RDWR].fd = open_at(rw, O_RDWR, 4096 + 7);
    d[APPEND].fd = open_at(log, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC, 0);
    if (write(d[APPEND].fd, before_line, sizeof(before_line) - 1) != sizeof(before_line) - 1)
        zdtm_die("write %s: %s", log, strerror(errno));
    d[CLOEXEC].fd = open_at(data, O_RDONLY | O_CLOEXEC, 100);
    int tmp = open_at(high, O_RDWR, 77);
    if (dup2(tmp, HIGH_FD) != HIGH_FD || close(tmp))
        zdtm_die("dup2 to %d: %s", HIGH_FD, strerror(errno));
    d[HIGH].fd = HIGH_FD;
    d[DNULL].fd = open_at("/dev/null", O_WRONLY, 0);
    d[DZERO].fd = open_at("/dev/zero", O_RDONLY, 0);
    d[URANDOM].fd = open_at("/dev/urandom", O_RDONLY, 0);
    for (int i = 0; i < N; i++)
        record(&d[i]);

    /* stdout: one line before the checkpoint. */
    struct stat st1;
    int out_reg = !fstat(1, &st1) && S_ISREG(st1.st_mode);
    char line[128];
    int len = snprintf(line, sizeof(line), "files %d: before checkpoint\n", (int)getpid());
    if (write(1, line, len) != len)
        zdtm_die("write stdout: %s", strerror(errno));

    static char fds_before[MAX_FDS * (PATH_MAX / 8)], fds_after[sizeof(fds_before)];
    list_fds(fds_before, sizeof(fds_before));
    zdtm_info("pid %d, fds:\n%s", (int)getpid(), fds_before);
    off_t out_off = out_reg ? lseek(1, 0, SEEK_CUR) : -1; /* after our last stderr line */
    zdtm_ready();

    while (!zdtm_stop)
        zdtm_tick();

    /* stdout first (stderr may share its offset): the offset is still where the first
     * line left it, and grows by exactly the second. */
    len = snprintf(line, sizeof(line), "files %d: after restore\n", (int)getpid());
    off_t o1 = out_reg ? lseek(1, 0, SEEK_CUR) : -1;
    if (write(1, line, len) != len)
        zdtm_fail("write stdout: %s", strerror(errno));
    if (out_reg) {
        off_t o2 = lseek(1, 0, SEEK_CUR);
        struct stat st2;
        if (o1 != out_off)
            zdtm_fail("stdout: offset %lld, expected %lld", (long long)o1, (long long)out_off);
        else if (o2 != o1 + len)
            zdtm_fail("stdout: offset %lld after writing %d bytes at %lld", (long long)o2, len, (long long)o1);
        else if (fstat(1, &st2) || st2.st_size < o2 || st2.st_ino != st1.st_ino)
            zdtm_fail("stdout: not the same file, or shorter than the offset");
    }

    /* Same set of fds, then each one's identity, offset and flags. */
    list_fds(fds_after, sizeof(fds_after));
    if (strcmp(fds_before, fds_after)) {
        const char *a = fds_before, *b = fds_after; /* report the first differing line */
        while (*a && *a == *b)
            a++, b++;
        while (a > fds_before && a[-1] != '\n')
            a--, b--;
        zdtm_fail("open fds changed: before \"%.*s\", after \"%.*s\"", (int)strcspn(a, "\n"), a,
                  (int)strcspn(b, "\n"), b);
    }
    for (int i = 0; i < N; i++)
        check_desc(&d[i]);

    /* Contents at the offsets, and each fd still works the way it was opened. */
    check_read(&d[RDONLY], 1, 16);
    check_read(&d[RDWR], 2, 10);
    static const char patch[] = "WXYZ!";
    char back[sizeof(patch)] = "";
    if (write(d[RDWR].fd, patch, 5) != 5 || pread(d[RDWR].fd, back, 5, d[RDWR].off + 10) != 5 ||
        memcmp(back, patch, 5))
        zdtm_fail("rdwr: write at offset %lld did not land there", (long long)d[RDWR].off + 10);
    check_read(&d[CLOEXEC], 1, 8);
    check_read(&d[HIGH], 3, 8);

    char logbuf[128] = "";
    if (write(d[APPEND].fd, after_line, sizeof(after_line) - 1) != sizeof(after_line) - 1)
        zdtm_fail("append: write: %s", strerror(errno));
    int lfd = open(log, O_RDONLY | O_CLOEXEC);
    ssize_t ln = lfd < 0 ? -1 : read(lfd, logbuf, sizeof(logbuf) - 1);
    logbuf[ln < 0 ? 0 : ln] = 0;
    if (lfd >= 0)
        close(lfd);
    off_t aoff = lseek(d[APPEND].fd, 0, SEEK_CUR);
    if (strncmp(logbuf, before_line, strlen(before_line)) || strcmp(logbuf + strlen(before_line), after_line))
        zdtm_fail("append: log file holds \"%s\"", logbuf);
    else if (aoff != (off_t)strlen(logbuf))
        zdtm_fail("append: offset %lld after append, file has %zu bytes", (long long)aoff, strlen(logbuf));

    char buf[4096], zeros[4096] = { 0 };
    if (write(d[DNULL].fd, "hello", 5) != 5)
        zdtm_fail("null: write: %s", strerror(errno));
    if (read(d[DZERO].fd, buf, sizeof(buf)) != sizeof(buf) || memcmp(buf, zeros, sizeof(buf)))
        zdtm_fail("zero: read did not return 4096 zero bytes");
    if (read(d[URANDOM].fd, buf, 64) != 64 || !memcmp(buf, zeros, 64))
        zdtm_fail("urandom: read did not return 64 random bytes");

    zdtm_finish();
}
