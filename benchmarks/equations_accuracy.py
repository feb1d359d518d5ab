"""Accuracy of the solvers generated from the example system files, against independent references.

    python benchmarks/equations_accuracy.py [--systems fitzhugh_nagumo tracer] [--n-traj 2]

Each system is solved from its file (``systems/<name>.yaml``) over its test horizon [0, 2T] on
``--n-traj`` trajectories (the first training environment and the first ``extrap`` one, seeds 0,
1, ...); errors are relative L2 over each trajectory (t > 0), worst case.

- time: the generated solver against an independent reference, at the file's settings and a
  sequence around them: FitzHugh-Nagumo against scipy DOP853 at rtol = atol = 1e-12 on a numpy
  right-hand side of the same semi-discretization (``np.roll`` stencils); the tracer against its
  exact solution (each Fourier mode times exp(-(kappa |k|^2 + i (U k_x + V k_y)) t), exact for
  its band-limited states on the grid and in the continuum alike). Fixed steps (etdrk4, and
  rk4 on the dopri5 system's right-hand side): the observed order ``log(e1/e2) / log(n2/n1)``
  between successive right-hand-side evaluation counts ``n`` (4 a step); dopri5, whose step
  count its stiffness bounds: the slope of the error against the tolerance.
- space (FitzHugh-Nagumo): the same equations with smooth initial states (``random_field``, 3
  modes) so that grids can be compared, time errors made negligible (dopri5 at 1e-10), on grids
  of 16 and 32 points against a 4x finer solve (128 points) sampled at the coarse points; the
  observed order is ``log2(e16/e32)``.

Prints Markdown tables and writes ``benchmarks/out/equations_accuracy.json``.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from common import ROOT, machine, table, write_json
from scipy.integrate import solve_ivp

from leads.envs.equations import load_system

SYSTEMS = ("fitzhugh_nagumo", "tracer")
# Grid comparisons (the tracer's band-limited states are exact on any grid that resolves them).
SMOOTH = {"fitzhugh_nagumo": {"kind": "random_field", "mean": {"u": 0.5, "v": 0.5}, "std": {"u": 0.3, "v": 0.3},
                              "modes": 3}}
# For the grid comparison, time errors far below the spatial ones.
SPACE_SOLVER = {"fitzhugh_nagumo": {"method": "dopri5", "rtol": 1e-10, "atol": 1e-10}}


def fhn_np(t: float, y: np.ndarray, a: float, b: float, k: float, n: int, h: float) -> np.ndarray:
    u, v = y[: n * n].reshape(n, n), y[n * n :].reshape(n, n)

    def lap(f: np.ndarray) -> np.ndarray:
        return (np.roll(f, 1, 0) + np.roll(f, -1, 0) + np.roll(f, 1, 1) + np.roll(f, -1, 1) - 4 * f) / h**2

    du = a * lap(u) + u - u**3 - v - k
    dv = b * lap(v) + u - v
    return np.concatenate((du.ravel(), dv.ravel()))


def tracer_exact(system, u0: torch.Tensor, params: torch.Tensor, t: np.ndarray) -> np.ndarray:
    """The exact solution of the tracer's semi-discretization (and of the PDE for fields without a
    Nyquist mode): each Fourier mode times exp(-(kappa |k|^2 + i (U k_x + V k_y)) t)."""
    grid = system.spec.grid
    k = [x * 2 * math.pi / grid.length for x in grid.wavenumbers()]
    odd = [torch.where(x.abs() == grid.size / 2, 0.0, x * 2 * math.pi / grid.length) for x in grid.wavenumbers()]
    U, V, kappa = (params[:, i].view(-1, 1, 1, 1) for i in range(3))
    rate = -kappa * (k[0] ** 2 + k[1] ** 2) - 1j * (U * odd[0] + V * odd[1])
    spec0 = grid.rfft(u0)
    return torch.stack([grid.irfft(spec0 * torch.exp(rate * s)) for s in t], dim=1).numpy()


def reference(name: str, system, u0: torch.Tensor, params: torch.Tensor, t: np.ndarray) -> np.ndarray:
    if name == "tracer":
        return tracer_exact(system, u0, params, t)
    grid = system.spec.grid
    rows = []
    for u, p in zip(u0.numpy(), params.tolist()):
        sol = solve_ivp(fhn_np, (t[0], t[-1]), u.ravel(), method="DOP853", t_eval=t, rtol=1e-12, atol=1e-12,
                        args=(*p, grid.size, grid.spacing))
        assert sol.success, sol.message
        rows.append(sol.y.T.reshape(len(t), *u.shape))
    return np.stack(rows)


def rel_l2(y: torch.Tensor | np.ndarray, ref: np.ndarray) -> float:
    y = y.numpy() if isinstance(y, torch.Tensor) else y
    d = (y[:, 1:] - ref[:, 1:]).reshape(len(ref), -1)
    return float((np.linalg.norm(d, axis=1) / np.linalg.norm(ref[:, 1:].reshape(len(ref), -1), axis=1)).max())


def counted_solve(system, u0: torch.Tensor, params: torch.Tensor, t: np.ndarray) -> tuple[torch.Tensor, int]:
    """The solve and its right-hand-side evaluations per trajectory (dopri5: counted; etdrk4: 4 a step)."""
    s = system.config["solver"]
    if s["method"] == "etdrk4":
        steps = sum(math.ceil(d / s["step"] - 1e-9) for d in np.diff(t))
        return system.solve(u0, params, t), 4 * steps
    calls = [0]
    original = system.rhs

    def rhs(*args):
        calls[0] += 1
        return original(*args)

    system.rhs = rhs
    try:
        return system.solve(u0, params, t), calls[0]
    finally:
        del system.rhs


def orders(errors: list[float], counts: list[int]) -> list[str]:
    out = [""]
    for i in range(1, len(errors)):
        out.append(f"{math.log(errors[i - 1] / errors[i]) / math.log(counts[i] / counts[i - 1]):.2f}")
    return out


def time_accuracy(name: str, n_traj: int) -> tuple[list[list[str]], dict]:
    path = ROOT / "systems" / f"{name}.yaml"
    system = load_system(path)
    envs = [system.train_envs[0], system.heldout["extrap"][0]][:n_traj]
    params = system.env_tensor(envs)
    seeds = list(range(len(envs)))
    u0 = system.sample_initial_states(seeds)
    t = system.times(2 * system.horizon)
    ref = reference(name, system, u0, params, t)
    s = system.config["solver"]
    if s["method"] == "dopri5":
        # An adaptive solver's error follows its tolerance (slope ~1 in log-log); the same
        # right-hand side under fixed-step rk4 shows the order of the time discretization.
        sequences = [[{"method": "dopri5", "rtol": tol, "atol": tol} for tol in (1e-5, 1e-6, 1e-7, 1e-8, 1e-9)],
                     [{"method": "rk4", "substeps": n} for n in (4, 8, 16)]]
    else:
        sequences = [[{"method": "etdrk4", "step": h} for h in (0.05, 0.025, 0.0125, 0.00625)]]
    rows, out = [], []
    for settings in sequences:
        errors, counts = [], []
        for setting in settings:
            y, n = counted_solve(load_system(path, solver=setting), u0, params, t)
            errors.append(rel_l2(y, ref))
            counts.append(n // len(envs) if setting["method"] == "dopri5" else n)
        if settings[0]["method"] == "dopri5":
            tols = [x["rtol"] for x in settings]
            slope = [""] + [f"{math.log(errors[i - 1] / errors[i]) / math.log(tols[i - 1] / tols[i]):.2f} (vs tol.)"
                            for i in range(1, len(errors))]
        else:
            slope = orders(errors, counts)
        for st, c, e, o in zip(settings, counts, errors, slope):
            label = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{v}" if k == "method" else f"{k} {v}"
                              for k, v in st.items() if k != "atol")
            rows.append([name, label + (" (the file's)" if st == s else ""), str(c), f"{e:.2e}", o])
        out.append({"settings": settings, "errors": errors, "rhs_evaluations": counts})
    return rows, out


def space_accuracy(name: str, n_traj: int) -> tuple[list[list[str]], dict]:
    path = ROOT / "systems" / f"{name}.yaml"
    base = load_system(path)
    size = base.spec.grid.size
    fine_size = 4 * size
    grid = dict(base.config["grid"])

    def solve(n: int) -> np.ndarray:
        s = load_system(path, grid={**grid, "size": n}, initial_state=SMOOTH[name], solver=SPACE_SOLVER[name])
        envs = [s.train_envs[0], s.heldout["extrap"][0]][:n_traj]
        # The same smooth function on every grid: drawn on the finest grid, sampled at the coarse points.
        u0 = torch.from_numpy(fine_u0[:, :, :: fine_size // n, :: fine_size // n].copy())
        return s.solve(u0, s.env_tensor(envs), s.times(2 * s.horizon)).numpy()

    fine = load_system(path, grid={**grid, "size": fine_size}, initial_state=SMOOTH[name])
    fine_u0 = fine.sample_initial_states(list(range(n_traj))).numpy()
    ref = solve(fine_size)
    errors = {}
    for n in (size // 2, size):
        stride = fine_size // n
        errors[n] = rel_l2(solve(n), ref[..., ::stride, ::stride])
    order = math.log2(errors[size // 2] / errors[size])
    scheme = ", ".join(f"{op}: {sc}" for op, sc in base.config["discretization"].items() if base._uses(op))
    rows = [[name, scheme, str(n), str(fine_size), f"{e:.2e}", f"{order:.2f}" if n == size else ""]
            for n, e in errors.items()]
    return rows, {"errors": {str(k): v for k, v in errors.items()}, "fine": fine_size, "order": order}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    p.add_argument("--n-traj", type=int, default=2, choices=(1, 2))
    args = p.parse_args()
    torch.set_num_threads(1)
    out, time_rows, space_rows = {}, [], []
    for name in args.systems:
        rows, out[f"{name}/time"] = time_accuracy(name, args.n_traj)
        time_rows += rows
        if name in SMOOTH:
            rows, out[f"{name}/space"] = space_accuracy(name, args.n_traj)
            space_rows += rows
        print(f"{name}: done", flush=True)
    print(table(["system", "solver", "RHS evaluations / traj.", "rel. L2 vs reference", "observed order"],
                time_rows))
    if space_rows:
        print(table(["system", "discretization", "grid", "reference grid", "rel. L2 vs 4x finer", "observed order"],
                    space_rows))
    print(f"machine: {machine()}")
    print(f"written: {write_json('equations_accuracy.json', out)}")


if __name__ == "__main__":
    main()
