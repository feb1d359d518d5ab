import dataclasses
import warnings
from pathlib import Path

import pytest

from leads.config.schema import RunConfig
from leads.envs.errors import UserError
from leads.training.loggers import make_logger, wandb_mode


def cfg(mode: str, logger: str = "wandb") -> RunConfig:
    return RunConfig.of({"system_name": "lotka_volterra", "system": {}, "methods": {"lowrank": {}},
                         "logger": logger, "wandb": {"mode": mode, "project": "leads", "entity": None}})


def test_environment_variable_wins(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode(cfg("offline")) == "disabled"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode(cfg("online")) == "offline"


def test_online_without_network_or_key_degrades_to_offline_with_a_warning(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    with pytest.warns(UserWarning, match="logging offline instead"):
        assert wandb_mode(cfg("online")) == "offline"
    # a key but no reachable server: same
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "https://127.0.0.1:9")
    with pytest.warns(UserWarning, match="unreachable"):
        assert wandb_mode(cfg("online")) == "offline"


def test_offline_is_silent(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert wandb_mode(cfg("offline")) == "offline"


def test_unknown_mode_and_logger(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(UserError, match="unknown W&B mode 'sometimes'"):
        wandb_mode(cfg("offline"))
    monkeypatch.delenv("WANDB_MODE")
    with pytest.raises(UserError, match=r"unknown wandb.mode 'sometimes'"):
        cfg("sometimes")
    with pytest.raises(UserError, match="unknown logger 'tensorboard'"):  # past the config's own check
        make_logger(dataclasses.replace(cfg("offline"), logger="tensorboard"), tmp_path, "r")
    assert make_logger(cfg("offline", "none"), tmp_path, "r") is None


def test_a_resumed_csv_run_keeps_the_metrics_of_its_earlier_parts(tmp_path):
    # Lightning's CSVLogger deletes an existing metrics.csv in its directory; --resume used to
    # lose the training curve of every earlier part of the run that way.
    csv = cfg("offline", "csv")
    paths = []
    for part in range(3):
        logger = make_logger(csv, tmp_path, "run")
        logger.log_metrics({"loss": float(part)}, step=part)
        logger.save()
        logger.finalize("success")
        paths.append(Path(logger.log_dir) / "metrics.csv")
    assert len(set(paths)) == 3
    for part, path in enumerate(paths):
        lines = path.read_text().splitlines()
        assert len(lines) == 2 and lines[1].split(",")[0] in (str(float(part)), str(part)), lines
