"""Mean-scale hyperprior with gain units: one set of weights, a continuous bitrate knob.

Architecture: the mean-scale hyperprior of Minnen, Ballé and Toderici, "Joint Autoregressive and
Hierarchical Priors for Learned Image Compression" (NeurIPS 2018), without the autoregressive
context model (so entropy decoding is fully parallel per image), built from CompressAI's layers
and entropy models. Variable rate comes from the gain units of Cui et al., "Asymmetric Gained Deep
Image Compression With Continuous Rate Adaptation" (CVPR 2021): a learned per-channel gain vector
per quality level scales the latent before quantization, an inverse gain undoes it after, and
levels are interpolated in log space for any quality in [0, 1]::

    x ─g_a─► y ─×gain(q)─► y_g ─h_a─► z ─×hgain(q)─► Q ─×ihgain(q)─► h_s ─► (μ, σ)
                             │                     [EntropyBottleneck]        │
                             └──────────── Q(y_g − μ) + μ ◄── [GaussianConditional(σ)]
                                              │
                                       ×igain(q) = y_hat ─g_s─► x_hat

``y_hat`` (the dequantized latent in the quality-independent scale) is what task heads consume.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.layers import GDN
from compressai.models.utils import conv, deconv
from torch import Tensor, nn

# Gaussian scale table used to index the conditional CDFs (CompressAI's default range).
SCALE_TABLE = tuple(math.exp(v) for v in torch.linspace(math.log(0.11), math.log(256.0), 64).tolist())


#: MSE lambdas of CompressAI's quality levels 1..7 (its ``mbt2018-mean`` recipe), one per gain level
DEFAULT_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932)


class ForwardOutput(NamedTuple):
    x_hat: Tensor
    y_likelihoods: Tensor
    z_likelihoods: Tensor
    #: the dequantized latent in the quality-independent scale (``y_hat x igain``): what the codec
    #: decodes for task heads, here with straight-through rounding so task losses reach ``g_a``
    latent: Tensor


def hidden_widths(M: int, hidden: int | Sequence[int] = 0) -> tuple[int, int]:
    """The two hidden widths of ``h_s``: Minnen et al.'s ``M`` and ``3M/2`` (``hidden`` 0), one
    width for both, or a pair (what mask decay leaves, :mod:`mlcodec.mask_decay`)."""
    if isinstance(hidden, int):
        return (hidden, hidden) if hidden else (M, M * 3 // 2)
    h1, h2 = hidden
    return int(h1), int(h2)


def hyper_synthesis_layers(N: int, M: int, kernel: int = 3,
                           hidden: int | Sequence[int] = 0) -> nn.Sequential:
    """``h_s``: two stride-2 transposed convolutions with LeakyReLUs, then a ``kernel`` x ``kernel``
    convolution to the ``2M`` scales and means (hidden widths: :func:`hidden_widths`)."""
    h1, h2 = hidden_widths(M, hidden)
    return nn.Sequential(
        deconv(N, h1), nn.LeakyReLU(inplace=True),
        deconv(h1, h2), nn.LeakyReLU(inplace=True),
        conv(h2, M * 2, stride=1, kernel_size=kernel),
    )


class GainedMeanScaleHyperprior(nn.Module):
    """Mean-scale hyperprior (Minnen 2018, no context model) with log-interpolated gain units.

    Args:
        N: channels of the transforms and of the hyper-latent ``z``.
        M: channels of the latent ``y`` (the latent the task heads read), at stride 16.
        num_levels: trained quality levels; any quality in [0, 1] interpolates between them.
        hyper_kernel: kernel size of the last hyper-synthesis layer, which runs at the latent's
            full resolution and dominates what a latent loader pays besides entropy decoding:
            3 (Minnen et al.) or 1 (about a tenth of its cost; see ``train.distill_hyper_synthesis``).
        hyper_hidden: channels of both hidden hyper-synthesis layers, or a pair (one per layer); 0
            (the default) keeps Minnen et al.'s ``M`` and ``3M/2``. A narrower one (mask decay,
            :mod:`mlcodec.mask_decay`, or a student, ``train.distill_hyper_synthesis``) costs a
            latent loader less: the multiply-accumulates scale with it.
    """

    stride = 64  # total downsampling of the hyper-latent: inputs are padded to a multiple of it

    def __init__(self, N: int = 96, M: int = 96, num_levels: int = 7, hyper_kernel: int = 3,
                 hyper_hidden: int | Sequence[int] = 0) -> None:
        super().__init__()
        self.N, self.M, self.num_levels, self.hyper_kernel = N, M, num_levels, hyper_kernel
        self.hyper_hidden = hyper_hidden if isinstance(hyper_hidden, int) else hidden_widths(M, hyper_hidden)
        self.g_a = nn.Sequential(
            conv(3, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M)
        )
        self.g_s = nn.Sequential(
            deconv(M, N), GDN(N, inverse=True), deconv(N, N), GDN(N, inverse=True),
            deconv(N, N), GDN(N, inverse=True), deconv(N, 3),
        )
        self.h_a = nn.Sequential(
            conv(M, N, stride=1, kernel_size=3), nn.LeakyReLU(inplace=True),
            conv(N, N), nn.LeakyReLU(inplace=True), conv(N, N),
        )
        self.h_s = hyper_synthesis_layers(N, M, hyper_kernel, hyper_hidden)
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(list(SCALE_TABLE))
        # Log-domain gains, one row per quality level (row 0 = lowest rate).
        self.log_gain = nn.Parameter(torch.zeros(num_levels, M))
        self.log_inv_gain = nn.Parameter(torch.zeros(num_levels, M))
        self.log_hyper_gain = nn.Parameter(torch.zeros(num_levels, N))
        self.log_inv_hyper_gain = nn.Parameter(torch.zeros(num_levels, N))

    @torch.no_grad()
    def init_gains(self, lambdas: list[float]) -> None:
        """Start each level's quantization step near the MSE-optimal ``~1/sqrt(lambda)`` ratio."""
        ref = math.log(lambdas[len(lambdas) // 2])
        for k, lmbda in enumerate(lambdas):
            g = 0.5 * (math.log(lmbda) - ref)
            self.log_gain[k].fill_(g)
            self.log_inv_gain[k].fill_(-g)

    def _gains(self, quality: Tensor, table: Tensor) -> Tensor:
        """Per-sample gain ``(B, C, 1, 1)`` for qualities in [0, 1], interpolated in log space."""
        t = quality.clamp(0.0, 1.0).to(table.dtype) * (self.num_levels - 1)
        lo = t.floor().long().clamp(max=self.num_levels - 2)
        frac = (t - lo.to(t.dtype)).unsqueeze(1)
        log_g = table[lo] * (1 - frac) + table[lo + 1] * frac
        return log_g.exp()[:, :, None, None]

    def gains(self, quality: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(gain, inverse gain, hyper gain, inverse hyper gain) for a ``(B,)`` quality tensor."""
        return (
            self._gains(quality, self.log_gain),
            self._gains(quality, self.log_inv_gain),
            self._gains(quality, self.log_hyper_gain),
            self._gains(quality, self.log_inv_hyper_gain),
        )

    def hyper_symbols(self, y_g: Tensor, hgain: Tensor) -> Tensor:
        """The coded hyper-latent of the gained latent ``y_g``: ``h_a``, the hyper gain, then
        rounding around the entropy bottleneck's medians (integer-valued floats). The quantized
        hyper-latent ``hyper_synthesis`` takes is these symbols plus the medians."""
        medians = self.entropy_bottleneck._get_medians().detach().reshape(1, -1, 1, 1)
        return torch.round(self.h_a(y_g) * hgain - medians)

    def hyper_synthesis(self, z_hat_g: Tensor, inv_hgain: Tensor) -> tuple[Tensor, Tensor]:
        """Scales and means of the gained latent from the (gained, quantized) hyper-latent, in
        floating point: what training uses, and how streams of formats 1 and 2 were coded.

        The range coder's tables are picked by these scales, so encoder and decoder must compute
        them bit for bit alike. Floating-point convolutions do not promise that across thread
        counts, CPUs or devices, nor across batch sizes (a batched GEMM blocks, and so rounds,
        differently): at inference this runs image by image, which makes a machine agree with
        itself. Format 3 computes them in integers instead (``mlcodec.models.exact_hyper``).
        """
        if not torch.is_grad_enabled():
            parts = [self.h_s(z_hat_g[i:i + 1] * inv_hgain[i:i + 1]) for i in range(z_hat_g.shape[0])]
            out = torch.cat(parts)
        else:
            out = self.h_s(z_hat_g * inv_hgain)
        scales, means = out.chunk(2, 1)
        return scales, means

    def forward(self, x: Tensor, quality: Tensor) -> ForwardOutput:
        """Training pass: additive-noise likelihoods, straight-through rounding for the decoder.

        Under autocast only the big transforms ``g_a``/``g_s`` run in reduced precision; the
        hyperprior and the likelihoods always run in float32.
        """
        gain, inv_gain, hgain, inv_hgain = self.gains(quality)
        y = self.g_a(x)
        with torch.autocast(x.device.type, enabled=False):
            y_g = y.float() * gain
            z_g = self.h_a(y_g) * hgain
            _, z_likelihoods = self.entropy_bottleneck(z_g)
            z_med = self.entropy_bottleneck._get_medians().reshape(1, -1, 1, 1)
            z_hat = (torch.round(z_g - z_med) + z_med - z_g).detach() + z_g  # STE into h_s
            scales, means = self.hyper_synthesis(z_hat, inv_hgain)
            _, y_likelihoods = self.gaussian_conditional(y_g, scales, means=means)
            y_hat = (torch.round(y_g - means) + means - y_g).detach() + y_g
        latent = y_hat * inv_gain
        x_hat = self.g_s(latent)
        return ForwardOutput(x_hat, y_likelihoods, z_likelihoods, latent)

    def aux_loss(self) -> Tensor:
        return self.entropy_bottleneck.loss()

    def update(self, force: bool = True) -> None:
        """Build the quantized CDF tables the range coder needs (CompressAI's ``update()``)."""
        self.entropy_bottleneck.update(force=force, update_quantiles=True)
        self.gaussian_conditional.update_scale_table(list(SCALE_TABLE), force=force)
