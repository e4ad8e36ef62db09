"""``mlcodec demo``: compress built-in photos end to end and report bytes, bpp and PSNR.

Each photo is compressed with the default codec, written as ``.mlc``, read back, decoded to PNG
and its latent decoded; JPEG (4:2:0) at the largest quality that fits the same bytes is shown
beside it for reference.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from mlcodec.codecs.base import Codec
from mlcodec.data.photos import evaluation_photos
from mlcodec.metrics import bpp, psnr


@dataclass(frozen=True)
class DemoRow:
    name: str
    size: tuple[int, int]
    num_bytes: int
    bpp: float
    psnr: float
    latent_shape: tuple[int, ...]
    encode_ms: float
    decode_ms: float
    jpeg_bytes: int
    jpeg_psnr: float


def jpeg_within(image: Image.Image, max_bytes: int) -> tuple[int, Image.Image]:
    """Largest-quality JPEG (4:2:0) no larger than ``max_bytes`` (quality 1 if none fits)."""
    def encode(q: int) -> bytes:
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=q, subsampling="4:2:0", optimize=True)
        return buf.getvalue()

    best, lo, hi = None, 1, 95
    while lo <= hi:
        q = (lo + hi) // 2
        data = encode(q)
        if len(data) <= max_bytes:
            best, lo = data, q + 1
        else:
            hi = q - 1
    best = best if best is not None else encode(1)
    return len(best), Image.open(io.BytesIO(best)).convert("RGB")


def run_demo(codec: Codec, out_dir: Path, quality: float, max_side: int = 256) -> list[DemoRow]:
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    photos = evaluation_photos(max_side=max_side)
    # one untimed round trip: one-off set-up (per-quality tables, loading the compiled entropy
    # decoder) is not what an image costs
    codec.decompress(codec.compress(photos[0].image, quality=quality))
    for photo in photos:
        image = photo.image
        t0 = time.perf_counter()
        data = codec.compress(image, quality=quality)
        t1 = time.perf_counter()
        path = out_dir / f"{photo.name}.mlc"
        path.write_bytes(data)
        decoded = codec.decompress(path.read_bytes())
        t2 = time.perf_counter()
        decoded.save(out_dir / f"{photo.name}.png")
        latent = codec.decode_latent(data)
        jpeg_bytes, jpeg_image = jpeg_within(image, len(data))
        rows.append(DemoRow(photo.name, image.size, len(data), bpp(len(data), image),
                            psnr(image, decoded), tuple(latent.shape), 1000 * (t1 - t0),
                            1000 * (t2 - t1), jpeg_bytes, psnr(image, jpeg_image)))
    return rows


def format_rows(rows: list[DemoRow]) -> str:
    head = (f"{'image':<12} {'size':>9} {'bytes':>7} {'bpp':>6} {'PSNR':>6} {'latent':>12} "
            f"{'enc ms':>7} {'dec ms':>7} | {'JPEG bytes':>10} {'JPEG PSNR':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.name:<12} {r.size[0]:>4}x{r.size[1]:<4} {r.num_bytes:>7} {r.bpp:>6.3f} "
            f"{r.psnr:>6.2f} {'x'.join(map(str, r.latent_shape)):>12} {r.encode_ms:>7.1f} "
            f"{r.decode_ms:>7.1f} | {r.jpeg_bytes:>10} {r.jpeg_psnr:>9.2f}"
        )
    return "\n".join(lines)
