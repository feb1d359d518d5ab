"""The leaderboard of one protocol, built from its result rows only.

A table covers one protocol (``leads.reporting.keys``: the same data, environments and
metric), so every profile that follows it (a published setting and its CPU recipes) and
every external model scored under any of them appear together, each line with its profile
and training budget. One line per (method, configuration): rows of two configurations are
never mixed in one line. A line's numbers are the mean ± std over seeds of each seed's mean
over test trajectories (environment ``all`` rows): relative L2 in-domain, on each held-out set
and in time extrapolation, with adaptation cost.

Which rows count: each evaluation (run, configuration, kind, split, shots, set) counts once,
its latest rows; of several runs of one configuration and seed, the latest run. Every row
left out is counted in the table's footer with the reason (another protocol, other shots,
replaced by a later evaluation, a held-out set of the same name with other environments).

Ranking: by the mean held-out relative L2 over the held-out sets every line with held-out
rows has (lines without any come last), or in-domain relative L2 where no line has held-out
rows. A line any of whose forecasts diverged (became non-finite; scored up to divergence)
ranks below every line none of whose forecasts did. Published numbers follow in a separate
block where the protocol matches (:mod:`leads.reporting.published`). The same rows always give
the same files, whatever their order.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leads.datasets.atomic import atomic_write_text
from leads.evaluation.metrics import mean_std
from leads.evaluation.scoring import METRICS
from leads.reporting.keys import (
    ProtocolId,
    derive_keys,
    identity,
    profile_protocol_key,
    protocol_of,
    protocols_of,
)
from leads.reporting.published import Published, published_for
from leads.reporting.results import ALL

if TYPE_CHECKING:
    from leads.config.schema import RunConfig

NAMED_SETS = ("interp", "extrap")
PHYSICS_AWARE = ("APHYNITY", "GEPS-Phy")  # published methods that use part of the equations
MS = tuple[float, float]


@dataclass(frozen=True)
class Divergence:
    """Forecasts of a cell that became non-finite: how many of how many, and the earliest time."""

    n_diverged: int
    n_traj: int
    first_at: float

    def __str__(self) -> str:
        return f"{self.n_diverged}/{self.n_traj} from t={self.first_at:g}"


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
    param_error_max: float = math.nan  # and the largest, over environments, parameters, sets and seeds
    physics_aware: bool = False    # uses known terms of the equations
    external: bool = False         # predictions scored from another codebase (run.py score)
    config_key: str = ""
    profiles: list[str] = field(default_factory=list)
    train_steps: list[int] = field(default_factory=list)  # the steps each run trained
    train_cpu_seconds: float = math.nan
    max_cpu_seconds: float = math.nan  # the CPU budget of its runs (train.max_cpu_seconds), if any
    declared: dict[str, float] = field(default_factory=dict)  # external: what the user declared
    diverged: dict[str, Divergence] = field(default_factory=dict)  # column -> forecasts that diverged
    keys_derived: bool = False     # rows written before configuration keys were recorded
    label: str = ""                # the method, with what tells it apart from the table's other lines

    @property
    def any_diverged(self) -> bool:
        return bool(self.diverged)

    def budget(self) -> str:
        """The training budget: steps trained (and CPU seconds), or what an external model declared."""
        if self.external:
            told = [f"{self.declared['train_steps']:.0f} steps" if "train_steps" in self.declared else "",
                    f"{self.declared['train_seconds']:.4g} s" if "train_seconds" in self.declared else ""]
            told = [t for t in told if t]
            return f"declared: {', '.join(told)}" if told else "not declared"
        if not self.train_steps:
            return "—"
        steps = ("/".join(str(s) for s in sorted(set(self.train_steps))) if len(set(self.train_steps)) <= 3 else
                 f"{min(self.train_steps)}-{max(self.train_steps)}")
        out = f"{steps} steps"
        if not math.isnan(self.train_cpu_seconds):
            out += f", {self.train_cpu_seconds:.0f} CPU s"
        if not math.isnan(self.max_cpu_seconds):
            out += f" (budget {self.max_cpu_seconds:.0f})"
        return out


@dataclass
class Ours:
    """One line beside a published entry, in the entry's metric (and its ``also_metric``)."""
    method: str
    profile: str                      # the profile(s) its rows followed (one of the entry's settings)
    seeds: int
    in_domain: MS
    new_envs: MS | None
    train_steps: list[int]            # the training budgets of its runs (a reduced one must be visible)
    train_seconds: float              # mean over seeds
    adapt_seconds: float              # mean over seeds and held-out sets
    also: tuple[MS, MS | None] | None = None  # in-domain, new environments in ``entry.also_metric``
    train_cpu_seconds: float = math.nan  # mean over seeds (rows written before it was recorded: nan)
    line: Line | None = None


@dataclass
class PublishedBlock:
    entry: Published
    heldout_set: str | None
    ours: list[Ours]


@dataclass
class Leaderboard:
    system: str
    protocol: ProtocolId | None
    shots: int
    sets: list[str]
    rank_sets: list[str]
    lines: list[Line]
    published: list[PublishedBlock] = field(default_factory=list)
    n_rows: int = 0
    runs: list[str] = field(default_factory=list)
    commits: list[str] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> rows

    @property
    def profile(self) -> str | None:
        """The protocol's name (its base profile); None for a table of every protocol."""
        return None if self.protocol is None else self.protocol.name


# ---------------------------------------------------------------------------------- selection
def resolve_protocol(rows: Iterable[Mapping[str, Any]], system: str, profile: str | None = None,
                     cfg: Mapping[str, Any] | None = None) -> ProtocolId | None:
    """The protocol a table of ``system`` is for.

    With ``cfg`` (a run config): its protocol, ``--set`` overrides included. Where that is the
    protocol of its profile as configured and no row follows it, but rows of that profile were
    written with data settings of their own (``--set data.n_test=...``), the protocol of the most
    recent of them: ``leaderboard`` then shows the rows a user has, and says which settings they
    are. With ``profile`` alone, the same for that profile. None (neither): every protocol."""
    rows = [r for r in derive_keys(r for r in rows if r.get("system") == system)]
    keys = {r["protocol_key"] for r in rows}
    if cfg is not None:
        own = protocol_of(cfg)
        profile = cfg.profile
        if own.key in keys or own.key != profile_protocol_key(system, profile):
            return own
    if profile is None:
        return None
    configured = profile_protocol_key(system, profile)
    mine = sorted((str(r.get("time", "")), r["protocol_key"]) for r in rows if r.get("profile") == profile)
    key = configured if configured in keys or not mine else mine[-1][1]
    return _named(system, key or f"profile:{profile}", profile)


def _named(system: str, key: str, profile: str | None = None) -> ProtocolId:
    for p in protocols_of(system):
        if p.key == key:
            return p
    name = profile or "unknown"
    return ProtocolId(system, key, name if key.startswith("profile:") else f"{name}-{key[:6]}",
                      (name,) if profile else ())


def _protocol_names(system: str, rows: list[dict[str, Any]]) -> dict[str, str]:
    """protocol key -> the name of its table (``run.py leaderboard --profile <name>``, with the
    same ``--set`` data settings where it is not a profile's as configured)."""
    profiles: dict[str, set[str]] = {}
    for r in rows:
        profiles.setdefault(r["protocol_key"], set()).add(str(r.get("profile")))
    return {k: _named(system, k, min(p)).name for k, p in profiles.items()}


def _latest_evaluations(rows: list[dict[str, Any]], left: Counter) -> list[dict[str, Any]]:
    """The latest rows of each evaluation, and of each (line, seed) the latest run's."""
    def when(r: dict[str, Any]) -> tuple[str, str]:
        return str(r.get("time", "")), str(r.get("eval_id", ""))

    latest: dict[tuple, tuple[str, str]] = {}
    for r in rows:
        latest[identity(r)] = max(latest.get(identity(r), ("", "")), when(r))
    kept = []
    for r in rows:
        if when(r) == latest[identity(r)]:
            kept.append(r)
        else:
            left["replaced by a later evaluation of the same run (written before evaluations replaced theirs)"] += 1
    newest_run: dict[tuple, tuple[str, str]] = {}
    for r in kept:
        key = (r["method"], r["config_key"], r.get("seed"))
        newest_run[key] = max(newest_run.get(key, ("", "")), (str(r.get("time", "")), str(r.get("run_id"))))
    out = []
    for r in kept:
        if newest_run[(r["method"], r["config_key"], r.get("seed"))][1] == str(r.get("run_id")):
            out.append(r)
        else:
            left["of an earlier run of the same configuration and seed (the latest run counts)"] += 1
    return out


def _select(rows: list[dict[str, Any]], system: str, protocol: ProtocolId | None, shots: int,
            left: Counter) -> list[dict[str, Any]]:
    """Rows of the table: in-domain, held-out and identification rows of ``protocol`` with
    ``shots``; what is left out is counted in ``left`` with its reason."""
    keep = []
    names = _protocol_names(system, rows) if protocol is not None else {}
    for r in rows:
        if r.get("system") != system:
            continue
        if protocol is not None and r["protocol_key"] != protocol.key:
            name = names[r["protocol_key"]]
            configured = any(p.name == name for p in protocols_of(system))
            how = (f"its own table: `run.py leaderboard --profile {name}`" if configured else
                   f"profile {r.get('profile')} with other data or system settings: `run.py leaderboard --profile "
                   f"{r.get('profile')}` with the same --set")
            left[f"of protocol {name} ({how})"] += 1
            continue
        kind = r.get("kind")
        if kind == "in_domain" or (kind in ("heldout", "identification") and r.get("shots") == shots):
            keep.append(r)
        elif kind in ("heldout", "identification"):
            left[f"adapted with {r.get('shots')} trajectories per environment (`--shots {r.get('shots')}`)"] += 1
        # probe rows are not leaderboard numbers: not counted as left out
    return _latest_evaluations(keep, left)


def _one_set_per_name(rows: list[dict[str, Any]], left: Counter) -> list[dict[str, Any]]:
    """Held-out columns are named sets: where rows name one set with different environments,
    the environments most lines used keep the name, the others are left out."""
    uses: dict[str, Counter] = {}
    for r in rows:
        if r["kind"] != "in_domain":
            uses.setdefault(r["split"], Counter())[r.get("set_envs_key")] += 1
    chosen = {s: sorted(c.items(), key=lambda kv: (-kv[1], str(kv[0])))[0][0] for s, c in uses.items()}
    out = []
    for r in rows:
        if r["kind"] != "in_domain" and r.get("set_envs_key") != chosen[r["split"]]:
            left[f"on a held-out set named '{r['split']}' with other environments than this table's"] += 1
            continue
        out.append(r)
    return out


# ---------------------------------------------------------------------------------- lines
def _per_seed(rows: list[dict[str, Any]], split: str, metric: str) -> dict[int, dict[str, Any]]:
    return {r["seed"]: r for r in rows if r["split"] == split and r["metric"] == metric and r["environment"] == ALL}


def _over_seeds(rows: dict[int, dict[str, Any]]) -> MS:
    v = [r["value"] for _, r in sorted(rows.items()) if r["value"] is not None and not math.isnan(r["value"])]
    return mean_std(v) if v else (math.nan, math.nan)


def _divergence(rows: dict[int, dict[str, Any]]) -> Divergence | None:
    hit = [r for r in rows.values() if r.get("n_diverged")]
    if not hit:
        return None
    return Divergence(sum(int(r["n_diverged"]) for r in hit), sum(int(r.get("n_traj") or 0) for r in rows.values()),
                      min(float(r["diverged_at"]) for r in hit if r.get("diverged_at") is not None))


def _mean(values: Iterable[Any]) -> float:
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    return sum(v) / len(v) if v else math.nan


def _order_sets(names: set[str]) -> list[str]:
    return [s for s in NAMED_SETS if s in names] + sorted(names - set(NAMED_SETS))


def _line(method: str, mine: list[dict[str, Any]], sets: list[str], identified: list[dict[str, Any]]) -> Line:
    held = [r for r in mine if r["kind"] == "heldout" and r["environment"] == ALL and r["metric"] == "rel_l2"]
    scored = [r for r in mine if r["kind"] in ("in_domain", "heldout")]
    one_per_seed = {r["seed"]: r for r in sorted(scored, key=lambda r: (r["seed"], r["split"]))}
    columns = {"in_domain": _per_seed(mine, "in_domain", "rel_l2"), **{s: _per_seed(mine, s, "rel_l2") for s in sets},
               "time_extrap": _per_seed(mine, "in_domain", "rel_l2_extrap")}
    # Divergence over the whole test trajectory of each split: (0, 2T] says it all.
    diverged = {c: d for c in ("in_domain", *sets)
                if (d := _divergence(_per_seed(mine, c, "rel_l2_full"))) is not None}
    first = one_per_seed[min(one_per_seed)] if one_per_seed else mine[0]
    declared = {k: float(first[f"declared_{k}"]) for k in ("train_steps", "train_seconds")
                if first.get(f"declared_{k}") is not None}
    return Line(
        method=method, seeds=sorted({r["seed"] for r in scored}), cells={c: _over_seeds(v) for c, v in columns.items()},
        adapted_params=_mean(r.get("n_adapted_params") for r in held),
        adapt_seconds=_mean(r.get("adapt_seconds") for r in held),
        trained_params=_mean(r.get("n_trained_params") for r in one_per_seed.values()),
        train_seconds=_mean(r.get("train_seconds") for r in one_per_seed.values()),
        heldout=math.nan, param_error=_mean(r["value"] for r in identified if r["metric"] == "param_rel_error"),
        param_error_max=max((r["value"] for r in identified if r["metric"] == "param_rel_error_max"
                             and not math.isnan(r["value"])), default=math.nan),
        physics_aware=any(r.get("physics_aware") for r in mine), external=any(r.get("external") for r in mine),
        config_key=str(first["config_key"]), profiles=sorted({str(r.get("profile")) for r in mine}),
        train_steps=[int(r["train_steps"]) for r in one_per_seed.values() if r.get("train_steps")],
        train_cpu_seconds=_mean(r.get("train_cpu_seconds") for r in one_per_seed.values()),
        max_cpu_seconds=_mean(r.get("train_max_cpu_seconds") for r in one_per_seed.values()),
        declared=declared, diverged=diverged, keys_derived=any(r.get("keys_derived") for r in mine))


def _label(lines: list[Line]) -> None:
    """Each line's display name: the method; where one method has several lines, with its
    profile, and with its configuration key where that is not enough."""
    for ln in lines:
        same = [o for o in lines if o.method == ln.method]
        label = ln.method + (" (external)" if ln.external else "")
        if len(same) > 1:
            profile = "/".join(ln.profiles)
            label += f" [{profile}]"
            if sum("/".join(o.profiles) == profile for o in same) > 1:
                label += f" [config {ln.config_key[-8:]}]"
        ln.label = label


def build(rows: list[dict[str, Any]], system: str, protocol: ProtocolId | str | None = None,
          shots: int = 1) -> Leaderboard:
    """The leaderboard of ``system``'s ``protocol`` (a ``ProtocolId``, or a profile name: the
    protocol it follows, :func:`resolve_protocol`; None: every protocol, lines still one per
    configuration) from ``rows`` (rows written before protocol and configuration keys were
    recorded get them from their profile: ``leads.reporting.keys.derive_keys``)."""
    rows = derive_keys(r for r in rows if r.get("system") == system)
    if isinstance(protocol, str):
        protocol = resolve_protocol(rows, system, protocol)
    left: Counter = Counter()
    rows = _one_set_per_name(_select(rows, system, protocol, shots, left), left)
    scored = [r for r in rows if r["kind"] in ("in_domain", "heldout")]
    sets = _order_sets({r["split"] for r in scored if r["kind"] == "heldout"})
    lines = []
    for method, key in sorted({(r["method"], r["config_key"]) for r in scored}):
        mine = [r for r in rows if r["method"] == method and r["config_key"] == key]
        identified = [r for r in mine if r["kind"] == "identification" and r["environment"] == ALL
                      and r["metric"] in ("param_rel_error", "param_rel_error_max")]
        lines.append(_line(method, [r for r in mine if r["kind"] != "identification"], sets, identified))
    has = {id(ln): {s for s in sets if not math.isnan(ln.cells[s][0]) or s in ln.diverged} for ln in lines}
    rank_sets = [s for s in sets if all(s in has[id(ln)] for ln in lines if has[id(ln)])]
    for ln in lines:
        ln.heldout = _mean(ln.cells[s][0] for s in rank_sets) if rank_sets else math.nan
    _label(lines)

    def rank_key(ln: Line) -> tuple[bool, bool, float, str]:
        score = ln.heldout if sets else ln.cells["in_domain"][0]  # an in-domain protocol ranks in-domain
        return ln.any_diverged, math.isnan(score), 0.0 if math.isnan(score) else score, ln.label

    lines.sort(key=rank_key)
    return Leaderboard(system, protocol, shots, sets, rank_sets, lines, _published(rows, lines, system, shots),
                       n_rows=len(rows), runs=sorted({str(r["run_id"]) for r in rows}),
                       commits=sorted({str(r.get("git_commit")) for r in rows}), left_out=dict(left))


def _entry_protocol_keys(entry: Published) -> set[str]:
    return {k for p in entry.settings if (k := profile_protocol_key(entry.system, p)) is not None}


def _published(rows: list[dict[str, Any]], lines: list[Line], system: str,
               shots: int) -> list[PublishedBlock]:
    blocks = []
    for entry in published_for(system):
        if entry.shots is not None and entry.shots != shots:
            continue
        same = [r for r in rows if r["protocol_key"] in _entry_protocol_keys(entry)
                and r.get("train_envs_key") == entry.train_key()
                and math.isclose(r.get("dt", math.nan), entry.dt) and math.isclose(r.get("horizon", math.nan),
                                                                               entry.horizon)]
        held_key = entry.heldout_key()
        matched = sorted({r["split"] for r in same if r["kind"] == "heldout" and r.get("set_envs_key") == held_key})
        if not same or (held_key is not None and not matched):
            continue
        held = matched[0] if matched else None
        ours = []
        for ln in lines:
            mine = [r for r in same if r["method"] == ln.method and r["config_key"] == ln.config_key]
            runs = {r["seed"]: r for r in mine if r["split"] == "in_domain"}
            if not runs:
                continue
            in_domain, new_envs = _pair(mine, held, entry.metric)
            ours.append(Ours(
                method=ln.label, profile="/".join(ln.profiles), seeds=len(runs), in_domain=in_domain,
                new_envs=new_envs, train_steps=sorted({int(r["train_steps"]) for r in runs.values()
                                                       if r.get("train_steps")}),
                train_seconds=_mean(r.get("train_seconds") for r in runs.values()),
                adapt_seconds=_mean(r.get("adapt_seconds") for r in mine if r["split"] == held
                                    and r["environment"] == ALL and r["metric"] == entry.metric),
                also=_pair(mine, held, entry.also_metric) if entry.also_metric else None,
                train_cpu_seconds=_mean(r.get("train_cpu_seconds") for r in runs.values()), line=ln))
        if ours:
            blocks.append(PublishedBlock(entry, held, ours))
    return blocks


def _pair(rows: list[dict[str, Any]], held: str | None, metric: str) -> tuple[MS, MS | None]:
    """One line's (in-domain, new environments) in ``metric``, mean ± std over seeds."""
    return (_over_seeds(_per_seed(rows, "in_domain", metric)),
            _over_seeds(_per_seed(rows, held, metric)) if held else None)


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


def _cell(ln: Line, column: str) -> str:
    text = _fmt(ln.cells[column])
    diverged = ln.diverged.get("in_domain" if column == "time_extrap" else column)
    return text + " †" if diverged is not None else text


def to_markdown(lb: Leaderboard) -> str:
    cols = ["in_domain", *lb.sets, "time_extrap"]
    identifies = any(not math.isnan(ln.param_error) for ln in lb.lines)
    head = ["rank", "method", "profile", "training budget", "seeds", *_headers(lb), "params adapted / env",
            "adapt s", "params trained", "train s"]
    head += ["physical params rel. error (worst)"] if identifies else []
    ranked = (f"the mean held-out relative L2 over: {', '.join(lb.rank_sets)}" if lb.rank_sets else
              "in-domain relative L2 (no held-out sets)" if not lb.sets else
              "the mean held-out relative L2 (no held-out set common to all methods)")
    p = lb.protocol
    where = ("every protocol" if p is None else
             f"protocol {p.name}: profiles {', '.join(p.profiles)}" if p.name in p.profiles else
             f"protocol {p.name}: profile {', '.join(p.profiles) or '?'} with data or system settings of its own")
    out = [f"# Leaderboard: {lb.system} ({where}; k={lb.shots} adaptation trajectories per new environment)", "",
           "Relative L2 error, mean ± std over seeds of each seed's mean over test trajectories. In-domain "
           "and held-out sets on (0, T]; time extrapolation on (T, 2T] in the training environments. "
           f"One line per method and configuration. Ranked by {ranked}.", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, ln in enumerate(lb.lines, 1):
        out.append("| " + " | ".join([str(i), ln.label, "/".join(ln.profiles), ln.budget(), str(len(ln.seeds)),
                                      *[_cell(ln, c) for c in cols],
                                      _fmt_num(ln.adapted_params, ".0f"), _fmt_num(ln.adapt_seconds, ".1f"),
                                      _fmt_num(ln.trained_params, ".0f"), _fmt_num(ln.train_seconds, ".0f"),
                                      *([f"{_fmt_num(ln.param_error, '.2%')} ({_fmt_num(ln.param_error_max, '.2%')})"]
                                        if identifies else [])]) + " |")
    diverged = [ln for ln in lb.lines if ln.any_diverged]
    if diverged:
        out += ["", "† Forecasts that diverged (became non-finite), scored up to the time they did; a line with any "
                "ranks below every line without: " + "; ".join(
                    f"{ln.label}: " + ", ".join(f"{c.replace('_', '-')} {d}" for c, d in ln.diverged.items())
                    for ln in diverged) + "."]
    if any(ln.external for ln in lb.lines):
        out += ["", "External rows are predictions made by another codebase from `run.py export`'s inputs and "
                "scored by `run.py score` with the same metrics; their training budget is what was declared "
                "(`--train-steps`, `--train-seconds`), their adaptation cost is not known."]
    if any(ln.physics_aware for ln in lb.lines):
        out += ["", "Physics-aware rows (`phys[terms]`) use those known terms of the equations with per-environment "
                "physical parameters, plus the method as a learned residual (docs/physics.md); the parameter "
                "error is that of the parameters identified on the held-out sets (mean over parameters, "
                "environments, sets and seeds; in brackets the largest of a parameter the fit determines)."]
    if any(ln.keys_derived for ln in lb.lines):
        out += ["", "Some rows were written before rows recorded their configuration: their lines group runs by "
                "profile and training steps, which may hold more than one configuration."]
    for block in lb.published:
        out += ["", *_published_markdown(block)]
    if not lb.published:
        known = ", ".join(f"{p.protocol} (profile {', '.join(p.settings) or 'none: not reproduced'})"
                          for p in published_for(lb.system)) or "none"
        out += ["", f"No published numbers match these rows' protocol (published protocols for {lb.system}: {known})."]
    out += ["", f"Built from {lb.n_rows} rows of {len(lb.runs)} runs; commits: {', '.join(lb.commits) or '—'}."]
    if lb.left_out:
        out += ["", "Rows left out: " + "; ".join(f"{n} {reason}" for reason, n in sorted(lb.left_out.items())) + "."]
    return "\n".join(out) + "\n"


def _source(o: Ours) -> str:
    ln = o.line
    if ln is not None and ln.external:
        return f"external, {o.seeds} seed(s), training budget {ln.budget()}"
    budget = "/".join(str(n) for n in o.train_steps) or "unrecorded"
    cpu = "" if math.isnan(o.train_cpu_seconds) else f" ({o.train_cpu_seconds:.0f} CPU s)"
    cost = f"{o.train_seconds:.0f} s training{cpu}" if not math.isnan(o.train_seconds) else "training time unrecorded"
    cost += "" if math.isnan(o.adapt_seconds) else f" + {o.adapt_seconds:.0f} s adaptation"
    return f"ours, profile {o.profile}, {o.seeds} seed(s), {budget} training steps, {cost} per run"


def _published_markdown(block: PublishedBlock) -> list[str]:
    e = block.entry
    new = f"new environments ({block.heldout_set})" if block.heldout_set else "new environments"
    profiles = sorted({p for o in block.ours for p in o.profile.split("/") if p in e.settings})
    settings = (e.settings[profiles[0]] if len(profiles) == 1 else
                "; ".join(f"{p}: {e.settings[p]}" for p in profiles) or "the published protocol")
    lines = [f"## Published results: {e.protocol} protocol", "",
             f"Source: {e.source}. Same protocol as these rows (profile {', '.join(profiles) or e.profile}, same "
             f"environments, dt={e.dt:g}, T={e.horizon:g}). Matched against {settings}. "
             f"Metric: `{e.metric}`. {e.note}.", "",
             f"| method | in-domain | {new} | source |", "|---|---|---|---|"]
    for method, (ind, held) in e.numbers.items():
        kind = "published, physics-aware" if method in PHYSICS_AWARE else "published"
        lines.append(f"| {method} | {_fmt(ind, e.scale)} | {_fmt(held, e.scale)} | {kind} |")
    for o in block.ours:
        source = _source(o)
        mark = " †" if o.line is not None and o.line.any_diverged else ""
        lines.append(f"| {o.method} | {_fmt(o.in_domain)}{mark} | {_fmt(o.new_envs)}{mark} | {source} |")
        if o.also is not None:
            lines.append(f"| {o.method} ({e.also_metric}: {METRICS[e.also_metric]}) | {_fmt(o.also[0])}{mark} | "
                         f"{_fmt(o.also[1])}{mark} | {source} |")
    return lines


def table(lb: Leaderboard) -> tuple[list[str], list[list[Any]]]:
    """Header and rows with plain numbers (CSV, W&B)."""
    cols = ["in_domain", *lb.sets, "time_extrap"]
    head = ["rank", "method", "profile", "config_key", "external", "train_steps", "train_cpu_seconds",
            "max_cpu_seconds", "declared_train_steps", "declared_train_seconds", "seeds"]
    head += [f"{c}_{s}" for c in cols for s in ("mean", "std")]
    head += [f"{c}_diverged_fraction" for c in ("in_domain", *lb.sets)] + ["diverged_first_at"]
    head += ["heldout_mean", "params_adapted_per_env", "adapt_seconds", "params_trained", "train_seconds",
             "physics_aware", "param_rel_error", "param_rel_error_max"]
    data = []
    for i, ln in enumerate(lb.lines, 1):
        fractions = [ln.diverged[c].n_diverged / max(ln.diverged[c].n_traj, 1) if c in ln.diverged else 0.0
                     for c in ("in_domain", *lb.sets)]
        first = min((d.first_at for d in ln.diverged.values()), default=math.nan)
        data.append([i, ln.method, "/".join(ln.profiles), ln.config_key, ln.external,
                     "/".join(str(s) for s in sorted(set(ln.train_steps))), ln.train_cpu_seconds, ln.max_cpu_seconds,
                     ln.declared.get("train_steps", math.nan), ln.declared.get("train_seconds", math.nan),
                     len(ln.seeds), *[v for c in cols for v in ln.cells[c]], *fractions, first, ln.heldout,
                     ln.adapted_params, ln.adapt_seconds, ln.trained_params, ln.train_seconds, ln.physics_aware,
                     ln.param_error, ln.param_error_max])
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
    """``leaderboard_<protocol name>[_k<shots>]``: boards of different protocols never share a file."""
    return f"leaderboard_{lb.profile or 'all'}" + ("" if lb.shots == 1 else f"_k{lb.shots}")


def write(lb: Leaderboard, directory: Path) -> tuple[Path, Path]:
    """``<file_stem>.md`` and ``.csv`` in ``directory`` (replaced atomically)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    stem = file_stem(lb)
    for name, text in ((f"{stem}.md", to_markdown(lb)), (f"{stem}.csv", to_csv(lb))):
        paths.append(atomic_write_text(directory / name, text))
    return paths[0], paths[1]


def write_or_say(lb: Leaderboard, directory: Path) -> str:
    """:func:`write`, and the line that says where the files are, or (a directory that cannot be
    written: full, read-only) that they could not be written: the table is printed either way."""
    import os

    try:
        md, csv_path = write(lb, directory)
    except OSError as e:
        reason = " ".join((os.strerror(e.errno) if e.errno else str(e)).split())
        return (f"not written: {e.filename2 or e.filename or directory} ({reason}); the table above is complete: "
                "free space or make that directory writable to keep it as a file")
    return f"written: {md}, {csv_path}"


def wandb_table(lb: Leaderboard) -> Any:
    import wandb

    head, data = table(lb)
    return wandb.Table(columns=head, data=[[None if isinstance(v, float) and math.isnan(v) else v for v in row]
                                           for row in data])


def for_config(rows: list[dict[str, Any]], cfg: RunConfig, shots: int | None = None) -> Leaderboard:
    """The leaderboard of the protocol ``cfg`` follows (its ``--set`` overrides included)."""
    system = cfg.system_name
    return build(rows, system, resolve_protocol(rows, system, cfg=cfg), cfg.adapt.shots if shots is None else shots)

