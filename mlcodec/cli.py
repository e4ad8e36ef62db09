# One module of this size on purpose: every image command's argparse options sit next to the short
# function that runs it (register_* beside cmd_*); the weights' commands are in cli_train.py, and
# plugins add theirs through entry points.
"""Learned image compression for machine-vision datasets: compress images and datasets into
latent bitstreams, decode them for people, check them, and train and evaluate task heads."""

# Every command is ``main(argv) -> int`` (tests call it in-process); plugins add commands through
# the ``mlcodec.commands`` entry point (``shard``, ``reencode``, ``train-head``, ``eval``, ...).

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path

from tqdm import tqdm

from mlcodec.allocator import keep_freed_memory
from mlcodec.bitstream import BitstreamError, read_header
from mlcodec.codecs.base import DEFAULT_QUALITY
from mlcodec.data.photos import IMAGE_SUFFIXES
from mlcodec.registry import DEFAULT_CODEC, CodecCache, codec_config, create_codec, list_codecs

log = logging.getLogger("mlcodec")


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


def _inputs(sources: Sequence[str], suffixes: set[str]) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """(file, path relative to its source root) for the files with ``suffixes`` in the files and
    folders given on the line, and the other files found in those folders (left out)."""
    found, other = [], []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file():
                    (found.append((f, f.relative_to(p))) if f.suffix.lower() in suffixes
                     else other.append(f))
        elif p.is_file():
            found.append((p, Path(p.name)))
        else:
            raise CliError(f"no such file or folder: {src}")
    if not found:
        raise CliError(f"no {'/'.join(sorted(suffixes))} files in {' '.join(sources)}")
    return found, other


def quality_arg(text: str) -> float:
    """An argparse ``type`` for ``--quality``: a float in [0, 1], checked before any work."""
    try:
        q = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= q <= 1.0:
        raise argparse.ArgumentTypeError(f"quality must be in [0, 1] (0 = smallest files), got {q}")
    return q


def shown_quality(q: float) -> str:
    """A quality as it was typed: the shortest decimal that the stored float32 rounds to."""
    import numpy as np

    return np.format_float_positional(np.float32(q), trim="-")


def _list_left_out(what: str, paths: Sequence[Path], limit: int = 10) -> None:
    if paths:
        names = ", ".join(str(p) for p in paths[:limit]) + (" ..." if len(paths) > limit else "")
        print(f"left out {len(paths)} {what}: {names}")


def cmd_compress(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from mlcodec.metrics import psnr

    codec = create_codec(args.codec)
    files, other = _inputs(args.sources, IMAGE_SUFFIXES)
    out = Path(args.output)
    total_in = total_out = pixels = 0
    psnrs: list[float] = []
    skipped: list[tuple[Path, str]] = []
    for path, rel in tqdm(files, desc="compress", unit="img", disable=args.quiet):
        try:
            with Image.open(path) as im:
                im.load()
                data = codec.compress(im, quality=args.quality)
                if args.psnr:
                    psnrs.append(psnr(im, codec.decompress(data)))  # converts band by band
                size = im.size
        except (OSError, ValueError, TypeError) as e:
            if args.on_error == "raise":
                raise CliError(f"{path}: cannot compress: {e} (--on-error skip leaves such files "
                               f"out and lists them)") from e
            skipped.append((path, str(e).splitlines()[0]))
            continue
        dest = (out / rel).with_suffix(codec.config.file_extension)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        total_in += path.stat().st_size
        total_out += len(data)
        pixels += size[0] * size[1]
    done = len(files) - len(skipped)
    if done:
        for path, reason in skipped:
            print(f"skipped {path}: {reason}")
        _list_left_out("files that are not images", other)
    quality = f"{codec.name} at quality {shown_quality(args.quality)}"
    if not done:
        more = f" (and {len(skipped) - 1} more files)" if len(skipped) > 1 else ""
        raise CliError(f"{skipped[0][0]}: cannot compress: {skipped[0][1]}{more}")
    summary = (f"compressed {done} images with {quality}: {total_in} -> {total_out} bytes, "
               f"mean {8 * total_out / pixels:.3f} bpp")
    if psnrs:
        finite = [p for p in psnrs if np.isfinite(p)]
        summary += f", PSNR {np.mean(finite):.2f} dB against the source" if finite else ", lossless"
    print(f"{summary}; written to {out}" + (f"; {len(skipped)} skipped" if skipped else ""))
    return 0


def codec_arg(kind: str | None = None):
    """An argparse ``type`` for ``--codec``: a registered name, or ``NAME:WEIGHTS``."""
    def parse(text: str) -> str:
        try:
            config = codec_config(text)
        except (ValueError, FileNotFoundError) as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if kind is not None and config.kind != kind:
            raise argparse.ArgumentTypeError(f"{text} is a {config.kind} codec; choose one of "
                                             f"{', '.join(list_codecs(kind=kind))}")
        return text
    return parse


def codec_help(kind: str | None = None) -> str:
    return f"{', '.join(list_codecs(kind=kind))}, or NAME:WEIGHTS for trained weights"


def cmd_decode(args: argparse.Namespace) -> int:
    from mlcodec.inspect import is_shard

    if any(is_shard(f) or (Path(f).is_dir() and any(is_shard(p) for p in Path(f).iterdir()))
           for f in args.files):
        return _decode_shards(args)
    files, _ = _inputs(args.files, {".mlc"})
    out = Path(args.output)
    codecs = CodecCache(args.codec)
    for path, rel in tqdm(files, desc="decode", unit="img", disable=args.quiet):
        data = path.read_bytes()
        try:
            image = codecs(data).decompress(data)
        except BitstreamError as e:
            raise CliError(f"{path}: {e}") from e
        dest = (out / rel).with_suffix(".png")
        dest.parent.mkdir(parents=True, exist_ok=True)
        image.save(dest)
    print(f"decoded {len(files)} files to {out}")
    return 0


def _pick(samples: list[tuple[str, str, int | None]], n: int, seed: int) -> set[tuple[str, str]]:
    """``n`` of ``(shard, key, label)``: a seeded shuffle, then classes and shards in turn, so a
    few picks already show several of each."""
    import random

    order = list(samples)
    random.Random(seed).shuffle(order)
    queues: dict[tuple, list] = {}
    for s in order:
        queues.setdefault((s[2], s[0]), []).append(s)
    picked: list[tuple[str, str, int | None]] = []
    while len(picked) < n and any(queues.values()):
        for q in list(queues.values()):
            if q and len(picked) < n:
                picked.append(q.pop())
    return {(shard, key) for shard, key, _ in picked}


def _decode_shards(args: argparse.Namespace) -> int:
    """Shards (or folders of them) to PNGs plus a contact sheet with the targets drawn."""
    from mlcodec.data.shard_fields import decode_label
    from mlcodec.inspect import (contact_sheet, draw_target, iter_samples, shard_files,
                                 shard_manifest, weights_spec)

    shards = shard_files(args.files)
    meta = shard_manifest(shards[0])
    class_names = meta.get("class_names", [])
    spec = args.codec or weights_spec(meta)
    wanted = set(args.keys or [])
    chosen: set[tuple[str, str]] | None = None
    if not wanted and args.first is None:  # a spread sample: one pass to list, one to decode
        listing = [(s.shard, s.key, decode_label(s.fields)) for s in iter_samples(shards)]
        chosen = _pick(listing, args.sample, args.seed)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    shown, captions = [], []
    codecs = CodecCache(spec)
    limit = args.first if args.first is not None else args.sample
    for s in iter_samples(shards):
        if (wanted and s.key not in wanted) or (chosen is not None and (s.shard, s.key) not in chosen):
            continue
        if "mlc" not in s.fields:
            raise CliError(f"{s.shard} key {s.key}: no .mlc bitstream in the sample")
        try:
            image = codecs(s.fields["mlc"]).decompress(s.fields["mlc"])
        except BitstreamError as e:
            raise CliError(f"{s.shard} key {s.key}: {e}") from e
        image.save(out / f"{s.key}.png")
        shown.append(draw_target(image, s.target, class_names))
        captions.append(s.key)
        if len(shown) >= limit and not wanted:
            break
    missing = wanted - set(captions)
    if missing:
        raise CliError(f"keys not found in the shards: {sorted(missing)[:5]}")
    if not shown:
        raise CliError("no samples in the shards")
    contact_sheet(shown, captions).save(out / "contact_sheet.png")
    print(f"decoded {len(shown)} samples to {out} (contact sheet: {out / 'contact_sheet.png'})")
    return 0


def _header_info(path: Path, data: bytes) -> dict:
    h = read_header(data)
    names = [n for n in list_codecs() if codec_config(n).codec_id == h.codec_id]
    return {
        "file": str(path), "bytes": len(data), "codec": names[0] if names else None,
        "codec_id": h.codec_id, "fingerprint": h.fingerprint.hex(),
        "quality": float(shown_quality(h.quality)), "original_size": list(h.original_size),
        "padded_size": list(h.padded_size), "latent_shape": list(h.latent_shape),
        "source_mode": h.source_mode, "format_version": h.version,
        "bpp": round(8 * len(data) / (h.original_size[0] * h.original_size[1]), 4),
    }


def cmd_info(args: argparse.Namespace) -> int:
    files, _ = _inputs(args.files, {".mlc"})
    rows = []
    for path, _rel in files:
        try:
            rows.append(_header_info(path, path.read_bytes()))
        except BitstreamError as e:
            raise CliError(f"{path}: {e}") from e
    if args.json:
        for r in rows:
            print(json.dumps(r))
    elif len(rows) == 1:
        for k, v in rows[0].items():
            print(f"{k:>14}: {v}")
    else:
        print(f"{'file':<40} {'codec':<20} {'quality':>7} {'size':>11} {'bytes':>8} {'bpp':>7} {'format':>6}")
        for r in rows:
            size = "x".join(map(str, r["original_size"][::-1]))
            print(f"{r['file'][-40:]:<40} {str(r['codec']):<20} {r['quality']:>7} {size:>11} "
                  f"{r['bytes']:>8} {r['bpp']:>7.3f} {r['format_version']:>6}")
        total = sum(r["bytes"] for r in rows)
        print(f"{len(rows)} files, {total} bytes")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mlcodec.demo import format_rows, run_demo

    codec = create_codec(args.codec)
    out = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="mlcodec-demo-"))
    print(f"mlcodec demo: {codec.name}, quality {args.quality}, on built-in photos "
          f"(scikit-image), long side {args.size}px")
    rows = run_demo(codec, out, args.quality, max_side=args.size)
    print(format_rows(rows))
    n = len(rows)
    print(f"mean: {sum(r.bpp for r in rows) / n:.3f} bpp, PSNR {sum(r.psnr for r in rows) / n:.2f} dB"
          f" (JPEG at the same bytes: {sum(r.jpeg_psnr for r in rows) / n:.2f} dB)")
    print(f"wrote {n} .mlc bitstreams and decoded PNGs to {out}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from mlcodec.data.synthetic import export_all

    paths = export_all(args.output, args.train, args.val, size=args.size, seed=args.seed,
                       formats=args.formats.split(","))
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from mlcodec.verify import verify

    report = verify(args.paths, codec=args.codec, batch=args.batch, progress=not args.quiet)
    for f in report.failures:
        print(f"FAIL {f.where}: {f.reason}")
    print(report.summary())
    return 1 if report.failures else 0


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an argument's default where it says something (not for flags or required ones)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default in (None, True, False, argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


def register_compress(sub: argparse._SubParsersAction) -> None:
    """The ``compress`` command: images to .mlc bitstreams."""
    c = sub.add_parser("compress", help="images (files or folders) to .mlc bitstreams")
    c.add_argument("sources", nargs="+", help="image files or folders (searched recursively)")
    c.add_argument("-o", "--output", required=True, help="output folder")
    c.add_argument("--quality", type=quality_arg, default=DEFAULT_QUALITY,
                   help="0 (smallest) .. 1 (best)")
    c.add_argument("--codec", default=DEFAULT_CODEC, type=codec_arg(), help=codec_help())
    c.add_argument("--on-error", choices=("raise", "skip"), default="skip",
                   help="an unreadable image: leave it out and list it, or stop (exit 2)")
    c.add_argument("--no-psnr", dest="psnr", action="store_false",
                   help="skip decoding each image to report PSNR against the source")
    c.set_defaults(func=cmd_compress)



def register_decode(sub: argparse._SubParsersAction) -> None:
    """The ``decode`` command: .mlc files or shards to PNG."""
    d = sub.add_parser("decode", help=".mlc files, or shards, to PNG (shards: + contact sheet)")
    d.add_argument("files", nargs="+", help=".mlc files/folders, or .tar shards/shard folders")
    d.add_argument("-o", "--output", required=True, help="output folder")
    d.add_argument("--keys", nargs="*", help="shards: decode these sample keys")
    d.add_argument("--sample", type=int, default=16,
                   help="shards: decode N samples spread over the shards and classes")
    d.add_argument("--seed", type=int, default=0, help="shards: which spread sample")
    d.add_argument("--first", type=int, help="shards: decode the first N samples in order instead")
    d.add_argument("--codec", type=codec_arg("learned"),
                   help="decode with this codec, e.g. NAME:WEIGHTS for trained weights (default: the "
                        "codec each bitstream names; shards: their manifest's)")
    d.set_defaults(func=cmd_decode)



def register_info(sub: argparse._SubParsersAction) -> None:
    """The ``info`` command: bitstream headers."""
    i = sub.add_parser("info", help="the headers of .mlc files: codec, quality, sizes, bytes, bpp")
    i.add_argument("files", nargs="+", help=".mlc files or folders (a table for several)")
    i.add_argument("--json", action="store_true", help="one JSON object per line")
    i.set_defaults(func=cmd_info)



def register_demo(sub: argparse._SubParsersAction) -> None:
    """The ``demo`` command: the end-to-end demo."""
    m = sub.add_parser("demo", help="end-to-end run on built-in photos")
    m.add_argument("-o", "--output", help="folder for the bitstreams and PNGs (default: a temp dir)")
    m.add_argument("--quality", type=quality_arg, default=DEFAULT_QUALITY,
                   help="0 (smallest) .. 1 (best)")
    m.add_argument("--size", type=int, default=256, help="long side of the demo photos")
    m.add_argument("--codec", default=DEFAULT_CODEC, type=codec_arg("learned"),
                   help=codec_help("learned"))
    m.set_defaults(func=cmd_demo)



def register_synth(sub: argparse._SubParsersAction) -> None:
    """The ``synth`` command: the procedural task benchmark."""
    y = sub.add_parser("synth", help="write the procedural task benchmark (ImageFolder, COCO, YOLO)")
    y.add_argument("-o", "--output", required=True, help="output folder")
    y.add_argument("--train", type=int, default=2000, help="training images")
    y.add_argument("--val", type=int, default=500, help="validation images")
    y.add_argument("--size", type=int, default=128, help="image side in pixels")
    y.add_argument("--seed", type=int, default=0, help="random seed of the scenes")
    y.add_argument("--formats", default="imagefolder,coco,yolo",
                   help="layouts to write, comma-separated")
    y.set_defaults(func=cmd_synth)



def register_verify(sub: argparse._SubParsersAction) -> None:
    """The ``verify`` command: decode everything as a loader would."""
    v = sub.add_parser("verify", help="decode every sample as a data loader would (one thread) "
                                      "and list those that fail")
    v.add_argument("paths", nargs="+", help=".mlc files/folders, or .tar shards/shard folders")
    v.add_argument("--codec", type=codec_arg("learned"),
                   help="decode with this codec, e.g. NAME:WEIGHTS (default: the codec each "
                        "bitstream names; shards: their manifest's)")
    v.add_argument("--batch", type=int, default=32, help="samples decoded together (as a loader's "
                                                         "decode_batch)")
    v.set_defaults(func=cmd_verify)



def build_parser() -> argparse.ArgumentParser:
    from mlcodec.cli_train import register_integerize, register_train_codec

    # -q/-v go before or after the command: every subcommand (plugins too) gets them, without a
    # default of its own so that one given before the command is kept
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log details")
    from mlcodec import __version__

    fmt = _Help
    p = argparse.ArgumentParser(prog="mlcodec", description=__doc__, parents=[common],
                                formatter_class=fmt)
    p.add_argument("--version", action="version", version=f"mlcodec {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parser = sub.add_parser

    def add_with_common(name: str, **kw):
        kw.setdefault("description", kw.get("help"))
        kw.setdefault("formatter_class", fmt)
        return add_parser(name, parents=[common, *kw.pop("parents", [])], **kw)

    sub.add_parser = add_with_common  # type: ignore[method-assign]
    for register in (register_compress, register_decode, register_info, register_demo, register_synth,
                     register_verify, register_train_codec, register_integerize):
        register(sub)
    for ep in entry_points(group="mlcodec.commands"):  # plugins, e.g. `shard` from integrations
        ep.load()(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag in ("quiet", "verbose"):  # given neither before nor after the command
        setattr(args, flag, getattr(args, flag, False))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    keep_freed_memory()  # the command owns its process: reuse bands' buffers (mlcodec.allocator)
    try:
        return int(args.func(args))
    except (CliError, ValueError, FileNotFoundError) as e:  # BitstreamError is a ValueError
        print(f"mlcodec {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
