"""What the first steps of a fine-tune do to the packaged codec, with and without a warm-up.

Fine-tuning starts from the packaged ``mlcodec-hyperprior`` weights (``tune-codec``, ``train-codec
--objective unified``, the ablation of ``benchmarks/unified.py``). Adam's first step moves every
parameter by about the learning rate, whatever its gradient; this script measures what that does
to people's images: rate and PSNR on the held-out photos after N plain rate-distortion steps
(no task objective), for each ``--runs STEPS:WARMUP``.

    python -m benchmarks.studies.finetune_warmup [--runs 1:0,1:100,200:0,200:100] [--lr 1e-4]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch


import mlcodec  # noqa: E402
from mlcodec.registry import codec_config, pretrained_path  # noqa: E402
from mlcodec.train import TrainConfig, train  # noqa: E402
from mlcodec.weights import read_metadata  # noqa: E402
from benchmarks.common import held_out_photos, measure  # noqa: E402

QUALITIES = (0.5, 0.9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="1:0,1:100,200:0,200:100", help="STEPS:WARMUP,...")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--photos", default=os.path.expanduser("~/.cache/mlcodec/photos"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    packaged = str(pretrained_path(codec_config("mlcodec-hyperprior")))
    lambdas = tuple(read_metadata(packaged)["config"]["lambdas"])
    photos = held_out_photos(args.photos)
    data = (args.photos,) if Path(args.photos).is_dir() else ()

    def row(name: str, spec: str) -> None:
        codec = mlcodec.create_codec(spec)
        cells = [measure(codec, photos, q) for q in QUALITIES]
        print(f"{name:<24}" + "".join(f" {c['bpp']:>8.4f} {c['psnr']:>8.3f}" for c in cells), flush=True)

    print(f"{len(photos)} held-out photos; Adam at lr {args.lr}, batch 4 crops of 128 px, seed 0")
    print(f"{'weights':<24}" + "".join(f" {'bpp@' + str(q):>8} {'PSNR@' + str(q):>8}" for q in QUALITIES))
    row("packaged", "mlcodec-hyperprior")
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.runs.split(","):
            steps, warmup = (int(v) for v in run.split(":"))
            w = train(TrainConfig(out=f"{tmp}/{run.replace(':', '-')}", data=data, init=packaged, steps=steps,
                                  batch_size=4, patch=128, lr=args.lr, warmup=warmup, seed=0, progress=False,
                                  save_every=10**9, lambdas=lambdas))
            row(f"{steps} steps, warm-up {warmup}", f"mlcodec-hyperprior:{w}")


if __name__ == "__main__":
    main()
