"""A lent GPU's window in one command: what the GPU does with this code, measured, and brought back.

A lent machine keeps nothing and returns only the files under one folder (at most 8 files of at most 16 MiB,
64 MiB together, no deeper than 2 folders). So every step writes under a scratch folder, and after each step
--out receives `session.md` (what ran, what it measured, the device), `session.json`, and the scratch
folder as `session.tar.gz` split into pieces under 15 MiB (`session.tar.gz.00`, `.01`, ...); unpack with
`cat session.tar.gz.* | tar xz`. Its `runs/` holds every run's logs and, while unfinished, its checkpoint:
`resnet-repro report ARTIFACT --profile P --runs-dir <unpacked>/runs --keep-checkpoints` keeps them.

The first window (default --steps), each step guarded (a failure is one line in session.md, the next runs):
  env        the device, driver, CUDA and cuDNN, library versions, CPUs, TF32 flags;
  decode     CIFAR-10 decoded once into the cache every later step reads;
  paper      ResNet-20 at the paper's cadence (64k-iteration schedule, log every 20, evaluate every 500,
             checkpoint every 2,000) for a share of the budget, extrapolated to 64k iterations;
  compiled   the same with --compile;
  profile    host time against GPU kernel time per step (torch.profiler, Lightning's training step);
  jobs       N = 1, 4, 8 such runs started together: aggregate images/s over a common wall-clock window;
  precision  ResNet-110, fp32 against bf16-mixed.
A later window trains an artifact's runs with what is left (--steps decode,artifact --artifact fig6
--profile mid --jobs 8); they stop with a checkpoint at the deadline and continue on any machine.

    python benchmarks/gpu_session.py --data .data/cifar10-jpg.tar.gz --out "$OUT"         # on the lent GPU
    python benchmarks/gpu_session.py --cpu-smoke --data tiny.tar.gz --allow-partial --out /tmp/s   # seconds, CPU

Exit status: 0 when no step failed, 1 when one did, 2 on a mistake in the command, 130 on Ctrl-C.
"""

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("resnet_repro") is None:  # a bare checkout on a lent machine: nothing is installed
    sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from resnet_repro.commands.train import parse_duration  # noqa: E402
from resnet_repro.errors import UserError, exit_status  # noqa: E402
from resnet_repro.records import read_run  # noqa: E402
from resnet_repro.rundir import RunDir  # noqa: E402

# What comes back from a lent machine (the device tool's limits), with a margin.
RETURN_FILES, RETURN_FILE_BYTES, RETURN_TOTAL_BYTES = 8, 15 * 2**20, 60 * 2**20
PAPER_CADENCE = ("--log-every", "20", "--eval-every", "500", "--checkpoint-every", "2000")
PAPER_ITERS, BATCH = 64_000, 128


@dataclasses.dataclass(frozen=True)
class Mode:
    """The sizes of a session: a real one on a GPU, or a CPU smoke run of seconds that takes the same paths."""

    name: str
    accelerator: str
    budget: float  # seconds for all steps
    model: str  # the paper-cadence and jobs steps' net
    big_model: str  # the precision step's net
    cadence: tuple[str, ...]  # log/eval/checkpoint flags of the timed runs
    jobs: tuple[int, ...]
    shares: dict  # each step's share of the budget (seconds), in order
    extra: tuple[str, ...] = ()  # flags every training command gets
    profile_steps: tuple[int, int] = (20, 20)  # the profile step's warm-up steps, then profiled steps
    # The timed runs' length: None, the paper's 64k schedule stopped by the step's time; a count, a schedule of
    # that many iterations run to its end (smoke: however busy the machine, every step does its work).
    iterations: int | None = None


GPU = Mode(
    "gpu",
    "gpu",
    budget=435.0,
    model="resnet20",
    big_model="resnet110",
    cadence=PAPER_CADENCE,
    jobs=(1, 4, 8),
    shares={"decode": 40, "checks": 25, "paper": 65, "compiled": 85, "profile": 30, "jobs": 120, "precision": 70},
)
SMOKE = Mode(
    "cpu-smoke",
    "cpu",
    budget=1800.0,  # a bound, not a plan: its runs are sized in iterations
    model="resnet8",
    big_model="resnet8",
    cadence=("--log-every", "2", "--eval-every", "4", "--checkpoint-every", "4", "--batch-size", "16"),
    jobs=(1, 2),
    shares={"decode": 5, "checks": 20, "paper": 15, "compiled": 35, "profile": 15, "jobs": 40, "precision": 20},
    extra=("--threads", "1", "--allow-partial"),
    profile_steps=(2, 3),
    iterations=24,
)
STEPS = ("env", "decode", "checks", "paper", "compiled", "profile", "jobs", "precision", "artifact")
FIRST_WINDOW = STEPS[:-1]


class StepError(Exception):
    """A step that could not do its work; its message is the one line session.md records."""


@dataclasses.dataclass
class Session:
    args: argparse.Namespace
    mode: Mode
    work: Path  # everything is written here, then packed into --out
    started: float
    command: str
    env: dict = dataclasses.field(default_factory=dict)
    steps: list[dict] = dataclasses.field(default_factory=list)

    @property
    def deadline(self) -> float:
        return self.started + self.args.budget

    def left(self) -> float:
        return self.deadline - time.time()

    def budget_for(self, step: str) -> float:
        """The step's share of the budget, in seconds; never more than what is left."""
        total = sum(self.mode.shares[s] for s in self.args.steps if s in self.mode.shares)
        return max(0.0, min(self.mode.shares.get(step, 0) * self.args.budget / total, self.left() - 5))

    def length(self, seconds: float) -> list[str]:
        """How long a timed run trains: `seconds` of the paper's schedule, or the mode's fixed iterations."""
        n = self.mode.iterations
        if n is None:
            return ["--stop-after", f"{seconds:.0f}"]
        return ["--iterations", str(n), "--milestones", f"{n // 2},{3 * n // 4}"]

    def timeout(self, seconds: float) -> float:
        """When to stop a timed run by force: well after its own --stop-after, or (fixed iterations) never
        before the session's bound."""
        return seconds + 120 if self.mode.iterations is None else max(self.left(), 60.0)

    def train_args(self) -> list[str]:
        """The flags every training command of the session shares: data, cache, no W&B, no bar."""
        a = self.args
        flags = ["--data", a.data, "--data-root", str(self.work / "cache"), "--wandb", "off", "--no-progress"]
        return [*flags, "--accelerator", self.mode.accelerator, *self.mode.extra]


# --- running a command ----------------------------------------------------------------------------


def cli(session: Session, args: list[str], log: Path, timeout: float) -> subprocess.Popen:
    """Start `resnet-repro ARGS` from this checkout (installed or not) in its own process group, output to `log`."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "resnet_repro", *args]
    with log.open("w") as sink:
        sink.write("$ " + shlex.join(command) + "\n")
        sink.flush()
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    proc.timeout_at = time.time() + timeout  # type: ignore[attr-defined]
    return proc


def wait(procs: list[subprocess.Popen], grace: float = 20.0) -> list[int]:
    """Wait for every process; one still going at its timeout gets SIGTERM (a run checkpoints and stops),
    then SIGKILL `grace` seconds later. Their exit statuses."""
    for proc in procs:
        left = proc.timeout_at - time.time()  # type: ignore[attr-defined]
        try:
            proc.wait(timeout=max(left, 0.1))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return [proc.returncode for proc in procs]


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


# --- the steps ------------------------------------------------------------------------------------


def step_env(session: Session) -> dict:
    import lightning
    import torchvision

    env = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU {_cpu_model()}",
        **_nvidia_smi(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda or "none",
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else "none",
        "torchvision": torchvision.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_1min": os.getloadavg()[0],
        "wandb_importable": importlib.util.find_spec("wandb") is not None,
        "tf32_default": {
            "cudnn": torch.backends.cudnn.allow_tf32,
            "matmul": torch.backends.cuda.matmul.allow_tf32,
        },
        "commit": os.environ.get("RESNET_REPRO_COMMIT") or _git_commit(),
    }
    if torch.cuda.is_available():
        env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    session.env = env
    return {"summary": f"{env['device']}; torch {env['torch']} (CUDA {env['torch_cuda']}), {env['cpu_count']} CPUs"}


def step_decode(session: Session) -> dict:
    """Decode the data once, so that the timed steps (and N processes at once) find the cache ready."""
    from resnet_repro.data.sources import load_cifar10

    began = time.perf_counter()
    root = session.work / "cache"
    arrays = load_cifar10(session.args.data, root, full=not session.args.allow_partial, progress=False)
    seconds = time.perf_counter() - began
    return {"summary": f"{len(arrays.train_labels)} train images decoded in {seconds:.0f} s", "seconds": seconds}


def step_checks(session: Session) -> dict:
    """What only a GPU can say about correctness: --deterministic trains, and fp32 runs record TF32 off."""
    model, out = session.mode.model, session.work / "runs-checks"
    args = ["train", model, "--out", str(out), "--name", "deterministic", "--deterministic", "--iterations", "40"]
    args += ["--milestones", "20,30", "--log-every", "20", "--eval-every", "40", "--checkpoint-every", "40"]
    log = session.work / "logs" / "checks-deterministic.log"
    (status,) = wait([cli(session, [*args, *session.train_args()], log, session.budget_for("checks") + 60)])
    if status != 0:
        raise StepError(f"--deterministic: train exited {status}: {_last_line(log)}")
    record = RunDir(out / "deterministic").read_record()
    return {
        "summary": f"--deterministic trained 40 iterations (test error {record['final']['test/error']:.1f}%); "
        f"run.json tf32 {record.get('tf32')} at {record['hardware_flags']['precision']}",
        "tf32": record.get("tf32"),
    }


def timed_run(session: Session, name: str, model: str, seconds: float, *flags: str) -> dict:
    """One run on the paper's 64k schedule and cadence, stopped after `seconds`: its rates."""
    out = session.work / "runs-timed"
    args = ["train", model, "--out", str(out), "--name", name, *session.mode.cadence, *session.train_args(), *flags]
    args += session.length(seconds)
    log = session.work / "logs" / f"{name}.log"
    (status,) = wait([cli(session, args, log, session.timeout(seconds))])
    if status not in (0, 3) or not (out / name / "run.json").exists():
        raise StepError(f"train {model} {' '.join(flags)} exited {status}: {_last_line(log)}")
    record, curves = read_run(out / name)
    return rates(record, curves, warm=0.25)


def rates(record: dict, curves: pd.DataFrame, warm: float) -> dict:
    """Training-only images/s (median of the logged intervals after the first `warm` share) and the whole
    run's iterations per wall second, evaluations and checkpoints included."""
    train = curves.dropna(subset=["throughput"])
    steady = train[train["step"] > train["step"].max() * warm] if len(train) > 4 else train
    iterations = int(record.get("iterations") or (train["step"].max() if len(train) else 0))
    wall = float(record.get("wall_time_s") or float("nan"))
    batch = record["spec"]["batch_size"]
    images_s = float(steady["throughput"].median()) if len(steady) else float("nan")
    return {
        "iterations": iterations,
        "wall_s": wall,
        "train_images_per_s": images_s,
        "iters_per_wall_s": iterations / wall if wall > 0 else float("nan"),
        "evaluations": int(curves["test/error"].notna().sum()),
        "batch": batch,
    }


def extrapolate(r: dict) -> dict:
    """The paper's 64k iterations at this run's rates: training alone, and with evaluations every 500 and
    checkpoints every 2,000, whose cost is the wall time the training rate does not explain."""
    train_s = r["iterations"] * r["batch"] / r["train_images_per_s"]
    overhead = max(r["wall_s"] - train_s, 0.0)
    per_event = overhead / max(r["evaluations"] + r["iterations"] // 2000, 1)
    full_train = PAPER_ITERS * r["batch"] / r["train_images_per_s"]
    full = full_train + per_event * (PAPER_ITERS // 500 + PAPER_ITERS // 2000)
    return {
        "paper_train_only_min": full_train / 60,
        "seconds_per_eval_or_checkpoint": per_event,
        "paper_min": full / 60,
    }


def step_paper(session: Session, compiled: bool = False) -> dict:
    seconds = session.budget_for("compiled" if compiled else "paper")
    name = f"{session.mode.model}-{'compiled' if compiled else 'eager'}"
    r = timed_run(session, name, session.mode.model, seconds, *(["--compile"] if compiled else []))
    r |= extrapolate(r)
    return {
        "summary": f"{r['iterations']} iterations in {r['wall_s']:.0f} s: {r['train_images_per_s']:.0f} img/s training; "
        f"64k iterations at the paper's cadence would take {r['paper_min']:.1f} min "
        f"({r['paper_train_only_min']:.1f} min training, {r['seconds_per_eval_or_checkpoint']:.2f} s per evaluation or checkpoint)",
        **r,
    }


def step_profile(session: Session) -> dict:
    """Host time against device time per training step: Lightning's step, profiled after a warm-up."""
    warm, active = session.mode.profile_steps
    from lightning.pytorch import Callback, Trainer
    from torch.profiler import ProfilerActivity, profile

    from resnet_repro.data import build_datamodule
    from resnet_repro.data.cifar10 import DataConfig
    from resnet_repro.module import ClassifierModule
    from resnet_repro.spec import Schedule, TrainSpec

    batch = (
        int(session.mode.cadence[session.mode.cadence.index("--batch-size") + 1])
        if "--batch-size" in session.mode.cadence
        else BATCH
    )
    spec = TrainSpec(
        model=session.mode.model,
        batch_size=batch,
        schedule=Schedule(max_iters=warm + active + 4, milestones=(warm + active + 2, warm + active + 3)),
        data=DataConfig(data=session.args.data, root=str(session.work / "cache"), full=not session.args.allow_partial),
        log_every=20,
        eval_every=10_000,
        checkpoint_every=20,
    )
    cuda = torch.cuda.is_available() and session.mode.accelerator == "gpu"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    window: dict = {}

    class Window(Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == warm:
                if cuda:
                    torch.cuda.synchronize()
                window["prof"] = profile(activities=activities)
                window["prof"].__enter__()
                window["t0"] = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step == warm + active:
                if cuda:
                    torch.cuda.synchronize()
                window["wall"] = time.perf_counter() - window["t0"]
                window["prof"].__exit__(None, None, None)

    trainer = Trainer(
        max_steps=warm + active + 4,
        accelerator=session.mode.accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[Window()],
        benchmark=True,
    )
    trainer.fit(ClassifierModule(spec), datamodule=build_datamodule(spec))
    events = window["prof"].key_averages()
    host_ms = sum(e.self_cpu_time_total for e in events) / 1e3 / active
    device_ms = sum(getattr(e, "self_device_time_total", 0) for e in events) / 1e3 / active if cuda else float("nan")
    wall_ms = window["wall"] * 1e3 / active
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
    (session.work / "profile.txt").write_text(events.table(sort_by="self_cpu_time_total", row_limit=30) + "\n")
    bound = "host-bound" if cuda and device_ms < 0.8 * wall_ms else "device-bound" if cuda else "CPU"
    return {
        "summary": f"per step: {wall_ms:.2f} ms wall, {host_ms:.2f} ms host op time, {device_ms:.2f} ms GPU kernel time ({bound})",
        "wall_ms": wall_ms,
        "host_ms": host_ms,
        "device_ms": device_ms,
        "top_host_ops": [e.key for e in top],
    }


def step_jobs(session: Session) -> dict:
    """N runs started together; aggregate images/s over the wall-clock window in which all N are training.

    Each run logs its step every 20 iterations (flushed every 100); the window opens when the slowest run
    has logged its first rows and closes when the first one stops, so start-up is never counted."""
    share = session.budget_for("jobs") / len(session.mode.jobs)
    rows = []
    for n in session.mode.jobs:
        seconds = min(share, (session.left() - 5) / max(1, len(session.mode.jobs) - len(rows)))
        if seconds < 10 and session.mode.iterations is None:
            raise StepError(f"no time left for N={n} ({seconds:.0f} s)")
        out = session.work / "runs-jobs" / f"n{n}"
        procs, samples = [], []
        for k in range(n):
            args = ["train", session.mode.model, "--seed", str(k), "--out", str(out), "--name", f"run{k}"]
            args += [*session.mode.cadence, *session.train_args(), *session.length(seconds)]
            procs.append(cli(session, args, session.work / "logs" / f"jobs-n{n}-run{k}.log", session.timeout(seconds)))
        while any(p.poll() is None for p in procs):
            samples.append((time.time(), [_logged_step(out / f"run{k}" / "metrics.csv") for k in range(n)]))
            time.sleep(0.5)
        statuses = wait(procs)
        if any(status not in (0, 3) for status in statuses):
            raise StepError(
                f"N={n}: a run exited {statuses}: {_last_line(session.work / 'logs' / f'jobs-n{n}-run0.log')}"
            )
        rate = aggregate(samples, n, _batch(session))
        if math.isnan(rate["images_per_s"]):  # too short to see all N log (smoke): whole runs, start-up included
            records = [RunDir(out / f"run{k}").read_record() for k in range(n)]
            wall = max(r["wall_time_s"] for r in records)
            images = sum(r["iterations"] * r["spec"]["batch_size"] for r in records)
            rate = {"images_per_s": images / wall, "window_s": wall, "window": "whole runs, start-up included"}
        rows.append({"n": n, "statuses": statuses, **rate})
    best = max(rows, key=lambda r: r["images_per_s"] if not math.isnan(r["images_per_s"]) else -1)
    text = "; ".join(f"N={r['n']}: {r['images_per_s']:.0f} img/s over {r['window_s']:.0f} s" for r in rows)
    return {"summary": f"{text} (best N={best['n']})", "rows": rows}


def aggregate(samples: list[tuple[float, list[int | None]]], n: int, batch: int) -> dict:
    """Images/s of all runs together between the first sample at which every run has logged a step and the
    last sample at which none has stopped yet (a step that stops advancing is a run that ended)."""
    started = [(t, steps) for t, steps in samples if all(s is not None for s in steps)]
    if len(started) < 2:
        return {"images_per_s": float("nan"), "window_s": 0.0}
    (t0, first), (t1, last) = started[0], started[-1]
    # Close the window before the first run finishes: the last sample whose every run still moved afterwards.
    ends = []
    for k in range(n):
        final = last[k]
        ends.append(next((t for t, steps in started if steps[k] == final), t1))
    t_end = min(ends)
    at_end = next(steps for t, steps in started if t >= t_end)
    images = sum(b - a for a, b in zip(first, at_end, strict=True)) * batch
    window = t_end - t0
    return {"images_per_s": images / window if window > 0 else float("nan"), "window_s": window}


def _logged_step(metrics: Path) -> int | None:
    """The last iteration a run's metrics.csv has logged so far (None before its first row)."""
    try:
        lines = metrics.read_text().splitlines()
    except OSError:
        return None
    if len(lines) < 2:
        return None
    header = lines[0].split(",")
    for line in reversed(lines[1:]):
        cells = line.split(",")
        if len(cells) == len(header):
            with contextlib.suppress(ValueError):
                return int(float(cells[header.index("step")])) + 1
    return None


def _batch(session: Session) -> int:
    c = session.mode.cadence
    return int(c[c.index("--batch-size") + 1]) if "--batch-size" in c else BATCH


def step_precision(session: Session) -> dict:
    rows = {}
    for precision in ("32-true", "bf16-mixed"):
        seconds = min(session.budget_for("precision") / 2, (session.left() - 5) / (2 - len(rows)))
        name = f"{session.mode.big_model}-{precision}"
        rows[precision] = timed_run(session, name, session.mode.big_model, seconds, "--precision", precision)
    fp32, bf16 = rows["32-true"]["train_images_per_s"], rows["bf16-mixed"]["train_images_per_s"]
    return {
        "summary": f"{session.mode.big_model}: fp32 {fp32:.0f} img/s, bf16-mixed {bf16:.0f} img/s ({bf16 / fp32:.2f}x)",
        "rows": rows,
    }


def step_artifact(session: Session) -> dict:
    """An artifact's runs with the rest of the budget, into runs/ (carried back, checkpoints included)."""
    a = session.args
    runs = session.work / "runs"
    if a.resume_from and Path(a.resume_from).is_dir():  # continue runs begun elsewhere, kept in results/runs/
        for source in Path(a.resume_from).iterdir():
            if (source / "checkpoints" / "last.ckpt").exists() and not (runs / source.name).exists():
                shutil.copytree(source, runs / source.name)
    seconds = session.left() - 30
    if seconds < 20:
        raise StepError(f"only {seconds:.0f} s left")
    args = ["run", a.artifact, "--profile", a.profile, "--jobs", str(a.jobs), "--runs-dir", str(runs)]
    args += ["--results-dir", str(session.work / "results"), *session.train_args(), "--stop-after", f"{seconds:.0f}"]
    args = [x for x in args if x != "--allow-partial"]  # `run` takes no such flag; its smoke profile is partial
    log = session.work / "logs" / f"artifact-{a.artifact}.log"
    (status,) = wait([cli(session, args, log, seconds + 25)])
    done = []
    for record_path in sorted(runs.glob("*/run.json")):
        record = RunDir(record_path.parent).read_record()
        final = (record.get("final") or {}).get("test/error")
        done.append(
            f"{record['run_id']}: {record['status']} at iteration {record.get('iterations')}"
            + (f", test error {final:.2f}%" if final is not None else "")
            + f", {record.get('wall_time_s', 0):.0f} s"
        )
    if status not in (0, 3):
        raise StepError(f"run {a.artifact} exited {status}: {_last_line(log)}")
    return {"summary": f"exit {status}; " + "; ".join(done), "runs": done}


STEP_FUNCTIONS = {
    "env": step_env,
    "decode": step_decode,
    "checks": step_checks,
    "paper": step_paper,
    "compiled": lambda s: step_paper(s, compiled=True),
    "profile": step_profile,
    "jobs": step_jobs,
    "precision": step_precision,
    "artifact": step_artifact,
}


# --- the record and what comes back ---------------------------------------------------------------


def render(session: Session) -> str:
    lines = [
        f"# GPU session: {session.env.get('device', '?')}",
        "",
        f"- command: `{session.command}`",
        f"- started: {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(session.started))}, "
        f"budget {session.args.budget:.0f} s, mode {session.mode.name}",
        f"- commit: {session.env.get('commit', '?')}",
        "",
        "| step | status | wall s | result |",
        "|---|---|---:|---|",
    ]
    for s in session.steps:
        lines.append(f"| {s['step']} | {s['status']} | {s['wall_s']:.0f} | {s.get('summary', '')} |")
    lines += ["", "## Environment", "", "```", json.dumps(session.env, indent=2), "```", ""]
    lines += [
        "Unpack the rest with `cat session.tar.gz.* | tar xz`: logs/, each timed run's logs under runs-timed/ "
        "and runs-jobs/, profile.txt, and runs/ (an artifact's runs, checkpoints of unfinished ones included).",
        "",
    ]
    return "\n".join(lines)


def _travels(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """What the packed session holds: everything but locks, symbolic links, and the checkpoints of the timed
    runs (thrown away; only an artifact's unfinished runs, under runs/, need theirs to continue elsewhere)."""
    parts = Path(info.name).parts
    if info.name.endswith(".lock") or info.issym() or ("checkpoints" in parts and parts[0] != "runs"):
        return None
    return info


def pack(session: Session, out: Path) -> list[Path]:
    """session.md, session.json and the work folder (no decoded data) as a tar.gz in pieces under the limits."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("session.tar.gz.*"):
        old.unlink()
    (out / "session.md").write_text(render(session))
    (out / "session.json").write_text(
        json.dumps({"env": session.env, "steps": session.steps, "command": session.command}, indent=2, default=str)
        + "\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "session.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for path in sorted(session.work.iterdir()):
                if path.name != "cache":
                    tar.add(path, arcname=path.name, filter=_travels)
        size = archive.stat().st_size
        pieces = math.ceil(size / RETURN_FILE_BYTES) or 1
        if pieces > RETURN_FILES - 2 or size > RETURN_TOTAL_BYTES:
            raise StepError(f"the packed session is {size / 2**20:.1f} MiB, more than comes back from a lent machine")
        with archive.open("rb") as source:
            for i in range(pieces):
                (out / f"session.tar.gz.{i:02d}").write_bytes(source.read(RETURN_FILE_BYTES))
    return sorted(out.iterdir())


def run_step(session: Session, name: str) -> None:
    record = {"step": name, "status": "running", "wall_s": 0.0, "summary": ""}
    session.steps.append(record)
    began = time.time()
    print(f"gpu_session: {name} ({session.left():.0f} s left)", flush=True)
    try:
        if session.left() < 5:
            raise StepError("skipped: the budget is spent")
        record.update(STEP_FUNCTIONS[name](session), status="done")
    except StepError as exc:
        record.update(status="skipped" if str(exc).startswith("skipped") else "failed", summary=str(exc))
    except Exception as exc:  # a failing step must not lose the others: its one line, its traceback in the log
        record.update(status="failed", summary=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        (session.work / "logs").mkdir(exist_ok=True)
        (session.work / "logs" / f"{name}-traceback.txt").write_text(traceback.format_exc())
    record["wall_s"] = time.time() - began
    print(f"gpu_session: {name} {record['status']}: {record['summary']}", flush=True)


def settle(args) -> Mode:
    """Check the flags before anything runs; the mode."""
    mode = SMOKE if args.cpu_smoke else GPU
    if not args.cpu_smoke and not torch.cuda.is_available():
        raise UserError("no CUDA device is visible to torch; on a CPU, run with --cpu-smoke")
    args.budget = mode.budget if args.budget is None else args.budget
    args.steps = [s.strip() for s in (args.steps or ",".join(FIRST_WINDOW)).split(",") if s.strip()]
    unknown = [s for s in args.steps if s not in STEPS]
    if unknown or not args.steps:
        raise UserError(f"--steps: unknown {', '.join(unknown) or '(none)'}; choose from {', '.join(STEPS)}")
    if "artifact" in args.steps and not args.artifact:
        raise UserError("--steps artifact needs --artifact ID (and --profile P)")
    args.data = args.data or os.environ.get("RESNET_REPRO_DATA")
    if not args.data or not Path(args.data).exists():
        raise UserError(
            f"no CIFAR-10 copy at {args.data!r}: a lent machine has no network, so carry the copy inside the "
            "checkout (an ignored folder) and name it with --data"
        )
    args.data = str(Path(args.data).resolve())
    if args.out is None:
        raise UserError("--out DIR is required: the folder whose files come back from the lent machine")
    return mode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog="benchmarks/gpu_session.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu-smoke", action="store_true", help="every step in seconds on a CPU (tiny sizes)")
    parser.add_argument(
        "--budget",
        type=parse_duration,
        default=None,
        help="all steps' time: 435, 7m (default 435 s; --cpu-smoke: a bound of 1800 s)",
    )
    parser.add_argument(
        "--steps", default=None, help=f"comma-separated from {', '.join(STEPS)} (default: all but artifact)"
    )
    parser.add_argument("--out", type=Path, default=None, help="the folder that comes back ($OUT on a lent machine)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--data", default=None, help="CIFAR-10 source (default: $RESNET_REPRO_DATA)")
    parser.add_argument(
        "--allow-partial", action="store_true", help="accept a source without all 60,000 images (tests)"
    )
    parser.add_argument("--artifact", default=None, help="the artifact step's artifact, e.g. fig6")
    parser.add_argument("--profile", default="mid", help="the artifact step's profile (default mid)")
    parser.add_argument("--jobs", type=int, default=8, help="the artifact step's runs at once (default 8)")
    parser.add_argument(
        "--resume-from",
        default=str(REPO / "results" / "runs"),
        help="unfinished runs to continue (default results/runs)",
    )
    args = parser.parse_args(argv)

    def run() -> int:
        mode = settle(args)
        started = time.time()
        with contextlib.ExitStack() as stack:
            work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu-session-")))
            work.mkdir(parents=True, exist_ok=True)
            session = Session(args, mode, work, started, "python benchmarks/gpu_session.py " + shlex.join(argv))
            try:
                for name in ["env", *[s for s in args.steps if s != "env"]]:
                    run_step(session, name)
                    pack(session, args.out)
            except KeyboardInterrupt:
                pack(session, args.out)
                return 130
        failed = [s["step"] for s in session.steps if s["status"] == "failed"]
        print(f"gpu_session: done in {time.time() - started:.0f} s; failed: {', '.join(failed) or 'none'}", flush=True)
        return 1 if failed else 0

    return exit_status("gpu_session", run)


def _nvidia_smi() -> dict:
    if shutil.which("nvidia-smi") is None:
        return {"driver": "none"}
    query = ["nvidia-smi", "--query-gpu=driver_version,name,memory.total", "--format=csv,noheader"]
    done = subprocess.run(query, capture_output=True, text=True, timeout=30)
    return {"driver": done.stdout.strip() or "unknown"}


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _git_commit() -> str:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"], capture_output=True, text=True, cwd=REPO, check=True
        ).stdout.strip()
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
