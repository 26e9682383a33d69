#!/usr/bin/env bash
# Installs what CWASI needs on a Debian machine, as root: the wasm32-wasip1
# Rust target, and with --test the Debian packages the test suite uses.
# Safe to run again; it installs only what is missing.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo is not installed; install Rust with rustup first" >&2
    exit 1
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
    echo "setup: adding the wasm32-wasip1 target"
    rustup target add wasm32-wasip1
fi

# Debian packages the test suite needs. The servers among them are started
# by the tests themselves, on loopback or private sockets, never as services:
# - redis-server: the broker of remote mode;
# - util-linux (setpriv): a test calls a server as another user;
# - containerd, runc: the shim's end-to-end tests run a private containerd;
# - protobuf-compiler, libseccomp-dev: building the shim (runwasi's
#   containerd-client runs protoc; youki's libcontainer links libseccomp);
# - openssl: tests make private CAs for a TLS redis-server and for the
#   nodes of the direct data plane;
# - iproute2 (ip, tc): the multi-node tests and `cwasi bench --netns` make
#   network namespaces joined by veth pairs, and shape links with tbf;
# - g++: libfuzzer-sys compiles libFuzzer when the fuzz targets are built
#   (clippy checks them with the rest of the workspace);
# - binutils (objcopy, readelf): scripts/split-debug.sh strips the installable
#   binaries, and its test reads their sections;
# - prometheus: a real Prometheus scrapes `cwasi serve --metrics` in the
#   metrics test (started by the test on a free port, never as a service);
# - gcc, libc6-dev: the CRI test builds its pod sandbox's pause program
#   static, as no registry with the upstream pause image can be reached.
# - clang, lld, wasi-libc, libclang-rt-14-dev-wasm32: the C guest programs
#   (guests/c/cwasi.h) are built for wasm32-wasi with Debian's toolchain.
APT_PACKAGES=()
if [ "${1:-}" = "--test" ]; then
    APT_PACKAGES=(redis-server util-linux containerd runc protobuf-compiler libseccomp-dev openssl g++ gcc libc6-dev iproute2 prometheus binutils clang lld wasi-libc libclang-rt-14-dev-wasm32)
fi
missing=()
for p in ${APT_PACKAGES[@]+"${APT_PACKAGES[@]}"}; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
