"""Large images: peak memory and megapixels/s of compress and decompress, by image size.

One photo (Lomiri's 4096x4096 Infinite-Sea wallpaper from scripts/fetch_photos.sh, or a
procedural image if it is missing) is cropped to squares of 512 to 4096 px. Each size runs in a
fresh process (so peak RSS is its own): ``compress`` then ``decompress`` with the default codec,
``--repeat`` times and until ``--min-seconds`` have passed (the best time counts: small sizes,
which take a fraction of a second, get many more runs than the largest, so that one slow run of
this machine does not decide the ratio),
tiles of ``--tile`` latent pixels (the default; a huge value turns tiling off). Prints wall time,
megapixels/s and the first run's peak RSS (and the peak before compressing: Python, torch,
CompressAI, the codec and the photo), and the largest size's throughput as a ratio of the 512 px
one.

    python benchmarks/large_images.py [--photo PATH] [--sizes 512,1024,2048,4096] [--tile 32]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from mlcodec.tiling import DEFAULT_TILE

PHOTO = os.path.expanduser("~/.cache/mlcodec/photos/lomiri/Infinite-Sea_by_Aury88.jpg")


def run_one(photo: str, size: int, tile: int, threads: int, repeat: int, min_seconds: float,
            keep: bool) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    import mlcodec
    from mlcodec.allocator import keep_freed_memory
    from mlcodec.metrics import psnr

    if keep:  # as the mlcodec command does at start
        keep_freed_memory()
    torch.set_num_threads(threads)
    if os.path.exists(photo):
        im = Image.open(photo).convert("RGB")
        if min(im.size) < size:
            im = im.resize((max(size, im.width), max(size, im.height)))
        im = im.crop((0, 0, size, size))
    else:
        yy, xx = np.mgrid[:size, :size]
        im = Image.fromarray(np.stack([(xx * 7 + yy) % 256, (yy * 3) % 256, (xx ^ yy) % 256], -1).astype(np.uint8))
    codec = mlcodec.create_codec()
    codec.tile = tile
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times: list[tuple[float, float]] = []
    peak = 0
    # the best of at least ``repeat`` runs and ``min_seconds``: this machine's speed varies
    while len(times) < repeat or sum(map(sum, times)) < min_seconds:
        out = None
        t0 = time.perf_counter()
        data = codec.compress(im, 0.5)
        t1 = time.perf_counter()
        out = codec.decompress(data)
        times.append((t1 - t0, time.perf_counter() - t1))
        # the first run's peak (later ones add what the allocator kept), before PSNR's copies
        peak = peak or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"size": size, "bytes": len(data), "psnr": psnr(im, out),
            "compress_s": min(t for t, _ in times), "decompress_s": min(t for _, t in times),
            "runs": len(times), "rss_before_mb": rss0 / 1024, "peak_rss_mb": peak / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--photo", default=PHOTO)
    ap.add_argument("--sizes", default="512,1024,2048,4096")
    ap.add_argument("--tile", type=int, default=DEFAULT_TILE, help="latent pixels per tile side")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="least runs per size; the best time counts")
    ap.add_argument("--min-seconds", type=float, default=10.0,
                    help="least seconds of compress + decompress per size (more runs for small sizes)")
    ap.add_argument("--default-allocator", action="store_true",
                    help="leave glibc's allocator as it is (the mlcodec command and this script "
                         "call mlcodec.allocator.keep_freed_memory by default)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process: one size
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.photo, args.one, args.tile, args.threads, args.repeat,
                                 args.min_seconds, not args.default_allocator)))
        return
    print(f"photo {args.photo if os.path.exists(args.photo) else '(procedural)'}, quality 0.5, "
          f"tile {args.tile} latent px, {args.threads} threads, "
          f"{'glibc default allocator' if args.default_allocator else 'keep_freed_memory()'}")
    print(f"\n{'size':>6} {'bytes':>9} {'PSNR':>6} {'compress s':>10} {'MP/s':>6} {'decompress s':>12} "
          f"{'MP/s':>6} {'runs':>4} {'peak RSS MB':>11} {'of which before':>15}")
    rows = []
    for size in map(int, args.sizes.split(",")):
        res = subprocess.run([sys.executable, __file__, "--one", str(size), "--photo", args.photo,
                              "--tile", str(args.tile), "--threads", str(args.threads),
                              "--repeat", str(args.repeat), "--min-seconds", str(args.min_seconds)]
                             + ["--default-allocator"] * args.default_allocator,
                             capture_output=True, text=True, check=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        mp = size * size / 1e6
        r["mp_s_compress"], r["mp_s_decompress"] = mp / r["compress_s"], mp / r["decompress_s"]
        rows.append(r)
        print(f"{size:>6} {r['bytes']:>9} {r['psnr']:>6.2f} {r['compress_s']:>10.2f} "
              f"{r['mp_s_compress']:>6.2f} {r['decompress_s']:>12.2f} {r['mp_s_decompress']:>6.2f} {r['runs']:>4} "
              f"{r['peak_rss_mb']:>11.0f} {r['rss_before_mb']:>15.0f}")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"\n{b['size']} px vs {a['size']} px: compress {b['mp_s_compress'] / a['mp_s_compress']:.2f}x, "
              f"decompress {b['mp_s_decompress'] / a['mp_s_decompress']:.2f}x the megapixels/s")


if __name__ == "__main__":
    main()
