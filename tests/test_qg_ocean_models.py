"""Models of the qg_ocean system: ``run.py baseline`` (the coarse physical model scored like a
method, from the full state and from the sea surface height alone) and physics-aware models whose
known terms are the coarse QG terms."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import tiny_config

from leads.baseline import NAME, PERSISTENCE, score_baseline
from leads.cli import main
from leads.config.loading import load_config, system_of
from leads.config.schema import RunConfig
from leads.envs.errors import UserError
from leads.envs.registry import get_system
from leads.jobs import run_experiment
from leads.models.forecaster import Forecaster

HYBRID = ["physics.terms=all", "physics.integrator=etdrk4", "physics.params=constants_known", "physics.substeps=2"]


def rows_of(tmp_path):
    path = tmp_path / "results" / "qg_ocean" / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_coarse_model_rows_from_full_state_and_from_ssh(tmp_path):
    cfg = RunConfig.of(tiny_config("qg_ocean", tmp_path, "adapt.sets=[extrap]"))
    full = score_baseline(cfg)
    assert set(full) == {NAME, PERSISTENCE} and set(full[NAME]) == {"in_domain", "extrap"}
    for scores in full[NAME].values():
        assert (scores.rel_l2 > 0).all() and (scores.rel_l2 < 10).all()
    ssh = score_baseline(RunConfig.of(tiny_config("qg_ocean", tmp_path, "adapt.sets=[extrap]", "data.observe=ssh")))
    assert set(ssh[NAME]) == {"in_domain", "extrap"} and (ssh[NAME]["extrap"].rel_l2 > 0).all()
    rows = rows_of(tmp_path)
    assert {r["method"] for r in rows} == {NAME, PERSISTENCE}
    assert all(r["physics_aware"] == (r["method"] == NAME) and not r["external"] for r in rows)
    assert len({r["config_hash"] for r in rows}) == 2  # full state and ssh are two studies


def test_cli_writes_the_leaderboard(tmp_path, capsys):
    args = ["baseline", "--env", "qg_ocean", "--set", f"results_dir={tmp_path / 'results'}",
            "--set", f"data.dir={tmp_path / 'data'}", "--logger", "none"]
    small = ["system.size=8", "system.solver_size=16", "system.spinup_window=172800.0", "system.spinup_growth=0.0",
             "data.n_test=1",
             "data.n_test_heldout=1", "data.n_adapt=1", "adapt.sets=[interp]"]
    assert main([*args, *[a for kv in small for a in ("--set", kv)]]) == 0
    out = capsys.readouterr().out
    assert f"{NAME} · in_domain" in out
    # --set data settings make a protocol of their own, named after the profile and its key
    (board,) = (tmp_path / "results" / "qg_ocean").glob("leaderboard_quick-*.md")
    assert NAME in board.read_text()


def test_persistence_for_every_system_and_a_coarse_model_where_there_is_one(tmp_path):
    out = score_baseline(RunConfig.of(tiny_config("lotka_volterra", tmp_path, "adapt.sets=[interp]")))
    assert set(out) == {PERSISTENCE}
    # persistence's error at t: the state's change since t = 0 (its in-domain error is positive)
    assert (out[PERSISTENCE]["in_domain"].rel_l2 > 0).all()
    with pytest.raises(UserError, match="no coarse physical model") as e:
        get_system("lotka_volterra").coarse_forecast(None, None, None)
    assert "\n" not in str(e.value)


def test_known_terms_alone_are_the_coarse_model(tmp_path):
    """The forecaster's known terms with their true values, integrated by ETDRK4, follow pyqg at
    the observed resolution (AB3 at 1 h with its filter after each step) to the schemes' error
    (measured: 1.3e-3 to 3e-3 after 2 days for 1 to 8 ETDRK4 steps per 12 h, not converging: AB3's
    own; the state itself changes by 80-90%)."""
    cfg = RunConfig.of(tiny_config("qg_ocean", tmp_path, *HYBRID, "physics.params=true_values", "system.size=16"))
    system = system_of(cfg)
    module = Forecaster(cfg, system.state_shape, ["e"] * len(system.train_envs)).double()
    module.residual = False
    g = torch.Generator().manual_seed(0)
    u0 = torch.fft.irfft2(torch.fft.rfft2(torch.randn(2, 2, 16, 16, generator=g, dtype=torch.float64))
                          * (torch.arange(16).reshape(-1, 1).clamp(max=4) < 4), s=(16, 16)) * 1e-5
    t = system.times()[:5]
    env = torch.tensor([0, 5])
    with torch.no_grad():
        pred = module(u0, torch.as_tensor(t), env)
    truth = system.coarse_model(u0, system.env_tensor([system.train_envs[0], system.train_envs[5]]), t)
    err = (pred - truth).flatten(2).norm(dim=2) / truth.flatten(2).norm(dim=2)
    assert float(err[:, -1].max()) < 3e-3


@pytest.mark.slow  # a residual network at every ETDRK4 stage: ~15-50 s
def test_physics_aware_model_trains_adapts_and_identifies(tmp_path):
    cfg = tiny_config("qg_ocean", tmp_path, *HYBRID, "physics.substeps=1", "method=lowrank", "train.max_steps=2",
                      "adapt.sets=[extrap]", "adapt.steps=2")
    out = run_experiment(cfg, progress=False)
    assert out["summary"]["splits"]["extrap"]["rel_l2"][0] > 0
    identified = [r for r in out["rows"] if r["metric"] == "param_rel_error"]
    assert identified and all(r["value"] >= 0 for r in identified)


def test_benchmark_resolution_profile(tmp_path):
    """paper_code is the benchmark's 256^2 -> 64^2 at 1 h (run on a GPU); at a tiny size it runs here."""
    cfg = RunConfig.of(tiny_config("qg_ocean", tmp_path, "profile=paper_code"))
    assert cfg.profile == "paper_code"
    full = load_config("qg_ocean", "paper_code")
    assert (full.system["size"], full.system["solver_size"], full.system["solver_dt"]) == (64, 256, 3600.0)


@pytest.mark.slow
def test_benchmark_resolution_profile_trains_at_a_tiny_size(tmp_path):
    cfg = tiny_config("qg_ocean", tmp_path, "profile=paper_code", "model.modes=3", "model.width=8",
                      "train.max_steps=2", "adapt.sets=[extrap]", "adapt.steps=2")
    out = run_experiment(cfg, progress=False)
    assert out["summary"]["splits"]["extrap"]["rel_l2"][0] > 0
