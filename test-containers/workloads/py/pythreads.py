"""Several Python threads (real interpreter threads, GIL, condition variables) that keep
counting through a checkpoint. On SIGTERM: every thread must still be alive and still
advancing, each thread's private state (threading.local) intact, and the shared total
must equal the sum of the per-thread counts. Same --out/--ready protocol as zdtm.h."""
import argparse
import os
import signal
import sys
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--ready", required=True)
ap.add_argument("--threads", type=int, default=4)
args = ap.parse_args()

stop = threading.Event()
lock = threading.Lock()
cond = threading.Condition(lock)
total = 0
counts = [0] * args.threads
after = [0] * args.threads
local = threading.local()
errors = []


def work(i):
    global total
    local.ident = ("worker", i, threading.get_ident())
    while True:
        stopping = stop.is_set()
        with cond:
            counts[i] += 1
            total += 1
            if stopping:
                after[i] += 1
            if i % 2 == 0 and not stopping:
                cond.wait(0.005)
        if stopping and after[i] >= 3:
            break
        if i % 2:
            time.sleep(0.003)
    if local.ident != ("worker", i, threading.get_ident()):
        errors.append(f"thread {i}: local state {local.ident}")


signal.signal(signal.SIGTERM, lambda *_: stop.set())
ts = [threading.Thread(target=work, args=(i,), name=f"w{i}") for i in range(args.threads)]
for t in ts:
    t.start()
with open(args.ready + ".tmp", "w") as f:
    f.write(f"{os.getpid()}\n")
os.rename(args.ready + ".tmp", args.ready)
while not stop.is_set():
    time.sleep(0.01)
with cond:
    cond.notify_all()
for t in ts:
    t.join(10)
    if t.is_alive():
        errors.append(f"{t.name} did not finish")
if sum(counts) != total:
    errors.append(f"total {total} != sum {sum(counts)}")
if any(a < 3 for a in after):
    errors.append(f"threads stopped advancing: {after}")
with open(args.out, "w") as f:
    f.write("PASS\n" if not errors else "FAIL: " + "; ".join(errors) + "\n")
sys.exit(0 if not errors else 1)
