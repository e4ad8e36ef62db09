"""Conversion of a trained float model into the integer tables of bitstream format 3.

:func:`integerize` calibrates each layer's range on the hyper-latents of training photos, picks
per-channel weight scales that keep every accumulator below ``2^ACC_BITS`` (so the float32 GEMMs
of :mod:`mlcodec.models.exact_hyper` are exact) and requantization shifts that keep every
product below ``2^53``, and checks the result at every quality level.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from mlcodec.models.exact_hyper import (_PRODUCT_BITS, ACC_BITS, HIDDEN_MAX, LEAKY_SLOPE, MEAN_FRAC_BITS,
                                        MED_FRAC_BITS, Z_MAX, ExactTables, _phase_abs_sums, exact_exp,
                                        layer0_weights)


def _shift_for(ratios: Tensor, acc_bits: int) -> int:
    """The largest requant shift whose multipliers ``round(ratio · 2^shift)`` keep
    ``acc · multiplier`` below 2^62 for ``|acc| < 2^acc_bits``."""
    room = 2.0 ** (_PRODUCT_BITS - acc_bits) - 1
    return min(_PRODUCT_BITS - 1, int(math.floor(math.log2(room / float(ratios.max())))))


def _fit_scale(sums: Tensor, bias: Tensor, x_max: int, acc_bits: int, w_max: Tensor,
               n_taps: int) -> Tensor:
    """Per output channel, a weight scale with ``sum|round(w·s)|·x_max + |b·s| < 2^acc_bits`` (the
    worst phase's ``sum |w|`` is ``sums``; rounding adds at most ``n_taps / 2``) and
    ``|round(w·s)| < 2^31``."""
    room = 2.0**acc_bits * 0.999 - n_taps * 0.5 * x_max
    s = room / (sums * x_max + bias.abs()).clamp_min(1e-30)
    return torch.minimum(s, (2.0**31 - 2) / w_max.clamp_min(1e-30))


@torch.no_grad()
def integerize(model, calibration: Iterable[tuple[Tensor, float]]) -> ExactTables:
    """Integer tables for a trained ``GainedMeanScaleHyperprior`` (its last ``h_s`` layer 1x1 or
    3x3), calibrated on ``(z symbols, quality)`` batches: each hidden layer's largest
    ``|activation|`` maps to ``HIDDEN_MAX_SCALE`` of the hidden range."""
    acc_bits, z_max, hidden_max = ACC_BITS, Z_MAX, HIDDEN_MAX
    hs = model.h_s
    med = model.entropy_bottleneck._get_medians().detach().reshape(-1).double()
    z_med16 = torch.round(med * 2**MED_FRAC_BITS).to(torch.int64)
    amax = [0.0, 0.0]
    for z_sym, q in calibration:
        _, _, _, ihg = model.gains(torch.full((z_sym.shape[0],), float(q)))
        h1 = hs[1](hs[0]((z_sym.float() + med.float().view(1, -1, 1, 1)) * ihg))
        h2 = hs[3](hs[2](h1))
        amax = [max(amax[0], float(h1.abs().max())), max(amax[1], float(h2.abs().max()))]
    sx = [HIDDEN_MAX_SCALE * hidden_max / a for a in amax]
    # layer 0: the worst case over qualities is the largest inverse hyper gain of any level
    w0 = hs[0].weight.detach().double()
    ihg_max = model.log_inv_hyper_gain.detach().double().exp().amax(0) * 1.0001
    eff = w0.abs() * ihg_max.view(-1, 1, 1, 1) * (z_max + med.abs()).view(-1, 1, 1, 1) / z_max
    w0_scale = _fit_scale(_phase_abs_sums(eff), hs[0].bias.double(), z_max, acc_bits,
                          (w0.abs() * ihg_max.view(-1, 1, 1, 1)).amax((0, 2, 3)), 9 * (w0.shape[0] + 1))
    w1 = hs[2].weight.detach().double()
    s1 = _fit_scale(_phase_abs_sums(w1.abs()), hs[2].bias.double() * sx[0], hidden_max, acc_bits,
                    w1.abs().amax((0, 2, 3)), 9 * w1.shape[0])
    w2 = hs[4].weight.detach().double()
    s2 = _fit_scale(w2.abs().sum((1, 2, 3)), hs[4].bias.double() * sx[1], hidden_max, acc_bits,
                    w2.abs().amax((1, 2, 3)), w2[0].numel())
    d = [w0_scale, sx[0] * s1, sx[1] * s2]  # accumulator units per real unit, per channel
    w1_int = torch.round(w1 * s1.view(1, -1, 1, 1)).to(torch.int32)
    w2_int = torch.round(w2 * s2.view(-1, 1, 1, 1)).to(torch.int32)
    b = tuple(torch.round(layer.bias.detach().double() * di).to(torch.int64)
              for layer, di in zip((hs[0], hs[2], hs[4]), d))
    mult, mult_neg, shifts = [], [], []
    for i in range(2):
        ratio = sx[i] / d[i]
        shifts.append(_shift_for(ratio, acc_bits))
        mult.append(torch.round(ratio * 2.0**shifts[i]).to(torch.int64))
        mult_neg.append(torch.round(ratio * LEAKY_SLOPE * 2.0**shifts[i]).to(torch.int64))
    m = model.M
    ratio = 2.0**MEAN_FRAC_BITS / d[2][m:]
    shifts.append(_shift_for(ratio, acc_bits))
    mean_mult = torch.round(ratio * 2.0**shifts[2]).to(torch.int64)
    bounds = model.gaussian_conditional.scale_table[:-1].detach().double()
    thresholds = torch.floor(bounds.view(1, -1) * d[2][:m].view(-1, 1)).to(torch.int64)
    tables = ExactTables(acc_bits, z_max, hidden_max, z_med16, w0_scale, (w1_int, w2_int), b,
                         tuple(mult), tuple(mult_neg), torch.tensor(shifts, dtype=torch.int64),
                         thresholds, mean_mult)
    _check_tables(tables, hs[0].weight, model.log_inv_hyper_gain)
    return tables


#: hidden activations map their calibrated maximum to this fraction of the range (headroom for
#: images beyond the calibration set; values past the range are clamped)
HIDDEN_MAX_SCALE = 0.9


def _check_tables(t: ExactTables, w0: Tensor, log_inv_hyper_gain: Tensor) -> None:
    """Every accumulator bound holds: layer 0 at each trained level, layers 1 and 2 as stored."""
    for row in log_inv_hyper_gain.detach().double():
        layer0_weights(w0, torch.tensor([exact_exp(float(v)) for v in row], dtype=torch.float64), t)
    a1 = t.w[0].abs().to(torch.int64) * t.hidden_max
    a2 = t.w[1].abs().to(torch.int64).sum((1, 2, 3)) * t.hidden_max
    worst = max(int((_phase_abs_sums(a1) + t.b[1].abs()).max()), int((a2 + t.b[2].abs()).max()))
    if worst >= 2**t.acc_bits:
        raise ArithmeticError(f"exact hyper-synthesis: an accumulator could reach {worst} "
                              f">= 2^{t.acc_bits}")
