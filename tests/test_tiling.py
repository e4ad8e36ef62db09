"""Tiled transforms equal whole-image passes (bounded memory for large images)."""

import numpy as np
import torch
from PIL import Image

import mlcodec
from mlcodec.tiling import tiled_analysis, tiled_synthesis


def test_tiles_with_a_halo_of_two_equal_the_whole_image_and_one_does_not():
    model = mlcodec.create_codec().model
    x = torch.rand(1, 3, 256, 320, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        y = model.g_a(x)
        assert torch.equal(tiled_analysis(model.g_a, x, tile=5, halo=2), y)
        assert not torch.allclose(tiled_analysis(model.g_a, x, tile=5, halo=1), y, atol=1e-3)
        img = model.g_s(y)
        assert torch.equal(tiled_synthesis(model.g_s, y, tile=5, halo=2), img)
        assert not torch.allclose(tiled_synthesis(model.g_s, y, tile=5, halo=1), img, atol=1e-3)
        assert tiled_analysis(model.g_a, x, tile=20) is not None  # one tile: a plain pass


def test_a_tiled_codec_writes_and_decodes_what_an_untiled_one_does(photo):
    """A 1024x768 image in 16x16-latent tiles (256 px): same bytes, same pixels, no seams."""
    big = photo.resize((1024, 768), Image.BICUBIC)
    whole, tiled = mlcodec.create_codec(), mlcodec.create_codec()
    whole.tile, tiled.tile = 10_000, 16
    data = whole.compress(big, 0.5)
    assert tiled.compress(big, 0.5) == data
    a, b = (np.asarray(c.decompress(data), dtype=np.int16) for c in (whole, tiled))
    assert np.abs(a - b).max() <= 1  # float rounding at most; here they are equal
    assert np.array_equal(a[255:257], b[255:257]) and np.array_equal(a[:, 511:513], b[:, 511:513])
