"""Tiled transforms equal whole-image passes up to float rounding (bounded memory for any size)."""

import numpy as np
import torch
from PIL import Image

import mlcodec
from mlcodec.allocator import keep_freed_memory, release_freed_memory
from mlcodec.bitstream import unpack
from mlcodec.imageio import as_float, to_tensor
from mlcodec.metrics import psnr
from mlcodec.tiling import lean_forward, tiled_analysis, tiled_synthesis, to_uint8


def test_a_halo_of_two_latent_pixels_covers_the_receptive_field_and_one_does_not():
    model = mlcodec.create_codec().model
    x = torch.rand(1, 3, 256, 320, generator=torch.Generator().manual_seed(0))
    same = lambda v: v
    with torch.inference_mode():
        y = model.g_a(x)
        err = lambda a: float((a - y).abs().max())
        assert err(tiled_analysis(model.g_a, x, tile=5, halo=2)) < 1e-4  # float rounding only
        assert err(tiled_analysis(model.g_a, x, tile=5, halo=1)) > 1e-2  # a seam
        img = model.g_s(y)
        err = lambda a: float((a - img).abs().max())
        assert err(tiled_synthesis(model.g_s, y, tile=5, halo=2, post=same)) < 1e-4
        assert err(tiled_synthesis(model.g_s, y, tile=5, halo=1, post=same)) > 1e-2
        levels = tiled_synthesis(model.g_s, y, tile=5)  # uint8 levels by default, tile by tile
        assert levels.dtype == torch.uint8
        assert (levels.int() - to_uint8(img.clone()).int()).abs().max() <= 1


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
        assert torch.equal(lean_forward(model.g_s, y), model.g_s(y))
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
