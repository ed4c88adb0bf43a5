/*
 * timers — interval timers survive a checkpoint: ITIMER_REAL (SIGALRM every 50 ms),
 * ITIMER_VIRTUAL and ITIMER_PROF (armed far in the future, with intervals). After
 * SIGTERM: every interval is exactly as set, every remaining value is positive and not
 * larger than at setup, and SIGALRM kept arriving after the restore (its handler
 * counts; the count must grow while the workload waits 300 ms).
 */
#include "zdtm.h"

#include <string.h>
#include <sys/time.h>
#include <time.h>

static volatile sig_atomic_t alarms;

static void on_alarm(int sig)
{
    (void)sig;
    alarms++;
}

static const struct itimerval want[3] = {
    {{0, 50000}, {0, 50000}},    /* REAL: every 50 ms */
    {{7, 250000}, {3600, 0}},    /* VIRTUAL: first in an hour of CPU time */
    {{9, 500000}, {7200, 0}},    /* PROF */
};

static long us(struct timeval t)
{
    return t.tv_sec * 1000000L + t.tv_usec;
}

int main(int argc, char **argv)
{
    static const char *names[3] = {"ITIMER_REAL", "ITIMER_VIRTUAL", "ITIMER_PROF"};
    struct sigaction sa;

    zdtm_init(argc, argv, NULL, "interval timers (real, virtual, prof)");
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    for (int i = 0; i < 3; i++)
        if (setitimer(i, &want[i], NULL) != 0)
            zdtm_die("setitimer %s failed", names[i]);
    zdtm_ready();
    while (!zdtm_stop)
        zdtm_tick();
    for (int i = 0; i < 3; i++) {
        struct itimerval got;
        getitimer(i, &got);
        if (us(got.it_interval) != us(want[i].it_interval))
            zdtm_fail("%s interval %ld us, want %ld", names[i], us(got.it_interval), us(want[i].it_interval));
        /* CPU-time timers are kept in ticks: allow one 20 ms rounding up. */
        if (us(got.it_value) <= 0 || us(got.it_value) > us(want[i].it_value) + 20000)
            zdtm_fail("%s remaining %ld us (set to %ld)", names[i], us(got.it_value), us(want[i].it_value));
    }
    {
        sig_atomic_t before = alarms;
        struct timespec d = {0, 300 * 1000 * 1000};
        while (nanosleep(&d, &d) != 0)
            ;
        if (alarms - before < 2)
            zdtm_fail("SIGALRM stopped: %d in 300 ms", (int)(alarms - before));
    }
    zdtm_finish();
}
