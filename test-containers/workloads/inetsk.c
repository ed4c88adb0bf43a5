/*
 * inetsk — TCP and UDP sockets survive checkpoint/restore.
 *
 *   inetsk --out F --ready F [--info FILE] [--closed 1]
 *
 * Holds, at fixed fd numbers:
 *   10  TCP listener on 127.0.0.1 (port picked by the kernel), SO_REUSEADDR, backlog 7
 *   11  UDP socket bound on 127.0.0.1, connected to 12
 *   12  UDP socket bound on 127.0.0.1, connected to 11
 *   13  TCP listener on [::1], IPV6_V6ONLY, SO_REUSEADDR (only if IPv6 loopback works)
 *   14  client end of a loopback TCP connection to 10: O_NONBLOCK, TCP_NODELAY; it
 *       wrote a pattern until its send queue was full (so part of it was never sent)
 *   15  server end (accepted from 10): SO_KEEPALIVE, 64 KiB receive buffer; wrote
 *       100000 bytes of another pattern that 14 has not read
 *   16, 17  (with IPv6) a connection over [::1] to 13: 30000 bytes unread each way
 * Nothing is read before the checkpoint. FILE gets "listen=P client=C" (ports).
 * After SIGTERM: the addresses of every socket are the same; the listeners accept new
 * connections (v4 and v6); the UDP pair exchanges datagrams both ways; the options
 * and flags are back; and the connection delivers both byte streams exactly, then a
 * new message each way. With --closed 1 (restored with --tcp-close), both ends of the
 * connection must instead report EOF or an error. Every wait is bounded (5 s).
 */
#include "zdtm.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

enum { FD_LISTEN = 10, FD_UDP1, FD_UDP2, FD_LISTEN6, FD_CLIENT, FD_SERVER, FD_CLIENT6, FD_SERVER6 };

#define V6_BYTES 30000

#define S2C_BYTES 100000
#define TIMEOUT_MS 5000

static struct sockaddr_storage addrs[32], peers[32];
static int have6;
static long closed_mode;
static const char *info_path;
static size_t c2s_bytes;

static int port_of(int fd)
{
    struct sockaddr_storage ss;
    socklen_t l = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &l))
        zdtm_die("getsockname %d: %s", fd, strerror(errno));
    return ss.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                                   : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

static void remember(int fd)
{
    socklen_t l = sizeof(addrs[fd]);
    getsockname(fd, (struct sockaddr *)&addrs[fd], &l);
    l = sizeof(peers[fd]);
    if (getpeername(fd, (struct sockaddr *)&peers[fd], &l))
        memset(&peers[fd], 0, sizeof(peers[fd]));
}

static void check_addrs(int fd)
{
    struct sockaddr_storage a, p;
    socklen_t l = sizeof(a);
    memset(&a, 0, sizeof(a));
    memset(&p, 0, sizeof(p));
    if (getsockname(fd, (struct sockaddr *)&a, &l))
        zdtm_fail("fd %d: getsockname: %s", fd, strerror(errno));
    else if (memcmp(&a, &addrs[fd], sizeof(a)))
        zdtm_fail("fd %d: local address changed (port %d)", fd, port_of(fd));
    l = sizeof(p);
    if (getpeername(fd, (struct sockaddr *)&p, &l))
        memset(&p, 0, sizeof(p));
    if (memcmp(&p, &peers[fd], sizeof(p)))
        zdtm_fail("fd %d: peer address changed", fd);
}

static int loopback(int family, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *)ss;
        s->sin_family = AF_INET;
        s->sin_port = htons(port);
        s->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return sizeof(*s);
    }
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(port);
    s6->sin6_addr = in6addr_loopback;
    return sizeof(*s6);
}

static int wait_fd(int fd, short ev)
{
    struct pollfd p = { .fd = fd, .events = ev };
    return poll(&p, 1, TIMEOUT_MS) == 1;
}

static void setup(void)
{
    int one = 1;
    struct sockaddr_storage ss;
    int l, fd;

    fd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    l = loopback(AF_INET, 0, &ss);
    if (bind(fd, (struct sockaddr *)&ss, l) || listen(fd, 7))
        zdtm_die("listen: %s", strerror(errno));
    zdtm_put_fd(fd, FD_LISTEN);

    zdtm_put_fd(socket(AF_INET, SOCK_DGRAM, 0), FD_UDP1);
    zdtm_put_fd(socket(AF_INET, SOCK_DGRAM, 0), FD_UDP2);
    l = loopback(AF_INET, 0, &ss);
    if (bind(FD_UDP1, (struct sockaddr *)&ss, l) || bind(FD_UDP2, (struct sockaddr *)&ss, l))
        zdtm_die("udp bind: %s", strerror(errno));
    loopback(AF_INET, port_of(FD_UDP2), &ss);
    if (connect(FD_UDP1, (struct sockaddr *)&ss, l))
        zdtm_die("udp connect: %s", strerror(errno));
    loopback(AF_INET, port_of(FD_UDP1), &ss);
    if (connect(FD_UDP2, (struct sockaddr *)&ss, l))
        zdtm_die("udp connect: %s", strerror(errno));

    fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd >= 0) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        /* Without it, the port could not be bound again while the connection the
         * test's --leave-running original closed is in TIME_WAIT. */
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        l = loopback(AF_INET6, 0, &ss);
        if (bind(fd, (struct sockaddr *)&ss, l) == 0 && listen(fd, 5) == 0) {
            zdtm_put_fd(fd, FD_LISTEN6);
            have6 = 1;
        } else {
            zdtm_info("no IPv6 loopback (%s): skipping the v6 listener", strerror(errno));
            close(fd);
        }
    }

    fd = socket(AF_INET, SOCK_STREAM, 0);
    l = loopback(AF_INET, port_of(FD_LISTEN), &ss);
    if (connect(fd, (struct sockaddr *)&ss, l))
        zdtm_die("connect: %s", strerror(errno));
    zdtm_put_fd(fd, FD_CLIENT);
    zdtm_put_fd(accept(FD_LISTEN, NULL, NULL), FD_SERVER);
    setsockopt(FD_CLIENT, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(FD_SERVER, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    int rcv = 64 * 1024;
    setsockopt(FD_SERVER, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
    int snd = 128 * 1024;
    setsockopt(FD_CLIENT, SOL_SOCKET, SO_SNDBUF, &snd, sizeof(snd));
    fcntl(FD_CLIENT, F_SETFL, O_NONBLOCK);

    /* Server to client: 100000 bytes, all of it fits in the client's receive queue
     * and the server's send queue. */
    unsigned char *b = malloc(S2C_BYTES);
    for (size_t i = 0; i < S2C_BYTES; i++)
        b[i] = zdtm_pat(i, 2);
    fcntl(FD_SERVER, F_SETFL, O_NONBLOCK);
    size_t off = 0;
    while (off < S2C_BYTES) {
        ssize_t r = write(FD_SERVER, b + off, S2C_BYTES - off);
        if (r > 0)
            off += r;
        else if (r < 0 && errno == EAGAIN)
            wait_fd(FD_SERVER, POLLOUT);
        else
            zdtm_die("write server: %s", strerror(errno));
    }
    fcntl(FD_SERVER, F_SETFL, 0);
    free(b);

    /* Client to server: until the client's send queue is full. */
    c2s_bytes += zdtm_fill_until_full(FD_CLIENT, c2s_bytes, 1, 4096);
    int unsent = 0, outq = 0, inq = 0;
    ioctl(FD_CLIENT, SIOCOUTQNSD, &unsent);
    ioctl(FD_CLIENT, SIOCOUTQ, &outq);
    ioctl(FD_SERVER, SIOCINQ, &inq);
    zdtm_info("client wrote %zu bytes: %d in its send queue (%d never sent), %d queued "
              "at the server", c2s_bytes, outq, unsent, inq);

    if (have6) {
        fd = socket(AF_INET6, SOCK_STREAM, 0);
        l = loopback(AF_INET6, port_of(FD_LISTEN6), &ss);
        if (connect(fd, (struct sockaddr *)&ss, l))
            zdtm_die("connect [::1]: %s", strerror(errno));
        zdtm_put_fd(fd, FD_CLIENT6);
        zdtm_put_fd(accept(FD_LISTEN6, NULL, NULL), FD_SERVER6);
        unsigned char *v = malloc(V6_BYTES);
        for (int dir = 0; dir < 2; dir++) {
            for (size_t i = 0; i < V6_BYTES; i++)
                v[i] = zdtm_pat(i, 3 + dir);
            if (write(dir ? FD_SERVER6 : FD_CLIENT6, v, V6_BYTES) != V6_BYTES)
                zdtm_die("write v6: %s", strerror(errno));
        }
        free(v);
    }
    for (int f = FD_LISTEN; f <= FD_SERVER6; f++)
        if ((f != FD_LISTEN6 && f < FD_CLIENT6) || have6)
            remember(f);
    if (info_path) {
        FILE *fi = fopen(info_path, "w");
        if (!fi)
            zdtm_die("%s: %s", info_path, strerror(errno));
        fprintf(fi, "listen=%d client=%d\n", port_of(FD_LISTEN), port_of(FD_CLIENT));
        fclose(fi);
    }
}

/* Reads `n` bytes of pattern `seed` from fd (poll-bounded). */
static void expect_stream(const char *what, int fd, size_t n, unsigned seed)
{
    unsigned char buf[8192];
    size_t have = 0;
    while (have < n) {
        if (!wait_fd(fd, POLLIN)) {
            zdtm_fail("%s: only %zu of %zu bytes arrived within %d ms", what, have, n, TIMEOUT_MS);
            return;
        }
        size_t want = n - have < sizeof(buf) ? n - have : sizeof(buf);
        ssize_t r = recv(fd, buf, want, MSG_DONTWAIT);
        if (r < 0 && errno == EAGAIN)
            continue;
        if (r <= 0) {
            zdtm_fail("%s: read returned %zd after %zu of %zu bytes (%s)", what, r, have, n,
                      r < 0 ? strerror(errno) : "EOF");
            return;
        }
        for (ssize_t i = 0; i < r; i++)
            if (buf[i] != zdtm_pat(have + i, seed)) {
                zdtm_fail("%s: byte %zu differs", what, have + i);
                return;
            }
        have += r;
    }
    /* Nothing more. */
    ssize_t r = recv(fd, buf, 1, MSG_DONTWAIT);
    if (r >= 0)
        zdtm_fail("%s: %zd unexpected bytes after the stream", what, r);
}

static void check_listener(int lfd, int family)
{
    struct sockaddr_storage ss;
    int l = loopback(family, port_of(lfd), &ss);
    int c = socket(family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (connect(c, (struct sockaddr *)&ss, l) && errno != EINPROGRESS) {
        zdtm_fail("connect to listener fd %d: %s", lfd, strerror(errno));
        close(c);
        return;
    }
    if (!wait_fd(lfd, POLLIN)) {
        zdtm_fail("listener fd %d: no connection to accept", lfd);
    } else {
        int a = accept(lfd, NULL, NULL);
        if (a < 0)
            zdtm_fail("accept on fd %d: %s", lfd, strerror(errno));
        else if (!wait_fd(c, POLLOUT) || write(c, "hi", 2) != 2 || !wait_fd(a, POLLIN))
            zdtm_fail("listener fd %d: new connection does not carry data", lfd);
        close(a);
    }
    close(c);
}

static void check_udp(int from, int to, const char *msg)
{
    if (send(from, msg, strlen(msg), 0) != (ssize_t)strlen(msg)) {
        zdtm_fail("udp send on fd %d: %s", from, strerror(errno));
        return;
    }
    char buf[64] = { 0 };
    if (!wait_fd(to, POLLIN) || recv(to, buf, sizeof(buf) - 1, MSG_DONTWAIT) < 0 ||
        strcmp(buf, msg))
        zdtm_fail("udp fd %d -> fd %d: got \"%s\"", from, to, buf);
}

static int getint(int fd, int level, int opt)
{
    int v = -1;
    socklen_t l = sizeof(v);
    getsockopt(fd, level, opt, &v, &l);
    return v;
}

static void check_closed(int fd)
{
    char b;
    /* Bounded: the socket is non-blocking or polled first. */
    wait_fd(fd, POLLIN);
    ssize_t r = recv(fd, &b, 1, MSG_DONTWAIT);
    if (r > 0)
        zdtm_fail("fd %d: still delivers data after --tcp-close", fd);
    else if (r < 0 && errno == EAGAIN)
        zdtm_fail("fd %d: connection still open after --tcp-close", fd);
}

static void verify(void)
{
    for (int f = FD_LISTEN; f <= FD_UDP2; f++)
        check_addrs(f);
    if (have6)
        check_addrs(FD_LISTEN6);
    check_listener(FD_LISTEN, AF_INET);
    if (have6)
        check_listener(FD_LISTEN6, AF_INET6);
    check_udp(FD_UDP1, FD_UDP2, "one to two");
    check_udp(FD_UDP2, FD_UDP1, "two to one");
    if (getint(FD_LISTEN, SOL_SOCKET, SO_REUSEADDR) != 1)
        zdtm_fail("listener lost SO_REUSEADDR");
    if (have6 && getint(FD_LISTEN6, IPPROTO_IPV6, IPV6_V6ONLY) != 1)
        zdtm_fail("v6 listener lost IPV6_V6ONLY");
    if (closed_mode) {
        check_closed(FD_CLIENT);
        check_closed(FD_SERVER);
        if (have6) {
            check_closed(FD_CLIENT6);
            check_closed(FD_SERVER6);
        }
        return;
    }
    check_addrs(FD_CLIENT);
    check_addrs(FD_SERVER);
    if (getint(FD_CLIENT, IPPROTO_TCP, TCP_NODELAY) != 1)
        zdtm_fail("client lost TCP_NODELAY");
    if (getint(FD_SERVER, SOL_SOCKET, SO_KEEPALIVE) != 1)
        zdtm_fail("server lost SO_KEEPALIVE");
    if (!(fcntl(FD_CLIENT, F_GETFL) & O_NONBLOCK))
        zdtm_fail("client lost O_NONBLOCK");
    if (fcntl(FD_SERVER, F_GETFL) & O_NONBLOCK)
        zdtm_fail("server became O_NONBLOCK");
    expect_stream("server to client", FD_CLIENT, S2C_BYTES, 2);
    expect_stream("client to server", FD_SERVER, c2s_bytes, 1);
    if (have6) {
        check_addrs(FD_CLIENT6);
        check_addrs(FD_SERVER6);
        expect_stream("v6 client to server", FD_SERVER6, V6_BYTES, 3);
        expect_stream("v6 server to client", FD_CLIENT6, V6_BYTES, 4);
    }
    /* And the connection carries new data both ways. */
    char b[8] = { 0 };
    if (write(FD_SERVER, "ping", 4) != 4 || !wait_fd(FD_CLIENT, POLLIN) ||
        recv(FD_CLIENT, b, 4, MSG_DONTWAIT) != 4 || strcmp(b, "ping"))
        zdtm_fail("server to client after restore: got \"%s\"", b);
    memset(b, 0, sizeof(b));
    if (write(FD_CLIENT, "pong", 4) != 4 || !wait_fd(FD_SERVER, POLLIN) ||
        recv(FD_SERVER, b, 4, MSG_DONTWAIT) != 4 || strcmp(b, "pong"))
        zdtm_fail("client to server after restore: got \"%s\"", b);
}

int main(int argc, char **argv)
{
    const struct zdtm_opt opts[] = {
        { "info", ZDTM_STR, &info_path, "FILE  where to write the ports" },
        { "closed", ZDTM_LONG, &closed_mode, "1   expect the connection closed (--tcp-close)" },
        { NULL, 0, NULL, NULL },
    };
    zdtm_init(argc, argv, opts, "TCP/UDP sockets: listeners, UDP pair, loopback connection");
    setup();
    zdtm_ready();
    while (!zdtm_stop)
        zdtm_tick();
    verify();
    zdtm_finish();
}
