"""Our two-layer QG solver (envs/qg.py) against pyqg-jax, the reference port of pyqg: trajectories,
spun-up statistics and speed, side by side on this machine.

    pip install jax jaxlib pyqg-jax          # or: pip install -e .[pyqg]
    python benchmarks/qg_pyqg.py [--part match speed stats] [--n 64] [--batches 1 8 32]
        [--stats-years 6] [--stats-seeds 4] [--quick]

- match: 1,000 steps of pyqg's scheme (AB3 at 1 h, filter after every step) from identical initial
  PV and parameters, eddy and jet configurations: from pyqg-jax's own initial state (small random
  PV) and from a spun-up turbulent state (ours after ``--spinup-years``); the relative L2
  difference of q after 1,000 steps (goal: 1e-6).
- speed: CPU and wall time per trajectory-step of a batch of ``--batches`` trajectories of the eddy
  configuration, on ``--n``² and 256² (ours: ``QGModel.step`` on the batch; pyqg-jax: its step
  under ``jax.vmap`` and ``jax.jit``, compile time excluded and reported), one thread each
  (``XLA_FLAGS`` pins XLA to one), best of 3, interleaved.
- stats: ``--stats-seeds`` runs of ``--stats-years`` years of each code from its own random
  initial states (eddy configuration, ``--n``²); the time-mean kinetic energy of each layer over
  the second half and the isotropic KE spectrum, mean ± standard error over the seeds.

Prints tables and writes ``benchmarks/out/qg_pyqg.json``. ``--quick``: 16², few steps; numbers
meaningless, a smoke test.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np
import torch
from common import machine, table, write_json

from leads.envs.qg import QGModel, mean_square
from leads.envs.qg_ocean import EDDY, JET

L = 1.0e6
DT = 3600.0
CONSTANTS = {"rd": 15000.0, "U1": 0.025, "U2": 0.0}
YEAR_STEPS = 365 * 24


def jax_modules() -> tuple[Any, Any]:
    # One thread, as ours: XLA's CPU backend otherwise spreads a step over every core.
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    import jax

    jax.config.update("jax_enable_x64", True)
    import pyqg_jax

    return jax, pyqg_jax


def jax_model(n: int, env: dict[str, float]) -> Any:
    jax, pyqg_jax = jax_modules()
    model = pyqg_jax.qg_model.QGModel(nx=n, L=L, precision=pyqg_jax.state.Precision.DOUBLE, **env, **CONSTANTS)
    return pyqg_jax.steppers.SteppedModel(model=model, stepper=pyqg_jax.steppers.AB3Stepper(dt=DT))


_COMPILED: dict[tuple[int, int], Any] = {}


def jax_run(stepped: Any, q0: np.ndarray, steps: int) -> np.ndarray:
    """pyqg-jax from PV ``q0`` ``(B, 2, n, n)`` (its step vmapped over B and jitted, compiled once
    per model and step count), ``steps`` steps: final PV."""
    jax, _ = jax_modules()
    import jax.numpy as jnp

    key = (id(stepped), steps)
    if key not in _COMPILED:
        def one(q: Any) -> Any:
            start = stepped.model.create_initial_state(jax.random.key(0)).update(q=q)
            state = jax.lax.fori_loop(0, steps, lambda i, s: stepped.step_model(s),
                                      stepped.initialize_stepper_state(start))
            return state.state.q

        _COMPILED[key] = jax.jit(jax.vmap(one))
    return np.asarray(_COMPILED[key](jnp.asarray(q0)))


def ours_run(n: int, env: dict[str, float] | list[dict[str, float]], q0: torch.Tensor, steps: int) -> torch.Tensor:
    envs = env if isinstance(env, list) else [env] * len(q0)
    params = {k: torch.tensor([e[k] for e in envs], dtype=torch.float64) for k in ("beta", "rek", "delta")}
    model = QGModel(n, L, {**params, **CONSTANTS})
    qh, history = torch.fft.rfft2(q0), []
    for _ in range(steps):
        qh = model.step(qh, history, DT)
    return torch.fft.irfft2(qh, s=(n, n))


def pyqg_initial(n: int, seeds: list[int]) -> np.ndarray:
    """pyqg-jax's own random initial PV, one per seed."""
    jax, _ = jax_modules()
    stepped = jax_model(n, EDDY)
    return np.stack([np.asarray(stepped.model.create_initial_state(jax.random.key(s)).q) for s in seeds])


def rel(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def part_match(args: argparse.Namespace) -> dict[str, Any]:
    n, steps = args.n, args.match_steps
    out: dict[str, Any] = {}
    rows = []
    small = pyqg_initial(n, [0])
    for name, env in (("eddy", EDDY), ("jet", JET)):
        spun = ours_run(n, env, torch.tensor(small), int(args.spinup_years * YEAR_STEPS)).numpy()
        for start, q0 in (("pyqg initial state", small), (f"spun up {args.spinup_years:g} years", spun)):
            theirs = jax_run(jax_model(n, env), q0, steps)
            ours = ours_run(n, env, torch.tensor(q0), steps).numpy()
            diff = rel(ours, theirs)
            change = rel(theirs, q0)
            out[f"{name}/{start}"] = {"rel_diff": diff, "rel_change": change}
            rows.append([name, start, f"{diff:.1e}", f"{change:.2f}"])
    print(table(["config", "start", f"rel. L2 diff. after {steps} steps", "rel. change of q"], rows))
    return out


def timed(fn: Any, repeat: int = 3) -> tuple[float, float]:
    """Best wall and CPU seconds over ``repeat`` calls."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - w0), min(cpu, time.process_time() - c0)
    return wall, cpu


def part_speed(args: argparse.Namespace) -> dict[str, Any]:
    jax, _ = jax_modules()
    out: dict[str, Any] = {}
    rows = []
    for n in sorted({args.n, 256 if not args.quick else 32}):
        for batch in args.batches:
            steps = max(10, args.speed_work // (batch * n * n))
            q0 = np.repeat(pyqg_initial(n, [0]), batch, axis=0) * 100  # finite amplitude: no special zeros
            stepped = jax_model(n, EDDY)
            w0 = time.perf_counter()
            jax_run(stepped, q0, steps)  # compiles
            compile_wall = time.perf_counter() - w0
            jw, jc = timed(lambda s=stepped, q=q0, k=steps: jax_run(s, q, k))
            start = torch.tensor(q0)
            tw, tc = timed(lambda size=n, q=start, k=steps: ours_run(size, EDDY, q, k))
            per = {"steps": steps, "torch_wall_s_per_step": tw / steps, "torch_cpu_s_per_step": tc / steps,
                   "jax_wall_s_per_step": jw / steps, "jax_cpu_s_per_step": jc / steps,
                   "jax_first_call_s": compile_wall}
            out[f"{n}/{batch}"] = per
            rows.append([f"{n}²", batch, f"{1e3 * tc / (batch * steps):.3f}", f"{1e3 * jc / (batch * steps):.3f}",
                         f"{jc / tc:.2f}x", f"{batch * steps / tw:.0f}", f"{batch * steps / jw:.0f}",
                         f"{compile_wall:.1f}"])
    print(table(["grid", "batch", "ours: CPU ms per trajectory-step", "pyqg-jax: CPU ms", "CPU speed-up",
                 "ours: trajectory-steps per wall s", "pyqg-jax: per wall s", "pyqg-jax first call (s)"], rows))
    return out


def spectrum(q: torch.Tensor, model: QGModel) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic KE spectrum of each layer, ``(B, 2, n_bins)``: ½ κ²|ψ̂|² summed in unit-wavenumber shells."""
    n = q.shape[-1]
    psih = model.invert(torch.fft.rfft2(q))
    density = 0.5 * model.grid.kappa2 * psih.abs() ** 2 / n**4
    density = density * torch.where(torch.arange(n // 2 + 1) % (n // 2) == 0, 1.0, 2.0).to(density)
    m = torch.sqrt(model.grid.kappa2[0, 0]) * L / (2 * np.pi)
    shells = torch.round(m).long().clamp(max=n // 2)
    out = torch.zeros(*density.shape[:2], n // 2 + 1, dtype=density.dtype)
    out.index_add_(2, shells.flatten(), density.flatten(2))
    return np.arange(n // 2 + 1), out.numpy()


def part_stats(args: argparse.Namespace) -> dict[str, Any]:
    n, years, seeds = args.n, args.stats_years, list(range(args.stats_seeds))
    total = int(years * YEAR_STEPS)
    sample = 24 * 30  # every 30 days over the second half
    start = total // 2
    model = QGModel(n, L, {**EDDY, **CONSTANTS})

    def series(run_chunk: Any, first_seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Runs from pyqg's own random initial states (seeds ``first_seed + i``: the two codes'
        runs are independent realizations)."""
        ke, spec = [], []
        q = run_chunk(pyqg_initial(n, [first_seed + s for s in seeds]), start)
        done = start
        while done < total:
            q = run_chunk(q, sample)
            done += sample
            qt = torch.tensor(np.asarray(q))
            ke.append(0.5 * mean_square(torch.sqrt(model.grid.kappa2) * model.invert(torch.fft.rfft2(qt)), n).numpy())
            spec.append(spectrum(qt, model)[1])
        return np.mean(ke, axis=0), np.mean(spec, axis=0)  # (seeds, 2), (seeds, 2, bins)

    stepped = jax_model(n, EDDY)
    ours = series(lambda q, k: ours_run(n, EDDY, torch.tensor(np.asarray(q)), k).numpy(), 100)
    theirs = series(lambda q, k: jax_run(stepped, np.asarray(q), k), 200)
    out: dict[str, Any] = {}
    rows = []
    for layer in (0, 1):
        a, b = ours[0][:, layer], theirs[0][:, layer]
        se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        out[f"KE{layer + 1}"] = {"ours": a.tolist(), "pyqg_jax": b.tolist(),
                                 "diff_over_se": float((a.mean() - b.mean()) / se)}
        rows.append([f"KE layer {layer + 1} (m²/s²)", f"{a.mean():.3e} ± {a.std(ddof=1) / np.sqrt(len(a)):.1e}",
                     f"{b.mean():.3e} ± {b.std(ddof=1) / np.sqrt(len(b)):.1e}", f"{(a.mean() - b.mean()) / se:+.2f}"])
        sa, sb = ours[1][:, layer], theirs[1][:, layer]
        se_k = np.sqrt(sa.var(0, ddof=1) / len(sa) + sb.var(0, ddof=1) / len(sb))
        z = np.abs(sa.mean(0) - sb.mean(0))[1:n // 3] / np.maximum(se_k[1:n // 3], 1e-300)
        out[f"spectrum{layer + 1}"] = {"ours": sa.mean(0).tolist(), "pyqg_jax": sb.mean(0).tolist(),
                                       "max_abs_diff_over_se": float(z.max()),
                                       "share_within_2se": float((z < 2).mean())}
        rows.append([f"KE spectrum layer {layer + 1}, shells 1..{n // 3 - 1}", "", "",
                     f"max {z.max():.2f} SE; {100 * (z < 2).mean():.0f}% within 2 SE"])
    print(f"eddy configuration, {n}², {len(seeds)} seeds each, means over years {years / 2:g}-{years:g} "
          "(mean ± standard error over seeds)")
    print(table(["quantity", "ours", "pyqg-jax", "difference / SE"], rows))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", nargs="+", default=["match", "speed", "stats"], choices=["match", "speed", "stats"])
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--match-steps", type=int, default=1000)
    p.add_argument("--spinup-years", type=float, default=4.0)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--speed-work", type=int, default=2 ** 25, help="trajectory-steps x grid points per timing")
    p.add_argument("--stats-years", type=float, default=6.0)
    p.add_argument("--stats-seeds", type=int, default=4)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.n, args.match_steps, args.spinup_years, args.batches = 16, 20, 0.01, [1, 2]
        args.speed_work, args.stats_years, args.stats_seeds = 2 ** 14, 0.1, 2
    print(f"machine: {machine()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    results = {part: globals()[f"part_{part}"](args) for part in args.part}
    print(f"written: {write_json('qg_pyqg_quick.json' if args.quick else 'qg_pyqg.json', results)}")


if __name__ == "__main__":
    main()
