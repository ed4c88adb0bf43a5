/*
 * pty — a pseudo-terminal whose master and slave are both inside the tree.
 *
 *   pty --out F --ready F
 *
 * The workload opens a pty master (fd 10) and keeps a slave fd (fd 11). Its terminal
 * (slave side) gets raw mode and a 40x100 window. A child starts a new session, opens
 * the slave as its controlling terminal and puts a grandchild's process group in the
 * foreground; the grandchild answers each "?" read on the terminal with "ok" or
 * "bad:<why>" after checking: /dev/tty opens (a controlling terminal exists), the session (the child's) and the
 * foreground group (its own) through tcgetsid/tcgetpgrp, raw mode and window size.
 * After SIGTERM the parent checks: the same pty index (ptsname), the slave fd's link,
 * termios and window size read through the master, then asks the child "?" and needs
 * "ok" within 2 s.
 */
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define FD_MASTER 10
#define FD_SLAVE 11

static char slave_path[64];

static int raw_ok(const struct termios *t)
{
    return !(t->c_lflag & (ICANON | ECHO)) && !(t->c_oflag & OPOST);
}

/* The child's answer to "?": its own view of its controlling terminal. */
static void answer(int tty, pid_t fg)
{
    char why[128] = "";
    int fd = open("/dev/tty", O_RDWR | O_NOCTTY);
    struct termios t;
    struct winsize ws;
    if (fd < 0)
        snprintf(why, sizeof(why), "no /dev/tty: %s", strerror(errno));
    else if (tcgetpgrp(fd) != tcgetpgrp(tty))
        snprintf(why, sizeof(why), "/dev/tty is another terminal");
    else if (tcgetsid(tty) != getsid(0))
        snprintf(why, sizeof(why), "tcgetsid %d, session %d", (int)tcgetsid(tty), (int)getsid(0));
    else if (tcgetpgrp(tty) != fg)
        snprintf(why, sizeof(why), "foreground %d, expected %d", (int)tcgetpgrp(tty), (int)fg);
    else if (tcgetattr(tty, &t) || !raw_ok(&t))
        snprintf(why, sizeof(why), "not in raw mode");
    else if (ioctl(tty, TIOCGWINSZ, &ws) || ws.ws_row != 40 || ws.ws_col != 100)
        snprintf(why, sizeof(why), "window %dx%d", ws.ws_row, ws.ws_col);
    if (fd >= 0)
        close(fd);
    char msg[160];
    int n = snprintf(msg, sizeof(msg), "%s%s\n", why[0] ? "bad:" : "ok", why);
    if (write(tty, msg, n) != n)
        _exit(3);
}

static void child_main(void)
{
    signal(SIGTERM, SIG_DFL);
    if (setsid() < 0)
        _exit(2);
    int tty = open(slave_path, O_RDWR); /* becomes the controlling terminal */
    if (tty < 0 || ioctl(tty, TIOCSCTTY, 0))
        _exit(2);
    /* A grandchild in its own group, made the foreground group: it answers. */
    pid_t g = fork();
    if (g == 0) {
        setpgid(0, 0);
        while (tcgetpgrp(tty) != getpgrp())
            usleep(1000);
        for (;;) {
            char c;
            ssize_t r = read(tty, &c, 1);
            if (r == 1 && c == '?')
                answer(tty, getpgrp());
            else if (r == 0 || (r < 0 && errno != EINTR))
                _exit(0);
        }
    }
    setpgid(g, g);
    signal(SIGTTOU, SIG_IGN);
    if (tcsetpgrp(tty, g))
        _exit(2);
    for (;;)
        pause();
}

/* Sends "?" and reads a line from the master within 2 s. */
static int ask(char *buf, size_t len)
{
    if (write(FD_MASTER, "?", 1) != 1)
        return -1;
    size_t have = 0;
    int64_t end = zdtm_now_ns() + 2000000000LL;
    while (have + 1 < len && zdtm_now_ns() < end) {
        struct pollfd p = {.fd = FD_MASTER, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t r = read(FD_MASTER, buf + have, len - 1 - have);
        if (r <= 0)
            break;
        have += r;
        if (memchr(buf, '\n', have))
            break;
    }
    buf[have] = 0;
    return (int)have;
}

int main(int argc, char **argv)
{
    zdtm_init(argc, argv, NULL, "a pty with master and slave inside the tree, a session on it");
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    if (m < 0 || grantpt(m) || unlockpt(m) || dup2(m, FD_MASTER) != FD_MASTER)
        zdtm_die("posix_openpt: %s", strerror(errno));
    close(m);
    snprintf(slave_path, sizeof(slave_path), "%s", ptsname(FD_MASTER));
    int s = open(slave_path, O_RDWR | O_NOCTTY);
    if (s < 0 || dup2(s, FD_SLAVE) != FD_SLAVE)
        zdtm_die("open %s: %s", slave_path, strerror(errno));
    close(s);
    struct termios t;
    tcgetattr(FD_SLAVE, &t);
    cfmakeraw(&t);
    tcsetattr(FD_SLAVE, TCSANOW, &t);
    struct winsize ws = {.ws_row = 40, .ws_col = 100};
    ioctl(FD_SLAVE, TIOCSWINSZ, &ws);

    pid_t child = fork();
    if (child == 0)
        child_main();
    char buf[256];
    if (ask(buf, sizeof(buf)) <= 0 || strncmp(buf, "ok", 2))
        zdtm_die("setup: the child answered \"%s\"", buf);

    zdtm_ready();
    while (!zdtm_stop)
        zdtm_tick();

    char link[128], proc[64];
    if (strcmp(ptsname(FD_MASTER), slave_path))
        zdtm_fail("the master's slave is %s, expected %s", ptsname(FD_MASTER), slave_path);
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", FD_SLAVE);
    ssize_t n = readlink(proc, link, sizeof(link) - 1);
    link[n < 0 ? 0 : n] = 0;
    if (strcmp(link, slave_path))
        zdtm_fail("fd %d is %s, expected %s", FD_SLAVE, link, slave_path);
    if (tcgetattr(FD_MASTER, &t) || !raw_ok(&t))
        zdtm_fail("the terminal is not in raw mode any more");
    if (ioctl(FD_MASTER, TIOCGWINSZ, &ws) || ws.ws_row != 40 || ws.ws_col != 100)
        zdtm_fail("window %dx%d, expected 40x100", ws.ws_row, ws.ws_col);
    if (ask(buf, sizeof(buf)) <= 0 || strncmp(buf, "ok", 2))
        zdtm_fail("the child answered \"%s\"", buf);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    zdtm_finish();
}
