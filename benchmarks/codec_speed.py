"""Encode/decode throughput of the default codec and of JPEG on the CPU (images/s).

Crops of held-out photos at 256x256 and 512x512. The learned codec is timed one image per call
and in batches (``compress_batch``/``decompress_batch``/``decode_latents``); its latent decode
(entropy decoding plus hyper-synthesis, no synthesis transform) is what training loaders use.
JPEG: Pillow, quality 90, 4:2:0; decode includes conversion to a float tensor (ToTensor).

    python -m benchmarks.codec_speed [--threads 2] [--seconds 3]
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.functional import to_tensor

import mlcodec
from mlcodec.data.photos import evaluation_photos


def rate(fn, n_items: int, seconds: float) -> float:
    fn()  # warm-up
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        count += n_items
    return count / (time.perf_counter() - t0)


def crops(size: int, n: int) -> list[Image.Image]:
    out = []
    photos = evaluation_photos(max_side=768)
    rng = np.random.default_rng(0)
    while len(out) < n:
        im = photos[len(out) % len(photos)].image
        if min(im.size) < size:
            im = im.resize((max(size, im.width), max(size, im.height)))
        x, y = rng.integers(0, im.width - size + 1), rng.integers(0, im.height - size + 1)
        out.append(im.crop((x, y, x + size, y + size)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--quality", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    codec = mlcodec.create_codec()
    print(f"torch threads: {torch.get_num_threads()}, quality {args.quality}, batch {args.batch}")
    print(f"{'size':>7} {'operation':<34} {'img/s':>8} {'vs JPEG':>8}")
    for size in (256, 512):
        images = crops(size, args.batch)
        one = images[0]
        data = codec.compress_batch(images, args.quality)
        jpegs = []
        for im in images:
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=90, subsampling="4:2:0")
            jpegs.append(buf.getvalue())

        def jpeg_encode():
            buf = io.BytesIO()
            one.save(buf, format="JPEG", quality=90, subsampling="4:2:0")

        def jpeg_decode():
            to_tensor(Image.open(io.BytesIO(jpegs[0])).convert("RGB"))

        j_enc, j_dec = rate(jpeg_encode, 1, args.seconds), rate(jpeg_decode, 1, args.seconds)
        rows = [
            ("JPEG q90 encode", j_enc, j_enc),
            ("JPEG q90 decode + ToTensor", j_dec, j_dec),
            ("mlcodec encode, 1 image/call", rate(lambda: codec.compress(one, args.quality), 1, args.seconds), j_enc),
            (f"mlcodec encode, batch {args.batch}", rate(lambda: codec.compress_batch(images, args.quality), len(images), args.seconds), j_enc),
            ("mlcodec decode to pixels, 1/call", rate(lambda: codec.decompress(data[0]), 1, args.seconds), j_dec),
            (f"mlcodec decode to pixels, batch {args.batch}", rate(lambda: codec.decompress_batch(data), len(data), args.seconds), j_dec),
            ("mlcodec decode latent, 1/call", rate(lambda: codec.decode_latent(data[0]), 1, args.seconds), j_dec),
            (f"mlcodec decode latents, batch {args.batch}", rate(lambda: codec.decode_latents(data), len(data), args.seconds), j_dec),
        ]
        for name, r, ref in rows:
            print(f"{size:>4}px  {name:<34} {r:>8.1f} {r / ref:>7.2f}x")
        mean_bytes = np.mean([len(d) for d in data])
        print(f"{size:>4}px  mean bytes: mlcodec {mean_bytes:.0f} ({8 * mean_bytes / size**2:.3f} bpp), "
              f"JPEG q90 {np.mean([len(j) for j in jpegs]):.0f}")


if __name__ == "__main__":
    main()
