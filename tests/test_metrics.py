import numpy as np
import pytest
from PIL import Image

from mlcodec.metrics import bd_rate, bpp, ms_ssim, psnr


def test_psnr_known_value():
    a = Image.fromarray(np.full((8, 8, 3), 100, np.uint8))
    b = Image.fromarray(np.full((8, 8, 3), 110, np.uint8))
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / 100))
    assert psnr(a, a) == float("inf")


def test_ms_ssim_identical_and_noisy():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (192, 192, 3), dtype=np.uint8)
    noisy = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    assert ms_ssim(Image.fromarray(a), Image.fromarray(a)) == pytest.approx(1.0, abs=1e-6)
    assert ms_ssim(Image.fromarray(a), Image.fromarray(noisy)) < 0.98


def test_bpp():
    assert bpp(1000, Image.new("RGB", (100, 80))) == pytest.approx(1.0)


def test_bd_rate_known_examples():
    rates = [0.1, 0.2, 0.4, 0.8, 1.6]
    psnrs = [28.0, 30.5, 33.0, 35.5, 38.0]
    assert bd_rate(rates, psnrs, rates, psnrs) == pytest.approx(0.0, abs=1e-9)
    # the same quality at half the rate is -50%; at 1.25x the rate, +25%
    assert bd_rate(rates, psnrs, [r / 2 for r in rates], psnrs) == pytest.approx(-50.0)
    assert bd_rate(rates, psnrs, [r * 1.25 for r in rates], psnrs) == pytest.approx(25.0)


def test_bd_rate_methods_agree_on_smooth_curves_and_pchip_survives_saturation():
    """Smooth PSNR curves: the PCHIP and the cubic (VCEG-M33) BD-rates agree within 0.5 points.
    A saturating task curve (top-1 of a classifier on decoded scenes, measured) that is better at
    every rate: the PCHIP BD-rate is strongly negative, the single cubic oscillates to +800%."""
    rates, psnrs = [0.1, 0.2, 0.4, 0.8, 1.6], [28.0, 30.7, 33.0, 35.1, 36.9]
    worse = ([r * 1.1 for r in rates], [p - 0.2 for p in psnrs])
    assert bd_rate(rates, psnrs, *worse) == pytest.approx(bd_rate(rates, psnrs, *worse, method="cubic"), abs=0.5)
    assert 10 < bd_rate(rates, psnrs, *worse) < 25
    ref = ([0.134, 0.238, 0.400, 0.622, 0.914], [0.433, 0.723, 0.860, 0.900, 0.920])
    test = ([0.140, 0.256, 0.424, 0.654, 0.959], [0.697, 0.887, 0.953, 0.960, 0.963])
    assert bd_rate(*ref, *test) < -30
    assert bd_rate(*ref, *test, method="cubic") > 100
    # a dominated point (more bits, lower top-1) is left out of the frontier, not interpolated
    dip = (test[0], [0.697, 0.887, 0.953, 0.950, 0.963])
    assert bd_rate(*ref, *dip) == pytest.approx(bd_rate(*ref, *test), abs=3)
    with pytest.raises(ValueError, match="method"):
        bd_rate(*ref, *test, method="linear")


def test_bd_rate_needs_overlap_and_points():
    with pytest.raises(ValueError, match="overlap"):
        bd_rate([1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], [10, 11, 12, 13])
    with pytest.raises(ValueError, match="4 rate points"):
        bd_rate([1, 2, 3], [1, 2, 3], [1, 2, 3], [1, 2, 3])


def test_bd_rate_refuses_a_flat_curve_without_numpy_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's RankWarning would fail the test
        with pytest.raises(ValueError, match="flat"):
            bd_rate([1, 2, 3, 4], [0.5, 0.5, 0.5, 0.5], [1, 2, 3, 4], [1, 2, 3, 4])
