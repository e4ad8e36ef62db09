"""Label-free machine fidelity: how far a codec moves a pretrained judge from its own predictions
(``mlcodec eval --judge``).

Each photo is compressed at each quality (bpp from the real bytes), decoded, and shown to the
judge. Against the judge's prediction on the original, per image:

* ``agree``: top-1 agreement (1 or 0), on all images and on ``confident`` ones (the judge's
  top probability on the original at least the threshold; on unsure images any change flips
  the answer, so their agreement measures noise more than the codec);
* ``top5``: overlap of the two top-5 sets, in [0, 1];
* ``kl``: KL(p_original || p_decoded) in nats;
* ``accuracy`` against labels, when labels are given.

BD-rates compare the agreement curves against a reference codec (WebP by default) with a paired
bootstrap over images (:func:`mlcodec.metrics.bootstrap_bd_rate`): a single BD-rate on a flat
curve has misled before, an interval says how far to trust it.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

import mlcodec
from mlcodec.metrics import bootstrap_bd_rate, bpp

from .judges import Judge

log = logging.getLogger(__name__)

#: per-image measures that have a BD-rate (higher is better)
BD_METRICS = ("agree", "agree_confident", "top5")


def agreement(ref_logits: torch.Tensor, test_logits: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-image top-1 agreement, top-5 overlap and KL(p_ref || p_test) between two ``(N, C)``
    logit tensors of the same images."""
    if ref_logits.shape != test_logits.shape:
        raise ValueError(f"logits differ in shape: {tuple(ref_logits.shape)} vs {tuple(test_logits.shape)}")
    agree = (ref_logits.argmax(1) == test_logits.argmax(1)).double()
    k = min(5, ref_logits.shape[1])
    r5, t5 = ref_logits.topk(k, 1).indices, test_logits.topk(k, 1).indices
    top5 = (r5[:, :, None] == t5[:, None, :]).any(2).double().mean(1)
    log_p, log_q = ref_logits.double().log_softmax(1), test_logits.double().log_softmax(1)
    kl = (log_p.exp() * (log_p - log_q)).sum(1).clamp_min(0.0)
    return {"agree": agree.numpy(), "top5": top5.numpy(), "kl": kl.numpy()}


def confident_subset(confidence: Sequence[float], photos: Sequence[str], keep: int = 0,
                     min_confidence: float = 0.0, max_per_photo: int = 0) -> list[int]:
    """Indexes (ascending) of the crops the judge is surest of: at most ``keep`` of them (0: all),
    each with ``confidence`` at least ``min_confidence``, at most ``max_per_photo`` from any one
    of ``photos`` (0: no cap; crops of one photo are not independent, and without a cap a photo
    full of one sure class can fill the set). Ties keep the crops' order."""
    if len(confidence) != len(photos):
        raise ValueError(f"{len(confidence)} confidences for {len(photos)} photos")
    taken: dict[str, int] = {}
    out: list[int] = []
    for i in sorted(range(len(confidence)), key=lambda i: -confidence[i]):
        if (keep and len(out) == keep) or confidence[i] < min_confidence:
            break
        if max_per_photo and taken.get(photos[i], 0) >= max_per_photo:
            continue
        taken[photos[i]] = taken.get(photos[i], 0) + 1
        out.append(i)
    return sorted(out)


def read_labels(path: str | Path, names: Sequence[str]) -> np.ndarray:
    """Class indexes for ``names`` from a CSV (``file,label``) or JSON (``{file: label}``) file,
    keyed by file name or stem."""
    path = Path(path)
    if path.suffix == ".json":
        table = {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
    else:
        with open(path, newline="") as f:
            table = {row[0]: int(row[1]) for row in csv.reader(f) if row and not row[0].startswith("#")
                     and row[1].strip().lstrip("-").isdigit()}
    missing = [n for n in names if n not in table and Path(n).stem not in table]
    if missing:
        raise ValueError(f"{path} has no label for {len(missing)} image(s), e.g. {missing[0]!r}: "
                         "give one line 'file,class_index' per image")
    return np.array([table.get(n, table.get(Path(n).stem)) for n in names])


def evaluate_judge(judge: Judge, images: Sequence[Image.Image], codecs: Sequence[str],
                   qualities: Sequence[float], labels: np.ndarray | None = None,
                   confident: float = 0.5, names: Sequence[str] = (), batch_size: int = 32,
                   progress: bool = True, adapters: Mapping[str, tuple[Any, dict]] | None = None) -> dict[str, Any]:
    """Rows ``{codec, quality, bpp, agree, agree_confident, top5, kl[, accuracy]}`` (means) and,
    under ``per_image``, every image's measures for the bootstrap.

    A codec given as ``LABEL=NAME`` (``F=mlcodec-hyperprior:runs/F/weights.safetensors``) is
    built from ``NAME`` and reported as ``LABEL``.

    ``adapters`` maps a learned codec's name to a latent adapter of this judge (``(head, meta)``
    from :func:`mlcodec.tasks.adapter.load_adapter`): its rows, ``CODEC+adapter``, read the same
    streams' latents instead of the decoded images."""
    images = [im.convert("RGB") for im in images]
    ref = judge.logits(images, batch_size)
    p_ref = ref.softmax(1)
    confidence = p_ref.max(1).values.numpy()
    mask = confidence >= confident
    result: dict[str, Any] = {
        "judge": judge.name, "images": len(images), "names": list(names), "confident_threshold": confident,
        "confident_images": int(mask.sum()), "confidence": confidence.tolist(),
        "prediction": ref.argmax(1).tolist(), "rows": [], "per_image": {}, "skipped": {},
    }
    if labels is not None:
        result["uncompressed_accuracy"] = float((ref.argmax(1).numpy() == labels).mean())
    specs = dict(c.split("=", 1) if "=" in c else (c, c) for c in codecs)  # label -> codec name
    jobs = [(c, q) for c in specs for q in qualities]
    made: dict[str, mlcodec.Codec] = {}  # one codec per name, for all its qualities
    bar = tqdm(jobs, desc=f"judge {judge.name}", unit="point", disable=not progress)
    for name, q in bar:
        if name in result["skipped"]:
            continue
        bar.set_postfix(codec=name, quality=q)
        try:
            if name not in made:
                made[name] = mlcodec.create_codec(specs[name])
        except RuntimeError as e:  # e.g. pretrained weights that need a download
            result["skipped"][name] = str(e).splitlines()[0]
            log.warning("skipping %s: %s", name, result["skipped"][name])
            continue
        datas: list[bytes] = []
        decoded: list[Image.Image] = []
        for i in range(0, len(images), batch_size):
            part = made[name].compress_batch(images[i : i + batch_size], quality=q)
            datas += part
            decoded += made[name].decompress_batch(part)
        rates = np.array([bpp(len(d), im) for d, im in zip(datas, images)])
        outputs = [(name, judge.logits(decoded, batch_size))]
        if adapters and name in adapters:
            from .adapter import adapter_logits, check_codec

            head, meta = adapters[name]
            check_codec(meta, made[name], q)
            outputs.append((f"{name}+adapter", adapter_logits(head, made[name], datas, batch_size)))
        for row_name, test in outputs:
            scores = agreement(ref, test)
            row: dict[str, Any] = {
                "codec": row_name, "quality": q, "bpp": float(rates.mean()),
                "agree": float(scores["agree"].mean()),
                "agree_confident": float(scores["agree"][mask].mean()) if mask.any() else None,
                "top5": float(scores["top5"].mean()), "kl": float(scores["kl"].mean())}
            if labels is not None:
                row["accuracy"] = float((test.argmax(1).numpy() == labels).mean())
            result["rows"].append(row)
            result["per_image"][f"{row_name}@{q:g}"] = {"bpp": rates.tolist(),
                                                        **{k: v.tolist() for k, v in scores.items()}}
    if labels is not None:
        result["labels"] = labels.tolist()
    return result


def judge_bd_rates(result: dict[str, Any], ref_codec: str, resamples: int = 1000,
                   seed: int = 0) -> dict[str, dict[str, Any]]:
    """``{codec: {metric: {bd_rate, ci, metric_range, bpp_range, ref_bpp_range, resamples,
    no_overlap} or {error}}}`` against ``ref_codec``, paired over the same images."""
    by_codec: dict[str, list[dict[str, Any]]] = {}
    for r in result["rows"]:
        by_codec.setdefault(r["codec"], []).append(r)
    if ref_codec not in by_codec:
        raise ValueError(f"the reference codec {ref_codec!r} was not evaluated; add it to --codecs")
    mask = np.asarray(result["confidence"]) >= result["confident_threshold"]

    def arrays(codec: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
        per = [result["per_image"][f"{codec}@{r['quality']:g}"] for r in by_codec[codec]]
        rate = np.array([p["bpp"] for p in per])
        value = np.array([p["agree" if metric == "agree_confident" else metric] for p in per])
        return (rate[:, mask], value[:, mask]) if metric == "agree_confident" else (rate, value)

    out: dict[str, dict[str, Any]] = {}
    for codec in by_codec:
        if codec == ref_codec:
            continue
        out[codec] = {}
        for metric in BD_METRICS:
            if metric == "agree_confident" and mask.sum() < 2:
                out[codec][metric] = {"error": "fewer than 2 confident images"}
                continue
            try:
                b = bootstrap_bd_rate(*arrays(ref_codec, metric), *arrays(codec, metric),
                                      resamples=resamples, seed=seed)
            except ValueError as e:
                out[codec][metric] = {"error": str(e)}
                continue
            out[codec][metric] = {"bd_rate": b.span.value, "ci": list(b.ci),
                                  "metric_range": list(b.span.metric_range),
                                  "bpp_range": list(b.span.rate_test), "ref_bpp_range": list(b.span.rate_ref),
                                  "resamples": b.resamples, "no_overlap": b.no_overlap}
    return out


def paired_gaps(result: dict[str, Any], test: str, ref: str, resamples: int = 1000,
                seed: int = 0) -> list[dict[str, Any]]:
    """Per quality, ``test``'s agreement minus ``ref``'s on the same images (e.g. an adapter's
    against decode + judge of the same streams): the mean gap and its paired 95% bootstrap
    interval over images, on all images and on the confident ones."""
    mask = np.asarray(result["confidence"]) >= result["confident_threshold"]
    rng = np.random.default_rng(seed)
    out = []
    for r in result["rows"]:
        if r["codec"] != test:
            continue
        key = f"{{}}@{r['quality']:g}"
        diff = np.asarray(result["per_image"][key.format(test)]["agree"]) - \
            np.asarray(result["per_image"][key.format(ref)]["agree"])
        row: dict[str, Any] = {"quality": r["quality"], "bpp": r["bpp"], "images": int(len(diff))}
        for label, d in (("all", diff), ("confident", diff[mask])):
            if len(d) == 0:
                row[label] = None
                continue
            means = d[rng.integers(0, len(d), (resamples, len(d)))].mean(1)
            row[label] = {"gap": float(d.mean()), "ci": [float(np.percentile(means, 2.5)),
                                                         float(np.percentile(means, 97.5))]}
        out.append(row)
    return out


def write_judge_report(result: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """``judge_<name>.csv`` (one row per point), ``.json`` (everything, per-image measures
    included, so the bootstrap can be rerun) and ``.png`` (agreement vs bpp)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"judge_{result['judge'].replace(':', '_').replace('/', '_')}"
    keys = ["codec", "quality", "bpp", "agree", "agree_confident", "top5", "kl"]
    keys += sorted({k for r in result["rows"] for k in r} - set(keys))
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(result["rows"])
    stem.with_suffix(".json").write_text(json.dumps(result))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    by_codec: dict[str, list[dict[str, Any]]] = {}
    for r in result["rows"]:
        by_codec.setdefault(r["codec"], []).append(r)
    for ax, metric in zip(axes, ("agree", "agree_confident")):
        for name, pts in by_codec.items():
            pts = sorted(pts, key=lambda r: r["bpp"])
            if pts[0][metric] is not None:
                ax.plot([p["bpp"] for p in pts], [p[metric] for p in pts], "o-", ms=4, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("bits per pixel (log)")
        ax.set_ylabel(f"top-1 agreement ({'confident' if metric != 'agree' else 'all'} images)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(f"{result['judge']}: agreement with its prediction on the original")
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=110)
    plt.close(fig)
    return {"csv": stem.with_suffix(".csv"), "json": stem.with_suffix(".json"), "png": stem.with_suffix(".png")}
