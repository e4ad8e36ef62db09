"""``mlcodec crops`` (the dataset-like crop protocol) and ``mlcodec eval --judge`` (label-free
agreement of a pretrained model with itself), registered with the tasks' commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from mlcodec.data.photos import list_image_files


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def cmd_crops(args: argparse.Namespace) -> int:
    """Random dataset-like crops of every photo; with a judge, only the ``--keep`` crops it is
    surest about (at least ``--min-confidence``), so agreement measures the codec, not noise."""
    import torch

    from mlcodec.data.crops import dataset_crops

    scales = _floats(args.scales)
    if len(scales) != 2:
        raise ValueError(f"--scales takes LOW,HIGH (e.g. 1,3), got {args.scales!r}")
    files = list_image_files(args.photos)
    if not files:
        raise ValueError(f"no images in {args.photos}")
    crops = []
    for path in tqdm(files, desc="crops", unit="photo", disable=args.quiet):
        with Image.open(path) as im:
            if min(im.size) < args.size:
                print(f"left out {path}: {im.width}x{im.height} is smaller than {args.size} px")
                continue
            crops += dataset_crops(im, path.stem, args.per_photo, args.size, (scales[0], scales[1]),
                                   seed=args.seed)
    if not crops:
        raise ValueError(f"no photo in {args.photos} is at least {args.size} px on its short side")
    confidence: list[float | None] = [None] * len(crops)
    prediction: list[int | None] = [None] * len(crops)
    keep = list(range(len(crops)))
    if args.judge != "none":
        from .judge_eval import confident_subset
        from .judges import create_judge

        judge = create_judge(args.judge, args.judge_weights)
        logits = torch.cat([judge.logits([c.image for c in crops[i : i + 64]])
                            for i in tqdm(range(0, len(crops), 64), desc=f"judge {judge.name}",
                                          unit="batch", disable=args.quiet)])
        p = logits.softmax(1).max(1)
        confidence, prediction = p.values.tolist(), p.indices.tolist()
        keep = confident_subset(confidence, [c.photo for c in crops], args.keep, args.min_confidence,
                                args.max_per_photo)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    index = []
    for i in keep:
        c = crops[i]
        name = f"{c.photo}_{c.index:03d}.png"
        c.image.save(out / name)
        index.append({"file": name, "photo": c.photo, "scale": c.scale, "box": list(c.box),
                      "confidence": confidence[i], "prediction": prediction[i]})
    (out / "crops.json").write_text(json.dumps({
        "photos": str(args.photos), "size": args.size, "scales": scales, "per_photo": args.per_photo,
        "seed": args.seed, "judge": args.judge, "min_confidence": args.min_confidence,
        "keep": args.keep, "max_per_photo": args.max_per_photo, "sampled": len(crops), "crops": index}, indent=1))
    print(f"{len(index)} of {len(crops)} crops from {len(files)} photos -> {out}")
    return 0


def cmd_judge_eval(args: argparse.Namespace) -> int:
    from .judge_eval import evaluate_judge, judge_bd_rates, paired_gaps, read_labels, write_judge_report
    from .judges import create_judge

    if not args.src:
        raise ValueError("--judge evaluates a folder of images: mlcodec eval --judge NAME PHOTOS --codecs ...")
    files = list_image_files(args.src)
    if args.limit:
        files = files[: args.limit]
    if not files:
        raise ValueError(f"no images in {args.src}")
    names = [str(f.relative_to(args.src)) if Path(args.src).is_dir() else f.name for f in files]
    labels = read_labels(args.labels, names) if args.labels else None
    images = []
    for f in files:
        with Image.open(f) as im:
            images.append(im.convert("RGB"))
    judge = create_judge(args.judge, args.judge_weights)
    codecs = args.codecs.split(",")
    shown = [c.split("=", 1)[0] for c in codecs]  # LABEL=NAME is reported as LABEL
    adapters = {}
    for spec in args.head or []:  # latent adapters of this judge: [CODEC=]PATH
        from .adapter import load_adapter

        codec_name, _, path = spec.rpartition("=")
        head, meta = load_adapter(path, judge)
        codec_name = codec_name or meta["codec"]
        if codec_name not in shown:
            raise ValueError(f"{path} reads {codec_name} latents, which --codecs does not list")
        adapters[codec_name] = (head, meta)
    ref = args.bd_reference or ("webp" if "webp" in shown else shown[0])
    result = evaluate_judge(judge, images, codecs, _floats(args.qualities), labels=labels,
                            confident=args.confident, names=names, batch_size=args.batch_size,
                            progress=not args.quiet, adapters=adapters)
    result["bd_reference"] = ref
    result["bd_rates"] = judge_bd_rates(result, ref, resamples=args.bootstrap, seed=args.seed)
    result["adapter_gaps"] = {c: paired_gaps(result, f"{c}+adapter", c, args.bootstrap, args.seed)
                              for c in adapters}
    paths = write_judge_report(result, args.output)
    print(f"{judge.name} on {len(images)} images ({result['confident_images']} confident, "
          f"p >= {args.confident:g})" + (f"; accuracy on the originals {result['uncompressed_accuracy']:.4f}"
                                        if labels is not None else ""))
    acc = " accuracy" if labels is not None else ""
    print(f"{'codec':<22} {'quality':>7} {'bpp':>7} {'agree':>6} {'conf.':>6} {'top5':>6} {'KL':>6}{acc}")
    for r in result["rows"]:
        conf = "-" if r["agree_confident"] is None else f"{r['agree_confident']:.3f}"
        print(f"{r['codec']:<22} {r['quality']:>7.3f} {r['bpp']:>7.3f} {r['agree']:>6.3f} {conf:>6} "
              f"{r['top5']:>6.3f} {r['kl']:>6.3f}" + (f" {r['accuracy']:.4f}" if labels is not None else ""))
    for codec, by_metric in result["bd_rates"].items():
        for metric, b in by_metric.items():
            if "error" in b:
                print(f"BD-rate vs {ref}: {codec:<22} {metric:<16} n/a ({b['error']})")
            else:
                print(f"BD-rate vs {ref}: {codec:<22} {metric:<16} {b['bd_rate']:+.1f}% "
                      f"[{b['ci'][0]:+.1f}, {b['ci'][1]:+.1f}] over {metric} {b['metric_range'][0]:.3f}-"
                      f"{b['metric_range'][1]:.3f}, {b['bpp_range'][0]:.3f}-{b['bpp_range'][1]:.3f} bpp "
                      f"({b['no_overlap']}/{b['resamples']} resamples without overlap)")
    for codec, gaps in result["adapter_gaps"].items():
        for g in gaps:
            print(f"adapter - decode, {codec} q {g['quality']:g}: agreement {g['all']['gap']:+.3f} "
                  f"[{g['all']['ci'][0]:+.3f}, {g['all']['ci'][1]:+.3f}] on {g['images']} images"
                  + ("" if g["confident"] is None else
                     f", {g['confident']['gap']:+.3f} [{g['confident']['ci'][0]:+.3f}, "
                     f"{g['confident']['ci'][1]:+.3f}] on confident ones"))
    for name, why in result["skipped"].items():
        print(f"skipped {name}: {why}")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def add_judge_args(e: argparse.ArgumentParser) -> None:
    """``eval``'s judge options (``--judge`` needs no ``--task``)."""
    e.add_argument("--judge", help="a pretrained judge (efficientnet-lite0, timm:NAME, torchvision:NAME): "
                   "agreement with its own predictions on the originals of the images in SRC; no labels needed")
    e.add_argument("--judge-weights", help="weights file of a timm:/torchvision: judge (or to replace a built-in's)")
    e.add_argument("--labels", help="--judge: optional CSV 'file,class_index' (or JSON) to also report accuracy")
    e.add_argument("--confident", type=float, default=0.5,
                   help="--judge: images whose top probability on the original is at least this are 'confident'")
    e.add_argument("--bootstrap", type=int, default=1000, help="--judge: bootstrap resamples for BD-rate intervals")
    e.add_argument("--bd-reference", help="--judge: the codec BD-rates are taken against (default: webp if listed); "
                   "--task: a codec's curve BD-rates are also taken against, CODEC[/DOMAIN] (pixel by default), "
                   "beside JPEG's")
    e.add_argument("--seed", type=int, default=0, help="--judge: bootstrap seed")


def register_crops(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("crops", help="dataset-like crops of photos (downscaled, cropped), optionally only "
                       "those a judge is sure about: the protocol of `eval --judge`")
    c.add_argument("photos", help="a folder of photos (or one photo)")
    c.add_argument("-o", "--output", required=True, help="folder for the PNG crops and crops.json")
    c.add_argument("--size", type=int, default=224, help="crop side in pixels")
    c.add_argument("--scales", default="1,3", help="LOW,HIGH: each crop's photo is downscaled by a "
                   "factor drawn uniformly from this range (antialiased)")
    c.add_argument("--per-photo", type=int, default=84, help="crops sampled from each photo")
    c.add_argument("--judge", default="efficientnet-lite0", help="judge that picks confident crops ('none': keep all)")
    c.add_argument("--judge-weights", help="weights file of a timm:/torchvision: judge")
    c.add_argument("--min-confidence", type=float, default=0.0, help="keep crops the judge is at least this sure of")
    c.add_argument("--keep", type=int, default=0, help="keep the N crops the judge is surest of (0: all above the minimum)")
    c.add_argument("--max-per-photo", type=int, default=0, help="with --keep/--min-confidence: at most N "
                   "kept crops from one photo (0: no cap), so one photo full of a sure class cannot fill the set")
    c.add_argument("--seed", type=int, default=0, help="crop sampling seed")
    c.set_defaults(func=cmd_crops)
