"""Task metrics, all computed by torchmetrics: top-1 accuracy, COCO mAP, mean IoU."""

from __future__ import annotations

from typing import Any

PRIMARY = {"cls": "top1", "det": "map", "seg": "miou"}


class TaskMetric:
    """Accumulates predictions of one task; ``compute()`` returns ``{name: value}`` floats.

    * cls: ``top1`` (``MulticlassAccuracy``, micro) from logits ``(B, K)`` and labels ``(B,)``;
    * det: ``map`` (mAP@[.5:.95]) and ``map_50`` (``MeanAveragePrecision``, xyxy boxes) from
      lists of ``{"boxes", "scores", "labels"}`` / ``{"boxes", "labels"}``;
    * seg: ``miou`` (``MulticlassJaccardIndex``, macro over classes incl. background, ``-1``
      ignored) from logits ``(B, K, H, W)`` or index maps and target maps ``(B, H, W)``.
    """

    def __init__(self, task: str, num_outputs: int) -> None:
        self.task = task
        if task == "cls":
            from torchmetrics.classification import MulticlassAccuracy

            self.metric: Any = MulticlassAccuracy(num_classes=num_outputs, average="micro")
        elif task == "det":
            from torchmetrics.detection import MeanAveragePrecision

            self.metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox")
        elif task == "seg":
            from torchmetrics.classification import MulticlassJaccardIndex

            self.metric = MulticlassJaccardIndex(num_classes=num_outputs, average="macro", ignore_index=-1)
        else:
            raise ValueError(f"unknown task {task!r}")

    def update(self, preds: Any, targets: Any) -> None:
        if self.task == "seg":
            if preds.dim() == 4:
                preds = preds.argmax(1)
            h, w = targets.shape[-2:]
            preds = preds[..., :h, :w]
        elif self.task == "det":
            preds = [{k: v.detach().cpu() for k, v in p.items()} for p in preds]
            targets = [{k: v.cpu() for k, v in t.items()} for t in targets]
        self.metric.update(preds, targets)

    def compute(self) -> dict[str, float]:
        out = self.metric.compute()
        if self.task == "cls":
            return {"top1": float(out)}
        if self.task == "seg":
            return {"miou": float(out)}
        return {"map": float(out["map"]), "map_50": float(out["map_50"])}


def primary(task: str, values: dict[str, float]) -> float:
    return values[PRIMARY[task]]

