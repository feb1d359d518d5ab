"""Entry point: ``python run.py --env gray_scott`` (see ``python run.py --help``)."""

import sys

from leads.cli import main

if __name__ == "__main__":
    sys.exit(main())
