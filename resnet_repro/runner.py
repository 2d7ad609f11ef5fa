"""Train the runs of an experiment (cached by spec, resumable, optionally several at once), then render.

`resnet-repro run fig6 --profile quick` and `python experiments/fig6.py --profile quick` both land here.
"""

import contextlib
import dataclasses
import importlib.util
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import active_children, get_context
from pathlib import Path

from resnet_repro.data import get_dataset
from resnet_repro.errors import RunLockedError, UserError
from resnet_repro.experiment import Experiment, Profile, plan_runs, select_runs
from resnet_repro.rundir import RunDir, differences, outcome
from resnet_repro.spec import TrainSpec, run_id

EXPERIMENTS_DIR = Path(os.environ.get("RESNET_REPRO_EXPERIMENTS", Path(__file__).resolve().parents[1] / "experiments"))


def list_experiments() -> list[str]:
    """Artifact ids with a script in experiments/ (fig1, fig6, table6, ...)."""
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.py") if not p.stem.startswith("_"))


def load_experiment(artifact: str) -> Experiment:
    """The EXPERIMENT declared by experiments/<artifact>.py."""
    path = EXPERIMENTS_DIR / f"{artifact}.py"
    if not path.exists():
        raise UserError(
            f"unknown artifact {artifact!r}: choose one of {', '.join(list_experiments()) or '(none found in ' + str(EXPERIMENTS_DIR) + ')'}"
        )
    spec = importlib.util.spec_from_file_location(f"resnet_repro_experiments.{artifact}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EXPERIMENT


def _not_started(run_dir: Path, why: str) -> dict:
    return {"run_id": run_dir.name, "status": "not started", "stopped_by": why, "final": {}}


# In a `--jobs` worker: the stop signal (Ctrl-C, SIGTERM) that reached it, after which it starts no run.
_STOPPED_BY: str | None = None
_STOP_SIGNALS = {signal.SIGINT: "ctrl-c", signal.SIGTERM: "SIGTERM"}
# In a `--jobs` worker: its number, 0 .. jobs - 1, which picks its GPU on a machine with several.
_WORKER_SLOT = 0


def _note_stop(signum, frame) -> None:
    global _STOPPED_BY
    _STOPPED_BY = _STOP_SIGNALS[signum]


def _worker_init(slots=None) -> None:
    """A pool worker between runs: a stop signal only marks it stopped (a run's own handler stops the run).
    It takes the next number from the pool's shared counter `slots`, for `worker_hardware`."""
    global _WORKER_SLOT
    if slots is not None:
        with slots.get_lock():
            _WORKER_SLOT = slots.value
            slots.value += 1
    for signum in _STOP_SIGNALS:
        signal.signal(signum, _note_stop)


def worker_hardware(hardware, slot: int):
    """The hardware of a run that `--jobs` worker `slot` trains: on a machine with several GPUs, GPU slot mod
    their count, instead of every worker on GPU 0 (which is what `--devices 1` gives each process). A run told
    which GPU (`--devices 2,`) or to train on the CPU keeps its flags."""
    import torch

    if str(hardware.devices) != "1" or hardware.accelerator not in ("auto", "gpu", "cuda"):
        return hardware
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < 2:
        return hardware
    return dataclasses.replace(hardware, devices=f"{slot % count},")  # Lightning reads "k," as the list [k]


def check_jobs(jobs: int, hardware) -> None:
    """Refuse `--jobs` above 1 with a run that itself spans several processes (DDP): the pool would start
    `jobs` process groups that contend for the same devices and rendezvous port."""
    if jobs <= 1:
        return
    if hardware.strategy not in ("auto", "single_device"):
        several = f"--strategy {hardware.strategy}"
    elif hardware.num_nodes > 1:
        several = f"--num-nodes {hardware.num_nodes}"
    elif _device_count(hardware) > 1:
        several = f"--devices {hardware.devices}"
    else:
        return
    raise UserError(
        f"--jobs {jobs} trains several single-device runs side by side; it cannot be combined with {several} "
        "(one run on several devices): use --jobs 1 with DDP, or --jobs without DDP flags"
    )


def _device_count(hardware) -> int:
    """How many devices Lightning gives one run under `--devices` (a count, a list "0,2", or auto / -1: all GPUs)."""
    import torch

    devices = str(hardware.devices).strip()
    if devices in ("auto", "-1"):
        on_gpu = hardware.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        return torch.cuda.device_count() if on_gpu else 1
    if "," in devices:
        return len([index for index in devices.split(",") if index.strip()])
    return int(devices) if devices.isdigit() else 1  # anything else: Lightning's own message, later


def _train_in_worker(run: "PendingRun", options: dict) -> dict:
    """`_train_one` in a pool worker, which starts no run once a stop signal has reached it."""
    global _STOPPED_BY
    if _STOPPED_BY is not None:  # Ctrl-C or SIGTERM stopped this worker's earlier run, or came between runs
        return _not_started(run.run_dir, _STOPPED_BY)
    record = _train_one(dataclasses.replace(run, hardware=worker_hardware(run.hardware, _WORKER_SLOT)), options)
    if record["status"] == "interrupted" and record.get("stopped_by") in _STOP_SIGNALS.values():
        _STOPPED_BY = record["stopped_by"]
    return record


def _train_one(run: "PendingRun", options: dict) -> dict:
    """Train one run; a divergence is recorded in its run.json and reported, not raised.

    It keeps no state: a Ctrl-C'd run in this process (a notebook, a script calling `main`) does not stop
    the next invocation's runs.
    """
    from resnet_repro.module import NonFiniteLossError
    from resnet_repro.training import RunOptions, train

    if options.get("deadline") is not None and time.time() >= options["deadline"]:
        # --stop-after passed before this run had a free slot: no run is started after the time limit.
        return _not_started(run.run_dir, "time limit")
    spec = run.spec
    print(f"{run.run_dir}: {'resuming' if run.resume else 'training'} {spec.model} seed {spec.seed}", flush=True)
    try:
        return train(
            spec, RunOptions(run_dir=run.run_dir, resume=run.resume, restart=run.restart, **options), run.hardware
        )
    except RunLockedError as exc:  # another process trains it: this artifact goes on without it, and says so at the end
        print(f"{run.run_dir}: being trained by another process; left to it", flush=True)
        return {"run_id": run.run_dir.name, "status": "running elsewhere", "final": {}, "error": str(exc)}
    except NonFiniteLossError as exc:
        print(f"{run.run_dir}: diverged: {exc}", file=sys.stderr)
        return RunDir(run.run_dir).read_record() or {"run_id": run.run_dir.name, "status": "diverged", "final": {}}


def check_cached(run: RunDir, spec: TrainSpec, data_sha256: str, hardware) -> None:
    """A finished run is reused only if it trained on the same data with the same numerics."""
    changed = differences(run.read_record(), spec, data_sha256, hardware)
    if changed:
        raise UserError(
            f"{run.path} was trained with other settings ({', '.join(changed)}); "
            "use another --runs-dir, or --force to retrain"
        )


@dataclasses.dataclass(frozen=True)
class PendingRun:
    """A run to train (or resume) in `run_dir`, with the hardware flags it trains under."""

    spec: TrainSpec
    run_dir: Path
    resume: bool
    hardware: object  # training.Hardware (imported lazily: importing Lightning takes seconds)
    restart: bool = False  # --force: discard what the directory holds


def pending_runs(specs: list[TrainSpec], runs_dir: Path, hardware, *, force: bool = False) -> list[PendingRun]:
    """The runs of `specs` still to train; finished ones are reused if trained on the same data and numerics.

    Nothing is deleted here: train() decides, under the run directory's lock, what an earlier attempt
    left (another process may be training the same run right now).
    """
    data_sha256 = None
    todo = []
    for spec in specs:
        run = RunDir(runs_dir / run_id(spec))
        record = run.read_record() or {}
        status = record.get("status")
        if status == "finished" and not force:
            if data_sha256 is None:  # the copy this invocation would train on
                data_sha256 = get_dataset(spec.dataset).sha256(spec.data)
            check_cached(run, spec, data_sha256, hardware)
            print(f"{run.path}: finished earlier, not retrained (--force retrains)")
            continue
        if status == "diverged" and not force:
            at = record.get("diverged_at")
            print(f"{run.path}: diverged earlier{f' at iteration {at}' if at else ''}; not retried (--force retrains)")
            continue
        resume = run.checkpoint.exists() and not force
        todo.append(PendingRun(spec, run.path, resume, hardware, restart=force and run.path.exists()))
    return todo


def train_runs(todo: list[PendingRun], options: dict, jobs: int = 1) -> list[dict]:
    """Train `todo`, one after another or `jobs` at a time; their records, in the order of `todo`.

    Ctrl-C or the deadline stops them all (a run not begun by then comes back "not started").
    """
    records = []
    if jobs <= 1 or len(todo) <= 1:
        for run in todo:
            if records and records[-1]["status"] in ("interrupted", "not started"):
                records.append(_not_started(run.run_dir, records[-1]["stopped_by"]))
            else:
                records.append(_train_one(run, options))
        return records
    # Small CIFAR nets leave a device idle: several runs share it, each with its share of the CPU threads.
    share = max(1, (os.cpu_count() or 1) // jobs)
    options = {**options, "progress": False}  # one bar per process would garble the terminal
    # Ctrl-C at a terminal reaches every worker; a signal sent to this process alone (kill, a supervisor)
    # is passed on to them, so each running run checkpoints and no queued run starts.
    forwarded: dict = {}

    def forward(signum, frame) -> None:
        for child in active_children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)

    for signum in _STOP_SIGNALS:
        forwarded[signum] = signal.signal(signum, forward)
    try:
        return _pooled(todo, options, jobs, share)
    finally:
        for signum, previous in forwarded.items():
            signal.signal(signum, previous)


def _pool(jobs: int) -> ProcessPoolExecutor:
    """`jobs` spawned workers, numbered 0 .. jobs - 1 (`_WORKER_SLOT`) as they start."""
    context = get_context("spawn")
    return ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=_worker_init, initargs=(context.Value("i", 0),)
    )


def _pooled(todo: list["PendingRun"], options: dict, jobs: int, share: int) -> list[dict]:
    with _pool(jobs) as pool:
        futures = [
            pool.submit(
                _train_in_worker,
                dataclasses.replace(
                    run, hardware=dataclasses.replace(run.hardware, threads=run.hardware.threads or share)
                ),
                options,
            )
            for run in todo
        ]
        for future in as_completed(futures):
            print(f"{future.result()['run_id']}: {outcome(future.result())}", flush=True)
    return [future.result() for future in futures]


def run_experiment(
    experiment: Experiment,
    profile: Profile,
    *,
    runs_dir: Path,
    data,
    hardware,
    only: str | None = None,
    force: bool = False,
    jobs: int = 1,
    wandb: str = "on",
    progress: bool = True,
    deadline: float | None = None,
) -> list[dict]:
    """Train what is not trained yet (resuming interrupted runs); by `deadline` (time.time()), checkpoint and stop."""
    check_jobs(jobs, hardware)
    specs = select_runs(plan_runs(experiment, profile, data), only)
    todo = pending_runs(specs, runs_dir, hardware, force=force)
    print(
        f"{experiment.id} ({profile.name}): {len(specs)} runs, {len(todo)} to train"
        + (f", {jobs} at a time" if jobs > 1 and len(todo) > 1 else "")
    )
    options = {
        "wandb": wandb,
        "group": f"{experiment.id}-{profile.name}",
        "progress": progress,
        "extra_meta": {"profile": profile.name},
        "deadline": deadline,
    }
    records = train_runs(todo, options, jobs)
    stopped = any(r["status"] in ("interrupted", "not started") for r in records)
    if experiment.protocol is not None and not stopped:  # after Ctrl-C, SIGTERM or the time limit: stop here
        test_runs(experiment, specs, runs_dir, hardware, progress=progress, deadline=deadline)
    return records


def _tested(run: RunDir, record: dict, experiment: Experiment) -> bool:
    """Whether the run's last iterate is recorded as tested whole under the artifact's protocol (not a
    `--limit` check, nor an earlier iterate), with its probabilities kept where the artifact needs them."""
    result = record.get("evaluations", {}).get(experiment.protocol)
    if result is None or result.get("limit") is not None or result.get("iteration") != record.get("iterations"):
        return False
    return not experiment.keep_probabilities or run.probabilities_path(experiment.protocol).is_file()


def test_runs(experiment: Experiment, specs: list[TrainSpec], runs_dir: Path, hardware, *, progress, deadline) -> None:
    """Score each finished run's last iterate under the artifact's test protocol, once: the result goes into its
    run.json (`evaluations`), where the renderer reads it; a run already scored so is not scored again."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from resnet_repro.testing import evaluate_run

    if rank_zero_only.rank != 0:  # under DDP every rank returns here from training: one process tests
        return
    device = {"gpu": "cuda", "cuda": "cuda", "cpu": "cpu"}.get(hardware.accelerator, "auto")
    for spec in specs:
        run = RunDir(runs_dir / run_id(spec))
        record = run.read_record() or {}
        if record.get("status") != "finished" or _tested(run, record, experiment):
            continue
        if deadline is not None and time.time() >= deadline:
            print(f"{run.path}: --stop-after reached; its {experiment.protocol} test is left for the next run")
            return
        print(f"{run.path}: testing the last iterate with the {experiment.protocol} protocol", flush=True)
        result = evaluate_run(
            run.path,
            experiment.protocol,
            data=spec.data.data,
            workers=getattr(spec.data, "workers", None),
            device=device,
            keep_probabilities=experiment.keep_probabilities,
            progress=progress,
        )
        print(f"{run.path}: {experiment.protocol} top-1 {result['top1_error']:.2f}%, top-5 {result['top5_error']:.2f}%")
