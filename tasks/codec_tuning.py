"""Task-aware fine-tuning of the codec (``mlcodec tune-codec``): the multi-task half of MTCE.

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
Measured so far (BENCHMARKS.md): a 4,200-step tune on an H200 did not lift the latent heads.

The task data is either a dataset (:class:`~mlcodec.data.sources.Source`: ImageFolder labels for
cls, COCO masks for seg), every image resized to ``scene_size`` squared, or by default scenes from
:mod:`mlcodec.data.synthetic` under a seed of their own (1000; the task benchmark's train and val
splits use seeds 0 and 1, so tuning never sees them). Either is loaded up front, in parallel, and
kept on the training device.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from mlcodec.data.photos import RandomCrops, training_photos
from mlcodec.data.sources import Source
from mlcodec.data.synthetic import CLASS_NAMES, SyntheticScenes
from mlcodec.models.gained_hyperprior import GainedMeanScaleHyperprior
from mlcodec.train import (Budget, TrainConfig, aux_step, codec_optimizers, export, init_from_weights,
                           rd_terms)
from mlcodec.weights import read_metadata

from .data import TaskSpec, semantic_map
from .heads import LatentClassifier, LatentSegmenter
from .losses import segmentation_loss

log = logging.getLogger(__name__)

TUNING_TASKS = ("cls", "seg")


@dataclass(frozen=True)
class TuneConfig:
    init: str  # weights to start from (the packaged default codec's, usually)
    out: str = "runs/mlcodec-tuned"
    tasks: tuple[str, ...] = TUNING_TASKS
    task_weight: float = 0.3
    scenes: int = 12000  # synthetic scenes generated, or at most this many samples of a dataset
    scene_size: int = 128
    scene_seed: int = 1000
    scene_batch: int = 32
    data: tuple[str, ...] = ()
    use_skimage: bool = True
    batch_size: int = 16  # photo crops per step
    patch: int = 256
    lr: float = 1e-4
    head_lr: float = 2e-3
    aux_lr: float = 1e-3
    clip: float = 1.0
    steps: int = 10000
    minutes: float = 0.0
    seed: int = 0
    workers: int = 0  # processes preparing the task data (0: all cores)
    save_every: int = 1000
    device: str = "cpu"
    progress: bool = True


@dataclass
class TuningData:
    """Task data kept on the training device: images ``(N, 3, S, S)`` uint8, image labels ``(N,)``
    (-1: none), semantic maps ``(N, S, S)`` uint8 (0 background, class + 1), class count."""

    images: torch.Tensor
    labels: torch.Tensor
    semantic: torch.Tensor
    num_classes: int

    @staticmethod
    def stack(items: list[tuple[np.ndarray, int, np.ndarray]], num_classes: int) -> TuningData:
        if not items:
            raise ValueError("no task data: the dataset is empty")
        images = torch.from_numpy(np.stack([im for im, _, _ in items])).permute(0, 3, 1, 2)
        return TuningData(images.contiguous(), torch.tensor([c for _, c, _ in items], dtype=torch.long),
                          torch.from_numpy(np.stack([m for _, _, m in items]).astype(np.uint8)),
                          num_classes)

    def to(self, device: str) -> TuningData:
        return TuningData(self.images.to(device), self.labels.to(device), self.semantic.to(device),
                          self.num_classes)

    def batch(self, n: int, gen: torch.Generator, device: str):
        """``n`` random samples, flipped left-right at random: (images 0..1, labels, maps)."""
        idx = torch.randint(len(self.images), (n,), generator=gen).to(self.images.device)
        x = self.images[idx].to(device, non_blocking=True).float().div_(255.0)
        c, m = self.labels[idx].to(device), self.semantic[idx].to(device).long()
        flip = (torch.rand(n, generator=gen) < 0.5).to(device)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        m = torch.where(flip[:, None, None], m.flip(-1), m)
        return x, c, m


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


def _scene(i: int) -> tuple[np.ndarray, int, np.ndarray]:
    assert _WORKER_SCENES is not None
    s = _WORKER_SCENES[i]
    return np.asarray(s.image, np.uint8), s.label, s.semantic


def scene_pool(count: int, size: int, seed: int, workers: int = 0) -> TuningData:
    """``count`` synthetic scenes of ``size`` squared (:class:`TuningData`)."""
    items = _map_in_pool(_scene, range(count), _init_worker, (count, size, seed), workers, 64)
    return TuningData.stack(items, len(CLASS_NAMES))


_WORKER_SOURCE: tuple[Source, int, tuple[str, ...], TaskSpec] | None = None


def _init_source(source: Source, size: int, tasks: tuple[str, ...], spec: TaskSpec) -> None:
    global _WORKER_SOURCE
    _WORKER_SOURCE = (source, size, tasks, spec)


def _sample(i: int) -> tuple[np.ndarray, int, np.ndarray]:
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
    return np.asarray(im.resize((size, size), Image.BILINEAR), np.uint8), label, semantic


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


def build_heads(tasks: tuple[str, ...], channels: int, num_classes: int) -> torch.nn.ModuleDict:
    """The latent heads trained alongside the codec (learned stems: gradients reach the latent)."""
    unknown = set(tasks) - set(TUNING_TASKS)
    if unknown or not tasks:
        raise ValueError(f"tune-codec trains with tasks among {TUNING_TASKS}, not {sorted(unknown)}")
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


def tune_codec(cfg: TuneConfig, source: Source | None = None) -> Path:
    """Fine-tune ``cfg.init`` with task losses on ``source`` (default: synthetic scenes); returns
    the exported weights' path.

    Resumable: a checkpoint (codec, heads, optimisers, step) is written every ``save_every``
    steps, and a rerun with the same ``out`` continues from it.
    """
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = read_metadata(cfg.init)
    t0 = time.time()  # task data first: the pool forks, before any CUDA context exists
    data = scene_pool(cfg.scenes, cfg.scene_size, cfg.scene_seed, cfg.workers) if source is None \
        else source_pool(source, cfg.scene_size, cfg.tasks, cfg.scenes, cfg.workers)
    log.info("%d task images ready in %.0fs", len(data.images), time.time() - t0)
    arch = meta.get("architecture", {})
    lambdas = tuple(meta.get("config", {}).get("lambdas", ()))
    if not lambdas:
        raise ValueError(f"{cfg.init} names no lambdas in its metadata; give weights exported by "
                         "mlcodec train-codec")
    model = GainedMeanScaleHyperprior(arch.get("N", 96), arch.get("M", 96), len(lambdas),
                                      arch.get("hyper_kernel", 3))
    init_from_weights(model, cfg.init, lambdas)
    model.to(cfg.device)
    heads = build_heads(cfg.tasks, model.M, data.num_classes).to(cfg.device)
    if cfg.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    main_params, opt, aux_opt = codec_optimizers(model, cfg.lr, cfg.aux_lr)
    head_opt = torch.optim.AdamW(heads.parameters(), lr=cfg.head_lr, weight_decay=1e-4)
    ckpt_path = out / "checkpoint.pt"
    step = 0
    if ckpt_path.exists():  # tensors only, weights_only=True (no pickle)
        ckpt = torch.load(ckpt_path, map_location=cfg.device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        heads.load_state_dict(ckpt["heads"])
        for o, k in ((opt, "opt"), (head_opt, "head_opt"), (aux_opt, "aux_opt")):
            o.load_state_dict(ckpt[k])
        step = int(ckpt["step"])
        log.info("resumed from %s at step %d", ckpt_path, step)
    if cfg.device.startswith("cuda"):
        data = data.to(cfg.device)

    photos = RandomCrops(training_photos(cfg.data, cfg.use_skimage), patch=cfg.patch)
    batches = photos.batches(cfg.batch_size, seed=cfg.seed + step)
    gen = torch.Generator().manual_seed(cfg.seed + step)
    model.train()
    heads.train()
    bar = tqdm(total=cfg.steps, initial=step, desc="tune-codec", unit="step", disable=not cfg.progress)
    budget = Budget(cfg.steps, cfg.minutes, step)

    history: list[dict[str, float]] = []
    while budget.progress(step) < 1.0:
        scale = budget.lr_scale(step)
        for o, lr in ((opt, cfg.lr), (head_opt, cfg.head_lr)):
            for g in o.param_groups:
                g["lr"] = lr * scale
        xp = next(batches).to(cfg.device, non_blocking=True).float().div_(255.0)
        qp = torch.rand(xp.shape[0], generator=gen).to(cfg.device)
        rd_photo, bpp, mse = rd_terms(model(xp, qp), xp, qp, lambdas)
        xs, cs, ms = data.batch(cfg.scene_batch, gen, cfg.device)
        qs = torch.rand(xs.shape[0], generator=gen).to(cfg.device)
        fwd = model(xs, qs)
        rd_scene, _, _ = rd_terms(fwd, xs, qs, lambdas)
        losses = task_losses(heads, fwd.latent, cs, ms)
        loss = rd_photo + rd_scene + cfg.task_weight * sum(losses.values())
        opt.zero_grad(set_to_none=True)
        head_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main_params, cfg.clip)
        torch.nn.utils.clip_grad_norm_(heads.parameters(), cfg.clip)
        opt.step()
        head_opt.step()
        aux_step(model, aux_opt)
        step += 1
        bar.update(1)
        if step % 50 == 0:
            row = {"step": step, "seconds": round(time.time() - budget.t0, 1), "rd_photo": rd_photo.item(),
                   "bpp_photo": bpp.item(), "psnr_photo": -10 * math.log10(max(mse.item(), 1e-10)),
                   "rd_scene": rd_scene.item(), **{k: v.item() for k, v in losses.items()}}
            history.append(row)
            bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k not in ("step", "seconds")})
        if step % cfg.save_every == 0 or budget.progress(step) >= 1.0:
            log.info("step %d: %s", step, history[-1] if history else "")
            torch.save({"model": model.state_dict(), "heads": heads.state_dict(),
                        "opt": opt.state_dict(), "head_opt": head_opt.state_dict(),
                        "aux_opt": aux_opt.state_dict(), "step": torch.tensor(step)}, ckpt_path)
    bar.close()
    if history:
        log.info("last: %s", history[-1])
    base = TrainConfig(out=cfg.out, data=cfg.data, use_skimage=cfg.use_skimage, N=model.N, M=model.M,
                       lambdas=lambdas, steps=step, batch_size=cfg.batch_size, patch=cfg.patch,
                       lr=cfg.lr, seed=cfg.seed, init=str(cfg.init))
    tuning = {k: v for k, v in asdict(cfg).items() if k != "device"}
    return export(model, base, out / "weights.safetensors",
                  extra={"task_tuning": {**tuning, "steps_run": step, "device": cfg.device,
                                         "task_data": "synthetic" if source is None else source.describe(),
                                         "history": history[-20:]},
                         "base_recipe": meta.get("config", {})})
