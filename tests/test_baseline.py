"""``run.py baseline``: the coarse physical model scored like a method, from the full state and
from the sea surface height alone."""

from __future__ import annotations

import json

import pytest
from tiny import tiny_config

from leads.cli import main
from leads.config.schema import RunConfig
from leads.envs.errors import UserError
from leads.evaluation.baseline import NAME, score_baseline


def rows_of(tmp_path):
    path = tmp_path / "results" / "qg_ocean" / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_coarse_model_rows_from_full_state_and_from_ssh(tmp_path):
    cfg = RunConfig.of(tiny_config("qg_ocean", tmp_path, "adapt.sets=[extrap]"))
    full = score_baseline(cfg)
    assert set(full) == {"in_domain", "extrap"}
    for scores in full.values():
        assert (scores.rel_l2 > 0).all() and (scores.rel_l2 < 10).all()
    ssh = score_baseline(RunConfig.of(tiny_config("qg_ocean", tmp_path, "adapt.sets=[extrap]", "data.observe=ssh")))
    assert set(ssh) == {"in_domain", "extrap"} and (ssh["extrap"].rel_l2 > 0).all()
    rows = rows_of(tmp_path)
    assert {r["method"] for r in rows} == {NAME} and all(r["physics_aware"] and not r["external"] for r in rows)
    assert len({r["config_hash"] for r in rows}) == 2  # full state and ssh are two studies


def test_cli_writes_the_leaderboard(tmp_path, capsys):
    args = ["baseline", "--env", "qg_ocean", "--set", f"results_dir={tmp_path / 'results'}",
            "--set", f"data.dir={tmp_path / 'data'}", "--logger", "none"]
    small = ["system.size=8", "system.solver_size=16", "system.spinup_window=172800.0", "data.n_test=1",
             "data.n_test_heldout=1", "data.n_adapt=1", "adapt.sets=[interp]"]
    assert main([*args, *[a for kv in small for a in ("--set", kv)]]) == 0
    out = capsys.readouterr().out
    assert f"{NAME} · in_domain" in out
    assert NAME in (tmp_path / "results" / "qg_ocean" / "leaderboard_quick.md").read_text()


def test_a_system_without_one_says_so(tmp_path):
    with pytest.raises(UserError, match="no coarse physical model") as e:
        score_baseline(RunConfig.of(tiny_config("lotka_volterra", tmp_path)))
    assert "\n" not in str(e.value)
