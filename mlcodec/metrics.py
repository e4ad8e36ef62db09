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


BD_METHODS = ("pchip", "cubic")


def _frontier(log_rate: np.ndarray, metric: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points of a curve that no cheaper point matches: sorted by rate, each kept only where
    its metric is higher than every lower-rate point's (spending more bits for no better metric
    is dominated: the codec can always spend fewer). Returned in increasing metric."""
    order = np.argsort(log_rate, kind="stable")
    keep, best = [], -np.inf
    for i in order:
        if metric[i] > best:
            keep.append(i)
            best = metric[i]
    return metric[keep], log_rate[keep]


def bd_rate(rate_ref: Sequence[float], metric_ref: Sequence[float],
            rate_test: Sequence[float], metric_test: Sequence[float], method: str = "pchip") -> float:
    """Bjøntegaard delta rate in percent: average bitrate change of ``test`` vs ``ref`` at equal
    quality (negative = ``test`` needs fewer bits), log-rate integrated over the metric interval
    both curves cover.

    ``method="pchip"`` (default): each curve's frontier (:func:`_frontier`) interpolated by
    piecewise cubic Hermite polynomials (scipy's ``PchipInterpolator``: monotone, no overshoot),
    as the later Bjøntegaard tools and JVET/VCEG practice do. ``"cubic"``: one cubic polynomial
    fitted per curve (VCEG-M33). On smooth PSNR curves the two agree closely; on task metrics
    that saturate with rate (top-1 0.95 -> 0.96 while the rate doubles) the single cubic
    oscillates and can give the wrong sign (tests/test_metrics.py)."""
    if method not in BD_METHODS:
        raise ValueError(f"method must be one of {BD_METHODS}, got {method!r}")
    lr1, lr2 = np.log(np.asarray(rate_ref, float)), np.log(np.asarray(rate_test, float))
    m1, m2 = np.asarray(metric_ref, float), np.asarray(metric_test, float)
    if min(len(m1), len(m2)) < 4:
        raise ValueError("BD-rate needs at least 4 rate points per curve")
    for m in (m1, m2):  # a flat curve (e.g. an untrained head) has no fit of rate on metric
        if len(np.unique(np.round(m, 9))) < 4:
            raise ValueError("BD-rate: a curve has fewer than 4 distinct metric values (flat)")
    lo, hi = max(m1.min(), m2.min()), min(m1.max(), m2.max())
    if lo >= hi:
        raise ValueError("BD-rate: the two curves do not overlap in quality")
    if method == "cubic":
        p1, p2 = np.polyfit(m1, lr1, 3), np.polyfit(m2, lr2, 3)
        i1, i2 = np.polyint(p1), np.polyint(p2)
        avg1 = (np.polyval(i1, hi) - np.polyval(i1, lo)) / (hi - lo)
        avg2 = (np.polyval(i2, hi) - np.polyval(i2, lo)) / (hi - lo)
        return float((np.exp(avg2 - avg1) - 1.0) * 100.0)
    from scipy.interpolate import PchipInterpolator

    fronts = [_frontier(lr, m) for m, lr in ((m1, lr1), (m2, lr2))]
    for fm, _ in fronts:  # a dominated end point is not covered
        lo, hi = max(lo, fm.min()), min(hi, fm.max())
    if lo >= hi:
        raise ValueError("BD-rate: the two curves' frontiers do not overlap in quality")
    (fm1, flr1), (fm2, flr2) = fronts
    avg1 = PchipInterpolator(fm1, flr1).integrate(lo, hi) / (hi - lo)
    avg2 = PchipInterpolator(fm2, flr2).integrate(lo, hi) / (hi - lo)
    return float((np.exp(avg2 - avg1) - 1.0) * 100.0)
