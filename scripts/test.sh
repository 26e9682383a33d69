#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test of the workspace
# (unit tests, and end-to-end tests with real wasmtime and guest programs).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh --test
cargo fmt --all -- --check

# A clean build gains nothing from incremental compilation, and pays for
# writing its caches.
if [ "${CI:-}" = true ]; then
    export CARGO_INCREMENTAL=0
fi

# Lints and tests share one build. `cargo clippy` would check every
# dependency (wasmtime, cranelift, the shim's tree) only to throw the result
# away before the tests build them all again; here clippy's driver compiles
# the workspace's own crates for the tests and lints them as it goes (the
# same lints as `cargo clippy --workspace --all-targets -- -D warnings`, on
# the same targets), and the dependencies are compiled once. CLIPPY_ARGS is
# how cargo-clippy hands its arguments to the driver.
export RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver)"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
cargo test --workspace --all-targets --locked --no-run
# Every test binary runs even when one fails, so one CI run reports every
# failure; the exit status is still non-zero.
cargo test --workspace --locked --no-fail-fast
