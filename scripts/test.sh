#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test of the workspace
# (unit tests, and end-to-end tests with real wasmtime and guest programs).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh --test
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
