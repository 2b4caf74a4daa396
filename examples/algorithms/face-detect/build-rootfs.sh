#!/usr/bin/env bash
# Builds the root filesystem of the face-detect image into DIR/rootfs, with no
# container engine: Debian 12 packages (python3.11 and the C libraries it and
# the wheels link against) unpacked with dpkg-deb, the pinned wheels of
# requirements.txt installed with pip --target, and the Python worker SDK
# (clients/python-worker) for worker.py. Runs as root on Debian 12
# (apt-get download needs the package lists); about 1 minute.
#
#   examples/algorithms/face-detect/build-rootfs.sh DIR
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:?usage: build-rootfs.sh DIR}"

# Exactly what python3.11 and the manylinux wheels load (the package closure
# without dpkg, perl and the other tools a running image never needs).
PACKAGES=(
  python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
  libc6 libgcc-s1 gcc-12-base libstdc++6 zlib1g libexpat1 libbz2-1.0 libcrypt1
  libdb5.3 libffi8 liblzma5 libncursesw6 libtinfo6 libnsl2 libtirpc3
  libtirpc-common libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0
  libkeyutils1 libcom-err2 libssl3 libreadline8 readline-common libsqlite3-0
  libuuid1 media-types
)

if ! apt-cache policy python3.11-minimal 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  apt-get update >/dev/null
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download "${PACKAGES[@]}" >/dev/null) || { echo "apt-get download failed" >&2; exit 1; }
rm -rf "$OUT/rootfs"
mkdir -p "$OUT/rootfs"
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$OUT/rootfs"; done

pip install --quiet --no-deps --require-hashes --only-binary=:all: --no-compile \
  --python-version 3.11 --implementation cp --platform manylinux2014_x86_64 \
  --target "$OUT/rootfs/opt/vision/site-packages" -r "$HERE/requirements.txt"

root="$OUT/rootfs"
# The Python worker SDK for worker.py (worker mode), from this repository:
# its pure-Python package with the committed generated gRPC code.
SDK="$HERE/../../../clients/python-worker/src/vision_worker"
mkdir -p "$root/opt/vision/site-packages/vision_worker/_proto"
cp "$SDK"/*.py "$root/opt/vision/site-packages/vision_worker/"
cp "$SDK"/_proto/*.py "$root/opt/vision/site-packages/vision_worker/_proto/"
# The interpreter under its usual name; a user for the non-root UID.
ln -sf python3.11 "$root/usr/bin/python3"
mkdir -p "$root/etc" "$root/tmp"
chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nnonroot:x:65532:65532:nonroot:/tmp:/usr/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
# Documentation, manuals and translations: not needed to run.
rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/locale" "$root/usr/share/lintian"
# The versions that went in, for the image's record and the cache key.
for deb in "$work"/*.deb; do dpkg-deb -f "$deb" Package Version | paste -sd= ; done | sed 's/Package: //; s/=Version: /=/' >"$root/opt/vision/packages.txt"
