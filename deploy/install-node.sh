#!/bin/sh
# The one install step of a CWASI node: `cwasi` and `containerd-shim-cwasi-v1`
# into /usr/local/bin, the node directory /run/cwasi (0700), and the `cwasi`
# runtime handler in containerd's config, passing the pods' CWASI
# annotations to the shim. containerd is restarted only if its config changed
# (a new shim binary needs no restart: containerd starts it per pod).
#
#   install-node.sh <dir> [host root, default /]
#
# <dir> holds the binaries, as scripts/dist.sh writes them (stripped; the
# .debug files beside them are not installed). A path to the shim binary
# itself is accepted too. Run it as root on the node, or from the installer
# DaemonSet (daemonset-installer.yaml), which mounts the host's root at
# /host. Safe to run again.
set -eu

SRC="${1:?usage: install-node.sh <dir with cwasi and containerd-shim-cwasi-v1> [host-root]}"
ROOT="${2:-/}"
[ -f "$SRC" ] && SRC="$(dirname "$SRC")"
BIN="$ROOT/usr/local/bin"
CONFIG="$ROOT/etc/containerd/config.toml"
ANNOTATIONS='pod_annotations = ["cwasi.io/*", "cwasi.secondary.function"]'

[ -x "$SRC/containerd-shim-cwasi-v1" ] || {
    echo "install-node: no containerd-shim-cwasi-v1 in $SRC (build it with scripts/dist.sh)" >&2
    exit 1
}
for bin in containerd-shim-cwasi-v1 cwasi; do
    if [ -x "$SRC/$bin" ]; then
        install -D -m 0755 "$SRC/$bin" "$BIN/$bin"
        echo "install-node: installed $BIN/$bin"
    fi
done
mkdir -p "$ROOT/run/cwasi"
chmod 0700 "$ROOT/run/cwasi"

changed=no
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
    printf '\n[%s]\n  runtime_type = "io.containerd.cwasi.v1"\n  %s\n' "$section" "$ANNOTATIONS" \
        >> "$CONFIG"
    echo "install-node: registered the cwasi runtime in $CONFIG"
    changed=yes
elif ! grep -q 'pod_annotations = \["cwasi.io/\*"' "$CONFIG"; then
    # An entry from an older install: let the annotations through.
    sed -i "/runtime_type = \"io.containerd.cwasi.v1\"/a\\  $ANNOTATIONS" "$CONFIG"
    echo "install-node: the cwasi runtime in $CONFIG now passes the CWASI pod annotations"
    changed=yes
fi

if [ "$changed" = yes ]; then
    if [ "$ROOT" = "/" ]; then
        systemctl restart containerd 2>/dev/null || echo "install-node: restart containerd yourself"
    else
        chroot "$ROOT" systemctl restart containerd 2>/dev/null \
            || echo "install-node: restart containerd on the node yourself"
    fi
fi
echo "install-node: done"
