"""What bitstream format 3 (the integer hyper-synthesis) costs against format 2 (float).

The same packaged weights code the held-out photos (long side 512 px) both ways, at qualities
0.1 to 0.9. Per quality: mean bpp from the real bytes and mean PSNR / MS-SSIM of what
``decompress`` returns; then BD-rates of format 3 against format 2 over those points, and the
per-quality changes the acceptance names (PSNR at least format 2's - 0.05 dB, bpp at most +2%).
Also the integer tables' share of the weights file.

    python -m benchmarks.studies.exact_cost [--photos ~/.cache/mlcodec/photos]
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch

import mlcodec
from mlcodec.metrics import bd_rate, bpp, ms_ssim, psnr

from benchmarks.common import held_out_photos  # the same photos as the rate-distortion benchmark

QUALITIES = [round(q, 2) for q in np.arange(0.1, 0.91, 0.1)]


def measure(codec, photos, q: float) -> dict[str, float]:
    images = [p.image for p in photos]
    datas = codec.compress_batch(images, quality=q)
    decoded = codec.decompress_batch(datas)
    return {"bpp": float(np.mean([bpp(len(d), im) for d, im in zip(datas, images)])),
            "psnr": float(np.mean([psnr(a, b) for a, b in zip(images, decoded)])),
            "ms_ssim": float(np.mean([ms_ssim(a, b) for a, b in zip(images, decoded)]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--photos", default=os.path.expanduser("~/.cache/mlcodec/photos"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    photos = held_out_photos(args.photos)
    v3 = mlcodec.create_codec()
    v2 = mlcodec.create_codec()
    v2.format_version = 2
    rows = [(q, measure(v2, photos, q), measure(v3, photos, q)) for q in QUALITIES]
    print(f"\n{'quality':>7} {'bpp v2':>8} {'bpp v3':>8} {'Δbpp':>7} {'PSNR v2':>8} {'PSNR v3':>8} "
          f"{'ΔPSNR':>7} {'MS-SSIM v2':>10} {'MS-SSIM v3':>10}")
    for q, a, b in rows:
        print(f"{q:>7.2f} {a['bpp']:>8.4f} {b['bpp']:>8.4f} {100 * (b['bpp'] / a['bpp'] - 1):>+6.2f}% "
              f"{a['psnr']:>8.3f} {b['psnr']:>8.3f} {b['psnr'] - a['psnr']:>+7.3f} "
              f"{a['ms_ssim']:>10.5f} {b['ms_ssim']:>10.5f}")
    for metric in ("psnr", "ms_ssim"):
        d = bd_rate([a["bpp"] for _, a, _ in rows], [a[metric] for _, a, _ in rows],
                    [b["bpp"] for _, _, b in rows], [b[metric] for _, _, b in rows])
        print(f"BD-rate of format 3 vs format 2 ({metric.upper().replace('_', '-')}): {d:+.2f}%")
    worst_db = min(b["psnr"] - a["psnr"] for _, a, b in rows)
    worst_rate = max(b["bpp"] / a["bpp"] - 1 for _, a, b in rows)
    print(f"worst quality: PSNR {worst_db:+.3f} dB, bpp {100 * worst_rate:+.2f}% "
          f"(limits -0.05 dB, +2%)")
    from safetensors.torch import load_file

    from mlcodec.registry import codec_config, pretrained_path

    path = pretrained_path(codec_config(mlcodec.DEFAULT_CODEC))
    tensors = load_file(str(path))
    extra = sum(t.numel() * t.element_size() for k, t in tensors.items() if k.startswith("exact."))
    print(f"weights file {path.stat().st_size} bytes, of which integer tables {extra} bytes")


if __name__ == "__main__":
    main()
