"""``python -m leads ...``: the same as ``python run.py ...`` (``--jobs`` starts each job so)."""

import sys
from pathlib import Path

# As run.py: the repository's folders envs/ and datasets/ must not shadow installed packages.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parents[1]:
    del sys.path[0]

from leads.threads import prefer_sleeping_waits  # noqa: E402

prefer_sleeping_waits()  # before torch is imported (by leads.cli)

from leads.cli import main  # noqa: E402

sys.exit(main())
