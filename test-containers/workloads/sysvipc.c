/*
 * sysvipc: SysV IPC objects and POSIX message queues that must survive a
 * checkpoint/restore. Run it in an ipc namespace of its own (unshare --ipc).
 *
 * State (all keys below are fixed; ids are recorded at setup):
 *   - shm A (key 0xc7100001, 3 pages + 100 bytes, mode 0640): attached read-write at
 *     the fixed address 0x7e0000000000, filled with a pattern;
 *   - shm B (IPC_PRIVATE, 2 pages): attached read-write by the parent and read-only by
 *     a child process; after restore the parent writes a token, the child must see it;
 *   - shm C (key 0xc7100003, 1 page): attached, then removed (IPC_RMID) while attached;
 *   - a semaphore set (key 0xc7100004) of 3 values {1, 7, 42};
 *   - a message queue (key 0xc7100005) of 5 messages of types {1, 5, 2, 9, 3};
 *   - with --mq 1: a POSIX queue "/cryo-sysvipc" (maxmsg 8, msgsize 64) with messages
 *     of priorities {1, 5, 3, 5, 0}, open O_RDWR|O_NONBLOCK and again O_WRONLY.
 * On SIGTERM every id, key, size, mode, content, value and message (in order) is
 * checked, non-blocking; the child reports by its exit status (waited up to 5 s).
 *
 * --host 1: only creates shm A's twin in the current ipc namespace (key 0xc71000ff),
 * attached; on SIGTERM removes it (the host-namespace refusal test).
 */
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

#define KEY_A 0xc7100001
#define KEY_C 0xc7100003
#define KEY_SEM 0xc7100004
#define KEY_MSG 0xc7100005
#define KEY_HOST 0xc71000ff
#define ADDR_A ((void *)0x7e0000000000UL)
#define SIZE_A (3 * 4096 + 100)
#define SIZE_B (2 * 4096)
#define MQ_NAME "/cryo-sysvipc"

static const long msg_types[5] = {1, 5, 2, 9, 3};
static const unsigned mq_prios[5] = {1, 5, 3, 5, 0};
static volatile sig_atomic_t child_go;

struct msgbuf_ {
    long mtype;
    char mtext[64];
};

static void on_usr1(int sig)
{
    (void)sig;
    child_go = 1;
}

/* The child: B attached read-only; on SIGUSR1 expects the token the parent wrote. */
static void child_main(int shmid_b, volatile uint64_t *inherited, uint64_t token_pos, int sync)
{
    struct sigaction sa = {.sa_handler = on_usr1};
    sigaction(SIGUSR1, &sa, NULL);
    shmdt((void *)inherited);
    const volatile uint64_t *b = shmat(shmid_b, NULL, SHM_RDONLY);
    if (b == (void *)-1)
        _exit(10);
    if (write(sync, "x", 1) != 1)
        _exit(13);
    close(sync);
    while (!child_go)
        usleep(10000);
    char perms[5];
    if (zdtm_maps_entry((const void *)b, perms, NULL, 0) || strcmp(perms, "r--s") != 0)
        _exit(11);
    /* The parent wrote ~0 ^ its pid's token at token_pos; wait up to 2 s for it. */
    for (int i = 0; i < 200; i++) {
        if (b[token_pos] == 0x5eed5eed5eed5eedULL)
            _exit(0);
        usleep(10000);
    }
    _exit(12);
}

int main(int argc, char **argv)
{
    long mq = 0, host = 0;
    struct zdtm_opt opts[] = {
        {"mq", ZDTM_LONG, &mq, "0|1   also a POSIX message queue"},
        {"host", ZDTM_LONG, &host, "0|1   only a segment in the current ipc namespace"},
        {NULL, 0, NULL, NULL},
    };
    zdtm_init(argc, argv, opts, "SysV IPC objects and POSIX mqueues");

    if (host) {
        int id = shmget(KEY_HOST, 4096, IPC_CREAT | IPC_EXCL | 0600);
        if (id < 0)
            zdtm_die("shmget host: %m");
        char *p = shmat(id, NULL, 0);
        if (p == (void *)-1) {
            shmctl(id, IPC_RMID, NULL);
            zdtm_die("shmat host: %m");
        }
        memset(p, 0x5a, 4096);
        zdtm_ready();
        while (!zdtm_stop)
            zdtm_tick();
        if (p[100] != 0x5a)
            zdtm_fail("host segment changed");
        shmdt(p);
        if (shmctl(id, IPC_RMID, NULL))
            zdtm_fail("IPC_RMID: %m");
        zdtm_finish();
    }

    /* shm A at a fixed address. */
    int ida = shmget(KEY_A, SIZE_A, IPC_CREAT | IPC_EXCL | 0640);
    if (ida < 0)
        zdtm_die("shmget A: %m");
    char *a = shmat(ida, ADDR_A, 0);
    if (a != ADDR_A)
        zdtm_die("shmat A: %m");
    zdtm_fill(a, SIZE_A, 0xa);
    uint64_t csum_a = zdtm_csum(a, SIZE_A);

    /* shm B shared with a child (read-only there). */
    int idb = shmget(IPC_PRIVATE, SIZE_B, IPC_CREAT | 0600);
    if (idb < 0)
        zdtm_die("shmget B: %m");
    volatile uint64_t *b = shmat(idb, NULL, 0);
    if (b == (void *)-1)
        zdtm_die("shmat B: %m");
    zdtm_fill((void *)b, SIZE_B, 0xb);
    const uint64_t token_pos = 700; /* second page */
    int sp[2];
    if (pipe(sp))
        zdtm_die("pipe: %m");
    pid_t child = fork();
    if (child < 0)
        zdtm_die("fork: %m");
    if (child == 0) {
        close(sp[0]);
        child_main(idb, b, token_pos, sp[1]);
    }
    close(sp[1]);
    char x;
    if (read(sp[0], &x, 1) != 1)
        zdtm_die("child did not attach B");
    close(sp[0]);

    /* shm C, removed while attached. */
    int idc = shmget(KEY_C, 4096, IPC_CREAT | IPC_EXCL | 0600);
    if (idc < 0)
        zdtm_die("shmget C: %m");
    char *c = shmat(idc, NULL, 0);
    if (c == (void *)-1)
        zdtm_die("shmat C: %m");
    strcpy(c, "segment C");
    if (shmctl(idc, IPC_RMID, NULL))
        zdtm_die("IPC_RMID C: %m");

    /* Semaphores. */
    int ids = semget(KEY_SEM, 3, IPC_CREAT | IPC_EXCL | 0600);
    if (ids < 0)
        zdtm_die("semget: %m");
    unsigned short vals[3] = {1, 7, 42};
    if (semctl(ids, 0, SETALL, vals))
        zdtm_die("SETALL: %m");

    /* Message queue. */
    int idm = msgget(KEY_MSG, IPC_CREAT | IPC_EXCL | 0600);
    if (idm < 0)
        zdtm_die("msgget: %m");
    for (int i = 0; i < 5; i++) {
        struct msgbuf_ m = {.mtype = msg_types[i]};
        int n = snprintf(m.mtext, sizeof(m.mtext), "message %d of type %ld", i, msg_types[i]);
        if (msgsnd(idm, &m, n + 1, IPC_NOWAIT))
            zdtm_die("msgsnd: %m");
    }

    /* POSIX queue. */
    mqd_t q = -1, qw = -1;
    if (mq) {
        struct mq_attr at = {.mq_maxmsg = 8, .mq_msgsize = 64};
        mq_unlink(MQ_NAME);
        q = mq_open(MQ_NAME, O_CREAT | O_EXCL | O_RDWR | O_NONBLOCK, 0640, &at);
        if (q < 0)
            zdtm_die("mq_open: %m");
        qw = mq_open(MQ_NAME, O_WRONLY);
        if (qw < 0)
            zdtm_die("mq_open O_WRONLY: %m");
        for (int i = 0; i < 5; i++) {
            char m[64];
            int n = snprintf(m, sizeof(m), "mq %d prio %u", i, mq_prios[i]);
            if (mq_send(qw, m, n, mq_prios[i]))
                zdtm_die("mq_send: %m");
        }
    }

    zdtm_ready();
    while (!zdtm_stop)
        zdtm_tick();

    /* Segments: ids, keys, sizes, modes, contents, addresses. */
    struct shmid_ds ds;
    if (shmget(KEY_A, 0, 0) != ida)
        zdtm_fail("shm A: key 0x%x has id %d, not %d", KEY_A, shmget(KEY_A, 0, 0), ida);
    if (shmctl(ida, IPC_STAT, &ds))
        zdtm_fail("shm A: IPC_STAT: %m");
    else if (ds.shm_segsz != SIZE_A || (ds.shm_perm.mode & 0777) != 0640)
        zdtm_fail("shm A: size %zu mode %o", (size_t)ds.shm_segsz, ds.shm_perm.mode);
    char perms[5];
    if (zdtm_maps_entry(ADDR_A, perms, NULL, 0) || strcmp(perms, "rw-s") != 0)
        zdtm_fail("shm A not mapped rw-s at %p", ADDR_A);
    else if (zdtm_csum(a, SIZE_A) != csum_a)
        zdtm_fail("shm A: contents differ");
    if (shmctl(idb, IPC_STAT, &ds))
        zdtm_fail("shm B: IPC_STAT: %m");
    else if (ds.shm_nattch != 2)
        zdtm_fail("shm B: %lu attachments, expected 2", (unsigned long)ds.shm_nattch);
    if (shmctl(idc, IPC_STAT, &ds))
        zdtm_fail("shm C: IPC_STAT: %m");
    else if (!(ds.shm_perm.mode & SHM_DEST) || ds.shm_perm.__key != IPC_PRIVATE)
        zdtm_fail("shm C: not removed (mode %o key %x)", ds.shm_perm.mode, ds.shm_perm.__key);
    if (strcmp(c, "segment C") != 0)
        zdtm_fail("shm C: contents differ");
    if (shmget(KEY_C, 0, 0) != -1)
        zdtm_fail("shm C: key still findable");

    /* The child sees what the parent writes into B. */
    b[token_pos] = 0x5eed5eed5eed5eedULL;
    if (kill(child, SIGUSR1))
        zdtm_fail("kill child: %m");
    int st = -1;
    for (int i = 0; i < 500; i++) {
        pid_t w = waitpid(child, &st, WNOHANG);
        if (w == child)
            break;
        st = -1;
        usleep(10000);
    }
    if (st == -1) {
        zdtm_fail("child did not finish");
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
    } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        zdtm_fail("child: status 0x%x (10 shmat, 11 mapping, 12 token not seen)", st);
    }

    /* Semaphores. */
    unsigned short got[3] = {0};
    if (semget(KEY_SEM, 0, 0) != ids)
        zdtm_fail("sem: key has another id");
    if (semctl(ids, 0, GETALL, got))
        zdtm_fail("sem GETALL: %m");
    else if (got[0] != 1 || got[1] != 7 || got[2] != 42)
        zdtm_fail("sem values %u %u %u", got[0], got[1], got[2]);

    /* Messages, in order. */
    if (msgget(KEY_MSG, 0) != idm)
        zdtm_fail("msg: key has another id");
    for (int i = 0; i < 5; i++) {
        struct msgbuf_ m;
        char want[64];
        snprintf(want, sizeof(want), "message %d of type %ld", i, msg_types[i]);
        ssize_t n = msgrcv(idm, &m, sizeof(m.mtext), 0, IPC_NOWAIT);
        if (n < 0) {
            zdtm_fail("msgrcv %d: %m", i);
            break;
        }
        if (m.mtype != msg_types[i] || strcmp(m.mtext, want) != 0)
            zdtm_fail("message %d: type %ld \"%s\"", i, m.mtype, m.mtext);
    }
    struct msgbuf_ m;
    if (msgrcv(idm, &m, sizeof(m.mtext), 0, IPC_NOWAIT) >= 0 || errno != ENOMSG)
        zdtm_fail("msg: more than 5 messages");

    if (mq) {
        struct mq_attr at;
        if (mq_getattr(q, &at))
            zdtm_fail("mq_getattr: %m");
        else if (at.mq_maxmsg != 8 || at.mq_msgsize != 64 || at.mq_curmsgs != 5 ||
                 !(at.mq_flags & O_NONBLOCK))
            zdtm_fail("mq attrs: maxmsg %ld msgsize %ld curmsgs %ld flags %lx", at.mq_maxmsg,
                      at.mq_msgsize, at.mq_curmsgs, at.mq_flags);
        int fl = fcntl(qw, F_GETFL);
        if ((fl & O_ACCMODE) != O_WRONLY || (fl & O_NONBLOCK))
            zdtm_fail("second mq fd flags %x", fl);
        /* Highest priority first, FIFO within one. */
        const int order[5] = {1, 3, 2, 0, 4};
        for (int i = 0; i < 5; i++) {
            char buf[64], want[64];
            unsigned prio = 99;
            int k = order[i];
            int wn = snprintf(want, sizeof(want), "mq %d prio %u", k, mq_prios[k]);
            ssize_t n = mq_receive(q, buf, sizeof(buf), &prio);
            if (n < 0) {
                zdtm_fail("mq_receive %d: %m", i);
                break;
            }
            if (n != wn || memcmp(buf, want, n) != 0 || prio != mq_prios[k])
                zdtm_fail("mq message %d: prio %u \"%.*s\"", i, prio, (int)n, buf);
        }
        char buf[64];
        if (mq_receive(q, buf, sizeof(buf), NULL) >= 0 || errno != EAGAIN)
            zdtm_fail("mq: not empty or blocking (%m)");
    }
    zdtm_finish();
}
