/*
 * attrs — process attributes the engine restores survive checkpoint/restore.
 *
 *   attrs --out F --ready F --dir DIR [--drop-privs]
 *
 * Setup, in this order:
 *   - chdir(DIR); umask(027); comm "attrs-w" (PR_SET_NAME);
 *   - rlimits: RLIMIT_NOFILE soft 200; RLIMIT_CORE soft 12345, hard 1 MiB (each
 *     clamped to the current hard limit);
 *   - PR_SET_CHILD_SUBREAPER 1;
 *   - with --drop-privs (a flag without value; needs root):
 *       setgroups({1000, 1001}); setresgid(1002, 1003, 1004);
 *       PR_CAPBSET_DROP CAP_SYS_BOOT (still holding CAP_SETPCAP);
 *       PR_SET_KEEPCAPS 1; setresuid(1005, 1006, 1007);
 *       capset: effective = permitted = {CAP_NET_BIND_SERVICE, CAP_KILL},
 *               inheritable = {CAP_KILL};
 *       PR_CAP_AMBIENT_RAISE CAP_KILL; PR_SET_NO_NEW_PRIVS 1;
 *     (KEEPCAPS stays set, so securebits are 0x10);
 *   - PR_SET_PDEATHSIG SIGUSR2 and PR_SET_DUMPABLE 0 — after the credential change,
 *     which resets both (commit_creds clears pdeath_signal and resets dumpable when the
 *     euid/egid/fsuid/fsgid change).
 * Then it records every attribute (below) and writes the ready marker.
 *
 * After SIGTERM it reads everything again and compares with the record: cwd (getcwd),
 * umask (round trip), getrlimit for all 16 resources, comm (PR_GET_NAME), personality
 * (personality(0xffffffff): only checked unchanged), getsid(0) == getpgrp() == getpid()
 * (the harness starts it with setsid), PR_GET_PDEATHSIG, PR_GET_DUMPABLE,
 * PR_GET_CHILD_SUBREAPER, getresuid/getresgid, fsuid/fsgid (setfsuid(-1)/setfsgid(-1)),
 * getgroups, capget (effective, permitted, inheritable), PR_CAPBSET_READ and
 * PR_CAP_AMBIENT_IS_SET for caps 0..=40, PR_GET_NO_NEW_PRIVS, PR_GET_SECUREBITS.
 * With --drop-privs the recorded credentials are also checked against the values set.
 * A SIGUSR2 (the parent-death signal) arriving at any time is reported too: the
 * workload's parent never dies while the test runs.
 * Every mismatch ("attribute: expected X, got Y") goes to stderr; the verdict line holds
 * the count and the first few. The timer slack is not restored by cryo yet: not checked.
 *
 * Files with dropped privileges: the --out file is opened before the drop and kept open
 * (zdtm_open_out), but the ready marker is created (MARKER.tmp, rename) after setup, as
 * uid 1006 — with --drop-privs the directory of MARKER must be writable by it (the e2e
 * test makes its scratch directory mode 0777). Writing the marker before the drop would
 * let the harness checkpoint a half set up process.
 */
#include "zdtm.h"

#include <sched.h>
#include <sys/resource.h>

#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/fsuid.h>
#include <unistd.h>

#define CAPS_CHECKED 41 /* 0..=40 (CAP_CHECKPOINT_RESTORE) */
#define NGROUPS_REC 64
#define SHOWN 4 /* mismatches quoted in the verdict line */

struct attrs {
    char cwd[4096];
    mode_t umask;
    struct rlimit rlim[RLIM_NLIMITS];
    char comm[17];
    int personality;
    pid_t sid, pgrp;
    int pdeathsig, dumpable, subreaper;
    uid_t ruid, euid, suid, fsuid;
    gid_t rgid, egid, sgid, fsgid;
    int ngroups;
    gid_t groups[NGROUPS_REC];
    uint64_t cap_eff, cap_prm, cap_inh;
    int bnd[CAPS_CHECKED], amb[CAPS_CHECKED]; /* prctl result, or -errno */
    int no_new_privs, securebits;
};

static volatile sig_atomic_t usr2_count;

static void on_usr2(int sig)
{
    (void)sig;
    usr2_count++;
}

static int mismatches;
static char shown[480];

/* One mismatch: always on stderr, the first SHOWN ones also in the verdict. */
static void mismatch(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void mismatch(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    zdtm_info("mismatch: %s", msg);
    if (mismatches++ < SHOWN) {
        size_t len = strlen(shown), room = sizeof(shown) - len - 1; /* the rest is cut */
        if (len && room >= 2) {
            memcpy(shown + len, "; ", 2);
            len += 2;
            room -= 2;
        }
        size_t m = strlen(msg);
        memcpy(shown + len, msg, m < room ? m : room);
        shown[len + (m < room ? m : room)] = 0;
    }
}

static int prctl_int(int op, unsigned long arg)
{
    int r = prctl(op, arg, 0, 0, 0);
    return r < 0 ? -errno : r;
}

/* PR_GET_PDEATHSIG / PR_GET_CHILD_SUBREAPER store an int through arg2. */
static int prctl_get_ptr(int op)
{
    int v = -1;
    if (prctl(op, (unsigned long)&v, 0, 0, 0))
        return -errno;
    return v;
}

static void capget3(uint64_t *eff, uint64_t *prm, uint64_t *inh)
{
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];
    memset(d, 0, sizeof(d));
    if (syscall(SYS_capget, &h, d))
        zdtm_die("capget: %s", strerror(errno));
    *eff = d[0].effective | (uint64_t)d[1].effective << 32;
    *prm = d[0].permitted | (uint64_t)d[1].permitted << 32;
    *inh = d[0].inheritable | (uint64_t)d[1].inheritable << 32;
}

static void capset3(uint64_t eff, uint64_t prm, uint64_t inh)
{
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];
    for (int i = 0; i < 2; i++) {
        d[i].effective = (uint32_t)(eff >> (32 * i));
        d[i].permitted = (uint32_t)(prm >> (32 * i));
        d[i].inheritable = (uint32_t)(inh >> (32 * i));
    }
    if (syscall(SYS_capset, &h, d))
        zdtm_die("capset: %s", strerror(errno));
}

static void record(struct attrs *a)
{
    memset(a, 0, sizeof(*a));
    if (!getcwd(a->cwd, sizeof(a->cwd)))
        snprintf(a->cwd, sizeof(a->cwd), "(getcwd: %s)", strerror(errno));
    a->umask = umask(0);
    umask(a->umask);
    for (int r = 0; r < RLIM_NLIMITS; r++)
        if (getrlimit(r, &a->rlim[r]))
            a->rlim[r].rlim_cur = a->rlim[r].rlim_max = (rlim_t)-2; /* "error" */
    if (prctl(PR_GET_NAME, (unsigned long)a->comm, 0, 0, 0))
        snprintf(a->comm, sizeof(a->comm), "(error %d)", errno);
    a->personality = personality(0xffffffff);
    a->sid = getsid(0);
    a->pgrp = getpgrp();
    a->pdeathsig = prctl_get_ptr(PR_GET_PDEATHSIG);
    a->dumpable = prctl_int(PR_GET_DUMPABLE, 0);
    a->subreaper = prctl_get_ptr(PR_GET_CHILD_SUBREAPER);
    getresuid(&a->ruid, &a->euid, &a->suid);
    getresgid(&a->rgid, &a->egid, &a->sgid);
    a->fsuid = setfsuid(-1); /* an invalid id: changes nothing, returns the current one */
    a->fsgid = setfsgid(-1);
    a->ngroups = getgroups(NGROUPS_REC, a->groups);
    if (a->ngroups < 0)
        a->ngroups = -errno;
    capget3(&a->cap_eff, &a->cap_prm, &a->cap_inh);
    for (int c = 0; c < CAPS_CHECKED; c++) {
        a->bnd[c] = prctl_int(PR_CAPBSET_READ, c);
        a->amb[c] = prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, c, 0, 0);
        if (a->amb[c] < 0)
            a->amb[c] = -errno;
    }
    a->no_new_privs = prctl_int(PR_GET_NO_NEW_PRIVS, 0);
    a->securebits = prctl_int(PR_GET_SECUREBITS, 0);
}

static void groups_str(const struct attrs *a, char *buf, size_t len)
{
    size_t o = 0;
    buf[0] = 0;
    if (a->ngroups < 0) {
        snprintf(buf, len, "(error %d)", -a->ngroups);
        return;
    }
    for (int i = 0; i < a->ngroups && o < len; i++)
        o += snprintf(buf + o, len - o, "%s%u", i ? "," : "", (unsigned)a->groups[i]);
    if (!a->ngroups)
        snprintf(buf, len, "(none)");
}

#define CMP_INT(name, field)                                                                \
    do {                                                                                    \
        if ((long long)w->field != (long long)g->field)                                     \
            mismatch("%s: expected %lld, got %lld", name, (long long)w->field,              \
                     (long long)g->field);                                                  \
    } while (0)
#define CMP_HEX(name, field)                                                                \
    do {                                                                                    \
        if (w->field != g->field)                                                           \
            mismatch("%s: expected %#llx, got %#llx", name, (unsigned long long)w->field,   \
                     (unsigned long long)g->field);                                         \
    } while (0)

static const char *const rlim_names[RLIM_NLIMITS] = {
    "CPU", "FSIZE", "DATA", "STACK", "CORE", "RSS", "NPROC", "NOFILE",
    "MEMLOCK", "AS", "LOCKS", "SIGPENDING", "MSGQUEUE", "NICE", "RTPRIO", "RTTIME",
};

/* Compares `g` (now) with `w` (recorded at setup). */
static void compare(const struct attrs *w, const struct attrs *g)
{
    if (strcmp(w->cwd, g->cwd))
        mismatch("cwd: expected %s, got %s", w->cwd, g->cwd);
    if (w->umask != g->umask)
        mismatch("umask: expected %03o, got %03o", (unsigned)w->umask, (unsigned)g->umask);
    for (int r = 0; r < RLIM_NLIMITS; r++)
        if (w->rlim[r].rlim_cur != g->rlim[r].rlim_cur ||
            w->rlim[r].rlim_max != g->rlim[r].rlim_max)
            mismatch("RLIMIT_%s (%d): expected %lld/%lld, got %lld/%lld (soft/hard, -1 = inf)",
                     rlim_names[r], r, (long long)w->rlim[r].rlim_cur,
                     (long long)w->rlim[r].rlim_max, (long long)g->rlim[r].rlim_cur,
                     (long long)g->rlim[r].rlim_max);
    if (strcmp(w->comm, g->comm))
        mismatch("comm: expected \"%s\", got \"%s\"", w->comm, g->comm);
    CMP_HEX("personality", personality);
    CMP_INT("getsid(0)", sid);
    CMP_INT("getpgrp()", pgrp);
    CMP_INT("PR_GET_PDEATHSIG", pdeathsig);
    CMP_INT("PR_GET_DUMPABLE", dumpable);
    CMP_INT("PR_GET_CHILD_SUBREAPER", subreaper);
    CMP_INT("ruid", ruid);
    CMP_INT("euid", euid);
    CMP_INT("suid", suid);
    CMP_INT("fsuid", fsuid);
    CMP_INT("rgid", rgid);
    CMP_INT("egid", egid);
    CMP_INT("sgid", sgid);
    CMP_INT("fsgid", fsgid);
    if (w->ngroups != g->ngroups ||
        (w->ngroups > 0 && memcmp(w->groups, g->groups, w->ngroups * sizeof(gid_t)))) {
        char a[512], b[512];
        groups_str(w, a, sizeof(a));
        groups_str(g, b, sizeof(b));
        mismatch("supplementary groups: expected %s, got %s", a, b);
    }
    CMP_HEX("CapEff", cap_eff);
    CMP_HEX("CapPrm", cap_prm);
    CMP_HEX("CapInh", cap_inh);
    for (int c = 0; c < CAPS_CHECKED; c++) {
        if (w->bnd[c] != g->bnd[c])
            mismatch("PR_CAPBSET_READ(%d): expected %d, got %d", c, w->bnd[c], g->bnd[c]);
        if (w->amb[c] != g->amb[c])
            mismatch("PR_CAP_AMBIENT_IS_SET(%d): expected %d, got %d", c, w->amb[c], g->amb[c]);
    }
    CMP_INT("PR_GET_NO_NEW_PRIVS", no_new_privs);
    CMP_HEX("PR_GET_SECUREBITS", securebits);
}

#define CAPBIT(c) (1ULL << (c))

static void drop_privs(void)
{
    static const gid_t groups[] = { 1000, 1001 };
    if (setgroups(2, groups))
        zdtm_die("setgroups: %s", strerror(errno));
    if (setresgid(1002, 1003, 1004))
        zdtm_die("setresgid: %s", strerror(errno));
    /* Needs CAP_SETPCAP, which the capset below gives up. */
    if (prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0))
        zdtm_die("PR_CAPBSET_DROP(CAP_SYS_BOOT): %s", strerror(errno));
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0))
        zdtm_die("PR_SET_KEEPCAPS: %s", strerror(errno));
    if (setresuid(1005, 1006, 1007))
        zdtm_die("setresuid: %s", strerror(errno));
    uint64_t two = CAPBIT(CAP_NET_BIND_SERVICE) | CAPBIT(CAP_KILL);
    capset3(two, two, CAPBIT(CAP_KILL));
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_KILL, 0, 0))
        zdtm_die("PR_CAP_AMBIENT_RAISE(CAP_KILL): %s", strerror(errno));
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        zdtm_die("PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
}

/* The recorded state must also be what setup asked for (catches a setup bug, not C/R). */
static void check_setup(const struct attrs *a, int dropped)
{
    const char *why = NULL;
    if (a->umask != 027)
        why = "umask";
    else if (strcmp(a->comm, "attrs-w"))
        why = "comm";
    else if (a->pdeathsig != SIGUSR2)
        why = "pdeathsig";
    else if (a->dumpable != 0)
        why = "dumpable";
    else if (a->subreaper != 1)
        why = "child subreaper";
    else if (a->sid != getpid() || a->pgrp != getpid())
        why = "session/process group (start it with setsid)";
    else if (a->rlim[RLIMIT_NOFILE].rlim_cur > 200)
        why = "RLIMIT_NOFILE";
    if (!why && dropped) {
        uint64_t two = CAPBIT(CAP_NET_BIND_SERVICE) | CAPBIT(CAP_KILL);
        if (a->ruid != 1005 || a->euid != 1006 || a->suid != 1007 || a->fsuid != 1006)
            why = "uids";
        else if (a->rgid != 1002 || a->egid != 1003 || a->sgid != 1004 || a->fsgid != 1003)
            why = "gids";
        else if (a->ngroups != 2 || a->groups[0] != 1000 || a->groups[1] != 1001)
            why = "groups";
        else if (a->cap_eff != two || a->cap_prm != two || a->cap_inh != CAPBIT(CAP_KILL))
            why = "capabilities";
        else if (a->bnd[CAP_SYS_BOOT] != 0 || a->bnd[CAP_KILL] != 1)
            why = "bounding set";
        else if (a->amb[CAP_KILL] != 1 || a->amb[CAP_NET_BIND_SERVICE] != 0)
            why = "ambient set";
        else if (a->no_new_privs != 1)
            why = "no_new_privs";
        else if (a->securebits != (1 << SECURE_KEEP_CAPS))
            why = "securebits";
    }
    if (why)
        zdtm_die("setup did not take effect: %s", why);
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int drop = 0;
    const struct zdtm_opt opts[] = {
        { "dir", ZDTM_STR, &dir, "DIR  directory to chdir to (required)" },
        { 0 },
    };
    /* zdtm_init takes "--name VALUE" pairs only: take the bare flag out first. */
    char **args = calloc(argc + 1, sizeof(*args));
    int n = 0;
    if (!args)
        zdtm_die("calloc: %s", strerror(errno));
    args[n++] = argv[0];
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--drop-privs")) {
            drop = 1;
            continue;
        }
        args[n++] = argv[i];
        if (!strncmp(argv[i], "--", 2) && i + 1 < argc)
            args[n++] = argv[++i]; /* its value, whatever it looks like */
    }
    zdtm_init(n, args, opts,
              "sets cwd, umask, rlimits, comm, pdeathsig, dumpable, subreaper and, with "
              "--drop-privs (a flag, needs root), uids 1005/1006/1007, gids "
              "1002/1003/1004, groups 1000,1001 and a few capabilities; checks them all "
              "after C/R");
    if (!dir) {
        fprintf(stderr, "%s: --dir is required\n", zdtm_prog);
        return 2;
    }
    zdtm_open_out(); /* before losing the right to create it */

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_usr2;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR2, &sa, NULL))
        zdtm_die("sigaction(SIGUSR2): %s", strerror(errno));

    if (chdir(dir))
        zdtm_die("chdir %s: %s", dir, strerror(errno));
    umask(027);
    if (prctl(PR_SET_NAME, (unsigned long)"attrs-w", 0, 0, 0))
        zdtm_die("PR_SET_NAME: %s", strerror(errno));

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl))
        zdtm_die("getrlimit(NOFILE): %s", strerror(errno));
    rl.rlim_cur = rl.rlim_max < 200 ? rl.rlim_max : 200;
    if (setrlimit(RLIMIT_NOFILE, &rl))
        zdtm_die("setrlimit(NOFILE): %s", strerror(errno));
    if (getrlimit(RLIMIT_CORE, &rl))
        zdtm_die("getrlimit(CORE): %s", strerror(errno));
    if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > (1 << 20))
        rl.rlim_max = 1 << 20;
    rl.rlim_cur = rl.rlim_max < 12345 ? rl.rlim_max : 12345;
    if (setrlimit(RLIMIT_CORE, &rl))
        zdtm_die("setrlimit(CORE): %s", strerror(errno));

    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
        zdtm_die("PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
    /* Scheduling and OOM score: a lower priority and a higher score need no privilege. */
    struct sched_param sp = {0};
    if (sched_setscheduler(0, SCHED_BATCH, &sp))
        zdtm_die("sched_setscheduler(SCHED_BATCH): %s", strerror(errno));
    if (setpriority(PRIO_PROCESS, 0, 5))
        zdtm_die("setpriority: %s", strerror(errno));
    {
        FILE *f = fopen("/proc/self/oom_score_adj", "w");
        if (!f || fprintf(f, "500\n") < 0 || fclose(f))
            zdtm_die("oom_score_adj: %s", strerror(errno));
    }
    if (drop)
        drop_privs();
    /* After the credential change, which resets both. */
    if (prctl(PR_SET_PDEATHSIG, SIGUSR2, 0, 0, 0))
        zdtm_die("PR_SET_PDEATHSIG: %s", strerror(errno));
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0))
        zdtm_die("PR_SET_DUMPABLE: %s", strerror(errno));

    static struct attrs want, got;
    record(&want);
    check_setup(&want, drop);
    zdtm_info("pid %d: uid %u/%u/%u gid %u/%u/%u caps eff %#llx prm %#llx inh %#llx, cwd %s",
              (int)getpid(), (unsigned)want.ruid, (unsigned)want.euid, (unsigned)want.suid,
              (unsigned)want.rgid, (unsigned)want.egid, (unsigned)want.sgid,
              (unsigned long long)want.cap_eff, (unsigned long long)want.cap_prm,
              (unsigned long long)want.cap_inh, want.cwd);
    zdtm_ready();

    while (!zdtm_stop)
        zdtm_tick();

    record(&got);
    compare(&want, &got);
    if (sched_getscheduler(0) != SCHED_BATCH)
        mismatch("scheduling policy: expected SCHED_BATCH, got %d", sched_getscheduler(0));
    errno = 0;
    if (getpriority(PRIO_PROCESS, 0) != 5)
        mismatch("nice: expected 5, got %d", getpriority(PRIO_PROCESS, 0));
    {
        int adj = 0;
        FILE *f = fopen("/proc/self/oom_score_adj", "r");
        if (!f || fscanf(f, "%d", &adj) != 1 || adj != 500)
            mismatch("oom_score_adj: expected 500, got %d", adj);
        if (f)
            fclose(f);
    }
    if (usr2_count)
        mismatch("SIGUSR2 (the parent-death signal): expected none, got %d", (int)usr2_count);
    if (mismatches)
        zdtm_fail("%d attribute mismatch%s: %s%s", mismatches, mismatches > 1 ? "es" : "",
                  shown, mismatches > SHOWN ? "; ... (all on stderr)" : "");
    zdtm_finish();
}
