"""Input conversion: PIL images, numpy arrays and tensors to one float RGB tensor.

The documented rule (also in the README):

* ``L`` / ``1`` (grayscale, bilevel): replicated to RGB for coding; the bitstream records the
  source as grayscale and ``decompress`` returns an ``L`` image.
* ``RGBA`` / ``LA`` / ``P`` with transparency: alpha is composited over white, then as above.
* 16-bit and 32-bit integer (``I;16``, ``I``) and float (``F``) images: scaled to 8 bits
  (``I;16``/``I`` by their 16-bit range, ``F`` clipped to [0, 1]) before coding.
* Other modes (``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``) are converted by Pillow to RGB.
* numpy arrays: ``HxW`` (gray), ``HxWx1``, ``HxWx3`` or ``HxWx4``; ``uint8``, ``uint16``
  (scaled by 1/257) or float in [0, 1].
* tensors: ``CxHxW`` (C in 1, 3, 4) or ``1xCxHxW``, uint8 or float in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def _from_array(a: np.ndarray, what: str, levels: bool = False) -> tuple[torch.Tensor, str]:
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"{what}: expected HxW, HxWx1, HxWx3 or HxWx4, got shape {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{what}: empty image of shape {a.shape}")
    if a.dtype == np.uint8 and levels and a.shape[2] != 4:
        a = np.ascontiguousarray(a)  # Pillow's arrays are read-only: copy (uint8, cheap)
        return _to_rgb(torch.from_numpy(a if a.flags.writeable else a.copy()).permute(2, 0, 1))
    if a.dtype == np.uint8:
        f = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        f = a.astype(np.float32) / 65535.0
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ValueError(f"{what}: float image contains NaN or infinity")
        f = np.clip(a.astype(np.float32), 0.0, 1.0)
    else:
        raise ValueError(f"{what}: unsupported dtype {a.dtype}; use uint8, uint16 or float")
    t = torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1)
    return _to_rgb(t)


def _to_rgb(t: torch.Tensor) -> tuple[torch.Tensor, str]:
    """``CxHxW`` float in [0, 1] (or uint8 levels, C in (1, 3)) with C in (1, 3, 4) to RGB; alpha
    composited over white."""
    if t.shape[0] == 4:
        rgb, alpha = t[:3], t[3:]
        return rgb * alpha + (1.0 - alpha), "RGB"
    if t.shape[0] == 1:
        return t.expand(3, -1, -1).contiguous(), "L"
    return t, "RGB"


def _from_pil(im: Image.Image, what: str, levels: bool = False) -> tuple[torch.Tensor, str]:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.int64)
        return _from_array(np.clip(a, 0, 65535).astype(np.uint16), what)
    if mode == "F":
        return _from_array(np.asarray(im, dtype=np.float32), what)
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGB")
    if im.mode == "LA":
        im = im.convert("RGBA")
    return _from_array(np.asarray(im), what, levels)


def to_tensor(image: object, what: str = "image", levels: bool = False) -> tuple[torch.Tensor, str]:
    """Convert one image to a ``3xHxW`` float32 tensor in [0, 1] and its source mode (RGB/L).

    With ``levels``, 8-bit RGB and grayscale sources come back as uint8 levels instead (a quarter
    of the memory; :func:`as_float` converts them, e.g. band by band); other sources as float.
    """
    if isinstance(image, Image.Image):
        return _from_pil(image, what, levels)
    if isinstance(image, np.ndarray):
        return _from_array(image, what, levels)
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 3 or t.shape[0] not in (1, 3, 4) or t.shape[1] < 1 or t.shape[2] < 1:
            raise ValueError(f"{what}: expected a CxHxW tensor with C in (1, 3, 4), got {tuple(t.shape)}")
        if t.dtype == torch.uint8 and levels and t.shape[0] != 4:
            return _to_rgb(t)
        if t.dtype == torch.uint8:
            t = t.float() / 255.0
        elif t.is_floating_point():
            if not torch.isfinite(t).all():
                raise ValueError(f"{what}: tensor contains NaN or infinity")
            t = t.float().clamp(0.0, 1.0)
        else:
            raise ValueError(f"{what}: unsupported tensor dtype {t.dtype}; use uint8 or float")
        return _to_rgb(t)
    raise TypeError(
        f"{what}: expected a PIL image, numpy array or torch tensor, got {type(image).__name__}"
    )


def as_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 levels to float in [0, 1] (as :func:`to_tensor` computes them); float passes as is."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def to_pil(x: torch.Tensor, mode: str = "RGB") -> Image.Image:
    """``3xHxW`` float tensor in [0, 1], or uint8 levels, to a PIL image (``L`` images take the
    channel mean)."""
    x = x.detach().cpu()
    if x.dtype == torch.uint8:
        if mode == "L":
            return Image.fromarray((x.float().mean(0)).round_().to(torch.uint8).numpy(), "L")
        return _merge_planes(x)
    if mode == "L":
        return Image.fromarray((x.mean(0).clamp_(0, 1) * 255.0).round_().to(torch.uint8).numpy(), "L")
    return _merge_planes((x.clamp(0, 1) * 255.0).round_().to(torch.uint8))  # one float copy


def _merge_planes(x: torch.Tensor) -> Image.Image:
    """``3xHxW`` uint8 levels to an RGB image, plane by plane: each plane is lent to Pillow without
    a copy (``frombuffer``), so a large image is not held a third time in an HxWx3 copy."""
    planes = [x[c].contiguous() for c in range(3)]  # views already, unless x is a crop
    h, w = x.shape[-2:]
    return Image.merge("RGB", [Image.frombuffer("L", (w, h), p.numpy(), "raw", "L", 0, 1) for p in planes])
