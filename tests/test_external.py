"""Models from other codebases: export the evaluation inputs, score their predictions."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from tiny import tiny_config

from leads.cli import main
from leads.config.loading import system_of
from leads.config.schema import RunConfig
from leads.envs.errors import UserError
from leads.external import export_inputs, score_predictions_file
from leads.reporting import leaderboard
from leads.reporting.results import read_rows, results_path


def _answer(inputs, out, predict) -> None:
    """Write predictions for every group of ``inputs``: ``predict(group, envs, t, initial_states)``."""
    with h5py.File(inputs, "r") as f, h5py.File(out, "w") as g:
        groups = ["in_domain", *[f"heldout/{n}" for n in f["heldout"]]]
        for group in groups:
            src = f[group]
            g[f"{group}/envs"] = src["envs"][()]
            g[f"{group}/pred"] = predict(group, src["envs"][()], src["t"][()], src["initial_states"][()])


def test_solver_predictions_score_near_zero_and_a_constant_scores_its_known_error(tmp_path):
    cfg = RunConfig.of(tiny_config("lotka_volterra", tmp_path))
    system = system_of(cfg)
    inputs = export_inputs(cfg, tmp_path / "inputs.h5")
    with h5py.File(inputs, "r") as f:
        assert set(f["heldout"]) == {"interp", "extrap"}
        assert f["in_domain/initial_states"].shape == (len(system.train_envs), 1, 2)
        assert f["heldout/interp/adapt_states"].shape[:2] == (4, cfg.adapt.shots)
        assert "states" not in f["in_domain"]  # the test trajectories beyond t=0 are not given away

    def solver(group, envs, t, u0):
        n_env, n_traj = u0.shape[:2]
        params = torch.from_numpy(np.repeat(envs, n_traj, axis=0))
        out = system.solve(torch.from_numpy(u0.reshape(n_env * n_traj, -1)).double(), params, t)
        return out.reshape(n_env, n_traj, len(t), -1).numpy()

    _answer(inputs, tmp_path / "solver.h5", solver)
    scores = score_predictions_file(cfg, tmp_path / "solver.h5", "solver")
    for s in scores.values():
        assert s.summary("rel_l2")[0] < 1e-5 and s.summary("rel_l2_full")[0] < 1e-5

    _answer(inputs, tmp_path / "constant.h5", lambda g, e, t, u0: np.ones((*u0.shape[:2], len(t), *u0.shape[2:])))
    constant = score_predictions_file(cfg, tmp_path / "constant.h5", "constant")
    from leads.datasets.cache import ensure_split
    from leads.datasets.h5 import load_split

    truth = load_split(ensure_split(system, cfg.data, "test")).states.double()
    n_in = int(np.searchsorted(system.times(2 * system.horizon), system.horizon + 1e-9))  # points in [0, T]
    y = truth[:, :, 1:n_in]
    expected = ((y - 1).flatten(2).norm(dim=2) / y.flatten(2).norm(dim=2)).mean()  # per trajectory, then mean
    got = constant["in_domain"].summary("rel_l2")[0]
    assert got == pytest.approx(float(expected), rel=1e-5)

    rows = read_rows(results_path(cfg))
    assert {r["method"] for r in rows} == {"solver", "constant"} and all(r["external"] for r in rows)
    lb = leaderboard.build(rows, "lotka_volterra", "quick")
    assert [ln.method for ln in lb.lines] == ["solver", "constant"] and all(ln.external for ln in lb.lines)
    assert "solver (external)" in leaderboard.to_markdown(lb)


def test_bad_predictions_are_one_line_errors(tmp_path):
    cfg = RunConfig.of(tiny_config("lotka_volterra", tmp_path))
    inputs = export_inputs(cfg, tmp_path / "inputs.h5")
    with pytest.raises(UserError, match="already exists"):
        export_inputs(cfg, inputs)

    def zeros(g, e, t, u0):
        return np.zeros((*u0.shape[:2], len(t), *u0.shape[2:]))

    cases = {
        "wrong shape": (lambda g, e, t, u0: np.zeros((*u0.shape[:2], len(t) - 1, *u0.shape[2:])), "has shape"),
        "wrong envs": (zeros, "are not the environments"),
        "non-finite": (lambda g, e, t, u0: np.full((*u0.shape[:2], len(t), *u0.shape[2:]), np.nan), "non-finite"),
    }
    for label, (predict, message) in cases.items():
        out = tmp_path / f"{label}.h5"
        _answer(inputs, out, predict)
        if label == "wrong envs":
            with h5py.File(out, "r+") as f:
                f["heldout/extrap/envs"][0, 1] += 0.1
        with pytest.raises(UserError, match=message) as e:
            score_predictions_file(cfg, out, "bad")
        assert "\n" not in str(e.value), label
    with h5py.File(tmp_path / "partial.h5", "w") as f:
        f["in_domain/pred"] = np.zeros(1)
    with pytest.raises(UserError, match="answer every group"):
        score_predictions_file(cfg, tmp_path / "partial.h5", "bad")
    assert not results_path(cfg).exists()  # nothing of a rejected file reaches the results


def test_export_and_score_from_the_command_line(tmp_path, capsys):
    sets = [f"--set=runs_dir={tmp_path / 'runs'}", f"--set=data.dir={tmp_path / 'data'}",
            f"--set=results_dir={tmp_path / 'results'}", "--set=data.n_test=2", "--set=data.n_test_heldout=2"]
    assert main(["export", "--env", "lotka_volterra", "--out", str(tmp_path / "in.h5"), *sets]) == 0
    _answer(tmp_path / "in.h5", tmp_path / "p.h5", lambda g, e, t, u0: np.repeat(u0[:, :, None], len(t), axis=2))
    assert main(["score", "--env", "lotka_volterra", "--predictions", str(tmp_path / "p.h5"), "--name",
                 "persistence", "--logger", "none", *sets]) == 0
    out = capsys.readouterr().out
    assert "persistence · in_domain: relative L2" in out and "persistence (external)" in out
