"""Backbone architectures whose every layer is adaptable.

A backbone fixes the architecture; ``make_layer(op)`` (given by the method) decides how each
layer's weights depend on the environment. ``backbone.layers`` lists the adaptable layers in
order, the output layer last (``output_layers`` names the layers whose sum is the output).
``backbone(u, cond) -> du/dt`` with ``u`` of shape ``(B, *state_shape)``.

Configuration (``backbone_cfg``: ``name`` and the keys below; keys that only other backbones
use are ignored, so one config section can serve all), with defaults:

- ``mlp``  (states ``(d,)``): ``width=64, depth=4, activation=swish, skip=False,
  per_capita=False``; ``depth`` linear layers.
- ``conv`` (fields ``(C, N)`` or ``(C, H, W)``): ``width=64, depth=4, kernel_size=3,
  activation=swish, skip=False, per_capita=False``; ``depth`` 1D or 2D convolutions with circular padding.
  With ``skip`` (both) one more layer, linear in the state (a linear map, or a convolution of
  ``kernel_size``), is added to the stack's output: ``f(u) = stack(u) + L u``. Adapted like every
  layer, it holds a dependence on the environment that is linear in the state exactly, and
  extrapolates it linearly away from the training states (terms such as ``alpha x`` in
  Lotka-Volterra, or feed, kill and diffusion in Gray-Scott).
  With ``per_capita`` (both) the output is the state times the stack's: ``f(u) = u * g(u)``, the
  Kolmogorov form of population dynamics, where ``g`` is each species' per-capita growth rate.
  It suits positive states in physical units (``forecaster.normalize: false``): zero stays
  zero, and for Lotka-Volterra ``g`` is affine in the state (``alpha - beta y``,
  ``delta x - gamma``) where ``f`` holds the product ``x y``.
- ``fno``  (fields ``(C, N)`` or ``(C, H, W)``): ``width=10, depth=4, modes=12,
  activation=gelu, proj_width=128, coords=True``: lift (pointwise conv), ``depth`` × [spectral
  conv + pointwise conv], projection (two pointwise convs), as in Li et al., in 1D or 2D. With
  ``coords`` the input gets periodic coordinate channels ``sin/cos 2πx`` (and ``sin/cos 2πy``)
  (position-dependent forcing, as in Navier-Stokes or Burgers, cannot be learnt by a
  translation-equivariant network otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from leads.envs.errors import UserError
from leads.models.adapters import Cond
from leads.models.layers import (
    Linear,
    Op,
    PeriodicConv1d,
    PeriodicConv2d,
    SpectralConv1d,
    SpectralConv2d,
    get_activation,
)

MakeLayer = Callable[[Op], nn.Module]


def resolve_config(section: str, defaults: dict[str, Any], cfg: dict[str, Any],
                   ignore: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """``defaults`` updated by ``cfg``; keys in ``ignore`` are dropped, other unknown keys and
    badly typed values are ``UserError``s."""
    cfg = {k: v for k, v in cfg.items() if k in defaults or k not in ignore}
    unknown = sorted(set(cfg) - set(defaults))
    if unknown:
        raise UserError(f"unknown key '{section}.{unknown[0]}'; known keys: {', '.join(sorted(defaults))}")
    out = {**defaults, **cfg}
    for key, default in defaults.items():
        value = out[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
                and value >= 0
        else:
            ok = isinstance(value, type(default))
        if not ok:
            kind = {bool: "true or false", int: "a positive integer", float: "a non-negative number"}.get(
                type(default), f"a {type(default).__name__}")
            raise UserError(f"{section}.{key}={value!r} must be {kind}")
    return out


class Backbone(nn.Module):
    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]]
    state_ranks: ClassVar[tuple[int, ...]]  # numbers of dimensions of the states it accepts

    def __init__(self, state_shape: tuple[int, ...], cfg: dict[str, Any], make_layer: MakeLayer) -> None:
        super().__init__()
        if len(state_shape) not in self.state_ranks:
            want = " or ".join({1: "(d,)", 2: "(C, N)", 3: "(C, H, W)"}[r] for r in self.state_ranks)
            raise UserError(f"backbone '{self.name}' needs states shaped {want}, got {tuple(state_shape)}; "
                            f"use mlp for ODE states and conv or fno for fields")
        self.state_shape = tuple(state_shape)
        # one config section serves every backbone, so keys of the others are not errors
        other_keys = {k for b in BACKBONES.values() for k in b.defaults}
        self.cfg = resolve_config("model", self.defaults, cfg, ignore=other_keys)
        self.act = get_activation(self.cfg["activation"])
        self.layers = nn.ModuleList()

    @property
    def output_layers(self) -> list[int]:
        """Indices in ``layers`` of the layers whose outputs sum to the backbone's output."""
        return [len(self.layers) - 1]

    def forward(self, u: Tensor, cond: Cond) -> Tensor:
        raise NotImplementedError


class _Stack(Backbone):
    """``depth`` layers state -> width -> ... -> width -> state, activation between layers; with
    ``skip``, plus one layer state -> state applied to the input (the last of ``layers``); with
    ``per_capita``, the sum times the state."""

    def __init__(self, state_shape: tuple[int, ...], cfg: dict[str, Any], make_layer: MakeLayer) -> None:
        super().__init__(state_shape, cfg, make_layer)
        sizes = [state_shape[0]] + [self.cfg["width"]] * (self.cfg["depth"] - 1) + [state_shape[0]]
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            self.layers.append(make_layer(self._op(n_in, n_out)))
        self.depth = len(self.layers)
        if self.cfg["skip"]:
            self.layers.append(make_layer(self._op(state_shape[0], state_shape[0])))

    @property
    def output_layers(self) -> list[int]:
        return list(range(self.depth - 1, len(self.layers)))

    def _op(self, n_in: int, n_out: int) -> Op:
        raise NotImplementedError

    def forward(self, u: Tensor, cond: Cond) -> Tensor:
        x = u
        for i in range(self.depth):
            x = self.layers[i](x, cond)
            if i < self.depth - 1:
                x = self.act(x)
        if len(self.layers) > self.depth:
            x = x + self.layers[self.depth](u, cond)
        return u * x if self.cfg["per_capita"] else x


class MLP(_Stack):
    name = "mlp"
    defaults = {"width": 64, "depth": 4, "activation": "swish", "skip": False, "per_capita": False}
    state_ranks = (1,)

    def _op(self, n_in: int, n_out: int) -> Op:
        return Linear(n_in, n_out)


class ConvNet(_Stack):
    name = "conv"
    defaults = {"width": 64, "depth": 4, "kernel_size": 3, "activation": "swish", "skip": False,
                "per_capita": False}
    state_ranks = (2, 3)

    def _op(self, n_in: int, n_out: int) -> Op:
        conv = PeriodicConv1d if len(self.state_shape) == 2 else PeriodicConv2d
        return conv(n_in, n_out, self.cfg["kernel_size"])


class FNO(Backbone):
    """``layers`` = [lift, spectral_1..depth, pointwise_1..depth, proj1, proj2]."""

    name = "fno"
    defaults = {"width": 10, "depth": 4, "modes": 12, "activation": "gelu", "proj_width": 128, "coords": True}
    state_ranks = (2, 3)

    def __init__(self, state_shape: tuple[int, ...], cfg: dict[str, Any], make_layer: MakeLayer) -> None:
        super().__init__(state_shape, cfg, make_layer)
        c, *grid = state_shape
        width, depth, modes = self.cfg["width"], self.cfg["depth"], self.cfg["modes"]
        n_coords = 2 * len(grid) if self.cfg["coords"] else 0
        if len(grid) == 1:
            spectral: list[Op] = [SpectralConv1d(width, width, modes) for _ in range(depth)]
            pointwise: type[Op] = PeriodicConv1d
        else:
            spectral, pointwise = [SpectralConv2d(width, width, modes) for _ in range(depth)], PeriodicConv2d
        spectral[0].check_grid(*grid)
        ops: list[Op] = [pointwise(c + n_coords, width, 1), *spectral]
        ops += [pointwise(width, width, 1) for _ in range(depth)]
        proj = self.cfg["proj_width"]
        ops += [pointwise(width, proj, 1), pointwise(proj, c, 1)]
        self.layers.extend(make_layer(op) for op in ops)
        coords = None
        if n_coords:
            axes = torch.meshgrid(*(torch.arange(n) / n for n in grid), indexing="ij")
            angles = 2 * math.pi * torch.stack(axes[::-1])  # x (the last axis) first, as before
            coords = torch.cat([angles.sin(), angles.cos()])
        self.register_buffer("coords", coords, persistent=False)

    def forward(self, u: Tensor, cond: Cond) -> Tensor:
        depth = self.cfg["depth"]
        lift, proj1, proj2 = self.layers[0], self.layers[-2], self.layers[-1]
        spectral, pointwise = self.layers[1:1 + depth], self.layers[1 + depth:1 + 2 * depth]
        x = u
        if self.coords is not None:
            coords = self.coords.to(dtype=u.dtype, device=u.device)
            x = torch.cat([x, coords.expand(u.shape[0], *coords.shape)], dim=1)
        x = lift(x, cond)
        for i in range(depth):
            x = spectral[i](x, cond) + pointwise[i](x, cond)
            if i < depth - 1:
                x = self.act(x)
        return proj2(self.act(proj1(x, cond)), cond)


BACKBONES: dict[str, type[Backbone]] = {cls.name: cls for cls in (MLP, ConvNet, FNO)}


def build_backbone(cfg: dict[str, Any], state_shape: tuple[int, ...], make_layer: MakeLayer) -> Backbone:
    """The backbone ``cfg["name"]`` configured by the other keys of ``cfg``."""
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r} (model.name); choose one of: "
                        f"{', '.join(sorted(BACKBONES))}")
    return BACKBONES[name](tuple(state_shape), cfg, make_layer)
