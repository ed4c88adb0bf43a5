/*
 * tree — a 3-level process tree: root → A (root's group) → A1 (A's own group),
 * root → B (its own group). Each process keeps a pseudo-random buffer (seeded by its
 * role) and a buffer inherited from root that it partly rewrote (copy-on-write after
 * fork). On SIGTERM the root asks its children to check themselves (SIGTERM), each
 * verifies its parent, group, session and memory, passes the request down, and exits
 * 0 or 1; the root collects the exit codes (waitpid) and reports.
 */
#include "zdtm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define BUF (256 * 1024)

static unsigned char *shared_cow; /* filled by root before forking */

static void fill(unsigned char *b, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        b[i] = (unsigned char)seed;
    }
}

static int check(const unsigned char *b, size_t n, uint64_t seed)
{
    unsigned char *want = malloc(n);
    fill(want, n, seed);
    int ok = memcmp(want, b, n) == 0;
    free(want);
    return ok;
}

/* gcc flags the recursion (a member forks members) although each call is in a new
 * process that ends with _exit. */
#pragma GCC diagnostic ignored "-Winfinite-recursion"

/* Runs one non-root member: rewrites half of the COW buffer, owns a buffer, forks its
 * own children (roles listed in kids), waits for SIGTERM, verifies, exits. */
static void __attribute__((noreturn)) member(int role, pid_t parent, pid_t want_pgid_self, const int *kids, int nkids)
{
    unsigned char *own = malloc(BUF);
    pid_t child[4];
    int bad = 0;

    fill(own, BUF, 1000 + role);
    fill(shared_cow, BUF / 2, 2000 + role); /* first half is now private to us */
    if (want_pgid_self)
        setpgid(0, 0);
    pid_t pgid = getpgrp(), sid = getsid(0);
    for (int i = 0; i < nkids; i++) {
        child[i] = fork();
        if (child[i] == 0) {
            member(kids[i], getppid(), 1, NULL, 0);
            _exit(0);
        }
    }
    while (!zdtm_stop)
        zdtm_tick();
    for (int i = 0; i < nkids; i++) {
        int st = 0;
        kill(child[i], SIGTERM);
        if (waitpid(child[i], &st, 0) != child[i] || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "tree: role %d: child role %d failed (status %#x)\n", role, kids[i], st);
            bad = 1;
        }
    }
    if (getppid() != parent)
        fprintf(stderr, "tree: role %d: parent %d, want %d\n", role, getppid(), parent), bad = 1;
    if (getpgrp() != pgid || getsid(0) != sid)
        fprintf(stderr, "tree: role %d: group/session changed\n", role), bad = 1;
    if (!check(own, BUF, 1000 + role))
        fprintf(stderr, "tree: role %d: own memory differs\n", role), bad = 1;
    if (!check(shared_cow, BUF / 2, 2000 + role))
        fprintf(stderr, "tree: role %d: rewritten COW half differs\n", role), bad = 1;
    {
        /* The untouched second half must still hold root's data. */
        unsigned char *root_copy = malloc(BUF);
        fill(root_copy, BUF, 42);
        if (memcmp(root_copy + BUF / 2, shared_cow + BUF / 2, BUF / 2) != 0)
            fprintf(stderr, "tree: role %d: inherited COW half differs\n", role), bad = 1;
        free(root_copy);
    }
    _exit(bad);
}

int main(int argc, char **argv)
{
    static const int a_kids[] = {3}; /* A1 */
    pid_t a, b;
    int st;

    zdtm_init(argc, argv, NULL, "3-level process tree with groups and COW memory");
    shared_cow = malloc(BUF);
    fill(shared_cow, BUF, 42);
    a = fork();
    if (a == 0)
        member(1, getppid(), 0, a_kids, 1);
    b = fork();
    if (b == 0)
        member(2, getppid(), 1, NULL, 0);
    usleep(100 * 1000); /* let the tree settle */
    zdtm_ready();
    while (!zdtm_stop)
        zdtm_tick();
    kill(a, SIGTERM);
    kill(b, SIGTERM);
    if (waitpid(a, &st, 0) != a || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        zdtm_fail("subtree A failed (status %#x, see stderr)", st);
    if (waitpid(b, &st, 0) != b || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        zdtm_fail("child B failed (status %#x, see stderr)", st);
    if (!check(shared_cow, BUF, 42))
        zdtm_fail("root's memory differs");
    zdtm_finish();
}
