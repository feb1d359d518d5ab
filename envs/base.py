"""What every physical system provides.

A system is one set of equations with named physical parameters. An *environment* is one
assignment of those parameters (``{"F": 0.03, "k": 0.058}``). Everything is batched: a batch
holds many trajectories, each with its own parameter row, so one tensor program generates a
whole dataset on CPU or GPU.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import operator
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from leads.envs.errors import UserError

Env = dict[str, float]


def _per_sample(value: torch.Tensor | float, u: torch.Tensor) -> torch.Tensor | float:
    """A ``(B,)`` parameter column shaped to broadcast against one channel ``u[:, c]``."""
    if isinstance(value, torch.Tensor) and value.dim() == 1:
        return value.to(u).view(-1, *([1] * (u.dim() - 2)))
    return value


def env_label(env: Env) -> str:
    """An environment as text, e.g. ``"F=0.03,k=0.058"`` (the names of rows and figures)."""
    return ",".join(f"{k}={v:g}" for k, v in env.items())


def envs_key(system: System, envs: Sequence[Env]) -> str:
    """Order-independent identity of a set of environments of ``system`` (omitted parameters filled
    in): names cached files of custom held-out sets and matches result rows to their environments."""
    rows = sorted(tuple(float(f"{float(v):.12g}") for v in row) for row in system.env_tensor(envs).tolist())
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:10]


def check_seed(seed: Any) -> int:
    """``seed`` as an int; an initial-condition seed must be a non-negative integer."""
    try:
        value = operator.index(seed)
    except TypeError:
        value = -1
    if value < 0 or isinstance(seed, bool):
        raise UserError(f"initial-condition seed {seed!r} must be a non-negative integer")
    return value


def seed_rng(seed: Any) -> np.random.Generator:
    """The random generator of an initial-condition seed: numpy's, which hashes all 64 bits of it.
    Not ``torch.Generator().manual_seed``: torch's CPU generator keeps the seed's low 32 bits, and
    the seeds of a dataset's splits differ in their high bits (``datasets/seeds.py``), so every
    split drew the training split's initial states."""
    return np.random.default_rng(check_seed(seed))


class System(ABC):
    """A parametric dynamical system ``du/dt = f(t, u; params)``.

    Subclasses set the class attributes, write one ``term_<name>`` method per term of
    ``terms`` and implement the abstract methods. Their ``defaults`` hold every configurable
    key (physical constants, grid, environment sets, observation step and horizon, solver
    step); a config may override any of them and nothing else.
    """

    name: ClassVar[str]
    param_names: ClassVar[tuple[str, ...]]
    state_names: ClassVar[tuple[str, ...]]
    defaults: ClassVar[dict[str, Any]]
    # The right-hand side as a sum of named terms: term name -> the physical parameters it uses
    # (environment parameters or ``constants``); ``term_<name>(t, u, values)`` computes it.
    terms: ClassVar[dict[str, tuple[str, ...]]] = {}
    constants: ClassVar[tuple[str, ...]] = ()  # config keys that are physical parameters (D_u, ...)
    # Terms declared unknown to hybrid models (a system file's ``learned``): ``physics.terms: known``
    # leaves them out, and the learned residual acts on the fields whose equations they are in.
    learned_terms: ClassVar[tuple[str, ...]] = ()
    # Bump when a change to the equations, initial conditions or solver changes the data a config
    # produces: it is part of the cache directory's hash, so cached data of the old version are
    # never read as the new one (and never overwritten). 1 is the version before versioning.
    data_version: ClassVar[int] = 1

    def __init__(self, **overrides: Any) -> None:
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise UserError(
                f"unknown key 'system.{unknown[0]}' for {self.name}; "
                f"known keys: {', '.join(sorted(self.defaults))}"
            )
        self.config: dict[str, Any] = copy.deepcopy(self.defaults)
        self.config.update(copy.deepcopy(overrides))
        self._check_config()

    # ----------------------------------------------------------------- environments
    @property
    def train_envs(self) -> list[Env]:
        return [self.complete_env(e) for e in self.config["train_envs"]]

    @property
    def heldout(self) -> dict[str, list[Env]]:
        return {k: [self.complete_env(e) for e in v] for k, v in self.config["heldout"].items()}

    def complete_env(self, env: Env) -> Env:
        """``env`` with omitted parameters taken from ``config["param_defaults"]`` (if the system
        has one), in ``param_names`` order, so environments can name only what varies."""
        full = {**self.config.get("param_defaults", {}), **env}
        return {p: full[p] for p in self.param_names if p in full} | {
            k: v for k, v in full.items() if k not in self.param_names
        }

    def env_tensor(self, envs: Sequence[Env]) -> torch.Tensor:
        """Parameter rows, float64, shape ``(len(envs), len(param_names))``."""
        envs = [self.complete_env(env) for env in envs]
        for env in envs:
            self.check_env(env)
        return torch.tensor(
            [[float(env[p]) for p in self.param_names] for env in envs], dtype=torch.float64
        )

    def check_env(self, env: Env) -> None:
        """Raise ``UserError`` if ``env`` does not name exactly this system's parameters
        with finite values inside their valid range."""
        if not isinstance(env, dict):
            raise UserError(f"{self.name} environment {env!r} must be a mapping of parameter names to values")
        env = self.complete_env(env)
        missing = [p for p in self.param_names if p not in env]
        extra = [p for p in env if p not in self.param_names]
        if missing or extra:
            raise UserError(
                f"{self.name} environment {env} must give exactly the parameters "
                f"{', '.join(self.param_names)}"
            )
        for p in self.param_names:
            v = env[p]
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise UserError(f"{self.name} parameter {p}={v!r} must be a finite number")
            lo, hi = self.param_ranges()[p]
            if not lo <= v <= hi:
                raise UserError(
                    f"{self.name} parameter {p}={v} is outside its valid range [{lo}, {hi}]"
                )

    def param_ranges(self) -> dict[str, tuple[float, float]]:
        """Valid (closed) range of each parameter; subclasses narrow it."""
        return {p: (-math.inf, math.inf) for p in self.param_names}

    # ----------------------------------------------------------------- time
    @property
    def dt(self) -> float:
        return float(self.config["dt"])

    @property
    def horizon(self) -> float:
        """Training horizon; test rollouts go to twice this."""
        return float(self.config["horizon"])

    def times(self, horizon: float | None = None) -> np.ndarray:
        """Observation times ``0, dt, ..., horizon`` (float64)."""
        horizon = self.horizon if horizon is None else horizon
        n = int(round(horizon / self.dt))
        return np.arange(n + 1, dtype=np.float64) * self.dt

    # ----------------------------------------------------------------- physics
    @property
    @abstractmethod
    def state_shape(self) -> tuple[int, ...]:
        """Shape of one state, channels first (``(2,)`` for LV, ``(2, 32, 32)`` for GS)."""

    @abstractmethod
    def sample_initial_states(self, seeds: Sequence[int]) -> torch.Tensor:
        """One initial state per seed, float64, ``(len(seeds), *state_shape)``, before any
        warm-up. The same seed always gives the same state, on every device."""

    def initial_states(self, seeds: Sequence[int], params: torch.Tensor,
                       device: torch.device | str | None = None) -> torch.Tensor:
        """The initial states of trajectories whose parameter rows are ``params``.

        Args:
            seeds: one initial-condition seed per trajectory.
            params: ``(len(seeds), n_params)`` parameter rows.
            device: where to compute (a warm-up, the costly part, runs there).

        Returns:
            ``(len(seeds), *state_shape)`` float64 on ``device``. By default the seed alone decides
            (``sample_initial_states``); systems whose states come out of a warm-up under each
            trajectory's own equations (the turbulent flows) override this.
        """
        return self.sample_initial_states(seeds).to(device)

    def generate(self, seeds: Sequence[int], params: torch.Tensor, t: np.ndarray,
                 device: torch.device | str | None = None) -> torch.Tensor:
        """The observed trajectories of a dataset: what ``datasets.generate`` stores.

        Args:
            seeds: one initial-condition seed per trajectory.
            params: ``(len(seeds), n_params)`` parameter rows.
            t: observation times, ``t[0]`` the time of the initial state.
            device: where to compute.

        Returns:
            ``(len(seeds), len(t), *state_shape)`` float64 on ``device``. By default
            ``solve(initial_states(...))``; a system that solves on a finer grid than it observes
            (burgers, kolmogorov) overrides this to filter the fine trajectory, since the fine
            state cannot be recovered from an observed one.
        """
        return self.solve(self.initial_states(seeds, params, device), params.to(device), t)

    # ----------------------------------------------------------------- partial observations
    # What a dataset may store instead of the whole state (``data.observe``): observation name ->
    # the names of its channels (e.g. an ocean model's sea surface height); ``observe`` computes it.
    observations: ClassVar[dict[str, tuple[str, ...]]] = {}

    def check_observation(self, name: str | None) -> None:
        """``UserError`` unless ``name`` is None (the whole state) or one of ``observations``."""
        if name is not None and name not in self.observations:
            known = ", ".join(self.observations) or "none (it is observed whole)"
            raise UserError(f"{self.name} has no partial observation {name!r} (data.observe); its observations: "
                            f"{known}")

    def observed_shape(self, name: str | None) -> tuple[int, ...]:
        """Shape of one observation: ``state_shape``, or its channels replaced by the observation's."""
        self.check_observation(name)
        shape = tuple(self.state_shape)
        return shape if name is None else (len(self.observations[name]), *shape[1:])

    def observed_names(self, name: str | None) -> tuple[str, ...]:
        self.check_observation(name)
        return tuple(self.state_names) if name is None else tuple(self.observations[name])

    def observe(self, states: torch.Tensor, params: torch.Tensor, name: str) -> torch.Tensor:
        """The observation ``name`` of states ``(B, [T,] *state_shape)`` whose parameter rows are
        ``params`` ``(B, n_params)``: ``(B, [T,] *observed_shape(name))``."""
        self.check_observation(name)
        raise NotImplementedError(f"{type(self).__name__} declares observation {name!r} but no observe()")

    def rhs(self, t: float | torch.Tensor, u: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """``du/dt`` for a batch: ``u`` is ``(B, *state_shape)``, ``params`` is ``(B, n_params)``;
        the sum of every term of ``terms`` (the equations are written once, as terms)."""
        if not self.terms:
            raise NotImplementedError(f"{type(self).__name__} declares no terms: define `terms` and a "
                                      "term_<name> method per term (or override rhs)")
        return self.terms_rhs(tuple(self.terms), t, u, self.parameter_values(params))

    # ----------------------------------------------------------------- named terms
    def parameter_values(self, params: torch.Tensor) -> dict[str, torch.Tensor | float]:
        """The physical parameters by name: environment parameters as ``(B,)`` columns of
        ``params``, ``constants`` as the config's numbers."""
        values: dict[str, torch.Tensor | float] = {p: params[:, i] for i, p in enumerate(self.param_names)}
        values.update({c: float(self.config[c]) for c in self.constants})
        return values

    def term_parameters(self, names: Sequence[str]) -> tuple[str, ...]:
        """The physical parameters the terms ``names`` use, each once, in the order of ``terms``."""
        out: list[str] = []
        for name in self.check_terms(names):
            out += [p for p in self.terms[name] if p not in out]
        return tuple(out)

    def check_terms(self, names: str | Sequence[str] | None) -> tuple[str, ...]:
        """``names`` as a tuple of this system's terms (``"all"``: every term; ``"known"``: every
        term but the ``learned_terms``; None: none); an unknown name is a one-line error that
        lists the known ones."""
        if names is None:
            return ()
        if names == "all":
            return tuple(self.terms)
        if names == "known":
            known = tuple(n for n in self.terms if n not in self.learned_terms)
            if not known:
                raise UserError(f"every term of {self.name} is declared learned: physics.terms=known leaves none; "
                                "name terms in physics.terms, or declare fewer learned")
            return known
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise UserError(f"physics terms must be 'all', 'known' or a list of term names of {self.name}, "
                            f"got {names!r}")
        for n in names:
            if n not in self.terms:
                raise UserError(f"{self.name} has no term '{n}'; its terms are: {', '.join(self.terms)}")
        if len(set(names)) != len(names):
            raise UserError(f"physics terms {list(names)} name a term twice")
        return tuple(names)

    def term_fields(self, name: str) -> tuple[str, ...]:
        """The fields whose equations the term ``name`` is in (a hand-written term: all of them)."""
        return tuple(self.state_names)

    def terms_rhs(self, names: Sequence[str], t: float | torch.Tensor, u: torch.Tensor,
                  values: Mapping[str, torch.Tensor | float]) -> torch.Tensor:
        """The sum of the terms ``names`` at ``(t, u)``.

        Args:
            names: terms of ``terms``.
            t: the time (a float, or ``(B,)`` per sample), for non-autonomous terms.
            u: ``(B, *state_shape)`` states.
            values: every parameter the terms use, as a float or a ``(B,)`` tensor per sample.

        Returns:
            ``(B, *state_shape)``; zeros for no terms.
        """
        out = None
        for name in names:
            used = {p: _per_sample(values[p], u) for p in self.terms[name]}
            term = getattr(self, f"term_{name}")(t, u, used)
            out = term if out is None else out + term
        return torch.zeros_like(u) if out is None else out

    def stiffness(self, names: Sequence[str], values: Mapping[str, torch.Tensor | float]) -> float:
        """An upper bound on the spectral radius of the terms' Jacobian where it is large
        (diffusion, viscosity), so an explicit integrator can choose a stable step; 0 when
        nothing in them is stiff."""
        return 0.0

    # Known terms that are linear and diagonal in Fourier space on the periodic grid (diffusion):
    # an exponential integrator takes them exactly (``linear_symbol``).
    spectral_terms: ClassVar[tuple[str, ...]] = ()

    def linear_symbol(self, names: Sequence[str], values: Mapping[str, torch.Tensor | float]) -> torch.Tensor:
        """The Fourier symbol of the sum of the ``spectral_terms`` among ``names``: ``L`` with
        ``rfft2(sum of those terms (u)) = L * rfft2(u)``, shaped ``(1 or B, C, n, n//2+1)`` (a
        per-sample ``(B,)`` value gives one row per sample). Systems without such terms have none."""
        raise UserError(f"{self.name} has no term that is linear and diagonal in Fourier space")

    def coarse_forecast(self, u0: torch.Tensor, params: torch.Tensor, t: np.ndarray,
                        observe: str | None = None) -> torch.Tensor:
        """The physical model a modeller would otherwise run on the observed grid, forecasting
        from observed states ``u0`` ``(B, *observed_shape(observe))`` with the true parameters:
        ``(B, len(t), *observed_shape(observe))``. The data come from a finer solve; this is the
        baseline a learned model must beat (``run.py baseline``). Systems without one say so."""
        raise UserError(f"{self.name} has no coarse physical model to forecast with")

    @abstractmethod
    def solve(self, u0: torch.Tensor, params: torch.Tensor, t: np.ndarray) -> torch.Tensor:
        """Accurate batched solution at times ``t`` (``t[0]`` is the time of ``u0``):
        returns ``(B, len(t), *state_shape)`` float64 on ``u0``'s device."""

    @property
    @abstractmethod
    def solver_description(self) -> str:
        """Scheme and step/tolerance, stored in every HDF5 file this system writes."""

    def describe_equations(self) -> str:
        """The equations as text, stored in every HDF5 file this system writes ("" when the
        module's docstring is where they are written: the hand-written systems)."""
        return ""

    # ----------------------------------------------------------------- checks
    def _check_config(self) -> None:
        c = self.config
        # Structure first (a hand-edited config file can put any YAML value anywhere).
        if not isinstance(c.get("param_defaults", {}), dict):
            raise UserError(f"system.param_defaults of {self.name} must map parameter names to values")
        if not isinstance(c["train_envs"], list):
            raise UserError(f"system.train_envs of {self.name} must be a list of environments (mappings)")
        if isinstance(c["heldout"], dict) and not all(isinstance(v, list) for v in c["heldout"].values()):
            raise UserError(f"system.heldout of {self.name} must map set names to lists of environments")
        if not c["train_envs"]:
            raise UserError(f"system.train_envs of {self.name} is empty; give at least one environment")
        for env in c["train_envs"]:
            self.check_env(env)
        if not isinstance(c["heldout"], dict):
            raise UserError(f"system.heldout of {self.name} must map set names to environment lists")
        for name, envs in c["heldout"].items():
            if not envs:
                raise UserError(f"held-out set '{name}' of {self.name} is empty; give at least one environment")
            for env in envs:
                self.check_env(env)
        for key in ("dt", "horizon"):
            if not (isinstance(c[key], (int, float)) and not isinstance(c[key], bool) and math.isfinite(c[key])
                    and c[key] > 0):
                raise UserError(f"system.{key}={c[key]!r} of {self.name} must be a positive number")
        ratio = c["horizon"] / c["dt"]
        if abs(ratio - round(ratio)) > 1e-9:
            raise UserError(f"system.horizon={c['horizon']} of {self.name} must be a multiple of dt={c['dt']}")

    def _check_numbers(self, positive: Sequence[str] = (), non_negative: Sequence[str] = ()) -> None:
        """``UserError`` unless each config key of ``positive`` (``non_negative``) is a finite
        number > 0 (>= 0)."""
        for key in (*positive, *non_negative):
            v = self.config[key]
            ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
            if not ok or v < 0 or (key in positive and v == 0):
                kind = "positive" if key in positive else "non-negative"
                raise UserError(f"system.{key}={v!r} of {self.name} must be a {kind} finite number")

    def _check_grid_sizes(self, *keys: str) -> None:
        """``UserError`` unless each config key is an even integer >= 8 (a periodic grid's side),
        and, for a pair ``(size, solver_size)``, the second is a multiple of the first."""
        for key in keys:
            n = self.config[key]
            if isinstance(n, bool) or not isinstance(n, int) or n < 8 or n % 2:
                raise UserError(f"system.{key}={n!r} of {self.name} must be an even integer >= 8")
        if len(keys) == 2 and self.config[keys[1]] % self.config[keys[0]]:
            raise UserError(f"system.{keys[1]}={self.config[keys[1]]} of {self.name} must be a multiple of "
                            f"system.{keys[0]}={self.config[keys[0]]} (each observed cell holds whole solver cells)")
