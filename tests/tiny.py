"""Tiny run configs: every code path of a real run in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

from leads.config.loading import load_config
from leads.config.schema import RunConfig

TINY = [
    "train.max_steps=4", "train.val_every=2", "model.width=8",
    "data.n_train=1", "data.n_val=1", "data.n_test=1", "data.n_adapt=2", "data.n_adapt_val=1",
    "data.n_test_heldout=1", "data.batch_size=4", "data.gen_batch_size=64",
    "adapt.steps=3", "adapt.val_every=1", "logger=none",
]
PER_SYSTEM = {
    "navier_stokes": ["system.warmup=0.5", "model.modes=4"],
    "kolmogorov": ["system.size=16", "system.solver_size=32", "system.warmup=0.05", "model.modes=4"],
    "burgers": ["system.size=32", "system.solver_size=128", "model.modes=4", "data.window=2"],
    "gray_scott": ["data.window=2"],
    "pendulum": ["data.window=4"],
    "glycolytic_oscillator": ["data.window=4"],
    "lotka_volterra": ["data.window=4"],
    "qg_ocean": ["system.size=8", "system.solver_size=16", "system.spinup_window=172800.0",
                 "system.spinup_growth=0.0", "model.modes=3",
                 "data.window=2"],
}


# One data cache for the whole pytest run (tests/conftest.py sets it), shared by the tests and
# their xdist workers: generated once, read by every test of the same tiny config. The cache is
# built for that (file locks, atomic writes, content-addressed file names). A test that inspects
# or damages its data files asks for its own directory (own_data=True).
SHARED_DATA: Path | None = None


def tiny_config(system: str, tmp: Path, *extra: str, own_data: bool = False) -> RunConfig:
    data = tmp / "data" if own_data or SHARED_DATA is None else SHARED_DATA
    return load_config(system, "quick", [*TINY, *PER_SYSTEM.get(system, []), f"runs_dir={tmp / 'runs'}",
                                         f"data.dir={data}", f"results_dir={tmp / 'results'}", *extra])
