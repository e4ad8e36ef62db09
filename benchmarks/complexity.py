"""What each codec costs to decode beside what it costs in bits: the complexity table.

Per learned codec (every release of the registered learned codecs, and ``--also NAME:WEIGHTS``):

- multiply-accumulates per pixel of each side at 256x256: encode (``g_a`` + ``h_a``), latent
  decode (``h_s``, what ``output="latent"`` runs) and image decode (``h_s`` + ``g_s``);
- ms per image, one thread, best of 5: the latent decode (``decode_latents``, batches of 32) and the
  image decode (``decompress_batch``, batches of 16), on 256x256 crops at quality 0.5;
- PSNR BD-rate on the held-out photos (long side 512) against the first release and against WebP.

Pixel codecs (JPEG q90, WebP) get the image decode (Pillow decode + ToTensor) and, for JPEG, the
BD-rate against WebP, for scale. Timings are ratios within one run: machines differ.

    python -m benchmarks.complexity [--also NAME:WEIGHTS ...] [--n 64] [--out benchmarks/results/complexity.json]
"""

from __future__ import annotations

import argparse
import io
import os
import time

import torch
from PIL import Image
from torchvision.transforms.functional import to_tensor

import mlcodec
from mlcodec.metrics import bd_rate
from mlcodec.registry import codec_config

from benchmarks.common import crops, held_out_photos, machine, measure, write_report
from benchmarks.latent_decode_profile import conv_macs, per_image_ms
from benchmarks.rd_curve import QUALITIES, in_range

REFERENCE = "mlcodec-hyperprior@1"


def releases() -> list[str]:
    """``NAME@N`` of every release of every registered learned codec with packaged weights."""
    out = []
    for name in mlcodec.list_codecs(kind="learned"):
        config = codec_config(name)
        if config.weights is None:
            continue  # downloads its weights (bmshj2018-hyperprior): not offline
        out += [f"{name}@{n}" for n in range(1, config.releases + 1)] if config.releases > 1 else [name]
    return out


def macs_per_pixel(codec: mlcodec.Codec, size: int = 256) -> dict[str, float]:
    m = codec.model
    x = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        y = m.g_a(x)
        z = m.h_a(y)
    g_a, h_a, h_s, g_s = (conv_macs(mod, t) for mod, t in ((m.g_a, x), (m.h_a, y), (m.h_s, z), (m.g_s, y)))
    px = size * size
    return {"encode": (g_a + h_a) / px, "latent_decode": h_s / px, "image_decode": (h_s + g_s) / px}


def learned_ms(codec: mlcodec.Codec, images: list, quality: float) -> dict[str, float]:
    data = codec.compress_batch(images, quality)
    n = len(data)
    return {"latent_decode": per_image_ms(lambda: [codec.decode_latents(data[i:i + 32]) for i in range(0, n, 32)], n),
            "image_decode": per_image_ms(lambda: [codec.decompress_batch(data[i:i + 16]) for i in range(0, n, 16)], n)}


def pixel_ms(codec: mlcodec.Codec, images: list, quality: float) -> float:
    data = [codec.compress(im, quality) for im in images]
    return per_image_ms(lambda: [to_tensor(Image.open(io.BytesIO(d)).convert("RGB")) for d in data], len(data))


def rd(codec: mlcodec.Codec, photos: list, qualities: list[float]) -> list[dict]:
    return [measure(codec, photos, q, with_ms_ssim=False) for q in qualities]


def bd(ref: list[dict], test: list[dict]) -> float:
    r, t = in_range(ref), in_range(test)
    return bd_rate([p["bpp"] for p in r], [p["psnr"] for p in r], [p["bpp"] for p in t], [p["psnr"] for p in t])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--also", nargs="*", default=[], metavar="NAME:WEIGHTS")
    ap.add_argument("--n", type=int, default=64, help="256x256 crops timed")
    ap.add_argument("--quality", type=float, default=0.5)
    ap.add_argument("--photos", default=os.path.expanduser("~/.cache/mlcodec/photos"))
    ap.add_argument("--threads", type=int, default=2, help="for the rate points (timings use one)")
    ap.add_argument("--out", default="benchmarks/results/complexity.json")
    args = ap.parse_args()
    started = time.perf_counter()
    photos = held_out_photos(args.photos)
    images = crops(args.n, 256, [args.photos] if os.path.isdir(args.photos) else [])
    learned = [*releases(), *args.also]
    curves, rows = {}, {}
    for name in [*learned, "webp", "jpeg"]:
        codec = mlcodec.create_codec(name)
        torch.set_num_threads(args.threads)
        kind = codec.config.kind
        curves[name] = rd(codec, photos, QUALITIES["mlcodec-hyperprior" if kind == "learned" else name])
        torch.set_num_threads(1)
        if kind == "learned":
            rows[name] = {"macs_per_pixel": macs_per_pixel(codec), "ms": learned_ms(codec, images, args.quality)}
        else:  # JPEG at q90, as the loader benchmark stores it; WebP at the same setting
            rows[name] = {"ms": {"image_decode": pixel_ms(codec, images, 0.9)}}
        print(f"measured {name}", flush=True)
    for name, row in rows.items():
        row["bd_rate_psnr_vs_webp"] = bd(curves["webp"], curves[name]) if name != "webp" else 0.0
        if name in learned:
            row["bd_rate_psnr_vs_first_release"] = bd(curves[REFERENCE], curves[name])

    print(f"\n{machine()}; {len(photos)} held-out photos (rate), {args.n} crops of 256 px (time), "
          f"quality {args.quality}, 1 thread")
    print(f"{'codec':<26}{'MAC/px enc':>11}{'latent':>9}{'image':>9}{'ms latent':>11}{'ms image':>10}"
          f"{'BD vs @1':>10}{'BD vs WebP':>12}")
    for name, row in rows.items():
        macs, ms = row.get("macs_per_pixel"), row["ms"]
        cells = (f"{macs['encode']:>11.0f}{macs['latent_decode']:>9.0f}{macs['image_decode']:>9.0f}"
                 f"{ms['latent_decode']:>11.2f}" if macs else f"{'':>11}{'':>9}{'':>9}{'':>11}")
        ref = row.get("bd_rate_psnr_vs_first_release")
        print(f"{name[:25]:<26}{cells}{ms['image_decode']:>10.2f}"
              f"{(f'{ref:+.2f}%' if ref is not None else ''):>10}{row['bd_rate_psnr_vs_webp']:>+11.2f}%")
    print("(pixel codecs: Pillow decode + ToTensor of q90 files; BD-rates over 0.1-1.0 bpp)")
    write_report({"machine": machine(), "quality": args.quality, "crops": args.n,
                  "photos": [p.name for p in photos], "rows": rows, "curves": curves}, args.out, started)


if __name__ == "__main__":
    main()
