"""Large images: peak memory and megapixels/s of compress and decompress, by image size.

One photo (Lomiri's 4096x4096 Infinite-Sea wallpaper from scripts/fetch_photos.sh, or a
procedural image if it is missing) is cropped to squares of 512 to 4096 px. Each size runs in a
fresh process (so peak RSS is its own, and a job of one size is what a user's job of such images
sees): ``compress`` then ``decompress`` with the default codec, at least ``--repeat`` times and
for at least ``--min-seconds`` (a size of at most 1024 px first runs once untimed, so that its
first call's set-up does not count; at larger sizes it is a small share of one run). The sizes
take turns for ``--rounds`` rounds, so that a slow spell of this machine falls on every size
alike.

Per size it prints the bytes, PSNR, the sustained megapixels/s of compress and of decompress
(all runs of a process, the median over the rounds) and the best single run's, and the first
round's peak RSS (and the peak before compressing: Python, torch, CompressAI, the codec and the
photo). The last line compares the largest size with the first: the sustained ratio, the range of
each round's ratio, and the ratio of best runs (which favours small sizes: the best of 30 runs of
0.1 s against the best of 2 of 10 s). Images whose latent has more than ``--tile`` x ``--tile``
pixels are streamed through the transforms in bands (``mlcodec.tiling``; a huge value runs every
size in one pass).

    python -m benchmarks.large_images [--photo PATH] [--sizes 512,1024,2048,4096] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
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
    peak = 0
    if size <= 1024:  # the first call's set-up (oneDNN primitives, buffers) is not a throughput
        codec.decompress(codec.compress(im, 0.5))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times: list[tuple[float, float]] = []
    while len(times) < repeat or sum(map(sum, times)) < min_seconds:
        out = None
        t0 = time.perf_counter()
        data = codec.compress(im, 0.5)
        t1 = time.perf_counter()
        out = codec.decompress(data)
        times.append((t1 - t0, time.perf_counter() - t1))
        # the first run's peak (later ones add what the allocator kept), before PSNR's copies
        peak = peak or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"size": size, "bytes": len(data), "psnr": psnr(im, out), "times": times,
            "rss_before_mb": rss0 / 1024, "peak_rss_mb": peak / 1024}


def _child(args: argparse.Namespace, size: int) -> dict:
    res = subprocess.run([sys.executable, __file__, "--one", str(size), "--photo", args.photo,
                          "--tile", str(args.tile), "--threads", str(args.threads),
                          "--repeat", str(args.repeat), "--min-seconds", str(args.min_seconds)]
                         + ["--default-allocator"] * args.default_allocator,
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photo", default=PHOTO)
    ap.add_argument("--sizes", default="512,1024,2048,4096")
    ap.add_argument("--tile", type=int, default=DEFAULT_TILE,
                    help="images of at most TILE x TILE latent pixels run in one pass; larger ones are "
                         "streamed in bands")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="turns each size takes (a fresh process each)")
    ap.add_argument("--repeat", type=int, default=2, help="least timed runs per process")
    ap.add_argument("--min-seconds", type=float, default=10.0,
                    help="least seconds of compress + decompress per process (more runs for small sizes)")
    ap.add_argument("--default-allocator", action="store_true",
                    help="leave glibc's allocator as it is (the mlcodec command and this script "
                         "call mlcodec.allocator.keep_freed_memory by default)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process: one size
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.photo, args.one, args.tile, args.threads, args.repeat,
                                 args.min_seconds, not args.default_allocator)))
        return
    sizes = [int(v) for v in args.sizes.split(",")]
    print(f"photo {args.photo if os.path.exists(args.photo) else '(procedural)'}, quality 0.5, "
          f"one pass up to {args.tile}x{args.tile} latent px, {args.threads} threads, {args.rounds} rounds, "
          f"{'glibc default allocator' if args.default_allocator else 'keep_freed_memory()'}")
    rounds = [{size: _child(args, size) for size in sizes} for _ in range(args.rounds)]
    print(f"\n{'':>23} {'sustained MP/s':>17} {'best run MP/s':>17}")
    print(f"{'size':>6} {'bytes':>9} {'PSNR':>6} {'compress':>8} {'decomp':>8} {'compress':>8} {'decomp':>8} "
          f"{'runs':>5} {'peak RSS MB':>11} {'of which before':>15}")

    def mp_s(r: dict, k: int, best: bool) -> float:
        mp, ts = r["size"] ** 2 / 1e6, [t[k] for t in r["times"]]
        return mp / min(ts) if best else mp * len(ts) / sum(ts)

    table = {}
    for size in sizes:
        rs = [rd[size] for rd in rounds]
        sus = [statistics.median(mp_s(r, k, False) for r in rs) for k in (0, 1)]
        best = [max(mp_s(r, k, True) for r in rs) for k in (0, 1)]
        table[size] = sus, best
        r0 = rs[0]
        print(f"{size:>6} {r0['bytes']:>9} {r0['psnr']:>6.2f} {sus[0]:>8.2f} {sus[1]:>8.2f} {best[0]:>8.2f} "
              f"{best[1]:>8.2f} {sum(len(r['times']) for r in rs):>5} {r0['peak_rss_mb']:>11.0f} "
              f"{r0['rss_before_mb']:>15.0f}")
    if len(sizes) > 1:
        a, b = sizes[0], sizes[-1]
        per_round = [[mp_s(rd[b], k, False) / mp_s(rd[a], k, False) for rd in rounds] for k in (0, 1)]
        (sa, ba), (sb, bb) = table[a], table[b]
        print(f"\n{b} px vs {a} px, megapixels/s: sustained compress {sb[0] / sa[0]:.2f}x "
              f"(rounds {min(per_round[0]):.2f}-{max(per_round[0]):.2f}), decompress {sb[1] / sa[1]:.2f}x "
              f"(rounds {min(per_round[1]):.2f}-{max(per_round[1]):.2f}); best runs compress "
              f"{bb[0] / ba[0]:.2f}x, decompress {bb[1] / ba[1]:.2f}x")


if __name__ == "__main__":
    main()
