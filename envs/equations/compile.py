"""A sympy expression of a system file as a torch function of the state, built once.

The expression tree is turned into nested closures (no source text is generated or run): a
field is a channel of the state, a parameter a float or a per-sample column, ``x``/``y`` the grid
positions, ``t`` the time, an operator its ``Discretization``. Every value broadcasts against
one channel, ``(B,)`` for an ODE and ``(B, *grid)`` for a PDE. Within one evaluation an operator
applied to the same argument in several terms is computed once, and Fourier schemes share the
argument's spectrum.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sympy
import torch

from leads.envs.equations.grammar import is_operator
from leads.envs.equations.operators import Discretization, Grid

Value = Any  # torch.Tensor | float
Node = Callable[["Evaluation"], Value]

_FUNCTIONS: dict[type, tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[float], float]]] = {
    sympy.sin: (torch.sin, math.sin), sympy.cos: (torch.cos, math.cos), sympy.tan: (torch.tan, math.tan),
    sympy.exp: (torch.exp, math.exp), sympy.log: (torch.log, math.log), sympy.tanh: (torch.tanh, math.tanh),
    sympy.sinh: (torch.sinh, math.sinh), sympy.cosh: (torch.cosh, math.cosh), sympy.Abs: (torch.abs, abs),
}


class Evaluation:
    """The inputs of one evaluation: channels by field name, parameter values (shaped to broadcast
    against a channel), the time, the grid's coordinates, and the operators' results so far."""

    __slots__ = ("fields", "values", "t", "coords", "cache")

    def __init__(self, fields: Mapping[str, torch.Tensor], values: Mapping[str, Value], t: Value,
                 coords: Mapping[str, torch.Tensor]) -> None:
        self.fields, self.values, self.t, self.coords = fields, values, t, coords
        self.cache: dict[Any, Any] = {}


class Compiler:
    """Builds ``Node``s for the expressions of one system.

    Args:
        kinds: each name an expression may use -> ``field``, ``parameter``, ``constant``,
            ``coordinate`` or ``time``.
        grid: the periodic grid (None for an ODE).
        operators: operator name -> its discretization on ``grid``.
    """

    def __init__(self, kinds: Mapping[str, str], grid: Grid | None, operators: Mapping[str, Discretization]) -> None:
        self.kinds, self.grid, self.operators = dict(kinds), grid, dict(operators)
        self._memo: dict[sympy.Basic, Node] = {}

    def compile(self, expr: sympy.Expr) -> Node:
        node = self._memo.get(expr)
        if node is None:
            node = self._memo[expr] = self._build(expr)
        return node

    def _build(self, e: sympy.Basic) -> Node:
        if e.is_number:
            c = float(e)
            return lambda ev: c
        if isinstance(e, sympy.Symbol):
            return self._symbol(e.name)
        if isinstance(e, sympy.Add):
            parts = [self.compile(a) for a in e.args]
            return lambda ev: _sum(p(ev) for p in parts)
        if isinstance(e, sympy.Mul):
            coeff, rest = e.as_coeff_Mul()
            factors = [self.compile(a) for a in sympy.Mul.make_args(rest)]
            c = float(coeff)
            if c == 1.0:
                return lambda ev: _product(f(ev) for f in factors)
            if c == -1.0:
                return lambda ev: -_product(f(ev) for f in factors)
            return lambda ev: c * _product(f(ev) for f in factors)
        if isinstance(e, sympy.Pow):
            return self._power(e)
        if is_operator(e):
            return self._operator(e.func.__name__, e.args[0])
        for cls, (tfn, mfn) in _FUNCTIONS.items():
            if isinstance(e, cls):
                inner = self.compile(e.args[0])
                return lambda ev: tfn(v) if isinstance(v := inner(ev), torch.Tensor) else mfn(v)
        raise TypeError(f"cannot compile {e!r}")  # the grammar admits nothing else

    def _symbol(self, name: str) -> Node:
        kind = self.kinds[name]
        if kind == "field":
            return lambda ev: ev.fields[name]
        if kind in ("parameter", "constant"):
            return lambda ev: ev.values[name]
        if kind == "coordinate":
            return lambda ev: ev.coords[name]
        return lambda ev: ev.t

    def _power(self, e: sympy.Pow) -> Node:
        base, exp = self.compile(e.base), e.exp
        if exp.is_number:
            p = float(exp)
            if p == 2:
                return lambda ev: (b := base(ev)) * b
            if p == 3:
                return lambda ev: (b := base(ev)) * b * b
            if p == -1:
                return lambda ev: 1 / base(ev)
            if p == 0.5:
                return lambda ev: torch.sqrt(b) if isinstance(b := base(ev), torch.Tensor) else math.sqrt(b)
            return lambda ev: base(ev) ** p
        power = self.compile(exp)
        return lambda ev: base(ev) ** power(ev)

    def _operator(self, name: str, arg: sympy.Expr) -> Node:
        inner, disc, key = self.compile(arg), self.operators[name], (name, arg)
        assert self.grid is not None
        grid_shape = self.grid.shape

        def apply(ev: Evaluation) -> Value:
            hit = ev.cache.get(key)
            if hit is not None:
                return hit
            a = inner(ev)
            if not isinstance(a, torch.Tensor):
                return 0.0  # the derivative of a constant
            a = torch.broadcast_to(a, torch.broadcast_shapes(a.shape, grid_shape))
            spectrum = None
            if disc.is_fourier:
                spectrum = ev.cache.get(("rfft", arg))
                if spectrum is None:
                    spectrum = ev.cache[("rfft", arg)] = disc.grid.rfft(a)
            out = ev.cache[key] = disc.apply(a, spectrum)
            return out

        return apply


def _sum(values: Any) -> Value:
    out = None
    for v in values:
        out = v if out is None else out + v
    return out


def _product(values: Any) -> Value:
    out = None
    for v in values:
        out = v if out is None else out * v
    return out


def per_sample(value: Value, channel_dims: int) -> Value:
    """A float as is; a ``(B,)`` tensor shaped ``(B, 1, ...)`` to broadcast against a channel
    with ``channel_dims`` dimensions (the batch included)."""
    if isinstance(value, torch.Tensor) and value.dim() == 1:
        return value.view(-1, *([1] * (channel_dims - 1)))
    return value


def as_channel(value: Value, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a tensor of ``like``'s shape (a float, a parameter column or a function of
    the coordinates alone broadcast over the batch and grid)."""
    if isinstance(value, torch.Tensor) and value.shape == like.shape:
        return value
    return torch.zeros_like(like) + value


def stack_fields(parts: Sequence[Value | None], channels: Sequence[torch.Tensor]) -> torch.Tensor:
    """One ``(B, C, ...)`` tensor from a value per field (None: zero)."""
    return torch.stack([torch.zeros_like(c) if p is None else as_channel(p, c) for p, c in zip(parts, channels)], dim=1)
