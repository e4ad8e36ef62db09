"""``mlcodec train-head``, ``mlcodec eval`` and ``mlcodec crops``, registered as a plugin of the core CLI."""

from __future__ import annotations

import argparse
import json

import mlcodec


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def cmd_train_adapter(args: argparse.Namespace) -> int:
    from .adapter_train import AdapterConfig, train_adapter

    if not args.judge:
        raise ValueError("--task adapter distils a pretrained judge: give --judge NAME (e.g. efficientnet-lite0)")
    if args.shards or args.val:
        raise ValueError("--task adapter trains on photos, not shards: give --photos DIR... "
                         "(it compresses crops of them with --codec itself)")
    scales = _floats(args.scales)
    config = AdapterConfig(args.judge, args.codec, tuple(args.photos or ()), args.crops_per_photo,
                           scales=(scales[0], scales[1]), stride=args.adapter_stride, teacher=args.teacher,
                           seed=args.seed)
    r = train_adapter(config, args.output, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr or 3e-3, weight_decay=1e-2 if args.weight_decay is None else args.weight_decay,
                      kl_weight=args.kl_weight, tune_tail=args.tune_judge, judge_weights=args.judge_weights,
                      init=args.init, progress=not args.quiet)
    last = r.history[-1]
    print(f"latent-adapter for {args.judge} on {args.codec}: {len(r.history)} epochs, "
          f"agreement {last.val_agree:.4f} on held-back photos' crops (decode + judge "
          f"{last.val_decoded_agree:.4f}), checkpoint {r.checkpoint}")
    return 0


def cmd_train_head(args: argparse.Namespace) -> int:
    if args.task == "adapter":
        return cmd_train_adapter(args)
    if args.head == "pixel-det":
        from .yolo import train_yolo

        if not args.yolo_data:
            raise ValueError("pixel-det trains with ultralytics: give --yolo-data DATA.yaml "
                             "(`mlcodec synth` writes one)")
        r = train_yolo(args.yolo_data, args.output, epochs=args.epochs, imgsz=args.imgsz,
                       batch=args.batch_size, workers=args.workers, seed=args.seed,
                       device=args.device)
        print(f"pixel-det: {r['epochs']} epochs in {r['train_seconds']:.0f}s -> {r['checkpoint']}")
        return 0
    from .train import train_head

    if not args.shards or not args.val:
        raise ValueError("give --shards DIR... (training) and --val DIR... (validation)")
    r = train_head(args.task, args.shards, args.val, args.output, head=args.head, epochs=args.epochs,
                   batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                   workers=args.workers, seed=args.seed,
                   stem=args.stem, progress=not args.quiet, label_key=args.label,
                   device=args.device)
    last = r.history[-1]
    print(f"{r.head}: {len(r.history)} epochs, {last.elapsed_seconds:.0f}s training, "
          f"best {r.best(args.task):.4f}, checkpoint {r.checkpoint}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if args.judge:
        from .judge_cli import cmd_judge_eval

        return cmd_judge_eval(args)
    if not args.task:
        raise ValueError("eval needs --task (with --head/--reference) or --judge NAME")
    from mlcodec.integrations.cli import source_from_args

    from .data import make_spec
    from .evaluate import evaluate_codecs, write_report

    source = source_from_args(args)
    # before --limit: the category ids and label names are the full source's
    spec = make_spec(source.class_names, getattr(source, "label_names", {}), args.task, args.label,
                     getattr(source, "category_ids", ()))
    if args.limit:
        from mlcodec.data.sources import IterableSource

        source = IterableSource([(source[i].image, source[i].target) for i in range(args.limit)],
                                name=source.name, class_names=source.class_names)
    heads = [tuple(h.split("=", 1)) if "=" in h else h for h in args.head or []]
    codecs = args.codecs.split(",")
    # BD-rates against another codec's curve too (pixel domain unless named); a codec missing from
    # --codecs fails here, before the evaluation
    ref = args.bd_reference if not args.bd_reference or "/" in args.bd_reference else f"{args.bd_reference}/pixel"
    if ref and (ref_codec := ref.split("/", 1)[0]) not in codecs:
        raise ValueError(f"--bd-reference {args.bd_reference}: {ref_codec} is not among --codecs {codecs}")
    result = evaluate_codecs(args.task, source, spec, codecs, _floats(args.qualities),
                             latent_head=heads or None, pixel_reference=args.reference,
                             batch_size=args.batch_size, progress=not args.quiet)
    if ref:
        from .evaluate import bd_rates, curves

        if ref not in (found := curves(result["rows"])):
            raise ValueError(f"--bd-reference {args.bd_reference}: no {ref} curve among {sorted(found)} "
                             "(pixel curves need --reference, latent ones --head)")
        result["bd_reference"] = ref
        result["bd_rate_vs_reference"] = bd_rates(result["rows"], result["metric"], ref)
    paths = write_report(result, args.output)
    metric = result["metric"]
    print(f"{'codec':<22} {'domain':<7} {'quality':>7} {'bpp':>7} {metric:>7}")
    for r in result["rows"]:
        q = "-" if r["quality"] is None else f"{r['quality']:.3f}"
        print(f"{r['codec']:<22} {r['domain']:<7} {q:>7} {r['bpp']:>7.3f} {r[metric]:>7.4f}")
    for name, v in result["bd_rate_vs_jpeg"].items():
        print(f"BD-rate vs jpeg/pixel: {name:<28} " + ("n/a" if v is None else f"{v:+.1f}%"))
    if "bd_reference" in result and not result["bd_rate_vs_reference"]:
        print(f"BD-rate vs {result['bd_reference']}: no other curve to compare")
    for name, v in result.get("bd_rate_vs_reference", {}).items():
        print(f"BD-rate vs {result['bd_reference']}: {name:<28} " + ("n/a" if v is None else f"{v:+.1f}%"))
    for name, why in result["skipped"].items():
        print(f"skipped {name}: {why}")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    if args.json:
        print(json.dumps(result["bd_rate_vs_jpeg"]))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from . import list_heads
    from .data import TASKS
    from .judge_cli import add_judge_args, register_crops
    from .options import DEFAULT_LR, DEFAULT_WEIGHT_DECAY, STEMS

    t = sub.add_parser("train-head", help="train a task head on latent shards (or a pixel reference)")
    t.add_argument("--task", required=True, choices=(*TASKS, "adapter"),
                   help="what the head predicts; adapter: a pretrained judge reading latents (--judge)")
    t.add_argument("--shards", nargs="+", help="training shard folders (latent or image shards)")
    t.add_argument("--val", nargs="+", help="validation shard folders")
    t.add_argument("--head", choices=list_heads(), help="default: latent-<task> / pixel-<task> by shard type")
    t.add_argument("--yolo-data", help="pixel-det only: ultralytics data.yaml")
    t.add_argument("--imgsz", type=int, default=128, help="pixel-det only: training image size")
    t.add_argument("-o", "--output", required=True, help="folder for the checkpoint and history")
    t.add_argument("--epochs", type=int, default=10, help="training epochs")
    t.add_argument("--batch-size", type=int, default=32, help="samples per step")
    by_task = ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items())
    t.add_argument("--lr", type=float, help=f"peak of the one-cycle schedule (default by task: {by_task}; "
                   "pixel-det: ultralytics' own)")
    wd_by_task = ", ".join(f"{k} {v:g}" for k, v in DEFAULT_WEIGHT_DECAY.items())
    t.add_argument("--weight-decay", type=float, help=f"AdamW weight decay (default by task: {wd_by_task})")
    t.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    t.add_argument("--seed", type=int, default=0, help="random seed")
    t.add_argument("--device", default="cpu", help="where the head trains: cpu, cuda, cuda:1, ...")
    t.add_argument("--label", default="label", help="cls only: the image-level label to predict "
                   "(e.g. colour, which the synthetic COCO export also writes)")
    t.add_argument("--stem", choices=STEMS, default="synthesis",
                   help="latent heads: start from the codec's frozen first synthesis stage "
                        "or a learned upsampling")
    a = t.add_argument_group("--task adapter (a pretrained judge on latents, distilled on photos)")
    a.add_argument("--judge", help="the judge whose front the adapter replaces (efficientnet-lite0)")
    a.add_argument("--judge-weights", help="the judge's weights file, where it needs one")
    a.add_argument("--photos", nargs="+", help="folders of training photos (the held-out ones are left out; "
                   "scikit-image's training photos are always added)")
    a.add_argument("--codec", default=mlcodec.DEFAULT_CODEC, help="the learned codec whose latents it reads")
    a.add_argument("--crops-per-photo", type=int, default=48, help="dataset-like crops cut from each photo")
    a.add_argument("--scales", default="1,3", help="LOW,HIGH downscale factors of the crops")
    a.add_argument("--teacher", choices=("decoded", "original"), default="decoded",
                   help="imitate the judge on the decoded crop (decode + judge) or on the original")
    a.add_argument("--adapter-stride", type=int, choices=(4, 8, 16), default=4,
                   help="the judge's image stride the adapter reaches: 4 or 8 through the codec's first two "
                        "or one synthesis stages (the judge's pretrained stages from there on run too), 16 "
                        "from the latent directly")
    a.add_argument("--kl-weight", type=float, default=0.0,
                   help="weight of the KL term against the teacher's prediction (0: features only, faster)")
    a.add_argument("--tune-judge", action="store_true", help="also fine-tune the judge's tail (default: frozen)")
    a.add_argument("--init", metavar="ADAPTER", help="start from this adapter checkpoint (same judge, codec and "
                   "shape): a second stage, e.g. with --kl-weight")
    t.set_defaults(func=cmd_train_head)

    e = sub.add_parser("eval", help="task metric, or a judge's agreement with itself, vs bitrate for "
                       "codecs and qualities (CSV, JSON, plot)")
    e.add_argument("--task", choices=TASKS, help="the task and its metric (not with --judge)")
    e.add_argument("src", nargs="?", help="validation images in ImageFolder layout (cls); with --judge, "
                   "any folder of images")
    e.add_argument("--coco", help="validation COCO instances JSON")
    e.add_argument("--images", help="image folder for --coco")
    e.add_argument("--label", default="label", help="cls only: the image-level label to predict")
    e.add_argument("--head", nargs="+", metavar="[CODEC=]PATH",
                   help="latent head checkpoints (.safetensors), one per learned codec: CODEC=PATH, "
                        "or PATH for the codec the head was trained on; with --judge, latent adapters "
                        "of that judge (train-head --task adapter)")
    e.add_argument("--reference", help="pixel reference checkpoint (.safetensors)")
    e.add_argument("--codecs", default="mlcodec-hyperprior,jpeg,webp,avif",
                   help=f"comma-separated, from {','.join(mlcodec.list_codecs())}; with --judge also "
                        "LABEL=NAME (F=mlcodec-hyperprior:runs/F/weights.safetensors), reported as LABEL")
    e.add_argument("--qualities", default="0.1,0.3,0.5,0.7,0.9", help="comma-separated, each in [0, 1]")
    e.add_argument("--limit", type=int, default=0, help="evaluate the first N images only")
    e.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    e.add_argument("--json", action="store_true", help="also print the BD-rates as JSON")
    e.add_argument("-o", "--output", required=True, help="folder for the CSV, JSON and plot")
    add_judge_args(e)
    e.set_defaults(func=cmd_eval, hf=None)
    register_crops(sub)
