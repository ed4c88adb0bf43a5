#!/usr/bin/env bash
# Demo: start a workload, checkpoint it, kill it, restore it, watch it continue; then the
# same with redis-server and a client whose TCP connection lives through the checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
cargo build --release -q
cryo=target/release/cryo
work=$(mktemp -d /tmp/cryo-demo.XXXXXX)
pid=
rpid=
client=
# Whatever happens, leave no workload behind (by PID) and no scratch files.
trap 'for p in $pid $rpid $client; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT

echo "== cryo check"
$cryo check
echo
echo "== starting a counter that appends 1, 2, 3 … to $work/count.txt every 10 ms"
# In its own session, with only stdio open (fds inherited from whatever started this
# script are not the workload's).
(
  for fd in /proc/$BASHPID/fd/*; do
    fd=${fd##*/}; [ "$fd" -gt 2 ] && eval "exec $fd>&-"
  done
  exec setsid test-containers/workloads/bin/counter --file "$work/count.txt" \
    --out "$work/out" --ready "$work/ready" </dev/null >"$work/log" 2>&1
) &
pid=$!
while [ ! -e "$work/ready" ]; do sleep 0.05; done
sleep 1
echo "   pid $pid, last value: $(tail -n1 "$work/count.txt")"
echo
echo "== cryo dump -t $pid -D $work/img   (the process is frozen, saved, killed)"
exec 3>&2 2>/dev/null
$cryo dump -t "$pid" -D "$work/img" 2>&3
wait "$pid" || true
exec 2>&3 3>&-
last=$(tail -n1 "$work/count.txt")
echo "   process gone: $(kill -0 "$pid" 2>/dev/null && echo no || echo yes); last value: $last"
ls -l "$work/img" | sed 's/^/   /'
sleep 1
echo "   one second later, still: $(tail -n1 "$work/count.txt")"
echo
echo "== cryo restore -D $work/img   (cryo waits for the restored process, like CRIU)"
$cryo restore -D "$work/img" --pidfile "$work/pid" &
restorer=$!
while [ ! -s "$work/pid" ]; do sleep 0.05; done
echo "   restored pid $(cat "$work/pid") (same as before: $pid)"
sleep 1
echo "   one second later: $(tail -n1 "$work/count.txt") (it continued from $last)"
kill -TERM "$pid"
status=0; wait "$restorer" || status=$?
echo "   the counter checked its own file (1..N, no gap, no repeat): $(cat "$work/out") (exit $status)"
[ "$status" = 0 ] && grep -q PASS "$work/out"

echo
echo "== a real server: redis-server with 100000 keys and a client connected over TCP"
port=$((20000 + $$ % 20000))
(
  for fd in /proc/$BASHPID/fd/*; do
    fd=${fd##*/}; [ "$fd" -gt 2 ] && eval "exec $fd>&-"
  done
  exec setsid redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$work" </dev/null >"$work/redis.log" 2>&1
) &
rpid=$!
# The client: loads the keys, then keeps its one connection and asks again when told.
python3 - "$port" "$work" <<'PY' &
import os, socket, sys, time
port, work = int(sys.argv[1]), sys.argv[2]
for _ in range(200):
    try:
        s = socket.create_connection(("127.0.0.1", port)); break
    except OSError:
        time.sleep(0.05)
f = s.makefile("rb")
def cmd(*a):
    s.sendall(b"*%d\r\n" % len(a) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in a))
buf = b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v)
               for k, v in ((b"key:%d" % i, b"value:%d" % i) for i in range(100000)))
s.sendall(buf)
for _ in range(100000): f.readline()
def ask(tag):
    cmd(b"DBSIZE"); n = f.readline().strip().decode()
    cmd(b"GET", b"key:4242"); f.readline(); v = f.readline().strip().decode()
    open(os.path.join(work, tag), "w").write("DBSIZE %s, key:4242 = %s, local port %d\n" % (n[1:], v, s.getsockname()[1]))
ask("before")
while not os.path.exists(os.path.join(work, "go")): time.sleep(0.05)
ask("after")
PY
client=$!
while [ ! -e "$work/before" ]; do sleep 0.05; done
echo "   redis pid $rpid; client says: $(cat "$work/before")"
echo "== cryo dump --tcp-established -t $rpid   (the connection is saved with TCP_REPAIR)"
# (The shell's own "Killed" notice for its dumped job goes to /dev/null; cryo's does not.)
exec 3>&2 2>/dev/null
$cryo dump --tcp-established -t "$rpid" -D "$work/rimg" 2>&3
wait "$rpid" || true
exec 2>&3 3>&-
echo "   redis gone: $(kill -0 "$rpid" 2>/dev/null && echo no || echo yes); images: $(du -sh "$work/rimg" | cut -f1)"
echo "== cryo restore --tcp-established"
$cryo restore --tcp-established -D "$work/rimg" --pidfile "$work/rpid" &
rrestorer=$!
while [ ! -s "$work/rpid" ]; do sleep 0.05; done
touch "$work/go"
while [ ! -e "$work/after" ]; do sleep 0.05; done
echo "   the same client, on the same connection: $(cat "$work/after")"
kill -TERM "$rpid"
wait "$rrestorer" 2>/dev/null || true
wait "$client" 2>/dev/null || true
[ "$(sed 's/ /_/g' "$work/before")" = "$(sed 's/ /_/g' "$work/after")" ]
echo "   PASS: every key still there, through the connection the client had before"
