import dataclasses
import struct
import zlib

import pytest

from mlcodec.bitstream import (FORMAT_VERSION, MAGIC, Bitstream, BitstreamError,
                               BitstreamHeader, pack, read_header, unpack)


def make(strings=(b"\x01\x02\x03", b"hello world")):
    header = BitstreamHeader(1, bytes(range(8)), 0.25, (37, 101), (64, 128), (96, 4, 8), "L")
    return Bitstream(header, tuple(strings))


def test_round_trip_exact():
    bs = make()
    data = pack(bs)
    assert data[:4] == MAGIC and data[4] == FORMAT_VERSION
    assert unpack(data) == bs
    assert read_header(data).original_size == (37, 101)
    # header 43 bytes + two length prefixes + payload + CRC
    assert len(data) == 43 + 4 + 3 + 4 + 11 + 4
    assert struct.unpack("<I", data[-4:])[0] == zlib.crc32(data[:-4])


def test_empty_strings_allowed():
    bs = make(strings=(b"",))
    assert unpack(pack(bs)).strings == (b"",)


@pytest.mark.parametrize("pos", [0, 10, 20, 44, 50, -5, -1])
def test_flipped_byte_is_detected(pos):
    data = bytearray(pack(make()))
    data[pos] ^= 0x40
    with pytest.raises(BitstreamError):
        unpack(bytes(data))


def test_payload_flip_reports_crc():
    data = bytearray(pack(make()))
    data[-6] ^= 0x01  # inside the second string
    with pytest.raises(BitstreamError, match="CRC32 mismatch"):
        unpack(bytes(data))


@pytest.mark.parametrize("cut", [3, 10, 42, 45, 49, 60])
def test_truncated(cut):
    data = pack(make())
    with pytest.raises(BitstreamError, match="truncated|not an mlcodec"):
        unpack(data[:cut])


def test_foreign_bytes():
    with pytest.raises(BitstreamError, match="not an mlcodec bitstream"):
        unpack(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(BitstreamError, match="not an mlcodec bitstream"):
        unpack(b"")


def test_future_version_rejected():
    data = bytearray(pack(make()))
    data[4] = FORMAT_VERSION + 1
    with pytest.raises(BitstreamError, match=f"version {FORMAT_VERSION + 1} is not supported"):
        unpack(bytes(data))


def test_version_1_still_read_and_repacked_unchanged():
    bs = make()
    v1 = Bitstream(dataclasses.replace(bs.header, version=1), bs.strings)
    data = pack(v1)
    assert data[4] == 1
    assert unpack(data).header.version == 1
    assert pack(unpack(data)) == data
    with pytest.raises(BitstreamError, match="format version must be one of"):
        pack(Bitstream(dataclasses.replace(bs.header, version=0), bs.strings))


def test_trailing_bytes_rejected():
    data = pack(make())
    with pytest.raises(BitstreamError, match="trailing"):
        unpack(data[:-4] + b"xx" + data[-4:])


@pytest.mark.parametrize("kw,match", [
    ({"fingerprint": b"123"}, "fingerprint"),
    ({"quality": 1.5}, "quality"),
    ({"source_mode": "CMYK"}, "source mode"),
    ({"original_size": (-1, 3)}, "out of range"),
])
def test_pack_rejects_bad_fields(kw, match):
    h = make().header
    fields = {**h.__dict__, **kw}
    with pytest.raises(BitstreamError, match=match):
        pack(Bitstream(BitstreamHeader(**fields), (b"x",)))
