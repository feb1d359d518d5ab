"""W&B the way its users work: sweep files whose agent command line run.py accepts, validation
metrics to sweep on, opt-in artifacts, and no third-party noise; all read back offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from tiny import PER_SYSTEM, TINY

from leads.cli import main
from leads.config.loading import load_config

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "configs" / "sweeps").glob("*.yaml"))


def agent_argv(sweep: dict, values: dict) -> list[str]:
    """The arguments the W&B agent gives ``run.py`` for one sample: the sweep's ``command``
    after ``${program}``, with ``${args}`` expanded to ``--key=value`` (the agent's default)."""
    command = sweep["command"]
    assert command[:3] == ["${env}", "${interpreter}", "${program}"] and sweep["program"] == "run.py"
    out = []
    for item in command[3:]:
        out += [f"--{k}={v}" for k, v in values.items()] if item == "${args}" else [str(item)]
    return out


def first_values(sweep: dict) -> dict:
    """One sample of every parameter: its first value, or its lower bound."""
    return {k: spec["values"][0] if "values" in spec else spec["min"] for k, spec in sweep["parameters"].items()}


def test_sweep_files_exist_and_sweep_on_validation_only():
    assert len(SWEEPS) >= 2
    for path in SWEEPS:
        sweep = yaml.safe_load(path.read_text())
        assert "${args}" in sweep["command"], path
        name = sweep["metric"]["name"]
        assert not name.startswith("test/") and ("val" in name), (path, name)  # never tune on test data


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_sweep_parameter_is_a_config_key_the_cli_accepts(path, tmp_path, monkeypatch):
    sweep = yaml.safe_load(path.read_text())
    argv = agent_argv(sweep, first_values(sweep))
    env = argv[argv.index("--env") + 1]
    seen = {}

    def fake_run(cfg, **kw):
        seen["cfg"] = cfg
        return {}

    monkeypatch.setattr("leads.jobs.run_experiment", fake_run)
    assert main([*argv, f"--runs_dir={tmp_path}", f"--results_dir={tmp_path}"]) == 0
    cfg = seen["cfg"]
    for key, value in first_values(sweep).items():
        node = cfg
        for part in key.split("."):
            node = node[part] if isinstance(node, dict) else getattr(node, part)
        assert node == value, (key, node, value)
    assert cfg.system_name == env


def test_sweep_agent_run_logs_its_metric_offline(tmp_path, monkeypatch):
    """A tiny run started with the agent's command line of the Lotka-Volterra sweep logs the
    sweep's metric (and the in-domain validation error) to W&B's summary, read back from the file."""
    from wandb_offline import logged

    monkeypatch.setenv("WANDB_MODE", "offline")
    path = ROOT / "configs" / "sweeps" / "lotka_volterra_methods.yaml"
    sweep = yaml.safe_load(path.read_text())
    tiny = [f"--{o}" for o in [*TINY, *PER_SYSTEM["lotka_volterra"]] if not o.startswith("logger=")]
    argv = agent_argv(sweep, {"method": "coda", "seed": 1}) + tiny + [
        f"--runs_dir={tmp_path / 'runs'}", f"--data.dir={tmp_path / 'data'}", f"--results_dir={tmp_path / 'res'}",
        "--logger=wandb", "--wandb.artifacts=true", "--no-progress"]
    assert main(argv) == 0
    run_dir = next((tmp_path / "runs" / "lotka_volterra").iterdir())
    got = logged(run_dir)
    metric = sweep["metric"]["name"]
    assert metric in got["summary"] and got["summary"][metric] > 0
    assert got["summary"]["val/best_rel_l2"] > 0
    assert "method:coda" in got["run"]["tags"] and "seed:1" in got["run"]["tags"]
    # wandb.artifacts=true: the best checkpoint and the resolved config, as typed artifacts
    names = dict(got["artifacts"])
    assert names.get(f"model-{run_dir.name}") == "model" and names.get(f"config-{run_dir.name}") == "config"


def test_artifacts_are_opt_in(tmp_path, monkeypatch):
    from tiny import tiny_config
    from wandb_offline import logged

    from leads.jobs import run_experiment

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = tiny_config("lotka_volterra", tmp_path, "logger=wandb")
    assert cfg.wandb.artifacts is False
    run_dir = run_experiment(cfg, progress=False)["run"].run_dir
    kinds = {kind for _, kind in logged(run_dir)["artifacts"]}  # W&B keeps logged tables as run_table ones
    assert not kinds & {"model", "config"}, kinds


def test_under_a_sweep_agent_the_run_keeps_the_agents_id(tmp_path, monkeypatch):
    from leads.training.loggers import make_logger

    cfg = load_config("lotka_volterra", "quick", ["logger=wandb"])
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert make_logger(cfg, tmp_path, "mine")._wandb_init["id"] == "mine"
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")
    logger = make_logger(cfg, tmp_path, "mine")
    assert logger._wandb_init["id"] is None and logger._wandb_init["name"] == "mine"
    assert "anonymous" not in logger._wandb_init


def test_a_sweep_agent_is_not_forced_offline(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")
    monkeypatch.setattr("leads.cli._handle", lambda *a: 0)
    main(["--env", "lotka_volterra"])
    assert "WANDB_MODE" not in os.environ
    monkeypatch.delenv("WANDB_SWEEP_ID")
    main(["--env", "lotka_volterra"])
    assert os.environ["WANDB_MODE"] == "offline"


@pytest.mark.parametrize("argv, message", [
    (["--env", "gray_scott", "--train.lrr=1"], "unknown config key 'train.lrr'"),
    (["--env", "gray_scott", "--nosuch.key=1"], "unknown config key 'nosuch'"),
    (["--env", "gray_scott", "--train.lr=-1"], "train.lr"),
])
def test_bad_sweep_overrides_are_one_line_errors(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_an_override_without_a_value_is_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["--env", "gray_scott", "--train.lr", "1"])
    assert "--key=value" in capsys.readouterr().err


def test_the_leaderboard_reaches_wandb_as_a_table(tmp_path, monkeypatch):
    from tiny import tiny_config
    from wandb_offline import logged

    from leads.jobs import run_experiment

    monkeypatch.setenv("WANDB_MODE", "offline")
    run_experiment(tiny_config("lotka_volterra", tmp_path), progress=False)
    results = tmp_path / "results"
    assert main(["leaderboard", "--env", "lotka_volterra", "--set", f"results_dir={results}", "--wandb"]) == 0
    got = logged(results / "lotka_volterra")
    assert got["run"]["job_type"] == "leaderboard" and got["run"]["group"] == "lotka_volterra/quick"
    assert "leaderboard" in got["history"]
