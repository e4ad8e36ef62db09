"""Shard bytes against the bitstream payload, plain and gzipped, at 64, 128 and 256 px.

Random crops of the offline photos at quality 0.5, labelled (two tar members a sample: ``mlc``
and ``cls``), written with ``write_shards`` as plain ``.tar`` and as ``.tar.gz``; JPEG q90 image
shards of the same crops for reference. Prints bytes per sample and the ratio to the payload.

    python -m benchmarks.shard_overhead [--photos ~/.cache/mlcodec/photos] [--n 840]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from mlcodec.data.photos import evaluation_photos, training_photos
from mlcodec.data.sources import IterableSource
from mlcodec.integrations.webdataset import write_image_shards, write_shards


def crops(photo_dirs: list[str], n: int, size: int):
    photos = [p.image for p in training_photos(photo_dirs) + evaluation_photos(photo_dirs)]
    rng = np.random.default_rng(size)
    out = []
    while len(out) < n:
        im = photos[len(out) % len(photos)]
        scale = max(size / min(im.size), float(rng.uniform(0.2, 0.6)))
        im = im.resize((max(size, round(im.width * scale)), max(size, round(im.height * scale))))
        x, y = int(rng.integers(im.width - size + 1)), int(rng.integers(im.height - size + 1))
        out.append((im.crop((x, y, x + size, y + size)), len(out) % 10))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--photos", default=os.path.expanduser("~/.cache/mlcodec/photos"))
    ap.add_argument("--n", type=int, default=840)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dirs = [args.photos] if Path(args.photos).is_dir() else []
    work = Path(tempfile.mkdtemp(prefix="mlcodec-shards-"))
    print(f"{args.n} labelled crops per size, quality 0.5, shards of 1000")
    print(f"\n{'size':>5} {'payload B/sample':>16} {'tar B/sample':>12} {'tar/payload':>11} "
          f"{'tar.gz B/sample':>15} {'gz/payload':>10} {'JPEG q90 tar B/sample':>21} {'tar / JPEG tar':>14}")
    for size in (64, 128, 256):
        src = IterableSource(crops(dirs, args.n, size), name=f"crops{size}")
        m = write_shards(src, work / f"t{size}", progress=False, gzip=False)
        g = write_shards(src, work / f"g{size}", progress=False, gzip=True)
        j = write_image_shards(src, work / f"j{size}", progress=False)
        jpeg_tar = sum(p.stat().st_size for p in (work / f"j{size}").glob("*.tar"))
        per = lambda b: b / m.samples  # noqa: E731
        print(f"{size:>5} {per(m.bitstream_bytes):>16.0f} {per(m.shard_bytes):>12.0f} "
              f"{m.shard_bytes / m.bitstream_bytes:>11.2f} {per(g.shard_bytes):>15.0f} "
              f"{g.shard_bytes / g.bitstream_bytes:>10.2f} {per(jpeg_tar):>21.0f} "
              f"{m.shard_bytes / jpeg_tar:>14.2f}")
        del j


if __name__ == "__main__":
    main()
