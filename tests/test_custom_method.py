"""A method of your own, named module:ClassName, trains, adapts, evaluates and ranks like ours."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from tiny import tiny_config

from leads.envs.errors import UserError
from leads.models.methods import resolve_method

EXTENDING = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def _docs_example() -> str:
    text = EXTENDING.read_text()
    section = text[text.index("### Without touching the repository"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def my_methods(tmp_path, monkeypatch):
    (tmp_path / "my_methods.py").write_text(_docs_example())
    (tmp_path / "not_a_method.py").write_text("class Plain:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_methods:EnvShift"
    sys.modules.pop("my_methods", None)
    sys.modules.pop("not_a_method", None)


def test_documented_method_trains_adapts_evaluates_and_ranks(my_methods, tmp_path):
    from leads.jobs import run_experiment
    from leads.reporting import leaderboard
    from leads.reporting.results import read_rows, results_path
    from leads.training.checkpoints import load_checkpoint

    cfg = tiny_config("lotka_volterra", tmp_path / "out", f"method={my_methods}")
    out = run_experiment(cfg, progress=False)
    assert out["run"].run_dir.name.startswith("my_methods_EnvShift-s0-")
    rows = read_rows(results_path(cfg))
    assert {r["method"] for r in rows} == {my_methods}
    held = [r for r in rows if r["kind"] == "heldout" and r["environment"] == "all" and r["metric"] == "rel_l2"]
    assert {r["split"] for r in held} == {"interp", "extrap"}
    assert all(r["n_adapted_params"] == 2 for r in held)  # the shift of du/dt, one per state component
    lb = leaderboard.build(rows, "lotka_volterra", "quick")
    assert [ln.method for ln in lb.lines] == [my_methods]
    reloaded = load_checkpoint(out["run"].best_ckpt)
    assert type(reloaded.model).__name__ == "EnvShift"


@pytest.mark.parametrize("name, message", [
    ("no_such_module:Thing", "cannot import module 'no_such_module'"),
    ("my_methods:Missing", "has no class 'Missing'"),
    ("not_a_method:Plain", "is not an EnvModel subclass"),
    ("nosuch", "unknown method 'nosuch'"),
])
def test_a_method_that_cannot_be_used_is_a_one_line_error(my_methods, name, message):
    with pytest.raises(UserError) as e:
        resolve_method(name)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_command_line_rejects_a_bad_method_path_before_training(my_methods, tmp_path):
    from leads.cli import main

    argv = ["--env", "lotka_volterra", "--method", "my_methods:Missing", "--logger", "none",
            "--set", f"runs_dir={tmp_path / 'runs'}", "--set", f"data.dir={tmp_path / 'data'}"]
    assert main(argv) != 0
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()
