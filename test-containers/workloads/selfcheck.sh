#!/usr/bin/env bash
# Smoke test of the workloads without any checkpointing: each one is started like the
# harness does (cwd = a fresh scratch dir, stdin /dev/null, stdout/stderr to files),
# waited for (ready file), sent SIGTERM, and must write PASS and exit 0. Bad arguments
# must exit 2. Everything started here is killed by PID on exit.
#   test-containers/workloads/selfcheck.sh            (BIGDICT_MIB=200 by default)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
make -s -C "$here" || exit 1
bin=$here/bin
root=$(mktemp -d /tmp/cryo-selfcheck.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
    rm -rf "$root"
}
trap cleanup EXIT
failed=0

# run NAME SETTLE_SECONDS CMD...   (@IO@ -> --out DIR/out --ready DIR/ready; @DIR@ -> DIR)
run() {
    local name=$1 settle=$2; shift 2
    local dir=$root/$name args=() a
    mkdir -p "$dir"
    for a in "$@"; do
        if [ "$a" = @IO@ ]; then args+=(--out "$dir/out" --ready "$dir/ready"); else args+=("${a//@DIR@/$dir}"); fi
    done
    local t0=$SECONDS
    (cd "$dir" && exec "${args[@]}" \
        </dev/null >"$dir/stdout" 2>"$dir/stderr") &
    local pid=$!
    pids+=("$pid")
    while [ ! -e "$dir/ready" ]; do
        if ! kill -0 "$pid" 2>/dev/null || [ $((SECONDS - t0)) -gt 120 ]; then
            echo "FAIL $name: no ready file"; sed 's/^/    /' "$dir/stderr"; failed=1
            kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; return
        fi
        sleep 0.01
    done
    if [ "$(cat "$dir/ready")" != "$pid" ]; then
        echo "FAIL $name: ready file holds '$(cat "$dir/ready")', pid is $pid"; failed=1
    fi
    sleep "$settle"
    kill -TERM "$pid"
    wait "$pid"; local rc=$?
    local out; out=$(cat "$dir/out" 2>/dev/null)
    if [ "$rc" = 0 ] && [ "$out" = PASS ]; then
        echo "ok   $name ($((SECONDS - t0)) s)"
    else
        echo "FAIL $name: exit $rc, out '$out'"; sed 's/^/    /' "$dir/stderr"; failed=1
    fi
}

# usage NAME CMD...: must exit 2
usage() {
    local name=$1; shift
    "$@" >/dev/null 2>&1 </dev/null; local rc=$?
    if [ "$rc" = 2 ]; then echo "ok   $name exits 2"; else echo "FAIL $name: exit $rc, expected 2"; failed=1; fi
}

run mem 0.3 "$bin/mem" @IO@ --mib 64 --tmpdir @DIR@
run mem-small 0.1 "$bin/mem" @IO@ --mib 1 --tmpdir @DIR@
run fpu 0.2 "$bin/fpu" @IO@
run files 0.1 "$bin/files" @IO@ --tmpdir @DIR@
run signals 0.1 "$bin/signals" @IO@
run counter 0.3 "$bin/counter" @IO@ --file @DIR@/count.txt
run sleeper-nanosleep 0.2 "$bin/sleeper" @IO@ --mode nanosleep
run sleeper-pause 0.2 "$bin/sleeper" @IO@ --mode pause
run sleeper-pipe 0.2 "$bin/sleeper" @IO@ --mode pipe
run bigdict 0.1 python3 "$here/py/bigdict.py" @IO@ --mib "${BIGDICT_MIB:-200}"

for p in mem fpu files signals counter sleeper; do usage "$p-noargs" "$bin/$p"; done
usage mem-badopt "$bin/mem" --out /dev/null --ready /dev/null --bogus 1
usage mem-badnum "$bin/mem" --out /dev/null --ready /dev/null --mib x
usage counter-nofile "$bin/counter" --out /dev/null --ready /dev/null
usage sleeper-badmode "$bin/sleeper" --out /dev/null --ready /dev/null --mode nap
usage bigdict-noargs python3 "$here/py/bigdict.py"

[ "$failed" = 0 ] && echo "selfcheck: all passed" || echo "selfcheck: FAILURES"
exit "$failed"
