"""Image quality and rate-distortion metrics: PSNR, MS-SSIM, bits per pixel, BD-rate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


def _as_float(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"), dtype=np.float64)


def psnr(a: Image.Image, b: Image.Image, rows: int = 256) -> float:
    """PSNR in dB over RGB uint8 pixels (``inf`` for identical images), summed exactly in
    integers ``rows`` rows at a time, so its memory does not grow with the image."""
    if a.size != b.size:
        raise ValueError(f"images differ in size: {a.size} vs {b.size}")
    w, h = a.size
    total = 0
    for top in range(0, h, rows):
        box = (0, top, w, min(h, top + rows))
        d = (np.asarray(a.crop(box).convert("RGB"), dtype=np.int32)
             - np.asarray(b.crop(box).convert("RGB"), dtype=np.int32))
        total += int(np.einsum("ijk,ijk->", d, d, dtype=np.int64))
    mse = total / (w * h * 3)
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


@dataclass(frozen=True)
class BDRate:
    """A BD-rate with the span it was taken over: ``value`` in percent (negative: ``test`` needs
    fewer bits), the metric interval ``metric_range`` and each curve's bits-per-pixel at its ends
    (``rate_ref``, ``rate_test``: (at the low end, at the high end))."""

    value: float
    metric_range: tuple[float, float]
    rate_ref: tuple[float, float]
    rate_test: tuple[float, float]


def bd_rate(rate_ref: Sequence[float], metric_ref: Sequence[float],
            rate_test: Sequence[float], metric_test: Sequence[float], method: str = "pchip",
            metric_range: tuple[float, float] | None = None) -> float:
    """Bjøntegaard delta rate in percent: average bitrate change of ``test`` vs ``ref`` at equal
    quality (negative = ``test`` needs fewer bits), log-rate integrated over the metric interval
    both curves cover (or over ``metric_range``, which both must cover: see :func:`bd_rate_span`).

    ``method="pchip"`` (default): each curve's frontier (:func:`_frontier`) interpolated by
    piecewise cubic Hermite polynomials (scipy's ``PchipInterpolator``: monotone, no overshoot),
    as the later Bjøntegaard tools and JVET/VCEG practice do. ``"cubic"``: one cubic polynomial
    fitted per curve (VCEG-M33). On smooth PSNR curves the two agree closely; on task metrics
    that saturate with rate (top-1 0.95 -> 0.96 while the rate doubles) the single cubic
    oscillates and can give the wrong sign (tests/test_metrics.py)."""
    return bd_rate_span(rate_ref, metric_ref, rate_test, metric_test, method, metric_range).value


def bd_rate_span(rate_ref: Sequence[float], metric_ref: Sequence[float],
                 rate_test: Sequence[float], metric_test: Sequence[float], method: str = "pchip",
                 metric_range: tuple[float, float] | None = None) -> BDRate:
    """:func:`bd_rate` with the interval it integrated over and the rates at its ends.

    A fixed ``metric_range`` makes BD-rates comparable across resamples of the same images
    (:func:`bootstrap_bd_rate`); a curve that does not cover it raises ``ValueError``."""
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
        if metric_range is not None:
            raise ValueError("a fixed metric_range needs method='pchip'")
        p1, p2 = np.polyfit(m1, lr1, 3), np.polyfit(m2, lr2, 3)
        i1, i2 = np.polyint(p1), np.polyint(p2)
        avg1 = (np.polyval(i1, hi) - np.polyval(i1, lo)) / (hi - lo)
        avg2 = (np.polyval(i2, hi) - np.polyval(i2, lo)) / (hi - lo)
        ends = np.exp([np.polyval(p1, [lo, hi]), np.polyval(p2, [lo, hi])])
        return BDRate(float((np.exp(avg2 - avg1) - 1.0) * 100.0), (float(lo), float(hi)),
                      (float(ends[0][0]), float(ends[0][1])), (float(ends[1][0]), float(ends[1][1])))
    from scipy.interpolate import PchipInterpolator

    fronts = [_frontier(lr, m) for m, lr in ((m1, lr1), (m2, lr2))]
    for fm, _ in fronts:  # a dominated end point is not covered
        lo, hi = max(lo, fm.min()), min(hi, fm.max())
    if metric_range is not None:
        if not (lo <= metric_range[0] < metric_range[1] <= hi):
            raise ValueError(f"BD-rate: the curves cover {lo:.4g}..{hi:.4g}, not the fixed range "
                             f"{metric_range[0]:.4g}..{metric_range[1]:.4g}")
        lo, hi = metric_range
    if lo >= hi:
        raise ValueError("BD-rate: the two curves' frontiers do not overlap in quality")
    (fm1, flr1), (fm2, flr2) = fronts
    f1, f2 = PchipInterpolator(fm1, flr1), PchipInterpolator(fm2, flr2)
    avg1 = f1.integrate(lo, hi) / (hi - lo)
    avg2 = f2.integrate(lo, hi) / (hi - lo)
    r1, r2 = np.exp(f1([lo, hi])), np.exp(f2([lo, hi]))
    return BDRate(float((np.exp(avg2 - avg1) - 1.0) * 100.0), (float(lo), float(hi)),
                  (float(r1[0]), float(r1[1])), (float(r2[0]), float(r2[1])))


@dataclass(frozen=True)
class BootstrapBD:
    """A BD-rate on all images with a percentile bootstrap interval over images.

    ``ci``: the (2.5%, 97.5%) percentiles of the resampled BD-rates (``level`` 0.95);
    ``no_overlap``: resamples whose curves did not cover ``span.metric_range`` (left out of the
    interval, and reported because many of them mean the range was too wide)."""

    span: BDRate
    ci: tuple[float, float]
    resamples: int
    no_overlap: int
    level: float = 0.95


def bootstrap_bd_rate(rate_ref: np.ndarray, metric_ref: np.ndarray, rate_test: np.ndarray,
                      metric_test: np.ndarray, resamples: int = 1000, seed: int = 0,
                      level: float = 0.95) -> BootstrapBD:
    """BD-rate of per-image measurements, with a paired bootstrap over images.

    Each argument is ``(points, images)``: one row per quality, one column per image, the same
    images in the same columns for both codecs. A curve is the mean over images at each point.
    Each resample draws images with replacement, the same draw for both codecs (paired), and
    takes the PCHIP BD-rate over one fixed metric range, so resamples differ only in images:
    the range both curves cover in at least ``(1 + level) / 2`` of the resamples (their extreme
    points' percentiles), clipped to what the full-sample curves cover."""
    arrays = [np.asarray(a, float) for a in (rate_ref, metric_ref, rate_test, metric_test)]
    n = arrays[0].shape[1]
    if any(a.ndim != 2 or a.shape[1] != n for a in arrays):
        raise ValueError("bootstrap_bd_rate needs (points, images) arrays over the same images")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))
    means = [a[:, draws].mean(axis=2) for a in arrays]  # (points, resamples)
    tail = (1.0 - level) / 2.0 * 100.0
    lo = max(np.percentile(means[1].min(axis=0), 100 - tail), np.percentile(means[3].min(axis=0), 100 - tail))
    hi = min(np.percentile(means[1].max(axis=0), tail), np.percentile(means[3].max(axis=0), tail))
    curves = [a.mean(axis=1) for a in arrays]  # over all images
    full = bd_rate_span(*curves)
    lo, hi = max(lo, full.metric_range[0]), min(hi, full.metric_range[1])
    if lo >= hi:
        raise ValueError("bootstrap BD-rate: no metric range is covered by both curves in most "
                         "resamples (more images, or qualities that reach further)")
    span = bd_rate_span(*curves, metric_range=(float(lo), float(hi)))
    values, missed = [], 0
    for k in range(resamples):
        try:
            values.append(bd_rate(*(m[:, k] for m in means), metric_range=(lo, hi)))
        except ValueError:
            missed += 1
    if not values:
        raise ValueError("bootstrap BD-rate: no resample covered the metric range")
    ci = np.percentile(values, [tail, 100 - tail])
    return BootstrapBD(span, (float(ci[0]), float(ci[1])), resamples, missed, level)
