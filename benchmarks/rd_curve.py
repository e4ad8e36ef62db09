"""Rate-distortion of the default codec against Pillow JPEG (4:2:0), WebP and AVIF.

Held-out photos (never used in training, see mlcodec.data.photos), long side 512 px. For each
codec and quality: mean bpp from the real bytes, mean PSNR (RGB) and MS-SSIM over the photos.
Prints the table, BD-rates against JPEG over 0.1-1.0 bpp, and writes a plot.

    python -m benchmarks.rd_curve [--photos ~/.cache/mlcodec/photos] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

import mlcodec
from mlcodec.metrics import bd_rate

from benchmarks.common import held_out_crops, held_out_photos, measure

QUALITIES = {
    "mlcodec-hyperprior": [round(q, 3) for q in np.linspace(0.0, 1.0, 11)],
    "jpeg": [round(q, 3) for q in np.linspace(0.0, 0.95, 20)],
    "webp": [round(q, 3) for q in np.linspace(0.0, 0.95, 20)],
    "avif": [round(q, 3) for q in np.linspace(0.0, 0.95, 20)],
}
RANGE = (0.1, 1.0)





def in_range(points: list[dict], margin: int = 1) -> list[dict]:
    """Points inside RANGE plus ``margin`` neighbours on each side, so the fit spans it."""
    pts = sorted(points, key=lambda p: p["bpp"])
    idx = [i for i, p in enumerate(pts) if RANGE[0] <= p["bpp"] <= RANGE[1]]
    if not idx:
        return []
    return pts[max(idx[0] - margin, 0) : idx[-1] + margin + 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--photos", default=os.path.expanduser("~/.cache/mlcodec/photos"))
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--content", choices=("photos", "dataset"), default="photos",
                    help="photos: the held-out photos, long side 512; dataset: 224 px crops of them "
                         "downscaled 1-3x, as datasets store images (rd_curve_dataset.*)")
    ap.add_argument("--per-photo", type=int, default=12, help="--content dataset: crops per photo")
    ap.add_argument("--also", nargs="*", default=[], metavar="NAME:WEIGHTS",
                    help="learned codecs with weights of their own to measure beside the default "
                         "(its qualities), e.g. a fine-tune's mlcodec-hyperprior:runs/x/weights.safetensors")
    ap.add_argument("--skip", default="", help="comma-separated codecs to leave out (e.g. avif)")
    ap.add_argument("--no-ms-ssim", action="store_true", help="PSNR only (MS-SSIM is most of the time "
                    "on many small crops)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    photos = held_out_photos(args.photos) if args.content == "photos" else \
        held_out_crops(args.photos, args.per_photo)
    stem = "rd_curve" if args.content == "photos" else "rd_curve_dataset"

    qualities_of = {k: v for k, v in QUALITIES.items() if k not in args.skip.split(",")}
    qualities_of.update({spec: QUALITIES["mlcodec-hyperprior"] for spec in args.also})
    results: dict[str, list[dict]] = {}
    for name, qualities in qualities_of.items():
        codec = mlcodec.create_codec(name)
        results[name] = [measure(codec, photos, q, not args.no_ms_ssim) for q in qualities]

    print(f"\n{'codec':<20} {'quality':>7} {'bpp':>7} {'PSNR':>7} {'MS-SSIM':>8}")
    for name, pts in results.items():
        for p in pts:
            print(f"{name:<20} {p['quality']:>7.3f} {p['bpp']:>7.3f} {p['psnr']:>7.2f} {p['ms_ssim']:>8.4f}")

    print(f"\nBD-rate against JPEG over {RANGE[0]}-{RANGE[1]} bpp (negative = fewer bits for equal quality)")
    ref = in_range(results["jpeg"])
    summary = {}
    for name, pts in results.items():
        if name == "jpeg":
            continue
        test = in_range(pts)
        row = {}
        for metric in ("psnr",) if args.no_ms_ssim else ("psnr", "ms_ssim"):
            row[metric] = bd_rate([p["bpp"] for p in ref], [p[metric] for p in ref],
                                  [p["bpp"] for p in test], [p[metric] for p in test])
        summary[name] = row
        print(f"{name:<20} PSNR {row['psnr']:+7.1f}%" + (f"   MS-SSIM {row['ms_ssim']:+7.1f}%" if "ms_ssim" in row else ""))
    ref_w = in_range(results["webp"])
    for name in ["mlcodec-hyperprior", *args.also]:
        test = in_range(results[name])
        d = bd_rate([p["bpp"] for p in ref_w], [p["psnr"] for p in ref_w],
                    [p["bpp"] for p in test], [p["psnr"] for p in test])
        print(f"{name} vs WebP: PSNR BD-rate {d:+.1f}%")
        if name == "mlcodec-hyperprior":
            vs_webp = d
    ref_d = in_range(results["mlcodec-hyperprior"])
    for name in args.also:  # a fine-tune against the default it started from (people's cost)
        test = in_range(results[name])
        d = {m: bd_rate([p["bpp"] for p in ref_d], [p[m] for p in ref_d], [p["bpp"] for p in test],
                        [p[m] for p in test]) for m in (("psnr",) if args.no_ms_ssim else ("psnr", "ms_ssim"))}
        summary[name]["vs_default"] = d
        print(f"{name} vs mlcodec-hyperprior: " + ", ".join(f"{m} BD-rate {v:+.1f}%" for m, v in d.items()))
    lo_hi = [p["bpp"] for p in results["mlcodec-hyperprior"]]
    print(f"mlcodec-hyperprior bpp range over quality 0..1: {min(lo_hi):.3f}-{max(lo_hi):.3f}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps({"photos": [p.name for p in photos],
                                                   "results": results, "bd_rate_vs_jpeg": summary,
                                                   "bd_rate_psnr_vs_webp": vs_webp}, indent=1))
    plot(results, out / f"{stem}.png")
    print(f"\nwrote {out / f'{stem}.json'} and {out / f'{stem}.png'}")


def plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, pts in results.items():
        pts = sorted(pts, key=lambda p: p["bpp"])
        for ax, metric in zip(axes, ("psnr", "ms_ssim")):
            ax.plot([p["bpp"] for p in pts], [p[metric] for p in pts], "o-", ms=3, label=name)
    for ax, label in zip(axes, ("PSNR (dB)", "MS-SSIM")):
        ax.set_xlim(0, 1.2)
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("Held-out photos, long side 512 px")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
