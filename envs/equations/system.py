"""The ``System`` subclass generated from a parsed system file.

``build_class`` makes one subclass per system (its name, parameters, fields, terms and
``term_<name>`` methods are class attributes, as in a hand-written system), so everything that
takes a ``System`` (data generation and its cache, hybrid models' physics part, adaptation,
identification) works on it unchanged.

Solvers (``solver.method`` in the file), as the hand-written systems justify them:

- ``dopri5``: the batched adaptive Dormand-Prince 5(4) of ``leads.envs.solvers`` (one step size per
  trajectory), for ODEs and mildly stiff PDEs; Gray-Scott's default.
- ``rk4``: fixed steps, ``substeps`` per observation interval (the hand-written ODE systems').
- ``etdrk4``: ETDRK4 (``leads.envs.spectral``) with the linear constant-coefficient part of each
  field's equation (``split``) exact in Fourier space, per trajectory, and the rest explicit;
  for stiff diffusion on periodic grids.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import sympy
import torch

from leads.envs.base import Env, System
from leads.envs.equations.compile import Compiler, Evaluation, Node, per_sample, stack_fields
from leads.envs.equations.grammar import is_operator
from leads.envs.equations.initial import sample
from leads.envs.equations.spec import Spec
from leads.envs.equations.split import LinearPiece, is_spectral, split
from leads.envs.errors import UserError
from leads.envs.solvers import dopri5, rk4
from leads.envs.spectral import ETDRK4, check_batch, substeps

# On CPU, 64 trajectories at a time keep more of a PDE's working set in cache (measured 1.2x
# faster than 128 on 2 cores for Gray-Scott, envs/gray_scott.py). Accelerators take the whole batch.
_CPU_CHUNK = 64


class EquationSystem(System):
    """A system whose equations come from a system file (``leads.envs.equations``).

    The class attributes come from its ``Spec`` (``build_class``); the config (``defaults``) is
    the file's canonical system mapping.
    """

    spec: Spec
    learned_terms: tuple[str, ...] = ()

    # ----------------------------------------------------------------- config
    def __init__(self, **overrides: Any) -> None:
        self._compiled: dict[Any, Any] = {}
        super().__init__(**overrides)

    def __reduce__(self) -> tuple[Any, ...]:
        # The class is made at run time, so it cannot be pickled by name: pickle (DDP spawn,
        # worker processes) and deepcopy rebuild it from its config instead.
        from leads.envs.equations import system_from_config

        return (system_from_config, (self.name, self.config, self.spec.where))

    def complete_env(self, env: Env) -> Env:
        defaults = {p: e["default"] for p, e in self.config["parameters"].items() if e["default"] is not None}
        full = {**defaults, **env} if isinstance(env, dict) else env
        return {p: full[p] for p in self.param_names if p in full} | {k: v for k, v in full.items()
                                                                      if k not in self.param_names}

    def param_ranges(self) -> dict[str, tuple[float, float]]:
        out = {}
        for p, e in self.config["parameters"].items():
            lo, hi = e["min"], e["max"]
            out[p] = (-math.inf if lo is None else lo, math.inf if hi is None else hi)
        return out

    def check_env(self, env: Env) -> None:
        where = self.spec.where
        if not isinstance(env, dict):
            raise UserError(f"{where}: environment {env!r} must map parameter names to values")
        full = self.complete_env(env)
        for p in self.param_names:
            if p not in full:
                raise UserError(f"{where}: environment {env} gives no value for parameter {p}; add {p}: <value> to it, "
                                f"or a default under parameters ({p}: <default>)")
        for k in full:
            if k not in self.param_names:
                raise UserError(f"{where}: environment {env} names '{k}', which is not a parameter; its parameters "
                                f"are {', '.join(self.param_names)}")
        super().check_env(env)

    def parameter_values(self, params: torch.Tensor) -> dict[str, torch.Tensor | float]:
        values: dict[str, torch.Tensor | float] = {p: params[:, i] for i, p in enumerate(self.param_names)}
        values.update({c: float(self.config["constants"][c]) for c in self.constants})
        return values

    # ----------------------------------------------------------------- interface
    @property
    def state_shape(self) -> tuple[int, ...]:
        grid = self.spec.grid
        return (len(self.state_names), *(() if grid is None else grid.shape))

    @property
    def solver_description(self) -> str:
        s = self.config["solver"]
        ops = ", ".join(d.describe() for d in self.spec.operators.values() if self._uses(d.operator))
        space = f"; operators {ops}" if ops else ""
        if s["method"] == "dopri5":
            return f"dopri5 (adaptive, step per trajectory), rtol={s['rtol']:g}, atol={s['atol']:g}, float64{space}"
        if s["method"] == "rk4":
            return f"rk4, h={self.dt / s['substeps']:g} ({s['substeps']} substeps per observation), float64{space}"
        return (f"etdrk4 in Fourier space (linear constant-coefficient part exact, Kassam-Trefethen contour "
                f"coefficients), step <= {s['step']:g}, float64{space}")

    def describe_equations(self) -> str:
        return self.spec.equations_text()

    def _uses(self, operator: str) -> bool:
        return any(operator in {n.func.__name__ for n in sympy.preorder_traversal(e)
                                if isinstance(n, sympy.core.function.AppliedUndef)}
                   for comps in self.spec.terms.values() for e in comps.values())

    def sample_initial_states(self, seeds: Sequence[int]) -> torch.Tensor:
        grid = self.spec.grid
        states = sample(self.config["initial_state"], self.state_names, self.spec.dims,
                        None if grid is None else grid.size, seeds)
        return torch.from_numpy(states)

    # ----------------------------------------------------------------- terms
    def _compiler(self) -> Compiler:
        if "compiler" not in self._compiled:
            self._compiled["compiler"] = Compiler(self.spec.kinds(), self.spec.grid, self.spec.operators)
        return self._compiled["compiler"]

    def _field_nodes(self, names: tuple[str, ...]) -> list[Node | None]:
        """One node per field: the sum of the terms ``names`` of its equation (None: no term)."""
        key = ("fields", names)
        if key not in self._compiled:
            nodes: list[Node | None] = []
            for f in self.state_names:
                expr = self.spec.field_expression(f, names)
                nodes.append(None if expr == 0 and not any(f in self.spec.terms[n] for n in names)
                             else self._compiler().compile(expr))
            self._compiled[key] = nodes
        return self._compiled[key]

    def _coords(self, like: torch.Tensor) -> dict[str, torch.Tensor]:
        grid = self.spec.grid
        if grid is None:
            return {}
        key = ("coords", like.device, like.dtype)
        if key not in self._compiled:
            self._compiled[key] = {c: grid.coordinate(i, like.device).to(like.dtype)
                                   for i, c in enumerate(("x", "y")[: grid.dims])}
        return self._compiled[key]

    def _evaluate(self, nodes: Sequence[Node | None], t: Any, u: torch.Tensor,
                  values: Mapping[str, Any]) -> torch.Tensor:
        channels = u.unbind(1)  # unbind's backward is one stack; a select's fills a zero buffer
        dims = u.dim() - 1
        shaped = {k: per_sample(v, dims) for k, v in values.items()}
        if isinstance(t, torch.Tensor) and t.dim() == 1:
            t = t.to(u.dtype).view(-1, *([1] * (dims - 1)))
        ev = Evaluation(dict(zip(self.state_names, channels)), shaped, t, self._coords(u))
        return stack_fields([None if n is None else n(ev) for n in nodes], channels)

    def terms_rhs(self, names: Sequence[str], t: float | torch.Tensor, u: torch.Tensor,
                  values: Mapping[str, torch.Tensor | float]) -> torch.Tensor:
        """The sum of the terms ``names`` at ``(t, u)``, one expression per field (the terms of a
        field summed before evaluation, operators shared between them)."""
        names = tuple(names)
        if not names:
            return torch.zeros_like(u)
        return self._evaluate(self._field_nodes(names), t, u, values)

    def term_fields(self, name: str) -> tuple[str, ...]:
        return tuple(f for f in self.state_names if f in self.spec.terms[name])

    def _term(self, name: str) -> Callable[..., torch.Tensor]:
        def term(t: Any, u: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
            return self._evaluate(self._field_nodes((name,)), t, u, p)

        return term

    def linear_symbol(self, names: Sequence[str], values: Mapping[str, torch.Tensor | float]) -> torch.Tensor:
        """The Fourier symbol of the ``spectral_terms`` among ``names``, ``(1 or B, C, n, n//2+1)``."""
        grid = self.spec.grid
        if grid is None or grid.dims != 2 or not self.spectral_terms:
            raise UserError(f"{self.name} has no term that is linear and diagonal in Fourier space on a 2-D grid")
        chosen = tuple(n for n in names if n in self.spectral_terms)
        pieces = {f: [lp for n in chosen if f in self.spec.terms[n] for lp in self._linear(self.spec.terms[n][f], f)]
                  for f in self.state_names}
        return self._symbol(pieces, values)

    def _linear(self, expr: sympy.Expr, field: str) -> tuple[LinearPiece, ...]:
        state = {sympy.Symbol(f) for f in self.state_names}
        varying = {sympy.Symbol(s) for s in ("x", "y", "t")}
        return split(expr, sympy.Symbol(field), state, varying, self.spec.operators).linear

    def _symbol(self, pieces: Mapping[str, Sequence[LinearPiece]], values: Mapping[str, Any],
                device: torch.device | str | None = None) -> torch.Tensor:
        """``L`` per field: the sum of ``coefficient * symbol(operator)``, ``(1 or B, C, *rfft grid)`` float64."""
        grid = self.spec.grid
        assert grid is not None
        device = device if device is not None else _device(values)
        shape = torch.broadcast_shapes(*(k.shape for k in grid.wavenumbers()))
        ones = torch.ones(shape, dtype=torch.float64, device=device)
        ev = Evaluation({}, {k: torch.as_tensor(v, dtype=torch.float64, device=device).reshape(-1, *[1] * grid.dims)
                             if isinstance(v, torch.Tensor) else v for k, v in values.items()}, 0.0, {})
        rows = []
        for f in self.state_names:
            L = torch.zeros((1, *shape), dtype=torch.float64, device=device)
            for lp in pieces[f]:
                coef = self._compiler().compile(lp.coefficient)(ev)
                sym = ones if lp.operator is None else self.spec.operators[lp.operator].symbol(device).real
                L = L + coef * sym
            rows.append(L)
        rows = torch.broadcast_tensors(*rows)
        return torch.stack(rows, dim=1)

    def stiffness(self, names: Sequence[str], values: Mapping[str, torch.Tensor | float]) -> float:
        """A bound on the spectral radius of the terms' operator parts: for each piece
        ``c * op(f)`` with ``c`` free of the state, ``max|c|`` (over the grid and the samples, at
        t = 0) times ``max|symbol(op)|``, summed per field; 0 for an ODE."""
        grid = self.spec.grid
        if grid is None:
            return 0.0
        state = {sympy.Symbol(f) for f in self.state_names}
        rate = 0.0
        ev = Evaluation({}, {k: per_sample(torch.as_tensor(v, dtype=torch.float64), grid.dims + 1)
                             if isinstance(v, torch.Tensor) else v for k, v in values.items()}, 0.0,
                        self._coords(torch.zeros((), dtype=torch.float64, device=_device(values))))
        for f in self.state_names:
            field_rate = 0.0
            for n in self.check_terms(names):
                if f not in self.spec.terms[n]:
                    continue
                for p in sympy.Add.make_args(sympy.expand(self.spec.terms[n][f], deep=False)):
                    coeff, rest = p.as_independent(*state, as_Add=False)
                    if not (is_operator(rest) and rest.args[0] == sympy.Symbol(f)):
                        continue
                    c = self._compiler().compile(coeff)(ev)
                    c = float(c.abs().max()) if isinstance(c, torch.Tensor) else abs(c)
                    field_rate += c * float(self.spec.operators[rest.func.__name__].symbol().abs().max())
            rate = max(rate, field_rate)
        return rate

    # ----------------------------------------------------------------- solvers
    def solve(self, u0: torch.Tensor, params: torch.Tensor, t: np.ndarray) -> torch.Tensor:
        check_batch(u0, params, self.state_shape, len(self.param_names))
        u0 = u0.to(torch.float64)
        params = params.to(device=u0.device, dtype=torch.float64)
        chunk = _CPU_CHUNK if u0.device.type == "cpu" and self.spec.grid is not None else max(1, len(u0))
        method = self.config["solver"]["method"]
        solve = {"dopri5": self._solve_dopri5, "rk4": self._solve_rk4, "etdrk4": self._solve_etdrk4}[method]
        parts = [solve(u0[i : i + chunk], params[i : i + chunk], t) for i in range(0, len(u0), chunk)]
        if not parts:
            return u0.new_zeros((0, len(t), *self.state_shape))
        return torch.cat(parts)

    def _solve_dopri5(self, u0: torch.Tensor, params: torch.Tensor, t: np.ndarray) -> torch.Tensor:
        s = self.config["solver"]
        return dopri5(lambda time, u: self.rhs(time, u, params), u0, t, rtol=s["rtol"], atol=s["atol"])

    def _solve_rk4(self, u0: torch.Tensor, params: torch.Tensor, t: np.ndarray) -> torch.Tensor:
        return rk4(lambda time, u: self.rhs(time, u, params), u0, t, self.config["solver"]["substeps"])

    def _solve_etdrk4(self, u0: torch.Tensor, params: torch.Tensor, t: np.ndarray) -> torch.Tensor:
        """Each field's linear constant-coefficient part exact (per trajectory), the rest explicit."""
        grid = self.spec.grid
        assert grid is not None
        values = self.parameter_values(params)
        L = self._symbol({f: self.spec.splits[f].linear for f in self.state_names}, values, u0.device)
        if "nonlinear" not in self._compiled:
            self._compiled["nonlinear"] = [self._compiler().compile(self.spec.splits[f].nonlinear)
                                           for f in self.state_names]
        nodes = self._compiled["nonlinear"]

        def nonlinear(vh: torch.Tensor, time: float) -> torch.Tensor:
            return grid.rfft(self._evaluate(nodes, time, grid.irfft(vh), values))

        times = np.asarray(t, dtype=np.float64)
        v = grid.rfft(u0)
        out = [u0]
        schemes: dict[float, ETDRK4] = {}
        for i, (h, n) in enumerate(substeps(times, self.config["solver"]["step"])):
            key = round(h, 12)
            if key not in schemes:
                schemes[key] = ETDRK4(L, h)
            for j in range(n):
                v = schemes[key].step(v, nonlinear, float(times[i] + j * h))
            out.append(grid.irfft(v))
        return torch.stack(out, dim=1)


def _device(values: Mapping[str, Any]) -> torch.device | None:
    """Where the parameter values are (None: all plain numbers)."""
    return next((v.device for v in values.values() if isinstance(v, torch.Tensor)), None)


def build_class(name: str, spec: Spec) -> type[EquationSystem]:
    """The ``System`` subclass of ``spec``, registered under nothing (``leads.envs.registry``
    builds equation systems from their config)."""
    state = {sympy.Symbol(f) for f in spec.fields}
    varying = {sympy.Symbol(s) for s in ("x", "y", "t")}
    spectral = tuple(n for n, comps in spec.terms.items()
                     if spec.grid is not None and spec.grid.dims == 2
                     and is_spectral({sympy.Symbol(f): e for f, e in comps.items()}, state, varying, spec.operators))
    attrs: dict[str, Any] = {
        "name": name,
        "spec": spec,
        "param_names": spec.param_names,
        "state_names": spec.fields,
        "defaults": spec.config,
        "terms": dict(spec.term_params),
        "constants": spec.constants,
        "spectral_terms": spectral,
        "learned_terms": spec.learned,
        "__doc__": f"{name} (from {spec.where}): {spec.equations_text()}",
    }
    for term in spec.terms:
        attrs[f"term_{term}"] = _term_method(term)
    return type(f"EquationSystem[{name}]", (EquationSystem,), attrs)


def _term_method(term: str) -> Callable[..., torch.Tensor]:
    def method(self: EquationSystem, t: Any, u: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
        return self._term(term)(t, u, p)

    method.__name__ = f"term_{term}"
    return method
