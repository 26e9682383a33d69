#!/usr/bin/env bash
# The demo: builds the example functions and the cwasi CLI, then runs
# examples/pipeline.toml (source -> normalize -> count, all embedded) and
# prints the result, the routing decisions and the per-hop timings.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
cargo build --release --target wasm32-wasip1 --target-dir target/guest -p cwasi-example-functions
cargo build --release -p cwasi-cli
exec ./target/release/cwasi run examples/pipeline.toml --explain "$@"
