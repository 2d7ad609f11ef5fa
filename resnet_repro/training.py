"""One training run: the spec, the Trainer's flags, checkpoints and exact resume, and the run's record.

A run directory holds `run.json` (config, provenance, status, final metrics), `metrics.csv` (Lightning's
CSVLogger: the source of truth for plots and tables) and `checkpoints/last.ckpt`.
"""

import dataclasses
import json
import logging
import netrc
import os
import platform
import signal
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger

from resnet_repro.data.cifar10 import CIFAR10DataModule
from resnet_repro.errors import UserError
from resnet_repro.flops import count_parameters
from resnet_repro.module import ClassifierModule, NonFiniteLossError
from resnet_repro.spec import TrainSpec, spec_digest

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")

# Lightning's start-up banners (GPU/TPU availability, tips) would repeat for every run of an experiment.
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
logging.getLogger("lightning.pytorch.accelerators.cuda").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")


@dataclass(frozen=True)
class Hardware:
    """How a run is executed: Trainer flags that do not change the spec's numbers (up to noise)."""

    accelerator: str = "auto"
    devices: str = "1"  # Lightning's --devices: a count, "auto", or a list such as "0,1"
    num_nodes: int = 1
    strategy: str = "auto"  # "ddp" for several GPUs or nodes (torchrun or SLURM launch it)
    precision: str = "32-true"  # the paper's; bf16-mixed / 16-mixed are speed options (see benchmarks/numerics.py)
    deterministic: bool = False
    threads: int | None = None  # torch CPU threads; None keeps torch's default
    compile: bool = False  # torch.compile the network: a speed option that may change numerics slightly, off by default


@dataclass(frozen=True)
class RunOptions:
    """Where a run writes and what it talks to."""

    run_dir: Path
    resume: bool = False
    wandb: str = "on"  # on: online if logged in, else offline; offline; off
    wandb_project: str = "resnet-repro"
    group: str | None = None  # W&B run group (the experiment id)
    progress: bool = True
    extra_meta: dict | None = None  # e.g. the profile and artifact that asked for this run
    deadline: float | None = None  # time.time() at which to checkpoint and stop (--stop-after), as Ctrl-C does


class _StopOnInterrupt(Callback):
    """Ctrl-C, or reaching the deadline, finishes the current iteration, saves `last.ckpt` and stops;
    `--resume` continues.

    With several processes (DDP) they must stop at the same iteration, so the flag is shared across
    ranks at logging steps only (one small all-reduce per interval, none per iteration).
    """

    def __init__(self, checkpoint: ModelCheckpoint, deadline: float | None = None):
        self.checkpoint, self.interrupted, self._previous = checkpoint, False, None
        self.deadline, self.reason = deadline, None
        self._stopped = False

    def on_fit_start(self, trainer, pl_module) -> None:
        def handler(signum, frame):
            self.interrupted, self.reason = True, "ctrl-c"

        if hasattr(signal, "SIGINT"):
            try:
                self._previous = signal.signal(signal.SIGINT, handler)
            except ValueError:  # not the main thread: leave Ctrl-C to Lightning
                self._previous = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._stopped:
            return
        if self.deadline is not None and not self.interrupted and time.time() >= self.deadline:
            self.interrupted, self.reason = True, "time limit"
        if trainer.world_size > 1:
            if trainer.global_step % pl_module.spec.log_every:
                return
            self.interrupted = trainer.strategy.reduce_boolean_decision(self.interrupted, all=False)
        if self.interrupted:
            trainer.save_checkpoint(Path(self.checkpoint.dirpath) / "last.ckpt", weights_only=False)
            # Not `trainer.should_stop`: that makes Lightning run an extra evaluation and re-log this step's
            # train row, so resumed curves would differ. End the loop as if max_steps were reached instead.
            trainer.fit_loop.epoch_loop.max_steps = trainer.global_step
            self._stopped = True

    def on_fit_end(self, trainer, pl_module) -> None:
        self.restore()

    def restore(self) -> None:
        """Give Ctrl-C back to the handler it had before the run."""
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class _IterationBar(TQDMProgressBar):
    """Lightning's bar, labelled in iterations (the paper's unit) rather than epochs."""

    def on_train_epoch_start(self, trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description("iteration")
        self.train_progress_bar.initial = trainer.global_step

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        metrics["lr"] = f"{pl_module.lr_at(trainer.global_step):.4g}"
        return metrics


def provenance() -> dict:
    """Commit, library versions and hardware, stored with every run."""
    import lightning
    import torchvision

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    if torch.cuda.is_available():
        hardware = f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    else:
        hardware = f"CPU: {os.cpu_count()} cores ({platform.machine()}), {torch.get_num_threads()} torch threads"
    return {
        "commit": commit,
        "hardware": hardware,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": lightning.__version__,
        "host": platform.node(),
    }


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically: a crash never leaves a half-written record."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


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


def _wandb_logger(spec: TrainSpec, options: RunOptions):
    """W&B through Lightning: online when logged in, otherwise offline (sync later with `wandb sync`)."""
    if options.wandb == "off":
        return None
    import wandb  # imported only when on: it takes seconds
    from lightning.pytorch.loggers import WandbLogger

    offline = wandb_offline(options.wandb)
    if wandb.run is not None:  # a run left open in this process would swallow this one's logs
        wandb.finish()
    return WandbLogger(
        project=options.wandb_project,
        group=options.group,
        name=options.run_dir.name,
        save_dir=str(options.run_dir),
        offline=offline,
        config=spec.to_dict(),
        job_type="train",
    )


def train(spec: TrainSpec, options: RunOptions, hardware: Hardware = Hardware(), datamodule=None) -> dict:
    """Train one run to `spec.schedule.max_iters` (or resume it) and return its record (run.json)."""
    spec.validate()
    if options.wandb not in ("on", "offline", "off"):
        raise UserError(f"--wandb must be on, offline or off, got {options.wandb!r}")
    if hardware.precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {hardware.precision!r}")
    if hardware.threads is not None:
        if hardware.threads < 1:
            raise UserError(f"--threads must be at least 1, got {hardware.threads}")
        torch.set_num_threads(hardware.threads)
    pl.seed_everything(spec.seed, workers=True, verbose=False)
    module = ClassifierModule(spec)  # unknown model names fail here, before anything is written
    dm = datamodule or CIFAR10DataModule(
        spec.data,
        batch_size=spec.batch_size,
        max_iters=spec.schedule.max_iters,
        seed=spec.seed,
        channels_last=spec.channels_last,
    )
    dm.prepare_data()
    dm.setup("fit")  # data errors surface here, before the run directory exists

    run_dir = options.run_dir
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    record_path = run_dir / "run.json"
    if options.resume and not last.exists():
        raise UserError(f"nothing to resume in {run_dir}: no checkpoints/last.ckpt (run without --resume to start)")
    previous = json.loads(record_path.read_text()) if options.resume and record_path.exists() else {}
    changed = differences(previous, spec, dm.source.get("sha256"), hardware) if previous else []
    if changed:
        raise UserError(
            f"{run_dir} was started with other settings ({', '.join(changed)}); resume with the same flags and --data"
        )
    # Under DDP the launcher re-runs this function in every process (torchrun, SLURM, or Lightning's own
    # launcher starting ranks 1.. from inside fit): only global rank 0 checks and writes the run's files.
    is_zero = rank_zero_only.rank == 0
    if is_zero and not options.resume and record_path.exists():
        raise UserError(f"{run_dir} already holds a run: pass --resume to continue it or choose another --out")

    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir, save_last=True, save_top_k=0, every_n_train_steps=spec.checkpoint_every
    )
    interrupt = _StopOnInterrupt(checkpoint, options.deadline)
    loggers = [CSVLogger(save_dir=run_dir, name="", version="")]
    wandb_logger = _wandb_logger(spec, options)
    if wandb_logger is not None:
        loggers.append(wandb_logger)
    # The Trainer is built before anything is written, so that bad hardware flags (--accelerator gpu
    # without a GPU, a --strategy typo) give a one-line error and leave no half-made run behind.
    try:
        trainer = pl.Trainer(
            max_steps=spec.schedule.max_iters,
            max_epochs=-1,
            val_check_interval=spec.eval_every,
            check_val_every_n_epoch=None,
            log_every_n_steps=spec.log_every,
            num_sanity_val_steps=0,
            accelerator=hardware.accelerator,
            devices=_devices(hardware.devices),
            num_nodes=hardware.num_nodes,
            strategy=hardware.strategy,
            precision=hardware.precision,
            deterministic=hardware.deterministic,
            logger=loggers,
            callbacks=[checkpoint, interrupt, *([_IterationBar()] if options.progress else [])],
            enable_progress_bar=options.progress,
            enable_model_summary=False,
            use_distributed_sampler=False,
            default_root_dir=run_dir,
            benchmark=not hardware.deterministic,  # cuDNN autotuning: shapes are fixed
        )
    except (MisconfigurationException, ValueError, TypeError, ImportError) as exc:  # ImportError: tpu without torch_xla
        flags = f"--accelerator {hardware.accelerator} --devices {hardware.devices} --strategy {hardware.strategy}"
        raise UserError(f"cannot train with {flags}: {str(exc).splitlines()[0]}") from None

    run_dir.mkdir(parents=True, exist_ok=True)

    record = {
        "run_id": run_dir.name,
        "status": "running",
        "spec": spec.to_dict(),
        **(options.extra_meta or {}),
        "hardware_flags": dataclasses.asdict(hardware),
        "data_source": dm.source,
        **provenance(),
        "params": count_parameters(module.model),
        "val_indices": None if dm.val_indices is None else dm.val_indices.tolist(),
        "started": previous.get("started", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
        "wall_time_s": previous.get("wall_time_s", 0.0),
    }
    if is_zero:
        write_json(record_path, record)
        _keep_previous_metrics(run_dir)
    started = time.perf_counter()
    with warnings.catch_warnings():
        # Our loaders yield only indices; pixels are gathered on the device, so workers would not help.
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*is not resumable.*")  # our data order is a function of the step
        warnings.filterwarnings("ignore", message=".*has `__len__` defined.*")  # one process yields all batches
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")  # see _keep_previous_metrics
        # Evaluation metrics are summed over ranks by the module itself before they are logged.
        warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")
        try:
            if hardware.compile:
                # Only the network is compiled, in place: its state_dict keys stay those of the eager model,
                # so compiled and eager runs share checkpoints. Compiling the whole LightningModule would
                # trace training_step, whose Python-side running counters change every step and made
                # torch.compile recompile each iteration until it gave up and fell back to eager.
                module.model.compile()
            trainer.fit(module, datamodule=dm, ckpt_path=str(last) if options.resume else None)
            if not interrupt.interrupted:
                if module.last_eval.get("step") != trainer.global_step:
                    trainer.validate(module, datamodule=dm, verbose=False)  # the last iterate is always evaluated
                if trainer.global_step % spec.checkpoint_every:  # Lightning saved `last` at the previous multiple
                    trainer.save_checkpoint(last, weights_only=False)  # a full checkpoint, as Lightning's own
        except Exception as exc:
            status = "diverged" if isinstance(exc, NonFiniteLossError) else f"failed: {type(exc).__name__}"
            record.update(status=status, wall_time_s=record["wall_time_s"] + time.perf_counter() - started)
            if is_zero:
                write_json(record_path, record)
            raise
        finally:
            # A run that raised (divergence, a crash) skips on_fit_end, and Lightning's teardown re-installs
            # the handlers it found at fit start, ours included: without this, Ctrl-C would no longer reach
            # the rest of the process (the next run of an experiment, a notebook).
            interrupt.restore()
            if wandb_logger is not None:
                import wandb

                wandb.finish()
    record["wall_time_s"] += time.perf_counter() - started
    if trainer.world_size > 1:
        record["hardware"] += f"; {trainer.world_size} processes ({hardware.strategy}, {trainer.num_nodes} node(s))"
    record.update(
        world_size=trainer.world_size,
        status="interrupted" if interrupt.interrupted else "finished",
        iterations=trainer.global_step,
        # Under DDP a rank may learn of the stop from another rank's flag: then it was the shared deadline or Ctrl-C.
        stopped_by=(interrupt.reason or ("time limit" if options.deadline is not None else "ctrl-c"))
        if interrupt.interrupted
        else None,
        warmup=module.warmup,
        warmup_end_iter=module.warmup_ended_at,
        layer_responses=module.layer_responses or None,  # Fig. 7, at the last iterate
        final={
            **{k: v for k, v in module.last_train.items()},
            **{k: v for k, v in module.last_eval.items() if k != "step"},
        },
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    if trainer.is_global_zero:
        write_json(record_path, record)
    return record


def differences(record: dict, spec: TrainSpec, data_sha256: str | None, hardware: Hardware) -> list[str]:
    """What makes a logged run (`record`) another run than `spec` on this data and hardware; [] if none.

    Beyond the spec: the data copy, and the numerics the Trainer decides (precision, compile, and the
    device count, since BN normalises over batch / devices: Sec. 4.2's 64 images on each of two GPUs).
    """
    changed = []
    if spec_digest(TrainSpec.from_dict(record["spec"])) != spec_digest(spec):
        old, new = _flat(record["spec"]), _flat(spec.to_dict())
        changed += [f"{k} {old.get(k)} -> {new.get(k)}" for k in sorted(new) if old.get(k) != new.get(k)]
    theirs = record.get("data_source", {}).get("sha256")
    if data_sha256 is not None and theirs != data_sha256:
        changed.append(f"data sha256 {str(theirs)[:12]} -> {data_sha256[:12]}")
    world = int(hardware.devices) * hardware.num_nodes if str(hardware.devices).isdigit() else None
    if world is not None and record.get("world_size", 1) != world:
        changed.append(f"devices {record.get('world_size', 1)} -> {world}")
    flags = record.get("hardware_flags", {})
    for name in ("precision", "compile"):
        if flags.get(name, getattr(hardware, name)) != getattr(hardware, name):
            changed.append(f"{name} {flags.get(name)} -> {getattr(hardware, name)}")
    return changed


def _flat(d: dict, prefix: str = "") -> dict:
    """{"schedule": {"lr": 0.1}} -> {"schedule.lr": 0.1}, to name what changed."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def _keep_previous_metrics(run_dir: Path) -> None:
    """Lightning's CSVLogger deletes an existing metrics.csv; a resumed run keeps it as metrics-K.csv."""
    current = run_dir / "metrics.csv"
    if current.exists():
        parts = len(list(run_dir.glob("metrics-*.csv")))
        os.replace(current, run_dir / f"metrics-{parts}.csv")


def _devices(devices: str):
    """Lightning's --devices accepts an int, 'auto', or a list of indices."""
    if devices == "auto" or "," in devices:
        return devices
    try:
        return int(devices)
    except ValueError:
        raise UserError(f"--devices must be a count, 'auto' or a list like 0,1; got {devices!r}") from None
