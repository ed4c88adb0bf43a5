/*
 * pgrp — a process group whose leader has exited. The root (a session leader) forks
 * L, which makes its own group; M1 and M2 join L's group; M1 forks M1a (inherits it).
 * L exits and is reaped: group L now has no process with pid L. After restore (on
 * SIGTERM) every member checks it is in group L, that pid L is not alive (no helper
 * left, as a zombie or otherwise), that it has no child to reap but its own; the root
 * sends SIGUSR1 to group -L and each member must receive it.
 */
#include "zdtm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t got_usr1;

static void on_usr1(int sig)
{
    (void)sig;
    got_usr1 = 1;
}

static pid_t leader;
static int p[2];

/* A member: waits for SIGTERM, then for SIGUSR1 to group L, checks, exits 0/1. */
static void __attribute__((noreturn)) member(const char *name, pid_t parent, int with_child)
{
    pid_t kid = 0;
    int bad = 0;
    close(p[0]);
    close(p[1]);
    if (with_child) {
        kid = fork();
        if (kid == 0)
            member("M1a", getppid(), 0);
    }
    while (!zdtm_stop)
        zdtm_tick();
    for (int i = 0; i < 500 && !got_usr1; i++)
        usleep(10000);
    if (!got_usr1)
        fprintf(stderr, "pgrp: %s: no SIGUSR1 to group %d\n", name, leader), bad = 1;
    if (getpgrp() != leader)
        fprintf(stderr, "pgrp: %s: group %d, want %d\n", name, getpgrp(), leader), bad = 1;
    if (getppid() != parent)
        fprintf(stderr, "pgrp: %s: parent %d, want %d\n", name, getppid(), parent), bad = 1;
    if (kill(leader, 0) == 0 || errno != ESRCH)
        fprintf(stderr, "pgrp: %s: pid %d (the dead leader) exists\n", name, leader), bad = 1;
    if (kid) {
        int st;
        kill(kid, SIGTERM);
        if (waitpid(kid, &st, 0) != kid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            fprintf(stderr, "pgrp: %s: child failed (%#x)\n", name, st), bad = 1;
    }
    if (waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD)
        fprintf(stderr, "pgrp: %s: an unexpected child is waitable\n", name), bad = 1;
    _exit(bad);
}

int main(int argc, char **argv)
{
    int st;
    pid_t m1, m2;
    char c;
    struct sigaction sa = {.sa_handler = on_usr1};

    zdtm_init(argc, argv, NULL, "process group whose leader exited");
    sigaction(SIGUSR1, &sa, NULL);
    if (pipe(p))
        zdtm_die("pipe: %m");
    leader = fork();
    if (leader == 0) {
        setpgid(0, 0);
        read(p[0], &c, 1); /* until the members joined */
        _exit(0);
    }
    setpgid(leader, leader); /* no race with the child's own call */
    m1 = fork();
    if (m1 == 0) {
        if (setpgid(0, leader))
            _exit(3);
        member("M1", getppid(), 1);
    }
    m2 = fork();
    if (m2 == 0) {
        if (setpgid(0, leader))
            _exit(3);
        member("M2", getppid(), 0);
    }
    setpgid(m1, leader);
    setpgid(m2, leader);
    usleep(100 * 1000);
    if (write(p[1], "x", 1) != 1 || waitpid(leader, &st, 0) != leader)
        zdtm_die("leader did not exit");
    close(p[0]);
    close(p[1]);
    usleep(50 * 1000);
    zdtm_ready();
    while (!zdtm_stop)
        zdtm_tick();
    if (kill(-leader, SIGUSR1))
        zdtm_fail("kill(-%d): %m", leader);
    kill(m1, SIGTERM);
    kill(m2, SIGTERM);
    if (waitpid(m1, &st, 0) != m1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        zdtm_fail("M1 failed (%#x, see stderr)", st);
    if (waitpid(m2, &st, 0) != m2 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        zdtm_fail("M2 failed (%#x, see stderr)", st);
    if (kill(leader, 0) == 0 || errno != ESRCH)
        zdtm_fail("pid %d (the dead leader) exists", leader);
    if (waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD)
        zdtm_fail("an unexpected child is waitable");
    zdtm_finish();
}
