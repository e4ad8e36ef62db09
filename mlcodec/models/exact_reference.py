"""The specification of the integer hyper-synthesis: a pure numpy int64 implementation written
from the layers' definitions (a direct transposed convolution, no polyphase GEMM).

The fast path (:class:`mlcodec.models.exact_hyper.ExactHyperSynthesis`) must equal
:func:`reference_params` bit for bit; the tests hold it to that, also on golden streams decoded
under other thread counts and instruction sets.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from mlcodec.models.exact_hyper import MED_FRAC_BITS, PREFIX, ExactTables, quality_constants


def _np_deconv(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Transposed convolution k5 s2 p2 output-padding 1 by its definition, int64: input (i, j)
    adds ``x · w[:, :, kh, kw]`` to output (2i - 2 + kh, 2j - 2 + kw)."""
    b, _, h, wd = x.shape
    full = np.zeros((b, w.shape[1], 2 * h + 3, 2 * wd + 3), dtype=np.int64)
    for kh in range(5):
        for kw in range(5):
            full[:, :, kh:kh + 2 * h:2, kw:kw + 2 * wd:2] += np.einsum("bchw,co->bohw", x, w[:, :, kh, kw])
    return full[:, :, 2:2 + 2 * h, 2:2 + 2 * wd]


def _np_conv(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    k = w.shape[-1]
    p = k // 2
    b, _, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    out = np.zeros((b, w.shape[0], h, wd), dtype=np.int64)
    for kh in range(k):
        for kw in range(k):
            out += np.einsum("bchw,oc->bohw", xp[:, :, kh:kh + h, kw:kw + wd], w[:, :, kh, kw])
    return out


def _np_requant(acc: np.ndarray, mult: np.ndarray, shift: int) -> np.ndarray:
    return (acc * mult + (1 << (shift - 1))) >> shift


def reference_params(tables: ExactTables, w0: Tensor, log_inv_hyper_gain: Tensor,
                     log_inv_gain: Tensor, z_sym: np.ndarray, quality: float) -> tuple[np.ndarray, np.ndarray]:
    """The scale indexes and means of :class:`ExactHyperSynthesis`, from the layers' definitions
    in numpy int64 (layer 0's per-quality weights from numpy float64 elementwise ops)."""
    t = {k[len(PREFIX):]: v.numpy() for k, v in tables.state_dict().items()}
    col = lambda v: np.asarray(v).reshape(1, -1, 1, 1)  # noqa: E731
    ihg = quality_constants(log_inv_hyper_gain, log_inv_gain, quality).inv_hyper_gain.numpy()
    w = np.round(w0.detach().cpu().numpy().astype(np.float64) * ihg[:, None, None, None]
                 * t["w0_scale"][None, :, None, None]).astype(np.int64)
    med = (w * t["z_med16"][:, None, None, None]).sum(0, keepdims=True)
    w = np.concatenate([w, (med + (1 << (MED_FRAC_BITS - 1))) >> MED_FRAC_BITS])
    z = np.clip(z_sym.astype(np.int64), -tables.z_max, tables.z_max)
    x = np.concatenate([z, np.ones_like(z[:, :1])], 1)
    shifts = [int(s) for s in t["shifts"]]
    for i, wi in enumerate((w, t["w1"].astype(np.int64))):
        acc = _np_deconv(x, wi) + col(t[f"b{i}"])
        m = np.where(acc >= 0, col(t[f"mult{i}"]), col(t[f"mult_neg{i}"]))
        x = np.clip(_np_requant(acc, m, shifts[i]), -tables.hidden_max, tables.hidden_max)
    acc = _np_conv(x, t["w2"].astype(np.int64)) + col(t["b2"])
    m = acc.shape[1] // 2
    thr = t["thresholds"]
    idx = np.stack([(acc[:, c, :, :, None] > thr[c]).sum(-1) for c in range(m)], 1)
    means = _np_requant(acc[:, m:], col(t["mean_mult"]), shifts[2])
    return idx.astype(np.int32), means.astype(np.int32)
