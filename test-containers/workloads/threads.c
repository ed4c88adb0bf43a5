/*
 * threads — N threads (default 8), each with its own TLS value, name, signal mask,
 * CPU affinity (one CPU each), counter, and a different blocking style (futex/condvar wait, nanosleep, busy loop);
 * all update a shared counter under a mutex. After SIGTERM every thread verifies its own
 * state (TLS value, name, mask, TID unchanged, counters consistent and still advancing),
 * and main checks the shared counter equals the sum of the per-thread ones.
 */
#include "zdtm.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAXT 128

static __thread unsigned long tls_value;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static unsigned long shared_count;
static volatile int started;

struct worker {
    pthread_t th;
    int idx;
    pid_t tid;
    unsigned long count;      /* under lock */
    unsigned long after_stop; /* increments seen once stop was requested */
    char fail[160];
};

static struct worker w[MAXT];

static void *run(void *arg)
{
    struct worker *me = arg;
    char name[16], got[16] = "";
    sigset_t mask, cur;

    me->tid = (pid_t)syscall(SYS_gettid);
    tls_value = 0x1000u + (unsigned long)me->idx * 7919u;
    snprintf(name, sizeof(name), "worker-%d", me->idx);
    prctl(PR_SET_NAME, name);
    sigemptyset(&mask);
    sigaddset(&mask, SIGRTMIN + 1 + me->idx % 8);
    sigaddset(&mask, SIGTERM); /* only main takes SIGTERM */
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    /* Each thread pinned to one CPU. */
    int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN), want_cpu = me->idx % (ncpu > 0 ? ncpu : 1);
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(want_cpu, &cpus);
    pthread_setaffinity_np(pthread_self(), sizeof(cpus), &cpus);
    __atomic_add_fetch(&started, 1, __ATOMIC_SEQ_CST);

    for (;;) {
        int stop = zdtm_stop;
        pthread_mutex_lock(&lock);
        me->count++;
        shared_count++;
        if (stop)
            me->after_stop++;
        if (me->idx % 3 == 0 && !stop) {
            /* futex wait with timeout */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 5 * 1000 * 1000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&cond, &lock, &ts);
        }
        pthread_mutex_unlock(&lock);
        if (stop && me->after_stop >= 3)
            break;
        if (me->idx % 3 == 1) {
            struct timespec d = {0, 3 * 1000 * 1000};
            nanosleep(&d, NULL);
        } else if (me->idx % 3 == 2) {
            for (volatile int i = 0; i < 200000; i++)
                ;
        }
    }
    /* Verify this thread's own state. */
    if (tls_value != 0x1000u + (unsigned long)me->idx * 7919u)
        snprintf(me->fail, sizeof(me->fail), "thread %d: TLS value %#lx", me->idx, tls_value);
    prctl(PR_GET_NAME, got);
    if (strcmp(got, name) != 0)
        snprintf(me->fail, sizeof(me->fail), "thread %d: name '%s', want '%s'", me->idx, got, name);
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    if (!sigismember(&cur, SIGRTMIN + 1 + me->idx % 8) || !sigismember(&cur, SIGTERM))
        snprintf(me->fail, sizeof(me->fail), "thread %d: signal mask lost", me->idx);
    CPU_ZERO(&cpus);
    pthread_getaffinity_np(pthread_self(), sizeof(cpus), &cpus);
    if (!CPU_ISSET(want_cpu, &cpus) || CPU_COUNT(&cpus) != 1)
        snprintf(me->fail, sizeof(me->fail), "thread %d: affinity lost (%d CPUs)", me->idx, CPU_COUNT(&cpus));
    if ((pid_t)syscall(SYS_gettid) != me->tid)
        snprintf(me->fail, sizeof(me->fail), "thread %d: tid %ld, want %d", me->idx, (long)syscall(SYS_gettid), me->tid);
    return NULL;
}

int main(int argc, char **argv)
{
    long n = 8;
    const struct zdtm_opt opts[] = {
        {"threads", ZDTM_LONG, &n, "N   number of threads (default 8, max 128)"},
        {NULL, ZDTM_LONG, NULL, NULL},
    };
    unsigned long sum = 0;

    zdtm_init(argc, argv, opts, "threads with their own state and shared counters");
    if (n < 1 || n > MAXT)
        zdtm_die("--threads must be 1..%d", MAXT);
    for (int i = 0; i < n; i++) {
        w[i].idx = i;
        if (pthread_create(&w[i].th, NULL, run, &w[i]) != 0)
            zdtm_die("pthread_create failed");
    }
    while (__atomic_load_n(&started, __ATOMIC_SEQ_CST) < n)
        usleep(1000);
    zdtm_ready();
    while (!zdtm_stop)
        zdtm_tick();
    pthread_mutex_lock(&lock);
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < n; i++) {
        pthread_join(w[i].th, NULL);
        if (w[i].fail[0])
            zdtm_fail("%s", w[i].fail);
        if (w[i].after_stop < 3)
            zdtm_fail("thread %d did not keep running", i);
        sum += w[i].count;
    }
    if (sum != shared_count)
        zdtm_fail("shared counter %lu != sum of thread counters %lu", shared_count, sum);
    zdtm_finish();
}
