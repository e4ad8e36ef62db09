"""Task-aware fine-tuning of the codec (``mlcodec train-codec --objective tasks``): the multi-task
half of MTCE.

The codec is fine-tuned so that its latent serves task heads as well as reconstruction. Each step
adds task losses to the rate-distortion loss:

    loss = RD(photos) + RD(scenes) + task_weight * sum_t L_t(head_t(latent(scenes)))

- ``RD`` is :func:`mlcodec.train.rd_terms`: per-sample ``lambda(q) * 255^2 * MSE + bpp`` at a
  random quality ``q``. Photo crops keep the codec a general image codec; the task images
  (procedural scenes, or a dataset) are what the task losses see.
- ``latent`` is the dequantized latent, with straight-through rounding: the same tensor the
  latent loader decodes and the heads read at inference.
- The heads are the registry's latent heads with a learned stem, trained from scratch alongside
  the codec. Their gradients reach the analysis transform, gains and hyperprior. They are thrown
  away afterwards: what ships is the codec, and heads are then trained on its shards as usual
  (``mlcodec train-head``).

This is the multi-task collaborative embedding idea of Guo, Sui et al. (ECCV 2024): one latent
shaped jointly by several task losses. It is not their full method: there is no embedding
alignment, and no diffusion-based invariant knowledge learning (DIKL). A task left out of
``tasks`` (detection, by default) can check how the tuned latent serves an unseen task.
Measured so far (BENCHMARKS.md, "Task-aware codec tuning"): a tune on an H200 did not lift the
latent heads.

The task data is either a dataset (:class:`~mlcodec.data.sources.Source`: ImageFolder labels for
cls, COCO masks for seg), every image resized to ``scene_size`` squared, or by default scenes from
:mod:`mlcodec.data.synthetic` under a seed of their own (1000; the task benchmark's train and val
splits use seeds 0 and 1, so tuning never sees them). Either is loaded up front, in parallel, and
kept on the training device.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mlcodec.data.sources import Source
from mlcodec.data.synthetic import CLASS_NAMES, SyntheticScenes
from mlcodec.objective import CodecObjective
from mlcodec.train import rd_terms

from .data import TaskSpec, semantic_map
from .heads import LatentClassifier, LatentSegmenter
from .losses import segmentation_loss

log = logging.getLogger(__name__)

TUNING_TASKS = ("cls", "seg")


@dataclass(frozen=True)
class TaskTuning:
    """The task objective's own settings; everything else (photos, steps, learning rate, device,
    run folder) is the training loop's :class:`mlcodec.train.TrainConfig`."""

    tasks: tuple[str, ...] = TUNING_TASKS
    task_weight: float = 0.3
    scenes: int = 12000  # synthetic scenes generated, or at most this many samples of a dataset
    scene_size: int = 128
    scene_seed: int = 1000
    scene_batch: int = 32
    head_lr: float = 2e-3
    codec_lr: float = 1e-4  # the codec's learning rate when train-codec is given none
    workers: int = 0  # processes preparing the task data (0: all cores)


class TaskBatch(NamedTuple):
    images: torch.Tensor  # (B, 3, S, S) float in 0..1
    labels: torch.Tensor  # (B,) long, -1: none
    semantic: torch.Tensor  # (B, S, S) long, 0 background, class + 1
    boxes: torch.Tensor  # (B, K, 5) float: x0, y0, x1, y1 (pixels), class (-1: padding)

    def box_targets(self) -> list[dict[str, torch.Tensor]]:
        """The boxes as :func:`mlcodec.tasks.losses.detection_loss` takes them."""
        out = []
        for b in self.boxes:
            keep = b[:, 4] >= 0
            out.append({"boxes": b[keep, :4], "labels": b[keep, 4].long()})
        return out


@dataclass
class TuningData:
    """Task data kept on the training device: images ``(N, 3, S, S)`` uint8, image labels ``(N,)``
    (-1: none), semantic maps ``(N, S, S)`` uint8 (0 background, class + 1), boxes ``(N, K, 5)``
    (xyxy pixels and class; class -1 pads), class count."""

    images: torch.Tensor
    labels: torch.Tensor
    semantic: torch.Tensor
    boxes: torch.Tensor
    num_classes: int

    @staticmethod
    def stack(items: list[tuple[np.ndarray, int, np.ndarray, np.ndarray]], num_classes: int) -> TuningData:
        if not items:
            raise ValueError("no task data: the dataset is empty")
        images = torch.from_numpy(np.stack([it[0] for it in items])).permute(0, 3, 1, 2)
        k = max(1, max(len(it[3]) for it in items))
        boxes = torch.full((len(items), k, 5), -1.0)
        for i, it in enumerate(items):
            if len(it[3]):
                boxes[i, : len(it[3])] = torch.from_numpy(np.asarray(it[3], np.float32))
        return TuningData(images.contiguous(), torch.tensor([it[1] for it in items], dtype=torch.long),
                          torch.from_numpy(np.stack([it[2] for it in items]).astype(np.uint8)),
                          boxes, num_classes)

    def to(self, device: str) -> TuningData:
        return TuningData(self.images.to(device), self.labels.to(device), self.semantic.to(device),
                          self.boxes.to(device), self.num_classes)

    def batch(self, n: int, gen: torch.Generator, device: str) -> TaskBatch:
        """``n`` random samples, flipped left-right at random (targets with them)."""
        idx = torch.randint(len(self.images), (n,), generator=gen).to(self.images.device)
        x = self.images[idx].to(device, non_blocking=True).float().div_(255.0)
        c, m = self.labels[idx].to(device), self.semantic[idx].to(device).long()
        b = self.boxes[idx].to(device)
        flip = (torch.rand(n, generator=gen) < 0.5).to(device)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        m = torch.where(flip[:, None, None], m.flip(-1), m)
        w = float(x.shape[-1])
        mirrored = torch.stack([w - b[..., 2], b[..., 1], w - b[..., 0], b[..., 3], b[..., 4]], -1)
        b = torch.where(flip[:, None, None] & (b[..., 4:] >= 0), mirrored, b)
        return TaskBatch(x, c, m, b)


def _map_in_pool(fn, items, init, initargs: tuple, workers: int, chunksize: int) -> list:
    """``fn`` over ``items`` in forked processes set up by ``init(*initargs)`` (0 workers: all
    cores; no more than one per 64 items)."""
    items = list(items)
    workers = min(workers or mp.cpu_count(), max(1, len(items) // 64))
    with mp.get_context("fork").Pool(workers, init, initargs) as pool:
        return pool.map(fn, items, chunksize=chunksize)


_WORKER_SCENES: SyntheticScenes | None = None  # one generator per pool process


def _init_worker(count: int, size: int, seed: int) -> None:
    global _WORKER_SCENES
    _WORKER_SCENES = SyntheticScenes(count, size, seed)


def _scene(i: int) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    assert _WORKER_SCENES is not None
    s = _WORKER_SCENES[i]
    boxes = np.concatenate([s.boxes, s.labels[:, None].astype(np.float32)], 1)
    return np.asarray(s.image, np.uint8), s.label, s.semantic, boxes


def scene_pool(count: int, size: int, seed: int, workers: int = 0) -> TuningData:
    """``count`` synthetic scenes of ``size`` squared (:class:`TuningData`)."""
    items = _map_in_pool(_scene, range(count), _init_worker, (count, size, seed), workers, 64)
    return TuningData.stack(items, len(CLASS_NAMES))


_WORKER_SOURCE: tuple[Source, int, tuple[str, ...], TaskSpec] | None = None


def _init_source(source: Source, size: int, tasks: tuple[str, ...], spec: TaskSpec) -> None:
    global _WORKER_SOURCE
    _WORKER_SOURCE = (source, size, tasks, spec)


def _sample(i: int) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    assert _WORKER_SOURCE is not None
    source, size, tasks, spec = _WORKER_SOURCE
    s = source[i]
    where = f"sample {s.key} ({s.origin or i})"
    im = s.image if isinstance(s.image, Image.Image) else Image.fromarray(np.asarray(s.image))
    im = im.convert("RGB")
    label = -1
    if "cls" in tasks:
        if "label" not in s.target:
            raise ValueError(f"{where} has no 'label': tuning with cls needs image labels "
                             "(ImageFolder layout, or COCO images with a 'label'); drop cls from tasks")
        label = int(s.target["label"])
    semantic = np.zeros((size, size), np.uint8)
    if "seg" in tasks:
        if "segmentation" not in s.target:
            raise ValueError(f"{where} has no 'segmentation': tuning with seg needs instance masks "
                             "(a COCO source); drop seg from tasks")
        full = semantic_map(s.target, spec, im.height, im.width).astype(np.uint8)
        semantic = np.asarray(Image.fromarray(full).resize((size, size), Image.NEAREST))
    boxes = np.zeros((0, 5), np.float32)
    if "det" in tasks:
        if "boxes" not in s.target:
            raise ValueError(f"{where} has no 'boxes': tuning with det needs boxes (a COCO source); "
                             "drop det from tasks")
        xyxy = np.asarray(s.target["boxes"], np.float32).reshape(-1, 4)
        xyxy *= np.array([size / im.width, size / im.height] * 2, np.float32)
        cls = [spec.class_index(c) for c in s.target.get("labels", [])]
        boxes = np.concatenate([xyxy, np.asarray(cls, np.float32).reshape(-1, 1)], 1)
    return np.asarray(im.resize((size, size), Image.BILINEAR), np.uint8), label, semantic, boxes


def source_pool(source: Source, size: int, tasks: tuple[str, ...], limit: int = 0,
                workers: int = 0) -> TuningData:
    """A dataset as tuning data: ``limit`` samples at most (evenly spaced), each image resized to
    ``size`` squared (aspect ratio not kept), its ``label`` and its semantic map (nearest)."""
    if not source.class_names:
        raise ValueError(f"{source.name}: tuning needs class names (an ImageFolder or COCO source)")
    if len(source.class_names) > 254:
        raise ValueError(f"{source.name}: {len(source.class_names)} classes; tuning stores semantic "
                         "maps as uint8 and takes at most 254")
    n = len(source) if not limit else min(limit, len(source))
    indexes = np.linspace(0, len(source) - 1, n).round().astype(int).tolist() if n else []
    spec = TaskSpec("seg", tuple(source.class_names), tuple(getattr(source, "category_ids", ())))
    items = _map_in_pool(_sample, indexes, _init_source, (source, size, tuple(tasks), spec), workers, 16)
    return TuningData.stack(items, len(source.class_names))


def check_tuning_tasks(tasks: tuple[str, ...]) -> None:
    """Refuse an empty task list or tasks the objective has no head for."""
    unknown = set(tasks) - set(TUNING_TASKS)
    if unknown or not tasks:
        raise ValueError(f"the task objective trains with tasks among {TUNING_TASKS}, not {sorted(unknown)}")


def build_heads(tasks: tuple[str, ...], channels: int, num_classes: int) -> torch.nn.ModuleDict:
    """The latent heads trained alongside the codec (learned stems: gradients reach the latent)."""
    check_tuning_tasks(tasks)
    heads = {}
    if "cls" in tasks:
        heads["cls"] = LatentClassifier(channels, num_classes)
    if "seg" in tasks:
        heads["seg"] = LatentSegmenter(channels, num_classes + 1)
    return torch.nn.ModuleDict(heads)


def task_losses(heads: torch.nn.ModuleDict, latent: torch.Tensor, labels: torch.Tensor,
                semantic: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each task head's loss on a batch of latents."""
    out = {}
    if "cls" in heads:
        out["cls"] = F.cross_entropy(heads["cls"](latent), labels)
    if "seg" in heads:
        seg = heads["seg"]
        out["seg"] = segmentation_loss(seg.logits(latent), semantic, seg.out_stride)
    return out


class TaskObjective(CodecObjective):
    """``train-codec --objective tasks``: per step, a batch of task images coded at random
    qualities, their rate-distortion loss, and ``task_weight`` times the summed losses of latent
    heads (learned stems) trained alongside the codec."""

    name = "tasks"

    def __init__(self, cfg: TaskTuning = TaskTuning(), source: Source | None = None) -> None:
        super().__init__()
        check_tuning_tasks(cfg.tasks)  # before the task data is prepared, not at setup
        self.cfg, self.source = cfg, source
        self.lr, self.weight_decay, self.codec_lr = cfg.head_lr, 1e-4, cfg.codec_lr
        self.data: TuningData | None = None
        self.heads = torch.nn.ModuleDict()

    def prepare(self) -> None:
        cfg, t0 = self.cfg, time.time()
        self.data = scene_pool(cfg.scenes, cfg.scene_size, cfg.scene_seed, cfg.workers) \
            if self.source is None else source_pool(self.source, cfg.scene_size, cfg.tasks, cfg.scenes,
                                                    cfg.workers)
        log.info("%d task images ready in %.0fs", len(self.data.images), time.time() - t0)

    def setup(self, model: torch.nn.Module, device: str) -> None:
        assert self.data is not None, "prepare() first"
        self.device = device
        self.heads = build_heads(self.cfg.tasks, model.M, self.data.num_classes).to(device)
        if device.startswith("cuda"):
            self.data = self.data.to(device)

    def loss(self, model, gen, lambdas):
        assert self.data is not None
        b = self.data.batch(self.cfg.scene_batch, gen, self.device)
        qs = torch.rand(b.images.shape[0], generator=gen).to(self.device)
        fwd = model(b.images, qs)
        rd_scene, _, _ = rd_terms(fwd, b.images, qs, lambdas)
        losses = task_losses(self.heads, fwd.latent, b.labels, b.semantic)
        return rd_scene + self.cfg.task_weight * sum(losses.values()), {"rd_scene": rd_scene, **losses}

    def metadata(self) -> dict:
        tuning = asdict(self.cfg)
        tuning["task_data"] = "synthetic" if self.source is None else self.source.describe()
        return {"objective": self.name, "task_tuning": tuning}
