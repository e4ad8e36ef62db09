"""The codec interface every registry entry implements."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

DEFAULT_QUALITY = 0.5


@dataclass(frozen=True)
class CodecConfig:
    """One row of the registry: stable name and numeric id, kind, and what builds it."""

    name: str
    codec_id: int  # written into every bitstream; never reuse or renumber
    kind: str  # "learned" (latent bitstreams) or "pixel" (standard image files)
    description: str
    builder: Any  # callable(config, pretrained: bool, device: str) -> Codec
    weights: str | None = None  # packaged safetensors file, for learned codecs
    file_extension: str = ".mlc"
    #: packaged weights of earlier releases, oldest first: ``NAME@1`` is the first; ``NAME@N`` for
    #: N = len(earlier) + 1 is ``weights``. Streams name theirs by fingerprint (``codec_for``).
    earlier: tuple[str, ...] = ()

    @property
    def releases(self) -> int:
        return len(self.earlier) + 1


def check_quality(quality: float) -> float:
    q = float(quality)
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quality must be a float in [0, 1] (0 = smallest files), got {quality}")
    return q


class Codec(abc.ABC):
    """``compress`` images to bytes and back; learned codecs also expose their latent.

    ``quality`` is a float in [0, 1]: 0 gives the smallest files, 1 the best quality.
    """

    config: CodecConfig

    @property
    def name(self) -> str:
        return self.config.name

    @abc.abstractmethod
    def compress_batch(self, images: Sequence[Any], quality: float = DEFAULT_QUALITY) -> list[bytes]:
        """Compress several images (any mix of sizes and input types)."""

    @abc.abstractmethod
    def decompress_batch(self, data: Sequence[bytes]) -> list[Image.Image]:
        """Decode several bitstreams to PIL images."""

    def compress(self, image: Any, quality: float = DEFAULT_QUALITY) -> bytes:
        return self.compress_batch([image], quality)[0]

    def decompress(self, data: bytes) -> Image.Image:
        return self.decompress_batch([data])[0]

    def decode_latents(self, data: Sequence[bytes]) -> list[torch.Tensor]:
        raise TypeError(
            f"{self.name} is a pixel codec and has no latent; use a learned codec "
            f"(see mlcodec.list_codecs(kind='learned'))"
        )

    def decode_latent(self, data: bytes) -> torch.Tensor:
        """The dequantized latent ``y_hat`` (``C x H/16 x W/16`` of the padded image)."""
        return self.decode_latents([data])[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
