"""Experiment loggers: W&B offline by default, never a login prompt.

``WANDB_MODE`` set in the environment wins over the config; ``online`` without a reachable
server or without credentials falls back to offline with one warning rather than failing a
run that has already spent hours training.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

from leads.config.schema import RunConfig, plain
from leads.envs.errors import UserError

LOGGERS = ("wandb", "csv", "none")


def wandb_mode(cfg: RunConfig) -> str:
    mode = os.environ.get("WANDB_MODE") or cfg.wandb.mode
    if mode not in ("offline", "online", "disabled", "dryrun", "run"):
        raise UserError(f"unknown W&B mode '{mode}'; choose offline, online or disabled")
    if mode in ("online", "run") and not _wandb_reachable():
        warnings.warn("W&B online mode asked for but api.wandb.ai is unreachable or no API key is set; "
                      "logging offline instead (sync later with `wandb sync`)", stacklevel=2)
        return "offline"
    return "offline" if mode == "dryrun" else ("online" if mode == "run" else mode)


def _wandb_reachable(timeout: float = 3.0) -> bool:
    if not (os.environ.get("WANDB_API_KEY") or Path.home().joinpath(".netrc").exists()):
        return False
    url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    host, _, port = url.split("://")[-1].split("/")[0].partition(":")
    try:
        socket.create_connection((host, int(port or 443)), timeout=timeout).close()
        return True
    except OSError:
        return False


def make_logger(cfg: RunConfig, run_dir: Path, run_id: str, job_type: str = "train") -> Logger | None:
    """The run's logger (None for ``logger: none`` or W&B disabled). W&B runs are grouped by
    system and profile (``<system>/<profile>``), so a dashboard compares methods and seeds of one
    protocol; ``job_type`` is ``train`` or ``leaderboard``; tags name the method, seed and commit."""
    kind = cfg.logger
    if kind not in LOGGERS:
        raise UserError(f"unknown logger '{kind}'; choose one of: {', '.join(LOGGERS)}")
    if kind == "none":
        return None
    if kind == "csv":
        # Lightning's CSV logger empties the metrics.csv it finds: a resumed run writes a new part.
        version, part = "", 1
        while (run_dir / "csv" / version / "metrics.csv").exists():
            part += 1
            version = f"part-{part}"
        return CSVLogger(save_dir=str(run_dir), name="csv", version=version)
    mode = wandb_mode(cfg)
    if mode == "disabled":
        return None
    os.environ.setdefault("WANDB_SILENT", "true")
    # Under a sweep agent the run id is the agent's (WANDB_RUN_ID): one of ours would detach the
    # run from its sweep.
    sweep = bool(os.environ.get("WANDB_SWEEP_ID"))
    logger = WandbLogger(
        project=cfg.wandb.project,
        entity=cfg.wandb.entity,
        name=run_id,
        id=None if sweep else run_id,
        group=f"{cfg.system_name}/{cfg.profile}",
        job_type=job_type,
        tags=_tags(cfg, job_type),
        save_dir=str(run_dir),
        mode=mode,
        resume=None if sweep else "allow",
        config=plain(cfg),
        settings=_settings(),
    )
    # Lightning passes anonymous=None, which recent wandb answers with a deprecation warning on
    # every run; the setting has no effect either way.
    logger._wandb_init.pop("anonymous", None)
    return logger


def log_artifacts(experiment: Any, run_id: str, files: Mapping[str, Path]) -> None:
    """Keep ``files`` (``{"model": best.ckpt, "config": config.yaml}``) as W&B artifacts named
    ``<kind>-<run id>`` of type ``<kind>`` (``wandb.artifacts: true``; offline runs keep them in
    the run directory until ``wandb sync``)."""
    import wandb

    for kind, path in files.items():
        art = wandb.Artifact(name=f"{kind}-{run_id}", type=kind)
        art.add_file(str(path))
        experiment.log_artifact(art)


def _tags(cfg: RunConfig, job_type: str) -> list[str]:
    from leads.models.physics import method_label
    from leads.reporting.results import git_commit

    tags = [f"system:{cfg.system_name}", f"profile:{cfg.profile}", f"commit:{git_commit()[:12]}"]
    if job_type == "train":
        tags += [f"method:{method_label(cfg)}", f"seed:{cfg.seed}"] + (["physics-aware"] if
                                                                          cfg.physics.terms else [])
    return [t[:64] for t in tags]  # W&B's tag length limit


def _settings() -> Any:
    import wandb

    # No console capture or system stats thread: keeps CPU runs quiet and tests fast.
    return wandb.Settings(console="off", x_disable_stats=True, silent=True)
