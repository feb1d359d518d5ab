"""Accuracy-versus-compute figures of a protocol's runs, with the published numbers.

    python benchmarks/curves.py --protocol geps_gray_scott_cpu [--runs-dir runs]
        [--out docs/figures/curves_<protocol>.png]

Reads ``curve.jsonl`` of every run of the protocol's system and profile under ``--runs-dir``
(one line per validation: step, training seconds, validation error, and the test split's scores
when the run was trained with ``--test-curve``), and draws validation and test error against
training steps and training seconds (CPU seconds where every run recorded them, wall seconds
otherwise), one colour per method, one line per seed. Published
numbers of the protocol's matching entries (in-domain, in the entry's metric) are dashed
horizontal lines on the test panels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml
from common import ROOT

from leads.config.schema import RunConfig
from leads.models.physics import method_label
from leads.reporting import plots
from leads.reporting.published import published_for
from leads.reproduce import load_protocols
from leads.training.curves import read_curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", required=True)
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    protocol = load_protocols()[args.protocol]
    entries = [p for p in published_for(protocol.system) if protocol.profile in p.settings]
    metric = entries[0].metric if entries else "rel_l2"
    curves: dict[str, list] = {}
    for run_dir in sorted((args.runs_dir / protocol.system).glob("*")):
        cfg_path = run_dir / "config.yaml"
        if not cfg_path.is_file():
            continue
        cfg = RunConfig.of(yaml.safe_load(cfg_path.read_text()))
        curve = read_curve(run_dir)
        if cfg.profile != protocol.profile or not curve:
            continue
        curves.setdefault(method_label(cfg), []).append(curve)  # hybrids apart from purely learned runs
    published = {f"{m} ({e.protocol})": ind[0] * e.scale for e in entries for m, (ind, _) in e.numbers.items()
                 if ind is not None}
    title = f"{protocol.name}: {protocol.system}, profile {protocol.profile}; test {metric} in-domain"
    out = args.out or ROOT / "docs" / "figures" / f"curves_{protocol.name}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    plots.save(plots.compute_curve_figure(curves, metric, published, title), out)
    print(f"{sum(len(v) for v in curves.values())} runs of {', '.join(sorted(curves)) or 'no method'}: {out}")


if __name__ == "__main__":
    main()
