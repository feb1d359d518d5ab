"""A model from another codebase, for docs/external_models.md: it reads only an exported inputs
file (``python run.py export ... --training-data``), never imports this project, and writes a
predictions file for ``python run.py score``.

The model: per environment, du/dt = W_e^T phi(u) with phi(u) every monomial of the state up to
degree 2 (a sparse-regression-style model of small ODE systems, such as Lotka-Volterra). W_e is
fitted by least squares on central differences of the training trajectories of environment e;
on a held-out environment, on its adaptation trajectories (the ``shots`` given). Forecasts
integrate the fitted field with RK4 at ``--substeps`` steps per observation interval.

    python docs/examples/polynomial_model.py inputs.h5 predictions.h5
"""

from __future__ import annotations

import argparse
import itertools
import time

import h5py
import numpy as np


def features(u: np.ndarray) -> np.ndarray:
    """``(N, d)`` states -> ``(N, 1 + d + d(d+1)/2)``: 1, every u_i, every u_i u_j (i <= j)."""
    d = u.shape[1]
    quad = [u[:, i] * u[:, j] for i, j in itertools.combinations_with_replacement(range(d), 2)]
    return np.column_stack([np.ones(len(u)), u, *quad])


def fit(states: np.ndarray, t: np.ndarray, ridge: float = 1e-8) -> np.ndarray:
    """Coefficients ``(n_features, d)`` from trajectories ``(n_traj, n_t, d)`` observed at ``t``."""
    du = (states[:, 2:] - states[:, :-2]) / (t[2:] - t[:-2])[None, :, None]
    u = states[:, 1:-1]
    x, y = features(u.reshape(-1, u.shape[-1])), du.reshape(-1, du.shape[-1])
    return np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)


def rollout(w: np.ndarray, u0: np.ndarray, t: np.ndarray, substeps: int) -> np.ndarray:
    """RK4 forecasts ``(N, n_t, d)`` from ``u0`` ``(N, d)`` (they may become non-finite: that is scored)."""
    def rhs(u: np.ndarray) -> np.ndarray:
        return features(u) @ w

    out = [u0]
    u = u0.astype(np.float64)
    with np.errstate(all="ignore"):
        for dt in np.diff(t):
            h = dt / substeps
            for _ in range(substeps):
                k1 = rhs(u)
                k2 = rhs(u + h / 2 * k1)
                k3 = rhs(u + h / 2 * k2)
                k4 = rhs(u + h * k3)
                u = u + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            out.append(u)
    return np.stack(out, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", help="the file `run.py export --training-data` wrote")
    parser.add_argument("predictions", help="the predictions file to write")
    parser.add_argument("--substeps", type=int, default=8, help="RK4 steps per observation interval")
    args = parser.parse_args()
    start = time.process_time()
    with h5py.File(args.inputs, "r") as f, h5py.File(args.predictions, "w") as out:
        if "train" not in f:
            raise SystemExit(f"{args.inputs} holds no training data: export it with --training-data")
        train, t_train = f["train/states"][()], f["train/t"][()]
        if train.ndim != 4:
            raise SystemExit("this example models small ODE states (n_env, n_traj, n_t, d) only")
        weights = {"in_domain": [fit(train[e], t_train) for e in range(len(train))]}
        groups = ["in_domain", *[f"heldout/{name}" for name in f.get("heldout", {})]]
        for group in groups:
            g = f[group]
            if group != "in_domain":  # adapt: fit each new environment on its few trajectories
                weights[group] = [fit(a, g["adapt_t"][()]) for a in g["adapt_states"][()]]
            u0, t = g["initial_states"][()], g["t"][()]
            pred = np.stack([rollout(weights[group][e], u0[e], t, args.substeps) for e in range(len(u0))])
            out[f"{group}/envs"] = g["envs"][()]
            with np.errstate(over="ignore"):  # a forecast past float32's range is infinite: diverged
                out[f"{group}/pred"] = pred.astype(np.float32)
    print(f"fitted and forecast in {time.process_time() - start:.2f} CPU s: {args.predictions}")


if __name__ == "__main__":
    main()
