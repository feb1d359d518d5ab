"""Damaged or wrong inputs through ``python run.py``: one line that names the file or key,
exit code 2, no traceback. Damaged cache files are not errors: they are regenerated, with one
warning line naming the file and what was wrong."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch
from faults import assert_one_line_error, run_py, tiny_sets
from tiny import tiny_config

from leads.config.loading import CONFIG_DIR, load_config, system_of
from leads.datasets.cache import ensure_dataset
from leads.datasets.h5 import load_split
from leads.envs.errors import UserError
from leads.training.train import run_dir_for, train

SYSTEM = "lotka_volterra"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny runs of two methods sharing a data directory, trained in this process."""
    tmp = tmp_path_factory.mktemp("trained")
    runs = {}
    for method in ("lowrank", "erm"):
        cfg = tiny_config(SYSTEM, tmp, f"method={method}", "train.max_steps=2", "train.val_every=2")
        runs[method] = train(cfg, progress=False).run_dir
    return tmp, runs


def _resume(tmp, *extra):
    sets = tiny_sets(SYSTEM, tmp, "train.max_steps=2", "train.val_every=2", *extra, shared_data=True)
    return run_py(["--env", SYSTEM, "--no-progress", "--resume", *sets])


@pytest.mark.slow
@pytest.mark.parametrize("override, needles", [
    ("train.lrr=1", ["unknown config key 'train.lrr'"]),
    ("train.lr=fast", ["config key 'train.lr' expects float", "'fast'"]),
    ("model=5", ["config key 'model' expects dict"]),
])
def test_bad_config_keys_and_types(override, needles, tmp_path):
    proc = run_py(["--env", SYSTEM, "--set", override, "--set", f"runs_dir={tmp_path}"])
    assert_one_line_error(proc, *needles)
    assert not any(tmp_path.iterdir())


def test_config_file_with_unknown_key_or_wrong_type_names_it(tmp_path):
    text = (CONFIG_DIR / f"{SYSTEM}.yaml").read_text()
    for bad, needle in (("trian: {lr: 0.1}\n", "unknown config key 'trian'"),
                        ("train: {lr: [1, 2]}\n", "config key 'train.lr' expects float"),
                        ("profiles: 5\n", f"{SYSTEM}.yaml"),
                        ("data: {n_train: 1, n_train: 2}\n", f"{SYSTEM}.yaml")):
        (tmp_path / f"{SYSTEM}.yaml").write_text(text + bad)
        with pytest.raises(UserError) as e:
            load_config(SYSTEM, config_dir=tmp_path)
        assert needle in str(e.value) and "\n" not in str(e.value), (bad, str(e.value))


@pytest.mark.slow
def test_resume_from_another_methods_checkpoint(trained):
    tmp, runs = trained
    shutil.copy(runs["erm"] / "checkpoints" / "last.ckpt", runs["lowrank"] / "checkpoints" / "last.ckpt")
    proc = _resume(tmp)
    assert_one_line_error(proc, str(runs["lowrank"] / "checkpoints" / "last.ckpt"), "another run",
                          "method is 'erm' there, 'lowrank' here")


@pytest.mark.slow
def test_resume_from_a_damaged_checkpoint(trained):
    tmp, runs = trained
    last = runs["erm"] / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    proc = _resume(tmp, "method=erm")
    assert_one_line_error(proc, str(last), "damaged or not a checkpoint")


@pytest.mark.slow
def test_resume_from_another_systems_checkpoint(trained, tmp_path):
    tmp, runs = trained
    cfg = tiny_config("gray_scott", tmp_path, "train.max_steps=2", "train.val_every=2", own_data=True)
    foreign = run_dir_for(cfg, resume=False)[0] / "checkpoints" / "last.ckpt"
    foreign.parent.mkdir(parents=True)
    shutil.copy(runs["lowrank"] / "checkpoints" / "best.ckpt", foreign)
    proc = run_py(["--env", "gray_scott", "--no-progress", "--resume",
                   *tiny_sets("gray_scott", tmp_path, "train.max_steps=2", "train.val_every=2")])
    assert_one_line_error(proc, str(foreign), "system_name is 'lotka_volterra' there, 'gray_scott' here")
    assert not (tmp_path / "data").exists()  # refused before generating anything


@pytest.mark.slow
def test_evaluate_a_checkpoint_of_another_system(trained):
    tmp, runs = trained
    proc = run_py(["evaluate", "--env", "gray_scott", "--ckpt", str(runs["lowrank"] / "checkpoints" / "best.ckpt")])
    assert_one_line_error(proc, "best.ckpt", "holds a lotka_volterra model, not gray_scott")


# ------------------------------------------------------------------------------ damaged data files
def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _wrong_shape(path):
    with h5py.File(path, "r+") as f:
        states = f["states"][()]
        del f["states"]
        f.create_dataset("states", data=states[:, :, :3])


def _nan(path):
    with h5py.File(path, "r+") as f:
        f["states"][0, 0, 1, 0] = np.nan


@pytest.mark.slow
def test_damaged_cache_files_are_named_and_regenerated(tmp_path):
    cfg = tiny_config(SYSTEM, tmp_path, own_data=True)  # its files are damaged: never the shared cache
    system = system_of(cfg)
    paths = ensure_dataset(system, cfg.data, progress=False)
    good = {s: load_split(p).states for s, p in paths.items()}
    damage = {"train": (_truncate, "unreadable"), "val": (_wrong_shape, "dataset 'states' has shape"),
              "test": (_nan, "non-finite states (1 NaN/inf values in environment 0)")}
    for split, (fn, _) in damage.items():
        fn(paths[split])
    proc = run_py(["generate", "--env", SYSTEM, *tiny_sets(SYSTEM, tmp_path)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    warnings = [line for line in lines if "regenerating" in line]
    assert len(warnings) == 3, proc.stderr
    threads = [line for line in lines if line.startswith("torch threads: ")]
    assert len(threads) == 1, proc.stderr
    # the rest is progress: the three damaged splits, and only they, generated again
    assert sorted(line.split(":")[0] for line in lines if line not in warnings + threads) == \
        sorted(f"generating {SYSTEM}/{split}" for split in damage), proc.stderr
    for split, (_, reason) in damage.items():
        (line,) = [w for w in warnings if str(paths[split]) in w]
        assert reason in line and "regenerating" in line, line
        assert torch.equal(load_split(paths[split]).states, good[split])
