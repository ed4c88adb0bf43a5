/*
 * mem — memory of every kind a plain program has survives checkpoint/restore.
 *
 *   mem --out F --ready F [--mib N] [--tmpdir DIR]
 *
 * Fills about N MiB (default 16) with deterministic pseudo-random data (xorshift64,
 * seeded per region and page) spread over:
 *   heap-small  many 4000-byte malloc chunks (in [heap], grown by brk)
 *   heap-big    one big malloc (glibc mmaps it)
 *   brk         memory taken directly with sbrk(); sbrk(0) must be unchanged
 *   anon        private anonymous mmap; every 16th page (index 5 mod 16) never
 *               touched, another (9 mod 16) written with zeros: both must read zero
 *   guard       anonymous mmap with a PROT_NONE page in the middle (must stay "---p")
 *   readonly    filled, then mprotect(PROT_READ) (must stay "r--p")
 *   stack       256 KiB array in main's frame
 *   file-priv   MAP_PRIVATE mapping of DIR/cryo-mem-<pid>-private.dat; every 4th page
 *               (1 mod 4) modified in memory: modified pages keep the private data,
 *               the others read the file, and the file itself stays unmodified
 *   file-shared MAP_SHARED mapping of DIR/cryo-mem-<pid>-shared.dat, written through
 *               the mapping: mapping, expected data and file (pread) must all agree
 * Each region's checksum is taken at setup; after SIGTERM it is recomputed and the
 * data is regenerated and compared byte for byte (first differing offset reported).
 * /proc/self/maps permissions and backing files of the special regions are checked.
 * While waiting, every 10 ms a heap counter and a register-held local are both
 * incremented and must stay equal.
 * The two data files are left in DIR (a second restore of the same image needs them).
 */
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SEED 0x6372796f6d656d00ULL /* "cryomem\0" */
#define STACK_BYTES (256 * 1024)
#define CHUNK 4000

enum kind {
    K_RANDOM,  /* every page random */
    K_HOLES,   /* anon: untouched / zero-written pages among random ones */
    K_GUARD,   /* random except the PROT_NONE page, which is skipped */
    K_PRIV,    /* private file mapping: modified pages vs file pages */
};

struct region {
    const char *name;
    unsigned char *addr;
    size_t len;
    enum kind kind;
    uint64_t id;     /* seed */
    uint64_t csum;
};

static size_t page;
static struct region *regions;
static int nregions, maxregions;
static volatile uint64_t *heap_counter;
static size_t guard_page; /* index of the PROT_NONE page in the guard region */

static int page_is_hole(size_t p) { return p % 16 == 5; }
static int page_is_zero(size_t p) { return p % 16 == 9; }
static int page_is_modified(size_t p) { return p % 4 == 1; }

/* The file behind file-priv: page p of the file. */
static void file_page(uint64_t id, size_t p, unsigned char *buf, size_t n)
{
    zdtm_fill(buf, n, zdtm_mix(SEED + id + 1000, p));
}

/* Expected bytes of page p (n <= page bytes) of region r; returns 0 if not to compare. */
static int expected_page(const struct region *r, size_t p, unsigned char *buf, size_t n)
{
    switch (r->kind) {
    case K_HOLES:
        if (page_is_hole(p) || page_is_zero(p)) {
            memset(buf, 0, n);
            return 1;
        }
        break;
    case K_GUARD:
        if (p == guard_page)
            return 0;
        break;
    case K_PRIV:
        if (!page_is_modified(p)) {
            file_page(r->id, p, buf, n);
            return 1;
        }
        break;
    case K_RANDOM:
        break;
    }
    zdtm_fill(buf, n, zdtm_mix(SEED + r->id, p));
    return 1;
}

/* Checksum over the comparable pages of r. */
static uint64_t region_csum(const struct region *r)
{
    uint64_t h = 0;
    for (size_t off = 0, p = 0; off < r->len; off += page, p++) {
        size_t n = r->len - off < page ? r->len - off : page;
        if (r->kind == K_GUARD && p == guard_page)
            continue;
        h = zdtm_mix(h, zdtm_csum(r->addr + off, n));
    }
    return h;
}

/* Writes the region's data as the process does at setup (the memory is writable). */
static void fill_region(struct region *r)
{
    for (size_t off = 0, p = 0; off < r->len; off += page, p++) {
        size_t n = r->len - off < page ? r->len - off : page;
        if (r->kind == K_HOLES && page_is_hole(p))
            continue; /* never touched */
        if (r->kind == K_PRIV && !page_is_modified(p))
            continue; /* left as the file's content */
        zdtm_fill(r->addr + off, n, zdtm_mix(SEED + r->id, p));
        if (r->kind == K_HOLES && page_is_zero(p))
            memset(r->addr + off, 0, n); /* explicitly written zeros */
    }
}

static struct region *add(const char *name, void *addr, size_t len, enum kind kind, uint64_t id)
{
    if (nregions == maxregions)
        zdtm_die("too many regions");
    struct region *r = &regions[nregions++];
    *r = (struct region){ name, addr, len, kind, id, 0 };
    return r;
}

static void *map_anon(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        zdtm_die("mmap %zu: %s", len, strerror(errno));
    return p;
}

/* Creates path with len bytes of file_page() content (or zeros if id == 0). */
static int make_file(const char *path, size_t len, uint64_t id)
{
    unsigned char buf[65536];
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        zdtm_die("open %s: %s", path, strerror(errno));
    if (ftruncate(fd, len))
        zdtm_die("ftruncate %s: %s", path, strerror(errno));
    for (size_t off = 0; id && off < len; off += page) {
        size_t n = len - off < page ? len - off : page;
        file_page(id, off / page, buf, n);
        if (pwrite(fd, buf, n, off) != (ssize_t)n)
            zdtm_die("write %s: %s", path, strerror(errno));
    }
    return fd;
}

static void verify_region(const struct region *r)
{
    unsigned char buf[65536];
    uint64_t c = region_csum(r);
    for (size_t off = 0, p = 0; off < r->len; off += page, p++) {
        size_t n = r->len - off < page ? r->len - off : page;
        if (!expected_page(r, p, buf, n))
            continue;
        size_t d = zdtm_first_diff(r->addr + off, buf, n);
        if (d != (size_t)-1) {
            zdtm_fail("%s (%p, %zu bytes): first difference at offset %zu: %02x, expected %02x%s", r->name,
                      (void *)r->addr, r->len, off + d, r->addr[off + d], buf[d],
                      c != r->csum ? "; checksum differs too" : "; checksum equal?!");
            return;
        }
    }
    if (c != r->csum)
        zdtm_fail("%s: checksum %016llx, expected %016llx (data matches the generator?!)", r->name,
                  (unsigned long long)c, (unsigned long long)r->csum);
}

/* The maps entry of addr must have these permissions and, if path != NULL, path. */
static void check_maps(const char *what, const void *addr, const char *perms, const char *path)
{
    char got[5], gotpath[PATH_MAX + 64];
    if (zdtm_maps_entry(addr, got, gotpath, sizeof(gotpath))) {
        zdtm_fail("%s: %p not in /proc/self/maps", what, addr);
        return;
    }
    if (strcmp(got, perms))
        zdtm_fail("%s: %p has permissions %s, expected %s", what, addr, got, perms);
    if (path && strcmp(gotpath, path))
        zdtm_fail("%s: %p maps \"%s\", expected \"%s\"", what, addr, gotpath, path);
}

/* The file behind a mapping must hold `expect` (compared page by page). */
static void check_file(const char *what, const char *path, const struct region *r, int use_mapping)
{
    unsigned char buf[65536], want[65536];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        zdtm_fail("%s: open %s: %s", what, path, strerror(errno));
        return;
    }
    off_t size = lseek(fd, 0, SEEK_END);
    if (size != (off_t)r->len)
        zdtm_fail("%s: %s has %lld bytes, expected %zu", what, path, (long long)size, r->len);
    for (size_t off = 0; off < r->len; off += page) {
        size_t n = r->len - off < page ? r->len - off : page;
        if (pread(fd, buf, n, off) != (ssize_t)n) {
            zdtm_fail("%s: short read of %s at %zu", what, path, off);
            break;
        }
        if (use_mapping)
            memcpy(want, r->addr + off, n);
        else
            file_page(r->id, off / page, want, n);
        size_t d = zdtm_first_diff(buf, want, n);
        if (d != (size_t)-1) {
            zdtm_fail("%s: %s differs from %s at offset %zu: %02x vs %02x", what, path,
                      use_mapping ? "the mapping" : "its original content", off + d, buf[d], want[d]);
            break;
        }
    }
    close(fd);
}

int main(int argc, char **argv)
{
    long mib = 16;
    const char *tmpdir = "/tmp";
    const struct zdtm_opt opts[] = {
        { "mib", ZDTM_LONG, &mib, "N     MiB of data to spread over the regions (default 16)" },
        { "tmpdir", ZDTM_STR, &tmpdir, "DIR   where the two mapped data files are created (default /tmp)" },
        { 0 },
    };
    zdtm_init(argc, argv, opts, "memory regions (heap, brk, anon, guard, read-only, stack, file mappings) survive C/R");
    if (mib < 1 || mib > 65536) {
        fprintf(stderr, "%s: --mib must be 1..65536\n", zdtm_prog);
        return 2;
    }
    page = sysconf(_SC_PAGESIZE);
    size_t total = (size_t)mib << 20;
    size_t unit = total / 8 / page * page;
    if (unit < 4 * page)
        unit = 4 * page;

    /* Everything malloc'ed comes first, so later sbrk() use doesn't interleave. */
    maxregions = 16 + 4096;
    regions = calloc(maxregions, sizeof(*regions));
    heap_counter = malloc(sizeof(*heap_counter));
    if (!regions || !heap_counter)
        zdtm_die("malloc");
    *heap_counter = 0;
    size_t nchunks = unit / CHUNK;
    if (nchunks > 4096)
        nchunks = 4096;
    for (size_t i = 0; i < nchunks; i++) {
        void *p = malloc(CHUNK);
        if (!p)
            zdtm_die("malloc");
        add("heap-small", p, CHUNK, K_RANDOM, 100 + i);
    }
    unsigned char *big = malloc(unit);
    if (!big)
        zdtm_die("malloc %zu", unit);
    add("heap-big", big, unit, K_RANDOM, 1);

    void *brk_start = sbrk(unit);
    if (brk_start == (void *)-1)
        zdtm_die("sbrk: %s", strerror(errno));
    add("brk", brk_start, unit, K_RANDOM, 2);
    void *brk_end = sbrk(0);

    struct region *anon = add("anon", map_anon(2 * unit), 2 * unit, K_HOLES, 3);
    struct region *guard = add("guard", map_anon(unit), unit, K_GUARD, 4);
    guard_page = unit / page / 2;
    struct region *ro = add("readonly", map_anon(unit), unit, K_RANDOM, 5);

    unsigned char stack_area[STACK_BYTES];
    add("stack", stack_area, sizeof(stack_area), K_RANDOM, 6);

    char priv_path[PATH_MAX + 64], shared_path[PATH_MAX + 64], dir[PATH_MAX];
    if (!realpath(tmpdir, dir))
        zdtm_die("realpath %s: %s", tmpdir, strerror(errno));
    snprintf(priv_path, sizeof(priv_path), "%s/cryo-mem-%d-private.dat", dir, (int)getpid());
    snprintf(shared_path, sizeof(shared_path), "%s/cryo-mem-%d-shared.dat", dir, (int)getpid());

    int fd = make_file(priv_path, unit, 7);
    void *pm = mmap(NULL, unit, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (pm == MAP_FAILED)
        zdtm_die("mmap %s: %s", priv_path, strerror(errno));
    close(fd); /* only the mapping keeps the file */
    struct region *priv = add("file-priv", pm, unit, K_PRIV, 7);

    fd = make_file(shared_path, unit, 0);
    void *sm = mmap(NULL, unit, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (sm == MAP_FAILED)
        zdtm_die("mmap %s: %s", shared_path, strerror(errno));
    close(fd);
    struct region *shared = add("file-shared", sm, unit, K_RANDOM, 8);

    for (int i = 0; i < nregions; i++) {
        fill_region(&regions[i]);
        regions[i].csum = region_csum(&regions[i]);
    }
    if (mprotect(guard->addr + guard_page * page, page, PROT_NONE))
        zdtm_die("mprotect guard: %s", strerror(errno));
    if (mprotect(ro->addr, ro->len, PROT_READ))
        zdtm_die("mprotect readonly: %s", strerror(errno));
    if (msync(sm, unit, MS_SYNC))
        zdtm_die("msync: %s", strerror(errno));

    zdtm_info("pid %d: %d regions (big ones %zu KiB), brk region %p..%p", (int)getpid(), nregions,
              unit >> 10, brk_start, brk_end);
    zdtm_ready();

    /* Periodic activity: a heap counter and a local (register) counter in lockstep. */
    uint64_t local = 0;
    int lockstep_broken = 0;
    while (!zdtm_stop) {
        zdtm_tick();
        local++;
        (*heap_counter)++;
        if (*heap_counter != local && !lockstep_broken) {
            lockstep_broken = 1;
            zdtm_fail("counters diverged: heap %llu, register %llu",
                      (unsigned long long)*heap_counter, (unsigned long long)local);
        }
    }

    /* Verification (no allocation before the brk check). */
    void *brk_now = sbrk(0);
    if (brk_now != brk_end)
        zdtm_fail("brk moved: sbrk(0) = %p, expected %p", brk_now, brk_end);
    for (int i = 0; i < nregions; i++)
        verify_region(&regions[i]);
    check_maps("brk", brk_start, "rw-p", "[heap]");
    check_maps("anon hole page", anon->addr + 5 * page, "rw-p", "");
    check_maps("guard below", guard->addr + (guard_page - 1) * page, "rw-p", "");
    check_maps("guard page", guard->addr + guard_page * page, "---p", "");
    check_maps("guard above", guard->addr + (guard_page + 1) * page, "rw-p", "");
    check_maps("readonly", ro->addr, "r--p", "");
    check_maps("file-priv", priv->addr, "rw-p", priv_path);
    check_maps("file-shared", shared->addr, "rw-s", shared_path);
    check_file("file-priv", priv_path, priv, 0);     /* private changes did not leak */
    check_file("file-shared", shared_path, shared, 1); /* file == mapping */
    zdtm_info("%llu ticks", (unsigned long long)local);
    zdtm_finish();
}
