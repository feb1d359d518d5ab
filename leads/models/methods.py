"""Multi-environment dynamics models: a backbone plus a way for weights to depend on the environment.

>>> model = build_model({"name": "conv"}, {"name": "lowrank", "rank": 8}, (2, 32, 32), n_envs=4)
>>> dudt = model(u, env)          # u (B, 2, 32, 32), env LongTensor (B,) -> (B, 2, 32, 32)

EnvModel interface (every method):

- ``forward(u, env) -> du/dt``: ``u`` (B, *state_shape), ``env`` integer tensor (B,) of
  environment indices in ``[0, n_envs)``. All environments of a batch go through one batched
  pass. Shapes are checked (``UserError``); index range only for CPU ``env`` tensors (a range
  check on GPU would synchronise on every call of the ODE solver).
- ``penalty(u, env, raw=None, out_scale=None) -> scalar``: the method's penalty, already
  weighted, to be *added* to the loss. ``u`` (N, *state_shape) / ``env`` (N,) are where
  data-dependent penalties are evaluated: pass the batch's observed states (e.g. every time step
  of every trajectory, flattened), as LEADS does; parameter-only penalties ignore them. When the
  model sees normalised states, ``raw`` are the same states in physical units and ``out_scale``
  turns the model's output into physical rates, for penalties defined in physical units. A zero
  tensor for methods without one.
- ``shared_parameters()`` / ``env_parameters()``: disjoint lists covering all parameters.
  ``env_parameters()`` is exactly what adaptation to new environments trains; each of its
  tensors has the environment as first dimension (so ``p[e]`` is environment ``e``'s share).
- ``reset_environments(n_envs, init="default")``: fresh environment-specific parameters for
  ``n_envs`` new environments, shared ones kept. The parameter objects are replaced: build the
  optimizer after calling it.
- ``n_envs``; ``n_params_per_env`` (number of scalars adapted per environment);
  ``effective_weights(e)``: per layer ``(W_e, b_e)`` of environment ``e`` (not for ``leads``).

Methods (``method_cfg`` = ``name`` and the keys below; their defaults are
``leads.config.schema.METHOD_SETTINGS``) and the inits that ``reset_environments`` accepts
(the first is ``default``):

- ``erm``: one network, ``env`` ignored. Nothing to adapt; every init is accepted.
- ``per_env``: one network per environment. Inits ``mean`` (of the old environments' weights),
  ``random`` (as at construction).
- ``leads`` (``lambda``; ``g_backbone``: overrides of the backbone config for ``g``):
  ``f(u) + g_e(u)``, ``g_e`` a per-environment network; penalty
  ``lambda · Σ_e mean_{b in e} ‖g_e(u_b)‖²/‖u_b‖²`` over the environments present in ``env``,
  in physical units as LEADS' code computes it (the ratio is not invariant to the shift and
  scale of a normalisation: in normalised units it weighs 15-40 times more on Lotka-Volterra);
  norms over the whole state (LEADS' code takes them per grid point for fields). LEADS'
  spectral-norm term is not implemented. Inits ``zero`` (random with a zero output layer, so
  a new environment starts from ``f`` alone), ``random`` (as in training), ``mean``.
- ``coda`` (``dim, l1_hyper, l2_context``): ``θ_e = θ + W ξ_e``, ``ξ_e ∈ R^dim``
  shared by all layers, starting at zero; penalty ``l1_hyper · Σ_rows ‖W_i‖₂ + l2_context · ‖Ξ‖²``.
  Inits ``mean`` (of the old contexts), ``zero``.
- ``lowrank`` (``rank, l2_context, adapted_layers``): every layer ``W_e = W + A diag(c_e) B``,
  ``b_e = b + D c_e``, one context ``c_e ∈ R^rank`` shared by all layers (GEPS-like). Contexts
  start at zero (the model is then exactly its backbone); penalty ``l2_context · ‖C‖²``.
  Inits ``mean`` (of the old contexts, as GEPS), ``zero``. ``adapted_layers=skip`` (with
  ``model.skip``) adapts the skip layer only: ``f_e(u) = net(u) + L_e u``, every other layer
  shared, a prior that the environments differ by terms linear in the state; ``first`` adapts the
  first layer only, the context entering a shared network as an input does.
- ``lora`` (``rank``): every layer ``W_e = W + B_e A_e``, biases shared. Inits ``zero``
  (fresh ``A_e``, ``B_e = 0``), ``mean``.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from leads.config.schema import METHOD_SETTINGS
from leads.envs.errors import UserError
from leads.models.adapters import (
    CodaLayer,
    Cond,
    LoraLayer,
    LowRankLayer,
    PerEnvLayer,
    SharedLayer,
    Weights,
)
from leads.models.backbones import build_backbone, resolve_config
from leads.models.layers import Op


class EnvModel(nn.Module):
    """Base class; see the module docstring for the interface."""

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    inits: ClassVar[tuple[str, ...]]  # accepted by reset_environments, the first is the default
    # Whether env_parameters() are weight tensors (adapted at adapt.weights_lr) rather than
    # low-dimensional codes (adapt.lr): a step size good for a context wrecks a network.
    adapts_weights: ClassVar[bool] = False

    def __init__(self, backbone_cfg: dict[str, Any], method_cfg: dict[str, Any],
                 state_shape: tuple[int, ...], n_envs: int) -> None:
        super().__init__()
        _check_n_envs(n_envs)
        self.cfg = resolve_config(f"methods.{self.name}", self.defaults, method_cfg)
        self.backbone_cfg = dict(backbone_cfg)
        self.state_shape = tuple(state_shape)
        self._n_envs = n_envs

    @property
    def n_envs(self) -> int:
        return self._n_envs

    @property
    def n_params_per_env(self) -> int:
        return sum(p.numel() for p in self.env_parameters()) // self.n_envs

    def forward(self, u: Tensor, env: Tensor) -> Tensor:
        return self.dynamics(u, self._check_inputs(u, env))

    def dynamics(self, u: Tensor, env: Tensor) -> Tensor:
        raise NotImplementedError

    def penalty(self, u: Tensor, env: Tensor, raw: Tensor | None = None, out_scale: Tensor | None = None) -> Tensor:
        return self._zero()

    def shared_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def env_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def effective_weights(self, env: int) -> list[Weights]:
        raise UserError(f"method '{self.name}' has no single network per environment")

    def reset_environments(self, n_envs: int, init: str = "default") -> None:
        _check_n_envs(n_envs)
        if init not in self.inits and init != "default":
            raise UserError(f"init '{init}' is not available for method '{self.name}'; "
                            f"choose one of: default, {', '.join(self.inits)}")
        self._reset(n_envs, self.inits[0] if init == "default" else init)
        self._n_envs = n_envs

    def _reset(self, n_envs: int, init: str) -> None:
        raise NotImplementedError

    def _zero(self) -> Tensor:
        p = next(self.parameters())
        return torch.zeros((), dtype=p.dtype, device=p.device)

    def _check_inputs(self, u: Tensor, env: Tensor) -> Tensor:
        if not isinstance(u, Tensor) or not isinstance(env, Tensor):
            raise UserError("model inputs must be tensors: u (B, *state_shape) and env (B,) of integers")
        if tuple(u.shape[1:]) != self.state_shape or u.dim() != len(self.state_shape) + 1:
            want = ", ".join(map(str, self.state_shape))
            raise UserError(f"state batch has shape {tuple(u.shape)}; expected (B, {want})")
        if env.shape != (u.shape[0],):
            raise UserError(f"env has shape {tuple(env.shape)}; expected ({u.shape[0]},), one index a sample")
        if env.dtype.is_floating_point or env.dtype.is_complex or env.dtype == torch.bool:
            raise UserError(f"env has dtype {env.dtype}; expected integer environment indices (torch.long)")
        # The range check reads values (a sync, and a graph break under torch.compile, where the
        # indices are the training batches' own: train.compile); shapes and dtypes are checked always.
        if env.device.type == "cpu" and env.numel() and not torch.compiler.is_compiling() and (
                int(env.min()) < 0 or int(env.max()) >= self.n_envs):
            raise UserError(f"env indices span [{int(env.min())}, {int(env.max())}] but the model has "
                            f"{self.n_envs} environments; indices must lie in [0, {self.n_envs})")
        return env.long()


def _check_n_envs(n_envs: int) -> None:
    if not isinstance(n_envs, int) or isinstance(n_envs, bool) or n_envs < 1:
        raise UserError(f"n_envs={n_envs!r} must be a positive integer")


class _SingleNetwork(EnvModel):
    """Methods with one backbone whose layers carry the environment dependence."""

    def __init__(self, backbone_cfg: dict[str, Any], method_cfg: dict[str, Any],
                 state_shape: tuple[int, ...], n_envs: int) -> None:
        super().__init__(backbone_cfg, method_cfg, state_shape, n_envs)
        self.net = build_backbone(backbone_cfg, state_shape, self._make_layer)

    def _make_layer(self, op: Op) -> nn.Module:
        raise NotImplementedError

    def _model_env_parameters(self) -> list[nn.Parameter]:
        """Environment parameters owned by the model rather than by its layers (contexts)."""
        return []

    def _code(self, env: Tensor | int) -> Tensor | None:
        return None

    def dynamics(self, u: Tensor, env: Tensor) -> Tensor:
        return self.net(u, Cond(env, self._code(env)))

    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.net.layers for p in layer.shared_parameters()]

    def env_parameters(self) -> list[nn.Parameter]:
        return self._model_env_parameters() + [p for layer in self.net.layers for p in layer.env_parameters()]

    def effective_weights(self, env: int) -> list[Weights]:
        code = self._code(env)
        return [layer.effective_weights(env, code) for layer in self.net.layers]

    def _reset(self, n_envs: int, init: str) -> None:
        for layer in self.net.layers:
            layer.reset_environments(n_envs, init)


class ERM(_SingleNetwork):
    name = "erm"
    defaults = METHOD_SETTINGS["erm"]
    inits = ("zero", "random", "mean")

    def _make_layer(self, op: Op) -> nn.Module:
        return SharedLayer(op)


class PerEnv(_SingleNetwork):
    name = "per_env"
    defaults = METHOD_SETTINGS["per_env"]
    adapts_weights = True
    inits = ("mean", "random")

    def _make_layer(self, op: Op) -> nn.Module:
        return PerEnvLayer(op, self.n_envs)


class _Contextual(_SingleNetwork):
    """Methods with one context vector per environment shared by all layers, starting at zero."""

    inits = ("mean", "zero")
    context_key: ClassVar[str]

    def __init__(self, backbone_cfg: dict[str, Any], method_cfg: dict[str, Any],
                 state_shape: tuple[int, ...], n_envs: int) -> None:
        super().__init__(backbone_cfg, method_cfg, state_shape, n_envs)
        self.contexts = nn.Parameter(torch.zeros(n_envs, self.cfg[self.context_key]))

    def _model_env_parameters(self) -> list[nn.Parameter]:
        return [self.contexts]

    def _code(self, env: Tensor | int) -> Tensor:
        return self.contexts[env]

    def _reset(self, n_envs: int, init: str) -> None:
        old = self.contexts.detach()
        new = old.mean(0, keepdim=True).expand(n_envs, -1).clone() if init == "mean" else \
            torch.zeros(n_envs, old.shape[1], dtype=old.dtype, device=old.device)
        self.contexts = nn.Parameter(new)

    def _context_penalty(self) -> Tensor:
        weight = self.cfg["l2_context"]
        return weight * self.contexts.square().sum() if weight else self._zero()


class LowRank(_Contextual):
    name = "lowrank"
    defaults = METHOD_SETTINGS["lowrank"]
    context_key = "rank"

    def __init__(self, backbone_cfg: dict[str, Any], method_cfg: dict[str, Any],
                 state_shape: tuple[int, ...], n_envs: int) -> None:
        super().__init__(backbone_cfg, method_cfg, state_shape, n_envs)
        which = self.cfg["adapted_layers"]
        if which not in ("all", "first", "skip"):
            raise UserError(f"methods.lowrank.adapted_layers={which!r} must be all, first or skip")
        if which == "skip" and not self.net.cfg.get("skip"):
            raise UserError("methods.lowrank.adapted_layers=skip needs the skip layer: set model.skip=true "
                            "(mlp or conv)")
        # skip: the environment reaches the output only through the layer linear in the state;
        # first: only through the first layer (the context as an input of a shared network)
        keep = {"all": range(len(self.net.layers)), "first": [0], "skip": [len(self.net.layers) - 1]}[which]
        for i in range(len(self.net.layers)):
            if i not in keep:
                self.net.layers[i] = SharedLayer(self.net.layers[i].op)

    def _make_layer(self, op: Op) -> nn.Module:
        return LowRankLayer(op, self.cfg["rank"])

    def penalty(self, u: Tensor, env: Tensor, raw: Tensor | None = None, out_scale: Tensor | None = None) -> Tensor:
        return self._context_penalty()


class Coda(_Contextual):
    name = "coda"
    defaults = METHOD_SETTINGS["coda"]
    context_key = "dim"

    def _make_layer(self, op: Op) -> nn.Module:
        return CodaLayer(op, self.cfg["dim"])

    def penalty(self, u: Tensor, env: Tensor, raw: Tensor | None = None, out_scale: Tensor | None = None) -> Tensor:
        penalty = self._context_penalty()
        if self.cfg["l1_hyper"]:
            # group lasso: Σ over the network's parameters of the norm of their hypernetwork row
            rows = [r for layer in self.net.layers for r in layer.hyper_rows()]
            norms = sum(torch.linalg.vector_norm(r, dim=0).sum() for r in rows)
            penalty = penalty + self.cfg["l1_hyper"] * norms
        return penalty


class Lora(_SingleNetwork):
    name = "lora"
    adapts_weights = True
    defaults = METHOD_SETTINGS["lora"]
    inits = ("zero", "mean")

    def _make_layer(self, op: Op) -> nn.Module:
        return LoraLayer(op, self.cfg["rank"], self.n_envs)


class Leads(EnvModel):
    name = "leads"
    adapts_weights = True
    defaults = METHOD_SETTINGS["leads"]
    inits = ("zero", "random", "mean")

    def __init__(self, backbone_cfg: dict[str, Any], method_cfg: dict[str, Any],
                 state_shape: tuple[int, ...], n_envs: int) -> None:
        super().__init__(backbone_cfg, method_cfg, state_shape, n_envs)
        self.f = build_backbone(backbone_cfg, state_shape, SharedLayer)
        g_cfg = {**backbone_cfg, **self.cfg["g_backbone"]}
        self.g = build_backbone(g_cfg, state_shape, lambda op: PerEnvLayer(op, n_envs))

    def dynamics(self, u: Tensor, env: Tensor) -> Tensor:
        cond = Cond(env)
        return self.f(u, cond) + self.g(u, cond)

    def penalty(self, u: Tensor, env: Tensor, raw: Tensor | None = None, out_scale: Tensor | None = None) -> Tensor:
        weight = self.cfg["lambda"]
        if not weight:
            return self._zero()
        env = self._check_inputs(u, env)
        g = self.g(u, Cond(env))
        if out_scale is not None:
            g = g * out_scale
        x = u if raw is None else raw
        tiny = torch.finfo(u.dtype).tiny
        ratio = g.flatten(1).square().sum(1) / x.flatten(1).square().sum(1).clamp_min(tiny)
        # Σ_e of the mean over environment e's samples, without a loop over environments
        sums = ratio.new_zeros(self.n_envs).index_add(0, env, ratio)
        counts = torch.bincount(env, minlength=self.n_envs).clamp_min(1).to(ratio.dtype)
        return weight * (sums / counts).sum()

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.f.parameters())

    def env_parameters(self) -> list[nn.Parameter]:
        return list(self.g.parameters())

    def _reset(self, n_envs: int, init: str) -> None:
        # "zero" zeroes only the output layers: an all-zero network would have zero gradients
        layer_inits = [init] * len(self.g.layers)
        if init == "zero":
            outputs = self.g.output_layers
            layer_inits = ["zero" if i in outputs else "random" for i in range(len(layer_inits))]
        for layer, layer_init in zip(self.g.layers, layer_inits, strict=True):
            layer.reset_environments(n_envs, layer_init)


METHODS: dict[str, type[EnvModel]] = {cls.name: cls for cls in (ERM, PerEnv, Leads, Coda, LowRank, Lora)}


def resolve_method(name: str) -> type[EnvModel]:
    """The method class of ``name``: a key of ``METHODS``, or ``package.module:ClassName`` for a
    method of your own (an ``EnvModel`` subclass importable from the Python path), which then
    trains, adapts, evaluates and ranks like the built-in ones (docs/extending.md)."""
    if name in METHODS:
        return METHODS[name]
    module_name, sep, class_name = str(name).partition(":")
    if not sep:
        raise UserError(f"unknown method {name!r}; choose one of: {', '.join(sorted(METHODS))}, "
                        "or give your own as package.module:ClassName")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UserError(f"method {name!r}: cannot import module {module_name!r} ({e}); "
                        "put its directory on PYTHONPATH") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, EnvModel)):
        what = "has no class" if cls is None else "is not an EnvModel subclass:"
        raise UserError(f"method {name!r}: module {module_name!r} {what} {class_name!r}; "
                        "a method is a subclass of leads.models.methods.EnvModel")
    return cls


def build_model(backbone_cfg: dict[str, Any], method_cfg: dict[str, Any],
                state_shape: tuple[int, ...], n_envs: int) -> EnvModel:
    """A multi-environment model ``(u, env) -> du/dt``.

    Args:
        backbone_cfg: ``name`` (``mlp``, ``conv``, ``fno``) and its settings (``model:``).
        method_cfg: ``name`` (a key of ``METHODS``, default ``lowrank``, or
            ``package.module:ClassName``) and its settings.
        state_shape: the shape of one state, e.g. ``(2,)`` or ``(2, 32, 32)``.
        n_envs: the number of training environments.

    Returns:
        The ``EnvModel`` (interface in this module's docstring).
    """
    method_cfg = dict(method_cfg)
    name = method_cfg.pop("name", "lowrank")
    return resolve_method(name)(backbone_cfg, method_cfg, tuple(state_shape), n_envs)
