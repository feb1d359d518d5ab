"""The leaderboard of one system, built from its result rows only.

One line per method: relative L2 in-domain, on each held-out set and in time extrapolation,
as mean ± std over seeds of each seed's mean over test trajectories (environment ``all``
rows), with adaptation cost. Where a (method, seed, split) was evaluated several times, the
latest evaluation counts. Ranked by the mean held-out relative L2 over the held-out sets that
every method with held-out rows has (methods without any come last); by in-domain relative L2
where no method has held-out rows (an in-domain protocol). Published numbers follow
in a separate block where the protocol matches (:mod:`leads.reporting.published`). The same rows always
give the same files, whatever their order.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leads.datasets.atomic import atomic_write_text
from leads.evaluation.metrics import mean_std
from leads.evaluation.scoring import METRICS
from leads.reporting.published import Published, published_for
from leads.reporting.results import ALL

NAMED_SETS = ("interp", "extrap")
PHYSICS_AWARE = ("APHYNITY", "GEPS-Phy")  # published methods that use part of the equations
MS = tuple[float, float]


@dataclass
class Line:
    method: str
    seeds: list[int]
    cells: dict[str, MS]  # "in_domain", held-out set names, "time_extrap" -> mean, std over seeds
    adapted_params: float
    adapt_seconds: float
    trained_params: float
    train_seconds: float
    heldout: float        # what the ranking uses
    param_error: float = math.nan  # identified physical parameters: mean relative error on held-out sets
    physics_aware: bool = False    # uses known terms of the equations
    external: bool = False         # predictions scored from another codebase (run.py score)


@dataclass
class Ours:
    """One method's rows beside a published entry, in the entry's metric (and its ``also_metric``)."""
    method: str
    profile: str                      # the profile its rows followed (one of the entry's settings)
    seeds: int
    in_domain: MS
    new_envs: MS | None
    train_steps: list[int]            # the training budgets of its runs (a reduced one must be visible)
    train_seconds: float              # mean over seeds
    adapt_seconds: float              # mean over seeds and held-out sets
    also: tuple[MS, MS | None] | None = None  # in-domain, new environments in ``entry.also_metric``
    train_cpu_seconds: float = math.nan  # mean over seeds (rows written before it was recorded: nan)


@dataclass
class PublishedBlock:
    entry: Published
    heldout_set: str | None
    ours: list[Ours]


@dataclass
class Leaderboard:
    system: str
    profile: str | None
    shots: int
    sets: list[str]
    rank_sets: list[str]
    lines: list[Line]
    published: list[PublishedBlock] = field(default_factory=list)
    n_rows: int = 0
    runs: list[str] = field(default_factory=list)
    commits: list[str] = field(default_factory=list)


def _latest(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the latest evaluation of each (method, seed, split, shots)."""
    def key(r: dict[str, Any]) -> tuple:
        return r["method"], r["seed"], r["split"], r.get("shots")

    def when(r: dict[str, Any]) -> tuple[str, str]:
        return str(r.get("time", "")), str(r.get("eval_id", ""))

    best: dict[tuple, tuple[str, str]] = {}
    for r in rows:
        best[key(r)] = max(best.get(key(r), ("", "")), when(r))
    return [r for r in rows if when(r) == best[key(r)]]


def _select(rows: list[dict[str, Any]], system: str, profile: str | None, shots: int) -> list[dict[str, Any]]:
    keep = [r for r in rows if r.get("system") == system and (profile is None or r.get("profile") == profile)
            and (r.get("kind") == "in_domain" or (r.get("kind") == "heldout" and r.get("shots") == shots))]
    return _latest(keep)


def _per_seed(rows: list[dict[str, Any]], split: str, metric: str) -> dict[tuple[str, int], float]:
    return {(r["method"], r["seed"]): r["value"] for r in rows
            if r["split"] == split and r["metric"] == metric and r["environment"] == ALL}


def _over_seeds(values: dict[tuple[str, int], float], method: str) -> MS:
    v = [x for (m, _), x in sorted(values.items()) if m == method]
    return mean_std(v) if v else (math.nan, math.nan)


def _mean(values: list[float]) -> float:
    v = [x for x in values if x is not None and not math.isnan(x)]
    return sum(v) / len(v) if v else math.nan


def _order_sets(names: set[str]) -> list[str]:
    return [s for s in NAMED_SETS if s in names] + sorted(names - set(NAMED_SETS))


def build(rows: list[dict[str, Any]], system: str, profile: str | None = None, shots: int = 1) -> Leaderboard:
    """The leaderboard of ``system`` from ``rows`` (all profiles when ``profile`` is None)."""
    identified = _latest([r for r in rows if r.get("system") == system and r.get("kind") == "identification"
                          and (profile is None or r.get("profile") == profile) and r.get("shots") == shots
                          and r.get("environment") == ALL and r.get("metric") == "param_rel_error"])
    rows = _select(rows, system, profile, shots)
    methods = sorted({r["method"] for r in rows})
    sets = _order_sets({r["split"] for r in rows if r["kind"] == "heldout"})
    has = {m: {r["split"] for r in rows if r["method"] == m and r["kind"] == "heldout"} for m in methods}
    rank_sets = [s for s in sets if all(s in has[m] for m in methods if has[m])]
    columns = {"in_domain": _per_seed(rows, "in_domain", "rel_l2"),
               **{s: _per_seed(rows, s, "rel_l2") for s in sets},
               "time_extrap": _per_seed(rows, "in_domain", "rel_l2_extrap")}
    lines = []
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        held = [r for r in mine if r["kind"] == "heldout" and r["environment"] == ALL and r["metric"] == "rel_l2"]
        one_per_seed = {r["seed"]: r for r in sorted(mine, key=lambda r: (r["seed"], r["split"]))}
        cells = {c: _over_seeds(v, m) for c, v in columns.items()}
        lines.append(Line(
            method=m, seeds=sorted({r["seed"] for r in mine}), cells=cells,
            adapted_params=_mean([r.get("n_adapted_params") for r in held]),
            adapt_seconds=_mean([r.get("adapt_seconds") for r in held]),
            trained_params=_mean([r.get("n_trained_params") for r in one_per_seed.values()]),
            train_seconds=_mean([r.get("train_seconds") for r in one_per_seed.values()]),
            heldout=_mean([cells[s][0] for s in rank_sets]) if rank_sets else math.nan,
            param_error=_mean([r["value"] for r in identified if r["method"] == m]),
            physics_aware=any(r.get("physics_aware") for r in mine),
            external=any(r.get("external") for r in mine)))

    def rank_key(ln: Line) -> tuple[bool, float, str]:
        score = ln.heldout if sets else ln.cells["in_domain"][0]  # an in-domain protocol ranks in-domain
        return math.isnan(score), 0.0 if math.isnan(score) else score, ln.method

    lines.sort(key=rank_key)
    return Leaderboard(system, profile, shots, sets, rank_sets, lines, _published(rows, system, shots),
                       n_rows=len(rows), runs=sorted({r["run_id"] for r in rows}),
                       commits=sorted({str(r.get("git_commit")) for r in rows}))


def _published(rows: list[dict[str, Any]], system: str, shots: int) -> list[PublishedBlock]:
    blocks = []
    for entry in published_for(system):
        if entry.shots is not None and entry.shots != shots:
            continue
        same = [r for r in rows if r.get("profile") in entry.settings and r.get("train_envs_key") == entry.train_key()
                and math.isclose(r.get("dt", math.nan), entry.dt) and math.isclose(r.get("horizon", math.nan),
                                                                               entry.horizon)]
        held_key = entry.heldout_key()
        matched = sorted({r["split"] for r in same if r["kind"] == "heldout" and r.get("set_envs_key") == held_key})
        if not same or (held_key is not None and not matched):
            continue
        held = matched[0] if matched else None
        ours = []
        for m in sorted({r["method"] for r in same if r["split"] == "in_domain"}):
            mine = [r for r in same if r["method"] == m]
            runs = {r["seed"]: r for r in mine if r["split"] == "in_domain"}
            in_domain, new_envs = _pair(mine, held, entry.metric)
            ours.append(Ours(
                method=m, profile=str(mine[0].get("profile")), seeds=len(runs), in_domain=in_domain, new_envs=new_envs,
                train_steps=sorted({int(r["train_steps"]) for r in runs.values() if r.get("train_steps")}),
                train_seconds=_mean([r.get("train_seconds") for r in runs.values()]),
                adapt_seconds=_mean([r.get("adapt_seconds") for r in mine if r["split"] == held
                                     and r["environment"] == ALL and r["metric"] == entry.metric]),
                also=_pair(mine, held, entry.also_metric) if entry.also_metric else None,
                train_cpu_seconds=_mean([r.get("train_cpu_seconds") for r in runs.values()])))
        blocks.append(PublishedBlock(entry, held, ours))
    return blocks


def _pair(rows: list[dict[str, Any]], held: str | None, metric: str) -> tuple[MS, MS | None]:
    """One method's (in-domain, new environments) in ``metric``, mean ± std over seeds."""
    method = rows[0]["method"]
    return (_over_seeds(_per_seed(rows, "in_domain", metric), method),
            _over_seeds(_per_seed(rows, held, metric), method) if held else None)


# ---------------------------------------------------------------------------------- output
def _fmt(ms: MS | None, scale: float = 1.0) -> str:
    if ms is None or math.isnan(ms[0]):
        return "—"
    mean, std = ms[0] * scale, ms[1]
    return f"{mean:.3e}" if std is None or math.isnan(std) else f"{mean:.3e} ± {std * scale:.1e}"


def _fmt_num(x: float, spec: str) -> str:
    return "—" if math.isnan(x) else format(x, spec)


def _headers(lb: Leaderboard) -> list[str]:
    return ["in-domain", *lb.sets, "time extrap."]


def to_markdown(lb: Leaderboard) -> str:
    cols = ["in_domain", *lb.sets, "time_extrap"]
    identifies = any(not math.isnan(ln.param_error) for ln in lb.lines)
    head = ["rank", "method", "seeds", *_headers(lb), "params adapted / env", "adapt s", "params trained", "train s"]
    head += ["physical params rel. error"] if identifies else []
    ranked = (f"the mean held-out relative L2 over: {', '.join(lb.rank_sets)}" if lb.rank_sets else
              "in-domain relative L2 (no held-out sets)" if not lb.sets else
              "the mean held-out relative L2 (no held-out set common to all methods)")
    out = [f"# Leaderboard: {lb.system} (profile {lb.profile or 'any'}, k={lb.shots} adaptation "
           "trajectories per new environment)", "",
           "Relative L2 error, mean ± std over seeds of each seed's mean over test trajectories. In-domain "
           "and held-out sets on (0, T]; time extrapolation on (T, 2T] in the training environments. "
           f"Ranked by {ranked}.", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, ln in enumerate(lb.lines, 1):
        cells = [_fmt(ln.cells[c]) for c in cols]
        name = f"{ln.method} (external)" if ln.external else ln.method
        out.append("| " + " | ".join([str(i), name, str(len(ln.seeds)), *cells,
                                      _fmt_num(ln.adapted_params, ".0f"), _fmt_num(ln.adapt_seconds, ".1f"),
                                      _fmt_num(ln.trained_params, ".0f"), _fmt_num(ln.train_seconds, ".0f"),
                                      *([_fmt_num(ln.param_error, ".2%")] if identifies else [])]) + " |")
    if any(ln.external for ln in lb.lines):
        out += ["", "External rows are predictions made by another codebase from `run.py export`'s inputs and "
                "scored by `run.py score` with the same metrics; their training and adaptation costs are not known."]
    if any(ln.physics_aware for ln in lb.lines):
        out += ["", "Physics-aware rows (`phys[terms]`) use those known terms of the equations with per-environment "
                "physical parameters, plus the method as a learned residual (docs/physics.md); the parameter "
                "error is that of the parameters identified on the held-out sets (mean over parameters, "
                "environments, sets and seeds)."]
    for block in lb.published:
        out += ["", *_published_markdown(block)]
    if not lb.published:
        known = ", ".join(f"{p.protocol} (profile {', '.join(p.settings) or 'none: not reproduced'})"
                          for p in published_for(lb.system)) or "none"
        out += ["", f"No published numbers match these rows' protocol (published protocols for {lb.system}: {known})."]
    out += ["", f"Built from {lb.n_rows} rows of {len(lb.runs)} runs; commits: {', '.join(lb.commits) or '—'}."]
    return "\n".join(out) + "\n"


def _published_markdown(block: PublishedBlock) -> list[str]:
    e = block.entry
    new = f"new environments ({block.heldout_set})" if block.heldout_set else "new environments"
    profile = block.ours[0].profile if block.ours else e.profile
    lines = [f"## Published results: {e.protocol} protocol", "",
             f"Source: {e.source}. Same protocol as these rows (profile {profile}, same environments, "
             f"dt={e.dt:g}, T={e.horizon:g}). Matched against {e.settings.get(profile, 'the published protocol')}. "
             f"Metric: `{e.metric}`. {e.note}.", "",
             f"| method | in-domain | {new} | source |", "|---|---|---|---|"]
    for method, (ind, held) in e.numbers.items():
        kind = "published, physics-aware" if method in PHYSICS_AWARE else "published"
        lines.append(f"| {method} | {_fmt(ind, e.scale)} | {_fmt(held, e.scale)} | {kind} |")
    for o in block.ours:
        budget = "/".join(str(n) for n in o.train_steps) or "?"
        cpu = "" if math.isnan(o.train_cpu_seconds) else f" ({o.train_cpu_seconds:.0f} CPU s)"
        cost = f"{o.train_seconds:.0f} s training{cpu}" + ("" if math.isnan(o.adapt_seconds) else
                                                      f" + {o.adapt_seconds:.0f} s adaptation")
        source = f"ours, {o.seeds} seed(s), {budget} training steps, {cost} per run"
        lines.append(f"| {o.method} | {_fmt(o.in_domain)} | {_fmt(o.new_envs)} | {source} |")
        if o.also is not None:
            lines.append(f"| {o.method} ({e.also_metric}: {METRICS[e.also_metric]}) | {_fmt(o.also[0])} | "
                         f"{_fmt(o.also[1])} | {source} |")
    return lines


def table(lb: Leaderboard) -> tuple[list[str], list[list[Any]]]:
    """Header and rows with plain numbers (CSV, W&B)."""
    cols = ["in_domain", *lb.sets, "time_extrap"]
    head = ["rank", "method", "seeds"] + [f"{c}_{s}" for c in cols for s in ("mean", "std")] + \
        ["heldout_mean", "params_adapted_per_env", "adapt_seconds", "params_trained", "train_seconds",
         "physics_aware", "param_rel_error"]
    data = [[i, ln.method, len(ln.seeds), *[v for c in cols for v in ln.cells[c]], ln.heldout, ln.adapted_params,
             ln.adapt_seconds, ln.trained_params, ln.train_seconds, ln.physics_aware, ln.param_error]
            for i, ln in enumerate(lb.lines, 1)]
    return head, data


def to_csv(lb: Leaderboard) -> str:
    head, data = table(lb)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(head)
    for row in data:
        writer.writerow(["" if isinstance(v, float) and math.isnan(v) else (f"{v:.6g}" if isinstance(v, float) else v)
                         for v in row])
    return buf.getvalue()


def file_stem(lb: Leaderboard) -> str:
    """``leaderboard_<profile>[_k<shots>]``: boards of different protocols never share a file."""
    return f"leaderboard_{lb.profile or 'all'}" + ("" if lb.shots == 1 else f"_k{lb.shots}")


def write(lb: Leaderboard, directory: Path) -> tuple[Path, Path]:
    """``<file_stem>.md`` and ``.csv`` in ``directory`` (replaced atomically)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    stem = file_stem(lb)
    for name, text in ((f"{stem}.md", to_markdown(lb)), (f"{stem}.csv", to_csv(lb))):
        paths.append(atomic_write_text(directory / name, text))
    return paths[0], paths[1]


def wandb_table(lb: Leaderboard) -> Any:
    import wandb

    head, data = table(lb)
    return wandb.Table(columns=head, data=[[None if isinstance(v, float) and math.isnan(v) else v for v in row]
                                           for row in data])
