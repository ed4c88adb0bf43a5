#!/usr/bin/env bash
# The whole test suite: lint, unit tests, end-to-end checkpoint/restore tests.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --all-targets
# Real processes and PIDs: one test at a time.
cargo test --workspace -- --test-threads=1
