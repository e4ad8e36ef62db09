"""Train the default variable-rate codec (``mlcodec train-codec``).

Recipe: random crops with flips of offline photos; per sample a quality ``q ~ U[0, 1]`` and its
rate-distortion weight ``lambda(q)`` interpolated in log space over ``lambdas``; loss
``lambda(q) * 255^2 * MSE + bpp`` (Ballé et al.); Adam, learning rate dropped 10x for the last
fifth; CompressAI's auxiliary loss for the entropy bottleneck's quantiles. On a CPU the transforms
run under bfloat16 autocast (``--bf16``). Checkpoints are written every ``--save-every`` steps and
a rerun with the same ``--out`` resumes from the last one.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from mlcodec.data.photos import RandomCrops, training_photos
from mlcodec.models.gained_hyperprior import GainedMeanScaleHyperprior
from mlcodec.weights import save_weights

log = logging.getLogger(__name__)

# MSE lambdas of CompressAI's quality levels 1..7 (0.1 to ~1.3 bpp on Kodak-like photos).
DEFAULT_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932)


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
    lr: float = 2e-4
    aux_lr: float = 1e-3
    clip: float = 1.0
    bf16: bool = False
    seed: int = 0
    threads: int = 0
    save_every: int = 500
    device: str = "cpu"
    extra: dict[str, str] = field(default_factory=dict)


def lambda_for(quality: torch.Tensor, lambdas: tuple[float, ...]) -> torch.Tensor:
    """Log-linear interpolation of ``lambdas`` at qualities in [0, 1] (matches the gain units)."""
    logs = torch.tensor([math.log(v) for v in lambdas], device=quality.device)
    t = quality * (len(lambdas) - 1)
    lo = t.floor().long().clamp(max=len(lambdas) - 2)
    frac = t - lo
    return (logs[lo] * (1 - frac) + logs[lo + 1] * frac).exp()


def rd_loss(model: GainedMeanScaleHyperprior, x: torch.Tensor, q: torch.Tensor,
            lambdas: tuple[float, ...], bf16: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, bpp, mse) of one batch, per-sample lambda weighting."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = model(x, q)
    num_pixels = x.shape[2] * x.shape[3]
    bpp = (out.y_likelihoods.log2().sum((1, 2, 3)) + out.z_likelihoods.log2().sum((1, 2, 3)))
    bpp = -bpp / num_pixels
    mse = (out.x_hat.float() - x).pow(2).mean((1, 2, 3))
    loss = (lambda_for(q, lambdas) * 255**2 * mse + bpp).mean()
    return loss, bpp.mean(), mse.mean()


def train(cfg: TrainConfig) -> Path:
    """Run (or resume) training; returns the path of the exported safetensors weights."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model = GainedMeanScaleHyperprior(cfg.N, cfg.M, num_levels=len(cfg.lambdas)).to(cfg.device)
    model.init_gains(list(cfg.lambdas))
    aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    main_params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    opt = torch.optim.Adam(main_params, lr=cfg.lr)
    aux_opt = torch.optim.Adam(aux_params, lr=cfg.aux_lr)
    ckpt_path = out / "checkpoint.pt"
    step = 0
    if ckpt_path.exists():  # resume: tensors only, loaded with weights_only=True (no pickle)
        ckpt = torch.load(ckpt_path, map_location=cfg.device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        aux_opt.load_state_dict(ckpt["aux_opt"])
        step = int(ckpt["step"])
        log.info("resumed from %s at step %d", ckpt_path, step)

    crops = RandomCrops(training_photos(cfg.data, cfg.use_skimage), patch=cfg.patch)
    batches = crops.batches(cfg.batch_size, seed=cfg.seed + step)
    gen = torch.Generator().manual_seed(cfg.seed + step)
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc="train-codec", unit="step")
    t0 = time.time()
    while step < cfg.steps:
        lr = cfg.lr * (0.1 if step >= 0.8 * cfg.steps else 1.0)
        for g in opt.param_groups:
            g["lr"] = lr
        x = next(batches).to(cfg.device)
        q = torch.rand(x.shape[0], generator=gen).to(cfg.device)
        loss, bpp, mse = rd_loss(model, x, q, cfg.lambdas, cfg.bf16)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main_params, cfg.clip)
        opt.step()
        aux_opt.zero_grad(set_to_none=True)
        model.aux_loss().backward()
        aux_opt.step()
        step += 1
        bar.update(1)
        if step % 20 == 0:
            psnr = -10 * math.log10(max(mse.item(), 1e-10))
            bar.set_postfix(loss=f"{loss.item():.3f}", bpp=f"{bpp.item():.3f}", psnr=f"{psnr:.2f}")
        if step % cfg.save_every == 0 or step == cfg.steps:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                        "aux_opt": aux_opt.state_dict(), "step": torch.tensor(step)}, ckpt_path)
            log.info("step %d loss %.4f bpp %.4f mse %.6f (%.0fs)", step, loss.item(),
                     bpp.item(), mse.item(), time.time() - t0)
    bar.close()
    return export(model, cfg, out / "weights.safetensors")


def export(model: GainedMeanScaleHyperprior, cfg: TrainConfig, path: Path) -> Path:
    """Build the CDF tables and write float32 weights plus the recipe as metadata."""
    model = model.cpu().float().eval()
    model.update(force=True)
    save_weights(model, path, {"config": {k: v for k, v in asdict(cfg).items()
                                          if k not in ("device", "threads", "extra")},
                               "architecture": {"N": model.N, "M": model.M,
                                                "num_levels": model.num_levels}})
    return path
