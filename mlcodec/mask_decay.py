"""Mask decay for the hyper-synthesis: a narrower ``h_s`` derived from a trained one, in training.

Wang, Li, Li and Lu, "EVC: Towards Real-Time Neural Image Compression with Mask Decay" (ICLR 2023)
shrink a trained codec by multiplying channels with masks that decay to zero while the whole
model keeps training, so the channels that stay learn to carry what the others carried; a
sparsity term first concentrates the information. Their training code is not public; this is our
reading of it for the one part of mlcodec whose width a latent loader pays for, the two hidden
layers of ``h_s`` (``mlcodec.models.gained_hyperprior.hyper_synthesis_layers``)::

    z ─deconv0─► leaky ─×m0─► ─deconv1─► leaky ─×m1─► ─conv2─► (scales, means)

Over training progress ``p`` in [0, 1] (the training loop's :class:`mlcodec.train.Budget`):

1. ``p < select``: every mask is 1 and :meth:`HyperMaskDecay.penalty` adds the sparsity term, the
   ratio ``||g||_1 / ||g||_2`` of each layer's channel gains ``g_c = ||W_in[c]|| * ||W_out[c]||``
   (the norms of the weights into and out of channel ``c``). The ratio is Hoyer's sparsity
   measure; it is scale-invariant, where L1 or L2 on the weights would only shrink them (EVC also
   replaces plain L1/L2). The product is invariant to moving a positive factor across the
   LeakyReLU, which is positively homogeneous.
2. ``p = select``: in each layer the channels with the smallest importance
   ``std(a_c) * ||W_out[c]||`` (the activation's standard deviation, from running averages over
   the batches seen, times the weights that read it) are chosen for removal, enough to leave
   ``widths``. The deviation, not the mean magnitude: a LeakyReLU channel far below zero is a
   large constant, which the layers around it absorb as the mask decays.
3. ``select <= p < end``: their masks fall linearly from 1 to 0 while everything keeps training.
4. ``p >= end``: they are zero; the rest of training tunes the narrow network it has become, and
   :meth:`HyperMaskDecay.prune` removes them (exactly: a zero channel contributes nothing).

The masks are forward hooks on the two LeakyReLUs, not modules in ``h_s``, so the state-dict
names of ``h_s`` stay those of the architecture every weights file uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

#: the ``h_s`` indices of the two hidden layers and of the layers that read them
_LAYERS = ((0, 2), (2, 4))


@dataclass(frozen=True)
class MaskDecaySchedule:
    """What to keep and when: ``widths`` channels in the two hidden layers; channels chosen at
    progress ``select``, masked out by ``end``; ``sparsity`` weighs the term before ``select``."""

    widths: tuple[int, int]
    select: float = 0.2
    end: float = 0.6
    sparsity: float = 0.01

    def __post_init__(self) -> None:
        if len(self.widths) != 2 or min(self.widths) < 1:
            raise ValueError(f"mask decay needs two positive hidden widths, got {self.widths}")
        if not 0.0 <= self.select < self.end <= 1.0:
            raise ValueError(f"mask decay needs 0 <= select < end <= 1, got {self.select}, {self.end}")


def _in_norms(layer: nn.Module) -> Tensor:
    """Per output channel, the norm of the weights (and bias) that compute it."""
    w = layer.weight  # ConvTranspose2d: (in, out, k, k)
    return (w.pow(2).sum((0, 2, 3)) + layer.bias.pow(2)).sqrt()


def _out_norms(layer: nn.Module) -> Tensor:
    """Per input channel, the norm of the weights that read it."""
    w = layer.weight
    dims = (1, 2, 3) if isinstance(layer, nn.ConvTranspose2d) else (0, 2, 3)
    return w.pow(2).sum(dims).sqrt()


class HyperMaskDecay:
    """Channel masks on ``h_s``'s two hidden layers, decayed to ``schedule.widths`` channels.

    Call :meth:`update` with the training progress before each step, add :meth:`penalty` to the
    loss, and call :meth:`prune` once training is over. :meth:`state_dict` / :meth:`load_state_dict`
    carry the masks through a checkpoint.
    """

    def __init__(self, h_s: nn.Sequential, schedule: MaskDecaySchedule) -> None:
        widths = tuple(h_s[i].out_channels for i, _ in _LAYERS)
        if any(k > w for k, w in zip(schedule.widths, widths)):
            raise ValueError(f"mask decay to {schedule.widths} channels: h_s has only {widths}")
        self.h_s, self.schedule = h_s, schedule
        device = h_s[0].weight.device
        self.masks = [torch.ones(w, device=device) for w in widths]
        # running first and second moments of each hidden channel's activation
        # (bias-free: the first batch sets them, later ones enter with weight 1/n down to 1/20)
        self.moments = [torch.zeros(2, w, device=device) for w in widths]
        self.batches = [0 for _ in widths]
        self.removed: list[Tensor] | None = None  # per layer, the channels chosen for removal
        self.progress = 0.0
        self._hooks = [h_s[i + 1].register_forward_hook(self._hook(k)) for k, (i, _) in enumerate(_LAYERS)]

    def _hook(self, k: int):
        def apply(module: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> Tensor:
            if module.training:
                with torch.no_grad():
                    a = out.detach().float()
                    batch = torch.stack([a.mean((0, 2, 3)), a.pow(2).mean((0, 2, 3))])
                    self.batches[k] += 1
                    self.moments[k].lerp_(batch, max(0.05, 1.0 / self.batches[k]))
            return out * self.masks[k].to(out.dtype).view(1, -1, 1, 1)
        return apply

    def update(self, progress: float) -> None:
        """Set the masks for training progress ``progress`` (choosing the channels at ``select``)."""
        s = self.schedule
        self.progress = progress
        if progress < s.select:
            return
        if self.removed is None:
            self.removed = [self._least_important(k, w) for k, w in enumerate(s.widths)]
        level = max(0.0, 1.0 - (progress - s.select) / (s.end - s.select))
        for mask, removed in zip(self.masks, self.removed):
            mask[removed] = level

    @torch.no_grad()
    def _least_important(self, k: int, keep: int) -> Tensor:
        reader = self.h_s[_LAYERS[k][1]]
        mean, square = self.moments[k]
        importance = (square - mean.pow(2)).clamp_min(0).sqrt() * _out_norms(reader).float()
        return importance.argsort()[: importance.numel() - keep].sort().values

    def penalty(self) -> Tensor:
        """The sparsity term (Hoyer's ``||g||_1 / ||g||_2`` per layer), weighted; zero once the
        channels are chosen."""
        if self.removed is not None or self.progress >= self.schedule.select:
            return torch.zeros((), device=self.masks[0].device)
        terms = []
        for i, j in _LAYERS:
            g = _in_norms(self.h_s[i]) * _out_norms(self.h_s[j])
            terms.append(g.sum() / g.pow(2).sum().sqrt().clamp_min(1e-12) / g.numel() ** 0.5)
        return self.schedule.sparsity * torch.stack(terms).sum()

    @torch.no_grad()
    def prune(self) -> tuple[int, int]:
        """Remove the masked-out channels from ``h_s`` in place (the kept ones' masks folded into
        the weights that read them) and the hooks; returns the new hidden widths."""
        if self.removed is None or any(bool(m[r].any()) for m, r in zip(self.masks, self.removed)):
            raise RuntimeError("mask decay has not finished: prune after training progress reaches "
                               f"{self.schedule.end} (now {self.progress:.3f})")
        for hook in self._hooks:
            hook.remove()
        for (i, j), mask in zip(_LAYERS, self.masks):
            keep = mask.nonzero().flatten()
            self.h_s[i] = _sliced(self.h_s[i], out_idx=keep)
            self.h_s[j] = _sliced(self.h_s[j], in_idx=keep, in_scale=mask[keep])
        return tuple(self.h_s[i].out_channels for i, _ in _LAYERS)  # type: ignore[return-value]

    def state_dict(self) -> dict[str, Tensor]:
        state = {f"mask{k}": m for k, m in enumerate(self.masks)}
        state.update({f"moments{k}": a for k, a in enumerate(self.moments)})
        state["batches"] = torch.tensor(self.batches)
        if self.removed is not None:
            state.update({f"removed{k}": r for k, r in enumerate(self.removed)})
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for k in range(len(self.masks)):
            self.masks[k].copy_(state[f"mask{k}"])
            self.moments[k].copy_(state[f"moments{k}"])
        self.batches = [int(n) for n in state["batches"]]
        if "removed0" in state:
            self.removed = [state[f"removed{k}"].to(self.masks[k].device) for k in range(len(self.masks))]


def _sliced(layer: nn.Module, out_idx: Tensor | None = None, in_idx: Tensor | None = None,
            in_scale: Tensor | None = None) -> nn.Module:
    """A copy of a (transposed) convolution keeping the ``out_idx`` output and ``in_idx`` input
    channels, each kept input's weights multiplied by ``in_scale``."""
    w, b = layer.weight.detach(), layer.bias.detach()
    transposed = isinstance(layer, nn.ConvTranspose2d)
    in_dim, out_dim = (0, 1) if transposed else (1, 0)
    if out_idx is not None:
        w, b = w.index_select(out_dim, out_idx), b[out_idx]
    if in_idx is not None:
        w = w.index_select(in_dim, in_idx)
        if in_scale is not None:
            shape = [1, 1, 1, 1]
            shape[in_dim] = -1
            w = w * in_scale.view(shape)
    cls = nn.ConvTranspose2d if transposed else nn.Conv2d
    kwargs = dict(kernel_size=layer.kernel_size, stride=layer.stride, padding=layer.padding)
    if transposed:
        kwargs["output_padding"] = layer.output_padding
    new = cls(w.shape[in_dim], w.shape[out_dim], **kwargs).to(w.device, w.dtype)
    new.weight.copy_(w)
    new.bias.copy_(b)
    return new
