#!/usr/bin/env bash
# Fetch the offline photo sets used to train and evaluate the codecs: the allow-list in
# DEVELOPERS.md (ukui, MATE, Lomiri photos; gnome-backgrounds' and lomiri-wallpapers' renders).
# Debian's wallpaper packages are downloaded (not installed) and unpacked under DEST;
# nothing is committed to the repository. Usage: scripts/fetch_photos.sh [DEST [RENDERS]]
# DEST/{ukui,mate,lomiri} hold photos (the folder the recorded recipes train on); RENDERS
# (default: renders/ beside DEST) holds rendered wallpapers (3D textures, no camera), kept apart
# so that a recipe chooses whether to train on them. The held-out photos are
# listed in mlcodec.data.photos.FILES_HELD_OUT (by photo: no crop of them is ever trained on).
set -euo pipefail
dest=${1:-${MLCODEC_PHOTOS:-$HOME/.cache/mlcodec/photos}}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
renders=${2:-$(dirname "$dest")/renders}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
apt-get download ukui-wallpapers mate-backgrounds lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 \
    lomiri-wallpapers gnome-backgrounds >/dev/null
for deb in *.deb; do dpkg -x "$deb" x; done
mkdir -p "$dest/ukui" "$dest/mate" "$dest/lomiri" "$renders"
cp x/usr/share/backgrounds/*_by_*.jpg "$dest/lomiri/"
find x/usr/share/backgrounds -maxdepth 1 -name "*.jpg" ! -name "*_by_*" -exec cp {} "$dest/ukui/" \;
cp x/usr/share/backgrounds/mate/nature/*.jpg x/usr/share/backgrounds/mate/abstract/Elephants.jpg "$dest/mate/"
# gnome: skip the flat 'symbolic' and the 256 px 'vnc' backgrounds
for f in x/usr/share/backgrounds/gnome/{adwaita,grid,licorice,pixels,truchet,wood}-[dl].webp; do
    cp "$f" "$renders/"
done
cp x/usr/share/backgrounds/warty-final-ubuntu.png "$renders/"
echo "photos in $dest: $(find "$dest" -name '*.jpg' | wc -l) photos, $(find "$renders" -type f | wc -l) renders in $renders"
