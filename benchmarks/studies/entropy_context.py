"""Would a context model pay? The rate a better entropy model saves on the default's own latents.

Codec v2 (issue 30) asks for a stronger teacher with "channel-conditional slices (Minnen & Singh
2020) or checkerboard context (He et al. 2021), whichever measures better per decode millisecond".
This probe measures the first half of that before any architecture is built: the packaged
default's transforms, hyper-prior and gains stay frozen, so every variant codes the *same*
quantized latent ``y_hat`` (the same distortion), and only the distribution it is coded with
changes. What a variant saves here is what its entropy model alone buys; training the transforms
with it (the real teacher) can only add to that.

Variants, each trained on the latents of dataset-like crops of the training photos (256 px,
random quality per crop) by minimising the bits of ``y_hat``:

* ``hyper``: the default's hyper-prior means and scales, unchanged (the baseline);
* ``hyper+``: a 1x1 parameter network on the hyper-synthesis output alone (the control: what more
  parameters do without context);
* ``checkerboard``: He et al.'s two-pass context: anchors (``(i + j)`` even) coded with the
  parameter network on the hyper-prior, non-anchors with it on the hyper-prior plus a 5x5
  convolution over the decoded anchors;
* ``cc:S``: Minnen & Singh's channel-conditional slices: ``S`` slices of ``M/S`` channels, each
  coded with a network of 3x3 convolutions on the hyper-prior and the slices decoded before it.

Each variant's ``y_hat`` is coded under ``N(mu', sigma')`` over the bins ``y_hat +- 1/2`` (the
grid the hyper-prior's means fix, which the decoder knows). The z bits are the default's.
Reported on dataset-like crops of the held-out photos (256 px, downscaled 1-3x) at qualities
0.1 / 0.5 / 0.9: bpp of each variant, its saving against ``hyper``, and the multiply-accumulates
it adds per pixel (the decode cost it would add, at the latent's 1/256 of the pixels).

    python -m benchmarks.studies.entropy_context [--steps 2000] [--threads 1] [--out benchmarks/results/entropy_context.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch
from torch import Tensor, nn

import mlcodec
from mlcodec.data.crops import DatasetCrops
from mlcodec.data.photos import training_photos

from benchmarks.common import held_out_crops, machine

SCALE_MIN = 0.11  # the scale table's lower bound (mlcodec.models.gained_hyperprior.SCALE_TABLE)


def bits(y_hat: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
    """Bits of each ``y_hat`` under a Gaussian discretised to the bins ``y_hat +- 1/2``."""
    sigma = sigma.clamp_min(SCALE_MIN)
    v = (y_hat - mu).abs()
    c = 1 / math.sqrt(2)
    p = 0.5 * (torch.erfc(c * (v - 0.5) / sigma) - torch.erfc(c * (v + 0.5) / sigma))
    return -torch.log2(p.clamp_min(1e-9))


@torch.no_grad()
def latents(model, images: Tensor, quality: Tensor) -> dict[str, Tensor]:
    """The default's coded latent of uint8 ``images`` at ``quality`` (one per image): ``y_hat``
    (gained), the hyper-synthesis output ``h`` (scales, means) and each image's z bits."""
    gain, _, hgain, inv_hgain = model.gains(quality)
    y_g = model.g_a(images.float() / 255) * gain
    z_g = model.h_a(y_g) * hgain
    _, z_lik = model.entropy_bottleneck(z_g)
    med = model.entropy_bottleneck._get_medians().reshape(1, -1, 1, 1)
    scales, means = model.hyper_synthesis(torch.round(z_g - med) + med, inv_hgain)
    y_hat = torch.round(y_g - means) + means
    return {"y": y_hat, "h": torch.cat([scales, means], 1), "z_bits": -torch.log2(z_lik).sum((1, 2, 3))}


class Hyper(nn.Module):
    """The baseline: the hyper-prior's own scales and means."""

    def forward(self, y: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        scales, means = h.chunk(2, 1)
        return means, scales


def _params(cin: int, width: int, cout: int, k: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, width, k, padding=k // 2), nn.LeakyReLU(),
                         nn.Conv2d(width, width, k, padding=k // 2), nn.LeakyReLU(),
                         nn.Conv2d(width, cout, k, padding=k // 2))


class HyperPlus(nn.Module):
    """A 1x1 parameter network on the hyper-synthesis output, no context: the control. It starts
    at the hyper-prior (residual with a zeroed last layer)."""

    def __init__(self, M: int, width: int) -> None:
        super().__init__()
        self.net = _params(2 * M, width, 2 * M)
        nn.init.zeros_(self.net[-1].weight), nn.init.zeros_(self.net[-1].bias)

    def forward(self, y: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        scales, means = (h + self.net(h)).chunk(2, 1)
        return means, scales


class Checkerboard(nn.Module):
    """He et al. 2021: a 5x5 convolution over the anchors feeds the non-anchors' parameters."""

    def __init__(self, M: int, width: int) -> None:
        super().__init__()
        self.ctx = nn.Conv2d(M, width, 5, padding=2)
        self.net = _params(2 * M + width, width, 2 * M)
        nn.init.zeros_(self.net[-1].weight), nn.init.zeros_(self.net[-1].bias)

    def forward(self, y: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        i, j = torch.meshgrid(torch.arange(y.shape[2]), torch.arange(y.shape[3]), indexing="ij")
        anchor = ((i + j) % 2 == 0).to(y.dtype)
        ctx = self.ctx(y * anchor) * (1 - anchor)  # anchors see no context
        scales, means = (h + self.net(torch.cat([h, ctx], 1))).chunk(2, 1)
        return means, scales


class ChannelConditional(nn.Module):
    """Minnen & Singh 2020: slice k's parameters from the hyper-prior and slices 0..k-1."""

    def __init__(self, M: int, width: int, slices: int) -> None:
        super().__init__()
        if M % slices:
            raise ValueError(f"{M} channels do not split into {slices} slices")
        self.size = M // slices
        self.nets = nn.ModuleList(_params(2 * M + k * self.size, width, 2 * self.size, k=3) for k in range(slices))
        for net in self.nets:
            nn.init.zeros_(net[-1].weight), nn.init.zeros_(net[-1].bias)

    def forward(self, y: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        scales, means = h.chunk(2, 1)
        mu, sigma = [], []
        for k, net in enumerate(self.nets):
            sl = slice(k * self.size, (k + 1) * self.size)
            d_s, d_m = net(torch.cat([h, y[:, : k * self.size]], 1)).chunk(2, 1)
            mu.append(means[:, sl] + d_m)
            sigma.append(scales[:, sl] + d_s)
        return torch.cat(mu, 1), torch.cat(sigma, 1)


def macs_per_pixel(module: nn.Module) -> float:
    """Multiply-accumulates per image pixel (one latent position is 16x16 pixels)."""
    total = 0
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            total += m.in_channels * m.out_channels * m.kernel_size[0] * m.kernel_size[1]
    return total / 256


def collect(model, batches, n: int, qualities: Tensor | None, gen: torch.Generator) -> dict[str, Tensor]:
    parts = []
    for images in batches:
        q = qualities if qualities is not None else torch.rand(images.shape[0], generator=gen)
        parts.append(latents(model, images, q.expand(images.shape[0]) if q.dim() == 0 else q))
        if sum(p["y"].shape[0] for p in parts) >= n:
            break
    return {k: torch.cat([p[k] for p in parts])[:n] for k in parts[0]}


def train_variant(variant: nn.Module, data: dict[str, Tensor], steps: int, batch: int, seed: int) -> list[float]:
    if not list(variant.parameters()):
        return []
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(variant.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    history = []
    for step in range(steps):
        idx = torch.randint(data["y"].shape[0], (batch,), generator=gen)
        mu, sigma = variant(data["y"][idx], data["h"][idx])
        loss = bits(data["y"][idx], mu, sigma).sum((1, 2, 3)).mean() / (256 * 256)  # y bpp
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            history.append(round(float(loss.detach()), 5))
    return history


@torch.no_grad()
def bpp(variant: nn.Module, data: dict[str, Tensor], pixels: int) -> float:
    mu, sigma = variant(data["y"], data["h"])
    return float((bits(data["y"], mu, sigma).sum((1, 2, 3)) + data["z_bits"]).mean()) / pixels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", default=os.path.expanduser("~/.cache/mlcodec/photos"))
    ap.add_argument("--codec", default="mlcodec-hyperprior")
    ap.add_argument("--variants", default="hyper,hyper+,checkerboard,cc:4")
    ap.add_argument("--width", type=int, default=96, help="channels of the added networks")
    ap.add_argument("--train-crops", type=int, default=1536)
    ap.add_argument("--per-photo", type=int, default=24, help="held-out crops per photo")
    ap.add_argument("--qualities", default="0.1,0.5,0.9")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/entropy_context.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    codec = mlcodec.create_codec(args.codec)
    model, M, size = codec.model, codec.model.M, 256
    gen = torch.Generator().manual_seed(args.seed)
    photos = training_photos([args.photos] if os.path.isdir(args.photos) else [])
    crops = DatasetCrops([p.image for p in photos], patch=size)
    train = collect(model, crops.batches(32, args.seed), args.train_crops, None, gen)
    print(f"{train['y'].shape[0]} training latents from {len(crops.photos)} photos ({time.time() - t0:.0f}s)")
    held = held_out_crops(args.photos, per_photo=args.per_photo, size=size, seed=args.seed)
    images = torch.stack([torch.from_numpy(np.asarray(p.image.convert("RGB")).copy()).permute(2, 0, 1) for p in held])
    qualities = [float(q) for q in args.qualities.split(",")]
    test = {q: collect(model, images.split(32), len(held), torch.tensor(q), gen) for q in qualities}

    builders = {"hyper": lambda: Hyper(), "hyper+": lambda: HyperPlus(M, args.width),
                "checkerboard": lambda: Checkerboard(M, args.width)}
    rows = {}
    for name in args.variants.split(","):
        variant = ChannelConditional(M, args.width, int(name.split(":")[1])) if name.startswith("cc:") \
            else builders[name]()
        t1 = time.time()
        history = train_variant(variant, train, args.steps, args.batch, args.seed)
        variant.eval()
        rows[name] = {"macs_per_pixel": macs_per_pixel(variant), "train_seconds": round(time.time() - t1),
                      "history": history, "bpp": {q: bpp(variant, test[q], size * size) for q in qualities}}
        print(f"{name}: trained in {rows[name]['train_seconds']}s, y bpp on training latents {history[-3:] if history else '-'}")

    print(f"\n{len(held)} held-out crops of {size} px; bpp (y + z) and saving against hyper")
    print(f"{'variant':<14} {'MAC/px':>7} " + " ".join(f"{'q' + str(q):>16}" for q in qualities))
    for name, r in rows.items():
        cells = [f"{r['bpp'][q]:.4f} {100 * (r['bpp'][q] / rows['hyper']['bpp'][q] - 1):+6.2f}%"
                 if "hyper" in rows else f"{r['bpp'][q]:.4f}" for q in qualities]
        print(f"{name:<14} {r['macs_per_pixel']:>7.0f} " + " ".join(f"{c:>16}" for c in cells))
    report = {"args": vars(args), "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "held_out_crops": len(held), "rows": rows, "seconds": round(time.time() - t0)}
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.out} ({time.time() - t0:.0f}s)")


if __name__ == "__main__":
    main()
