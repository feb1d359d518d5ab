"""Layer operations that are linear in their weight, applied to a whole batch at once.

An op computes ``y = op(x, W)`` (bias is added by the caller). Its weight has shape
``(out, *tail)``: output channel ``o`` of ``y`` depends only on ``W[o]``. Two consequences
the adapters in ``leads.models.adapters`` rely on:

- a weight with any number ``k`` of rows is valid, giving ``k`` output channels; so a
  low-rank term ``op(x, A diag(c) B) = A · (c ⊙ op(x, B))`` costs one op with ``rank`` rows;
- ``op.per_sample(x, W)`` with ``W`` of shape ``(B, k, *tail)`` applies sample ``b``'s own
  weight to sample ``b`` in one batched call (einsum, or a grouped convolution).

Channels are dimension 1 of every activation: ``(B, C)`` for ``Linear``, ``(B, C, N)`` for the
1D ops, ``(B, C, H, W)`` for the 2D ops. Ops hold no parameters; their owners (the adapters) do.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from leads.envs.errors import UserError

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "swish": F.silu,
    "relu": F.relu,
    "tanh": torch.tanh,
    "gelu": F.gelu,
}


def get_activation(name: str) -> Callable[[Tensor], Tensor]:
    if name not in ACTIVATIONS:
        raise UserError(f"unknown activation '{name}'; choose one of: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]


def channels_last_view(v: Tensor, n_spatial: int) -> Tensor:
    """``v`` of shape ``(..., C)`` viewed so that it broadcasts against ``(B, C, *spatial)``."""
    return v.reshape(*v.shape, *([1] * n_spatial))


def mix(a: Tensor, z: Tensor) -> Tensor:
    """Channel mixing ``y[b, o] = Σ_k a[o, k] z[b, k]`` (a shared ``(O, K)`` or per-sample ``(B, O, K)``)."""
    if a.dim() == 2:
        return torch.einsum("ok,bk...->bo...", a, z)
    return torch.einsum("bok,bk...->bo...", a, z)


class Op:
    """A map linear in its weight. Subclasses define ``tail``, ``__call__`` and ``per_sample``."""

    has_bias: bool = True
    n_spatial: int = 0

    def __init__(self, in_channels: int, out_channels: int) -> None:
        self.in_channels = in_channels
        self.out_channels = out_channels

    @property
    def tail(self) -> tuple[int, ...]:
        """Weight shape without the leading output dimension."""
        raise NotImplementedError

    @property
    def fan_in(self) -> int:
        return math.prod(self.tail)

    def __call__(self, x: Tensor, w: Tensor) -> Tensor:
        """``x`` (B, in, *spatial), ``w`` (k, *tail) -> (B, k, *spatial)."""
        raise NotImplementedError

    def per_sample(self, x: Tensor, w: Tensor) -> Tensor:
        """``x`` (B, in, *spatial), ``w`` (B, k, *tail) -> (B, k, *spatial)."""
        raise NotImplementedError

    def init_weight(self, rows: int, *, dtype: torch.dtype | None = None,
                    device: torch.device | None = None) -> Tensor:
        """A freshly initialised weight with ``rows`` output rows, PyTorch's default
        (kaiming-uniform, bound 1/sqrt(fan_in)) unless the op overrides it."""
        bound = 1.0 / math.sqrt(self.fan_in)
        return torch.empty(rows, *self.tail, dtype=dtype, device=device).uniform_(-bound, bound)

    def init_bias(self, *, dtype: torch.dtype | None = None, device: torch.device | None = None) -> Tensor:
        bound = 1.0 / math.sqrt(self.fan_in)
        return torch.empty(self.out_channels, dtype=dtype, device=device).uniform_(-bound, bound)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_channels}->{self.out_channels}, tail={self.tail})"


class Linear(Op):
    """``y = x Wᵀ`` on vectors ``(B, in)``."""

    @property
    def tail(self) -> tuple[int, ...]:
        return (self.in_channels,)

    def __call__(self, x: Tensor, w: Tensor) -> Tensor:
        return F.linear(x, w)

    def per_sample(self, x: Tensor, w: Tensor) -> Tensor:
        return torch.einsum("bi,bki->bk", x, w)


class _PeriodicConv(Op):
    """A convolution with circular padding (periodic domains), odd kernel, stride 1."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(in_channels, out_channels)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise UserError(f"kernel_size={kernel_size} must be a positive odd integer (e.g. 3)")
        self.kernel_size = kernel_size


class PeriodicConv2d(_PeriodicConv):
    """2D convolution with circular padding (periodic domains), odd square kernel, stride 1."""

    n_spatial = 2

    @property
    def tail(self) -> tuple[int, ...]:
        return (self.in_channels, self.kernel_size, self.kernel_size)

    def _pad(self, x: Tensor) -> Tensor:
        p = self.kernel_size // 2
        if not p:
            return x
        if p > min(x.shape[-2:]):
            raise UserError(f"kernel_size={self.kernel_size} is wider than the {tuple(x.shape[-2:])} grid; "
                            "use a smaller model.kernel_size")
        # The wrapped edges concatenated: the values of F.pad(mode="circular"), whose forward and
        # backward copy slice by slice (measured: the step of the quick Gray-Scott model is faster
        # this way, benchmarks/train_speed.py).
        x = torch.cat([x[..., -p:, :], x, x[..., :p, :]], dim=-2)
        return torch.cat([x[..., -p:], x, x[..., :p]], dim=-1)

    def __call__(self, x: Tensor, w: Tensor) -> Tensor:
        return F.conv2d(self._pad(x), w)

    def per_sample(self, x: Tensor, w: Tensor) -> Tensor:
        b, k = w.shape[:2]
        if self.kernel_size == 1:
            return torch.einsum("bihw,bki->bkhw", x, w[..., 0, 0])
        # one group per sample: sample b's channels only meet sample b's kernels
        xp = self._pad(x)
        xg = xp.reshape(1, b * self.in_channels, *xp.shape[2:])
        y = F.conv2d(xg, w.reshape(b * k, *self.tail), groups=b)
        return y.reshape(b, k, *x.shape[2:])


class PeriodicConv1d(_PeriodicConv):
    """1D convolution with circular padding (periodic domains), odd kernel, stride 1."""

    n_spatial = 1

    @property
    def tail(self) -> tuple[int, ...]:
        return (self.in_channels, self.kernel_size)

    def _pad(self, x: Tensor) -> Tensor:
        p = self.kernel_size // 2
        if p > x.shape[-1]:
            raise UserError(f"kernel_size={self.kernel_size} is wider than the {x.shape[-1]}-point grid; "
                            "use a smaller model.kernel_size")
        return torch.cat([x[..., x.shape[-1] - p:], x, x[..., :p]], dim=-1) if p else x

    def __call__(self, x: Tensor, w: Tensor) -> Tensor:
        return F.conv1d(self._pad(x), w)

    def per_sample(self, x: Tensor, w: Tensor) -> Tensor:
        b, k = w.shape[:2]
        if self.kernel_size == 1:
            return torch.einsum("bin,bki->bkn", x, w[..., 0])
        xp = self._pad(x)
        y = F.conv1d(xp.reshape(1, b * self.in_channels, -1), w.reshape(b * k, *self.tail), groups=b)
        return y.reshape(b, k, x.shape[-1])


class _SpectralConv(Op):
    """An FNO Fourier layer: complex weights on the lowest ``modes`` frequencies. No bias."""

    has_bias = False

    def __init__(self, in_channels: int, out_channels: int, modes: int) -> None:
        super().__init__(in_channels, out_channels)
        self.modes = modes

    def init_weight(self, rows: int, *, dtype: torch.dtype | None = None,
                    device: torch.device | None = None) -> Tensor:
        # Li et al.'s FNO initialisation: uniform [0, 1/(in*out)) for both real and imaginary parts
        scale = 1.0 / (self.in_channels * self.out_channels)
        return scale * torch.rand(rows, *self.tail, dtype=dtype, device=device)


class SpectralConv1d(_SpectralConv):
    """1D FNO Fourier layer: multiply the lowest ``modes`` frequencies by complex weights, stored
    as real ``(out, in, modes, 2)`` (last axis: real, imaginary); drop the rest. No bias."""

    n_spatial = 1

    @property
    def tail(self) -> tuple[int, ...]:
        return (self.in_channels, self.modes, 2)

    def check_grid(self, n: int) -> None:
        if self.modes > n // 2 + 1:
            raise UserError(f"fno modes={self.modes} too many for a {n}-point grid; use modes <= {n // 2 + 1}")

    def _apply(self, x: Tensor, w: Tensor, eq: str) -> Tensor:
        n, m = x.shape[-1], self.modes
        kept = torch.einsum(eq, torch.fft.rfft(x)[..., :m], torch.complex(w[..., 0], w[..., 1]))
        return torch.fft.irfft(F.pad(kept, (0, n // 2 + 1 - m)), n=n)

    def __call__(self, x: Tensor, w: Tensor) -> Tensor:
        return self._apply(x, w, "bix,kix->bkx")

    def per_sample(self, x: Tensor, w: Tensor) -> Tensor:
        return self._apply(x, w, "bix,bkix->bkx")


class SpectralConv2d(_SpectralConv):
    """FNO Fourier layer: multiply the lowest ``modes`` frequencies (both signs of the first
    frequency axis) by complex weights, drop the rest.

    The complex weight is stored as real ``(out, in, 2, modes, modes, 2)``: index 2 picks the
    positive / negative first-axis frequency block, the last axis is (real, imaginary). No bias.
    """

    n_spatial = 2

    @property
    def tail(self) -> tuple[int, ...]:
        return (self.in_channels, 2, self.modes, self.modes, 2)

    def check_grid(self, h: int, w: int) -> None:
        if 2 * self.modes > h or self.modes > w // 2 + 1:
            raise UserError(
                f"fno modes={self.modes} too many for a {h}x{w} grid; use modes <= {min(h // 2, w // 2 + 1)}"
            )

    def _apply(self, x: Tensor, w: Tensor, eq: str) -> Tensor:
        h, wd = x.shape[-2:]
        m = self.modes
        x_ft = torch.fft.rfft2(x)
        wc = torch.complex(w[..., 0], w[..., 1])
        lo = torch.einsum(eq, x_ft[:, :, :m, :m], wc.select(-3, 0))
        hi = torch.einsum(eq, x_ft[:, :, h - m:, :m], wc.select(-3, 1))
        # zero-fill the discarded frequencies without in-place writes (cheaper autograd graph)
        mid = lo.new_zeros(*lo.shape[:2], h - 2 * m, m)
        cols = torch.cat([lo, mid, hi], dim=2)
        out_ft = F.pad(cols, (0, wd // 2 + 1 - m))
        return torch.fft.irfft2(out_ft, s=(h, wd))

    def __call__(self, x: Tensor, w: Tensor) -> Tensor:
        return self._apply(x, w, "bixy,kixy->bkxy")

    def per_sample(self, x: Tensor, w: Tensor) -> Tensor:
        return self._apply(x, w, "bixy,bkixy->bkxy")
