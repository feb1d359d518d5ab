"""The system part of a system file, checked and parsed: fields, grid, parameters, terms, solver.

``parse_spec`` takes the mapping (as read from the file, or as stored in a run's config) and
returns a ``Spec``: every expression parsed (``grammar``), every operator discretized
(``operators``), each field's right-hand side split for the exponential integrator (``split``),
and the canonical config (defaults filled in) that the generated system carries, hashes into
its data cache and stores in its files. Every failure is one line naming the file, the field or
term and the fix.
"""

from __future__ import annotations

import copy
import dataclasses
import keyword
import math
import re
from collections.abc import Mapping
from typing import Any

import sympy

from leads.envs.base import System
from leads.envs.equations.grammar import COORDINATES, OPERATORS, TIME, Namespace, parse_term, reserved_names
from leads.envs.equations.initial import check_initial_state
from leads.envs.equations.operators import SCHEMES, Discretization, Grid
from leads.envs.equations.split import Split, explicit_second_order, split
from leads.envs.errors import UserError

SYSTEM_KEYS = ("fields", "grid", "discretization", "parameters", "constants", "train_envs", "heldout", "dt",
               "horizon", "initial_state", "equations", "learned", "solver")
REQUIRED = ("fields", "train_envs", "dt", "horizon", "initial_state", "equations")
SOLVERS: dict[str, dict[str, Any]] = {
    # dopri5 at 1e-7: Gray-Scott's measured tolerance for ~1e-7 relative error (envs/gray_scott.py).
    "dopri5": {"rtol": 1e-7, "atol": 1e-7},
    "rk4": {"substeps": 16},
    "etdrk4": {"step": 0.25},
}
_IDENT = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")


@dataclasses.dataclass
class Spec:
    """A parsed system: what the generated ``System`` subclass is made of."""

    where: str  # the file (or system) named in errors
    config: dict[str, Any]  # canonical: every key of SYSTEM_KEYS, defaults filled in
    fields: tuple[str, ...]
    grid: Grid | None
    operators: dict[str, Discretization]
    param_names: tuple[str, ...]
    constants: tuple[str, ...]
    terms: dict[str, dict[str, sympy.Expr]]  # term -> field -> expression, in the file's order
    term_params: dict[str, tuple[str, ...]]
    splits: dict[str, Split]  # field -> its whole right-hand side split (exponential integrator)
    learned: tuple[str, ...]

    @property
    def dims(self) -> int:
        return 0 if self.grid is None else self.grid.dims

    def kinds(self) -> dict[str, str]:
        out = {f: "field" for f in self.fields}
        out |= {p: "parameter" for p in self.param_names} | {c: "constant" for c in self.constants}
        out |= {c: "coordinate" for c in COORDINATES[: self.dims]}
        return out | {TIME: "time"}

    def field_expression(self, field: str, terms: tuple[str, ...] | None = None) -> sympy.Expr:
        """The sum of the ``terms`` (all when None) of ``field``'s equation."""
        names = self.terms if terms is None else terms
        return sympy.Add(*(self.terms[n][field] for n in names if field in self.terms[n]))

    def equations_text(self) -> str:
        """``u_t = ...; v_t = ...`` with every term named: what the data files store."""
        lines = []
        for f in self.fields:
            parts = [f"{n}: {sympy.sstr(self.terms[n][f])}" for n in self.terms if f in self.terms[n]]
            lines.append(f"{f}_t = " + " + ".join(f"[{p}]" for p in parts))
        return "; ".join(lines)


def _number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def _check_name(name: Any, what: str, reserved: set[str], where: str) -> str:
    if not isinstance(name, str) or not _IDENT.match(name) or keyword.iskeyword(name):
        raise UserError(f"{where}: {what} name {name!r} must be a letter followed by letters, digits or '_' "
                        "(not a Python keyword); rename it")
    if name in reserved:
        raise UserError(f"{where}: {what} name '{name}' is reserved (an operator, function, coordinate, time or "
                        "pi); rename it")
    return name


def _grid(raw: Any, where: str) -> Grid | None:
    if raw is None:
        return None
    fix = "write grid: {dims: 1 or 2, size: N, length: L} (periodic box), or leave it out for an ODE"
    if not isinstance(raw, Mapping) or not set(raw) <= {"dims", "size", "length"} or "size" not in raw \
            or "length" not in raw:
        raise UserError(f"{where}: grid {raw!r} is not a grid; {fix}")
    dims, size, length = raw.get("dims", 2), raw["size"], raw["length"]
    if dims not in (1, 2) or isinstance(dims, bool):
        raise UserError(f"{where}: grid dims={dims!r} must be 1 or 2; {fix}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 4:
        raise UserError(f"{where}: grid size={size!r} must be an integer >= 4 (points per side); {fix}")
    if not _number(length) or length <= 0:
        raise UserError(f"{where}: grid length={length!r} must be a positive number (the box's side); {fix}")
    return Grid(int(dims), size, float(length))


def _discretization(raw: Any, grid: Grid | None, where: str) -> dict[str, str]:
    if grid is None:
        if raw not in (None, {}, ""):
            raise UserError(f"{where}: discretization is given but the system has no grid; remove it or declare a grid")
        return {}
    ops = [op for op, d in OPERATORS.items() if d <= grid.dims]
    if raw is None:
        raw = {}
    if isinstance(raw, str):
        raw = {op: raw for op in ops}
    if not isinstance(raw, Mapping):
        raise UserError(f"{where}: discretization must be a scheme name (central, fourier, ...) or map operators to "
                        f"schemes, got {raw!r}")
    out = {}
    for op, scheme in raw.items():
        if op not in ops:
            raise UserError(f"{where}: discretization names '{op}', which is not an operator of a {grid.dims}-D grid; "
                            f"use one of: {', '.join(ops)}")
        ok = scheme in SCHEMES[op] and not (scheme == "nine_point" and grid.dims != 2)
        if not ok:
            allowed = [s for s in SCHEMES[op] if s != "nine_point" or grid.dims == 2]
            raise UserError(f"{where}: discretization {op}: {scheme!r} is not a scheme for {op} on a "
                            f"{grid.dims}-D grid; use one of: {', '.join(allowed)}")
        out[op] = scheme
    return {op: out.get(op, SCHEMES[op][0]) for op in ops}


def _parameters(raw: Any, where: str) -> dict[str, dict[str, float | None]]:
    if raw is None:
        return {}
    if isinstance(raw, list):
        raw = {p: None for p in raw}
    if not isinstance(raw, Mapping):
        raise UserError(f"{where}: parameters must list names or map each to its default (or to "
                        f"{{default, min, max}}), got {raw!r}")
    out = {}
    for p, v in raw.items():
        entry = {"default": None, "min": None, "max": None}
        if isinstance(v, Mapping):
            bad = set(v) - set(entry)
            if bad:
                raise UserError(f"{where}: parameter {p} has unknown key '{sorted(bad)[0]}'; use default, min, max")
            entry.update(v)
        else:
            entry["default"] = v
        for key, value in entry.items():
            if value is not None and not _number(value):
                raise UserError(f"{where}: parameter {p}: {key}={value!r} must be a finite number or null")
            entry[key] = None if value is None else float(value)
        lo, hi = entry["min"], entry["max"]
        if lo is not None and hi is not None and lo > hi:
            raise UserError(f"{where}: parameter {p}: min={lo} is above max={hi}")
        out[p] = entry
    return out


def _solver(raw: Any, grid: Grid | None, where: str) -> dict[str, Any]:
    raw = {"method": "dopri5"} if raw is None else raw
    if isinstance(raw, str):
        raw = {"method": raw}
    method = raw.get("method") if isinstance(raw, Mapping) else None
    if method not in SOLVERS:
        raise UserError(f"{where}: solver method {method!r} is not known; use one of {', '.join(SOLVERS)} "
                        "(e.g. solver: {method: dopri5, rtol: 1e-7, atol: 1e-7})")
    extra = set(raw) - {"method", *SOLVERS[method]}
    if extra:
        raise UserError(f"{where}: solver {method} takes {', '.join(SOLVERS[method])}, not '{sorted(extra)[0]}'")
    out = {"method": method, **SOLVERS[method], **{k: v for k, v in raw.items() if k != "method"}}
    for key in SOLVERS[method]:
        v = out[key]
        if key == "substeps":
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"{where}: solver substeps={v!r} must be a positive integer (rk4 steps per dt)")
        elif not _number(v) or v <= 0:
            raise UserError(f"{where}: solver {key}={v!r} must be a positive number")
        else:
            out[key] = float(v)
    if method == "etdrk4" and grid is None:
        raise UserError(f"{where}: solver etdrk4 needs a periodic grid (it works in Fourier space); "
                        "use dopri5 or rk4 for an ODE")
    return out


def parse_spec(raw: Mapping[str, Any], where: str) -> Spec:
    """Check and parse a system mapping (see docs/equations.md for its keys).

    Args:
        raw: the system part of a file or of a run config.
        where: what errors name (the file's path, or ``system '<name>'``).
    """
    if not isinstance(raw, Mapping):
        raise UserError(f"{where} must hold a mapping of system keys ({', '.join(SYSTEM_KEYS)})")
    unknown = [k for k in raw if k not in SYSTEM_KEYS]
    if unknown:
        raise UserError(f"{where}: unknown key '{unknown[0]}'; a system's keys are {', '.join(SYSTEM_KEYS)} "
                        "(training settings go under profiles)")
    missing = [k for k in REQUIRED if raw.get(k) is None]
    if missing:
        raise UserError(f"{where}: key '{missing[0]}' is missing; every system file gives "
                        f"{', '.join(REQUIRED)} (docs/equations.md)")
    grid = _grid(raw.get("grid"), where)
    dims = 0 if grid is None else grid.dims
    reserved = reserved_names(dims)

    fields = raw["fields"]
    if not isinstance(fields, list) or not fields:
        raise UserError(f"{where}: fields must be a non-empty list of names, e.g. fields: [u, v]")
    fields = [_check_name(f, "field", reserved, where) for f in fields]
    params = _parameters(raw.get("parameters"), where)
    constants = raw.get("constants") or {}
    if not isinstance(constants, Mapping):
        raise UserError(f"{where}: constants must map names to numbers, e.g. constants: {{D_u: 0.2}}")
    seen: dict[str, str] = {}
    for kind, names in (("field", fields), ("parameter", list(params)), ("constant", list(constants))):
        for n in names:
            _check_name(n, kind, reserved, where)
            if n in seen:
                raise UserError(f"{where}: '{n}' is declared as a {seen[n]} and as a {kind}; give each name one role")
            seen[n] = kind
    for c, v in constants.items():
        if not _number(v):
            raise UserError(f"{where}: constant {c}={v!r} must be a finite number")

    discretization = _discretization(raw.get("discretization"), grid, where)
    solver = _solver(raw.get("solver"), grid, where)
    check_initial_state(raw["initial_state"], fields, dims, None if grid is None else grid.size, where)

    names = Namespace(seen, dims)
    terms, term_order = _equations(raw["equations"], fields, names, where)
    learned = raw.get("learned") or []
    if not isinstance(learned, list) or len(set(map(str, learned))) != len(learned):
        raise UserError(f"{where}: learned must list term names, each once, e.g. learned: [kill]")
    for n in learned:
        if n not in terms:
            raise UserError(f"{where}: learned names '{n}', which is not a term; its terms are: {', '.join(terms)}")

    operators = {op: Discretization(op, scheme, grid) for op, scheme in discretization.items()} if grid else {}
    used_ops = {node.func.__name__ for comps in terms.values() for e in comps.values()
                for node in sympy.preorder_traversal(e) if isinstance(node, sympy.core.function.AppliedUndef)}
    if grid is not None:
        _check_grid_for(grid, {op: discretization[op] for op in used_ops}, solver, where)

    order = [*params, *constants]
    term_params = {}
    for n, comps in terms.items():
        free = {s.name for e in comps.values() for s in e.free_symbols}
        term_params[n] = tuple(p for p in order if p in free)
    used = {p for ps in term_params.values() for p in ps}
    for p in params:
        if p not in used:
            raise UserError(f"{where}: parameter {p} is used by no term; use it in an equation or remove it")

    state = {sympy.Symbol(f) for f in fields}
    varying = {sympy.Symbol(s) for s in (*COORDINATES[:dims], TIME)}
    spec = Spec(where=where, config={}, fields=tuple(fields), grid=grid, operators=operators,
                param_names=tuple(params), constants=tuple(constants), terms=terms, term_params=term_params,
                splits={}, learned=tuple(learned))
    spec.splits = {f: split(spec.field_expression(f), sympy.Symbol(f), state, varying, operators) for f in fields}
    if solver["method"] == "etdrk4":
        for f in fields:
            stiff = explicit_second_order(spec.splits[f].nonlinear)
            if stiff is not None:
                term = next(n for n in term_order[f] if explicit_second_order(terms[n][f]) is not None)
                raise UserError(
                    f"{where}: term '{term}' of field {f}: {sympy.sstr(stiff)} is not a constant-coefficient linear "
                    f"term of {f} that etdrk4 can take exactly (it would be stepped explicitly); write it as "
                    f"c*{stiff.func.__name__}({f}) with c made of parameters and constants, or use solver: dopri5")
    spec.config = {
        "fields": list(fields),
        "grid": None if grid is None else {"dims": grid.dims, "size": grid.size, "length": grid.length},
        "discretization": discretization,
        "parameters": params,
        "constants": {c: float(v) for c, v in constants.items()},
        "train_envs": copy.deepcopy(raw["train_envs"]),
        "heldout": copy.deepcopy(raw.get("heldout") or {}),
        "dt": raw["dt"],
        "horizon": raw["horizon"],
        "initial_state": copy.deepcopy(dict(raw["initial_state"])),
        "equations": {f: dict(raw["equations"][f]) for f in fields},
        "learned": list(learned),
        "solver": solver,
    }
    return spec


def _equations(raw: Any, fields: list[str], names: Namespace,
               where: str) -> tuple[dict[str, dict[str, sympy.Expr]], dict[str, list[str]]]:
    example = "e.g. u: {diffusion: D*laplacian(u), reaction: -u*v**2}"
    if not isinstance(raw, Mapping):
        raise UserError(f"{where}: equations must map each field to its named terms, {example}")
    for f in raw:
        if f not in fields:
            raise UserError(f"{where}: equations give field '{f}', which is not declared; add it to fields or "
                            "remove it")
    terms: dict[str, dict[str, sympy.Expr]] = {}
    order: dict[str, list[str]] = {}
    for f in fields:
        if f not in raw or raw[f] is None:
            raise UserError(f"{where}: field {f} has no equation; add equations: {{{f}: {{<term>: <expression>}}}} "
                            f"(a field that does not change: {f}: {{steady: 0}})")
        eq = raw[f]
        if not isinstance(eq, Mapping):
            raise UserError(f"{where}: the equation of field {f} must be a sum of named terms, {example}; got {eq!r}")
        if not eq:
            raise UserError(f"{where}: the equation of field {f} has no terms; give at least one, {example}")
        order[f] = []
        for n, text in eq.items():
            _check_name(n, f"term (of field {f})", set(), where)
            if hasattr(System, f"term_{n}"):  # its method would shadow one every System has
                raise UserError(f"{where}: term name '{n}' (field {f}) is reserved; rename the term")
            expr = parse_term(text, names, f"{where}: term '{n}' of field {f}")
            terms.setdefault(n, {})[f] = expr
            order[f].append(n)
    return terms, order


def _check_grid_for(grid: Grid, schemes: Mapping[str, str], solver: Mapping[str, Any], where: str) -> None:
    """The grid must be one the operators it uses (and the solver) can work on."""
    spectral = [op for op, s in schemes.items() if s == "fourier"]
    if grid.size % 2 and (spectral or solver["method"] == "etdrk4"):
        user = f"operator {spectral[0]} uses fourier" if spectral else "solver etdrk4 works in Fourier space"
        raise UserError(f"{where}: grid size {grid.size} is odd but {user} (its Nyquist mode needs an even size); "
                        f"use an even size such as {grid.size + 1}")
    wide = [op for op, s in schemes.items() if s == "central4"]
    if wide and grid.size < 6:
        raise UserError(f"{where}: grid size {grid.size} is too small for operator {wide[0]}'s central4 stencil "
                        "(5 points wide); use size >= 6 or scheme central")
