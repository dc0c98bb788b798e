#!/usr/bin/env bash
# Fetch vtest.avi (768x576, 10 fps, pedestrians on a plaza) from Debian's opencv-doc package.
# Usage: scripts/fetch_vtest.sh DEST_DIR   -> DEST_DIR/vtest.avi (skipped when already there)
set -euo pipefail
dest=${1:?usage: fetch_vtest.sh DEST_DIR}
mkdir -p "$dest"
[ -s "$dest/vtest.avi" ] && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download opencv-doc >/dev/null 2>&1) || {
  apt-get update -q >/dev/null && (cd "$work" && apt-get download opencv-doc >/dev/null)
}
dpkg -x "$work"/opencv-doc_*.deb "$work/x"
cp "$work/x/usr/share/doc/opencv-doc/examples/data/vtest.avi" "$dest/vtest.avi.part"
mv "$dest/vtest.avi.part" "$dest/vtest.avi"
echo "vtest.avi -> $dest/vtest.avi"
