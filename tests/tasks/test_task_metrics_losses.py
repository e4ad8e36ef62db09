"""Task metrics (torchmetrics) and losses (FCOS assignment, the stride-2 segmentation loss)."""

import pytest
import torch
import torch.nn.functional as F

from mlcodec.tasks.losses import assign, cell_centers, decode_boxes, segmentation_loss
from mlcodec.tasks.metrics import TaskMetric


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
