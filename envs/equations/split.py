"""Splitting a field's right-hand side into a linear constant-coefficient part and the rest.

An exponential integrator (ETDRK4) solves ``du/dt = L u + N(u)`` with ``L`` taken exactly; it
must be diagonal in Fourier space, per field, with a real symbol (the contour integral of
``leads.envs.spectral`` uses that). Each term is expanded into a sum of pieces; a piece is
linear when it is ``c * f`` or ``c * op(f)`` with ``f`` the field the equation is for, ``op`` an
operator whose discretization has a real symbol (even derivatives) and ``c`` a product of
numbers, parameters and constants (it may differ between trajectories, not in space or time).
Everything else is ``N``.
"""

from __future__ import annotations

import dataclasses

import sympy

from leads.envs.equations.grammar import is_operator
from leads.envs.equations.operators import Discretization

SECOND_ORDER = ("dxx", "dyy", "dxy", "laplacian")


@dataclasses.dataclass(frozen=True)
class LinearPiece:
    """``coefficient * operator(field)`` (``operator`` None: the identity)."""

    coefficient: sympy.Expr
    operator: str | None


@dataclasses.dataclass(frozen=True)
class Split:
    """One field's expression as ``sum(linear) + nonlinear``."""

    linear: tuple[LinearPiece, ...]
    nonlinear: sympy.Expr


def pieces(expr: sympy.Expr) -> tuple[sympy.Expr, ...]:
    """The additive pieces of ``expr`` once products over sums are expanded (not inside functions)."""
    return sympy.Add.make_args(sympy.expand(expr, deep=False))


def linear_piece(piece: sympy.Expr, field: sympy.Symbol, state: set[sympy.Symbol], varying: set[sympy.Symbol],
                 operators: dict[str, Discretization]) -> LinearPiece | None:
    """``piece`` as a ``LinearPiece`` of ``field``, or None if it is not one.

    Args:
        state: every field's symbol; ``varying``: the coordinates and time (a coefficient may
            use neither).
    """
    coeff, rest = piece.as_independent(*state, *varying, as_Add=False)
    if coeff.free_symbols & (state | varying) or any(is_operator(a) for a in sympy.preorder_traversal(coeff)):
        return None
    if rest == field:
        return LinearPiece(coeff, None)
    if is_operator(rest) and rest.args[0] == field and operators[rest.func.__name__].is_real():
        return LinearPiece(coeff, rest.func.__name__)
    return None


def split(expr: sympy.Expr, field: sympy.Symbol, state: set[sympy.Symbol], varying: set[sympy.Symbol],
          operators: dict[str, Discretization]) -> Split:
    linear, rest = [], []
    for p in pieces(expr):
        lp = linear_piece(p, field, state, varying, operators)
        if lp is None:
            rest.append(p)
        else:
            linear.append(lp)
    return Split(tuple(linear), sympy.Add(*rest))


def explicit_second_order(expr: sympy.Expr) -> sympy.Expr | None:
    """A second-order operator application inside ``expr`` (what makes a term stiff), or None."""
    for node in sympy.preorder_traversal(expr):
        if is_operator(node) and node.func.__name__ in SECOND_ORDER:
            return node
    return None


def is_spectral(components: dict[sympy.Symbol, sympy.Expr], state: set[sympy.Symbol], varying: set[sympy.Symbol],
                operators: dict[str, Discretization]) -> bool:
    """Whether a term is linear with constant coefficients and diagonal in Fourier space in every
    field it has, through operators only (diffusion): what a hybrid model's ``etdrk4`` integrator
    takes exactly. Linear decays (``-k v``) stay explicit, as in the hand-written systems."""
    for field, expr in components.items():
        for p in pieces(expr):
            lp = linear_piece(p, field, state, varying, operators)
            if lp is None or lp.operator is None:
                return False
    return bool(components)
