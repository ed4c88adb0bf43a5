/*
 * orphan — orphans adopted by a child subreaper of the tree, in the session of their
 * dead parent. The root R is a child subreaper; C calls setsid and forks G1 (stays in
 * group C, forks GG) and G2 (own group); C exits, R reaps it, G1 and G2 are reparented
 * to R. After restore (on SIGTERM) each checks its parent, session (C) and group, that
 * pid C is not alive, and that nothing unexpected is waitable.
 *
 * --refuse 1: instead leave C alive and make an orphan in C's session under R (C forks
 * D, D forks E, D exits): cryo cannot rebuild that and must refuse the dump.
 */
#include "zdtm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static pid_t sess;
static int p[2];

static int verify(const char *name, pid_t parent, pid_t pgrp)
{
    int bad = 0;
    if (getppid() != parent)
        fprintf(stderr, "orphan: %s: parent %d, want %d\n", name, getppid(), parent), bad = 1;
    if (getsid(0) != sess)
        fprintf(stderr, "orphan: %s: session %d, want %d\n", name, getsid(0), sess), bad = 1;
    if (getpgrp() != pgrp)
        fprintf(stderr, "orphan: %s: group %d, want %d\n", name, getpgrp(), pgrp), bad = 1;
    if (kill(sess, 0) == 0 || errno != ESRCH)
        fprintf(stderr, "orphan: %s: pid %d (the dead session leader) exists\n", name, sess), bad = 1;
    return bad;
}

static int reap(pid_t kid, const char *name)
{
    int st = 0;
    kill(kid, SIGTERM);
    if (waitpid(kid, &st, 0) != kid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "orphan: %s failed (%#x)\n", name, st);
        return 1;
    }
    return 0;
}

static int nothing_waitable(const char *name)
{
    if (waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD) {
        fprintf(stderr, "orphan: %s: an unexpected child is waitable\n", name);
        return 1;
    }
    return 0;
}

static void __attribute__((noreturn)) gg(pid_t parent)
{
    while (!zdtm_stop)
        zdtm_tick();
    _exit(verify("GG", parent, sess) | nothing_waitable("GG"));
}

static void __attribute__((noreturn)) g(int n, pid_t root)
{
    pid_t kid = 0;
    close(p[0]);
    close(p[1]);
    if (n == 2)
        setpgid(0, 0);
    else if ((kid = fork()) == 0)
        gg(getppid());
    while (!zdtm_stop)
        zdtm_tick();
    int bad = verify(n == 1 ? "G1" : "G2", root, n == 1 ? sess : getpid());
    if (kid)
        bad |= reap(kid, "GG");
    _exit(bad | nothing_waitable(n == 1 ? "G1" : "G2"));
}

int main(int argc, char **argv)
{
    long refuse = 0;
    struct zdtm_opt opts[] = {
        {"refuse", ZDTM_LONG, &refuse, "1   make a tree cryo must refuse"},
        {NULL, 0, NULL, NULL},
    };
    int st;
    pid_t kids[2], root = getpid();

    zdtm_init(argc, argv, opts, "orphans reparented to an in-tree child subreaper");
    if (prctl(PR_SET_CHILD_SUBREAPER, 1))
        zdtm_die("PR_SET_CHILD_SUBREAPER: %m");
    if (pipe(p))
        zdtm_die("pipe: %m");
    sess = fork();
    if (sess == 0) {
        sess = setsid();
        if (refuse) {
            pid_t d = fork();
            if (d == 0) {
                pid_t e = fork();
                if (e == 0) {
                    while (!zdtm_stop)
                        zdtm_tick();
                    _exit(0);
                }
                write(p[1], &e, sizeof(e));
                _exit(0);
            }
            waitpid(d, NULL, 0);
            while (!zdtm_stop)
                zdtm_tick();
            _exit(0);
        }
        for (int i = 0; i < 2; i++) {
            kids[i] = fork();
            if (kids[i] == 0)
                g(i + 1, root);
        }
        if (write(p[1], kids, sizeof(kids)) != sizeof(kids))
            _exit(1);
        usleep(50 * 1000);
        _exit(0);
    }
    if (refuse) {
        pid_t e;
        if (read(p[0], &e, sizeof(e)) != sizeof(e))
            zdtm_die("no pid from D");
        usleep(100 * 1000);
        zdtm_ready();
        while (!zdtm_stop)
            zdtm_tick();
        kill(sess, SIGTERM);
        kill(e, SIGTERM);
        waitpid(sess, NULL, 0);
        waitpid(e, NULL, 0);
        zdtm_finish();
    }
    if (read(p[0], kids, sizeof(kids)) != sizeof(kids))
        zdtm_die("no pids from C");
    if (waitpid(sess, &st, 0) != sess)
        zdtm_die("C not reaped");
    close(p[0]);
    close(p[1]);
    /* Until both are reparented to us. */
    for (int tries = 0;; tries++) {
        char path[64];
        int adopted = 0;
        for (int i = 0; i < 2; i++) {
            snprintf(path, sizeof(path), "/proc/%d/stat", kids[i]);
            FILE *f = fopen(path, "r");
            int ppid = 0;
            if (f) {
                if (fscanf(f, "%*d %*s %*c %d", &ppid) != 1)
                    ppid = 0;
                fclose(f);
            }
            adopted += ppid == root;
        }
        if (adopted == 2)
            break;
        if (tries > 500)
            zdtm_die("orphans not reparented");
        usleep(10000);
    }
    zdtm_ready();
    while (!zdtm_stop)
        zdtm_tick();
    if (kill(sess, 0) == 0 || errno != ESRCH)
        zdtm_fail("pid %d (the dead session leader) exists", sess);
    if (reap(kids[0], "G1") | reap(kids[1], "G2"))
        zdtm_fail("an orphan failed (see stderr)");
    if (nothing_waitable("R"))
        zdtm_fail("an unexpected child is waitable");
    zdtm_finish();
}
