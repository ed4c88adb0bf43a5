#!/usr/bin/env python3
"""bigdict — a Python interpreter holding a big dict survives checkpoint/restore.

    python3 bigdict.py --out F --ready F [--mib N]

Builds a dict of about N MiB (default 200) of deterministic content from a seeded
random.Random: string keys mapped alternately to bytes and str values. Takes the
sha256 over its sorted items, writes the ready file ("<pid>\\n", via F.tmp + rename),
then sleeps in 10 ms steps until SIGTERM (the handler only sets a flag). Afterwards it
recomputes the sha256 and also regenerates the expected items from the seed and
compares each one with the dict (and the size); verdict PASS / FAIL: reason in --out,
exit 0 / 1; bad arguments exit 2. Stdlib only.
"""
import argparse
import hashlib
import os
import random
import signal
import sys
import time

SEED = 0x63727966  # "cryf"
VALUE = 4096       # bytes per value (str values: VALUE hex characters)

stop = False


def on_sigterm(signum, frame):
    global stop
    stop = True


def items(mib):
    """Yields the (key, value) pairs: deterministic, about mib MiB of values."""
    rng = random.Random(SEED)
    count = max(1, (mib << 20) // VALUE)
    for i in range(count):
        key = "k%08d-%016x" % (i, rng.getrandbits(64))
        if i % 2:
            yield key, rng.randbytes(VALUE // 2).hex()
        else:
            yield key, rng.randbytes(VALUE)


def digest(d):
    h = hashlib.sha256()
    for k in sorted(d):
        v = d[k]
        h.update(k.encode())
        h.update(b"\0b" if isinstance(v, bytes) else b"\0s")
        h.update(v if isinstance(v, bytes) else v.encode())
    return h.hexdigest()


def verify(d, mib, before):
    after = digest(d)
    if after != before:
        return "sha256 of the dict changed: %s, expected %s" % (after, before)
    n = 0
    for k, v in items(mib):
        n += 1
        got = d.get(k)
        if got is None:
            return "key %s missing" % k
        if type(got) is not type(v) or got != v:
            return "value of %s differs from the regenerated one" % k
    if n != len(d):
        return "dict has %d items, expected %d" % (len(d), n)
    return None


def write_atomic(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(path + ".tmp", path)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="verdict file")
    p.add_argument("--ready", required=True, help="ready marker")
    p.add_argument("--mib", type=int, default=200, help="approximate size in MiB (default 200)")
    a = p.parse_args()  # exits 2 with usage on bad arguments
    if a.mib < 1:
        p.error("--mib must be >= 1")

    signal.signal(signal.SIGTERM, on_sigterm)
    d = dict(items(a.mib))
    before = digest(d)
    print("bigdict: pid %d: %d items, sha256 %s" % (os.getpid(), len(d), before), file=sys.stderr, flush=True)
    write_atomic(a.ready, "%d\n" % os.getpid())

    while not stop:
        time.sleep(0.01)

    try:
        reason = verify(d, a.mib, before)
    except Exception as e:  # a broken interpreter state is a failure too
        reason = "exception while verifying: %r" % (e,)
    verdict = "PASS\n" if reason is None else "FAIL: %s\n" % reason
    fd = os.open(a.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, verdict.encode())
    os.fsync(fd)
    os.close(fd)
    print("bigdict: " + verdict, end="", file=sys.stderr, flush=True)
    sys.exit(0 if reason is None else 1)


if __name__ == "__main__":
    main()
