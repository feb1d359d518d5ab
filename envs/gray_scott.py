"""Gray-Scott reaction-diffusion on a periodic grid (LEADS / CoDA / GEPS protocol).

    u_t = D_u Δu − u v² + F (1 − u),    v_t = D_v Δv + u v² − (F + k) v

with Δ the 9-point stencil (−3 centre, ½ edges, ¼ corners, over dx²) of the reference code.

Solver. What limits the step is the reaction, not diffusion: the stencil's spectrum lies in
[−4, 0]/dx², so D Δ is barely stiff, and ETDRK4, which takes the (Fourier-diagonal) linear part
exactly, still needs h = 0.25 (6400 RHS evaluations over t ∈ [0, 400]) for a few 1e-6 relative
L2 error. Adaptive Dormand-Prince 5(4) at rtol = atol = 1e-7 needs ~1300 evaluations for ~1e-7
(short steps through the initial transient, long ones after), measured against DOP853 at
rtol = atol = 1e-10 (tests/test_envs_pdes.py, benchmarks/datagen.py). So the default is the
batched dopri5 of ``leads.envs.solvers`` (one step size per trajectory) on the 9-point stencil in
physical space; ``solver: etdrk4`` keeps the Fourier-space scheme for comparison.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from leads.envs.base import Env, System, seed_rng
from leads.envs.errors import UserError
from leads.envs.solvers import dopri5
from leads.envs.spectral import check_batch, integrate, rfft_wavenumbers


def _grid(values_f: Sequence[float], values_k: Sequence[float]) -> list[Env]:
    return [{"F": f, "k": k} for f in values_f for k in values_k]


def stencil_symbol(n: int, dx: float, device: torch.device | str | None = None) -> torch.Tensor:
    """Eigenvalues of the periodic 9-point Laplacian on the ``rfft2`` grid, ``(n, n//2+1)``.

    Edges contribute ½·2cos θ per axis and corners ¼·4 cos θx cos θy."""
    kx, ky = rfft_wavenumbers(n, device)
    cx, cy = torch.cos(2 * math.pi * kx / n), torch.cos(2 * math.pi * ky / n)
    return (-3 + cx + cy + cx * cy) / dx**2


def laplacian_9pt(a: torch.Tensor, dx: float) -> torch.Tensor:
    """The 9-point Laplacian over the last two (periodic) axes, in physical space.

    It factors as ``S_x S_y − 4`` with ``S = [½, 1, ½]`` along each axis: two shifted sums
    instead of eight shifted copies. The shifts are ``torch.roll``s, whose backward is a roll:
    slices of a padded copy each fill and copy a zero buffer in the backward pass, which made
    the hybrid models' known terms 1.6-2.5x slower (fwd+bwd, 16 x 2 x 32 x 32, one thread)."""
    s = a + 0.5 * (a.roll(1, -2) + a.roll(-1, -2))
    s = s + 0.5 * (s.roll(1, -1) + s.roll(-1, -1))
    return (s - 4 * a) / dx**2


def per_channel(u: torch.Tensor, *values: torch.Tensor | float) -> torch.Tensor:
    """One coefficient per channel of ``u`` ``(B, C, ...)``, each a float or a per-sample
    ``(B, 1, ...)`` column: ``(1 or B, C, 1, ...)``, so a term is one product, not a stack."""
    cols = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=u.dtype, device=u.device) for v in values))
    return torch.stack(cols, dim=-1).reshape(-1, len(values), *[1] * (u.dim() - 2))


# On CPU, solving 64 trajectories at a time keeps more of the working set in cache: measured
# 1.2x faster than 128 at once on 2 cores. Accelerators take the whole batch.
_CPU_CHUNK = 64
SOLVERS = ("dopri5", "etdrk4")


class GrayScott(System):
    name = "gray_scott"
    param_names = ("F", "k")
    state_names = ("u", "v")
    defaults: dict[str, Any] = {
        "D_u": 0.2097,
        "D_v": 0.105,
        "size": 32,
        "dx": 1.0,
        "n_squares": 3,
        "square_size": 3,
        "train_envs": _grid((0.030, 0.039), (0.058, 0.062)),
        "heldout": {
            "interp": _grid((0.033, 0.036), (0.059, 0.061)),
            "extrap": _grid((0.033, 0.042), (0.057, 0.060)),
        },
        "dt": 10.0,
        "horizon": 200.0,
        "solver": "dopri5",
        # dopri5 tolerances: ~1e-7 relative L2 error over [0, 400] (the budget is 1e-5).
        "rtol": 1e-7,
        "atol": 1e-7,
        # etdrk4 step: h = 0.5 gave up to 3.6e-5 relative L2 error over [0, 400] on some seeds;
        # 0.25 stays below ~3e-6.
        "solver_dt": 0.25,
    }

    # ----------------------------------------------------------------- config
    def param_ranges(self) -> dict[str, tuple[float, float]]:
        return {"F": (0.0, math.inf), "k": (0.0, math.inf)}

    def _check_config(self) -> None:
        super()._check_config()
        c = self.config
        for key in ("D_u", "D_v", "dx", "solver_dt", "rtol", "atol"):
            v = c[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                raise UserError(f"system.{key}={v!r} of {self.name} must be a positive finite number")
        for key in ("size", "square_size", "n_squares"):
            if isinstance(c[key], bool) or not isinstance(c[key], int) or c[key] < 0:
                raise UserError(f"system.{key}={c[key]!r} of {self.name} must be a non-negative integer")
        if c["size"] < 4:
            raise UserError(f"system.size={c['size']} of {self.name} must be at least 4")
        if not 1 <= c["square_size"] < c["size"]:
            raise UserError(f"system.square_size={c['square_size']} of {self.name} must be in [1, size={c['size']})")
        if c["solver"] not in SOLVERS:
            raise UserError(f"system.solver={c['solver']!r} of {self.name} must be one of {', '.join(SOLVERS)}")

    # ----------------------------------------------------------------- interface
    @property
    def state_shape(self) -> tuple[int, ...]:
        n = self.config["size"]
        return (2, n, n)

    @property
    def solver_description(self) -> str:
        c = self.config
        if c["solver"] == "dopri5":
            return f"dopri5 (adaptive, step per trajectory), rtol={c['rtol']:g}, atol={c['atol']:g}, float64"
        return (
            f"etdrk4 in Fourier space (Cox-Matthews, Kassam-Trefethen contour coefficients), "
            f"step <= {c['solver_dt']:g}, float64"
        )

    def sample_initial_states(self, seeds: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
        """u=0.95, v=0.05 with ``n_squares`` squares set to u=0, v=1; their corners are drawn
        (as in the reference code: inside the grid, no wrap) by a generator seeded by the seed."""
        n, r = self.config["size"], self.config["square_size"]
        out = np.empty((len(seeds), 2, n, n))
        out[:, 0], out[:, 1] = 0.95, 0.05
        for i, seed in enumerate(seeds):
            rng = seed_rng(seed)
            for _ in range(self.config["n_squares"]):
                x, y = rng.integers(0, n - r, size=2)
                out[i, 0, x : x + r, y : y + r] = 0.0
                out[i, 1, x : x + r, y : y + r] = 1.0
        return torch.from_numpy(out).to(device)

    terms = {"diffusion": ("D_u", "D_v"), "reaction": (), "feed": ("F",), "kill": ("k",)}
    constants = ("D_u", "D_v")

    def term_diffusion(self, t: Any, u: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
        return laplacian_9pt(u, self.config["dx"]) * per_channel(u, p["D_u"], p["D_v"])

    def term_reaction(self, t: Any, u: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
        a, b = u.unbind(1)  # unbind's backward is one stack; a select's fills a zero buffer
        r = a * b * b
        return torch.stack((-r, r), dim=1)

    def term_feed(self, t: Any, u: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
        a, b = u.unbind(1)
        return torch.stack((p["F"] * (1 - a), -p["F"] * b), dim=1)

    def term_kill(self, t: Any, u: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
        b = u.unbind(1)[1]
        return torch.stack((torch.zeros_like(b), -p["k"] * b), dim=1)

    spectral_terms = ("diffusion",)

    def linear_symbol(self, names: Sequence[str], values: Mapping[str, torch.Tensor | float]) -> torch.Tensor:
        """Diffusion's symbol: ``D_c`` times the 9-point stencil's eigenvalues, per channel."""
        lap = stencil_symbol(self.config["size"], self.config["dx"])
        if "diffusion" not in names:
            return torch.zeros_like(lap).expand(1, 2, *lap.shape)
        d = [torch.as_tensor(values[k], dtype=torch.float64).reshape(-1, 1, 1) for k in ("D_u", "D_v")]
        return torch.stack([c * lap.to(c.device) for c in d], dim=1)

    def stiffness(self, names: Sequence[str], values: Mapping[str, torch.Tensor | float]) -> float:
        """The 9-point Laplacian's spectrum lies in [-4, 0]/dx^2: diffusion's rate is 4 D / dx^2."""
        if "diffusion" not in names:
            return 0.0
        d = max(float(torch.as_tensor(values[k]).abs().max()) for k in ("D_u", "D_v"))
        return 4 * d / self.config["dx"] ** 2

    def solve(self, u0: torch.Tensor, params: torch.Tensor, t: np.ndarray) -> torch.Tensor:
        check_batch(u0, params, self.state_shape, len(self.param_names))
        u0 = u0.to(torch.float64)
        params = params.to(device=u0.device, dtype=torch.float64)
        chunk = _CPU_CHUNK if u0.device.type == "cpu" else max(1, len(u0))
        solve = self._solve_dopri5 if self.config["solver"] == "dopri5" else self._solve_etdrk4
        parts = [solve(u0[i : i + chunk], params[i : i + chunk], t) for i in range(0, len(u0), chunk)]
        if not parts:
            return u0.new_zeros((0, len(t), *self.state_shape))
        return torch.cat(parts)

    # ----------------------------------------------------------------- solvers
    def _solve_dopri5(self, u0: torch.Tensor, params: torch.Tensor, t: np.ndarray) -> torch.Tensor:
        c = self.config
        return dopri5(lambda s, u: self.rhs(s, u, params), u0, t, rtol=c["rtol"], atol=c["atol"])

    def _solve_etdrk4(self, u0: torch.Tensor, params: torch.Tensor, t: np.ndarray) -> torch.Tensor:
        """Linear part (diffusion and the decays −F u, −(F + k) v) exact, per trajectory."""
        c = self.config
        n = c["size"]
        F, k = params[:, 0, None, None], params[:, 1, None, None]
        lap = stencil_symbol(n, c["dx"], u0.device)
        L = torch.stack((c["D_u"] * lap - F, c["D_v"] * lap - (F + k)), dim=1)

        def nonlinear(vh: torch.Tensor) -> torch.Tensor:
            uv = torch.fft.irfft2(vh, s=(n, n))
            r = uv[:, 0] * uv[:, 1] ** 2
            return torch.fft.rfft2(torch.stack((F - r, r), dim=1))

        def observe(vh: torch.Tensor) -> torch.Tensor:
            return torch.fft.irfft2(vh, s=(n, n))

        return integrate(torch.fft.rfft2(u0), L, nonlinear, t, c["solver_dt"], observe)



