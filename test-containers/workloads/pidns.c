/*
 * pidns — a process tree in its own namespaces, as made by
 *   unshare --fork --pid --mount-proc --uts --ipc pidns --pid1 1 --own-uts 1 --own-ipc 1 ...
 * With --pid1 the process must be pid 1 of its pid namespace; it makes itself a session
 * leader (unshare --fork stays outside as its parent), burns a few pids so that the
 * tree's pids are not the ones a fresh namespace hands out in order, then forks
 * A (which forks A1) and B, and starts one thread. With --own-uts it sets a hostname
 * and domain name; with --own-ipc it sets the IPC sysctl msgmax.
 *
 * On SIGTERM every process checks that its pid (getpid, gettid of the thread), its
 * parent's pid and /proc/self (the proc mounted for its pid namespace) are unchanged,
 * and the names; the root checks that its uts and ipc namespaces are still not the
 * host's (--host-uts/--host-ipc: inode numbers of the caller's), that msgmax kept its
 * value and that its children come back under their pids (kill + waitpid).
 */
#include "zdtm.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define HOSTNAME "cryo-pidns"
#define DOMAINNAME "cryo-domain"
#define MSGMAX "12345"

static long pid1, own_uts, own_ipc, host_uts, host_ipc;

static long ns_ino(const char *kind)
{
    char path[64];
    struct stat st;
    snprintf(path, sizeof(path), "/proc/self/ns/%s", kind);
    if (stat(path, &st))
        return -1;
    return (long)st.st_ino;
}

/* Checks pid, parent, /proc/self and names of the calling process; 0 if all hold. */
static int check_self(const char *who, pid_t pid, pid_t ppid)
{
    char buf[256];
    int bad = 0;
    ssize_t n;

    if (getpid() != pid)
        fprintf(stderr, "pidns: %s: pid %d, want %d\n", who, getpid(), pid), bad = 1;
    if (getppid() != ppid)
        fprintf(stderr, "pidns: %s: parent %d, want %d\n", who, getppid(), ppid), bad = 1;
    n = readlink("/proc/self", buf, sizeof(buf) - 1);
    buf[n < 0 ? 0 : n] = 0;
    if (atoi(buf) != pid)
        fprintf(stderr, "pidns: %s: /proc/self is %s, want %d\n", who, buf, pid), bad = 1;
    if (own_uts) {
        if (gethostname(buf, sizeof(buf)) || strcmp(buf, HOSTNAME))
            fprintf(stderr, "pidns: %s: hostname %s\n", who, buf), bad = 1;
        if (getdomainname(buf, sizeof(buf)) || strcmp(buf, DOMAINNAME))
            fprintf(stderr, "pidns: %s: domainname %s\n", who, buf), bad = 1;
    }
    return bad;
}

static void burn_pids(int n)
{
    for (int i = 0; i < n; i++) {
        pid_t p = fork();
        if (p == 0)
            _exit(0);
        if (p > 0)
            waitpid(p, NULL, 0);
    }
}

#pragma GCC diagnostic ignored "-Winfinite-recursion"

/* A member: burns pids, forks its children (nkids of them, recursively one level),
 * waits for SIGTERM, passes it down, verifies, exits 0/1. */
static void __attribute__((noreturn)) member(const char *who, int nkids)
{
    pid_t pid = getpid(), ppid = getppid(), kid = 0;
    int bad = 0, st;

    burn_pids(3);
    if (nkids) {
        kid = fork();
        if (kid == 0)
            member("A1", 0);
    }
    while (!zdtm_stop)
        zdtm_tick();
    if (kid) {
        kill(kid, SIGTERM);
        if (waitpid(kid, &st, 0) != kid || !WIFEXITED(st) || WEXITSTATUS(st))
            fprintf(stderr, "pidns: %s: child %d failed (%#x)\n", who, kid, st), bad = 1;
    }
    bad |= check_self(who, pid, ppid);
    _exit(bad);
}

static pid_t thread_tid;
static volatile int thread_bad = -1;

static void *thread_main(void *arg)
{
    (void)arg;
    thread_tid = (pid_t)syscall(SYS_gettid);
    while (!zdtm_stop)
        zdtm_tick();
    thread_bad = (pid_t)syscall(SYS_gettid) != thread_tid;
    return NULL;
}

int main(int argc, char **argv)
{
    static const struct zdtm_opt opts[] = {
        { "pid1", ZDTM_LONG, &pid1, "0|1  must be pid 1 of its pid namespace" },
        { "own-uts", ZDTM_LONG, &own_uts, "0|1  set hostname and domain name" },
        { "own-ipc", ZDTM_LONG, &own_ipc, "0|1  set the msgmax sysctl" },
        { "host-uts", ZDTM_LONG, &host_uts, "INO  the caller's uts namespace" },
        { "host-ipc", ZDTM_LONG, &host_ipc, "INO  the caller's ipc namespace" },
        { NULL, 0, NULL, NULL },
    };
    pid_t a, b, ppid;
    pthread_t th;
    int st;

    zdtm_init(argc, argv, opts, "a process tree in its own pid, uts, ipc and mount namespaces");
    if (pid1 && getpid() != 1)
        zdtm_die("pid %d, not 1: start under unshare --fork --pid --mount-proc", getpid());
    if (getsid(0) != getpid() && setsid() < 0)
        zdtm_die("setsid failed");
    if (own_uts && (sethostname(HOSTNAME, strlen(HOSTNAME)) || setdomainname(DOMAINNAME, strlen(DOMAINNAME))))
        zdtm_die("cannot set host/domain name");
    if (own_uts && ns_ino("uts") == host_uts)
        zdtm_die("not in a uts namespace of its own");
    if (own_ipc) {
        FILE *f = fopen("/proc/sys/kernel/msgmax", "w");
        if (!f || fputs(MSGMAX, f) < 0 || fclose(f))
            zdtm_die("cannot set msgmax");
        if (ns_ino("ipc") == host_ipc)
            zdtm_die("not in an ipc namespace of its own");
    }
    ppid = getppid();
    burn_pids(5);
    a = fork();
    if (a == 0)
        member("A", 1);
    burn_pids(2);
    b = fork();
    if (b == 0)
        member("B", 0);
    if (a < 0 || b < 0)
        zdtm_die("fork failed");
    if (pthread_create(&th, NULL, thread_main, NULL))
        zdtm_die("pthread_create failed");
    while (!thread_tid)
        zdtm_tick();
    usleep(100 * 1000); /* let the tree settle */
    zdtm_info("root %d, A %d, B %d, thread %d", getpid(), a, b, thread_tid);
    zdtm_ready();
    while (!zdtm_stop)
        zdtm_tick();

    pthread_join(th, NULL);
    if (thread_bad)
        zdtm_fail("thread %d came back with another tid", thread_tid);
    if (check_self("root", pid1 ? 1 : getpid(), ppid))
        zdtm_fail("root: pid, parent, /proc/self or names differ (see stderr)");
    if (own_uts && ns_ino("uts") == host_uts)
        zdtm_fail("restored into the host's uts namespace");
    if (own_ipc) {
        char buf[32] = "";
        FILE *f = fopen("/proc/sys/kernel/msgmax", "r");
        if (!f || !fgets(buf, sizeof(buf), f) || atoi(buf) != atoi(MSGMAX))
            zdtm_fail("msgmax is %s, want %s", buf, MSGMAX);
        if (f)
            fclose(f);
        if (ns_ino("ipc") == host_ipc)
            zdtm_fail("restored into the host's ipc namespace");
    }
    kill(a, SIGTERM);
    kill(b, SIGTERM);
    if (waitpid(a, &st, 0) != a || !WIFEXITED(st) || WEXITSTATUS(st))
        zdtm_fail("subtree A (%d) failed (status %#x, see stderr)", a, st);
    if (waitpid(b, &st, 0) != b || !WIFEXITED(st) || WEXITSTATUS(st))
        zdtm_fail("child B (%d) failed (status %#x, see stderr)", b, st);
    zdtm_finish();
}
