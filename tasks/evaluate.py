"""Task accuracy against bitrate (``mlcodec eval``).

For each codec and quality, the validation images are compressed (bpp from the real bytes), then

* ``latent`` rows: the latent head reads the decoded latent (learned codec the head was trained
  on; no synthesis transform),
* ``pixel`` rows: the pixel reference reads the decoded image ("decode, then the usual model"),

and one ``uncompressed`` row gives the pixel reference's ceiling. BD-rate (Bjøntegaard, metric vs
log-rate) of every curve is reported against the JPEG + pixel-reference curve.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

import mlcodec
from mlcodec.data.sources import Source
from mlcodec.integrations.latent_loader import pad_stack
from mlcodec.metrics import bd_rate, bpp

from .data import TaskSpec, image_to_tensor, task_targets
from .metrics import PRIMARY, TaskMetric
from .train import load_head, predict

log = logging.getLogger(__name__)


class PixelModel:
    """A pixel reference behind one interface: our heads (normalised tensors) or YOLO."""

    def __init__(self, path: str | Path) -> None:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            head = json.loads((f.metadata() or {}).get("head", "null"))
        if head == "pixel-det":
            from .yolo import YoloDetector

            self.yolo: Any = YoloDetector(path)
            self.name, self.model = "pixel-det", None
        else:
            self.yolo = None
            self.model, self.spec, meta = load_head(path)
            self.name = meta["head"]

    def predict(self, task: str, images: Sequence[Image.Image], sizes: torch.Tensor) -> Any:
        if self.yolo is not None:
            return self.yolo.predict_images(images)
        return predict(self.model, task, pad_stack([image_to_tensor(im) for im in images]), sizes)


HeadArg = Union[str, Path, tuple[str, Union[str, Path]]]


def load_latent_heads(latent_head: HeadArg | Sequence[HeadArg] | None, task: str,
                      label_key: str = "label", class_names: Sequence[str] | None = None,
                      ) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Latent heads by the codec they read: ``PATH`` (the codec its checkpoint names) or
    ``(CODEC, PATH)``, alone or in a list. Codec names are canonical (``NAME:/absolute/path``).
    With ``class_names``, each head must predict exactly those classes."""
    from mlcodec.registry import codec_config

    if latent_head is None:
        return {}
    items = [latent_head] if isinstance(latent_head, (str, Path, tuple)) else list(latent_head)
    out: dict[str, tuple[Any, dict[str, Any]]] = {}
    for item in items:
        codec, path = item if isinstance(item, tuple) else (None, item)
        head, spec, meta = load_head(path)
        if spec.task != task or spec.label_key != label_key:
            raise ValueError(f"{path} is a {spec.task} head on {spec.label_key!r}, not {task} on "
                             f"{label_key!r}")
        if class_names is not None and tuple(spec.class_names) != tuple(class_names):
            raise ValueError(f"{path} predicts the classes {list(spec.class_names)}, but the data names "
                             f"{list(class_names)}: labels are class indexes, so they must match (an "
                             "ImageFolder split needs a folder for every class, empty or not)")
        codec = codec or meta.get("codec")
        if not codec:
            raise ValueError(f"{path} names no codec; give it as CODEC={path}")
        name = codec_config(codec).name
        if name in out:
            raise ValueError(f"two latent heads for {name}: give one per codec")
        out[name] = (head, meta)
    return out


def _batches(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def evaluate_codecs(
    task: str,
    source: Source,
    spec: TaskSpec,
    codecs: Sequence[str],
    qualities: Sequence[float],
    latent_head: HeadArg | Sequence[HeadArg] | None = None,
    pixel_reference: str | Path | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """Rows ``{codec, quality, bpp, domain, model, <metrics>}`` plus BD-rates and the ceiling.

    ``latent_head``: one head or several, each applied to the learned codec it was trained on
    (see :func:`load_latent_heads`), so several learned codecs compare in one run."""
    if latent_head is None and pixel_reference is None:
        raise ValueError("give a latent head, a pixel reference, or both")
    from mlcodec.registry import codec_config

    heads = load_latent_heads(latent_head, task, spec.label_key, spec.class_names)
    ref = PixelModel(pixel_reference) if pixel_reference is not None else None
    ref_spec = getattr(ref, "spec", None)
    if ref_spec is not None and (ref_spec.task, ref_spec.label_key) != (task, spec.label_key):
        raise ValueError(f"{pixel_reference} is a {ref_spec.task} reference on {ref_spec.label_key!r}, "
                         f"not {task} on {spec.label_key!r}")
    if ref_spec is not None and tuple(ref_spec.class_names) != tuple(spec.class_names):
        raise ValueError(f"{pixel_reference} predicts the classes {list(ref_spec.class_names)}, but the "
                         f"data names {list(spec.class_names)}: labels are class indexes, so they must match")
    samples = [source[i] for i in range(len(source))]
    images = [s.image if isinstance(s.image, Image.Image) else Image.fromarray(np.asarray(s.image))
              for s in samples]
    sizes = torch.tensor([[im.height, im.width] for im in images])
    targets = [s.target for s in samples]
    batches = _batches(len(images), batch_size)

    def score(predict_fn, decoded: Sequence[Any]) -> dict[str, float]:
        metric = TaskMetric(task, spec.num_outputs)
        for r in batches:
            metric.update(predict_fn([decoded[i] for i in r], sizes[r.start : r.stop]),
                          task_targets([targets[i] for i in r], spec, sizes[r.start : r.stop]))
        return metric.compute()

    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    if ref is not None:
        rows.append({"codec": "uncompressed", "quality": None, "bpp": 24.0, "domain": "pixel",
                     "model": ref.name, **score(lambda ims, sz: ref.predict(task, ims, sz), images)})
    jobs = [(c, q) for c in codecs for q in qualities]
    made: dict[str, mlcodec.Codec] = {}  # one codec per name, for all its qualities
    bar = tqdm(jobs, desc=f"eval {task}", unit="point", disable=not progress)
    for name, q in bar:
        if name in skipped:
            continue
        bar.set_postfix(codec=name, quality=q)
        try:
            if name not in made:
                made[name] = mlcodec.create_codec(name)
            codec = made[name]
            datas = [d for r in batches for d in codec.compress_batch([images[i] for i in r], quality=q)]
        except RuntimeError as e:  # e.g. pretrained weights that need a download
            skipped[name] = str(e).splitlines()[0]
            log.warning("skipping %s: %s", name, skipped[name])
            continue
        rate = float(np.mean([bpp(len(d), im) for d, im in zip(datas, images)]))
        latents: list[torch.Tensor] | None = None
        head, head_meta = heads.get(codec_config(name).name, (None, None))
        if head is not None and head_meta is not None:
            fp = codec.fingerprint(q).hex()  # type: ignore[attr-defined]
            accepted = {f.hex() for f in codec.fingerprints(q)}  # type: ignore[attr-defined]
            if head_meta.get("fingerprint") not in (None, *accepted):
                raise ValueError(f"the {name} head was trained on latents of weights "
                                 f"{head_meta['fingerprint']}, but {name} now has weights {fp}; "
                                 f"retrain the head on shards written with these weights")
            latents = [y for r in batches for y in codec.decode_latents([datas[i] for i in r])]
            rows.append({"codec": name, "quality": q, "bpp": rate, "domain": "latent",
                         "model": head_meta["head"],
                         **score(lambda ys, sz: predict(head, task, pad_stack(ys), sz), latents)})
        if ref is not None:
            if latents is not None:  # entropy-decoded already: run the synthesis only
                decoded = [im for r in batches for im in codec.synthesize(  # type: ignore[attr-defined]
                    [latents[i] for i in r], [datas[i] for i in r])]
            else:
                decoded = [im for r in batches for im in codec.decompress_batch([datas[i] for i in r])]
            rows.append({"codec": name, "quality": q, "bpp": rate, "domain": "pixel", "model": ref.name,
                         **score(lambda ims, sz: ref.predict(task, ims, sz), decoded)})
    return {"task": task, "metric": PRIMARY[task], "rows": rows, "skipped": skipped,
            "bd_rate_vs_jpeg": bd_rates(rows, PRIMARY[task])}


def curves(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows grouped by ``codec/domain`` (the uncompressed ceiling left out), sorted by rate."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["codec"] != "uncompressed":
            out.setdefault(f"{r['codec']}/{r['domain']}", []).append(r)
    return {k: sorted(v, key=lambda r: r["bpp"]) for k, v in out.items()}


def bd_rates(rows: Sequence[dict[str, Any]], metric: str, ref: str = "jpeg/pixel") -> dict[str, float | None]:
    """BD-rate (%) of every curve against ``ref``; None where the curves' metric ranges do not
    overlap or a curve has fewer than 4 points (the cubic fit needs them)."""
    cs = curves(rows)
    if ref not in cs:
        return {}
    r = cs[ref]
    out: dict[str, float | None] = {}
    for name, pts in cs.items():
        if name == ref:
            continue
        try:
            out[name] = bd_rate([p["bpp"] for p in r], [p[metric] for p in r],
                                [p["bpp"] for p in pts], [p[metric] for p in pts])
        except ValueError as e:
            log.info("no BD-rate for %s: %s", name, e)  # reported as n/a, not an error
            out[name] = None
    return out


def write_report(result: dict[str, Any], out: str | Path, title: str = "") -> dict[str, Path]:
    """``eval_<task>.csv``, ``.json`` and ``.png`` (metric vs bpp, ceiling dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task, metric, rows = result["task"], result["metric"], result["rows"]
    stem = out / f"eval_{task}"
    keys = ["codec", "quality", "bpp", "domain", "model"]
    keys += sorted({k for r in rows for k in r} - set(keys))
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, pts in curves(rows).items():
        style = "o-" if name.endswith("/latent") else "s--"
        ax.plot([p["bpp"] for p in pts], [p[metric] for p in pts], style, ms=4, label=name)
    for r in rows:
        if r["codec"] == "uncompressed":
            ax.axhline(r[metric], color="k", lw=1, ls=":", label=f"uncompressed ({r['model']})")
    ax.set_xscale("log")
    ax.set_xlabel("bits per pixel (log)")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{task}: {metric} vs bitrate")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=110)
    plt.close(fig)
    return {"csv": stem.with_suffix(".csv"), "json": stem.with_suffix(".json"), "png": stem.with_suffix(".png")}
