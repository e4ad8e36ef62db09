"""Training latent adapters (:mod:`mlcodec.tasks.adapter`) by distillation on unlabelled photos.

Choices the issue left open, taken by probes on held-back training photos
(docs/experiments/latent-adapter.md):

* **Stride 4 by default.** The adapter starts with the codec's own first two synthesis stages
  (frozen, latent stride 16 -> 4) and reaches the judge's stride-4 features, so every pretrained
  stage of the judge from there on runs too. What it learns is a low-level map; at strides 16
  and 8 the small network learned per-photo predictions, not the mapping.
* **The teacher is decode + judge by default**: the adapter imitates the judge's features on the
  *decoded* crop, a function of the latent alone. The judge on the original pixels
  (``teacher="original"``) also asks it to restore what the codec dropped, which it learned per
  photo, not in general.
* **Features only by default** (``kl_weight=0``: the judge's tail does not run in training), and
  no mirroring: decode + judge of a mirrored latent is not the mirrored features.

Training (:func:`train_adapter`, ``mlcodec train-head --task adapter``): dataset-like crops of
unlabelled photos (:func:`mlcodec.data.crops.dataset_crops`) are compressed at random qualities
by the real codec and decoded to latents exactly as a loader reads them. The loss is the
distance to the teacher's features, per channel in units of their spread, plus ``kl_weight`` x
the KL divergence of the tail's prediction from the teacher's. Latents and teacher outputs are
computed once and cached beside the checkpoint, so epochs cost only the adapter (and the tail).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm import tqdm

import mlcodec
from mlcodec.checkpoint import atomic_path, resume_run, save_checkpoint

from .adapter import HEAD_NAME, AdapterHead, adapter_metadata, build_head, crop_latent, load_adapter, save_adapter
from .heads import LATENT_STRIDE, synthesis_prefix
from .judges import Judge, create_judge

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class AdapterConfig:
    """What an adapter is trained from (its digest names the cached data and the checkpoint)."""

    judge: str
    codec: str
    photos: tuple[str, ...]
    crops_per_photo: int = 48
    size: int = 224
    scales: tuple[float, float] = (1.0, 3.0)
    #: qualities drawn per batch of crops, uniformly from [low, high]
    qualities: tuple[float, float] = (0.0, 1.0)
    codings: int = 2  # each crop is coded at this many random qualities
    val_share: float = 0.1  # photos held back to report agreement each epoch
    #: the judge's image stride the adapter reaches (8: through the codec's synthesis stage)
    stride: int = 4
    #: "decoded": imitate decode + judge (a function of the latent alone); "original": the judge
    #: on the original pixels (see the module's docstring)
    teacher: str = "decoded"
    width: int = 48
    depth: int = 2
    expansion: float = 4.0
    seed: int = 0

    def data_digest(self) -> str:
        keys = ("judge", "codec", "photos", "crops_per_photo", "size", "scales", "qualities", "codings",
                "val_share", "stride", "seed")
        return _digest({"data_version": 3, **{k: getattr(self, k) for k in keys}})


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=list).encode()).hexdigest()[:16]


@torch.no_grad()
def teacher_outputs(judge: Judge, images: Sequence[Image.Image], stride: int = 16, batch_size: int = 32,
                    progress: bool = False) -> tuple[Tensor, Tensor]:
    """The judge's features at image ``stride`` and its logits on ``images`` (the teacher)."""
    front, tail, _ = judge.split(stride)
    feats, logits = [], []
    for i in tqdm(range(0, len(images), batch_size), desc=f"teacher {judge.name}", unit="batch",
                  disable=not progress):
        f = front(judge.to_input(images[i : i + batch_size]))
        feats.append(f)
        logits.append(tail(f).float())
    return torch.cat(feats), torch.cat(logits)


@torch.no_grad()
def coded_latents(codec: mlcodec.Codec, images: Sequence[Image.Image], quality: float,
                  batch_size: int = 32) -> tuple[Tensor, list[int], list[Image.Image]]:
    """Latents of ``images`` compressed at ``quality`` and decoded as a loader reads them (cropped
    to each image's extent; the images share one size), each stream's bytes, and the decoded
    images (the synthesis of the same latents)."""
    ys, sizes, decoded = [], [], []
    for i in range(0, len(images), batch_size):
        part = images[i : i + batch_size]
        streams = codec.compress_batch(part, quality=quality)
        sizes += [len(s) for s in streams]
        latents = codec.decode_latents(streams)
        decoded += codec.synthesize(latents, streams)
        ys += [crop_latent(y, (im.height, im.width)) for y, im in zip(latents, part)]
    return torch.stack(ys), sizes, decoded


#: what the adapter imitates: the judge on the original crop, or on the decoded one
TEACHERS = ("decoded", "original")


def distillation_data(config: AdapterConfig, judge: Judge, codec: mlcodec.Codec,
                      progress: bool = True) -> dict[str, Tensor]:
    """The cached training set. Per crop: ``features`` and ``logits`` of the judge on the
    original, ``val`` (1: a held-back photo's crop). Per coding (row): ``latent``, ``crop`` (its
    crop's index), ``quality``, and ``decoded_features`` / ``decoded_logits``: the judge on the
    decoded image, the pipeline the adapter replaces."""
    from mlcodec.data.crops import dataset_crops
    from mlcodec.data.photos import training_photos

    photos = [p for p in training_photos(config.photos) if min(p.image.size) >= config.size]
    if len(photos) < 2:
        raise ValueError(f"need at least 2 training photos of {config.size} px or more under "
                         f"{', '.join(config.photos) or 'scikit-image'}; found {len(photos)}")
    rng = random.Random(config.seed)
    val_photos = set(rng.sample(range(len(photos)), max(1, round(config.val_share * len(photos)))))
    crops, val = [], []
    for k, p in enumerate(tqdm(photos, desc="crops", unit="photo", disable=not progress)):
        cs = dataset_crops(p.image, p.name, config.crops_per_photo, config.size, config.scales, seed=config.seed)
        crops += [c.image for c in cs]
        val += [k in val_photos] * len(cs)
    feats, logits = teacher_outputs(judge, crops, config.stride, progress=progress)
    feats = feats.half()  # features are kept in float16 (half the cache); the loss reads them as float32
    rows: dict[str, list] = {"latent": [], "crop": [], "quality": [], "decoded_features": [], "decoded_logits": []}
    batch = 32
    jobs = [(i, c) for i in range(0, len(crops), batch) for c in range(config.codings)]
    for i, _ in tqdm(jobs, desc=f"coding with {codec.config.name}", unit="batch", disable=not progress):
        q = rng.uniform(*config.qualities)
        y, _, decoded = coded_latents(codec, crops[i : i + batch], q, batch)
        f, lg = teacher_outputs(judge, decoded, config.stride, batch)
        f = f.half()
        for key, v in (("latent", [y]), ("crop", range(i, i + len(y))), ("quality", [q] * len(y)),
                       ("decoded_features", [f]), ("decoded_logits", [lg])):
            rows[key] += v
    return {"latent": torch.cat(rows["latent"]), "crop": torch.tensor(rows["crop"]),
            "quality": torch.tensor(rows["quality"]), "decoded_features": torch.cat(rows["decoded_features"]),
            "decoded_logits": torch.cat(rows["decoded_logits"]), "features": feats, "logits": logits,
            "val": torch.tensor(val, dtype=torch.bool)}


def load_or_build_data(config: AdapterConfig, judge: Judge, codec: mlcodec.Codec, path: Path,
                       progress: bool = True) -> dict[str, Tensor]:
    """:func:`distillation_data`, read from ``path`` when it was built from the same recipe."""
    digest = config.data_digest()
    if path.is_file():
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("digest") == digest:
                log.info("reusing the distillation data in %s", path)
                return load_file(str(path))
    data = distillation_data(config, judge, codec, progress)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in data.items()}, str(tmp), metadata={"digest": digest})
    return data


def distillation_loss(head: AdapterHead, y: Tensor, feats: Tensor, logits: Tensor, scale: Tensor,
                      kl_weight: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, feature term, KL term)``: the squared distance to the teacher's features in units
    of each channel's spread (``scale``), plus ``kl_weight`` x KL(teacher || adapter) (the
    judge's tail runs only when ``kl_weight`` is not 0)."""
    f = head.adapter(y)
    feat = ((f - feats.float()) / scale).pow(2).mean()
    if not kl_weight:
        return feat, feat, torch.zeros(())
    kl = F.kl_div(head.tail(f).log_softmax(1), logits.log_softmax(1), log_target=True, reduction="batchmean")
    return feat + kl_weight * kl, feat, kl


@dataclass
class AdapterEpoch:
    epoch: int
    seconds: float
    loss: float
    feature: float
    kl: float
    val_agree: float  # top-1 agreement with the judge on the originals, held-back photos' crops
    val_decoded_agree: float  # the same for decode + judge, on the same streams


@dataclass
class AdapterResult:
    checkpoint: str
    recipe: dict[str, Any]
    history: list[AdapterEpoch] = field(default_factory=list)


@torch.no_grad()
def _val_agreement(head: AdapterHead, data: dict[str, Tensor], rows: Tensor) -> float:
    head.eval()
    agree = []
    for i in range(0, len(rows), 128):
        r = rows[i : i + 128]
        pred = head(data["latent"][r]).argmax(1)
        agree.append((pred == data["logits"][data["crop"][r]].argmax(1)).float())
    return float(torch.cat(agree).mean()) if agree else float("nan")


#: recipe entries that fix an adapter's weights' shapes and meaning: an ``init`` must share them
_SHAPE_KEYS = ("judge", "codec", "stride", "width", "depth", "expansion")


def _check_init(path: str | Path, recipe: dict[str, Any]) -> str:
    """The recipe digest of the adapter checkpoint at ``path``, after checking (from its metadata
    alone, before any data is built) that it is an adapter of the same judge, codec and shape."""
    meta = adapter_metadata(path)
    differ = [k for k in _SHAPE_KEYS if meta["recipe"].get(k) != recipe[k]]
    if differ:
        raise ValueError(f"--init {path} is an adapter of another kind: its "
                         + ", ".join(f"{k} is {meta['recipe'].get(k)!r}, not {recipe[k]!r}" for k in differ))
    return str(meta["recipe_digest"])


def train_adapter(config: AdapterConfig, out: str | Path, epochs: int = 8, batch_size: int = 32,
                  lr: float = 3e-3, weight_decay: float = 1e-2, kl_weight: float = 0.0,
                  tune_tail: bool = False, judge_weights: str | None = None, init: str | Path | None = None,
                  progress: bool = True) -> AdapterResult:
    """Distil ``config.judge``'s front into a latent adapter for ``config.codec``; saves
    ``out/latent-adapter.safetensors`` (the last epoch) and its history. Resumes a killed run
    from its last finished epoch; the distillation data are cached in ``out``.

    ``init``: an adapter checkpoint of the same judge, codec and shape to start from (a second
    stage, e.g. with the KL term); its recipe digest becomes part of this run's recipe."""
    if config.teacher not in TEACHERS:  # before minutes of coding
        raise ValueError(f"teacher must be one of {', '.join(TEACHERS)}, not {config.teacher!r}")
    init_digest = _check_init(init, asdict(config)) if init is not None else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    judge = create_judge(config.judge, judge_weights)
    codec = mlcodec.create_codec(config.codec)
    if codec.config.kind != "learned":
        raise ValueError(f"{config.codec} writes pixels, not latents: an adapter needs a learned codec")
    data = load_or_build_data(config, judge, codec, out / f"{HEAD_NAME}.data.safetensors", progress)
    val_rows = torch.nonzero(data["val"][data["crop"]]).flatten()
    train_rows = torch.nonzero(~data["val"][data["crop"]]).flatten()
    feats = data["features"]
    torch.manual_seed(config.seed)
    stages = int(math.log2(LATENT_STRIDE // config.stride))
    synthesis = synthesis_prefix(codec.synthesis_transform(0.5), stages) if stages else None
    head = build_head(judge, data["latent"].shape[1], asdict(config), synthesis, tune_tail)
    decoded = config.teacher == "decoded"
    target_feats = data["decoded_features"] if decoded else feats
    head.adapter.set_feature_statistics(feats[~data["val"]])
    if init is not None:  # the tail too, where the first stage fine-tuned it
        head.load_state_dict(load_adapter(init, judge)[0].state_dict())
    scale = head.adapter.feature_scale
    ref = data["logits"][data["crop"][val_rows]].argmax(1)
    val_decoded = float((data["decoded_logits"][val_rows].argmax(1) == ref).float().mean())
    opt = torch.optim.AdamW([p for p in head.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(train_rows) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps + 1, pct_start=0.1)
    run = {**asdict(config), "epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
           "kl_weight": kl_weight, "tune_tail": tune_tail, **({"init": init_digest} if init_digest else {})}
    run = json.loads(json.dumps(run))  # tuples as lists, as a checkpoint reads them back
    result = AdapterResult(str(out / f"{HEAD_NAME}.safetensors"), run)
    gen = torch.Generator().manual_seed(config.seed)
    resume, start = out / f"{HEAD_NAME}.resume.pt", 1
    state = resume_run(resume, run)
    if state is not None:
        head.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        result.history = [AdapterEpoch(**r) for r in state["history"]]
        start = int(state["epoch"]) + 1
    for epoch in range(start, epochs + 1):
        head.train()
        t0, sums, n = time.perf_counter(), torch.zeros(3), 0
        order = train_rows[torch.randperm(len(train_rows), generator=gen)]
        bar = tqdm(range(0, len(order), batch_size), desc=f"{HEAD_NAME} epoch {epoch}/{epochs}",
                   unit="batch", disable=not progress)
        for i in bar:
            r = order[i : i + batch_size]
            c = data["crop"][r]
            y, f = data["latent"][r], target_feats[r if decoded else c]
            logits = data["decoded_logits"][r] if decoded else data["logits"][c]
            # no mirroring: decode + judge of a mirrored latent is not the mirrored features (the
            # codec's kernels are not symmetric), and such targets kept the loss up in a probe
            loss, feat, kl = distillation_loss(head, y, f, logits, scale, kl_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched.last_epoch < sched.total_steps - 1:
                sched.step()
            sums += torch.tensor([loss.item(), feat.item(), kl.item()])
            n += 1
            bar.set_postfix(loss=f"{sums[0] / n:.3f}")
        rec = AdapterEpoch(epoch, time.perf_counter() - t0, *(sums / max(n, 1)).tolist(),
                           _val_agreement(head, data, val_rows), val_decoded)
        result.history.append(rec)
        if progress:
            tqdm.write(f"{HEAD_NAME} epoch {epoch}: {rec.seconds:.0f}s loss {rec.loss:.4f} "
                       f"(features {rec.feature:.4f}, KL {rec.kl:.4f}), held-back agreement {rec.val_agree:.4f} "
                       f"(decode + judge {rec.val_decoded_agree:.4f})")
        if epoch < epochs:
            save_checkpoint({"run": run, "epoch": epoch, "history": [asdict(h) for h in result.history],
                             "model": head.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                             "gen": gen.get_state()}, resume)
    meta = {"judge": config.judge, "judge_weights": judge_weights, "codec": config.codec,
            "fingerprints": sorted({codec.fingerprint(q).hex() for q in (0.0, 0.5, 1.0)}),
            "in_channels": int(data["latent"].shape[1]), "synthesis_channels": head.adapter.synthesis_channels,
            "synthesis_stages": head.adapter.synthesis_stages,
            "tune_tail": tune_tail, "recipe": run,
            "recipe_digest": _digest(run), "history": [asdict(h) for h in result.history]}
    save_adapter(head, result.checkpoint, meta)
    (out / f"{HEAD_NAME}.history.json").write_text(json.dumps(asdict(result), indent=1))
    resume.unlink(missing_ok=True)
    return result
