"""Whole-image passes against row streaming (``mlcodec.tiling``), by image shape.

For each shape, random uint8 images run through the default codec's analysis and synthesis
transforms in one pass and streamed in bands, the two taking turns for ``--rounds`` rounds in one
process (the best time of each counts). Prints seconds per megapixel of each and which is faster:
the figures behind ``mlcodec.tiling.DEFAULT_TILE``, the largest latent area run in one pass.

    python -m benchmarks.studies.streaming [--shapes 480x640,704x704,512x1024,640x832,768x1024,1024x1024]
"""

from __future__ import annotations

import argparse
import time

import torch

import mlcodec
from mlcodec.allocator import keep_freed_memory
from mlcodec.tiling import tiled_analysis, tiled_synthesis


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="480x640,704x704,512x1024,640x832,768x1024,1024x1024",
                    help="HxW, multiples of 64")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    keep_freed_memory()  # as the mlcodec command does
    torch.set_num_threads(args.threads)
    model = mlcodec.create_codec().model
    gen = torch.Generator().manual_seed(0)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    images = {s: torch.randint(0, 256, (1, 3, *s), dtype=torch.uint8, generator=gen) for s in shapes}
    modes = {"whole": 1 << 20, "streamed": 1}  # the tile: every latent fits, or none does
    best: dict[tuple, list[float]] = {}
    with torch.inference_mode():
        latents = {s: tiled_analysis(model.g_a, x) for s, x in images.items()}
        for _ in range(args.rounds):
            for s in shapes:
                for mode, tile in modes.items():
                    mp = s[0] * s[1] / 1e6
                    t0 = time.perf_counter()
                    tiled_analysis(model.g_a, images[s], tile=tile)
                    t1 = time.perf_counter()
                    tiled_synthesis(model.g_s, latents[s], tile=tile)
                    t2 = time.perf_counter()
                    b = best.setdefault((s, mode), [float("inf")] * 2)
                    b[0], b[1] = min(b[0], (t1 - t0) / mp), min(b[1], (t2 - t1) / mp)
    print(f"{args.threads} threads, best of {args.rounds} rounds, seconds per megapixel\n")
    print(f"{'shape':>10} {'latent px':>9} {'whole g_a':>9} {'g_s':>6} {'sum':>6} "
          f"{'streamed g_a':>12} {'g_s':>6} {'sum':>6}  faster")
    for s in shapes:
        w, st = best[(s, "whole")], best[(s, "streamed")]
        print(f"{s[0]}x{s[1]:<5} {s[0] * s[1] // 256:>9} {w[0]:>9.3f} {w[1]:>6.3f} {sum(w):>6.3f} "
              f"{st[0]:>12.3f} {st[1]:>6.3f} {sum(st):>6.3f}  "
              f"{'whole' if sum(w) < sum(st) else 'streamed'}, "
              f"{(1 - min(sum(w), sum(st)) / max(sum(w), sum(st))) * 100:.0f}% less time")


if __name__ == "__main__":
    main()
