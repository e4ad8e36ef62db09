"""Trained weights as ``NAME:WEIGHTS``: codec, shard job, loader and CLI all use them."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import mlcodec
from mlcodec.bitstream import BitstreamError
from mlcodec.cli import main
from mlcodec.data.sources import IterableSource
from mlcodec.integrations.webdataset import write_shards
from mlcodec.models.gained_hyperprior import GainedMeanScaleHyperprior
from mlcodec.tasks.data import make_loader
from mlcodec.train import TrainConfig, export


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("w") / "tuned.safetensors"
    return export(GainedMeanScaleHyperprior(N=16, M=16), TrainConfig(N=16, M=16), path)


def _img(seed, h=48, w=64):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_spec_loads_its_weights_and_bitstreams_name_them(weights):
    codec = mlcodec.create_codec(f"mlcodec-hyperprior:{weights}")
    assert codec.name == f"mlcodec-hyperprior:{weights.resolve()}"
    data = codec.compress(_img(0), 0.5)
    assert codec.decompress(data).size == (64, 48)
    assert codec.decode_latent(data).shape == (16, 4, 4)  # padded to the 64-px hyper stride
    with pytest.raises(BitstreamError, match="mlcodec-hyperprior:WEIGHTS_FILE"):
        mlcodec.codec_for(data).decode_latent(data)  # the packaged weights are not these


def test_spec_errors(weights, tmp_path):
    with pytest.raises(ValueError, match="jpeg takes no weights file"):
        mlcodec.codec_config(f"jpeg:{weights}")
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        mlcodec.codec_config(f"mlcodec-hyperprior:{tmp_path / 'missing.safetensors'}")
    with pytest.raises(ValueError, match="Unknown codec 'nope'"):
        mlcodec.codec_config("nope:x")
    with pytest.raises(SystemExit) as e:  # argparse refuses it before anything runs
        main(["compress", str(tmp_path), "-o", str(tmp_path / "o"), "--codec",
              f"mlcodec-hyperprior:{tmp_path / 'missing.safetensors'}"])
    assert e.value.code == 2


def test_shards_loader_and_decode_use_the_manifest_spec(weights, tmp_path):
    spec = f"mlcodec-hyperprior:{weights}"
    items = [(_img(i), {"label": i % 2}) for i in range(4)]
    m = write_shards(IterableSource(items, class_names=["a", "b"]), tmp_path / "s", codec=spec,
                     quality=0.3, progress=False)
    assert m.codec == f"mlcodec-hyperprior:{weights.resolve()}"
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["codec"] == m.codec
    codec = mlcodec.create_codec(spec)
    expected = [codec.decode_latent(codec.compress(im, 0.3)) for im, _ in items]
    batches = list(make_loader([tmp_path / "s"], "latent", batch_size=4))
    latents = batches[0]["latent"]
    assert latents.shape == (4, 16, 4, 4)
    for got, want in zip(latents, expected):
        assert torch.equal(got, want)
    assert main(["-q", "decode", str(tmp_path / "s"), "-o", str(tmp_path / "png"), "--first", "2"]) == 0
    assert len(list((tmp_path / "png").glob("0*.png"))) == 2
