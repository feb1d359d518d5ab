"""pyqg's two-layer quasi-geostrophic model as batched torch operators (any grid, CPU or GPU).

On the doubly periodic square of side L, layer 1 on top (thickness H1 = δ H2), x along the last
axis and y along the one before (pyqg's ``(nz, ny, nx)`` layout):

    ∂t q_i + J(ψ_i, q_i) + U_i ∂x q_i + Q_i ∂x ψ_i = −δ_i2 r_ek ∇²ψ_2       (then pyqg's filter)
    q_1 = ∇²ψ_1 + F_1 (ψ_2 − ψ_1),    q_2 = ∇²ψ_2 + F_2 (ψ_1 − ψ_2),
    F_1 = 1 / (r_d² (1 + δ)),   F_2 = δ F_1,   Q_1 = β + F_1 (U_1 − U_2),   Q_2 = β − F_2 (U_1 − U_2),

q_i the potential-vorticity anomaly of layer i, ψ_i its streamfunction (u = −∂y ψ, v = ∂x ψ).
Pseudo-spectral as pyqg's kernel: products in physical space, no dealiasing; the small scales are
removed by pyqg's exponential filter, ``q̂ ← exp(−a (κ dx − 0.65π)⁴) q̂`` where κ dx > 0.65π, after
every step (a = ``filterfac``). ``QGModel.step`` is pyqg's third-order Adams-Bashforth step (Euler,
then AB2, then AB3) followed by the filter, so a trajectory is pyqg's to rounding
(tests/test_qg_ocean.py, benchmarks/qg_pyqg.py).

Every parameter may be a float or a ``(B,)`` tensor (one environment per trajectory).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import torch

Param = torch.Tensor | float
PARAMS = ("beta", "rek", "delta", "rd", "U1", "U2")
# pyqg's filter starts at this nondimensional wavenumber (κ dx = 0.65π; 2/3 of Nyquist is 0.67π).
FILTER_START = 0.65 * math.pi


def column(value: Param, like: torch.Tensor) -> torch.Tensor:
    """A parameter as a ``(B or 1, 1, 1, 1)`` real tensor that broadcasts against ``(B, 2, n, m)``."""
    return torch.as_tensor(value, dtype=like.dtype, device=like.device).reshape(-1, 1, 1, 1)


class Grid:
    """Wavenumbers of the ``rfft2`` spectra of ``n x n`` fields on a square of side ``length`` (m):
    ``k`` (x, last axis) ``(1, 1, 1, n//2+1)``, ``l`` (y) ``(1, 1, n, 1)``, ``kappa2`` = k² + l²."""

    def __init__(self, n: int, length: float, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float64) -> None:
        self.n, self.length = n, float(length)
        step = 2 * math.pi / self.length
        self.k = (torch.fft.rfftfreq(n, d=1.0 / n, dtype=dtype, device=device) * step).reshape(1, 1, 1, -1)
        self.l = (torch.fft.fftfreq(n, d=1.0 / n, dtype=dtype, device=device) * step).reshape(1, 1, -1, 1)
        self.ik, self.il = 1j * self.k, 1j * self.l
        self.kappa2 = self.k**2 + self.l**2


@functools.lru_cache(maxsize=32)
def grid(n: int, length: float, device: torch.device | str | None = None, dtype: torch.dtype = torch.float64) -> Grid:
    """A cached ``Grid`` (terms on the observed grid are evaluated many times per rollout)."""
    return Grid(n, length, device, dtype)


def couplings(delta: Param, rd: Param, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(F1, F2)`` as ``(B or 1, 1, 1, 1)`` columns."""
    F1 = column(rd, like) ** -2 / (1 + column(delta, like))
    return F1, column(delta, like) * F1


def invert(g: Grid, qh: torch.Tensor, F1: torch.Tensor, F2: torch.Tensor) -> torch.Tensor:
    """ψ̂ from q̂ (``(B, 2, n, n//2+1)``): the 2x2 system of each wavenumber solved in closed form,
    determinant κ²(κ² + F1 + F2); the mean (κ = 0) streamfunction is 0."""
    k2 = g.kappa2
    det = k2 * (k2 + F1 + F2)
    inv = torch.where(det > 0, 1 / torch.where(det > 0, det, torch.ones_like(det)), torch.zeros_like(det))
    q1, q2 = qh[:, :1], qh[:, 1:]
    return torch.cat(((-(k2 + F2) * q1 - F1 * q2) * inv, (-F2 * q1 - (k2 + F1) * q2) * inv), dim=1)


def advection(g: Grid, qh: torch.Tensor, psih: torch.Tensor) -> torch.Tensor:
    """−J(ψ_i, q_i) = −∂x(u q) − ∂y(v q), spectral, the products on the grid (no dealiasing)."""
    u, v, q = torch.fft.irfft2(torch.stack((-g.il * psih, g.ik * psih, qh)), s=(g.n, g.n))
    flux = torch.fft.rfft2(torch.stack((u * q, v * q)))
    return -(g.ik * flux[0] + g.il * flux[1])


def lower_layer(x: torch.Tensor) -> torch.Tensor:
    """``x`` on layer 2 and zero on layer 1 (bottom drag acts on the lower layer only)."""
    return torch.cat((torch.zeros_like(x[:, :1]), x[:, 1:]), dim=1)


class QGModel:
    """The two-layer model on an ``n x n`` grid for a batch of parameter sets.

    Args:
        n: grid points per side.
        length: the side L of the square (m).
        params: ``beta``, ``rek``, ``delta``, ``rd``, ``U1``, ``U2`` (SI units), each a float or a
            ``(B,)`` tensor.
        filterfac: the filter's amplitude a (pyqg: 23.6); None: no filter (the inviscid model).
        device, dtype: of the operators (float64 for data).
    """

    def __init__(self, n: int, length: float, params: Mapping[str, Param], filterfac: float | None = 23.6,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float64) -> None:
        self.grid = g = grid(n, float(length), None if device is None else torch.device(device), dtype)
        p = {name: column(params[name], g.k) for name in PARAMS}
        self.delta, self.beta, self.rek = p["delta"], p["beta"], p["rek"]
        self.F1, self.F2 = couplings(p["delta"], p["rd"], g.k)
        shear = p["U1"] - p["U2"]
        self.U = torch.cat(torch.broadcast_tensors(p["U1"], p["U2"]), dim=1)  # (B, 2, 1, 1)
        # The PV gradients of the mean flow: β plus the shear's ±F_i (U1 − U2).
        self.Qy = torch.cat(torch.broadcast_tensors(p["beta"] + self.F1 * shear, p["beta"] - self.F2 * shear), dim=1)
        self.filter = None if filterfac is None else torch.exp(filter_exponent(n, filterfac, g.k.device, dtype))
        # Per wavenumber, ψ̂ = A q̂ and the linear terms are C q̂ (2x2 each): built once, applied
        # every step. invert() is A applied to the identity's columns.
        one = torch.ones_like(g.kappa2, dtype=g.ik.dtype)
        units = [torch.cat((one, 0 * one), dim=1), torch.cat((0 * one, one), dim=1)]  # q̂ = 1 in layer 1, 2
        self._A = [invert(g, unit, self.F1, self.F2) for unit in units]  # the columns of A
        self._C = [self._linear(unit, column) for unit, column in zip(units, self._A)]

    def _linear(self, qh: torch.Tensor, psih: torch.Tensor) -> torch.Tensor:
        """The linear terms: the mean flow's advection −ik(U q̂ + Q ψ̂) and the drag −r_ek ∇²ψ_2."""
        g = self.grid
        return -g.ik * (self.U * qh + self.Qy * psih) + lower_layer(self.rek * g.kappa2 * psih)

    @staticmethod
    def _apply(columns: list[torch.Tensor], qh: torch.Tensor) -> torch.Tensor:
        return columns[0] * qh[:, :1] + columns[1] * qh[:, 1:]

    def invert(self, qh: torch.Tensor) -> torch.Tensor:
        return self._apply(self._A, qh)

    def tendency(self, qh: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        """dq̂/dt of every term but the filter (pyqg's ``dqhdt``) of the trajectories ``rows`` of
        the model's batch, whose spectra are ``qh``."""
        g = self.grid
        A, C = ([col[rows] if col.shape[0] > 1 else col for col in cols] for cols in (self._A, self._C))
        psih = self._apply(A, qh)
        u, v, q = torch.fft.irfft2(torch.stack((-g.il * psih, g.ik * psih, qh)), s=(g.n, g.n))
        flux = torch.fft.rfft2(torch.stack((u * q, v * q)))
        out = C[0] * qh[:, :1]
        return out.addcmul_(C[1], qh[:, 1:]).sub_(g.ik * flux[0]).sub_(g.il * flux[1])

    # On a CPU the batch is stepped in chunks of trajectories whose work stays in cache, this many
    # grid points a chunk (4 trajectories on 64², 1 on 256²): measured 0.34 against 0.59 ms per
    # trajectory-step for a batch of 32 on 64² (one thread); on a GPU the batch is one chunk.
    cpu_chunk_points = 4 * 64 * 64

    def step(self, qh: torch.Tensor, history: list[torch.Tensor], dt: float) -> torch.Tensor:
        """pyqg's step: Adams-Bashforth of order 1, 2, then 3 (``history`` holds the earlier
        tendencies, newest first, and is updated in place), then the filter."""
        batch = qh.shape[0]
        chunk = max(1, self.cpu_chunk_points // self.grid.n**2) if qh.device.type == "cpu" else batch
        rates, news = [], []
        for start in range(0, batch, chunk):
            rows = slice(start, min(batch, start + chunk))
            rate = self.tendency(qh[rows], rows)
            if not history:
                new = torch.add(qh[rows], rate, alpha=dt)
            elif len(history) == 1:
                new = torch.add(qh[rows], rate, alpha=1.5 * dt).add_(history[0][rows], alpha=-0.5 * dt)
            else:
                new = torch.add(qh[rows], rate, alpha=23 / 12 * dt).add_(history[0][rows], alpha=-16 / 12 * dt)
                new.add_(history[1][rows], alpha=5 / 12 * dt)
            rates.append(rate)
            news.append(new if self.filter is None else new.mul_(self.filter))
        history[:] = [torch.cat(rates) if len(rates) > 1 else rates[0], *history[:1]]
        return torch.cat(news) if len(news) > 1 else news[0]

    # ----------------------------------------------------------------- diagnostics
    def energy(self, qh: torch.Tensor) -> torch.Tensor:
        """Total energy per unit mass, ``(B,)``: kinetic ½ Σ_i (H_i/H) <|∇ψ_i|²> plus available
        potential ½ (H_1/H) F_1 <(ψ_1 − ψ_2)²> (H_1/H = δ / (1 + δ)); conserved by the inviscid
        model without mean shear (U_1 = U_2, r_ek = 0, no filter)."""
        psih = self.invert(qh)
        h1 = (self.delta / (1 + self.delta)).reshape(-1, 1)
        weights = torch.cat((h1, 1 - h1), dim=1)  # (B or 1, 2)
        ke = 0.5 * (weights * mean_square(torch.sqrt(self.grid.kappa2) * psih, self.grid.n)).sum(1)
        ape = 0.5 * h1[:, 0] * self.F1.reshape(-1) * mean_square(psih[:, :1] - psih[:, 1:], self.grid.n)[:, 0]
        return ke + ape

    def enstrophy(self, qh: torch.Tensor) -> torch.Tensor:
        """½ Σ_i (H_i/H) <q_i²>, ``(B,)``: conserved by the inviscid model without mean shear."""
        h1 = (self.delta / (1 + self.delta)).reshape(-1, 1)
        return 0.5 * (torch.cat((h1, 1 - h1), dim=1) * mean_square(qh, self.grid.n)).sum(1)

    def layer_kinetic_energy(self, qh: torch.Tensor) -> torch.Tensor:
        """½ <|∇ψ_i|²> of each layer, ``(B, 2)``."""
        return 0.5 * mean_square(torch.sqrt(self.grid.kappa2) * self.invert(qh), self.grid.n)


def mean_square(fh: torch.Tensor, n: int) -> torch.Tensor:
    """<f²> over the grid of real fields given by their ``rfft2`` spectra ``(..., n, n//2+1)``
    (Parseval: the columns 1 .. n/2−1 of the half spectrum stand for two modes each)."""
    weight = torch.full((fh.shape[-1],), 2.0, dtype=fh.real.dtype, device=fh.device)
    weight[0] = 1.0
    if n % 2 == 0:
        weight[-1] = 1.0
    return (fh.abs() ** 2 * weight).sum((-2, -1)) / n**4


def filter_exponent(n: int, filterfac: float, device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``log`` of pyqg's filter on an ``n x n`` grid (of any side: it depends on κ dx = 2π m / n
    only), ``(1, 1, n, n//2+1)``: 0 up to κ dx = 0.65π, ``−filterfac (κ dx − 0.65π)⁴`` beyond."""
    k = torch.fft.rfftfreq(n, d=1.0 / n, dtype=dtype, device=device).reshape(1, -1) * (2 * math.pi / n)
    l = torch.fft.fftfreq(n, d=1.0 / n, dtype=dtype, device=device).reshape(-1, 1) * (2 * math.pi / n)
    excess = (torch.sqrt(k**2 + l**2) - FILTER_START).clamp_min(0.0)
    return (-filterfac * excess**4).reshape(1, 1, n, n // 2 + 1)
