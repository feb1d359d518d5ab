"""The run configuration as a typed tree, checked once.

``RunConfig.from_dict`` is the one place a resolved configuration is validated: unknown keys,
types and ranges, each failure one line naming the key. YAML files and ``--set`` overrides are
merged as plain mappings first (``leads.config.loading``), so they work exactly as documented;
components then take their own typed part (``cfg.train``, ``cfg.adapt``, ...).

Code reads the configuration by attribute (``cfg.train.lr``), the one way. Sections still read
like the mappings they came from (``cfg["train"]["lr"]``), so scripts written against the YAML
keep working, with a ``ConfigKeyWarning`` naming the attribute (the tests turn it into an error).
``to_dict()`` gives the plain form that is saved with a run and hashed.

Per-system (``system``) and per-method (``methods.<name>``) settings stay mappings: their keys
differ by system and method, and each system and method checks its own.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from leads.datasets.config import DataConfig, parse_data_config, warn_key_read
from leads.envs.errors import UserError

# What is wrong with a value, or None: a message with {key} and {value} placeholders.
Rule = Callable[[Any], str | None]
_RANGE = "config key '{key}' must be "
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # a run name is a directory name, never a path
S = TypeVar("S", bound="Section")


def _int(low: int, high: int | None = None) -> Rule:
    def check(v: Any) -> str | None:
        ok = v >= low and (high is None or v <= high)
        bound = f">= {low}" + ("" if high is None else f" and <= {high}")
        return None if ok else _RANGE + f"an integer {bound}, got {{value}}"
    return check


def _number(low: float, high: float = math.inf, *, open_low: bool = False) -> Rule:
    def check(v: Any) -> str | None:
        ok = math.isfinite(v) and (v > low if open_low else v >= low) and v <= high
        bound = f"> {low:g}" if open_low else f">= {low:g}"
        bound += f" and <= {high:g}" if high < math.inf else ""
        return None if ok else _RANGE + f"a finite number {bound}, got {{value}}"
    return check


def _choice(*options: str) -> Rule:
    def check(v: Any) -> str | None:
        return None if v in options else f"unknown {{key}} {{value}}; choose one of: {', '.join(options)}"
    return check


def _plain_name(v: Any) -> str | None:
    ok = bool(_NAME.fullmatch(v))
    return None if ok else ("config key '{key}' = {value} is not a plain name: use letters, digits, '.', '_' and '-', "
                            "starting with a letter or digit, at most 100 characters (no '/' or '..'), "
                            "e.g. --set {key}=my-run")


def _thread_count(v: Any) -> str | None:
    ok = v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1)
    return None if ok else "config key '{key}' must be null or auto (chosen for the work), or a count >= 1, got {value}"


def _nonzero(v: Any) -> str | None:
    return _RANGE + "a count >= 1, or -1 for all, got {value}" if v == 0 else None


def rule(default: Any, check: Rule) -> Any:
    """A field with a default and a range check (run on non-null values)."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"check": check})
    return dataclasses.field(default=default, metadata={"check": check})


class Section(Mapping[str, Any]):
    """Base of the typed sections: read access by key as well as by attribute."""

    where: ClassVar[str] = ""

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self.to_dict() == plain(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # sections hold lists and dicts

    def __getitem__(self, key: str) -> Any:
        if key in self._names():
            warn_key_read(self.where, key)
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    @classmethod
    def of(cls: type[S], value: Mapping[str, Any] | S | None, where: str | None = None) -> S:
        """``value`` as this section, validated (an instance is returned as is)."""
        if isinstance(value, cls):
            return value
        return _parse(cls, {} if value is None else value, cls.where if where is None else where)

    def to_dict(self) -> dict[str, Any]:
        return {name: plain(getattr(self, name)) for name in self._names()}

    def replace(self: S, **changes: Any) -> S:
        """A copy with ``changes`` applied, validated like the original."""
        return type(self).of({**self.to_dict(), **{k: plain(v) for k, v in changes.items()}}, self.where)


# Equality is that of the plain form (a section equals the mapping it was read from).
_section = dataclasses.dataclass(frozen=True, eq=False)


def plain(value: Any) -> Any:
    """``value`` with every section, mapping and path turned into plain dicts and strings."""
    if isinstance(value, (Section, DataConfig)):
        return value.to_dict()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def flat_keys(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{"section.key": value}``, for comparing two configurations key by key."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out.update(flat_keys(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@_section
class WandbConfig(Section):
    where = "wandb"
    mode: str = rule("offline", _choice("offline", "online", "disabled"))  # WANDB_MODE, if set, wins
    project: str = "leads"
    entity: str | None = None
    artifacts: bool = False  # true: keep each run's best checkpoint and resolved config as W&B artifacts


@_section
class ModelConfig(Section):
    """The backbone; every layer is adaptable. Keys a backbone does not use are ignored by it
    (leads.models.backbones)."""

    where = "model"
    name: str = rule("mlp", _choice("mlp", "conv", "fno"))
    width: int = rule(64, _int(1))
    depth: int = rule(4, _int(1))
    activation: str = "swish"
    kernel_size: int = rule(3, _int(1))
    modes: int = rule(12, _int(1))
    # mlp, conv: plus a linear layer of the state, f(u) = net(u) + L u (adapted like the others)
    skip: bool = False
    # mlp, conv: f(u) = u * net(u), the network gives per-capita growth rates (positive states)
    per_capita: bool = False


# Each method's settings; `method` picks one. The methods of leads.models.methods take their
# defaults from here, so a run's saved config holds every value its method used.
METHOD_SETTINGS: dict[str, dict[str, Any]] = {
    "erm": {},
    "per_env": {},
    "leads": {"lambda": 1.0e-3, "g_backbone": {}},  # g_backbone: overrides of `model` for g_e
    "coda": {"dim": 2, "l1_hyper": 1.0e-6, "l2_context": 1.0e-4},
    # adapted_layers: all | first | skip (only model.skip's layer)
    "lowrank": {"rank": 8, "l2_context": 0.0, "adapted_layers": "all"},
    "lora": {"rank": 2},
}


@_section
class TeacherForcingConfig(Section):
    """Probability ``start * decay ** (step // every)`` of restarting from the true state."""

    where = "forecaster.teacher_forcing"
    start: float = rule(0.99, _number(0, 1))
    decay: float = rule(0.99, _number(0, 1))
    every: int = rule(10, _int(1))


@_section
class ForecasterConfig(Section):
    where = "forecaster"
    solver: str = rule("rk4", _choice("rk4", "euler"))
    substeps: int = rule(1, _int(1))  # solver steps per observation interval
    # scale states and rates per channel (false: physical units, as LEADS and CoDA on ODEs)
    normalize: bool = True
    # hidden channels added to the observed state, inferred from it by a learned encoder
    # (leads/models/latent.py): for partially observed data (data.observe); 0: none
    latent_channels: int = rule(0, _int(0))
    teacher_forcing: TeacherForcingConfig = dataclasses.field(default_factory=TeacherForcingConfig)


@_section
class TrainConfig(Section):
    where = "train"
    max_steps: int = rule(2000, _int(1))  # also sets the learning-rate schedule
    # a budget in CPU seconds of the training process (training and validation), e.g. 3600: training
    # stops before its clock passes it, or at max_steps, whichever comes first (leads/training/budget.py)
    max_cpu_seconds: float | None = rule(None, _number(0, open_low=True))
    lr: float = rule(1e-3, _number(0, open_low=True))
    scheduler: str = rule("cosine", _choice("cosine", "none"))
    weight_decay: float = rule(0.0, _number(0))
    grad_clip: float | None = rule(1.0, _number(0))
    val_every: int = rule(100, _int(1))  # optimizer steps between validations (the checkpoint is chosen on val)
    explode_factor: float = rule(1e4, _number(1, open_low=True))  # stop if the loss exceeds this many times its first
    # decay of an exponential moving average of the weights (e.g. 0.999), validated and saved in their
    # place (leads/training/averaging.py)
    ema: float | None = rule(None, lambda v: None if 0 < v < 1 else _RANGE + "a decay in (0, 1) such as 0.999, "
                                                                        "got {value}")
    # the network through torch.compile in training: a cheaper step (1.3-1.5x on CPU), the same values
    # to ~1e-7 (benchmarks/step_variants.py); its first steps compile (~20-60 s). How a run is computed,
    # not what: not part of its run id
    compile: bool = False


@_section
class AdaptConfig(Section):
    """Adaptation to new environments (leads.evaluation.adaptation)."""

    where = "adapt"
    sets: list[Any] = dataclasses.field(default_factory=lambda: ["interp", "extrap"])
    shots: int = rule(1, _int(1))  # trajectories per new environment
    steps: int = rule(300, _int(0))
    # auto: Adam for weight tensors, L-BFGS for contexts, Levenberg-Marquardt for physical parameters
    # alone | adam | lbfgs | gauss_newton
    optimizer: str = rule("auto", _choice("auto", "adam", "lbfgs", "gauss_newton"))
    # Adam's, for contexts (lowrank, coda); L-BFGS steps by line search
    lr: float = rule(1e-2, _number(0, open_low=True))
    # Adam's, for methods that adapt weight tensors (leads' g_e, per_env, lora)
    weights_lr: float = rule(1e-3, _number(0, open_low=True))
    # their step budget (Adam on a network needs more steps than L-BFGS on a context); null: steps
    weights_steps: int | None = rule(None, _int(0))
    # their patience (Adam's progress is slow and noisy: a few checks can pass without 1%); null: patience
    weights_patience: int | None = rule(None, _int(1))
    val_every: int = rule(10, _int(1))
    # validations without improvement before stopping: the mean over environments of their kept
    # errors must fall by min_rel_improvement (1%) to count as one
    patience: int = rule(10, _int(1))
    min_rel_improvement: float = rule(0.01, _number(0, 0.5))
    joint: bool = True  # adapt all held-out sets in one optimisation (environments are independent problems)
    init: str = "default"  # default (each method's own: leads/models/methods.py) | mean | zero | random
    # after training, refit the training environments' parameters on this many training trajectories
    # each, as above (stopping on the val split); null: keep them as trained
    refit_train: int | None = rule(None, _int(1))


def _terms(v: Any) -> str | None:
    if v in ("all", "known") or (isinstance(v, list) and all(isinstance(n, str) for n in v)):
        return None
    return "config key '{key}' must be null, all, known, or a list of term names, got {value}"


@_section
class PhysicsConfig(Section):
    """Known terms of the equations: hybrid models (leads.models.physics, docs/physics.md)."""

    where = "physics"
    terms: Any = rule(None, _terms)  # null: none (purely learned) | all | a list, e.g. [diffusion, reaction]
    # learned per environment (identified on new ones) | constants_known (the system's constants, e.g.
    # D_u, D_v, fixed; the rest learned) | true_values (fixed to the truth: an oracle)
    params: str = rule("learned", _choice("learned", "constants_known", "true_values"))
    residual: bool = True  # false: the known terms alone, no network
    # joint: RK4 on the sum | strang: known terms substepped around one residual step | etdrk4:
    # Fourier-diagonal terms (diffusion) exact, the rest by ETDRK4 stages
    integrator: str = rule("joint", _choice("joint", "strang", "etdrk4"))
    substeps: int = rule(1, _int(1))  # steps per observation interval for the known terms (RK4: what stability needs)
    # starting values per environment of the learned parameters, each fitted by start_steps Adam steps,
    # the best kept (non-convex fits: a forcing frequency); in training before step start_after (null:
    # before training without a residual, never with one); always before adaptation
    starts: int = rule(1, _int(1))
    start_steps: int = rule(100, _int(0))
    start_after: int | None = rule(None, _int(0))
    # APHYNITY: loss = trajectory loss + ||residual||^2 / lambda, lambda += tau_2 * trajectory loss
    # after every step
    lambda_0: float = rule(1.0, _number(0, open_low=True))
    tau_2: float = rule(1.0, _number(0))


@_section
class RunConfig(Section):
    """One run, fully resolved: these defaults <- ``configs/<system>.yaml`` <- its profile <- ``--set``."""

    system_name: str
    system: dict[str, Any]  # the system's own settings (envs/<system>.py fills its defaults)
    profile: str = "quick"
    method: str = "lowrank"  # one of the keys of `methods`, or package.module:ClassName
    # training seed (initialisation, batching, teacher forcing), in Lightning's seed_everything range
    seed: int = rule(0, _int(0, 2**32 - 1))
    run_name: str | None = rule(None, _plain_name)  # null: <method>-s<seed>-<config hash>
    runs_dir: str = "runs"
    results_dir: str = "results"
    device: str = "auto"  # auto | cpu | cuda | mps
    devices: int = rule(1, _nonzero)  # Lightning devices
    num_nodes: int = rule(1, _int(1))
    strategy: str = "auto"  # auto | ddp | ...
    # torch threads: null or auto (chosen for the model and the usable CPUs: leads/threads.py) or a
    # count; LEADS_NUM_THREADS wins; how a run is computed, not what: not part of its run id
    threads: Any = rule(None, _thread_count)
    logger: str = rule("wandb", _choice("wandb", "csv", "none"))
    wandb: WandbConfig = dataclasses.field(default_factory=WandbConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    methods: dict[str, Any] = dataclasses.field(default_factory=lambda: copy.deepcopy(METHOD_SETTINGS))
    forecaster: ForecasterConfig = dataclasses.field(default_factory=ForecasterConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    adapt: AdaptConfig = dataclasses.field(default_factory=AdaptConfig)
    physics: PhysicsConfig = dataclasses.field(default_factory=PhysicsConfig)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Validate a resolved configuration; raise a one-line ``UserError`` naming the bad key."""
        return cls.of(data)

    def __post_init__(self) -> None:
        if self.method not in self.methods and ":" not in self.method:  # module:Class is resolved by the model
            raise UserError(f"unknown method '{self.method}'; choose one of: "
                            f"{', '.join(sorted(map(str, self.methods)))}, or your own as package.module:ClassName")
        for name, settings in self.methods.items():
            if not isinstance(settings, dict):
                raise UserError(f"config key 'methods.{name}' must be a mapping of the method's settings, "
                                f"got {settings!r}")
        if self.physics.terms is None and not self.physics.residual:
            raise UserError("physics.residual=false leaves no model: name known terms in physics.terms "
                            "(e.g. all) or keep the residual")
        if self.physics.terms is not None and not self.physics.residual and self.physics.params == "true_values":
            raise UserError("physics.residual=false with physics.params=true_values leaves nothing to learn; "
                            "use physics.params=learned or keep the residual")
        if self.adapt.shots > self.data.n_adapt:  # else adaptation would fail only after training
            raise UserError(f"adapt.shots={self.adapt.shots} exceeds the data.n_adapt={self.data.n_adapt} "
                            "adaptation trajectories per environment; lower adapt.shots or raise data.n_adapt")
        if self.adapt.refit_train is not None and self.adapt.refit_train > self.data.n_train:
            raise UserError(f"adapt.refit_train={self.adapt.refit_train} exceeds the data.n_train="
                            f"{self.data.n_train} training trajectories per environment; lower adapt.refit_train")

    @property
    def method_settings(self) -> dict[str, Any]:
        """The chosen method's settings with its name, as ``build_model`` takes them."""
        return {"name": self.method, **self.methods.get(self.method, {})}


def defaults() -> dict[str, Any]:
    """Every default of a run config in plain form: the base that ``configs/<system>.yaml``, its
    profile and ``--set`` override (``system_name`` and ``system`` come from the system)."""
    out = {}
    for f in dataclasses.fields(RunConfig):
        if f.default is not dataclasses.MISSING:
            out[f.name] = plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = plain(f.default_factory())
    return out


def _parse(cls: type[S], data: Mapping[str, Any], where: str) -> S:
    if not isinstance(data, Mapping):
        raise UserError(f"config section '{where or 'root'}' must be a mapping, got {data!r}")
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise UserError(f"unknown config key '{_key(where, unknown[0])}'; known keys here: "
                        f"{', '.join(sorted(names))}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in names.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise UserError(f"config key '{_key(where, name)}' is missing")
            continue
        key = _key(where, name)
        value = _typed(key, data[name], hints[name])
        check = f.metadata.get("check")
        if check is not None and value is not None and (problem := check(value)):
            raise UserError(problem.format(key=key, value=repr(data[name])))
        values[name] = value
    return cls(**values)


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _typed(key: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the annotation ``hint`` (ints widen to floats)."""
    if hint is Any:  # checked by the field's rule alone
        return value
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        args = typing.get_args(hint)
    origin = typing.get_origin(hint) or hint
    if isinstance(origin, type) and issubclass(origin, Section):
        return origin.of(value, key)
    if origin is DataConfig:
        return parse_data_config(value)
    expected = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
                list: "a list", dict: "a mapping"}[origin]
    if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if origin is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if origin is dict and isinstance(value, Mapping):
        return dict(value)
    if origin is list and isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, origin) and (origin is bool or not isinstance(value, bool)):
        return value
    raise UserError(f"config key '{key}' must be {expected}, got {value!r}")
