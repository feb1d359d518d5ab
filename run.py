"""Entry point: ``python run.py --env gray_scott`` (see ``python run.py --help``)."""

import sys
from pathlib import Path

# `python run.py` puts this folder first on the path, where the folders envs/ and datasets/ would
# shadow installed packages of those names (Hugging Face's datasets): leads is imported from its
# installation (setup.sh: editable), as with `python -P`.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

if __name__ == "__main__":
    from leads.threads import prefer_sleeping_waits

    prefer_sleeping_waits()  # OpenMP reads it when torch is first imported (by leads.cli)
    from leads.cli import main

    sys.exit(main())
