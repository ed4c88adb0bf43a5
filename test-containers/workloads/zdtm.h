/*
 * zdtm.h — tiny shared library for cryo's self-verifying test workloads
 * (in the spirit of CRIU's zdtmtst).
 *
 * Protocol every workload follows:
 *   prog --out RESULT --ready MARKER [own options]
 *   1. set up state, then zdtm_ready(): MARKER.tmp holding "<pid>\n" is renamed to
 *      MARKER (atomic), so the harness never sees a half-written marker;
 *   2. wait until SIGTERM (the handler, installed without SA_RESTART, only sets
 *      zdtm_stop), doing periodic work if any;
 *   3. verify, then zdtm_finish(): RESULT gets "PASS\n" or "FAIL: <reason>\n"
 *      (fsync'ed); exit status 0 on pass, 1 on fail. Bad arguments: usage, exit 2.
 * Diagnostics go to stderr, prefixed with the program name.
 */
#ifndef ZDTM_H
#define ZDTM_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Set (to 1) by the SIGTERM handler. */
extern volatile sig_atomic_t zdtm_stop;
/* Program name (basename of argv[0]) used in messages. */
extern const char *zdtm_prog;

enum zdtm_opt_type { ZDTM_STR, ZDTM_LONG };

struct zdtm_opt {
    const char *name;      /* without the leading "--" */
    enum zdtm_opt_type type;
    void *ptr;             /* const char ** for ZDTM_STR, long * for ZDTM_LONG */
    const char *help;      /* e.g. "N   size in MiB (default 16)" */
};

/*
 * Parses --out, --ready and the workload's own options (table terminated by an
 * entry with name == NULL; may be NULL), then installs the SIGTERM handler.
 * On a bad or missing argument prints usage to stderr and exits 2.
 * `what` is a one-line description shown in the usage text.
 */
void zdtm_init(int argc, char **argv, const struct zdtm_opt *opts, const char *what);

/* Writes the ready marker atomically (MARKER.tmp, then rename). Exits 1 on error. */
void zdtm_ready(void);

/* Sleeps 10 ms (restarting after EINTR unless zdtm_stop is set). */
void zdtm_tick(void);

/* Records a failure (the first reason is reported; later ones go to stderr only). */
void zdtm_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int zdtm_failed(void);

/* Informational line on stderr. */
void zdtm_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Opens (creates) the --out file now and keeps the descriptor for zdtm_finish(), for
 * workloads that later lose the right to create it (e.g. by dropping privileges).
 * The descriptor (O_WRONLY|O_CREAT|O_CLOEXEC) is part of the checkpointed state.
 * Optional; returns the fd. Exits 1 on error.
 */
int zdtm_open_out(void);

/* Writes the verdict to the --out file (the zdtm_open_out() fd if opened) and exits
 * (0 pass, 1 fail). */
void zdtm_finish(void) __attribute__((noreturn));

/* Setup error (before ready): message on stderr, verdict FAIL in --out, exit 1. */
void zdtm_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t zdtm_now_ns(void);

/*
 * The /proc/self/maps entry containing addr: its permission string ("r-xp", "---p",
 * "rw-s", ...) into perms[5] and, if path is not NULL, its pathname ("" for
 * anonymous, "[heap]", "/tmp/x", ...) into path[pathlen].
 * Returns 0, or -1 if no entry contains addr.
 */
int zdtm_maps_entry(const void *addr, char perms[5], char *path, size_t pathlen);

/* Deterministic pseudo-random data: splitmix64 seeding + xorshift64 stream. */
uint64_t zdtm_mix(uint64_t a, uint64_t b);
void zdtm_fill(void *buf, size_t len, uint64_t seed);

/* Puts fd at number want (dup2, closing the original); dies (setup error) on failure
 * or if fd < 0 (the failed call that made it). */
void zdtm_put_fd(int fd, int want);

/* Byte i of a cheap deterministic pattern (for streams checked byte by byte). */
unsigned char zdtm_pat(size_t i, unsigned seed);

/* State letter, ppid, pgrp, session and comm (16 bytes) of pid from /proc/PID/stat;
 * 0, or -1 if it cannot be read. */
int zdtm_stat_of(pid_t pid, char *state, int *ppid, int *pgrp, int *sid, char *comm);

/* Writes zdtm_pat(from + i, seed) bytes to the non-blocking fd in chunks of `chunk` bytes
 * until it stays full (20 EAGAINs 5 ms apart); returns how many it wrote. Dies on any
 * other error. */
size_t zdtm_fill_until_full(int fd, size_t from, unsigned seed, size_t chunk);

/* Word-wise 64-bit checksum (FNV-style over 8-byte words plus tail bytes). */
uint64_t zdtm_csum(const void *buf, size_t len);

/* Index of the first byte where a and b differ, or (size_t)-1 if equal. */
size_t zdtm_first_diff(const void *a, const void *b, size_t len);

#endif
