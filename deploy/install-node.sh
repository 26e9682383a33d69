#!/bin/sh
# Installs containerd-shim-cwasi-v1 on a node and registers the `cwasi`
# runtime handler with containerd's CRI plugin, then restarts containerd.
#
#   install-node.sh <path to containerd-shim-cwasi-v1> [host root, default /]
#
# Run it as root on the node, or from the installer DaemonSet
# (daemonset-installer.yaml), which mounts the host's root at /host.
# Safe to run again: the config is changed only once.
set -eu

SHIM="${1:?usage: install-node.sh <containerd-shim-cwasi-v1> [host-root]}"
ROOT="${2:-/}"
BIN="$ROOT/usr/local/bin"
CONFIG="$ROOT/etc/containerd/config.toml"

install -D -m 0755 "$SHIM" "$BIN/containerd-shim-cwasi-v1"
mkdir -p -m 0700 "$ROOT/run/cwasi"

if [ ! -f "$CONFIG" ]; then
    mkdir -p "$(dirname "$CONFIG")"
    echo 'version = 2' > "$CONFIG"
fi
if ! grep -q 'runtimes.cwasi\]' "$CONFIG"; then
    if grep -q '^version *= *3' "$CONFIG"; then
        section='plugins."io.containerd.cri.v1.runtime".containerd.runtimes.cwasi'
    else
        section='plugins."io.containerd.grpc.v1.cri".containerd.runtimes.cwasi'
    fi
    printf '\n[%s]\n  runtime_type = "io.containerd.cwasi.v1"\n  pod_annotations = ["cwasi.io/*", "cwasi.secondary.function"]\n' \
        "$section" >> "$CONFIG"
    echo "install-node: registered the cwasi runtime in $CONFIG"
fi

# Restart containerd on the host (systemd when present).
if [ "$ROOT" = "/" ]; then
    systemctl restart containerd 2>/dev/null || echo "install-node: restart containerd yourself"
else
    chroot "$ROOT" systemctl restart containerd 2>/dev/null \
        || echo "install-node: restart containerd on the node yourself"
fi
echo "install-node: done"
