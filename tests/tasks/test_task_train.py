"""`train_head`: checkpoints, resume, devices, augmentation and per-task options."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from mlcodec.tasks import create_head
from mlcodec.tasks.data import TaskSpec
from mlcodec.tasks.heads import LatentSegmenter
from mlcodec.tasks.losses import segmentation_loss
from mlcodec.tasks.train import DEFAULT_LR, DEFAULT_WEIGHT_DECAY, compute_loss, load_head, save_head, train_head


def test_checkpoint_round_trip(tmp_path):
    spec = TaskSpec("seg", ("a", "b", "c"), (1, 2, 3))
    model = create_head("latent-seg", spec, in_channels=96).eval()
    path = save_head(model, tmp_path / "h.safetensors", "latent-seg", spec, 96, {"codec": "x"})
    loaded, spec2, meta = load_head(path)
    y = torch.randn(1, 96, 4, 4)
    assert spec2 == spec and meta["codec"] == "x"
    assert torch.equal(loaded(y), model(y))
    with pytest.raises(FileNotFoundError):
        load_head(tmp_path / "missing.safetensors")
    # a checkpoint of an older layout (latent-seg with its former stride-4 stage) is named
    old = LatentSegmenter(96, spec.num_outputs, out_stride=4)
    path = save_head(old, tmp_path / "old.safetensors", "latent-seg", spec, 96)
    with pytest.raises(ValueError, match="old.safetensors: its weights do not fit.*retrain"):
        load_head(path)


def test_train_head_resumes_a_killed_run_as_if_never_stopped(bench, tmp_path, monkeypatch):
    import mlcodec.tasks.train as tt

    root, _ = bench
    args = ("cls", [root / "latent-train"], [root / "latent-val"])
    whole = train_head(*args, tmp_path / "whole", epochs=3, batch_size=8, progress=False)
    evaluate, calls = tt.evaluate, []

    def dies_in_epoch_2(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return evaluate(*a, **k)

    monkeypatch.setattr(tt, "evaluate", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_head(*args, tmp_path / "cut", epochs=3, batch_size=8, progress=False)
    assert (tmp_path / "cut/latent-cls.resume.pt").is_file()
    monkeypatch.setattr(tt, "evaluate", evaluate)
    with pytest.raises(ValueError, match="another run .*differs in epochs, lr"):
        train_head(*args, tmp_path / "cut", epochs=4, lr=1e-3, batch_size=8, progress=False)
    calls.clear()
    monkeypatch.setattr(tt, "evaluate", lambda *a, **k: (calls.append(1), evaluate(*a, **k))[1])
    again = train_head(*args, tmp_path / "cut", epochs=3, batch_size=8, progress=False)
    assert len(calls) == 2  # epochs 2 and 3 only: epoch 1 came from the checkpoint
    def records(r):
        return [(h.epoch, h.loss, h.val) for h in r.history]

    assert records(again) == records(whole)
    assert not (tmp_path / "cut/latent-cls.resume.pt").exists()
    a, b = (load_file(str(d / "latent-cls.safetensors")) for d in (tmp_path / "whole", tmp_path / "cut"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_head_refuses_a_device_it_cannot_use_before_reading_shards(bench, tmp_path, monkeypatch, capsys):
    from mlcodec.cli import main

    root, _ = bench
    args = ("cls", [root / "latent-train"], [root / "latent-val"], tmp_path / "h")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="'cuda': no CUDA GPU is visible.*--device cpu"):
        train_head(*args, epochs=1, device="cuda")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        train_head(*args, epochs=1, device="gpu0")
    assert not (tmp_path / "h").exists()  # nothing written
    assert main(["-q", "train-head", "--task", "cls", "--shards", str(root / "latent-train"),
                 "--val", str(root / "latent-val"), "-o", str(tmp_path / "h"), "--device", "cuda:0"]) == 2
    assert "no CUDA GPU is visible" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("task", ["cls", "seg", "det"])
def test_train_head_on_a_gpu_follows_the_cpu_run_and_saves_cpu_weights(bench, tmp_path, task):
    root, _ = bench
    args = (task, [root / "latent-train"], [root / "latent-val"])
    cpu = train_head(*args, tmp_path / "cpu", epochs=2, batch_size=8, progress=False)
    gpu = train_head(*args, tmp_path / "gpu", epochs=2, batch_size=8, progress=False, device="cuda")
    for a, b in zip(cpu.history, gpu.history):  # the same batches, flips and init: float noise only
        assert b.loss == pytest.approx(a.loss, rel=1e-2)
    model, _, _ = load_head(gpu.checkpoint)
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_random_flip_mirrors_inputs_and_targets_together():
    from mlcodec.tasks.train import random_flip

    x = torch.arange(2 * 1 * 2 * 4, dtype=torch.float32).reshape(2, 1, 2, 4)
    sizes = torch.tensor([[32, 64], [32, 64]])  # latent 2x4 at stride 16
    gen = torch.Generator().manual_seed(0)
    flipped = torch.rand(2, generator=torch.Generator().manual_seed(0)) < 0.5
    boxes = [{"boxes": torch.tensor([[0.0, 1, 10, 5]]), "labels": torch.tensor([2])} for _ in range(2)]
    y, t = random_flip(x, boxes, "det", sizes, gen, stride=16)
    for i in range(2):
        assert torch.equal(y[i], x[i].flip(-1) if flipped[i] else x[i])
        expect = [[54.0, 1, 64, 5]] if flipped[i] else [[0.0, 1, 10, 5]]
        assert t[i]["boxes"].tolist() == expect
    maps = torch.arange(2 * 32 * 64).reshape(2, 32, 64)
    _, m = random_flip(x, maps.clone(), "seg", sizes, torch.Generator().manual_seed(0), stride=16)
    for i in range(2):
        assert torch.equal(m[i], maps[i].flip(-1) if flipped[i] else maps[i])
    narrow = torch.tensor([[32, 60], [32, 60]])  # padded: the latent covers 64 px, the image 60
    y, _ = random_flip(x, maps.clone(), "seg", narrow, torch.Generator().manual_seed(0), stride=16)
    assert torch.equal(y, x)


def test_train_head_synthesis_stem_checks_the_shards_weights(bench, tmp_path):
    root, _ = bench
    r = train_head("seg", [root / "latent-train"], [root / "latent-val"], tmp_path, epochs=1,
                   batch_size=8, progress=False)
    assert load_head(r.checkpoint)[2]["synthesis_channels"] == 96
    with pytest.raises(ValueError, match="stem must be one of"):
        train_head("seg", [root / "latent-train"], [root / "latent-val"], tmp_path, stem="deep")
    for s in ("train", "val"):
        shutil.copytree(root / f"latent-{s}", tmp_path / s)
        m = json.loads((tmp_path / s / "manifest.json").read_text())
        (tmp_path / s / "manifest.json").write_text(json.dumps({**m, "fingerprint": "00" * 8}))
    with pytest.raises(ValueError, match=f"{tmp_path / 'train'} was written by .* 0000000000000000"):
        train_head("seg", [tmp_path / "train"], [tmp_path / "val"], tmp_path, epochs=1, progress=False)
    r = train_head("seg", [tmp_path / "train"], [tmp_path / "val"], tmp_path, epochs=1,
                   batch_size=8, stem="learned", progress=False)
    assert load_head(r.checkpoint)[2]["synthesis_channels"] == 0


def test_segmenters_train_on_the_stride_2_loss_and_seg_has_its_own_lr_and_weight_decay(bench, tmp_path, size, spec_of):
    root, src = bench
    spec = spec_of(src["train"], "seg")
    model = create_head("latent-seg", spec, in_channels=96).eval()
    y, targets = torch.randn(2, 96, 4, 4), torch.randint(0, spec.num_outputs, (2, size, size))
    assert compute_loss(model, "seg", y, targets).item() == pytest.approx(
        segmentation_loss(model.logits(y), targets, model.out_stride).item(), rel=1e-6)
    assert model(y).shape == (2, spec.num_outputs, size, size)  # predictions stay full resolution
    r = train_head("seg", [root / "latent-train"], [root / "latent-val"], tmp_path, epochs=1,
                   batch_size=8, progress=False)
    assert r.lr == DEFAULT_LR["seg"] == 4e-3
    assert r.weight_decay == DEFAULT_WEIGHT_DECAY["seg"] == 1.0
    history = json.loads((tmp_path / "latent-seg.history.json").read_text())
    assert (history["lr"], history["weight_decay"]) == (4e-3, 1.0)
    cls = train_head("cls", [root / "latent-train"], [root / "latent-val"], tmp_path, epochs=1,
                     batch_size=8, lr=1e-3, weight_decay=0.01, progress=False)
    assert (cls.lr, cls.weight_decay) == (1e-3, 0.01)
