"""One training run: the spec, the Trainer's flags, checkpoints and exact resume, and the run's record.

A run directory (see rundir.py) holds `run.json` (config, provenance, status, final metrics),
`metrics.csv` (Lightning's CSVLogger: the source of truth for plots and tables) and
`checkpoints/last.ckpt`.
"""

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.trainer.states import TrainerFn

from resnet_repro import wandb_logging
from resnet_repro.data import build_datamodule
from resnet_repro.errors import UserError
from resnet_repro.files import AtomicCheckpointIO
from resnet_repro.flops import count_parameters
from resnet_repro.module import ClassifierModule, NonFiniteLossError
from resnet_repro.precise_bn import precise_bn
from resnet_repro.rundir import RunDir, differences, provenance, timestamp
from resnet_repro.spec import TrainSpec

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
# The signals that stop a run cleanly: Ctrl-C, and SIGTERM from SLURM (at --time and on preemption),
# `timeout`, `docker stop` and `kill`. Each gives its conventional exit status, 128 + the signal number.
STOP_SIGNALS = {signal.SIGINT: "ctrl-c", signal.SIGTERM: "SIGTERM"}

# Lightning's start-up banners (GPU/TPU availability, tips) would repeat for every run of an experiment.
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
logging.getLogger("lightning.pytorch.accelerators.cuda").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*")
# Lightning would run 16-mixed as bf16-mixed on a CPU and say so; _check_runnable refuses it in one line instead.
warnings.filterwarnings("ignore", message=".*AMP with fp16 is not supported on CPU.*")


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
    restart: bool = False  # discard whatever the run directory holds and train from scratch (`run --force`)
    wandb: str = "on"  # on: online if logged in, else offline; offline; off
    wandb_project: str = wandb_logging.PROJECT
    group: str | None = None  # W&B run group (the experiment id)
    progress: bool = True
    extra_meta: dict | None = None  # e.g. the profile and artifact that asked for this run
    deadline: float | None = None  # time.time() at which to checkpoint and stop (--stop-after), as Ctrl-C does


class _Checkpoints(Callback):
    """`last.ckpt` every `checkpoint_every` iterations; at an evaluation step, after the evaluation.

    A job killed during an evaluation then resumes from the checkpoint before it and evaluates again,
    so no evaluation is lost. Lightning's ModelCheckpoint saves before the evaluation, and it remembers
    its directory in the checkpoint (a moved run directory then writes `last-v1.ckpt` beside a stale
    `last.ckpt`); this writes one path, relative to the run directory, wherever that now lies.
    """

    def __init__(self, path: Path, every: int, eval_every: int):
        self.path, self.every, self.eval_every = path, every, eval_every
        self.saved_step: int | None = None
        self.began_at: int | None = None  # the iteration this process began training at (a resume: its checkpoint's)

    def on_train_start(self, trainer, pl_module) -> None:
        self.began_at = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        last = step == pl_module.spec.schedule.max_iters  # saved before its evaluation: a stop there loses no training
        if last or (step % self.every == 0 and step % self.eval_every != 0):
            self.save(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        step = trainer.global_step
        if trainer.state.fn == TrainerFn.FITTING and step % self.every == 0 and step != self.saved_step:
            self.save(trainer)

    def save(self, trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)
        self.saved_step = trainer.global_step


class StopNow(Exception):  # noqa: N818 (a request, not an error)
    """Ctrl-C or SIGTERM after the last iteration: stop the final evaluation or precise BN where it is."""


class _StopOnSignal(Callback):
    """Ctrl-C, SIGTERM or the deadline: finish the current iteration, save `last.ckpt` and stop;
    `--resume` continues.

    With several processes (DDP) they must stop at the same iteration, so the flag is shared across
    ranks at logging steps only (one small all-reduce per interval, none per iteration).
    """

    def __init__(self, checkpoints: _Checkpoints, deadline: float | None = None):
        self.checkpoints, self.deadline = checkpoints, deadline
        self.interrupted, self.reason = False, None
        self._previous: dict = {}
        self._stopped = False
        # After the last iteration (its evaluation, precise BN, the layer responses) there is no next iteration
        # to stop at: a signal then stops at once, and the run resumes from the last iterate's checkpoint.
        self.stop_at_once = False

    def _handler(self, signum, frame) -> None:
        self.interrupted, self.reason = True, STOP_SIGNALS[signum]
        if self.stop_at_once:
            raise StopNow(self.reason)

    def on_validation_start(self, trainer, pl_module) -> None:
        # Lightning registers its own SIGTERM handler whenever a fit or validate begins (it would raise
        # SIGTERMException, a SystemExit, and record "failed"): ours takes the signals back.
        for signum in self._previous:
            signal.signal(signum, self._handler)
        if trainer.global_step >= pl_module.spec.schedule.max_iters:
            self.stop_at_once = True

    def install(self) -> None:
        """Take Ctrl-C and SIGTERM for the whole run, set-up and final evaluation included (`restore` gives
        them back): outside our handler Lightning turns Ctrl-C into `sys.exit(1)`."""
        for signum in STOP_SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handler)
            except ValueError:  # not the main thread: leave the signal to Lightning
                pass

    def on_train_start(self, trainer, pl_module) -> None:
        # Lightning registers its own SIGTERM handler after on_fit_start, chained before ours; with it the fit
        # loop raises SIGTERMException (a SystemExit) after our checkpoint instead of stopping. Ours replaces it.
        for signum in self._previous:
            signal.signal(signum, self._handler)

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
            if self.checkpoints.saved_step != trainer.global_step:
                self.checkpoints.save(trainer)
            # Not `trainer.should_stop`: that makes Lightning run an extra evaluation and re-log this step's
            # train row, so resumed curves would differ. End the loop as if max_steps were reached instead.
            trainer.fit_loop.epoch_loop.max_steps = trainer.global_step
            self._stopped = True

    def on_validation_end(self, trainer, pl_module) -> None:
        # Stopped at an evaluation step: Lightning still evaluates that step after on_train_batch_end, and what
        # the evaluation changed (the plateau rule's state, the last evaluation) must be in the checkpoint, since
        # the resumed run starts after this step and does not evaluate it again.
        if self._stopped and trainer.state.fn == TrainerFn.FITTING:
            self.checkpoints.save(trainer)

    def restore(self) -> None:
        """Give the signals back to the handlers they had before the run."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}


class _IterationBar(TQDMProgressBar):
    """Lightning's bar, labelled in iterations (the paper's unit) rather than epochs."""

    def on_train_epoch_start(self, trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description("iteration")
        self.train_progress_bar.initial = trainer.global_step

    def get_metrics(self, trainer, pl_module) -> dict:
        """The last logged interval and evaluation, as plain numbers: Lightning's own bar metrics would read
        device tensors back to the host on every step."""
        shown = {"err": pl_module.last_train.get("train/error"), "img/s": pl_module.last_train.get("throughput")}
        shown["test/error"] = pl_module.last_eval.get("test/error")
        metrics = {name: f"{value:.3g}" for name, value in shown.items() if value is not None}
        metrics["lr"] = f"{pl_module.lr_at(trainer.global_step):.4g}"
        return metrics


def train(spec: TrainSpec, options: RunOptions, hardware: Hardware = Hardware(), datamodule=None) -> dict:
    """Train one run to `spec.schedule.max_iters` (or resume it) and return its record (run.json)."""
    provenance()  # the commit of the code this process imported, taken before anything else runs
    spec.validate()
    if options.wandb not in wandb_logging.MODES:
        raise UserError(f"--wandb must be on, offline or off, got {options.wandb!r}")
    if hardware.precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {hardware.precision!r}")
    if hardware.precision == "32-true":
        # fp32 means fp32: on Ampere and later GPUs, cuDNN convolutions (torch's default) and CUDA matmuls (if
        # enabled) would otherwise round their inputs to TF32's 10-bit mantissa. The mixed precisions are speed
        # options already and keep torch's settings; run.json records which held (`tf32`).
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    if hardware.threads is not None:
        if hardware.threads < 1:
            raise UserError(f"--threads must be at least 1, got {hardware.threads}")
        torch.set_num_threads(hardware.threads)
    pl.seed_everything(spec.seed, workers=True, verbose=False)
    module = ClassifierModule(spec)  # unknown model names fail here, before anything is written
    dm = datamodule or build_datamodule(spec)
    dm.prepare_data()
    dm.setup("fit")  # data errors surface here, before the run directory exists

    run = RunDir(options.run_dir)
    checkpoints = _Checkpoints(run.checkpoint, spec.checkpoint_every, spec.eval_every)
    interrupt = _StopOnSignal(checkpoints, options.deadline)
    trainer = _trainer(spec, hardware, options, [checkpoints, interrupt])
    # Under DDP the launcher re-runs this function in every process (torchrun, SLURM, or Lightning's own
    # launcher starting ranks 1.. from inside fit). Every rank reads the run directory and decides alike
    # (so a refusal or "finished earlier" ends all of them, none waits for the others); only global rank
    # 0 locks it and writes the run's files.
    is_zero = rank_zero_only.rank == 0
    previous = _claim(run, spec, dm.source.get("sha256"), hardware, options, writer=is_zero)
    try:
        if previous.get("status") == "finished":
            if is_zero:
                print(
                    f"{run.path}: finished earlier at iteration {previous.get('iterations')}; nothing to resume, nothing changed"
                )
            return previous
        return _fit(spec, options, hardware, module, dm, run, trainer, checkpoints, interrupt, previous, is_zero)
    finally:
        run.unlock()


def _fit(spec, options, hardware, module, dm, run, trainer, checkpoints, interrupt, previous, is_zero) -> dict:
    """Fit (or resume), evaluate and checkpoint the last iterate, and keep the record up to date."""
    record = {
        "run_id": run.name,
        "status": "running",
        "spec": spec.to_dict(),
        **(options.extra_meta or {}),
        "hardware_flags": dataclasses.asdict(hardware),
        "tf32": _tf32_allowed(),
        "world_size": trainer.world_size,
        "data_source": dm.source,
        **provenance(),
        "params": count_parameters(module.model),
        "val_indices": None if dm.val_indices is None else dm.val_indices.tolist(),
        "started": previous.get("started", timestamp()),
        "wall_time_s": previous.get("wall_time_s", 0.0),
    }
    # One entry per process that trained the run: one resumed across sessions and machines names the commit
    # and hardware of every part, not only of the latest.
    part = {key: record[key] for key in ("commit", "hardware", "host")}
    part["started"] = timestamp()
    record["parts"] = [*_earlier_parts(previous), part]
    wandb_logger = wandb_logging.run_logger(
        options.wandb,
        name=run.name,
        group=options.group,
        save_dir=run.path,
        config=spec.to_dict(),
        project=options.wandb_project,
    )
    if wandb_logger is not None:
        trainer.loggers = [*trainer.loggers, wandb_logger]
    if is_zero:
        run.write_record(record)
        run.keep_previous_metrics()
    started = time.perf_counter()
    interrupt.install()
    try:
        with warnings.catch_warnings():
            _quiet_lightning_warnings()
            if hardware.compile:
                # Only the network is compiled, in place: its state_dict keys stay those of the eager model,
                # so compiled and eager runs share checkpoints. Compiling the whole LightningModule would
                # trace training_step, whose Python-side running counters change every step and made
                # torch.compile recompile each iteration until it gave up and fell back to eager.
                module.model.compile()
            try:
                trainer.fit(module, datamodule=dm, ckpt_path=str(run.checkpoint) if options.resume else None)
                stopped = interrupt.interrupted
                if trainer.world_size > 1:  # a signal may have reached one rank after the last shared check
                    stopped = trainer.strategy.reduce_boolean_decision(stopped, all=False)
                if not stopped:
                    if checkpoints.saved_step != trainer.global_step:
                        checkpoints.save(trainer)  # the last iterate, before what a signal may now cut short
                    interrupt.stop_at_once = True
                    recomputed = spec.precise_bn > 0 and module.precise_bn_images is None
                    if recomputed:
                        module.precise_bn_images = precise_bn(trainer, module, dm, spec.precise_bn)
                    if recomputed or module.last_eval.get("step") != trainer.global_step:
                        trainer.validate(module, datamodule=dm, verbose=False)  # the last iterate is always evaluated
                    interrupt.stop_at_once = False
                    checkpoints.save(trainer)  # the final state, with its evaluation, is always last.ckpt
            except StopNow:
                # The last iterate's checkpoint is on disk (saved before its evaluation): resuming evaluates it
                # again, to the same numbers. What this process had half-computed (BN statistics, sums) is dropped.
                stopped = True
            finally:
                interrupt.stop_at_once = False
    except BaseException as exc:
        diverged = isinstance(exc, NonFiniteLossError)
        status = "diverged" if diverged else "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        elapsed = time.perf_counter() - started
        record.update(status=status, final={}, wall_time_s=record["wall_time_s"] + elapsed)
        part.update(_part_end(checkpoints, trainer, elapsed), status=status)
        if diverged:
            record["diverged_at"] = exc.iteration if exc.iteration is not None else trainer.global_step
        if not diverged and not isinstance(exc, KeyboardInterrupt):
            record["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if is_zero:
            _write_record_if_possible(run, record)
        if diverged:
            raise NonFiniteLossError(f"{exc}; {_what_is_left(run)}", exc.iteration) from None
        raise
    finally:
        # Lightning's teardown re-installs the handlers it found at fit start (ours): give Ctrl-C and SIGTERM
        # back to whatever the process had (the next run of an experiment, a notebook).
        interrupt.restore()
        if wandb_logger is not None:
            wandb_logging.finish()
    elapsed = time.perf_counter() - started
    record["wall_time_s"] += elapsed
    if trainer.world_size > 1:
        record["hardware"] += f"; {trainer.world_size} processes ({hardware.strategy}, {trainer.num_nodes} node(s))"
        part["hardware"] = record["hardware"]
    part.update(_part_end(checkpoints, trainer, elapsed), status="interrupted" if stopped else "finished")
    record.update(
        status="interrupted" if stopped else "finished",
        iterations=trainer.global_step,
        # Under DDP a rank may learn of the stop from another rank's flag: then the reason is not its own.
        stopped_by=(interrupt.reason or ("time limit" if options.deadline is not None else "another rank"))
        if stopped
        else None,
        warmup=module.warmup,
        warmup_end_iter=module.warmup_ended_at,
        lr_drops=module.lr_drops(),  # iterations at which the lr was divided by 10
        # BN normalises over each device's share of the global batch (the paper's ImageNet runs: 256 / 8 = 32).
        bn_images_per_device=spec.batch_size // trainer.world_size,
        precise_bn_images=module.precise_bn_images,
        layer_responses=module.layer_responses or None,  # Fig. 7, at the last iterate
        final={
            **{k: v for k, v in module.last_train.items()},
            **{k: v for k, v in module.last_eval.items() if k != "step"},
        },
    )
    if not stopped:  # an interrupted run has not finished: its parts say when each ended
        record["finished"] = part["ended"]
    if trainer.is_global_zero:
        run.write_record(record)
    return record


def _trainer(spec: TrainSpec, hardware: Hardware, options: RunOptions, callbacks: list) -> pl.Trainer:
    """The Trainer, built before anything is written: bad hardware flags (--accelerator gpu without a
    GPU, a --strategy typo, more processes than the machine can run) give one line and leave nothing."""
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
            logger=[CSVLogger(save_dir=options.run_dir, name="", version="")],
            callbacks=[*callbacks, *([_IterationBar()] if options.progress else [])],
            enable_checkpointing=False,  # _Checkpoints writes last.ckpt
            plugins=[AtomicCheckpointIO()],
            enable_progress_bar=options.progress,
            enable_model_summary=False,
            use_distributed_sampler=False,
            default_root_dir=options.run_dir,
            benchmark=not hardware.deterministic,  # cuDNN autotuning: shapes are fixed
        )
    except (MisconfigurationException, ValueError, TypeError, ImportError) as exc:  # ImportError: tpu without torch_xla
        raise UserError(f"cannot train with {_flags(hardware)}: {str(exc).splitlines()[0]}") from None
    _check_runnable(trainer, hardware)
    return trainer


def _check_runnable(trainer: pl.Trainer, hardware: Hardware) -> None:
    """Refuse what Lightning accepts but cannot run here (it would hang, or silently run something else)."""
    on_cpu = isinstance(trainer.accelerator, CPUAccelerator)
    if on_cpu and hardware.precision == "16-mixed":
        # Lightning would switch to bf16-mixed on a CPU while the run recorded 16-mixed.
        raise UserError("--precision 16-mixed needs a GPU; on a CPU use bf16-mixed or the paper's 32-true")
    cores = os.cpu_count() or 1
    if on_cpu and trainer.num_devices > cores:
        raise UserError(
            f"--devices {hardware.devices} asks for {trainer.num_devices} CPU processes on a machine with {cores} "
            f"cores; use at most --devices {cores} (or a GPU machine)"
        )
    launched = any(v in os.environ for v in ("SLURM_NTASKS", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK"))
    if hardware.num_nodes > 1 and not launched:
        # Without a launcher nothing starts the other nodes' processes, and rank 0 would wait for them forever.
        raise UserError(
            f"--num-nodes {hardware.num_nodes} needs a multi-node launcher (SLURM's srun or torchrun on every "
            "node; see the README's multi-node section); none is set up in this environment"
        )


def _claim(
    run: RunDir, spec: TrainSpec, data_sha256: str | None, hardware: Hardware, options: RunOptions, *, writer: bool
) -> dict:
    """Decide how to begin and return the record to continue ({} to start afresh); the `writer` (rank 0)
    locks the run directory first, since another live process may be writing it.

    A refusal leaves the directory as it was (and removes the directories this call made).
    """
    if not writer:
        return _how_to_begin(run, spec, data_sha256, hardware, options, writer=False)
    made = next((p for p in [*reversed(run.path.parents), run.path] if not p.exists()), None)  # what lock() creates
    run.lock()
    try:
        return _how_to_begin(run, spec, data_sha256, hardware, options, writer=True)
    except BaseException:
        if made is not None:  # before unlocking: nobody else can have written into what this call made
            shutil.rmtree(run.path, ignore_errors=True)
            for parent in [p for p in run.path.parents if p == made or made in p.parents]:
                with contextlib.suppress(OSError):
                    parent.rmdir()  # only if empty
        run.unlock()
        raise


def _how_to_begin(
    run: RunDir, spec: TrainSpec, data_sha256, hardware: Hardware, options: RunOptions, *, writer: bool
) -> dict:
    if options.restart:
        if writer:
            run.clear()
        return {}
    record = run.read_record()
    has_checkpoint = run.checkpoint.exists()
    if options.resume and not has_checkpoint:
        again = " again" if record else ""
        raise UserError(
            f"nothing to resume in {run.path}: no checkpoints/last.ckpt (run without --resume to start it{again})"
        )
    if record is not None and not has_checkpoint:
        # Killed (kill -9, power loss) before its first checkpoint: nothing to continue, so start again.
        if writer:
            print(f"{run.path}: the earlier attempt stopped before its first checkpoint; starting it again")
            run.clear()
        return {}
    if record is not None and not options.resume:
        raise UserError(f"{run.path} already holds a run: pass --resume to continue it or choose another --out")
    changed = differences(record, spec, data_sha256, hardware) if record else []
    if changed:
        raise UserError(
            f"{run.path} was started with other settings ({', '.join(changed)}); resume with the same flags and --data"
        )
    return record or {}


def _earlier_parts(previous: dict) -> list[dict]:
    """The parts of a resumed run so far. A run begun before run.json listed its parts gets one entry for
    all of them, with the commit and hardware its record kept: those of the latest."""
    if "parts" in previous or not previous.get("iterations"):
        return previous.get("parts", [])
    return [
        {
            "commit": previous.get("commit"),
            "hardware": previous.get("hardware"),
            "host": previous.get("host"),
            "started": previous.get("started"),
            "from_iteration": 0,
            "to_iteration": previous["iterations"],
            "wall_time_s": previous.get("wall_time_s"),
            "status": previous.get("status"),
            "lumped": "every part before the list was kept; commit and hardware are the latest one's",
        }
    ]


def _part_end(checkpoints: _Checkpoints, trainer, elapsed: float) -> dict:
    return {
        "from_iteration": checkpoints.began_at,
        "to_iteration": trainer.global_step,
        "wall_time_s": elapsed,
        "ended": timestamp(),
    }


def _what_is_left(run: RunDir) -> str:
    """After a divergence: what the run directory still holds, said as it is."""
    if run.checkpoint.exists():
        step = torch.load(run.checkpoint, map_location="cpu", weights_only=False, mmap=True).get("global_step")
        return f"checkpoints/last.ckpt holds the last finite state (iteration {step}); try a lower --lr or warm-up"
    return "it diverged before its first checkpoint, so none was written; try a lower --lr or warm-up"


def _write_record_if_possible(run: RunDir, record: dict) -> None:
    """Record a failure; if even that fails (a full disk), the original error is the one to report."""
    try:
        run.write_record(record)
    except OSError:
        pass


def _quiet_lightning_warnings() -> None:
    # Our loaders yield only indices; pixels are gathered on the device, so workers would not help.
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*is not resumable.*")  # our data order is a function of the step
    warnings.filterwarnings("ignore", message=".*has `__len__` defined.*")  # one process yields all batches
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")  # see RunDir.keep_previous_metrics
    # Evaluation metrics are summed over ranks by the module itself before they are logged.
    warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")


def _tf32_allowed() -> bool:
    """Whether fp32 convolutions or matmuls may run in TF32 on a GPU that has it (Ampere and later)."""
    return bool(torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)


def _flags(hardware: Hardware) -> str:
    return f"--accelerator {hardware.accelerator} --devices {hardware.devices} --strategy {hardware.strategy}"


def _devices(devices: str):
    """Lightning's --devices accepts an int, 'auto', or a list of indices."""
    if devices == "auto" or "," in devices:
        return devices
    try:
        return int(devices)
    except ValueError:
        raise UserError(f"--devices must be a count, 'auto' or a list like 0,1; got {devices!r}") from None
