/*
 * counter — a process doing I/O keeps counting across checkpoint/restore.
 *
 *   counter --out F --ready F --file PATH
 *
 * Opens PATH once (O_WRONLY|O_APPEND|O_CREAT|O_TRUNC, kept open) and every 10 ms
 * appends the next integer (1, 2, 3, ...) as one decimal line, with a single write().
 * After SIGTERM it re-reads PATH: the lines must be exactly 1..N, consecutive, with no
 * gap, duplicate or torn line, and N must equal the in-memory counter.
 */
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    const char *path = NULL;
    const struct zdtm_opt opts[] = {
        { "file", ZDTM_STR, &path, "PATH  file the numbers are appended to (required; truncated)" },
        { 0 },
    };
    zdtm_init(argc, argv, opts, "appends 1, 2, 3, ... to a file every 10 ms; checks the file after C/R");
    if (!path) {
        fprintf(stderr, "%s: --file is required\n", zdtm_prog);
        return 2;
    }
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        zdtm_die("open %s: %s", path, strerror(errno));
    zdtm_info("pid %d: counting into %s", (int)getpid(), path);
    zdtm_ready();

    unsigned long long n = 0;
    while (!zdtm_stop) {
        char line[32];
        int len = snprintf(line, sizeof(line), "%llu\n", n + 1);
        ssize_t w = write(fd, line, len);
        if (w != len) {
            zdtm_fail("write %s returned %zd: %s", path, w, w < 0 ? strerror(errno) : "short");
            break;
        }
        n++;
        zdtm_tick();
    }

    /* Re-read the whole file: it must be exactly "1\n2\n...N\n". */
    FILE *f = fopen(path, "re");
    if (!f)
        zdtm_die("open %s: %s", path, strerror(errno));
    char buf[64];
    unsigned long long want = 1;
    while (!zdtm_failed() && fgets(buf, sizeof(buf), f)) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(buf, &end, 10);
        if (errno || end == buf || strcmp(end, "\n"))
            zdtm_fail("line %llu is \"%.*s\", not a number", want, (int)strcspn(buf, "\n"), buf);
        else if (v != want)
            zdtm_fail("line %llu holds %llu (gap or duplicate)", want, v);
        else
            want++;
    }
    fclose(f);
    if (!zdtm_failed() && want - 1 != n)
        zdtm_fail("file ends at %llu, in-memory counter is %llu", want - 1, n);
    zdtm_info("counted to %llu", n);
    zdtm_finish();
}
