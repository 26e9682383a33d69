#!/bin/sh
# The one install step of a CWASI node:
# - `containerd-shim-cwasi-v1` and `cwasi` into /usr/local/bin;
# - the node directory /run/cwasi (0700, root), now and, through a
#   tmpfiles.d entry, after every boot (/run is a tmpfs);
# - /var/lib/cwasi (0700, root), where the shim keeps the node's compile
#   cache;
# - the `cwasi` runtime handler in containerd's config, with the pods'
#   CWASI annotations passed to the shim, merged into the config the node
#   has by `cwasi-containerd-config`: every runtime already there is kept,
#   and `runc` is added if the default runtime has no entry (a `runtimes`
#   table without it makes containerd's CRI plugin fail to load). The old
#   config is kept beside it as config.toml.cwasi-backup-<time>.
# containerd is restarted only if its config changed (a new shim binary needs
# no restart: containerd starts it per pod).
#
#   install-node.sh <dir> [host root, default /]
#
# <dir> holds the binaries, as scripts/dist.sh writes them (stripped; the
# .debug files beside them are not installed). A path to the shim binary
# itself is accepted too. Run it as root on the node, or from the installer
# DaemonSet (daemonset-installer.yaml), which mounts the host's root at
# /host. Safe to run again: a second run changes nothing.
set -eu

SRC="${1:?usage: install-node.sh <dir with cwasi, containerd-shim-cwasi-v1 and cwasi-containerd-config> [host-root]}"
ROOT="${2:-/}"
[ -f "$SRC" ] && SRC="$(dirname "$SRC")"
BIN="$ROOT/usr/local/bin"
CONFIG="$ROOT/etc/containerd/config.toml"
TMPFILES="$ROOT/etc/tmpfiles.d/cwasi.conf"

for bin in containerd-shim-cwasi-v1 cwasi-containerd-config; do
    [ -x "$SRC/$bin" ] || {
        echo "install-node: no $bin in $SRC (build it with scripts/dist.sh)" >&2
        exit 1
    }
done
for bin in containerd-shim-cwasi-v1 cwasi; do
    if [ -x "$SRC/$bin" ]; then
        install -D -m 0755 "$SRC/$bin" "$BIN/$bin"
        echo "install-node: installed $BIN/$bin"
    fi
done

# The node directory and the compile cache's parent: root's alone.
install -d -m 0700 "$ROOT/run/cwasi" "$ROOT/var/lib/cwasi"
chmod 0700 "$ROOT/run/cwasi" "$ROOT/var/lib/cwasi"
tmpfiles='# CWASI (deploy/install-node.sh): the node directory, where served functions
# keep their sockets and records, made again at every boot (/run is a tmpfs);
# and the node'"'"'s compile cache of the shim (native code: root'"'"'s alone).
d /run/cwasi 0700 root root -
d /var/lib/cwasi 0700 root root -'
if [ "$(cat "$TMPFILES" 2>/dev/null)" != "$tmpfiles" ]; then
    mkdir -p "$(dirname "$TMPFILES")"
    printf '%s\n' "$tmpfiles" > "$TMPFILES"
    echo "install-node: wrote $TMPFILES (/run/cwasi after every boot)"
fi

before="$(cat "$CONFIG" 2>/dev/null | cksum)"
"$SRC/cwasi-containerd-config" "$CONFIG"
after="$(cat "$CONFIG" 2>/dev/null | cksum)"

if [ "$before" != "$after" ]; then
    if [ "$ROOT" = "/" ]; then
        systemctl restart containerd 2>/dev/null || echo "install-node: restart containerd yourself"
    else
        chroot "$ROOT" systemctl restart containerd 2>/dev/null \
            || echo "install-node: restart containerd on the node yourself"
    fi
fi
cat <<'EOF'
install-node: done. To check the node, as root on it:
install-node:   ctr plugins ls id==cri   # the line io.containerd.grpc.v1 cri ends in STATUS ok
install-node:   cwasi image build hello.wasm -t docker.io/library/hello:latest -o hello.tar
install-node:   ctr image import --all-platforms hello.tar
install-node:   ctr run --rm --runtime io.containerd.cwasi.v1 docker.io/library/hello:latest hello-1
EOF
