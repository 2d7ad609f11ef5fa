"""A run directory, the one owner of a run's files: `run.json`, `metrics*.csv`, `checkpoints/last.ckpt`.

It writes and reads the record (config, provenance, status, final metrics), keeps a resumed run's
earlier metrics, holds the lock that keeps a second process out, and decides whether a logged run is
the run a spec asks for. Every path is relative to the directory, so a run directory can be moved or
copied and resumed where it now lies.
"""

import fcntl
import functools
import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import torch

from resnet_repro.errors import RunLockedError, UserError
from resnet_repro.files import atomic_path, remove_abandoned_temp_files, write_json
from resnet_repro.spec import TrainSpec, spec_digest

# The files that make a run's logs, copied to results/runs/ (with a checkpoint only when asked, see copy_logs).
LOG_FILES = ("run.json", "metrics*.csv")
# What to do about a run's log that cannot be read, said after what is wrong with it.
MENDING = "restore it (results/runs/ holds the committed copies) or delete the run directory to retrain it"
# The statuses training.py writes into run.json.
STATUSES = ("running", "finished", "interrupted", "diverged", "failed")


class RunDir:
    """The files of one run under `path` (named by its run id)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def record_path(self) -> Path:
        return self.path / "run.json"

    @property
    def checkpoint(self) -> Path:
        """The run's latest state; always this file, wherever the directory has been moved."""
        return self.path / "checkpoints" / "last.ckpt"

    def read_record(self) -> dict | None:
        """run.json, checked to be a run record that every reader can use; None when the run was never started.

        The one reader of run.json: a damaged or hand-edited record is a UserError naming the file and what is
        wrong with it, never a record that breaks a reader later (see check_record)."""
        if not self.record_path.exists():
            return None
        try:
            record = json.loads(self.record_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{self.record_path} is not a readable run record ({exc}); {MENDING}") from None
        problem = check_record(record)
        if problem is not None:
            raise UserError(f"{self.record_path} is not a valid run record: {problem}; {MENDING}")
        return record

    def write_record(self, record: dict) -> None:
        write_json(self.record_path, record)

    def probabilities_path(self, protocol: str) -> Path:
        """Per-image test probabilities under one protocol (testing.evaluate_run with keep_probabilities)."""
        return self.path / f"probabilities-{protocol}.pt"

    def add_evaluation(self, protocol: str, result: dict) -> None:
        """Merge one test protocol's result into run.json's "evaluations", keeping the other protocols'.

        Under the run's lock, so a training process cannot rewrite run.json in between.
        """
        self.lock()
        try:
            record = self.read_record()
            if record is None:
                raise UserError(f"{self.path} has no run.json to record the {protocol} evaluation in")
            record["evaluations"] = {**(record.get("evaluations") or {}), protocol: result}
            self.write_record(record)
        finally:
            self.unlock()

    def lock(self) -> None:
        """Hold this directory for this process until it exits; a second process is refused in one line.

        An advisory lock on `.lock` (flock): the kernel releases it when the process dies, however it dies.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / ".lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunLockedError(
                f"{self.path} is being trained by another process ({holder}); wait for it to finish or stop it"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {platform.node()}\n")
        handle.flush()
        self._lock = handle
        # The holder is the one writer of run.json and checkpoints/: what a holder killed mid-write left (kill -9
        # skips atomic_path's cleanup) goes as the run starts or resumes, not left there for ever.
        for folder in (self.path, self.checkpoint.parent):
            remove_abandoned_temp_files(folder)

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the flock
            self._lock = None

    def keep_previous_metrics(self) -> None:
        """Lightning's CSVLogger deletes an existing metrics.csv; a resumed run keeps it as metrics-K.csv."""
        current = self.path / "metrics.csv"
        if current.exists():
            numbers = [int(p.stem.split("-", 1)[1]) for p in self.metrics_parts()[:-1]]
            os.replace(current, self.path / f"metrics-{max(numbers, default=-1) + 1}.csv")

    def clear(self) -> None:
        """Remove everything a run that never reached a checkpoint left (its logs start again)."""
        for pattern in (*LOG_FILES, "checkpoints", "wandb", "probabilities-*.pt"):
            for path in self.path.glob(pattern):
                shutil.rmtree(path) if path.is_dir() else path.unlink()

    def copy_logs(self, dest: Path, *, with_checkpoint: bool = False) -> None:
        """Copy the run's logs into `dest`/<run id>/, for readers on other machines: the record's paths to
        this machine's data and cache are cut to their file names.

        `with_checkpoint`: a run still in progress (interrupted) also takes its checkpoint, so that another
        machine (or a later session on a fresh one) resumes it from the copy. A finished or diverged run
        never does, and its kept copy is removed: the logs say all there is. The copy holds exactly this
        run's metrics parts, and never moves backwards (see check_copy, which refuses before anything is
        written).
        """
        self.check_copy(dest, with_checkpoint=with_checkpoint)
        target = RunDir(Path(dest) / self.name)
        record = self.read_record()
        target.path.mkdir(parents=True, exist_ok=True)
        parts = self.metrics_parts()
        for path in parts:
            shutil.copy2(path, target.path / path.name)
        for stale in set(target.metrics_parts()) - {target.path / p.name for p in parts}:
            stale.unlink()  # a part of an earlier copy that this run no longer has
        kept = target.checkpoint
        if record.get("status") != "interrupted":
            if kept.parent.exists():  # finished or diverged: nothing left to resume
                shutil.rmtree(kept.parent)
        elif with_checkpoint and self.checkpoint.exists():
            kept.parent.mkdir(exist_ok=True)
            with atomic_path(kept) as tmp:
                shutil.copy2(self.checkpoint, tmp)
        write_json(target.record_path, shareable(record))

    def check_copy(self, dest: Path, *, with_checkpoint: bool = False) -> None:
        """Refuse, in one line naming both, a copy into `dest` that would lose state: a copy that holds a
        later iteration than this run, or the kept checkpoint of an unfinished run that this copy would
        drop or leave beside logs it does not belong to."""
        target = RunDir(Path(dest) / self.name)
        if target.path.resolve() == self.path.resolve():
            return
        record, theirs = self.read_record(), target.read_record()
        if record is None:
            raise UserError(f"{self.path} has no run.json to copy")
        if theirs is None:
            return
        ours, kept = progress(record), progress(theirs)
        if kept > ours:
            raise UserError(
                f"{target.path} holds this run at {describe_progress(theirs)}, later than {self.path} "
                f"({describe_progress(record)}); copying would move it backwards: report from the runs directory "
                f"that holds the later state, or delete {target.path} to replace it"
            )
        carries_state = record.get("status") == "interrupted" and (with_checkpoint and self.checkpoint.exists())
        if target.checkpoint.exists() and record.get("status") == "interrupted" and not carries_state and kept < ours:
            raise UserError(
                f"{target.checkpoint} is the kept state of an unfinished run at iteration {theirs.get('iterations')}, "
                f"and {self.path} is at {describe_progress(record)}: add --keep-checkpoints to carry the later "
                "state with its logs"
            )

    def metrics_parts(self) -> list[Path]:
        """metrics-0.csv, metrics-1.csv, ... (earlier parts of a resumed run), then metrics.csv."""
        parts = sorted(
            (p for p in self.path.glob("metrics-*.csv") if p.stem.split("-", 1)[1].isdigit()),
            key=lambda p: int(p.stem.split("-", 1)[1]),
        )
        return [*parts, *([self.path / "metrics.csv"] if (self.path / "metrics.csv").exists() else [])]


def shareable(record: dict) -> dict:
    """`record` with the paths that name one machine's folders (data, cache) cut to their file names."""
    record = json.loads(json.dumps(record))
    data, source = record.get("spec", {}).get("data", {}), record.get("data_source", {})
    for holder, key in ((data, "data"), (data, "root"), (source, "path"), (source, "cache")):
        if holder.get(key):
            holder[key] = Path(holder[key]).name
    return record


def progress(record: dict) -> tuple[int, bool]:
    """How far a run got, for ordering two copies of it: its last iteration, and whether it has ended there."""
    iterations = record.get("iterations")
    return (iterations if isinstance(iterations, int) else -1, record.get("status") in ("finished", "diverged"))


def describe_progress(record: dict) -> str:
    """ "iteration 571 (interrupted)", for messages that compare two copies of a run."""
    return f"iteration {record.get('iterations')} ({record.get('status')})"


def outcome(record: dict | None) -> str:
    """How a run ended, in a few words: "finished, test error 8.75%", "diverged at iteration 12", ..."""
    if record is None:
        return "not run"
    status, total = record["status"], record.get("spec", {}).get("schedule", {}).get("max_iters")
    if status == "finished":
        error = record.get("final", {}).get("test/error")
        return f"finished, test error {float('nan') if error is None else error:.2f}%"
    if status == "diverged":
        return f"diverged at iteration {record.get('diverged_at', '?')}"
    if record.get("iterations") is not None:
        return f"{status} at iteration {record['iterations']}" + (f" of {total}" if total else "")
    return status


def timestamp() -> str:
    """The time format of every record we write: local time with its UTC offset, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def provenance() -> dict:
    """Commit, library versions and hardware, stored with every run."""
    import lightning
    import torchvision

    if torch.cuda.is_available():
        hardware = f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    else:
        # The vector ISA torch dispatches to (AVX512, AVX2, ...): the same core count trains at different speeds on them.
        isa = torch.backends.cpu.get_cpu_capability()
        hardware = f"CPU: {os.cpu_count()} cores ({platform.machine()}, {isa}), {torch.get_num_threads()} torch threads"
    return {
        "commit": _commit(),
        "hardware": hardware,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": lightning.__version__,
        "host": platform.node(),
    }


@functools.cache
def _commit() -> str:
    """The checkout's commit when this process first asked: the code it imported then is what it runs (a
    `--jobs` worker trains several runs with the modules it loaded for the first, whatever HEAD is later)."""
    here = Path(__file__).parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"], capture_output=True, text=True, cwd=here, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=here
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        # A copy without its git history (a lent machine gets the working tree alone): the commit it was copied
        # from, when the one who copied it says so.
        return os.environ.get("RESNET_REPRO_COMMIT", "unknown")


def differences(record: dict, spec: TrainSpec, data_sha256: str | None, hardware) -> list[str]:
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


# --- what a run record must hold ------------------------------------------------------------------
# Every field a reader uses (summary_row, outcome, the runner, the renderers, resume) is checked for the type
# it is used as, so a record that passes is safe to read anywhere; fields no reader uses are not checked.
# A schema is a (test, description) pair, a dict of field schemas (a "!" suffix: the field is required), a
# one-item list (a list of such items), _Values (an object of such values) or _Nullable (that, or null).


class _Values:
    def __init__(self, schema):
        self.schema = schema


class _Nullable:
    def __init__(self, schema):
        self.schema = schema


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON's true is not an iteration count


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _known_model(value) -> bool:
    from resnet_repro.models import model_info

    if not isinstance(value, str):
        return False
    try:
        model_info(value)
    except UserError:
        return False
    return True


_INT = (_is_int, "an integer")
_POSITIVE = (lambda v: _is_int(v) and v > 0, "a positive integer")
_NUMBER = (_is_number, "a number")
_TEXT = (lambda v: isinstance(v, str), "text")
_FLAG = (lambda v: isinstance(v, bool), "true or false")
_SPEC = {
    "model!": (_known_model, "a model name this version knows (see `resnet-repro models`)"),
    "seed!": _INT,
    "shortcut": _Nullable(_TEXT),
    "schedule!": {
        "max_iters!": _POSITIVE,
        "milestones": [_INT],
        "lr": _NUMBER,
        "warmup": _TEXT,
        "plateau": _Nullable(_INT),
    },
    "batch_size": _POSITIVE,
    "dataset": (lambda v: v in ("cifar10", "imagenet"), "cifar10 or imagenet"),
    "data": {"data": _Nullable(_TEXT), "root": _Nullable(_TEXT), "subset": _Nullable(_INT)},
    "log_every": _POSITIVE,
    "eval_every": _POSITIVE,
    "checkpoint_every": _POSITIVE,
    "precise_bn": _INT,
}
_RECORD = {
    "run_id!": _TEXT,
    "status!": ((lambda v: v in STATUSES), f"one of {', '.join(STATUSES)}"),
    "spec!": _SPEC,
    "final": _Values(_Nullable(_NUMBER)),  # null: a non-finite number (run.json is standard JSON)
    "iterations": _Nullable(_INT),
    "diverged_at": _Nullable(_INT),
    "stopped_by": _Nullable(_TEXT),
    "profile": _TEXT,
    "world_size": _POSITIVE,
    "params": _Nullable(_INT),
    "wall_time_s": _NUMBER,
    "warmup_end_iter": _Nullable(_INT),
    "precise_bn_images": _Nullable(_INT),
    "lr_drops": _Nullable([_INT]),
    "commit": _Nullable(_TEXT),
    "hardware": _Nullable(_TEXT),
    "host": _Nullable(_TEXT),
    "hardware_flags": {"precision": _TEXT, "compile": _FLAG},
    "data_source": {
        "path": _Nullable(_TEXT),
        "cache": _Nullable(_TEXT),
        "sha256": _Nullable(_TEXT),
        "listing_sha256": _Nullable(_TEXT),
    },
    "parts": [{"commit": _Nullable(_TEXT), "hardware": _Nullable(_TEXT)}],
    "evaluations": _Values(
        {
            "top1_error": _Nullable(_NUMBER),
            "top5_error": _Nullable(_NUMBER),
            "iteration": _Nullable(_INT),
            "limit": _Nullable(_INT),
        }
    ),
    "layer_responses": _Nullable([{"layer!": _TEXT, "std!": _NUMBER}]),
}


def check_record(record) -> str | None:
    """What makes `record` (parsed run.json) unusable as a run record, in a few words; None if nothing does."""
    if not isinstance(record, dict):
        return f"it holds {_kind(record)}, not an object of fields"
    problem = _problem(record, _RECORD, "")
    if problem is None:
        try:
            TrainSpec.from_dict(record["spec"])  # what the run cache and resume rebuild the run from
        except (TypeError, ValueError, UserError) as exc:
            problem = f"`spec` does not describe a run ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    return problem


def _problem(value, schema, where: str) -> str | None:
    if isinstance(schema, _Nullable):
        return None if value is None else _problem(value, schema.schema, where)
    if isinstance(schema, (dict, _Values)):
        if not isinstance(value, dict):
            return f"`{where}` should be an object, got {_kind(value)}"
        if isinstance(schema, _Values):
            fields = {str(key): (key, schema.schema) for key in value}
        else:
            fields = {key.rstrip("!"): (key, sub) for key, sub in schema.items()}
        for name, (key, sub) in fields.items():
            if name not in value:
                if key.endswith("!"):
                    return f"`{where + '.' if where else ''}{name}` is missing"
                continue
            problem = _problem(value[name], sub, f"{where + '.' if where else ''}{name}")
            if problem is not None:
                return problem
        return None
    if isinstance(schema, list):
        if not isinstance(value, list):
            return f"`{where}` should be a list, got {_kind(value)}"
        return next((p for i, v in enumerate(value) if (p := _problem(v, schema[0], f"{where}[{i}]"))), None)
    test, wanted = schema
    return None if test(value) else f"`{where}` should be {wanted}, got {_kind(value)}"


def _kind(value) -> str:
    """A JSON value's type, in words, with a short value where that helps: "a string ('abc')", "null"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    text = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return f"{'a string' if isinstance(value, str) else 'a number'} ({text})"
