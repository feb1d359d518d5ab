"""The main job end to end on tiny configs: train, evaluate, adapt, figures, resume, W&B."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import tiny_config

from leads.cli import main
from leads.envs.registry import SYSTEMS
from leads.jobs import run_experiment
from leads.models.forecaster import Forecaster


@pytest.mark.slow
@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_tiny_run_per_system(system, tmp_path):
    cfg = tiny_config(system, tmp_path)
    out = run_experiment(cfg, progress=False)
    summary = out["summary"]
    assert set(summary["splits"]) >= {"in_domain", "interp", "extrap"} - ({"interp"} if system == "pendulum" else set())
    for split in summary["splits"].values():
        assert split["rel_l2"][0] >= 0 and split["n_traj"] >= 1
    run_dir = out["run"].run_dir
    assert (run_dir / "config.yaml").exists() and (run_dir / "summary.json").exists()
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    for fig in out["figures"].values():
        assert fig.exists() and fig.stat().st_size > 1000
    # the checkpoint alone rebuilds the model and its environment index
    module = Forecaster.load_from_checkpoint(str(out["run"].best_ckpt), map_location="cpu")
    assert module.env_names == out["run"].module.env_names
    assert torch.equal(module.u_std, out["run"].module.u_std)


@pytest.mark.slow
def test_every_method_trains_on_gray_scott(tmp_path):
    for method in ("erm", "per_env", "leads", "coda", "lowrank", "lora"):
        cfg = tiny_config("gray_scott", tmp_path, f"method={method}", "train.max_steps=2", "adapt.sets=[interp]")
        summary = run_experiment(cfg, progress=False)["summary"]
        adapted = summary["splits"]["interp"]["adapted_params_per_env"]
        assert (adapted == 0) == (method == "erm"), (method, adapted)


def test_resume_continues_from_saved_step(tmp_path, monkeypatch):
    from leads.training.train import train

    cfg = tiny_config("lotka_volterra", tmp_path, "train.max_steps=6", "train.val_every=3")
    seen: list[int] = []
    original = Forecaster.training_step

    def crash_at_4(self, batch, idx):
        seen.append(self.global_step)
        if self.global_step == 4:
            raise RuntimeError("simulated crash")
        return original(self, batch, idx)

    monkeypatch.setattr(Forecaster, "training_step", crash_at_4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, progress=False)
    monkeypatch.setattr(Forecaster, "training_step", lambda self, b, i: seen.append(self.global_step) or
                        original(self, b, i))
    seen.clear()
    run = train(cfg, resume=True, progress=False)
    assert seen[0] == 3, seen  # last.ckpt was written at the validation after step 3
    state = json.loads((run.run_dir / "state.json").read_text())
    assert state["global_step"] == 6
    assert len(list(run.run_dir.parent.iterdir())) == 1  # resumed in place, no second run dir


def test_new_run_never_overwrites_an_old_one(tmp_path):
    from leads.training.train import run_dir_for

    cfg = tiny_config("lotka_volterra", tmp_path)
    first, _ = run_dir_for(cfg, resume=False)
    first.mkdir(parents=True)
    second, run_id = run_dir_for(cfg, resume=False)
    assert second != first and run_id.endswith("-2")


def test_wandb_offline_run_can_be_read_back(tmp_path, monkeypatch):
    from wandb_offline import logged

    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = tiny_config("lotka_volterra", tmp_path, "logger=wandb", "train.max_steps=4", "train.val_every=2")
    run_dir = run_experiment(cfg, progress=False)["run"].run_dir
    got = logged(run_dir)
    history = got["history"]
    for key in ("train/loss", "train/mse", "val/rel_l2", "test/in_domain/rel_l2", "test/interp/rel_l2",
                "figures/rollouts_in_domain", "figures/error_vs_time", "leaderboard"):
        assert any(k == key or k.startswith(key) for k in history), (key, sorted(history))
    assert any(k.startswith("val_env/") for k in history)
    per_env = [k for k in got["summary"] if k.startswith("test_env/interp/")]
    assert len(per_env) == 4 and all(got["summary"][k] > 0 for k in per_env)  # one per interp environment
    assert got["config"].get("method") == "lowrank"
    assert got["run"]["group"] == "lotka_volterra/quick" and got["run"]["job_type"] == "train"
    assert {"method:lowrank", "seed:0", "system:lotka_volterra", "profile:quick"} <= set(got["run"]["tags"])


@pytest.mark.parametrize("argv, message", [
    (["--env", "grey_scott"], "unknown system 'grey_scott'"),
    (["--env", "gray_scott", "--method", "nosuch"], "unknown method 'nosuch'"),
    (["--env", "gray_scott", "--set", "train.lrr=1"], "unknown config key 'train.lrr'"),
    (["--env", "gray_scott", "--set", "system.D_u=-1"], "D_u"),
    (["generate", "--env", "lotka_volterra", "--set", "system.train_envs=[]"], "empty"),
    (["generate", "--env", "lotka_volterra", "--set", "data.n_train=-1"], "n_train"),
])
def test_cli_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_generate_prints_files(tmp_path, capsys):
    assert main(["generate", "--env", "lotka_volterra", "--set", f"data.dir={tmp_path}",
                 "--set", "data.n_test=2"]) == 0
    out = capsys.readouterr().out
    assert out.count(".h5") >= 9 and "train" in out and "test_extrap" in out
