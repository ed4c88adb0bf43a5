/*
 * locks — file locks survive checkpoint/restore.
 *
 *   locks --out F --ready F [--tmpdir DIR]
 *
 * In DIR: cryo-locks-<pid>-{a,b,c}.
 *   fd 10 (and its dup, fd 11): flock LOCK_EX on a (the description is inherited by
 *         the child too)
 *   fd 12: POSIX write lock on b [0,99], read lock on b [200,299]
 *   fd 13: OFD write lock on c [10,19]
 *   child: POSIX write lock on b [500,EOF) through its own fd 14
 * After SIGTERM a fresh checker process (forked then) tests every lock from outside:
 * flock on a new open of a fails with EWOULDBLOCK; F_GETLK on b reports the write and
 * read locks with the owner pids (parent, child) and nothing in [100,199]; F_OFD_GETLK on
 * c reports the write lock. The checker's verdict is the workload's.
 */
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

static char pa[PATH_MAX + 64], pb[PATH_MAX + 64], pc[PATH_MAX + 64];

static int open_at(const char *p, int want)
{
    int fd = open(p, O_RDWR | O_CREAT, 0600);
    if (fd < 0 || dup2(fd, want) != want)
        zdtm_die("open %s: %s", p, strerror(errno));
    if (fd != want)
        close(fd);
    return want;
}

static int posix_lock(int fd, int cmd, short type, off_t start, off_t len)
{
    struct flock f = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    return fcntl(fd, cmd, &f);
}

/* F_GETLK/F_OFD_GETLK for a write lock on [start, start+len): the conflicting lock. */
static struct flock probe(int fd, int cmd, off_t start, off_t len)
{
    struct flock f = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    if (fcntl(fd, cmd, &f))
        zdtm_fail("F_GETLK: %s", strerror(errno));
    return f;
}

/* Runs in a fresh process: every lock must be seen from outside. */
static int check(pid_t parent, pid_t child)
{
    int a = open(pa, O_RDWR);
    if (flock(a, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK)
        zdtm_fail("flock on a is not held");
    int b = open(pb, O_RDWR);
    struct flock f = probe(b, F_GETLK, 0, 100);
    if (f.l_type != F_WRLCK || f.l_pid != parent || f.l_start != 0 || f.l_len != 100)
        zdtm_fail("b [0,99]: type %d pid %d start %lld len %lld", f.l_type, f.l_pid,
                  (long long)f.l_start, (long long)f.l_len);
    f = probe(b, F_GETLK, 250, 1);
    if (f.l_type != F_RDLCK || f.l_pid != parent || f.l_start != 200 || f.l_len != 100)
        zdtm_fail("b [200,299]: type %d pid %d start %lld len %lld", f.l_type, f.l_pid,
                  (long long)f.l_start, (long long)f.l_len);
    f = probe(b, F_GETLK, 100, 100);
    if (f.l_type != F_UNLCK)
        zdtm_fail("b [100,199] is locked (type %d pid %d)", f.l_type, f.l_pid);
    f = probe(b, F_GETLK, 600, 1);
    if (f.l_type != F_WRLCK || f.l_pid != child)
        zdtm_fail("b [500,EOF): type %d pid %d, expected the child %d", f.l_type, f.l_pid,
                  (int)child);
    int c = open(pc, O_RDWR);
    struct flock o = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 10, .l_len = 10};
    if (fcntl(c, F_OFD_GETLK, &o) || o.l_type != F_WRLCK || o.l_start != 10 || o.l_len != 10)
        zdtm_fail("c: OFD lock not held (type %d)", o.l_type);
    return zdtm_failed() ? 1 : 0;
}

int main(int argc, char **argv)
{
    const char *tmpdir = "/tmp";
    struct zdtm_opt opts[] = {
        {"tmpdir", ZDTM_STR, &tmpdir, "DIR  where the locked files live"},
        {NULL, 0, NULL, NULL},
    };
    zdtm_init(argc, argv, opts, "flock, POSIX and OFD file locks");
    char dir[PATH_MAX];
    if (!realpath(tmpdir, dir))
        zdtm_die("realpath %s: %s", tmpdir, strerror(errno));
    snprintf(pa, sizeof(pa), "%s/cryo-locks-%d-a", dir, (int)getpid());
    snprintf(pb, sizeof(pb), "%s/cryo-locks-%d-b", dir, (int)getpid());
    snprintf(pc, sizeof(pc), "%s/cryo-locks-%d-c", dir, (int)getpid());

    int a = open_at(pa, 10);
    dup2(a, 11);
    if (flock(a, LOCK_EX | LOCK_NB))
        zdtm_die("flock: %s", strerror(errno));
    int b = open_at(pb, 12);
    if (posix_lock(b, F_SETLK, F_WRLCK, 0, 100) || posix_lock(b, F_SETLK, F_RDLCK, 200, 100))
        zdtm_die("F_SETLK: %s", strerror(errno));
    int c = open_at(pc, 13);
    if (posix_lock(c, F_OFD_SETLK, F_WRLCK, 10, 10))
        zdtm_die("F_OFD_SETLK: %s", strerror(errno));

    int ready[2];
    if (pipe(ready))
        zdtm_die("pipe: %s", strerror(errno));
    pid_t child = fork();
    if (child == 0) {
        signal(SIGTERM, SIG_DFL);
        int fd = open_at(pb, 14);
        if (posix_lock(fd, F_SETLK, F_WRLCK, 500, 0))
            _exit(1);
        close(ready[0]);
        close(ready[1]);
        for (;;)
            pause();
    }
    close(ready[1]);
    char x;
    if (read(ready[0], &x, 1) != 0 || waitpid(child, NULL, WNOHANG) != 0)
        zdtm_die("child setup failed");
    close(ready[0]);

    zdtm_ready();
    while (!zdtm_stop)
        zdtm_tick();

    pid_t parent = getpid();
    pid_t checker = fork();
    if (checker == 0)
        _exit(check(parent, child));
    int st = 0;
    waitpid(checker, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        zdtm_fail("the checker found missing locks (see stderr)");
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    unlink(pa);
    unlink(pb);
    unlink(pc);
    zdtm_finish();
}
