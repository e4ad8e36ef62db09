"""Latent adapters: a pretrained judge (EfficientNet-Lite0) reading codec latents without decoding."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import mlcodec
from mlcodec.data.crops import dataset_crops

pytest.importorskip("efficientnet_lite_pytorch", reason="the judges extra is not installed: "
                    "pip install 'mlcodec[judges]'")

from mlcodec.tasks.adapter import (  # noqa: E402
    adapter_logits,
    build_head,
    check_codec,
    crop_latent,
    load_adapter,
    save_adapter,
)
from mlcodec.tasks.adapter_train import (  # noqa: E402
    AdapterConfig,
    coded_latents,
    distillation_loss,
    teacher_outputs,
    train_adapter,
)
from mlcodec.tasks.heads import synthesis_prefix  # noqa: E402
from mlcodec.tasks.judges import create_judge  # noqa: E402


@pytest.fixture(scope="module")
def judge():
    return create_judge("efficientnet-lite0")


@pytest.fixture(scope="module")
def codec():
    return mlcodec.create_codec()


@pytest.fixture(scope="module")
def crops():
    import skimage.data

    photo = Image.fromarray(skimage.data.astronaut())  # held out: never trained on
    return [c.image for c in dataset_crops(photo, "astronaut", 8, 224, (1.0, 2.0), seed=3)]


@pytest.mark.parametrize("stride,channels", [(4, 24), (8, 40), (16, 112)])
def test_the_split_judge_is_the_judge(judge, stride, channels):
    front, tail, c = judge.split(stride)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        f = front(x)
        assert c == channels and f.shape == (2, channels, 224 // stride, 224 // stride)
        assert torch.equal(tail(f), judge.model(x))


def test_a_judge_without_a_split_is_refused_by_name(judge):
    from mlcodec.tasks.judges import Judge, judge_config

    fake = Judge(judge_config("torchvision:resnet18"), torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="torchvision:resnet18 declares no split.*efficientnet-lite0"):
        fake.split()
    with pytest.raises(ValueError, match="stride 4, 8, 16, not 32"):
        judge.split(32)


def _recipe(stride: int, width: int) -> dict:
    return {"stride": stride, "width": width, "depth": 1, "expansion": 4.0}


def test_crop_latent_keeps_the_cells_the_image_covers():
    y = torch.zeros(2, 96, 16, 16)
    assert crop_latent(y, (224, 224)).shape == (2, 96, 14, 14)
    assert crop_latent(y, (200, 225)).shape == (2, 96, 13, 15)
    assert crop_latent(y, (256, 256)).shape == (2, 96, 16, 16)
    with pytest.raises(ValueError, match="cannot hold"):
        crop_latent(y, (257, 64))


def test_the_adapter_trains_on_a_fixed_batch_with_falling_loss(judge, codec, crops):
    y, sizes, decoded = coded_latents(codec, crops, 0.5)
    assert y.shape == (8, 96, 14, 14) and all(s > 0 for s in sizes)
    assert [im.size for im in decoded] == [(224, 224)] * 8
    feats, logits = teacher_outputs(judge, decoded, stride=4)  # the default teacher: decode + judge
    assert feats.shape == (8, 24, 56, 56)
    torch.manual_seed(0)
    head = build_head(judge, 96, _recipe(4, 32), synthesis_prefix(codec.synthesis_transform(0.5), 2))
    head.train()
    assert head.adapter.stride == 4 and head.adapter.synthesis_stages == 2
    assert not any(p.requires_grad for p in head.tail.parameters())
    head.adapter.set_feature_statistics(feats)
    scale = head.adapter.feature_scale
    assert torch.allclose(scale.flatten(), feats.transpose(0, 1).flatten(1).std(1))
    opt = torch.optim.Adam([p for p in head.adapter.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(20):  # the default: features only, the judge's tail does not run
        loss, feat, kl = distillation_loss(head, y, feats, logits, scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        assert loss.item() == feat.item() and kl.item() == 0.0
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses
    assert not head.tail.training  # the frozen tail keeps its batch-norm statistics
    assert not any(p.requires_grad for p in head.adapter.synthesis.parameters())  # the codec's, frozen
    with pytest.raises(ValueError, match="a stride-8 adapter needs 1 codec synthesis stage"):
        build_head(judge, 96, _recipe(8, 32), None)


def test_the_kl_term_runs_the_tail_and_trains_the_adapter_only(judge, codec, crops):
    y, _, decoded = coded_latents(codec, crops[:2], 0.5)
    feats, logits = teacher_outputs(judge, decoded, stride=16)
    head = build_head(judge, 96, _recipe(16, 16), None).train()
    head.adapter.set_feature_statistics(feats)
    loss, feat, kl = distillation_loss(head, y, feats, logits, head.adapter.feature_scale, kl_weight=0.5)
    assert kl.item() > 0 and loss.item() == pytest.approx(feat.item() + 0.5 * kl.item(), rel=1e-6)
    loss.backward()
    assert all(p.grad is None for p in head.tail.parameters())
    assert all(p.grad is not None for p in head.adapter.parameters() if p.requires_grad)


def test_train_save_load_round_trip_and_the_codec_check(tmp_path, judge, codec, crops):
    config = AdapterConfig("efficientnet-lite0", "mlcodec-hyperprior", (), crops_per_photo=3, width=32,
                           depth=1, val_share=0.3)
    r = train_adapter(config, tmp_path, epochs=2, batch_size=8, progress=False)
    assert [h.epoch for h in r.history] == [1, 2]
    assert all(0.0 <= h.val_agree <= 1.0 and 0.0 <= h.val_decoded_agree <= 1.0 for h in r.history)
    data_file = tmp_path / "latent-adapter.data.safetensors"
    stamp = data_file.stat().st_mtime_ns
    head, meta = load_adapter(r.checkpoint, judge)
    assert meta["codec"] == "mlcodec-hyperprior" and meta["recipe"]["width"] == 32
    assert head.adapter.stride == 4 and meta["synthesis_stages"] == 2 and meta["synthesis_channels"] == 96
    streams = codec.compress_batch(crops[:3], quality=0.3)
    a = adapter_logits(head, codec, streams)
    assert a.shape == (3, 1000)
    y, _, _ = coded_latents(codec, crops[:3], 0.3)
    with torch.no_grad():
        assert torch.allclose(a, head(y), atol=1e-5)
    # a second run of the same recipe reuses the cached data
    train_adapter(config, tmp_path / "again", epochs=1, batch_size=8, progress=False)
    assert data_file.stat().st_mtime_ns == stamp
    # a second stage starts from the first's weights (lr 0: they stay as loaded) and names it
    second = train_adapter(config, tmp_path / "stage2", epochs=1, batch_size=8, lr=0.0, kl_weight=1.0,
                           init=r.checkpoint, progress=False)
    head2, meta2 = load_adapter(second.checkpoint, judge)
    assert meta2["recipe"]["init"] == meta["recipe_digest"] and meta2["recipe_digest"] != meta["recipe_digest"]
    params = dict(head.adapter.named_parameters())
    assert all(torch.equal(v, params[k]) for k, v in head2.adapter.named_parameters())
    wider = AdapterConfig("efficientnet-lite0", "mlcodec-hyperprior", (), crops_per_photo=3, width=16,
                          depth=1, val_share=0.3)
    with pytest.raises(ValueError, match="adapter of another kind: its width is 32, not 16"):
        train_adapter(wider, tmp_path / "stage2-wider", epochs=1, batch_size=8, init=r.checkpoint, progress=False)
    # the checkpoint's tensors are the adapter's only (the judge's tail is the judge's)
    from safetensors import safe_open

    with safe_open(r.checkpoint, framework="pt") as f:
        assert all(k.startswith("adapter.") for k in f.keys())
    other = mlcodec.create_codec("mlcodec-unified")
    with pytest.raises(ValueError, match="trained on mlcodec-hyperprior latents.*train-head --task adapter"):
        check_codec(meta, other, 0.5)
    check_codec(meta, codec, 0.5)
    check_codec(meta, mlcodec.create_codec("mlcodec-hyperprior@2"), 0.5)  # the same weights, by release
    with pytest.raises(ValueError, match=r"not mlcodec-hyperprior@1 \("):  # the release before: other latents
        check_codec(meta, mlcodec.create_codec("mlcodec-hyperprior@1"), 0.5)


def test_load_adapter_refuses_other_checkpoints(tmp_path, judge):
    path = tmp_path / "head.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"head": json.dumps("latent-cls")})
    with pytest.raises(ValueError, match="not a latent-adapter checkpoint"):
        load_adapter(path, judge)
    with pytest.raises(FileNotFoundError):
        load_adapter(tmp_path / "none.safetensors", judge)
    head = build_head(judge, 96, _recipe(16, 16), None)
    save_adapter(head, path, {"judge": "efficientnet-lite0", "codec": "mlcodec-hyperprior", "fingerprints": [],
                              "in_channels": 96, "recipe": _recipe(16, 24)})
    with pytest.raises(ValueError, match="do not fit"):
        load_adapter(path, judge)


def test_paired_gaps_equal_hand_computed_values():
    from mlcodec.tasks.judge_eval import paired_gaps

    result = {"confidence": [0.9, 0.2, 0.8, 0.9], "confident_threshold": 0.5,
              "rows": [{"codec": "c+adapter", "quality": 0.5, "bpp": 0.3}],
              "per_image": {"c+adapter@0.5": {"agree": [1, 0, 1, 1]}, "c@0.5": {"agree": [1, 1, 0, 1]}}}
    (g,) = paired_gaps(result, "c+adapter", "c", resamples=200)
    assert g["images"] == 4
    assert g["all"]["gap"] == pytest.approx(0.0)  # (0 - 1 + 1 + 0) / 4
    assert g["confident"]["gap"] == pytest.approx(1 / 3)  # images 0, 2, 3: (0 + 1 + 0) / 3
    assert g["all"]["ci"][0] < 0 < g["all"]["ci"][1]
    result["per_image"]["c+adapter@0.5"]["agree"] = [1, 1, 0, 1]
    (g,) = paired_gaps(result, "c+adapter", "c", resamples=200)
    assert g["all"] == {"gap": 0.0, "ci": [0.0, 0.0]}


def test_eval_judge_with_an_adapter_reports_its_rows_and_gaps(tmp_path, judge, crops, capsys):
    from mlcodec.cli import main

    src = tmp_path / "crops"
    src.mkdir()
    for i, im in enumerate(crops[:4]):
        im.save(src / f"{i}.png")
    torch.manual_seed(0)
    head = build_head(judge, 96, _recipe(16, 16), None)
    codec = mlcodec.create_codec()
    path = save_adapter(head, tmp_path / "adapter.safetensors", {
        "judge": "efficientnet-lite0", "codec": "mlcodec-hyperprior",
        "fingerprints": [codec.fingerprint(0.5).hex()], "in_channels": 96, "recipe": _recipe(16, 16)})
    assert main(["-q", "eval", "--judge", "efficientnet-lite0", str(src), "--codecs", "mlcodec-hyperprior",
                 "--qualities", "0.2,0.8", "--head", str(path), "--bootstrap", "50", "-o", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert out.count("adapter - decode, mlcodec-hyperprior") == 2
    report = json.loads((tmp_path / "r" / "judge_efficientnet-lite0.json").read_text())
    names = [(r["codec"], r["quality"]) for r in report["rows"]]
    assert names == [("mlcodec-hyperprior", 0.2), ("mlcodec-hyperprior+adapter", 0.2),
                     ("mlcodec-hyperprior", 0.8), ("mlcodec-hyperprior+adapter", 0.8)]
    rows = report["rows"]
    assert rows[0]["bpp"] == rows[1]["bpp"]  # the same streams
    gaps = report["adapter_gaps"]["mlcodec-hyperprior"]
    assert gaps[0]["all"]["gap"] == pytest.approx(rows[1]["agree"] - rows[0]["agree"])
    assert main(["-q", "eval", "--judge", "efficientnet-lite0", str(src), "--codecs", "webp",
                 "--head", str(path), "-o", str(tmp_path / "r2")]) == 2
    assert "reads mlcodec-hyperprior latents, which --codecs does not list" in capsys.readouterr().err


def test_train_head_adapter_needs_a_judge_and_photos(tmp_path, capsys):
    from mlcodec.cli import main

    assert main(["train-head", "--task", "adapter", "-o", str(tmp_path)]) == 2
    assert "give --judge NAME" in capsys.readouterr().err
    assert main(["train-head", "--task", "adapter", "--judge", "efficientnet-lite0", "--shards", "x",
                 "-o", str(tmp_path)]) == 2
    assert "trains on photos, not shards" in capsys.readouterr().err
    with pytest.raises(ValueError, match="teacher must be one of decoded, original"):
        train_adapter(AdapterConfig("efficientnet-lite0", "mlcodec-hyperprior", (), teacher="pixels"), tmp_path)
    assert not (tmp_path / "latent-adapter.data.safetensors").exists()


def test_the_heads_registry_lists_the_adapter():
    from mlcodec.tasks import create_head, list_heads
    from mlcodec.tasks.data import TaskSpec

    assert "latent-adapter" in list_heads(input="latent")
    with pytest.raises(ValueError, match="built from a pretrained judge"):
        create_head("latent-adapter", TaskSpec("cls", ("a", "b", "c")))



def test_synthesis_prefix_is_a_frozen_copy_and_checks_the_layout(codec):
    g_s = codec.synthesis_transform(0.5)
    prefix = synthesis_prefix(g_s, 2)
    y = torch.randn(1, 96, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(prefix(y), g_s[:4](y))
    assert prefix[0].weight.data_ptr() != g_s[0].weight.data_ptr()
    assert not any(p.requires_grad for p in prefix.parameters())
    with pytest.raises(ValueError, match="does not start with 1 stage"):
        synthesis_prefix(torch.nn.Sequential(torch.nn.Conv2d(96, 96, 3)), 1)
