"""Training objectives that plug into the one codec training loop (:func:`mlcodec.train.train`).

The loop always optimises rate + lambda * distortion on photo crops (people get their images).
An objective adds terms of its own each step: task losses, feature alignment, a denoiser. It
lives outside the core (``mlcodec.tasks`` registers its objectives under the entry-point group
``mlcodec.objectives``), so the core never imports task code.

An objective is an ``nn.Module``: its parameters (heads, adapters, a memory bank...) are trained
by their own AdamW at ``lr``/``weight_decay``, saved in the loop's checkpoint and **never**
exported: the shipped weights hold the codec only, so decoding costs the same.
"""

from __future__ import annotations

import argparse
from importlib.metadata import entry_points
from typing import Any, Protocol

import torch
from torch import Tensor, nn

ENTRY_POINT_GROUP = "mlcodec.objectives"


class CodecObjective(nn.Module):
    """Base class of training objectives. Subclasses implement :meth:`setup` and :meth:`loss`."""

    name = "objective"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    #: the codec's learning rate when ``train-codec`` is given none: an objective fine-tunes
    codec_lr: float = 1e-4

    def prepare(self) -> None:
        """Load data before the loop builds the codec (e.g. in forked processes, before any CUDA
        context exists)."""

    def setup(self, model: nn.Module, device: str) -> None:
        """Build the training-only modules for ``model`` (called once, after the codec is built
        and before a checkpoint is resumed) and move them to ``device``."""

    def loss(self, model: nn.Module, gen: torch.Generator,
             lambdas: tuple[float, ...]) -> tuple[Tensor, dict[str, Tensor]]:
        """The objective's total loss for one step (added to the photo rate-distortion loss) and
        its named terms for the log. Random draws come from ``gen`` (seeded by the loop)."""
        raise NotImplementedError

    def metadata(self) -> dict[str, Any]:
        """What the exported weights record of this objective (JSON-able)."""
        return {"objective": self.name}


class ObjectivePlugin(Protocol):
    """What an ``mlcodec.objectives`` entry point loads: command-line options and a factory."""

    help: str

    def add_arguments(self, group: argparse._ArgumentGroup) -> None: ...

    def from_args(self, args: argparse.Namespace) -> CodecObjective: ...


def objective_plugins() -> dict[str, Any]:
    """Installed objectives by name (entry points, not yet loaded)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
