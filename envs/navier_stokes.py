"""2D incompressible Navier-Stokes in vorticity form on the periodic unit square (LEADS / CoDA).

    w_t + u·∇w = ν Δw + f,    u = (ψ_y, −ψ_x),  −Δψ = w,
    f = A (sin 2π(x+y) + cos 2π(x+y)),  A = 0.1,

with x along axis −2 and y along axis −1, as in the reference code. Pseudo-spectral: products in
physical space, the advection term dealiased by the 2/3 rule. The viscous term, one ν per
trajectory, is integrated exactly by ETDRK4 (``leads.envs.spectral``); the reference's Crank-Nicolson /
forward-Euler scheme is first order and needs dt=1e-3, ETDRK4 is fourth order and reaches ~1e-7
relative error at a 50x longer step (benchmarks/datagen.py).

Initial vorticity: the Gaussian random field of the FNO/LEADS code (α=2.5, τ=7), one generator per
seed, then ``warmup`` time units (protocol: 30) of the trajectory's own equation (its ν), as the
reference does. Data version 2: version 1 warmed every environment up at one ν.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from leads.envs.base import Env, System, seed_rng
from leads.envs.errors import UserError
from leads.envs.spectral import check_batch, integrate, rfft_wavenumbers


def _envs(nus: Sequence[float]) -> list[Env]:
    return [{"nu": nu} for nu in nus]


class NavierStokes(System):
    name = "navier_stokes"
    param_names = ("nu",)
    state_names = ("w",)
    data_version = 3  # 2: warm-up at each trajectory's own viscosity; 3: seed_rng
    defaults: dict[str, Any] = {
        "size": 32,
        "forcing_amplitude": 0.1,
        "ic_alpha": 2.5,
        "ic_tau": 7.0,
        # Protocol value. It costs 3x the training horizon (1.5x the test one) in solver time.
        "warmup": 30.0,
        "train_envs": _envs((0.8e-3, 0.9e-3, 1.0e-3, 1.1e-3, 1.2e-3)),
        "heldout": {
            "interp": _envs((0.85e-3, 0.95e-3, 1.05e-3, 1.15e-3)),
            "extrap": _envs((0.7e-3, 1.3e-3)),
        },
        "dt": 1.0,
        "horizon": 10.0,
        # Measured: relative L2 ~2e-7 against DOP853 (rtol=atol=1e-10) over 20 time units, budget
        # 1e-4. h = 0.1 would halve the cost but sits near the explicit stages' advective stability
        # limit (h = 0.15 diverges at nu = 5e-4).
        "solver_dt": 0.05,
    }

    # ----------------------------------------------------------------- config
    def param_ranges(self) -> dict[str, tuple[float, float]]:
        return {"nu": (0.0, math.inf)}

    def check_env(self, env: Env) -> None:
        super().check_env(env)
        if env["nu"] <= 0:
            raise UserError(f"{self.name} parameter nu={env['nu']} must be strictly positive (a viscosity)")

    def _check_config(self) -> None:
        super()._check_config()
        self._check_numbers(positive=("ic_tau", "solver_dt"), non_negative=("forcing_amplitude", "ic_alpha", "warmup"))
        self._check_grid_sizes("size")

    # ----------------------------------------------------------------- interface
    @property
    def state_shape(self) -> tuple[int, ...]:
        n = self.config["size"]
        return (1, n, n)

    @property
    def solver_description(self) -> str:
        return (
            f"pseudo-spectral, 2/3 dealiasing, ETDRK4 (Cox-Matthews, Kassam-Trefethen contour "
            f"coefficients), float64, step <= {self.config['solver_dt']}; initial states: GRF "
            f"(alpha={self.config['ic_alpha']}, tau={self.config['ic_tau']}) warmed up "
            f"{self.config['warmup']} under each trajectory's own equation"
        )

    def sample_initial_states(self, seeds: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
        """The random fields of ``seeds``, before warm-up."""
        if not len(seeds):
            return torch.zeros(0, *self.state_shape, dtype=torch.float64, device=device)
        return torch.stack([self.random_field(s) for s in seeds]).to(device)

    def initial_states(self, seeds: Sequence[int], params: torch.Tensor,
                       device: torch.device | str | None = None) -> torch.Tensor:
        """The random fields warmed up for ``warmup`` time units under each row's own ν."""
        w0 = self.sample_initial_states(seeds, device)
        T = float(self.config["warmup"])
        if T == 0 or len(seeds) == 0:
            return w0
        return self.solve(w0, params.to(w0.device), np.array([0.0, T]))[:, -1]

    def random_field(self, seed: int) -> torch.Tensor:
        """The reference code's Gaussian random field, ``(1, n, n)`` float64, before warm-up:
        spectrum ``sqrt(2) σ n² (4π²|k|² + τ²)^(−α/2)`` with ``σ = τ^(α−1)``, zero mean."""
        rng = seed_rng(seed)
        c, n = self.config, self.config["size"]
        alpha, tau = float(c["ic_alpha"]), float(c["ic_tau"])
        k = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64)
        k2 = k[:, None] ** 2 + k[None, :] ** 2
        sigma = tau ** (0.5 * (2 * alpha - 2))
        sqrt_eig = n**2 * math.sqrt(2.0) * sigma * (4 * math.pi**2 * k2 + tau**2) ** (-alpha / 2)
        sqrt_eig[0, 0] = 0.0
        # A generator per seed: the same field on every device and in every batch. Complex normal
        # coefficients of unit variance (real and imaginary parts of variance 1/2, as torch.randn's).
        coeff = torch.from_numpy(rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))) / math.sqrt(2)
        return torch.fft.ifft2(sqrt_eig * coeff).real.unsqueeze(0)

    def forcing(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The forcing field ``(n, n)``, float64."""
        return self.config["forcing_amplitude"] * self.forcing_pattern(device)

    def forcing_pattern(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``sin 2π(x+y) + cos 2π(x+y)``, the forcing at unit amplitude, ``(n, n)`` float64."""
        n = self.config["size"]
        x = torch.arange(n, dtype=torch.float64, device=device) / n
        s = 2 * math.pi * (x[:, None] + x[None, :])
        return torch.sin(s) + torch.cos(s)

    # ETDRK4 (solve) takes `viscosity` as its exact linear part and `advection` + `forcing` as N.
    terms = {"advection": (), "viscosity": ("nu",), "forcing": ("forcing_amplitude",)}
    constants = ("forcing_amplitude",)

    # Terms compute on the vorticity w = u[:, 0]; parameters broadcast against it.
    def term_advection(self, t: Any, u: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
        n = self.config["size"]
        ops = VorticityOperators(n, u.device, u.dtype)
        return torch.fft.irfft2(ops.advection_hat(torch.fft.rfft2(u[:, 0])), s=(n, n)).unsqueeze(1)

    def term_viscosity(self, t: Any, u: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
        n = self.config["size"]
        ops = VorticityOperators(n, u.device, u.dtype)
        return torch.fft.irfft2(-p["nu"] * ops.k2 * torch.fft.rfft2(u[:, 0]), s=(n, n)).unsqueeze(1)

    def term_forcing(self, t: Any, u: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
        f = p["forcing_amplitude"] * self.forcing_pattern(u.device).to(u.dtype)
        return f.expand_as(u[:, 0]).unsqueeze(1)

    def stiffness(self, names: Sequence[str], values: Mapping[str, torch.Tensor | float]) -> float:
        """Viscosity's rate is nu |k|^2 at the largest wavenumber, (2 pi)^2 2 (n/2)^2 nu."""
        if "viscosity" not in names:
            return 0.0
        nu = float(torch.as_tensor(values["nu"]).abs().max())
        return nu * 8 * math.pi**2 * (self.config["size"] // 2) ** 2

    def solve(self, u0: torch.Tensor, params: torch.Tensor, t: np.ndarray) -> torch.Tensor:
        n = self.config["size"]
        check_batch(u0, params, self.state_shape, len(self.param_names))
        if not bool((params > 0).all()):
            raise UserError(f"{self.name} viscosities must be strictly positive, got {params.min().item():g}")
        u0 = u0.to(torch.float64)
        nu = params.to(device=u0.device, dtype=torch.float64)[:, 0, None, None, None]
        ops = VorticityOperators(n, u0.device, torch.float64)
        L = -nu * ops.k2
        f_hat = torch.fft.rfft2(self.forcing(u0.device))

        def nonlinear(wh: torch.Tensor) -> torch.Tensor:
            return ops.advection_hat(wh) + f_hat

        def observe(wh: torch.Tensor) -> torch.Tensor:
            return torch.fft.irfft2(wh, s=(n, n))

        return integrate(torch.fft.rfft2(u0), L, nonlinear, t, self.config["solver_dt"], observe)


class VorticityOperators:
    """Spectral operators of the 2D vorticity equation on the periodic square of side ``length``,
    on the ``rfft2`` grid of an ``n x n`` field, in ``dtype`` (real).

    ``length`` is a number, or a tensor that broadcasts against the spectra (``(B, 1, 1, 1)`` for
    ``(B, 1, n, n//2+1)``): one side per trajectory (kolmogorov). Built from tensors with autograd,
    so a learned ``length`` gets gradients.
    """

    def __init__(self, n: int, device: torch.device | str, dtype: torch.dtype,
                 length: float | torch.Tensor = 1.0) -> None:
        real = length.dtype if isinstance(length, torch.Tensor) else torch.float64
        kx, ky = (k.to(real) for k in rfft_wavenumbers(n, device))
        self.n = n
        scale = 2 * math.pi / length  # physical wavenumber of integer mode 1
        m2 = kx**2 + ky**2
        # The mean of ψ is arbitrary; w has zero mean. Built in integer modes, so no 1/0 even in a gradient.
        inv_m2 = torch.where(m2 > 0, 1 / torch.where(m2 > 0, m2, 1.0), 0.0)
        # First derivatives drop the Nyquist modes, whose derivative has no real representation.
        kx_d = torch.where(kx.abs() == n // 2, 0.0, kx)
        ky_d = torch.where(ky.abs() == n // 2, 0.0, ky)
        cut = (2.0 / 3.0) * (n // 2)
        dealias = (kx.abs() <= cut) & (ky.abs() <= cut)
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        self.k2, self.inv_k2 = (scale**2 * m2).to(dtype), (inv_m2 / scale**2).to(dtype)
        self.dealias = dealias.to(dtype)
        self.ikx, self.iky = (1j * scale * kx_d).to(cdtype), (1j * scale * ky_d).to(cdtype)

    def advection_hat(self, wh: torch.Tensor) -> torch.Tensor:
        """``−FFT(u·∇w)``, 2/3-dealiased, from the spectrum of ``w``."""
        psi = wh * self.inv_k2
        spectra = torch.stack((self.iky * psi, -self.ikx * psi, self.ikx * wh, self.iky * wh))
        ux, uy, wx, wy = torch.fft.irfft2(spectra, s=(self.n, self.n)).unbind(0)
        return -self.dealias * torch.fft.rfft2(ux * wx + uy * wy)
