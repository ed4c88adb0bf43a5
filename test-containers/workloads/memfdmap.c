/*
 * memfdmap — memfd mappings (with no fd left open) survive checkpoint/restore.
 *
 *   memfdmap --out F --ready F [--tmpdir DIR]
 *
 * "cryo-shared": a 1 MiB memfd with a pattern, mapped MAP_SHARED read-write, its fd
 * closed, then a child is forked (the mapping is shared by both).
 * "cryo-private": a 256 KiB memfd mapped MAP_PRIVATE, its fd closed too; the workload
 * changes its first page (copy-on-write), the rest reads through to the file.
 * "deleted": DIR/cryo-memfdmap-<pid>.del, 512 KiB, mapped MAP_SHARED read-write, its
 * fd closed and the file unlinked (a mapping of a deleted file, shared with the child).
 * After SIGTERM: the parent checks the pattern, writes a marker into the shared mapping,
 * and the child (asked through a pipe) must see it and answer with a marker of its own
 * that the parent must see; both mappings still show as "/memfd:NAME (deleted)"; the
 * private mapping has the changed first page and the file's bytes after it.
 */
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define SHARED (1 << 20)
#define PRIV (256 << 10)
#define DEL (512 << 10)

static unsigned char *map_memfd(const char *name, size_t len, int flags, uint64_t seed)
{
    int fd = memfd_create(name, 0);
    unsigned char *buf = malloc(len);
    zdtm_fill(buf, len, seed);
    if (fd < 0 || write(fd, buf, len) != (ssize_t)len)
        zdtm_die("memfd %s: %s", name, strerror(errno));
    free(buf);
    unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, flags, fd, 0);
    if (p == MAP_FAILED)
        zdtm_die("mmap %s: %s", name, strerror(errno));
    close(fd);
    return p;
}

static unsigned char *map_deleted(const char *path, size_t len, uint64_t seed)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    unsigned char *buf = malloc(len);
    zdtm_fill(buf, len, seed);
    if (fd < 0 || write(fd, buf, len) != (ssize_t)len)
        zdtm_die("%s: %s", path, strerror(errno));
    free(buf);
    unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        zdtm_die("mmap %s: %s", path, strerror(errno));
    close(fd);
    unlink(path);
    return p;
}

static void check_name(const void *p, const char *want)
{
    char perms[5], path[256];
    if (zdtm_maps_entry(p, perms, path, sizeof(path)) || strcmp(path, want))
        zdtm_fail("mapping at %p is \"%s\", expected \"%s\"", p, path, want);
}

int main(int argc, char **argv)
{
    const char *tmpdir = "/tmp";
    struct zdtm_opt opts[] = {
        {"tmpdir", ZDTM_STR, &tmpdir, "DIR  where the deleted file lived"},
        {NULL, 0, NULL, NULL},
    };
    zdtm_init(argc, argv, opts, "memfd and deleted-file mappings, shared across fork and private");
    char dir[PATH_MAX], del_path[PATH_MAX + 64], del_name[PATH_MAX + 96];
    if (!realpath(tmpdir, dir))
        zdtm_die("realpath %s: %s", tmpdir, strerror(errno));
    snprintf(del_path, sizeof(del_path), "%s/cryo-memfdmap-%d.del", dir, (int)getpid());
    snprintf(del_name, sizeof(del_name), "%s (deleted)", del_path);
    unsigned char *del = map_deleted(del_path, DEL, 13);
    unsigned char *sh = map_memfd("cryo-shared", SHARED, MAP_SHARED, 11);
    unsigned char *pr = map_memfd("cryo-private", PRIV, MAP_PRIVATE, 12);
    memset(pr, 0x5a, 4096);

    int ask[2], ans[2];
    if (pipe(ask) || pipe(ans))
        zdtm_die("pipe: %s", strerror(errno));
    pid_t child = fork();
    if (child == 0) {
        signal(SIGTERM, SIG_DFL);
        char c;
        while (read(ask[0], &c, 1) == 1) {
            /* The parent's marker must be visible here; answer with ours. */
            char ok = (sh[SHARED - 1] == 0xa7 && del[DEL - 1] == 0xa7) ? 'y' : 'n';
            sh[SHARED - 2] = 0x3c;
            del[DEL - 2] = 0x3c;
            if (write(ans[1], &ok, 1) != 1)
                _exit(1);
        }
        _exit(0);
    }
    zdtm_ready();
    while (!zdtm_stop)
        zdtm_tick();

    unsigned char *want = malloc(SHARED);
    zdtm_fill(want, SHARED, 11);
    if (memcmp(sh, want, SHARED))
        zdtm_fail("shared memfd differs at byte %zu", zdtm_first_diff(sh, want, SHARED));
    zdtm_fill(want, PRIV, 12);
    memset(want, 0x5a, 4096);
    if (memcmp(pr, want, PRIV))
        zdtm_fail("private memfd mapping differs at byte %zu", zdtm_first_diff(pr, want, PRIV));
    zdtm_fill(want, DEL, 13);
    if (memcmp(del, want, DEL))
        zdtm_fail("deleted-file mapping differs at byte %zu", zdtm_first_diff(del, want, DEL));
    free(want);
    check_name(del, del_name);
    if (access(del_path, F_OK) == 0)
        zdtm_fail("%s exists again", del_path);
    check_name(sh, "/memfd:cryo-shared (deleted)");
    check_name(pr, "/memfd:cryo-private (deleted)");

    sh[SHARED - 1] = 0xa7;
    del[DEL - 1] = 0xa7;
    char c = '?', ok = 0;
    struct pollfd p = {.fd = ans[0], .events = POLLIN};
    if (write(ask[1], &c, 1) != 1 || poll(&p, 1, 2000) != 1 || read(ans[0], &ok, 1) != 1)
        zdtm_fail("the child does not answer");
    else if (ok != 'y')
        zdtm_fail("the child does not see the parent's write: the mapping is not shared");
    else if (sh[SHARED - 2] != 0x3c || del[DEL - 2] != 0x3c)
        zdtm_fail("the parent does not see the child's write: the mapping is not shared");
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    zdtm_finish();
}
