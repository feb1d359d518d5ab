"""Discretizations of the differential operators on a periodic grid.

A state is ``(..., n)`` on a 1-D grid and ``(..., n, n)`` on a 2-D one, the value ``[i, j]`` at
``(x_i, y_j) = (i h, j h)``, ``h = length / n``: ``x`` runs along the second-to-last axis, ``y``
along the last.

Two families, chosen per operator in the system file:

- finite differences (PDE-NetGen's way: a stencil is a small convolution kernel; on a periodic
  grid it is a sum of shifted copies). An operator is a sum of products of 1-D stencils, one
  per axis, applied with ``torch.roll`` (whose backward is a roll; zero-padded slices cost a
  buffer fill each in the backward pass). ``central`` is second order, ``central4`` fourth
  order, and ``nine_point`` is the 9-point Laplacian of the reference Gray-Scott code (-3
  centre, 1/2 edges, 1/4 corners), which factors as ``S_x S_y - 4`` with ``S = [1/2, 1, 1/2]``;
- ``fourier``: pseudo-spectral, the operator's symbol times the field's ``rfft``; odd
  derivatives of the Nyquist mode are set to zero (the real field has no sine there).

Every discretization here is diagonal in Fourier space on the periodic grid (a stencil's symbol
is its discrete Fourier transform), which is what lets an exponential integrator take the
linear constant-coefficient part of an equation exactly (``symbol``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import torch

# 1-D stencils on unit spacing: offset -> weight, (D f)_i = sum_o w_o f_{i+o}.
Stencil = Mapping[int, float]
_FIRST: dict[str, Stencil] = {"central": {-1: -0.5, 1: 0.5},
                              "central4": {-2: 1 / 12, -1: -2 / 3, 1: 2 / 3, 2: -1 / 12}}
_SECOND: dict[str, Stencil] = {"central": {-1: 1.0, 0: -2.0, 1: 1.0},
                               "central4": {-2: -1 / 12, -1: 4 / 3, 0: -5 / 2, 1: 4 / 3, 2: -1 / 12}}
_SMOOTH: Stencil = {-1: 0.5, 0: 1.0, 1: 0.5}  # the 9-point Laplacian's factor

# Which schemes each operator accepts (the first is the default), and their order of accuracy.
SCHEMES: dict[str, tuple[str, ...]] = {
    "dx": ("central", "central4", "fourier"),
    "dy": ("central", "central4", "fourier"),
    "dxx": ("central", "central4", "fourier"),
    "dyy": ("central", "central4", "fourier"),
    "dxy": ("central", "central4", "fourier"),
    "laplacian": ("central", "central4", "nine_point", "fourier"),
}
ORDER = {"central": "2", "central4": "4", "nine_point": "2", "fourier": "spectral"}


@dataclasses.dataclass(frozen=True)
class Grid:
    """A periodic box: ``dims`` (1 or 2) axes of ``size`` points over ``length``."""

    dims: int
    size: int
    length: float

    @property
    def spacing(self) -> float:
        return self.length / self.size

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.size,) * self.dims

    def coordinate(self, axis: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Grid positions along ``axis`` (0: x, 1: y), shaped to broadcast over the grid."""
        pos = torch.arange(self.size, dtype=torch.float64, device=device) * self.spacing
        shape = [1] * self.dims
        shape[axis] = self.size
        return pos.reshape(shape)

    def wavenumbers(self, device: torch.device | str | None = None) -> list[torch.Tensor]:
        """Integer wavenumbers of the ``rfftn`` grid, one tensor per axis, broadcasting to
        ``(n, n//2+1)`` (2-D) or ``(n//2+1,)`` (1-D): full FFT order on every axis but the last."""
        n = self.size
        out = []
        for axis in range(self.dims):
            last = axis == self.dims - 1
            k = (torch.fft.rfftfreq if last else torch.fft.fftfreq)(n, d=1.0 / n, dtype=torch.float64, device=device)
            shape = [1] * self.dims
            shape[axis] = len(k)
            out.append(k.reshape(shape))
        return out

    def rfft(self, a: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfftn(a, dim=tuple(range(-self.dims, 0)))

    def irfft(self, a: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfftn(a, s=self.shape, dim=tuple(range(-self.dims, 0)))


def _apply_stencil(a: torch.Tensor, stencil: Stencil, dim: int) -> torch.Tensor:
    """``sum_o w_o a[i + o]`` along ``dim``, symmetric and antisymmetric pairs of offsets
    combined before scaling (half the multiplications of a plain sum)."""
    out: torch.Tensor | None = None
    done: set[int] = set()
    for o, w in sorted(stencil.items(), key=lambda kv: abs(kv[0])):
        if o in done or w == 0:
            continue
        if o == 0:
            term = a * w if w != 1 else a
        elif stencil.get(-o) == w:
            term = (a.roll(-o, dim) + a.roll(o, dim)) * w
            done.add(-o)
        elif stencil.get(-o) == -w:
            term = (a.roll(-o, dim) - a.roll(o, dim)) * w
            done.add(-o)
        else:
            term = a.roll(-o, dim) * w
        done.add(o)
        out = term if out is None else out + term
    return torch.zeros_like(a) if out is None else out


def _stencil_symbol(stencil: Stencil, k: torch.Tensor, n: int) -> torch.Tensor:
    theta = 2 * math.pi * k / n
    re = sum(w * torch.cos(o * theta) for o, w in stencil.items())
    im = sum(w * torch.sin(o * theta) for o, w in stencil.items())
    return torch.complex(torch.as_tensor(re, dtype=torch.float64), torch.as_tensor(im, dtype=torch.float64))


class Discretization:
    """One operator on one grid with one scheme: ``apply`` in physical space, ``symbol`` in Fourier space."""

    def __init__(self, operator: str, scheme: str, grid: Grid) -> None:
        self.operator, self.scheme, self.grid = operator, scheme, grid
        h = grid.spacing
        ax = {"x": 0, "y": 1}
        # A sum of (coefficient, {axis: 1-D stencil}) products; axes not named are the identity.
        self.products: list[tuple[float, dict[int, Stencil]]] = []
        if scheme == "fourier":
            return
        first, second = _FIRST[scheme if scheme != "nine_point" else "central"], _SECOND.get(scheme, _SECOND["central"])
        if operator in ("dx", "dy"):
            self.products = [(1 / h, {ax[operator[1]]: first})]
        elif operator in ("dxx", "dyy"):
            self.products = [(1 / h**2, {ax[operator[1]]: second})]
        elif operator == "dxy":
            self.products = [(1 / h**2, {0: first, 1: first})]
        elif scheme == "nine_point":
            self.products = [(1 / h**2, {0: _SMOOTH, 1: _SMOOTH}), (-4 / h**2, {})]
        else:  # laplacian
            self.products = [(1 / h**2, {axis: second}) for axis in range(grid.dims)]

    @property
    def is_fourier(self) -> bool:
        return self.scheme == "fourier"

    def _axis_dim(self, axis: int) -> int:
        return axis - self.grid.dims

    def apply(self, a: torch.Tensor, spectrum: torch.Tensor | None = None) -> torch.Tensor:
        """The operator on ``a`` (``(..., *grid.shape)``); ``spectrum``: ``grid.rfft(a)`` if
        already computed (Fourier schemes reuse it)."""
        if self.is_fourier:
            spec = self.grid.rfft(a) if spectrum is None else spectrum
            return self.grid.irfft(spec * self.symbol(a.device, spec.dtype))
        out = None
        for coef, stencils in self.products:
            term = a
            for axis, stencil in stencils.items():
                term = _apply_stencil(term, stencil, self._axis_dim(axis))
            term = term * coef
            out = term if out is None else out + term
        assert out is not None
        return out

    def symbol(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.complex128) -> torch.Tensor:
        """Its eigenvalues on the ``rfftn`` grid: ``rfft(apply(a)) = symbol * rfft(a)`` (computed
        in complex128, cached per device and dtype)."""
        key = (str(torch.device(device or "cpu")), dtype)
        cache = self.__dict__.setdefault("_symbols", {})
        if key not in cache:
            cache[key] = self._symbol(device).to(dtype)
        return cache[key]

    def _symbol(self, device: torch.device | str | None) -> torch.Tensor:
        g, n = self.grid, self.grid.size
        k = g.wavenumbers(device)
        shape = torch.broadcast_shapes(*(x.shape for x in k))
        if self.is_fourier:
            scale = 2 * math.pi / g.length
            ik = [torch.where(x.abs() == n / 2, 0.0, x * scale) * 1j for x in k]  # odd derivatives
            kk = [-(x * scale) ** 2 + 0j for x in k]  # even ones keep the Nyquist mode
            ax = {"x": 0, "y": 1}
            if self.operator in ("dx", "dy"):
                out = ik[ax[self.operator[1]]]
            elif self.operator in ("dxx", "dyy"):
                out = kk[ax[self.operator[1]]]
            elif self.operator == "dxy":
                out = ik[0] * ik[1]
            else:
                out = sum(kk)
            return torch.broadcast_to(out, shape).to(torch.complex128)
        out = torch.zeros(shape, dtype=torch.complex128, device=device)
        for coef, stencils in self.products:
            term = torch.full(shape, coef, dtype=torch.complex128, device=device)
            for axis, stencil in stencils.items():
                term = term * _stencil_symbol(stencil, k[axis], n)
            out = out + term
        return out

    def is_real(self) -> bool:
        """Whether the symbol is real (even derivatives): what an exponential integrator takes exactly."""
        return bool(self.symbol().imag.abs().max() <= 1e-12 * max(1.0, float(self.symbol().abs().max())))

    def describe(self) -> str:
        return f"{self.operator}: {self.scheme} (order {ORDER[self.scheme]})"
