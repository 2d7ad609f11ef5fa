"""`resnet-repro run ARTIFACT --launcher slurm|local`: one job per pending run, then one that tests and renders.

Each job runs exactly `resnet-repro run ARTIFACT --only RUN` with the submitting command's flags, in a child
process, in the submitting directory: the run cache, the run locks and exact resume work as they do without a
cluster, and the runs directory (on a filesystem every node sees) is the only state the jobs share.

submitit writes the sbatch script, pickles each job and requeues it. The scheduler's warning signal (submitit's
USR2, `--warn-before` ahead of `--time`, and on preemption where the cluster sends it) reaches the job's
`checkpoint` hook, which sends SIGTERM to its run: the run saves `last.ckpt` and exits 143, and submitit requeues
the job, which continues the run from that checkpoint. `--status` reads the runs directory alone. See
docs/clusters.md.

submitit is imported only when a job is submitted or runs: `resnet-repro` starts without it.
"""

import argparse
import collections
import contextlib
import dataclasses
import fcntl
import functools
import io
import os
import pickle
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from resnet_repro.errors import EXIT_CTRL_C, EXIT_SIGTERM, EXIT_TIME_LIMIT, UserError

LAUNCHERS = ("slurm", "local")
# What a job runs after the interpreter: `python -m resnet_repro run ARTIFACT ... --only RUN` (a test puts a
# wrapper here that pauses a run mid-way).
ENTRY_POINT: tuple[str, ...] = ("-m", "resnet_repro")
# How often submitit requeues a job that reached its --time (a preemption does not count): each time the run
# continues from its checkpoint, so this only stops a job whose --time is too short to make progress.
MAX_TIMEOUTS = 20
# submitit's local executor kills a job at its timeout (2 minutes unless told): without --time, a month.
LOCAL_TIMEOUT_MIN = 30 * 24 * 60
# Where submitit keeps each submission's scripts, pickles and logs: beside the runs, on the shared filesystem.
JOBS_DIR = ".submitit"
# How often a waiting command looks at its jobs (a local job's state is its process's; SLURM's, sacct's).
POLL_S = 1.0
# The states a run can be in, from its directory alone; a run in the first two needs no more training.
DONE = ("finished", "diverged")
# Options that choose what a command does rather than how a run trains: a job does not take them from the
# submitting command (it is given --only RUN and --no-progress itself).
NOT_FORWARDED = {"only", "list", "jobs", "force", "stop_after", "progress", "profile", "help", "artifact"}
# The options that only apply to SLURM.
SLURM_ONLY = {"partition": "--partition", "cpus_per_run": "--cpus-per-run", "mem_per_run": "--mem-per-run"}


class RunNotDone(RuntimeError):
    """A job whose run did not finish (a stop that does not requeue, a failed command, a run trained
    elsewhere): one line, which a waiting command prints and `sacct` shows as a failed job."""


# --- options -------------------------------------------------------------------------------------------


def job_minutes(text: str) -> int:
    """--time: '4h', '90m', '5400s', 'H:MM:SS' or 'D-HH:MM:SS' -> whole minutes (SLURM's unit), at least 1."""
    text = text.strip()
    units = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", text)
    clock = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d\d)(?::(\d\d))?", text)
    if units:
        seconds = float(units[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[units[2]]
    elif clock:
        days, hours, minutes, secs = (int(g or 0) for g in clock.groups())
        seconds = ((days * 24 + hours) * 60 + minutes) * 60 + secs
    else:
        # A bare number would be minutes to SLURM and seconds to --stop-after: ask for the unit.
        raise argparse.ArgumentTypeError(f"expected a limit with its unit (4h, 90m, 5400s) or H:MM:SS; got {text!r}")
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a limit above zero; got {text!r}")
    return max(1, -(-int(seconds) // 60))


def _duration(text: str) -> float:
    from resnet_repro.commands.train import parse_duration  # imported here: it pulls in the data modules

    return parse_duration(text)


def _memory(text: str) -> str:
    if not re.fullmatch(r"\d+[KMGT]?", text.strip().upper()):
        raise argparse.ArgumentTypeError(f"expected a memory size such as 64G or 500M; got {text!r}")
    return text.strip().upper()


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[a-z][a-z0-9_-]*", key.strip()):
        raise argparse.ArgumentTypeError(f"expected an sbatch option as KEY=VALUE, e.g. account=proj; got {text!r}")
    return key.strip(), value.strip()


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("clusters (--launcher, --status; see docs/clusters.md)")
    group.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        default=None,
        help="submit one job per pending run through submitit, then one that tests and renders: slurm (a job "
        "array), or local (subprocesses on this machine; the command waits and renders)",
    )
    group.add_argument(
        "--status",
        action="store_true",
        help="list each run from the runs directory alone (pending, running, interrupted at iteration k, "
        "finished, diverged); trains nothing",
    )
    group.add_argument("--wait", action="store_true", help="wait for the jobs and render here (no render job)")
    group.add_argument("--partition", default=None, help="SLURM partition")
    group.add_argument(
        "--time",
        type=job_minutes,
        default=None,
        metavar="LIMIT",
        help="each job's wall-clock limit (4h, 90m, 1:30:00; SLURM: required): a run still going then is "
        "checkpointed and its job requeued",
    )
    group.add_argument(
        "--warn-before",
        type=_duration,
        default=120.0,
        metavar="DURATION",
        help="when the warning signal comes before --time (default 2m): time to finish an iteration (or an "
        "evaluation) and save",
    )
    group.add_argument(
        "--gpus-per-run",
        type=int,
        default=None,
        metavar="N",
        help="GPUs of each run's job, on each node (default: the run's --devices; 0 with --accelerator cpu); "
        "N > 1 needs --devices N --strategy ddp (one process per GPU)",
    )
    group.add_argument("--cpus-per-run", type=int, default=None, metavar="N", help="CPU cores of each run's job")
    group.add_argument(
        "--mem-per-run", type=_memory, default=None, metavar="SIZE", help="memory of each run's job, e.g. 64G"
    )
    group.add_argument(
        "--max-parallel",
        type=int,
        default=None,
        metavar="N",
        help="at most N runs' jobs at once (default: SLURM all, local 1)",
    )
    group.add_argument(
        "--slurm-option",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="any other #SBATCH option, e.g. account=proj or constraint=a100 (repeatable)",
    )


@functools.cache
def _launcher_options() -> dict[str, tuple[str, object]]:
    """dest -> (flag, default) of every option add_launcher_arguments adds."""
    parser = argparse.ArgumentParser(add_help=False)
    add_launcher_arguments(parser)
    return {a.dest: (a.option_strings[0], a.default) for a in parser._actions if a.option_strings}


def _given(args) -> list[str]:
    """The launcher options the command line set, as flags."""
    return [flag for dest, (flag, default) in _launcher_options().items() if getattr(args, dest, default) != default]


def launcher_requested(args) -> bool:
    """Whether `resnet-repro run` hands over to this module: --launcher, --status, or one of their options (which
    `launch` then refuses without --launcher)."""
    return bool(_given(args))


def _devices_per_node(hardware) -> int:
    """How many devices one node of a run uses under --devices (a count or a list)."""
    devices = str(hardware.devices).strip()
    if "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    if devices.isdigit() and int(devices) > 0:
        return int(devices)
    # "auto" or -1 count the GPUs of the machine the job lands on, which the submitting one cannot know.
    raise UserError(
        f"--devices {hardware.devices} counts the devices of whatever machine a job lands on: "
        "with --launcher give a count, e.g. --devices 1"
    )


def gpus_per_run(args, hardware) -> int:
    """The GPUs each run's job asks for on each node: --gpus-per-run, or the run's device count."""
    on_cpu = hardware.accelerator == "cpu"
    devices = _devices_per_node(hardware)
    if args.gpus_per_run is None:
        return 0 if on_cpu else devices
    gpus = args.gpus_per_run
    if gpus < 0:
        raise UserError(f"--gpus-per-run must be 0 or more, got {gpus}")
    if gpus and on_cpu:
        raise UserError(f"--gpus-per-run {gpus} with --accelerator cpu: drop one of them")
    if gpus and gpus != devices:
        raise UserError(
            f"--gpus-per-run {gpus}, but each run trains on {devices} device(s) (--devices {hardware.devices}): "
            f"add --devices {gpus} --strategy ddp to train each run on {gpus} GPUs, one process each"
        )
    return gpus


def check_options(args, hardware) -> None:
    """Refuse, in one line, what the launcher cannot do as asked."""
    given = [flag for flag in _given(args) if flag not in ("--launcher", "--status")]
    if args.status:
        if args.launcher is not None or given:
            extra = ["--launcher"] * (args.launcher is not None) + given
            raise UserError(f"--status only reads the runs directory; drop {', '.join(extra)}")
        return
    if args.launcher is None:
        raise UserError(f"{given[0]} is a cluster option: add --launcher slurm (or --launcher local)")
    submitit = _submitit()
    if args.launcher == "slurm" and submitit.SlurmExecutor.affinity() < 0:  # submitit's test: srun on the PATH
        raise UserError(
            "--launcher slurm: no srun on this machine; submit from a SLURM login node, or use --launcher local"
        )
    if args.jobs != 1:
        raise UserError(
            "--jobs trains several runs in one process; with --launcher each run is a job of its own "
            "(--max-parallel N runs N at once)"
        )
    if args.stop_after is not None:
        raise UserError(
            "--stop-after is for jobs nobody warns; with --launcher the warning signal (--warn-before ahead of "
            "--time) checkpoints each run and requeues its job"
        )
    if args.force:
        raise UserError(
            "--force with --launcher would restart a requeued run from scratch: give a fresh --runs-dir, or "
            "delete the run directories to retrain (--status names them)"
        )
    if args.launcher == "slurm" and args.time is None:
        raise UserError("--launcher slurm needs --time, each job's limit (e.g. 4h); a run still going then is requeued")
    if args.time is not None and args.warn_before >= args.time * 60:
        raise UserError(f"--warn-before ({args.warn_before:.0f}s) must be shorter than --time ({args.time} min)")
    for flag, value in (("--max-parallel", args.max_parallel), ("--cpus-per-run", args.cpus_per_run)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    if args.launcher == "local":
        slurm_only = [flag for dest, flag in SLURM_ONLY.items() if getattr(args, dest) is not None]
        slurm_only += ["--slurm-option"] * bool(args.slurm_option)
        if slurm_only:
            raise UserError(f"{slurm_only[0]} is a SLURM option; --launcher local runs the jobs on this machine")
        if hardware.num_nodes > 1:
            raise UserError(f"--num-nodes {hardware.num_nodes} needs --launcher slurm (one machine runs local jobs)")
    gpus_per_run(args, hardware)


# --- the state of a run, from its directory alone --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunState:
    kind: str  # pending, running, interrupted, finished or diverged
    text: str  # for people: "interrupted at iteration 4 of 6 (SIGTERM)"


def _lock_holder(path: Path) -> str | None:
    """Who holds the run's lock ("pid N on HOST"), or None. Asked with a shared non-blocking flock, released
    at once: the kernel knows, on every node of a filesystem with working locks, and a trainer killed -9 holds
    nothing. A trainer that tries to lock the run in that very microsecond is refused (RunDir.lock does not
    wait) and its job ends saying so; the run stays pending for the next submission."""
    try:
        handle = open(path / ".lock")
    except FileNotFoundError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "another process"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def _checkpoint_iteration(path: Path) -> int | None:
    if not path.exists():
        return None
    import torch

    try:  # mmap: the step is read without the weights
        return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["global_step"])
    except (OSError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError):
        return None


def run_state(path: Path) -> RunState:
    """Where the run in `path` stands, from its files and its lock alone (no scheduler is asked)."""
    from resnet_repro.rundir import RunDir, outcome

    run = RunDir(path)
    holder = _lock_holder(run.path)
    if holder is not None:
        return RunState("running", f"running elsewhere ({holder})")
    record = run.read_record()
    if record is None:
        return RunState("pending", "pending")
    status = record["status"]
    if status in DONE:
        return RunState(status, outcome(record))
    if status == "interrupted":
        why = f" ({record['stopped_by']})" if record.get("stopped_by") else ""
        return RunState("interrupted", outcome(record) + why)
    # "failed", or "running" with nobody holding the lock (killed -9, a node lost): it resumes from its checkpoint.
    at = _checkpoint_iteration(run.checkpoint)
    how = f"failed ({record['error']})" if status == "failed" and record.get("error") else f"{status}, then stopped"
    then = f"continues from its checkpoint at iteration {at}" if at is not None else "starts again (no checkpoint)"
    return RunState("interrupted", f"{how}; {then}")


def print_status(experiment, profile, specs, runs_dir: Path) -> None:
    from resnet_repro.spec import run_id

    states = [(run_id(spec), run_state(runs_dir / run_id(spec))) for spec in specs]
    print(f"{experiment.id} ({profile.name}): {len(states)} runs in {runs_dir}/")
    width = max(len(name) for name, _ in states)
    for name, state in states:
        print(f"  {name:{width}s}  {state.text}")
    counts = collections.Counter(state.kind for _, state in states)
    print("  " + ", ".join(f"{count} {kind}" for kind, count in counts.items()))


# --- the jobs ------------------------------------------------------------------------------------------

# In a run's job: the `resnet-repro run --only` process it waits for.
_CHILD: subprocess.Popen | None = None


def _global_rank() -> int:
    import submitit

    return submitit.JobEnvironment().global_rank


def preemption_signal() -> signal.Signals:
    """The signal submitit asks SLURM for before the time limit and on preemption (SUBMITIT_PREEMPT_SIGNAL)."""
    import submitit

    return submitit.JobEnvironment._usr_sig()


def _forward(signum, frame) -> None:
    """SIGTERM or Ctrl-C that reached the job (a local job's `kill`, `scancel`): its run checkpoints and stops.
    (submitit would only log them; on SLURM the run gets them itself too, so it may get them twice.)"""
    child = _CHILD
    if child is not None and child.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signum)


def _ignore_in_child(warning: signal.Signals) -> None:
    signal.signal(warning, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {warning})


def _start_child(command: list[str], cwd: str) -> subprocess.Popen:
    global _CHILD
    warning = preemption_signal()
    # The run ignores the warning signal: SLURM sends it to every process of the job, and its default action
    # would kill the run before it saves; this process's hook (RunJob.checkpoint) stops the run with SIGTERM.
    # It waits while the run starts, so the hook never runs between the start and _CHILD naming the run.
    signal.pthread_sigmask(signal.SIG_BLOCK, {warning})
    try:
        _CHILD = subprocess.Popen(command, cwd=cwd, preexec_fn=functools.partial(_ignore_in_child, warning))
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {warning})
    return _CHILD


def _stop_child() -> None:
    """SIGTERM to the run, and wait until it has saved and exited."""
    child = _CHILD
    if child is None or child.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(child.pid, signal.SIGTERM)
    # Waited for without reaping it (WNOWAIT): this runs in a signal handler that may have interrupted
    # Popen.wait(), which holds the lock that Popen.poll() and Popen.wait() would wait for.
    with contextlib.suppress(ChildProcessError):
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)


@dataclasses.dataclass(frozen=True)
class RunJob:
    """One run's job: `resnet-repro ARGV` (`run ARTIFACT ... --only RUN`) in `cwd`, the submitting directory.

    submitit calls `checkpoint` on the warning signal (it is what makes a job requeueable): the run is stopped
    with SIGTERM (it saves last.ckpt) and this job is requeued as attempt + 1, which resumes it.
    """

    run_id: str
    run_dir: str  # absolute
    argv: tuple[str, ...]
    cwd: str
    entry: tuple[str, ...] = ENTRY_POINT
    attempt: int = 1

    def __call__(self) -> dict:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _forward)
        command = [sys.executable, *self.entry, *self.argv]
        print(f"{self.run_id}: attempt {self.attempt}: {shlex.join(command)}", flush=True)
        status = _start_child(command, self.cwd).wait()
        # Judged by the run directory, not only by the exit status: `--only` of a run that diverged exits 1, and
        # of a run that another process holds exits 2, and neither is this job's failure.
        state = run_state(Path(self.run_dir))
        result = {"run_id": self.run_id, "state": state.kind, "outcome": state.text, "attempts": self.attempt}
        if state.kind in DONE or state.kind == "running" or _global_rank() != 0:
            return result  # several tasks (DDP): rank 0's job speaks for the run
        if status in (EXIT_SIGTERM, EXIT_CTRL_C):
            name = "SIGTERM" if status == EXIT_SIGTERM else "Ctrl-C (SIGINT)"
            raise RunNotDone(
                f"{state.text}: stopped by {name}, which does not requeue a job (the scheduler's warning signal "
                "does, see --warn-before); the same command submits it again and it continues"
            )
        raise RunNotDone(f"{state.text}: `resnet-repro run --only {self.run_id}` exited with status {status}")

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        # One stop and one requeue per job: a second warning (preemption may send it again) changes nothing.
        signal.signal(preemption_signal(), signal.SIG_IGN)
        _stop_child()
        state = run_state(Path(self.run_dir))
        if state.kind == "diverged":
            print(f"{self.run_id}: {state.text}; not requeued (a diverged run is not retried)", flush=True)
            return None  # submitit then ends the job, saying it was not requeued
        # A run that finished meanwhile is requeued too: the next attempt finds it finished and says so.
        print(f"{self.run_id}: {state.text}; requeued, to continue from its checkpoint", flush=True)
        return DelayedSubmission(dataclasses.replace(self, attempt=self.attempt + 1))


@dataclasses.dataclass(frozen=True)
class RenderJob:
    """The artifact's last job: `resnet-repro ARGV` (`run ARTIFACT ...`, no --only) once every run is done,
    which tests what is untested and renders. It refuses while any run is not done, rather than train it."""

    argv: tuple[str, ...]
    cwd: str
    run_dirs: tuple[str, ...]

    def check(self) -> None:
        left = [(Path(d).name, state) for d in self.run_dirs if (state := run_state(Path(d))).kind not in DONE]
        if left:
            listed = "; ".join(f"{name} {state.text}" for name, state in left)
            raise RunNotDone(
                f"{self.argv[1]} not rendered: {len(left)} run(s) not done: {listed}. `{self.status_command()}` "
                "shows where each stands, and the same command submits what is left"
            )

    def status_command(self) -> str:
        return shlex.join(["resnet-repro", *self.argv, "--status"])

    def render(self) -> int:
        from resnet_repro.cli import main

        if Path.cwd() != Path(self.cwd):
            os.chdir(self.cwd)
        self.check()
        return main(list(self.argv))

    def __call__(self) -> str:
        status = self.render()
        if status != 0:
            raise RunNotDone(f"`resnet-repro {shlex.join(self.argv)}` exited with status {status}")
        return f"{self.argv[1]} rendered"


# --- submitting ----------------------------------------------------------------------------------------


def forwarded_flags(args, profile_name: str) -> list[str]:
    """The submitting command's flags that decide how a run trains and renders, for its jobs: every option of
    `resnet-repro run` set to other than its default, except the launcher's and NOT_FORWARDED."""
    from resnet_repro.commands.run import add_run_arguments

    parser = argparse.ArgumentParser(add_help=False)
    add_run_arguments(parser)
    flags = ["--profile", profile_name, "--no-progress"]  # a job's log is a file: no progress bar
    for action in parser._actions:
        if not action.option_strings or action.dest in NOT_FORWARDED or action.dest in _launcher_options():
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        flag = max(action.option_strings, key=len)
        flags += [flag] if action.nargs == 0 else [flag, str(value)]  # nargs 0: a switch, given
    return flags


def _submitit():
    # Imported here and in the jobs, never at the top: every other `resnet-repro` command starts without
    # loading it (start-up time), and runs where it is not installed.
    try:
        import submitit
    except ImportError:
        raise UserError(
            "--launcher needs submitit: pip install 'resnet-repro[cluster]' (or pip install submitit)"
        ) from None
    return submitit


def slurm_parameters(args, experiment, profile, hardware, *, render: bool = False, after=()) -> dict:
    """SlurmExecutor.update_parameters for the runs' jobs (one task per device: Lightning's SLURM launch), or
    for the render job (one task, one GPU if the runs have GPUs, after the runs' jobs have ended)."""
    gpus = gpus_per_run(args, hardware)
    tasks = 1 if render else _devices_per_node(hardware)
    params = {
        "job_name": f"{experiment.id}-{profile.name}" + ("-render" if render else ""),
        "time": args.time,
        "nodes": 1 if render else hardware.num_nodes,
        "ntasks_per_node": tasks,
        "signal_delay_s": int(args.warn_before),
        "additional_parameters": dict(args.slurm_option),
    }
    if args.partition is not None:
        params["partition"] = args.partition
    if gpus:
        params["gpus_per_node"] = 1 if render else gpus
    if args.cpus_per_run is not None:
        params["cpus_per_task"] = max(1, args.cpus_per_run // tasks)
    if args.mem_per_run is not None:
        params["mem"] = args.mem_per_run
    if args.max_parallel is not None and not render:
        params["array_parallelism"] = args.max_parallel
    if after:
        # afterany, not afterok: a job that ended without its run done must not leave the render job pending
        # forever; the render job checks the runs itself and says which are not done.
        params["dependency"] = "afterany:" + ":".join(after)
    return params


def _executor(args, experiment, profile, hardware, folder: Path, **render):
    submitit = _submitit()
    if args.launcher == "local":
        executor = submitit.LocalExecutor(folder, max_num_timeout=MAX_TIMEOUTS)
        executor.update_parameters(
            timeout_min=args.time or LOCAL_TIMEOUT_MIN,
            signal_delay_s=int(args.warn_before),
            gpus_per_node=gpus_per_run(args, hardware),
            tasks_per_node=1,  # Lightning starts a local run's DDP processes itself
        )
        return executor
    executor = submitit.SlurmExecutor(folder, max_num_timeout=MAX_TIMEOUTS)  # check_options made sure of srun
    executor.update_parameters(**slurm_parameters(args, experiment, profile, hardware, **render))
    return executor


@contextlib.contextmanager
def _sbatch_refusals():
    from submitit.core.utils import FailedJobError

    try:
        # submitit prints sbatch's complaint to stderr before raising it: said once, in the error's one line
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    except FailedJobError as exc:  # sbatch's own message, e.g. an unknown partition or account
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise UserError(f"sbatch refused the job: {lines[-1] if lines else exc}") from None


def _why(exc: Exception) -> str:
    """A failed job's reason in one line: RunNotDone's message, else the error's last line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    mine = [line.split(": ", 1)[1] for line in lines if line.startswith(f"{__name__}.RunNotDone: ")]
    if mine:
        return mine[-1]
    trace = [line for line in lines if not line.startswith(("You can check", "-", "or at paths"))]
    return trace[-1] if trace else type(exc).__name__


def _report(job, run: RunJob) -> tuple[bool, str]:
    """(whether the run is done, one line) once `job` has ended."""
    try:
        result = job.results()[0]  # a job of several tasks (DDP): rank 0's
    except Exception as exc:  # submitit's FailedJobError (the job raised), UncompletedJobError (it was killed)
        return False, f"{run.run_id}: {_why(exc)} (job {job.job_id}; log {job.paths.stderr})"
    again = f", requeued {result['attempts'] - 1}x and resumed" if result["attempts"] > 1 else ""
    return result["state"] in DONE, f"{run.run_id}: {result['outcome']} (job {job.job_id}{again})"


def launch(experiment, profile, args, data) -> int:
    """`resnet-repro run ARTIFACT --launcher ...` (or `--status`): submit, and wait where asked."""
    from resnet_repro.commands.train import hardware_from_args
    from resnet_repro.experiment import plan_runs, select_runs
    from resnet_repro.runner import pending_runs
    from resnet_repro.spec import run_id

    hardware = hardware_from_args(args)
    check_options(args, hardware)
    runs_dir = Path(args.runs_dir)
    planned = plan_runs(experiment, profile, data)
    specs = select_runs(planned, args.only)
    if args.status:
        print_status(experiment, profile, specs, runs_dir)
        return 0
    todo, elsewhere = [], []
    for run in pending_runs(specs, runs_dir, hardware):  # finished and diverged runs are not submitted again
        state = run_state(run.run_dir)
        if state.kind == "running":  # its lock would refuse a second trainer anyway
            print(f"{run.run_dir}: {state.text}; not submitted")
            elsewhere.append(run.run_dir.name)
            continue
        todo.append(run)
    cwd, flags = os.getcwd(), forwarded_flags(args, profile.name)
    jobs = [
        RunJob(
            run_id=run.run_dir.name,
            run_dir=str(run.run_dir.resolve()),
            argv=("run", experiment.id, *flags, "--only", run.run_dir.name),
            cwd=cwd,
            entry=ENTRY_POINT,
        )
        for run in todo
    ]
    # --only trains and does not render, as without a launcher.
    dirs = tuple(str((runs_dir / run_id(spec)).resolve()) for spec in planned)
    render = None if args.only is not None else RenderJob(argv=("run", experiment.id, *flags), cwd=cwd, run_dirs=dirs)
    folder = runs_dir.resolve() / JOBS_DIR / f"{experiment.id}-{profile.name}"
    print(f"{experiment.id} ({profile.name}): {len(specs)} runs, {len(jobs)} to train, one {args.launcher} job each")
    if args.launcher == "slurm" and not args.wait:
        return _submit_slurm(experiment, profile, args, hardware, folder, jobs, render)
    return _submit_and_wait(experiment, profile, args, hardware, folder, jobs, render, elsewhere)


def _submit_slurm(experiment, profile, args, hardware, folder, jobs, render) -> int:
    """Submit the runs' jobs (an array) and the render job after them; return at once."""
    after = []
    if jobs:
        executor = _executor(args, experiment, profile, hardware, folder)
        with _sbatch_refusals(), executor.batch():
            submitted = [executor.submit(job) for job in jobs]
        after = sorted({job.job_id.split("_")[0] for job in submitted})
        kind = f"array {after[0]} (tasks 0-{len(jobs) - 1})" if len(jobs) > 1 else after[0]
        print(f"submitted job {kind}: {', '.join(job.run_id for job in jobs)}; logs in {folder}")
    if render is not None:
        executor = _executor(args, experiment, profile, hardware, folder, render=True, after=after)
        with _sbatch_refusals():
            job = executor.submit(render)
        print(f"submitted job {job.job_id}: tests and renders {experiment.id} once the runs' jobs have ended")
        print(f"follow the runs with `{render.status_command()}`")
    return 0


def _submit_and_wait(experiment, profile, args, hardware, folder, jobs, render, elsewhere) -> int:
    """Run the jobs (local: at most --max-parallel at once; SLURM: the array), print how each ended, and render
    here once every run is done."""
    queue, running, left = list(jobs), {}, list(elsewhere)  # trained by others: not done by this command
    executor = _executor(args, experiment, profile, hardware, folder) if jobs else None
    if args.launcher == "slurm" and jobs:
        with _sbatch_refusals(), executor.batch():
            submitted = [executor.submit(job) for job in jobs]
        running, queue = dict(zip(submitted, jobs, strict=True)), []
        print(f"submitted {', '.join(job.job_id for job in submitted)}; logs in {folder}")
    parallel = args.max_parallel or 1
    while queue or running:
        while queue and len(running) < parallel:
            job = executor.submit(queue[0])
            running[job] = queue.pop(0)
            print(f"{running[job].run_id}: job {job.job_id}, log {job.paths.stdout}", flush=True)
        for job, run in list(running.items()):
            if job.done():
                del running[job]
                done, line = _report(job, run)
                print(line, flush=True)
                if not done:
                    left.append(run.run_id)
        if running:
            time.sleep(POLL_S)
    if left:
        print(
            f"{experiment.id}: {len(left)} run(s) not done ({', '.join(left)}); `--status` shows where each "
            "stands, and the same command submits what is left (an interrupted run continues)"
        )
        return EXIT_TIME_LIMIT
    if render is None:
        return 0
    try:
        return render.render()
    except RunNotDone as exc:  # trained elsewhere, by an overlapping submission
        print(exc)
        return EXIT_TIME_LIMIT
