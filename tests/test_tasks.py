import csv
import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import mlcodec
from mlcodec.data.sources import CocoSource
from mlcodec.data.synthetic import export_all
from mlcodec.integrations.webdataset import write_image_shards, write_shards
from mlcodec.tasks import create_head, head_config, list_heads
from mlcodec.tasks.data import TaskSpec, make_loader, task_targets
from mlcodec.tasks.evaluate import bd_rates, evaluate_codecs, write_report
from mlcodec.tasks.heads import LatentSegmenter, synthesis_stage, upsample_bilinear
from mlcodec.tasks.losses import assign, cell_centers, decode_boxes, segmentation_loss
from mlcodec.tasks.metrics import TaskMetric
from mlcodec.tasks.train import (DEFAULT_LR, DEFAULT_WEIGHT_DECAY, compute_loss, load_head, save_head,
                                 train_head)

SIZE = 64


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Tiny synthetic COCO export with latent shards (q=0.5) and JPEG q90 image shards."""
    root = tmp_path_factory.mktemp("bench")
    export_all(root, train=16, val=8, size=SIZE, seed=0, formats=("coco", "yolo"))
    src = {s: CocoSource(root / f"coco/{s}/annotations.json", root / f"coco/{s}/images")
           for s in ("train", "val")}
    for s, source in src.items():
        write_shards(source, root / f"latent-{s}", quality=0.5, progress=False)
        write_image_shards(source, root / f"jpeg-{s}", "jpeg", 0.9, progress=False)
    return root, src


def _spec(source, task):
    return TaskSpec(task, tuple(source.class_names), tuple(source.category_ids))


def test_registry_lists_every_task_and_input():
    for task in ("cls", "det", "seg"):
        assert f"latent-{task}" in list_heads(task=task, input="latent")
        assert f"pixel-{task}" in list_heads(task=task, input="pixel")
    spec = TaskSpec("cls", ("a", "b"))
    with pytest.raises(ValueError, match="for task 'seg'"):
        create_head("latent-seg", spec)
    with pytest.raises(ValueError, match="unknown head"):
        create_head("latent-xyz", spec)


@pytest.mark.parametrize("name", ["latent-cls", "latent-det", "latent-seg", "pixel-cls", "pixel-seg",
                                  "pixel-fcos"])
def test_each_head_trains_and_its_loss_falls(bench, name):
    root, src = bench
    input, task = head_config(name).input, head_config(name).task
    torch.manual_seed(0)
    folder = root / ("latent-train" if input == "latent" else "jpeg-train")
    batch = next(iter(make_loader([folder], input, batch_size=8)))
    x = batch["latent" if input == "latent" else "image"]
    assert x.shape[-2:] == ((SIZE // 16, SIZE // 16) if input == "latent" else (SIZE, SIZE))
    spec = _spec(src["train"], task)
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


def test_metrics_match_hand_computed_cases():
    m = TaskMetric("cls", 3)
    m.update(torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0], [2.0, 0, 0]]), torch.tensor([0, 1, 2, 1]))
    assert m.compute() == {"top1": pytest.approx(0.75)}

    # mIoU: class 0 IoU 2/3, class 1 IoU 1/2 (ignored pixel -1 leaves both unchanged)
    m = TaskMetric("seg", 2)
    m.update(torch.tensor([[[0, 0], [1, 1]]]), torch.tensor([[[0, 0], [0, 1]]]))
    assert m.compute()["miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    m = TaskMetric("seg", 2)
    m.update(torch.tensor([[[0, 0, 1], [1, 1, 1]]]), torch.tensor([[[0, 0, -1], [0, 1, -1]]]))
    assert m.compute()["miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)

    # mAP: one box found with IoU 0.64 -> AP 1 at IoU thresholds 0.50, 0.55, 0.60, else 0
    gt = [{"boxes": torch.tensor([[10.0, 10, 60, 60]]), "labels": torch.tensor([1])}]
    pred = [{"boxes": torch.tensor([[10.0, 10, 60, 42]]), "scores": torch.tensor([0.9]),
             "labels": torch.tensor([1])}]
    m = TaskMetric("det", 2)
    m.update(pred, gt)
    out = m.compute()
    assert out["map_50"] == pytest.approx(1.0) and out["map"] == pytest.approx(0.3)


def test_fcos_assignment_and_decoding_round_trip():
    centers = cell_centers(4, 4, 16, torch.device("cpu"))
    boxes, labels = torch.tensor([[0.0, 0, 40, 40], [20, 20, 64, 64]]), torch.tensor([3, 5])
    cls, box = assign(centers, boxes, labels, 16)
    assert cls[0] == 3 and cls[15] == 5 and cls[5] == 3  # (24, 24) in both: the smaller box wins
    assert torch.equal(box[15], boxes[1])
    # a head output that puts the exact box distances on the positive cells decodes back to them
    logits = torch.full((1, 6, 4, 4), -10.0)
    ltrb = torch.zeros(1, 4, 4, 4)
    for i in torch.nonzero(cls >= 0).flatten():
        c, b = centers[i], box[i]
        logits[0, cls[i], i // 4, i % 4] = 10.0
        ltrb[0, :, i // 4, i % 4] = torch.stack([c[0] - b[0], c[1] - b[1], b[2] - c[0], b[3] - c[1]])
    out = decode_boxes({"cls": logits, "box": ltrb, "ctr": torch.full((1, 1, 4, 4), 10.0),
                        "stride": torch.tensor(16)})[0]
    assert sorted(out["labels"].tolist()) == [3, 5]
    assert torch.allclose(out["boxes"][out["labels"].argsort()], boxes, atol=1e-4)


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


def test_train_head_then_eval_writes_csv_json_png(bench, tmp_path):
    root, src = bench
    r = train_head("cls", [root / "latent-train"], [root / "latent-val"], tmp_path, epochs=2,
                   batch_size=8, progress=False)
    assert [h.epoch for h in r.history] == [1, 2] and r.history[1].elapsed_seconds > 0
    pix = train_head("cls", [root / "jpeg-train"], [root / "jpeg-val"], tmp_path, epochs=1,
                     batch_size=8, progress=False)
    assert pix.head == "pixel-cls"
    with pytest.raises(ValueError, match="reads latent input"):
        train_head("cls", [root / "jpeg-train"], [root / "jpeg-val"], tmp_path, head="latent-cls")
    with pytest.raises(ValueError, match="one codec and one set of weights"):
        train_head("cls", [root / "latent-train"], [root / "jpeg-val"], tmp_path)
    spec = _spec(src["val"], "cls")
    result = evaluate_codecs("cls", src["val"], spec, ["mlcodec-hyperprior", "jpeg"], [0.2, 0.8],
                             latent_head=r.checkpoint, pixel_reference=pix.checkpoint, progress=False)
    rows = result["rows"]
    assert [(x["codec"], x["domain"]) for x in rows][:3] == [
        ("uncompressed", "pixel"), ("mlcodec-hyperprior", "latent"), ("mlcodec-hyperprior", "pixel")]
    assert len(rows) == 1 + 2 * 2 + 2
    jpeg = mlcodec.create_codec("jpeg")
    images = [src["val"][i].image for i in range(len(src["val"]))]
    expected = sum(8 * len(jpeg.compress(im, 0.2)) / (SIZE * SIZE) for im in images) / len(images)
    assert [x["bpp"] for x in rows if x["codec"] == "jpeg"][0] == pytest.approx(expected)
    paths = write_report(result, tmp_path / "report")
    with open(paths["csv"]) as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert paths["png"].stat().st_size > 1000 and paths["json"].is_file()


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

def test_bd_rates_of_task_curves_known_example():
    rates = [0.2, 0.4, 0.8, 1.6]
    acc = [0.5, 0.6, 0.7, 0.8]
    rows = [{"codec": "jpeg", "domain": "pixel", "bpp": r, "top1": a} for r, a in zip(rates, acc)]
    rows += [{"codec": "mlcodec-hyperprior", "domain": "latent", "bpp": 0.6 * r, "top1": a}
             for r, a in zip(rates, acc)]
    rows += [{"codec": "uncompressed", "domain": "pixel", "bpp": 24.0, "top1": 0.9}]
    assert bd_rates(rows, "top1") == {"mlcodec-hyperprior/latent": pytest.approx(-40.0)}


def test_yolo_reference_trains_offline_and_predicts(bench, tmp_path):
    from PIL import Image

    from mlcodec.tasks.yolo import YoloDetector, train_yolo

    root, _ = bench
    r = train_yolo(root / "yolo/data.yaml", tmp_path, epochs=1, imgsz=SIZE, batch=8, workers=0)
    assert [h["epoch"] for h in r["history"]] == [1]
    assert r["history"][0]["seconds"] > 0 and 0 <= r["history"][0]["map"] <= r["history"][0]["map_50"] <= 1
    det = YoloDetector(r["checkpoint"])
    images = [Image.open(root / f"yolo/images/val/{i:06d}.png") for i in range(3)]
    preds = det.predict_images(images)
    assert len(preds) == 3
    for p in preds:
        assert p["boxes"].shape[1] == 4 and p["boxes"].shape[0] == p["scores"].shape[0] <= 100
        assert p["labels"].dtype == torch.long and (p["labels"] < 8).all()


def test_cli_synth_shard_train_head_eval(tmp_path, capsys):
    from mlcodec.cli import main

    data = tmp_path / "data"
    assert main(["synth", "-o", str(data), "--train", "12", "--val", "6", "--size", "64",
                 "--formats", "coco"]) == 0
    for split in ("train", "val"):
        assert main(["-q", "shard", "--coco", str(data / f"coco/{split}/annotations.json"), "--images",
                     str(data / f"coco/{split}/images"), "-o", str(tmp_path / split), "--quality", "0.4"]) == 0
    heads = tmp_path / "heads"
    assert main(["-q", "train-head", "--task", "seg", "--shards", str(tmp_path / "train"),
                 "--val", str(tmp_path / "val"), "-o", str(heads), "--epochs", "1", "--batch-size", "6"]) == 0
    assert "latent-seg: 1 epochs" in capsys.readouterr().out
    out = tmp_path / "eval"
    assert main(["-q", "eval", "--task", "seg", "--coco", str(data / "coco/val/annotations.json"),
                 "--images", str(data / "coco/val/images"), "--head", str(heads / "latent-seg.safetensors"),
                 "--codecs", "mlcodec-hyperprior", "--qualities", "0.2,0.6", "--limit", "4",
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mlcodec-hyperprior     latent    0.200" in text
    assert sorted(p.name for p in out.iterdir()) == ["eval_seg.csv", "eval_seg.json", "eval_seg.png"]
    assert main(["-q", "train-head", "--task", "det", "--head", "pixel-det", "-o", str(heads)]) == 2
    assert "--yolo-data" in capsys.readouterr().err


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


def test_eval_refuses_a_head_trained_on_other_weights(bench, tmp_path):
    _, src = bench
    spec = _spec(src["val"], "cls")
    path = save_head(create_head("latent-cls", spec), tmp_path / "h.safetensors", "latent-cls", spec, 96,
                     {"codec": "mlcodec-hyperprior", "fingerprint": "00" * 8})
    with pytest.raises(ValueError, match="retrain the head"):
        evaluate_codecs("cls", src["val"], spec, ["mlcodec-hyperprior"], [0.5], latent_head=path,
                        progress=False)


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


@pytest.mark.parametrize("shape,factor", [((2, 3, 16, 16), 8), ((1, 2, 5, 7), 4), ((1, 1, 1, 3), 2)])
def test_upsample_bilinear_matches_torch_values_and_gradients(shape, factor):
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    ours = upsample_bilinear(x, factor)
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, atol=1e-12)
    g = torch.randn_like(ref)
    assert torch.allclose(torch.autograd.grad(ours, x, g)[0], torch.autograd.grad(ref, x, g)[0], atol=1e-12)


def test_segmentation_loss_scores_every_other_label_against_upsampled_logits():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 4, 3, requires_grad=True)  # stride 8: covers 32 x 24 pixels
    targets = torch.randint(-1, 5, (2, 30, 21))  # padded batch: labels end inside the last cell
    up = F.interpolate(logits, scale_factor=4, mode="bilinear", align_corners=False)
    labels = targets[:, ::2, ::2]
    ref = F.cross_entropy(up[..., :15, :11], labels, ignore_index=-1)
    assert segmentation_loss(logits, targets, out_stride=8).item() == pytest.approx(ref.item(), rel=1e-5)
    full = F.cross_entropy(F.interpolate(logits, scale_factor=8, mode="bilinear",
                                         align_corners=False)[..., :30, :21], targets,
                           ignore_index=-1)
    assert segmentation_loss(logits, targets, 8, loss_stride=1).item() == pytest.approx(full.item(), rel=1e-5)
    assert torch.isfinite(torch.autograd.grad(segmentation_loss(logits, targets, 8), logits)[0]).all()
    with pytest.raises(ValueError, match="must divide"):
        segmentation_loss(logits, targets, out_stride=8, loss_stride=3)
    with pytest.raises(ValueError, match="do not cover"):
        segmentation_loss(logits, torch.zeros(2, 40, 21, dtype=torch.long), out_stride=8)


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


def test_segmenters_train_on_the_stride_2_loss_and_seg_has_its_own_lr_and_weight_decay(bench, tmp_path):
    root, src = bench
    spec = _spec(src["train"], "seg")
    model = create_head("latent-seg", spec, in_channels=96).eval()
    y, targets = torch.randn(2, 96, 4, 4), torch.randint(0, spec.num_outputs, (2, SIZE, SIZE))
    assert compute_loss(model, "seg", y, targets).item() == pytest.approx(
        segmentation_loss(model.logits(y), targets, model.out_stride).item(), rel=1e-6)
    assert model(y).shape == (2, spec.num_outputs, SIZE, SIZE)  # predictions stay full resolution
    r = train_head("seg", [root / "latent-train"], [root / "latent-val"], tmp_path, epochs=1,
                   batch_size=8, progress=False)
    assert r.lr == DEFAULT_LR["seg"] == 4e-3
    assert r.weight_decay == DEFAULT_WEIGHT_DECAY["seg"] == 1.0
    history = json.loads((tmp_path / "latent-seg.history.json").read_text())
    assert (history["lr"], history["weight_decay"]) == (4e-3, 1.0)
    cls = train_head("cls", [root / "latent-train"], [root / "latent-val"], tmp_path, epochs=1,
                     batch_size=8, lr=1e-3, weight_decay=0.01, progress=False)
    assert (cls.lr, cls.weight_decay) == (1e-3, 0.01)
