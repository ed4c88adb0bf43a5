/*
 * signals — signal dispositions, mask, pending signals and altstack survive C/R.
 *
 *   signals --out F --ready F
 *
 * Setup: handlers with different sa_flags and masks
 *   SIGUSR1      SA_SIGINFO                      (records si_code, si_pid)
 *   SIGRTMIN+2   SA_SIGINFO|SA_RESTART, mask {SIGUSR2} (records si_value in order)
 *   SIGHUP       SA_NODEFER|SA_RESTART, mask {SIGINT,SIGQUIT}
 *   SIGUSR2      SA_ONSTACK on a 64 KiB malloc'ed sigaltstack
 *   SIGALRM      SA_RESETHAND, mask {SIGRTMIN..SIGRTMAX}
 *   SIGPIPE      SIG_IGN
 *   SIGTERM      zdtm handler (no SA_RESTART)
 * blocks SIGUSR1, SIGRTMIN+2 and SIGWINCH, then raise(SIGUSR1) (thread-directed) and
 * sigqueue(SIGRTMIN+2) twice with values 111 and 222 (process-wide): all pending.
 * After SIGTERM:
 *   - sigaction() of every signal 1..SIGRTMAX equals what it was (handler, flags,
 *     restorer, mask); sigaltstack (sp, size, flags) and the blocked mask unchanged;
 *   - sigpending() is exactly {SIGUSR1, SIGRTMIN+2};
 *   - unblocking delivers SIGUSR1 once (si_code SI_TKILL, si_pid = ours) and
 *     SIGRTMIN+2 twice, with 111 then 222 (SI_QUEUE);
 *   - raise(SIGUSR2) runs on the altstack (a local's address inside it, SS_ONSTACK);
 *   - raise(SIGHUP) runs with SIGHUP unblocked (SA_NODEFER) and SIGINT/SIGQUIT blocked;
 *   - raise(SIGPIPE) is ignored.
 */
#include "zdtm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ALTSTACK_SIZE (64 * 1024)
#define NSIG_MAX 64

struct disp {
    int rc, err;
    struct sigaction sa;
};

static struct disp saved[NSIG_MAX + 1];
static stack_t alt;

/* What the handlers saw, in delivery order. */
static volatile struct { int sig, code, pid, val; } seq[8];
static volatile int nseq;
static volatile int onstack_ran, onstack_inside, onstack_flags;
static volatile int hup_ran, hup_self_blocked, hup_int_blocked, hup_quit_blocked;

static void h_info(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    if (nseq < 8) {
        seq[nseq].sig = sig;
        seq[nseq].code = si->si_code;
        seq[nseq].pid = si->si_pid;
        seq[nseq].val = si->si_value.sival_int;
    }
    nseq++;
}

static void h_onstack(int sig)
{
    char local;
    stack_t cur;
    (void)sig;
    onstack_ran++;
    onstack_inside = (size_t)((char *)&local - (char *)alt.ss_sp) < alt.ss_size;
    onstack_flags = sigaltstack(NULL, &cur) ? -1 : cur.ss_flags;
}

static void h_hup(int sig)
{
    sigset_t cur;
    (void)sig;
    hup_ran++;
    sigprocmask(SIG_BLOCK, NULL, &cur);
    hup_self_blocked = sigismember(&cur, SIGHUP);
    hup_int_blocked = sigismember(&cur, SIGINT);
    hup_quit_blocked = sigismember(&cur, SIGQUIT);
}

static void h_plain(int sig) { (void)sig; }

static void install(int sig, void *handler, int flags, const int *mask_sigs, int nmask)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    if (flags & SA_SIGINFO)
        sa.sa_sigaction = handler;
    else
        sa.sa_handler = handler;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < nmask; i++)
        sigaddset(&sa.sa_mask, mask_sigs[i]);
    if (sigaction(sig, &sa, NULL))
        zdtm_die("sigaction(%d): %s", sig, strerror(errno));
}

static void get_disp(int sig, struct disp *d)
{
    memset(d, 0, sizeof(*d));
    d->rc = sigaction(sig, NULL, &d->sa);
    d->err = d->rc ? errno : 0;
}

static int same_set(const sigset_t *a, const sigset_t *b)
{
    for (int s = 1; s <= NSIG_MAX; s++)
        if (sigismember(a, s) != sigismember(b, s))
            return 0;
    return 1;
}

static void set_str(const sigset_t *set, char *buf, size_t len)
{
    buf[0] = 0;
    for (int s = 1; s <= NSIG_MAX; s++)
        if (sigismember(set, s) == 1)
            snprintf(buf + strlen(buf), len - strlen(buf), " %d", s);
}

int main(int argc, char **argv)
{
    zdtm_init(argc, argv, NULL, "signal handlers, mask, pending signals, sigaltstack survive C/R");
    const int RT = SIGRTMIN + 2;

    alt.ss_sp = malloc(ALTSTACK_SIZE);
    alt.ss_size = ALTSTACK_SIZE;
    alt.ss_flags = 0;
    if (!alt.ss_sp || sigaltstack(&alt, NULL))
        zdtm_die("sigaltstack: %s", strerror(errno));

    int m_rt[] = { SIGUSR2 }, m_hup[] = { SIGINT, SIGQUIT }, m_alrm[NSIG_MAX];
    int n_alrm = 0;
    for (int s = SIGRTMIN; s <= SIGRTMAX; s++)
        m_alrm[n_alrm++] = s;
    install(SIGUSR1, h_info, SA_SIGINFO, NULL, 0);
    install(RT, h_info, SA_SIGINFO | SA_RESTART, m_rt, 1);
    install(SIGHUP, h_hup, SA_NODEFER | SA_RESTART, m_hup, 2);
    install(SIGUSR2, h_onstack, SA_ONSTACK, NULL, 0);
    install(SIGALRM, h_plain, SA_RESETHAND, m_alrm, n_alrm);
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
        zdtm_die("signal(SIGPIPE): %s", strerror(errno));

    sigset_t block, blocked, pending;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, RT);
    sigaddset(&block, SIGWINCH);
    if (sigprocmask(SIG_BLOCK, &block, NULL))
        zdtm_die("sigprocmask: %s", strerror(errno));
    if (raise(SIGUSR1) || sigqueue(getpid(), RT, (union sigval){ .sival_int = 111 }) ||
        sigqueue(getpid(), RT, (union sigval){ .sival_int = 222 }))
        zdtm_die("raise/sigqueue: %s", strerror(errno));

    for (int s = 1; s <= NSIG_MAX; s++)
        get_disp(s, &saved[s]);
    sigprocmask(SIG_BLOCK, NULL, &blocked);
    zdtm_info("pid %d: altstack %p+%zu", (int)getpid(), alt.ss_sp, alt.ss_size);
    zdtm_ready();

    while (!zdtm_stop)
        zdtm_tick();

    /* Dispositions of every signal. */
    for (int s = 1; s <= NSIG_MAX; s++) {
        struct disp now, *was = &saved[s];
        get_disp(s, &now);
        if (now.rc != was->rc || now.err != was->err)
            zdtm_fail("sigaction(%d) returned %d/%d, before %d/%d", s, now.rc, now.err, was->rc, was->err);
        else if (!now.rc && (now.sa.sa_handler != was->sa.sa_handler || now.sa.sa_flags != was->sa.sa_flags ||
                             now.sa.sa_restorer != was->sa.sa_restorer || !same_set(&now.sa.sa_mask, &was->sa.sa_mask)))
            zdtm_fail("signal %d: handler %p flags %#x restorer %p, before %p %#x %p%s", s,
                      (void *)now.sa.sa_handler, now.sa.sa_flags, (void *)now.sa.sa_restorer,
                      (void *)was->sa.sa_handler, was->sa.sa_flags, (void *)was->sa.sa_restorer,
                      same_set(&now.sa.sa_mask, &was->sa.sa_mask) ? "" : ", mask differs");
    }

    stack_t ss;
    if (sigaltstack(NULL, &ss) || ss.ss_sp != alt.ss_sp || ss.ss_size != alt.ss_size || ss.ss_flags != 0)
        zdtm_fail("sigaltstack %p+%zu flags %#x, expected %p+%zu flags 0", ss.ss_sp, ss.ss_size, ss.ss_flags,
                  alt.ss_sp, alt.ss_size);

    char a[256], b[256];
    sigset_t now_blocked, want_pending;
    sigprocmask(SIG_BLOCK, NULL, &now_blocked);
    if (!same_set(&now_blocked, &blocked)) {
        set_str(&now_blocked, a, sizeof(a));
        set_str(&blocked, b, sizeof(b));
        zdtm_fail("blocked signals {%s }, expected {%s }", a, b);
    }
    sigemptyset(&want_pending);
    sigaddset(&want_pending, SIGUSR1);
    sigaddset(&want_pending, RT);
    sigpending(&pending);
    if (!same_set(&pending, &want_pending)) {
        set_str(&pending, a, sizeof(a));
        set_str(&want_pending, b, sizeof(b));
        zdtm_fail("pending signals {%s }, expected {%s }", a, b);
    }

    /* Deliver the pending ones: SIGUSR1 once, the two queued values in order. (Which
     * handler runs first is not checked: the kernel stacks one frame per signal.) */
    sigdelset(&block, SIGWINCH);
    sigprocmask(SIG_UNBLOCK, &block, NULL);
    int usr1 = 0, rt = 0;
    for (int i = 0; i < nseq && i < 8; i++) {
        int want_code = seq[i].sig == SIGUSR1 ? SI_TKILL : SI_QUEUE;
        int want_val = seq[i].sig == RT ? (rt ? 222 : 111) : seq[i].val;
        if ((seq[i].sig != SIGUSR1 && seq[i].sig != RT) || seq[i].code != want_code ||
            seq[i].pid != getpid() || seq[i].val != want_val)
            zdtm_fail("delivery %d: signal %d si_code %d si_pid %d value %d; expected si_code %d si_pid %d value %d",
                      i, seq[i].sig, seq[i].code, seq[i].pid, seq[i].val, want_code, (int)getpid(), want_val);
        usr1 += seq[i].sig == SIGUSR1;
        rt += seq[i].sig == RT;
    }
    if (usr1 != 1 || rt != 2)
        zdtm_fail("after unblocking: SIGUSR1 handled %d times (expected 1), SIGRTMIN+2 %d times (expected 2)",
                  usr1, rt);

    raise(SIGUSR2);
    if (onstack_ran != 1 || !onstack_inside || onstack_flags != SS_ONSTACK)
        zdtm_fail("SA_ONSTACK handler: ran %d, on altstack %d, ss_flags %#x", onstack_ran, onstack_inside,
                  onstack_flags);
    raise(SIGHUP);
    if (hup_ran != 1 || hup_self_blocked || !hup_int_blocked || !hup_quit_blocked)
        zdtm_fail("SIGHUP handler: ran %d, SIGHUP blocked %d (SA_NODEFER), SIGINT %d, SIGQUIT %d blocked", hup_ran,
                  hup_self_blocked, hup_int_blocked, hup_quit_blocked);
    raise(SIGPIPE); /* ignored: we are still here */
    sigpending(&pending);
    if (sigismember(&pending, SIGPIPE))
        zdtm_fail("ignored SIGPIPE is pending");
    zdtm_finish();
}
