"""Initial-state generators a system file can choose (``initial_state: {kind: ..., ...}``).

Each draws one state per seed from its own ``numpy.random.default_rng(seed)``, so a trajectory's
initial state depends on its seed alone, never on its batch or device.

- ``uniform``: each field uniform in ``ranges: {field: [low, high]}``; one number per field for
  an ODE (the hand-written ODE systems' draw), independent values per grid point for a PDE.
- ``squares``: ``background: {field: value}`` with ``count`` squares of side ``size`` set to
  ``inside: {field: value}``, their corners drawn inside the grid (the reference Gray-Scott's).
- ``random_field``: a smooth periodic random field per field, Fourier modes with integer
  wavenumbers ``|k_i| <= modes`` and Gaussian amplitudes, scaled to exactly ``mean`` and
  ``std`` over the grid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from leads.envs.base import seed_rng
from leads.envs.errors import UserError

KINDS = {
    "uniform": {"ranges"},
    "squares": {"background", "inside", "count", "size"},
    "random_field": {"mean", "std", "modes"},
}


def _number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def check_initial_state(spec: Any, fields: Sequence[str], dims: int, size: int | None, where: str) -> None:
    """One-line ``UserError`` unless ``spec`` is a valid generator for these fields and grid."""
    fix = f"write initial_state: {{kind: one of {', '.join(KINDS)}, ...}} (docs/equations.md)"
    if not isinstance(spec, Mapping) or spec.get("kind") not in KINDS:
        got = spec.get("kind") if isinstance(spec, Mapping) else spec
        raise UserError(f"{where}: initial_state kind {got!r} is not known; {fix}")
    kind = spec["kind"]
    keys = set(spec) - {"kind"}
    if keys != KINDS[kind]:
        raise UserError(f"{where}: initial_state of kind {kind} takes exactly the keys "
                        f"{', '.join(sorted(KINDS[kind]))}; got {', '.join(sorted(keys)) or 'none'}")
    per_field = {"uniform": ("ranges",), "squares": ("background", "inside"), "random_field": ("mean", "std")}[kind]
    for key in per_field:
        value = spec[key]
        if not isinstance(value, Mapping) or set(value) != set(fields):
            raise UserError(f"{where}: initial_state.{key} must give one value per field ({', '.join(fields)}); "
                            f"got {value!r}")
        for f, v in value.items():
            ok = (isinstance(v, Sequence) and len(v) == 2 and all(_number(x) for x in v) and v[0] <= v[1]) \
                if key == "ranges" else _number(v) and (key != "std" or v >= 0)
            if not ok:
                want = "[low, high] with low <= high" if key == "ranges" else \
                    "a non-negative number" if key == "std" else "a finite number"
                raise UserError(f"{where}: initial_state.{key}.{f}={v!r} must be {want}")
    if kind == "squares":
        if dims != 2:
            raise UserError(f"{where}: initial_state kind squares needs a 2-D grid; use uniform or random_field")
        if not (_count(spec["count"]) and _count(spec["size"]) and 1 <= spec["size"] < (size or 0)):
            raise UserError(f"{where}: initial_state squares need a count >= 0 and a size in [1, grid size); "
                            f"got count={spec['count']!r}, size={spec['size']!r}")
    if kind == "random_field":
        if dims == 0:
            raise UserError(f"{where}: initial_state kind random_field needs a grid; use uniform for an ODE")
        if not (_count(spec["modes"]) and 1 <= spec["modes"] < (size or 0) // 2):
            raise UserError(f"{where}: initial_state.modes={spec['modes']!r} must be an integer in [1, size/2)")


def sample(spec: Mapping[str, Any], fields: Sequence[str], dims: int, size: int | None,
           seeds: Sequence[int]) -> np.ndarray:
    """``(len(seeds), n_fields, *grid)`` float64 initial states, one generator per seed."""
    shape = (len(fields), *((size,) * dims))
    out = np.empty((len(seeds), *shape))
    for i, seed in enumerate(seeds):
        rng = seed_rng(seed)
        out[i] = _draw(spec, fields, dims, size, rng, shape)
    return out


def _draw(spec: Mapping[str, Any], fields: Sequence[str], dims: int, size: int | None,
          rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    kind = spec["kind"]
    if kind == "uniform":
        ranges = np.asarray([spec["ranges"][f] for f in fields], dtype=np.float64)
        if dims == 0:
            return rng.uniform(ranges[:, 0], ranges[:, 1])
        lo = ranges[:, 0].reshape(-1, *[1] * dims)
        hi = ranges[:, 1].reshape(-1, *[1] * dims)
        return rng.uniform(lo, hi, size=shape)
    if kind == "squares":
        assert size is not None
        r = spec["size"]
        state = np.empty(shape)
        for c, f in enumerate(fields):
            state[c] = spec["background"][f]
        for _ in range(spec["count"]):
            x, y = rng.integers(0, size - r, size=2)
            for c, f in enumerate(fields):
                state[c, x : x + r, y : y + r] = spec["inside"][f]
        return state
    state = np.empty(shape)
    for c, f in enumerate(fields):
        state[c] = _smooth(rng, dims, size or 0, spec["modes"], spec["mean"][f], spec["std"][f])
    return state


def _smooth(rng: np.random.Generator, dims: int, n: int, modes: int, mean: float, std: float) -> np.ndarray:
    kfull = np.fft.fftfreq(n, 1.0 / n)
    khalf = np.fft.rfftfreq(n, 1.0 / n)
    axes = [kfull] * (dims - 1) + [khalf]
    grids = np.meshgrid(*axes, indexing="ij")
    keep = np.all([np.abs(k) <= modes for k in grids], axis=0) & np.any([k != 0 for k in grids], axis=0)
    spec = (rng.standard_normal(keep.shape) + 1j * rng.standard_normal(keep.shape)) * keep
    field = np.fft.irfftn(spec, s=(n,) * dims)
    spread = field.std()
    return mean + (std * (field - field.mean()) / spread if spread > 0 else 0.0)
