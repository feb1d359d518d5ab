"""The leaderboard is a function of the result rows: aggregation, ranking, rebuilds, published block."""

from __future__ import annotations

import random

import numpy as np
import pytest

from leads.cli import main
from leads.envs.base import envs_key
from leads.envs.registry import get_system
from leads.evaluation.scoring import METRICS, Scores
from leads.reporting import leaderboard
from leads.reporting.keys import profile_protocol_key
from leads.reporting.published import PUBLISHED, published_for
from leads.reporting.results import ALL, append_rows, read_rows, score_rows

GS = get_system("gray_scott")
GEPS = next(p for p in PUBLISHED if p.system == "gray_scott" and p.protocol == "GEPS")


def _scores(values: list[float]) -> Scores:
    v = np.asarray(values, dtype=float)
    n = len(v)
    return Scores(env=np.arange(n) % 2, rel_l2=v, mse=v**2, rel_l2_extrap=2 * v, rel_l2_full=1.5 * v, mse_t0=0.5 * v**2,
                  per_step=np.zeros((n, 3)), t=np.arange(4.0))


def _rows(method: str, seed: int, errors: dict[str, list[float]], *, profile: str = "quick", time: str = "t0",
          shots: int = 1, heldout_key: str = "k", train_key: str = "tk", dt: float = 10.0,
          horizon: float = 200.0, system: str = "gray_scott", train_steps: int = 1500) -> list[dict]:
    """Rows of one evaluation; ``errors[split]`` are per-trajectory relative L2 errors."""
    base = {"run_id": f"{method}-{seed}", "eval_id": f"{method}-{seed}-{time}", "time": time, "system": system,
            "method": method, "seed": seed, "profile": profile, "train_seconds": 10.0 + seed,
            "train_steps": train_steps, "n_trained_params": 1000, "git_commit": "abc", "config_hash": "h",
            "train_envs_key": train_key, "dt": dt, "horizon": horizon}
    rows = []
    for split, values in errors.items():
        held = split != "in_domain"
        extra = {"kind": "heldout" if held else "in_domain", "shots": shots if held else None,
                 "set_envs_key": heldout_key if held else train_key, "adapt_seconds": 2.0 if held else None,
                 "n_adapted_params": 8 if held else None}
        rows += score_rows({**base, **extra}, split, _scores(values), ["e0", "e1"])
    return rows


PER_SEED = {  # method -> seed -> split -> per-trajectory errors
    "good": {s: {"in_domain": [0.1 + s / 100, 0.2], "interp": [0.2, 0.3 + s / 50], "extrap": [0.3, 0.5]}
             for s in range(3)},
    "bad": {s: {"in_domain": [0.05, 0.05], "interp": [0.9, 1.0 + s / 10], "extrap": [0.8, 0.9]} for s in range(3)},
}


def _all_rows() -> list[dict]:
    return [r for m, seeds in PER_SEED.items() for s, e in seeds.items() for r in _rows(m, s, e)]


def test_score_rows_aggregate_per_environment_and_over_all_trajectories():
    rows = score_rows({"run_id": "r"}, "interp", _scores([1.0, 2.0, 3.0, 5.0]), ["e0", "e1"])
    get = {(r["environment"], r["metric"]): r for r in rows}
    assert set(m for _, m in get) == set(METRICS)
    assert get[("e0", "rel_l2")]["value"] == pytest.approx(2.0) and get[("e0", "rel_l2")]["n_traj"] == 2
    assert get[("e1", "rel_l2")]["value"] == pytest.approx(3.5)
    assert get[(ALL, "rel_l2")]["value"] == pytest.approx(2.75) and get[(ALL, "rel_l2")]["n_traj"] == 4
    assert get[(ALL, "rel_l2")]["std"] == pytest.approx(np.std([1.0, 2.0, 3.0, 5.0]))


def test_leaderboard_is_mean_and_std_over_seeds_of_per_seed_means_ranked_on_heldout():
    lb = leaderboard.build(_all_rows(), "gray_scott", "quick")
    assert [ln.method for ln in lb.lines] == ["good", "bad"]  # "bad" is better in-domain, worse held out
    assert lb.sets == ["interp", "extrap"] and lb.rank_sets == ["interp", "extrap"]
    good = lb.lines[0]
    per_seed = [np.mean(PER_SEED["good"][s]["interp"]) for s in range(3)]
    assert good.cells["interp"] == pytest.approx((np.mean(per_seed), np.std(per_seed)))
    assert good.cells["time_extrap"][0] == pytest.approx(2 * np.mean([np.mean(PER_SEED["good"][s]["in_domain"])
                                                                       for s in range(3)]))
    assert good.seeds == [0, 1, 2] and good.adapted_params == 8 and good.adapt_seconds == 2.0
    assert good.train_seconds == pytest.approx(11.0)
    md = leaderboard.to_markdown(lb)
    assert "| 1 | good | quick | 1500 steps | 3 |" in md and "| 2 | bad | quick | 1500 steps | 3 |" in md


def test_rebuilt_identically_from_the_same_rows_in_any_order(tmp_path):
    path = tmp_path / "results.jsonl"
    append_rows(path, _all_rows())
    rows = read_rows(path)
    first = leaderboard.write(leaderboard.build(rows, "gray_scott", "quick"), tmp_path / "a")
    shuffled = list(rows)
    random.Random(0).shuffle(shuffled)
    second = leaderboard.write(leaderboard.build(shuffled, "gray_scott", "quick"), tmp_path / "b")
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes() and a.stat().st_size > 100
    head = first[1].read_text().splitlines()[0].split(",")
    assert head[:5] == ["rank", "method", "profile", "config_key", "external"] and "in_domain_mean" in head


def test_latest_evaluation_of_a_run_counts_and_the_replaced_rows_are_counted():
    # rows written before evaluations replaced their rows: a file may hold two of one run's split
    rows = _all_rows() + _rows("good", 0, {"interp": [5.0, 5.0]}, time="t1")
    lb = leaderboard.build(rows, "gray_scott", "quick")
    per_seed = [5.0] + [np.mean(PER_SEED["good"][s]["interp"]) for s in (1, 2)]
    good = next(ln for ln in lb.lines if ln.method == "good")
    assert good.cells["interp"][0] == pytest.approx(np.mean(per_seed))
    # splits not re-evaluated keep their latest evaluation
    assert good.cells["extrap"][0] == pytest.approx(0.4)
    n = len(score_rows({}, "interp", _scores([1.0, 1.0]), ["e0", "e1"]))
    assert lb.left_out == {"replaced by a later evaluation of the same run (written before evaluations replaced "
                           "theirs)": n}
    assert f"Rows left out: {n} replaced by a later evaluation" in leaderboard.to_markdown(lb)


def test_protocol_and_shots_select_rows_and_what_is_left_out_is_said():
    rows = _all_rows() + _rows("other", 0, {"in_domain": [1.0, 1.0], "interp": [1.0, 1.0]}, profile="paper")
    rows += _rows("good", 0, {"interp": [0.01, 0.01]}, time="t9", shots=4)
    paper = leaderboard.build(rows, "gray_scott", "paper")
    assert [ln.method for ln in paper.lines] == ["other"]
    assert any(reason.startswith("of protocol quick") for reason in paper.left_out)
    assert "`run.py leaderboard --profile quick`" in leaderboard.to_markdown(paper)
    lb = leaderboard.build(rows, "gray_scott", "quick", shots=4)
    assert lb.sets == ["interp"] and lb.lines[0].method == "good"  # the others have no 4-shot rows
    assert lb.lines[0].cells["interp"][0] == pytest.approx(0.01) and np.isnan(lb.lines[1].heldout)
    quick = leaderboard.build(rows, "gray_scott", "quick")
    assert any("adapted with 4 trajectories per environment (`--shots 4`)" in r for r in quick.left_out)
    assert leaderboard.build(rows, "lotka_volterra", "quick").lines == []


def test_methods_missing_a_set_rank_on_the_common_sets_only():
    rows = _all_rows() + _rows("new", 0, {"in_domain": [0.1, 0.1], "interp": [0.01, 0.01]})
    lb = leaderboard.build(rows, "gray_scott", "quick")
    assert lb.rank_sets == ["interp"] and lb.lines[0].method == "new"
    assert np.isnan(lb.lines[0].cells["extrap"][0]) and "—" in leaderboard.to_markdown(lb)


def _geps_rows(**kw) -> list[dict]:
    keys = {"train_key": envs_key(GS, list(GEPS.train_envs)), "heldout_key": envs_key(GS, list(GEPS.heldout_envs)),
            "profile": "paper"}
    keys.update(kw)
    return _rows("lowrank", 0, {"in_domain": [0.02, 0.02], "extrap": [0.04, 0.04]}, **keys)


def test_published_numbers_only_beside_rows_of_the_same_protocol():
    lb = leaderboard.build(_geps_rows(), "gray_scott", "paper")
    (block,) = lb.published
    assert block.entry is GEPS and block.heldout_set == "extrap"
    md = leaderboard.to_markdown(lb)
    assert "Published results: GEPS" in md and "| GEPS | 2.220e-02 ± 1.8e-03 | 1.860e-02 ± 2.1e-02 | published |" in md
    # ours in the same metric (relative L2 over the whole trajectory: 1.5x rel_l2 in these fake scores)
    # with its training budget and cost, so a reduced budget cannot pass for the published one
    assert ("| lowrank | 3.000e-02 ± 0.0e+00 | 6.000e-02 ± 0.0e+00 | ours, profile paper, 1 seed(s), 1500 training "
            "steps, 10 s training + 2 s adaptation per run |") in md
    for other in (dict(profile="quick"), dict(heldout_key="elsewhere"), dict(train_key="other"), dict(dt=20.0),
                  dict(shots=2)):
        rows = _geps_rows(**other)
        lb = leaderboard.build(rows, "gray_scott", rows[0]["profile"], shots=other.get("shots", 1))
        assert lb.published == [], other
        assert "No published numbers match" in leaderboard.to_markdown(lb)


def test_without_heldout_sets_methods_rank_in_domain():
    rows = _rows("zeta", 0, {"in_domain": [0.1, 0.1]}) + _rows("alpha", 0, {"in_domain": [0.5, 0.5]})
    lb = leaderboard.build(rows, "gray_scott", "quick")
    assert [ln.method for ln in lb.lines] == ["zeta", "alpha"]
    assert "Ranked by in-domain relative L2 (no held-out sets)" in leaderboard.to_markdown(lb)


def test_published_block_shows_a_second_metric_and_the_steps_each_run_trained():
    # LEADS' LV number includes t=0; ours is shown with (mse_t0) and without (mse) it.
    lv = next(p for p in PUBLISHED if p.system == "lotka_volterra" and p.protocol == "LEADS")
    system = get_system("lotka_volterra")
    keys = dict(profile="paper_leads", system="lotka_volterra", dt=0.5, horizon=9.5,
                train_key=envs_key(system, list(lv.train_envs)))
    # One configuration whose runs stopped at different steps (a CPU budget does that).
    same = {"protocol_key": profile_protocol_key("lotka_volterra", "paper_leads"), "config_key": "budgeted"}
    rows = [{**r, **same} for r in _rows("lowrank", 0, {"in_domain": [0.1, 0.1]}, **keys)]
    rows += [{**r, **same} for r in _rows("lowrank", 1, {"in_domain": [0.3, 0.3]}, train_steps=120000, **keys)]
    lb = leaderboard.build(rows, "lotka_volterra", "paper_leads")
    (block,) = lb.published
    (ours,) = block.ours
    assert ours.seeds == 2 and ours.train_steps == [1500, 120000] and ours.new_envs is None
    assert ours.in_domain[0] == pytest.approx(0.5 * (0.01 + 0.09) / 2)  # mse_t0 = v**2 / 2 in these scores
    assert ours.also[0][0] == pytest.approx((0.01 + 0.09) / 2)
    md = leaderboard.to_markdown(lb)
    assert "| lowrank (mse: MSE over (0, T]) | 5.000e-02 ± " in md and "1500/120000 training steps" in md
    assert "CPU s)" not in md  # rows written before CPU seconds were recorded: none claimed
    for r in rows:
        r["train_cpu_seconds"] = 3000.0 if r["seed"] == 0 else 3600.0
    assert "10 s training (3300 CPU s)" in leaderboard.to_markdown(leaderboard.build(rows, "lotka_volterra",
                                                                                     "paper_leads"))
    # Rows of old files, without configuration keys: grouped by profile and training steps, and said so.
    old = _rows("lowrank", 0, {"in_domain": [0.1, 0.1]}, **keys)
    old += _rows("lowrank", 1, {"in_domain": [0.3, 0.3]}, train_steps=120000, **keys)
    lb = leaderboard.build(old, "lotka_volterra", "paper_leads")
    assert [ln.train_steps for ln in lb.lines] == [[1500], [120000]] and all(ln.keys_derived for ln in lb.lines)
    assert "rows were written before rows recorded their configuration" in leaderboard.to_markdown(lb)


def test_published_entries_are_well_formed():
    for entry in PUBLISHED:
        assert entry.metric in METRICS and entry.scale > 0 and entry.source
        assert entry.also_metric is None or entry.also_metric in METRICS
        assert entry.train_key() and (entry.heldout_envs is None or entry.heldout_key())
        assert all(ind is not None or held is not None for ind, held in entry.numbers.values())
    assert {p.protocol for p in published_for("pendulum")} == {"GEPS"}


def test_each_published_protocol_has_a_profile_that_reproduces_it():
    # The profile named by an entry must generate exactly its environments, step and horizon,
    # or its numbers would never be shown (or, worse, shown beside another protocol).
    from leads.config.loading import load_config
    from leads.envs.base import envs_key
    from leads.envs.registry import get_system

    for entry in (e for e in PUBLISHED if e.profile is not None):
        cfg = load_config(entry.system, entry.profile)
        system = get_system(entry.system, **cfg.system)
        assert envs_key(system, system.train_envs) == entry.train_key(), (entry.system, entry.protocol)
        assert (system.dt, system.horizon) == (entry.dt, entry.horizon), (entry.system, entry.protocol)


def test_leaderboard_command_writes_files_and_errors_without_rows(tmp_path, capsys):
    results = tmp_path / "results"
    argv = ["leaderboard", "--env", "gray_scott", "--set", f"results_dir={results}", "--logger", "none"]
    assert main(argv) == 2
    assert "no results" in capsys.readouterr().err
    append_rows(results / "gray_scott" / "results.jsonl", _all_rows())
    assert main(argv) == 0
    out = capsys.readouterr().out
    md = (results / "gray_scott" / "leaderboard_quick.md").read_text()
    assert md in out and (results / "gray_scott" / "leaderboard_quick.csv").exists()
    assert main([*argv, "--profile", "paper"]) == 2
    assert "no rows of protocol paper (profile 'paper')" in capsys.readouterr().err
    # another profile's board goes to its own file: the quick one is left as it was
    append_rows(results / "gray_scott" / "results.jsonl", _geps_rows())
    assert main([*argv, "--profile", "paper"]) == 0
    assert (results / "gray_scott" / "leaderboard_quick.md").read_text() == md
    assert "Published results: GEPS" in (results / "gray_scott" / "leaderboard_paper.md").read_text()


def test_published_block_names_the_setting_its_numbers_are_matched_against():
    """GEPS' Gray-Scott numbers: the paper's text trains on 1 trajectory per environment, its code
    on 256; the block says which of the two the rows followed."""
    for profile, setting in (("paper", "the GEPS paper's text, 1 training trajectory per environment"),
                             ("paper_code", "the setting of GEPS' public code, 256 training trajectories"),
                             ("paper_code_cpu", "the setting of GEPS' public code (256 training trajectories "
                                                "per environment), our CPU recipe")):
        rows = _geps_rows(profile=profile)
        md = leaderboard.to_markdown(leaderboard.build(rows, "gray_scott", profile))
        assert f"Same protocol as these rows (profile {profile}," in md and f"Matched against {setting}" in md, profile


def _keyed(rows: list[dict], config: str, **extra) -> list[dict]:
    """``rows`` as this code writes them: with their protocol key (their profile's) and a configuration."""
    return [{**r, "protocol_key": profile_protocol_key(r["system"], r["profile"]), "config_key": config, **extra}
            for r in rows]


def test_one_line_per_configuration_never_mixed():
    # lowrank trained for 100 steps (with in-domain, interp and extrap rows), for 20 steps with a
    # user held-out set, and for 1000 steps: three configurations, three lines, nothing dropped.
    rows = _keyed(_rows("lowrank", 0, {"in_domain": [0.1, 0.1], "interp": [0.2, 0.2], "extrap": [0.3, 0.3]},
                        time="t1", train_steps=100), "c100")
    rows += _keyed(_rows("lowrank", 0, {"in_domain": [0.9, 0.9], "hot": [0.8, 0.8]}, time="t2", train_steps=20),
                   "c20", run_id="lowrank-0-b")
    rows += _keyed(_rows("lowrank", 0, {"in_domain": [0.05, 0.05], "interp": [0.1, 0.1], "extrap": [0.1, 0.1]},
                         time="t0", train_steps=1000), "c1000", run_id="lowrank-0-c")
    lb = leaderboard.build(rows, "gray_scott", "quick")
    by_steps = {ln.train_steps[0]: ln for ln in lb.lines}
    assert sorted(by_steps) == [20, 100, 1000] and lb.left_out == {}
    assert by_steps[100].cells["in_domain"][0] == pytest.approx(0.1)
    assert by_steps[100].cells["interp"][0] == pytest.approx(0.2) and np.isnan(by_steps[100].cells["hot"][0])
    assert by_steps[20].cells["hot"][0] == pytest.approx(0.8)
    assert by_steps[20].cells["in_domain"][0] == pytest.approx(0.9)
    assert by_steps[1000].cells["in_domain"][0] == pytest.approx(0.05)
    md = leaderboard.to_markdown(lb)
    labels = {ln.label for ln in lb.lines}
    assert len(labels) == 3 and all(label.startswith("lowrank [quick] [config ") for label in labels)
    for steps in (20, 100, 1000):
        assert f"| {steps} steps |" in md


def test_one_table_across_the_profiles_of_a_protocol():
    """GEPS' code setting and our CPU recipes of it share their data: one table, each line with its
    profile and budget; an external model scored under any of them ranks in it; the paper's text
    setting (1 training trajectory) is another protocol."""
    geps = dict(train_key=envs_key(GS, list(GEPS.train_envs)), heldout_key=envs_key(GS, list(GEPS.heldout_envs)))
    splits = {"in_domain": [0.02, 0.02], "extrap": [0.04, 0.04]}
    rows = _keyed(_rows("lowrank", 0, splits, profile="paper_code", train_steps=120000, **geps), "code")
    rows += _keyed(_rows("lowrank", 0, {"in_domain": [0.03, 0.03], "extrap": [0.05, 0.05]}, profile="paper_code_cpu",
                         train_steps=12000, **geps), "cpu", run_id="lowrank-0-cpu", train_cpu_seconds=3590.0,
                   train_max_cpu_seconds=3600.0)
    rows += _keyed(_rows("geps_code", 0, {"in_domain": [0.06, 0.06], "extrap": [0.07, 0.07]}, profile="paper_code",
                         **geps), "ext", run_id="external-geps_code-s0", external=True, train_steps=None,
                   train_seconds=None, declared_train_steps=30000, declared_train_seconds=600.0)
    rows += _keyed(_rows("lowrank", 0, splits, profile="paper", **geps), "text", run_id="lowrank-0-text")
    profiles = ("paper_code", "paper_code_cpu", "paper_code_cpu_hybrid")
    boards = [leaderboard.build(rows, "gray_scott", p) for p in profiles]
    assert len({leaderboard.to_markdown(lb) for lb in boards}) == 1  # the same table from any of its profiles
    lb = boards[0]
    assert lb.profile == "paper_code" and leaderboard.file_stem(lb) == "leaderboard_paper_code"
    assert [(ln.label, ln.profiles) for ln in lb.lines] == [
        ("lowrank [paper_code]", ["paper_code"]), ("lowrank [paper_code_cpu]", ["paper_code_cpu"]),
        ("geps_code (external)", ["paper_code"])]
    assert lb.lines[1].budget() == "12000 steps, 3590 CPU s (budget 3600)"
    assert lb.lines[2].budget() == "declared: 30000 steps, 600 s"
    assert any(reason.startswith("of protocol paper ") for reason in lb.left_out)
    (block,) = lb.published
    assert [o.method for o in block.ours] == [ln.label for ln in lb.lines]
    md = leaderboard.to_markdown(lb)
    assert "| geps_code (external) | 9.000e-02 ± 0.0e+00 | 1.050e-01 ± 0.0e+00 | external, 1 seed(s), training " \
           "budget declared: 30000 steps, 600 s |" in md
    assert "Matched against paper_code: the setting of GEPS' public code" in md
    assert f"paper_code_cpu: {GEPS.settings['paper_code_cpu']}" in md
    for wrong in ("? training steps", "nan s", "ours, profile paper_code, 1 seed(s), 0 training"):
        assert wrong not in md
    # without a declared budget it says so
    undeclared = [{**r, "declared_train_steps": None, "declared_train_seconds": None} for r in rows]
    assert "training budget not declared" in leaderboard.to_markdown(leaderboard.build(undeclared, "gray_scott",
                                                                                       "paper_code"))


def _diverged(rows: list[dict], at: float, n: int) -> list[dict]:
    return [{**r, "n_diverged": n, "diverged_at": at} if r["metric"] == "rel_l2_full" else r for r in rows]


def test_a_diverged_line_ranks_below_every_finite_one_and_every_table_shows_it(tmp_path):
    finite = _rows("slow", 0, {"in_domain": [0.5, 0.5], "interp": [0.9, 0.9], "extrap": [0.9, 0.9]})
    # better numbers, but some forecasts diverged (scored up to divergence)
    blown = _diverged(_rows("blows_up", 0, {"in_domain": [0.1, 0.1], "interp": [0.1, 0.1], "extrap": [0.1, 0.1]}),
                      140.0, 1)
    lb = leaderboard.build(finite + blown, "gray_scott", "quick")
    assert [ln.method for ln in lb.lines] == ["slow", "blows_up"]
    assert str(lb.lines[1].diverged["interp"]) == "1/2 from t=140"
    md = leaderboard.to_markdown(lb)
    assert "| 2 | blows_up | quick | 1500 steps | 1 | 1.000e-01 ± 0.0e+00 † |" in md
    assert "† Forecasts that diverged" in md and "blows_up: in-domain 1/2 from t=140" in md
    head, data = leaderboard.table(lb)
    row = dict(zip(head, data[1]))
    assert row["interp_diverged_fraction"] == 0.5 and row["diverged_first_at"] == 140.0
    assert dict(zip(head, data[0]))["interp_diverged_fraction"] == 0.0


def test_a_held_out_set_name_with_other_environments_is_left_out_not_mixed():
    rows = _all_rows() + _rows("new", 0, {"in_domain": [0.1, 0.1], "interp": [0.01, 0.01]}, heldout_key="other")
    lb = leaderboard.build(rows, "gray_scott", "quick")
    new = next(ln for ln in lb.lines if ln.method == "new")
    assert np.isnan(new.cells["interp"][0])
    assert any("named 'interp' with other environments" in reason for reason in lb.left_out)


def test_the_leaderboard_is_printed_when_its_files_cannot_be_written(tmp_path, capsys):
    results = tmp_path / "results"
    append_rows(results / "gray_scott" / "results.jsonl", _all_rows())
    (results / "gray_scott" / "leaderboard_quick.md").mkdir()  # in the way of the file
    argv = ["leaderboard", "--env", "gray_scott", "--set", f"results_dir={results}", "--logger", "none"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| 1 | good | quick |" in out
    assert f"not written: {results / 'gray_scott' / 'leaderboard_quick.md'}" in out and "the table above" in out


def test_rows_of_a_profile_with_data_settings_of_their_own_get_a_table_that_says_so():
    # e.g. `run.py --env gray_scott --set data.n_test=2`: not the quick protocol as configured
    rows = [{**r, "protocol_key": "0123456789ab", "config_key": "c"} for r in _all_rows()]
    lb = leaderboard.build(rows, "gray_scott", "quick")
    assert lb.profile == "quick-012345" and [ln.method for ln in lb.lines] == ["good", "bad"]
    assert "protocol quick-012345: profile quick with data or system settings of its own" in \
        leaderboard.to_markdown(lb)
    # a config whose --set changes the protocol gets exactly its own table (here: empty)
    from leads.config.loading import load_config

    cfg = load_config("gray_scott", "quick", ["data.n_test=3"])
    assert leaderboard.for_config(rows, cfg).lines == []
    assert [ln.method for ln in leaderboard.for_config(rows, load_config("gray_scott", "quick")).lines] == [
        "good", "bad"]
