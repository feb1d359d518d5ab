"""Refitting the training environments' parameters after training (leads.evaluation.refit)."""

from __future__ import annotations

import pytest
import torch
from fakes import decay_data
from tiny import tiny_config

from leads.config.loading import load_config
from leads.envs.errors import UserError
from leads.evaluation.adaptation import adapt_to_new_environments
from leads.models.forecaster import Forecaster
from leads.reporting.results import ALL, read_rows

ADAPT = {"shots": 2, "steps": 15, "val_every": 1, "patience": 15}


def _trained_module() -> tuple[Forecaster, torch.Tensor, torch.Tensor]:
    """A lowrank module of three environments whose contexts are where training left them
    (here: random), and trajectories of those environments."""
    torch.manual_seed(0)
    cfg = load_config("lotka_volterra", "quick", ["method=lowrank", "model.width=8", "model.depth=2"])
    module = Forecaster(cfg, (2,), ["a", "b", "c"])
    states, t = decay_data(3, 3, seed=1)
    module.fit_normalization(states.flatten(0, 1), t)
    with torch.no_grad():
        module.model.contexts.normal_()
    return module, states, t


def test_a_refit_starts_from_the_trained_parameters_and_changes_only_them():
    module, states, t = _trained_module()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    held = adapt_to_new_environments(module, states[:, :2], states[:, 2:], t, ["a", "b", "c"], {**ADAPT, "steps": 0},
                                     reset=False)
    # No step: the trained contexts, not a fresh initialisation (reset=True would give cfg.init's).
    assert torch.equal(held.module.model.contexts, module.model.contexts)
    fresh = adapt_to_new_environments(module, states[:, :2], states[:, 2:], t, ["a", "b", "c"], {**ADAPT, "steps": 0})
    assert not torch.equal(fresh.module.model.contexts, module.model.contexts)

    refit = adapt_to_new_environments(module, states[:, :2], states[:, 2:], t, ["a", "b", "c"], ADAPT, reset=False)
    assert all(torch.equal(v, module.state_dict()[k]) for k, v in before.items()), "the trained model changed"
    changed = {n for n, p in refit.module.model.named_parameters()
               if not torch.equal(p, dict(module.model.named_parameters())[n])}
    assert changed == {"contexts"} and refit.module.env_names == ["a", "b", "c"]
    # Chosen on validation, from the trained value: never worse there than training left it.
    assert refit.best_step > 0 and refit.best_val_rel_l2 < held.best_val_rel_l2


def test_a_refit_needs_the_modules_own_environments():
    module, states, t = _trained_module()
    with pytest.raises(ValueError, match="own names"):
        adapt_to_new_environments(module, states, states, t, ["x", "y", "z"], ADAPT, reset=False)


def test_refit_train_beyond_the_training_trajectories_is_one_line(tmp_path):
    with pytest.raises(UserError, match="adapt.refit_train=2 exceeds the data.n_train=1"):
        tiny_config("lotka_volterra", tmp_path, "adapt.refit_train=2")


def test_evaluate_with_a_refit_scores_in_domain_with_refitted_contexts(tmp_path, capsys, monkeypatch):
    import leads.evaluation.refit as refit_module
    import leads.jobs as jobs
    from leads.jobs import evaluate_checkpoint, run_experiment

    cfg = tiny_config("lotka_volterra", tmp_path, "adapt.sets=[interp]", "data.n_train=2")
    trained = run_experiment(cfg, progress=False)
    read: list[str] = []
    for mod in (jobs, refit_module):
        real = mod.load_split
        monkeypatch.setattr(mod, "load_split",
                            lambda p, real=real, **kw: read.append(p.stem.rsplit("-", 1)[0]) or real(p, **kw))
    out = evaluate_checkpoint(trained["run"].best_ckpt, "lotka_volterra", ["adapt.refit_train=2"])
    assert read[:3] == ["train", "val", "test"]  # fitted on train, chosen on val; test read after the refit
    refit = out["evaluation"].refit
    assert refit is not None and refit.shots == 2 and refit.best_step > 0
    assert out["evaluation"].module is refit.module
    rows = [r for r in read_rows(tmp_path / "results" / "lotka_volterra" / "results.jsonl")
            if r["split"] == "in_domain" and r["environment"] == ALL and r["metric"] == "rel_l2"]
    plain, refitted = rows  # the main job's, then the evaluation's
    assert plain["adapt_steps"] is None and plain["shots"] is None
    assert refitted["shots"] == 2 and refitted["adapt_steps"] == refit.steps and refitted["n_adapted_params"] == 8
    assert refitted["value"] != plain["value"]  # scored with other contexts than the trained ones
    # held-out environments are adapted from the shared weights alone: the refit leaves them as they were
    a, b = trained["evaluation"].heldout["interp"].adapted, out["evaluation"].heldout["interp"].adapted
    assert torch.equal(a.module.model.contexts, b.module.model.contexts)
    assert f"{refit.steps} st" in capsys.readouterr().out.rsplit("in_domain", 1)[1].splitlines()[0]
