/*
 * zombie — a parent with zombie children it has not waited for yet: one exited with
 * code 42 after making its own process group, one killed by SIGKILL, one by SIGTERM.
 * The parent counts SIGCHLD. After restore (on SIGTERM) it checks each zombie in
 * /proc (state Z, its parent, group, session, name), that no SIGCHLD came again, then
 * waitpid on each must return the original status; nothing else may be waitable.
 */
#include "zdtm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t nchld;

static void on_chld(int sig)
{
    (void)sig;
    nchld++;
}

struct z {
    pid_t pid;
    int status;        /* expected wait status */
    int own_group;
    const char *comm;
};

int main(int argc, char **argv)
{
    struct z zs[3] = {
        {0, 42 << 8, 1, "zomb-exit42"},
        {0, SIGKILL, 0, "zomb-kill"},
        {0, SIGTERM, 0, "zomb-term"},
    };
    struct sigaction sa = {.sa_handler = on_chld};

    zdtm_init(argc, argv, NULL, "zombie children with exit codes and fatal signals");
    sigaction(SIGCHLD, &sa, NULL);
    for (int i = 0; i < 3; i++) {
        pid_t p = fork();
        if (p < 0)
            zdtm_die("fork: %m");
        if (p == 0) {
            prctl(PR_SET_NAME, zs[i].comm);
            if (zs[i].own_group)
                setpgid(0, 0);
            signal(SIGTERM, SIG_DFL);
            if (zs[i].status & 0x7f) {
                kill(getpid(), zs[i].status & 0x7f);
                pause();
            }
            _exit(zs[i].status >> 8);
        }
        zs[i].pid = p;
    }
    /* Until all three are zombies (and their SIGCHLD handled). */
    for (int tries = 0;; tries++) {
        int nz = 0;
        for (int i = 0; i < 3; i++) {
            char st, comm[16];
            int pp, pg, sid;
            if (zdtm_stat_of(zs[i].pid, &st, &pp, &pg, &sid, comm) == 0 && st == 'Z')
                nz++;
        }
        if (nz == 3 && nchld >= 1)
            break;
        if (tries > 1000)
            zdtm_die("children did not become zombies");
        usleep(10000);
    }
    int seen = nchld;
    zdtm_ready();
    while (!zdtm_stop)
        zdtm_tick();
    if (nchld != seen)
        zdtm_fail("SIGCHLD count changed: %d -> %d", seen, (int)nchld);
    for (int i = 0; i < 3; i++) {
        char st, comm[16];
        int pp, pg, sid;
        if (zdtm_stat_of(zs[i].pid, &st, &pp, &pg, &sid, comm) != 0) {
            zdtm_fail("zombie %d is gone", zs[i].pid);
            continue;
        }
        if (st != 'Z')
            zdtm_fail("%d: state %c, not a zombie", zs[i].pid, st);
        if (pp != getpid())
            zdtm_fail("%d: parent %d", zs[i].pid, pp);
        if (pg != (zs[i].own_group ? zs[i].pid : getpgrp()) || sid != getsid(0))
            zdtm_fail("%d: group %d session %d", zs[i].pid, pg, sid);
        if (strcmp(comm, zs[i].comm) != 0)
            zdtm_fail("%d: name %s, want %s", zs[i].pid, comm, zs[i].comm);
    }
    for (int i = 0; i < 3; i++) {
        int status = -1;
        pid_t r = waitpid(zs[i].pid, &status, WNOHANG);
        if (r != zs[i].pid)
            zdtm_fail("waitpid(%d) = %d (%s)", zs[i].pid, r, r < 0 ? strerror(errno) : "not dead");
        else if (status != zs[i].status)
            zdtm_fail("%d: wait status %#x, want %#x", zs[i].pid, status, zs[i].status);
    }
    if (waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD)
        zdtm_fail("another child is waitable");
    zdtm_finish();
}
