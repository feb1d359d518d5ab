#!/usr/bin/env bash
# Installs leads and its dev tools into the current Python.
# torch comes first: if none is installed, take the pinned CPU wheel when the index has it
# (seconds), otherwise the newest torch>=2.2; an existing torch (e.g. a CUDA build) is kept.
set -euo pipefail
cd "$(dirname "$0")"
PIP="python -m pip install -q --disable-pip-version-check"
if ! python -c "import torch" 2>/dev/null; then
    $PIP "torch==2.13.0" 2>/dev/null || $PIP "torch>=2.2"
fi
$PIP -e ".[dev]"
