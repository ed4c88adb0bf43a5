/*
 * tcphalf — half-closed TCP connections and queued UDP datagrams survive
 * checkpoint/restore.
 *
 *   tcphalf --out F --ready F --info FILE [--ext 1] [--extudp PORT]
 *
 * Holds, at fixed fd numbers:
 *   10  TCP listener on 127.0.0.1
 *   11  C: client of a loopback connection to 10; wrote C2S_BYTES then
 *       shutdown(SHUT_WR): FIN_WAIT2; has S2C_BYTES unread
 *   12  S: its server end: CLOSE_WAIT, with C2S_BYTES then the FIN unread; wrote
 *       S2C_BYTES
 *   13  (--ext 1) A1: accepted from the test process, which wrote EXT_BYTES then shut
 *       down its write side: CLOSE_WAIT with the data and FIN unread
 *   14  (--ext 1) A2: accepted from the test process; wrote "bye" then
 *       shutdown(SHUT_WR): FIN_WAIT2
 *   15  C2: client of a second loopback connection: wrote until its send queue was
 *       full (part of it never sent), shut down its write side (its FIN queued after
 *       that data, not sent), then got S2's FIN: CLOSING
 *   16  S2: its server end, reads nothing, shut down its write side: FIN_WAIT2
 *   20  UDP socket R on 127.0.0.1 with 3 datagrams queued (unread): from 21, 22, 21;
 *       with --extudp PORT a 4th one, from 127.0.0.1:PORT (the test process)
 *   21, 22  UDP senders U1, U2 on 127.0.0.1
 * FILE gets "listen=P udp=Q" once the in-tree part is set up; with --ext the workload
 * then waits (10 s at most) for the test's two connections.
 * After SIGTERM: S reads the data then EOF, and can still write to C; C reads S's data
 * and that reply, cannot write (EPIPE), and sees EOF once S shuts down. A1 reads the
 * data then EOF and writes "reply-ext"; A2 cannot write (EPIPE) and reads "late data"
 * that the test sends after the restore. R gives its datagrams in order with their
 * contents and sender addresses, then nothing. Every wait is bounded.
 */
#include "zdtm.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { FD_LISTEN = 10, FD_C, FD_S, FD_A1, FD_A2, FD_C2, FD_S2, FD_R = 20, FD_U1, FD_U2 };

#define C2S_BYTES 5000
#define S2C_BYTES 3000
#define EXT_BYTES 2000
#define TIMEOUT_MS 5000

static long ext, ext_udp;
static size_t c2_bytes;
static const char *info_path;

static const char *dgrams[] = { "first, from one", "second, from two", "third, from one: longer" };
static const int dgram_from[] = { FD_U1, FD_U2, FD_U1 };
static const char *ext_dgram = "fourth, from outside";

static struct sockaddr_in lo(int port)
{
    struct sockaddr_in s = { .sin_family = AF_INET, .sin_port = htons(port) };
    s.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return s;
}

static int port_of(int fd)
{
    struct sockaddr_in s;
    socklen_t l = sizeof(s);
    if (getsockname(fd, (struct sockaddr *)&s, &l))
        zdtm_die("getsockname %d: %s", fd, strerror(errno));
    return ntohs(s.sin_port);
}

static int wait_fd(int fd, short ev, int ms)
{
    struct pollfd p = { .fd = fd, .events = ev };
    return poll(&p, 1, ms) == 1;
}

static int tcp_state(int fd)
{
    struct tcp_info ti;
    socklen_t l = sizeof(ti);
    memset(&ti, 0, sizeof(ti));
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l))
        return -1;
    return ti.tcpi_state;
}

/* Waits (bounded) for fd to reach state `want`; returns the state it is in. */
static int wait_state(int fd, int want, int ms)
{
    int st = tcp_state(fd);
    for (int t = 0; st != want && t < ms; t += 5) {
        usleep(5000);
        st = tcp_state(fd);
    }
    return st;
}

static void write_pat(int fd, size_t n, unsigned seed)
{
    unsigned char *b = malloc(n);
    for (size_t i = 0; i < n; i++)
        b[i] = zdtm_pat(i, seed);
    if (write(fd, b, n) != (ssize_t)n)
        zdtm_die("write fd %d: %s", fd, strerror(errno));
    free(b);
}

static void setup(void)
{
    int one = 1;
    struct sockaddr_in a = lo(0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 8))
        zdtm_die("listen: %s", strerror(errno));
    zdtm_put_fd(fd, FD_LISTEN);
    a = lo(port_of(FD_LISTEN));
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)))
        zdtm_die("connect: %s", strerror(errno));
    zdtm_put_fd(fd, FD_C);
    zdtm_put_fd(accept(FD_LISTEN, NULL, NULL), FD_S);
    write_pat(FD_C, C2S_BYTES, 1);
    write_pat(FD_S, S2C_BYTES, 2);
    if (shutdown(FD_C, SHUT_WR))
        zdtm_die("shutdown: %s", strerror(errno));
    if (wait_state(FD_C, TCP_FIN_WAIT2, TIMEOUT_MS) != TCP_FIN_WAIT2 ||
        wait_state(FD_S, TCP_CLOSE_WAIT, TIMEOUT_MS) != TCP_CLOSE_WAIT)
        zdtm_die("loopback pair: states %d/%d", tcp_state(FD_C), tcp_state(FD_S));

    /* C2/S2: CLOSING (our FIN behind unsent data, theirs received) / FIN_WAIT2. */
    a = lo(port_of(FD_LISTEN));
    fd = socket(AF_INET, SOCK_STREAM, 0);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)))
        zdtm_die("connect: %s", strerror(errno));
    zdtm_put_fd(fd, FD_C2);
    zdtm_put_fd(accept(FD_LISTEN, NULL, NULL), FD_S2);
    setsockopt(FD_S2, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    fcntl(FD_C2, F_SETFL, O_NONBLOCK);
    c2_bytes += zdtm_fill_until_full(FD_C2, c2_bytes, 4, 1024);
    if (shutdown(FD_C2, SHUT_WR) || shutdown(FD_S2, SHUT_WR))
        zdtm_die("shutdown C2/S2: %s", strerror(errno));
    if (wait_state(FD_C2, TCP_CLOSING, TIMEOUT_MS) != TCP_CLOSING ||
        wait_state(FD_S2, TCP_FIN_WAIT2, TIMEOUT_MS) != TCP_FIN_WAIT2)
        zdtm_die("second pair: states %d/%d", tcp_state(FD_C2), tcp_state(FD_S2));
    zdtm_info("C2 wrote %zu bytes", c2_bytes);

    zdtm_put_fd(socket(AF_INET, SOCK_DGRAM, 0), FD_R);
    zdtm_put_fd(socket(AF_INET, SOCK_DGRAM, 0), FD_U1);
    zdtm_put_fd(socket(AF_INET, SOCK_DGRAM, 0), FD_U2);
    a = lo(0);
    if (bind(FD_R, (struct sockaddr *)&a, sizeof(a)) || bind(FD_U1, (struct sockaddr *)&a, sizeof(a)) ||
        bind(FD_U2, (struct sockaddr *)&a, sizeof(a)))
        zdtm_die("udp bind: %s", strerror(errno));
    a = lo(port_of(FD_R));
    for (int i = 0; i < 3; i++)
        if (sendto(dgram_from[i], dgrams[i], strlen(dgrams[i]), 0, (struct sockaddr *)&a, sizeof(a)) < 0)
            zdtm_die("udp send: %s", strerror(errno));

    if (info_path) {
        FILE *fi = fopen(info_path, "w");
        if (!fi)
            zdtm_die("%s: %s", info_path, strerror(errno));
        fprintf(fi, "listen=%d udp=%d\n", port_of(FD_LISTEN), port_of(FD_R));
        fclose(fi);
    }
    if (!ext)
        return;
    /* The test connects twice: A1 first (it writes EXT_BYTES then shuts down), A2. */
    for (int want = FD_A1; want <= FD_A2; want++) {
        if (!wait_fd(FD_LISTEN, POLLIN, 10000))
            zdtm_die("no connection from the test");
        zdtm_put_fd(accept(FD_LISTEN, NULL, NULL), want);
    }
    if (write(FD_A2, "bye", 3) != 3 || shutdown(FD_A2, SHUT_WR))
        zdtm_die("A2: %s", strerror(errno));
    if (wait_state(FD_A1, TCP_CLOSE_WAIT, 10000) != TCP_CLOSE_WAIT ||
        wait_state(FD_A2, TCP_FIN_WAIT2, TIMEOUT_MS) != TCP_FIN_WAIT2)
        zdtm_die("external connections: states %d/%d", tcp_state(FD_A1), tcp_state(FD_A2));
    /* All of the test's data is queued once its FIN is. */
}

/* Reads exactly n bytes of pattern `seed` (or the string `s`), poll-bounded. */
static int expect(const char *what, int fd, size_t n, unsigned seed, const char *s)
{
    unsigned char buf[8192];
    size_t have = 0;
    while (have < n) {
        if (!wait_fd(fd, POLLIN, TIMEOUT_MS)) {
            zdtm_fail("%s: only %zu of %zu bytes within %d ms", what, have, n, TIMEOUT_MS);
            return 0;
        }
        size_t want = n - have < sizeof(buf) ? n - have : sizeof(buf);
        ssize_t r = recv(fd, buf, want, MSG_DONTWAIT);
        if (r < 0 && errno == EAGAIN)
            continue;
        if (r <= 0) {
            zdtm_fail("%s: read returned %zd after %zu of %zu bytes (%s)", what, r, have, n,
                      r < 0 ? strerror(errno) : "EOF");
            return 0;
        }
        for (ssize_t i = 0; i < r; i++)
            if (buf[i] != (s ? (unsigned char)s[have + i] : zdtm_pat(have + i, seed))) {
                zdtm_fail("%s: byte %zu differs", what, have + i);
                return 0;
            }
        have += r;
    }
    return 1;
}

/* The next read is EOF (bounded). */
static void expect_eof(const char *what, int fd)
{
    char b;
    if (!wait_fd(fd, POLLIN, TIMEOUT_MS)) {
        zdtm_fail("%s: no EOF within %d ms (the FIN was lost)", what, TIMEOUT_MS);
        return;
    }
    ssize_t r = recv(fd, &b, 1, MSG_DONTWAIT);
    if (r != 0)
        zdtm_fail("%s: read returned %zd (%s), not EOF", what, r, r < 0 ? strerror(errno) : "data");
}

static void expect_epipe(const char *what, int fd)
{
    ssize_t r = send(fd, "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r >= 0 || errno != EPIPE)
        zdtm_fail("%s: write after shutdown returned %zd (%s), not EPIPE", what, r,
                  r < 0 ? strerror(errno) : "written");
}

static void check_state(const char *what, int fd, int want)
{
    int st = wait_state(fd, want, 3000);
    if (st != want)
        zdtm_fail("%s: TCP state %d, not %d", what, st, want);
}

static void verify_udp(void)
{
    int n = ext_udp ? 4 : 3;
    for (int i = 0; i < n; i++) {
        char buf[256] = { 0 };
        struct sockaddr_in from;
        socklen_t l = sizeof(from);
        memset(&from, 0, sizeof(from));
        if (!wait_fd(FD_R, POLLIN, TIMEOUT_MS)) {
            zdtm_fail("udp: datagram %d missing", i);
            return;
        }
        ssize_t r = recvfrom(FD_R, buf, sizeof(buf) - 1, MSG_DONTWAIT, (struct sockaddr *)&from, &l);
        const char *want = i < 3 ? dgrams[i] : ext_dgram;
        int want_port = i < 3 ? port_of(dgram_from[i]) : (int)ext_udp;
        if (r < 0 || strcmp(buf, want))
            zdtm_fail("udp: datagram %d is \"%s\", not \"%s\"", i, buf, want);
        if (from.sin_family != AF_INET || from.sin_addr.s_addr != htonl(INADDR_LOOPBACK) ||
            ntohs(from.sin_port) != want_port)
            zdtm_fail("udp: datagram %d from %s:%d, not 127.0.0.1:%d", i, inet_ntoa(from.sin_addr),
                      ntohs(from.sin_port), want_port);
    }
    char b;
    if (recv(FD_R, &b, 1, MSG_DONTWAIT) >= 0)
        zdtm_fail("udp: more datagrams than queued");
    /* The senders still work from their addresses. */
    struct sockaddr_in a = lo(port_of(FD_R));
    if (sendto(FD_U2, "after", 5, 0, (struct sockaddr *)&a, sizeof(a)) != 5)
        zdtm_fail("udp: send after restore: %s", strerror(errno));
    else if (!wait_fd(FD_R, POLLIN, TIMEOUT_MS))
        zdtm_fail("udp: datagram sent after restore not received");
}

static void verify(void)
{
    check_state("S (CLOSE_WAIT)", FD_S, TCP_CLOSE_WAIT);
    check_state("C (FIN_WAIT2)", FD_C, TCP_FIN_WAIT2);
    if (expect("C to S", FD_S, C2S_BYTES, 1, NULL))
        expect_eof("S after the data", FD_S);
    if (write(FD_S, "reply", 5) != 5)
        zdtm_fail("S: write in CLOSE_WAIT: %s", strerror(errno));
    if (expect("S to C", FD_C, S2C_BYTES, 2, NULL))
        expect("S's reply", FD_C, 5, 0, "reply");
    expect_epipe("C", FD_C);
    if (shutdown(FD_S, SHUT_WR))
        zdtm_fail("S: shutdown: %s", strerror(errno));
    expect_eof("C after S's shutdown", FD_C);
    /* C2 comes back as LAST_ACK (CLOSING is restored so): the same for the program. */
    int st = tcp_state(FD_C2);
    if (st != TCP_CLOSING && st != TCP_LAST_ACK)
        zdtm_fail("C2: TCP state %d, not CLOSING or LAST_ACK", st);
    expect_eof("C2 (S2 shut down)", FD_C2);
    expect_epipe("C2", FD_C2);
    if (expect("C2 to S2", FD_S2, c2_bytes, 4, NULL))
        expect_eof("S2 after the data", FD_S2);
    if (ext) {
        check_state("A1 (CLOSE_WAIT)", FD_A1, TCP_CLOSE_WAIT);
        check_state("A2 (FIN_WAIT2)", FD_A2, TCP_FIN_WAIT2);
        if (expect("test to A1", FD_A1, EXT_BYTES, 3, NULL))
            expect_eof("A1 after the data", FD_A1);
        if (write(FD_A1, "reply-ext", 9) != 9)
            zdtm_fail("A1: write in CLOSE_WAIT: %s", strerror(errno));
        expect_epipe("A2", FD_A2);
        expect("late data", FD_A2, 9, 0, "late data");
    }
    verify_udp();
}

int main(int argc, char **argv)
{
    const struct zdtm_opt opts[] = {
        { "info", ZDTM_STR, &info_path, "FILE  where to write the ports" },
        { "ext", ZDTM_LONG, &ext, "1   also two connections from the test process" },
        { "extudp", ZDTM_LONG, &ext_udp, "PORT  a 4th datagram comes from 127.0.0.1:PORT" },
        { NULL, 0, NULL, NULL },
    };
    zdtm_init(argc, argv, opts, "half-closed TCP connections, queued UDP datagrams");
    signal(SIGPIPE, SIG_IGN);
    setup();
    zdtm_ready();
    while (!zdtm_stop)
        zdtm_tick();
    verify();
    zdtm_finish();
}
