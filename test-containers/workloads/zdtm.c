/* zdtm.c — see zdtm.h for the protocol. Only libc. */
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

volatile sig_atomic_t zdtm_stop;
const char *zdtm_prog = "workload";

static const char *out_path, *ready_path;
static int out_fd = -1; /* zdtm_open_out() */
static char fail_reason[512];
static int fail_count;

static void on_sigterm(int sig)
{
    (void)sig;
    zdtm_stop = 1;
}

static void usage(const struct zdtm_opt *opts, const char *what)
{
    fprintf(stderr, "%s: %s\nusage: %s --out FILE --ready FILE", zdtm_prog, what, zdtm_prog);
    for (const struct zdtm_opt *o = opts; o && o->name; o++)
        fprintf(stderr, " [--%s %s]", o->name, o->type == ZDTM_LONG ? "N" : "ARG");
    fprintf(stderr, "\n  --out FILE    verdict file (PASS / FAIL: reason)\n"
                    "  --ready FILE  ready marker (\"<pid>\\n\"), written once set up\n");
    for (const struct zdtm_opt *o = opts; o && o->name; o++)
        fprintf(stderr, "  --%s %s\n", o->name, o->help);
    fprintf(stderr, "SIGTERM makes it verify itself and exit (0 = PASS, 1 = FAIL).\n");
}

void zdtm_init(int argc, char **argv, const struct zdtm_opt *opts, const char *what)
{
    const char *slash = strrchr(argv[0], '/');
    zdtm_prog = slash ? slash + 1 : argv[0];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || i + 1 >= argc)
            goto bad;
        const char *name = a + 2, *val = argv[++i];
        if (!strcmp(name, "out")) {
            out_path = val;
            continue;
        }
        if (!strcmp(name, "ready")) {
            ready_path = val;
            continue;
        }
        const struct zdtm_opt *o = opts;
        while (o && o->name && strcmp(o->name, name))
            o++;
        if (!o || !o->name)
            goto bad;
        if (o->type == ZDTM_STR) {
            *(const char **)o->ptr = val;
        } else {
            char *end;
            errno = 0;
            long v = strtol(val, &end, 0);
            if (errno || end == val || *end)
                goto bad;
            *(long *)o->ptr = v;
        }
    }
    if (!out_path || !ready_path)
        goto bad;

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigterm;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: blocking syscalls return EINTR */
    if (sigaction(SIGTERM, &sa, NULL))
        zdtm_die("sigaction(SIGTERM): %s", strerror(errno));
    return;
bad:
    usage(opts, what);
    exit(2);
}

void zdtm_ready(void)
{
    char tmp[4096], buf[32];
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp", ready_path);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        zdtm_die("ready path too long");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        zdtm_die("open %s: %s", tmp, strerror(errno));
    n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
    if (write(fd, buf, n) != n || fsync(fd) || close(fd))
        zdtm_die("write %s: %s", tmp, strerror(errno));
    if (rename(tmp, ready_path))
        zdtm_die("rename %s: %s", tmp, strerror(errno));
}

void zdtm_tick(void)
{
    struct timespec ts = { 0, 10 * 1000 * 1000 };
    while (nanosleep(&ts, &ts) && errno == EINTR && !zdtm_stop)
        ;
}

static void vreport(const char *kind, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    fprintf(stderr, "%s: %s%s\n", zdtm_prog, kind, msg);
}

void zdtm_fail(const char *fmt, ...)
{
    va_list ap;
    if (!fail_count++) {
        va_start(ap, fmt);
        vsnprintf(fail_reason, sizeof(fail_reason), fmt, ap);
        va_end(ap);
        for (char *p = fail_reason; *p; p++) /* the verdict is one line */
            if (*p == '\n' || *p == '\r')
                *p = ' ';
    }
    va_start(ap, fmt);
    vreport("FAIL: ", fmt, ap);
    va_end(ap);
}

int zdtm_failed(void)
{
    return fail_count != 0;
}

void zdtm_info(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport("", fmt, ap);
    va_end(ap);
}

void zdtm_finish(void)
{
    char buf[640];
    int n;
    if (fail_count > 1)
        n = snprintf(buf, sizeof(buf), "FAIL: %s (+%d more, see stderr)\n", fail_reason, fail_count - 1);
    else if (fail_count)
        n = snprintf(buf, sizeof(buf), "FAIL: %s\n", fail_reason);
    else
        n = snprintf(buf, sizeof(buf), "PASS\n");
    if (n < 0 || (size_t)n >= sizeof(buf)) { /* truncated: keep the newline */
        n = sizeof(buf) - 1;
        buf[n - 1] = '\n';
    }
    int fd = out_fd;
    if (fd >= 0) {
        out_fd = -1; /* zdtm_die from here on must not loop */
        if (ftruncate(fd, 0))
            fd = -1;
    } else {
        fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    }
    if (fd < 0 || pwrite(fd, buf, n, 0) != n || fsync(fd) || close(fd)) {
        fprintf(stderr, "%s: cannot write %s: %s\n", zdtm_prog, out_path, strerror(errno));
        exit(1);
    }
    fprintf(stderr, "%s: %s", zdtm_prog, buf);
    exit(fail_count ? 1 : 0);
}

int zdtm_open_out(void)
{
    if (out_fd < 0) {
        out_fd = open(out_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (out_fd < 0)
            zdtm_die("open %s: %s", out_path, strerror(errno));
    }
    return out_fd;
}

void zdtm_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fail_reason, sizeof(fail_reason), fmt, ap);
    va_end(ap);
    fail_count = 1;
    if (out_path)
        zdtm_finish();
    fprintf(stderr, "%s: FAIL: %s\n", zdtm_prog, fail_reason);
    exit(1);
}

int64_t zdtm_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int zdtm_maps_entry(const void *addr, char perms[5], char *path, size_t pathlen)
{
    FILE *f = fopen("/proc/self/maps", "re");
    char line[4096 + 256];
    int ret = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;
        char p[5];
        int name = 0;
        /* lo-hi perms offset dev inode [path] */
        if (sscanf(line, "%lx-%lx %4s %*s %*s %*s %n", &lo, &hi, p, &name) >= 3 &&
            (unsigned long)addr >= lo && (unsigned long)addr < hi) {
            memcpy(perms, p, 5);
            if (path && pathlen) {
                line[strcspn(line, "\n")] = 0;
                snprintf(path, pathlen, "%s", name ? line + name : "");
            }
            ret = 0;
            break;
        }
    }
    fclose(f);
    return ret;
}

uint64_t zdtm_mix(uint64_t a, uint64_t b)
{
    uint64_t z = a * 0x9e3779b97f4a7c15ULL + b + 0x632be59bd9b4e019ULL; /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return z ? z : 0x2545f4914f6cdd1dULL; /* xorshift state must be non-zero */
}

void zdtm_fill(void *buf, size_t len, uint64_t seed)
{
    uint64_t x = zdtm_mix(seed, 0);
    unsigned char *p = buf;
    while (len) {
        x ^= x << 13; /* xorshift64 */
        x ^= x >> 7;
        x ^= x << 17;
        size_t n = len < 8 ? len : 8;
        memcpy(p, &x, n);
        p += n;
        len -= n;
    }
}

uint64_t zdtm_csum(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint64_t h = 0xcbf29ce484222325ULL, w;
    for (; len >= 8; p += 8, len -= 8) {
        memcpy(&w, p, 8);
        h = (h ^ w) * 0x100000001b3ULL;
        h ^= h >> 29;
    }
    while (len--)
        h = (h ^ *p++) * 0x100000001b3ULL;
    return h;
}

size_t zdtm_first_diff(const void *a, const void *b, size_t len)
{
    const unsigned char *x = a, *y = b;
    if (!memcmp(a, b, len))
        return (size_t)-1;
    for (size_t i = 0; i < len; i++)
        if (x[i] != y[i])
            return i;
    return (size_t)-1;
}

void zdtm_put_fd(int fd, int want)
{
    if (fd < 0)
        zdtm_die("setup of fd %d: %s", want, strerror(errno));
    if (fd != want) {
        if (dup2(fd, want) != want)
            zdtm_die("dup2 %d: %s", want, strerror(errno));
        close(fd);
    }
}

unsigned char zdtm_pat(size_t i, unsigned seed)
{
    uint32_t x = (uint32_t)i * 2654435761u ^ seed * 40503u;
    x ^= x >> 15;
    return (unsigned char)(x ^ (x >> 8));
}

/* State letter, ppid, pgrp, session and comm of pid from /proc/PID/stat. */
int zdtm_stat_of(pid_t pid, char *state, int *ppid, int *pgrp, int *sid, char *comm)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    char *open = strchr(buf, '('), *close = strrchr(buf, ')');
    if (!open || !close)
        return -1;
    *close = 0;
    snprintf(comm, 16, "%s", open + 1);
    return sscanf(close + 2, "%c %d %d %d", state, ppid, pgrp, sid) == 4 ? 0 : -1;
}

size_t zdtm_fill_until_full(int fd, size_t from, unsigned seed, size_t chunk)
{
    unsigned char *buf = malloc(chunk);
    size_t done = 0;
    for (int idle = 0; idle < 20;) {
        for (size_t i = 0; i < chunk; i++)
            buf[i] = zdtm_pat(from + done + i, seed);
        ssize_t r = write(fd, buf, chunk);
        if (r > 0) {
            done += r;
            idle = 0;
        } else if (r < 0 && errno == EAGAIN) {
            idle++;
            usleep(5000);
        } else {
            zdtm_die("write to fd %d: %s", fd, strerror(errno));
        }
    }
    free(buf);
    return done;
}
