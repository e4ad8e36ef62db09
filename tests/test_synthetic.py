import json

import numpy as np
import pytest

from mlcodec.data.sources import CocoSource, ImageFolderSource
from mlcodec.data.synthetic import CLASS_NAMES, SyntheticScenes, export_all


@pytest.fixture(scope="module")
def scenes():
    return SyntheticScenes(24, size=96, seed=3)


def test_deterministic_by_seed_and_index(scenes):
    again = SyntheticScenes(24, size=96, seed=3)
    for i in (0, 7, 23):
        assert np.array_equal(np.asarray(scenes[i].image), np.asarray(again[i].image))
        assert np.array_equal(scenes[i].boxes, again[i].boxes)
    other = SyntheticScenes(24, size=96, seed=4)
    assert not np.array_equal(np.asarray(scenes[0].image), np.asarray(other[0].image))


def test_targets_follow_the_visible_pixels(scenes):
    assert len(CLASS_NAMES) >= 8
    for sc in scenes:
        k = len(sc.labels)
        assert sc.image.size == (96, 96) and sc.masks.shape == (k, 96, 96)
        assert (sc.masks.sum(0) <= 1).all()  # occlusion leaves visible masks disjoint
        for m, box, c in zip(sc.masks, sc.boxes, sc.labels):
            ys, xs = np.nonzero(m)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert (sc.semantic[m] == c + 1).all()
        assert (sc.semantic[sc.masks.sum(0) == 0] == 0).all()
        assert sc.label == sc.labels[-1]  # the main object, drawn last
        assert sc.masks[-1].sum() >= (0.2 * 96) ** 2  # large: radius >= 20% of the side


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="size"):
        SyntheticScenes(4, size=8)
    with pytest.raises(ValueError, match="backgrounds"):
        SyntheticScenes(4, backgrounds="sky")
    with pytest.raises(IndexError):
        SyntheticScenes(4)[4]


def test_exports_round_trip_through_the_real_sources(tmp_path):
    from mlcodec.tasks.data import TaskSpec, semantic_map

    paths = export_all(tmp_path, train=10, val=4, size=64, seed=1)
    train = SyntheticScenes(10, 64, seed=1)

    folder = ImageFolderSource(paths["imagefolder/train"])
    assert len(folder) == 10
    by_file = {p.stem: label for p, label in folder.files}
    for i, sc in enumerate(train):
        assert folder.class_names[by_file[f"{i:06d}"]] == CLASS_NAMES[sc.label]

    coco = CocoSource(paths["coco/train"], tmp_path / "coco/train/images")
    assert coco.class_names == list(CLASS_NAMES) and coco.category_ids == list(range(1, 9))
    spec = TaskSpec("seg", tuple(coco.class_names), tuple(coco.category_ids))
    for i, sc in enumerate(train):
        t = coco[i].target
        assert t["label"] == sc.label
        assert [c - 1 for c in t["labels"]] == sc.labels.tolist()
        np.testing.assert_allclose(t["boxes"], sc.boxes, atol=0.01)
        assert np.array_equal(semantic_map(t, spec, 64, 64), sc.semantic)
        assert np.array_equal(np.asarray(coco[i].image), np.asarray(sc.image))  # PNG: lossless

    yolo = tmp_path / "yolo"
    assert "train: images/train" in (yolo / "data.yaml").read_text()
    for i, sc in enumerate(train):
        rows = [line.split() for line in (yolo / f"labels/train/{i:06d}.txt").read_text().splitlines()]
        assert [int(r[0]) for r in rows] == sc.labels.tolist()
        cx = [(b[0] + b[2]) / 2 / 64 for b in sc.boxes]
        np.testing.assert_allclose([float(r[1]) for r in rows], cx, atol=1e-5)
    anns = json.loads(paths["coco/val"].read_text())
    assert len(anns["images"]) == 4
