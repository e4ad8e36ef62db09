# One module of this size on purpose: the one codec-training loop (every objective plugs into it)
# with what it exports, the hyper-synthesis distillation that reuses its schedule and checkpoints,
# and the integer tables every export writes; a reader sees a weights file's whole recipe here.
"""Train the default variable-rate codec (``mlcodec train-codec``).

Recipe: random crops with flips of offline photos; per sample a quality ``q ~ U[0, 1]`` and its
rate-distortion weight ``lambda(q)`` interpolated in log space over ``lambdas``; loss
``lambda(q) * 255^2 * MSE + bpp`` (Ballé et al.); Adam, learning rate dropped 10x for the last
fifth; CompressAI's auxiliary loss for the entropy bottleneck's quantiles. On a CPU the transforms
run under bfloat16 autocast (``--bf16``). Checkpoints are written every ``--save-every`` steps and
a rerun with the same ``--out`` resumes from the last one.

``--distill-hyper`` (with ``--init``) makes a model whose last hyper-synthesis layer is 1x1 instead
of 3x3, its hyper-synthesis retrained to reproduce the teacher's scales and means on cached latents
of the photos (:func:`distill_hyper_synthesis`): the transforms, hyper-analysis and gains are kept,
only the hyperprior's cost at decode time falls.

``--mask-decay H1 H2`` derives a narrower hyper-synthesis in whichever loop runs: channel masks
on its two hidden layers decay to zero while it trains, then the masked channels are removed
(:mod:`mlcodec.mask_decay`, after EVC).

``--init WEIGHTS`` fine-tunes from exported weights; when the new ``lambdas`` differ from the ones
the weights were trained with, each level's gains are re-interpolated in log-lambda space so the
new levels start where the old model already was. ``--minutes`` bounds training by wall-clock time
(the learning-rate drop then happens at 80% of whichever of steps or time runs out first).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from mlcodec.data.crops import DatasetCrops
from mlcodec.data.photos import RandomCrops, training_photos
from mlcodec.imageio import to_tensor
from mlcodec.mask_decay import HyperMaskDecay, MaskDecaySchedule
from mlcodec.models.exact_calibration import integerize
from mlcodec.models.exact_hyper import ExactTables
from mlcodec.models.gained_hyperprior import (DEFAULT_LAMBDAS, ForwardOutput, GainedMeanScaleHyperprior,
                                              hidden_widths, hyper_synthesis_layers)
from mlcodec.objective import CodecObjective
from mlcodec.checkpoint import load_checkpoint, save_checkpoint
from mlcodec.weights import load_weights, read_metadata, save_weights

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class TrainConfig:
    out: str = "runs/mlcodec-hyperprior"
    data: tuple[str, ...] = ()
    use_skimage: bool = True
    N: int = 96
    M: int = 96
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS
    steps: int = 20000
    batch_size: int = 8
    patch: int = 128
    # "photo": crops of each photo kept at three scales (mlcodec.data.photos.RandomCrops);
    # "dataset": crops of photos downscaled 1-4x, 30% of them JPEG-compressed first, as the images
    # datasets hold (mlcodec.data.crops.DatasetCrops)
    crops: str = "photo"
    lr: float = 2e-4
    # steps over which the learning rate ramps up linearly from lr / warmup: without it, Adam's first
    # steps (each parameter moved by about lr, whatever its gradient) cost a packaged codec over a dB
    # (docs/experiments/unified.md, "Fine-tuning from the packaged weights")
    warmup: int = 100
    aux_lr: float = 1e-3
    clip: float = 1.0
    bf16: bool = False
    seed: int = 0
    threads: int = 0
    save_every: int = 500
    device: str = "cpu"
    init: str = ""
    minutes: float = 0.0
    distill_hyper: bool = False
    distill_hidden: int = 0  # with distill_hyper: a student h_s this wide (0: the teacher's widths)
    distill_loss: str = "match"  # "match" the teacher's scales and means, or minimise y's "rate"
    # two hidden widths: derive a narrower h_s by mask decay (mlcodec.mask_decay) in whichever loop
    # runs, the codec's or (with distill_hyper) the hyper-synthesis'
    mask_decay: tuple[int, ...] = ()
    # two hidden widths: with init, a fresh h_s this wide replaces the loaded one and trains in the
    # codec's loop (the same width trained alone, the baseline mask decay is measured against)
    fresh_hyper: tuple[int, ...] = ()
    progress: bool = True
    log_every: int = 50  # steps between rows of the training history (in the weights' metadata)
    extra: dict[str, str] = field(default_factory=dict)


def lambda_for(quality: torch.Tensor, lambdas: tuple[float, ...]) -> torch.Tensor:
    """Log-linear interpolation of ``lambdas`` at qualities in [0, 1] (matches the gain units)."""
    logs = torch.tensor([math.log(v) for v in lambdas], device=quality.device)
    t = quality * (len(lambdas) - 1)
    lo = t.floor().long().clamp(max=len(lambdas) - 2)
    frac = t - lo
    return (logs[lo] * (1 - frac) + logs[lo + 1] * frac).exp()


def remap_gains(model: GainedMeanScaleHyperprior, old: tuple[float, ...],
                new: tuple[float, ...]) -> None:
    """Re-interpolate the per-level gain tables from ``old`` lambdas to ``new`` ones (log space,
    linear extrapolation past the ends)."""
    x_old = torch.tensor([math.log(v) for v in old], dtype=torch.float64)
    x_new = torch.tensor([math.log(v) for v in new], dtype=torch.float64)
    idx = torch.searchsorted(x_old, x_new).clamp(1, len(old) - 1)
    frac = ((x_new - x_old[idx - 1]) / (x_old[idx] - x_old[idx - 1])).unsqueeze(1)
    with torch.no_grad():
        for table in (model.log_gain, model.log_inv_gain, model.log_hyper_gain,
                      model.log_inv_hyper_gain):
            t, i, f = table.detach().double(), idx.to(table.device), frac.to(table.device)
            table.copy_((t[i - 1] * (1 - f) + t[i] * f).to(table.dtype))


def init_from_weights(model: GainedMeanScaleHyperprior, path: str,
                      lambdas: tuple[float, ...]) -> None:
    """Load exported weights into ``model``; re-interpolate the gains when ``lambdas`` differ from
    the ones they were trained with."""
    from mlcodec.weights import load_weights, read_metadata

    load_weights(model, path)
    old = tuple(read_metadata(path).get("config", {}).get("lambdas", lambdas))
    if len(old) != model.num_levels:
        raise ValueError(f"{path} has {len(old)} lambdas, the model {model.num_levels} levels")
    if old != tuple(lambdas):
        remap_gains(model, old, tuple(lambdas))
        log.info("gains remapped from lambdas %s to %s", old, lambdas)


def rd_terms(out: ForwardOutput, x: torch.Tensor, q: torch.Tensor,
             lambdas: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, bpp, mse) of a forward pass ``out`` of batch ``x``, per-sample lambda weighting."""
    num_pixels = x.shape[2] * x.shape[3]
    bpp = (out.y_likelihoods.log2().sum((1, 2, 3)) + out.z_likelihoods.log2().sum((1, 2, 3)))
    bpp = -bpp / num_pixels
    mse = (out.x_hat.float() - x).pow(2).mean((1, 2, 3))
    loss = (lambda_for(q, lambdas) * 255**2 * mse + bpp).mean()
    return loss, bpp.mean(), mse.mean()


def rd_loss(model: GainedMeanScaleHyperprior, x: torch.Tensor, q: torch.Tensor,
            lambdas: tuple[float, ...], bf16: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, bpp, mse) of one batch, per-sample lambda weighting."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = model(x, q)
    return rd_terms(out, x, q, lambdas)


def _cached_latents(model: GainedMeanScaleHyperprior, photos, sides=(768, 448), min_size: int = 16):
    """``g_a`` of each photo at a few sizes (long side), cropped to the model's stride."""
    latents = []
    with torch.no_grad():
        for p in photos:
            for side in sides:
                im = p.image.convert("RGB")
                scale = min(1.0, side / max(im.size))
                im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))))
                x = to_tensor(im)[0][None]
                h, w = x.shape[-2] // model.stride * model.stride, x.shape[-1] // model.stride * model.stride
                if min(h, w) // 16 >= min_size:
                    latents.append(model.g_a(x[..., :h, :w].to(next(model.parameters()).device))[0])
    return latents


def _teacher_hyper_input(model: GainedMeanScaleHyperprior, y: torch.Tensor, q: torch.Tensor):
    """The dequantized, un-gained hyper-latent ``h_s`` sees, exactly as when coding."""
    gain, _, hgain, inv_hgain = model.gains(q)
    med = model.entropy_bottleneck._get_medians().detach().reshape(1, -1, 1, 1)
    return (model.hyper_symbols(y * gain, hgain) + med) * inv_hgain


def distill_hyper_synthesis(teacher: GainedMeanScaleHyperprior, cfg: TrainConfig,
                            crop: int = 16) -> GainedMeanScaleHyperprior:
    """A copy of ``teacher`` whose last ``h_s`` layer is 1x1 (and, with ``cfg.distill_hidden``,
    whose ``h_s`` is that wide, from a fresh initialisation); only its ``h_s`` is trained,
    everything else is kept, so the student codes the same ``y`` with other entropy parameters.

    Three losses (``cfg.distill_loss``), over random ``crop`` x ``crop`` windows of cached latents
    and random qualities; ``cfg.steps`` Adam steps at ``cfg.lr``, 10x lower for the last fifth:

    - ``"match"``: the teacher's log-scales (floored at the smallest scale the coder uses) and
      means in units of the teacher's scale;
    - ``"rate"``: the bits of the gained latent under the student's Gaussians (additive uniform
      noise, as in training), what the student is for. Matching alone cost students far more rate
      (docs/experiments/input-pipeline.md), since small errors in the scales cost bits unevenly;
    - ``"rate-ste"``: the bits of the rounded symbols ``round(y - mu)``, the rounding passed
      straight through to the means: what the coder spends (0.3 points of BD-rate better than
      ``"rate"`` in the mask-decay study).

    With ``cfg.mask_decay`` the student starts as the teacher's own ``h_s`` and is narrowed by mask
    decay (:mod:`mlcodec.mask_decay`) over these steps instead of being trained from scratch.
    """
    if cfg.distill_loss not in ("match", "rate", "rate-ste"):
        raise ValueError(f"distill_loss must be 'match', 'rate' or 'rate-ste', not {cfg.distill_loss!r}")
    if cfg.distill_hidden and cfg.mask_decay:
        raise ValueError("distill_hidden trains a narrow h_s from scratch, mask_decay derives one "
                         "from the teacher's: give one of them")
    student = copy.deepcopy(teacher)
    student.hyper_kernel = 1
    if cfg.distill_hidden:
        student.h_s = hyper_synthesis_layers(teacher.N, teacher.M, 1, cfg.distill_hidden)
        student.hyper_hidden = cfg.distill_hidden
    else:
        last_t = teacher.h_s[4]
        last_s = student.h_s[4] = torch.nn.Conv2d(last_t.in_channels, last_t.out_channels, 1)
        with torch.no_grad():  # start from the 3x3 kernel's response to a constant input
            last_s.weight.copy_(last_t.weight.sum((2, 3), keepdim=True))
            last_s.bias.copy_(last_t.bias)
    device = next(teacher.parameters()).device
    student.to(device)
    teacher.eval()
    latents = _cached_latents(teacher, training_photos(cfg.data, cfg.use_skimage))
    if not latents:
        raise ValueError("no training photo is large enough to distill on")
    gen = torch.Generator().manual_seed(cfg.seed)
    params = list(student.h_s.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    floor = float(teacher.gaussian_conditional.scale_table[0])
    masks = _mask_decay(student, cfg)
    for step in tqdm(range(cfg.steps), desc="distill h_s", unit="step", disable=not cfg.progress):
        if step == int(0.8 * cfg.steps):
            for g in opt.param_groups:
                g["lr"] = cfg.lr * 0.1
        if masks is not None:
            masks.update(step / cfg.steps)
        windows = []
        for _ in range(cfg.batch_size):
            y = latents[int(torch.randint(len(latents), (1,), generator=gen))]
            i = int(torch.randint(y.shape[1] - crop + 1, (1,), generator=gen))
            j = int(torch.randint(y.shape[2] - crop + 1, (1,), generator=gen))
            w = y[:, i:i + crop, j:j + crop]
            windows.append(w.flip(2) if torch.rand(1, generator=gen) < 0.5 else w)
        y = torch.stack(windows)
        q = torch.rand(y.shape[0], generator=gen).to(device)
        with torch.no_grad():
            zin = _teacher_hyper_input(teacher, y, q)
        s_s, m_s = student.h_s(zin).chunk(2, 1)
        if cfg.distill_loss == "rate":
            y_g = y * teacher.gains(q)[0]
            _, lik = student.gaussian_conditional(y_g, s_s, means=m_s, training=True)
            loss = -lik.log2().mean()  # bits per latent element
        elif cfg.distill_loss == "rate-ste":  # the coded symbols' bits, rounding passed straight through
            gc = student.gaussian_conditional
            v = y * teacher.gains(q)[0] - m_s
            symbols = v + (torch.round(v) - v).detach()
            lik = gc.likelihood_lower_bound(gc._likelihood(symbols, s_s))
            loss = -lik.log2().mean()
        else:
            with torch.no_grad():
                s_t, m_t = teacher.h_s(zin).chunk(2, 1)
                s_t = s_t.clamp_min(floor)
            loss = (s_s.clamp_min(floor).log() - s_t.log()).pow(2).mean() \
                + 0.1 * ((m_s - m_t) / s_t).pow(2).mean()
        if masks is not None:
            loss = loss + masks.penalty()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.clip)
        opt.step()
        if step % 250 == 0:
            log.info("distill step %d loss %.5f", step, loss.item())
    if masks is not None:
        _prune(student, masks)
    return student


def _mask_decay(model: GainedMeanScaleHyperprior, cfg: TrainConfig) -> HyperMaskDecay | None:
    """Masks that decay ``model``'s ``h_s`` to ``cfg.mask_decay`` hidden channels, or None."""
    if not cfg.mask_decay:
        return None
    return HyperMaskDecay(model.h_s, MaskDecaySchedule(tuple(cfg.mask_decay)))  # type: ignore[arg-type]


def _prune(model: GainedMeanScaleHyperprior, masks: HyperMaskDecay) -> None:
    """Finish the decay and remove the masked-out channels; the model's ``hyper_hidden`` becomes
    the widths left."""
    masks.update(1.0)
    model.hyper_hidden = masks.prune()
    log.info("mask decay: h_s hidden widths now %s", model.hyper_hidden)


class Budget:
    """Training progress in [0, 1]: steps done of ``steps``, or the wall-clock time of this run
    against ``minutes``, whichever is further (a resumed run gets a new time budget)."""

    def __init__(self, steps: int, minutes: float, start_step: int, warmup: int = 0) -> None:
        self.steps, self.seconds, self.start_step, self.warmup = steps, minutes * 60.0, start_step, warmup
        self.t0 = time.time()

    def progress(self, step: int) -> float:
        p = step / self.steps if self.steps > 0 else 1.0  # --steps 0: export the initial weights
        if self.seconds > 0 and step > self.start_step:
            p = max(p, (time.time() - self.t0) / self.seconds)
        return p

    def lr_scale(self, step: int) -> float:
        """The schedule: a linear warm-up over ``warmup`` steps, then full rate, 10x lower for the
        last fifth."""
        ramp = min(1.0, (step + 1) / self.warmup) if self.warmup > 0 else 1.0
        return ramp * (0.1 if self.progress(step) >= 0.8 else 1.0)


def codec_optimizers(model: GainedMeanScaleHyperprior, lr: float, aux_lr: float):
    """(main parameters, their Adam, Adam of the entropy bottleneck's quantiles)."""
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    main = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    return main, torch.optim.Adam(main, lr=lr), torch.optim.Adam(aux, lr=aux_lr)


def aux_step(model: GainedMeanScaleHyperprior, aux_opt: torch.optim.Optimizer) -> None:
    """One step of CompressAI's auxiliary loss (the entropy bottleneck's quantiles)."""
    aux_opt.zero_grad(set_to_none=True)
    model.aux_loss().backward()
    aux_opt.step()


def _build_model(cfg: TrainConfig) -> GainedMeanScaleHyperprior:
    """A fresh codec for ``cfg``, or the one ``cfg.init`` names (its architecture from its
    metadata, its gains remapped to ``cfg.lambdas``)."""
    if not cfg.init:
        if cfg.fresh_hyper:
            raise ValueError("fresh_hyper replaces the hyper-synthesis of --init's weights; give --init")
        model = GainedMeanScaleHyperprior(cfg.N, cfg.M, num_levels=len(cfg.lambdas)).to(cfg.device)
        model.init_gains(list(cfg.lambdas))
        return model
    arch = read_metadata(cfg.init).get("architecture", {})
    model = GainedMeanScaleHyperprior(arch.get("N", cfg.N), arch.get("M", cfg.M), num_levels=len(cfg.lambdas),
                                      hyper_kernel=arch.get("hyper_kernel", 3),
                                      hyper_hidden=arch.get("hyper_hidden", 0)).to(cfg.device)
    init_from_weights(model, cfg.init, cfg.lambdas)
    if cfg.fresh_hyper:
        if cfg.mask_decay or cfg.distill_hyper:
            raise ValueError("fresh_hyper trains a new h_s in the codec's loop; it does not combine "
                             "with mask_decay or distill_hyper")
        model.h_s = hyper_synthesis_layers(model.N, model.M, model.hyper_kernel,
                                           tuple(cfg.fresh_hyper)).to(cfg.device)
        model.hyper_hidden = hidden_widths(model.M, tuple(cfg.fresh_hyper))
    return model


def train(cfg: TrainConfig, objective: CodecObjective | None = None) -> Path:
    """Run (or resume) training; returns the path of the exported safetensors weights.

    The one training loop for codecs: every step is rate + lambda * distortion on photo crops,
    plus ``objective``'s terms when one is given (task losses, MTCE, DIKL: see
    :mod:`mlcodec.objective`). The objective's modules train alongside the codec and are saved in
    the checkpoint, never in the exported weights.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if objective is not None:
        objective.prepare()
    model = _build_model(cfg)
    if cfg.distill_hyper:
        if not cfg.init:
            raise ValueError("--distill-hyper needs --init WEIGHTS (the teacher)")
        model.update(force=True)  # the teacher's entropy-bottleneck medians
        student = distill_hyper_synthesis(model, cfg)
        return export(student, cfg, out / "weights.safetensors")
    if objective is not None:
        objective.setup(model, cfg.device)
    masks = _mask_decay(model, cfg)
    if cfg.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    main_params, opt, aux_opt = codec_optimizers(model, cfg.lr, cfg.aux_lr)
    obj_params = list(objective.parameters()) if objective is not None else []
    obj_opt = torch.optim.AdamW(obj_params, lr=objective.lr, weight_decay=objective.weight_decay) \
        if objective is not None and obj_params else None
    ckpt_path = out / "checkpoint.pt"
    step = 0
    if ckpt_path.exists():  # resume: tensors only, loaded with weights_only=True (no pickle)
        ckpt = load_checkpoint(ckpt_path, map_location=cfg.device)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        aux_opt.load_state_dict(ckpt["aux_opt"])
        if objective is not None:
            if "objective" not in ckpt:
                raise ValueError(f"{ckpt_path} was written without an objective; use another --output")
            objective.load_state_dict(ckpt["objective"])
            if obj_opt is not None:
                obj_opt.load_state_dict(ckpt["objective_opt"])
        if masks is not None:
            if "mask_decay" not in ckpt:
                raise ValueError(f"{ckpt_path} was written without --mask-decay; use another --output")
            masks.load_state_dict(ckpt["mask_decay"])
        step = int(ckpt["step"])
        log.info("resumed from %s at step %d", ckpt_path, step)

    if cfg.patch % 64:
        raise ValueError(f"patch must be a multiple of 64 (the transforms' stride), got {cfg.patch}; "
                         "images of other sizes are padded at inference, crops for training are not")
    photos = training_photos(cfg.data, cfg.use_skimage)
    if cfg.crops == "dataset":
        crops: RandomCrops | DatasetCrops = DatasetCrops([p.image for p in photos], patch=cfg.patch)
    elif cfg.crops == "photo":
        crops = RandomCrops(photos, patch=cfg.patch)
    else:
        raise ValueError(f"crops must be 'photo' or 'dataset', not {cfg.crops!r}")
    batches = crops.batches(cfg.batch_size, seed=cfg.seed + step)
    gen = torch.Generator().manual_seed(cfg.seed + step)
    model.train()
    if objective is not None:
        objective.train()
    desc = "train-codec" if objective is None else f"train-codec ({objective.name})"
    bar = tqdm(total=cfg.steps, initial=step, desc=desc, unit="step", disable=not cfg.progress)
    budget = Budget(cfg.steps, cfg.minutes, step, cfg.warmup)
    history: list[dict[str, float]] = []

    while budget.progress(step) < 1.0:
        scale = budget.lr_scale(step)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * scale
        for g in obj_opt.param_groups if obj_opt is not None else ():
            g["lr"] = objective.lr * scale
        x = next(batches).to(cfg.device, non_blocking=True).float().div_(255.0)
        q = torch.rand(x.shape[0], generator=gen).to(cfg.device)
        if masks is not None:
            masks.update(budget.progress(step))
        loss, bpp, mse = rd_loss(model, x, q, cfg.lambdas, cfg.bf16)
        terms = {"rd_photo": loss, "bpp_photo": bpp}
        if masks is not None:
            terms["sparsity"] = masks.penalty()
            loss = loss + terms["sparsity"]
        if objective is not None:
            extra, more = objective.loss(model, gen, cfg.lambdas)
            loss = loss + extra
            terms.update(more)
        opt.zero_grad(set_to_none=True)
        if obj_opt is not None:
            obj_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main_params, cfg.clip)
        if obj_opt is not None:
            torch.nn.utils.clip_grad_norm_(obj_params, cfg.clip)
        opt.step()
        if obj_opt is not None:
            obj_opt.step()
        aux_step(model, aux_opt)
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0:
            psnr = -10 * math.log10(max(mse.item(), 1e-10))
            row = {"step": step, "seconds": round(time.time() - budget.t0, 1), "loss": loss.item(),
                   "psnr_photo": psnr, **{k: float(v.detach()) for k, v in terms.items()}}
            history.append(row)
            bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k not in ("step", "seconds")})
        if step % cfg.save_every == 0 or budget.progress(step) >= 1.0:
            state = {"model": model.state_dict(), "opt": opt.state_dict(),
                     "aux_opt": aux_opt.state_dict(), "step": torch.tensor(step)}
            if objective is not None:
                state["objective"] = objective.state_dict()
                if obj_opt is not None:
                    state["objective_opt"] = obj_opt.state_dict()
            if masks is not None:
                state["mask_decay"] = masks.state_dict()
            save_checkpoint(state, ckpt_path)  # atomic: a kill mid-save keeps the last one
            log.info("step %d loss %.4f bpp %.4f mse %.6f (%.0fs)", step, loss.item(),
                     bpp.item(), mse.item(), time.time() - budget.t0)
    bar.close()
    if masks is not None:
        _prune(model, masks)
    extra: dict = {"training": {"steps_run": step, "history": history[-20:]}}
    if cfg.init:  # a fine-tune: the recipe of the weights it started from
        extra["init_recipe"] = read_metadata(cfg.init).get("config", {})
    if objective is not None:
        extra.update(objective.metadata())
    return export(model, cfg, out / "weights.safetensors", extra=extra)


@torch.no_grad()
def exact_tables(model: GainedMeanScaleHyperprior, photos) -> ExactTables:
    """The integer hyper-synthesis of ``model`` (bitstream format 3), its ranges calibrated on the
    hyper-latents of ``photos`` at every trained level and halfway between levels."""
    latents = _cached_latents(model, photos, min_size=4)
    if not latents:
        raise ValueError("no calibration photo is large enough for the integer hyper-synthesis")
    steps = 2 * (model.num_levels - 1)
    calibration = []
    for q in (k / steps for k in range(steps + 1)):
        gain, _, hgain, _ = model.gains(torch.tensor([q]))
        calibration += [(model.hyper_symbols(y[None] * gain, hgain), q) for y in latents]
    return integerize(model, calibration)


def export(model: GainedMeanScaleHyperprior, cfg: TrainConfig, path: Path,
           extra: dict | None = None) -> Path:
    """Build the CDF tables and the integer hyper-synthesis (calibrated on the training photos)
    and write float32 weights plus the recipe (and ``extra``, e.g. a fine-tuning recipe) as
    metadata."""
    model = model.cpu().float().eval()
    model.update(force=True)
    tables = exact_tables(model, training_photos(cfg.data, cfg.use_skimage))
    arch = {"N": model.N, "M": model.M, "num_levels": model.num_levels, "hyper_kernel": model.hyper_kernel}
    if model.hyper_hidden:  # one width, or the pair mask decay leaves
        hidden = model.hyper_hidden
        arch["hyper_hidden"] = hidden if isinstance(hidden, int) else list(hidden)
    save_weights(model, path, {**(extra or {}),
                               "config": {k: v for k, v in asdict(cfg).items()
                                          if k not in ("device", "threads", "extra", "progress", "log_every")},
                               "architecture": arch},
                 tables.state_dict())
    return path


def add_exact_tables(weights: str | Path, data: tuple[str, ...] = (), use_skimage: bool = True,
                     out: str | Path | None = None) -> Path:
    """Add the integer hyper-synthesis (bitstream format 3) to weights exported before it existed.
    The float weights are kept as they are, so streams of formats 1 and 2 still decode."""
    meta = read_metadata(weights)
    model = GainedMeanScaleHyperprior(**meta["architecture"])  # type: ignore[arg-type]
    load_weights(model, weights)  # old integer tables, if any, are replaced
    model.eval()
    tables = exact_tables(model, training_photos(data, use_skimage))
    meta["exact"] = {"calibration": {"data": list(data), "use_skimage": use_skimage},
                     "acc_bits": tables.acc_bits, "z_max": tables.z_max,
                     "hidden_max": tables.hidden_max}
    path = Path(out or weights)
    save_weights(model, path, meta, tables.state_dict())
    return path
