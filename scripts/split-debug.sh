#!/bin/sh
# Copies a binary into a directory stripped, with its debug info split off
# beside it (<name>.debug) and linked by a .gnu_debuglink section, so that
# gdb and perf find the symbols when the .debug file is kept.
#
#   split-debug.sh <binary> <out-dir>
set -eu

BIN="${1:?usage: split-debug.sh <binary> <out-dir>}"
OUT="${2:?usage: split-debug.sh <binary> <out-dir>}"
NAME="$(basename "$BIN")"

command -v objcopy >/dev/null 2>&1 || {
    echo "split-debug: objcopy is missing; install it with: apt-get install binutils" >&2
    exit 1
}
mkdir -p "$OUT"
# Absolute paths: the second step runs in the output directory.
BIN="$(cd "$(dirname "$BIN")" && pwd)/$NAME"
OUT="$(cd "$OUT" && pwd)"
objcopy --only-keep-debug "$BIN" "$OUT/$NAME.debug"
chmod 0644 "$OUT/$NAME.debug"
# --add-gnu-debuglink names the file; it is looked up by name next to the
# binary or under /usr/lib/debug, so run it from the output directory.
(cd "$OUT" && objcopy --strip-all --add-gnu-debuglink="$NAME.debug" "$BIN" "$NAME.tmp" \
    && mv "$NAME.tmp" "$NAME")
chmod 0755 "$OUT/$NAME"
