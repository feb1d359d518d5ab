"""Burgers' data solver against the Cole-Hopf exact solution, by solver grid.

    python benchmarks/burgers_accuracy.py [--cells 1024 2048 4096 8192] [--size 256] [--seed 3]

Unforced viscous Burgers from one seed's initial field at mu = 0.5, 0.05, 5e-3, 5e-4, 5e-5 (one
batch), observed on ``--size`` cells; prints the relative L2 error of the observed cell averages
against the exact ones (``tests/test_burgers.py``: cole_hopf_cell_averages) at t = 0.05 (the
training horizon; shocks are forming) and t = 0.1 (the test horizon; shocks formed), and the
generation time of the batch. The initial data steepen into shocks by t ~ 0.05, so below
mu ~ 5e-3 the error falls at first order in the cell size, as for any shock-capturing scheme.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from leads.envs.registry import get_system  # noqa: E402
from tests.test_burgers import cole_hopf_cell_averages  # noqa: E402

MUS = (0.5, 0.05, 5e-3, 5e-4, 5e-5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, nargs="+", default=[1024, 2048, 4096, 8192], help="solver grids")
    parser.add_argument("--size", type=int, default=256, help="observed cells")
    parser.add_argument("--seed", type=int, default=3, help="initial-condition seed")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; relative L2 against Cole-Hopf")
    print(f"{'cells':>6} {'mu':>8} {'t=0.05':>10} {'t=0.1':>10} {'batch s':>8}")
    for n in args.cells:
        system = get_system("burgers", solver_size=n, size=args.size)
        params = torch.tensor([[mu, 0.0, 1.5] for mu in MUS], dtype=torch.float64)
        t = system.times(0.1)
        start = time.perf_counter()
        y = system.generate([args.seed] * len(MUS), params, t)
        seconds = time.perf_counter() - start
        for i, mu in enumerate(MUS):
            errors = []
            for j in (50, 100):
                exact = cole_hopf_cell_averages(system, args.seed, mu, float(t[j]), args.size,
                                                ny=65536 if mu < 1e-3 else 16384)
                errors.append(float((y[i, j, 0] - exact).norm() / exact.norm()))
            print(f"{n:>6} {mu:>8g} {errors[0]:>10.2e} {errors[1]:>10.2e} {seconds:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
