/*
 * nszombie — zombies, a group whose leader exited and orphans adopted by the init of a
 * pid namespace, run as that init:
 *   unshare --fork --pid --mount-proc nszombie ...
 * The root R (pid 1, session leader) burns a few pids, then makes:
 *   Z1  exits with code 42 after making its own group; Z2 killed by SIGTERM: zombies;
 *   L   makes its own group, M1 and M2 join it (M1 forks M1a, which inherits it), L exits
 *       and is reaped: group L has no process with pid L;
 *   C   calls setsid, forks G1 (stays in group C, forks GG) and G2 (own group), exits and
 *       is reaped: G1 and G2 are orphans adopted by R, the init of the namespace, in
 *       session C whose leader is gone.
 * The pids are written to the file --pids (one "name pid" line each, as the namespace
 * sees them) for the harness.
 * On SIGTERM every process checks getpid, getppid, getpgrp and getsid against what they
 * were, that the dead leaders' pids are free, that nothing unexpected is waitable; the
 * root checks each zombie in /proc (state Z, parent, group, session, name), that no
 * SIGCHLD came again, waitpid of each zombie (the exact status), that a signal to group
 * -L reaches M1, M1a and M2, then ends the others and checks their verdicts.
 */
#include "zdtm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t nchld, got_usr1;
static pid_t leader, sess;
static int p[2];
static const char *pids_path;

static void on_chld(int sig)
{
    (void)sig;
    nchld++;
}

static void on_usr1(int sig)
{
    (void)sig;
    got_usr1 = 1;
}

/* Checks pid, parent, group and session of the caller; 0 if all hold. */
static int check_ids(const char *who, pid_t pid, pid_t ppid, pid_t pgrp, pid_t sid)
{
    int bad = 0;
    if (getpid() != pid)
        fprintf(stderr, "nszombie: %s: pid %d, want %d\n", who, getpid(), pid), bad = 1;
    if (getppid() != ppid)
        fprintf(stderr, "nszombie: %s: parent %d, want %d\n", who, getppid(), ppid), bad = 1;
    if (getpgrp() != pgrp)
        fprintf(stderr, "nszombie: %s: group %d, want %d\n", who, getpgrp(), pgrp), bad = 1;
    if (getsid(0) != sid)
        fprintf(stderr, "nszombie: %s: session %d, want %d\n", who, getsid(0), sid), bad = 1;
    if (kill(leader, 0) == 0 || errno != ESRCH)
        fprintf(stderr, "nszombie: %s: pid %d (dead group leader) exists\n", who, leader), bad = 1;
    /* (The members of group L were forked before C: they do not know its pid.) */
    if (sess > 0 && (kill(sess, 0) == 0 || errno != ESRCH))
        fprintf(stderr, "nszombie: %s: pid %d (dead session leader) exists\n", who, sess), bad = 1;
    return bad;
}

static int end_child(const char *who, pid_t kid)
{
    int st = 0;
    kill(kid, SIGTERM);
    if (waitpid(kid, &st, 0) != kid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "nszombie: %s failed (%#x)\n", who, st);
        return 1;
    }
    return 0;
}

static int nothing_waitable(const char *who)
{
    if (waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD) {
        fprintf(stderr, "nszombie: %s: an unexpected child is waitable\n", who);
        return 1;
    }
    return 0;
}

static void burn_pids(int n)
{
    for (int i = 0; i < n; i++) {
        pid_t k = fork();
        if (k == 0)
            _exit(0);
        if (k > 0)
            waitpid(k, NULL, 0);
    }
}

/* A process of the tree other than the root: remembers its ids, optionally forks one
 * child (same kind), waits for SIGTERM, verifies; in_l: must get SIGUSR1 to group L. */
static void __attribute__((noreturn)) member(const char *who, const char *kid_name, int in_l)
{
    pid_t pid = getpid(), ppid = getppid(), pgrp = getpgrp(), sid = getsid(0), kid = 0;
    int bad = 0;

    close(p[0]);
    close(p[1]);
    signal(SIGCHLD, SIG_DFL);
    if (kid_name) {
        kid = fork();
        if (kid == 0)
            member(kid_name, NULL, in_l);
    }
    while (!zdtm_stop)
        zdtm_tick();
    if (in_l) {
        for (int i = 0; i < 500 && !got_usr1; i++)
            usleep(10000);
        if (!got_usr1)
            fprintf(stderr, "nszombie: %s: no SIGUSR1 to group %d\n", who, leader), bad = 1;
    }
    /* The ppid of an orphan is the root's, as when dumped (ppid recorded at start). */
    bad |= check_ids(who, pid, ppid, pgrp, sid);
    if (kid)
        bad |= end_child(kid_name, kid);
    bad |= nothing_waitable(who);
    _exit(bad);
}

static pid_t ppid_of(pid_t pid)
{
    char st, comm[16];
    int pp = 0, pg, sid;
    return zdtm_stat_of(pid, &st, &pp, &pg, &sid, comm) ? 0 : pp;
}

struct z {
    pid_t pid;
    int status;
    int own_group;
    const char *comm;
};

int main(int argc, char **argv)
{
    static const struct zdtm_opt opts[] = {
        { "pids", ZDTM_STR, &pids_path, "FILE  where to write the pids of the tree" },
        { NULL, 0, NULL, NULL },
    };
    struct z zs[2] = {
        {0, 42 << 8, 1, "nsz-exit42"},
        {0, SIGTERM, 0, "nsz-term"},
    };
    /* SA_RESTART: the root's waitpid calls must not fail on a SIGCHLD. */
    struct sigaction chld = {.sa_handler = on_chld, .sa_flags = SA_RESTART};
    struct sigaction usr1 = {.sa_handler = on_usr1, .sa_flags = SA_RESTART};
    pid_t m1, m2, kids[2], ppid;
    int st, bad = 0;
    char c;

    zdtm_init(argc, argv, opts, "zombies, a dead group leader and orphans in a pid namespace");
    if (getpid() != 1)
        zdtm_die("pid %d, not 1: start under unshare --fork --pid --mount-proc", getpid());
    if (getsid(0) != getpid() && setsid() < 0)
        zdtm_die("setsid failed");
    ppid = getppid();
    sigaction(SIGUSR1, &usr1, NULL);
    sigaction(SIGCHLD, &chld, NULL);
    burn_pids(4);

    for (int i = 0; i < 2; i++) {
        pid_t k = fork();
        if (k < 0)
            zdtm_die("fork: %m");
        if (k == 0) {
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
        zs[i].pid = k;
        burn_pids(1);
    }

    /* Group L whose leader exits. */
    if (pipe(p))
        zdtm_die("pipe: %m");
    leader = fork();
    if (leader == 0) {
        setpgid(0, 0);
        read(p[0], &c, 1);
        _exit(0);
    }
    setpgid(leader, leader);
    burn_pids(2);
    m1 = fork();
    if (m1 == 0) {
        if (setpgid(0, leader))
            _exit(3);
        member("M1", "M1a", 1);
    }
    m2 = fork();
    if (m2 == 0) {
        if (setpgid(0, leader))
            _exit(3);
        member("M2", NULL, 1);
    }
    setpgid(m1, leader);
    setpgid(m2, leader);
    usleep(100 * 1000);
    if (write(p[1], "x", 1) != 1 || waitpid(leader, &st, 0) != leader)
        zdtm_die("leader did not exit");
    close(p[0]);
    close(p[1]);

    /* Session C whose leader exits; its children are adopted by us (pid 1). */
    if (pipe(p))
        zdtm_die("pipe: %m");
    burn_pids(3);
    sess = fork();
    if (sess == 0) {
        sess = setsid();
        for (int i = 0; i < 2; i++) {
            kids[i] = fork();
            if (kids[i] == 0) {
                /* Wait until C is gone: the orphan's parent is then the root. */
                while (getppid() != 1)
                    usleep(1000);
                if (i == 1)
                    setpgid(0, 0);
                member(i ? "G2" : "G1", i ? NULL : "GG", 0);
            }
        }
        if (write(p[1], kids, sizeof(kids)) != sizeof(kids))
            _exit(1);
        _exit(0);
    }
    if (read(p[0], kids, sizeof(kids)) != sizeof(kids))
        zdtm_die("no pids from C");
    if (waitpid(sess, &st, 0) != sess)
        zdtm_die("C not reaped");
    close(p[0]);
    close(p[1]);
    for (int tries = 0;; tries++) {
        int nz = 0;
        for (int i = 0; i < 2; i++) {
            char s, comm[16];
            int pp, pg, sid;
            if (zdtm_stat_of(zs[i].pid, &s, &pp, &pg, &sid, comm) == 0 && s == 'Z')
                nz++;
        }
        if (nz == 2 && ppid_of(kids[0]) == 1 && ppid_of(kids[1]) == 1)
            break;
        if (tries > 1000)
            zdtm_die("zombies or orphans not settled");
        usleep(10000);
    }
    usleep(100 * 1000); /* G1 forks GG, and every SIGCHLD is in */
    if (pids_path) {
        FILE *f = fopen(pids_path, "w");
        if (!f)
            zdtm_die("cannot write %s", pids_path);
        fprintf(f, "Z1 %d\nZ2 %d\nL %d\nM1 %d\nM2 %d\nC %d\nG1 %d\nG2 %d\n", zs[0].pid,
                zs[1].pid, leader, m1, m2, sess, kids[0], kids[1]);
        fclose(f);
    }
    int seen = nchld;
    zdtm_info("zombies %d %d, group %d (M1 %d, M2 %d), session %d (G1 %d, G2 %d)", zs[0].pid,
              zs[1].pid, leader, m1, m2, sess, kids[0], kids[1]);
    zdtm_ready();
    while (!zdtm_stop)
        zdtm_tick();

    if (nchld != seen)
        zdtm_fail("SIGCHLD count changed: %d -> %d", seen, (int)nchld);
    if (getpid() != 1 || getppid() != ppid || getpgrp() != 1 || getsid(0) != 1)
        zdtm_fail("root: pid %d ppid %d group %d session %d, want 1 %d 1 1", getpid(),
                  getppid(), getpgrp(), getsid(0), ppid);
    for (int i = 0; i < 2; i++) {
        char s, comm[16];
        int pp, pg, sid;
        if (zdtm_stat_of(zs[i].pid, &s, &pp, &pg, &sid, comm) != 0) {
            zdtm_fail("zombie %d is gone", zs[i].pid);
            continue;
        }
        if (s != 'Z')
            zdtm_fail("%d: state %c, not a zombie", zs[i].pid, s);
        if (pp != 1)
            zdtm_fail("%d: parent %d", zs[i].pid, pp);
        if (pg != (zs[i].own_group ? zs[i].pid : 1) || sid != 1)
            zdtm_fail("%d: group %d session %d", zs[i].pid, pg, sid);
        if (strcmp(comm, zs[i].comm) != 0)
            zdtm_fail("%d: name %s, want %s", zs[i].pid, comm, zs[i].comm);
    }
    for (int i = 0; i < 2; i++) {
        int status = -1;
        pid_t r = waitpid(zs[i].pid, &status, WNOHANG);
        if (r != zs[i].pid)
            zdtm_fail("waitpid(%d) = %d (%s)", zs[i].pid, r, r < 0 ? strerror(errno) : "not dead");
        else if (status != zs[i].status)
            zdtm_fail("%d: wait status %#x, want %#x", zs[i].pid, status, zs[i].status);
    }
    if (kill(-leader, SIGUSR1))
        zdtm_fail("kill(-%d): %m", leader);
    bad |= end_child("M1", m1);
    bad |= end_child("M2", m2);
    bad |= end_child("G1", kids[0]);
    bad |= end_child("G2", kids[1]);
    if (bad)
        zdtm_fail("a process of the tree failed (see stderr)");
    if (kill(leader, 0) == 0 || errno != ESRCH)
        zdtm_fail("pid %d (the dead group leader) exists", leader);
    if (kill(sess, 0) == 0 || errno != ESRCH)
        zdtm_fail("pid %d (the dead session leader) exists", sess);
    if (nothing_waitable("root"))
        zdtm_fail("an unexpected child is waitable");
    zdtm_finish();
}
