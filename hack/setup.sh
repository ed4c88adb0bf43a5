#!/usr/bin/env bash
# Installs what cryo's build, demo and tests need on a fresh Debian machine.
# Idempotent: installed packages are skipped.
set -euo pipefail
need=()
command -v gcc >/dev/null || need+=(gcc)
command -v make >/dev/null || need+=(make)
command -v python3 >/dev/null || need+=(python3)
command -v crit >/dev/null || need+=(criu)          # only for `crit`, the image decoder
# Real servers for the TCP tests (tests/e2e_inet.rs).
[ -x /usr/bin/redis-server ] || need+=(redis-server)
[ -x /usr/bin/redis-cli ] || need+=(redis-tools)
[ -x /usr/sbin/nginx ] || need+=(nginx)
# A real terminal multiplexer for the pty tests (tests/e2e_real.rs).
command -v tmux >/dev/null || need+=(tmux)
command -v sqlite3 >/dev/null || need+=(sqlite3)
command -v javac >/dev/null || need+=(default-jdk-headless)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
command -v node >/dev/null || need+=(nodejs)
command -v cargo >/dev/null || { echo "cargo (Rust toolchain) is required" >&2; exit 1; }
if ((${#need[@]})); then
  echo "hack/setup.sh: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
make -s -C "$(dirname "$0")/../test-containers/workloads"
