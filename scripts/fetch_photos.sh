#!/usr/bin/env bash
# Fetch the offline photo sets used to train and evaluate the default codec.
# Debian's wallpaper packages are downloaded (not installed) and unpacked under DEST;
# nothing is committed to the repository. Usage: scripts/fetch_photos.sh [DEST]
set -euo pipefail
dest=${1:-${MLCODEC_PHOTOS:-$HOME/.cache/mlcodec/photos}}
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
apt-get download ukui-wallpapers mate-backgrounds lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 >/dev/null
for deb in *.deb; do dpkg -x "$deb" x; done
mkdir -p "$dest/ukui" "$dest/mate" "$dest/lomiri"
cp x/usr/share/backgrounds/*_by_*.jpg "$dest/lomiri/"
find x/usr/share/backgrounds -maxdepth 1 -name "*.jpg" ! -name "*_by_*" -exec cp {} "$dest/ukui/" \;
cp x/usr/share/backgrounds/mate/nature/*.jpg x/usr/share/backgrounds/mate/abstract/Elephants.jpg "$dest/mate/"
echo "photos in $dest: $(find "$dest" -name '*.jpg' | wc -l) files"
