/*
 * forker — a process that forks all the time is dumped consistently.
 *
 *   forker --out F --ready F
 *
 * Keeps up to 8 children alive, forking a new one as soon as one is reaped. Child n
 * sleeps 1–40 ms and exits with code (n % 200) + 1; the parent remembers each child's
 * pid and expected code, and every reaped child must be one of its own with the right
 * code (a child caught as a zombie at the checkpoint must come back as one, with its
 * status). After SIGTERM it waits for the remaining children, checks them the same way,
 * and checks that forking went on (at least 20 children) after the ready marker.
 */
#include "zdtm.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LIVE 8

static pid_t pids[LIVE];
static int codes[LIVE];

static void reaped(pid_t p, int st)
{
    for (int i = 0; i < LIVE; i++) {
        if (pids[i] != p)
            continue;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != codes[i])
            zdtm_fail("child %d: status %#x, expected exit %d", (int)p, st, codes[i]);
        pids[i] = 0;
        return;
    }
    zdtm_fail("reaped %d, not a child of ours", (int)p);
}

int main(int argc, char **argv)
{
    zdtm_init(argc, argv, NULL, "forks children all the time; each exit status is checked");
    long n = 0, at_ready = -1;
    while (!zdtm_stop) {
        for (int i = 0; i < LIVE; i++) {
            if (pids[i])
                continue;
            n++;
            int code = (int)(n % 200) + 1;
            pid_t p = fork();
            if (p < 0)
                zdtm_die("fork: %s", strerror(errno));
            if (p == 0) {
                signal(SIGTERM, SIG_DFL);
                struct timespec ts = {0, (1 + (long)(zdtm_mix(n, 1) % 40)) * 1000000};
                while (nanosleep(&ts, &ts) && errno == EINTR) {
                }
                _exit(code);
            }
            pids[i] = p;
            codes[i] = code;
        }
        if (at_ready < 0 && n > 100) {
            at_ready = n;
            zdtm_ready();
        }
        int st;
        pid_t p = waitpid(-1, &st, 0);
        if (p > 0)
            reaped(p, st);
        else if (errno != EINTR)
            zdtm_fail("waitpid: %s", strerror(errno));
    }
    for (int i = 0; i < LIVE; i++) {
        if (!pids[i])
            continue;
        int st;
        pid_t p = waitpid(pids[i], &st, 0);
        if (p != pids[i])
            zdtm_fail("waitpid(%d): %s", (int)pids[i], strerror(errno));
        else
            reaped(p, st);
    }
    if (n - at_ready < 20)
        zdtm_fail("only %ld children forked after ready", n - at_ready);
    zdtm_info("%ld children in all, %ld after ready", n, n - at_ready);
    zdtm_finish();
}
