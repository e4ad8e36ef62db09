"""An array-level reader of CompressAI's rANS streams: symbols out as numpy arrays, no Python lists.

CompressAI's ``RansDecoder`` takes its indexes and CDF tables as Python lists and returns a list
of ints, so decoding an image's latent symbols spends much of its time converting lists
(``benchmarks/latent_decode_profile.py``, docs/experiments/input-pipeline.md).
:class:`ArrayRansDecoder` reads the same streams with the same arithmetic, compiled by numba,
from int32 arrays into an int32 array. The streams are CompressAI's and are still *written* by
CompressAI's ``BufferedRansEncoder`` (``mlcodec.entropy.encode``); nothing about the bitstream
changes. Tests decode random streams with both readers and require equal symbols.

The stream format (CompressAI 1.2.8, ``cpp_exts/rans``, after Fabian Giesen's ``rans64.h``): a
little-endian array of uint32 words; a 64-bit state initialised from the first two words; per
symbol, ``cum = state & 0xFFFF`` picks the symbol whose CDF interval holds it, the state advances
by that symbol's frequency and refills one word when it drops below 2^31. The last value of each table
(``length - 2``) escapes to *bypass* mode: 4-bit chunks give the count of raw chunks (a chunk of
15 continues the count), then the raw value, zigzag-folded around the table's range.

Unlike the C++ reader, this one checks its bounds: a stream that ends early, or a state no table
entry covers, sets an error code instead of reading past the buffer (:class:`RansError`).
"""

from __future__ import annotations

import functools

import numpy as np

PRECISION = 16
BYPASS_BITS = 4
MAX_BYPASS = (1 << BYPASS_BITS) - 1
_LOWER = np.uint64(1 << 31)

OK, TRUNCATED, BAD_STATE = 0, 1, 2


class RansError(ValueError):
    """The stream ended early or holds a state no CDF covers: it is damaged or was coded with
    other tables."""


@functools.cache
def _kernel():
    """:func:`_decode` compiled (numba is imported on the first decode, not with the package; the
    machine code is cached on disk next to this module or in the user's cache)."""
    from numba import njit

    try:
        return njit(cache=True, nogil=True, boundscheck=False)(_decode)
    except RuntimeError:  # numba finds no writable cache location (read-only install and home)
        return njit(nogil=True, boundscheck=False)(_decode)


def _decode(words, state, pos, indexes, skip, cdfs, lengths, offsets, out, coded):
    mask = np.uint64((1 << PRECISION) - 1)
    n_words = words.shape[0]
    k = 0  # symbols decoded so far
    for i in range(indexes.shape[0]):
        t = indexes[i]
        if t <= skip:  # not in the stream: zero
            out[i] = 0
            continue
        n = lengths[t]
        max_value = n - 2
        cum = np.int64(state & mask)
        # the last entry at or below cum: walk from the symbol of value 0, where most symbols lie
        # (the tables are centred on the mean), a step or two, where a binary search takes log2(n)
        s = min(max(-offsets[t], 0), n - 2)
        while s > 0 and cdfs[t, s] > cum:
            s -= 1
        while s < n - 2 and cdfs[t, s + 1] <= cum:
            s += 1
        if cdfs[t, s] > cum or cdfs[t, s + 1] <= cum:
            return state, pos, k, BAD_STATE
        start = np.uint64(cdfs[t, s])
        freq = np.uint64(cdfs[t, s + 1] - cdfs[t, s])
        state = freq * (state >> np.uint64(PRECISION)) + (state & mask) - start
        if state < _LOWER:
            if pos >= n_words:
                return state, pos, k, TRUNCATED
            state = (state << np.uint64(32)) | np.uint64(words[pos])
            pos += 1
        value = np.int64(s)
        if value == max_value:
            # bypass mode: 4-bit chunks, first a count (15 continues it), then as many raw ones
            count, j, raw, counting = 0, 0, np.int64(0), True
            while counting or j < count:
                val = np.int64(state & np.uint64(MAX_BYPASS))
                state >>= np.uint64(BYPASS_BITS)
                if state < _LOWER:
                    if pos >= n_words:
                        return state, pos, k, TRUNCATED
                    state = (state << np.uint64(32)) | np.uint64(words[pos])
                    pos += 1
                if counting:
                    count += val
                    counting = val == MAX_BYPASS
                else:
                    raw |= val << (j * BYPASS_BITS)
                    j += 1
            value = raw >> 1
            if raw & 1:
                value = -value - 1
            else:
                value += max_value
        out[i] = value + offsets[t]
        coded[k] = out[i]
        k += 1
    return state, pos, k, OK


def load() -> None:
    """Compile the reader now, or load it from numba's cache (about 0.5 s), instead of on the first
    decode. The latent loader calls it before DataLoader workers fork, so they inherit it."""
    tables = (np.array([[0, 1 << PRECISION]], np.int32), np.array([2], np.int32), np.zeros(1, np.int32))
    ArrayRansDecoder(np.array([0, 1 << 31], "<u4").tobytes()).decode(np.zeros(1, np.int32), *tables)


class ArrayRansDecoder:
    """Reads the parts of one CompressAI rANS string in the order they were encoded.

    ``cdfs`` is a 2-D int32 table (one padded row per CDF), ``lengths`` and ``offsets`` int32
    vectors, as CompressAI's entropy models hold them; ``indexes`` pick a row per symbol.
    """

    def __init__(self, string: bytes) -> None:
        if len(string) % 4 or len(string) < 8:
            raise RansError(f"a rANS string is whole 32-bit words, at least two; got {len(string)} bytes")
        self._words = np.frombuffer(string, dtype="<u4")
        self._state = np.uint64(self._words[0]) | (np.uint64(self._words[1]) << np.uint64(32))
        self._pos = 2

    def decode(self, indexes: np.ndarray, cdfs: np.ndarray, lengths: np.ndarray,
               offsets: np.ndarray) -> np.ndarray:
        """The next ``indexes.size`` symbols as a flat int32 array."""
        out, _ = self.decode_skipping(indexes, -1, cdfs, lengths, offsets)
        return out

    def decode_skipping(self, indexes: np.ndarray, skip: int, cdfs: np.ndarray, lengths: np.ndarray,
                        offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Symbols for every position of ``indexes``, flat int32, where those whose index is at
        most ``skip`` are not in the stream and come out zero; and the symbols read (in order)."""
        idx = np.ascontiguousarray(indexes, dtype=np.int32).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(lengths)):
            raise IndexError(f"CDF indexes must lie in [0, {len(lengths)}), got {idx.min()}..{idx.max()}")
        out = np.empty(idx.size, dtype=np.int32)
        coded = out if skip < 0 else np.empty(idx.size, dtype=np.int32)  # all read: the same values
        state, self._pos, done, err = _kernel()(self._words, self._state, self._pos, idx, skip, cdfs, lengths,
                                                offsets, out, coded)
        self._state = np.uint64(state)  # numba returns a Python int: keep one compiled signature
        if err != OK:
            what = "ended early" if err == TRUNCATED else "reached a state no CDF covers"
            raise RansError(f"the rANS stream {what} at symbol {done} of {int((idx > skip).sum())}: it is damaged")
        return out, coded[:done]
