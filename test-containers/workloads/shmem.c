/*
 * shmem — MAP_SHARED|MAP_ANONYMOUS memory shared across fork. The parent maps 8 MiB,
 * fills a pattern and forks two children; before the dump child 1 writes a pattern in
 * the last MiB (pages the parent never touched) and child 2 leaves its slot alone.
 * After restore (on SIGTERM) each child writes its marker, waits to see the other's
 * (one copy, writes visible across), checks the patterns and that the mapping is still
 * shared anonymous memory ("rw-s", "/dev/zero (deleted)") with the parent's inode.
 * The parent writes its marker, waits for the children, and checks it sees theirs.
 */
#include "zdtm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define SIZE (8UL << 20)
#define TAIL (7UL << 20) /* child 1's region: [TAIL, SIZE) */
#define SLOT(i) (SIZE / 2 + (i) * 4096) /* marker slots, one page each */

static unsigned char *m;

/* Inode and path of the mapping containing m, from /proc/PID/maps. */
static int map_info(pid_t pid, unsigned long *ino, char perms[5], char *path, size_t len)
{
    char fn[64], line[512];
    snprintf(fn, sizeof(fn), "/proc/%d/maps", pid);
    FILE *f = fopen(fn, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f)) {
        unsigned long s, e;
        int off = 0;
        if (sscanf(line, "%lx-%lx %4s %*x %*x:%*x %lu %n", &s, &e, perms, ino, &off) < 4)
            continue;
        if ((unsigned long)m >= s && (unsigned long)m < e) {
            line[strcspn(line, "\n")] = 0;
            snprintf(path, len, "%s", line + off);
            fclose(f);
            return 0;
        }
    }
    fclose(f);
    return -1;
}

static int check_mapping(const char *who, pid_t parent)
{
    unsigned long ino, pino;
    char perms[5], path[256], pperms[5], ppath[256];
    if (map_info(getpid(), &ino, perms, path, sizeof(path))) {
        fprintf(stderr, "shmem: %s: mapping not found\n", who);
        return 1;
    }
    if (strcmp(perms, "rw-s") || strcmp(path, "/dev/zero (deleted)")) {
        fprintf(stderr, "shmem: %s: mapping is %s %s\n", who, perms, path);
        return 1;
    }
    if (parent && (map_info(parent, &pino, pperms, ppath, sizeof(ppath)) || pino != ino)) {
        fprintf(stderr, "shmem: %s: inode %lu, parent's %lu\n", who, ino, pino);
        return 1;
    }
    return 0;
}

static int patterns_ok(const char *who)
{
    unsigned char *want = malloc(SIZE);
    int bad = 0;
    zdtm_fill(want, SIZE, 7);
    zdtm_fill(want + TAIL, SIZE - TAIL, 11);
    /* The marker slots are checked separately. */
    memcpy(want + SLOT(0), m + SLOT(0), 3 * 4096);
    size_t d = zdtm_first_diff(want, m, SIZE);
    if (d != (size_t)-1)
        fprintf(stderr, "shmem: %s: memory differs at %#zx\n", who, d), bad = 1;
    free(want);
    return bad;
}

static void __attribute__((noreturn)) child(int i, pid_t parent)
{
    if (i == 1)
        zdtm_fill(m + TAIL, SIZE - TAIL, 11);
    while (!zdtm_stop)
        zdtm_tick();
    int bad = check_mapping(i == 1 ? "child 1" : "child 2", parent);
    memset(m + SLOT(i), 0xA0 + i, 4096);
    int other = 3 - i, seen = 0;
    for (int t = 0; t < 500 && !seen; t++) {
        seen = m[SLOT(other)] == 0xA0 + other;
        if (!seen)
            usleep(10000);
    }
    if (!seen)
        fprintf(stderr, "shmem: child %d does not see child %d's marker\n", i, other), bad = 1;
    bad |= patterns_ok(i == 1 ? "child 1" : "child 2");
    _exit(bad);
}

int main(int argc, char **argv)
{
    pid_t kids[2];
    int st;

    zdtm_init(argc, argv, NULL, "MAP_SHARED anonymous memory shared by a parent and 2 children");
    m = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        zdtm_die("mmap: %m");
    zdtm_fill(m, TAIL, 7);
    memset(m + SLOT(0), 0, 3 * 4096);
    for (int i = 0; i < 2; i++) {
        kids[i] = fork();
        if (kids[i] == 0)
            child(i + 1, getppid());
    }
    /* Until child 1 has written its region. */
    for (int t = 0; m[SIZE - 1] == 0 || m[TAIL] == 0; t++) {
        if (t > 500)
            zdtm_die("child 1 did not write");
        usleep(10000);
    }
    usleep(50 * 1000);
    zdtm_ready();
    while (!zdtm_stop)
        zdtm_tick();
    if (check_mapping("parent", 0))
        zdtm_fail("the parent's mapping is not shared anonymous memory");
    memset(m + SLOT(0), 0xA0, 4096);
    for (int i = 0; i < 2; i++) {
        kill(kids[i], SIGTERM);
    }
    for (int i = 0; i < 2; i++) {
        if (waitpid(kids[i], &st, 0) != kids[i] || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            zdtm_fail("child %d failed (%#x, see stderr)", i + 1, st);
    }
    for (int i = 1; i <= 2; i++)
        if (m[SLOT(i)] != 0xA0 + i || m[SLOT(i) + 4095] != 0xA0 + i)
            zdtm_fail("the parent does not see child %d's marker", i);
    if (patterns_ok("parent"))
        zdtm_fail("shared memory differs");
    zdtm_finish();
}
