import numpy as np
import pytest
import torch
from PIL import Image

import mlcodec


@pytest.fixture(scope="session", autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def codecs():
    """Every registered codec; learned ones other than the default get random weights."""
    out = {}
    for name in mlcodec.list_codecs():
        pretrained = name == mlcodec.DEFAULT_CODEC
        out[name] = mlcodec.create_codec(name, pretrained=pretrained)
    return out


@pytest.fixture(scope="session")
def photo():
    """A real photo (scikit-image's astronaut), 256x192."""
    import skimage.data

    return Image.fromarray(skimage.data.astronaut()).resize((256, 192), Image.LANCZOS)


@pytest.fixture(scope="session")
def noise_image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8))
