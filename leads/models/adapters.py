"""Per-environment weight parametrizations of one layer.

Each class wraps one ``leads.models.layers.Op`` and owns its parameters. ``forward(x, cond)`` applies
every sample's own environment weights ``W_e, b_e`` in one batched call, using the cheapest
exact form:

==============  =====================================  =======================================
class           W_e, b_e                               computed as
==============  =====================================  =======================================
SharedLayer     W, b                                   op(x, W) + b
PerEnvLayer     W[e], b[e]                             op.per_sample(x, W[env]) + b[env]
LowRankLayer    W + A diag(c_e) B,  b + D c_e          op(x, [W; B]) then A·(c ⊙ ·)
CodaLayer       W + Σ_j ξ_ej U_j,   b + Σ_j ξ_ej V_j   op(x, [W; U_1..U_d]) then ξ-weighted sum
LoraLayer       W + B_e A_e,        b                  op(x, W) + B[env]·op.per_sample(x, A[env])
==============  =====================================  =======================================

Weights are viewed as matrices ``(out, in·rest)`` (``rest`` = kernel, or Fourier modes and the
real/imaginary axis). The per-environment codes ``c_e`` / ``ξ_e`` are shared by all layers, so
they belong to the model (``leads.models.methods``) and reach the layers through ``Cond.code``.

Every parameter that is specific to environments has the environment as its first dimension.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from leads.envs.errors import UserError
from leads.models.layers import Op, channels_last_view, mix

Weights = tuple[Tensor, Tensor | None]


class Cond(NamedTuple):
    """What a layer needs to know about each sample's environment."""

    env: Tensor  # (B,) long
    code: Tensor | None = None  # (B, r): the environment's context, for lowrank and coda


def _orthogonal(rows: int, cols: int, like: Tensor) -> Tensor:
    w = torch.empty(rows, cols, dtype=like.dtype, device=like.device)
    return nn.init.orthogonal_(w)


def _mean_over_envs(p: Tensor, n_envs: int) -> Tensor:
    """``n_envs`` copies of the mean over the first (environment) dimension of ``p``."""
    return p.detach().mean(0, keepdim=True).expand(n_envs, *p.shape[1:]).clone()


def _bias_term(op: Op, b: Tensor) -> Tensor:
    return channels_last_view(b, op.n_spatial)


class SharedLayer(nn.Module):
    """One weight for every environment (``erm``, and the shared part of the adapters)."""

    def __init__(self, op: Op) -> None:
        super().__init__()
        self.op = op
        self.weight = nn.Parameter(op.init_weight(op.out_channels))
        self.bias = nn.Parameter(op.init_bias()) if op.has_bias else None

    def forward(self, x: Tensor, cond: Cond) -> Tensor:
        return self._add_bias(self.op(x, self.weight), self.bias)

    def _add_bias(self, y: Tensor, b: Tensor | None) -> Tensor:
        return y if b is None else y + _bias_term(self.op, b)

    def shared_parameters(self) -> list[nn.Parameter]:
        return [self.weight] + ([self.bias] if self.bias is not None else [])

    def env_parameters(self) -> list[nn.Parameter]:
        return []

    def effective_weights(self, env: int, code: Tensor | None) -> Weights:
        """``(W_e, b_e)`` of environment ``env`` (whose context is ``code``), as plain tensors."""
        return self.weight, self.bias

    def reset_environments(self, n_envs: int, init: str) -> None:
        """Fresh environment-specific parameters for ``n_envs`` environments (none here)."""

    def extra_repr(self) -> str:
        return repr(self.op)


class PerEnvLayer(nn.Module):
    """Independent weights per environment, stacked as ``(n_envs, out, *tail)``.

    ``reset_environments`` inits: ``random`` (like construction), ``mean`` (every new
    environment starts at the mean of the old weights), ``zero`` (random, but zero weight and bias
    in this layer; the owner applies it to output layers only so the network still trains).
    """

    inits = ("random", "mean", "zero")

    def __init__(self, op: Op, n_envs: int) -> None:
        super().__init__()
        self.op = op
        self.weight, self.bias = self._fresh(n_envs, "random", None)

    def _fresh(self, n_envs: int, init: str, like: Tensor | None) -> tuple[nn.Parameter, nn.Parameter | None]:
        kw = {} if like is None else {"dtype": like.dtype, "device": like.device}
        if init == "mean":
            w = _mean_over_envs(self.weight, n_envs)
            b = None if self.bias is None else _mean_over_envs(self.bias, n_envs)
        else:
            w = torch.stack([self.op.init_weight(self.op.out_channels, **kw) for _ in range(n_envs)])
            b = torch.stack([self.op.init_bias(**kw) for _ in range(n_envs)]) if self.op.has_bias else None
            if init == "zero":
                w.zero_()
                b = None if b is None else b.zero_()
        return nn.Parameter(w), (None if b is None else nn.Parameter(b))

    def forward(self, x: Tensor, cond: Cond) -> Tensor:
        y = self.op.per_sample(x, self.weight[cond.env])
        return y if self.bias is None else y + _bias_term(self.op, self.bias[cond.env])

    def shared_parameters(self) -> list[nn.Parameter]:
        return []

    def env_parameters(self) -> list[nn.Parameter]:
        return [self.weight] + ([self.bias] if self.bias is not None else [])

    def effective_weights(self, env: int, code: Tensor | None) -> Weights:
        return self.weight[env], (None if self.bias is None else self.bias[env])

    def reset_environments(self, n_envs: int, init: str) -> None:
        if init not in self.inits:
            raise UserError(f"unknown init '{init}' for per-environment networks; choose one of: "
                            f"{', '.join(self.inits)}")
        self.weight, self.bias = self._fresh(n_envs, init, self.weight)

    def extra_repr(self) -> str:
        return f"{self.op!r}, n_envs={self.weight.shape[0]}"


class LowRankLayer(SharedLayer):
    """``W_e = W + A diag(c_e) B``, ``b_e = b + D c_e`` with the model's context ``c_e ∈ R^r``.

    A ``(out, r)``, B ``(r, *tail)`` (viewed as ``(r, in·rest)``) and D ``(out, r)`` are shared
    and orthogonally initialised (as in GEPS), so that with ``c = 0`` the layer is exactly its
    backbone layer and yet the gradient with respect to ``c`` is nonzero.
    """

    def __init__(self, op: Op, rank: int) -> None:
        super().__init__(op)
        self.rank = rank
        self.A = nn.Parameter(_orthogonal(op.out_channels, rank, self.weight))
        self.B = nn.Parameter(_orthogonal(rank, op.fan_in, self.weight).reshape(rank, *op.tail))
        self.D = nn.Parameter(_orthogonal(op.out_channels, rank, self.weight)) if op.has_bias else None

    def forward(self, x: Tensor, cond: Cond) -> Tensor:
        assert cond.code is not None
        out = self.op.out_channels
        z = self.op(x, torch.cat([self.weight, self.B]))
        scaled = z[:, out:] * channels_last_view(cond.code, self.op.n_spatial)
        y = z[:, :out] + mix(self.A, scaled)
        if self.bias is None:
            return y
        return y + _bias_term(self.op, self.bias + cond.code @ self.D.T)

    def shared_parameters(self) -> list[nn.Parameter]:
        return super().shared_parameters() + [self.A, self.B] + ([self.D] if self.D is not None else [])

    def effective_weights(self, env: int, code: Tensor | None) -> Weights:
        assert code is not None
        delta = (self.A * code) @ self.B.reshape(self.rank, -1)
        w = self.weight + delta.reshape(self.weight.shape)
        return w, (None if self.bias is None else self.bias + self.D @ code)


class CodaLayer(SharedLayer):
    """``θ_e = θ + W ξ_e`` (CoDA): the hypernetwork's ``d`` columns are full-size weight and bias
    directions ``U`` ``(d, out, *tail)`` and ``V`` ``(d, out)``, initialised like the layer itself
    (so ``ξ`` of order one moves the layer by its own scale)."""

    def __init__(self, op: Op, context_dim: int) -> None:
        super().__init__(op)
        self.context_dim = context_dim
        self.U = nn.Parameter(torch.stack([op.init_weight(op.out_channels) for _ in range(context_dim)]))
        self.V = None
        if op.has_bias:
            self.V = nn.Parameter(torch.stack([op.init_bias() for _ in range(context_dim)]))

    def forward(self, x: Tensor, cond: Cond) -> Tensor:
        assert cond.code is not None
        out, d = self.op.out_channels, self.context_dim
        z = self.op(x, torch.cat([self.weight, self.U.flatten(0, 1)]))
        directions = z[:, out:].unflatten(1, (d, out))
        y = z[:, :out] + torch.einsum("bd,bdo...->bo...", cond.code, directions)
        if self.bias is None:
            return y
        return y + _bias_term(self.op, self.bias + cond.code @ self.V)

    def hyper_rows(self) -> list[Tensor]:
        """The hypernetwork's rows: one ``d``-vector per parameter of the layer, as columns of
        ``(d, n_params)`` matrices."""
        rows = [self.U.flatten(1)]
        return rows + ([self.V] if self.V is not None else [])

    def shared_parameters(self) -> list[nn.Parameter]:
        return super().shared_parameters() + [self.U] + ([self.V] if self.V is not None else [])

    def effective_weights(self, env: int, code: Tensor | None) -> Weights:
        assert code is not None
        w = self.weight + torch.einsum("d,d...->...", code, self.U)
        return w, (None if self.bias is None else self.bias + code @ self.V)


class LoraLayer(SharedLayer):
    """``W_e = W + B_e A_e`` with independent rank-``r`` factors per environment (LoRA):
    ``B_e`` ``(out, r)`` starts at zero, ``A_e`` ``(r, *tail)`` like the layer's own weight.
    Biases are shared (not adapted), as in LoRA."""

    inits = ("zero", "mean")

    def __init__(self, op: Op, rank: int, n_envs: int) -> None:
        super().__init__(op)
        self.rank = rank
        self.lora_A, self.lora_B = self._fresh(n_envs, "zero")

    def _fresh(self, n_envs: int, init: str) -> tuple[nn.Parameter, nn.Parameter]:
        kw = {"dtype": self.weight.dtype, "device": self.weight.device}
        if init == "mean":
            a, b = _mean_over_envs(self.lora_A, n_envs), _mean_over_envs(self.lora_B, n_envs)
        else:
            a = torch.stack([self.op.init_weight(self.rank, **kw) for _ in range(n_envs)])
            b = torch.zeros(n_envs, self.op.out_channels, self.rank, **kw)
        return nn.Parameter(a), nn.Parameter(b)

    def forward(self, x: Tensor, cond: Cond) -> Tensor:
        y = self.op(x, self.weight)
        y = y + mix(self.lora_B[cond.env], self.op.per_sample(x, self.lora_A[cond.env]))
        return self._add_bias(y, self.bias)

    def env_parameters(self) -> list[nn.Parameter]:
        return [self.lora_A, self.lora_B]

    def effective_weights(self, env: int, code: Tensor | None) -> Weights:
        delta = self.lora_B[env] @ self.lora_A[env].reshape(self.rank, -1)
        return self.weight + delta.reshape(self.weight.shape), self.bias

    def reset_environments(self, n_envs: int, init: str) -> None:
        if init not in self.inits:
            raise UserError(f"unknown init '{init}' for lora; choose one of: {', '.join(self.inits)}")
        self.lora_A, self.lora_B = self._fresh(n_envs, init)
