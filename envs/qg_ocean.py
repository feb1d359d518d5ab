"""Ocean mesoscale turbulence: pyqg's two-layer quasi-geostrophic model across regimes, observed coarse.

    ∂t q_i + J(ψ_i, q_i) + U_i ∂x q_i + (β ± F_i (U_1 − U_2)) ∂x ψ_i = −δ_i2 r_ek ∇²ψ_2  (+ pyqg's filter)
    q_1 = ∇²ψ_1 + F_1 (ψ_2 − ψ_1),  q_2 = ∇²ψ_2 + F_2 (ψ_1 − ψ_2),  F_1 = r_d⁻² / (1 + δ),  F_2 = δ F_1

(``leads.envs.qg``; SI units, time in seconds), the idealized ocean of Ross, Li, Perezhogin,
Fernandez-Granda & Zanna (JAMES 2023): a baroclinically unstable mean shear U_1 − U_2 on a
β-plane feeds mesoscale eddies that bottom drag r_ek removes. Their two regimes differ by β, r_ek
and δ = H_1/H_2: "eddy" (pyqg's defaults, β = 1.5e-11, r_ek = 5.787e-7, δ = 0.25) is isotropic
eddies, "jet" (β = 1e-11, r_ek = 7e-8, δ = 0.1) zonal jets. Environments vary (β, r_ek, δ) from
the eddy regime toward the jet one; r_d, U_1, U_2, L, the filter are the system's constants.

Data as a modeller gets them. Each trajectory starts from pyqg's initial condition (small random
PV in the upper layer, its seed's own, zero mean), is spun up under its environment's equations
until its energy is stationary (``leads.envs.spinup``: window means of ``spinup_window`` seconds,
the last ``spinup_windows`` within ``spinup_tol`` of each other, ``spinup_growth`` times the
initial energy), then observed every ``dt``. The
solve runs on ``solver_size``² and is observed on ``size``² by the benchmark's coarse-graining
(its ``Operator1``: spectral truncation times the coarse model's own filter, ``coarse_filter:
sharp``; ``Operator2``'s Gaussian, ``gaussian``). ``data.observe: ssh`` stores only the upper-layer
streamfunction ψ_1 (sea surface height = f_0 ψ_1 / g), never the lower layer.

Solver: pyqg's own scheme, AB3 at ``solver_dt`` = 1 h with the filter after every step (the
benchmark's): the filter is part of pyqg's model, and the trajectory is pyqg-jax's to 1e-14 over
1,000 steps, from rest or spun up (benchmarks/qg_pyqg.py). Against 15-minute steps (the filter as
a rate, the same equations) the 1-hour step's observed error after 10 days is 1.1e-4 (eddy) and
2e-5 (jet) (benchmarks/qg_spinup.py), far below the coarse model's and persistence's (docs/ocean.md).

The known terms (physics-aware models) are the same equations on the observed grid, i.e. pyqg
at the coarse resolution: ``advection``, ``background_flow`` (the mean shear's advection and PV
gradient), ``beta``, ``drag`` and ``filter`` (the coarse grid's filter as a decay rate, exact in
Fourier space: use ``physics.integrator: etdrk4``); ``coarse_model`` runs them as pyqg does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from leads.envs.base import Env, System, seed_rng
from leads.envs.errors import UserError
from leads.envs.qg import QGModel, advection, couplings, filter_exponent, grid, invert, lower_layer
from leads.envs.spectral import check_batch
from leads.envs.spinup import StationaryEnergy

DAY = 86400.0
YEAR = 365 * DAY
EDDY: Env = {"beta": 1.5e-11, "rek": 5.787e-7, "delta": 0.25}
JET: Env = {"beta": 1.0e-11, "rek": 7.0e-8, "delta": 0.1}


def _envs(rows: Sequence[tuple[float, float, float]]) -> list[Env]:
    return [{"beta": b, "rek": r, "delta": d} for b, r, d in rows]


def coarsen_hat(qh: torch.Tensor, n: int, length: float, kind: str = "sharp", filterfac: float = 23.6) -> torch.Tensor:
    """The benchmark's coarse-graining of fields given by their ``rfft2`` spectra on an ``N x N``
    grid: ``(..., N, N//2+1)`` -> ``(..., n, n)`` real. The modes of the coarse grid are kept
    (spectral truncation), multiplied by the coarse model's filter (``sharp``, its Operator1) or by
    ``exp(−κ² (2 dx)² / 24)`` (``gaussian``, Operator2; dx = L / n), and transformed back."""
    N = qh.shape[-2]
    half = n // 2
    trunc = torch.cat((qh[..., :half, : half + 1], qh[..., N - half:, : half + 1]), dim=-2)
    if kind == "sharp":
        weight = torch.exp(filter_exponent(n, filterfac, qh.device))[0, 0]
    elif kind == "gaussian":
        kappa2 = grid(n, length, qh.device).kappa2[0, 0]
        weight = torch.exp(-kappa2 * (2 * length / n) ** 2 / 24)
    else:
        raise UserError(f"coarse_filter={kind!r} must be sharp or gaussian")
    return torch.fft.irfft2(trunc * weight.to(qh.real.dtype), s=(n, n)) * (n / N) ** 2


class QGOcean(System):
    name = "qg_ocean"
    param_names = ("beta", "rek", "delta")
    state_names = ("q1", "q2")
    data_version = 2  # 2: initial states drawn from all 64 bits of their seed (seed_rng)
    constants = ("rd", "U1", "U2")
    observations = {"ssh": ("psi1",)}
    defaults: dict[str, Any] = {
        # quick-scale grids (configs/qg_ocean.yaml's benchmark profile: 256 -> 64)
        "size": 16,
        "solver_size": 64,
        "length": 1.0e6,
        "rd": 15000.0,
        "U1": 0.025,
        "U2": 0.0,
        "filterfac": 23.6,
        "coarse_filter": "sharp",
        "solver_dt": 3600.0,
        # Spin-up criterion (leads.envs.spinup), measured on 64^2 runs of the eddy and jet regimes
        # (benchmarks/qg_spinup.py, docs/ocean.md): stationary after 3.0-3.3 and 4.6-5.6 years;
        # steady flows' 120-day means spread by at most 12.8% over 3 windows.
        "spinup_sample": DAY,
        "spinup_window": 120 * DAY,
        "spinup_windows": 3,
        "spinup_tol": 0.15,
        "spinup_growth": 10.0,
        "spinup_max": 30 * YEAR,
        "train_envs": _envs([(b, r, d) for b in (1.5e-11, 1.25e-11) for r in (5.787e-7, 2.5e-7)
                             for d in (0.25, 0.175)]),
        "heldout": {
            "interp": _envs([(1.375e-11, 4.0e-7, 0.2), (1.3e-11, 3.0e-7, 0.225)]),
            "extrap": [dict(JET), {"beta": 1.1e-11, "rek": 1.2e-7, "delta": 0.125}],
        },
        # Observed twice a day for 5 days (tests to 10): at 16^2 the coarse model is already 45% off
        # after a day and persistence 2% (docs/ocean.md).
        "dt": 12 * 3600.0,
        "horizon": 5 * DAY,
    }

    # ----------------------------------------------------------------- config
    def param_ranges(self) -> dict[str, tuple[float, float]]:
        return {"beta": (0.0, math.inf), "rek": (0.0, math.inf), "delta": (0.0, math.inf)}

    def check_env(self, env: Env) -> None:
        super().check_env(env)
        env = self.complete_env(env)
        if env["delta"] <= 0:
            raise UserError(f"{self.name} parameter delta={env['delta']} must be strictly positive (the layer "
                            "thickness ratio H1/H2)")

    def _check_config(self) -> None:
        super()._check_config()
        c = self.config
        self._check_numbers(positive=("length", "rd", "filterfac", "solver_dt", "spinup_sample", "spinup_window",
                                      "spinup_tol", "spinup_max"), non_negative=("spinup_growth",))
        for key in ("U1", "U2"):
            v = c[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise UserError(f"system.{key}={v!r} of {self.name} must be a finite number (m/s)")
        self._check_grid_sizes("size", "solver_size")
        if c["coarse_filter"] not in ("sharp", "gaussian"):
            raise UserError(f"system.coarse_filter={c['coarse_filter']!r} of {self.name} must be sharp or gaussian")
        w = c["spinup_windows"]
        if isinstance(w, bool) or not isinstance(w, int) or w < 2:
            raise UserError(f"system.spinup_windows={w!r} of {self.name} must be an integer >= 2")
        for key in ("dt", "spinup_sample"):
            self._multiple_of_step(key)
        ratio = c["spinup_window"] / c["spinup_sample"]
        if abs(ratio - round(ratio)) > 1e-9:
            raise UserError(f"system.spinup_window={c['spinup_window']} of {self.name} must be a multiple of "
                            f"system.spinup_sample={c['spinup_sample']}")

    def _multiple_of_step(self, key: str) -> None:
        ratio = self.config[key] / self.config["solver_dt"]
        if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
            raise UserError(f"system.{key}={self.config[key]} of {self.name} must be a whole number of solver "
                            f"steps system.solver_dt={self.config['solver_dt']}")

    # ----------------------------------------------------------------- interface
    @property
    def state_shape(self) -> tuple[int, ...]:
        n = self.config["size"]
        return (2, n, n)

    @property
    def solver_description(self) -> str:
        c = self.config
        return (f"pyqg two-layer QG, pseudo-spectral on {c['solver_size']}^2 (no dealiasing, pyqg filter "
                f"filterfac={c['filterfac']:g}), AB3 at {c['solver_dt']:g} s, float64; observed on {c['size']}^2 "
                f"({c['coarse_filter']} spectral coarse-graining); spun up from pyqg's initial PV until the energy "
                f"is stationary ({c['spinup_windows']} windows of {c['spinup_window']:g} s within "
                f"{c['spinup_tol']:g}, grown {c['spinup_growth']:g}x, at most {c['spinup_max']:g} s)")

    def physical(self, params: torch.Tensor) -> dict[str, torch.Tensor | float]:
        """The six parameters of ``leads.envs.qg.QGModel`` for parameter rows ``(B, 3)``."""
        values = self.parameter_values(params)
        return {k: values[k] for k in ("beta", "rek", "delta", "rd", "U1", "U2")}

    def fine_initial_states(self, seeds: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
        """pyqg's initial PV on the solver grid, ``(B, 2, N, N)``: in the upper layer 1e-7 times
        white noise plus 1e-6 times noise constant along y, uniform on [0, 1), less its mean; the
        lower layer at rest. One numpy generator per seed."""
        N = self.config["solver_size"]
        out = torch.zeros(len(seeds), 2, N, N, dtype=torch.float64)
        for i, seed in enumerate(seeds):
            rng = seed_rng(seed)
            q1 = 1e-7 * torch.from_numpy(rng.random((N, N)))
            q1 = q1 + 1e-6 * torch.from_numpy(rng.random((1, N)))
            out[i, 0] = q1 - q1.mean()
        return out.to(device)

    def sample_initial_states(self, seeds: Sequence[int]) -> torch.Tensor:
        """The observed initial PV before spin-up (``initial_states`` gives the spun-up ones)."""
        fine = self.fine_initial_states(seeds)
        return self.coarsen(torch.fft.rfft2(fine)) if len(seeds) else fine.new_zeros(0, *self.state_shape)

    def coarsen(self, qh: torch.Tensor) -> torch.Tensor:
        c = self.config
        return coarsen_hat(qh, c["size"], float(c["length"]), c["coarse_filter"], float(c["filterfac"]))

    def initial_states(self, seeds: Sequence[int], params: torch.Tensor,
                       device: torch.device | str | None = None) -> torch.Tensor:
        """The observed states at the end of each trajectory's spin-up."""
        return self.generate(seeds, params, np.array([0.0]), device)[:, 0]

    def generate(self, seeds: Sequence[int], params: torch.Tensor, t: np.ndarray,
                 device: torch.device | str | None = None) -> torch.Tensor:
        """Spin-up and trajectory in one fine solve, observed at ``t`` after each trajectory's own
        spin-up ends (``t[0]``: its end)."""
        c = self.config
        t = np.asarray(t, dtype=np.float64)
        steps = self._steps(t - t[0], "observation times")
        check_batch(torch.zeros(len(seeds), *self.state_shape), params, self.state_shape, len(self.param_names))
        B = len(seeds)
        params = params.to(device=device, dtype=torch.float64)
        out = torch.zeros(B, len(t), *self.state_shape, dtype=torch.float64, device=device)
        if B == 0:
            return out
        qh = torch.fft.rfft2(self.fine_initial_states(seeds, device))
        sample = int(round(c["spinup_sample"] / c["solver_dt"]))
        criterion = StationaryEnergy(B, int(round(c["spinup_window"] / c["spinup_sample"])), c["spinup_windows"],
                                     float(c["spinup_tol"]), float(c["spinup_growth"]), device)
        max_steps = int(math.ceil(c["spinup_max"] / c["solver_dt"]))
        start = torch.full((B,), -1, dtype=torch.long, device=device)
        taken = torch.zeros(B, dtype=torch.long, device=device)  # observations recorded
        due_steps = torch.as_tensor(np.append(steps, -1), dtype=torch.long, device=device)
        # The rows still being solved: a trajectory whose observations are all taken leaves the batch.
        active = torch.arange(B, device=device)
        model = QGModel(c["solver_size"], c["length"], self.physical(params), c["filterfac"], device)
        history: list[torch.Tensor] = []
        step = 0
        while True:
            if step % sample == 0:
                energy = model.energy(qh)
                if not bool(torch.isfinite(energy).all()):
                    raise UserError(self._diverged(params[active], energy, step))
                if bool((start < 0).any()):
                    full = torch.zeros(B, dtype=energy.dtype, device=device).index_copy(0, active, energy)
                    start[criterion.add(full) & (start < 0)] = step
            due = (start[active] >= 0) & (step - start[active] == due_steps[taken[active]])
            if bool(due.any()):
                rows = active[due]
                out[rows, taken[rows]] = self.coarsen(qh[due])
                taken[rows] += 1
                finished = taken[active] == len(t)
                if bool(finished.all()):
                    return out
                if bool(finished.any()):
                    keep = ~finished
                    active, qh, history = active[keep], qh[keep], [h[keep] for h in history]
                    model = QGModel(c["solver_size"], c["length"], self.physical(params[active]), c["filterfac"],
                                    device)
            if step >= max_steps and bool((start < 0).any()):
                row = int((start < 0).nonzero()[0, 0])
                raise UserError(f"{self.name} environment {self._env_text(params[row])} (seed {seeds[row]}) is not "
                                f"stationary after system.spinup_max={c['spinup_max']:g} s of spin-up; raise "
                                "system.spinup_max or system.spinup_tol")
            qh = model.step(qh, history, float(c["solver_dt"]))
            step += 1

    def _steps(self, offsets: np.ndarray, what: str) -> np.ndarray:
        steps = offsets / self.config["solver_dt"]
        if np.any(np.abs(steps - np.round(steps)) > 1e-6) or np.any(np.diff(steps) <= 0):
            raise UserError(f"{what} {offsets.tolist()} must increase by whole solver steps "
                            f"system.solver_dt={self.config['solver_dt']}")
        return np.round(steps).astype(np.int64)

    def _env_text(self, row: torch.Tensor) -> str:
        return ",".join(f"{p}={float(v):g}" for p, v in zip(self.param_names, row.tolist()))

    def _diverged(self, params: torch.Tensor, energy: torch.Tensor, step: int) -> str:
        row = int((~torch.isfinite(energy)).nonzero()[0, 0])
        return (f"{self.name} solve diverged after {step} steps of system.solver_dt={self.config['solver_dt']:g} s "
                f"in environment {self._env_text(params[row])}; the time step is unstable there: lower "
                "system.solver_dt")

    def solve(self, u0: torch.Tensor, params: torch.Tensor, t: np.ndarray) -> torch.Tensor:
        """From observed states: each lifted to the solver grid as its band-limited interpolant
        (the sub-grid eddies are unknown, so this is not the data's trajectory), solved there
        and observed."""
        check_batch(u0, params, self.state_shape, len(self.param_names))
        N, n = self.config["solver_size"], self.config["size"]
        fine = torch.zeros(u0.shape[0], 2, N, N // 2 + 1, dtype=torch.complex128, device=u0.device)
        uh = torch.fft.rfft2(u0.to(torch.float64)) * (N / n) ** 2
        # The coarse grid's Nyquist modes (row and column n/2) are dropped: the coarse-graining's
        # filter has already damped them to ~1e-15.
        fine[..., : n // 2, : n // 2] = uh[..., : n // 2, : n // 2]
        fine[..., N - n // 2 + 1:, : n // 2] = uh[..., n // 2 + 1:, : n // 2]
        return self._run(fine, params, t, N, self.coarsen)

    def coarse_model(self, u0: torch.Tensor, params: torch.Tensor, t: np.ndarray) -> torch.Tensor:
        """The physical model a modeller would otherwise run: the same equations at the observed
        resolution (pyqg at nx = ``size``: AB3 at ``solver_dt``, its filter at that grid) from the
        observed states ``(B, 2, n, n)``; returns ``(B, len(t), 2, n, n)``."""
        check_batch(u0, params, self.state_shape, len(self.param_names))
        n = self.config["size"]
        return self._run(torch.fft.rfft2(u0.to(torch.float64)), params, t, n,
                         lambda qh: torch.fft.irfft2(qh, s=(n, n)))

    def coarse_forecast(self, u0: torch.Tensor, params: torch.Tensor, t: np.ndarray,
                        observe: str | None = None) -> torch.Tensor:
        """``coarse_model`` from observed states. From the sea surface height alone (``ssh``) the
        lower layer is unknown: it is taken at rest (ψ_2 = 0, the reduced-gravity assumption
        altimetry is read with), so q_1 = ∇²ψ_1 − F_1 ψ_1 and q_2 = F_2 ψ_1."""
        if observe is None:
            return self.coarse_model(u0, params, t)
        self.check_observation(observe)
        psi1 = u0.to(torch.float64)
        g = grid(psi1.shape[-1], float(self.config["length"]), psi1.device)
        values = self.parameter_values(params.to(psi1.device, torch.float64))
        F1, F2 = couplings(values["delta"], values["rd"], g.k)
        ph = torch.fft.rfft2(psi1)  # (B, 1, n, m)
        q = torch.fft.irfft2(torch.cat((-(g.kappa2 + F1) * ph, F2 * ph), dim=1), s=psi1.shape[-2:])
        return self.observe(self.coarse_model(q, params, t), params, observe).to(u0.dtype)

    def _run(self, qh: torch.Tensor, params: torch.Tensor, t: np.ndarray, n: int, observe: Any) -> torch.Tensor:
        c = self.config
        t = np.asarray(t, dtype=np.float64)
        steps = self._steps(t - t[0], "observation times")
        p = params.to(device=qh.device, dtype=torch.float64)
        model = QGModel(n, c["length"], self.physical(p), c["filterfac"], qh.device)
        out, history, step = [observe(qh)], [], 0
        for target in steps[1:]:
            while step < target:
                qh = model.step(qh, history, float(c["solver_dt"]))
                step += 1
            energy = model.energy(qh)
            if not bool(torch.isfinite(energy).all()):
                raise UserError(self._diverged(p, energy, step))
            out.append(observe(qh))
        return torch.stack(out, dim=1)

    # ----------------------------------------------------------------- partial observations
    def observe(self, states: torch.Tensor, params: torch.Tensor, name: str) -> torch.Tensor:
        """``ssh``: the upper-layer streamfunction ψ_1 of observed PV ``(B, [T,] 2, n, n)``, as
        ``(B, [T,] 1, n, n)``. The inversion is linear and diagonal in Fourier space, so it commutes
        with the spectral coarse-graining: ψ_1 of the coarse PV is the coarse ψ_1."""
        self.check_observation(name)
        q = states.to(torch.float64)
        q = q if q.dim() == 5 else q.unsqueeze(1)
        g = grid(q.shape[-1], float(self.config["length"]), q.device)
        values = self.parameter_values(params.to(q.device, torch.float64))
        F1, F2 = couplings(values["delta"], values["rd"], g.k)  # (B, 1, 1, 1): against (B, T, n, m)
        qh = torch.fft.rfft2(q)
        k2 = g.kappa2[0]
        det = k2 * (k2 + F1 + F2)
        inv = torch.where(det > 0, 1 / torch.where(det > 0, det, torch.ones_like(det)), torch.zeros_like(det))
        psi1 = torch.fft.irfft2((-(k2 + F2) * qh[:, :, 0] - F1 * qh[:, :, 1]) * inv, s=q.shape[-2:]).unsqueeze(2)
        return (psi1 if states.dim() == 5 else psi1[:, 0]).to(states.dtype)

    # ----------------------------------------------------------------- named terms (observed grid)
    terms = {"advection": ("delta", "rd"), "background_flow": ("delta", "rd", "U1", "U2"),
             "beta": ("beta", "delta", "rd"), "drag": ("rek", "delta", "rd"), "filter": ()}
    spectral_terms = ("filter",)

    def _spectral(self, u: torch.Tensor, p: Mapping[str, Any]) -> tuple[Any, torch.Tensor, torch.Tensor]:
        g = grid(u.shape[-1], float(self.config["length"]), u.device, u.dtype)
        qh = torch.fft.rfft2(u)
        F1, F2 = couplings(p["delta"], p["rd"], g.k)
        return g, qh, invert(g, qh, F1, F2)

    def _real(self, fh: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft2(fh, s=u.shape[-2:])

    def term_advection(self, t: Any, u: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
        g, qh, psih = self._spectral(u, p)
        return self._real(advection(g, qh, psih), u)

    def term_background_flow(self, t: Any, u: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
        """−U_i ∂x q_i ∓ F_i (U_1 − U_2) ∂x ψ_i: the mean shear advects the anomalies, and the
        anomalies its PV gradient (the source of baroclinic instability)."""
        g, qh, psih = self._spectral(u, p)
        F1, F2 = couplings(p["delta"], p["rd"], g.k)
        U1, U2 = (torch.as_tensor(p[k], dtype=u.dtype, device=u.device).reshape(-1, 1, 1, 1) for k in ("U1", "U2"))
        U = torch.cat(torch.broadcast_tensors(U1, U2), dim=1)
        shear = torch.cat(torch.broadcast_tensors(F1 * (U1 - U2), -F2 * (U1 - U2)), dim=1)
        return self._real(-g.ik * (U * qh + shear * psih), u)

    def term_beta(self, t: Any, u: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
        g, _, psih = self._spectral(u, p)
        beta = torch.as_tensor(p["beta"], dtype=u.dtype, device=u.device).reshape(-1, 1, 1, 1)
        return self._real(-g.ik * beta * psih, u)

    def term_drag(self, t: Any, u: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
        g, _, psih = self._spectral(u, p)
        rek = torch.as_tensor(p["rek"], dtype=u.dtype, device=u.device).reshape(-1, 1, 1, 1)
        return self._real(lower_layer(rek * g.kappa2 * psih), u)

    def term_filter(self, t: Any, u: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
        return self._real(self._filter_rate(u.shape[-1], u.device, u.dtype) * torch.fft.rfft2(u), u)

    def _filter_rate(self, n: int, device: Any, dtype: torch.dtype) -> torch.Tensor:
        """pyqg's filter on an ``n`` grid as a decay rate: applied over a step of ``solver_dt``
        it is the filter exactly (``exp(rate · solver_dt)``)."""
        return filter_exponent(n, float(self.config["filterfac"]), device, dtype) / float(self.config["solver_dt"])

    def linear_symbol(self, names: Sequence[str], values: Mapping[str, torch.Tensor | float]) -> torch.Tensor:
        n = self.config["size"]
        rate = self._filter_rate(n, None, torch.float64).expand(1, 2, n, n // 2 + 1)
        return rate if "filter" in names else torch.zeros_like(rate)

    def stiffness(self, names: Sequence[str], values: Mapping[str, torch.Tensor | float]) -> float:
        """The filter's largest decay rate on the observed grid (the other terms are not stiff)."""
        if "filter" not in names:
            return 0.0
        return float(-self._filter_rate(self.config["size"], None, torch.float64).min())
