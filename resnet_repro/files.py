"""Writing files so that a failed write (a full disk, a kill) never destroys or half-writes one.

Every record, checkpoint and result is written to a temporary file in the same directory and renamed
over the old one: a rename within one filesystem is atomic, so readers see the old file or the new one.
(Lightning's own checkpoint writer stages in the system temp directory and copies across filesystems,
which truncates the destination when the disk fills during the copy.)
"""

import functools
import io
import json
import math
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from resnet_repro.errors import UserError, shorten

try:
    import fcntl
except ImportError:  # Windows: temp files there are judged by age alone
    fcntl = None


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed over `path` on success, removed on failure.

    kill -9 skips the removal: the name says which host and process wrote it (see remove_abandoned_temp_files).
    """
    path = Path(path)
    # Process and thread both in the name: two writers of one path never share a temporary file.
    tmp = path.with_name(f".{path.name}.{host()}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# Room kept, beyond a directory a command is told to write into, for the longest path it writes below it: a run
# id, then W&B's offline-run folders (about 150 bytes).
ROOM_BELOW = 200


def check_output_dir(path: Path, flag: str, *, room: int = ROOM_BELOW) -> None:
    """Refuse, in one line and before anything is created, a directory to write into that cannot be one: a path
    through a file, a name longer than its filesystem takes, or a path (with `room` below it) over the limit."""
    path = Path(path)
    deepest = Path(path.anchor or ".")  # the deepest directory of `path` that exists
    for part in path.parts[1:] if path.anchor else path.parts:
        candidate = deepest / part
        try:
            if not candidate.exists():
                break
            if not candidate.is_dir():
                what = "it" if candidate == path else shorten(candidate)
                raise UserError(
                    f"cannot write in {shorten(path)} ({flag}): {what} is a file, not a directory; choose a directory "
                    "(missing ones are created)"
                )
        except OSError:  # too long a name or path: said below
            break
        deepest = candidate
    name_max, path_max = _limit(deepest, "PC_NAME_MAX", 255), _limit(deepest, "PC_PATH_MAX", 4096)
    for part in path.parts:
        if len(os.fsencode(part)) > name_max:
            raise UserError(
                f"cannot write in {shorten(path)} ({flag}): the name {shorten(part, 40)} is {len(os.fsencode(part))} "
                f"bytes long, and names here take at most {name_max}; choose a shorter one"
            )
    length = len(os.fsencode(os.path.abspath(path)))
    if length + room >= path_max:
        raise UserError(
            f"cannot write in {shorten(path)} ({flag}): its absolute path is {length} bytes long, and with {room} "
            f"bytes kept for the files written in it, that passes the {path_max}-byte limit on paths here; choose a "
            "shorter path"
        )


def _limit(directory: Path, name: str, default: int) -> int:
    try:
        return os.pathconf(directory, name)
    except (OSError, ValueError):
        return default


def write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (and durably: fsync before the rename).

    An OSError names `path` itself (a full disk's error from write() names no file, and the
    temporary file's name would mean nothing to the user).
    """
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                lock_file(f)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, data: dict) -> None:
    """Write standard JSON atomically: NaN and infinities become null (standard parsers reject them)."""
    write_text(path, json.dumps(_standard(data), indent=2, default=str, allow_nan=False) + "\n")


def _standard(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _standard(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_standard(v) for v in value]
    return value


# --- temporary files of writers killed mid-write ----------------------------------------------------------
# Writers name their temporary file .<target>.<host>.<pid>.<token>.tmp (atomic_path; the decode cache, whose token
# is mkstemp's): kill -9 skips their cleanup, and whoever next uses the folder tells a dead writer's file by it.
TEMP_NAME = re.compile(r"\.(?P<target>.+)\.(?P<host>[^.]+)\.(?P<pid>[0-9]+)\.[a-z0-9_]+\.tmp")
STALE_TEMP_SECONDS = 3600.0


@functools.cache
def host() -> str:
    """This machine as temp file names record it: the host name, plus the pid namespace where there is one."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "localhost"
    try:
        # Containers can share a host name but not their pids; the namespace's inode tells them apart.
        return f"{name}~{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return name


def remove_abandoned_temp_files(folder: Path, pattern: str = ".*.tmp*") -> None:
    """Delete the temp files (`pattern`) that writers killed mid-write left in `folder`; never a live writer's."""
    try:
        strays = list(Path(folder).glob(pattern))
    except OSError:
        return
    for stray in strays:
        try:
            if abandoned(stray):
                stray.unlink()
        except OSError:
            pass  # gone meanwhile, or not ours to delete


def abandoned(stray: Path) -> bool:
    """Whether no live process writes `stray` any more; a live writer's file is never judged abandoned."""
    match = TEMP_NAME.fullmatch(stray.name)
    if match is None or match["host"] != host() or os.name != "posix":
        # Another host's pids mean nothing here (caches and runs can sit on shared filesystems), and a name without
        # them (older versions wrote those: .last.ckpt.tmp-PID-TID) has none to check: such files go after an hour.
        return _untouched_for(stray, STALE_TEMP_SECONDS)
    if not _pid_alive(int(match["pid"])):
        return True
    # The pid is alive: the writer itself, or a process that reuses a dead writer's pid (after a reboot, say).
    # A writer locks its file right after creating it, so an unlocked file untouched for an hour is not its.
    return _untouched_for(stray, STALE_TEMP_SECONDS) and not locked(stray)


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (signal 0 only checks)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except OSError:
        return True  # PermissionError: it exists, under another user
    return True


def _untouched_for(path: Path, seconds: float) -> bool:
    return time.time() - path.stat().st_mtime > seconds


def lock_file(f) -> None:
    """Hold an exclusive flock on the open file `f` (until it is closed), where the filesystem supports one."""
    if fcntl is not None:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        except OSError:
            pass  # no flock here (some network filesystems): the pid in the name still marks the writer


def locked(path: Path) -> bool:
    """Whether a process holds a flock on `path`; True where that cannot be told, so the file is kept."""
    if fcntl is None:
        return True
    try:
        with open(path, "rb") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False  # closing the file drops the lock just taken
    except OSError:
        return True


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, but a failed save leaves the previous checkpoint intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # serialise first: a disk error then surfaces as an OSError with its errno
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_bytes(Path(path), buffer.getvalue())
