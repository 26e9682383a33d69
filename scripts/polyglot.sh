#!/usr/bin/env bash
# The polyglot example: a Python (componentize-py), a Rust (wit-bindgen) and
# a JavaScript (componentize-js) function built into components, with a Rust
# entry, by the build steps of examples/polyglot.toml (`cwasi run --build`
# builds what is missing or stale), then run; prints the JSON it produces,
# the routing decisions and the per-hop timings.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh --components
cargo build --release -p cwasi-cli
exec ./target/release/cwasi run --build examples/polyglot.toml --explain "$@"
