# One module of this size on purpose: the streamed transforms, the tiled fallback and the
# geometry they share (halo_plan, the sub-pixel form of transposed convolutions) must agree row for
# row; split, a change to one geometry would not be seen next to its users.
"""Analysis and synthesis transforms in bands and strips: memory bounded by the band, not the image.

The learned codecs' transforms are stacks of 5x5 convolutions (``g_a``) or transposed
convolutions (``g_s``) of stride 2, four of each, with pointwise GDN between them: a latent pixel
depends on the input pixels within 30 of its position, and an output pixel on the latent pixels
within 2 of its position (:func:`halo_plan` works these reaches out per layer).

An image whose latent has at most ``tile`` x ``tile`` pixels runs in one pass. A larger one is
**streamed by rows**: its input is read a band of rows at a time, and every convolution keeps
the few input rows its next output rows read (:class:`_RowConv`), adding the zero rows of its
padding at the image's top and bottom. Rows are computed once each, the result equals one
whole-image pass up to float rounding (in practice bit for bit for the analysis), and memory
follows the band (2 to 4 latent rows of a strip), not the image. Images wider than
``strip`` latent pixels (4096 px) are cut into strips whose windows overlap by a halo of ``halo``
latent pixels (2 by default, which covers the receptive field: 1 does not); after each
convolution a strip keeps only the columns that the later layers read, so a halo costs what the
receptive field needs and no more. Stacks with layers whose reach is not known run in square
tiles with halos instead (:func:`_tiled`). An earlier version ran every image in square tiles of
32 latent pixels with whole halos, which redid a quarter of the work at 4096 px
(docs/experiments/large-images.md).

The input image may be uint8 levels: each band is converted to float on its own, so the image is
never held as float (four times its bytes). At inference the transforms run through
:func:`lean_forward` (or its streamed equivalent), which computes each GDN in place and each
transposed convolution as a stride-1 convolution followed by ``pixel_shuffle``
(:func:`_subpixel_weight`): the same products, faster on oneDNN. When a transform has been
streamed, the heap that :func:`mlcodec.allocator.keep_freed_memory` kept for its bands is
released.

Only the transforms are streamed. The hyperprior (``h_a``, the hyper-latent, the entropy model's
scales and means) runs on the whole latent, which is 256 times smaller than the image, so the
bitstream does not depend on the streaming beyond float rounding of the latent itself, and
decoding the latent stays exact (format 3).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from compressai.layers import GDN
from torch import Tensor, nn

from mlcodec.allocator import release_freed_memory
from mlcodec.imageio import as_float

#: images whose latent has at most DEFAULT_TILE² pixels (1,936: 704x704 px, 640x480 px) run in one
#: pass; larger ones are streamed in bands of DEFAULT_BAND latent pixels, in strips with halos of 2
#: latent px where wider than DEFAULT_STRIP: the size where streaming starts to win over one whole
#: pass (benchmarks/studies/streaming.py, docs/experiments/large-images.md)
DEFAULT_TILE = 44
DEFAULT_HALO = 2
#: widest strip, in latent pixels (4096 px): wider images are streamed in strips with halos
DEFAULT_STRIP = 256
#: latent pixels per band: 2 rows of a 4096 px strip, 4 rows (the most) of one up to 2048 px.
#: Bands of 2 to 4 rows ran fastest: 1 row pays for the rows each convolution keeps, 16 rows spill
#: the activations out of the caches, and more rows cost memory (docs/experiments/large-images.md)
DEFAULT_BAND = 512


def _band_rows(band: int, width: int) -> int:
    """Latent rows per band of a strip ``width`` latent pixels wide: ``band`` latent pixels, at
    least 2 rows and at most 4."""
    return min(4, max(2, band // width))


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
    (:func:`_gdn_`, on the buffers the layers before them allocated: the same values) and its
    transposed convolutions in sub-pixel form (:func:`_subpixel_weight`: the same values up to
    float rounding)."""
    if not isinstance(transform, nn.Sequential) or torch.is_grad_enabled():
        return transform(x)
    for i, layer in enumerate(transform):
        x = layer(x) if i == 0 and isinstance(layer, GDN) else _apply(layer, x)
    return x


def _apply(layer: nn.Module, x: Tensor) -> Tensor:
    if isinstance(layer, GDN):
        return _gdn_(layer, x)
    if isinstance(layer, nn.ConvTranspose2d):
        return _conv_transpose(layer, x)
    return layer(x)


def _has_subpixel_form(layer: nn.Module) -> bool:
    """Whether a transposed convolution has a sub-pixel form (:func:`_subpixel_weight`): a plain
    geometry (:func:`_geometry`) and an output exactly ``stride`` times its input."""
    geo = _geometry(layer)
    if geo is None or not geo[3]:
        return False
    k, s, p, _ = geo
    op = layer.output_padding  # type: ignore[union-attr]
    return k + op[0] - 2 * p == s and op[0] == op[1]


def _subpixel_weight(layer: nn.ConvTranspose2d) -> tuple[Tensor, Tensor | None, int, int] | None:
    """The transposed convolution as a stride-1 convolution followed by ``pixel_shuffle`` (the
    sub-pixel form): ``(weight, bias, pad_before, pad_after)``, or None where it has none
    (:func:`_has_subpixel_form`).

    Output pixel ``o = s*m + r`` takes input ``i`` through kernel tap ``o + p - s*i``; for each
    phase ``r`` those taps form a small stride-1 kernel. The same products summed in another
    order, so equal up to float rounding, and oneDNN runs the convolution faster than the
    transposed one (docs/experiments/large-images.md)."""
    if not _has_subpixel_form(layer):
        return None
    k, s, p, _ = _geometry(layer)  # type: ignore[misc]
    # phase r uses taps kk = r + p + s*t, t in [lo, hi], reading input i = m - t
    lo = min(-((r + p) // s) for r in range(s))
    hi = max((k - 1 - r - p) // s for r in range(s))
    size = hi - lo + 1
    w_t = layer.weight.detach()  # (C_in, C_out, k, k)
    c_in, c_out = w_t.shape[:2]
    w = w_t.new_zeros(c_out, s, s, c_in, size, size)
    for ry in range(s):
        for rx in range(s):
            for ty in range(lo, hi + 1):
                for tx in range(lo, hi + 1):
                    ky, kx = ry + p + s * ty, rx + p + s * tx
                    if 0 <= ky < k and 0 <= kx < k:
                        # input m - t sits at offset hi - t of the window that starts at m - hi
                        w[:, ry, rx, :, hi - ty, hi - tx] = w_t[:, :, ky, kx].T
    bias = None if layer.bias is None else layer.bias.detach().repeat_interleave(s * s)
    return w.reshape(c_out * s * s, c_in, size, size), bias, hi, -lo


#: each layer's sub-pixel form with the state of the weights it was built from: building it costs
#: a noticeable part of a small decode, so it is built once per weights, not per call. Weak keys: the
#: memo never keeps a model alive; the key's versions: a trained or reloaded layer is rebuilt
_SUBPIXEL_MEMO: weakref.WeakKeyDictionary[nn.ConvTranspose2d, tuple[tuple, tuple | None]] = \
    weakref.WeakKeyDictionary()


def _weights_state(layer: nn.ConvTranspose2d) -> tuple | None:
    """What identifies a layer's current weight values: storage, in-place version, dtype, device.
    None for inference tensors (made under ``torch.inference_mode``), which keep no version, so
    an in-place change could not be seen."""
    ts = [t for t in (layer.weight, layer.bias) if t is not None]
    if any(t.is_inference() for t in ts):
        return None
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in ts)


def _subpixel_form(layer: nn.ConvTranspose2d) -> tuple[Tensor, Tensor | None, int, int] | None:
    """:func:`_subpixel_weight`, memoised per layer while its weights are unchanged (built anew
    each call for inference-tensor weights)."""
    state = _weights_state(layer)
    if state is None:
        return _subpixel_weight(layer)
    hit = _SUBPIXEL_MEMO.get(layer)
    if hit is not None and hit[0] == state:
        return hit[1]  # type: ignore[return-value]
    form = _subpixel_weight(layer)
    _SUBPIXEL_MEMO[layer] = (state, form)
    return form


def _conv_transpose(layer: nn.ConvTranspose2d, x: Tensor) -> Tensor:
    """``layer(x)``, in sub-pixel form where it applies (:func:`_subpixel_weight`)."""
    form = _subpixel_form(layer)
    if form is None:
        return layer(x)
    w, bias, before, after = form
    if before != after:
        x, before = F.pad(x, (before, after, before, after)), 0
    return F.pixel_shuffle(F.conv2d(x, w, bias, padding=before), layer.stride[0])


#: layers that act on each pixel alone: a tile's halo passes through them unchanged
_POINTWISE = (GDN, nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Identity, nn.Sigmoid, nn.Tanh)


def _geometry(layer: nn.Module) -> tuple[int, int, int, bool] | None:
    """(kernel, stride, padding, transposed) of a plain square 2-d convolution, else None."""
    if not isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)) or layer.padding_mode != "zeros":
        return None
    (k, k2), (s, s2), pad, dil = layer.kernel_size, layer.stride, layer.padding, layer.dilation
    if isinstance(pad, str) or k != k2 or s != s2 or pad[0] != pad[1] or dil != (1, 1) or layer.groups != 1:
        return None
    return k, s, pad[0], isinstance(layer, nn.ConvTranspose2d)


def halo_plan(transform: Callable[[Tensor], Tensor]) -> tuple[int, list[int]] | None:
    """How far beyond a tile each layer of a convolution stack must compute for the tile's own
    output to be exact: ``(input halo, [halo of each layer's output])``, each in its own pixels,
    worked back from 0 at the last layer. None where a layer's reach is not known (a tile then runs
    every layer on its whole window).

    A convolution (kernel k, stride s, padding p) whose output needs a halo of h reads
    ``s*h + max(p, k-s-p)`` input pixels beyond the tile (rounded up to a multiple of s, so
    that a cut input starts on the stride's grid); a transposed one reads
    ``max((h+k-1-p) // s, 1 + (h+p-1) // s)``. For the codecs' four 5x5 layers of stride 2 the
    analysis reads 30 image pixels beyond a tile (a window of 2 latent pixels holds 32) and needs
    14, 6, 2 and 0 after its convolutions; the synthesis reads 2 latent pixels and needs 2, 2, 1
    and 0 (its window computes 4, 8, 16 and 32)."""
    if not isinstance(transform, nn.Sequential):
        return None
    need, halos = 0, []
    for layer in reversed(transform):
        halos.append(need)
        if isinstance(layer, _POINTWISE):
            continue
        geo = _geometry(layer)
        if geo is None:
            return None
        k, s, p, transposed = geo
        if transposed:
            need = max((need + k - 1 - p) // s, 1 + (need + p - 1) // s)
        else:  # rounded up to a multiple of s, so a tile's cut input starts on the stride's grid
            need = s * need + max(p, k - s - p)
            need += -need % s
    return need, halos[::-1]


def _cut_cols(x: Tensor, off: int, keep: slice, res: int, halo: int) -> tuple[Tensor, int]:
    """``x`` (covering its strip's window from column ``off``, in its own pixels, ``res`` of them
    per latent pixel) cut to the strip's own columns ``keep`` (latent pixels within the window)
    plus ``halo``."""
    lo, hi = max(keep.start * res - halo, off), min(keep.stop * res + halo, off + x.shape[-1])
    if lo == off and hi == off + x.shape[-1]:
        return x, off
    return x[..., lo - off:hi - off].contiguous(), lo


class _RowConv:
    """A convolution fed its input a band of rows at a time, full width (of its strip): it keeps
    the rows that its next output rows still read, and adds the zero rows of its padding at the
    top and bottom of the image, so the rows it returns are the whole pass's rows, each computed
    once. A transposed convolution runs in sub-pixel form, as a stride-1 one."""

    def __init__(self, layer: nn.Module, height: int) -> None:
        k, s, p, transposed = _geometry(layer)  # type: ignore[misc]
        self.shuffle = 1
        if transposed:
            w, bias, before, after = _subpixel_weight(layer)  # type: ignore[misc]
            self.shuffle, self.stride = s, 1
        else:
            w, before, after, self.stride = layer.weight.detach(), p, p, s
            bias = None if layer.bias is None else layer.bias.detach()
        self.weight, self.bias, self.pads = w, bias, (before, after)
        self.kernel = w.shape[-1]
        self.height = height
        self.n_out = (height + before + after - self.kernel) // self.stride + 1
        self.buf: Tensor | None = None
        self.fed = 0
        self.first = 0  # padded input row of buf's first row
        self.done = 0  # output rows returned

    def __call__(self, rows: Tensor) -> Tensor | None:
        before, after = self.pads
        zeros = lambda n: rows.new_zeros(*rows.shape[:-2], n, rows.shape[-1])  # noqa: E731
        parts = [zeros(before)] if self.buf is None else [self.buf]
        parts.append(rows)
        self.fed += rows.shape[-2]
        if self.fed == self.height:
            parts.append(zeros(after))
        buf = torch.cat(parts, -2) if len(parts) > 1 else rows
        n = min((self.first + buf.shape[-2] - self.kernel) // self.stride + 1, self.n_out) - self.done
        if n <= 0:
            self.buf = buf
            return None
        start = self.stride * self.done - self.first
        seg = buf[..., start:start + self.stride * (n - 1) + self.kernel, :]
        if before == after:
            out = F.conv2d(seg, self.weight, self.bias, stride=self.stride, padding=(0, before))
        else:
            out = F.conv2d(F.pad(seg, (before, after)), self.weight, self.bias, stride=self.stride)
        self.done += n
        drop = self.stride * self.done - self.first
        # a copy of the few kept rows, so the band they came from is freed now
        self.buf, self.first = buf[..., drop:, :].clone(), self.first + drop
        return F.pixel_shuffle(out, self.shuffle) if self.shuffle > 1 else out


def _streamable(transform: Callable[[Tensor], Tensor]) -> bool:
    """A stack that :func:`_stream` can run: plain convolutions (transposed ones in sub-pixel
    form) and pointwise layers."""
    if halo_plan(transform) is None:
        return False
    assert isinstance(transform, nn.Sequential)
    return all(not isinstance(m, nn.ConvTranspose2d) or _has_subpixel_form(m) for m in transform)


def _stream(transform: nn.Sequential, x: Tensor, keep: slice, res: int, band: int,
            emit: Callable[[Tensor], None]) -> None:
    """``transform(x)`` for one strip's window ``x`` (float or uint8 levels, ``res`` of its pixels
    per latent pixel), its columns cut to the strip ``keep`` (latent pixels within the window),
    passed to ``emit`` a band of rows at a time, top to bottom. Input is read ``band`` latent rows
    at a time; every convolution keeps the few rows its next outputs read (:class:`_RowConv`), so
    no row is computed twice, and each convolution's output keeps only the columns that later
    layers need (:func:`halo_plan`)."""
    plan = halo_plan(transform)
    assert plan is not None
    in_halo, halos = plan
    stages: list[tuple[nn.Module, _RowConv | None, int]] = []
    height = x.shape[-2]
    for layer, halo in zip(transform, halos):
        geo = _geometry(layer)
        if geo is None:
            stages.append((layer, None, halo))
            continue
        conv = _RowConv(layer, height)
        height = conv.n_out * conv.shuffle
        stages.append((layer, conv, halo))
    x, off0 = _cut_cols(x, 0, keep, res, in_halo)
    for r0 in range(0, x.shape[-2], band * res):
        t: Tensor | None = as_float(x[..., r0:r0 + band * res, :])
        off, r = off0, res
        for i, (layer, conv, halo) in enumerate(stages):
            if conv is None:
                t = layer(t) if i == 0 and isinstance(layer, GDN) else _apply(layer, t)
                continue
            t = conv(t)
            if t is None:
                break
            s = layer.stride[0]  # type: ignore[index]
            if conv.shuffle > 1:
                r, off = r * s, off * s
            else:
                assert r % s == 0 and off % s == 0, "strips sit on every stride"
                r, off = r // s, off // s
            t, off = _cut_cols(t, off, keep, r, halo)
        if t is not None:
            emit(t[..., keep.start * r - off:keep.stop * r - off])


def _strips(w: int, strip: int, halo: int) -> Iterator[tuple[slice, slice]]:
    """Columns of each strip with its halo, and of the strip within that window, in latent
    pixels."""
    for j0 in range(0, w, strip):
        j1 = min(j0 + strip, w)
        b0, b1 = max(j0 - halo, 0), min(j1 + halo, w)
        yield slice(b0, b1), slice(j0 - b0, j1 - b0)


def tiled_analysis(g_a: Callable[[Tensor], Tensor], x: Tensor, stride: int = 16,
                   tile: int = DEFAULT_TILE, halo: int = DEFAULT_HALO,
                   strip: int = DEFAULT_STRIP, band: int = DEFAULT_BAND) -> Tensor:
    """``g_a(x)`` for ``x`` ``(B, 3, H, W)`` (float in [0, 1] or uint8 levels) with ``H, W``
    multiples of ``stride``: in one pass when the latent has at most ``tile`` x ``tile`` pixels, else
    streamed by rows in strips of at most ``strip`` latent columns (with ``halo`` on each side), a
    band of about ``band`` latent pixels (2 to 4 rows) at a time."""
    h, w = x.shape[-2] // stride, x.shape[-1] // stride
    if h * w <= tile * tile:
        return lean_forward(g_a, as_float(x))
    if not _streamable(g_a):
        return _tiled(g_a, x, stride, 1, tile, halo, lambda v: v)
    return _streamed(g_a, x, stride, 1, strip, halo, band, lambda v: v)


def to_uint8(x: Tensor) -> Tensor:
    """Images in [0, 1] (float) to uint8 levels, in place where it can."""
    return x.clamp_(0, 1).mul_(255.0).round_().to(torch.uint8)


def tiled_synthesis(g_s: Callable[[Tensor], Tensor], y: Tensor, stride: int = 16,
                    tile: int = DEFAULT_TILE, halo: int = DEFAULT_HALO,
                    post: Callable[[Tensor], Tensor] = to_uint8, strip: int = DEFAULT_STRIP,
                    band: int = DEFAULT_BAND) -> Tensor:
    """``post(g_s(y))`` for a latent ``(B, C, h, w)``: in one pass when it has at most ``tile`` x
    ``tile`` pixels, else streamed as :func:`tiled_analysis` streams; ``post`` (by default: to uint8
    levels) runs on each band, so only its result is held for the whole image."""
    h, w = y.shape[-2:]
    if h * w <= tile * tile:
        return post(lean_forward(g_s, y))
    if not _streamable(g_s):
        return _tiled(g_s, y, 1, stride, tile, halo, post)
    return _streamed(g_s, y, 1, stride, strip, halo, band, post)


def _streamed(transform: Callable[[Tensor], Tensor], x: Tensor, res: int, out_res: int, strip: int,
              halo: int, band: int, post: Callable[[Tensor], Tensor]) -> Tensor:
    """``post(transform(x))`` streamed (:func:`_stream`) in strips of at most ``strip`` latent
    columns; ``x`` has ``res`` pixels per latent pixel, the output ``out_res``."""
    assert isinstance(transform, nn.Sequential)
    h, w = x.shape[-2] // res, x.shape[-1] // res
    release_freed_memory()  # what earlier steps left in the heap, so the bands start from a lean one
    out: Tensor | None = None
    for cols, keep in _strips(w, strip, halo):
        c0, row = (cols.start + keep.start) * out_res, 0

        def emit(t: Tensor) -> None:
            nonlocal out, row
            t = post(t)
            if out is None:
                out = t.new_empty(*t.shape[:2], h * out_res, w * out_res)
            out[..., row:row + t.shape[-2], c0:c0 + t.shape[-1]] = t
            row += t.shape[-2]

        rows = _band_rows(band, keep.stop - keep.start)
        _stream(transform, x[..., _scaled(cols, res)], keep, res, rows, emit)
    assert out is not None
    release_freed_memory()
    return out


def _tiled(transform: Callable[[Tensor], Tensor], x: Tensor, res: int, out_res: int, tile: int,
           halo: int, post: Callable[[Tensor], Tensor]) -> Tensor:
    """``post(transform(x))`` in square tiles with halos, each run whole: for stacks whose layers'
    reach is not known (:func:`halo_plan`), so they cannot be streamed."""
    h, w = x.shape[-2] // res, x.shape[-1] // res
    out: Tensor | None = None
    for rows, cols, keep_r, keep_c in _tiles(h, w, tile, halo):
        y = lean_forward(transform, as_float(x[..., _scaled(rows, res), _scaled(cols, res)]))
        y = post(y[..., _scaled(keep_r, out_res), _scaled(keep_c, out_res)])
        if out is None:
            out = y.new_empty(*y.shape[:2], h * out_res, w * out_res)
        out[..., _scaled(slice(rows.start + keep_r.start, rows.start + keep_r.stop), out_res),
            _scaled(slice(cols.start + keep_c.start, cols.start + keep_c.stop), out_res)] = y
        del y
    assert out is not None
    release_freed_memory()
    return out


__all__ = ["DEFAULT_HALO", "DEFAULT_STRIP", "DEFAULT_TILE", "halo_plan", "lean_forward",
           "tiled_analysis", "tiled_synthesis", "to_uint8"]
