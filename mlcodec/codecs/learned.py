"""Learned codecs: images to ``.mlc`` bitstreams through a hyperprior model and rANS coding.

:class:`LatentCodec` owns what every learned codec shares: input conversion, padding to the
model's stride and cropping back, the container (:mod:`mlcodec.bitstream`), fingerprint checks and
batching by padded size. Subclasses say how a padded batch becomes rANS strings and back.
"""

from __future__ import annotations

import abc
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from mlcodec import bitstream as bsf
from mlcodec.bitstream import FORMAT_VERSION, Bitstream, BitstreamError, BitstreamHeader
from mlcodec.codecs.base import DEFAULT_QUALITY, Codec, CodecConfig, check_quality
from mlcodec.imageio import to_pil, to_tensor
from mlcodec.tiling import DEFAULT_TILE


def pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad ``(B, C, H, W)`` on the bottom/right to a multiple of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


class LatentCodec(Codec):
    """Base of learned codecs: subclasses implement the three ``_``-methods below."""

    stride: int = 64
    #: format version written by ``compress_batch``; set 1 for readers older than version 2
    format_version: int = FORMAT_VERSION
    #: images whose latent has more than tile x tile pixels (x256 image pixels) are streamed
    #: through the transforms in bands of rows, so memory follows the band, not the image
    #: (:mod:`mlcodec.tiling`)
    tile: int = DEFAULT_TILE

    def __init__(self, config: CodecConfig, device: str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)

    # -- what a subclass provides --------------------------------------------------------------
    @abc.abstractmethod
    def fingerprint(self, quality: float) -> bytes:
        """8-byte fingerprint of the weights that code this quality."""

    def fingerprints(self, quality: float) -> tuple[bytes, ...]:
        """Every fingerprint whose streams this codec decodes: the one it writes first, then those
        of older format versions of the same weights."""
        return (self.fingerprint(quality),)

    def stream_fingerprint(self, quality: float, version: int) -> bytes:
        """The fingerprint a stream of format ``version`` must carry to decode with this codec."""
        return self.fingerprint(quality)

    @abc.abstractmethod
    def _encode(self, x: torch.Tensor, quality: float) -> tuple[list[tuple[bytes, ...]], tuple[int, int, int]]:
        """Padded batch ``(B, 3, H, W)`` (float in [0, 1] or uint8 levels: pass it through
        :func:`mlcodec.tiling.tiled_analysis` or :func:`mlcodec.imageio.as_float`) to per-image
        strings and the latent shape ``(C, h, w)``."""

    @abc.abstractmethod
    def _decode(self, streams: Sequence[Bitstream]) -> torch.Tensor:
        """Same-shape, same-quality, same-version bitstreams to the batched dequantized ``y_hat``."""

    @abc.abstractmethod
    def _synthesize(self, y_hat: torch.Tensor, quality: float) -> torch.Tensor:
        """Latent to the padded reconstruction ``(B, 3, H, W)``, uint8 levels
        (:func:`mlcodec.tiling.tiled_synthesis` does both)."""

    @abc.abstractmethod
    def synthesis_transform(self, quality: float) -> torch.nn.Module:
        """The synthesis network ``g_s`` (a ``nn.Sequential``) that turns this quality's dequantized
        latents (as :meth:`decode_latents` returns them) into images. Task heads borrow its first
        layers as their stem; treat it as read-only."""

    # -- the shared pipeline -------------------------------------------------------------------
    @torch.inference_mode()
    def compress_batch(self, images: Sequence[Any], quality: float = DEFAULT_QUALITY) -> list[bytes]:
        q = float(torch.tensor(check_quality(quality), dtype=torch.float32))  # as stored (f32)
        # 8-bit sources stay uint8 levels: the transforms convert them band by band
        prepared = [to_tensor(im, what=f"image {i}", levels=True) for i, im in enumerate(images)]
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, (t, _) in enumerate(prepared):
            h, w = t.shape[-2:]
            groups[(h + -h % self.stride, w + -w % self.stride)].append(i)
        out: list[bytes] = [b""] * len(images)
        fp = self.fingerprint(q)
        shapes = [(tuple(t.shape[-2:]), mode) for t, mode in prepared]
        for size, idx in groups.items():
            # one image (a large one, say) is padded in place of a copy, several are stacked
            x = torch.cat([pad_to(prepared[i][0][None], self.stride) for i in idx]) if len(idx) > 1 \
                else pad_to(prepared[idx[0]][0][None], self.stride)
            for i in idx:  # x holds the pixels now: a large image is not kept twice while it codes
                prepared[i] = None  # type: ignore[call-overload]
            strings, latent_shape = self._encode(x.to(self.device), q)
            del x
            for i, s in zip(idx, strings):
                (h, w), mode = shapes[i]
                header = BitstreamHeader(self.config.codec_id, fp, q, (h, w), size,
                                         latent_shape, mode, self.format_version)
                out[i] = bsf.pack(Bitstream(header, s))
        return out

    def _parse(self, data: Sequence[bytes | Bitstream]) -> list[Bitstream]:
        """Unpack (or take already unpacked) bitstreams and check they are this codec's."""
        streams = []
        for i, d in enumerate(data):
            try:
                bs = d if isinstance(d, Bitstream) else bsf.unpack(d)
            except BitstreamError as e:
                raise BitstreamError(f"bitstream {i}: {e}") from None
            h = bs.header
            if h.codec_id != self.config.codec_id:
                raise BitstreamError(
                    f"bitstream {i} was written by codec id {h.codec_id}, not {self.name} "
                    f"(id {self.config.codec_id}); decode it with mlcodec.codec_for(data)"
                )
            expected = self.stream_fingerprint(h.quality, h.version)
            if h.fingerprint != expected:
                raise BitstreamError(
                    f"bitstream {i} was written with weights {h.fingerprint.hex()}, but this "
                    f"{self.name} has weights {expected.hex()}; decode it with the codec and weights it "
                    f"was made with (a trained codec: '{self.name.partition(':')[0]}:WEIGHTS_FILE')"
                )
            streams.append(bs)
        return streams

    def _grouped(self, streams: list[Bitstream]) -> dict[tuple, list[int]]:
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, bs in enumerate(streams):
            groups[(bs.header.latent_shape, bs.header.quality, bs.header.version)].append(i)
        return groups

    def _decode_all(self, streams: list[Bitstream]) -> list[torch.Tensor]:
        out: list[torch.Tensor] = [torch.empty(0)] * len(streams)
        for _, idx in self._grouped(streams).items():
            y_hat = self._decode([streams[i] for i in idx])
            for j, i in enumerate(idx):
                out[i] = y_hat[j]
        return out

    def _images(self, streams: list[Bitstream], latents: Sequence[torch.Tensor]) -> list[Image.Image]:
        out: list[Image.Image | None] = [None] * len(streams)
        for (_, q, _), idx in self._grouped(streams).items():
            y = latents[idx[0]][None] if len(idx) == 1 else torch.stack([latents[i] for i in idx])
            x_hat = self._synthesize(y.to(self.device), q)
            del y
            for j, i in enumerate(idx):
                h = streams[i].header
                oh, ow = h.original_size
                out[i] = to_pil(x_hat[j, :, :oh, :ow], h.source_mode)
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def decode_latents(self, data: Sequence[bytes | Bitstream]) -> list[torch.Tensor]:
        """Dequantized latents ``C x h x w``, from bytes or from :func:`mlcodec.bitstream.unpack`'s
        result (a caller that reads headers too unpacks, and so checks the CRC, once)."""
        return self._decode_all(self._parse(data))

    @torch.inference_mode()
    def decompress_batch(self, data: Sequence[bytes]) -> list[Image.Image]:
        streams = self._parse(data)
        return self._images(streams, self._decode_all(streams))

    @torch.inference_mode()
    def synthesize(self, latents: Sequence[torch.Tensor], data: Sequence[bytes]) -> list[Image.Image]:
        """Images from latents that ``decode_latents(data)`` returned: the synthesis transform only,
        so a caller that needs both the latents and the images entropy-decodes once."""
        streams = self._parse(data)
        if len(latents) != len(streams):
            raise ValueError(f"{len(latents)} latents for {len(streams)} bitstreams")
        for i, (y, bs) in enumerate(zip(latents, streams)):
            if tuple(y.shape) != bs.header.latent_shape:
                raise ValueError(f"latent {i} has shape {tuple(y.shape)}, its bitstream says "
                                 f"{bs.header.latent_shape}")
        return self._images(streams, latents)
