"""Where a latent decode's time goes, stage by stage, against the budget of the loader goal.

The loader goal of the shards issue is ``output="latent"`` at 2x the images/s of JPEG q90 decode +
ToTensor. This script measures, per 256x256 image on one thread, JPEG decode + ToTensor and each
stage of ``mlcodec-hyperprior``'s format-3 latent decode in batches (as the loader runs it):
unpacking, ``z`` decoding, the integer hyper-synthesis (scale indexes and means, through the CPU's
compiled kernels; beside it the same network in torch ops, the float hyper-synthesis + scale
indexes of format 2, and the multiply-accumulate count),
``y`` decoding (rANS with the array-level reader of ``mlcodec.rans``; beside it, the same
symbols through CompressAI's list-based ``RansDecoder``, as releases before read them) and the
dequantization. The budget line is half of JPEG's time; the webdataset pipeline's own cost comes
on top of every row.

    python -m benchmarks.latent_decode_profile [--n 256] [--quality 0.5] [--batch 32]
"""

from __future__ import annotations

import argparse
import io
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

import mlcodec
from mlcodec.bitstream import unpack
from mlcodec.codecs.hyperprior import SKIP_INDEX, _decode_y, _decode_z
from mlcodec.entropy import _used_tables


def _listed(tables):  # CompressAI's decoder takes Python lists
    idx, *rest = tables
    return (idx.tolist(), *rest)

from benchmarks.common import crops  # same crops as the loader benchmark


def per_image_ms(fn: Callable[[], object], images: int, repeat: int = 5) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best / images * 1e3


def conv_macs(module: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of the (transposed) convolutions in ``module`` for input ``x``."""
    total = 0

    def hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] // m.groups
        if isinstance(m, nn.ConvTranspose2d):
            total += inp[0].numel() * m.out_channels * k  # every input scatters a kernel
        else:
            total += out.numel() * m.in_channels * k

    hooks = [m.register_forward_hook(hook) for m in module.modules()
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        module(x)
    for h in hooks:
        h.remove()
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--quality", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--photos", default=os.path.expanduser("~/.cache/mlcodec/photos"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    images = crops(args.n, args.size, [args.photos] if Path(args.photos).is_dir() else [])
    codec = mlcodec.create_codec("mlcodec-hyperprior")
    m, t = codec.model, codec._tables
    data = []
    for i in range(0, args.n, 16):
        data += codec.compress_batch(images[i:i + 16], args.quality)
    jpegs = []
    for im in images:
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        jpegs.append(buf.getvalue())

    from torchvision.transforms.functional import to_tensor

    jpeg_ms = per_image_ms(lambda: [to_tensor(Image.open(io.BytesIO(b)).convert("RGB")) for b in jpegs],
                           args.n)
    batches = [data[i:i + args.batch] for i in range(0, args.n, args.batch)]
    streams = [[unpack(d) for d in b] for b in batches]
    c, h, w = streams[0][0].header.latent_shape
    q = torch.full((args.batch,), streams[0][0].header.quality)
    _, inv_gain, _, inv_hgain = m.gains(q)
    z_shape = (1, m.N, h // 4, w // 4)

    def stage_z():
        return [_decode_z(t, s, z_shape) for s in streams]

    z_out = stage_z()
    quality = streams[0][0].header.quality
    hyper = codec._hyper  # the integer hyper-synthesis of format 3

    def stage_exact():
        return [hyper(z_sym, quality) for _, z_sym in z_out]

    def stage_float():  # format 2's float hyper-synthesis and scale indexes, for comparison
        return [t.scale_indexes(m.hyper_synthesis(z_sym.float() + t.z_medians,
                                                  inv_hgain[: z_sym.shape[0]])[0]) for _, z_sym in z_out]

    with torch.inference_mode():
        exact_out = stage_exact()

        def stage_y():  # needs fresh decoders positioned after z: decode z again, untimed part below
            return [_decode_y(t, _decode_z(t, s, z_shape)[0], i, s) for s, (i, _) in zip(streams, exact_out)]

        y_syms = stage_y()
        rows = [
            ("unpack + CRC check", per_image_ms(lambda: [[unpack(d) for d in b] for b in batches], args.n)),
            ("z: rANS decode (factorized)", per_image_ms(stage_z, args.n)),
            ("integer hyper-synthesis (format 3)", per_image_ms(stage_exact, args.n)),
        ]
        rows.append(("y: rANS decode (array reader)", per_image_ms(stage_y, args.n) - rows[1][1]))
        from compressai.ans import RansDecoder

        def stage_zy_lists():  # z and y through CompressAI's reader: lists in, a list out
            for s, (idx, _) in zip(streams, exact_out):
                idx = idx.numpy()
                for k, bs in enumerate(s):
                    dec = RansDecoder()
                    dec.set_stream(bs.strings[0])
                    dec.decode_stream(*_listed(_used_tables(z_idx_all, t.z)))
                    coded = idx[k][idx[k] > SKIP_INDEX[3]]
                    np.fromiter(dec.decode_stream(*_listed(_used_tables(coded, t.y))), np.int32, coded.size)

        z_idx_all = np.repeat(np.arange(z_shape[1], dtype=np.int32), z_shape[2] * z_shape[3])
        zy_lists = per_image_ms(stage_zy_lists, args.n)
        rows.append(("(z + y: CompressAI's list reader)", zy_lists))
        rows.append(("(z + y: array reader)", rows[1][1] + rows[-2][1]))
        rows.append(("dequantize (float64, exact)", per_image_ms(
            lambda: [hyper.dequantize(y, mu, quality) for y, (_, mu) in zip(y_syms, exact_out)], args.n)))
        rows.append(("whole decode_latents", per_image_ms(lambda: [codec.decode_latents(s) for s in streams],
                                                        args.n)))
        rows.append(("(format 2: float h_s + indexes)", per_image_ms(stage_float, args.n)))
        # the same integer network in torch ops alone (the path a GPU runs), against the CPU's
        # kernels between the GEMMs (both exact; tests/test_exact.py)
        kernels, hyper._cpu = hyper._cpu, None
        rows.append(("(hyper-synthesis in torch ops)", per_image_ms(stage_exact, args.n)))
        hyper._cpu = kernels
    macs = conv_macs(m.h_s, z_out[0][1][:1].float()) if hasattr(m, "h_s") else 0
    coded = sum(int((i > 5).sum()) for i, _ in exact_out) / args.n
    print(f"{args.n} crops {args.size}x{args.size}, quality {args.quality}, batch {args.batch}, 1 thread; "
          f"latent {c}x{h}x{w} = {c * h * w} symbols, {coded:.0f} coded per image; "
          f"hyper-synthesis {macs / 1e6:.1f}M MAC per image")
    print(f"{'stage':<34} {'ms/image':>9}")
    print(f"{'JPEG q90 decode + ToTensor':<34} {jpeg_ms:>9.3f}")
    print(f"{'budget for 2x JPEG (half of it)':<34} {jpeg_ms / 2:>9.3f}")
    for name, ms in rows:
        print(f"{name:<34} {ms:>9.3f}")
    gflops = 2 * macs / (rows[2][1] * 1e-3) / 1e9
    print(f"the integer hyper-synthesis runs at {gflops:.0f} GFLOP/s (of its float MACs) on this core")


if __name__ == "__main__":
    main()
