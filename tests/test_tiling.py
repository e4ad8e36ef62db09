"""Tiled transforms equal whole-image passes up to float rounding (bounded memory for any size)."""

import numpy as np
import torch
from PIL import Image
from torch import nn

import mlcodec
from mlcodec.allocator import keep_freed_memory, release_freed_memory
from mlcodec.bitstream import unpack
from mlcodec.imageio import as_float, to_tensor
from mlcodec.metrics import psnr
from mlcodec.tiling import (_conv_transpose, _subpixel_form, _subpixel_weight, halo_plan, lean_forward,
                            tiled_analysis, tiled_synthesis, to_uint8)


def test_a_halo_of_two_latent_pixels_covers_the_receptive_field_and_one_does_not():
    """Streamed by bands of 2 to 4 latent rows, in strips of a few latent columns: a halo
    of 2 latent pixels between strips gives the whole pass up to float rounding, a halo of 1
    leaves seams."""
    model = mlcodec.create_codec().model
    x = torch.rand(2, 3, 256, 320, generator=torch.Generator().manual_seed(0))
    same = lambda v: v
    with torch.inference_mode():
        y = model.g_a(x)
        err = lambda a: float((a - y).abs().max())
        for tile, strip, band in ((5, 7, 28), (3, 4, 1), (1, 3, 9), (5, 10_000, 80)):
            assert err(tiled_analysis(model.g_a, x, tile=tile, halo=2, strip=strip, band=band)) < 1e-4
        assert err(tiled_analysis(model.g_a, x, tile=5, halo=1, strip=7)) > 1e-2  # a seam
        img = model.g_s(y)
        err = lambda a: float((a - img).abs().max())
        for tile, strip, band in ((5, 7, 28), (3, 4, 1), (1, 3, 9), (5, 10_000, 80)):
            assert err(tiled_synthesis(model.g_s, y, tile=tile, halo=2, post=same, strip=strip,
                                       band=band)) < 1e-4
        assert err(tiled_synthesis(model.g_s, y, tile=5, halo=1, post=same, strip=7)) > 1e-2
        levels = tiled_synthesis(model.g_s, y, tile=5, strip=7)  # uint8 levels by default, band by band
        assert levels.dtype == torch.uint8 and levels.shape == (2, 3, 256, 320)
        assert (levels.int() - to_uint8(img.clone()).int()).abs().max() <= 1


def test_streaming_computes_each_row_once(monkeypatch):
    """Bands of 3 latent rows (60 latent pixels of a 20 px wide latent) over a 256 px tall image: the convolutions' outputs add up to the
    rows of one whole-image pass: 128 + 64 + 32 + 16 for the analysis, 16 + 32 + 64 + 128 for the
    synthesis (its sub-pixel convolutions' outputs, before pixel_shuffle doubles them)."""
    import torch.nn.functional as F

    model = mlcodec.create_codec().model
    rows = []
    conv2d = F.conv2d

    def counting(x, w, *args, **kwargs):
        out = conv2d(x, w, *args, **kwargs)
        if w.shape[-1] > 1:  # not GDN's 1x1
            rows.append(out.shape[-2])
        return out

    monkeypatch.setattr(F, "conv2d", counting)
    x = torch.rand(1, 3, 256, 320, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        y = tiled_analysis(model.g_a, x, tile=8, band=60)
        assert sum(rows) == 128 + 64 + 32 + 16 and len(rows) > 4
        rows.clear()
        tiled_synthesis(model.g_s, y, tile=8, band=60)
        assert sum(rows) == 16 + 32 + 64 + 128 and len(rows) > 4


def test_the_halo_plan_follows_each_layers_reach():
    """The analysis reads 30 image pixels beyond a tile and the synthesis 2 latent pixels; each
    layer's output keeps only what the layers after it read."""
    model = mlcodec.create_codec().model
    assert halo_plan(model.g_a) == (30, [14, 14, 6, 6, 2, 2, 0])
    assert halo_plan(model.g_s) == (2, [2, 2, 2, 2, 1, 1, 0])
    assert halo_plan(nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.Conv2d(4, 4, 3, 1, 1))) == (4, [1, 1, 0])
    assert halo_plan(nn.Sequential(nn.Conv2d(3, 4, 3, dilation=2))) is None


def test_a_stack_that_cannot_be_streamed_runs_in_whole_tiles():
    """Layers whose reach is not known (an upsampling) run on square tiles with halos instead."""
    torch.manual_seed(0)
    g = nn.Sequential(nn.Conv2d(3, 8, 5, 2, 2), nn.ReLU(), nn.Upsample(scale_factor=2), nn.Conv2d(8, 3, 3, 1, 1))
    assert halo_plan(g) is None
    x = torch.rand(1, 3, 96, 128)
    with torch.inference_mode():
        assert float((tiled_analysis(g, x, stride=1, tile=32, halo=8) - g(x)).abs().max()) < 1e-5


def test_the_sub_pixel_form_of_a_transposed_convolution_gives_its_values():
    """Stride-1 convolution + pixel_shuffle equals ConvTranspose2d up to float rounding, for the
    codecs' layer and other geometries; a layer whose output is not stride x input keeps its own
    path."""
    torch.manual_seed(0)
    z = torch.randn(2, 8, 9, 11)
    for k, s, p, op in ((5, 2, 2, 1), (3, 2, 1, 1), (4, 2, 1, 0), (6, 3, 2, 1), (5, 3, 1, 0), (3, 1, 1, 0)):
        layer = nn.ConvTranspose2d(8, 5, k, s, p, op)
        with torch.inference_mode():
            ref, got = layer(z), _conv_transpose(layer, z)
        assert _subpixel_weight(layer) is not None and got.shape == ref.shape == (2, 5, 9 * s, 11 * s)
        assert float((got - ref).abs().max()) < 1e-5, (k, s, p, op)
    assert _subpixel_weight(nn.ConvTranspose2d(8, 5, 5, 2, 2, 0)) is None  # 2n - 1 rows


def test_the_sub_pixel_form_is_built_once_per_weights_and_rebuilt_when_they_change():
    """The memoised form is the same object while the weights stand; an optimizer step, a
    load_state_dict and a dtype change each give a new form with the new weights' values."""
    torch.manual_seed(0)
    layer, z = nn.ConvTranspose2d(8, 5, 5, 2, 2, 1), torch.randn(1, 8, 6, 7)
    first = _subpixel_form(layer)
    assert first is _subpixel_form(layer)
    with torch.no_grad():
        layer.weight.mul_(2.0)  # in place, as an optimizer step
    second = _subpixel_form(layer)
    assert second is not first and torch.allclose(second[0], 2 * first[0])
    layer.load_state_dict(nn.ConvTranspose2d(8, 5, 5, 2, 2, 1).state_dict())
    with torch.inference_mode():
        assert float((_conv_transpose(layer, z) - layer(z)).abs().max()) < 1e-5
    layer.double()
    with torch.inference_mode():
        got = _conv_transpose(layer, z.double())
    assert got.dtype == torch.float64 and float((got - layer(z.double())).abs().max()) < 1e-12
    with torch.inference_mode():  # inference tensors keep no version: built each call, still exact
        frozen = nn.ConvTranspose2d(8, 5, 5, 2, 2, 1)
        assert _subpixel_form(frozen) is not _subpixel_form(frozen)
        assert float((_conv_transpose(frozen, z) - frozen(z)).abs().max()) < 1e-5


def test_a_tiled_codec_matches_an_untiled_one_without_seams(photo):
    """A 1024x768 image in 16x16-latent tiles (256 px) against one pass: PSNR within 0.05 dB, no
    pixel on a tile edge more than one level apart, bytes within a symbol or two."""
    big = photo.resize((1024, 768), Image.BICUBIC)
    whole, tiled = mlcodec.create_codec(), mlcodec.create_codec()
    whole.tile, tiled.tile = 10_000, 16
    d_whole, d_tiled = whole.compress(big, 0.5), tiled.compress(big, 0.5)
    assert abs(len(d_whole) - len(d_tiled)) <= 8
    a, b = whole.decompress(d_whole), tiled.decompress(d_tiled)
    assert abs(psnr(big, a) - psnr(big, b)) < 0.05
    same_stream = np.abs(np.asarray(whole.decompress(d_tiled), np.int16) - np.asarray(b, np.int16))
    edges = np.r_[255:257, 511:513]
    assert same_stream[edges].max() <= 1 and same_stream[:, np.r_[edges, 767:769]].max() <= 1
    assert same_stream.max() <= 1


def test_lean_forward_gives_the_modules_own_values_in_fewer_buffers():
    """The in-place GDN of the tiled transforms computes exactly what CompressAI's GDN does."""
    model = mlcodec.create_codec().model
    x = torch.rand(1, 3, 128, 192, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        y = model.g_a(x)
        assert torch.equal(lean_forward(model.g_a, x), y)
        # the transposed convolutions in sub-pixel form: the same values up to float rounding
        assert float((lean_forward(model.g_s, y) - model.g_s(y)).abs().max()) < 1e-5
        x_before = x.clone()
        lean_forward(model.g_a, x)
        assert torch.equal(x, x_before)  # the input itself is left alone


def test_8_bit_images_are_coded_from_uint8_levels_exactly_as_from_floats(photo):
    """compress keeps 8-bit sources as uint8 and converts them tile by tile: the same bytes as
    the float image, tiled or not, for RGB and grayscale."""
    codec = mlcodec.create_codec()
    for im in (photo.resize((320, 256)), photo.resize((320, 256)).convert("L")):
        levels, mode = to_tensor(im, levels=True)
        floats, _ = to_tensor(im)
        assert levels.dtype == torch.uint8 and levels.shape[0] == 3 and mode == im.mode
        assert torch.equal(as_float(levels), floats)
        for tile in (10_000, 8):
            codec.tile = tile
            a, b = (unpack(codec.compress(v, 0.5)) for v in (im, floats))
            assert a.strings == b.strings  # (the float tensor's header says RGB for L)


def test_the_allocator_settings_are_taken_or_skipped_cleanly():
    """glibc takes both thresholds (this project's CI runs on glibc); release runs either way."""
    import ctypes.util

    if ctypes.util.find_library("c") and "glibc" in " ".join(__import__("platform").libc_ver()):
        assert keep_freed_memory()
    release_freed_memory()
