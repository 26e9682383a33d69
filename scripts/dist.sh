#!/usr/bin/env bash
# Builds the installable binaries: `cwasi`, `containerd-shim-cwasi-v1` and
# `cwasi-containerd-config`, in the `dist` profile (the release profile under
# its own name), stripped, each with its debug info split off into a `.debug`
# file beside it (keep those for crash analysis; nodes need only the
# binaries). Then `deploy/install-node.sh <out-dir>` installs them on a node.
# At the end it prints the sizes of the binaries as a markdown table.
#
# The build has a target directory of its own (target/dist-build), so it
# neither rebuilds nor replaces a developer's `cargo build --release` in
# target/release (a build of two packages unifies other features than one of
# the workspace, and would overwrite the binaries there), nor waits on that
# build's lock. Its first run compiles everything once; later runs only what
# changed.
#
#   scripts/dist.sh [out-dir]     (default: target/dist)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-target/dist}"
BUILD_DIR=target/dist-build
BINS=(cwasi containerd-shim-cwasi-v1 cwasi-containerd-config)

bin_args=()
for bin in "${BINS[@]}"; do
    bin_args+=(--bin "$bin")
done
cargo build --profile dist --locked --target-dir "$BUILD_DIR" \
    -p cwasi-cli -p cwasi-shim "${bin_args[@]}"
for bin in "${BINS[@]}"; do
    ./scripts/split-debug.sh "$BUILD_DIR/dist/$bin" "$OUT"
done
ls -l "$OUT"

# Sizes in MB (10^6 bytes), one decimal.
mb() {
    awk -v bytes="$(stat -c %s "$1")" 'BEGIN { printf "%.1f MB", bytes / 1e6 }'
}
echo
echo "Sizes of the binaries (dist profile, $(uname -m)):"
echo
echo "| binary | stripped (\`$OUT/\`) | with line tables (\`$BUILD_DIR/dist/\`) | split-off \`.debug\` |"
echo "|---|---:|---:|---:|"
for bin in "${BINS[@]}"; do
    echo "| \`$bin\` | $(mb "$OUT/$bin") | $(mb "$BUILD_DIR/dist/$bin") | $(mb "$OUT/$bin.debug") |"
done
