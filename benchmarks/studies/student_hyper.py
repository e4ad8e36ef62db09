"""Lighter hyper-synthesis for the latent loader: what each variant costs in rate, what it saves.

A latent decode runs the integer hyper-synthesis before it can entropy-decode ``y``; at 256x256
that is 32.9M multiply-accumulates per image, the largest stage (``latent_decode_profile.py``).
Every variant keeps the first release's transforms, hyper-analysis and gains, so it codes the same
``y``; only its ``h_s`` changes, trained with the rate loss (``mlcodec.train.distill_hyper_synthesis``,
``distill_loss="rate"``) on the training photos, then exported with its own integer tables
(bitstream format 3). Two kinds (``--variants``, each trained once per ``--seeds`` seed):

- ``scratch:W``: a student W channels wide trained from scratch (``--distill-hidden W``); width 0
  is one of the teacher's own widths, which separates what the loss does from what the width costs;
- ``decay:H1xH2``: the teacher's ``h_s`` narrowed to H1 and H2 hidden channels by mask decay
  (``--mask-decay H1 H2``, :mod:`mlcodec.mask_decay`), the same steps; ``decay:96x144`` removes
  nothing and is the fine-tuning control.

Per variant: the hyper-synthesis MACs at 256x256, the integer hyper-synthesis and the whole
``decode_latents`` in ms per image (256 crops of the training photos at quality 0.5, batches of
32, one thread, best of 5), and bpp / PSNR / MS-SSIM on the held-out photos at qualities 0.1-0.9
with BD-rates against the teacher (``mlcodec-hyperprior@1``). Variants are trained in ``--jobs`` processes of one
thread each, saved under ``--work`` and reused.

    python -m benchmarks.studies.student_hyper [--variants scratch:64,decay:64x64] [--seeds 0,1]
        [--steps 3000] [--jobs 2] [--work runs/students] [--also WEIGHTS ...]

(``--widths 64,48`` is short for ``--variants scratch:64,scratch:48``, the first run's command.)
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import time
from dataclasses import replace
from pathlib import Path

import torch

import mlcodec
from mlcodec.codecs.hyperprior import _decode_z
from mlcodec.metrics import bd_rate
from mlcodec.registry import codec_config, pretrained_path
from mlcodec.train import TrainConfig, distill_hyper_synthesis, export
from mlcodec.weights import read_metadata

from benchmarks.studies.exact_cost import QUALITIES, measure
from benchmarks.latent_decode_profile import conv_macs, per_image_ms
from benchmarks.common import crops
from benchmarks.common import held_out_photos

#: the codec every variant starts from and is measured against: the first release, from which
#: mlcodec-hyperprior@2 (the default since) was derived by mask decay in the codec's loop
TEACHER = "mlcodec-hyperprior@1"


def train_variant(variant: str, seed: int, steps: int, work: Path, photos_dir: str, lr: float,
                  batch: int, threads: int = 1, loss: str = "rate") -> Path:
    """Train (or reuse) one ``KIND:SPEC`` variant for ``seed``; returns its weights."""
    kind, spec = variant.split(":")
    path = work / f"{kind}{spec}-s{seed}-n{steps}" / "weights.safetensors"
    if path.exists():
        config = read_metadata(path)["config"]
        if (config["lr"], config["distill_loss"], config["batch_size"]) != (lr, loss, batch):
            raise ValueError(f"{path} was trained with lr {config['lr']}, loss {config['distill_loss']}, "
                             f"batch {config['batch_size']}, not {lr}, {loss}, {batch}: use another --work")
        print(f"{variant} seed {seed}: reusing {path}", flush=True)
        return path
    if kind == "scratch":
        shape = {"distill_hidden": int(spec)}
    elif kind == "decay":
        shape = {"mask_decay": tuple(int(v) for v in spec.split("x"))}
    else:
        raise ValueError(f"variant kind must be scratch or decay, not {kind!r}")
    torch.set_num_threads(threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    teacher_path = str(pretrained_path(codec_config(TEACHER)))
    teacher = mlcodec.create_codec(TEACHER).model.train(False)
    cfg = replace(TrainConfig(), data=(photos_dir,) if Path(photos_dir).is_dir() else (),
                  init=teacher_path, distill_hyper=True, distill_loss=loss, steps=steps, lr=lr,
                  batch_size=batch, seed=seed, progress=False, **shape)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    student = distill_hyper_synthesis(teacher, cfg)
    export(student, cfg, path)
    print(f"{variant} seed {seed}: {steps} steps in {time.perf_counter() - t0:.0f} s -> {path}", flush=True)
    return path


def training_photos_512(photos_dir: str) -> list:
    """The training photos, resized like the held-out ones (long side 512)."""
    from mlcodec.data.photos import shrunk, training_photos

    out = shrunk(training_photos([photos_dir] if Path(photos_dir).is_dir() else []), 512)
    print(f"{len(out)} training photos (a check for overfitting)")
    return out


def speed(codec, images: list, quality: float, batch: int) -> tuple[int, float, float]:
    """(h_s MACs per image, integer hyper-synthesis ms/image, decode_latents ms/image)."""
    m, t = codec.model, codec._tables
    data = []
    for i in range(0, len(images), 16):
        data += codec.compress_batch(images[i:i + 16], quality)
    streams = codec._parse(data)
    _, h, w = streams[0].header.latent_shape
    zs = []
    for i in range(0, len(streams), batch):
        zs.append(_decode_z(t, streams[i:i + batch], (1, m.N, h // 4, w // 4))[1])
    hyper_ms = per_image_ms(lambda: [codec._hyper(z, quality) for z in zs], len(streams))
    whole_ms = per_image_ms(lambda: [codec.decode_latents(streams[i:i + batch])
                                     for i in range(0, len(streams), batch)], len(streams))
    macs = conv_macs(m.h_s, torch.zeros(1, m.N, h // 4, w // 4))
    return macs, hyper_ms, whole_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--variants", default="scratch:64,decay:64x64",
                    help="comma-separated KIND:SPEC, KIND scratch (SPEC a width) or decay (H1xH2)")
    ap.add_argument("--widths", help="short for --variants scratch:W,... (the first run's option)")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds, each variant trained once per seed")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--jobs", type=int, default=1, help="training processes, one thread each")
    ap.add_argument("--loss", choices=("rate", "rate-ste"), default="rate",
                    help="the distillation loss: bits under additive noise, or of the rounded symbols")
    ap.add_argument("--work", default="runs/students")
    ap.add_argument("--photos", default=os.path.expanduser("~/.cache/mlcodec/photos"))
    ap.add_argument("--threads", type=int, default=2, help="for training (one job) and the RD points")
    ap.add_argument("--also", nargs="*", default=[], metavar="WEIGHTS",
                    help="weights files of the same architecture trained elsewhere (for example by "
                         "train-codec --mask-decay in the codec's loop), or released codecs "
                         "(mlcodec-hyperprior@2), measured beside the variants")
    ap.add_argument("--training-photos", action="store_true",
                    help="measure rate on the training photos (long side 512) instead of the "
                         "held-out ones: a check for overfitting, not an evaluation")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    specs = [f"scratch:{w}" for w in args.widths.split(",")] if args.widths else args.variants.split(",")
    runs = [(v, int(s)) for v in specs if v for s in args.seeds.split(",")]
    train_args = [(v, s, args.steps, work, args.photos, args.lr, args.batch_size,
                   1 if args.jobs > 1 else args.threads, args.loss) for v, s in runs]
    if args.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            paths = pool.starmap(train_variant, train_args)
    else:
        paths = [train_variant(*a) for a in train_args]
    variants = [(f"{TEACHER} (teacher)", TEACHER)]
    variants += [(f"{v} seed {s}", f"{mlcodec.DEFAULT_CODEC}:{p}") for (v, s), p in zip(runs, paths)]
    variants += [(Path(p).parent.name[:26], f"{mlcodec.DEFAULT_CODEC}:{p}") if Path(p).is_file()
                 else (p, p) for p in args.also]

    photos = training_photos_512(args.photos) if args.training_photos else held_out_photos(args.photos)
    images = crops(256, 256, [args.photos] if Path(args.photos).is_dir() else [])
    rows = []
    for label, name in variants:
        codec = mlcodec.create_codec(name)
        torch.set_num_threads(args.threads)
        rd = [measure(codec, photos, q) for q in QUALITIES]
        torch.set_num_threads(1)
        macs, hyper_ms, whole_ms = speed(codec, images, 0.5, 32)
        rows.append((label, macs, hyper_ms, whole_ms, rd))
        print(f"measured {label}", flush=True)

    ref = rows[0][4]
    which = "training" if args.training_photos else "held-out"
    print(f"\n256x256 crops, quality 0.5, batch 32, 1 thread; {len(photos)} {which} photos for rate")
    print(f"{'variant':<26} {'h_s MMAC':>8} {'hyper ms':>8} {'decode ms':>9} {'bpp@0.5':>8} "
          f"{'PSNR@0.5':>8} {'BD PSNR':>8} {'BD MS-SSIM':>10}")
    for label, macs, hyper_ms, whole_ms, rd in rows:
        mid = rd[QUALITIES.index(0.5)]
        bds = [bd_rate([r["bpp"] for r in ref], [r[k] for r in ref], [r["bpp"] for r in rd],
                       [r[k] for r in rd]) for k in ("psnr", "ms_ssim")]
        print(f"{label:<26} {macs / 1e6:>8.1f} {hyper_ms:>8.3f} {whole_ms:>9.3f} {mid['bpp']:>8.4f} "
              f"{mid['psnr']:>8.3f} {bds[0]:>+7.2f}% {bds[1]:>+9.2f}%")
    print("\nper quality, bpp (PSNR):")
    for i, q in enumerate(QUALITIES):
        print(f"{q:>4.1f} " + "  ".join(f"{r[4][i]['bpp']:.4f} ({r[4][i]['psnr']:.2f})" for r in rows))


if __name__ == "__main__":
    main()
