"""Data generation killed (SIGKILL) at random points, then rerun: no damaged file is ever at a
final split name, and the finished dataset equals an uninterrupted run's bit for bit."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from fakes import LinearDecay
from faults import child_env

from leads.datasets.cache import ensure_split
from leads.datasets.h5 import load_split

# Fault injection: real runs in subprocesses, killed, resumed, compared (-m slow; CI runs them).
pytestmark = pytest.mark.slow

DRIVER = Path(__file__).resolve().parent / "fault_datagen.py"


@pytest.mark.slow
def test_sigkill_during_generation_never_leaves_a_bad_file_and_reruns_give_the_same_data(tmp_path):
    # Every line of the HDF5 writer, 4 random lines of the cache and generator, 6 random times.
    proc = subprocess.run([sys.executable, str(DRIVER), str(tmp_path), "0", "4", "6"], env=child_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    kills = report["kills"]
    assert report["reference"] == "exit 0" and report["n_files"] == 9
    assert all(k["status"] in ("signal 9", "exit 0") for k in kills), kills  # never hung on a dead writer's lock
    killed = [k for k in kills if k["status"] == "signal 9"]
    assert len(killed) >= len(kills) // 2, kills  # most kills interrupted real work
    assert any(k["temp_files"] for k in killed)  # some were mid-write
    assert [k for k in kills if k["invalid_final_files"]] == []
    assert report["final"] == "exit 0" and report["final_invalid"] == [] and report["final_valid"] == 9
    assert report["final_temps"] == []  # the reruns removed what the killed writers left
    assert report["differences"] == []


def test_full_disk_while_writing_leaves_no_file_and_a_rerun_recovers(tmp_path, monkeypatch):
    cfg = {"dir": str(tmp_path), "n_train": 2, "n_val": 1, "n_test": 1, "n_adapt": 1, "n_test_heldout": 1}
    system = LinearDecay()
    original = h5py.Group.create_dataset

    def full(self, name, *args, **kwargs):
        if name == "states":
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", full)
    with pytest.raises(OSError, match="No space left"):
        ensure_split(system, cfg, "train", progress=False)
    folder = next(tmp_path.rglob("*.h5.lock")).parent
    assert not list(folder.glob("*.h5")) and not list(folder.glob("*.tmp"))
    monkeypatch.setattr(h5py.Group, "create_dataset", original)
    path = ensure_split(system, cfg, "train", progress=False)
    assert load_split(path).states.shape[:2] == (3, 2)
