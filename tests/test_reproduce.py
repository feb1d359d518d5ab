"""``python run.py reproduce``: a published table end to end, resumable; the protocols it knows."""

from __future__ import annotations

import pytest
from faults import run_dirs, run_py, state, tiny_sets

from leads.config.loading import load_config
from leads.envs.base import envs_key
from leads.envs.registry import get_system
from leads.reporting.published import PUBLISHED
from leads.reporting.results import read_rows
from leads.reproduce import load_protocols, plan

SYSTEM = "lotka_volterra"
# Two methods x one seed of LEADS' Lotka-Volterra table, tiny; validation every 4 of 12 steps.
ARGS = ["reproduce", "--protocol", "leads_lotka_volterra", "--seeds", "1", "--methods", "lowrank,erm",
        "--max-steps", "12", "--no-progress"]


def _sets(tmp):
    # The protocol's test data (32 trajectories per environment), so its published numbers are shown.
    return tiny_sets(SYSTEM, tmp, "train.val_every=4", "data.window=5", "data.n_test=32", "data.n_test_heldout=32")


@pytest.mark.slow
def test_reproduce_skips_finished_runs_and_resumes_an_interrupted_one(tmp_path):
    # Killed in the first run's training, after its step-8 checkpoint.
    killed = run_py([*ARGS, *_sets(tmp_path)], fault={"LEADS_FAULT_KILL_AT_STEP": "10"})
    assert killed.returncode == -9
    (first,) = run_dirs(tmp_path, SYSTEM)
    assert not (first / "summary.json").exists()
    done = run_py([*ARGS, *_sets(tmp_path)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"[1/2] leads_lotka_volterra: lowrank seed 0: resuming {first}" in done.stdout
    assert "[2/2] leads_lotka_volterra: erm seed 0: starting" in done.stdout
    runs = run_dirs(tmp_path, SYSTEM)
    assert first in runs and len(runs) == 2 and all(state(r)["global_step"] == 12 for r in runs)
    # The table ends the job, with the published number and our budget beside it.
    assert "## Published results: LEADS protocol" in done.stdout and "12 training steps" in done.stdout
    assert "Matched against the published protocol" in done.stdout
    rows = read_rows(tmp_path / "results" / SYSTEM / "results.jsonl")
    again = run_py([*ARGS, *_sets(tmp_path)])
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skipped") == 2 and run_dirs(tmp_path, SYSTEM) == runs
    assert read_rows(tmp_path / "results" / SYSTEM / "results.jsonl") == rows  # nothing re-run or re-scored


@pytest.mark.slow
def test_unknown_protocol_and_method_are_one_line_errors(tmp_path):
    from faults import assert_one_line_error

    assert_one_line_error(run_py(["reproduce", "--protocol", "nope"]), "unknown protocol 'nope'", "geps_gray_scott")
    assert_one_line_error(run_py([*ARGS[:5], "--methods", "nosuch", *_sets(tmp_path)]), "unknown method 'nosuch'")


@pytest.mark.parametrize("name", sorted(load_protocols()))
def test_every_protocol_plans_its_published_setting(name):
    protocol = load_protocols()[name]
    cfgs = plan(protocol, seeds=2)
    assert [(c.method, c.seed) for c in cfgs] == [(m, s) for m in protocol.methods for s in (0, 1)]
    assert all(c.profile == protocol.profile and c.system_name == protocol.system for c in cfgs)
    assert plan(protocol, 1, max_steps=7)[0].train.max_steps == 7


def test_every_published_setting_is_a_profile_that_reproduces_it():
    """Each profile an entry is matched against generates exactly its environments, step and horizon."""
    for entry in PUBLISHED:
        for profile in entry.settings:
            cfg = load_config(entry.system, profile)
            system = get_system(entry.system, **cfg.system)
            assert envs_key(system, system.train_envs) == entry.train_key(), (entry.protocol, profile)
            assert (system.dt, system.horizon) == (entry.dt, entry.horizon), (entry.protocol, profile)


def test_geps_gray_scott_profiles_follow_the_text_and_the_code():
    text, code, cpu, text_cpu = (load_config("gray_scott", p)
                                 for p in ("paper", "paper_code", "paper_code_cpu", "paper_cpu"))
    assert (text.data.n_train, code.data.n_train, cpu.data.n_train, text_cpu.data.n_train) == (1, 256, 256, 1)
    for cfg in (text, code, cpu, text_cpu):
        assert (cfg.system["dt"], cfg.system["horizon"]) == (10.0, 200.0)  # test rollouts to 2T = 400
        assert cfg.data.n_test == cfg.data.n_test_heldout == 32
        assert cfg.adapt.shots == 1
    assert code.train.max_steps == 120000
    # the CPU recipe: 45,000 compiled steps stopped before one CPU hour, contexts by Levenberg-Marquardt
    assert (cpu.train.max_steps, cpu.train.max_cpu_seconds, cpu.train.compile) == (45000, 3600, True)
    assert (cpu.adapt.optimizer, cpu.adapt.val_every, cpu.adapt.patience) == ("gauss_newton", 1, 5)


def test_coda_lotka_volterra_profile_follows_coda_s_code():
    from leads.evaluation.heldout import heldout_sets

    cfg = load_config("lotka_volterra", "paper")
    system = get_system("lotka_volterra", **cfg.system)
    sets = heldout_sets(cfg)
    grid = [{"beta": b, "delta": d} for b in (0.5, 0.75, 1.0) for d in (0.5, 0.75, 1.0)]
    assert [{k: e[k] for k in ("beta", "delta")} for e in system.train_envs] == grid
    assert list(sets) == ["coda"] and cfg.adapt.shots == 1
    assert [{k: e[k] for k in ("beta", "delta")} for e in sets["coda"]] == [
        {"beta": b, "delta": d} for b in (0.625, 1.125) for d in (0.625, 1.125)]
    assert all(e["alpha"] == e["gamma"] == 0.5 for e in system.train_envs + sets["coda"])
    assert (cfg.data.n_train, cfg.data.n_test, cfg.data.n_test_heldout) == (4, 32, 32)
    assert cfg.data.same_initial_states and (system.dt, system.horizon) == (0.5, 9.5)  # 20 points, as the code


def test_coda_glycolytic_profile_follows_coda_s_code():
    from leads.evaluation.heldout import heldout_sets

    cfg = load_config("glycolytic_oscillator", "paper")
    system = get_system("glycolytic_oscillator", **cfg.system)
    grid = [(k1, K1) for k1 in (100.0, 90.0, 80.0) for K1 in (1.0, 0.75, 0.5)]
    assert sorted((e["k1"], e["K1"]) for e in system.train_envs) == sorted(grid)
    (coda,) = heldout_sets(cfg).values()
    assert sorted((e["k1"], e["K1"]) for e in coda) == [(k1, K1) for k1 in (85.0, 95.0) for K1 in (0.625, 0.875)]
    assert (cfg.data.n_train, cfg.data.n_test, cfg.data.n_test_heldout, cfg.adapt.shots) == (32, 32, 32, 1)
    assert cfg.data.batch_size == 32 * len(grid) and cfg.data.same_initial_states
    assert (system.dt, system.horizon) == (0.05, 0.95)


HYBRID_RECIPES = {
    # profile: (the profile it was measured as, the --set overrides of the measured commands; docs/benchmarks.md)
    ("gray_scott", "paper_code_cpu_hybrid"): ("paper_code_cpu", [
        "train.max_cpu_seconds=null", "train.compile=false",  # paper_code_cpu as it was measured
        "physics.terms=[diffusion,reaction]", "physics.params=constants_known", "physics.integrator=etdrk4",
        "physics.substeps=4", "model.kernel_size=1", "model.depth=1", "train.lr=5e-3", "train.max_steps=4000",
        "train.val_every=250", "adapt.steps=300", "adapt.optimizer=gauss_newton", "adapt.val_every=1",
        "adapt.patience=5", "adapt.refit_train=8"]),
    ("pendulum", "paper_cpu_hybrid"): ("paper", [
        "physics.terms=[kinematics,gravity,forcing]", "data.window=10", "train.lr=3e-3", "train.max_steps=10000",
        "train.val_every=500", "physics.starts=32", "physics.start_after=1000", "model.depth=1"]),
}


@pytest.mark.parametrize("system, profile", sorted(HYBRID_RECIPES))
def test_hybrid_cpu_profiles_are_the_measured_commands(system, profile):
    base, overrides = HYBRID_RECIPES[(system, profile)]
    as_profile = load_config(system, profile).to_dict()
    measured = load_config(system, base, overrides).to_dict()
    assert as_profile.pop("profile") == profile and measured.pop("profile") == base
    assert as_profile == measured
    assert as_profile["physics"]["terms"] and as_profile["model"]["depth"] == 1
