"""Models from other codebases: export the evaluation inputs (and the training data), score their
predictions (diverging ones too), rank them as labelled external entries."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from tiny import tiny_config

from leads.cli import main
from leads.config.loading import system_of
from leads.config.schema import RunConfig
from leads.datasets.cache import ensure_split
from leads.datasets.h5 import load_split
from leads.envs.errors import UserError
from leads.external import export_inputs, score_predictions_file
from leads.reporting import leaderboard
from leads.reporting.results import read_rows, results_path

SYSTEM = "lotka_volterra"


def _answer(inputs, out, predict) -> None:
    """Write predictions for every group of ``inputs``: ``predict(group, envs, t, initial_states)``."""
    with h5py.File(inputs, "r") as f, h5py.File(out, "w") as g:
        groups = ["in_domain", *[f"heldout/{n}" for n in f["heldout"]]]
        for group in groups:
            src = f[group]
            g[f"{group}/envs"] = src["envs"][()]
            g[f"{group}/pred"] = predict(group, src["envs"][()], src["t"][()], src["initial_states"][()])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny protocol (2 test trajectories per environment), its exported inputs and test truths."""
    tmp = tmp_path_factory.mktemp("external")
    cfg = RunConfig.of(tiny_config(SYSTEM, tmp, "data.n_test=2", "data.n_test_heldout=2"))
    inputs = export_inputs(cfg, tmp / "inputs.h5")
    system = system_of(cfg)
    truth = {"in_domain": load_split(ensure_split(system, cfg.data, "test")).states.double()}
    for name in ("interp", "extrap"):
        truth[f"heldout/{name}"] = load_split(ensure_split(system, cfg.data, f"test_{name}")).states.double()
    return cfg, inputs, truth


def _fresh(cfg, tmp_path) -> RunConfig:
    """``cfg`` writing its results under ``tmp_path`` (the data stay shared)."""
    return cfg.replace(results_dir=str(tmp_path / "results"))


def test_solver_predictions_score_near_zero_and_a_constant_scores_its_known_error(exported, tmp_path):
    cfg, inputs, truth = exported
    cfg = _fresh(cfg, tmp_path)
    system = system_of(cfg)
    with h5py.File(inputs, "r") as f:
        assert set(f["heldout"]) == {"interp", "extrap"}
        assert f["in_domain/initial_states"].shape == (len(system.train_envs), 2, 2)
        assert f["heldout/interp/adapt_states"].shape[:2] == (4, cfg.adapt.shots)
        assert "states" not in f["in_domain"] and "train" not in f  # nothing beyond t=0 of a test trajectory

    def solver(group, envs, t, u0):
        n_env, n_traj = u0.shape[:2]
        params = torch.from_numpy(np.repeat(envs, n_traj, axis=0))
        out = system.solve(torch.from_numpy(u0.reshape(n_env * n_traj, -1)).double(), params, t)
        return out.reshape(n_env, n_traj, len(t), -1).numpy()

    _answer(inputs, tmp_path / "solver.h5", solver)
    scored = score_predictions_file(cfg, tmp_path / "solver.h5", "solver")
    for s in scored.scores.values():
        assert s.summary("rel_l2")[0] < 1e-5 and s.summary("rel_l2_full")[0] < 1e-5 and not s.diverged.any()

    _answer(inputs, tmp_path / "constant.h5", lambda g, e, t, u0: np.ones((*u0.shape[:2], len(t), *u0.shape[2:])))
    constant = score_predictions_file(cfg, tmp_path / "constant.h5", "constant")
    n_in = int(np.searchsorted(system.times(2 * system.horizon), system.horizon + 1e-9))  # points in [0, T]
    y = truth["in_domain"][:, :, 1:n_in]
    expected = ((y - 1).flatten(2).norm(dim=2) / y.flatten(2).norm(dim=2)).mean()  # per trajectory, then mean
    assert constant.scores["in_domain"].summary("rel_l2")[0] == pytest.approx(float(expected), rel=1e-5)

    rows = read_rows(results_path(cfg))
    assert {r["method"] for r in rows} == {"solver", "constant"} and all(r["external"] for r in rows)
    lb = leaderboard.build(rows, SYSTEM, leaderboard.resolve_protocol(rows, SYSTEM, cfg=cfg))
    assert [ln.method for ln in lb.lines] == ["solver", "constant"] and all(ln.external for ln in lb.lines)
    md = leaderboard.to_markdown(lb)
    assert "| solver (external) |" in md and "| not declared |" in md


def test_a_forecast_that_diverges_is_scored_to_its_divergence_and_ranked_last(exported, tmp_path):
    """Trajectory 0 of every training environment becomes NaN at a known time; the rest of the
    forecast is the truth times (1 + 0.1 k) at step k. Scores are over the finite part, the
    divergence time is recorded, and a worse model that stays finite ranks above it."""
    cfg, inputs, truth = exported
    cfg = _fresh(cfg, tmp_path)
    k_nan = 7

    def drifting(group, envs, t, u0):
        y = truth[group].numpy()
        pred = y * (1 + 0.1 * np.arange(len(t)))[None, None, :, None]
        if group == "in_domain":
            pred[:, 0, k_nan:] = np.nan
        return pred

    _answer(inputs, tmp_path / "diverging.h5", drifting)
    scored = score_predictions_file(cfg, tmp_path / "diverging.h5", "diverging")
    s = scored.scores["in_domain"]
    t = s.t
    first = np.arange(len(s.env)) % 2 == 0  # trajectory 0 of each environment
    assert np.array_equal(s.diverged, first) and np.all(s.diverged_at[first] == t[k_nan])
    # (0, T] scored on steps 1 .. k_nan - 1 for the diverged ones, on all of (0, T] for the others
    n_in = int(np.searchsorted(t, system_of(cfg).horizon + 1e-9))
    y = truth["in_domain"].flatten(0, 1)
    for i in range(len(s.env)):
        end = k_nan if first[i] else n_in
        steps = np.arange(1, end)
        yy = y[i, steps].flatten(1).norm(dim=1).numpy()
        expected = np.sqrt(np.sum((0.1 * steps * yy) ** 2) / np.sum(yy ** 2))
        assert s.rel_l2[i] == pytest.approx(expected, rel=1e-6), i
    assert np.all(np.isnan(s.rel_l2_extrap[first])) and np.all(np.isfinite(s.rel_l2_extrap[~first]))
    assert s.divergence() == f"{first.sum()}/{len(first)} diverged (first at t={t[k_nan]:g})"
    rows = [r for r in scored.rows if r["split"] == "in_domain" and r["environment"] == "all"]
    assert {r["n_diverged"] for r in rows} == {int(first.sum())} and {r["diverged_at"] for r in rows} == {t[k_nan]}

    # a model with larger errors that never diverges ranks above it
    _answer(inputs, tmp_path / "worse.h5", lambda g, e, t, u0: 3.0 * truth[g].numpy())
    score_predictions_file(cfg, tmp_path / "worse.h5", "worse")
    rows = read_rows(results_path(cfg))
    lb = leaderboard.build(rows, SYSTEM, leaderboard.resolve_protocol(rows, SYSTEM, cfg=cfg))
    worse, diverging = lb.lines
    assert (worse.method, diverging.method) == ("worse", "diverging")
    assert diverging.heldout < worse.heldout and diverging.cells["in_domain"][0] < worse.cells["in_domain"][0]
    assert str(diverging.diverged["in_domain"]) == f"{first.sum()}/{len(first)} from t={t[k_nan]:g}"
    md = leaderboard.to_markdown(lb)
    assert f"diverging (external): in-domain {first.sum()}/{len(first)} from t={t[k_nan]:g}" in md


def test_scoring_the_same_file_twice_replaces_its_rows(exported, tmp_path, capsys):
    cfg, inputs, truth = exported
    cfg = _fresh(cfg, tmp_path)
    _answer(inputs, tmp_path / "p.h5", lambda g, e, t, u0: 1.1 * truth[g].numpy())
    first = score_predictions_file(cfg, tmp_path / "p.h5", "twice")
    assert first.replaced == 0
    n = len(read_rows(results_path(cfg)))
    again = score_predictions_file(cfg, tmp_path / "p.h5", "twice")
    assert again.replaced == n and len(read_rows(results_path(cfg))) == n
    # a declared budget is part of what a row is: it is another entry, beside the first
    score_predictions_file(cfg, tmp_path / "p.h5", "twice", train_steps=100)
    assert len(read_rows(results_path(cfg))) == 2 * n


def test_bad_predictions_are_one_line_errors(exported, tmp_path):
    cfg, inputs, truth = exported
    cfg = _fresh(cfg, tmp_path)

    def zeros(g, e, t, u0):
        return np.zeros((*u0.shape[:2], len(t), *u0.shape[2:]))

    cases = {
        "wrong shape": (lambda g, e, t, u0: np.zeros((*u0.shape[:2], len(t) - 1, *u0.shape[2:])), "has shape"),
        "wrong envs": (zeros, "are not the environments"),
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
    # files that are not (whole) HDF5: empty, truncated, text, a directory
    _answer(inputs, tmp_path / "good.h5", zeros)
    data = (tmp_path / "good.h5").read_bytes()
    (tmp_path / "empty.h5").write_bytes(b"")
    (tmp_path / "truncated.h5").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.h5").write_text("pred = [1, 2, 3]\n")
    (tmp_path / "dir.h5").mkdir()
    for name, message in (("empty.h5", "is empty"), ("truncated.h5", "is not a readable HDF5 file"),
                          ("text.h5", "is not a readable HDF5 file"), ("dir.h5", "is a directory")):
        with pytest.raises(UserError, match=message) as e:
            score_predictions_file(cfg, tmp_path / name, "bad")
        assert "\n" not in str(e.value) and str(tmp_path / name) in str(e.value), name
    assert not results_path(cfg).exists()  # nothing of a rejected file reaches the results


def test_export_refuses_an_output_it_cannot_write(exported, tmp_path):
    cfg, inputs, _ = exported
    with pytest.raises(UserError, match="already exists"):
        export_inputs(cfg, inputs)
    (tmp_path / "a_file").write_text("")
    for out, message in ((tmp_path / "a_file" / "inputs.h5", "is a file, not a directory"),
                         (tmp_path / "a_file" / "deeper" / "inputs.h5", "is a file, not a directory"),
                         (tmp_path / "a_dir", "already exists")):
        (tmp_path / "a_dir").mkdir(exist_ok=True)
        with pytest.raises(UserError, match=message) as e:
            export_inputs(cfg, out)
        assert "--out" in str(e.value) and "\n" not in str(e.value)


def test_exported_training_data_are_the_protocols_own(exported, tmp_path):
    cfg, _, _ = exported
    path = export_inputs(cfg, tmp_path / "with_train.h5", training_data=True)
    system = system_of(cfg)
    with h5py.File(path, "r") as f:
        for split in ("train", "val"):
            data = load_split(ensure_split(system, cfg.data, split))
            assert np.array_equal(f[f"{split}/states"][()], data.states.numpy())
            assert np.array_equal(f[f"{split}/t"][()], data.t.numpy())
            assert np.array_equal(f[f"{split}/envs"][()], system.env_tensor(system.train_envs).numpy())
            assert list(f[f"{split}/envs"].attrs["param_names"]) == list(system.param_names)
        assert f["train/states"].shape[:2] == (len(system.train_envs), cfg.data.n_train)
        assert f.attrs["protocol"] and f.attrs["protocol_key"]


def test_export_and_score_from_the_command_line(tmp_path, capsys):
    """Under a published protocol (LEADS' Lotka-Volterra): the summary shows its metric, the
    external entry is labelled with its declared budget in the table and the published block."""
    sets = [f"--set=runs_dir={tmp_path / 'runs'}", f"--set=data.dir={tmp_path / 'data'}",
            f"--set=results_dir={tmp_path / 'results'}"]
    common = ["--env", SYSTEM, "--profile", "paper_leads", *sets]
    assert main(["export", *common, "--out", str(tmp_path / "in.h5"), "--training-data"]) == 0
    out = capsys.readouterr().out
    assert "with the training and validation data" in out and "train data of this protocol: " in out
    with h5py.File(tmp_path / "in.h5", "r") as f:
        assert f["train/states"].shape[:2] == (10, 1)  # LEADS: 10 environments, 1 trajectory each
        with h5py.File(tmp_path / "p.h5", "w") as g:  # persistence: the initial state forever
            u0, t = f["in_domain/initial_states"][()], f["in_domain/t"][()]
            g["in_domain/envs"] = f["in_domain/envs"][()]
            g["in_domain/pred"] = np.repeat(u0[:, :, None], len(t), axis=2)
    argv = ["score", *common, "--predictions", str(tmp_path / "p.h5"), "--name", "persistence", "--logger", "none",
            "--train-steps", "0", "--train-seconds", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "persistence · in_domain: relative L2 (0, T] " in out
    assert "LEADS metric: MSE over [0, T] including t=0 (LEADS' convention): " in out
    assert "| persistence (external) | paper_leads | declared: 0 steps, 0 s |" in out
    assert "| persistence (external) | " in out and "external, 1 seed(s), training budget declared: 0 steps, 0 s" in out
    assert "nan" not in out and "? training steps" not in out
    assert main(argv) == 0  # again: its rows are replaced, not repeated
    assert "replaced " in capsys.readouterr().out


def test_the_documented_model_from_another_codebase_trains_on_exported_data_and_ranks(exported, tmp_path):
    """docs/external_models.md's worked example, on a tiny protocol: the script reads only the
    export (training data included), writes predictions, and they are scored and ranked."""
    import subprocess
    import sys
    from pathlib import Path

    cfg, _, _ = exported
    cfg = _fresh(cfg, tmp_path)
    inputs = export_inputs(cfg, tmp_path / "lv_inputs.h5", training_data=True)
    script = Path(__file__).resolve().parents[1] / "docs" / "examples" / "polynomial_model.py"
    done = subprocess.run([sys.executable, str(script), str(inputs), str(tmp_path / "lv_poly.h5")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "fitted and forecast in" in done.stdout, done.stderr[-2000:]
    assert "Warning" not in done.stderr, done.stderr
    scored = score_predictions_file(cfg, tmp_path / "lv_poly.h5", "poly2", train_seconds=0.2)
    assert set(scored.scores) == {"in_domain", "heldout/interp", "heldout/extrap"}
    # a degree-2 polynomial is Lotka-Volterra's own form: in-domain it is close before it diverges
    assert scored.scores["in_domain"].summary("rel_l2")[0] < 0.5
    rows = read_rows(results_path(cfg))
    (line,) = leaderboard.build(rows, SYSTEM, leaderboard.resolve_protocol(rows, SYSTEM, cfg=cfg)).lines
    assert line.label == "poly2 (external)" and line.budget() == "declared: 0.2 s"
