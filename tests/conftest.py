"""Make the repository's packages and tests/fakes.py importable without installing anything."""

import sys
from pathlib import Path

for _p in (Path(__file__).resolve().parent, Path(__file__).resolve().parents[1]):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import os  # noqa: E402

# Tests never talk to W&B servers; the read-back test opts into offline mode itself.
os.environ["WANDB_MODE"] = "disabled"
os.environ["WANDB_SILENT"] = "true"
