/*
 * sleeper — a process blocked in a system call is restored blocked in it.
 *
 *   sleeper --out F --ready F --mode nanosleep|pipe|pause|poll|futex
 *
 *   nanosleep  loops nanosleep(5 s), continuing with the remaining time after EINTR
 *   pipe       creates a pipe (both ends kept open) and blocks in read() on it
 *              (needs pipe support in the checkpointer)
 *   pause      blocks in pause()
 *   poll       blocks in poll() (no timeout) on the read end of a pipe
 *   futex      blocks in FUTEX_WAIT on a word that never changes
 * Every return of the call must be a legal one: nanosleep 0 (slept it all) or -1/EINTR,
 * read, pause, poll and futex -1/EINTR (read returning 0 or data is garbage). An EINTR without our
 * SIGTERM (e.g. a restorer turning an interrupted sleep into EINTR, as CRIU does for
 * ERESTART_RESTARTBLOCK) just restarts the call; it is counted and reported on stderr.
 * After SIGTERM (handler without SA_RESTART) the call that returned last must have
 * failed with EINTR, and the CLOCK_MONOTONIC time since start must be sane (>= 0 and
 * < 1 day; reported on stderr).
 */
#include "zdtm.h"

#include <errno.h>
#include <linux/futex.h>
#include <poll.h>
#include <sys/syscall.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    const char *mode = NULL;
    const struct zdtm_opt opts[] = {
        { "mode", ZDTM_STR, &mode, "nanosleep|pipe|pause|poll|futex   which call to block in (required)" },
        { 0 },
    };
    zdtm_init(argc, argv, opts, "blocked in nanosleep/read(pipe)/pause across C/R; SIGTERM must give EINTR");
    int m = !mode ? -1 : !strcmp(mode, "nanosleep") ? 0 : !strcmp(mode, "pipe") ? 1 : !strcmp(mode, "pause") ? 2
        : !strcmp(mode, "poll") ? 3 : !strcmp(mode, "futex") ? 4 : -1;
    if (m < 0) {
        fprintf(stderr, "%s: --mode must be nanosleep, pipe, pause, poll or futex\n", zdtm_prog);
        return 2;
    }
    int pfd[2] = { -1, -1 };
    static uint32_t word = 7;
    if ((m == 1 || m == 3) && pipe(pfd))
        zdtm_die("pipe: %s", strerror(errno));

    int64_t t0 = zdtm_now_ns();
    zdtm_info("pid %d: mode %s", (int)getpid(), mode);
    zdtm_ready();

    long spurious = 0, rounds = 0;
    long ret = 0;
    int err = 0;
    struct timespec req = { 5, 0 }, rem;
    while (!zdtm_stop) {
        rounds++;
        errno = 0;
        if (m == 0) {
            ret = nanosleep(&req, &rem);
        } else if (m == 1) {
            char c;
            ret = read(pfd[0], &c, 1);
        } else if (m == 3) {
            struct pollfd p = { .fd = pfd[0], .events = POLLIN };
            ret = poll(&p, 1, -1);
        } else if (m == 4) {
            ret = syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 7, NULL, NULL, 0);
        } else {
            ret = pause();
        }
        err = errno;
        if (ret == 0 && m == 0) {
            req = (struct timespec){ 5, 0 }; /* slept the full 5 s */
            continue;
        }
        if (ret != -1 || err != EINTR) {
            zdtm_fail("%s returned %ld, errno %d (%s); expected -1/EINTR", mode, ret, err, strerror(err));
            break;
        }
        if (m == 0)
            req = rem; /* continue with the remaining time */
        if (!zdtm_stop)
            spurious++;
    }

    int64_t elapsed = zdtm_now_ns() - t0;
    if (!zdtm_failed() && (ret != -1 || err != EINTR))
        zdtm_fail("the last %s returned %ld errno %d, expected -1/EINTR (SIGTERM outside the call?)", mode, ret, err);
    if (elapsed < 0 || elapsed > 86400LL * 1000000000)
        zdtm_fail("CLOCK_MONOTONIC elapsed %lld ns", (long long)elapsed);
    zdtm_info("mode %s: %.3f s elapsed, %ld calls, %ld EINTR without SIGTERM", mode, elapsed / 1e9, rounds, spurious);
    zdtm_finish();
}
