"""Test helpers (tests/fakes.py, tests/tiny.py, ...) importable by name; leads itself is imported
from its installation (setup.sh installs it editable)."""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

import os  # noqa: E402

import pytest  # noqa: E402

# Tests never talk to W&B servers; the read-back test opts into offline mode itself.
os.environ["WANDB_MODE"] = "disabled"
os.environ["WANDB_SILENT"] = "true"

# Under pytest-xdist (`-n auto`) each worker is a process of its own: one torch thread each, as two
# processes with two threads each on two cores run many times slower. Set before torch is imported.
# (The environment variables reach the processes tests start; set_num_threads covers a torch that a
# plugin may have imported already.)
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")


def pytest_configure(config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def shared_tiny_data(tmp_path_factory) -> Path:
    """The data cache of tiny.tiny_config, one per pytest run: under pytest-xdist, in the
    directory the workers' temporary directories share."""
    import tiny

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    tiny.SHARED_DATA = root / "shared-tiny-data"
    return tiny.SHARED_DATA
