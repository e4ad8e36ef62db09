"""Task-aware fine-tuning of the codec (``mlcodec tune-codec``): the multi-task half of MTCE.

The codec is fine-tuned so that its latent serves task heads as well as reconstruction. Each step
adds task losses to the rate-distortion loss:

    loss = RD(photos) + RD(scenes) + task_weight * sum_t L_t(head_t(latent(scenes)))

- ``RD`` is :func:`mlcodec.train.rd_terms`: per-sample ``lambda(q) * 255^2 * MSE + bpp`` at a
  random quality ``q``. Photo crops keep the codec a general image codec; the synthetic scenes
  are what the task losses see.
- ``latent`` is the dequantized latent, with straight-through rounding: the same tensor the
  latent loader decodes and the heads read at inference.
- The heads are the registry's latent heads with a learned stem, trained from scratch alongside
  the codec. Their gradients reach the analysis transform, gains and hyperprior. They are thrown
  away afterwards: what ships is the codec, and heads are then trained on its shards as usual
  (``mlcodec train-head``).

This is the multi-task collaborative embedding idea of Guo, Sui et al. (ECCV 2024): one latent
shaped jointly by several task losses. It is not their full method: there is no embedding
alignment, and no diffusion-based invariant knowledge learning (DIKL). Tasks left out of
``tasks`` (detection, by default) are the check on unseen tasks.

The scenes come from :mod:`mlcodec.data.synthetic` under a seed of their own (default 1000). The
task benchmark's train and val splits use seeds 0 and 1, so tuning never sees them. All scenes are
generated up front, in parallel, and kept on the training device.
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
from tqdm import tqdm

from mlcodec.data.photos import RandomCrops, training_photos
from mlcodec.data.synthetic import CLASS_NAMES, SyntheticScenes
from mlcodec.models.gained_hyperprior import GainedMeanScaleHyperprior
from mlcodec.train import TrainConfig, _init_from, export, rd_terms
from mlcodec.weights import read_metadata

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
    scenes: int = 12000
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
    workers: int = 0  # processes generating scenes (0: all cores)
    save_every: int = 1000
    device: str = "cpu"
    progress: bool = True


_WORKER_SCENES: SyntheticScenes | None = None  # one generator per pool process


def _init_worker(count: int, size: int, seed: int) -> None:
    global _WORKER_SCENES
    _WORKER_SCENES = SyntheticScenes(count, size, seed)


def _scene(i: int) -> tuple[np.ndarray, int, np.ndarray]:
    assert _WORKER_SCENES is not None
    s = _WORKER_SCENES[i]
    return np.asarray(s.image, np.uint8), s.label, s.semantic


def scene_pool(count: int, size: int, seed: int, workers: int = 0):
    """``count`` synthetic scenes as tensors: images ``(N, 3, S, S)`` uint8, main-object class
    ``(N,)`` and semantic maps ``(N, S, S)`` (0 background, class + 1)."""
    workers = min(workers or mp.cpu_count(), max(1, count // 64))
    with mp.get_context("fork").Pool(workers, _init_worker, (count, size, seed)) as pool:
        items = pool.map(_scene, range(count), chunksize=64)
    images = torch.from_numpy(np.stack([im for im, _, _ in items])).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([c for _, c, _ in items], dtype=torch.long)
    semantic = torch.from_numpy(np.stack([m for _, _, m in items])).long()
    return images, labels, semantic


def build_heads(tasks: tuple[str, ...], channels: int) -> torch.nn.ModuleDict:
    unknown = set(tasks) - set(TUNING_TASKS)
    if unknown:
        raise ValueError(f"tune-codec trains with tasks {TUNING_TASKS}, not {sorted(unknown)}")
    heads = {}
    if "cls" in tasks:
        heads["cls"] = LatentClassifier(channels, len(CLASS_NAMES))
    if "seg" in tasks:
        heads["seg"] = LatentSegmenter(channels, len(CLASS_NAMES) + 1)
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


def _scene_batch(images, labels, semantic, n: int, gen: torch.Generator, device: str):
    idx = torch.randint(len(images), (n,), generator=gen)
    x = images[idx].to(device, non_blocking=True).float().div_(255.0)
    c, m = labels[idx].to(device), semantic[idx].to(device)
    flip = (torch.rand(n, generator=gen) < 0.5).to(device)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    m = torch.where(flip[:, None, None], m.flip(-1), m)
    return x, c, m


def tune_codec(cfg: TuneConfig) -> Path:
    """Fine-tune ``cfg.init`` with task losses; returns the exported weights' path.

    Resumable: a checkpoint (codec, heads, optimisers, step) is written every ``save_every``
    steps, and a rerun with the same ``out`` continues from it.
    """
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = read_metadata(cfg.init)
    t0 = time.time()  # scenes first: the pool forks, before any CUDA context exists
    images, labels, semantic = scene_pool(cfg.scenes, cfg.scene_size, cfg.scene_seed, cfg.workers)
    log.info("%d scenes ready in %.0fs", len(images), time.time() - t0)
    arch = meta.get("architecture", {})
    lambdas = tuple(meta.get("config", {}).get("lambdas", ()))
    if not lambdas:
        raise ValueError(f"{cfg.init} names no lambdas in its metadata; give weights exported by "
                         "mlcodec train-codec")
    model = GainedMeanScaleHyperprior(arch.get("N", 96), arch.get("M", 96), len(lambdas),
                                      arch.get("hyper_kernel", 3))
    _init_from(model, cfg.init, lambdas)
    model.to(cfg.device)
    heads = build_heads(cfg.tasks, model.M).to(cfg.device)
    if cfg.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    main_params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    opt = torch.optim.Adam(main_params, lr=cfg.lr)
    head_opt = torch.optim.AdamW(heads.parameters(), lr=cfg.head_lr, weight_decay=1e-4)
    aux_opt = torch.optim.Adam(aux_params, lr=cfg.aux_lr)
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
        images, labels, semantic = images.to(cfg.device), labels.to(cfg.device), semantic.to(cfg.device)

    photos = RandomCrops(training_photos(cfg.data, cfg.use_skimage), patch=cfg.patch)
    batches = photos.batches(cfg.batch_size, seed=cfg.seed + step)
    gen = torch.Generator().manual_seed(cfg.seed + step)
    model.train()
    heads.train()
    bar = tqdm(total=cfg.steps, initial=step, desc="tune-codec", unit="step", disable=not cfg.progress)
    t0, start_step, budget_s = time.time(), step, cfg.minutes * 60.0

    def progress() -> float:
        p = step / cfg.steps
        if budget_s > 0 and step > start_step:  # a resumed run gets a new time budget
            p = max(p, (time.time() - t0) / budget_s)
        return p

    history: list[dict[str, float]] = []
    while progress() < 1.0:
        scale = 0.1 if progress() >= 0.8 else 1.0
        for o, lr in ((opt, cfg.lr), (head_opt, cfg.head_lr)):
            for g in o.param_groups:
                g["lr"] = lr * scale
        xp = next(batches).to(cfg.device, non_blocking=True).float().div_(255.0)
        qp = torch.rand(xp.shape[0], generator=gen).to(cfg.device)
        rd_photo, bpp, mse = rd_terms(model(xp, qp), xp, qp, lambdas)
        xs, cs, ms = _scene_batch(images, labels, semantic, cfg.scene_batch, gen, cfg.device)
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
        aux_opt.zero_grad(set_to_none=True)
        model.aux_loss().backward()
        aux_opt.step()
        step += 1
        bar.update(1)
        if step % 50 == 0:
            row = {"step": step, "seconds": round(time.time() - t0, 1), "rd_photo": rd_photo.item(),
                   "bpp_photo": bpp.item(), "psnr_photo": -10 * math.log10(max(mse.item(), 1e-10)),
                   "rd_scene": rd_scene.item(), **{k: v.item() for k, v in losses.items()}}
            history.append(row)
            bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k not in ("step", "seconds")})
        if step % cfg.save_every == 0 or progress() >= 1.0:
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
                                         "history": history[-20:]},
                         "base_recipe": meta.get("config", {})})
