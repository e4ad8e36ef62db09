#!/usr/bin/env bash
# Codec rows of the MTCE + DIKL ablation (benchmarks/unified.py) on a lent GPU, all rows at once.
#
# The experts and evaluation references do not depend on any row: train them on the CPU first
# (`python -m benchmarks.unified --work WORK --rows A0`, resumable across sessions). Then:
#
#   scripts/gpu_unified.sh prepare WORK   # here: .gpu/ gets the cp312 wheels, the training photos
#                                         # (held-out ones left out, long side 1024) and WORK/experts
#   # device tool: carry [".gpu"], command "ROWS=A4,A1,A2,LOO MINUTES=6 scripts/gpu_unified.sh run"
#   scripts/gpu_unified.sh collect FILES_AT WORK   # here: the weights into WORK/codecs/ROW/
#
# `run` trains each row in its own process on the one GPU (the cores shared out), for MINUTES of
# codec steps each, and brings back ROW.safetensors per row (13 MB each: at most 4 rows a call,
# which is what fits in the 64 MiB that come back) and log.txt. The rest of the benchmark (heads,
# evaluation) then runs here with `--rows A0,...` on the same WORK: it finds the rows trained.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
prepare)
  work=${2:?usage: scripts/gpu_unified.sh prepare WORK}
  for t in cls seg det; do
    ls "$work"/experts/$t/*.history.json >/dev/null || { echo "no trained $t expert in $work" >&2; exit 2; }
  done
  rm -rf .gpu/photos && mkdir -p .gpu/whl .gpu/photos
  grep -qxF '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  for pkg in compressai==1.2.8 pytorch-msssim==1.0.0; do
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
      --platform any -d .gpu/whl "$pkg"
  done
  python - "$HOME/.cache/mlcodec/photos" .gpu/photos <<'EOF'
import sys
from pathlib import Path

from PIL import Image

from mlcodec.data.photos import training_photos

out = Path(sys.argv[2])
for p in training_photos([sys.argv[1]], use_skimage=False):  # held-out photos are not returned
    im = p.image
    scale = min(1.0, 1024 / max(im.size))
    im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
    im.save(out / f"{p.name}.jpg", quality=95, subsampling=0)  # a quarter of PNG's bytes: the tree is 64 MiB
EOF
  rm -rf .gpu/experts && cp -r "$work/experts" .gpu/experts
  du -sh .gpu
  git ls-files -z | du -cb --files0-from=- | tail -1 | awk '{printf "tracked files: %.1f MiB (with .gpu at most 64 MiB travel)\n", $1 / 1048576}'
  ;;
run)
  : "${OUT:?run this through the device tool}"
  rows=${ROWS:-A4,A1,A2,LOO}
  n=$(tr ',' '\n' <<<"$rows" | wc -l)
  [ "$n" -le 4 ] || { echo "at most 4 rows a call (64 MiB come back)" >&2; exit 2; }
  device=${DEVICE:-cuda}  # DEVICE=cpu: a smoke test of this script on a machine with mlcodec installed
  if [ "$device" = cuda ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  fi
  export YOLO_OFFLINE=1 PYTHONUNBUFFERED=1
  mkdir -p /tmp/unified && cp -r .gpu/experts /tmp/unified/
  threads=$(( $(nproc) / n > 0 ? $(nproc) / n : 1 ))
  pids=()
  for r in ${rows//,/ }; do
    OMP_NUM_THREADS=$threads python3 -m benchmarks.unified --work /tmp/unified --rows "$r" --until codecs \
      --device "$device" --threads $threads --minutes "${MINUTES:-6}" --steps "${STEPS:-1000000}" \
      --photos .gpu/photos ${EXTRA:-} > "/tmp/unified/$r.log" 2>&1 &
    pids+=($!)
  done
  status=0
  for p in "${pids[@]}"; do wait "$p" || status=1; done
  for r in ${rows//,/ }; do
    { echo "== $r"; cat "/tmp/unified/$r.log"; } >> "$OUT/log.txt"
    cp "/tmp/unified/codecs/$r/weights.safetensors" "$OUT/$r.safetensors" || status=1
  done
  exit $status
  ;;
collect)
  from=${2:?usage: scripts/gpu_unified.sh collect FILES_AT WORK}
  work=${3:?usage: scripts/gpu_unified.sh collect FILES_AT WORK}
  for f in "$from"/*.safetensors; do
    r=$(basename "$f" .safetensors)
    mkdir -p "$work/codecs/$r" && cp "$f" "$work/codecs/$r/weights.safetensors" && echo "$r -> $work/codecs/$r"
  done
  ;;
*)
  sed -n '2,16p' "$0"
  exit 2
  ;;
esac
