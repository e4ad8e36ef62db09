"""Tiled transforms equal whole-image passes up to float rounding (bounded memory for any size)."""

import numpy as np
import torch
from PIL import Image

import mlcodec
from mlcodec.metrics import psnr
from mlcodec.tiling import tiled_analysis, tiled_synthesis, to_uint8


def test_a_halo_of_two_latent_pixels_covers_the_receptive_field_and_one_does_not():
    model = mlcodec.create_codec().model
    x = torch.rand(1, 3, 256, 320, generator=torch.Generator().manual_seed(0))
    same = lambda v: v  # noqa: E731 - compare the float output itself
    with torch.inference_mode():
        y = model.g_a(x)
        err = lambda a: float((a - y).abs().max())  # noqa: E731
        assert err(tiled_analysis(model.g_a, x, tile=5, halo=2)) < 1e-4  # float rounding only
        assert err(tiled_analysis(model.g_a, x, tile=5, halo=1)) > 1e-2  # a seam
        img = model.g_s(y)
        err = lambda a: float((a - img).abs().max())  # noqa: E731
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
