"""CPU kernels of the integer hyper-synthesis' steps between its GEMMs, compiled by numba.

:class:`mlcodec.models.exact_hyper.ExactHyperSynthesis` spends its GEMMs' time on the
multiply-accumulates and, in torch ops, as much again on what lies between them: the 3x3
``unfold`` and the row gathers of each transposed-convolution phase, the float64
requantization (seven passes over the activations), the phases' interleaving, the scale-index
search and the permutes to ``(B, C, H, W)``. These kernels do each of those in one pass over
integers, with the same definitions (``exact_reference`` is the specification; the fast path's
values are tested equal to it). Products and shifts run in float64, as in the torch path: every
intermediate is an integer below 2^53 (``exact_hyper._PRODUCT_BITS``), so they are exact, and
they vectorise where int64 multiplications do not (8x faster here).

* :func:`tap_columns`: the GEMM operand of a stride-2 transposed convolution's phases, a 3x3
  unfold ``(taps · Cin, B · h · w)`` in the tap order that makes each phase's rows one slice.
* :func:`requant_phases`: ``clamp((acc · m + 2^(s-1)) >> s)`` with the LeakyReLU's second
  multiplier, writing each phase's outputs to their interleaved positions.
* :func:`indexes_and_means`: the scale channels' table indexes (count of thresholds below the
  accumulator, by the bucket table of :class:`~mlcodec.models.exact_indexes._BucketIndexer`) and
  the mean channels' fixed-point means, ``(B, M, H, W)``.
* :func:`dequantize`: the decoded latent from the symbols and means, in the float64 ops of the
  torch path, in one pass.

Numba is imported on first use, as for :mod:`mlcodec.rans`, and the machine code is cached.
"""

from __future__ import annotations

import functools

import numpy as np

from mlcodec.models.exact_indexes import _BucketIndexer


def _tap_columns(x: np.ndarray, dhs: np.ndarray, dws: np.ndarray, out: np.ndarray) -> None:
    c, b, h, w = x.shape
    for t in range(len(dhs)):
        dh, dw = dhs[t], dws[t]
        j0, j1 = max(0, -dw), min(w, w - dw)  # the columns whose source lies inside x
        for ci in range(c):
            row = t * c + ci
            for bi in range(b):
                for i in range(h):
                    col = (bi * h + i) * w
                    si = i + dh
                    if si < 0 or si >= h:
                        for j in range(w):
                            out[row, col + j] = 0.0
                        continue
                    for j in range(j0):
                        out[row, col + j] = 0.0
                    for j in range(j0, j1):
                        out[row, col + j] = x[ci, bi, si, j + dw]
                    for j in range(j1, w):
                        out[row, col + j] = 0.0


def _requant_phases(acc: np.ndarray, bias: np.ndarray, mult: np.ndarray, mult_neg: np.ndarray,
                    shift: int, limit: int, out: np.ndarray) -> None:
    _, c, b, h, w = acc.shape
    half, scale, lim = float(2 ** (shift - 1)), 2.0**-shift, float(limit)
    for p in range(4):
        ph, pw = p >> 1, p & 1
        for ci in range(c):
            bc, m, mn = float(bias[ci]), float(mult[ci]), float(mult_neg[ci])
            for bi in range(b):
                for i in range(h):
                    for j in range(w):
                        a = float(acc[p, ci, bi, i, j]) + bc
                        v = np.floor((a * (m if a >= 0 else mn) + half) * scale)
                        out[ci, bi, 2 * i + ph, 2 * j + pw] = min(max(v, -lim), lim)


def _indexes_and_means(acc: np.ndarray, bits: np.ndarray, base: np.ndarray, value: np.ndarray,
                       inc: np.ndarray, shift_bucket: int, one: int, mean_mult: np.ndarray, shift: int,
                       idx: np.ndarray, means: np.ndarray) -> None:
    b, m, h, w = idx.shape
    last = base.shape[1] - 1
    half, scale = float(2 ** (shift - 1)), 2.0**-shift
    for ci in range(m):
        mm = float(mean_mult[ci])
        bs, vs, ins = base[ci], value[ci], inc[ci]
        for bi in range(b):
            for i in range(h):
                e = (bi * h + i) * w
                for j in range(w):
                    k = min(max((bits[ci, e + j] >> shift_bucket) - one, 0), last)
                    idx[bi, ci, i, j] = bs[k] + (ins[k] if vs[k] < acc[ci, e + j] else 0)
                    means[bi, ci, i, j] = np.int32(np.floor((float(acc[m + ci, e + j]) * mm + half) * scale))


def _dequantize(y_sym: np.ndarray, means: np.ndarray, inv_gain: np.ndarray, frac: float, out: np.ndarray) -> None:
    b, m, h, w = y_sym.shape
    for bi in range(b):
        for ci in range(m):
            g = inv_gain[ci]
            for i in range(h):
                for j in range(w):  # float64: the mean is exact, then one rounding per op, as in torch
                    out[bi, ci, i, j] = np.float32((np.float64(y_sym[bi, ci, i, j]) + np.float64(means[bi, ci, i, j]) * frac) * g)


@functools.cache
def _compiled(name: str):  # type: ignore[no-untyped-def]
    from numba import njit

    fn = {"tap_columns": _tap_columns, "requant_phases": _requant_phases,
          "indexes_and_means": _indexes_and_means, "dequantize": _dequantize}[name]
    try:
        return njit(cache=True, nogil=True, boundscheck=False)(fn)
    except RuntimeError:  # no writable cache location (read-only install and home)
        return njit(nogil=True, boundscheck=False)(fn)


def load() -> None:
    """Compile the kernels now, or load them from numba's cache, for the argument types the
    hyper-synthesis passes (by calls on empty arrays), instead of on the first decode. The latent
    loader calls it before DataLoader workers fork, so they inherit them."""
    f32, i64 = np.empty((0, 0), np.float32), np.empty(0, np.int64)
    tap_columns(np.empty((0, 0, 0, 0), np.float32), i64, i64, f32)
    out = np.empty((0, 0, 0, 0), np.float32)
    requant_phases(np.empty((4, 0, 0, 0, 0), np.float32), i64, i64, i64, 1, 1, out)
    idx = np.empty((0, 0, 0, 0), np.int32)
    i16 = np.empty((0, 0), np.int16)
    _compiled("indexes_and_means")(f32, f32.view(np.int32), i16, f32, i16, 0, 0, i64, 1, idx, idx)
    dequantize(idx, idx, np.empty(0, np.float64), 1.0, out)


def tap_columns(x: np.ndarray, dhs: np.ndarray, dws: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[t · C + c, (b · h + i) · w + j] = x[c, b, i + dh_t, j + dw_t]`` (0 outside ``x``): a 3x3
    unfold of ``x`` ``(C, B, h, w)`` float32 (channels first, as :func:`requant_phases` writes
    them), tap-major, for tap offsets ``dhs``, ``dws`` (int64, each in -1..1)."""
    _compiled("tap_columns")(x, dhs, dws, out)
    return out


def requant_phases(acc: np.ndarray, bias: np.ndarray, mult: np.ndarray, mult_neg: np.ndarray,
                   shift: int, limit: int, out: np.ndarray) -> np.ndarray:
    """``out[c, b, 2i + p_h, 2j + p_w] = clamp(((acc[p, c, b, i, j] + bias[c]) · m + 2^(s-1)) >> s)``
    with ``m = mult[c]`` for a non-negative sum, else ``mult_neg[c]``: integer-valued float32
    ``acc`` ``(4, C, B, h, w)`` (the phases' GEMMs), int64 constants, float32 ``out``
    ``(C, B, 2h, 2w)``: channels first, the layout the next layer's operand is built from (and
    that a 1x1 layer multiplies as it is)."""
    _compiled("requant_phases")(acc, bias, mult, mult_neg, shift, limit, out)
    return out


def indexes_and_means(acc: np.ndarray, buckets: _BucketIndexer, mean_mult: np.ndarray, shift: int,
                      idx: np.ndarray, means: np.ndarray) -> None:
    """From the last layer's accumulators ``acc`` ``(2M, B · H · W)`` (integer-valued float32, bias
    added; rows ``< M`` scales, the rest means): ``idx`` = how many of the channel's thresholds lie
    below the scale accumulator (the bucket table of :class:`_BucketIndexer`), ``means`` =
    ``(acc · mean_mult + 2^(s-1)) >> s``; both int32 ``(B, M, H, W)``."""
    c = buckets.offset.shape[0]
    assert idx.shape[1] == c, (idx.shape, c)  # before the unchecked kernel reads the tables
    _compiled("indexes_and_means")(acc, acc.view(np.int32), buckets.base.reshape(c, -1),
                                   buckets.value.reshape(c, -1), buckets.inc.reshape(c, -1), buckets._SHIFT,
                                   buckets._ONE - 1, mean_mult, shift, idx, means)


def dequantize(y_sym: np.ndarray, means: np.ndarray, inv_gain: np.ndarray, frac: float, out: np.ndarray) -> np.ndarray:
    """``out = float32((y_sym + means · frac) · inv_gain[c])`` in float64 ops (each correctly
    rounded, so the same bits as the torch ops of :meth:`ExactHyperSynthesis.dequantize`):
    int32 ``y_sym`` and ``means`` ``(B, M, H, W)``, float64 ``inv_gain`` ``(M,)``."""
    _compiled("dequantize")(y_sym, means, inv_gain, frac, out)
    return out
