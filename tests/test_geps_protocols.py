"""GEPS' benchmark (Table 2) for Burgers, Kolmogorov flow and the pendulum: the profiles that follow its
code's setting, our CPU recipes for them, the published rows beside ours, and each protocol end to end."""

from __future__ import annotations

import pytest

from leads.config.loading import load_config
from leads.envs.base import envs_key
from leads.envs.registry import get_system
from leads.evaluation.heldout import heldout_sets
from leads.reporting.published import PUBLISHED
from leads.reproduce import load_protocols

# GEPS (NeurIPS 2024) Table 2 as read from its project page: method -> (in-domain, new environments),
# in the table's units (pendulum 1e-2, Burgers 1e-3, Kolmogorov 1e-1); None where it has no number.
TABLE_2 = {
    "pendulum": {"LEADS": (20.8, 51.1), "CoDA": (21.7, 66.2), "GEPS": (20.8, 50.8), "APHYNITY": (67.2, 69.0),
                 "GEPS-Phy": (8.04, 46.0)},
    "burgers": {"LEADS": (6.31, 64.1), "CoDA": (4.98, 74.5), "GEPS": (2.59, 52.9), "APHYNITY": (31.9, 307.0),
                "GEPS-Phy": (5.43, 68.1)},
    "kolmogorov": {"LEADS": (5.61, 9.18), "CoDA": (4.02, 6.34), "GEPS": (2.94, 5.10), "APHYNITY": None,
                   "GEPS-Phy": (2.78, 4.47)},
}
SCALE = {"pendulum": 1e-2, "burgers": 1e-3, "kolmogorov": 1e-1}

# Each CPU profile is its protocol's base profile with these overrides and nothing else.
_LM = ["adapt.steps=60", "adapt.weights_steps=1000", "adapt.weights_patience=20", "adapt.lr=5e-2",
       "adapt.val_every=1", "adapt.patience=5", "adapt.optimizer=gauss_newton"]
_BURGERS_STEP = ["forecaster.solver=euler", "data.batch_size=8", "data.window=4", "train.max_cpu_seconds=3600",
                 "train.lr=2e-3", *_LM]
_BURGERS_CPU = [*_BURGERS_STEP, "train.max_steps=45000"]  # the code's CNN1D
_BURGERS_CPU_HYBRID = ["model.name=fno", "model.width=32", "model.kernel_size=3", *_BURGERS_STEP,
                       "train.max_steps=100000"]
_KOLMOGOROV_CPU = ["system.solver_size=256", "system.solver_dt=0.005", "forecaster.solver=euler",
                   "data.batch_size=8", "data.window=4", "train.max_steps=40000", "train.max_cpu_seconds=3600",
                   "train.lr=2e-3", *_LM]
_STRANG = ["physics.terms=[advection,viscosity]", "physics.integrator=strang", "physics.substeps=8"]
CPU_RECIPES = {
    # protocol: (base profile, overrides)
    "geps_burgers_cpu": ("paper_code", _BURGERS_CPU),
    "geps_burgers_cpu_hybrid": ("paper_code", [*_BURGERS_CPU_HYBRID, *_STRANG]),
    "geps_kolmogorov_cpu": ("paper_code", _KOLMOGOROV_CPU),
    "geps_kolmogorov_cpu_hybrid": ("paper_code", [*_KOLMOGOROV_CPU, *_STRANG]),
    "geps_pendulum_cpu": ("paper", ["forecaster.solver=euler", "train.max_steps=36000", "train.max_cpu_seconds=3600",
                                    "train.lr=3e-3"]),
}
PROTOCOLS = load_protocols()


@pytest.mark.parametrize("name", sorted(CPU_RECIPES))
def test_each_cpu_profile_is_its_base_profile_changed_only_where_it_says(name):
    protocol = PROTOCOLS[name]
    base, overrides = CPU_RECIPES[name]
    as_profile = load_config(protocol.system, protocol.profile).to_dict()
    spelled_out = load_config(protocol.system, base, overrides).to_dict()
    assert as_profile.pop("profile") == protocol.profile and spelled_out.pop("profile") == base
    assert as_profile == spelled_out
    assert as_profile["train"]["max_cpu_seconds"] == 3600


def test_the_code_s_setting_of_each_system():
    burgers, kolmogorov, pendulum = (load_config(s, p) for s, p in
                                     (("burgers", "paper_code"), ("kolmogorov", "paper_code"), ("pendulum", "paper")))
    b = get_system("burgers", **burgers.system)
    assert (b.config["solver_size"], b.config["size"], b.dt, b.horizon) == (16384, 256, 1e-3, 0.05)
    # its six training environments are these three twice, both copies from the same 4 initial states
    assert [(e["mu"], e["F"]) for e in b.train_envs] == [(0.5, 0.0), (0.05, 0.0), (5e-4, 0.0)]
    assert (burgers.data.n_train, burgers.data.n_test, burgers.data.n_test_heldout) == (4, 32, 32)
    assert burgers.data.same_initial_states and burgers.adapt.shots == 1
    assert {(e["mu"], e["F"], e["w"]) for e in heldout_sets(burgers)["extrap"]} == {
        (mu, 5.0, w) for mu in (1.0, 5e-5) for w in (1.5, 3.0)}
    assert (burgers.model.name, burgers.model.width, burgers.model.kernel_size) == ("conv", 64, 7)  # its CNN1D
    k = get_system("kolmogorov", **kolmogorov.system)
    assert (k.config["solver_size"], k.config["size"], k.dt, k.horizon) == (512, 64, 0.05, 1.0)
    assert k.config["warmup"] == pytest.approx(0.4)  # GEPS drops 8 observations
    assert (kolmogorov.data.n_train, kolmogorov.data.n_test, kolmogorov.adapt.shots) == (16, 32, 16)
    assert kolmogorov.data.same_initial_states
    assert [(e["nu"], e["domain"]) for e in heldout_sets(kolmogorov)["geps"]] == [(5e-4, 1.25)] * 2
    p = get_system("pendulum", **pendulum.system)
    assert (p.dt, p.horizon, pendulum.data.n_train, pendulum.data.n_test, pendulum.adapt.shots) == (0.5, 25.0, 8, 32, 1)
    assert not pendulum.data.same_initial_states  # its seeds run over all trajectories of a split


@pytest.mark.parametrize("system", sorted(TABLE_2))
def test_the_published_rows_are_table_2(system):
    (entry,) = (e for e in PUBLISHED if e.system == system and e.protocol == "GEPS")
    assert entry.scale == SCALE[system] and entry.metric == "rel_l2_full"
    for method, numbers in TABLE_2[system].items():
        if numbers is None:  # diverged: no number
            assert method not in entry.numbers
            continue
        (ind, _), (new, _) = entry.numbers[method]
        assert (ind, new) == numbers, method


def test_every_published_setting_adapts_to_the_published_new_environments():
    """An entry's new-environment numbers are shown only beside a held-out set with exactly its
    environments and its number of adaptation trajectories: every profile it names has one."""
    for entry in (e for e in PUBLISHED if e.heldout_envs is not None):
        for profile in entry.settings:
            cfg = load_config(entry.system, profile)
            system = get_system(entry.system, **cfg.system)
            keys = {envs_key(system, envs) for envs in heldout_sets(cfg).values()}
            assert entry.heldout_key() in keys, (entry.system, profile)
            assert entry.shots in (None, cfg.adapt.shots), (entry.system, profile)


@pytest.mark.parametrize("name", ["geps_burgers_cpu", "geps_burgers_cpu_hybrid", "geps_kolmogorov_cpu",
                                  "geps_kolmogorov_cpu_hybrid", "geps_pendulum_cpu", "geps_pendulum_cpu_hybrid"])
def test_table_2_stands_beside_the_rows_of_each_protocol(name):
    """Rows of a protocol's profile (its environments, step, horizon, held-out set and shots) get
    GEPS' published block, with the budget each line trained for."""
    from test_leaderboard import _rows

    from leads.reporting import leaderboard

    protocol = PROTOCOLS[name]
    cfg = load_config(protocol.system, protocol.profile)
    system = get_system(protocol.system, **cfg.system)
    ((held, envs),) = heldout_sets(cfg).items()
    errors = {"in_domain": [0.1, 0.2], held: [0.3, 0.4]}
    rows = [r for seed in (0, 1) for r in _rows(
        "lowrank", seed, errors, profile=protocol.profile, shots=cfg.adapt.shots, system=protocol.system,
        heldout_key=envs_key(system, envs), train_key=envs_key(system, system.train_envs), dt=system.dt,
        horizon=system.horizon, train_steps=40000)]
    for r in rows:
        r["train_cpu_seconds"] = 3600.0
    md = leaderboard.to_markdown(leaderboard.build(rows, protocol.system, protocol.profile, cfg.adapt.shots))
    assert "## Published results: GEPS protocol" in md and f"new environments ({held})" in md
    scale = SCALE[protocol.system]
    for method, numbers in TABLE_2[protocol.system].items():
        if numbers is not None:
            assert f"| {method} | {numbers[0] * scale:.3e}" in md, method
    assert f"ours, profile {protocol.profile}, 2 seed(s), 40000 training steps, 10 s training (3600 CPU s)" in md


@pytest.mark.slow  # a whole run: the protocol's data, 2 training steps, adaptation, scoring (~20-60 s)
def test_a_protocol_at_a_tiny_budget_ends_with_table_2_beside_our_rows(tmp_path):
    """The pendulum's protocol end to end: its own data (cheap for an ODE), a tiny network and budget."""
    from leads.reproduce import reproduce

    tiny = ["model.width=8", "train.val_every=1", "adapt.steps=3", "adapt.val_every=1",
            "logger=none", f"runs_dir={tmp_path / 'runs'}", f"data.dir={tmp_path / 'data'}",
            f"results_dir={tmp_path / 'results'}"]
    out = reproduce("geps_pendulum_cpu", seeds=1, max_steps=2, methods=["lowrank"], overrides=tiny, progress=False)
    md = out["leaderboard"]
    assert [(m, s, state) for m, s, state, _ in out["runs"]] == [("lowrank", 0, "new")]
    assert "## Published results: GEPS protocol" in md and "new environments (extrap)" in md
    assert "| GEPS | 2.080e-01" in md and "5.080e-01" in md
    assert "| lowrank |" in md and "ours, profile paper_cpu, 1 seed(s), 2 training steps" in md
