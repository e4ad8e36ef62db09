"""Weights as safetensors (never pickle) and the fingerprint written into every bitstream.

The quantized CDF tables built by CompressAI's ``update()`` are stored with the weights, so the
encoder and decoder use bit-identical tables on every machine instead of recomputing them in
floating point.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mlcodec.checkpoint import atomic_path

# Entropy-model buffers whose shapes are only known after update(): resized on load.
_ENTROPY_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


def fingerprint(model: nn.Module, extra: dict[str, torch.Tensor] | None = None) -> bytes:
    """First 8 bytes of a SHA-256 over every parameter and buffer (names, dtypes, shapes, data),
    and over the ``extra`` tensors stored beside them, if any."""
    h = hashlib.sha256()
    for name, t in sorted({**model.state_dict(), **(extra or {})}.items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.numel() else b"")
    return h.digest()[:8]


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, object],
                 extra: dict[str, torch.Tensor] | None = None) -> None:
    """Save all parameters and buffers to ``path`` with JSON-encoded ``metadata``; ``extra``
    tensors (e.g. the integer hyper-synthesis, ``exact.*``) are stored beside them."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({k: v.detach().cpu().contiguous() for k, v in (extra or {}).items()})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: json.dumps(v) for k, v in metadata.items()})


def read_metadata(path: str | Path) -> dict[str, object]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}


#: tensors stored beside a model's own: the integer hyper-synthesis (``mlcodec.models.exact_hyper``)
EXTRA_PREFIXES = ("exact.",)


def load_weights(model: nn.Module, path: str | Path,
                 extra_prefixes: tuple[str, ...] = EXTRA_PREFIXES) -> dict[str, torch.Tensor]:
    """Load safetensors weights into ``model``, resizing the entropy coder's table buffers; the
    tensors whose names start with one of ``extra_prefixes`` are returned instead."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No weights file at {path}")
    state = load_file(str(path))
    extra = {k: state.pop(k) for k in list(state) if k.startswith(extra_prefixes)}
    for name, tensor in state.items():
        module_name, _, buf = name.rpartition(".")
        if buf in _ENTROPY_BUFFERS:
            module = model.get_submodule(module_name)
            setattr(module, buf, torch.empty_like(tensor))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"Weights at {path} do not fit {type(model).__name__}: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    return extra
