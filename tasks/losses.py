"""Losses and output decoding for the task heads (detection built on torchvision's box ops)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms, generalized_box_iou_loss, sigmoid_focal_loss

from .heads import upsample_bilinear

SEG_LOSS_STRIDE = 2  # image pixels per label the segmentation loss compares


def segmentation_loss(logits: Tensor, targets: Tensor, out_stride: int,
                      loss_stride: int = SEG_LOSS_STRIDE) -> Tensor:
    """Cross-entropy of stride-``out_stride`` class logits against every ``loss_stride``-th label
    of the semantic map ``targets`` (``(N, H, W)``, -1 ignored), the logits upsampled bilinearly to
    that grid.

    At ``loss_stride=2`` the loss sees a quarter of the labels of a full-resolution loss; on the
    latent segmenter (128 px) the full-resolution softmax and its backward were a quarter of a
    training step; on the synthetic benchmark the stride-2 loss trained faster and no worse
    (docs/experiments/task-heads.md).
    Validation and :func:`~mlcodec.tasks.train.predict` still score every pixel.
    """
    if out_stride % loss_stride:
        raise ValueError(f"loss_stride {loss_stride} must divide the logits' stride {out_stride}")
    labels = targets[..., ::loss_stride, ::loss_stride]
    h, w = labels.shape[-2:]
    up = upsample_bilinear(logits, out_stride // loss_stride)
    if up.shape[-2] < h or up.shape[-1] < w:
        raise ValueError(f"logits {tuple(logits.shape[-2:])} at stride {out_stride} do not cover "
                         f"labels of {tuple(targets.shape[-2:])}")
    return F.cross_entropy(up[..., :h, :w], labels, ignore_index=-1)


def cell_centers(h: int, w: int, stride: int, device: torch.device) -> Tensor:
    """``(h*w, 2)`` pixel coordinates ``(x, y)`` of the cell centres of a stride-``stride`` grid."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], 1).float().add_(0.5).mul_(stride)


def assign(centers: Tensor, boxes: Tensor, labels: Tensor, stride: int,
           radius: float = 1.5) -> tuple[Tensor, Tensor]:
    """FCOS assignment with centre sampling: each cell whose centre lies inside a box and within
    ``radius * stride`` of its centre is a positive for the smallest such box.

    Returns ``(cls_target (N,) with -1 for background, box_target (N, 4) xyxy)``.
    """
    n = centers.shape[0]
    if boxes.numel() == 0:
        return torch.full((n,), -1, dtype=torch.long, device=centers.device), centers.new_zeros((n, 4))
    x, y = centers[:, 0:1], centers[:, 1:2]
    inside = (x > boxes[:, 0]) & (x < boxes[:, 2]) & (y > boxes[:, 1]) & (y < boxes[:, 3])
    bcx, bcy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    near = ((x - bcx).abs() <= radius * stride) & ((y - bcy).abs() <= radius * stride)
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).expand(n, -1)
    area = torch.where(inside & near, area, torch.full_like(area, float("inf")))
    best_area, best = area.min(1)
    cls = torch.where(torch.isfinite(best_area), labels[best], torch.full_like(best, -1))
    return cls, boxes[best]


def _ltrb_to_xyxy(centers: Tensor, ltrb: Tensor) -> Tensor:
    return torch.cat([centers - ltrb[:, :2], centers + ltrb[:, 2:]], 1)


def _centerness(centers: Tensor, boxes: Tensor) -> Tensor:
    l, t = centers[:, 0] - boxes[:, 0], centers[:, 1] - boxes[:, 1]
    r, b = boxes[:, 2] - centers[:, 0], boxes[:, 3] - centers[:, 1]
    lr = torch.stack([l, r], 1).clamp(min=1e-3)
    tb = torch.stack([t, b], 1).clamp(min=1e-3)
    return ((lr.min(1).values / lr.max(1).values) * (tb.min(1).values / tb.max(1).values)).sqrt()


def detection_loss(out: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> Tensor:
    """Focal loss (classes) + GIoU loss (boxes) + BCE (centerness), normalised by positives.

    ``targets[i]`` holds ``boxes`` (K, 4) xyxy pixels and 0-based ``labels`` (K,).
    """
    cls_logits, ltrb, ctr = out["cls"], out["box"], out["ctr"]
    b, k, h, w = cls_logits.shape
    stride = int(out["stride"])
    centers = cell_centers(h, w, stride, cls_logits.device)
    cls_t, box_t = zip(*(assign(centers, t["boxes"], t["labels"], stride) for t in targets))
    cls_t, box_t = torch.stack(cls_t), torch.stack(box_t)  # (B, N), (B, N, 4)
    logits = cls_logits.flatten(2).transpose(1, 2)  # (B, N, K)
    onehot = torch.zeros_like(logits)
    pos = cls_t >= 0
    onehot[pos, cls_t[pos]] = 1.0
    num_pos = max(int(pos.sum()), 1)
    loss = sigmoid_focal_loss(logits, onehot, reduction="sum") / num_pos
    if pos.any():
        c = centers.expand(b, -1, -1)[pos]
        pred = _ltrb_to_xyxy(c, ltrb.flatten(2).transpose(1, 2)[pos])
        ctr_t = _centerness(c, box_t[pos])
        loss = loss + (generalized_box_iou_loss(pred, box_t[pos], reduction="none") * ctr_t).sum() \
            / ctr_t.sum().clamp(min=1e-6)
        loss = loss + F.binary_cross_entropy_with_logits(ctr.flatten(1)[pos], ctr_t)
    return loss


@torch.no_grad()
def decode_boxes(out: dict[str, Tensor], score_thresh: float = 0.05, iou_thresh: float = 0.6,
                 max_det: int = 100, image_size: tuple[int, int] | None = None) -> list[dict[str, Tensor]]:
    """Per image ``{"boxes", "scores", "labels"}`` after class-wise NMS (torchvision)."""
    cls_logits, ltrb, ctr = out["cls"], out["box"], out["ctr"]
    b, k, h, w = cls_logits.shape
    centers = cell_centers(h, w, int(out["stride"]), cls_logits.device)
    scores = (cls_logits.sigmoid() * ctr.sigmoid()).sqrt().flatten(2).transpose(1, 2)  # (B, N, K)
    results = []
    for i in range(b):
        s = scores[i]
        cell, cls = torch.nonzero(s > score_thresh, as_tuple=True)
        sc = s[cell, cls]
        if sc.numel() > 1000:
            top = sc.topk(1000).indices
            cell, cls, sc = cell[top], cls[top], sc[top]
        boxes = _ltrb_to_xyxy(centers[cell], ltrb[i].flatten(1).T[cell])
        if image_size is not None:
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image_size[1])
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image_size[0])
        keep = batched_nms(boxes, sc, cls, iou_thresh)[:max_det]
        results.append({"boxes": boxes[keep], "scores": sc[keep], "labels": cls[keep]})
    return results
