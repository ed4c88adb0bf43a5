#!/usr/bin/env bash
# The whole test suite: lint, unit tests, end-to-end checkpoint/restore tests.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --all-targets
# Real processes and PIDs: one test at a time.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --lib --bins --tests -- --test-threads=1 2>&1 | tee "$log"
# One closing line for the whole suite.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
