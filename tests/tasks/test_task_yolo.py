"""The ultralytics YOLO pixel reference, offline."""

import torch


def test_yolo_reference_trains_offline_and_predicts(bench, tmp_path, size):
    from PIL import Image

    from mlcodec.tasks.yolo import YoloDetector, train_yolo

    root, _ = bench
    r = train_yolo(root / "yolo/data.yaml", tmp_path, epochs=1, imgsz=size, batch=8, workers=0)
    assert [h["epoch"] for h in r["history"]] == [1]
    assert r["history"][0]["seconds"] > 0 and 0 <= r["history"][0]["map"] <= r["history"][0]["map_50"] <= 1
    det = YoloDetector(r["checkpoint"])
    images = [Image.open(root / f"yolo/images/val/{i:06d}.png") for i in range(3)]
    preds = det.predict_images(images)
    assert len(preds) == 3
    for p in preds:
        assert p["boxes"].shape[1] == 4 and p["boxes"].shape[0] == p["scores"].shape[0] <= 100
        assert p["labels"].dtype == torch.long and (p["labels"] < 8).all()
