"""Range coding with CompressAI's rANS coder and cached CDF tables.

CompressAI's ``EntropyModel.compress``/``decompress`` rebuild Python lists of the whole CDF table
(``_quantized_cdf.tolist()``) on every call, which dominates per-image decode time. Here the
tables are converted once per codec (:class:`CdfTables`) and the hyper-latent ``z`` and the
latent ``y`` are written into one rANS stream (``BufferedRansEncoder``), decoded in the same order
(``RansDecoder.decode_stream``), so an image is one string and one coder set-up.

The coder copies every CDF it is handed from Python into C++ on each call, so each call is given
only the tables its symbols use (rows trimmed to their length, indexes remapped): the copy then
scales with what an image needs, not with the size of the scale table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from compressai.ans import BufferedRansEncoder, RansDecoder
from compressai.entropy_models import EntropyModel


@dataclass(frozen=True)
class CdfTables:
    """The quantized CDFs, their lengths and offsets of one entropy model, as Python lists."""

    cdfs: list[list[int]]
    lengths: list[int]
    offsets: list[int]

    @classmethod
    def from_model(cls, em: EntropyModel) -> CdfTables:
        if em._quantized_cdf.numel() == 0:
            raise RuntimeError("Entropy model has no CDF tables: call codec.update() first")
        lengths = em._cdf_length.reshape(-1).int().tolist()
        return cls(
            [row[:n] for row, n in zip(em._quantized_cdf.tolist(), lengths)],
            lengths,
            em._offset.reshape(-1).int().tolist(),
        )


def encode(parts: Sequence[tuple[torch.Tensor, torch.Tensor, CdfTables]]) -> bytes:
    """Encode ``(symbols, indexes, tables)`` parts, in order, into one rANS string."""
    enc = BufferedRansEncoder()
    for symbols, indexes, tables in parts:
        enc.encode_with_indexes(_as_list(symbols), *_used_tables(indexes, tables))
    return enc.flush()


def _as_list(t: torch.Tensor) -> list[int]:
    return t.reshape(-1).to(torch.int32).numpy().tolist()


def _used_tables(indexes: torch.Tensor | np.ndarray, tables: CdfTables):
    """Indexes remapped onto the subset of tables they use, and that subset (cdfs, lengths, offsets)."""
    idx = np.asarray(indexes).reshape(-1)
    used = np.flatnonzero(np.bincount(idx, minlength=len(tables.cdfs)))
    remap = np.zeros(len(tables.cdfs), dtype=np.int32)
    remap[used] = np.arange(len(used), dtype=np.int32)
    u = used.tolist()
    return (remap[idx].tolist(), [tables.cdfs[i] for i in u],
            [tables.lengths[i] for i in u], [tables.offsets[i] for i in u])


class StreamDecoder:
    """Decodes the parts of one string in the order they were encoded."""

    def __init__(self, string: bytes) -> None:
        self._dec = RansDecoder()
        self._dec.set_stream(string)

    def decode(self, indexes: torch.Tensor, tables: CdfTables) -> torch.Tensor:
        return torch.from_numpy(self.decode_array(indexes.numpy(), tables)).reshape(indexes.shape)

    def decode_array(self, indexes: np.ndarray, tables: CdfTables) -> np.ndarray:
        """The next ``indexes.size`` symbols as a flat int32 array (``indexes`` pick their CDFs)."""
        if indexes.size == 0:
            return np.zeros(0, dtype=np.int32)
        return np.fromiter(self._dec.decode_stream(*_used_tables(indexes, tables)), np.int32,
                           indexes.size)
