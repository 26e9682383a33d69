#!/usr/bin/env bash
# Builds the installable binaries: `cwasi` and `containerd-shim-cwasi-v1`,
# release profile, stripped, each with its debug info split off into a
# `.debug` file beside it (keep those for crash analysis; nodes need only the
# binaries). Then `deploy/install-node.sh <out-dir>` installs them on a node.
#
#   scripts/dist.sh [out-dir]     (default: target/dist)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-target/dist}"

cargo build --release --locked -p cwasi-cli -p cwasi-shim
for bin in cwasi containerd-shim-cwasi-v1; do
    ./scripts/split-debug.sh "target/release/$bin" "$OUT"
done
ls -l "$OUT"
