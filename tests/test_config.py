import re
from pathlib import Path

import pytest
import yaml

from leads.config.loading import CONFIG_DIR, config_hash, load_config, parse_override, save_config
from leads.envs.errors import UserError
from leads.envs.registry import SYSTEMS


@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_every_system_has_a_quick_and_a_published_profile(system):
    profiles = yaml.safe_load((Path(__file__).parents[1] / "configs" / f"{system}.yaml").read_text())["profiles"]
    published = [p for p in profiles if p.startswith("paper")]
    assert "quick" in profiles and published
    for profile in ["quick", *published]:
        cfg = load_config(system, profile)
        assert cfg.profile == profile
        assert cfg.system_name == system
        # the system's own defaults are resolved into the config, so they can be overridden
        assert cfg.system["train_envs"] and cfg.system["dt"] > 0


def test_overrides_any_value_and_keep_types():
    cfg = load_config("gray_scott", overrides=["train.lr=3e-4", "data.n_test=3", "system.dt=20",
                                               "adapt.sets=[interp]", "method=coda"])
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.data.n_test == 3
    assert cfg.system["dt"] == 20
    assert cfg.adapt.sets == ["interp"]
    assert cfg.method == "coda"
    cfg = load_config("gray_scott", overrides=["profile=paper"])
    assert cfg.profile == "paper"


@pytest.mark.parametrize("override, match", [
    ("train.lrr=1", "unknown config key 'train.lrr'"),
    ("nosuchsection.x=1", "unknown config key 'nosuchsection'"),
    ("train.lr=fast", "train.lr' expects float"),
    ("data.n_test=1.5", "data.n_test' expects int"),
    ("train.lr", "key=value"),
    ("=3", "empty key"),
    ("method=nosuch", "unknown method 'nosuch'"),
    ("system.D_u=-1", "D_u"),
    ("system.train_envs=[]", "empty"),
])
def test_bad_overrides_are_one_line_errors(override, match):
    with pytest.raises(UserError, match=match) as e:
        load_config("gray_scott", overrides=[override])
    assert "\n" not in str(e.value)


def test_unknown_system_and_profile():
    with pytest.raises(UserError, match="unknown system 'grey_scott'.*gray_scott"):
        load_config("grey_scott")
    with pytest.raises(UserError, match="unknown profile 'fast'"):
        load_config("gray_scott", "fast")


def test_malformed_yaml_key_in_config_file(tmp_path):
    spec = yaml.safe_load((CONFIG_DIR / "gray_scott.yaml").read_text())
    spec["trian"] = {"lr": 1}
    (tmp_path / "gray_scott.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(UserError, match="unknown config key 'trian'"):
        load_config("gray_scott", config_dir=tmp_path)
    (tmp_path / "gray_scott.yaml").write_text("model: [unclosed")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config("gray_scott", config_dir=tmp_path)


def test_parse_override_values():
    assert parse_override("a.b=3e-4") == (["a", "b"], 3e-4)
    assert parse_override("a=true") == (["a"], True)
    assert parse_override("a=null") == (["a"], None)
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    assert parse_override("a=x=y") == (["a"], "x=y")


def test_saved_config_round_trips_and_hash_is_stable(tmp_path):
    cfg = load_config("lotka_volterra")
    save_config(cfg, tmp_path / "config.yaml")
    back = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert back == cfg
    assert config_hash(back) == config_hash(cfg)
    assert config_hash(load_config("lotka_volterra", overrides=["seed=1"])) != config_hash(cfg)


@pytest.mark.parametrize("key", ["skip", "per_capita"])
def test_model_keys_added_later_at_their_default_keep_run_ids(key):
    from leads.training.train import run_id_of

    cfg = load_config("lotka_volterra", "quick").to_dict()
    before = cfg | {"model": {k: v for k, v in cfg["model"].items() if k != key}}
    assert cfg["model"][key] is False and run_id_of(cfg) == run_id_of(before)
    assert run_id_of(load_config("lotka_volterra", "quick", [f"model.{key}=true"])) != run_id_of(cfg)


@pytest.mark.parametrize("key", ["weights_steps", "weights_patience", "refit_train"])
def test_adapt_keys_added_later_at_their_default_keep_run_ids(key):
    # Added after runs existed: at null, a run id is the one from before the key, so finished
    # runs are still found (reproduce skips them); set, it is part of the id.
    from leads.training.train import run_id_of

    cfg = load_config("gray_scott", "quick").to_dict()
    before = cfg | {"adapt": {k: v for k, v in cfg["adapt"].items() if k != key}}
    assert cfg["adapt"][key] is None and run_id_of(cfg) == run_id_of(before)
    assert run_id_of(load_config("gray_scott", "quick", [f"adapt.{key}=1"])) != run_id_of(cfg)


def test_the_cpu_budget_at_null_keeps_run_ids():
    from leads.training.train import run_id_of

    cfg = load_config("gray_scott", "quick").to_dict()
    before = cfg | {"train": {k: v for k, v in cfg["train"].items() if k != "max_cpu_seconds"}}
    assert cfg["train"]["max_cpu_seconds"] is None and run_id_of(cfg) == run_id_of(before)
    assert run_id_of(load_config("gray_scott", "quick", ["train.max_cpu_seconds=3600"])) != run_id_of(cfg)


@pytest.mark.parametrize("value", ["0", "-5", "an_hour"])
def test_a_cpu_budget_that_is_not_a_positive_number_is_one_line(value):
    from leads.envs.errors import UserError

    with pytest.raises(UserError, match="train.max_cpu_seconds") as e:
        load_config("gray_scott", "quick", [f"train.max_cpu_seconds={value}"])
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------- one profile per purpose
PROFILE_NAME = re.compile(r"quick|(?P<base>paper[a-z_]*?)(?P<recipe>_cpu(_hybrid)?)?")


def _spec(system: str) -> dict:
    return yaml.safe_load((CONFIG_DIR / f"{system}.yaml").read_text())


@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_one_profile_per_purpose_each_saying_what_it_is_for(system):
    """quick; a published protocol as paper*; our CPU recipe for one as <it>_cpu, a physics-aware one
    as <it>_cpu_hybrid; every profile's line says in a comment what it is for."""
    profiles = _spec(system)["profiles"]
    for name in profiles:
        match = PROFILE_NAME.fullmatch(name)
        assert match, f"{system}: profile name '{name}' is not quick, paper*, <protocol>_cpu or <protocol>_cpu_hybrid"
        assert match["recipe"] is None or match["base"] in profiles, f"{system}: {name} recipes no profile"
    lines = (CONFIG_DIR / f"{system}.yaml").read_text().splitlines()
    for name in profiles:
        (line,) = [x for x in lines if x.startswith(f"  {name}:")]
        assert "#" in line and len(line.split("#", 1)[1].strip()) > 10, f"{system}: say what {name} is for"


@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_a_replaced_profile_names_its_replacement_in_one_line(system):
    replaced = _spec(system).get("replaced_profiles") or {}
    for old, entry in replaced.items():
        with pytest.raises(UserError) as e:
            load_config(system, old)
        message = str(e.value)
        assert "\n" not in message and f"'{old}'" in message and f"--profile {entry['by']}" in message
        assert all(f"--set {s}" in message for s in entry.get("set", []))
        assert load_config(system, entry["by"], entry.get("set", [])).profile == entry["by"]  # its rerun works


def test_every_replaced_name_had_a_replacement():
    assert set(_spec("gray_scott")["replaced_profiles"]) == {"paper_code_cpu_hour", "paper_code_cpu_45k",
                                                             "paper_code_cpu_3600s"}
    assert _spec("pendulum")["replaced_profiles"] == {"paper_hybrid_cpu": {"by": "paper_cpu_hybrid"}}
    assert _spec("lotka_volterra")["replaced_profiles"] == {"paper_leads_per_capita": {"by": "paper_leads_cpu"}}


def test_protocol_names_follow_their_profiles_and_replaced_ones_name_theirs():
    from leads.reproduce import REPLACED, load_protocols, reproduce

    protocols = load_protocols()
    for name, p in protocols.items():
        recipe = PROFILE_NAME.fullmatch(p.profile)["recipe"] or ""
        assert re.fullmatch(rf"[a-z]+_{p.system}(_text)?{recipe}", name), (name, p.profile)
    replaced = yaml.safe_load((CONFIG_DIR / "protocols.yaml").read_text())[REPLACED]
    assert {"geps_gray_scott_cpu_hour", "geps_gray_scott_cpu_45k", "geps_gray_scott_cpu_3600s",
            "geps_gray_scott_hybrid_cpu", "geps_pendulum_hybrid_cpu",
            "leads_lotka_volterra_per_capita"} <= set(replaced)
    for old, entry in replaced.items():
        assert entry["by"] in protocols and old not in protocols
        with pytest.raises(UserError, match=rf"^protocol '{old}' was replaced by '{entry['by']}': use "
                                            rf"--protocol {entry['by']}") as e:
            reproduce(old)
        assert "\n" not in str(e.value)
