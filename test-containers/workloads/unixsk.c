/* unixsk — unix sockets of every kind, with state in flight, checked after restore:
 *  - a stream socketpair shared with a forked child, data queued both ways;
 *  - a listener bound to a path: one accepted connection with data both ways (names
 *    checked with getsockname/getpeername) and 2 connections not yet accepted;
 *  - a datagram socket bound to an abstract name with datagrams queued from a
 *    connected unnamed sender and from a sender bound to a path;
 *  - a seqpacket pair with messages queued both ways (boundaries checked);
 *  - SCM_RIGHTS in flight, not yet received: a pipe (with data), a regular file (with
 *    its offset) and one end of a socketpair (with data queued in it);
 *  - a stream pair with one side shut down for writing, a pair whose peer was closed
 *    after writing, a datagram socket bound to a path that was then unlinked,
 *    SO_PASSCRED.
 * --ext PATH instead: only a stream socket connected to a listener at PATH held by
 * someone else; on SIGTERM it writes "ping\n" and expects "pong\n" back (with
 * --extdg PATH2, first sends "dgping" on a dgram socket connected to PATH2).
 */
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *tmpdir = "/tmp";
static const char *ext_path, *extdg_path;
static volatile sig_atomic_t child_go;

static void on_usr1(int s)
{
    (void)s;
    child_go = 1;
}

static socklen_t mkaddr(struct sockaddr_un *a, const char *name, int abstract)
{
    memset(a, 0, sizeof(*a));
    a->sun_family = AF_UNIX;
    if (abstract) {
        size_t n = strlen(name);
        memcpy(a->sun_path + 1, name, n);
        return offsetof(struct sockaddr_un, sun_path) + 1 + n;
    }
    snprintf(a->sun_path, sizeof(a->sun_path), "%s", name);
    return offsetof(struct sockaddr_un, sun_path) + strlen(a->sun_path) + 1;
}

static void must(int ok, const char *what)
{
    if (!ok)
        zdtm_die("%s: %s", what, strerror(errno));
}

static void xsend(int fd, const char *s)
{
    must(send(fd, s, strlen(s), MSG_DONTWAIT) == (ssize_t)strlen(s), "send");
}

static int wait_in(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r;
    do {
        r = poll(&p, 1, ms);
    } while (r < 0 && errno == EINTR);
    return r > 0;
}

/* One message (or whatever a stream gives) into buf, NUL-terminated; -1 if none comes. */
static ssize_t xrecv(int fd, char *buf, size_t len)
{
    if (!wait_in(fd, 3000))
        return -1;
    ssize_t n = recv(fd, buf, len - 1, MSG_DONTWAIT);
    if (n >= 0)
        buf[n] = 0;
    return n;
}

/* Reads exactly strlen(want) bytes from a stream and compares. */
static void expect_stream(int fd, const char *want, const char *what)
{
    char buf[256];
    size_t got = 0, n = strlen(want);
    while (got < n) {
        if (!wait_in(fd, 3000)) {
            zdtm_fail("%s: timed out after %zu of %zu bytes", what, got, n);
            return;
        }
        ssize_t r = recv(fd, buf + got, n - got, MSG_DONTWAIT);
        if (r <= 0) {
            zdtm_fail("%s: recv %zd (%s) after %zu bytes", what, r, strerror(errno), got);
            return;
        }
        got += r;
    }
    buf[got] = 0;
    if (strcmp(buf, want))
        zdtm_fail("%s: got '%s', want '%s'", what, buf, want);
}

static void expect_msg(int fd, const char *want, const char *what)
{
    char buf[256];
    ssize_t n = xrecv(fd, buf, sizeof(buf));
    if (n < 0)
        zdtm_fail("%s: no message (%s)", what, strerror(errno));
    else if (strcmp(buf, want))
        zdtm_fail("%s: got '%s' (%zd bytes), want '%s'", what, buf, n, want);
}

static void expect_eof(int fd, const char *what)
{
    char c;
    if (!wait_in(fd, 3000)) {
        zdtm_fail("%s: no EOF", what);
        return;
    }
    ssize_t r = recv(fd, &c, 1, MSG_DONTWAIT);
    if (r != 0)
        zdtm_fail("%s: want EOF, got %zd (%s)", what, r, strerror(errno));
}

static void expect_name(int fd, int peer, const char *name, int abstract, const char *what)
{
    struct sockaddr_un a, w;
    socklen_t len = sizeof(a), wl = 0;
    memset(&a, 0, sizeof(a));
    if ((peer ? getpeername(fd, (void *)&a, &len) : getsockname(fd, (void *)&a, &len)) < 0) {
        zdtm_fail("%s: get%sname: %s", what, peer ? "peer" : "sock", strerror(errno));
        return;
    }
    if (name) {
        wl = mkaddr(&w, name, abstract);
    } else {
        memset(&w, 0, sizeof(w));
        w.sun_family = AF_UNIX;
        wl = offsetof(struct sockaddr_un, sun_path);
    }
    if (len != wl || memcmp(&a, &w, wl > offsetof(struct sockaddr_un, sun_path) ? wl : 2))
        zdtm_fail("%s: %s name differs (len %u, want %u, '%s')", what, peer ? "peer" : "own",
                  len, wl, a.sun_path[0] ? a.sun_path : a.sun_path + 1);
}

static void no_peek_off(int fd, const char *what)
{
    int v = 0;
    socklen_t l = sizeof(v);
    if (getsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &v, &l) < 0 || v != -1)
        zdtm_fail("%s: SO_PEEK_OFF is %d, want -1 (dump left it set)", what, v);
}

static int ext_mode(void)
{
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a;
    socklen_t l = mkaddr(&a, ext_path, 0);
    must(s >= 0 && connect(s, (void *)&a, l) == 0, "connect to the external listener");
    int d = -1;
    if (extdg_path) {
        d = socket(AF_UNIX, SOCK_DGRAM, 0);
        l = mkaddr(&a, extdg_path, 0);
        must(d >= 0 && connect(d, (void *)&a, l) == 0, "connect to the external dgram socket");
    }
    zdtm_ready();
    while (!zdtm_stop)
        zdtm_tick();
    if (d >= 0 && send(d, "dgping", 6, MSG_DONTWAIT) != 6)
        zdtm_fail("send to the external dgram peer: %s", strerror(errno));
    xsend(s, "ping\n");
    expect_stream(s, "pong\n", "external peer reply");
    expect_name(s, 1, ext_path, 0, "external peer name");
    zdtm_finish();
}

int main(int argc, char **argv)
{
    static const struct zdtm_opt opts[] = {
        {"tmpdir", ZDTM_STR, &tmpdir, "DIR  where socket files and the passed file go"},
        {"ext", ZDTM_STR, &ext_path, "PATH  only connect to an external listener at PATH"},
        {"extdg", ZDTM_STR, &extdg_path, "PATH  with --ext: also a dgram socket connected to PATH"},
        {0},
    };
    zdtm_init(argc, argv, opts, "unix sockets of every kind, with data in flight");
    if (ext_path)
        return ext_mode();

    char lpath[200], bpath[200], upath[200], fpath[200], abs_name[64];
    snprintf(lpath, sizeof(lpath), "%s/listen.sock", tmpdir);
    snprintf(bpath, sizeof(bpath), "%s/sender.sock", tmpdir);
    snprintf(upath, sizeof(upath), "%s/unlinked.sock", tmpdir);
    snprintf(fpath, sizeof(fpath), "%s/passed.txt", tmpdir);
    snprintf(abs_name, sizeof(abs_name), "cryo-unixsk-%d", getpid());
    struct sockaddr_un a;
    socklen_t al;

    /* 1. A stream pair shared with a child. */
    int cp[2];
    must(socketpair(AF_UNIX, SOCK_STREAM, 0, cp) == 0, "socketpair");
    struct sigaction sa = {.sa_handler = on_usr1};
    sigaction(SIGUSR1, &sa, NULL);
    pid_t child = fork();
    must(child >= 0, "fork");
    if (child == 0) {
        close(cp[0]);
        while (!child_go)
            usleep(10000);
        char buf[64];
        size_t got = 0;
        const char *want = "to-child-queued";
        while (got < strlen(want) && wait_in(cp[1], 3000)) {
            ssize_t r = recv(cp[1], buf + got, strlen(want) - got, MSG_DONTWAIT);
            if (r <= 0)
                break;
            got += r;
        }
        buf[got] = 0;
        const char *reply = strcmp(buf, want) ? "BAD" : "OK!";
        send(cp[1], reply, 3, 0);
        _exit(0);
    }
    xsend(cp[0], "to-child-queued");

    /* 2. A listener: one accepted connection, two waiting. */
    unlink(lpath);
    int lst = socket(AF_UNIX, SOCK_STREAM, 0);
    al = mkaddr(&a, lpath, 0);
    must(lst >= 0 && bind(lst, (void *)&a, al) == 0 && listen(lst, 8) == 0, "listen");
    int c1 = socket(AF_UNIX, SOCK_STREAM, 0);
    must(connect(c1, (void *)&a, al) == 0, "connect c1");
    int a1 = accept(lst, NULL, NULL);
    must(a1 >= 0, "accept");
    xsend(c1, "client-to-server");
    xsend(c1, "+more");
    xsend(a1, "server-to-client");
    int c2 = socket(AF_UNIX, SOCK_STREAM, 0), c3 = socket(AF_UNIX, SOCK_STREAM, 0);
    must(connect(c2, (void *)&a, al) == 0 && connect(c3, (void *)&a, al) == 0, "connect c2/c3");

    /* 3. Datagrams to an abstract name: from a connected unnamed sender and a bound one. */
    int dg = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un da;
    socklen_t dal = mkaddr(&da, abs_name, 1);
    must(dg >= 0 && bind(dg, (void *)&da, dal) == 0, "bind abstract");
    int ds = socket(AF_UNIX, SOCK_DGRAM, 0);
    must(connect(ds, (void *)&da, dal) == 0, "connect dgram");
    xsend(ds, "dg1");
    xsend(ds, "dg-two");
    unlink(bpath);
    int db = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un ba;
    socklen_t bal = mkaddr(&ba, bpath, 0);
    must(bind(db, (void *)&ba, bal) == 0, "bind sender");
    must(sendto(db, "from-bound", 10, 0, (void *)&da, dal) == 10, "sendto");
    xsend(ds, "dg-three-3");
    int passcred = 1;
    must(setsockopt(dg, SOL_SOCKET, SO_PASSCRED, &passcred, sizeof(passcred)) == 0, "passcred");

    /* 4. Seqpacket. */
    int sq[2];
    must(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sq) == 0, "seqpacket pair");
    xsend(sq[0], "a");
    xsend(sq[0], "bb");
    xsend(sq[0], "ccc");
    xsend(sq[1], "zz");

    /* 5. Descriptors in flight. */
    int rp[2], pp[2], wp[2];
    must(socketpair(AF_UNIX, SOCK_STREAM, 0, rp) == 0, "rights pair");
    must(pipe(pp) == 0, "pipe");
    must(write(pp[1], "through-pipe", 12) == 12, "write pipe");
    int ff = open(fpath, O_RDWR | O_CREAT | O_TRUNC, 0600);
    must(ff >= 0 && write(ff, "file-content", 12) == 12 && lseek(ff, 5, SEEK_SET) == 5, "file");
    must(socketpair(AF_UNIX, SOCK_STREAM, 0, wp) == 0, "inner pair");
    xsend(wp[0], "inside");
    {
        int fds[3] = {pp[0], ff, wp[1]};
        char cbuf[CMSG_SPACE(sizeof(fds))];
        struct iovec iov = {.iov_base = "fds", .iov_len = 3};
        struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                           .msg_controllen = sizeof(cbuf)};
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(fds));
        memcpy(CMSG_DATA(c), fds, sizeof(fds));
        must(sendmsg(rp[0], &m, 0) == 3, "sendmsg rights");
    }
    close(pp[0]);
    close(ff);
    close(wp[1]);

    /* 6. Shutdown, closed peer, unlinked name. */
    int sh[2], cl[2];
    must(socketpair(AF_UNIX, SOCK_STREAM, 0, sh) == 0, "shutdown pair");
    xsend(sh[0], "bye");
    must(shutdown(sh[0], SHUT_WR) == 0, "shutdown");
    must(socketpair(AF_UNIX, SOCK_STREAM, 0, cl) == 0, "closed pair");
    xsend(cl[0], "last words");
    close(cl[0]);
    unlink(upath);
    int ul = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un ua;
    socklen_t ual = mkaddr(&ua, upath, 0);
    must(ul >= 0 && bind(ul, (void *)&ua, ual) == 0 && unlink(upath) == 0, "unlinked name");

    zdtm_ready();
    while (!zdtm_stop)
        zdtm_tick();

    /* Checks. */
    no_peek_off(a1, "accepted socket");
    no_peek_off(dg, "dgram socket");

    /* 1 */
    kill(child, SIGUSR1);
    {
        char buf[8];
        if (xrecv(cp[0], buf, 4) != 3 || strcmp(buf, "OK!"))
            zdtm_fail("child: did not get its queued data back (reply '%s')", buf);
        int st;
        for (int i = 0; i < 300 && waitpid(child, &st, WNOHANG) == 0; i++)
            usleep(10000);
    }
    /* 2 */
    expect_stream(a1, "client-to-server+more", "accepted socket queue");
    expect_stream(c1, "server-to-client", "client queue");
    expect_name(a1, 0, lpath, 0, "accepted socket");
    expect_name(a1, 1, NULL, 0, "accepted socket's peer");
    expect_name(c1, 1, lpath, 0, "client's peer");
    expect_name(c1, 0, NULL, 0, "client");
    expect_name(lst, 0, lpath, 0, "listener");
    fcntl(lst, F_SETFL, O_NONBLOCK);
    int s2 = wait_in(lst, 3000) ? accept(lst, NULL, NULL) : -1;
    int s3 = wait_in(lst, 3000) ? accept(lst, NULL, NULL) : -1;
    if (s2 < 0 || s3 < 0) {
        zdtm_fail("pending connections: accept failed (%s)", strerror(errno));
    } else {
        xsend(s2, "first");
        xsend(s3, "second");
        expect_stream(c2, "first", "first pending connection (order)");
        expect_stream(c3, "second", "second pending connection (order)");
        xsend(c3, "back");
        expect_stream(s3, "back", "pending connection, other way");
    }
    int c4 = socket(AF_UNIX, SOCK_STREAM, 0);
    al = mkaddr(&a, lpath, 0);
    if (connect(c4, (void *)&a, al) < 0 || !wait_in(lst, 3000) || accept(lst, NULL, NULL) < 0)
        zdtm_fail("new connection to the listener after restore: %s", strerror(errno));
    /* 3 */
    {
        const char *want[] = {"dg1", "dg-two", "from-bound", "dg-three-3"};
        for (int i = 0; i < 4; i++) {
            char buf[64];
            struct sockaddr_un from;
            socklen_t fl = sizeof(from);
            memset(&from, 0, sizeof(from));
            if (!wait_in(dg, 3000)) {
                zdtm_fail("datagram %d missing", i);
                break;
            }
            ssize_t n = recvfrom(dg, buf, sizeof(buf) - 1, MSG_DONTWAIT, (void *)&from, &fl);
            if (n < 0) {
                zdtm_fail("datagram %d: %s", i, strerror(errno));
                break;
            }
            buf[n] = 0;
            if (strcmp(buf, want[i]))
                zdtm_fail("datagram %d: got '%s', want '%s'", i, buf, want[i]);
            int named = i == 2;
            if (named && (fl != bal || strcmp(from.sun_path, bpath)))
                zdtm_fail("datagram %d: sender '%s', want %s", i, from.sun_path, bpath);
            if (!named && fl > offsetof(struct sockaddr_un, sun_path))
                zdtm_fail("datagram %d: sender should be unnamed", i);
        }
        expect_name(dg, 0, abs_name, 1, "abstract dgram socket");
        expect_name(ds, 1, abs_name, 1, "connected dgram sender's peer");
        expect_name(db, 0, bpath, 0, "bound dgram sender");
        xsend(ds, "after");
        expect_msg(dg, "after", "dgram after restore");
        int pc = 0;
        socklen_t l = sizeof(pc);
        if (getsockopt(dg, SOL_SOCKET, SO_PASSCRED, &pc, &l) < 0 || !pc)
            zdtm_fail("SO_PASSCRED lost");
    }
    /* 4 */
    expect_msg(sq[1], "a", "seqpacket 1");
    expect_msg(sq[1], "bb", "seqpacket 2");
    expect_msg(sq[1], "ccc", "seqpacket 3");
    expect_msg(sq[0], "zz", "seqpacket other way");
    /* 5 */
    {
        char buf[16], cbuf[CMSG_SPACE(sizeof(int) * 3)];
        struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
        struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                           .msg_controllen = sizeof(cbuf)};
        ssize_t n = wait_in(rp[1], 3000) ? recvmsg(rp[1], &m, MSG_DONTWAIT) : -1;
        struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&m) : NULL;
        if (n != 3 || memcmp(buf, "fds", 3) || !c || c->cmsg_type != SCM_RIGHTS ||
            c->cmsg_len != CMSG_LEN(sizeof(int) * 3)) {
            zdtm_fail("SCM_RIGHTS message: got %zd bytes, cmsg %p", n, (void *)c);
        } else {
            int fds[3];
            memcpy(fds, CMSG_DATA(c), sizeof(fds));
            char pb[32] = {0};
            ssize_t r = read(fds[0], pb, 12);
            if (r != 12 || strcmp(pb, "through-pipe"))
                zdtm_fail("passed pipe: got '%s'", pb);
            if (write(pp[1], "more", 4) != 4 || read(fds[0], pb, 4) != 4 || memcmp(pb, "more", 4))
                zdtm_fail("passed pipe is not connected to our write end");
            memset(pb, 0, sizeof(pb));
            r = read(fds[1], pb, sizeof(pb) - 1);
            if (r != 7 || strcmp(pb, "content"))
                zdtm_fail("passed file: got '%s' (offset lost?)", pb);
            expect_stream(fds[2], "inside", "socket passed in flight");
            xsend(wp[0], "again");
            expect_stream(fds[2], "again", "socket passed in flight, after restore");
        }
    }
    /* 6 */
    expect_stream(sh[1], "bye", "shut-down pair data");
    expect_eof(sh[1], "shut-down pair");
    xsend(sh[1], "still");
    expect_stream(sh[0], "still", "shut-down pair, other way");
    expect_stream(cl[1], "last words", "closed peer's data");
    expect_eof(cl[1], "closed peer");
    expect_name(ul, 0, upath, 0, "socket with an unlinked name");
    if (access(upath, F_OK) == 0)
        zdtm_fail("%s exists again", upath);
    zdtm_finish();
}
