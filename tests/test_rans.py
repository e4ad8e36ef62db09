"""The array-level rANS reader against CompressAI's own, on streams CompressAI's encoder wrote."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from compressai.ans import BufferedRansEncoder, RansDecoder

import mlcodec
from mlcodec.bitstream import Bitstream, pack, unpack
from mlcodec.entropy import CdfTables, RansError, StreamDecoder
from mlcodec.rans import ArrayRansDecoder


@pytest.fixture(scope="module")
def codec():
    return mlcodec.create_codec()


@pytest.fixture(scope="module")
def tables(codec) -> tuple[CdfTables, CdfTables]:
    m = codec.model
    return CdfTables.from_model(m.entropy_bottleneck), CdfTables.from_model(m.gaussian_conditional)


def _random_part(rng: np.random.Generator, t: CdfTables, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Symbols spread far beyond every table's range (bypass mode, both tails) and indexes."""
    idx = rng.integers(0, len(t.lengths), n).astype(np.int32)
    spread = rng.choice([0.5, 3.0, 40.0, 5000.0], n)
    return np.round(rng.normal(0, spread)).astype(np.int32), idx


def _encode(parts, t_list) -> bytes:
    enc = BufferedRansEncoder()
    for (sym, idx), t in zip(parts, t_list):
        enc.encode_with_indexes(sym.tolist(), idx.tolist(), t.cdfs, t.lengths, t.offsets)
    return enc.flush()


@pytest.mark.parametrize("seed", range(4))
def test_reads_what_compressai_reads_part_by_part(tables, seed):
    rng = np.random.default_rng(seed)
    t_list = [tables[0], tables[1], tables[1]]
    parts = [_random_part(rng, t, int(rng.integers(1, 6000))) for t in t_list]
    string = _encode(parts, t_list)
    ref = RansDecoder()
    ref.set_stream(string)
    ours = StreamDecoder(string)
    for (sym, idx), t in zip(parts, t_list):
        expected = np.array(ref.decode_stream(idx.tolist(), t.cdfs, t.lengths, t.offsets), dtype=np.int32)
        got = ours.decode_array(idx, t)
        assert got.dtype == np.int32 and np.array_equal(got, expected) and np.array_equal(got, sym)
    assert (np.abs(np.concatenate([p[0] for p in parts])) > 1000).any()  # bypass mode was exercised


def test_an_empty_part_and_a_2d_index_array(tables):
    rng = np.random.default_rng(7)
    sym, idx = _random_part(rng, tables[1], 64)
    dec = StreamDecoder(_encode([(sym, idx)], [tables[1]]))
    assert dec.decode_array(np.zeros(0, np.int32), tables[1]).shape == (0,)
    assert np.array_equal(dec.decode(torch.from_numpy(idx.reshape(8, 8)), tables[1]).numpy().ravel(), sym)


def test_skipped_positions_come_out_zero_and_the_rest_in_order(tables):
    """``decode_skipping`` (how format 3 reads y): positions whose index is at most ``skip`` are
    not in the stream; the others decode as CompressAI wrote them, and come back compact too."""
    rng = np.random.default_rng(11)
    sym, idx = _random_part(rng, tables[1], 3000)
    skip = 5
    coded = idx > skip
    assert 0 < coded.sum() < idx.size
    dec = StreamDecoder(_encode([(sym[coded], idx[coded])], [tables[1]]))
    full, read = dec.decode_skipping(idx, tables[1], skip)
    assert np.array_equal(read, sym[coded])
    assert np.array_equal(full[coded], sym[coded]) and not full[~coded].any()


def test_a_cut_stream_raises_instead_of_reading_past_its_end(tables):
    rng = np.random.default_rng(3)
    sym, idx = _random_part(rng, tables[1], 4000)
    string = _encode([(sym, idx)], [tables[1]])
    with pytest.raises(RansError, match="ended early"):
        StreamDecoder(string[: len(string) // 2]).decode_array(idx, tables[1])
    with pytest.raises(RansError, match="whole 32-bit words"):
        ArrayRansDecoder(string[:6])
    with pytest.raises(IndexError, match="CDF indexes"):
        StreamDecoder(string).decode_array(idx + len(tables[1].lengths), tables[1])


def test_a_damaged_latent_string_is_a_bitstream_error_naming_the_sample(codec, photo):
    data = codec.compress(photo, 0.5)
    bs = unpack(data)
    rans = bs.strings[0]

    def cut(n: int) -> bytes:
        return pack(Bitstream(bs.header, (rans[:n],) + bs.strings[1:]))

    # z's symbols come first in the string, y's after them
    with pytest.raises(mlcodec.BitstreamError, match="bitstream 0: hyper-latent: .* ended early .* damaged"):
        codec.decode_latent(cut(8))
    with pytest.raises(mlcodec.BitstreamError, match="bitstream 0: the latent does not decode .* damaged"):
        codec.decode_latent(cut(len(rans) // 8 * 4))
    assert torch.equal(codec.decode_latent(data), codec.decode_latent(pack(bs)))


def test_one_compiled_signature_across_parts_and_images(codec, photo):
    """The state goes back in as uint64 after every part: a Python int would compile a second,
    int64-typed kernel whose uint64/int64 arithmetic numba promotes to float."""
    from mlcodec.rans import _kernel, load

    load()
    codec.decode_latents([codec.compress(photo, q) for q in (0.1, 0.9)])
    assert len(_kernel().signatures) == 1


def test_the_reader_compiles_where_numba_finds_no_cache_location(monkeypatch):
    import numba

    from mlcodec.rans import _kernel

    real = numba.njit

    def njit(*args, cache=False, **kwargs):
        if cache:
            raise RuntimeError("cannot cache function '_decode': no locator available")
        return real(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", njit)
    kernel = _kernel.__wrapped__()  # uncached: a fresh compile without a cache
    words = np.array([0, 1 << 31], "<u4")
    cdfs, lengths = np.array([[0, 1 << 15, 1 << 16]], np.int32), np.array([3], np.int32)
    offsets = np.zeros(1, np.int32)
    out = np.empty(1, np.int32)
    assert kernel(words, np.uint64(1 << 63), 2, np.zeros(1, np.int32), -1, cdfs, lengths, offsets, out, out)[3] == 0
    assert out[0] in (0, 1) and type(kernel._cache).__name__ == "NullCache"
