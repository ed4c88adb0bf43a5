/*
 * posixtimers — POSIX timers on every clock survive a checkpoint, plus the timer slack.
 * Timers (a deleted one first, so the ids have a hole):
 *   periodic  CLOCK_MONOTONIC, SIGEV_SIGNAL SIGRTMIN, sival_ptr 0xc0ffee01, every 20 ms
 *   far       CLOCK_REALTIME, SIGEV_SIGNAL SIGRTMIN+1, sival_int 7, once in an hour
 *   off       CLOCK_BOOTTIME, SIGEV_NONE, never armed
 *   proc      CLOCK_PROCESS_CPUTIME_ID, SIGEV_THREAD_ID (this thread) SIGRTMIN+2,
 *             1000 s of CPU then every 500 s
 *   thread    CLOCK_THREAD_CPUTIME_ID, SIGEV_NONE, 3600 s of CPU
 *   dflt      CLOCK_TAI, no sigevent (SIGALRM, sival = the id), never armed
 *   boot      CLOCK_BOOTTIME, SIGEV_SIGNAL SIGRTMIN+3, once in 2 h, every 10 s
 *   pend      CLOCK_MONOTONIC, SIGRTMIN+4 (blocked), sival_ptr 0x9e9d, once in 1 ms: its
 *             signal is pending at the checkpoint and must still be, with its siginfo
 * Timer slack set to 123457 ns.
 * After SIGTERM: /proc/self/timers lists the same timers (ids, signals, values,
 * notification, clocks), each timer_t still works, intervals are exact, remaining times
 * are within what the elapsed time allows (and were not reset to the full value: the
 * workload waits 500 ms before it is ready), the periodic timer keeps delivering
 * SIGRTMIN with its value and id, the one-shot ones have not fired, and the slack is
 * unchanged.
 * With --mtclock 1 a second thread runs too: the CLOCK_THREAD_CPUTIME_ID timer's thread
 * is then ambiguous and a dump must refuse it (no verdict expected).
 */
#include "zdtm.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SLACK 123457UL

enum { PERIODIC, FAR, OFF, PROC, THREAD, DFLT, BOOT, PEND, N };
static const char *names[N] = {"periodic", "far", "off", "proc", "thread", "dflt", "boot", "pend"};
static timer_t ids[N];
static struct itimerspec want[N] = {
    [PERIODIC] = {{0, 20000000}, {0, 20000000}},
    [FAR] = {{0, 0}, {3600, 0}},
    [PROC] = {{500, 0}, {1000, 0}},
    [THREAD] = {{0, 0}, {3600, 0}},
    [BOOT] = {{10, 0}, {7200, 0}},
    [PEND] = {{0, 0}, {0, 1000000}},
};

static volatile sig_atomic_t ticks, bad_info, other_sigs;
static volatile long bad_ptr, bad_id;

static void on_tick(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    if (sig != SIGRTMIN || si->si_code != SI_TIMER || si->si_value.sival_ptr != (void *)0xc0ffee01UL ||
        si->si_timerid != (int)(long)ids[PERIODIC]) {
        bad_info++;
        bad_ptr = (long)si->si_value.sival_ptr;
        bad_id = si->si_timerid;
        return;
    }
    ticks++;
}

static void on_other(int sig)
{
    (void)sig;
    other_sigs++;
}

static long mtclock;

static void *idle(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

static long long ns(struct timespec t)
{
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* /proc/self/timers records (4 lines each), sorted, joined. */
static void timers_text(char *out, size_t len)
{
    char buf[8192], *rec[64];
    int n = 0;
    FILE *f = fopen("/proc/self/timers", "re");
    if (!f)
        zdtm_die("open /proc/self/timers");
    size_t got = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[got] = 0;
    for (char *p = strstr(buf, "ID:"); p && n < 64; p = strstr(p + 1, "\nID:")) {
        if (*p == '\n')
            *p++ = 0;
        rec[n++] = p;
    }
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (strcmp(rec[i], rec[j]) > 0) {
                char *t = rec[i];
                rec[i] = rec[j];
                rec[j] = t;
            }
    out[0] = 0;
    for (int i = 0; i < n; i++) {
        strncat(out, rec[i], len - strlen(out) - 2);
        strncat(out, "|", len - strlen(out) - 1);
    }
}

int main(int argc, char **argv)
{
    static char before[8192], after[8192];
    struct sigaction sa;
    struct sigevent se;
    timer_t gone;

    static const struct zdtm_opt opts[] = {
        {"mtclock", ZDTM_LONG, &mtclock, "0|1  add a thread (makes the thread-clock timer undumpable)"},
        {NULL, 0, NULL, NULL},
    };
    zdtm_init(argc, argv, opts, "POSIX timers on all clocks, timer slack");
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_tick;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGRTMIN, &sa, NULL);
    sa.sa_flags = SA_RESTART;
    sa.sa_handler = on_other;
    for (int s = SIGRTMIN + 1; s <= SIGRTMIN + 3; s++)
        sigaction(s, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);

    memset(&se, 0, sizeof(se));
    se.sigev_notify = SIGEV_NONE;
    if (timer_create(CLOCK_MONOTONIC, &se, &gone) || timer_delete(gone))
        zdtm_die("timer_create/delete");

    se.sigev_notify = SIGEV_SIGNAL;
    se.sigev_signo = SIGRTMIN;
    se.sigev_value.sival_ptr = (void *)0xc0ffee01UL;
    if (timer_create(CLOCK_MONOTONIC, &se, &ids[PERIODIC]))
        zdtm_die("timer_create periodic");
    se.sigev_signo = SIGRTMIN + 1;
    se.sigev_value.sival_int = 7;
    if (timer_create(CLOCK_REALTIME, &se, &ids[FAR]))
        zdtm_die("timer_create far");
    se.sigev_notify = SIGEV_NONE;
    se.sigev_value.sival_int = 8;
    if (timer_create(CLOCK_BOOTTIME, &se, &ids[OFF]))
        zdtm_die("timer_create off");
    se.sigev_notify = SIGEV_THREAD_ID;
    se._sigev_un._tid = (pid_t)syscall(SYS_gettid);
    se.sigev_signo = SIGRTMIN + 2;
    se.sigev_value.sival_int = 9;
    if (timer_create(CLOCK_PROCESS_CPUTIME_ID, &se, &ids[PROC]))
        zdtm_die("timer_create proc");
    se.sigev_notify = SIGEV_NONE;
    if (timer_create(CLOCK_THREAD_CPUTIME_ID, &se, &ids[THREAD]))
        zdtm_die("timer_create thread");
    if (timer_create(CLOCK_TAI, NULL, &ids[DFLT]))
        zdtm_die("timer_create dflt");
    se.sigev_notify = SIGEV_SIGNAL;
    se.sigev_signo = SIGRTMIN + 3;
    se.sigev_value.sival_ptr = (void *)0xb007UL;
    if (timer_create(CLOCK_BOOTTIME, &se, &ids[BOOT]))
        zdtm_die("timer_create boot");
    sigset_t pend;
    sigemptyset(&pend);
    sigaddset(&pend, SIGRTMIN + 4);
    sigprocmask(SIG_BLOCK, &pend, NULL);
    se.sigev_signo = SIGRTMIN + 4;
    se.sigev_value.sival_ptr = (void *)0x9e9dUL;
    if (timer_create(CLOCK_MONOTONIC, &se, &ids[PEND]))
        zdtm_die("timer_create pend");
    for (int i = 0; i < N; i++)
        if (want[i].it_value.tv_sec || want[i].it_value.tv_nsec)
            if (timer_settime(ids[i], 0, &want[i], NULL))
                zdtm_die("timer_settime %s", names[i]);
    if (prctl(PR_SET_TIMERSLACK, SLACK))
        zdtm_die("PR_SET_TIMERSLACK");
    if (mtclock) {
        pthread_t th;
        if (pthread_create(&th, NULL, idle, NULL))
            zdtm_die("pthread_create");
    }
    int64_t armed = zdtm_now_ns();
    timers_text(before, sizeof(before));
    {
        struct timespec d = {0, 500 * 1000 * 1000};
        while (nanosleep(&d, &d) != 0)
            ;
    }
    zdtm_ready();
    while (!zdtm_stop)
        zdtm_tick();

    long long elapsed = zdtm_now_ns() - armed;
    timers_text(after, sizeof(after));
    if (strcmp(before, after))
        zdtm_fail("/proc/self/timers changed:\n  before %s\n  after  %s", before, after);
    for (int i = 0; i < N; i++) {
        struct itimerspec got;
        if (timer_gettime(ids[i], &got)) {
            zdtm_fail("timer %s (id %ld) is gone", names[i], (long)ids[i]);
            continue;
        }
        long long wi = ns(want[i].it_interval), wv = ns(want[i].it_value);
        long long gi = ns(got.it_interval), gv = ns(got.it_value);
        if (gi != wi)
            zdtm_fail("%s interval %lld ns, want %lld", names[i], gi, wi);
        if (i == PEND) {
            if (gv || gi)
                zdtm_fail("%s: a one-shot timer that fired is armed again (%lld ns)", names[i], gv);
        } else if (i == PERIODIC) {
            if (gv <= 0 || gv > wi)
                zdtm_fail("%s remaining %lld ns (period %lld)", names[i], gv, wi);
        } else if (!wv) {
            if (gv)
                zdtm_fail("%s is armed (%lld ns), was never set", names[i], gv);
        } else if (i == PROC || i == THREAD) {
            /* CPU time: little used, never reset (the first 500 ms used almost none) */
            if (gv <= wv - 5000000000LL || gv > wv)
                zdtm_fail("%s remaining %lld ns (set to %lld)", names[i], gv, wv);
        } else {
            /* Not reset (at least the 500 ms before ready went by), not more gone than
             * the time since arming (the checkpoint's downtime is not charged). */
            if (gv > wv - 450000000LL || gv < wv - elapsed - 1000000000LL)
                zdtm_fail("%s remaining %lld ns (set to %lld, %lld ns ago)", names[i], gv, wv, elapsed);
        }
    }
    {
        sig_atomic_t t0 = ticks;
        struct timespec d = {0, 300 * 1000 * 1000};
        while (nanosleep(&d, &d) != 0)
            ;
        if (ticks - t0 < 5)
            zdtm_fail("periodic timer: %d signals in 300 ms", (int)(ticks - t0));
    }
    {
        siginfo_t si;
        struct timespec zero = {0, 0};
        int s = sigtimedwait(&pend, &si, &zero);
        if (s != SIGRTMIN + 4)
            zdtm_fail("pend: its pending signal is gone");
        else if (si.si_code != SI_TIMER || si.si_timerid != (int)(long)ids[PEND] ||
                 si.si_value.sival_ptr != (void *)0x9e9dUL)
            zdtm_fail("pend: siginfo code %d timer %d value %p", si.si_code, si.si_timerid,
                      si.si_value.sival_ptr);
        else if (sigtimedwait(&pend, &si, &zero) >= 0)
            zdtm_fail("pend: its signal came twice");
    }
    if (bad_info)
        zdtm_fail("%d timer signals with a wrong siginfo (value %#lx, timer id %ld)", (int)bad_info, bad_ptr, bad_id);
    if (other_sigs)
        zdtm_fail("%d signals from timers that should not have fired", (int)other_sigs);
    long slack = prctl(PR_GET_TIMERSLACK);
    if (slack != (long)SLACK)
        zdtm_fail("timer slack %ld ns, want %lu", slack, SLACK);
    zdtm_finish();
}
