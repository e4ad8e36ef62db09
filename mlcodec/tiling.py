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

Only the transforms are tiled. The hyperprior (``h_a``, the hyper-latent, the entropy model's
scales and means) runs on the whole latent, which is 256 times smaller than the image, so the
bitstream does not depend on the tiling beyond float rounding of the latent itself, and decoding
the latent stays exact (format 3).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

#: tile side and halo in latent pixels (x16 image pixels): tiles of 512 px with 32 px halos.
#: A tile's transform holds about 130 MB (96 channels at half its size, a few GDN temporaries);
#: the halos add 27% to the work (BENCHMARKS.md, "Large images", measures both)
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


def tiled_analysis(g_a: Callable[[Tensor], Tensor], x: Tensor, stride: int = 16,
                   tile: int = DEFAULT_TILE, halo: int = DEFAULT_HALO) -> Tensor:
    """``g_a(x)`` for ``x`` ``(B, 3, H, W)`` with ``H, W`` multiples of ``stride``, computed in tiles
    of ``tile`` latent pixels when the latent is larger than one tile."""
    h, w = x.shape[-2] // stride, x.shape[-1] // stride
    if h <= tile and w <= tile:
        return g_a(x)
    out: Tensor | None = None
    for rows, cols, keep_r, keep_c in _tiles(h, w, tile, halo):
        y = g_a(x[..., _scaled(rows, stride), _scaled(cols, stride)])
        if out is None:
            out = y.new_empty(*y.shape[:2], h, w)
        out[..., rows.start + keep_r.start:rows.start + keep_r.stop,
            cols.start + keep_c.start:cols.start + keep_c.stop] = y[..., keep_r, keep_c]
    assert out is not None
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
        return post(g_s(y))
    out: Tensor | None = None
    for rows, cols, keep_r, keep_c in _tiles(h, w, tile, halo):
        x = post(g_s(y[..., rows, cols])[..., _scaled(keep_r, stride), _scaled(keep_c, stride)])
        if out is None:
            out = x.new_empty(*x.shape[:2], h * stride, w * stride)
        out[..., _scaled(slice(rows.start + keep_r.start, rows.start + keep_r.stop), stride),
            _scaled(slice(cols.start + keep_c.start, cols.start + keep_c.stop), stride)] = x
    assert out is not None
    return out


__all__ = ["DEFAULT_HALO", "DEFAULT_TILE", "tiled_analysis", "tiled_synthesis", "to_uint8"]
