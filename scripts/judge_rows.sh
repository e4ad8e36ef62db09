#!/usr/bin/env bash
# Codec rows of the ablation on real photos with a pretrained judge as the expert (issue 31):
# every row fine-tunes the shipped default for the same steps and seed, on the same photos.
#
#   scripts/judge_rows.sh WORK "F A2" [STEPS]     # one process per row, one thread each
#
#   F   the control: rate-distortion on the judge's photo crops, no judge run (task weight 0)
#   A1  + the judge's logit KL on the decoded crop, summed (no MTCE)
#   A2  + MTCE: the judge's features at strides 4/8/16 and the latent aligned to its stride-16
#       features, every term balanced by uncertainty weighting
#   A4  A2 + DIKL (memory bank and latent denoiser)
#
# Each writes WORK/ROW/weights.safetensors (resumable: rerun the same command) and WORK/ROW.log.
# Score them with the judge on held-out crops:
#   python -m benchmarks.judge_agreement --codecs mlcodec-hyperprior,mlcodec-hyperprior:WORK/F/weights.safetensors,...
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:?usage: scripts/judge_rows.sh WORK "ROWS" [STEPS]}
rows=${2:?usage: scripts/judge_rows.sh WORK "ROWS" [STEPS]}
steps=${3:-1000}
photos=${PHOTOS:-$HOME/.cache/mlcodec/photos}
judge=${JUDGE:-efficientnet-lite0}
mkdir -p "$work"
for row in $rows; do
  case $row in
  F) flags=(--task-weight 0 --no-mtce --no-bank --no-diffusion) ;;
  A1) flags=(--no-mtce --no-bank --no-diffusion) ;;
  A2) flags=(--no-bank --no-diffusion) ;;
  A4) flags=() ;;
  *) echo "unknown row $row (F, A1, A2, A4)" >&2; exit 2 ;;
  esac
  mlcodec train-codec --objective unified --judge "$judge" "${flags[@]}" --data "$photos" \
    --init mlcodec/pretrained/mlcodec-hyperprior.safetensors --crops dataset --patch 256 --batch-size 4 \
    --bf16 --steps "$steps" --seed 0 --threads 1 -o "$work/$row" >"$work/$row.log" 2>&1 &
done
wait
