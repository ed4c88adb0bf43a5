/*
 * seccomp — seccomp filters survive a checkpoint. With no_new_privs set:
 *   filter A: uname fails with EPERM, sigaltstack kills the process (the workload never
 *             calls it: the dumper's injected sigaltstack must not be judged);
 *   filter B (SECCOMP_FILTER_FLAG_LOG), layered on A: getppid fails with EACCES.
 * Default: the single thread has A then B. With --threads 1: main installs A, then
 * starts two threads (they inherit A); thread 1 adds B, thread 2 nothing; each thread
 * also sets its own timer slack. After SIGTERM each thread checks its own filters by
 * behaviour (uname, getppid, getpid), its Seccomp_filters count in /proc, and its slack.
 * With --strict 1 it enters strict mode (SECCOMP_MODE_STRICT) once ready and blocks in
 * read() forever: a dump must refuse it (SIGTERM then kills it, no verdict).
 */
#include "zdtm.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

static long threads_mode, strict_mode;

static void install(int with_getppid_filter_only, unsigned flags)
{
    struct sock_filter a[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_uname, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_sigaltstack, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_filter b[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_getppid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EACCES),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog p;
    if (with_getppid_filter_only) {
        p.len = sizeof(b) / sizeof(b[0]);
        p.filter = b;
    } else {
        p.len = sizeof(a) / sizeof(a[0]);
        p.filter = a;
    }
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &p))
        zdtm_die("seccomp: %s", strerror(errno));
}

static int nfilters(pid_t tid)
{
    char path[64], line[256];
    int n = -1;
    snprintf(path, sizeof(path), "/proc/self/task/%d/status", (int)tid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -2;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "Seccomp_filters: %d", &n) == 1)
            break;
    fclose(f);
    return n;
}

/* Checks the calling thread; returns a malloc'ed reason or NULL. */
static char *check(int has_b, unsigned long slack)
{
    char *why = NULL;
    struct utsname u;
    pid_t tid = (pid_t)syscall(SYS_gettid);
    errno = 0;
    if (uname(&u) != -1 || errno != EPERM)
        asprintf(&why, "thread %d: uname not refused with EPERM (errno %d)", tid, errno);
    errno = 0;
    long pp = syscall(SYS_getppid);
    if (has_b && (pp != -1 || errno != EACCES))
        asprintf(&why, "thread %d: getppid returned %ld errno %d, want EACCES", tid, pp, errno);
    if (!has_b && pp <= 0)
        asprintf(&why, "thread %d: getppid failed (errno %d) without filter B", tid, errno);
    if (syscall(SYS_getpid) != getpid())
        asprintf(&why, "thread %d: getpid broken", tid);
    int n = nfilters(tid);
    if (n != 1 + has_b)
        asprintf(&why, "thread %d: %d seccomp filters, want %d", tid, n, 1 + has_b);
    if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
        asprintf(&why, "thread %d: no_new_privs lost", tid);
    long s = prctl(PR_GET_TIMERSLACK);
    if (slack && s != (long)slack)
        asprintf(&why, "thread %d: timer slack %ld, want %lu", tid, s, slack);
    return why;
}

struct worker {
    pthread_t th;
    int has_b;
    unsigned long slack;
    volatile int ready, done;
    char *why;
};
static struct worker w[2];
static volatile int go_check;

static void *run(void *arg)
{
    struct worker *me = arg;
    if (me->has_b)
        install(1, 0);
    prctl(PR_SET_TIMERSLACK, me->slack);
    me->ready = 1;
    while (!go_check) {
        struct timespec d = {0, 10 * 1000 * 1000};
        nanosleep(&d, NULL);
    }
    me->why = check(me->has_b, me->slack);
    me->done = 1;
    return NULL;
}

int main(int argc, char **argv)
{
    static const struct zdtm_opt opts[] = {
        {"threads", ZDTM_LONG, &threads_mode, "0|1  per-thread filter chains (default 0)"},
        {"strict", ZDTM_LONG, &strict_mode, "0|1  strict mode instead (default 0)"},
        {NULL, 0, NULL, NULL},
    };
    zdtm_init(argc, argv, opts, "seccomp filters (layered, per thread)");
    zdtm_open_out();
    if (strict_mode) {
        int p[2];
        char c;
        if (pipe(p))
            zdtm_die("pipe");
        zdtm_ready();
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT))
            zdtm_die("PR_SET_SECCOMP: %s", strerror(errno));
        for (;;)
            read(p[0], &c, 1);
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        zdtm_die("PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
    install(0, 0);
    if (threads_mode) {
        prctl(PR_SET_TIMERSLACK, 100001UL);
        for (int i = 0; i < 2; i++) {
            w[i].has_b = i == 0;
            w[i].slack = 200001UL + 100000UL * i;
            if (pthread_create(&w[i].th, NULL, run, &w[i]))
                zdtm_die("pthread_create");
        }
        while (!w[0].ready || !w[1].ready)
            zdtm_tick();
    } else {
        install(1, SECCOMP_FILTER_FLAG_LOG);
    }
    /* The filters work before the checkpoint too. */
    char *why = check(!threads_mode, threads_mode ? 100001UL : 0);
    if (why)
        zdtm_die("before checkpoint: %s", why);
    zdtm_ready();
    while (!zdtm_stop)
        zdtm_tick();
    why = check(!threads_mode, threads_mode ? 100001UL : 0);
    if (why)
        zdtm_fail("%s", why);
    if (threads_mode) {
        go_check = 1;
        for (int i = 0; i < 2; i++) {
            pthread_join(w[i].th, NULL);
            if (w[i].why)
                zdtm_fail("%s", w[i].why);
        }
    }
    zdtm_finish();
}
