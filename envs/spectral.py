"""Fourier-space tools shared by the periodic 2D PDE systems.

Both PDE systems are ``dv/dt = L v + N(v)`` with ``L`` diagonal in Fourier space (diffusion,
linear decay). The exponential integrator here (Navier-Stokes' solver, Gray-Scott's ``etdrk4``
option) is ETDRK4 (Cox & Matthews 2002) with its coefficients evaluated by the contour-integral
mean of Kassam & Trefethen (2005), which avoids the cancellation of the closed-form
phi-functions when ``h L`` is near zero. Everything is batched (leading dimensions broadcast
against ``L``), so each trajectory may carry its own ``L``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from leads.envs.errors import UserError

Nonlinear = Callable[..., torch.Tensor]  # N(v), or N(v, t) for a non-autonomous part


def rfft_wavenumbers(n: int, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer wavenumbers of an ``rfft2`` grid of an ``n x n`` field, float64.

    Returns ``(kx, ky)`` of shapes ``(n, 1)`` (axis -2, full FFT order) and ``(1, n//2+1)``
    (axis -1, half spectrum); they broadcast to the spectrum's shape.
    """
    kx = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64, device=device).reshape(n, 1)
    ky = torch.fft.rfftfreq(n, d=1.0 / n, dtype=torch.float64, device=device).reshape(1, n // 2 + 1)
    return kx, ky


def substeps(t: np.ndarray, max_step: float) -> list[tuple[float, int]]:
    """For each observation interval, the ``(step, count)`` of equal steps no longer than
    ``max_step`` that land exactly on the next observation time."""
    out = []
    for dt in np.diff(np.asarray(t, dtype=np.float64)):
        n = max(1, math.ceil(dt / max_step - 1e-9))
        out.append((float(dt) / n, n))
    return out


class ETDRK4:
    """Coefficients and step of ETDRK4 for ``dv/dt = L v + N(v)`` with real diagonal ``L``.

    ``L`` is a real tensor broadcastable against the spectra ``v``; ``h`` the step. The
    phi-function coefficients are means over ``n_contour`` points on the upper half of the
    unit circle around each ``h L`` (real ``L`` makes the lower half the conjugate).
    """

    def __init__(self, L: torch.Tensor, h: float, n_contour: int = 32) -> None:
        if L.is_complex():
            raise TypeError("ETDRK4 here needs a real linear operator (the contour uses its symmetry)")
        self.h = h
        hL = h * L.to(torch.float64)
        self.E = torch.exp(hL)
        self.E2 = torch.exp(hL / 2)
        sums = [torch.zeros_like(hL) for _ in range(4)]
        # One contour point at a time: memory stays that of L, whatever the batch.
        for j in range(n_contour):
            z = hL + complex(math.cos(math.pi * (j + 0.5) / n_contour), math.sin(math.pi * (j + 0.5) / n_contour))
            ez, z3 = torch.exp(z), z**3
            terms = (
                (torch.exp(z / 2) - 1) / z,
                (-4 - z + ez * (4 - 3 * z + z * z)) / z3,
                (2 + z + ez * (z - 2)) / z3,
                (-4 - 3 * z - z * z + ez * (4 - z)) / z3,
            )
            for acc, term in zip(sums, terms):
                acc += term.real
        self.Q, self.f1, self.f2, self.f3 = (h * acc / n_contour for acc in sums)

    def to(self, dtype: torch.dtype, device: torch.device | str | None = None) -> ETDRK4:
        """The coefficients in ``dtype`` (computed in float64), e.g. for float32 spectra, on ``device``."""
        for name in ("E", "E2", "Q", "f1", "f2", "f3"):
            setattr(self, name, getattr(self, name).to(device=device, dtype=dtype))
        return self

    def step(self, v: torch.Tensor, nonlinear: Nonlinear, t: float | torch.Tensor | None = None) -> torch.Tensor:
        """One step from spectrum ``v``; with ``t`` (the step's start time) ``nonlinear`` is
        called as ``nonlinear(v, time)`` at the stages' times t, t + h/2, t + h/2, t + h."""

        def at(x: torch.Tensor, c: float) -> torch.Tensor:
            return nonlinear(x) if t is None else nonlinear(x, t + c * self.h)

        Nv = at(v, 0.0)
        a = self.E2 * v + self.Q * Nv
        Na = at(a, 0.5)
        b = self.E2 * v + self.Q * Na
        Nb = at(b, 0.5)
        c = self.E2 * a + self.Q * (2 * Nb - Nv)
        Nc = at(c, 1.0)
        return self.E * v + self.f1 * Nv + 2 * self.f2 * (Na + Nb) + self.f3 * Nc


def integrate(
    v0: torch.Tensor,
    L: torch.Tensor,
    nonlinear: Nonlinear,
    t: Sequence[float] | np.ndarray,
    max_step: float,
    observe: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """ETDRK4 from spectrum ``v0`` at ``t[0]``; returns ``observe(v)`` at every ``t``, stacked on
    dim 1. Steps are the longest ones ``<= max_step`` that hit each observation time exactly."""
    t = np.asarray(t, dtype=np.float64)
    if t.ndim != 1 or len(t) < 1 or np.any(np.diff(t) <= 0):
        raise UserError(f"observation times must be a strictly increasing 1D array, got {t!r}")
    schemes: dict[float, ETDRK4] = {}
    v = v0
    out = [observe(v)]
    for h, n in substeps(t, max_step):
        key = round(h, 12)
        if key not in schemes:
            schemes[key] = ETDRK4(L, h)
        scheme = schemes[key]
        for _ in range(n):
            v = scheme.step(v, nonlinear)
        out.append(observe(v))
    return torch.stack(out, dim=1)


def check_batch(u0: torch.Tensor, params: torch.Tensor, state_shape: tuple[int, ...], n_params: int) -> None:
    """``UserError`` unless ``u0`` is ``(B, *state_shape)`` and ``params`` is ``(B, n_params)``."""
    if u0.ndim != len(state_shape) + 1 or tuple(u0.shape[1:]) != tuple(state_shape):
        expected = ", ".join(str(s) for s in state_shape)
        raise UserError(f"initial states have shape {tuple(u0.shape)}; expected (batch, {expected})")
    if tuple(params.shape) != (u0.shape[0], n_params):
        raise UserError(f"params have shape {tuple(params.shape)}; expected ({u0.shape[0]}, {n_params})")
