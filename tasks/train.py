"""Training and validation of task heads on shards (``mlcodec train-head``).

One loop serves latent heads (latent shards) and pixel references (image shards): AdamW with a
cosine schedule, validation after every epoch, and per-epoch wall-clock times (loading included)
so the two input paths can be compared. Checkpoints are safetensors with the task spec, head name
and history as metadata; :func:`load_head` rebuilds the head from them.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm import tqdm

from mlcodec.checkpoint import atomic_path, resume_run, save_checkpoint
from mlcodec.registry import list_codecs

from . import create_head, head_config
from .data import TaskSpec, check_task, make_loader, read_manifest, spec_from_manifest, task_targets
from .heads import LATENT_STRIDE, synthesis_channels, synthesis_layers, synthesis_stage
from .losses import decode_boxes, detection_loss, segmentation_loss
from .metrics import TaskMetric, primary
from .options import DEFAULT_LR, DEFAULT_WEIGHT_DECAY, STEMS

log = logging.getLogger(__name__)


@dataclass
class EpochRecord:
    epoch: int
    train_seconds: float  # this epoch's training pass, data loading included
    elapsed_seconds: float  # training time so far (validation excluded)
    loss: float
    val: dict[str, float]


@dataclass
class TrainResult:
    head: str
    checkpoint: str
    spec: dict[str, Any]
    lr: float | None = None  # the schedule's peak learning rate
    weight_decay: float | None = None
    history: list[EpochRecord] = field(default_factory=list)

    def best(self, task: str) -> float:
        return max(primary(task, r.val) for r in self.history)

    def seconds_to_reach(self, task: str, target: float) -> float | None:
        """Training seconds until the validation metric first reached ``target`` (None: never)."""
        return next((r.elapsed_seconds for r in self.history if primary(task, r.val) >= target), None)


def _batch_input(batch: dict[str, Any], input: str) -> Tensor:
    return batch["latent"] if input == "latent" else batch["image"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device`, or a ValueError saying why it cannot be used here."""
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r}: {e}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r}: no CUDA GPU is visible to this process "
                         "(torch.cuda.is_available() is False); train with --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r}: only {torch.cuda.device_count()} CUDA GPU(s) visible")
    return dev


def targets_to(targets: Any, device: torch.device) -> Any:
    """Task targets (a label tensor, ``(B, H, W)`` maps or a list of box dicts) on ``device``."""
    if isinstance(targets, Tensor):
        return targets.to(device)
    return [{k: v.to(device) if isinstance(v, Tensor) else v for k, v in t.items()} for t in targets]


def random_flip(x: Tensor, targets: Any, task: str, image_sizes: Tensor,
                generator: torch.Generator, stride: int = 1) -> tuple[Tensor, Any]:
    """Mirror about half the samples left-right, targets included (latents too: the analysis
    transform is convolutional, so a mirrored image has close to a mirrored latent). ``stride``
    is image pixels per input column (16 for latents); samples whose input is padded beyond the
    image width are left as they are, since mirroring would misalign them with their targets."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    x = x.clone()
    for i in torch.nonzero(flip).flatten().tolist():
        if int(image_sizes[i, 1]) != x.shape[-1] * stride:
            continue
        x[i] = x[i].flip(-1)
        w = float(image_sizes[i, 1])
        if task == "det":
            b = targets[i]["boxes"]
            targets[i] = {**targets[i], "boxes": torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1)}
        elif task == "seg":
            targets[i, :, : int(w)] = targets[i, :, : int(w)].flip(-1)
    return x, targets


def compute_loss(model: nn.Module, task: str, x: Tensor, targets: Any) -> Tensor:
    if task == "seg" and hasattr(model, "logits"):  # the stride-2 loss (segmentation_loss)
        return segmentation_loss(model.logits(x), targets, model.out_stride)
    out = model(x)
    if task == "cls":
        return F.cross_entropy(out, targets)
    if task == "det":
        return detection_loss(out, targets)
    h, w = targets.shape[-2:]  # a segmenter without .logits(): full-resolution loss
    return F.cross_entropy(out[..., :h, :w], targets, ignore_index=-1)


@torch.no_grad()
def predict(model: nn.Module, task: str, x: Tensor, image_sizes: Tensor) -> Any:
    """Predictions in the form :class:`~mlcodec.tasks.metrics.TaskMetric` takes."""
    out = model(x)
    if task == "det":
        h, w = (int(v) for v in image_sizes.max(0).values)
        return decode_boxes(out, image_size=(h, w))
    return out


@torch.no_grad()
def evaluate(model: nn.Module, spec: TaskSpec, loader: Any, input: str) -> dict[str, float]:
    """The task metric of ``model`` over ``loader``: inputs go to the model's device, and the
    predictions come back to the CPU, where the metric accumulates."""
    model.eval()
    device = next(model.parameters()).device
    metric = TaskMetric(spec.task, spec.num_outputs)
    for batch in loader:
        sizes = batch["image_sizes"]
        pred = predict(model, spec.task, _batch_input(batch, input).to(device), sizes)
        metric.update(targets_to(pred, torch.device("cpu")), task_targets(batch["targets"], spec, sizes))
    return metric.compute()


def save_head(model: nn.Module, path: str | Path, name: str, spec: TaskSpec, in_channels: int,
              extra: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"head": name, "spec": spec.to_json(), "in_channels": in_channels,
            "synthesis_channels": synthesis_channels(model), **(extra or {})}
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp),
                  metadata={k: json.dumps(v) for k, v in meta.items()})
    return path


def load_head(path: str | Path) -> tuple[nn.Module, TaskSpec, dict[str, Any]]:
    """Rebuild a head from its safetensors checkpoint (no pickle)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No head checkpoint at {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    if "head" not in meta:
        raise ValueError(f"{path} is not an mlcodec head checkpoint (no 'head' metadata)")
    s = meta["spec"]
    spec = TaskSpec.from_json(s)
    cin, syn = int(meta["in_channels"]), int(meta.get("synthesis_channels", 0))
    model = create_head(meta["head"], spec, cin, synthesis_layers(cin, syn) if syn else None)
    try:
        model.load_state_dict(load_file(str(path)))
    except RuntimeError as e:  # a layout change between versions (e.g. latent-seg's stride)
        raise ValueError(f"{path}: its weights do not fit this version's {meta['head']!r} head "
                         f"({str(e).splitlines()[0]}); retrain it with `mlcodec train-head`") from e
    return model.eval(), spec, meta


def codec_synthesis_stage(manifest: dict[str, Any], source: str | Path) -> nn.Sequential:
    """The first synthesis stage of the codec that wrote ``manifest``'s shards, checked to be the
    same weights (fingerprint) the shards were written with."""
    from mlcodec.registry import create_codec, release_for

    quality = float(manifest.get("quality", 0.5))
    codec = release_for(manifest["codec"], bytes.fromhex(manifest["fingerprint"]), quality) \
        if manifest.get("fingerprint") else create_codec(manifest["codec"])  # the release that wrote them
    if not hasattr(codec, "synthesis_transform"):
        raise ValueError(f"{manifest['codec']} has no synthesis transform; use stem='learned'")
    have = codec.fingerprint(quality).hex()
    accepted = {f.hex() for f in codec.fingerprints(quality)}  # the same weights, any format
    if manifest.get("fingerprint") and manifest["fingerprint"] not in accepted:
        raise ValueError(f"{source} was written by {manifest['codec']} weights {manifest['fingerprint']}, "
                         f"but this installation's are {have}: rewrite the shards with these weights, "
                         "or train with stem='learned'")
    return synthesis_stage(codec.synthesis_transform(quality))


def train_head(
    task: str,
    train_dirs: Sequence[str | Path],
    val_dirs: Sequence[str | Path],
    out: str | Path,
    head: str | None = None,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float | None = None,
    weight_decay: float | None = None,
    workers: int = 0,
    seed: int = 0,
    augment: bool = True,
    stem: str = "synthesis",
    progress: bool = True,
    label_key: str = "label",
    device: str | torch.device = "cpu",
) -> TrainResult:
    """Train ``head`` (default ``latent-<task>``, or ``pixel-<task>`` on image shards) and save
    ``out/<head>.safetensors`` (the best epoch) and ``out/<head>.history.json``.

    ``augment`` mirrors half of each batch left-right (latents and images alike). ``lr`` is the
    peak of a one-cycle schedule (default: :data:`DEFAULT_LR` for the task), ``weight_decay``
    AdamW's (default: :data:`DEFAULT_WEIGHT_DECAY` for the task). ``stem`` (latent
    heads): ``"synthesis"`` starts the head with the shards' codec's own first synthesis stage,
    frozen (see :class:`~mlcodec.tasks.heads.SynthesisStem`); ``"learned"`` with a learned
    upsampling, for codecs without one. ``label_key`` (classification): the image-level label to
    predict (``label``, or one the source names in ``label_names``, e.g. ``colour``). ``device``:
    where the head trains and validates (``"cuda"`` on a GPU); batches are read and mirrored on
    the CPU with the same random streams on every device, and the checkpoint is saved from the CPU."""
    dev = resolve_device(device)
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {', '.join(STEMS)}, not {stem!r}")
    lr = DEFAULT_LR[check_task(task)] if lr is None else lr
    weight_decay = DEFAULT_WEIGHT_DECAY[task] if weight_decay is None else weight_decay
    manifest = read_manifest(train_dirs[0])
    for d in [*train_dirs[1:], *val_dirs]:
        other = read_manifest(d)
        if (other["codec"], other.get("fingerprint")) != (manifest["codec"], manifest.get("fingerprint")):
            raise ValueError(f"{d} holds {other['codec']} data ({other.get('fingerprint')}), but "
                             f"{train_dirs[0]} holds {manifest['codec']} ({manifest.get('fingerprint')}); "
                             "a head trains and validates on one codec and one set of weights")
        if other.get("class_names") != manifest.get("class_names"):
            raise ValueError(f"{d} names the classes {other.get('class_names')}, but {train_dirs[0]} "
                             f"names {manifest.get('class_names')}: labels are class indexes, so the "
                             "splits must list the same classes (an ImageFolder split needs a folder "
                             "for every class, empty or not)")
    spec = spec_from_manifest(manifest, task, label_key)
    input = "pixel" if manifest["codec"] in list_codecs(kind="pixel") else "latent"
    name = head or f"{input}-{task}"
    cfg = head_config(name)
    if cfg.input != input:
        raise ValueError(f"head {name!r} reads {cfg.input} input but {train_dirs[0]} holds "
                         f"{manifest['codec']} {'images' if input == 'pixel' else 'latents'}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train_loader = make_loader(train_dirs, input, batch_size, shuffle=1000, workers=workers, seed=seed)
    val_loader = make_loader(val_dirs, input, batch_size, workers=workers)
    in_channels, synthesis = 3, None
    if input == "latent":
        in_channels = next(iter(make_loader(val_dirs, input, 1)))["latent"].shape[1]
        if stem == "synthesis":
            synthesis = codec_synthesis_stage(manifest, train_dirs[0])
    model = create_head(name, spec, in_channels, synthesis).to(dev)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                            weight_decay=weight_decay)
    steps_per_epoch = math.ceil(sum(read_manifest(d)["samples"] for d in train_dirs) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch + 1,
                                                pct_start=0.1)
    out = Path(out)
    ckpt = out / f"{name}.safetensors"
    result = TrainResult(name, str(ckpt), spec.to_json(), lr, weight_decay)
    elapsed, best, start = 0.0, -1.0, 1
    # a run killed between epochs resumes from its last finished epoch, as if never stopped
    resume = out / f"{name}.resume.pt"
    run = {"task": task, "head": name, "epochs": epochs, "batch_size": batch_size, "lr": lr,
           "weight_decay": weight_decay, "seed": seed, "augment": augment, "stem": stem,
           "label_key": label_key, "train_dirs": [str(d) for d in train_dirs],
           "val_dirs": [str(d) for d in val_dirs]}
    state = resume_run(resume, run)  # tensors and plain values only (weights_only=True: no pickle)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["rng"])
        result.history = [EpochRecord(**r) for r in state["history"]]
        elapsed, best, start = float(state["elapsed"]), float(state["best"]), int(state["epoch"]) + 1
        log.info("%s: resumed from %s after epoch %d", name, resume, start - 1)
    for epoch in range(start, epochs + 1):
        model.train()
        if hasattr(train_loader.dataset, "set_epoch"):  # a new sample order every epoch
            train_loader.dataset.set_epoch(epoch)
        t0, total, n = time.perf_counter(), 0.0, 0
        bar = tqdm(train_loader, total=steps_per_epoch, desc=f"{name} epoch {epoch}/{epochs}",
                   unit="batch", disable=not progress)
        for batch in bar:
            x = _batch_input(batch, input)
            targets = task_targets(batch["targets"], spec, batch["image_sizes"])
            if augment:
                x, targets = random_flip(x, targets, task, batch["image_sizes"], gen,
                                         LATENT_STRIDE if input == "latent" else 1)
            loss = compute_loss(model, task, x.to(dev), targets_to(targets, dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched.last_epoch < sched.total_steps - 1:
                sched.step()
            total, n = total + loss.item(), n + 1
            bar.set_postfix(loss=f"{total / n:.3f}")
        seconds = time.perf_counter() - t0
        elapsed += seconds
        val = evaluate(model, spec, val_loader, input)
        rec = EpochRecord(epoch, seconds, elapsed, total / max(n, 1), val)
        result.history.append(rec)
        log.info("%s epoch %d: %.1fs, loss %.4f, val %s", name, epoch, seconds, rec.loss, val)
        if progress:
            tqdm.write(f"{name} epoch {epoch}: {seconds:.1f}s loss {rec.loss:.4f} val "
                       + " ".join(f"{k}={v:.4f}" for k, v in val.items()))
        if primary(task, val) > best:
            best = primary(task, val)
            save_head(model, ckpt, name, spec, in_channels,
                      {"codec": manifest["codec"], "fingerprint": manifest.get("fingerprint"),
                       "epoch": epoch, "val": val})
        if epoch < epochs:
            save_checkpoint({"run": run, "epoch": epoch, "elapsed": elapsed, "best": best,
                             "history": [asdict(r) for r in result.history], "model": model.state_dict(),
                             "opt": opt.state_dict(), "sched": sched.state_dict(), "gen": gen.get_state(),
                             "rng": torch.get_rng_state()}, resume)  # atomic: never a half-written one
    (out / f"{name}.history.json").write_text(json.dumps(
        {**asdict(result), "train_dirs": [str(d) for d in train_dirs],
         "val_dirs": [str(d) for d in val_dirs]}, indent=1))
    resume.unlink(missing_ok=True)
    return result
