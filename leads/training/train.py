"""Training a forecaster with Lightning: data, run directory, checkpoints, resume."""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from leads.config.loading import config_hash, save_config, system_of
from leads.config.paths import check_output_dirs
from leads.config.schema import RunConfig, plain
from leads.datasets.atomic import atomic_write_text
from leads.datasets.datamodule import TrajectoryDataModule, check_window
from leads.datasets.h5 import load_split
from leads.envs.base import env_label
from leads.envs.errors import UserError
from leads.envs.registry import data_version
from leads.models.forecaster import SEARCH_TRAJECTORIES, Forecaster
from leads.training.averaging import EMAWeights
from leads.training.budget import CPUBudget
from leads.training.checkpoints import (
    AtomicCheckpointIO,
    TrainClock,
    ValidateLastStep,
    check_resume_checkpoint,
    checkpoint_callbacks,
    remove_stale_temps,
)
from leads.training.curves import LearningCurve
from leads.training.interrupted import Interrupted, checkpoint_step
from leads.training.loggers import make_logger
from leads.training.physics_starts import SearchPhysicsAfter
from leads.training.progress import TrainProgress, quiet_third_party
from leads.training.segments import end_segment, start_segment

ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps")
RUN_DIR_ENV = "LEADS_RUN_DIR"  # rank 0's run directory, inherited by the ranks DDP launches

# Lightning notices that do not apply here: tiny epochs are by design (balanced windows); the
# sampler skips what a resumed run already trained on (datasets/sharding.py); validation scores
# are all-gathered by the module itself under DDP.
IGNORED_WARNINGS = (".*LeafSpec.*", ".*smaller than the logging interval.*", ".*dataloader is not resumable.*",
                    ".*does not have many workers.*", ".*when logging on epoch level in distributed setting.*")


@dataclass
class TrainedRun:
    run_dir: Path
    run_id: str
    best_ckpt: Path
    module: Forecaster
    train_seconds: float
    logger: Any
    is_global_zero: bool = True  # under DDP only rank 0 evaluates and writes results
    best_val_rel_l2: float = float("nan")  # the in-domain validation error that chose best_ckpt
    train_cpu_seconds: float = float("nan")
    train_steps: int | None = None  # the steps trained: max_steps, or fewer where train.max_cpu_seconds stopped it
    stop: str = "max_steps"  # why training ended: max_steps | cpu_budget
    step_cpu_seconds: float = float("nan")  # the CPU cost of the last training step
    resumed_finished: bool = False  # training had finished before: this call only loaded its best checkpoint


# Keys added after runs existed, with their defaults: at them a run id is the one from before
# the key, so finished runs are still found (``reproduce`` skips them).
_KEYS_ADDED_LATER = {"adapt": {"weights_steps": None, "weights_patience": None, "refit_train": None},
                     "data": {"observe": None}, "forecaster": {"latent_channels": 0},
                     "model": {"skip": False, "per_capita": False}, "train": {"ema": None, "max_cpu_seconds": None}}
_METHOD_KEYS_ADDED_LATER = {("lowrank", "adapted_layers"): "all", ("lowrank", "l2_context"): 0.0,
                            ("leads", "g_backbone"): {}}


def run_id_of(cfg: RunConfig | Mapping[str, Any]) -> str:
    """``run_name``, or ``<method>-s<seed>-<hash>`` of the plain form without its bookkeeping
    (the plain form, as saved with a run: a run saved before a key existed keeps its id)."""
    ident = plain(cfg)
    if ident.get("run_name"):
        return str(ident["run_name"])
    # The seed and run bookkeeping do not change what is trained... except the seed, which is kept.
    ident = {k: v for k, v in ident.items() if k not in ("run_name", "device", "devices", "num_nodes",
                                                        "strategy", "threads", "logger", "wandb", "runs_dir",
                                                        "results_dir")}
    if (ident.get("train") or {}).get("compile") is not None:  # how a step is computed, like the device
        ident["train"] = {k: v for k, v in ident["train"].items() if k != "compile"}
    if not (ident.get("physics") or {}).get("terms"):
        ident.pop("physics", None)  # no known terms: the same run as before physics existed
    elif ident["physics"].get("starts") == 1:  # keys added later, at their defaults: ids from before them
        ident["physics"] = {k: v for k, v in ident["physics"].items()
                            if k not in ("starts", "start_steps", "start_after")}
    for section, later in _KEYS_ADDED_LATER.items():
        if ident.get(section):
            ident[section] = {k: v for k, v in ident[section].items() if k not in later or v != later[k]}
    methods = ident.get("methods") or {}
    if methods:
        ident["methods"] = {name: {k: v for k, v in settings.items()
                                   if _METHOD_KEYS_ADDED_LATER.get((name, k), object()) != v}
                            if isinstance(settings, dict) else settings
                            for name, settings in methods.items()}
    version = data_version(str(ident.get("system_name")))
    if version != 1:  # a run on older data is another run, not a finished one
        ident["data_version"] = version
    method = re.sub(r"[^A-Za-z0-9_.-]", "_", str(ident["method"]))  # module:Class -> a directory name
    return f"{method}-s{ident['seed']}-{config_hash(ident, 8)}"


def runs_of(cfg: RunConfig) -> list[Path]:
    """The run directories of this config (its run id, and ``<id>-2``, ... for repeats), oldest first."""
    base_id = run_id_of(cfg)
    root = Path(cfg.runs_dir) / cfg.system_name
    return sorted((p for p in root.glob(f"{base_id}*") if p.is_dir() and
                   (p.name == base_id or p.name[len(base_id):].lstrip("-").isdigit())),
                  key=lambda p: p.stat().st_mtime)


def run_dir_for(cfg: RunConfig, resume: bool) -> tuple[Path, str]:
    """``resume`` continues the latest run of this config; otherwise a fresh directory, never
    one that already holds a user's run."""
    base_id = run_id_of(cfg)
    root = Path(cfg.runs_dir) / cfg.system_name
    candidates = runs_of(cfg)
    if resume:
        if not candidates:
            raise UserError(f"--resume found no earlier run {base_id} under {root}; run without --resume")
        return candidates[-1], candidates[-1].name
    run_id, n = base_id, 1
    while (root / run_id).exists():
        n += 1
        run_id = f"{base_id}-{n}"
    return root / run_id, run_id


def _ddp_child() -> bool:
    # Lightning launches ranks 1.. of a DDP run as copies of this script with LOCAL_RANK set.
    return os.environ.get("LOCAL_RANK", "0") not in ("", "0")


def claim_run_dir(cfg: RunConfig, resume: bool) -> tuple[Path, str]:
    """:func:`run_dir_for`, safe for runs started together: a fresh directory is created
    atomically (two runs of one config get two directories), and DDP ranks > 0 use rank 0's."""
    if _ddp_child() and os.environ.get(RUN_DIR_ENV):
        run_dir = Path(os.environ[RUN_DIR_ENV])
        return run_dir, run_dir.name
    while True:
        run_dir, run_id = run_dir_for(cfg, resume)
        try:
            run_dir.mkdir(parents=True, exist_ok=resume)
            return run_dir, run_id
        except FileExistsError:
            continue  # another process took this name between the check and the mkdir


def trainer_kwargs(cfg: RunConfig) -> dict[str, Any]:
    device = cfg.device
    if device not in ACCELERATORS:
        raise UserError(f"unknown device '{device}'; choose one of: {', '.join(ACCELERATORS)}")
    if device in ("cuda", "gpu") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for but no CUDA device is visible; use --device cpu")
    return {
        "accelerator": "gpu" if device == "cuda" else device,
        "devices": cfg.devices,
        "num_nodes": cfg.num_nodes,
        "strategy": cfg.strategy,
    }


def data_and_model(cfg: RunConfig, progress: bool | None = None) -> tuple[TrajectoryDataModule, Forecaster]:
    """The data module (its files generated if missing, with ``progress``) and a fresh model
    whose normalisation is measured on the training split."""
    system = system_of(cfg)
    # Training reads train and val; the test split and each held-out set are generated when scored.
    dm = TrajectoryDataModule(system, cfg.data, progress=progress, splits=("train", "val"))
    dm.prepare_data()
    dm.setup("fit")
    train_data = load_split(dm.paths["train"])
    # The data's shape: the system's state, or the part of it data.observe keeps.
    module = Forecaster(cfg, tuple(train_data.states.shape[3:]), [env_label(e) for e in system.train_envs])
    states = train_data.states.flatten(0, 1)
    t = torch.as_tensor(train_data.t, dtype=states.dtype)
    module.fit_normalization(states, t)
    # Several starting values of the known terms' parameters, fitted on the training data
    # (physics.starts), here when physics.start_after says before training (SearchPhysicsAfter otherwise).
    pc = cfg.physics
    if _search_after(cfg) == 0:
        module.search_physics(train_data.states, t, int(pc.starts), int(pc.start_steps), int(cfg.seed))
    return dm, module


def _search_after(cfg: RunConfig) -> int | None:
    """The training step before which the known terms' parameters are searched (None: never).
    By default, before training without a residual and never with one (untrained, it is noise,
    and the known terms alone would be fitted to what the missing ones do: the pendulum without
    friction got omega0 ~ 3.8 for 0.5); adaptation always searches, with the trained residual."""
    pc = cfg.physics
    if not pc.terms or pc.starts <= 1:
        return None
    if pc.start_after is None:
        return None if pc.residual else 0
    return int(pc.start_after)


def _physics_search_callbacks(cfg: RunConfig, dm: TrajectoryDataModule) -> list[pl.Callback]:
    after = _search_after(cfg)
    if not after:
        return []
    # Only what the search uses is read, and kept for the whole of training.
    data = load_split(dm.paths["train"], trajectories=SEARCH_TRAJECTORIES)
    pc = cfg.physics
    return [SearchPhysicsAfter(data.states, torch.as_tensor(data.t, dtype=torch.float32), int(pc.starts),
                               int(pc.start_steps), int(cfg.seed), after)]


def train(cfg: RunConfig | Mapping[str, Any], resume: bool = False, progress: bool = True,
          callbacks: Sequence[pl.Callback] = (), test_curve: bool = False) -> TrainedRun:
    """Train a run and return its best checkpoint, chosen on validation.

    Args:
        cfg: the run configuration (``load_config``'s result, or its plain form).
        resume: continue the latest run of this configuration from its ``last.ckpt``.
        progress: show progress (a bar on a terminal, plain lines in a log; ``datasets/progress.py``).
        callbacks: added to Lightning's (benchmarks use them to trace validation error).
        test_curve: also score the in-domain test split at every validation, for learning-curve
            figures only (``<run>/curve.jsonl``; nothing selects on it).

    Returns:
        ``TrainedRun``: the run directory and id, the best checkpoint and its module, seconds.
    """
    cfg = RunConfig.of(cfg)
    # What can fail before work starts fails here, before a run directory is made.
    check_output_dirs(cfg, ("runs_dir", "data.dir"))
    check_window(system_of(cfg), cfg.data)  # a bad system config fails here too
    if resume:
        check_resume(cfg)  # before anything is generated or overwritten
    run_dir, run_id = claim_run_dir(cfg, resume)
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    if resume:
        done = _finished_training(run_dir, cfg, last)
        if done is not None:  # nothing to train: a rerun after a failure in evaluation
            return _trained_before(cfg, run_dir, run_id, done)
    child = _ddp_child()
    segment = 0
    if not child:
        if not (run_dir / "config.yaml").exists():  # the first segment's; later ones are in segments.jsonl
            save_config(cfg, run_dir / "config.yaml")
        segment = start_segment(run_dir, cfg, (checkpoint_step(last) or 0) if resume else 0)
    os.environ[RUN_DIR_ENV] = str(run_dir)
    quiet_third_party()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    try:
        dm, module = data_and_model(cfg, progress)
    except KeyboardInterrupt:
        _discard_if_empty(run_dir, resume or child)
        raise Interrupted("data", run_dir, last, cfg=cfg) from None

    if not child:
        remove_stale_temps(ckpt_dir)
    checkpoint, last_checkpoint = checkpoint_callbacks(ckpt_dir)
    clock = TrainClock()
    curve = LearningCurve(run_dir, clock, _test_split(cfg) if test_curve and not child else None)
    logger = make_logger(cfg, run_dir, run_id)
    tc = cfg.train
    # The budget's stop is announced whatever the progress setting: it says why the run ended early.
    budget = [CPUBudget(tc.max_cpu_seconds, clock)] if tc.max_cpu_seconds else []
    with warnings.catch_warnings():
        for pattern in IGNORED_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        trainer = pl.Trainer(
            **trainer_kwargs(cfg),
            max_steps=tc.max_steps,
            val_check_interval=tc.val_every,
            check_val_every_n_epoch=None,
            num_sanity_val_steps=0,
            gradient_clip_val=tc.grad_clip or None,
            logger=logger if logger is not None else False,
            callbacks=[clock, curve, ValidateLastStep(), checkpoint, last_checkpoint,
                       *budget,
                       TrainProgress(f"{cfg.system_name} {cfg.method} seed {cfg.seed}",
                                     progress), *_physics_search_callbacks(cfg, dm), *callbacks,
                       # after the curve: it scores the averaged weights, as validation does
                       *([EMAWeights(tc.ema)] if tc.ema else [])],
            plugins=[AtomicCheckpointIO()],
            use_distributed_sampler=False,  # the datamodule shards training batches itself (datasets/sharding.py)
            enable_progress_bar=False,  # TrainProgress counts steps, not epochs
            enable_model_summary=False,
            log_every_n_steps=min(50, tc.val_every),
            default_root_dir=str(run_dir),
        )
        try:
            trainer.fit(module, datamodule=dm, ckpt_path=str(last) if resume else None)
        except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C and SIGTERM into SystemExit
            _discard_if_empty(run_dir, resume or child)
            if segment and run_dir.exists():
                end_segment(run_dir, segment, trainer.global_step, "interrupted")
            raise Interrupted("training", run_dir, last, trainer.global_step, cfg) from None
    seconds, cpu_seconds = clock.seconds(), clock.cpu_seconds()
    if resume and not clock.restored:  # a checkpoint written before the clock was saved in them
        before = _read_state(run_dir)
        seconds += before.get("train_seconds", 0.0)
        cpu_seconds += before.get("train_cpu_seconds", 0.0)
    best_path = Path(checkpoint.best_model_path or last)
    best = Forecaster.load_from_checkpoint(str(best_path), map_location="cpu")
    best_score = float(checkpoint.best_model_score if checkpoint.best_model_score is not None else float("nan"))
    stop = "cpu_budget" if budget and budget[0].stopped else "max_steps"
    step_cost = budget[0].step_cost if budget else float("nan")
    if trainer.is_global_zero:
        _write_state(run_dir, {"train_seconds": seconds, "train_cpu_seconds": cpu_seconds, "best_ckpt": str(best_path),
                               "best_val_rel_l2": best_score, "global_step": trainer.global_step, "stop": stop,
                               "max_steps": tc.max_steps, "max_cpu_seconds": tc.max_cpu_seconds,
                               "step_cpu_seconds": step_cost, "torch_threads": torch.get_num_threads()})
        if segment:
            end_segment(run_dir, segment, trainer.global_step, stop)
    return TrainedRun(run_dir, run_id, best_path, best, seconds, logger, trainer.is_global_zero, best_score,
                      cpu_seconds, int(trainer.global_step), stop, step_cost)


def check_resume(cfg: RunConfig) -> Path:
    """The last checkpoint ``--resume`` would continue ``cfg``'s latest run from, checked to be an
    intact checkpoint of that run; a one-line ``UserError`` otherwise."""
    run_dir, _ = run_dir_for(cfg, resume=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.exists():
        raise UserError(f"--resume: no checkpoint {last} yet; run without --resume")
    check_resume_checkpoint(last, cfg)
    return last


def _finished_training(run_dir: Path, cfg: RunConfig, last: Path) -> dict[str, Any] | None:
    """The run's ``state.json`` if its training had finished for ``cfg`` (its last checkpoint is
    the one the state was written at, and ``cfg`` would stop there: its ``max_steps`` reached, or
    the same CPU budget spent); None if there is training to do."""
    state = _read_state(run_dir)
    step = state.get("global_step")
    if step is None or checkpoint_step(last) != step:
        return None
    tc = cfg.train
    if step >= tc.max_steps:
        return state
    if state.get("stop") == "cpu_budget" and tc.max_cpu_seconds is not None and \
            state.get("max_cpu_seconds") == tc.max_cpu_seconds:
        return state
    return None


def _trained_before(cfg: RunConfig, run_dir: Path, run_id: str, state: Mapping[str, Any]) -> TrainedRun:
    best_path = Path(state.get("best_ckpt") or run_dir / "checkpoints" / "best.ckpt")
    if not best_path.is_file():
        best_path = run_dir / "checkpoints" / "last.ckpt"
    print(f"training of {run_dir} had finished at step {state['global_step']}: evaluating {best_path}", flush=True)
    best = Forecaster.load_from_checkpoint(str(best_path), map_location="cpu")
    return TrainedRun(run_dir, run_id, best_path, best, float(state.get("train_seconds", float("nan"))),
                      make_logger(cfg, run_dir, run_id), True, float(state.get("best_val_rel_l2", float("nan"))),
                      float(state.get("train_cpu_seconds", float("nan"))), int(state["global_step"]),
                      str(state.get("stop") or "max_steps"), float(state.get("step_cpu_seconds", float("nan"))),
                      resumed_finished=True)


def _test_split(cfg: RunConfig) -> tuple[torch.Tensor, Any, float]:
    from leads.datasets.cache import ensure_split

    system = system_of(cfg)
    data = load_split(ensure_split(system, cfg.data, "test"))
    return data.states, data.t, system.horizon


def _discard_if_empty(run_dir: Path, keep: bool) -> None:
    """Remove the directory of a fresh run stopped before its first checkpoint: it holds nothing to
    continue from, and a restart of the same command then takes the same run id."""
    if not keep and not (run_dir / "checkpoints" / "last.ckpt").exists():
        shutil.rmtree(run_dir, ignore_errors=True)


def _read_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _write_state(run_dir: Path, state: dict[str, Any]) -> None:
    atomic_write_text(run_dir / "state.json", json.dumps(state, indent=1))
