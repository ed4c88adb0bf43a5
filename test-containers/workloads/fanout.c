/*
 * fanout — a flat tree of N processes (root + N-1 children), each with its own
 * pseudo-random buffer, --vmas separate small mappings (alternating protections, so
 * they do not merge; each holds a marker) and --fds extra open fds; on SIGTERM the root forwards it to every child, each child
 * verifies its parent and memory and exits 0/1, the root collects the codes.
 */
#include "zdtm.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define BUF (64 * 1024)

static void fill(unsigned char *b, uint64_t seed)
{
    for (size_t i = 0; i < BUF; i++) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        b[i] = (unsigned char)seed;
    }
}

int main(int argc, char **argv)
{
    long n = 100, nvmas = 0, nfds = 0;
    const struct zdtm_opt opts[] = {
        {"procs", ZDTM_LONG, &n, "N   processes in all (default 100)"},
        {"vmas", ZDTM_LONG, &nvmas, "N   extra mappings per process (default 0)"},
        {"fds", ZDTM_LONG, &nfds, "N   extra open fds per process (default 0)"},
        {NULL, ZDTM_LONG, NULL, NULL},
    };
    pid_t *kids;

    zdtm_init(argc, argv, opts, "flat tree of N processes");
    if (n < 1 || n > 4096)
        zdtm_die("--procs must be 1..4096");
    kids = calloc((size_t)n, sizeof(*kids));
    for (long i = 1; i < n; i++) {
        pid_t parent = getpid();
        kids[i] = fork();
        if (kids[i] < 0)
            zdtm_die("fork failed");
        if (kids[i] == 0) {
            unsigned char *mine = malloc(BUF), *want = malloc(BUF);
            long *maps = calloc((size_t)nvmas + 1, sizeof(long));
            int bad = 0;
            fill(mine, 7 + (uint64_t)i);
            for (long v = 0; v < nvmas; v++) {
                long *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (m == MAP_FAILED)
                    _exit(3);
                m[0] = i * 100000 + v;
                if (v % 2)
                    mprotect(m, 4096, PROT_READ);
                maps[v] = (long)m;
            }
            for (long f = 0; f < nfds; f++)
                if (open("/dev/null", O_RDONLY) < 0)
                    _exit(4);
            while (!zdtm_stop)
                zdtm_tick();
            fill(want, 7 + (uint64_t)i);
            for (long v = 0; v < nvmas; v++)
                bad |= ((long *)maps[v])[0] != i * 100000 + v;
            _exit(bad || getppid() != parent || memcmp(mine, want, BUF) != 0);
        }
    }
    zdtm_ready();
    while (!zdtm_stop)
        zdtm_tick();
    for (long i = 1; i < n; i++)
        kill(kids[i], SIGTERM);
    for (long i = 1; i < n; i++) {
        int st = 0;
        if (waitpid(kids[i], &st, 0) != kids[i] || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            zdtm_fail("child %ld (pid %d) failed: status %#x", i, kids[i], st);
    }
    zdtm_finish();
}
