"""`eval`: accuracy against bitrate, BD-rates of task curves, and the commands end to end."""

import csv
import json

import pytest

import mlcodec
from mlcodec.tasks import create_head
from mlcodec.tasks.data import TaskSpec
from mlcodec.tasks.evaluate import bd_rates, evaluate_codecs, write_report
from mlcodec.tasks.train import save_head, train_head


def test_train_head_then_eval_writes_csv_json_png(bench, tmp_path, size, spec_of):
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
    spec = spec_of(src["val"], "cls")
    result = evaluate_codecs("cls", src["val"], spec, ["mlcodec-hyperprior", "jpeg"], [0.2, 0.8],
                             latent_head=r.checkpoint, pixel_reference=pix.checkpoint, progress=False)
    rows = result["rows"]
    assert [(x["codec"], x["domain"]) for x in rows][:3] == [
        ("uncompressed", "pixel"), ("mlcodec-hyperprior", "latent"), ("mlcodec-hyperprior", "pixel")]
    assert len(rows) == 1 + 2 * 2 + 2
    jpeg = mlcodec.create_codec("jpeg")
    images = [src["val"][i].image for i in range(len(src["val"]))]
    expected = sum(8 * len(jpeg.compress(im, 0.2)) / (size * size) for im in images) / len(images)
    assert [x["bpp"] for x in rows if x["codec"] == "jpeg"][0] == pytest.approx(expected)
    paths = write_report(result, tmp_path / "report")
    with open(paths["csv"]) as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    assert paths["png"].stat().st_size > 1000 and paths["json"].is_file()


def test_bd_rates_of_task_curves_known_example():
    rates = [0.2, 0.4, 0.8, 1.6]
    acc = [0.5, 0.6, 0.7, 0.8]
    rows = [{"codec": "jpeg", "domain": "pixel", "bpp": r, "top1": a} for r, a in zip(rates, acc)]
    rows += [{"codec": "mlcodec-hyperprior", "domain": "latent", "bpp": 0.6 * r, "top1": a}
             for r, a in zip(rates, acc)]
    rows += [{"codec": "uncompressed", "domain": "pixel", "bpp": 24.0, "top1": 0.9}]
    assert bd_rates(rows, "top1") == {"mlcodec-hyperprior/latent": pytest.approx(-40.0)}
    # against another codec's curve (eval --bd-reference): JPEG needs 1/0.6 the bits
    assert bd_rates(rows, "top1", "mlcodec-hyperprior/latent") == {"jpeg/pixel": pytest.approx(100 / 0.6 - 100)}


def test_eval_refuses_a_head_trained_on_other_weights(bench, tmp_path, spec_of):
    _, src = bench
    spec = spec_of(src["val"], "cls")
    path = save_head(create_head("latent-cls", spec), tmp_path / "h.safetensors", "latent-cls", spec, 96,
                     {"codec": "mlcodec-hyperprior", "fingerprint": "00" * 8})
    with pytest.raises(ValueError, match="retrain the head"):
        evaluate_codecs("cls", src["val"], spec, ["mlcodec-hyperprior"], [0.5], latent_head=path,
                        progress=False)
    # labels are class indexes: data that names other classes (an ImageFolder split missing a class
    # folder) would be scored against the wrong classes, so it is refused
    fewer = TaskSpec("cls", spec.class_names[1:])
    with pytest.raises(ValueError, match="must match"):
        evaluate_codecs("cls", src["val"], fewer, ["mlcodec-hyperprior"], [0.5], latent_head=path,
                        progress=False)


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
    args = ["-q", "eval", "--task", "seg", "--coco", str(data / "coco/val/annotations.json"), "--images",
            str(data / "coco/val/images"), "--head", f"mlcodec-hyperprior={heads / 'latent-seg.safetensors'}",
            "--codecs", "mlcodec-hyperprior,jpeg", "--qualities", "0.1,0.3,0.5,0.7", "--limit", "4", "-o", str(out)]
    assert main([*args, "--bd-reference", "mlcodec-hyperprior"]) == 2  # no --reference: no pixel rows
    assert "no mlcodec-hyperprior/pixel curve" in capsys.readouterr().err
    assert main([*args, "--bd-reference", "webp"]) == 2  # not among --codecs: refused before evaluating
    assert "webp is not among --codecs" in capsys.readouterr().err
    assert main([*args, "--bd-reference", "mlcodec-hyperprior/latent"]) == 0
    result = json.loads((out / "eval_seg.json").read_text())
    assert result["bd_reference"] == "mlcodec-hyperprior/latent" and result["bd_rate_vs_reference"] == {}
    assert "BD-rate vs mlcodec-hyperprior/latent: no other curve" in capsys.readouterr().out
    assert main(["-q", "train-head", "--task", "det", "--head", "pixel-det", "-o", str(heads)]) == 2
    assert "--yolo-data" in capsys.readouterr().err
