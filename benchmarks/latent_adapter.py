"""A pretrained model on latents: EfficientNet-Lite0 through a latent adapter against decode +
EfficientNet-Lite0, on the same streams of held-out dataset-like crops.

The adapter (`mlcodec train-head --task adapter`, :mod:`mlcodec.tasks.adapter`) replaces the
judge's front (stem to stride 16) with a small network on ``y_hat``; the rest of the judge runs
unchanged. Both paths are scored by top-1 agreement with the judge on the original crop
(`mlcodec eval --judge ... --head ADAPTER`), per quality, with the paired 95% bootstrap interval
of the adapter's gap over crops (:func:`mlcodec.tasks.judge_eval.paired_gaps`). Crops of one
photo are not independent, so an interval over crops is narrower than one over photos would be.

Time per image, one thread, the same streams in the same run: decode + judge
(``decompress_batch`` + ``Judge.logits``) against the adapter (``decode_latents`` + crop +
adapter + the judge's tail), batches of ``--batch``, best of ``--repeats``.

Without ``--adapter`` (or when its file is missing) it first trains one with the command's
default recipe into ``runs/adapter-hyperprior`` (the distillation data are cached there).

    python -m benchmarks.latent_adapter [--adapter runs/adapter-hyperprior/latent-adapter.safetensors] \
        [--per-photo 100] [--out benchmarks/results/latent_adapter.json]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import torch

import mlcodec
from benchmarks.common import PHOTOS, held_out_crops, machine, write_report
from mlcodec.tasks.adapter import adapter_logits, load_adapter, save_adapter
from mlcodec.tasks.adapter_train import AdapterConfig, train_adapter
from mlcodec.tasks.judge_eval import evaluate_judge, paired_gaps
from mlcodec.tasks.judges import create_judge


def time_paths(judge, head, codec, images, quality: float, batch: int, repeats: int) -> dict[str, float]:
    """ms per image of decode + judge and of the adapter on the same streams (one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        streams = codec.compress_batch(images, quality=quality)
        best = {"decode_judge": float("inf"), "adapter": float("inf"), "decode_latents": float("inf")}
        for _ in range(repeats):
            t0 = time.perf_counter()
            for i in range(0, len(streams), batch):
                judge.logits(codec.decompress_batch(streams[i : i + batch]), batch)
            t1 = time.perf_counter()
            adapter_logits(head, codec, streams, batch)
            t2 = time.perf_counter()
            for i in range(0, len(streams), batch):
                codec.decode_latents(streams[i : i + batch])
            t3 = time.perf_counter()
            for key, dt in (("decode_judge", t1 - t0), ("adapter", t2 - t1), ("decode_latents", t3 - t2)):
                best[key] = min(best[key], 1000 * dt / len(streams))
        return best
    finally:
        torch.set_num_threads(threads)


def export_fixture(args: argparse.Namespace) -> None:
    """The adapter as a float16 fixture (with its recipe digest in the metadata), and how often
    its top-1 prediction equals the float32 file's on 64 held-out crops at quality 0.5."""
    judge = create_judge("efficientnet-lite0")
    head, meta = load_adapter(args.adapter, judge)
    save_adapter(head, args.export_fixture, {k: v for k, v in meta.items() if k != "head"}, torch.float16)
    half, _ = load_adapter(args.export_fixture, judge)
    codec = mlcodec.create_codec(meta["codec"])
    images = [c.image for c in held_out_crops(args.photos, per_photo=8, seed=args.seed)][:64]
    streams = codec.compress_batch(images, quality=0.5)
    same = (adapter_logits(head, codec, streams).argmax(1) == adapter_logits(half, codec, streams).argmax(1))
    print(f"wrote {args.export_fixture} ({Path(args.export_fixture).stat().st_size} bytes, recipe digest "
          f"{meta['recipe_digest']}); float16 top-1 equals float32 on {int(same.sum())}/{len(same)} crops")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", default=PHOTOS, help="held-out photos (their allow-list folder)")
    ap.add_argument("--train-photos", nargs="+",
                    default=[PHOTOS, os.path.expanduser("~/.cache/mlcodec/renders")],
                    help="training photos, when the adapter is trained first")
    ap.add_argument("--adapter", default="runs/adapter-hyperprior/latent-adapter.safetensors")
    ap.add_argument("--codec", default="mlcodec-hyperprior")
    ap.add_argument("--per-photo", type=int, default=100)
    ap.add_argument("--qualities", default="0.1,0.3,0.5,0.7,0.9")
    ap.add_argument("--confident", type=float, default=0.5)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2, help="threads for the agreement run (timing: 1)")
    ap.add_argument("--time-images", type=int, default=96)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/latent_adapter.json")
    ap.add_argument("--export-fixture", metavar="PATH",
                    help="only write the adapter in float16 to PATH (benchmarks/fixtures/), check its "
                         "predictions against the float32 file's on held-out crops, and exit")
    args = ap.parse_args()
    if args.export_fixture:
        export_fixture(args)
        return
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if not Path(args.adapter).is_file():
        print(f"{args.adapter} not found: training one (mlcodec train-head --task adapter, default recipe)")
        config = AdapterConfig("efficientnet-lite0", args.codec, tuple(args.train_photos))
        train_adapter(config, Path(args.adapter).parent)
    judge = create_judge("efficientnet-lite0")
    head, meta = load_adapter(args.adapter, judge)
    codec = mlcodec.create_codec(meta["codec"])
    crops = held_out_crops(args.photos, per_photo=args.per_photo, seed=args.seed)
    images = [c.image for c in crops]
    qualities = [float(q) for q in args.qualities.split(",")]
    result = evaluate_judge(judge, images, [meta["codec"]], qualities, confident=args.confident,
                            adapters={meta["codec"]: (head, meta)}, progress=False)
    gaps = paired_gaps(result, f"{meta['codec']}+adapter", meta["codec"], args.bootstrap, args.seed)
    timing = time_paths(judge, head, codec, images[: args.time_images], 0.5, args.batch, args.repeats)
    report = {"command": " ".join(["python", *sys.argv]), "date": datetime.date.today().isoformat(),
              "machine": f"{machine()}, {args.threads} threads (timing: 1)", "adapter": args.adapter,
              "adapter_recipe": meta["recipe"], "recipe_digest": meta.get("recipe_digest"),
              "crops": len(images), "photos": sorted({c.name.rsplit("_", 1)[0] for c in crops}),
              "confident_crops": result["confident_images"], "rows": result["rows"], "gaps": gaps,
              "ms_per_image": timing}
    print(f"\n{len(images)} held-out crops ({result['confident_images']} confident, p >= {args.confident:g}), "
          f"codec {meta['codec']}")
    print(f"{'q':>5} {'bpp':>6} {'decode+judge':>12} {'adapter':>8} {'gap [95% CI]':>24} {'gap, confident':>24}")
    by = {(r["codec"], r["quality"]): r for r in result["rows"]}
    for g in gaps:
        q = g["quality"]
        d, a = by[(meta["codec"], q)], by[(f"{meta['codec']}+adapter", q)]
        ci = lambda x: "-" if x is None else f"{x['gap']:+.3f} [{x['ci'][0]:+.3f}, {x['ci'][1]:+.3f}]"  # noqa: E731
        print(f"{q:>5.2f} {g['bpp']:>6.3f} {d['agree']:>12.3f} {a['agree']:>8.3f} {ci(g['all']):>24} "
              f"{ci(g['confident']):>24}")
    print(f"ms/image, 1 thread, batch {args.batch}, quality 0.5, {len(images[: args.time_images])} crops: "
          f"decode + judge {timing['decode_judge']:.1f}, adapter {timing['adapter']:.1f} "
          f"(of which decode_latents {timing['decode_latents']:.1f}): "
          f"{timing['adapter'] / timing['decode_judge']:.2f}x")
    write_report(report, args.out, t0)


if __name__ == "__main__":
    main()
