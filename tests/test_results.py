"""Result rows: an evaluation written again replaces its rows (never duplicates them), what
makes rows comparable (protocol and configuration keys), and old files still load."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from tiny import tiny_config

from leads.config.loading import load_config
from leads.config.schema import RunConfig
from leads.reporting.keys import config_key, derive_keys, identity, protocol_key, protocols_of
from leads.reporting.results import append_rows, read_rows


def _evaluation(run: str, config: str, splits: dict[str, float], shots: int = 1) -> list[dict]:
    rows = []
    for split, value in splits.items():
        kind = "in_domain" if split == "in_domain" else "heldout"
        for env in ("e0", "all"):
            rows.append({"run_id": run, "config_key": config, "kind": kind, "split": split,
                         "shots": None if kind == "in_domain" else shots, "set_envs_key": split,
                         "environment": env, "metric": "rel_l2", "value": value})
    return rows


def test_an_evaluation_written_again_replaces_its_rows(tmp_path):
    path = tmp_path / "results.jsonl"
    assert append_rows(path, _evaluation("r0", "c", {"in_domain": 1.0, "interp": 2.0})) == 0
    assert append_rows(path, _evaluation("r1", "c", {"in_domain": 5.0})) == 0  # another run
    # the same run re-adapted to interp only: its interp rows are replaced, its in-domain ones kept
    assert append_rows(path, _evaluation("r0", "c", {"interp": 3.0})) == 2
    rows = read_rows(path)
    assert Counter(identity(r) for r in rows) == {identity(r): 2 for r in rows}  # 2 environments each
    got = {(r["run_id"], r["split"], r["environment"]): r["value"] for r in rows}
    assert got == {("r0", "in_domain", "e0"): 1.0, ("r0", "in_domain", "all"): 1.0, ("r0", "interp", "e0"): 3.0,
                   ("r0", "interp", "all"): 3.0, ("r1", "in_domain", "e0"): 5.0, ("r1", "in_domain", "all"): 5.0}
    # other shots, another configuration (other adaptation settings) of the same run: new rows
    assert append_rows(path, _evaluation("r0", "c", {"interp": 4.0}, shots=4)) == 0
    assert append_rows(path, _evaluation("r0", "other", {"interp": 4.0})) == 0
    assert len(read_rows(path)) == 10


def test_replacing_keeps_what_it_cannot_read_and_old_rows(tmp_path):
    path = tmp_path / "results.jsonl"
    old = {"run_id": "r0", "kind": "in_domain", "split": "in_domain", "environment": "all", "metric": "rel_l2",
           "value": 9.0}  # a row of a file written before configuration keys: never replaced
    append_rows(path, [old, *_evaluation("r0", "c", {"in_domain": 1.0})])
    with open(path, "a") as f:
        f.write('{"run_id": "r0", "tru')  # a writer killed mid-row
    append_rows(path, _evaluation("r0", "c", {"in_domain": 2.0}))
    lines = path.read_text().splitlines()
    assert '{"run_id": "r0", "tru' in lines and len(lines) == 4  # the torn line kept, on a line of its own
    with pytest.warns(UserWarning, match="skipped 1"):
        rows = read_rows(path)
    assert sorted(r["value"] for r in rows) == [2.0, 2.0, 9.0]


def test_a_read_only_copy_of_the_results_is_read(tmp_path, monkeypatch):
    import errno

    import leads.reporting.results as results

    path = tmp_path / "results.jsonl"
    append_rows(path, _evaluation("r0", "c", {"in_domain": 1.0}))

    def no_lock(p):
        raise PermissionError(errno.EACCES, "Permission denied", str(p) + ".lock")

    monkeypatch.setattr(results, "file_lock", no_lock)
    assert len(read_rows(path)) == 2


def test_keys_say_what_is_measured_and_how_a_model_was_trained(tmp_path):
    cfg = tiny_config("lotka_volterra", tmp_path)
    same_protocol = [tiny_config("lotka_volterra", tmp_path, o) for o in
                     ("train.max_steps=7", "train.compile=true", "adapt.steps=5", "seed=3", "method=coda",
                      "adapt.sets=[interp]", "adapt.shots=2", f"runs_dir={tmp_path / 'elsewhere'}")]
    assert all(protocol_key(c) == protocol_key(cfg) for c in same_protocol)
    for other in ("data.n_test=2", "data.n_train=2", "data.seed=1", "system.dt=0.25"):
        assert protocol_key(tiny_config("lotka_volterra", tmp_path, other)) != protocol_key(cfg), other
    partial = RunConfig.of({**cfg.to_dict(), "data": {**cfg.to_dict()["data"], "observe": "x"}})
    assert protocol_key(partial) != protocol_key(cfg)  # what is observed is what is scored
    # seeds of one configuration are one line; held-out sets and shots are named by each row;
    # compile computes the same values; directories are bookkeeping
    for same in ("seed=3", "train.compile=true", "adapt.sets=[interp]", "adapt.shots=2",
                 f"runs_dir={tmp_path / 'elsewhere'}", "logger=csv"):
        assert config_key(tiny_config("lotka_volterra", tmp_path, same)) == config_key(cfg), same
    for other in ("train.max_steps=7", "adapt.steps=5", "method=coda", "data.n_test=2", "train.max_cpu_seconds=60"):
        assert config_key(tiny_config("lotka_volterra", tmp_path, other)) != config_key(cfg), other
    # a profile's name is not its configuration: the same settings under two names are one
    renamed = RunConfig.of({**cfg.to_dict(), "profile": "another_name"})
    assert config_key(renamed) == config_key(cfg) and protocol_key(renamed) == protocol_key(cfg)


def test_data_of_a_new_version_make_another_protocol_and_another_run(tmp_path, monkeypatch):
    from leads.envs.registry import SYSTEMS
    from leads.training.train import run_id_of

    cfg = tiny_config("lotka_volterra", tmp_path)
    before = protocol_key(cfg), run_id_of(cfg), config_key(cfg)
    monkeypatch.setattr(SYSTEMS["lotka_volterra"], "data_version", 2)
    # scores on the new data never share a leaderboard line with the old; a run on the old data
    # is not the new data's finished run (a batch would skip it); how a model trains is unchanged
    assert protocol_key(cfg) != before[0] and run_id_of(cfg) != before[1] and config_key(cfg) == before[2]


def test_protocols_group_a_published_setting_with_its_cpu_recipes():
    by_name = {p.name: p.profiles for p in protocols_of("gray_scott")}
    assert set(by_name["paper_code"]) >= {"paper_code", "paper_code_cpu", "paper_code_cpu_hybrid"}
    assert "paper" in by_name and "paper_code" not in by_name["paper"]  # 1 training trajectory, not 256
    assert by_name["quick"] == ("quick",)
    lv = {p.name: p.profiles for p in protocols_of("lotka_volterra")}
    assert set(lv["paper_leads"]) == {"paper_leads", "paper_leads_cpu"}


def test_rows_of_old_files_load_with_keys_derived_from_their_profile(tmp_path):
    path = tmp_path / "results.jsonl"
    old = {"run_id": "lowrank-s0-abc", "system": "gray_scott", "profile": "paper_code_cpu", "train_steps": 12000,
           "kind": "in_domain", "split": "in_domain", "environment": "all", "metric": "rel_l2", "value": 0.1}
    path.write_text(json.dumps(old) + "\n")
    (row,) = derive_keys(read_rows(path))
    assert row["keys_derived"] and row["config_key"] == "derived:paper_code_cpu:12000"
    assert row["protocol_key"] == protocol_key(load_config("gray_scott", "paper_code"))
    gone = derive_keys([{**old, "profile": "no_such_profile"}])[0]
    assert gone["protocol_key"] == "profile:no_such_profile"


def test_a_results_file_that_cannot_be_read_is_one_line(tmp_path):
    from leads.envs.errors import UserError

    path = tmp_path / "results.jsonl"
    path.mkdir()  # in the way of the file
    with pytest.raises(UserError, match="cannot be read") as e:
        read_rows(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_rows_of_a_replaced_profile_join_the_protocol_of_the_profile_that_replaced_it():
    from leads.reporting.keys import _replaced

    replaced = _replaced("gray_scott", "paper_code_cpu_3600s")
    if replaced is None:
        pytest.skip("configs/gray_scott.yaml replaces no profile")
    old = {"run_id": "r", "system": "gray_scott", "profile": "paper_code_cpu_3600s", "train_steps": 41000}
    (row,) = derive_keys([old])
    assert row["protocol_key"] == protocol_key(load_config("gray_scott", replaced[0], replaced[1]))
