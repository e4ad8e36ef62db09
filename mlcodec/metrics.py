"""Image quality and rate-distortion metrics: PSNR, MS-SSIM, bits per pixel, BD-rate."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image


def _as_float(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"), dtype=np.float64)


def psnr(a: Image.Image, b: Image.Image) -> float:
    """PSNR in dB over RGB uint8 pixels (``inf`` for identical images)."""
    if a.size != b.size:
        raise ValueError(f"images differ in size: {a.size} vs {b.size}")
    mse = float(np.mean((_as_float(a) - _as_float(b)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def ms_ssim(a: Image.Image, b: Image.Image) -> float:
    """MS-SSIM (pytorch-msssim, data range 255). Needs images of at least 161 px per side."""
    from pytorch_msssim import ms_ssim as _ms_ssim

    if a.size != b.size:
        raise ValueError(f"images differ in size: {a.size} vs {b.size}")
    ta = torch.from_numpy(_as_float(a)).permute(2, 0, 1)[None].float()
    tb = torch.from_numpy(_as_float(b)).permute(2, 0, 1)[None].float()
    return float(_ms_ssim(ta, tb, data_range=255.0, size_average=True))


def bpp(num_bytes: int, image: Image.Image) -> float:
    return 8.0 * num_bytes / (image.width * image.height)


def bd_rate(rate_ref: Sequence[float], metric_ref: Sequence[float],
            rate_test: Sequence[float], metric_test: Sequence[float]) -> float:
    """Bjøntegaard delta rate in percent: average bitrate change of ``test`` vs ``ref`` at equal
    quality (negative = ``test`` needs fewer bits). Cubic fit of log-rate over the metric,
    integrated over the overlapping metric interval (VCEG-M33)."""
    lr1, lr2 = np.log(np.asarray(rate_ref, float)), np.log(np.asarray(rate_test, float))
    m1, m2 = np.asarray(metric_ref, float), np.asarray(metric_test, float)
    if min(len(m1), len(m2)) < 4:
        raise ValueError("BD-rate needs at least 4 rate points per curve")
    for m in (m1, m2):  # a flat curve (e.g. an untrained head) has no cubic fit of rate on metric
        if len(np.unique(np.round(m, 9))) < 4:
            raise ValueError("BD-rate: a curve has fewer than 4 distinct metric values (flat)")
    p1, p2 = np.polyfit(m1, lr1, 3), np.polyfit(m2, lr2, 3)
    lo, hi = max(m1.min(), m2.min()), min(m1.max(), m2.max())
    if lo >= hi:
        raise ValueError("BD-rate: the two curves do not overlap in quality")
    i1, i2 = np.polyint(p1), np.polyint(p2)
    avg1 = (np.polyval(i1, hi) - np.polyval(i1, lo)) / (hi - lo)
    avg2 = (np.polyval(i2, hi) - np.polyval(i2, lo)) / (hi - lo)
    return float((np.exp(avg2 - avg1) - 1.0) * 100.0)
