"""Weights & Biases, all in one place: a run's logger (through Lightning) and an artifact's report run.

Online when the user is logged in, otherwise offline (`wandb sync` uploads later; `wandb leet`
browses offline runs in the terminal). wandb is imported only when it is on: the import takes seconds.
"""

import netrc
import os
from pathlib import Path

import pandas as pd

PROJECT = "resnet-repro"
MODES = ("on", "offline", "off")


def wandb_offline(requested: str) -> bool:
    """`--wandb on` logs online only when the user is logged in (WANDB_API_KEY or `wandb login`'s netrc)."""
    if requested == "offline" or os.environ.get("WANDB_MODE") in ("offline", "dryrun"):
        return True
    if os.environ.get("WANDB_API_KEY"):
        return False
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is None
    except (OSError, netrc.NetrcParseError):
        return True


def run_logger(mode: str, *, name: str, group: str | None, save_dir: Path, config: dict, project: str = PROJECT):
    """A Lightning WandbLogger for one training run, or None with `--wandb off`."""
    if mode == "off":
        return None
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    if wandb.run is not None:  # a run left open in this process would swallow this one's logs
        wandb.finish()
    return WandbLogger(
        project=project,
        group=group,
        name=name,
        save_dir=str(save_dir),
        offline=wandb_offline(mode),
        config=config,
        job_type="train",
    )


def finish() -> None:
    """Close the current W&B run (before the next run of an experiment starts its own)."""
    import wandb

    wandb.finish()


def log_report(
    artifact: str, group: str, caption: str, images: list[Path], summary: pd.DataFrame, mode: str, save_dir: Path
) -> None:
    """Attach an artifact's rendered figures and its runs table to the artifact's W&B run group."""
    import wandb

    run = wandb.init(
        project=PROJECT,
        group=group,
        job_type="report",
        name=f"{group}-report",
        mode="offline" if wandb_offline(mode) else "online",
        dir=str(save_dir),
    )
    for path in images:
        run.log({artifact: wandb.Image(str(path), caption=caption)})
    run.log({f"{artifact}/runs": wandb.Table(dataframe=summary.astype(str))})
    run.finish()
