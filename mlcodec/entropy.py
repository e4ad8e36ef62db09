"""Range coding with CompressAI's rANS coder and cached CDF tables.

CompressAI's ``EntropyModel.compress``/``decompress`` rebuild Python lists of the whole CDF table
(``_quantized_cdf.tolist()``) on every call, which dominates per-image decode time. Here the
tables are converted once per codec (:class:`CdfTables`) and the hyper-latent ``z`` and the
latent ``y`` are written into one rANS stream (``BufferedRansEncoder``), decoded in the same order
(``RansDecoder.decode_stream``), so an image is one string and one coder set-up.
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
        return cls(
            em._quantized_cdf.tolist(),
            em._cdf_length.reshape(-1).int().tolist(),
            em._offset.reshape(-1).int().tolist(),
        )


def encode(parts: Sequence[tuple[torch.Tensor, torch.Tensor, CdfTables]]) -> bytes:
    """Encode ``(symbols, indexes, tables)`` parts, in order, into one rANS string."""
    enc = BufferedRansEncoder()
    for symbols, indexes, tables in parts:
        enc.encode_with_indexes(
            _as_list(symbols), _as_list(indexes), tables.cdfs, tables.lengths, tables.offsets
        )
    return enc.flush()


def _as_list(t: torch.Tensor) -> list[int]:
    return t.reshape(-1).to(torch.int32).numpy().tolist()


class StreamDecoder:
    """Decodes the parts of one string in the order they were encoded."""

    def __init__(self, string: bytes) -> None:
        self._dec = RansDecoder()
        self._dec.set_stream(string)

    def decode(self, indexes: torch.Tensor, tables: CdfTables) -> torch.Tensor:
        values = self._dec.decode_stream(
            _as_list(indexes), tables.cdfs, tables.lengths, tables.offsets
        )
        return torch.from_numpy(np.asarray(values, dtype=np.int32)).reshape(indexes.shape)
