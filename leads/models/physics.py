"""The physics part of a hybrid model: known terms of the equations, with per-environment parameters.

``du/dt = physics_e(u) + residual_e(u)``: ``physics_e`` sums the terms of the system named in
``physics.terms`` (``envs/``: the same code the data were generated with), evaluated with
environment ``e``'s own physical parameters. Those parameters are learned with the rest of the
model (``physics.params: learned``); or the system's constants, the same in every environment
(Gray-Scott's D_u, D_v), are known and only the environment parameters are learned
(``constants_known``: the setting of the GEPS code's GEPS-Phy and APHYNITY rows); or all are
fixed to the true values (``true_values``, an oracle for comparison). Learned values are stored
as ``scale * theta`` with ``theta`` near 1, so one learning rate fits parameters of any
magnitude (F ~ 0.03, k1 ~ 100); on a new environment ``theta`` starts from the mean of the
training environments' and is adapted with the method's own environment parameters, which
identifies the new environment's physical parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from leads.envs.base import Env, System
from leads.envs.errors import UserError

if TYPE_CHECKING:
    from leads.config.schema import RunConfig

PARAM_MODES = ("learned", "constants_known", "true_values")
# RK4's stability interval on the negative real axis is [-2.785, 0]; a margin below it.
RK4_STABLE_STEP = 2.5


class PhysicsPart(nn.Module):
    """The known terms ``terms`` of ``system`` with one parameter row per environment.

    Args:
        system: the system whose terms are used.
        terms: names of its terms (checked: an unknown name is a one-line error).
        envs: the training environments (their true parameters give the initial values).
        mode: ``learned`` (start every environment at the training mean, then learn),
            ``constants_known`` (the system's constants fixed to their values, the environment
            parameters learned) or ``true_values`` (fixed to each environment's true parameters).
    """

    def __init__(self, system: System, terms: Sequence[str], envs: Sequence[Env], mode: str = "learned") -> None:
        super().__init__()
        if mode not in PARAM_MODES:
            raise UserError(f"physics.params={mode!r} must be one of: {', '.join(PARAM_MODES)}")
        self.system = system
        self.terms = system.check_terms(terms)
        self.names = system.term_parameters(self.terms)
        self.mode = mode
        self.learned = [mode == "learned" or (mode == "constants_known" and p not in system.constants)
                        for p in self.names]
        truth = self.true_values(envs)
        mean = truth.mean(0)
        # The scale of each parameter: its typical magnitude (1 when it is 0 in every environment).
        scale = torch.where(mean.abs() > 0, mean.abs(), torch.ones_like(mean))
        self.register_buffer("scale", scale)
        cols = [i for i, learned in enumerate(self.learned) if learned]
        self.register_buffer("_learned_cols", torch.tensor(cols, dtype=torch.long), persistent=False)
        # Fixed values (scaled), rebuilt from the environments: not part of a checkpoint.
        self.register_buffer("fixed", truth / scale, persistent=False)
        self.theta = nn.Parameter((mean / scale)[cols].expand(len(envs), -1).clone())

    @property
    def n_envs(self) -> int:
        return self.theta.shape[0]

    def true_values(self, envs: Sequence[Env]) -> Tensor:
        """``(len(envs), n_params)`` true values of ``names`` (float32)."""
        values = self.system.parameter_values(self.system.env_tensor(list(envs)))
        rows = [torch.as_tensor(values[p], dtype=torch.float64).expand(len(envs)) for p in self.names]
        return torch.stack(rows, dim=1).float() if rows else torch.zeros(len(envs), 0)

    @property
    def learned_names(self) -> list[str]:
        """The parameters that are learned (and identified on new environments)."""
        return [p for p, learned in zip(self.names, self.learned) if learned]

    def values(self) -> Tensor:
        """``(n_envs, n_params)`` current physical values, in the order of ``names``."""
        if all(self.learned):
            return self.theta * self.scale
        return self.fixed.index_copy(1, self._learned_cols, self.theta) * self.scale

    def estimates(self) -> list[dict[str, float]]:
        """The current parameter values of each environment, by name."""
        v = self.values().detach().cpu().double()
        return [{p: float(v[e, i]) for i, p in enumerate(self.names)} for e in range(self.n_envs)]

    def forward(self, t: float | Tensor, u: Tensor, env: Tensor) -> Tensor:
        return self.field(env, u.dtype)(t, u)

    def field(self, env: Tensor, dtype: torch.dtype = torch.float32,
              skip: Sequence[str] = ()) -> Callable[[float | Tensor, Tensor], Tensor]:
        """The known terms as ``f(t, u)`` for samples of environments ``env``, their parameters
        looked up and shaped once: an integrator calls it dozens of times per interval.

        Args:
            env: ``(B,)`` environment index of each sample.
            dtype: the states' dtype.
            skip: terms left out (those an exponential integrator takes exactly).

        Returns:
            ``f(t, u) -> du/dt`` of the known terms for ``(B, *state_shape)`` states.
        """
        values = self.values()[env].to(dtype)
        named = {p: values[:, i] for i, p in enumerate(self.names)}
        terms = tuple(x for x in self.terms if x not in skip)
        return lambda t, u: self.system.terms_rhs(terms, t, u, named)

    @property
    def spectral_terms(self) -> tuple[str, ...]:
        """The known terms that are linear and diagonal in Fourier space (diffusion)."""
        return tuple(x for x in self.terms if x in self.system.spectral_terms)

    def symbol(self, env: Tensor) -> Tensor:
        """The Fourier symbol of the ``spectral_terms`` for the samples of environments ``env``,
        float64 (on the CPU for MPS), ``(B or 1, C, n, n//2+1)``, differentiable in learned parameters."""
        values = self.values()
        values = (values.cpu() if values.device.type == "mps" else values).double()  # MPS has no float64
        named = {p: values[:, i] for i, p in enumerate(self.names)}
        L = self.system.linear_symbol(self.spectral_terms, named)
        return L[env.to(L.device)] if L.shape[0] > 1 else L

    def stable_substeps(self, h: float) -> int:
        """RK4 substeps per interval ``h`` that keep the known terms stable with the current values."""
        values = self.values().detach()
        rate = self.system.stiffness(self.terms, {p: values[:, i] for i, p in enumerate(self.names)})
        return max(1, math.ceil(abs(h) * rate / RK4_STABLE_STEP))

    def env_parameters(self) -> list[nn.Parameter]:
        return [self.theta] if any(self.learned) else []

    def reset_environments(self, envs: Sequence[Env] | int) -> None:
        """Parameters for new environments: learned ones start at the training mean; fixed ones
        take the true values of ``envs`` (the system's constants need only their number)."""
        n = envs if isinstance(envs, int) else len(envs)
        if not isinstance(envs, int):
            self.fixed = (self.true_values(envs) / self.scale.cpu()).to(self.fixed)
        elif self.mode == "true_values":
            raise UserError("physics.params=true_values needs the new environments' parameters; "
                            "pass the environments to adapt, or use physics.params=learned")
        else:  # constants only: the same in every environment
            self.fixed = self.fixed[:1].expand(n, -1).clone()
        mean = self.theta.detach().mean(0, keepdim=True)
        self.theta = nn.Parameter(mean.expand(n, -1).clone())


def residual_fields(system: System, terms: Sequence[str]) -> Tensor | None:
    """Which fields a hybrid model's residual acts on, ``(C,)`` bool, for a system that
    declares learned terms: the fields whose equations hold a term not among the known ``terms``
    (PDE-NetGen's unknown closures). None (every field) for other systems, or when every field
    has one."""
    if not system.learned_terms:
        return None
    missing = {f for n in system.terms if n not in terms for f in system.term_fields(n)}
    mask = torch.tensor([f in missing for f in system.state_names])
    return None if bool(mask.all()) or not bool(mask.any()) else mask


def method_label(cfg: RunConfig) -> str:
    """The name a run's rows and leaderboard line carry: the method, with its known terms when
    it has some (``lowrank+phys[diffusion,reaction]``; ``phys[all]`` without a residual), so
    physics-aware rows never mix with purely learned ones."""
    pc = cfg.physics
    if not pc.terms:
        return str(cfg.method)
    terms = pc.terms if isinstance(pc.terms, str) else ",".join(pc.terms)
    known = f"phys[{terms}{'' if pc.params == 'learned' else ',' + pc.params}]"
    return f"{cfg.method}+{known}" if pc.residual else known
