"""The ``.mlc`` bitstream container: pure functions over bytes (no torch, no files).

Layout, little-endian (the same for format versions 1, 2 and 3)::

    offset  size  field
    0       4     magic b"MLCB"
    4       1     format version (3; 1 and 2 are still read)
    5       1     source mode (0 = RGB, 1 = L)
    6       2     codec id (u16, stable, from the registry)
    8       8     weights fingerprint (first 8 bytes of SHA-256 of the weights)
    16      4     quality (f32, in [0, 1])
    20      8     original height, width (u32, u32)
    28      8     padded height, width (u32, u32)
    36      6     latent shape C, H, W (u16 x 3)
    42      1     number of entropy-coded strings S
    43      ...   S x (u32 length, bytes)
    end-4   4     CRC32 of every byte before it

The versions differ in what the entropy-coded strings hold and how a decoder derives the entropy
model's parameters, not in the layout:

- **1**: every latent symbol is coded; scales and means from a floating-point hyper-synthesis.
- **2**: learned codecs leave out the latent symbols whose predicted Gaussian scale is so small that
  they are zero but for a vanishing fraction (see ``mlcodec.codecs.hyperprior.SKIP_INDEX``); a
  decoder knows which from the hyperprior and sets them to the predicted mean. A second string
  holds a checksum of the coded symbols. Still a floating-point hyper-synthesis, so a stream may
  fail its checksum on another thread count, CPU or device (``mlcodec verify`` finds such samples).
- **3**: as 2, but the scale-table indexes and means come from an integer hyper-synthesis
  (:mod:`mlcodec.models.exact_hyper`) that every machine computes bit for bit alike. Codecs with
  integer tables write it; CompressAI's ``bmshj2018-hyperprior`` keeps writing 2.

``BitstreamHeader.version`` says which rule a stream follows.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAGIC = b"MLCB"
FORMAT_VERSION = 3
SUPPORTED_VERSIONS = (1, 2, 3)
#: versions whose entropy parameters are exact on every machine
PORTABLE_VERSIONS = (3,)
_HEAD = struct.Struct("<4sBBH8sfIIIIHHHB")
_LEN = struct.Struct("<I")
_CRC = struct.Struct("<I")
SOURCE_MODES = ("RGB", "L")


class BitstreamError(ValueError):
    """Raised for bytes that are not a valid mlcodec bitstream, or do not fit the codec."""


@dataclass(frozen=True)
class BitstreamHeader:
    codec_id: int
    fingerprint: bytes
    quality: float
    original_size: tuple[int, int]  # (height, width)
    padded_size: tuple[int, int]
    latent_shape: tuple[int, int, int]  # (C, H, W) of the latent y
    source_mode: str = "RGB"
    version: int = FORMAT_VERSION  # format version the strings follow


@dataclass(frozen=True)
class Bitstream:
    header: BitstreamHeader
    strings: tuple[bytes, ...]

    @property
    def payload_bytes(self) -> int:
        return sum(len(s) for s in self.strings)


def pack(bs: Bitstream) -> bytes:
    """Serialize a bitstream; raises ``BitstreamError`` for values that do not fit the format."""
    h = bs.header
    if len(h.fingerprint) != 8:
        raise BitstreamError(f"fingerprint must be 8 bytes, got {len(h.fingerprint)}")
    if h.source_mode not in SOURCE_MODES:
        raise BitstreamError(f"source mode must be one of {SOURCE_MODES}, got {h.source_mode!r}")
    if not 0.0 <= h.quality <= 1.0:
        raise BitstreamError(f"quality must be in [0, 1], got {h.quality}")
    if h.version not in SUPPORTED_VERSIONS:
        raise BitstreamError(f"format version must be one of {SUPPORTED_VERSIONS}, got {h.version}")
    if len(bs.strings) > 255:
        raise BitstreamError(f"at most 255 strings, got {len(bs.strings)}")
    try:
        head = _HEAD.pack(MAGIC, h.version, SOURCE_MODES.index(h.source_mode), h.codec_id,
                          h.fingerprint, h.quality, *h.original_size, *h.padded_size,
                          *h.latent_shape, len(bs.strings))
    except struct.error as e:
        raise BitstreamError(f"header field out of range: {e}") from e
    body = b"".join(_LEN.pack(len(s)) + s for s in bs.strings)
    data = head + body
    return data + _CRC.pack(zlib.crc32(data))


def unpack(data: bytes) -> Bitstream:
    """Parse and verify bytes made by :func:`pack`; raises ``BitstreamError`` saying what is wrong."""
    data = bytes(data)
    if len(data) < 4 or data[:4] != MAGIC:
        raise BitstreamError(
            f"not an mlcodec bitstream: starts with {data[:4]!r}, expected {MAGIC!r}"
        )
    if len(data) < _HEAD.size + _CRC.size:
        raise BitstreamError(
            f"truncated bitstream: {len(data)} bytes, the header alone needs {_HEAD.size + 4}"
        )
    (_, version, mode, codec_id, fp, quality, oh, ow, ph, pw, c, lh, lw, n) = _HEAD.unpack_from(data)
    if version not in SUPPORTED_VERSIONS:
        raise BitstreamError(
            f"bitstream format version {version} is not supported (this mlcodec reads "
            f"versions {', '.join(map(str, SUPPORTED_VERSIONS))}); upgrade mlcodec"
        )
    pos, strings = _HEAD.size, []
    for i in range(n):
        if pos + 4 > len(data) - 4:
            raise BitstreamError(f"truncated bitstream: string {i + 1} of {n} is missing")
        (length,) = _LEN.unpack_from(data, pos)
        pos += 4
        if pos + length > len(data) - 4:
            raise BitstreamError(
                f"truncated bitstream: string {i + 1} of {n} needs {length} bytes, "
                f"{max(len(data) - 4 - pos, 0)} remain"
            )
        strings.append(data[pos : pos + length])
        pos += length
    if pos != len(data) - 4:
        raise BitstreamError(f"bitstream has {len(data) - 4 - pos} unexpected trailing bytes")
    (crc,) = _CRC.unpack_from(data, pos)
    if crc != zlib.crc32(data[:pos]):
        raise BitstreamError("corrupted bitstream: CRC32 mismatch (the bytes were altered)")
    if mode >= len(SOURCE_MODES):
        raise BitstreamError(f"unknown source mode {mode}")
    header = BitstreamHeader(codec_id, fp, quality, (oh, ow), (ph, pw), (c, lh, lw),
                             SOURCE_MODES[mode], version)
    return Bitstream(header, tuple(strings))


def read_header(data: bytes) -> BitstreamHeader:
    """The verified header of a bitstream (the whole stream is checked)."""
    return unpack(data).header
