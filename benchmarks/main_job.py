"""Wall time of the main job, phase by phase: the profile of a run as a user starts it.

    python benchmarks/main_job.py [--env gray_scott] [--fresh-data] [--set KEY=VALUE ...]

Runs ``python run.py --env ENV`` in a subprocess with plain progress lines
(``LEADS_PROGRESS=lines``), stamps every line with the seconds since start, and reports the
total wall time and each phase's span (data generation, training, scoring, adaptation, figures)
from its first line to the next phase's. Runs, results and W&B files go to a temporary directory; the
data cache is the repository's ``data/`` unless ``--fresh-data`` (then generation is timed too).
Writes ``benchmarks/out/main_job_<env>.json``. Run it on an idle machine and state the load.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, table, write_json

PHASES = [("data generation", re.compile(r"^generating ")), ("training", re.compile(r"^training ")),
          ("in-domain scoring", re.compile(r"^scoring in-domain")), ("adaptation", re.compile(r"^adapting ")),
          ("held-out scoring", re.compile(r"^scoring (?!in-domain)")), ("figures", re.compile(r"^writing figures"))]


def run(env: str, overrides: list[str], fresh_data: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data" if fresh_data else ROOT / "data"
        argv = [sys.executable, str(ROOT / "run.py"), "--env", env, f"--runs_dir={tmp}/runs",
                f"--results_dir={tmp}/results", f"--data.dir={data}", *(f"--{o}" for o in overrides)]
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "LEADS_PROGRESS": "lines"})
        stamped = [(time.perf_counter() - start, line.rstrip("\n")) for line in proc.stderr]
        stdout = proc.stdout.read()
        if proc.wait() != 0:
            raise SystemExit("run.py failed:\n" + "\n".join(line for _, line in stamped[-20:]))
        total = time.perf_counter() - start
    # Each interval between two lines belongs to the phase of the line that opened it (a phase
    # announces itself when it starts); before the first line: start-up (imports, config).
    phases: dict[str, float] = {}
    current, since = "start-up", 0.0
    for stamp, line in [*stamped, (total, "")]:
        phases[current] = phases.get(current, 0.0) + stamp - since
        current = next((name for name, pattern in PHASES if pattern.search(line)), current)
        since = stamp
    return {"env": env, "overrides": overrides, "fresh_data": fresh_data, "total_s": total, "phases_s": phases,
            "summary": stdout.strip().splitlines()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="gray_scott")
    p.add_argument("--fresh-data", action="store_true", help="generate the data in a temporary directory")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override")
    args = p.parse_args()
    out = run(args.env, args.set, args.fresh_data)
    rows = [[name, f"{secs:.0f}"] for name, secs in out["phases_s"].items()]
    rows.append(["total (wall)", f"{out['total_s']:.0f}"])
    print(table(["phase", "seconds"], rows))
    print("\n".join(out["summary"]))
    print(f"wrote {write_json(f'main_job_{args.env}.json', out)}")


if __name__ == "__main__":
    main()
