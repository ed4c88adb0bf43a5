/*
 * fdkinds — fds beyond plain files survive checkpoint/restore.
 *
 *   fdkinds --out F --ready F [--tmpdir DIR] [--only KIND]
 *
 * Holds, at fixed fd numbers:
 *   pipe     both ends; 3000 bytes in flight; write end O_NONBLOCK; capacity 256 KiB
 *   halfpipe read end only (writer closed), 100 bytes queued, then EOF
 *   fifo     DIR/cryo-fdkinds-<pid>.fifo, read and write ends, 500 bytes queued
 *   eventfd  counter 7; a semaphore-mode eventfd with counter 3
 *   signalfd SIGUSR1|SIGUSR2 (blocked); SIGUSR1 pending
 *   timerfd  periodic (first expiry 0.4 s, then every 0.3 s) on CLOCK_MONOTONIC;
 *            absolute CLOCK_REALTIME one hour away; a 1 ms one-shot already expired
 *            (1 tick unread); a periodic one (100 s) expired once and not read
 *   memfd    "cryo-memfd", 100 KiB pattern, offset 5, sealed against shrink/grow
 *   ghost    DIR/cryo-fdkinds-<pid>.ghost: 20000-byte pattern, offset 1000, unlinked
 *   dirfd    DIR opened O_DIRECTORY
 *   epoll    the pipe's read end (EPOLLIN, data 0xdead) and the eventfd (EPOLLIN|EPOLLET,
 *            data 42)
 *   inotify  IN_ATTRIB on the workload's executable and IN_CREATE on DIR, whose wd
 *            is one higher than the next free one (a watch was added and removed)
 *   symlink  a file opened through a symlink, offset 123
 * With --only KIND just that kind is set up and checked (epoll brings the pipe and
 * eventfd it watches).
 * After SIGTERM each fd is checked: kind (readlink), flags, contents, counters, masks,
 * timers (remaining time within tolerance), epoll registrations (epoll_wait sees both,
 * EPOLL_CTL_DEL by fd number works), inotify wds (creating a file in DIR yields an
 * event with the original wd).
 */
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

enum {
    FD_PIPE_R = 10, FD_PIPE_W, FD_HALF_R, FD_FIFO_R, FD_FIFO_W, FD_EFD, FD_EFD_SEM,
    FD_SIGFD, FD_TFD_PERIODIC, FD_TFD_ABS, FD_TFD_EXPIRED, FD_MEMFD, FD_GHOST, FD_DIR,
    FD_EPOLL, FD_INOTIFY, FD_SYMLINK, FD_TFD_PERIODIC_EXPIRED,
};

#define PIPE_BYTES 3000
#define HALF_BYTES 100
#define FIFO_BYTES 500
#define MEMFD_SIZE (100 * 1024)
#define GHOST_SIZE 20000

static char dir[PATH_MAX], fifo_path[PATH_MAX + 64], ghost_path[PATH_MAX + 64];
static char link_path[PATH_MAX + 64], real_path[PATH_MAX + 64];
static struct stat real_st;
/* --only KIND: set up and check one kind (epoll brings the pipe and eventfd it watches). */
static const char *only;

static int want(const char *k)
{
    if (!only || !strcmp(only, k))
        return 1;
    return !strcmp(only, "epoll") && (!strcmp(k, "pipe") || !strcmp(k, "eventfd"));
}
static int wd_dir, wd_exe;
static time_t abs_expiry;
static struct stat dir_st;

static void fill_bytes(int fd, size_t n, uint64_t seed)
{
    unsigned char *b = malloc(n);
    zdtm_fill(b, n, seed);
    if (write(fd, b, n) != (ssize_t)n)
        zdtm_die("write %zu: %s", n, strerror(errno));
    free(b);
}

static void expect_bytes(const char *what, int fd, size_t n, uint64_t seed, int then_eof)
{
    unsigned char *want = malloc(n), *got = malloc(n + 1);
    zdtm_fill(want, n, seed);
    size_t have = 0;
    while (have < n) {
        ssize_t r = read(fd, got + have, n - have);
        if (r <= 0) {
            zdtm_fail("%s: read returned %zd after %zu of %zu bytes (%s)", what, r, have, n,
                      r < 0 ? strerror(errno) : "EOF");
            goto out;
        }
        have += r;
    }
    if (memcmp(want, got, n))
        zdtm_fail("%s: contents differ at byte %zu", what, zdtm_first_diff(want, got, n));
    if (then_eof) {
        ssize_t r = read(fd, got, 1);
        if (r != 0)
            zdtm_fail("%s: expected EOF, read returned %zd", what, r);
    }
out:
    free(want);
    free(got);
}

static void expect_link(int fd, const char *prefix)
{
    char p[64], l[PATH_MAX];
    snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(p, l, sizeof(l) - 1);
    l[n < 0 ? 0 : n] = 0;
    if (strncmp(l, prefix, strlen(prefix)))
        zdtm_fail("fd %d is \"%s\", expected \"%s...\"", fd, l, prefix);
}

static void expect_fl(int fd, int want)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || (fl & (O_ACCMODE | O_NONBLOCK)) != want)
        zdtm_fail("fd %d: flags %o, expected %o", fd, fl, want);
}

static void setup(void)
{
    int p[2];
    if (want("pipe")) {
        if (pipe(p))
            zdtm_die("pipe: %s", strerror(errno));
        zdtm_put_fd(p[0], FD_PIPE_R);
        zdtm_put_fd(p[1], FD_PIPE_W);
        if (fcntl(FD_PIPE_W, F_SETPIPE_SZ, 256 * 1024) < 0)
            zdtm_die("F_SETPIPE_SZ: %s", strerror(errno));
        fill_bytes(FD_PIPE_W, PIPE_BYTES, 1);
        fcntl(FD_PIPE_W, F_SETFL, O_NONBLOCK);
    }

    if (want("halfpipe")) {
        if (pipe(p))
            zdtm_die("pipe: %s", strerror(errno));
        zdtm_put_fd(p[0], FD_HALF_R);
        fill_bytes(p[1], HALF_BYTES, 2);
        close(p[1]);
    }

    if (want("fifo")) {
        snprintf(fifo_path, sizeof(fifo_path), "%s/cryo-fdkinds-%d.fifo", dir, (int)getpid());
        unlink(fifo_path);
        if (mkfifo(fifo_path, 0600))
            zdtm_die("mkfifo: %s", strerror(errno));
        zdtm_put_fd(open(fifo_path, O_RDONLY | O_NONBLOCK), FD_FIFO_R);
        zdtm_put_fd(open(fifo_path, O_WRONLY), FD_FIFO_W);
        fcntl(FD_FIFO_R, F_SETFL, 0);
        fill_bytes(FD_FIFO_W, FIFO_BYTES, 3);
    }

    if (want("eventfd")) {
        zdtm_put_fd(eventfd(7, 0), FD_EFD);
        zdtm_put_fd(eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK), FD_EFD_SEM);
    }

    if (want("signalfd")) {
        sigset_t m;
        sigemptyset(&m);
        sigaddset(&m, SIGUSR1);
        sigaddset(&m, SIGUSR2);
        sigprocmask(SIG_BLOCK, &m, NULL);
        zdtm_put_fd(signalfd(-1, &m, SFD_NONBLOCK), FD_SIGFD);
        raise(SIGUSR1);
    }

    if (want("timerfd")) {
        zdtm_put_fd(timerfd_create(CLOCK_MONOTONIC, 0), FD_TFD_PERIODIC);
        struct itimerspec its = {.it_value = {0, 400000000}, .it_interval = {0, 300000000}};
        if (timerfd_settime(FD_TFD_PERIODIC, 0, &its, NULL))
            zdtm_die("timerfd_settime: %s", strerror(errno));
        zdtm_put_fd(timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK), FD_TFD_ABS);
        abs_expiry = time(NULL) + 3600;
        struct itimerspec abs = {.it_value = {abs_expiry, 0}};
        if (timerfd_settime(FD_TFD_ABS, TFD_TIMER_ABSTIME, &abs, NULL))
            zdtm_die("timerfd_settime abs: %s", strerror(errno));
        zdtm_put_fd(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK), FD_TFD_EXPIRED);
        /* Periodic, expired once and not read: the kernel shows no time left until a
         * read re-arms it; its interval must survive. */
        zdtm_put_fd(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK), FD_TFD_PERIODIC_EXPIRED);
        struct itimerspec pe = {.it_value = {0, 1000000}, .it_interval = {100, 0}};
        timerfd_settime(FD_TFD_PERIODIC_EXPIRED, 0, &pe, NULL);
        struct itimerspec once = {.it_value = {0, 1000000}};
        timerfd_settime(FD_TFD_EXPIRED, 0, &once, NULL);
        usleep(20000);
    }

    if (want("memfd")) {
        zdtm_put_fd(memfd_create("cryo-memfd", MFD_ALLOW_SEALING), FD_MEMFD);
        fill_bytes(FD_MEMFD, MEMFD_SIZE, 4);
        if (fcntl(FD_MEMFD, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW))
            zdtm_die("F_ADD_SEALS: %s", strerror(errno));
        lseek(FD_MEMFD, 5, SEEK_SET);
    }

    if (want("ghost")) {
        snprintf(ghost_path, sizeof(ghost_path), "%s/cryo-fdkinds-%d.ghost", dir, (int)getpid());
        zdtm_put_fd(open(ghost_path, O_RDWR | O_CREAT | O_TRUNC, 0640), FD_GHOST);
        fill_bytes(FD_GHOST, GHOST_SIZE, 5);
        lseek(FD_GHOST, 1000, SEEK_SET);
        unlink(ghost_path);
    }

    if (want("dir")) {
        zdtm_put_fd(open(dir, O_RDONLY | O_DIRECTORY), FD_DIR);
        fstat(FD_DIR, &dir_st);
    }

    if (want("epoll")) {
        zdtm_put_fd(epoll_create1(0), FD_EPOLL);
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0xdead};
        if (epoll_ctl(FD_EPOLL, EPOLL_CTL_ADD, FD_PIPE_R, &ev))
            zdtm_die("epoll_ctl: %s", strerror(errno));
        ev.events = EPOLLIN | EPOLLET;
        ev.data.u64 = 42;
        if (epoll_ctl(FD_EPOLL, EPOLL_CTL_ADD, FD_EFD, &ev))
            zdtm_die("epoll_ctl: %s", strerror(errno));
    }

    if (want("inotify")) {
        zdtm_put_fd(inotify_init1(IN_NONBLOCK), FD_INOTIFY);
        wd_exe = inotify_add_watch(FD_INOTIFY, "/proc/self/exe", IN_ATTRIB);
        /* Push the next wd up, so restore must reproduce a gap. */
        int tmp = inotify_add_watch(FD_INOTIFY, "/", IN_ATTRIB);
        inotify_rm_watch(FD_INOTIFY, tmp);
        wd_dir = inotify_add_watch(FD_INOTIFY, dir, IN_CREATE);
        if (wd_exe < 0 || wd_dir < 0)
            zdtm_die("inotify_add_watch: %s", strerror(errno));
        char drain[4096];
        while (read(FD_INOTIFY, drain, sizeof(drain)) > 0) {
        }
    }

    if (want("symlink")) {
        /* Opened through a symlink: the fd is the target file, at its offset. */
        snprintf(link_path, sizeof(link_path), "%s/cryo-fdkinds-%d.link", dir, (int)getpid());
        snprintf(real_path, sizeof(real_path), "%s/cryo-fdkinds-%d.real", dir, (int)getpid());
        int fd = open(real_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
        fill_bytes(fd, 5000, 6);
        close(fd);
        unlink(link_path);
        if (symlink(real_path, link_path))
            zdtm_die("symlink: %s", strerror(errno));
        zdtm_put_fd(open(link_path, O_RDONLY), FD_SYMLINK);
        lseek(FD_SYMLINK, 123, SEEK_SET);
        fstat(FD_SYMLINK, &real_st);
    }
}

static void check_timer(int fd, const char *what, double lo, double hi, double ilo, double ihi)
{
    struct itimerspec its;
    if (timerfd_gettime(fd, &its)) {
        zdtm_fail("%s: timerfd_gettime: %s", what, strerror(errno));
        return;
    }
    double v = its.it_value.tv_sec + its.it_value.tv_nsec / 1e9;
    double i = its.it_interval.tv_sec + its.it_interval.tv_nsec / 1e9;
    if (v < lo || v > hi || i < ilo || i > ihi)
        zdtm_fail("%s: value %.3f interval %.3f, expected [%.3f,%.3f] / [%.3f,%.3f]", what, v,
                  i, lo, hi, ilo, ihi);
}

static void nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void verify(void)
{
    /* Nothing may block: a missing byte must fail, not hang. */
    if (want("pipe")) {
        expect_link(FD_PIPE_R, "pipe:");
        expect_fl(FD_PIPE_R, O_RDONLY);
        expect_fl(FD_PIPE_W, O_WRONLY | O_NONBLOCK);
        nonblock(FD_PIPE_R);
        if (fcntl(FD_PIPE_W, F_GETPIPE_SZ) != 256 * 1024)
            zdtm_fail("pipe capacity %d", fcntl(FD_PIPE_W, F_GETPIPE_SZ));
    }
    if (want("eventfd")) {
        expect_fl(FD_EFD, O_RDWR);
        nonblock(FD_EFD);
    }

    if (want("epoll")) {
        /* Before the pipe and eventfd checks, while they still have data / a count. */
        struct epoll_event evs[4];
        int n = epoll_wait(FD_EPOLL, evs, 4, 1000);
        int seen_pipe = 0, seen_efd = 0;
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == 0xdead && (evs[i].events & EPOLLIN))
                seen_pipe = 1;
            if (evs[i].data.u64 == 42 && (evs[i].events & EPOLLIN))
                seen_efd = 1;
        }
        if (!seen_pipe || !seen_efd)
            zdtm_fail("epoll_wait: %d events, pipe %d eventfd %d", n, seen_pipe, seen_efd);
        if (epoll_ctl(FD_EPOLL, EPOLL_CTL_DEL, FD_PIPE_R, NULL))
            zdtm_fail("EPOLL_CTL_DEL of the pipe: %s", strerror(errno));
    }

    if (want("pipe")) {
        expect_bytes("pipe", FD_PIPE_R, PIPE_BYTES, 1, 0);
        char c;
        if (read(FD_PIPE_R, &c, 1) != -1 || errno != EAGAIN)
            zdtm_fail("pipe: more data than written");
        /* The write end still works and the pair is still one pipe. */
        if (write(FD_PIPE_W, "x", 1) != 1 || read(FD_PIPE_R, &c, 1) != 1 || c != 'x')
            zdtm_fail("pipe: write end not connected to read end");
    }

    if (want("halfpipe")) {
        expect_link(FD_HALF_R, "pipe:");
        expect_fl(FD_HALF_R, O_RDONLY);
        nonblock(FD_HALF_R);
        expect_bytes("half pipe", FD_HALF_R, HALF_BYTES, 2, 1);
    }

    if (want("fifo")) {
        expect_link(FD_FIFO_R, fifo_path);
        expect_fl(FD_FIFO_R, O_RDONLY);
        expect_fl(FD_FIFO_W, O_WRONLY);
        nonblock(FD_FIFO_R);
        expect_bytes("fifo", FD_FIFO_R, FIFO_BYTES, 3, 0);
    }

    if (want("eventfd")) {
        uint64_t v = 0;
        expect_link(FD_EFD, "anon_inode:[eventfd]");
        if (read(FD_EFD, &v, 8) != 8 || v != 7)
            zdtm_fail("eventfd: read %llu, expected 7", (unsigned long long)v);
        expect_fl(FD_EFD_SEM, O_RDWR | O_NONBLOCK);
        for (int i = 0; i < 3; i++)
            if (read(FD_EFD_SEM, &v, 8) != 8 || v != 1)
                zdtm_fail("semaphore eventfd: read %d gave %llu", i, (unsigned long long)v);
        if (read(FD_EFD_SEM, &v, 8) != -1 || errno != EAGAIN)
            zdtm_fail("semaphore eventfd: a fourth read succeeded");
    }

    if (want("signalfd")) {
        struct signalfd_siginfo si;
        expect_link(FD_SIGFD, "anon_inode:[signalfd]");
        if (read(FD_SIGFD, &si, sizeof(si)) != sizeof(si) || si.ssi_signo != SIGUSR1)
            zdtm_fail("signalfd: no pending SIGUSR1");
        raise(SIGUSR2);
        if (read(FD_SIGFD, &si, sizeof(si)) != sizeof(si) || si.ssi_signo != SIGUSR2)
            zdtm_fail("signalfd: mask lost SIGUSR2");
    }

    if (want("timerfd")) {
        expect_link(FD_TFD_PERIODIC, "anon_inode:[timerfd]");
        expect_fl(FD_TFD_PERIODIC, O_RDWR);
        nonblock(FD_TFD_PERIODIC);
        check_timer(FD_TFD_PERIODIC, "periodic timerfd", 0, 0.4, 0.299, 0.301);
        uint64_t ticks = 0;
        struct pollfd pfd = {.fd = FD_TFD_PERIODIC, .events = POLLIN};
        poll(&pfd, 1, 2000);
        if (read(FD_TFD_PERIODIC, &ticks, 8) != 8 || ticks < 1)
            zdtm_fail("periodic timerfd: no expiry");
        double left = (double)(abs_expiry - time(NULL));
        check_timer(FD_TFD_ABS, "absolute timerfd", left - 5, left + 1, 0, 0);
        expect_fl(FD_TFD_ABS, O_RDWR | O_NONBLOCK);
        ticks = 0;
        if (read(FD_TFD_EXPIRED, &ticks, 8) != 8 || ticks != 1)
            zdtm_fail("expired timerfd: %llu ticks, expected 1", (unsigned long long)ticks);
        struct itimerspec pe;
        timerfd_gettime(FD_TFD_PERIODIC_EXPIRED, &pe);
        if (pe.it_interval.tv_sec != 100)
            zdtm_fail("expired periodic timerfd: interval %lds, expected 100s", (long)pe.it_interval.tv_sec);
        ticks = 0;
        if (read(FD_TFD_PERIODIC_EXPIRED, &ticks, 8) != 8 || ticks != 1)
            zdtm_fail("expired periodic timerfd: %llu ticks, expected 1", (unsigned long long)ticks);
        timerfd_gettime(FD_TFD_PERIODIC_EXPIRED, &pe);
        if (pe.it_value.tv_sec < 90 || pe.it_value.tv_sec > 100)
            zdtm_fail("expired periodic timerfd: next expiry in %lds", (long)pe.it_value.tv_sec);
    }

    if (want("memfd")) {
        expect_link(FD_MEMFD, "/memfd:cryo-memfd");
        if (lseek(FD_MEMFD, 0, SEEK_CUR) != 5)
            zdtm_fail("memfd offset %lld", (long long)lseek(FD_MEMFD, 0, SEEK_CUR));
        int seals = fcntl(FD_MEMFD, F_GET_SEALS);
        if (seals != (F_SEAL_SHRINK | F_SEAL_GROW))
            zdtm_fail("memfd seals %x", seals);
        lseek(FD_MEMFD, 0, SEEK_SET);
        expect_bytes("memfd", FD_MEMFD, MEMFD_SIZE, 4, 1);
    }

    if (want("ghost")) {
        char want_link[PATH_MAX + 80];
        snprintf(want_link, sizeof(want_link), "%s (deleted)", ghost_path);
        expect_link(FD_GHOST, want_link);
        struct stat gst;
        if (fstat(FD_GHOST, &gst) || gst.st_nlink != 0 || (gst.st_mode & 0777) != 0640)
            zdtm_fail("ghost: nlink %lu mode %o", (unsigned long)gst.st_nlink, gst.st_mode & 0777);
        if (lseek(FD_GHOST, 0, SEEK_CUR) != 1000)
            zdtm_fail("ghost offset %lld", (long long)lseek(FD_GHOST, 0, SEEK_CUR));
        lseek(FD_GHOST, 0, SEEK_SET);
        expect_bytes("ghost", FD_GHOST, GHOST_SIZE, 5, 1);
        if (access(ghost_path, F_OK) == 0)
            zdtm_fail("ghost: %s exists again", ghost_path);
    }

    if (want("dir")) {
        struct stat dst;
        if (fstat(FD_DIR, &dst) || dst.st_ino != dir_st.st_ino || !S_ISDIR(dst.st_mode))
            zdtm_fail("dirfd: not the same directory");
    }

    if (want("inotify")) {
        char name[PATH_MAX + 64];
        snprintf(name, sizeof(name), "%s/cryo-fdkinds-%d.new", dir, (int)getpid());
        int nf = open(name, O_CREAT | O_WRONLY, 0600);
        close(nf);
        unlink(name);
        char buf[4096] __attribute__((aligned(8)));
        ssize_t r = read(FD_INOTIFY, buf, sizeof(buf));
        int got = 0;
        for (char *p = buf; r > 0 && p < buf + r;) {
            struct inotify_event *e = (struct inotify_event *)p;
            if (e->wd == wd_dir && (e->mask & IN_CREATE))
                got = 1;
            p += sizeof(*e) + e->len;
        }
        if (!got)
            zdtm_fail("inotify: no IN_CREATE event for wd %d (read %zd)", wd_dir, r);
        if (inotify_rm_watch(FD_INOTIFY, wd_exe))
            zdtm_fail("inotify: wd %d is gone: %s", wd_exe, strerror(errno));
    }

    if (want("symlink")) {
        struct stat st;
        expect_link(FD_SYMLINK, real_path);
        if (fstat(FD_SYMLINK, &st) || st.st_ino != real_st.st_ino)
            zdtm_fail("symlink: fd is not the link's target");
        if (lseek(FD_SYMLINK, 0, SEEK_CUR) != 123)
            zdtm_fail("symlink: offset %lld", (long long)lseek(FD_SYMLINK, 0, SEEK_CUR));
        unlink(link_path);
        unlink(real_path);
    }
}

int main(int argc, char **argv)
{
    const char *tmpdir = "/tmp";
    struct zdtm_opt opts[] = {
        {"tmpdir", ZDTM_STR, &tmpdir, "DIR  where the FIFO and deleted file live"},
        {"only", ZDTM_STR, &only, "KIND  only this kind: pipe halfpipe fifo eventfd signalfd timerfd "
                                  "memfd ghost dir epoll inotify symlink"},
        {NULL, 0, NULL, NULL},
    };
    zdtm_init(argc, argv, opts, "pipes, FIFOs, eventfd, signalfd, timerfd, memfd, "
                                "deleted files, epoll and inotify fds");
    if (!realpath(tmpdir, dir))
        zdtm_die("realpath %s: %s", tmpdir, strerror(errno));
    setup();
    zdtm_ready();
    while (!zdtm_stop)
        zdtm_tick();
    verify();
    unlink(fifo_path);
    zdtm_finish();
}
