"""Standard image codecs through Pillow (JPEG 4:2:0, WebP, AVIF; PNG, lossless), for baselines.

Their bytes are plain ``.jpg``/``.webp``/``.avif`` files: bitrates are those of the real files.
``quality`` in [0, 1] maps linearly to Pillow's 1..100 quality scale.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from PIL import Image, features

from mlcodec.codecs.base import DEFAULT_QUALITY, Codec, CodecConfig, check_quality
from mlcodec.imageio import to_pil, to_tensor

_FORMATS = {"jpeg": "JPEG", "webp": "WEBP", "avif": "AVIF", "png": "PNG"}


def pil_quality(quality: float) -> int:
    return 1 + round(99 * check_quality(quality))


class PillowCodec(Codec):
    def __init__(self, config: CodecConfig) -> None:
        self.config = config
        self.format = _FORMATS[config.name]
        if self.format == "AVIF" and not features.check("avif"):
            raise RuntimeError("This Pillow has no AVIF support; install Pillow >= 11.3 with AVIF")

    def _save_kwargs(self, q: int) -> dict[str, Any]:
        if self.format == "JPEG":
            return {"quality": q, "subsampling": "4:2:0", "optimize": True}
        if self.format == "WEBP":
            return {"quality": q, "method": 6}
        if self.format == "PNG":
            return {"compress_level": 6}
        return {"quality": q, "speed": 6, "subsampling": "4:2:0"}

    def compress_batch(self, images: Sequence[Any], quality: float = DEFAULT_QUALITY) -> list[bytes]:
        kwargs = self._save_kwargs(pil_quality(quality))
        out = []
        for i, im in enumerate(images):
            t, mode = to_tensor(im, what=f"image {i}")
            buf = io.BytesIO()
            to_pil(t, mode).save(buf, format=self.format, **kwargs)
            out.append(buf.getvalue())
        return out

    def decompress_batch(self, data: Sequence[bytes]) -> list[Image.Image]:
        out = []
        for i, d in enumerate(data):
            try:
                im = Image.open(io.BytesIO(d))
                im.load()
            except Exception as e:  # noqa: BLE001 - Pillow raises several types
                raise ValueError(f"bitstream {i} is not a valid {self.format} file: {e}") from e
            out.append(im if im.mode in ("L", "RGB") else im.convert("RGB"))
        return out
