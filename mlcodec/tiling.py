"""Analysis and synthesis transforms in tiles: memory bounded by the tile, not the image.

The learned codecs' transforms are stacks of 5x5 convolutions (``g_a``) or transposed
convolutions (``g_s``) of stride 2, four of each, with pointwise GDN between them: a latent pixel
depends on the input pixels within about ±30 of its centre (under two latent pixels at stride
16), and an output pixel on the latent pixels within ±1.9 of its position. Running a transform on
tiles that are aligned to the latent grid, each with a halo of ``halo`` latent pixels (2 by
default, which covers the receptive field: 1 does not), and keeping only each tile's own part
gives what one pass over the whole image gives, up to float rounding, with no seams: zero padding
at the image border is the same in both, and every tile starts on a multiple of every stride
(tested against whole-image passes).

The input image may be uint8 levels: each tile is converted to float on its own, so the image is
never held as float (four times its bytes). At inference the transforms run through
:func:`lean_forward`, which computes each GDN in place: per layer, two buffers of a tile's
activations instead of four, so fewer allocations and a lower peak. When a transform has run in
tiles, the heap that :func:`mlcodec.allocator.keep_freed_memory` kept for them is released.

Only the transforms are tiled. The hyperprior (``h_a``, the hyper-latent, the entropy model's
scales and means) runs on the whole latent, which is 256 times smaller than the image, so the
bitstream does not depend on the tiling beyond float rounding of the latent itself, and decoding
the latent stays exact (format 3).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from compressai.layers import GDN
from torch import Tensor, nn

from mlcodec.allocator import release_freed_memory
from mlcodec.imageio import as_float

#: tile side and halo in latent pixels (x16 image pixels): tiles of 512 px with 32 px halos.
#: A tile's transform holds about 100 MB (96 channels at half its size, one GDN temporary);
#: the halos add 23% to the work at 4096 px (BENCHMARKS.md, "Large images", measures both, and
#: why larger tiles did not pay here)
DEFAULT_TILE = 32
DEFAULT_HALO = 2


def _tiles(h: int, w: int, tile: int, halo: int) -> Iterator[tuple[slice, slice, slice, slice]]:
    """(rows, cols) of each tile with its halo, and of the tile within that window, in latent
    pixels."""
    for i0 in range(0, h, tile):
        for j0 in range(0, w, tile):
            i1, j1 = min(i0 + tile, h), min(j0 + tile, w)
            a0, b0, a1, b1 = max(i0 - halo, 0), max(j0 - halo, 0), min(i1 + halo, h), min(j1 + halo, w)
            yield (slice(a0, a1), slice(b0, b1), slice(i0 - a0, i1 - a0), slice(j0 - b0, j1 - b0))


def _scaled(s: slice, k: int) -> slice:
    return slice(s.start * k, s.stop * k)


def _gdn_(gdn: GDN, x: Tensor) -> Tensor:
    """CompressAI's ``GDN.forward`` (the same operations, so the same values), computing the
    normalisation in place and scaling ``x`` in place."""
    c = x.shape[1]
    beta, gamma = gdn.beta_reparam(gdn.beta), gdn.gamma_reparam(gdn.gamma).reshape(c, c, 1, 1)
    norm = F.conv2d(x * x, gamma, beta)
    return x.mul_(norm.sqrt_() if gdn.inverse else norm.rsqrt_())


def lean_forward(transform: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``transform(x)``; an ``nn.Sequential`` outside autograd runs its GDN layers in place
    (:func:`_gdn_`), on the buffers the layers before them allocated."""
    if not isinstance(transform, nn.Sequential) or torch.is_grad_enabled():
        return transform(x)
    for i, layer in enumerate(transform):
        x = _gdn_(layer, x) if isinstance(layer, GDN) and i > 0 else layer(x)
    return x


def tiled_analysis(g_a: Callable[[Tensor], Tensor], x: Tensor, stride: int = 16,
                   tile: int = DEFAULT_TILE, halo: int = DEFAULT_HALO) -> Tensor:
    """``g_a(x)`` for ``x`` ``(B, 3, H, W)`` (float in [0, 1] or uint8 levels) with ``H, W``
    multiples of ``stride``, computed in tiles of ``tile`` latent pixels when the latent is larger
    than one tile."""
    h, w = x.shape[-2] // stride, x.shape[-1] // stride
    if h <= tile and w <= tile:
        return lean_forward(g_a, as_float(x))
    out: Tensor | None = None
    for rows, cols, keep_r, keep_c in _tiles(h, w, tile, halo):
        y = lean_forward(g_a, as_float(x[..., _scaled(rows, stride), _scaled(cols, stride)]))
        if out is None:
            out = y.new_empty(*y.shape[:2], h, w)
        out[..., rows.start + keep_r.start:rows.start + keep_r.stop,
            cols.start + keep_c.start:cols.start + keep_c.stop] = y[..., keep_r, keep_c]
        del y
    assert out is not None
    release_freed_memory()
    return out


def to_uint8(x: Tensor) -> Tensor:
    """Images in [0, 1] (float) to uint8 levels, in place where it can."""
    return x.clamp_(0, 1).mul_(255.0).round_().to(torch.uint8)


def tiled_synthesis(g_s: Callable[[Tensor], Tensor], y: Tensor, stride: int = 16,
                    tile: int = DEFAULT_TILE, halo: int = DEFAULT_HALO,
                    post: Callable[[Tensor], Tensor] = to_uint8) -> Tensor:
    """``post(g_s(y))`` for a latent ``(B, C, h, w)``, computed in tiles of ``tile`` latent pixels
    when the latent is larger than one tile; ``post`` (by default: to uint8 levels) runs on each
    tile, so only its result is held for the whole image."""
    h, w = y.shape[-2:]
    if h <= tile and w <= tile:
        return post(lean_forward(g_s, y))
    out: Tensor | None = None
    for rows, cols, keep_r, keep_c in _tiles(h, w, tile, halo):
        x = post(lean_forward(g_s, y[..., rows, cols])[..., _scaled(keep_r, stride), _scaled(keep_c, stride)])
        if out is None:
            out = x.new_empty(*x.shape[:2], h * stride, w * stride)
        out[..., _scaled(slice(rows.start + keep_r.start, rows.start + keep_r.stop), stride),
            _scaled(slice(cols.start + keep_c.start, cols.start + keep_c.stop), stride)] = x
        del x
    assert out is not None
    release_freed_memory()
    return out


__all__ = ["DEFAULT_HALO", "DEFAULT_TILE", "lean_forward", "tiled_analysis", "tiled_synthesis",
           "to_uint8"]
