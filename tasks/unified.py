"""The unified objective: multi-task collaborative embeddings (MTCE) and diffusion-based invariant
knowledge learning (DIKL), after Guo, Sui et al., "A Unified Image Compression Method for Human
Perception and Multiple Vision Tasks" (ECCV 2024). Used as
``mlcodec train-codec --objective unified --tasks cls,seg,det --expert TASK=PATH ...``.

The paper has no public code; what it says is built as it says, and where it is silent the choice
and its reason are written here. Every module below exists in training only: the codec's
bitstream, decoder and exported weights are those of the default codec's architecture, so a
unified codec decodes at the same cost and its heads read the same kind of latent.

Per step, on a batch of task images coded at random qualities (besides the loop's own photo
rate-distortion term, which keeps the images fit for people):

* **rate-distortion on the task images** (``rd_scene``), as for photos.
* **Frozen experts.** One pixel model per seen task (``pixel-cls``, ``pixel-seg``,
  ``pixel-fcos`` of :mod:`mlcodec.tasks`), trained beforehand on lossless images and frozen.
  Each reads the *decoded* image and contributes its task loss (``task_<t>``).
* **MTCE** (``mtce=True``). The shared latent is aligned to each expert's representation of the
  *original* image: a 1x1-convolution adapter per task maps the latent (stride 16) to the
  expert's ``layer3`` features (stride 16, same grid), and the loss is one minus their cosine
  similarity per position (``align_<t>``). Choice: 1x1 (linear) adapters, so the task
  information must be linearly present in the latent itself rather than recoverable by a deep
  adapter; cosine, so experts with different feature scales weigh alike. All task terms are
  balanced by homoscedastic-uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018): each
  term k gets ``0.5 exp(-s_k) L_k + 0.5 s_k`` with a learned ``s_k``, the rate-distortion terms
  keeping weight 1 (the paper balances the tasks against human perception; how is not said).
  Without MTCE (the "naive" joint loss) the expert task losses are summed with weight 1 each.
* **DIKL** (``bank`` and/or ``diffusion``). A 1x1 adapter embeds the latent (``D`` channels);
  per position it retrieves from a **memory bank** of ``prototypes`` learnable vectors by a
  softmax over cosine similarities (temperature ``tau``). The bank is fed from the embeddings of
  all seen tasks: the retrieval alone, through a 1x1 decoder per task, must predict every
  expert's features (``bank``: one minus cosine), so the prototypes hold what serves all seen
  tasks at once, the invariant knowledge. A small **conditional denoiser** (epsilon-prediction,
  cosine noise schedule over ``timesteps``) learns to denoise the latent (normalised per channel
  by its batch RMS, detached, so shrinking the latent cannot lower the loss) conditioned on that
  retrieval (``diffusion``). Its loss reaches the encoder through the noised latent and the
  retrieval: the codec is pushed towards latents whose structure the task-invariant prototypes
  predict, which is what the paper credits for generalising to unseen tasks.
  Choices: the retrieval is the only condition (conditioning on the latent's own embedding would
  leak the clean latent into the denoiser, a trivial solution); without the bank the denoiser is
  unconditional (ablation A5); without diffusion the bank loss alone remains (A6). DIKL terms
  are weighted by ``dikl_weight``, outside the uncertainty balancing, so the ablation rows
  differ by one module each.

* **A pretrained judge as an expert** (``judge``, e.g. ``efficientnet-lite0`` of
  :mod:`mlcodec.tasks.judges`). Real models read real photos, so it trains on its own batch of
  dataset-like photo crops (:class:`mlcodec.data.crops.DatasetCrops`: training photos downscaled
  1-4x, some JPEG-compressed first; 224 px, replicate-padded to a multiple of 64 as the codec pads them) coded
  at random qualities, beside the procedural experts when they are given. Its terms:
  ``rd_judge`` (rate-distortion on those crops, always: row F's control then fine-tunes on the
  same photos), ``kl_judge`` (the KL divergence of the judge's prediction on the decoded crop
  from its prediction on the original: no labels, the judge is its own teacher), and with MTCE
  ``feat_judge`` (one minus cosine between the judge's features of the decoded and the original
  crop at image strides 4, 8 and 16, averaged: choice, the stages where compression artefacts
  and texture live, before the judge pools them) and ``align_judge`` (the latent, cropped to the
  crop's own 14x14 extent, aligned to the judge's stride-16 features of the original through a
  1x1 adapter, as for the procedural experts). DIKL runs on the photo latents too; its bank
  decoders predict the judge's stride-16 features.
* **F, the fine-tune control** (task weight 0, no DIKL; no expert is needed or run): the same
  steps with the rate-distortion terms alone, photos and task images. Fine-tuning on the
  synthetic scenes moves the task metrics by itself (domain adaptation) and costs the photos
  something by itself (a few hundred small-batch steps from a converged codec); F measures both,
  so that the ablation credits MTCE and DIKL only with what they add beyond it.

Nothing is transmitted beyond the codec's own bitstream.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mlcodec.codecs.learned import pad_to
from mlcodec.data.crops import DatasetCrops
from mlcodec.data.photos import training_photos
from mlcodec.objective import CodecObjective
from mlcodec.train import rd_terms

from .adapter import crop_latent
from .codec_tuning import TaskBatch, TuningData, scene_pool
from .data import PIXEL_MEAN, PIXEL_STD
from .heads import pixel_features
from .judges import Judge, create_judge
from .losses import detection_loss, segmentation_loss

log = logging.getLogger(__name__)

UNIFIED_TASKS = ("cls", "seg", "det")


@dataclass(frozen=True)
class UnifiedConfig:
    experts: tuple[tuple[str, str], ...]  # (task, pixel checkpoint): the seen tasks
    mtce: bool = True
    bank: bool = True
    diffusion: bool = True
    # the (balanced) task terms against the rate-distortion terms, and the codec's learning rate
    # in a fine-tune (``train-codec`` without --lr). Chosen together on the dev split
    # (benchmarks/studies/unified_dev.py, docs/experiments/unified.md): people's cost grows with the
    # weight at lr 1e-4; at lr 3e-5 weight 0.6 keeps the task gain for a smaller people cost
    task_weight: float = 0.6
    codec_lr: float = 3e-5
    dikl_weight: float = 0.2
    prototypes: int = 64
    embed: int = 96
    tau: float = 0.1
    timesteps: int = 200
    scenes: int = 4000
    scene_size: int = 128
    scene_seed: int = 1000  # the task benchmark's train/val splits are seeds 0 and 1
    scene_batch: int = 8
    workers: int = 0
    lr: float = 1e-3
    # a pretrained judge (mlcodec.tasks.judges) as an expert on photo crops; "" for none
    judge: str = ""
    judge_weights: str = ""  # its weights file, where it needs one (timm:/torchvision: judges)
    judge_photos: tuple[str, ...] = ()  # photo folders its crops come from (train-codec --data)
    judge_skimage: bool = True  # scikit-image's photos too
    judge_batch: int = 4
    judge_size: int = 224

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t for t, _ in self.experts)

    @property
    def scenes_used(self) -> bool:
        """Procedural scenes are coded when a procedural expert is given, or when nothing else
        is (the control F of the procedural ablation); a judge alone trains on photos only."""
        return bool(self.experts) or not self.judge

    @property
    def row(self) -> str:
        """The ablation row this configuration is (``benchmarks/unified.py``); F, the fine-tune
        control, has no task terms at all (task weight 0, no DIKL): rate-distortion on the scenes
        and photos only."""
        if self.task_weight == 0 and not (self.bank or self.diffusion):
            return "F"
        return {(False, False, False): "A1", (True, False, False): "A2", (False, True, True): "A3",
                (True, True, True): "A4", (True, False, True): "A5",
                (True, True, False): "A6"}.get((self.mtce, self.bank, self.diffusion), "custom")


def _cos_loss(a: Tensor, b: Tensor) -> Tensor:
    """One minus the cosine similarity over channels, averaged over positions."""
    return (1 - F.cosine_similarity(a, b, dim=1, eps=1e-6)).mean()


def _timestep_embedding(t: Tensor, dim: int) -> Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], 1)


class Denoiser(nn.Module):
    """A small epsilon-prediction network on the latent grid: 3x3 convolutions with group norm,
    the timestep added as an embedding, an optional condition concatenated at the input."""

    def __init__(self, channels: int, cond: int, width: int = 128, blocks: int = 2) -> None:
        super().__init__()
        self.cond = cond
        self.inp = nn.Conv2d(channels + cond, width, 3, 1, 1)
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(nn.Sequential(nn.GroupNorm(8, width), nn.SiLU(),
                                                  nn.Conv2d(width, width, 3, 1, 1), nn.GroupNorm(8, width),
                                                  nn.SiLU(), nn.Conv2d(width, width, 3, 1, 1))
                                    for _ in range(blocks))
        self.out = nn.Sequential(nn.GroupNorm(8, width), nn.SiLU(), nn.Conv2d(width, channels, 3, 1, 1))
        self.width = width

    def forward(self, y_t: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        h = self.inp(y_t if cond is None else torch.cat([y_t, cond], 1))
        h = h + self.time(_timestep_embedding(t, self.width))[:, :, None, None]
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


class MemoryBank(nn.Module):
    """``K`` learnable prototypes; :meth:`forward` retrieves per position a softmax mixture of
    them by cosine similarity with a query (``(B, D, H, W)``)."""

    def __init__(self, prototypes: int, dim: int, tau: float) -> None:
        super().__init__()
        self.prototypes = nn.Parameter(torch.randn(prototypes, dim) / math.sqrt(dim))
        self.tau = tau

    def forward(self, query: Tensor) -> Tensor:
        q = F.normalize(query, dim=1)
        p = F.normalize(self.prototypes, dim=1)
        attn = torch.einsum("bdhw,kd->bkhw", q, p).div(self.tau).softmax(1)
        return torch.einsum("bkhw,kd->bdhw", attn, self.prototypes)


def _normalise(x: Tensor) -> Tensor:
    return (x - PIXEL_MEAN) / PIXEL_STD


def load_experts(experts: tuple[tuple[str, str], ...]) -> dict[str, nn.Module]:
    """Frozen pixel models by task, checked to be pixel models of that task."""
    from .train import load_head

    out: dict[str, nn.Module] = {}
    for task, path in experts:
        if task not in UNIFIED_TASKS:
            raise ValueError(f"unified training takes experts for {', '.join(UNIFIED_TASKS)}, not {task!r}")
        model, spec, meta = load_head(path)
        if spec.task != task or getattr(model, "input", "") != "pixel" or not hasattr(model, "trunk"):
            raise ValueError(f"{path} is {meta.get('head')!r} ({spec.task}); the {task} expert must be "
                             f"a pixel model of mlcodec.tasks for {task} (pixel-{'fcos' if task == 'det' else task})")
        out[task] = model.eval().requires_grad_(False)
    return out


class UnifiedObjective(CodecObjective):
    """MTCE + DIKL for :func:`mlcodec.train.train` (see the module docstring)."""

    name = "unified"

    def __init__(self, cfg: UnifiedConfig, data: TuningData | None = None,
                 photos: DatasetCrops | None = None) -> None:
        super().__init__()
        if not cfg.experts and not cfg.judge and cfg.row != "F":
            raise ValueError("unified training needs at least one frozen expert (--expert TASK=PATH "
                             "or --judge NAME)")
        if cfg.judge_size % 16 or cfg.judge_size > 256:
            raise ValueError(f"judge crops must be a multiple of 16 px and at most 256, not {cfg.judge_size}")
        self.cfg, self.data, self.photos = cfg, data, photos
        self.lr, self.codec_lr = cfg.lr, cfg.codec_lr
        self.experts: dict[str, nn.Module] = load_experts(cfg.experts)  # frozen: not submodules
        self.judge: Judge | None = None
        if cfg.judge and cfg.row != "F":  # the control runs no expert
            self.judge = create_judge(cfg.judge, cfg.judge_weights or None)
            self.judge.stages(torch.zeros(1, 3, 32, 32))  # a judge without stages fails here, not mid-run
        self._photo_batches: Iterator[Tensor] | None = None

    def prepare(self) -> None:
        if self.cfg.judge and self.photos is None:
            photos = training_photos(self.cfg.judge_photos, self.cfg.judge_skimage)
            self.photos = DatasetCrops([p.image for p in photos], patch=self.cfg.judge_size)
            log.info("judge crops from %d training photos", len(self.photos.photos))
        if self.cfg.scenes_used and self.data is None:
            t0 = time.time()
            self.data = scene_pool(self.cfg.scenes, self.cfg.scene_size, self.cfg.scene_seed, self.cfg.workers)
            log.info("%d task images ready in %.0fs", len(self.data.images), time.time() - t0)

    def setup(self, model: nn.Module, device: str) -> None:
        cfg, m = self.cfg, model.M
        self.device = device
        for e in self.experts.values():
            e.to(device)
        with torch.no_grad():
            probe = torch.zeros(1, 3, 64, 64, device=device)
            chans = {t: pixel_features(e, probe).shape[1] for t, e in self.experts.items()}
            if self.judge is not None:
                self.judge.model.to(device)
                chans["judge"] = self.judge.stages(probe)[0][16].shape[1]
        if cfg.mtce:
            self.adapters = nn.ModuleDict({t: nn.Conv2d(m, c, 1) for t, c in chans.items()})
            terms = [f"task_{t}" for t in self.experts] + [f"align_{t}" for t in chans]
            if self.judge is not None:
                terms += ["kl_judge", "feat_judge"]
            self.log_vars = nn.ParameterDict({k: nn.Parameter(torch.zeros(())) for k in terms})
        if cfg.bank or cfg.diffusion:
            self.embed = nn.Conv2d(m, cfg.embed, 1)
        if cfg.bank:
            self.bank = MemoryBank(cfg.prototypes, cfg.embed, cfg.tau)
            self.bank_decoders = nn.ModuleDict({t: nn.Conv2d(cfg.embed, c, 1) for t, c in chans.items()})
        if cfg.diffusion:
            self.denoiser = Denoiser(m, cfg.embed if cfg.bank else 0)
            steps = torch.arange(cfg.timesteps + 1, dtype=torch.float64) / cfg.timesteps
            abar = torch.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
            self.register_buffer("alpha_bar", (abar[1:] / abar[0]).clamp(1e-4, 1.0).float(), persistent=False)
        self.to(device)

    def _expert_loss(self, task: str, x_hat: Tensor, b: TaskBatch) -> Tensor:
        e = self.experts[task]
        xn = _normalise(x_hat)
        if task == "cls":
            return F.cross_entropy(e(xn), b.labels)
        if task == "seg":
            return segmentation_loss(e.logits(xn), b.semantic, e.out_stride)
        return detection_loss(e(xn), b.box_targets())

    def _scene_branch(self, model, gen, lambdas, terms, logs) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Procedural scenes: ``(rd_scene, latent, expert features of the originals)``; task terms
        go into ``terms``."""
        assert self.data is not None, "prepare() first"
        cfg = self.cfg
        b = self.data.batch(cfg.scene_batch, gen, self.device)
        qs = torch.rand(b.images.shape[0], generator=gen).to(self.device)
        fwd = model(b.images, qs)
        rd, _, _ = rd_terms(fwd, b.images, qs, lambdas)
        logs["rd_scene"] = rd.detach()
        feats: dict[str, Tensor] = {}
        if cfg.row == "F":  # the control: nothing but rate-distortion (no expert is run)
            return rd, fwd.latent, feats
        terms.update({f"task_{t}": self._expert_loss(t, fwd.x_hat.float(), b) for t in self.experts})
        if cfg.mtce or cfg.bank:
            with torch.no_grad():
                xn = _normalise(b.images)
                feats = {t: pixel_features(e, xn) for t, e in self.experts.items()}
        return rd, fwd.latent, feats

    def _judge_branch(self, model, gen, lambdas, terms, logs) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Photo crops through the judge: ``(rd_judge, latent cropped to the crops' extent, the
        judge's stride-16 features of the originals)``; the judge's terms go into ``terms``."""
        assert self.photos is not None, "prepare() first"
        cfg = self.cfg
        if self._photo_batches is None:  # seeded from the loop's generator, so a resume draws anew
            seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
            self._photo_batches = self.photos.batches(cfg.judge_batch, seed)
        x = next(self._photo_batches).to(self.device).float().div_(255.0)
        size = cfg.judge_size
        padded = pad_to(x, 64)  # as the codec pads an image before coding it
        qs = torch.rand(x.shape[0], generator=gen).to(self.device)
        fwd = model(padded, qs)
        rd, _, _ = rd_terms(fwd, padded, qs, lambdas)
        logs["rd_judge"] = rd.detach()
        latent = crop_latent(fwd.latent, (size, size))
        if self.judge is None:  # the control
            return rd, latent, {}
        with torch.no_grad():
            ref_feats, ref_logits = self.judge.stages(x)
        dec_feats, dec_logits = self.judge.stages(fwd.x_hat[..., :size, :size].float().clamp(0, 1))
        terms["kl_judge"] = F.kl_div(dec_logits.log_softmax(1), ref_logits.log_softmax(1), log_target=True,
                                     reduction="batchmean")
        if cfg.mtce:
            terms["feat_judge"] = sum(_cos_loss(dec_feats[s], ref_feats[s]) for s in ref_feats) / len(ref_feats)
        return rd, latent, {"judge": ref_feats[16]}

    def loss(self, model, gen, lambdas):
        cfg = self.cfg
        logs: dict[str, Tensor] = {}
        terms: dict[str, Tensor] = {}
        branches = []  # (rd, latent, features of the originals)
        if cfg.scenes_used:
            branches.append(self._scene_branch(model, gen, lambdas, terms, logs))
        if cfg.judge:
            branches.append(self._judge_branch(model, gen, lambdas, terms, logs))
        total = sum(rd for rd, _, _ in branches)
        if cfg.row == "F":
            return total, logs
        if cfg.mtce:
            for _, latent, feats in branches:
                for t, f in feats.items():
                    terms[f"align_{t}"] = _cos_loss(self.adapters[t](latent), f)
            task_total = sum(0.5 * torch.exp(-self.log_vars[k]) * v + 0.5 * self.log_vars[k]
                             for k, v in terms.items())
        else:
            task_total = sum(terms.values())
        logs.update({k: v.detach() for k, v in terms.items()})
        total = total + cfg.task_weight * task_total
        if cfg.bank or cfg.diffusion:
            dikl = total.new_zeros(())
            bank_terms, diff_terms = [], []
            for _, latent, feats in branches:
                retrieved = self.bank(self.embed(latent)) if cfg.bank else None
                if retrieved is not None:
                    bank_terms += [_cos_loss(self.bank_decoders[t](retrieved), f) for t, f in feats.items()]
                if cfg.diffusion:
                    diff_terms.append(self._diffusion(latent, retrieved, gen))
            if bank_terms:
                bank = sum(bank_terms)
                logs["bank"] = bank.detach()
                dikl = dikl + bank
            if diff_terms:
                diff = sum(diff_terms) / len(diff_terms)
                logs["diffusion"] = diff.detach()
                dikl = dikl + diff
            total = total + cfg.dikl_weight * dikl
        return total, logs

    def _diffusion(self, latent: Tensor, retrieved: Tensor | None, gen: torch.Generator) -> Tensor:
        """The denoiser's epsilon-MSE on ``latent`` (normalised per channel by its detached batch
        RMS), conditioned on the bank's retrieval."""
        rms = latent.detach().pow(2).mean((0, 2, 3), keepdim=True).sqrt().clamp_min(1e-3)
        y0 = latent / rms
        t = torch.randint(self.cfg.timesteps, (y0.shape[0],), generator=gen).to(self.device)
        noise = torch.randn(y0.shape, generator=gen).to(self.device)
        ab = self.alpha_bar[t][:, None, None, None]
        y_t = ab.sqrt() * y0 + (1 - ab).sqrt() * noise
        return F.mse_loss(self.denoiser(y_t, t, retrieved), noise)

    def metadata(self) -> dict[str, Any]:
        cfg = asdict(self.cfg)
        cfg["experts"] = {t: p for t, p in self.cfg.experts}
        cfg["codec_lr"] = self.codec_lr  # train-codec --lr overrides the configuration's
        return {"objective": self.name, "unified": {**cfg, "row": self.cfg.row}}
