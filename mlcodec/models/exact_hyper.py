# One module of this size on purpose: the integer tables, their GEMM layout and both paths that
# run them (torch ops on any device, the compiled kernels' driver on a CPU) change together; the
# kernels themselves, the indexes and the numpy reference are modules of their own.
"""Integer hyper-synthesis: entropy parameters that every machine computes bit for bit alike.

The range coder picks each latent symbol's CDF by its predicted scale, so the decoder must derive
exactly the encoder's table indexes, or the rANS stream desynchronises. A floating-point
hyper-synthesis does not promise that: its rounding changes with the thread count, the CPU's
vector unit, the torch build, the batch and the device. Following Ballé, Johnston and Minnen,
"Integer Networks for Data Compression with Latent-Variable Models" (ICLR 2019), bitstream format
3 computes everything between the hyper-latent's symbols and the decoded latent in integers::

    z symbols (clamped) + a ones channel ─deconv0(q)─► +b ─requant, leaky─► ─deconv1─► +b
        ─requant, leaky─► ─conv2─► +b = acc ─┬─ scale channels: index = #{k : T[c, k] < acc}
                                             └─ mean channels:  mean = ((acc·M + r) >> s) / 2^10

    decoded latent = (y symbols + mean) · inv_gain(q)          (float64 ops, rounded once to float32)

- **Weights** are integers per output channel (``round(w · s_c)``), biases integers in the
  accumulator's scale, stored in the weights file (``exact.*`` tensors) and never re-derived, so
  no floating-point reduction decides them. Layer 0 folds the quality's inverse hyper gain into
  its weights (:func:`layer0_weights`: ``round(w · inv_hgain(q) · s_c)``, elementwise IEEE ops
  only), and the z medians enter as the weights of a constant channel of ones, summed in exact
  integers; so the hyper-latent's symbols go in unquantized.
- **Convolutions** run as GEMMs (``unfold`` + ``mm``) on integer-valued float32 tensors. Each
  output's ``sum |w·x| + |b|`` is below 2^24 by construction (weight scales are chosen against
  the clamped input range, per transposed-convolution phase, and checked per quality), so every
  partial sum is an exact float32 integer and the result does not depend on the summation order,
  blocking, threads or device. Algorithms that are not exact on integers (Winograd, FFT, TF32,
  bf16) are kept out: no cuDNN or oneDNN convolution is called, and matmul precision is pinned to
  ``highest`` while it runs. A transposed convolution (k5, s2) is four GEMMs, one per output
  phase, over the taps that phase uses.
- **Requantization and the LeakyReLU** are integer steps: ``clamp((acc · M + 2^(S-1)) >> S)`` per
  output channel, the 0.01 slope folded into a second multiplier for negative accumulators. In
  torch ops (a GPU's path) they run in float64, where every intermediate is an integer below 2^53
  and so exact; on a CPU, compiled kernels (:mod:`mlcodec.models.exact_kernels`) run the same
  float64 steps in one pass each, with the phases' operands, interleaving and the scale indexes;
  the reference runs them in numpy int64.
- **Quality-dependent constants** (the inverse hyper gain and the latent's inverse gain) come from
  the model's log-gain tables through :func:`exact_exp`, which uses only IEEE double additions,
  multiplications and divisions in Python floats: the same on every platform.
- **Scale-table indexes** are integer comparisons against per-channel thresholds
  ``T[c, k] = floor(bound_k · D_c)`` (``D_c`` the channel's accumulator scale), the same rule as
  CompressAI's ``build_indexes`` (count of bounds below the scale).

This module is the runtime network. Its specification, a numpy int64 implementation written from
the layers' definitions, is :func:`mlcodec.models.exact_reference.reference_params`: the fast path
must equal it bit for bit (tested, also on golden streams under other thread counts and
instruction sets). :func:`mlcodec.models.exact_calibration.integerize` converts a trained float
model, calibrating each layer's range on the hyper-latents of training photos; the table indexes
by integer comparisons are :mod:`mlcodec.models.exact_indexes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mlcodec.models import exact_kernels
from mlcodec.models.exact_indexes import _ScaleIndexer

#: fixed-point bits of the z medians (folded into a constant input channel of the first layer)
MED_FRAC_BITS = 16
#: the decoded means are integers in units of 2^-MEAN_FRAC_BITS
MEAN_FRAC_BITS = 10
#: every ``acc · multiplier + rounding`` of a requantization stays below 2^53, so the fast path
#: may run it in float64 (exact) while the reference runs it in int64
_PRODUCT_BITS = 52
LEAKY_SLOPE = 0.01
PREFIX = "exact."
#: every accumulator's sum |w·x| + |b| stays below 2^ACC_BITS, so float32 GEMMs are exact
ACC_BITS = 24
#: the clamp of the hyper-latent symbols and of the hidden activations. With 24-bit accumulators
#: these leave ~7-bit weights in layer 1; the rate this costs is measured by
#: ``benchmarks/studies/exact_cost.py`` (docs/experiments/exact-decoding.md), where a probe over
#: (Z_MAX, HIDDEN_MAX) chose them.
Z_MAX, HIDDEN_MAX = 255, 2047

_LN2_HI = 6.93147180369123816490e-01  # fdlibm's split of ln 2 (Cody-Waite reduction)
_LN2_LO = 1.90821492927058770002e-10


def exact_exp(x: float) -> float:
    """``e**x`` from IEEE double +, -, *, / only (Python floats): the same bits on every platform,
    unlike libm's or a vector unit's ``exp``. Accurate to a few ulp over the gains' range."""
    k = int(round(x / 0.6931471805599453))
    r = (x - k * _LN2_HI) - k * _LN2_LO
    term, total = 1.0, 1.0
    for i in range(1, 27):
        term = term * r / i
        total = total + term
    return math.ldexp(total, k)


def _interp_log(table: Tensor, quality: float) -> list[float]:
    """A gain table's log values at ``quality``, interpolated as the float model does, in Python
    floats (deterministic)."""
    rows = table.detach().cpu().double().tolist()
    levels = len(rows)
    t = min(max(float(quality), 0.0), 1.0) * (levels - 1)
    lo = min(int(math.floor(t)), levels - 2)
    frac = t - lo
    return [a * (1.0 - frac) + b * frac for a, b in zip(rows[lo], rows[lo + 1])]


@dataclass(frozen=True)
class QualityConstants:
    """The inverse hyper gain ``(N,)`` and the latent's inverse gain ``(M,)`` of one stored
    quality, float64 from :func:`exact_exp`."""

    inv_hyper_gain: Tensor
    inv_gain: Tensor


def quality_constants(log_inv_hyper_gain: Tensor, log_inv_gain: Tensor, quality: float) -> QualityConstants:
    return QualityConstants(
        torch.tensor([exact_exp(v) for v in _interp_log(log_inv_hyper_gain, quality)], dtype=torch.float64),
        torch.tensor([exact_exp(v) for v in _interp_log(log_inv_gain, quality)], dtype=torch.float64),
    )


# -- the integer network's tensors ----------------------------------------------------------------

@dataclass(frozen=True)
class ExactTables:
    """The integer hyper-synthesis as stored in a weights file (``exact.*`` tensors).

    Layer 0 (a transposed convolution) takes the hyper-latent symbols themselves, clamped to
    ``±z_max``, plus a constant channel of ones that carries the z medians: its integer weights
    ``round(w · inv_hgain(q) · w0_scale)`` are built per quality from the float weights
    (:func:`layer0_weights`). Layers 1 (transposed) and 2 have stored integer weights.
    """

    acc_bits: int  # every accumulator's sum |w·x| + |b| stays below 2^acc_bits
    z_max: int
    hidden_max: int
    z_med16: Tensor  # (N,) int64, round(median · 2^16)
    w0_scale: Tensor  # (C0,) float64, layer 0's weight scale per output channel
    w: tuple[Tensor, Tensor]  # int32: layer 1 (Cin, Cout, 5, 5), layer 2 (Cout, Cin, k, k)
    b: tuple[Tensor, Tensor, Tensor]  # int64 per output channel, in the accumulators' scale
    mult: tuple[Tensor, Tensor]  # int64 requant multipliers of layers 0, 1 (acc >= 0)
    mult_neg: tuple[Tensor, Tensor]  # the same times the LeakyReLU slope (acc < 0)
    shifts: Tensor  # int64 (3,): requant shifts of layers 0, 1 and of the means
    thresholds: Tensor  # (M, K) int64 scale-index thresholds of the scale channels
    mean_mult: Tensor  # (M,) int64, the mean channels to units of 2^-MEAN_FRAC_BITS

    def state_dict(self) -> dict[str, Tensor]:
        out = {"acc_bits": torch.tensor(self.acc_bits), "z_max": torch.tensor(self.z_max),
               "hidden_max": torch.tensor(self.hidden_max), "z_med16": self.z_med16,
               "w0_scale": self.w0_scale, "w1": self.w[0], "w2": self.w[1], "b0": self.b[0],
               "b1": self.b[1], "b2": self.b[2], "mult0": self.mult[0], "mult1": self.mult[1],
               "mult_neg0": self.mult_neg[0], "mult_neg1": self.mult_neg[1],
               "shifts": self.shifts, "thresholds": self.thresholds, "mean_mult": self.mean_mult}
        return {PREFIX + k: v.contiguous() for k, v in out.items()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> ExactTables:
        s = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
        return cls(int(s["acc_bits"]), int(s["z_max"]), int(s["hidden_max"]), s["z_med16"],
                   s["w0_scale"], (s["w1"], s["w2"]), (s["b0"], s["b1"], s["b2"]),
                   (s["mult0"], s["mult1"]), (s["mult_neg0"], s["mult_neg1"]), s["shifts"],
                   s["thresholds"], s["mean_mult"])


def _phase_abs_sums(w_abs: Tensor) -> Tensor:
    """Per output channel of a (Cin, Cout, 5, 5) stride-2 transposed convolution, the largest sum
    over the taps that one output phase uses (each output sums one phase's taps only)."""
    sums = [w_abs[:, :, ph::2, pw::2].sum((0, 2, 3)) for ph in range(2) for pw in range(2)]
    return torch.stack(sums).amax(0)


def layer0_weights(w0: Tensor, inv_hyper_gain: Tensor, tables: ExactTables) -> Tensor:
    """Layer 0's integer weights at one quality, int64 ``(N + 1, C0, 5, 5)``: the float weights
    times the inverse hyper gain and the stored scale, rounded (elementwise IEEE ops only), and a
    last input row for the constant channel, ``sum_c w[c] · median_c`` in exact integers.
    Raises ``ArithmeticError`` if an accumulator could reach 2^acc_bits."""
    w = torch.round(w0.detach().cpu().double() * inv_hyper_gain.view(-1, 1, 1, 1)
                    * tables.w0_scale.view(1, -1, 1, 1)).to(torch.int64)
    med = (w * tables.z_med16.view(-1, 1, 1, 1)).sum(0, keepdim=True)
    w = torch.cat([w, (med + (1 << (MED_FRAC_BITS - 1))) >> MED_FRAC_BITS])
    a = w.abs()
    a[:-1] *= tables.z_max
    worst = _phase_abs_sums(a) + tables.b[0].abs()
    if int(worst.max()) >= 2**tables.acc_bits:
        raise ArithmeticError(f"exact hyper-synthesis: layer 0 could reach {int(worst.max())} "
                              f">= 2^{tables.acc_bits} at this quality; the tables are not valid")
    return w


# -- the fast path: GEMMs on integer-valued floats ------------------------------------------------

#: the taps of the stride-2 transposed convolution's output phases: output ``2m + p`` takes input
#: ``m + d`` (d in -1, 0, 1) through kernel tap ``2 + p - 2d``, where that lies in 0..4
_PHASE_TAPS = {p: [d for d in (-1, 0, 1) if 0 <= 2 + p - 2 * d < 5] for p in (0, 1)}


#: the 3x3 taps (dh, dw) ordered so that every output phase's taps are one contiguous run: the
#: GEMM operand of a phase is then a slice of one tap-major 3x3 unfold, not a gathered copy
_TAP_ORDER = [(-1, 0), (-1, 1), (0, 0), (0, 1), (1, 0), (1, 1), (0, -1), (1, -1), (-1, -1)]


def _phase_span(ph: int, pw: int) -> tuple[int, int]:
    """The run of :data:`_TAP_ORDER` holding exactly the taps of output phase ``(ph, pw)``."""
    at = [i for i, (dh, dw) in enumerate(_TAP_ORDER) if dh in _PHASE_TAPS[ph] and dw in _PHASE_TAPS[pw]]
    assert at == list(range(at[0], at[-1] + 1)), (ph, pw)
    return at[0], at[-1] + 1


class _Deconv:
    """A (Cin, Cout, 5, 5) stride-2 transposed convolution (padding 2, output padding 1) as four
    GEMMs, one per output phase, each over the taps that phase uses (9, 6, 6 and 4 of the 3x3
    window): the sums of exactly the definition's products. The operand is one 3x3 unfold of the
    input, tap-major in :data:`_TAP_ORDER`, and each phase reads a slice of its rows."""

    def __init__(self, w: Tensor, device: torch.device, dtype: torch.dtype) -> None:
        cin, self.cout = w.shape[:2]
        self.phases = []
        for ph in (0, 1):
            for pw in (0, 1):
                t0, t1 = _phase_span(ph, pw)
                wp = torch.stack([w[:, :, 2 + ph - 2 * dh, 2 + pw - 2 * dw] for dh, dw in _TAP_ORDER[t0:t1]])
                wp = wp.permute(2, 0, 1).reshape(self.cout, -1)  # (Cout, taps·Cin): columns tap-major
                self.phases.append((ph, pw, slice(t0 * cin, t1 * cin), wp.to(device, dtype)))
        self._unfold_rows = torch.tensor([(dh + 1) * 3 + (dw + 1) for dh, dw in _TAP_ORDER], device=device)
        self._dh = np.array([dh for dh, _ in _TAP_ORDER], np.int64)
        self._dw = np.array([dw for _, dw in _TAP_ORDER], np.int64)

    def __call__(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        cols = F.unfold(x, 3, padding=1).view(b, c, 9, h * w).index_select(2, self._unfold_rows)
        cols = cols.permute(2, 1, 0, 3).reshape(9 * c, b * h * w)  # tap-major rows
        out = x.new_empty(b, self.cout, 2 * h, 2 * w)
        for ph, pw, rows, wp in self.phases:
            acc = torch.mm(wp, cols[rows])  # exact: every |partial sum| < 2^24
            out[:, :, ph::2, pw::2] = acc.view(-1, b, h, w).transpose(0, 1)
        return out

    def accumulate_cpu(self, x: np.ndarray) -> np.ndarray:
        """The four phases' accumulators ``(4, Cout, B, h, w)`` for float32 ``x`` ``(Cin, B, h, w)``
        (channels first) on a CPU, the unfold built by :func:`exact_kernels.tap_columns`."""
        c, b, h, w = x.shape
        cols = torch.from_numpy(exact_kernels.tap_columns(x, self._dh, self._dw,
                                                          np.empty((9 * c, b * h * w), np.float32)))
        acc = torch.empty(4, self.cout, b * h * w)
        for p, (_, _, rows, wp) in enumerate(self.phases):
            torch.mm(wp, cols[rows], out=acc[p])  # exact: every |partial sum| < 2^24
        return acc.view(4, self.cout, b, h, w).numpy()


def _requant(acc: Tensor, mult: Tensor, mult_neg: Tensor, shift: int, limit: int) -> Tensor:
    """``clamp((acc · m + 2^(shift-1)) >> shift)`` on integer-valued float64: every intermediate is
    an integer below 2^53 (``_PRODUCT_BITS``), and scaling by 2^-shift then flooring is exact."""
    m = torch.where(acc >= 0, mult, mult_neg)
    return acc.mul_(m).add_(2.0 ** (shift - 1)).mul_(2.0**-shift).floor_().clamp_(-limit, limit)


#: hyper-latent rows per chunk of the integer hyper-synthesis (8 = 512 image rows): a working set
#: that does not grow with the image, for a little more time in this step
#: (docs/experiments/large-images.md)
CHUNK_ROWS = 8


def _reach(k: int) -> int:
    """Hyper-latent rows beyond a chunk that its latent rows depend on: a k x k convolution reads
    k // 2 rows, each 5x5 transposed convolution of stride 2 (padding 2, output padding 1) a
    ceiling of half of that plus one (as ``mlcodec.tiling.halo_plan`` works it out). 2 for k <= 5."""
    need = k // 2
    for _ in range(2):
        need = max((need + 2) // 2, 1 + (need + 1) // 2)
    return need


class ExactHyperSynthesis:
    """The fast integer hyper-synthesis of one model: ``(z symbols, quality) -> (indexes, means)``.

    Holds the stored tables and their GEMM-shaped float32 copies; layer 0's weights and the gains
    are built once per quality and cached.
    """

    def __init__(self, tables: ExactTables, w0: Tensor, log_inv_hyper_gain: Tensor,
                 log_inv_gain: Tensor, device: torch.device | str = "cpu") -> None:
        if tables.acc_bits > 24:
            raise ValueError(f"integer tables with {tables.acc_bits}-bit accumulators need float64 "
                             f"GEMMs, which this mlcodec does not run; upgrade mlcodec")
        self.tables = tables
        self.device = torch.device(device)
        self.dtype = torch.float32
        self._w0 = w0.detach().cpu().clone()
        self._log_ihg = log_inv_hyper_gain.detach().cpu().clone()
        self._log_ig = log_inv_gain.detach().cpu().clone()
        self._per_quality: dict[float, tuple[QualityConstants, _Deconv]] = {}
        self._k = tables.w[1].shape[-1]
        dev = self.device
        self._deconv1 = _Deconv(tables.w[0], dev, self.dtype)
        self._w2 = tables.w[1].reshape(tables.w[1].shape[0], -1).to(dev, self.dtype)
        col = lambda v, dtype=torch.float64: v.to(dev, dtype).view(1, -1, 1, 1)  # noqa: E731
        self._b = [col(b, torch.float32) for b in tables.b]  # |acc + b| < 2^24: exact in float32
        self._mult = [col(m) for m in tables.mult]
        self._mult_neg = [col(m) for m in tables.mult_neg]
        self._shifts = [int(s) for s in tables.shifts]
        self._mean_mult = col(tables.mean_mult)
        self._indexer = _ScaleIndexer(tables.thresholds.to(dev))
        # the CPU kernels' int64 constants (exact_kernels), where the scale table has buckets
        self._cpu = None
        if self._indexer._buckets is not None:
            i64 = lambda v: v.cpu().numpy().astype(np.int64)  # noqa: E731
            self._cpu = ([i64(b) for b in tables.b[:2]], [i64(m) for m in tables.mult],
                         [i64(m) for m in tables.mult_neg], i64(tables.mean_mult))

    def for_quality(self, quality: float) -> tuple[QualityConstants, _Deconv]:
        """The gains and layer 0's GEMM weight of one stored quality (cached)."""
        q = float(quality)
        if q not in self._per_quality:
            consts = quality_constants(self._log_ihg, self._log_ig, q)
            w0 = layer0_weights(self._w0, consts.inv_hyper_gain, self.tables)
            self._per_quality[q] = (consts, _Deconv(w0, self.device, self.dtype))
        return self._per_quality[q]

    def _gemm(self, w: Tensor, x: Tensor, k: int) -> Tensor:
        """Integer-valued ``x`` through a stride-1 k x k correlation as one GEMM for the batch:
        ``(Cout, B·H·W)`` float32, exact (every |partial sum| < 2^24)."""
        b, c, h, wd = x.shape
        cols = x.reshape(b, c, h * wd) if k == 1 else F.unfold(x, k, padding=k // 2)
        return torch.mm(w, cols.permute(1, 0, 2).reshape(cols.shape[1], b * h * wd))

    @torch.no_grad()
    def __call__(self, z_sym: Tensor, quality: float, rows: int = CHUNK_ROWS) -> tuple[Tensor, Tensor]:
        """Scale-table indexes (int32) and means (int32, units of 2^-MEAN_FRAC_BITS) of the latent,
        ``(B, M, 4h, 4w)`` each, for integer hyper-latent symbols ``(B, N, h, w)``.

        A hyper-latent taller than ``rows`` is run in chunks of ``rows`` rows, each with a halo of
        the layers' reach (:func:`_reach`, 2 rows): integer arithmetic, so exactly the whole
        pass's values (tested), in a bounded working set (the last layer's unfold alone grows with
        the image's area)."""
        h, halo = z_sym.shape[-2], _reach(self._k)
        if h <= rows + halo:
            return self._params(z_sym, quality)
        out: tuple[Tensor, Tensor] | None = None
        for r0 in range(0, h, rows):
            a0, r1 = max(r0 - halo, 0), min(r0 + rows, h)
            idx, means = self._params(z_sym[..., a0:min(r1 + halo, h), :], quality)
            keep = slice(4 * (r0 - a0), 4 * (r1 - a0))
            if out is None:
                out = (idx.new_empty(*idx.shape[:2], 4 * h, idx.shape[-1]),
                       means.new_empty(*means.shape[:2], 4 * h, means.shape[-1]))
            assert out is not None
            out[0][..., 4 * r0:4 * r1, :] = idx[..., keep, :]
            out[1][..., 4 * r0:4 * r1, :] = means[..., keep, :]
        assert out is not None
        return out

    def _params(self, z_sym: Tensor, quality: float) -> tuple[Tensor, Tensor]:
        """:meth:`__call__` in one pass."""
        if self._cpu is not None:
            return self._params_cpu(z_sym, quality)
        t = self.tables
        _, deconv0 = self.for_quality(quality)
        z = z_sym.to(self.device, self.dtype).clamp(-t.z_max, t.z_max)
        x = torch.cat([z, torch.ones_like(z[:, :1])], 1)
        prec = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")
        try:
            for i, deconv in enumerate((deconv0, self._deconv1)):
                acc = deconv(x).add_(self._b[i]).double()
                x = _requant(acc, self._mult[i], self._mult_neg[i], self._shifts[i], t.hidden_max)
                x = x.to(self.dtype)
            acc = self._gemm(self._w2, x, self._k).add_(self._b[2].view(-1, 1))
        finally:
            torch.set_float32_matmul_precision(prec)
        b, _, h, wd = x.shape
        m = acc.shape[0] // 2
        s = self._shifts[2]
        means = acc[m:].double().mul_(self._mean_mult.view(-1, 1)).add_(2.0 ** (s - 1))
        means = means.mul_(2.0**-s).floor_().to(torch.int32)
        to_bchw = lambda v: v.view(m, b, h, wd).permute(1, 0, 2, 3).contiguous()  # noqa: E731
        return to_bchw(self._indexer(acc[:m])), to_bchw(means)

    def _params_cpu(self, z_sym: Tensor, quality: float) -> tuple[Tensor, Tensor]:
        """:meth:`_params` on a CPU: the same GEMMs, with the steps between them in the integer
        kernels of :mod:`exact_kernels`, channels first throughout (one pass each; tested equal)."""
        t = self.tables
        bias, mult, mult_neg, mean_mult = self._cpu
        _, deconv0 = self.for_quality(quality)
        b, n, h, w = z_sym.shape
        x = np.ones((n + 1, b, h, w), np.float32)  # channels first; the last the constant ones
        x[:n] = z_sym.to(self.dtype).clamp(-t.z_max, t.z_max).transpose(0, 1).numpy()
        prec = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")
        try:
            for i, deconv in enumerate((deconv0, self._deconv1)):
                acc = deconv.accumulate_cpu(x)
                x = np.empty((deconv.cout, b, 2 * x.shape[2], 2 * x.shape[3]), np.float32)
                exact_kernels.requant_phases(acc, bias[i], mult[i], mult_neg[i], self._shifts[i], t.hidden_max, x)
            x2 = torch.from_numpy(x)  # (C, B, H, W): a 1x1 layer's operand as it is
            if self._k == 1:
                acc = torch.mm(self._w2, x2.reshape(x2.shape[0], -1))
            else:
                acc = self._gemm(self._w2, x2.transpose(0, 1).contiguous(), self._k)
        finally:
            torch.set_float32_matmul_precision(prec)
        acc.add_(self._b[2].view(-1, 1))
        m = acc.shape[0] // 2
        idx = np.empty((b, m, 4 * h, 4 * w), np.int32)
        means = np.empty_like(idx)
        exact_kernels.indexes_and_means(acc.numpy(), self._indexer._buckets, mean_mult, self._shifts[2], idx, means)
        return torch.from_numpy(idx), torch.from_numpy(means)

    def dequantize(self, y_sym: Tensor, means: Tensor, quality: float) -> Tensor:
        """The decoded latent ``(y symbols + mean) · inv_gain(q)``: float64 ops, then float32
        (each op is correctly rounded IEEE arithmetic, so every device agrees; on a CPU the same
        ops in one compiled pass, :func:`exact_kernels.dequantize`)."""
        inv_gain = self.for_quality(quality)[0].inv_gain
        if y_sym.device.type == "cpu" and means.device.type == "cpu":
            out = np.empty(tuple(y_sym.shape), np.float32)
            return torch.from_numpy(exact_kernels.dequantize(
                np.ascontiguousarray(y_sym.numpy(), np.int32), np.ascontiguousarray(means.numpy(), np.int32),
                inv_gain.numpy(), 2.0**-MEAN_FRAC_BITS, out))
        ig = inv_gain.to(y_sym.device).view(1, -1, 1, 1)
        # in place, the same operations in the same order: one float64 temporary fewer at a time
        # (a large image's latent is tens of MB per float64 copy)
        y = y_sym.to(torch.float64)
        y += means.to(y_sym.device, torch.float64).mul_(2.0**-MEAN_FRAC_BITS)
        return y.mul_(ig).to(torch.float32)
