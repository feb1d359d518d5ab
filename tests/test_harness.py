"""The out-of-distribution harness: adaptation, held-out sets, evaluation of checkpoints, rows."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from fakes import decay_data
from tiny import tiny_config

from leads.cli import main
from leads.config.loading import load_config
from leads.config.schema import RunConfig
from leads.envs.errors import UserError
from leads.envs.registry import get_system
from leads.evaluation.adaptation import BACKTRACK_FACTOR, _make_optimizer, adapt_to_new_environments
from leads.evaluation.fewshot import shot_counts
from leads.evaluation.probe import POOLED, fit_probe, probe_figure
from leads.models.forecaster import Forecaster
from leads.reporting.results import ALL, append_rows, read_rows

METHODS = ("erm", "per_env", "leads", "coda", "lowrank", "lora")
# What adaptation may change, per docs/architecture.md (parameter names of the model).
ADAPTED = {
    "erm": lambda name: False,
    "per_env": lambda name: True,
    "leads": lambda name: name.startswith("g."),
    "coda": lambda name: name == "contexts",
    "lowrank": lambda name: name == "contexts",
    "lora": lambda name: "lora_A" in name or "lora_B" in name,
}
ADAPT = {"shots": 2, "steps": 15, "lr": 1e-2, "weights_lr": 1e-2, "val_every": 1, "patience": 15, "init": "mean"}


def _module(method: str) -> Forecaster:
    torch.manual_seed(0)
    cfg = load_config("lotka_volterra", "quick", [f"method={method}", "model.width=8", "model.depth=2"])
    module = Forecaster(cfg, (2,), ["a", "b", "c"])
    states, t = decay_data(3, 2, seed=1)
    module.fit_normalization(states.flatten(0, 1), t)
    return module


@pytest.mark.parametrize("method", METHODS)
def test_adaptation_changes_only_the_environment_parameters(method):
    module = _module(method)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    states, t = decay_data(2, 2, seed=2)
    adapted = adapt_to_new_environments(module, states, states, t, ["x", "y"], ADAPT)

    assert all(torch.equal(v, module.state_dict()[k]) for k, v in before.items()), "the trained model changed"
    new = adapted.module.model
    assert new.n_envs == 2 and adapted.module.env_names == ["x", "y"]
    old = dict(module.model.named_parameters())
    changed = set()
    for name, p in new.named_parameters():
        assert not p.requires_grad
        if name in old and old[name].shape == p.shape and torch.equal(old[name], p):
            continue
        changed.add(name)
    allowed = ADAPTED[method]
    assert all(allowed(n) for n in changed), (method, sorted(changed))
    if method == "erm":
        assert not changed and adapted.steps == 0 and adapted.n_adapted_params == 0
    else:
        assert changed and adapted.best_step > 0  # it fitted something, chosen on validation
        assert adapted.n_adapted_params == new.n_params_per_env > 0
        n_env_params = sum(p.numel() for p in new.env_parameters())
        assert sum(p.numel() for n, p in new.named_parameters() if allowed(n)) == n_env_params
    assert adapted.seconds >= 0 and adapted.shots == 2


def test_adaptation_fits_only_the_first_k_trajectories():
    module = _module("lowrank")
    states, t = decay_data(2, 3, seed=3)
    poisoned = states.clone()
    poisoned[:, 1:] = float("nan")  # trajectories beyond k=1 must never be read
    a = adapt_to_new_environments(module, poisoned, states[:, :1], t, ["x", "y"], {**ADAPT, "shots": 1})
    b = adapt_to_new_environments(module, states[:, :1], states[:, :1], t, ["x", "y"], {**ADAPT, "shots": 1})
    assert torch.equal(a.module.model.contexts, b.module.model.contexts)
    assert a.steps == b.steps and a.best_step > 0


@pytest.mark.parametrize("method", ["per_env", "leads"])
def test_a_step_that_makes_the_loss_non_finite_is_undone_at_a_lower_learning_rate(method):
    # Whole networks moved by lr=1e3 blow a rollout up at the second step; adaptation used to
    # stop there. It must restore the last finite weights, lower the rate and carry on.
    module = _module(method)
    states, t = decay_data(2, 2, seed=2)
    cfg = {**ADAPT, "weights_lr": 1e3, "steps": 40, "init": "default"}
    adapted = adapt_to_new_environments(module, states, states, t, ["x", "y"], cfg)
    backtracks = math.log(cfg["weights_lr"] / adapted.lr, BACKTRACK_FACTOR)
    assert backtracks >= 1, "no backtracking happened: the test no longer exercises it"
    assert abs(backtracks - round(backtracks)) < 1e-9, "weights_lr was not the starting rate"
    assert adapted.steps > cfg["patience"], "adaptation ended at the non-finite step"
    start = adapt_to_new_environments(module, states, states, t, ["x", "y"], {**cfg, "steps": 0})
    assert math.isfinite(adapted.best_val_rel_l2) and adapted.best_val_rel_l2 <= start.best_val_rel_l2


def test_lbfgs_line_search_steps_back_from_a_trial_point_with_a_non_finite_loss(monkeypatch):
    # A rollout that blows up at a line-search trial point (the pendulum's forcing frequency did)
    # gives a NaN loss with no gradient; torch's strong-Wolfe search took it for a minimum and
    # failed with an IndexError. The search must step back inside the finite region and go on.
    from leads.evaluation import adaptation

    module = _module("lowrank")
    start_contexts = module.model.contexts.detach().mean(0)
    original = adaptation._loss
    hits = []

    def blows_up_far_away(new, x, t, env):
        loss = original(new, x, t, env)
        if float((new.model.contexts.detach() - start_contexts).abs().max()) > 0.05:
            hits.append(1)
            return loss * float("nan")
        return loss

    monkeypatch.setattr(adaptation, "_loss", blows_up_far_away)
    states, t = decay_data(2, 2, seed=2)
    cfg = {**ADAPT, "steps": 30, "patience": 30, "optimizer": "lbfgs"}
    adapted = adapt_to_new_environments(module, states, states, t, ["x", "y"], cfg)
    start = adapt_to_new_environments(module, states, states, t, ["x", "y"], {**cfg, "steps": 0})
    assert hits, "no trial point was non-finite: the test no longer exercises the line search"
    assert adapted.best_step > 0
    assert math.isfinite(adapted.best_val_rel_l2) and adapted.best_val_rel_l2 < start.best_val_rel_l2


@pytest.mark.parametrize("method", ["lowrank", "coda", "lora", "per_env", "leads"])
def test_contexts_adapt_at_lr_and_weight_tensors_at_weights_lr(method):
    states, t = decay_data(2, 2, seed=2)
    cfg = {**ADAPT, "lr": 3e-3, "weights_lr": 7e-4, "steps": 3, "optimizer": "adam"}
    adapted = adapt_to_new_environments(_module(method), states, states, t, ["x", "y"], cfg)
    assert adapted.lr == (7e-4 if method in ("lora", "per_env", "leads") else 3e-3)
    assert adapted.optimizer == "adam"


@pytest.mark.parametrize("method", ["lowrank", "lora", "leads"])
def test_weight_tensors_take_weights_steps_and_contexts_take_steps(method):
    # Adam on a network needs more steps than L-BFGS on a context: adapt.weights_steps.
    states, t = decay_data(2, 2, seed=2)
    cfg = {**ADAPT, "steps": 2, "weights_steps": 5, "patience": 50, "min_rel_improvement": 0.0}
    adapted = adapt_to_new_environments(_module(method), states, states, t, ["x", "y"], cfg)
    assert adapted.steps == (2 if method == "lowrank" else 5)
    unset = adapt_to_new_environments(_module(method), states, states, t, ["x", "y"], {**cfg, "weights_steps": None})
    assert unset.steps == 2


@pytest.mark.parametrize("method", ["lowrank", "lora", "leads"])
def test_weight_tensors_take_weights_patience_and_contexts_take_patience(method):
    # Adam's progress on a network is slow and noisy: adapt.weights_patience checks before it stops.
    # An improvement must halve the error to count, so one check of patience stops within a few steps.
    states, t = decay_data(2, 2, seed=2)
    cfg = {**ADAPT, "steps": 8, "patience": 1, "weights_patience": 8, "min_rel_improvement": 0.5, "optimizer": "adam"}
    adapted = adapt_to_new_environments(_module(method), states, states, t, ["x", "y"], cfg)
    unset = adapt_to_new_environments(_module(method), states, states, t, ["x", "y"], {**cfg, "weights_patience": None})
    assert unset.steps < 8
    assert adapted.steps == (unset.steps if method == "lowrank" else 8)


@pytest.mark.parametrize("method", ["lowrank", "coda", "lora", "per_env", "leads"])
def test_auto_optimizer_is_lbfgs_for_contexts_and_adam_for_weight_tensors(method):
    states, t = decay_data(2, 2, seed=2)
    cfg = {**ADAPT, "steps": 12, "optimizer": "auto"}
    adapted = adapt_to_new_environments(_module(method), states, states, t, ["x", "y"], cfg)
    contexts = method in ("lowrank", "coda")
    assert adapted.optimizer == ("lbfgs" if contexts else "adam")
    start = adapt_to_new_environments(_module(method), states, states, t, ["x", "y"], {**cfg, "steps": 0})
    assert adapted.best_step > 0 and adapted.best_val_rel_l2 < start.best_val_rel_l2


def test_lbfgs_fits_contexts_in_fewer_steps_than_adam():
    # The reason it is the default for contexts: same data, same step budget.
    states, t = decay_data(2, 2, seed=2)
    cfg = {**ADAPT, "steps": 8, "patience": 8}
    lbfgs = adapt_to_new_environments(_module("lowrank"), states, states, t, ["x", "y"], {**cfg, "optimizer": "lbfgs"})
    adam = adapt_to_new_environments(_module("lowrank"), states, states, t, ["x", "y"], {**cfg, "optimizer": "adam"})
    assert lbfgs.best_val_rel_l2 < adam.best_val_rel_l2


def test_lbfgs_step_gets_its_line_search():
    # torch's LBFGS at max_iter=1 leaves the line search no function evaluation (max_eval
    # defaults to 1.25 * max_iter): when the first trial step overshoots, the step is 0 and
    # adaptation never moves (seen on Gray-Scott). f = 4 (p - 0.1)^2 from p = 0: the first trial
    # lands on p = 0.8, far worse; a line search finds better.
    p = torch.nn.Parameter(torch.zeros(1))
    opt = _make_optimizer("lbfgs", [p], 1.0)

    def closure():
        opt.zero_grad()
        loss = 4 * (p - 0.1).square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert 0 < float(p.detach()) < 0.2


def test_unknown_adaptation_optimizer_is_one_line():
    states, t = decay_data(2, 2, seed=2)
    with pytest.raises(UserError, match="adapt.optimizer 'sgd'.*auto, adam, lbfgs"):
        adapt_to_new_environments(_module("lowrank"), states, states, t, ["x", "y"], {**ADAPT, "optimizer": "sgd"})


@pytest.mark.parametrize("shots", [0, 4, -1])
def test_adaptation_rejects_impossible_shot_counts(shots):
    states, t = decay_data(2, 3, seed=3)
    with pytest.raises(UserError, match="shots"):
        adapt_to_new_environments(_module("lowrank"), states, states, t, ["x", "y"], {**ADAPT, "shots": shots})


def test_shot_counts_are_capped_at_the_adaptation_trajectories():
    assert shot_counts(8) == [1, 2, 4, 8]
    assert shot_counts(16) == [1, 2, 4, 8]
    assert shot_counts(3) == [1, 2, 3]
    assert shot_counts(1) == [1]


# ------------------------------------------------------------------------------ pipeline
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny Lotka-Volterra run, trained and evaluated by the main job."""
    from leads.jobs import run_experiment

    tmp = tmp_path_factory.mktemp("trained")
    cfg = tiny_config("lotka_volterra", tmp, "adapt.sets=[interp]", own_data=True)  # tests read its files
    out = run_experiment(cfg, progress=False)
    return SimpleNamespace(cfg=cfg, tmp=tmp, out=out, ckpt=str(out["run"].best_ckpt))


def _results(cfg_or_dir) -> list[dict]:
    root = Path(cfg_or_dir.results_dir) if isinstance(cfg_or_dir, RunConfig) else Path(cfg_or_dir)
    return read_rows(root / "lotka_volterra" / "results.jsonl")


def test_main_job_appends_a_row_per_split_environment_and_metric(trained):
    rows = [r for r in _results(trained.cfg) if r["run_id"] == trained.out["run"].run_id]
    ev = trained.out["evaluation"]
    system = get_system("lotka_volterra")
    expected = {("in_domain", n) for n in trained.out["run"].module.env_names} | {("in_domain", ALL)}
    expected |= {("interp", ",".join(f"{k}={v:g}" for k, v in e.items())) for e in system.heldout["interp"]}
    expected |= {("interp", ALL)}
    for metric in ("rel_l2", "rel_l2_extrap", "rel_l2_full", "mse", "mse_t0"):
        got = {(r["split"], r["environment"]) for r in rows if r["metric"] == metric and r["kind"] != "probe"}
        assert got == expected, metric
    # the aggregate row is the mean over all of the split's test trajectories
    (agg,) = [r for r in rows if r["split"] == "interp" and r["environment"] == ALL and r["metric"] == "rel_l2"]
    assert agg["value"] == pytest.approx(float(np.mean(ev.heldout["interp"].scores.rel_l2)))
    assert agg["n_traj"] == len(ev.heldout["interp"].scores.rel_l2)
    for key in ("run_id", "method", "seed", "system", "profile", "train_seconds", "adapt_seconds", "adapt_steps",
                "n_trained_params", "n_adapted_params", "git_commit", "config_hash", "shots"):
        assert agg[key] is not None, key
    assert agg["n_adapted_params"] == 8 and agg["n_trained_params"] > agg["n_adapted_params"]
    probe = {(r["split"], r["environment"]) for r in rows if r["kind"] == "probe"}
    assert probe == {(s, p) for s in ("interp", POOLED) for p in ("beta", "delta")}


def _poison_tests(data_dir: Path) -> list[Path]:
    """Overwrite the states after t=0 of every test split in place with 1e30: finite, so the
    cache still accepts the files, and any forecast from the true t=0 scores exactly 1.0."""
    files = sorted(data_dir.rglob("test*.h5"))
    for path in files:
        with h5py.File(path, "r+") as f:
            f["states"][:, :, 1:] = 1e30
    return files


def _split_of(path: str | Path) -> str:
    """``test_interp`` from ``.../test_interp-<split hash>.h5``."""
    return Path(path).stem.rsplit("-", 1)[0]


def test_training_adaptation_and_early_stopping_never_read_test_data(trained, tmp_path, monkeypatch):
    import leads.evaluation.heldout as heldout
    import leads.jobs as experiment
    from leads.jobs import run_experiment

    shutil.copytree(trained.tmp / "data", tmp_path / "data")
    poisoned = {_split_of(p) for p in _poison_tests(tmp_path / "data")}
    assert {"test", "test_interp"} <= poisoned
    events: list[str] = []
    for mod in (experiment, heldout):
        real = mod.load_split
        monkeypatch.setattr(mod, "load_split", lambda p, real=real: events.append(_split_of(p)) or real(p))
    real_adapt = heldout.adapt_to_new_environments

    def logged_adapt(*a, **k):
        events.append("adapt:start")
        out = real_adapt(*a, **k)
        events.append("adapt:end")
        return out

    monkeypatch.setattr(heldout, "adapt_to_new_environments", logged_adapt)
    cfg = trained.cfg.replace(runs_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"),
                              data={**trained.cfg.to_dict()["data"], "dir": str(tmp_path / "data")})
    again = run_experiment(cfg, progress=False)

    first, second = trained.out, again
    for k, v in first["run"].module.state_dict().items():
        assert torch.equal(v, second["run"].module.state_dict()[k]), k  # same checkpoint chosen
    a, b = first["evaluation"].heldout["interp"].adapted, second["evaluation"].heldout["interp"].adapted
    assert torch.equal(a.module.model.contexts, b.module.model.contexts) and a.steps == b.steps
    # the poisoned files were read, at the very end: the scores are those of the poison
    assert (second["evaluation"].heldout["interp"].scores.rel_l2 == 1.0).all()
    assert (second["evaluation"].in_domain.rel_l2 == 1.0).all()
    assert events.index("test_interp") > events.index("adapt:end")
    assert events[events.index("adapt:start") - 2:events.index("adapt:start")] == ["adapt_interp", "val_interp"]


def test_user_given_heldout_environments_end_to_end(trained, tmp_path, capsys):
    results = tmp_path / "results"
    argv = ["evaluate", "--env", "lotka_volterra", "--ckpt", trained.ckpt, "--set", "adapt.sets=[]",
            "--set", f"results_dir={results}", "--logger", "none",
            "--heldout", "hot:beta=0.6,delta=0.7;beta=0.65", "--heldout", "delta=1.3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "hot" in out and "in_domain" in out
    rows = _results(results)
    got = {(r["split"], r["environment"]) for r in rows if r["metric"] == "rel_l2" and r["kind"] == "heldout"}
    custom = [s for s, _ in got if s.startswith("custom-")]
    assert len(set(custom)) == 1
    assert got == {("hot", "alpha=0.5,beta=0.6,gamma=0.5,delta=0.7"), ("hot", ALL),
                   ("hot", "alpha=0.5,beta=0.65,gamma=0.5,delta=0.5"),
                   (custom[0], "alpha=0.5,beta=0.5,gamma=0.5,delta=1.3"), (custom[0], ALL)}
    hot_all = [r for r in rows if r["split"] == "hot" and r["environment"] == ALL and r["metric"] == "rel_l2"]
    assert hot_all[0]["n_traj"] == 2 * trained.cfg.data.n_test_heldout and hot_all[0]["shots"] == 1
    # generated and cached like any split, with the given parameters
    files = {_split_of(p): p for p in (trained.tmp / "data").rglob("*_hot-*.h5")}
    assert set(files) == {"adapt_hot", "val_hot", "test_hot"}
    with h5py.File(files["test_hot"]) as f:
        assert f["params"][()].tolist() == [[0.5, 0.6, 0.5, 0.7], [0.5, 0.65, 0.5, 0.5]]
    seeds = {k: set(h5py.File(p)["seeds"][()].ravel().tolist()) for k, p in files.items()}
    assert not seeds["val_hot"] & seeds["test_hot"] and not seeds["adapt_hot"] & seeds["test_hot"]
    mtime = files["test_hot"].stat().st_mtime_ns
    assert main(argv) == 0
    assert files["test_hot"].stat().st_mtime_ns == mtime  # second evaluation reads the cache


def test_evaluate_with_few_shot_curve(trained, tmp_path):
    results = tmp_path / "results"
    assert main(["evaluate", "--env", "lotka_volterra", "--ckpt", trained.ckpt, "--few-shot",
                 "--set", f"results_dir={results}", "--logger", "none"]) == 0
    rows = [r for r in _results(results) if r["split"] == "interp" and r["environment"] == ALL
            and r["metric"] == "rel_l2"]
    assert sorted(r["shots"] for r in rows) == [1, 2]  # tiny config: data.n_adapt = 2
    figures = results / "lotka_volterra" / "figures" / trained.out["run"].run_id
    assert (figures / "few_shot.png").stat().st_size > 1000
    assert (figures / "context_probe.png").stat().st_size > 1000


BAD_HELDOUT = [
    ("lotka_volterra", "beta=-1", "outside its valid range"),
    ("lotka_volterra", "beta,delta=1", "must look like name=value"),
    ("lotka_volterra", "beta", "give the parameter a value"),
    ("lotka_volterra", "zeta=1", "unknown parameter 'zeta'"),
    ("lotka_volterra", "beta=abc", "not a number"),
    ("lotka_volterra", "beta=1,beta=2", "given twice"),
    ("lotka_volterra", "beta=nan", "finite"),
    ("lotka_volterra", "nosuch", "unknown held-out set 'nosuch'"),
    ("lotka_volterra", "bad name:beta=1", "held-out set name"),
    ("lotka_volterra", "interp:beta=0.6", "two different environment lists"),
    ("lotka_volterra", "missing.yaml", "does not exist"),
    ("gray_scott", "F=0.045", "must give exactly the parameters F, k"),
    ("gray_scott", "F=0.045,k=0.06;", None),  # a trailing ';' is fine: this one trains
]


@pytest.mark.parametrize("system, spec, message", [b for b in BAD_HELDOUT if b[2]])
def test_bad_heldout_strings_get_one_line_errors(system, spec, message, tmp_path, capsys):
    code = main(["--env", system, "--heldout", spec, "--set", f"runs_dir={tmp_path}", "--set", f"data.dir={tmp_path}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # refused before generating or training anything


def test_heldout_sets_from_yaml(tmp_path):
    from leads.evaluation.heldout import resolve_sets

    path = tmp_path / "sets.yaml"
    path.write_text("warm: [{F: 0.045, k: 0.064}]\ncool: 'F=0.02,k=0.05;F=0.021,k=0.05'\n")
    system = get_system("gray_scott")
    sets = resolve_sets(system, [str(path), "interp", {"x": [{"F": 0.05, "k": 0.06}]}])
    assert list(sets) == ["warm", "cool", "interp", "x"]
    assert sets["cool"] == [{"F": 0.02, "k": 0.05}, {"F": 0.021, "k": 0.05}]
    assert sets["interp"] == system.heldout["interp"]


def test_unknown_checkpoints_get_one_line_errors(trained, tmp_path, capsys):
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    cases = [(["--ckpt", str(tmp_path / "nope.ckpt")], "does not exist"),
             (["--ckpt", str(junk)], "not a checkpoint of this project"),
             (["--ckpt", trained.ckpt, "--env", "gray_scott"], "holds a lotka_volterra model, not gray_scott"),
             (["--ckpt", trained.ckpt, "--set", "model.width=3"], "evaluate can only change"),
             (["--ckpt", trained.ckpt, "--shots", "5", "--set", f"results_dir={tmp_path}"], "shots=5")]
    for extra, message in cases:
        env = [] if "--env" in extra else ["--env", "lotka_volterra"]
        assert main(["evaluate", *env, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "Traceback" not in err, (extra, err)


def test_evaluate_checks_its_directories_before_any_work(trained, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    assert main(["evaluate", "--env", "lotka_volterra", "--ckpt", trained.ckpt, "--set", f"results_dir={blocker}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: results_dir=") and "is a file" in err and "\n" not in err


# ------------------------------------------------------------------------------ rows on disk
_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from leads.reporting.results import append_rows
    proc = int(sys.argv[1])
    for batch in range(40):
        append_rows(Path({path!r}), [{{"proc": proc, "batch": batch, "i": i, "pad": "x" * 3000}} for i in range(8)])
""")


def test_concurrent_appends_never_lose_or_mix_rows(tmp_path):
    path = tmp_path / "results.jsonl"
    code = _WRITER.format(root=str(Path(__file__).resolve().parents[1]), path=str(path))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(p)]) for p in range(3)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    lines = path.read_text().splitlines()
    assert len(lines) == 3 * 40 * 8
    rows = [json.loads(line) for line in lines]  # every line is one whole row
    assert {(r["proc"], r["batch"], r["i"]) for r in rows} == {(p, b, i) for p in range(3) for b in range(40)
                                                                 for i in range(8)}
    # a batch is written in one piece: its rows are consecutive
    for k in range(0, len(rows), 8):
        assert len({(r["proc"], r["batch"]) for r in rows[k:k + 8]}) == 1


def test_rows_round_trip_with_nan_and_skip_a_torn_last_line(tmp_path):
    path = tmp_path / "r.jsonl"
    append_rows(path, [{"value": math.nan, "std": 1.0, "x": np.float32(2.5)}])
    with open(path, "a") as f:
        f.write('{"value": 1.0, "trunc')  # a crash mid-write
    with pytest.warns(UserWarning, match="skipped 1"):
        rows = read_rows(path)
    assert len(rows) == 1 and math.isnan(rows[0]["value"]) and rows[0]["x"] == 2.5
    assert "NaN" not in path.read_text().splitlines()[0]  # strict JSON on disk


# ------------------------------------------------------------------------------ context probe
def _fake(contexts: np.ndarray, method: str = "lowrank") -> SimpleNamespace:
    return SimpleNamespace(cfg=SimpleNamespace(method=method), residual=True,
                           model=SimpleNamespace(contexts=torch.as_tensor(contexts)))


def test_probe_recovers_parameters_encoded_linearly_in_contexts():
    system = get_system("lotka_volterra")
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(2, 8))

    def encode(envs):  # contexts = a fixed linear map of (beta, delta) + offset
        p = system.env_tensor(envs).numpy()[:, [1, 3]]
        return p @ mix + 0.3

    held = system.heldout
    adapted = {s: (held[s], _fake(encode(held[s]))) for s in ("interp", "extrap")}
    probe = fit_probe(system, _fake(encode(system.train_envs)), adapted)
    assert probe.param_names == ["beta", "delta"]
    for s in ("interp", "extrap", POOLED):
        assert min(probe.r2[s].values()) > 0.99, probe.r2
    # contexts unrelated to the parameters explain nothing out of sample
    noise = {s: (held[s], _fake(rng.normal(size=(len(held[s]), 8)))) for s in ("interp", "extrap")}
    probe = fit_probe(system, _fake(rng.normal(size=(9, 8))), noise)
    assert max(probe.r2[POOLED].values()) < 0.5, probe.r2
    assert probe_figure(probe).axes
    assert fit_probe(system, _fake(np.zeros((9, 8)), method="erm"), {}) is None


# ------------------------------------------------------------------------------ sweeps
def test_method_all_runs_every_method_and_seed_and_survives_a_divergence(monkeypatch, capsys):
    import leads.cli as cli
    import leads.jobs as experiment
    from leads.models.forecaster import TrainingDiverged

    ran = []

    def fake_run(cfg, **kw):
        ran.append((cfg.method, cfg.seed, tuple(cfg.adapt.sets)))
        if cfg.method == "leads" and cfg.seed == 6:
            raise TrainingDiverged("loss became non-finite")
        return {"run": SimpleNamespace(run_dir=None)}

    monkeypatch.setattr(experiment, "run_experiment", fake_run)
    monkeypatch.setattr(experiment, "prepare_data", lambda cfg, progress=True: None)  # no data needed here
    monkeypatch.setattr(cli, "_write_leaderboard", lambda cfg, shots: "LEADERBOARD")
    code = main(["--env", "gray_scott", "--method", "all", "--seeds", "3", "--seed", "5", "--heldout", "F=0.05,k=0.06"])
    assert code == 1  # one run diverged; the others still ran and the leaderboard was built
    assert sorted((m, s) for m, s, _ in ran) == sorted((m, s) for m in METHODS for s in (5, 6, 7))
    assert all(sets[-1] == "F=0.05,k=0.06" for _, _, sets in ran)
    captured = capsys.readouterr()
    assert "LEADERBOARD" in captured.out and "leads seed 6" in captured.err


@pytest.mark.slow
def test_small_sweep_appends_rows_and_builds_the_leaderboard(tmp_path, capsys):
    from tiny import PER_SYSTEM, TINY

    sets = [f"--set={s}" for s in [*TINY, *PER_SYSTEM["lotka_volterra"], f"runs_dir={tmp_path / 'runs'}",
                                    f"data.dir={tmp_path / 'data'}", f"results_dir={tmp_path / 'results'}",
                                    "adapt.sets=[interp]"]]
    assert main(["--env", "lotka_volterra", "--method", "erm,lowrank", "--seeds", "2", "--no-progress", *sets]) == 0
    rows = _results(tmp_path / "results")
    assert {(r["method"], r["seed"]) for r in rows} == {(m, s) for m in ("erm", "lowrank") for s in (0, 1)}
    (board,) = (tmp_path / "results" / "lotka_volterra").glob("leaderboard_quick*.md")  # the tiny data's protocol
    md = board.read_text()
    assert "| erm | quick | 4 steps, " in md and "| lowrank | quick | 4 steps, " in md and md in capsys.readouterr().out
    assert all(" | 2 | " in line for line in md.splitlines() if line.startswith(("| 1 |", "| 2 |")))


def test_a_run_generates_only_the_held_out_sets_it_adapts_to(tmp_path):
    from leads.jobs import prepare_data

    prepare_data(tiny_config("lotka_volterra", tmp_path, "adapt.sets=[extrap]", own_data=True), progress=False)
    made = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "data").rglob("*.h5"))
    assert made == sorted(["train", "val", "test", "adapt_extrap", "val_extrap", "test_extrap"])
