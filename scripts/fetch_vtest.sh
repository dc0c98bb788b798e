#!/usr/bin/env bash
# Fetch the real videos of Debian's opencv-doc package:
#   DEST_DIR/vtest.avi (768x576, 10 fps, pedestrians on a plaza: the demo's and the tests' camera)
#   DEST_DIR/opencv-doc/<path under /usr/share/doc/opencv-doc>: every video file of the package
#   (Megamind.avi film scene, tree.avi hand-held, box.mp4 and cup.mp4 hand-held objects, ...), .gz ones
#   gunzipped: hard negatives of the fire/smoke evaluation (tests/data/fire_smoke_split.json).
# Usage: scripts/fetch_vtest.sh DEST_DIR   (skipped when everything is already there)
set -euo pipefail
dest=${1:?usage: fetch_vtest.sh DEST_DIR}
mkdir -p "$dest"
[ -s "$dest/vtest.avi" ] && [ -s "$dest/opencv-doc/.complete" ] && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download opencv-doc >/dev/null 2>&1) || {
  apt-get update -q >/dev/null && (cd "$work" && apt-get download opencv-doc >/dev/null)
}
dpkg -x "$work"/opencv-doc_*.deb "$work/x"
doc="$work/x/usr/share/doc/opencv-doc"
cp "$doc/examples/data/vtest.avi" "$dest/vtest.avi.part"
mv "$dest/vtest.avi.part" "$dest/vtest.avi"
echo "vtest.avi -> $dest/vtest.avi"
count=0
while IFS= read -r -d '' f; do
  rel=${f#"$doc"/}
  rel=${rel%.gz}
  mkdir -p "$dest/opencv-doc/$(dirname "$rel")"
  case "$f" in
    *.gz) gunzip -c "$f" > "$dest/opencv-doc/$rel.part" ;;
    *) cp "$f" "$dest/opencv-doc/$rel.part" ;;
  esac
  mv "$dest/opencv-doc/$rel.part" "$dest/opencv-doc/$rel"
  count=$((count + 1))
done < <(find "$doc" -type f \( -name '*.avi' -o -name '*.mp4' -o -name '*.mp4.gz' -o -name '*.avi.gz' \) -print0)
date -u +%FT%TZ > "$dest/opencv-doc/.complete"
echo "$count opencv-doc videos -> $dest/opencv-doc"
