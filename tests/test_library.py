"""leads as a library: the README example, the public API, packaging beside Hugging Face
``datasets``, and the typed configuration."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

import leads
from leads.config.loading import CONFIG_DIR, load_config
from leads.config.schema import AdaptConfig, RunConfig, Section, TrainConfig
from leads.datasets.config import ConfigKeyWarning
from leads.envs.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use it as a library", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_library_example_runs_as_written(tmp_path):
    code = _readme_example()
    assert len(code.strip().splitlines()) <= 22
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    line = out.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"lowrank: relative L2 on new environments (\S+) ± (\S+) after (\d+) steps", line)
    assert match, line
    assert 0 < float(match.group(1)) < 1  # trained and adapted: far better than predicting nothing
    assert (tmp_path / "data" / "lotka_volterra").is_dir() and (tmp_path / "runs" / "lotka_volterra").is_dir()


def test_public_names_resolve_to_their_modules():
    for name in leads.__all__:
        value = getattr(leads, name)
        assert value is getattr(importlib.import_module(leads._API[name]), name)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        leads.nope  # noqa: B018


def test_importing_leads_or_generating_data_does_not_import_lightning():
    code = ("import sys, leads, leads.datasets.cache, leads.envs.registry; "
            "print('pytorch_lightning' in sys.modules, 'matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ----------------------------------------------------------------- packaging
def _fake_hugging_face(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    (site / "datasets").mkdir(parents=True)
    (site / "datasets" / "__init__.py").write_text("SOURCE = 'huggingface'\n")
    return site


@pytest.mark.parametrize("where", ["datasets_folder", "elsewhere"])
def test_hugging_face_datasets_and_leads_work_side_by_side(tmp_path, where):
    """Only ``leads`` is installed at the top level: a ``datasets`` package on the path is
    Hugging Face's, and leads finds its own as ``leads.datasets``. (From the repository root,
    where Python looks first in the working directory, the folder ``datasets/`` is found instead;
    ``python run.py`` takes care not to look there.)"""
    site = _fake_hugging_face(tmp_path)
    cwd = {"datasets_folder": ROOT / "datasets", "elsewhere": tmp_path}[where]
    code = ("import datasets; "
            "from leads.datasets.h5 import load_split; from leads.envs.registry import get_system; "
            "import leads; assert leads.get_system('lotka_volterra').name == 'lotka_volterra'; "
            "print(datasets.SOURCE, load_split.__module__)")
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["huggingface", "leads.datasets.h5"]


def test_run_py_sees_hugging_face_datasets(tmp_path):
    """``python run.py`` leaves the repository root off the path: ``datasets`` is still theirs."""
    site = _fake_hugging_face(tmp_path)
    probe = ROOT / f".probe_{os.getpid()}.py"  # a script in the repository root, like run.py
    run_py = (ROOT / "run.py").read_text()
    probe.write_text(run_py.split("from leads.cli import main")[0] + "import datasets\nimport leads.cli\n"
                     "print(datasets.SOURCE)\n")
    try:
        out = subprocess.run([sys.executable, str(probe)], cwd=tmp_path, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(site)})
    finally:
        probe.unlink()
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "huggingface"


def test_envs_and_datasets_are_installed_as_leads_subpackages_without_links():
    """The top-level folders are mapped to ``leads.envs`` / ``leads.datasets`` by the build
    (pyproject's package-dir), not linked: no symlink anywhere in the repository."""
    import leads.datasets
    import leads.envs

    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-s"], capture_output=True, text=True)
    if tracked.returncode == 0:
        assert not [line for line in tracked.stdout.splitlines() if line.startswith("120000")]
    assert not (ROOT / "leads" / "envs").exists() and not (ROOT / "leads" / "datasets").exists()
    assert Path(leads.envs.__file__).resolve() == ROOT / "envs" / "__init__.py"
    assert Path(leads.datasets.__file__).resolve() == ROOT / "datasets" / "__init__.py"
    packages = yaml.safe_load(re.search(r"packages = (\[.*?\])", (ROOT / "pyproject.toml").read_text(), re.S)
                              .group(1).replace("\n", " "))
    assert all(p == "leads" or p.startswith("leads.") for p in packages)
    dist = importlib.metadata.distribution("leads")
    top = (dist.read_text("top_level.txt") or "leads").split()
    assert top == ["leads"]


@pytest.mark.slow
def test_the_wheel_holds_envs_and_datasets_inside_leads_only(tmp_path):
    """What ``pip install .`` installs: leads/envs/* and leads/datasets/*, no top-level envs or datasets."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("leads", "envs", "datasets"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "wheel"),
                          str(src)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = (tmp_path / "wheel").glob("leads-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "leads/envs/registry.py" in names and "leads/datasets/h5.py" in names
    assert {n.split("/")[0] for n in names} == {"leads", wheel.name.split("-py")[0] + ".dist-info"}


# ----------------------------------------------------------------- typed configuration
def test_config_is_typed_and_reads_like_its_yaml():
    cfg = load_config("gray_scott", overrides=["train.lr=3e-4", "adapt.steps=7"])
    assert isinstance(cfg, RunConfig) and isinstance(cfg.train, TrainConfig)
    assert cfg.train.lr == 3e-4 and cfg.adapt.steps == 7
    with pytest.warns(ConfigKeyWarning, match=r"read it as an attribute, cfg\.train"):
        assert cfg["train"]["lr"] == 3e-4  # scripts written against the YAML still run, warned
    with pytest.warns(ConfigKeyWarning, match=r"cfg.data.n_train$"):
        assert cfg.data["n_train"] == cfg.data.n_train
    plain = cfg.to_dict()
    assert RunConfig.from_dict(plain) == cfg == plain
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain  # plain YAML types only


def test_defaults_are_written_once_in_the_schema(tmp_path):
    """The schema's defaults are the base every config file overrides and what fills keys an old
    checkpoint lacks: no second copy (a defaults file, a method's own) can drift from them."""
    from leads.config.schema import METHOD_SETTINGS, defaults
    from leads.datasets.config import DataConfig
    from leads.models.methods import METHODS

    assert not list(CONFIG_DIR.glob("defaults*"))
    (tmp_path / "lotka_volterra.yaml").write_text("profiles: {quick: {}}\n")
    resolved = load_config("lotka_volterra", config_dir=tmp_path).to_dict()
    assert {k: v for k, v in resolved.items() if k not in ("system_name", "system")} == defaults()
    assert defaults()["data"] == DataConfig().to_dict() and defaults()["methods"] == METHOD_SETTINGS
    minimal = {"system_name": "x", "system": {}}
    assert RunConfig.of(minimal).to_dict() == {**minimal, **defaults()}
    for name, settings in METHOD_SETTINGS.items():  # the built-in methods read theirs from the schema
        assert METHODS[name].defaults is settings, name
    assert set(METHODS) == set(METHOD_SETTINGS)


@pytest.mark.parametrize("change, match", [
    ({"train": {"lr": 0}}, r"^config key 'train.lr' must be a finite number > 0, got 0$"),
    ({"train": {"lr": "fast"}}, r"^config key 'train.lr' must be a number, got 'fast'$"),
    ({"train": {"max_steps": 1.5}}, r"^config key 'train.max_steps' must be an integer, got 1.5$"),
    ({"train": {"scheduler": "step"}}, r"^unknown train.scheduler 'step'; choose one of: cosine, none$"),
    ({"adapt": {"optimizer": "sgd"}},
     r"^unknown adapt.optimizer 'sgd'; choose one of: auto, adam, lbfgs, gauss_newton$"),
    ({"adapt": {"shots": True}}, r"^config key 'adapt.shots' must be an integer, got True$"),
    ({"forecaster": {"teacher_forcing": {"every": 0}}},
     r"^config key 'forecaster.teacher_forcing.every' must be an integer >= 1, got 0$"),
    ({"forecaster": {"teacher_forcing": {"evry": 1}}}, r"^unknown config key 'forecaster.teacher_forcing.evry'"),
    ({"devices": 0}, r"^config key 'devices' must be a count >= 1, or -1 for all, got 0$"),
    ({"seed": -1}, r"^config key 'seed' must be an integer >= 0"),
    ({"method": "nosuch"}, r"^unknown method 'nosuch'; choose one of: "),
    ({"methods": {"lowrank": 3}}, r"^config key 'methods.lowrank' must be a mapping"),
    ({"model": 5}, r"^config section 'model' must be a mapping, got 5$"),
    ({"data": {"n_train": 0}}, r"^data.n_train=0 must be >= 1$"),
])
def test_config_validation_is_one_line_naming_the_key(change, match):
    plain = load_config("lotka_volterra").to_dict()
    for key, value in change.items():
        plain[key] = {**plain[key], **value} if isinstance(value, dict) and isinstance(plain[key], dict) else value
    with pytest.raises(UserError, match=match) as e:
        RunConfig.from_dict(plain)
    assert "\n" not in str(e.value)


def test_sections_are_immutable_and_replace_validates():
    cfg = load_config("lotka_volterra")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0  # type: ignore[misc]
    faster = cfg.replace(train=cfg.train.replace(lr=1e-2))
    assert faster.train.lr == 1e-2 and cfg.train.lr != 1e-2
    with pytest.raises(UserError, match="adapt.steps"):
        cfg.adapt.replace(steps=-1)
    assert AdaptConfig.of({"steps": 5}).lr == AdaptConfig().lr  # a partial section takes the defaults
    assert all(isinstance(getattr(cfg, f.name), Section) for f in dataclasses.fields(cfg)
               if f.name in ("train", "adapt", "model", "forecaster", "wandb"))
