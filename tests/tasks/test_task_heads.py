"""Heads: the registry (every buildable head trains), the synthesis stem and the segmenters' trunks."""

import math

import pytest
import torch
import torch.nn.functional as F

import mlcodec
from mlcodec.tasks import create_head, head_config, list_heads
from mlcodec.tasks.data import TaskSpec, make_loader, task_targets
from mlcodec.tasks.heads import synthesis_stage, upsample_bilinear
from mlcodec.tasks.train import compute_loss, load_head, save_head


def test_registry_lists_every_task_and_input():
    for task in ("cls", "det", "seg"):
        assert f"latent-{task}" in list_heads(task=task, input="latent")
        assert f"pixel-{task}" in list_heads(task=task, input="pixel")
    spec = TaskSpec("cls", ("a", "b"))
    with pytest.raises(ValueError, match="for task 'seg'"):
        create_head("latent-seg", spec)
    with pytest.raises(ValueError, match="unknown head"):
        create_head("latent-xyz", spec)


#: every head the registry builds (pixel-det is ultralytics', trained by its own trainer)
BUILDABLE = [n for n in list_heads() if head_config(n).builder is not None]


@pytest.mark.parametrize("name", BUILDABLE)
def test_each_head_trains_and_its_loss_falls(bench, name, size, spec_of):
    root, src = bench
    input, task = head_config(name).input, head_config(name).task
    torch.manual_seed(0)
    folder = root / ("latent-train" if input == "latent" else "jpeg-train")
    batch = next(iter(make_loader([folder], input, batch_size=8)))
    x = batch["latent" if input == "latent" else "image"]
    assert x.shape[-2:] == ((size // 16, size // 16) if input == "latent" else (size, size))
    spec = spec_of(src["train"], task)
    targets = task_targets(batch["targets"], spec, batch["image_sizes"])
    model = create_head(name, spec, in_channels=x.shape[1]).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(12):
        loss = compute_loss(model, task, x, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.7 * losses[0]


def test_synthesis_stem_is_the_codecs_own_first_stage_frozen_and_saved(tmp_path):
    codec = mlcodec.create_codec("mlcodec-hyperprior")
    g_s = codec.synthesis_transform(0.5)
    stage = synthesis_stage(g_s)
    y = torch.randn(2, 96, 4, 4)
    with torch.no_grad():
        assert torch.equal(stage(y), g_s[:2](y))
    spec = TaskSpec("cls", tuple("abcd"))
    model = create_head("latent-cls", spec, 96, synthesis=stage).train()
    frozen = {k: v.clone() for k, v in model.trunk.conv1.stage.state_dict().items()}
    proj = model.trunk.conv1.proj.weight.clone()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = compute_loss(model, "cls", y, torch.tensor([0, 3]))
    loss.backward()
    opt.step()
    assert all(torch.equal(v, model.trunk.conv1.stage.state_dict()[k]) for k, v in frozen.items())
    assert not torch.equal(proj, model.trunk.conv1.proj.weight)
    # the checkpoint carries the stage: it loads without the codec and predicts the same
    path = save_head(model.eval(), tmp_path / "s.safetensors", "latent-cls", spec, 96)
    loaded, _, meta = load_head(path)
    assert meta["synthesis_channels"] == 96
    assert torch.equal(loaded(y), model(y))
    with pytest.raises(ValueError, match="stem='learned'"):
        synthesis_stage(torch.nn.Sequential(torch.nn.Conv2d(96, 96, 3)))
    with pytest.raises(ValueError, match="reads pixels"):
        create_head("pixel-cls", spec, 3, synthesis=stage)


@pytest.mark.parametrize("shape,factor", [((2, 3, 16, 16), 8), ((1, 2, 5, 7), 4), ((1, 1, 1, 3), 2)])
def test_upsample_bilinear_matches_torch_values_and_gradients(shape, factor):
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    ours = upsample_bilinear(x, factor)
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, atol=1e-12)
    g = torch.randn_like(ref)
    assert torch.allclose(torch.autograd.grad(ours, x, g)[0], torch.autograd.grad(ref, x, g)[0], atol=1e-12)


def test_latent_segmenter_reads_two_trunk_stages_and_the_pixel_segmenter_three():
    spec = TaskSpec("seg", ("a", "b"))
    latent = create_head("latent-seg", spec, in_channels=96)
    assert not any(k.startswith(("trunk.layer3", "trunk.layer4")) for k in latent.state_dict())
    assert len(latent.decoder.lateral) == 2
    pixel = create_head("pixel-seg", spec)
    assert any(k.startswith("trunk.layer3") for k in pixel.state_dict())
    assert len(pixel.decoder.lateral) == 3
    # the latent segmenter's stride-8 logits come from layer1 and layer2 alone
    y = torch.randn(1, 96, 8, 8)
    assert latent.logits(y).shape == (1, 3, 16, 16)


def test_synthesis_stem_comes_from_the_release_that_wrote_the_shards():
    """Shards written before the default's weights changed still get their own release's stage:
    the manifest's fingerprint picks ``mlcodec-hyperprior@1``; weights no release has are refused."""
    from mlcodec.tasks.train import codec_synthesis_stage

    y = torch.randn(1, 96, 4, 4)
    for release in ("mlcodec-hyperprior@1", "mlcodec-hyperprior"):
        codec = mlcodec.create_codec(release)
        manifest = {"codec": "mlcodec-hyperprior", "quality": 0.5, "fingerprint": codec.fingerprint(0.5).hex()}
        with torch.no_grad():
            assert torch.equal(codec_synthesis_stage(manifest, "shards/")(y), codec.synthesis_transform(0.5)[:2](y))
    with pytest.raises(ValueError, match="shards/ was written by mlcodec-hyperprior weights 00"):
        codec_synthesis_stage({"codec": "mlcodec-hyperprior", "quality": 0.5, "fingerprint": "00" * 8}, "shards/")
