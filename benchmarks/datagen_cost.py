"""CPU seconds per trajectory of the data solvers at GEPS' grids (Burgers, Kolmogorov flow).

    python benchmarks/datagen_cost.py burgers       # 16384 and 8192 cells, three environments
    python benchmarks/datagen_cost.py kolmogorov    # 256^2 at step 0.005 and 512^2 at 0.0025

Two trajectories per case in one batch, one torch thread, timed by ``time.process_time`` (the
process's CPU time, so other jobs on the machine do not inflate it). Burgers: the test horizon
[0, 0.1]; Kolmogorov: the 0.4 warm-up and 0.1 after it (a test trajectory is 0.4 + 2.0).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leads.envs.registry import get_system  # noqa: E402

BURGERS_ENVS = ({"mu": 5e-4, "F": 0.0, "w": 1.5}, {"mu": 5e-5, "F": 5.0, "w": 3.0}, {"mu": 1.0, "F": 5.0, "w": 1.5})
KOLMOGOROV_ENV = {"nu": 1e-4, "domain": 1.0, "F": 1.0}


def per_trajectory(system_name: str, env: dict[str, float], horizon: float, **config: float) -> float:
    system = get_system(system_name, **config)
    start = time.process_time()
    system.generate([1, 2], system.env_tensor([env] * 2), system.times(horizon))
    return (time.process_time() - start) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("system", choices=["burgers", "kolmogorov"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.system == "burgers":
        for cells in (16384, 8192):
            for env in BURGERS_ENVS:
                s = per_trajectory("burgers", env, 0.1, solver_size=cells)
                print(f"burgers, {cells} cells, {env}: {s:.1f} CPU s per trajectory over [0, 0.1]", flush=True)
    else:
        for grid, step in ((256, 0.005), (512, 0.0025)):
            s = per_trajectory("kolmogorov", KOLMOGOROV_ENV, 0.1, solver_size=grid, solver_dt=step, horizon=0.1)
            print(f"kolmogorov, {grid}^2 at step {step}, {KOLMOGOROV_ENV}: {s:.1f} CPU s per trajectory over "
                  "the 0.4 warm-up + 0.1", flush=True)


if __name__ == "__main__":
    main()
