"""``mlcodec shard``: the shard-writing job, registered into the ``mlcodec`` CLI as a plugin.

The core CLI finds this through the ``mlcodec.commands`` entry point, so the core never imports
the integrations package itself.
"""

from __future__ import annotations

import argparse

import mlcodec
from mlcodec.cli import codec_arg, quality_arg, shown_quality


def source_from_args(args: argparse.Namespace):
    from mlcodec.data.sources import CocoSource, ImageFolderSource

    if args.coco:
        if not args.images:
            raise ValueError("--coco needs --images DIR (the folder the JSON's file_name is relative to)")
        return CocoSource(args.coco, args.images)
    if args.hf:
        from .hf import HFSource, load_local

        return HFSource(load_local(args.hf), image_column=args.image_column,
                        label_columns=tuple(args.label_column), name=args.hf)
    if not args.src:
        raise ValueError("give an image folder (root/<class>/<image>), --coco JSON or --hf PATH")
    return ImageFolderSource(args.src)


def cmd_shard(args: argparse.Namespace) -> int:
    from .webdataset import write_image_shards, write_shards

    source = source_from_args(args)
    if mlcodec.codec_config(args.codec).kind == "pixel":  # image shards for pixel references
        m = write_image_shards(source, args.output, codec=args.codec, quality=args.quality,
                               maxcount=args.maxcount, progress=not args.quiet)
        print(f"{m['samples']} {args.codec} images in shards at {args.output}: "
              f"mean {m['mean_bpp']:.3f} bpp (quality {m['quality']})")
        return 0
    if args.ray is not None:
        m = _shard_with_ray(source, args)
    else:
        m = write_shards(source, args.output, codec=args.codec, quality=args.quality,
                         maxcount=args.maxcount, maxsize=int(args.maxsize_mb * 2**20),
                         batch_size=args.batch_size, workers=args.workers, progress=not args.quiet,
                         on_error=args.on_error, gzip=args.gzip)
    print(f"{m.samples} samples in {len(m.shards)} shards at {args.output}: "
          f"{m.shard_bytes} bytes, mean {m.mean_bpp:.3f} bpp ({m.codec}, quality "
          f"{shown_quality(m.quality)})")
    _report_left_out(m)
    return 0


def _report_left_out(m) -> None:
    for s in m.skipped:
        print(f"skipped {s['path']}: {s['reason']}")
    if m.ignored_files:
        names = ", ".join(m.ignored_files[:10]) + (" ..." if len(m.ignored_files) > 10 else "")
        print(f"left out {len(m.ignored_files)} files that are not images: {names}")
    if m.skipped:
        print(f"{len(m.skipped)} unreadable files left out (listed in manifest.json's 'skipped')")


def cmd_reencode(args: argparse.Namespace) -> int:
    from .reencode import reencode_shards

    source = source_from_args(args) if (args.src or args.coco or args.hf) else None
    m = reencode_shards(args.shards, args.output, source=source, codec=args.codec,
                        batch_size=args.batch_size, workers=args.workers, progress=not args.quiet,
                        on_error=args.on_error)
    c = mlcodec.create_codec(m.codec)
    print(f"re-encoded {m.samples} samples into {len(m.shards)} shards at {args.output}: "
          f"{m.shard_bytes} bytes, mean {m.mean_bpp:.3f} bpp ({m.codec}, quality {m.quality}, "
          f"bitstream format {getattr(c, 'format_version', '?')})")
    _report_left_out(m)
    return 0


def _shard_with_ray(source, args: argparse.Namespace):
    try:
        import ray
    except ImportError as e:
        raise ValueError("--ray needs Ray Data: pip install 'mlcodec[ray]'") from e
    from .ray import write_shards_ray

    started = not ray.is_initialized()  # else use the instance this process already joined
    if started:
        ray.init(address=args.ray or None, include_dashboard=False, log_to_driver=False)
    try:
        return write_shards_ray(source, args.output, codec=args.codec, quality=args.quality,
                                maxcount=args.maxcount, batch_size=args.batch_size,
                                num_actors=args.workers or None, gpus_per_actor=args.gpus_per_actor,
                                progress=not args.quiet, on_error=args.on_error, gzip=args.gzip)
    finally:
        if started:
            ray.shutdown()


def _source_args(p: argparse.ArgumentParser, moved: str = "") -> None:
    """The arguments :func:`source_from_args` reads (``moved``: how reencode qualifies them)."""
    p.add_argument("src", nargs="?", help=f"image folder in ImageFolder layout{moved}")
    p.add_argument("--coco", help=f"COCO instances JSON{moved}")
    p.add_argument("--images", help="image folder for --coco")
    p.add_argument("--hf", help=f"a Hugging Face dataset saved with save_to_disk, or parquet "
                                f"file(s){moved}")
    p.add_argument("--image-column", default="image", help="--hf: the column holding the images")
    p.add_argument("--label-column", action="append", default=[],
                   help="--hf: a column for the target (repeatable)")


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("shard", help="compress a dataset into WebDataset shards (resumable)")
    _source_args(s)
    s.add_argument("-o", "--output", required=True, help="output folder for shards + manifest")
    s.add_argument("--quality", type=quality_arg, default=mlcodec.DEFAULT_QUALITY,
                   help="0 (smallest) .. 1 (best)")
    s.add_argument("--codec", default=mlcodec.DEFAULT_CODEC, type=codec_arg(),
                   help="a learned codec (latent shards; NAME:WEIGHTS for trained weights) or "
                        "jpeg/webp/avif (image shards for pixel-domain references; not resumable)")
    s.add_argument("--workers", type=int, default=0,
                   help="encoding processes (0 = in process); with --ray, the actors (0 = one per CPU)")
    s.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run as a Ray Data job: a local Ray instance, or the cluster at ADDRESS "
                        "('auto' inside a cluster); shards split by --maxcount only")
    s.add_argument("--gpus-per-actor", type=float, default=0.0, help="with --ray: encode on GPUs")
    s.add_argument("--batch-size", type=int, default=16, help="images encoded together")
    s.add_argument("--maxcount", type=int, default=1000, help="samples per shard at most")
    s.add_argument("--maxsize-mb", type=float, default=256, help="shard size at most (MiB)")
    s.add_argument("--on-error", choices=("raise", "skip"), default="skip",
                   help="an unreadable image: leave it out and list it in manifest.json, or stop "
                        "(exit 2)")
    s.add_argument("--gzip", action=argparse.BooleanOptionalAction, default=None,
                   help="gzipped .tar.gz shards (the default for a new job: tar headers are most of "
                        "a small sample's bytes) or plain .tar (--no-gzip); a "
                        "resumed job keeps its own")
    s.set_defaults(func=cmd_shard)

    r = sub.add_parser("reencode", help="write a shard folder's dataset again from its source, in "
                                        "the current bitstream format (resumable)")
    r.add_argument("shards", help="the old shard folder (with its job.json or manifest.json)")
    r.add_argument("-o", "--output", required=True, help="output folder for the new shards")
    _source_args(r, ", if it moved since (else the one the job recorded)")
    r.add_argument("--codec", type=codec_arg("learned"),
                   help="another codec than the job's (default: the one it recorded)")
    r.add_argument("--workers", type=int, default=0, help="encoding processes (0 = in process)")
    r.add_argument("--batch-size", type=int, default=16, help="images encoded together")
    r.add_argument("--on-error", choices=("raise", "skip"), default="skip",
                   help="an unreadable image: leave it out and list it, or stop (exit 2)")
    r.set_defaults(func=cmd_reencode)
