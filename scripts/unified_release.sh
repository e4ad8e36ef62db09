#!/usr/bin/env bash
# The recipe of mlcodec-unified release 3 (issue 31): the packaged default (mlcodec-hyperprior
# release 2) fine-tuned with EfficientNet-Lite0 as the unified objective's expert, on the
# allow-listed training photos only (scripts/fetch_photos.sh), widened to lower rates (release 2),
# then trained with the procedural experts beside the judge (release 3).
#
#   scripts/unified_release.sh [WORK] [THREADS]      # resumable: rerun the same command
#
# Stage 1 is row A2 of the ablation (scripts/judge_rows.sh: the judge's logit KL + MTCE, no DIKL,
# which added nothing measurable there), 1,000 steps, then resumed to 2,000 (its learning-rate
# schedule restarts, as the run of 2026-12-05 did).
# Stage 2 re-interpolates the 7 gain levels onto lambdas 0.0001-0.0932, the default's span
# (0.0005-0.45, 3.1x a level) shifted about 5x lower, so quality 0 comes near 0.05 bpp on 224 px
# dataset-like crops, and trains the same objective on them.
# Stage 3 puts the procedural benchmark's frozen segmentation and detection experts (seed 0,
# benchmarks.unified's recipe, restored from benchmarks/fixtures/ when kept there) beside the judge,
# so MTCE stays multi-task and the decoded scenes' tasks come back toward release 1's, and trains
# 1,000 steps from stage 2 on the same lambdas: per step 4 photo crops of 224 px through the judge,
# 4 of 256 px for rate-distortion, 8 scenes of 128 px through the experts.
# Release 2 is stage 2's weights, release 3 stage 3's. STAGE2=FILE starts stage 3 from FILE instead, skipping stages 1
# and 2: the packaged mlcodec-unified@2 holds the same tensors as stage 2.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-runs/unified-release}
threads=${2:-1}
photos=${PHOTOS:-$HOME/.cache/mlcodec/photos}
common=(--objective unified --judge efficientnet-lite0 --no-bank --no-diffusion --data "$photos"
        --crops dataset --patch 256 --batch-size 4 --bf16 --seed 0 --threads "$threads")
mkdir -p "$work"
stage2=${STAGE2:-$work/stage2/weights.safetensors}
if [[ -z ${STAGE2:-} ]]; then
  # release 2 of the default by name, whichever file holds it once a later release replaces it
  init=$(python -c "from mlcodec.registry import codec_config, pretrained_path
print(pretrained_path(codec_config('mlcodec-hyperprior@2')))")
  for steps in 1000 2000; do
    mlcodec train-codec "${common[@]}" --init "$init" \
      --steps "$steps" -o "$work/stage1"
  done
  mlcodec train-codec "${common[@]}" --init "$work/stage1/weights.safetensors" \
    --lambdas 0.0001 0.0003 0.001 0.003 0.0095 0.03 0.0932 --steps 2000 -o "$work/stage2"
fi
scenes=${SCENES:-runs/unified-cpu}  # the procedural benchmark's work folder (its scenes and experts)
python -m benchmarks.unified --work "$scenes" --until experts --expert-tasks seg,det --threads "$threads"
mlcodec train-codec "${common[@]}" --init "$stage2" --tasks seg,det \
  --expert "seg=$scenes/experts/seg/pixel-seg.safetensors" --expert "det=$scenes/experts/det/pixel-fcos.safetensors" \
  --steps 1000 -o "$work/stage3"
# The packaged copy: the same tensors (so the same fingerprint), with the release named and this
# machine's paths replaced in the metadata
python - "$work/stage3/weights.safetensors" "$work/mlcodec-unified.safetensors" <<'PY'
import json, sys
from safetensors import safe_open
from safetensors.torch import save_file

src, dst = sys.argv[1:]
with safe_open(src, framework="pt") as f:
    meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
config = json.loads(meta["config"])
config["init"] = "mlcodec-unified release 2 (stage 2 of scripts/unified_release.sh)"
config["data"] = ["~/.cache/mlcodec/photos (scripts/fetch_photos.sh; held-out photos excluded)"]
meta["config"] = json.dumps(config)
unified = json.loads(meta["unified"])
unified["judge_photos"] = config["data"]
unified["experts"] = {t: f"benchmarks/fixtures/unified-experts-{t}.safetensors (benchmarks.unified --until experts)"
                      for t in unified["experts"]}
meta["unified"] = json.dumps(unified)
if "init_recipe" in meta:  # stage 2's own config
    recipe = json.loads(meta["init_recipe"])
    recipe["init"] = "stage 1 of scripts/unified_release.sh (2,000 steps of row A2 from mlcodec-hyperprior release 2)"
    recipe["data"] = config["data"]
    meta["init_recipe"] = json.dumps(recipe)
meta["release"] = json.dumps(
    "mlcodec-unified@3: mlcodec-unified release 2 (mlcodec-hyperprior release 2 fine-tuned with "
    "EfficientNet-Lite0 as the unified objective's expert, logit KL + MTCE, no DIKL, on dataset-like crops "
    "of the training photos, 2,000 steps, then 2,000 more on lambdas 0.0001-0.0932) trained 1,000 more "
    "steps with the procedural benchmark's segmentation and detection experts beside the judge "
    "(scripts/unified_release.sh)")
save_file(tensors, dst, metadata=meta)
print(f"wrote {dst}: cp it to mlcodec/pretrained/mlcodec-unified.safetensors")
PY
