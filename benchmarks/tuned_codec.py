"""Does a tuned codec serve the latent heads better? The packaged weights against trained ones.

For weights from ``mlcodec train-codec --objective tasks`` (or any ``train-codec``), in one run on one machine:

1. Rate-distortion on the held-out photos, measured as ``rd_curve.py`` does. The script prints
   the BD-rate of the weights against the packaged ones, in PSNR and in MS-SSIM.
2. On ``task_rd.py``'s synthetic benchmark, for each codec:
   - latent shards at the same mixed training qualities;
   - a fresh latent head per task, with task_rd's epochs and learning rates;
   - the best validation metric and its curve, per epoch.
   the task objective generates its scenes from seed 1000. The benchmark's train and val splits use
   seeds 0 and 1, so the tuned codec never saw them.

    python -m benchmarks.tuned_codec --weights runs/tuned/weights.safetensors [--tasks seg,cls]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch


import mlcodec  # noqa: E402
from mlcodec.data.photos import evaluation_photos  # noqa: E402
from mlcodec.data.sources import CocoSource  # noqa: E402
from mlcodec.data.synthetic import export_all  # noqa: E402
from mlcodec.integrations.webdataset import write_shards  # noqa: E402
from mlcodec.metrics import bd_rate  # noqa: E402
from mlcodec.tasks.metrics import PRIMARY  # noqa: E402
from mlcodec.tasks.train import train_head  # noqa: E402
from mlcodec.weights import read_metadata  # noqa: E402
from benchmarks.common import measure  # noqa: E402
from benchmarks.rd_curve import QUALITIES  # noqa: E402
from benchmarks.task_rd import LATENT_EPOCHS, TRAIN_QUALITIES, Subset, curve  # noqa: E402

BASE = mlcodec.DEFAULT_CODEC


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--weights", required=True, help="trained weights (.safetensors) of " + BASE)
    ap.add_argument("--work", default="/tmp/mlcodec-task-bench", help="task_rd.py's work folder")
    ap.add_argument("--photos", default=os.path.expanduser("~/.cache/mlcodec/photos"))
    ap.add_argument("--tasks", default="seg,cls")
    ap.add_argument("--train", type=int, default=2400)
    ap.add_argument("--val", type=int, default=400)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    codecs = {"packaged": BASE, "tuned": f"{BASE}:{args.weights}"}
    meta = read_metadata(args.weights)
    tuning = {**meta.get("task_tuning", {}), **meta.get("training", {})}
    if tuning:
        print("tuned with: " + ", ".join(f"{k}={tuning[k]}" for k in (
            "tasks", "task_weight", "steps_run", "scenes", "scene_seed", "lr", "device") if k in tuning))

    photos = evaluation_photos([args.photos] if Path(args.photos).is_dir() else [], max_side=512)
    rd = {label: [measure(mlcodec.create_codec(spec), photos, q) for q in QUALITIES[BASE]]
          for label, spec in codecs.items()}
    print(f"\n{len(photos)} held-out photos; quality: bpp / PSNR / MS-SSIM")
    for label, pts in rd.items():
        print(f"{label:<9} " + "  ".join(f"{p['bpp']:.3f}/{p['psnr']:.2f}/{p['ms_ssim']:.4f}" for p in pts))
    for metric in ("psnr", "ms_ssim"):
        ref, test = rd["packaged"], rd["tuned"]
        r = bd_rate([p["bpp"] for p in ref], [p[metric] for p in ref],
                    [p["bpp"] for p in test], [p[metric] for p in test])
        print(f"BD-rate of tuned against packaged ({metric}): {r:+.1f}%")

    work = Path(args.work)
    if not (work / "coco" / "val" / "annotations.json").exists():
        export_all(work, args.train, args.val, formats=("coco", "yolo"))
    train = CocoSource(work / "coco/train/annotations.json", work / "coco/train/images")
    val = CocoSource(work / "coco/val/annotations.json", work / "coco/val/images")
    shards: dict[str, tuple[list[Path], Path]] = {}
    for label, spec in codecs.items():
        root = work / ("shards" if label == "packaged" else "shards-tuned")
        t0 = time.time()
        dirs = []
        for k, q in enumerate(TRAIN_QUALITIES):
            sub = Subset(train, list(range(k, len(train), len(TRAIN_QUALITIES))))
            dirs.append(root / f"train-q{q}")
            m = write_shards(sub, dirs[-1], codec=spec, quality=q, progress=False)
            print(f"{label} train shards q={q}: {m.mean_bpp:.3f} bpp")
        write_shards(val, root / "val-q0.5", codec=spec, quality=0.5, progress=False)
        shards[label] = (dirs, root / "val-q0.5")
        print(f"{label} shards ready in {time.time() - t0:.0f}s")

    for task in args.tasks.split(","):
        metric = PRIMARY[task]
        print(f"\n== {task}: latent head, {LATENT_EPOCHS[task]} epochs, best val {metric} ==")
        for label, (dirs, val_dir) in shards.items():
            r = train_head(task, dirs, [val_dir], work / "heads-tuned" / label / task,
                           epochs=LATENT_EPOCHS[task], progress=False)
            per_epoch = r.history[-1].elapsed_seconds / len(r.history)
            print(f"{label:<9} best {r.best(task):.4f}, {per_epoch:.1f} s/epoch; by epoch (s: value): "
                  + " ".join(f"{t:.0f}:{v:.3f}" for t, v in curve(task, r)))


if __name__ == "__main__":
    main()
