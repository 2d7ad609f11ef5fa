"""One GPU session in one command: the device, training throughput, packed --jobs rates, then the paper runs.

For a GPU lent for a few minutes at a time (at most 10 per command). Within --budget (default 540 s), each
step timed and guarded (a failing step is recorded with its one-line error and the next one runs):
  1. environment: the device, driver and CUDA versions, torch/torchvision/lightning, CPU count;
  2. throughput, throughput-bf16: benchmarks/throughput.py (its --quick sizes) on resnet20/56/110, fp32 and bf16-mixed;
  3. jobs: aggregate training images/s of N = 1, 2, 4, 8 short resnet20 runs sharing the GPU;
  4. fig6, table6: `resnet-repro run ARTIFACT --profile paper --stop-after <what the budget leaves>` into a
     persistent --runs-dir (exit status 3, "time limit reached", is expected): each session advances them.
Everything goes into one folder, default results/gpu-session/<device>-<YYYYMMDD-HHMM>/, with session.md (each
step, its wall time and outcome, the device) and session.json, rewritten after every step.

    python benchmarks/gpu_session.py                              # the first session on a GPU: at most 9 minutes
    python benchmarks/gpu_session.py --steps fig6,table6 --jobs 8 # later ones: the whole budget for the paper runs
                                                                  # (--jobs: the first session's best, jobs.md)
    python benchmarks/gpu_session.py --cpu-smoke --data tiny-cifar.tar.gz --allow-partial --out /tmp/session
                                                                  # every step in seconds on a CPU (resnet8, smoke)

CIFAR-10 comes from --data or $RESNET_REPRO_DATA, else a download already under --data-root: a lent machine
without network needs the copy inside the checkout it gets, and the session stops at once (exit 2) without one.
Steps start only with enough of the budget left; the jobs step and the artifacts stop at their deadlines
(an artifact that overruns is interrupted as by Ctrl-C, so its runs checkpoint), while throughput.py runs
to its end, kept short by its sizes. The runs are cached and resume from their checkpoints, so the same
command continues them until fig6 and table6 render into the session folder; on a machine that does not
keep its disk between loans, the session folder's runs/ holds each artifact run's logs and, while unfinished,
its checkpoint: keep them with `resnet-repro report ARTIFACT --runs-dir <that folder> --keep-checkpoints`, and
the next session continues them from the checkout's results/runs/ (--resume-from). Exit status: 0 when no
step failed (steps skipped for lack of time included), 1 when one did, 2 on a mistake in the command,
130 on Ctrl-C.
"""

import argparse
import contextlib
import dataclasses
import importlib.util
import io
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("resnet_repro") is None:  # a bare checkout, e.g. on a lent GPU machine
    sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from resnet_repro.commands.train import parse_duration  # noqa: E402
from resnet_repro.data.cifar10 import DataConfig  # noqa: E402
from resnet_repro.data.sources import DATA_ENV, resolve_source  # noqa: E402
from resnet_repro.errors import EXIT_TIME_LIMIT, UserError, exit_status  # noqa: E402

FALLBACK_JOBS = 4  # runs at once for the artifacts when --jobs auto has no jobs measurement to go by


@dataclasses.dataclass(frozen=True)
class Mode:
    """The sizes of a session: a real one on a GPU, or a CPU smoke run of seconds."""

    name: str
    device: str  # torch's name for it
    accelerator: str  # Lightning's
    budget: float
    profile: str
    throughput_flags: tuple[str, ...]
    jobs_sweep: str
    jobs_model: str
    jobs_iters: int
    jobs_batch: int
    jobs_log_every: int
    jobs_allow: float  # the most seconds the jobs step may take
    threads: int | None  # torch CPU threads per process; None: each command's default
    needs: dict  # step -> seconds of budget it must have left to start
    grace: float  # seconds between an artifact's --stop-after and its kill: its checkpoints and exit
    reserve: float  # seconds kept back at the end for the session's own files


GPU = Mode(
    name="gpu",
    device="cuda",
    accelerator="gpu",
    budget=540.0,
    profile="paper",
    throughput_flags=("--models", "resnet20,resnet56,resnet110", "--quick", "--warmup", "10"),
    jobs_sweep="1,2,4,8",
    jobs_model="resnet20",
    jobs_iters=400,
    jobs_batch=128,
    jobs_log_every=20,
    jobs_allow=120.0,
    threads=None,
    needs={"environment": 0, "throughput": 60, "throughput-bf16": 60, "jobs": 60, "fig6": 90, "table6": 90},
    grace=30.0,
    reserve=10.0,
)
SMOKE = Mode(
    name="cpu-smoke",
    device="cpu",
    accelerator="cpu",
    budget=300.0,
    profile="smoke",
    throughput_flags=(
        "--models",
        "resnet8",
        "--batch-size",
        "16",
        "--warmup",
        "1",
        "--iters",
        "2",
        "--repeats",
        "1",
        "--gemm-size",
        "64",
    ),
    jobs_sweep="1,2",
    jobs_model="resnet8",
    jobs_iters=6,
    jobs_batch=16,
    jobs_log_every=3,
    jobs_allow=120.0,
    threads=1,
    needs={},
    grace=10.0,
    reserve=1.0,
)


class StepError(Exception):
    """A step that could not do its work; its message is the one line session.md records."""


@dataclasses.dataclass
class Outcome:
    """What a step did: one line for the summary table, the files it wrote, optional Markdown details."""

    summary: str
    files: list[str] = dataclasses.field(default_factory=list)
    details: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Session:
    """One session's flags, folder, deadline and the record of its steps so far."""

    args: argparse.Namespace
    mode: Mode
    device_name: str
    out: Path
    started: float  # time.time()
    command: str
    env: dict = dataclasses.field(default_factory=dict)
    steps: list[dict] = dataclasses.field(default_factory=list)
    best_jobs: int | None = None

    @property
    def deadline(self) -> float:
        return self.started + self.args.budget - self.mode.reserve

    def left(self) -> float:
        """Seconds of the budget left for steps."""
        return self.deadline - time.time()


# --- step 1: the environment ----------------------------------------------------------------------


def step_environment(session: Session) -> Outcome:
    """Print and write environment.json: the device, driver, CUDA, library versions and CPUs."""
    import lightning
    import torchvision

    from resnet_repro.rundir import provenance

    meta = provenance()
    env = {
        "device": session.device_name,
        **nvidia_smi(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda or "none",
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else "none",
        "torchvision": torchvision.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "commit": meta["commit"],
        "host": meta["host"],
    }
    if session.mode.device == "cuda":
        env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    session.env = env
    (session.out / "environment.json").write_text(json.dumps(env, indent=2) + "\n")
    for key, value in env.items():
        print(f"gpu_session: {key:>13}: {value}", flush=True)
    return Outcome(
        f"{env['device']}; driver {env['driver']}, CUDA {env['cuda_driver']} (torch built for {env['torch_cuda']}); "
        f"torch {env['torch']}, torchvision {env['torchvision']}, lightning {env['lightning']}; {env['cpu_count']} CPUs",
        ["environment.json"],
    )


def nvidia_smi() -> dict:
    """Driver version and the CUDA version the driver supports, from nvidia-smi ('none' without it)."""
    if shutil.which("nvidia-smi") is None:
        return {"driver": "none", "cuda_driver": "none"}
    query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
    driver = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
    banner = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", banner)
    return {"driver": driver[0] if driver else "unknown", "cuda_driver": cuda[1] if cuda else "unknown"}


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# --- step 2: throughput ---------------------------------------------------------------------------


def step_throughput(session: Session, precision: str) -> Outcome:
    """benchmarks/throughput.py in this process, its .md and .csv into the session folder."""
    bench = _load_benchmark("throughput")
    argv = [*session.mode.throughput_flags, "--device", session.mode.device, "--precision", precision]
    argv += ["--out", str(session.out), *_data_flags(session.args, partial=True)]
    print(f"gpu_session: python benchmarks/throughput.py {shlex.join(argv)}", flush=True)
    err = _Tee(sys.stderr)
    with contextlib.redirect_stderr(err):
        try:
            status = bench.main(argv)
        except SystemExit as exc:  # argparse's answer to a flag it does not know
            status = exc.code
    if status:
        raise StepError(f"benchmarks/throughput.py exited with status {status}: {_last_line(err.getvalue())}")
    stem = bench.output_stem(precision, False)
    table = pd.read_csv(session.out / f"{stem}.csv")
    ours = table[table["path"] == "ours-lightning"]
    rates = ", ".join(f"{m} {r:.0f}" for m, r in zip(ours["model"], ours["images_per_s"], strict=True))
    return Outcome(f"{rates} img/s through Lightning ({stem}.md)", [f"{stem}.md", f"{stem}.csv"])


def _data_source(data: str | None, data_root: str | None) -> str:
    """The CIFAR-10 source every step reads, checked before anything runs (each step would fail on a missing one,
    one after another). A lent machine has no network to download it: it reads a copy that travels with the
    checkout, named by --data or $RESNET_REPRO_DATA."""
    source = resolve_source(data, data_root)  # a DataError (exit 2) when the path is wrong
    if source.needs_download:
        raise UserError(
            f"no CIFAR-10 source: pass --data PATH or set ${DATA_ENV} to a copy in the checkout "
            f"(nothing was downloaded into {source.path.parent}, and a lent machine cannot download it)"
        )
    return str(source.path)


def _data_flags(args, *, partial: bool) -> list[str]:
    """--data, --data-root, --threads (and --allow-partial where the command has it) as the session got them."""
    flags = ["--data", args.data] + (["--data-root", args.data_root] if args.data_root else [])
    flags += ["--threads", str(args.threads)] if args.threads else []
    return flags + (["--allow-partial"] if partial and args.allow_partial else [])


def _load_benchmark(name: str):
    """A script of benchmarks/ as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Tee(io.StringIO):
    """Keeps what is written to it and passes it on to `stream`."""

    def __init__(self, stream):
        super().__init__()
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(text)
        return super().write(text)


# --- step 3: packed runs --------------------------------------------------------------------------


def step_jobs(session: Session) -> Outcome:
    """Aggregate training images/s of N short runs at once, for each N of --jobs-sweep: jobs.csv and jobs.md."""
    mode, until = session.mode, min(session.deadline, time.time() + session.mode.jobs_allow)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-session-jobs-") as scratch:
        for n in session.args.jobs_sweep:
            if rows and time.time() >= until:
                print(f"gpu_session: jobs: no time left for {n} jobs", flush=True)
                break
            rows.append(packed_rate(session, n, Path(scratch) / f"jobs{n}", until))
            print(f"gpu_session: {n} job(s): {rows[-1]['images_per_s']:.0f} img/s in all", flush=True)
    table = pd.DataFrame(rows)
    one = table.loc[table["jobs"] == 1, "images_per_s"]
    table["vs_one_job"] = table["images_per_s"] / one.iloc[0] if len(one) and one.iloc[0] > 0 else float("nan")
    table.to_csv(session.out / "jobs.csv", index=False, float_format="%.4g")
    lines = render_jobs(table, session, mode)
    (session.out / "jobs.md").write_text("\n".join(lines) + "\n")
    if not (table["images_per_s"] > 0).any():
        raise StepError("no run logged a training rate (see jobs.md)")
    best = table.loc[table["images_per_s"].idxmax()]
    session.best_jobs = int(best["jobs"])
    measured = ", ".join(f"{j}: {r:.0f}" for j, r in zip(table["jobs"], table["images_per_s"], strict=True))
    return Outcome(f"img/s in all by jobs {measured}; best: {session.best_jobs}", ["jobs.md", "jobs.csv"], lines[2:])


def packed_rate(session: Session, n: int, scratch: Path, until: float) -> dict:
    """Train n short runs at once through `train_runs` (as `resnet-repro run --jobs n`); their summed rate."""
    from resnet_repro.records import read_run
    from resnet_repro.runner import PendingRun, train_runs
    from resnet_repro.spec import Schedule, TrainSpec
    from resnet_repro.training import Hardware

    mode, args = session.mode, session.args
    never = mode.jobs_log_every * (args.jobs_iters // mode.jobs_log_every + 1)  # no periodic eval or checkpoint
    data = DataConfig(data=args.data, root=args.data_root, full=not args.allow_partial)
    hardware = Hardware(accelerator=mode.accelerator, threads=args.threads or max(1, (os.cpu_count() or 1) // n))
    todo = [
        PendingRun(
            TrainSpec(
                model=mode.jobs_model,
                schedule=Schedule().scaled(args.jobs_iters),
                batch_size=mode.jobs_batch,
                seed=seed,
                data=data,
                log_every=mode.jobs_log_every,
                eval_every=never,
                checkpoint_every=never,
            ),
            scratch / f"run{seed}",
            False,
            hardware,
        )
        for seed in range(n)
    ]
    started = time.perf_counter()
    records = train_runs(todo, {"wandb": "off", "progress": False, "deadline": until}, n)
    wall = time.perf_counter() - started
    # Each run's median logged rate: training only (set-up, the final evaluation and checkpoint are not timed).
    rates = [
        read_run(run.run_dir)[1]["throughput"].dropna().median()
        for run in todo
        if (run.run_dir / "metrics.csv").exists()
    ]
    rates = [r for r in rates if not math.isnan(r)]  # a run stopped before its first logged interval has none
    images = sum(r.get("iterations", 0) for r in records) * mode.jobs_batch
    return {
        "jobs": n,
        "runs_with_rate": len(rates),
        "images_per_s": sum(rates),
        "images_per_s_per_run": ";".join(f"{r:.1f}" for r in rates),
        "end_to_end_images_per_s": images / wall,
        "wall_s": wall,
        "complete": all(r["status"] == "finished" for r in records),
        "model": mode.jobs_model,
        "iterations": args.jobs_iters,
        "batch_size": mode.jobs_batch,
        "threads_per_run": hardware.threads,
        "device": session.device_name,
    }


def render_jobs(table: pd.DataFrame, session: Session, mode: Mode) -> list[str]:
    """jobs.md: the aggregate rate per N and how it was measured."""
    lines = [
        f"# Packed runs on one device: {session.device_name}",
        "",
        f"N runs of {mode.jobs_model} ({session.args.jobs_iters} iterations, batch {mode.jobs_batch}, fp32) trained at "
        "once, each in its own process as `resnet-repro run --jobs N` trains them (`resnet_repro.runner.train_runs`). "
        "In all = the sum over runs of each run's median logged images/s (metrics.csv `throughput`: training only; "
        "it assumes the runs overlap, which they do but for their start-up). End to end = all images trained / "
        "the N runs' wall time, start-up and final evaluation included (N = 1 trains in this process: no process start).",
        "",
        "| jobs | img/s in all | vs 1 job | img/s per run | end to end img/s | wall | complete |",
        "|---:|---:|---:|---|---:|---:|---|",
    ]
    for r in table.itertuples():
        lines.append(
            f"| {r.jobs} | {r.images_per_s:.0f} | {r.vs_one_job:.2f}x | {r.images_per_s_per_run or '–'} | "
            f"{r.end_to_end_images_per_s:.0f} | {r.wall_s:.0f} s | {'yes' if r.complete else 'cut short'} |"
        )
    return lines


# --- step 4: the paper runs -----------------------------------------------------------------------


def step_artifact(session: Session, artifact: str) -> Outcome:
    """`resnet-repro run ARTIFACT --stop-after <what is left>` as a subprocess; exit status 3 is expected."""
    args, mode = session.args, session.mode
    stop_after = max(0.0, session.left() - mode.grace)
    if args.stop_after is not None:
        stop_after = min(stop_after, args.stop_after)
    jobs = args.jobs if args.jobs != "auto" else session.best_jobs or FALLBACK_JOBS
    command = [sys.executable, "-m", "resnet_repro", "run", artifact, "--profile", args.profile]
    command += ["--accelerator", mode.accelerator, "--jobs", str(jobs), "--stop-after", f"{stop_after:.0f}"]
    command += ["--runs-dir", str(args.runs_dir), "--results-dir", str(session.out), "--wandb", "off", "--no-progress"]
    command += _data_flags(args, partial=False)  # the profile decides whether a partial copy will do
    continued = continue_runs(args.resume_from, artifact, args.profile, Path(args.runs_dir))
    log = session.out / f"{artifact}.log"
    # Stopped by force only when the session's budget is spent: a --stop-after shorter than the budget still
    # leaves the run the rest of it to start up, checkpoint and render (slow on a busy machine).
    status = run_logged(command, log, timeout=max(session.left(), stop_after + mode.grace), grace=mode.grace)
    progress = run_progress(artifact, args.profile, Path(args.runs_dir))
    done = sum(p["status"] == "finished" for p in progress)
    carried = carry_back(progress, Path(args.runs_dir), session.out / "runs")
    details = [
        *continued,
        *(["", f"Their logs, and the checkpoints of unfinished ones, are in runs/: {carried}."] if carried else []),
        "",
        f"`{shlex.join(['resnet-repro', *command[3:]])}` (exit status {status}):",
        "",
        "| run | status | iterations |",
        "|---|---|---:|",
        *(f"| {p['run_id']} | {p['status']} | {p['iterations']} / {p['max_iters']} |" for p in progress),
    ]
    if status == 0:
        return Outcome(
            f"all {len(progress)} runs finished; rendered {artifact}/", [log.name, artifact, "runs"], details
        )
    if status == EXIT_TIME_LIMIT:
        return Outcome(
            f"time limit reached after --stop-after {stop_after:.0f}: {done}/{len(progress)} runs finished; "
            "run the session again to continue",
            [log.name, *(["runs"] if carried else [])],
            details,
        )
    raise StepError(f"resnet-repro run {artifact} exited with status {status}: {_last_line(log.read_text())}")


def run_logged(command: list[str], log: Path, timeout: float, grace: float) -> int:
    """Run `command`, its output to the terminal and `log`; Ctrl-C it at `timeout`, kill it `grace` s later."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    with log.open("w") as sink:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
        )
        copier = threading.Thread(target=_copy_lines, args=(proc.stdout, sink), daemon=True)
        copier.start()
        try:
            status = proc.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, KeyboardInterrupt) as exc:
            _stop_group(proc, grace)  # its own process group: SIGINT reaches the runs, which checkpoint and stop
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise StepError(f"still running {timeout:.0f} s after it started: interrupted (see {log.name})") from None
        finally:
            copier.join(timeout=10)
    return status


def _copy_lines(stream, sink) -> None:
    for line in stream:
        sys.stdout.write(line)
        sys.stdout.flush()
        sink.write(line)


def _stop_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGINT to the process group (as Ctrl-C), then SIGKILL if it is still there after `grace` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def continue_runs(source: Path | None, artifact: str, profile: str, runs_dir: Path) -> list[str]:
    """Copy into `runs_dir` each unfinished run of the artifact that `source` holds further along, checkpoint
    included (`resnet-repro report --keep-checkpoints` keeps it in results/runs/): a run begun on another
    machine, or on an earlier loan whose disk is gone, continues here. One line per run copied."""
    if source is None or not source.is_dir() or source.resolve() == runs_dir.resolve():
        return []
    ours = {p["run_id"]: p for p in run_progress(artifact, profile, runs_dir)}
    lines = []
    for theirs in run_progress(artifact, profile, source):
        rid, mine = theirs["run_id"], ours[theirs["run_id"]]
        resumable = theirs["status"] == "interrupted" and (source / rid / "checkpoints" / "last.ckpt").exists()
        behind = mine["status"] != "finished" and (
            mine["iterations"] == "–" or mine["iterations"] < theirs["iterations"]
        )
        if resumable and behind:
            shutil.rmtree(runs_dir / rid, ignore_errors=True)
            shutil.copytree(source / rid, runs_dir / rid)
            lines.append(f"Continued {rid} from {source} at iteration {theirs['iterations']}.")
    return lines


def carry_back(progress: list[dict], runs_dir: Path, dest: Path) -> int:
    """Copy the started runs' logs into `dest`, with the checkpoint of each unfinished one, so a machine that
    keeps nothing between loans hands them back in the session folder; how many runs were copied."""
    from resnet_repro.report import keep_records

    started = [p["run_id"] for p in progress if (runs_dir / p["run_id"] / "run.json").exists()]
    keep_records(runs_dir, started, dest, checkpoints=True)
    return len(started)


def run_progress(artifact: str, profile: str, runs_dir: Path) -> list[dict]:
    """Each run of the artifact under the profile: its status and iterations so far, from its run.json."""
    from resnet_repro.experiment import plan_runs
    from resnet_repro.runner import load_experiment
    from resnet_repro.spec import run_id

    experiment = load_experiment(artifact)
    rows = []
    for spec in plan_runs(experiment, experiment.profile(profile)):  # the profile as this artifact runs it
        path = runs_dir / run_id(spec) / "run.json"
        record = json.loads(path.read_text()) if path.exists() else {}
        rows.append(
            {
                "run_id": run_id(spec),
                "status": record.get("status", "not started"),
                "iterations": record.get("iterations", "–"),
                "max_iters": spec.schedule.max_iters,
            }
        )
    return rows


# --- the session ----------------------------------------------------------------------------------


STEPS = {  # name -> what it runs, in the session's order
    "environment": step_environment,
    "throughput": lambda session: step_throughput(session, "32-true"),
    "throughput-bf16": lambda session: step_throughput(session, "bf16-mixed"),
    "jobs": step_jobs,
    "fig6": lambda session: step_artifact(session, "fig6"),
    "table6": lambda session: step_artifact(session, "table6"),
}


def run_step(session: Session, record: dict) -> None:
    """Run one step into `record` if the budget leaves it enough time; a failure is recorded, not raised."""
    name = record["step"]
    needs = session.mode.needs.get(name, 0)
    if session.left() < needs:
        record.update(
            status="skipped", summary=f"{max(session.left(), 0):.0f} s of the budget left; it needs {needs} s"
        )
        print(f"gpu_session: {name}: skipped: {record['summary']}", flush=True)
        return
    print(f"gpu_session: --- {name} ({session.left():.0f} s of the budget left)", flush=True)
    started = time.perf_counter()
    try:
        outcome = STEPS[name](session)
        record.update(status="ok", summary=outcome.summary, files=outcome.files, details=outcome.details)
    except (Exception, SystemExit) as exc:  # SystemExit: argparse's answer to a bad flag
        record.update(status="failed", error=one_line(exc), traceback=traceback.format_exc())
        traceback.print_exc()
    finally:  # Ctrl-C included: run() records it
        record["wall_s"] = time.perf_counter() - started
    print(f"gpu_session: {name}: {record['status']} in {record['wall_s']:.0f} s", flush=True)


def one_line(exc: BaseException) -> str:
    """'message' for our own errors, 'Type: message' for others; the first line only."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, StepError | UserError) else f"{type(exc).__name__}: {text}".rstrip(": ")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def render_session(session: Session) -> str:
    """session.md: the device, each step's status, wall time and outcome, then the steps' details."""
    env, args = session.env, session.args
    title = "GPU session" if session.mode is GPU else "CPU smoke session"
    lines = [
        f"# {title} on {session.device_name}",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M %Z', time.localtime(session.started))}; budget {args.budget:.0f} s, "
        f"{time.time() - session.started:.0f} s used; profile {args.profile}; runs in `{args.runs_dir}`; "
        f"data `{Path(args.data).name}`. Generated by `benchmarks/gpu_session.py`:",
        "",
        f"    {session.command}",
        "",
        "| step | status | wall | outcome | files |",
        "|---|---|---:|---|---|",
    ]
    for r in session.steps:
        text = (r.get("error") or r["summary"]).replace("|", "/")
        files = ", ".join(f"[{f}]({f})" for f in r["files"])
        lines.append(f"| {r['step']} | {r['status']} | {r['wall_s']:.0f} s | {text} | {files} |")
    lines += ["", "## Environment", ""] + [f"- {key}: {value}" for key, value in env.items()]
    for r in session.steps:
        if r["details"]:
            lines += ["", f"## {r['step']}", "", *r["details"]]
    return "\n".join(lines) + "\n"


def write_record(session: Session) -> None:
    """session.md and session.json as they stand (rewritten after every step)."""
    (session.out / "session.md").write_text(render_session(session))
    record = {
        "mode": session.mode.name,
        "device": session.device_name,
        "command": session.command,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(session.started)),
        "budget_s": session.args.budget,
        "used_s": time.time() - session.started,
        "profile": session.args.profile,
        "runs_dir": str(session.args.runs_dir),
        "best_jobs": session.best_jobs,
        "environment": session.env,
        "steps": session.steps,
    }
    (session.out / "session.json").write_text(json.dumps(record, indent=2, default=str) + "\n")


# --- the command ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmarks/gpu_session.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu-smoke", action="store_true", help="every step in seconds on a CPU (tiny sizes)")
    parser.add_argument(
        "--budget", type=parse_duration, default=None, help="the whole session's time: 540, 9m (default 540 s)"
    )
    parser.add_argument(
        "--steps", default=",".join(STEPS), help=f"comma-separated, from {', '.join(STEPS)} (default: all)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="the session folder (default: results/gpu-session/<device>-<date>/)"
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=None,
        help="persistent runs of the artifacts (default ~/.cache/resnet-repro-runs/<profile>)",
    )
    parser.add_argument(
        "--resume-from",
        type=Path,
        default=REPO / "results" / "runs",
        help="where unfinished runs kept by `report --keep-checkpoints` are continued from, when --runs-dir holds "
        "them less far along (default: the checkout's results/runs/)",
    )
    parser.add_argument("--profile", default=None, help="the artifacts' profile (default paper; --cpu-smoke: smoke)")
    parser.add_argument(
        "--jobs", default="auto", help="runs at once for the artifacts (default auto: the jobs step's best)"
    )
    parser.add_argument("--jobs-sweep", default=None, help="N of the jobs step (default 1,2,4,8; --cpu-smoke: 1,2)")
    parser.add_argument("--jobs-iters", type=int, default=None, help="iterations of each jobs-step run (default 400)")
    parser.add_argument(
        "--stop-after",
        type=parse_duration,
        default=None,
        help="at most this --stop-after per artifact (default: what the budget leaves)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per process (--cpu-smoke: 1)")
    parser.add_argument(
        "--data",
        default=None,
        help=f"CIFAR-10 source (default: ${DATA_ENV}, else a copy torchvision downloaded under --data-root)",
    )
    parser.add_argument("--data-root", default=None, help="decoded-cache directory (default: ~/.cache/resnet-repro)")
    parser.add_argument(
        "--allow-partial", action="store_true", help="accept a source without all 60,000 images (tests)"
    )
    return parser


def settle(args, mode: Mode) -> None:
    """Fill in the defaults of the mode and check the flags, before anything is written."""
    args.budget = mode.budget if args.budget is None else args.budget
    args.profile = args.profile or mode.profile
    args.threads = args.threads or mode.threads
    args.jobs_iters = args.jobs_iters or mode.jobs_iters
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in args.steps if s not in STEPS]
    if unknown or not args.steps:
        raise UserError(
            f"--steps: unknown step(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(STEPS)}"
        )
    try:
        args.jobs_sweep = [int(n) for n in (args.jobs_sweep or mode.jobs_sweep).split(",") if n.strip()]
        args.jobs = args.jobs if args.jobs == "auto" else int(args.jobs)
    except ValueError:
        raise UserError("--jobs-sweep takes counts such as 1,2,4,8 and --jobs a count or auto") from None
    if not args.jobs_sweep or min(args.jobs_sweep) < 1 or (args.jobs != "auto" and args.jobs < 1):
        raise UserError("--jobs and --jobs-sweep take counts of at least 1")
    if args.jobs_iters < 3 or args.budget <= 0:
        raise UserError("--jobs-iters must be at least 3 (the lr drops at 50% and 75%) and --budget positive")
    from resnet_repro.experiment import get_profile

    get_profile(args.profile)  # an unknown profile fails here, not after minutes of benchmarks
    args.data_root = str(Path(args.data_root).expanduser().resolve()) if args.data_root else None
    args.data = _data_source(args.data, args.data_root)


def device_name(mode: Mode) -> str:
    """'NVIDIA H200', or 'CPU <model>' for a smoke session."""
    if mode.device == "cuda":
        if not torch.cuda.is_available():
            raise UserError("no CUDA device is visible to torch; on a CPU, run with --cpu-smoke")
        return torch.cuda.get_device_name(0)
    return f"CPU {_cpu_model()}"


def session_folder(args, mode: Mode, name: str, started: float) -> Path:
    """--out, else results/gpu-session/<device-slug>-<YYYYMMDD-HHMM>/."""
    if args.out is not None:
        return args.out.expanduser().resolve()
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] + ("-smoke" if mode is SMOKE else "")
    return REPO / "results" / "gpu-session" / f"{slug}-{time.strftime('%Y%m%d-%H%M', time.localtime(started))}"


def run(args, argv: list[str]) -> int:
    """Run the chosen steps in order within the budget; 1 if any step failed."""
    started = time.time()
    mode = SMOKE if args.cpu_smoke else GPU
    name = device_name(mode)
    settle(args, mode)
    out = session_folder(args, mode, name, started)
    default_runs = out / "runs" if mode is SMOKE else Path.home() / ".cache" / "resnet-repro-runs" / args.profile
    args.runs_dir = (args.runs_dir or default_runs).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    session = Session(args, mode, name, out, started, "python benchmarks/gpu_session.py " + shlex.join(argv))
    print(f"gpu_session: {name}, budget {args.budget:.0f} s, steps {', '.join(args.steps)}; writing {out}", flush=True)
    try:
        for step in args.steps:
            session.steps.append(
                {"step": step, "status": "running", "wall_s": 0.0, "summary": "", "files": [], "details": []}
            )
            write_record(session)
            run_step(session, session.steps[-1])
            write_record(session)
    except KeyboardInterrupt:
        session.steps[-1].update(status="interrupted", summary="Ctrl-C")
        write_record(session)
        print(f"gpu_session: interrupted; what ran is in {out / 'session.md'}", flush=True)
        return 130
    failed = [r["step"] for r in session.steps if r["status"] == "failed"]
    print(
        f"gpu_session: done in {time.time() - started:.0f} s"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
        + f"; see {out / 'session.md'}",
        flush=True,
    )
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Parse the flags and run the session; 2 on a mistake in the command, as the CLI does."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    return exit_status("gpu_session", lambda: run(args, argv))


if __name__ == "__main__":
    sys.exit(main())
