"""Property tests: random ``--set`` overrides, ``--heldout`` specs and config files fed to the
command-line parsing give either a clean result or one ``UserError`` line, never another
exception (a traceback from deep inside YAML, torch or the system classes)."""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leads.cli import main
from leads.config.loading import CONFIG_DIR, load_config
from leads.config.schema import RunConfig
from leads.datasets.config import parse_data_config
from leads.envs.errors import UserError
from leads.envs.registry import get_system
from leads.evaluation.heldout import heldout_sets, resolve_sets
from leads.training.train import trainer_kwargs

SYSTEM = "lotka_volterra"
PARAMS = list(get_system(SYSTEM).param_names)


def _paths(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        out.append(f"{prefix}{k}")
        if isinstance(v, dict):
            out += _paths(v, f"{prefix}{k}.")
    return out


KEYS = _paths(load_config(SYSTEM).to_dict())
RAW_VALUES = ["null", "~", "true", "no", "[]", "{}", "[1, 2]", "{a: 1}", "nan", ".nan", ".inf", "-.inf", "1e400",
              "0", "-1", "3.5", "1e-3", "abc", "'q'", "[", "{", ":", "- x", "!!python/object/apply:os.getcwd []",
              "&a 1", "*a", "%", "@", "`", "[interp]", "[{alpha: 2}]", "[{beta: 0.6, delta: 0.6}]", "2**40",
              "[[1, 2], [3]]", "{beta: [1]}", "'beta=0.6'", "\t", "1:2", "0x10", "1_000", "+5", "-0"]

values = st.one_of(st.sampled_from(RAW_VALUES), st.integers(-2**70, 2**70).map(str),
                   st.floats().map(repr), st.text(max_size=12))
keys = st.one_of(st.sampled_from(KEYS), st.sampled_from(KEYS).map(lambda k: k + ".x"), st.text(max_size=12))
overrides = st.one_of(st.builds(lambda k, v: f"{k}={v}", keys, values), st.text(max_size=24))

numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-5, 5).map(str),
                    st.sampled_from(["0.5", "1e9", "-0.25", "", "x", "1e-400", "0.6"]))
env_text = st.lists(st.builds(lambda p, n: f"{p}={n}", st.one_of(st.sampled_from(PARAMS), st.text(max_size=5)),
                              numbers), min_size=0, max_size=5).map(",".join)
set_text = st.builds(lambda name, envs, sep: f"{name}{sep}{';'.join(envs)}",
                     st.one_of(st.just(""), st.sampled_from(["interp", "extrap", "hot", "a b", "-x", "é"]),
                               st.text(max_size=6)),
                     st.lists(env_text, min_size=0, max_size=3), st.sampled_from(["", ":", "::"]))
heldout_entry = st.one_of(set_text, st.text(max_size=20), st.sampled_from(["interp", "extrap", "alpha", "x.yaml", ""]),
                          st.dictionaries(st.text(max_size=5), st.lists(st.dictionaries(
                              st.sampled_from(PARAMS + ["zeta"]), st.one_of(st.floats(), st.integers(), st.text(
                                  max_size=3))), max_size=2), max_size=2))

# LEADS_FUZZ_EXAMPLES raises the number of examples for a longer search (CI uses the default).
N = int(os.environ.get("LEADS_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=N, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _one_line(e: UserError) -> None:
    assert str(e) and "\n" not in str(e), repr(str(e))


def _checks_before_training(cfg: RunConfig) -> None:
    """What a run checks before its first step, besides load_config."""
    heldout_sets(cfg)
    parse_data_config(cfg.data)
    trainer_kwargs(cfg)


@FUZZ
@given(st.lists(overrides, max_size=4))
def test_random_set_overrides(texts):
    try:
        cfg = load_config(SYSTEM, overrides=texts)
        _checks_before_training(cfg)
    except UserError as e:
        _one_line(e)


@FUZZ
@given(st.lists(heldout_entry, min_size=1, max_size=3))
def test_random_heldout_specs(entries):
    try:
        sets = resolve_sets(get_system(SYSTEM), entries)
    except UserError as e:
        _one_line(e)
        return
    for envs in sets.values():
        assert envs and all(set(env) == set(PARAMS) and all(math.isfinite(v) for v in env.values()) for env in envs)


# Values a hand-edited YAML config might hold where another type belongs.
yaml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)
SPEC = yaml.safe_load((CONFIG_DIR / f"{SYSTEM}.yaml").read_text())
SPEC_KEYS = _paths(SPEC) + ["profiles.quick.train.lr", "system.train_envs", "system.heldout.interp", "system.dt",
                            "methods.lowrank", "profiles.nosuch", "profile", "method", "unknown"]


def _set(d: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        if not isinstance(d.get(p), dict):
            d[p] = {}
        d = d[p]
    d[last] = value


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("configs")


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(SPEC_KEYS), yaml_values), min_size=1, max_size=3))
def test_random_config_files(config_dir, edits):
    spec = copy.deepcopy(SPEC)
    for key, value in edits:
        _set(spec, key, value)
    (config_dir / f"{SYSTEM}.yaml").write_text(yaml.safe_dump(spec))
    try:
        cfg = load_config(SYSTEM, config_dir=config_dir)
        _checks_before_training(cfg)
    except UserError as e:
        _one_line(e)


@settings(max_examples=max(N // 4, 10), deadline=None, database=None)
@given(st.lists(overrides, min_size=1, max_size=3))
def test_cli_prints_one_error_line_and_exits_2(tmp_path_factory, texts):
    results = tmp_path_factory.getbasetemp() / "fuzz-results-empty"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["leaderboard", "--env", SYSTEM, "--logger", "none", *[f"--set={t}" for t in texts],
                     f"--set=results_dir={results}"])
    # There are no results, so even a valid config ends in one clean error.
    lines = err.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err.getvalue()
