"""Scale-table indexes of the integer hyper-synthesis by integer comparisons.

The count of a channel's thresholds below an accumulator is CompressAI's ``build_indexes`` rule
(count of bounds below the scale), computed exactly: :class:`_BucketIndexer` on a CPU by a table
lookup on the float32 bits, :class:`_ScaleIndexer` elsewhere by a guess that exact comparisons
then check. Used by :class:`mlcodec.models.exact_hyper.ExactHyperSynthesis`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


class _BucketIndexer:
    """The counts of :class:`_ScaleIndexer` on a CPU, from a table lookup on the float32 bits.

    An accumulator ``x`` is an integer-valued float32 with ``|x| < 2^24``. Its exponent and top
    :data:`MANTISSA_BITS` mantissa bits name a bucket (one shift of its bit pattern; bucket 0 holds
    every ``x < 1``). A bucket spans less than a factor ``1 + 2^-6``, and the thresholds of a
    channel lie at least a factor 1.13 apart (and, below 64, at least one integer apart), so at
    most one threshold value falls inside a bucket. Per channel and bucket the table holds the
    count of thresholds below the bucket, that value and how often it occurs; the count is then
    ``base + inc · (t < x)``: two gathers and a comparison, where a logarithm and five gathers were
    needed before, and exact by construction (:meth:`build` refuses a table where a bucket would
    hold two values).
    """

    MANTISSA_BITS = 6
    _SHIFT = 23 - MANTISSA_BITS
    _ONE = int(np.array(1.0, np.float32).view(np.int32)) >> _SHIFT  # the bucket of 1.0, minus 1
    _BUCKETS = 24 * (1 << MANTISSA_BITS) + 2  # x < 1, then [1, 2^24), then a guard

    def __init__(self, base: np.ndarray, value: np.ndarray, inc: np.ndarray) -> None:
        c = base.shape[0]
        self.base, self.value, self.inc = base.reshape(-1), value.reshape(-1), inc.reshape(-1)
        self.offset = (np.arange(c, dtype=np.int32) * self._BUCKETS).reshape(c, 1)

    @classmethod
    def build(cls, thresholds: np.ndarray) -> _BucketIndexer | None:
        """The table of int64 ``thresholds`` ``(C, K)`` (ascending rows), or None where a bucket
        would hold two threshold values (or a threshold is negative)."""
        t = np.minimum(thresholds, 2**24).astype(np.float64)  # no |x| < 2^24 reaches past 2^24
        if (t < 0).any() or (np.diff(t, axis=1) < 0).any():
            return None
        j = np.arange(1, cls._BUCKETS, dtype=np.int64)
        lo = ((j - 1 + cls._ONE) << cls._SHIFT).astype(np.int32).view(np.float32).astype(np.float64)
        lo = np.concatenate([[-np.inf], lo])
        hi = np.concatenate([lo[1:], [np.inf]])
        c = t.shape[0]
        base = np.zeros((c, cls._BUCKETS), np.int16)
        inc = np.zeros((c, cls._BUCKETS), np.int16)
        value = np.full((c, cls._BUCKETS), np.inf, np.float32)
        for ch in range(c):
            row = t[ch]
            below_lo, below_hi = np.searchsorted(row, lo), np.searchsorted(row, hi)
            base[ch], inc[ch] = below_lo, below_hi - below_lo
            b = np.flatnonzero(below_hi > below_lo)
            first, last = row[below_lo[b]], row[below_hi[b] - 1]  # the row is sorted
            if (first != last).any():
                return None
            value[ch, b] = first
        return cls(base, value, inc)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        b = x.view(np.int32) >> self._SHIFT  # negative x: negative here, so bucket 0 below
        b -= self._ONE - 1
        np.clip(b, 0, self._BUCKETS - 1, out=b)
        b += self.offset
        idx = self.base[b].astype(np.int32)
        idx += (self.value[b] < x) * self.inc[b]
        return idx


class _ScaleIndexer:
    """Per channel (row), how many thresholds lie below each accumulator: CompressAI's rule, the
    count of table bounds below the scale. Accumulators are integer-valued float32 rows ``(C, N)``.

    On a CPU a table lookup on the accumulators' float32 bits gives the counts
    (:class:`_BucketIndexer`). Otherwise: the thresholds are log-spaced, so a logarithm guesses the
    count to within one and three comparisons with the channel's table make it exact (as
    ``_CoderTables.scale_indexes`` does for floats). Two more comparisons check every result; a
    guess that was off by more (it cannot be for tables from :func:`integerize`, but the check
    costs little) falls back to a binary search.
    """

    def __init__(self, thresholds: Tensor) -> None:
        c, k = thresholds.shape
        self.k = k
        self.thresholds = thresholds.contiguous()
        # |acc| < 2^24, so a threshold above 2^24 is never below an accumulator: clamp it to where
        # float32 is still exact
        t = thresholds.double().clamp(max=2.0**24)
        inf = torch.full((c, 1), math.inf, dtype=torch.float64, device=thresholds.device)
        self.padded = torch.cat([-inf, t, inf, inf], 1).float().reshape(-1)  # (C·(K + 3),)
        t1 = thresholds.double().clamp_min(1.0)  # the guess follows the unclamped spacing
        self.log_t0 = t1[:, :1].log().float()
        self.inv_step = ((k - 1) / (t1[:, -1:].log() - t1[:, :1].log()).clamp_min(1e-9)).float()
        self.base = torch.arange(c, device=thresholds.device).view(c, 1) * (k + 3)
        self._buckets = None
        if thresholds.device.type == "cpu":
            self._np = (self.padded.numpy(), self.log_t0.numpy(), self.inv_step.numpy(),
                        self.base.numpy().astype(np.int32))
            self._buckets = _BucketIndexer.build(thresholds.numpy())

    def __call__(self, acc: Tensor) -> Tensor:
        if acc.device.type == "cpu" and self._buckets is not None:
            return torch.from_numpy(self._buckets(np.ascontiguousarray(acc.numpy())))
        if acc.device.type == "cpu":
            idx, ok = self._numpy(acc.numpy())
            idx = torch.from_numpy(idx)
        else:
            idx, ok = self._torch(acc)
        if not ok:
            idx = torch.searchsorted(self.thresholds, acc.to(torch.int64).contiguous())
        return idx.to(torch.int32)

    def _numpy(self, x: np.ndarray) -> tuple[np.ndarray, bool]:
        padded, log_t0, inv_step, base = self._np
        g = np.maximum(x, 1.0)
        np.log(g, out=g)
        g -= log_t0
        g *= inv_step
        e = np.clip(g.astype(np.int32), 0, self.k - 1)
        e += base
        idx = (padded[e] < x).astype(np.int32)
        idx += padded[e + 1] < x
        idx += padded[e + 2] < x
        idx += e - 1
        ok = bool(((padded[idx] < x) & (x <= padded[idx + 1])).all())  # T[i-1] < acc <= T[i]
        return idx - base, ok

    def _torch(self, x: Tensor) -> tuple[Tensor, bool]:
        p = self.padded
        g = x.clamp_min(1.0).log_().sub_(self.log_t0).mul_(self.inv_step)
        e = g.to(torch.int64).clamp_(0, self.k - 1).add_(self.base)
        idx = (torch.take(p, e) < x).to(torch.int64) + (torch.take(p, e + 1) < x) \
            + (torch.take(p, e + 2) < x) + (e - 1)
        ok = bool(((torch.take(p, idx) < x) & (x <= torch.take(p, idx + 1))).all())
        return idx - self.base, ok
