"""Task accuracy vs bitrate and training cost: latent heads vs pixel references, synthetic data.

Runs the whole user path offline on the procedural benchmark (``mlcodec.data.synthetic``):

1. ``synth``: train/val scenes at 128 px, exported as COCO (RLE masks + image labels) and YOLO.
2. Shards: the training set as latent shards at mixed qualities (image i at QUALITIES[i % K],
   so one head serves every rate), validation latents at 0.5, and JPEG q90 image shards of both.
3. Per task, a latent head on the latent shards and a pixel reference on the JPEG shards (YOLO on
   the YOLO layout for detection); time per epoch, loading included, and validation each epoch.
4. ``evaluate_codecs`` over codecs x qualities on the validation set: metric vs bpp, the
   uncompressed ceiling, BD-rate against JPEG + pixel reference; CSV/JSON/PNG per task.

    python -m benchmarks.task_rd [--tasks cls,seg,det --train 2400 --val 400 --epochs E --pixel-epochs P]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

os.environ.setdefault("YOLO_OFFLINE", "1")

from mlcodec.data.sources import CocoSource, Source  # noqa: E402
from mlcodec.data.synthetic import export_all  # noqa: E402
from mlcodec.integrations.webdataset import write_image_shards, write_shards  # noqa: E402
from mlcodec.tasks.data import TaskSpec  # noqa: E402
from mlcodec.tasks.evaluate import curves, evaluate_codecs, write_report  # noqa: E402
from mlcodec.tasks.options import STEMS  # noqa: E402
from mlcodec.tasks.metrics import PRIMARY, primary  # noqa: E402
from mlcodec.tasks.train import train_head  # noqa: E402
from mlcodec.tasks.yolo import train_yolo  # noqa: E402

TRAIN_QUALITIES = (0.1, 0.3, 0.5, 0.7, 0.9)
EVAL_QUALITIES = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
CODECS = ("mlcodec-hyperprior", "bmshj2018-hyperprior", "jpeg", "webp", "avif")
# Epochs by which each side's validation metric had levelled off on this benchmark (BENCHMARKS.md):
# the pixel classifier sits near chance for ~8 epochs, YOLOv8n needs ~25.
LATENT_EPOCHS = {"cls": 24, "seg": 16, "det": 12}
PIXEL_EPOCHS = {"cls": 30, "seg": 16, "det": 30}


class Subset(Source):
    def __init__(self, source: Source, indexes: list[int]) -> None:
        super().__init__(name=f"{source.name}[{indexes[0]}::{len(TRAIN_QUALITIES)}]",
                         class_names=source.class_names)
        self.source, self.indexes = source, indexes
        self.category_ids = getattr(source, "category_ids", [])

    def __len__(self) -> int:
        return len(self.indexes)

    def __getitem__(self, i: int):
        return self.source[self.indexes[i]]

    def describe(self):  # the whole source's description (category ids, label names) under its own name
        return {**self.source.describe(), **super().describe()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", default="/tmp/mlcodec-task-bench")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--train", type=int, default=2400)
    ap.add_argument("--val", type=int, default=400)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, help="latent heads (default per task: %s)" % LATENT_EPOCHS)
    ap.add_argument("--pixel-epochs", type=int, help="pixel references (default per task: %s)" % PIXEL_EPOCHS)
    ap.add_argument("--lr", type=float, help="peak learning rate, both sides (default: train_head's "
                    "per-task DEFAULT_LR)")
    ap.add_argument("--weight-decay", type=float, help="AdamW weight decay, both sides (default: "
                    "train_head's per-task DEFAULT_WEIGHT_DECAY)")
    ap.add_argument("--stem", choices=STEMS, default="synthesis", help="latent heads' stem")
    ap.add_argument("--tasks", default="cls,seg,det")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0,
                    help="DataLoader workers (0: on this 2-core machine a worker process competes "
                         "with the training threads; a one-epoch probe was faster with 0 on both sides)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if not (work / "coco" / "val" / "annotations.json").exists():
        export_all(work, args.train, args.val, size=args.size, formats=("coco", "yolo"))
    train = CocoSource(work / "coco/train/annotations.json", work / "coco/train/images")
    val = CocoSource(work / "coco/val/annotations.json", work / "coco/val/images")
    latent_train = []
    for k, q in enumerate(TRAIN_QUALITIES):
        d = work / f"shards/train-q{q}"
        sub = Subset(train, list(range(k, len(train), len(TRAIN_QUALITIES))))
        m = write_shards(sub, d, quality=q, progress=False)
        latent_train.append(d)
        print(f"latent train shards q={q}: {m.samples} samples, {m.mean_bpp:.3f} bpp")
    write_shards(val, work / "shards/val-q0.5", quality=0.5, progress=False)
    for split, src in (("train", train), ("val", val)):
        if not (work / f"shards/jpeg-{split}/manifest.json").exists():
            write_image_shards(src, work / f"shards/jpeg-{split}", "jpeg", 0.9, progress=False)
    print(f"data and shards ready in {time.time() - t0:.0f}s")

    spec_names = tuple(val.class_names)
    summary: dict[str, dict] = {}
    for task in args.tasks.split(","):
        heads = work / "heads" / task
        epochs, pixel_epochs = args.epochs or LATENT_EPOCHS[task], args.pixel_epochs or PIXEL_EPOCHS[task]
        lat = train_head(task, latent_train, [work / "shards/val-q0.5"], heads, epochs=epochs,
                         lr=args.lr, weight_decay=args.weight_decay, workers=args.workers,
                         stem=args.stem, progress=False)
        cost = {"latent": {"epochs": len(lat.history), "stem": args.stem, "lr": lat.lr,
                           "weight_decay": lat.weight_decay,
                           "seconds_per_epoch": lat.history[-1].elapsed_seconds / len(lat.history),
                           "best": lat.best(task), "curve": curve(task, lat)}}
        if task == "det":
            y = train_yolo(work / "yolo/data.yaml", heads, epochs=pixel_epochs, imgsz=args.size,
                           workers=args.workers, class_names=spec_names)
            reference, hist = y["checkpoint"], y["history"]
            cost["pixel"] = {"epochs": y["epochs"], "seconds_per_epoch": y["train_seconds"] / y["epochs"],
                             "best": max((h["map"] for h in hist), default=None),
                             "curve": [(round(h["seconds"], 1), round(h["map"], 4)) for h in hist],
                             "note": "ultralytics trainer and validator (own loader, augmentation; "
                                     "its validation inside the timing)"}

            def pixel_seconds_to(target: float) -> float | None:
                return next((h["seconds"] for h in hist if h["map"] >= target), None)
        else:
            pix = train_head(task, [work / "shards/jpeg-train"], [work / "shards/jpeg-val"], heads,
                             epochs=pixel_epochs, lr=args.lr, weight_decay=args.weight_decay,
                             workers=args.workers, progress=False)
            reference = pix.checkpoint
            cost["pixel"] = {"epochs": len(pix.history), "lr": pix.lr, "weight_decay": pix.weight_decay,
                             "seconds_per_epoch": pix.history[-1].elapsed_seconds / len(pix.history),
                             "best": pix.best(task), "curve": curve(task, pix)}

            def pixel_seconds_to(target: float) -> float | None:
                return pix.seconds_to_reach(task, target)
        if cost["pixel"]["best"] is not None:  # time to the lower of the two bests, both sides
            target = min(lat.best(task), cost["pixel"]["best"])
            cost["target"] = target
            cost["latent"]["seconds_to_target"] = lat.seconds_to_reach(task, target)
            cost["pixel"]["seconds_to_target"] = pixel_seconds_to(target)
        spec = TaskSpec(task, spec_names, tuple(val.category_ids))
        result = evaluate_codecs(task, val, spec, CODECS, EVAL_QUALITIES,
                                 latent_head=lat.checkpoint, pixel_reference=reference, progress=False)
        result["training_cost"] = cost
        write_report(result, out, title=f"synthetic {args.size}px, {len(val)} val images: {task}")
        summary[task] = result
        print_task(task, result)
        print(f"[{time.time() - t0:.0f}s elapsed]")
    path = out / "task_rd_summary.json"  # merged, so tasks can be rerun one at a time
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged.update({t: {"bd_rate_vs_jpeg": r["bd_rate_vs_jpeg"], "training_cost": r["training_cost"],
                       "skipped": r["skipped"], "args": vars(args)} for t, r in summary.items()})
    path.write_text(json.dumps(merged, indent=1))


def curve(task: str, result) -> list[tuple[float, float]]:
    """(training seconds so far, validation metric) after each epoch."""
    return [(round(r.elapsed_seconds, 1), round(primary(task, r.val), 4)) for r in result.history]


def print_task(task: str, result: dict) -> None:
    metric = PRIMARY[task]
    extra = "map_50" if task == "det" else None
    print(f"\n== {task}: {metric} vs bpp ==")
    print(f"{'codec':<22} {'domain':<7} {'quality':>7} {'bpp':>7} {metric:>7}" + (f" {extra:>7}" if extra else ""))
    for r in result["rows"]:
        q = "-" if r["quality"] is None else f"{r['quality']:.2f}"
        line = f"{r['codec']:<22} {r['domain']:<7} {q:>7} {r['bpp']:>7.3f} {r[metric]:>7.4f}"
        print(line + (f" {r[extra]:>7.4f}" if extra else ""))
    cs = curves(result["rows"])
    span = {k: (min(p[metric] for p in v), max(p[metric] for p in v)) for k, v in cs.items()}
    for name, v in result["bd_rate_vs_jpeg"].items():
        why = (f"n/a: {metric} {span[name][0]:.3f}-{span[name][1]:.3f} does not overlap jpeg/pixel's "
               f"{span['jpeg/pixel'][0]:.3f}-{span['jpeg/pixel'][1]:.3f}")
        print(f"BD-rate vs jpeg/pixel of {name:<28} " + (why if v is None else f"{v:+.1f}%"))
    for name, why in result["skipped"].items():
        print(f"skipped {name}: {why}")
    c = result["training_cost"]
    for side in ("latent", "pixel"):
        s = c[side]
        line = f"training {side:<6}: {s['epochs']} epochs, {s['seconds_per_epoch']:.1f} s/epoch"
        if "stem" in s:
            line += f" ({s['stem']} stem)"
        if "lr" in s:
            line += f", lr {s['lr']:g}"
        if s.get("weight_decay") is not None:
            line += f", wd {s['weight_decay']:g}"
        if s.get("best") is not None:
            line += f", best val {metric} {s['best']:.4f}"
        if "seconds_to_target" in s:
            t = s["seconds_to_target"]
            line += f", {'n/a' if t is None else f'{t:.0f} s'} to reach {c['target']:.4f}"
        print(line + (f" ({s['note']})" if "note" in s else ""))
        if s.get("curve"):
            print(f"  {side} val {metric} by epoch (s: value): "
                  + " ".join(f"{t:.0f}:{v:.3f}" for t, v in s["curve"]))
    if c["pixel"].get("seconds_per_epoch"):
        print(f"per-epoch speed-up latent vs pixel: {c['pixel']['seconds_per_epoch'] / c['latent']['seconds_per_epoch']:.1f}x")


if __name__ == "__main__":
    main()
