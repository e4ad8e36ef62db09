"""Range coding: CompressAI's rANS encoder, an array-level reader of its streams, cached CDF tables.

CompressAI's ``EntropyModel.compress``/``decompress`` rebuild Python lists of the whole CDF table
(``_quantized_cdf.tolist()``) on every call, which dominates per-image decode time. Here the
tables are converted once per codec (:class:`CdfTables`) and the hyper-latent ``z`` and the
latent ``y`` are written into one rANS stream (``BufferedRansEncoder``), decoded in the same order,
so an image is one string and one coder set-up.

Writing: the encoder copies every CDF it is handed from Python into C++ on each call, so each
call is given only the tables its symbols use (rows trimmed to their length, indexes remapped):
the copy then scales with what an image needs, not with the size of the scale table.

Reading: :class:`StreamDecoder` reads the same streams with :mod:`mlcodec.rans` (numpy arrays
in and out, no lists), which tests hold equal to CompressAI's ``RansDecoder``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from compressai.ans import BufferedRansEncoder
from compressai.entropy_models import EntropyModel

from .rans import ArrayRansDecoder, RansError

__all__ = ["CdfTables", "RansError", "StreamDecoder", "encode"]


@dataclass(frozen=True)
class CdfTables:
    """The quantized CDFs, their lengths and offsets of one entropy model: as Python lists for
    CompressAI's encoder, as int32 arrays (one padded row per CDF) for the reader."""

    cdfs: list[list[int]]
    lengths: list[int]
    offsets: list[int]
    cdf_array: np.ndarray
    length_array: np.ndarray
    offset_array: np.ndarray

    @classmethod
    def from_model(cls, em: EntropyModel) -> CdfTables:
        if em._quantized_cdf.numel() == 0:
            raise RuntimeError("Entropy model has no CDF tables: call codec.update() first")

        def host(t: torch.Tensor) -> np.ndarray:  # the model may live on a GPU
            return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.int32)

        cdf = host(em._quantized_cdf)
        lengths, offsets = host(em._cdf_length.reshape(-1)), host(em._offset.reshape(-1))
        return cls([row[:n] for row, n in zip(cdf.tolist(), lengths.tolist())], lengths.tolist(),
                   offsets.tolist(), cdf, lengths, offsets)


#: symbols handed to CompressAI's encoder per call: its Python-list arguments cost 8 bytes a
#: symbol each, so a large image's latent in one call would hold lists larger than the image
ENCODE_CHUNK = 1 << 18


def encode(parts: Sequence[tuple[torch.Tensor, torch.Tensor, CdfTables]]) -> bytes:
    """Encode ``(symbols, indexes, tables)`` parts, in order, into one rANS string.

    ``BufferedRansEncoder`` buffers every call's symbols and codes them all at ``flush``, so
    handing a part over in chunks of :data:`ENCODE_CHUNK` symbols gives the same bytes."""
    enc = BufferedRansEncoder()
    for symbols, indexes, tables in parts:
        flat = symbols.reshape(-1).to(torch.int32).numpy()
        idx, cdfs, lengths, offsets = _used_tables(indexes, tables)
        for i in range(0, max(len(flat), 1), ENCODE_CHUNK):
            enc.encode_with_indexes(flat[i : i + ENCODE_CHUNK].tolist(), idx[i : i + ENCODE_CHUNK].tolist(),
                                    cdfs, lengths, offsets)
    return enc.flush()


def _used_tables(indexes: torch.Tensor | np.ndarray, tables: CdfTables):
    """Indexes remapped onto the subset of tables they use (an int32 array), and that subset
    (cdfs, lengths, offsets)."""
    idx = np.asarray(indexes).reshape(-1)
    used = np.flatnonzero(np.bincount(idx, minlength=len(tables.cdfs)))
    remap = np.zeros(len(tables.cdfs), dtype=np.int32)
    remap[used] = np.arange(len(used), dtype=np.int32)
    u = used.tolist()
    return (remap[idx], [tables.cdfs[i] for i in u],
            [tables.lengths[i] for i in u], [tables.offsets[i] for i in u])


class StreamDecoder:
    """Decodes the parts of one string in the order they were encoded. A damaged string raises
    :class:`RansError` (it does not read past its end)."""

    def __init__(self, string: bytes) -> None:
        self._dec = ArrayRansDecoder(string)

    def decode(self, indexes: torch.Tensor, tables: CdfTables) -> torch.Tensor:
        return torch.from_numpy(self.decode_array(indexes.numpy(), tables)).reshape(indexes.shape)

    def decode_array(self, indexes: np.ndarray, tables: CdfTables) -> np.ndarray:
        """The next ``indexes.size`` symbols as a flat int32 array (``indexes`` pick their CDFs)."""
        return self._dec.decode(indexes, tables.cdf_array, tables.length_array, tables.offset_array)

    def decode_skipping(self, indexes: np.ndarray, tables: CdfTables, skip: int) -> tuple[np.ndarray, np.ndarray]:
        """Symbols for every position (flat int32), zero where the index is at most ``skip`` (not
        coded), and the symbols read from the stream, in order."""
        return self._dec.decode_skipping(indexes, skip, tables.cdf_array, tables.length_array, tables.offset_array)
