#!/usr/bin/env bash
# The polyglot example: builds a Python (componentize-py), a Rust (wit-bindgen)
# and a JavaScript (componentize-js) function into components, with a Rust
# entry, then runs examples/polyglot.toml and prints the JSON it produces, the
# routing decisions and the per-hop timings.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh --components
out=target/components
mkdir -p "$out"
cargo build --release --target wasm32-wasip2 --target-dir target/guest \
    -p cwasi-example-component -p component-entry
cp target/guest/wasm32-wasip2/release/upper.wasm target/guest/wasm32-wasip2/release/component_entry.wasm "$out/"
componentize-py -d wit -w cwasi:function/function componentize -p examples/python parse -o "$out/parse.wasm"
componentize-js examples/js/format.js --wit wit -n cwasi:function/function -d http fetch-event -o "$out/format.wasm"
cargo build --release -p cwasi-cli
exec ./target/release/cwasi run examples/polyglot.toml --explain "$@"
