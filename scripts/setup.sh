#!/usr/bin/env bash
# Installs what CWASI needs on a Debian machine, as root: the wasm32-wasip1
# and wasm32-wasip2 Rust targets; with --components the tools that build
# Python and JavaScript components (componentize-py from PyPI,
# componentize-js from npm); with --docs mdbook, which builds the docs site
# (book.toml, docs/); and with --test all of those and the Debian packages
# the test suite uses. Safe to run again; it installs only what is missing.
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo is not installed; install Rust with rustup first" >&2
    exit 1
fi

# wasm32-wasip1: core-module guests; wasm32-wasip2: Rust components.
for target in wasm32-wasip1 wasm32-wasip2; do
    if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
        echo "setup: adding the $target target"
        rustup target add "$target"
    fi
done

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

# The component toolchains, pinned: componentize-py (PyPI) builds Python
# guests, componentize-js (npm) JavaScript ones (docs/guest-python.md,
# docs/guest-javascript.md).
COMPONENTIZE_PY=componentize-py==0.25.1
COMPONENTIZE_JS=@bytecodealliance/componentize-js@0.23.0
if [ "${1:-}" = "--test" ] || [ "${1:-}" = "--components" ]; then
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
        echo "setup: installing python3 and pip"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends python3 python3-pip
    fi
    if [ "$(componentize-py --version 2>/dev/null)" != "componentize-py ${COMPONENTIZE_PY#*==}" ]; then
        echo "setup: installing $COMPONENTIZE_PY"
        # Debian's own Python refuses installs outside a venv (PEP 668).
        python3 -m pip install -q "$COMPONENTIZE_PY" \
            || python3 -m pip install -q --break-system-packages "$COMPONENTIZE_PY"
        hash -r
    fi
    if ! command -v npm >/dev/null 2>&1; then
        echo "setup: installing nodejs and npm"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends nodejs npm
    fi
    if [ "$(componentize-js --version 2>/dev/null)" != "${COMPONENTIZE_JS##*@}" ]; then
        echo "setup: installing $COMPONENTIZE_JS"
        npm install -g --no-fund --no-audit "$COMPONENTIZE_JS"
        hash -r
    fi
fi

# mdbook, pinned, from crates.io: builds the docs site (`mdbook build`),
# and crates/doc-site's tests build it and check its links.
# It compiles once, in a few minutes. Built with the search feature only:
# `mdbook build` and the site's search, without `mdbook serve` (whose web
# server and file watcher the checks do not need; `cargo install mdbook`
# with its default features has it).
MDBOOK_VERSION=0.5.4
if [ "${1:-}" = "--test" ] || [ "${1:-}" = "--docs" ]; then
    if [ "$(mdbook --version 2>/dev/null)" != "mdbook v$MDBOOK_VERSION" ]; then
        echo "setup: installing mdbook $MDBOOK_VERSION"
        cargo install --locked mdbook --version "$MDBOOK_VERSION" --no-default-features --features search
        hash -r
    fi
fi
