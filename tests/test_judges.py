"""Judges (pretrained classifiers as label-free referees), their agreement measures, the paired
bootstrap BD-rate and the dataset-like crop protocol."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mlcodec.data.crops import dataset_crops
from mlcodec.metrics import bd_rate_span, bootstrap_bd_rate

lite0 = pytest.importorskip("efficientnet_lite_pytorch", reason="the judges extra is not installed: "
                            "pip install 'mlcodec[judges]'")


def test_agreement_equals_hand_computed_values():
    from mlcodec.tasks.judge_eval import agreement

    ref = torch.tensor([[3.0, 1.0, 0.0, 0.0, 0.0, -1.0],
                        [0.0, 2.0, 1.0, 0.0, 0.0, -1.0]])
    test = torch.tensor([[3.0, 1.0, 0.0, 0.0, 0.0, -1.0],   # identical: agree, top-5 equal, KL 0
                         [2.0, 0.0, 1.0, -5.0, 0.0, 3.0]])  # top-1 5 vs 1; top-5 sets share 3 of 5
    s = agreement(ref, test)
    assert s["agree"].tolist() == [1.0, 0.0]
    # row 2: ref top-5 {1, 2, 0, 3, 4}, test top-5 {5, 0, 2, 4, 1}: shared {0, 1, 2, 4} -> 4/5
    assert s["top5"].tolist() == [1.0, 0.8]
    p, q = ref[1].double().softmax(0), test[1].double().softmax(0)
    assert s["kl"][0] == pytest.approx(0.0, abs=1e-12)
    assert s["kl"][1] == pytest.approx(float((p * (p.log() - q.log())).sum()))
    with pytest.raises(ValueError, match="shape"):
        agreement(ref, test[:, :5])


def test_bootstrap_bd_rate_of_half_the_bits_is_exactly_minus_50():
    rng = np.random.default_rng(0)
    rate = np.array([0.1, 0.2, 0.4, 0.8, 1.6])[:, None] * rng.uniform(0.5, 1.5, (5, 300))
    agree = (rng.uniform(0, 1, (5, 300)) < np.array([0.2, 0.45, 0.7, 0.85, 0.95])[:, None]).astype(float)
    b = bootstrap_bd_rate(rate, agree, rate / 2, agree, resamples=200, seed=1)
    assert b.span.value == pytest.approx(-50.0)
    assert b.ci == pytest.approx((-50.0, -50.0))
    # the range is what each curve covers in 97.5% of resamples at each end: few miss it
    assert b.no_overlap <= 20 and b.resamples == 200
    lo, hi = b.span.metric_range
    assert agree.mean(1).min() <= lo < hi <= agree.mean(1).max()
    assert b.span.rate_test[0] == pytest.approx(b.span.rate_ref[0] / 2)


def test_bootstrap_interval_covers_a_noisy_difference():
    rng = np.random.default_rng(2)
    probs = np.array([0.2, 0.45, 0.7, 0.85, 0.95])[:, None]
    rate = np.array([0.1, 0.2, 0.4, 0.8, 1.6])[:, None] * np.ones((5, 400))
    a = (rng.uniform(0, 1, (5, 400)) < probs).astype(float)
    b = (rng.uniform(0, 1, (5, 400)) < probs).astype(float)
    r = bootstrap_bd_rate(rate, a, rate, b, resamples=300)
    assert r.ci[0] < r.span.value < r.ci[1]
    assert r.ci[0] < 0 < r.ci[1]  # the same process: no difference is claimed


def test_fixed_metric_range_must_be_covered():
    rates, m = [0.1, 0.2, 0.4, 0.8], [0.2, 0.5, 0.7, 0.8]
    assert bd_rate_span(rates, m, rates, m, metric_range=(0.3, 0.6)).metric_range == (0.3, 0.6)
    with pytest.raises(ValueError, match="fixed range"):
        bd_rate_span(rates, m, rates, m, metric_range=(0.1, 0.6))


def test_dataset_crops_are_downscaled_crops_of_the_photo():
    import skimage.data

    photo = Image.fromarray(skimage.data.astronaut())
    crops = dataset_crops(photo, "astronaut", 5, size=96, scales=(1.0, 3.0), seed=3)
    assert [c.image.size for c in crops] == [(96, 96)] * 5
    assert all(1.0 <= c.scale <= 3.0 for c in crops)
    again = dataset_crops(photo, "astronaut", 5, size=96, scales=(1.0, 3.0), seed=3)
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(crops, again))
    # a crop at 2x equals the same place of the photo downscaled 2x first (antialiased)
    c = dataset_crops(photo, "astronaut", 1, size=64, scales=(2.0, 2.0), seed=0)[0]
    small = photo.resize((256, 256), Image.LANCZOS, reducing_gap=None)
    left, top = c.box[0] / 2, c.box[1] / 2
    if left == int(left) and top == int(top):  # only on whole-pixel boxes is the crop exact
        assert np.array_equal(np.asarray(c.image), np.asarray(small.crop((left, top, left + 64, top + 64))))
    with pytest.raises(ValueError, match="smaller than"):
        dataset_crops(photo.resize((50, 50)), "tiny", 1, size=64)
    jpeg = dataset_crops(photo, "astronaut", 20, size=64, jpeg=(30,), jpeg_share=1.0)
    assert {c.jpeg for c in jpeg} == {30}


def test_efficientnet_lite0_loads_offline_and_knows_an_espresso():
    import skimage.data

    from mlcodec.tasks.judges import create_judge, list_judges

    assert "efficientnet-lite0" in list_judges()
    judge = create_judge("efficientnet-lite0")
    p = judge.logits([Image.fromarray(skimage.data.coffee())]).softmax(1)[0]
    assert int(p.argmax()) == 967 and float(p.max()) > 0.8  # ImageNet class 967: espresso


def test_timm_judge_takes_the_users_weights_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    from mlcodec.tasks.judges import create_judge

    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=1000).eval()
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    judge = create_judge("timm:resnet10t", weights=tmp_path / "w.safetensors")
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8))
    with torch.no_grad():
        expected = model(judge.to_input([im]))
    assert torch.equal(judge.logits([im]), expected)
    with pytest.raises(ValueError, match="weights file"):
        create_judge("timm:resnet10t")
    with pytest.raises(ValueError, match="Unknown judge"):
        create_judge("no-such-judge")


def test_read_labels_names_the_missing_image(tmp_path):
    from mlcodec.tasks.judge_eval import read_labels

    (tmp_path / "l.csv").write_text("file,label\na.png,3\nb,7\n")
    assert read_labels(tmp_path / "l.csv", ["a.png", "b.png"]).tolist() == [3, 7]
    with pytest.raises(ValueError, match="c.png"):
        read_labels(tmp_path / "l.csv", ["a.png", "c.png"])


def test_confident_subset_keeps_the_surest_within_a_cap_per_photo():
    from mlcodec.tasks.judge_eval import confident_subset

    conf = [0.9, 0.2, 0.95, 0.6, 0.8, 0.7, 0.5]
    photos = ["a", "b", "a", "b", "a", "a", "b"]
    assert confident_subset(conf, photos) == list(range(7))
    assert confident_subset(conf, photos, keep=3) == [0, 2, 4]
    assert confident_subset(conf, photos, min_confidence=0.65) == [0, 2, 4, 5]
    # a's surest two (2, 0), then b's (3, 6) in confidence order, within keep=4
    assert confident_subset(conf, photos, keep=4, max_per_photo=2) == [0, 2, 3, 6]
    assert confident_subset(conf, photos, keep=4, min_confidence=0.55, max_per_photo=2) == [0, 2, 3]
    with pytest.raises(ValueError, match="7 confidences for 6 photos"):
        confident_subset(conf, photos[:6])


def test_crops_and_judge_eval_commands(tmp_path, capsys):
    import skimage.data

    from mlcodec.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("coffee", "chelsea"):
        Image.fromarray(getattr(skimage.data, name)()).save(photos / f"{name}.png")
    assert main(["crops", str(photos), "-o", str(tmp_path / "crops"), "--per-photo", "6", "--size", "128",
                 "--keep", "8", "--quiet"]) == 0
    index = json.loads((tmp_path / "crops" / "crops.json").read_text())
    conf = [c["confidence"] for c in index["crops"]]
    assert index["sampled"] == 12 and len(conf) == 8
    assert len(list((tmp_path / "crops").glob("*.png"))) == 8
    assert main(["crops", str(photos), "-o", str(tmp_path / "capped"), "--per-photo", "6", "--size", "128",
                 "--keep", "8", "--max-per-photo", "3", "--quiet"]) == 0
    capped = json.loads((tmp_path / "capped" / "crops.json").read_text())["crops"]
    assert sorted(c["photo"] for c in capped) == ["chelsea"] * 3 + ["coffee"] * 3
    (tmp_path / "labels.csv").write_text("".join(f"{c['file']},{c['prediction']}\n" for c in index["crops"]))
    assert main(["eval", "--judge", "efficientnet-lite0", str(tmp_path / "crops"), "--codecs", "jpeg,webp",
                 "--qualities", "0,0.05,0.3,0.9", "--labels", str(tmp_path / "labels.csv"),
                 "--bootstrap", "50", "-o", str(tmp_path / "out"), "--quiet"]) == 0
    result = json.loads((tmp_path / "out" / "judge_efficientnet-lite0.json").read_text())
    assert result["uncompressed_accuracy"] == 1.0  # labels are the judge's own predictions
    assert len(result["rows"]) == 8 and result["bd_reference"] == "webp"
    assert set(result["bd_rates"]["jpeg"]) == {"agree", "agree_confident", "top5"}
    for r in result["rows"]:  # the labels are its predictions: accuracy is agreement
        assert r["accuracy"] == pytest.approx(r["agree"])
    assert "BD-rate vs webp: jpeg" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "crops"), "-o", str(tmp_path / "x")]) == 2
    assert "eval needs --task" in capsys.readouterr().err


def test_a_codec_given_as_label_equals_name_is_reported_under_its_label():
    import skimage.data

    from mlcodec.tasks.judge_eval import evaluate_judge
    from mlcodec.tasks.judges import create_judge

    judge = create_judge("efficientnet-lite0")
    images = [Image.fromarray(skimage.data.coffee()[:224, :224]), Image.fromarray(skimage.data.chelsea()[:224, :224])]
    plain = evaluate_judge(judge, images, ["jpeg"], [0.2], progress=False)
    labelled = evaluate_judge(judge, images, ["low=jpeg"], [0.2], progress=False)
    assert [r["codec"] for r in labelled["rows"]] == ["low"]
    assert {k: v for k, v in labelled["rows"][0].items() if k != "codec"} == \
        {k: v for k, v in plain["rows"][0].items() if k != "codec"}
    assert list(labelled["per_image"]) == ["low@0.2"]
