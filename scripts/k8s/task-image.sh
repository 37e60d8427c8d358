#!/usr/bin/env bash
# Build the image task pods run: Debian bookworm's Python 3.11 in /opt/venv with
# papercrane (from this checkout), cloudpickle, numpy and blake3 (the building Python's
# versions; blake3 is a dependency papercrane is installed without). No registry or
# Docker engine is needed: the root filesystem is made with debootstrap and packed as an OCI image tar
# (by ../shared/k8s/mkimage.py), which a cluster imports (pods use imagePullPolicy: Never).
#
#   scripts/k8s/task-image.sh OUT.tar [NAME:TAG]     (needs root; default local/papercrane-task:dev)
#
# The debootstrapped base (about 40 s and 280 MB) is cached in $PAPERCRANE_K8S_CACHE
# (default /var/cache/papercrane-k8s); only papercrane itself is reinstalled each time.
set -euo pipefail
OUT=$(realpath -m "$1"); REF=${2:-local/papercrane-task:dev}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
SHARED=${PAPERCRANE_K8S_SHARED:-$REPO/../shared/k8s}
CACHE=${PAPERCRANE_K8S_CACHE:-/var/cache/papercrane-k8s}
PY=${PYTHON:-python3}
mkdir -p "$CACHE"
BASE=$CACHE/base-rootfs.tar
if [ ! -f "$BASE" ]; then
  work=$(mktemp -d)
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  debootstrap --variant=minbase --include=python3,python3-venv bookworm "$work/root" \
    "${mirror:-http://deb.debian.org/debian}" >/dev/null
  chroot "$work/root" python3 -m venv /opt/venv
  rm -rf "$work/root/var/cache/apt/archives/"*.deb
  tar -C "$work/root" -cf "$BASE.tmp" . && mv "$BASE.tmp" "$BASE"
  rm -rf "$work"
fi
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir "$work/root"; tar -C "$work/root" -xf "$BASE"
# The packages tasks use, at the versions of the Python that builds this (the notebook's
# environment is checked against the image's, by name and version, before a task runs).
# The host's pip reaches the package index; the chroot's does not.
pins=$("$PY" - <<'PY'
from importlib import metadata
for name in ("numpy", "cloudpickle", "blake3"):
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(name)
PY
)
# shellcheck disable=SC2086
"$PY" -m pip download -q -d "$work/root/wheels" --only-binary=:all: \
  --python-version 3.11 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 $pins
"$PY" -m pip wheel -q --no-deps -w "$work/root/wheels" "$REPO"
# shellcheck disable=SC2086
chroot "$work/root" /opt/venv/bin/pip install -q --no-index --find-links /wheels $pins
wheel=$(basename "$(ls "$work"/root/wheels/papercrane-*.whl)")
chroot "$work/root" /opt/venv/bin/pip install -q --no-index --no-deps "/wheels/$wheel"
rm -rf "$work/root/wheels"
"$PY" "$SHARED/mkimage.py" "$REF" "$work/root" "$OUT" >/dev/null
echo "$REF -> $OUT"
