#!/usr/bin/env bash
# Demo: start a workload, checkpoint it, kill it, restore it, watch it continue.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
cargo build --release -q
cryo=target/release/cryo
work=$(mktemp -d /tmp/cryo-demo.XXXXXX)
pid=
# Whatever happens, leave no workload behind (by PID) and no scratch files.
trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$work"' EXIT

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
$cryo dump -t "$pid" -D "$work/img"
{ wait "$pid"; } 2>/dev/null || true
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
